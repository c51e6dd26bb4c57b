//! Savepoints from the command line: `weir savepoint --stop` takes a savepoint of a running
//! job through its control API and stops it; `weir check-restore` says whether a job can
//! restore from it (and why not); `weir run --restore <savepoint>` finishes the job, and the
//! committed output equals an uninterrupted run's.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

const JOB: [&str; 10] = [
    "run",
    "tumble-count",
    "--events",
    "2000000",
    "--rate",
    "1000000",
    "--cores",
    "2",
    "--no-pin",
    "--sink",
];

#[test]
fn stop_with_savepoint_then_restore_gives_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let out = weir()
        .args(JOB)
        .arg(format!("csv:{}", reference.display()))
        .arg("--no-checkpoints")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = common::committed_lines(&reference);
    assert!(expected.len() > 1_000);

    let run = tmp.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let mut job = weir()
        .current_dir(&run)
        .args(JOB)
        .args(["csv:out", "--http", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The job prints its control address first.
    let mut stderr = BufReader::new(job.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the job ended before serving http");
        if let Some(rest) = line.split("serving http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    let drain = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap());
    let sp = weir().args(["savepoint", "--http", &addr, "--stop"]).output().unwrap();
    assert!(sp.status.success(), "{}", String::from_utf8_lossy(&sp.stderr));
    let savepoint = run.join(String::from_utf8(sp.stdout).unwrap().trim());
    assert!(savepoint.join("_metadata").exists(), "{}", savepoint.display());
    assert!(job.wait().unwrap().success(), "stop-with-savepoint ends the job cleanly");
    let log = drain.join().unwrap();
    let partial = common::committed_lines(&run.join("out"));
    assert!(
        partial.len() < expected.len(),
        "the job was stopped before the end ({} of {} rows)\n{log}",
        partial.len(),
        expected.len()
    );

    // Compatible with the same job; not with different key groups.
    let check = weir()
        .current_dir(&run)
        .args(["check-restore", "tumble-count", "--from"])
        .arg(&savepoint)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("can restore: yes"));
    let check = weir()
        .current_dir(&run)
        .args(["check-restore", "tumble-count", "--max-key-groups", "64", "--from"])
        .arg(&savepoint)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("max_key_groups = 1024, this job has 64"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let resumed = weir()
        .current_dir(&run)
        .args(JOB)
        .arg("csv:out")
        .arg("--restore")
        .arg(&savepoint)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(common::committed_lines(&run.join("out")), expected, "savepoint + resume = uninterrupted run");
}
