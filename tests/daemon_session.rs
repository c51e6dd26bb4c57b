//! The appliance daemon through the real binary: `weir start` refuses a non-loopback bind
//! without a token; started on a free loopback port it writes its address file, and the
//! commands find it there: `weir run bids.sql` submits a SQL job (its id on stdout), `weir list`
//! and `weir status` show it with live checkpoint figures (also in `/metrics`), `weir savepoint`
//! takes a savepoint, a job that needs more cores than are free is refused, a bad statement
//! comes back as the planner's error with line and column, `weir stop --savepoint` and
//! `weir cancel` end jobs, a job resubmitted with `--restore` restores from the savepoint, and
//! SIGTERM stops the daemon and removes its address file. Logs are JSON lines (`--log-format
//! json`) and carry the startup banner.
//! No sleeps as synchronisation: every wait polls with a bounded deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills the daemon if the test fails half-way.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weir` run in `dir`, with the run directory `dir/run` and no token or daemon from outside.
fn weir(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.current_dir(dir)
        .env("WEIR_RUN_DIR", dir.join("run"))
        .env_remove("WEIR_DAEMON")
        .env_remove("WEIR_HTTP_TOKEN")
        .env_remove("WEIR_LOG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    weir(dir).args(args).output().expect("run weir")
}

/// Run, require success, return stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(
        out.status.success(),
        "weir {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Run, require failure, return stderr.
fn fails(dir: &Path, args: &[&str]) -> String {
    let out = run(dir, args);
    assert!(!out.status.success(), "weir {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8(out.stderr).expect("utf-8")
}

fn poll<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn status(dir: &Path, id: &str) -> Value {
    serde_json::from_str(&ok(dir, &["status", id, "--json"])).expect("status JSON")
}

/// Value of the sample of `metric` whose line contains every `needle`.
fn sample(exposition: &str, metric: &str, needles: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

const BIDS_SQL: &str = "\
CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING,
  WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND)
  WITH ('connector' = 'nexmark', 'first-event.rate' = '20000', 'events.num' = '0');
CREATE TABLE counts (auction BIGINT, window_start TIMESTAMP(3), n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO counts SELECT auction, window_start, COUNT(*)
  FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND)) GROUP BY auction, window_start, window_end;
";

#[test]
fn a_daemon_session_through_the_cli() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    std::fs::write(dir.join("bids.sql"), BIDS_SQL).expect("write script");
    std::fs::write(
        dir.join("bad.sql"),
        "CREATE TABLE t (a INT) WITH ('connector' = 'blackhole');\nINSERT INTO t SELEKT 1;\n",
    )
    .expect("write script");

    // Any other address than loopback needs a token.
    let err = fails(dir, &["start", "--http", "0.0.0.0:0", "--cores", "2", "--no-pin"]);
    assert!(err.contains("--http-token") && err.contains("non-loopback"), "{err}");
    // Without a daemon the client commands say how to start one.
    let err = fails(dir, &["list"]);
    assert!(err.contains("no weir daemon found") && err.contains("weir start"), "{err}");

    // The daemon: 2 cores, jobs unpinned (the test machine is shared), checkpoints under ck/.
    let mut child = weir(dir)
        .args(["--log-format", "json", "start", "--http", "127.0.0.1:0", "--cores", "2", "--no-pin"])
        .args(["--checkpoint-root", "ck"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the daemon");
    let stderr = child.stderr.take().expect("stderr");
    let pid = child.id();
    let daemon = KillOnDrop(child);
    let logs = std::thread::spawn(move || BufReader::new(stderr).lines().map_while(|l| l.ok()).collect::<Vec<String>>());
    let address_file = dir.join("run").join("daemon.json");
    let addr: SocketAddr = poll("the daemon's address file", Duration::from_secs(30), || {
        let f: Value = serde_json::from_slice(&std::fs::read(&address_file).ok()?).ok()?;
        (f["pid"] == pid).then(|| f["addr"].as_str().expect("addr").parse().expect("socket address"))
    });

    // Submit the SQL job: its id comes back on stdout.
    let id = ok(dir, &["run", "bids.sql", "--cores", "1", "--set", "execution.checkpointing.interval=300 ms"]);
    assert_eq!(id.trim(), "1");
    let list = ok(dir, &["list"]);
    let row = list.lines().find(|l| l.starts_with("1 ")).unwrap_or_else(|| panic!("job 1 listed: {list}"));
    assert!(row.contains("running") && row.ends_with("bids"), "{row}");

    // Live checkpoint figures while it runs, in the status API and in /metrics.
    let st = poll("a completed checkpoint and throughput", Duration::from_secs(60), || {
        let st = status(dir, "1");
        (st["checkpoints"]["totals"]["completed"].as_u64()? >= 2 && st["records_per_second"].as_f64()? > 0.0).then_some(st)
    });
    assert_eq!(st["state"], "running");
    let totals = &st["checkpoints"]["totals"];
    assert!(totals["last_bytes"].as_u64().expect("size") > 0, "{totals}");
    assert!(
        totals["last_duration_ms"].as_u64().is_some() && totals["last_snapshot_ms"].as_f64().is_some(),
        "{totals}"
    );
    assert!(totals["latest"].as_str().expect("latest").contains("ck/bids/chk-"), "{totals}");
    let history = st["checkpoints"]["history"].as_array().expect("history");
    assert!(
        history.iter().any(|c| c["status"] == "completed" && c["acknowledged"].as_u64() >= Some(1)),
        "{history:?}"
    );
    let (code, metrics) = weir::control::http_get(addr, "/metrics", None, Duration::from_secs(5)).expect("GET /metrics");
    assert_eq!(code, 200);
    let labels = ["job=\"bids\"", "job_id=\"1\""];
    assert!(sample(&metrics, "weir_checkpoints_completed_total", &labels) >= Some(2.0), "{metrics}");
    assert_eq!(sample(&metrics, "weir_checkpoints_failed_total", &labels), Some(0.0));
    assert!(sample(&metrics, "weir_checkpoint_last_size_bytes", &labels) > Some(0.0));
    assert!(sample(&metrics, "weir_checkpoint_last_duration_ms", &labels) >= Some(0.0));
    assert!(sample(&metrics, "weir_records_out_total", &["job_id=\"1\"", "operator=\"source:"]) > Some(0.0));
    assert!(metrics.contains("weir_daemon_cores_in_use 1"), "{metrics}");

    // A savepoint of the running job.
    let savepoint = ok(dir, &["savepoint", "1"]).trim().to_string();
    assert!(Path::new(&savepoint).join("_metadata").is_file(), "savepoint {savepoint}");

    // A built-in job takes the second core; a third job finds no free core.
    assert_eq!(ok(dir, &["run", "q0", "--events", "0", "--rate", "1000", "--cores", "1"]).trim(), "2");
    let err = fails(dir, &["run", "q1", "--events", "0", "--rate", "1000", "--cores", "1"]);
    assert!(err.contains("needs 1 cores but 0 of the daemon's 2 are free"), "{err}");
    // A bad statement comes back as the planner's error.
    let err = fails(dir, &["run", "bad.sql"]);
    assert!(err.contains("bad.sql: line 2, column") && err.contains("SELEKT"), "{err}");
    assert!(fails(dir, &["stop", "1"]).contains("--savepoint"));

    // Stop with a savepoint, and cancel.
    let stopped_at = ok(dir, &["stop", "1", "--savepoint"]).trim().to_string();
    assert!(Path::new(&stopped_at).join("_metadata").is_file(), "savepoint {stopped_at}");
    let st = status(dir, "1");
    assert_eq!(st["state"], "finished");
    assert_eq!(st["stopped_with_savepoint"], stopped_at.as_str());
    assert_eq!(ok(dir, &["cancel", "2"]).trim(), "job 2 cancelled");
    assert_eq!(status(dir, "2")["state"], "cancelled");
    assert!(fails(dir, &["cancel", "2"]).contains("already cancelled"));
    assert!(fails(dir, &["status", "9"]).contains("no job 9"));

    // The job resumes from the stop's savepoint.
    let resumed = ok(dir, &["run", "bids.sql", "--cores", "1", "--restore", &stopped_at]);
    assert_eq!(resumed.trim(), "3");
    let st = poll("the resumed job to read records", Duration::from_secs(60), || {
        let st = status(dir, "3");
        (st["records_per_second"].as_f64()? > 0.0).then_some(st)
    });
    assert_eq!(st["checkpoints"]["totals"]["restored_from"], stopped_at.as_str());
    let jobs: Value = serde_json::from_str(&ok(dir, &["list", "--json"])).expect("list JSON");
    let states: Vec<&str> = jobs["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["state"].as_str().expect("state"))
        .collect();
    assert_eq!(states, ["finished", "cancelled", "running"]);

    // SIGTERM: running jobs are cancelled, the address file goes, the daemon exits 0.
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let mut daemon = daemon;
    let exit = poll("the daemon to exit", Duration::from_secs(60), || daemon.0.try_wait().expect("wait"));
    assert!(exit.success(), "daemon exit {exit}");
    assert!(!address_file.exists(), "the address file is removed");
    let logs = logs.join().expect("log reader");
    let parsed: Vec<Value> = logs
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("JSON log line {l}: {e}")))
        .collect();
    let message = |v: &Value| v["fields"]["message"].as_str().unwrap_or("").to_string();
    assert!(
        parsed
            .iter()
            .any(|v| message(v).contains("daemon: 2 cores") && message(v).contains(&format!("http://{addr}/"))),
        "startup banner: {logs:?}"
    );
    assert!(
        parsed.iter().any(|v| message(v).contains("accepted") && v["fields"]["job_id"] == "1"),
        "{logs:?}"
    );
    assert!(parsed.iter().any(|v| v["level"] == "WARN" && message(v).contains("SELEKT")), "{logs:?}");
    assert!(parsed.iter().any(|v| message(v).contains("restore: state rebuilt")), "{logs:?}");
}
