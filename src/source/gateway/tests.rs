//! Log and reader tests: positions survive segment rolls and a restart (`seek` resumes exactly
//! after the last event handed out), a torn tail is cut at recovery without losing a durable
//! event, and the idempotency window is rebuilt from the log.

use std::sync::Arc;
use std::time::Duration;

use super::protocol::HttpClient;
use super::reader::GatewayReader;
use super::*;
use crate::config::ErrorPolicy;
use crate::shard::OperatorMetrics;
use crate::source::ReadStatus;

fn config(dir: &std::path::Path) -> GatewayConfig {
    GatewayConfig {
        log_dir: dir.to_path_buf(),
        segment_bytes: 64 << 10,
        ..Default::default()
    }
}

fn reader(gateway: &Gateway) -> GatewayReader<Line> {
    let shared = gateway.shared().clone();
    GatewayReader {
        info: LineInfo {
            file: Arc::from("test"),
            line: 0,
        },
        dir: partition_dir(&gateway.config().log_dir, 0),
        shared,
        partition: 0,
        position: None,
        file: None,
        buf: Vec::new(),
        buf_offset: 0,
        chunk_bytes: 4096,
        max_frame_bytes: gateway.config().max_frame_bytes(),
        poll_ms: 1,
        parser: crate::source::file::line_parser(FileFormat::Lines),
        policy: ErrorPolicy::Fail,
        metrics: Arc::new(OperatorMetrics::new()),
        dead_letters: None,
        checkpointing: false,
        last_checkpoint_next: std::cell::Cell::new(None),
    }
}

/// Read up to `n` events (all durable ones if fewer), on a glommio executor of this thread.
fn read_n(r: &mut GatewayReader<Line>, n: usize, open: bool) -> Vec<String> {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap()
        .run(async {
            if open {
                r.open().await.unwrap();
            }
            let mut out = Vec::new();
            while out.len() < n {
                let want = (n - out.len()).min(7);
                match r.read(&mut out, want).await.unwrap() {
                    ReadStatus::More => {}
                    _ => break,
                }
            }
            out.into_iter().map(|(text, _)| text).collect()
        })
}

fn post_all(gateway: &Gateway, batches: std::ops::Range<u64>) {
    let mut c = HttpClient::new(gateway.http_addr().unwrap(), Duration::from_secs(10));
    for b in batches {
        let body: String = (0..10).map(|i| format!("{{\"n\":{},\"pad\":\"{}\"}}\n", b * 10 + i, "p".repeat(200))).collect();
        let r = c.post("/v1/events", body.as_bytes(), &[format!("Idempotency-Key: b{b}")]).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

fn n_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["n"].as_u64().unwrap()
}

#[test]
fn positions_resume_exactly_across_rolls_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start("t", config(dir.path())).unwrap();
    post_all(&gateway, 0..100); // 1 000 events of ~220 bytes: several 64 KiB segments
    let segments = std::fs::read_dir(partition_dir(dir.path(), 0)).unwrap().count();
    assert!(segments >= 3, "rolled into {segments} segments");

    let mut r = reader(&gateway);
    let first: Vec<u64> = read_n(&mut r, 333, true).iter().map(|l| n_of(l)).collect();
    assert_eq!(first, (0..333).collect::<Vec<_>>());
    let position = crate::source::SplitReader::position(&r).unwrap();
    drop(r);
    drop(gateway);

    // A restarted gateway (same log, same keys) and a reader restored at the position.
    let gateway = Gateway::start("t", config(dir.path())).unwrap();
    let mut c = HttpClient::new(gateway.http_addr().unwrap(), Duration::from_secs(10));
    let again = c.post("/v1/events", b"{\"n\":0}\n", &["Idempotency-Key: b5".into()]).unwrap();
    assert!(again.body.contains("\"duplicate\":true"), "the window was rebuilt from the log: {}", again.body);
    let mut r = reader(&gateway);
    crate::source::SplitReader::seek(&mut r, &position).unwrap();
    let rest: Vec<u64> = read_n(&mut r, 10_000, true).iter().map(|l| n_of(l)).collect();
    assert_eq!(rest, (333..1000).collect::<Vec<_>>());
    // Without a position a reader replays the retained log from its start.
    let mut fresh = reader(&gateway);
    assert_eq!(read_n(&mut fresh, 10_000, true).len(), 1000);
}

#[test]
fn a_torn_tail_is_cut_and_durable_events_survive() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start("t", config(dir.path())).unwrap();
    post_all(&gateway, 0..3);
    drop(gateway);
    // Simulate a crash in the middle of a commit: half a frame after the last durable one.
    let p0 = partition_dir(dir.path(), 0);
    let mut segs: Vec<_> = std::fs::read_dir(&p0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    let last = segs.last().unwrap();
    let mut bytes = std::fs::read(last).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    bytes.truncate(end);
    bytes.extend_from_slice(&[0x5a; 37]);
    std::fs::write(last, &bytes).unwrap();

    let gateway = Gateway::start("t", config(dir.path())).unwrap();
    let stats = gateway.stats();
    assert_eq!(stats.torn_tails_recovered, 1, "{stats:?}");
    assert_eq!(stats.partitions[0].durable_next, 31);
    post_all(&gateway, 3..4);
    let mut r = reader(&gateway);
    let all: Vec<u64> = read_n(&mut r, 10_000, true).iter().map(|l| n_of(l)).collect();
    assert_eq!(all, (0..40).collect::<Vec<_>>());
}
