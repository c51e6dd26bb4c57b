//! Zero acknowledged events lost across a SIGKILL: a `weir run` child process (checkpoints
//! every 100 ms) serves a SQL job reading a `'connector' = 'gateway'` table into CSV files (the
//! exactly-once file sink); four clients post keyed batches until it is killed mid-stream. A
//! restarted `weir --restore latest` on the same log resumes the gateway's readers at the
//! checkpointed log positions; the clients retry the batches that got no answer (same
//! idempotency keys) and send more; a drain ends the job. The committed output holds every
//! acknowledged event exactly once: nothing lost, nothing twice (the log holds each accepted
//! batch once even though some were retried, and the sink commits per checkpoint).
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

/// Start `weir run` on the script (checkpoints every 100 ms into `checkpoints`, restoring the
/// latest one); returns the child and the gateway's HTTP address.
fn start(script: &Path, log: &Path, out: &Path, checkpoints: &Path) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(script)
        .arg("--var")
        .arg(format!("LOG={}", log.display()))
        .arg("--var")
        .arg(format!("OUT={}", out.display()))
        .args([
            "--cores",
            "2",
            "--no-pin",
            "--checkpoint-interval-ms",
            "100",
            "--restore",
            "latest",
            "--checkpoint-dir",
        ])
        .arg(checkpoints)
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

/// Ids in the committed (visible) part files of `dir`.
fn output_ids(dir: &Path) -> Vec<u64> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            ids.push(line.split(',').next().unwrap().parse().unwrap());
        }
    }
    ids
}

/// Complete checkpoints (`chk-<n>/_metadata`) under `dir`.
fn completed_checkpoints(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            // The job's checkpoints live in one folder per job below the root.
            n += std::fs::read_dir(&p)
                .map(|inner| {
                    inner
                        .flatten()
                        .filter(|c| c.file_name().to_string_lossy().starts_with("chk-") && c.path().join("_metadata").exists())
                        .count()
                })
                .unwrap_or(0);
            if e.file_name().to_string_lossy().starts_with("chk-") && p.join("_metadata").exists() {
                n += 1;
            }
        }
    }
    n
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
    let (out, checkpoints) = (dir.path().join("out"), dir.path().join("checkpoints"));
    let (mut child, addr) = start(&script, &log, &out, &checkpoints);

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
    // Kill once 300 batches were acknowledged and a checkpoint completed after the 100th.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut checkpointed_after = None;
    loop {
        let acked_now = acked_count.load(Ordering::Relaxed);
        let complete = completed_checkpoints(&checkpoints);
        if acked_now >= 100 && checkpointed_after.is_none() {
            checkpointed_after = Some(complete);
        }
        if acked_now >= 300 && checkpointed_after.is_some_and(|before| complete > before) {
            break;
        }
        assert!(Instant::now() < deadline, "clients or checkpoints were too slow");
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
    // The first run committed output at its checkpoints: with no event twice in the end, the
    // restarted readers resumed at the checkpointed positions (not from the log's start).
    let committed_before = output_ids(&out).len();
    assert!(committed_before > 0, "the first run committed output before the kill");

    // Phase 2: restart on the same log from the latest checkpoint; retry what got no answer;
    // send more; drain.
    let (mut child, addr) = start(&script, &log, &out, &checkpoints);
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

    let ids = output_ids(&out);
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for id in &ids {
        *seen.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "events committed twice: {twice:?}");
    let expected: BTreeSet<u64> = acked.iter().flat_map(|b| (b * PER_BATCH)..(b * PER_BATCH + PER_BATCH)).collect();
    let missing: Vec<_> = expected.iter().filter(|id| !seen.contains_key(id)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?} (of {})", expected.len());
    // Nothing arrived that no client sent.
    assert!(seen.keys().all(|id| expected.contains(id)), "unexpected events in the output");
    assert_eq!(ids.len(), expected.len());
}
