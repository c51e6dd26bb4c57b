//! Zero acknowledged events lost across a SIGKILL: a `weir run` child process serves a SQL job
//! reading a `'connector' = 'gateway'` table into CSV files; four clients post keyed batches
//! until it is killed mid-stream. A restarted `weir` on the same log replays it; the clients
//! retry the batches that got no answer (same idempotency keys) and send more; a drain ends the
//! job. Every acknowledged event is in the restarted job's output, and no event twice: the log
//! holds each accepted batch once even though some were retried after the crash.
//! No sleeps: waits poll the child's output and exit with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use weir::source::gateway::protocol::HttpClient;

const TIMEOUT: Duration = Duration::from_secs(10);
const PER_BATCH: u64 = 20;

/// Start `weir run` on the script; returns the child and the gateway's HTTP address.
fn start(script: &Path, log: &Path, out: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(script)
        .arg("--var")
        .arg(format!("LOG={}", log.display()))
        .arg("--var")
        .arg(format!("OUT={}", out.display()))
        .args(["--cores", "2", "--no-pin"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir did not print the gateway address");
        };
        if let Some(rest) = line.split("http://").nth(1) {
            let addr = rest.split('/').next().unwrap().parse().unwrap();
            // Keep draining stderr so the child never blocks on it.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return (child, addr);
        }
    }
}

fn batch_body(id0: u64) -> String {
    (0..PER_BATCH)
        .map(|i| format!("{{\"id\":{},\"device\":\"d{}\"}}\n", id0 + i, (id0 + i) % 7))
        .collect()
}

/// Post one batch; `Some(true)` if accepted, `Some(false)` never (the test fails), `None` if
/// the gateway went away before answering.
fn post(client: &mut HttpClient, batch: u64) -> Option<()> {
    let key = format!("Idempotency-Key: batch-{batch}");
    match client.post("/v1/events", batch_body(batch * PER_BATCH).as_bytes(), &[key]) {
        Ok(r) if r.status == 200 => Some(()),
        Ok(r) if r.status == 503 => None,
        Ok(r) => panic!("batch {batch}: {} {}", r.status, r.body),
        Err(_) => None,
    }
}

fn output_ids(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            ids.push(line.split(',').next().unwrap().parse().unwrap());
        }
    }
    ids
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "weir did not exit after the drain");
        std::thread::park_timeout(Duration::from_millis(20));
    }
}

#[test]
fn no_acknowledged_event_is_lost_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("ingest.sql");
    std::fs::write(
        &script,
        "CREATE TABLE readings (id BIGINT, device STRING) WITH ('connector' = 'gateway', 'log.dir' = '${LOG}', 'partitions' = '2');\n\
         CREATE TABLE out_rows (id BIGINT, device STRING) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');\n\
         INSERT INTO out_rows SELECT id, device FROM readings;\n",
    )
    .unwrap();
    let log = dir.path().join("log");
    let (mut child, addr) = start(&script, &log, &dir.path().join("out1"));

    // Phase 1: four clients post keyed batches until the process dies under them.
    let acked_count = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let acked_count = acked_count.clone();
            std::thread::spawn(move || {
                let mut client = HttpClient::new(addr, TIMEOUT);
                let (mut acked, mut unanswered) = (Vec::new(), Vec::new());
                for n in 0.. {
                    let batch = c * 1_000_000 + n;
                    match post(&mut client, batch) {
                        Some(()) => {
                            acked.push(batch);
                            acked_count.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            unanswered.push(batch);
                            break;
                        }
                    }
                }
                (acked, unanswered)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked_count.load(Ordering::Relaxed) < 300 {
        assert!(Instant::now() < deadline, "clients were too slow");
        std::thread::park_timeout(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL, mid-stream
    child.wait().unwrap();
    let (mut acked, mut unanswered) = (Vec::new(), Vec::new());
    for c in clients {
        let (a, u) = c.join().unwrap();
        acked.extend(a);
        unanswered.extend(u);
    }
    assert!(acked.len() >= 300);

    // Phase 2: restart on the same log; retry what got no answer; send more; drain.
    let out2 = dir.path().join("out2");
    let (mut child, addr) = start(&script, &log, &out2);
    let mut client = HttpClient::new(addr, TIMEOUT);
    for &batch in &unanswered {
        post(&mut client, batch).expect("a retry after the restart is answered");
        acked.push(batch);
    }
    for n in 0..50 {
        let batch = 9_000_000 + n;
        post(&mut client, batch).expect("accepted after the restart");
        acked.push(batch);
    }
    let r = client.request("POST", "/v1/drain", b"", &[]).unwrap();
    assert_eq!(r.status, 202);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");

    let ids = output_ids(&out2);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for id in &ids {
        *seen.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "events delivered twice from the log: {twice:?}");
    let expected: BTreeSet<u64> = acked.iter().flat_map(|b| (b * PER_BATCH)..(b * PER_BATCH + PER_BATCH)).collect();
    let missing: Vec<_> = expected.iter().filter(|id| !seen.contains_key(id)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?} (of {})", expected.len());
    // Nothing arrived that no client sent.
    assert!(seen.keys().all(|id| expected.contains(id)), "unexpected events in the output");
    assert_eq!(ids.len(), expected.len());
}
