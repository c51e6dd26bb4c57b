//! Savepoints from the command line, with rescaling: `weir savepoint --stop` takes a savepoint
//! of a job running on 4 shards through its control API and stops it; `weir check-restore`
//! says whether a job can restore from it (and why not); `weir run --restore <savepoint>` on
//! 1, 2 and 3 shards finishes the job, and each time the committed output equals an
//! uninterrupted run's.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// The job without its shard count and sink; four generator splits whatever the shards, so
/// its savepoints restore on any shard count.
const JOB: [&str; 9] = ["run", "tumble-count", "--events", "2000000", "--rate", "1000000", "--splits", "4", "--no-pin"];

#[test]
fn stop_with_savepoint_then_restore_gives_the_uninterrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let reference = tmp.path().join("reference");
    let out = weir()
        .args(JOB)
        .args(["--cores", "4", "--sink"])
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
        .args(["--cores", "4", "--sink", "csv:out", "--http", "127.0.0.1:0"])
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
        .args(["check-restore", "tumble-count", "--splits", "4", "--cores", "1", "--from"])
        .arg(&savepoint)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    assert!(String::from_utf8_lossy(&check.stdout).contains("can restore: yes"));
    // Without a fixed split count, one shard means one generator split: positions of four
    // splits cannot carry over, and check-restore says so before deploying.
    let check = weir()
        .current_dir(&run)
        .args(["check-restore", "tumble-count", "--cores", "1", "--from"])
        .arg(&savepoint)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("had 4 splits when this was taken and would have 1 on 1 shards"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let check = weir()
        .current_dir(&run)
        .args(["check-restore", "tumble-count", "--splits", "4", "--max-key-groups", "64", "--from"])
        .arg(&savepoint)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("max_key_groups = 1024, this job has 64"),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let pristine = tmp.path().join("pristine");
    common::copy_tree(&run, &pristine);
    for cores in ["1", "2", "3"] {
        common::reset_from(&pristine, &run);
        let resumed = weir()
            .current_dir(&run)
            .args(JOB)
            .args(["--cores", cores, "--sink", "csv:out", "--restore"])
            .arg(&savepoint)
            .output()
            .unwrap();
        assert!(resumed.status.success(), "{cores} shards: {}", String::from_utf8_lossy(&resumed.stderr));
        assert_eq!(
            common::committed_lines(&run.join("out")),
            expected,
            "savepoint on 4 shards + resume on {cores} = uninterrupted run"
        );
    }
}
