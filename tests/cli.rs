//! The `weir` binary: built-in jobs run to completion and write their sink; bad arguments get
//! clear errors and a non-zero exit, never a panic.

use std::process::Command;

/// The binary, run in a scratch folder of this test process (`weir run` checkpoints into
/// `./checkpoints/<job>` by default; that must not land in the source tree).
fn weir() -> Command {
    let scratch = std::env::temp_dir().join(format!("weir-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.current_dir(scratch);
    c
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

#[test]
fn run_and_explain_a_sql_script() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Bids for auctions 1 and 2 in two 10 s windows; the last one closes the first window.
    std::fs::write(
        data.join("bid.csv"),
        "1,7,100,web,u,1000,x\n2,7,200,web,u,2000,x\n1,8,300,web,u,3000,x\n1,8,50,web,u,25000,x\n",
    )
    .unwrap();
    let script = dir.path().join("job.sql");
    std::fs::write(
        &script,
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,\n\
           date_time AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)\n\
           WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');\n\
         CREATE TABLE out_rows (auction BIGINT, num BIGINT, hi BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');\n\
         INSERT INTO out_rows SELECT auction, COUNT(*), MAX(price) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))\n\
           GROUP BY auction, window_start, window_end;\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let vars = [format!("DATA={}", data.display()), format!("OUT={}", out.display())];
    let run = weir()
        .arg("run")
        .arg(&script)
        .args(["--var", &vars[0], "--var", &vars[1], "--cores", "2", "--no-pin"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut rows: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flat_map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    rows.sort();
    assert_eq!(rows, ["1,1,50", "1,2,300", "2,1,200"]);

    let explain = weir()
        .arg("explain")
        .arg(&script)
        .args(["--var", &vars[0], "--var", &vars[1]])
        .output()
        .unwrap();
    assert!(explain.status.success());
    let plan = String::from_utf8_lossy(&explain.stdout);
    assert!(plan.contains("TUMBLE") && plan.contains("exchange"), "{plan}");

    // A SQL error names the script, line and column, and the process exits non-zero.
    std::fs::write(
        &script,
        "CREATE TABLE t (a BIGINT) WITH ('connector' = 'filesystem', 'path' = 'x', 'format' = 'csv');\nSELECT a FROM t ORDER BY a;\n",
    )
    .unwrap();
    let bad = weir().arg("run").arg(&script).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("job.sql") && err.contains("line 2"), "{err}");
}
