//! A SIGKILL scenario shared by the connector crash tests: a `weir run` child serves a SQL
//! job reading a `'connector' = 'gateway'` table (`${LOG}`; the script also gets `${OUT}` and
//! any extra variables) with checkpoints every 100 ms; four clients post keyed batches; once 300
//! batches are acknowledged and a checkpoint completed after the 100th, the child is SIGKILLed;
//! a restarted `weir --restore latest` gets the unanswered batches again (same keys) and 50 more;
//! a drain ends it. The caller checks its sink against the acknowledged event ids.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use weir::source::gateway::protocol::HttpClient;

const TIMEOUT: Duration = Duration::from_secs(10);
pub const PER_BATCH: u64 = 20;

/// Start `weir run` on the script (checkpoints every 100 ms into `checkpoints`, restoring the
/// latest one); returns the child and the gateway's HTTP address.
fn start(script: &Path, log: &Path, out: &Path, checkpoints: &Path, vars: &[(String, String)]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(script)
        .arg("--var")
        .arg(format!("LOG={}", log.display()))
        .arg("--var")
        .arg(format!("OUT={}", out.display()))
        .args(vars.iter().flat_map(|(k, v)| ["--var".to_string(), format!("{k}={v}")]))
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
            std::thread::spawn(move || {
                while let Ok(line) = rx.recv() {
                    eprintln!("weir: {line}");
                }
            });
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
pub fn output_ids(dir: &Path) -> Vec<u64> {
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

/// What a crash scenario leaves: the acknowledged event ids and where the output went.
pub struct Crashed {
    pub acked_ids: std::collections::BTreeSet<u64>,
    /// Ids committed to the `${OUT}` folder before the kill (file sinks).
    pub committed_before_kill: usize,
}

/// Run the scenario on `script` in `dir` (see the module docs).
pub fn run(dir: &Path, script_text: &str, vars: &[(String, String)]) -> Crashed {
    let script = dir.join("ingest.sql");
    std::fs::write(&script, script_text).unwrap();
    let log = dir.join("log");
    let (out, checkpoints) = (dir.join("out"), dir.join("checkpoints"));
    let (mut child, addr) = start(&script, &log, &out, &checkpoints, vars);

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
    let committed_before = if out.exists() { output_ids(&out).len() } else { 0 };

    // Phase 2: restart on the same log from the latest checkpoint; retry what got no answer;
    // send more; drain.
    let (mut child, addr) = start(&script, &log, &out, &checkpoints, vars);
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

    Crashed {
        acked_ids: acked.iter().flat_map(|b| (b * PER_BATCH)..(b * PER_BATCH + PER_BATCH)).collect(),
        committed_before_kill: committed_before,
    }
}
