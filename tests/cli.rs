//! The `weir` binary: built-in jobs run to completion and write their sink; bad arguments get
//! clear errors and a non-zero exit, never a panic.

use std::process::Command;

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

#[test]
fn run_q2_writes_the_filtered_bids() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q2");
    let status = weir()
        .args(["run", "q2", "--events", "200000", "--cores", "2", "--no-pin", "--sink"])
        .arg(format!("csv:{}", out.display()))
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("records read:"), "{stderr}");
    let mut rows = 0;
    for entry in std::fs::read_dir(&out).unwrap() {
        for line in std::fs::read_to_string(entry.unwrap().path()).unwrap().lines() {
            let auction: i64 = line.split(',').next().unwrap().parse().unwrap();
            assert_eq!(auction % 123, 0, "q2 keeps only every 123rd auction: {line}");
            rows += 1;
        }
    }
    assert!(rows > 0);
}

#[test]
fn config_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, "[engine]\ncores = 2\npin_cores = false\nbatch_size = 128\n").unwrap();
    let out = weir()
        .args(["run", "tumble-count", "--events", "100000", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("on 2 shards"));

    std::fs::write(&config, "[engine]\nbatch_size = 0\n").unwrap();
    let out = weir().args(["run", "q0", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batch_size = 0") && !err.contains("panicked"), "{err}");
}

#[test]
fn bad_arguments_are_named() {
    let out = weir().args(["run", "no-such-job", "--events", "10"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown job `no-such-job`") && err.contains("tumble-count"), "{err}");

    let out = weir().args(["run", "q0", "--sink", "ftp:x"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown sink `ftp:x`"));

    let out = weir().args(["run", "q0", "--rate", "0", "--events", "10", "--no-pin"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rate 0"));
}

#[test]
fn jobs_and_help_list_everything() {
    let out = weir().arg("jobs").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for job in ["tumble-count", "hop-count", "session-bidder", "q0", "q1", "q2"] {
        assert!(text.contains(job), "{text}");
    }
    for sub in ["run", "jobs", "tune"] {
        let out = weir().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: weir"));
    }
}

#[test]
fn tune_reports_every_check_as_json() {
    let out = weir().args(["tune", "--json", "--profile", "throughput"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = v.to_string();
    for id in ["cpu.count", "memory.memlock", "io_uring.available", "disk.state_fs"] {
        assert!(text.contains(id), "{id} missing");
    }
}
