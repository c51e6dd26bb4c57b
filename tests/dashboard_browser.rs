//! A real headless Chromium (Debian's `chromium`) loads the dashboard served by a running job and
//! the test reads the DOM it rendered: job name, one row per shard, a non-zero throughput, the
//! checkpoint totals and history of the checkpointing job, and the window operator's latency
//! percentiles on each shard. The
//! screenshot is kept under `target/test-artifacts/`. Skipped with a message only when the
//! browser is absent and `CI` is not set (`.ci/setup.sh` installs it); in CI it must run.
//! No sleeps as synchronisation: every wait polls with a bounded deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::control::{execute_with_control, http_get, ControlConfig};
use weir::jobs::{JobOptions, SinkSpec};
use weir::prelude::*;

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    names.iter().flat_map(|n| dirs.iter().map(move |d| d.join(n))).find(|p| p.is_file())
}

/// Poll `probe` until it returns `Some`, failing after `limit`.
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

/// Text of the element `<tag id="id">text</tag>` in `dom`.
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let open_end = start + dom[start..].find('>')? + 1;
    let close = open_end + dom[open_end..].find('<')?;
    Some(&dom[open_end..close])
}

/// The rows of the operator latency table: (operator, shard, [p50, p99, p99.9] µs).
fn operator_latency_rows(dom: &str) -> Vec<(String, String, [f64; 3])> {
    let cell = |row: &str, class: &str| -> f64 {
        element_after(row, &format!("class=\"{class}\""))
            .and_then(|t| t.replace(',', "").parse().ok())
            .unwrap_or(f64::NAN)
    };
    dom.split("<tr data-operator-latency=\"")
        .skip(1)
        .map(|row| {
            let row = &row[..row.find("</tr>").unwrap_or(row.len())];
            let operator = row[..row.find('"').unwrap_or(0)].to_string();
            let shard = row
                .split("data-latency-shard=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string();
            (operator, shard, [cell(row, "p50"), cell(row, "p99"), cell(row, "p999")])
        })
        .collect()
}

/// Text of the first element whose opening tag contains `attribute`, within `html`.
fn element_after<'a>(html: &'a str, attribute: &str) -> Option<&'a str> {
    let start = html.find(attribute)?;
    let open_end = start + html[start..].find('>')? + 1;
    let close = open_end + html[open_end..].find('<')?;
    Some(&html[open_end..close])
}

fn chromium(browser: &PathBuf, profile: &std::path::Path, extra: &[String], url: &str) -> std::process::Output {
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-dev-shm-usage",
        // Let the page's first status polls complete before the DOM is dumped.
        "--virtual-time-budget=4000",
        "--window-size=1280,1400",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start chromium");
    // Read both pipes on threads so a chatty browser never blocks on a full pipe.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::park_timeout(Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

#[test]
fn chromium_renders_the_dashboard_of_a_running_job() {
    let Some(browser) = find_binary(&["chromium", "chromium-browser"]) else {
        assert!(std::env::var_os("CI").is_none(), "chromium is not installed but CI is set: run .ci/setup.sh");
        eprintln!("SKIPPED: no `chromium` binary (run .ci/setup.sh); CI is not set");
        return;
    };

    let checkpoints = tempfile::tempdir().expect("checkpoint dir");
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        checkpoint_interval_ms: 300,
        checkpoint_dir: Some(checkpoints.path().to_path_buf()),
        ..Default::default()
    });
    let options = JobOptions {
        events: 0,
        rate_per_second: Some(50_000),
        sink: SinkSpec::Blackhole,
        out_of_orderness_ms: 1_000,
        splits: 0,
    };
    weir::jobs::build(&env, "tumble-count", &options).expect("built-in job");
    let (tx, rx) = mpsc::channel();
    let graph = env.graph();
    let config = env.config().clone();
    std::thread::spawn(move || {
        execute_with_control(
            "browser-test",
            graph,
            &config,
            "127.0.0.1:0",
            ControlConfig::default(),
            Duration::ZERO,
            move |a| tx.send(a).expect("address"),
        )
    });
    let addr: SocketAddr = rx.recv_timeout(Duration::from_secs(30)).expect("control server started");

    // Wait until the status API reports throughput, so the page's first poll shows it too.
    poll("throughput in /api/status", Duration::from_secs(30), || {
        let (code, body) = http_get(addr, "/api/status", None, Duration::from_secs(5)).ok()?;
        let st: Value = serde_json::from_str(&body).ok()?;
        let window_latency_shards = st["operator_latency"]
            .as_array()?
            .iter()
            .filter(|l| l["operator"].as_str().is_some_and(|o| o.starts_with("window:")) && l["p50_us"].as_u64().is_some_and(|v| v > 0))
            .count();
        (code == 200 && st["records_per_second"].as_f64()? > 0.0 && st["checkpoints"]["totals"]["completed"].as_u64()? >= 2 && window_latency_shards == 2)
            .then_some(())
    });

    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("http://{addr}/");
    let out = chromium(&browser, profile.path(), &["--dump-dom".to_string()], &url);
    assert!(out.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&out.stderr));
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(element_text(&dom, "job-name"), Some("browser-test"), "job name in the DOM");
    assert_eq!(element_text(&dom, "job-state"), Some("running"));
    assert_eq!(element_text(&dom, "shard-count"), Some("2"));
    assert!(dom.contains("data-shard=\"0\"") && dom.contains("data-shard=\"1\""), "one row per shard");
    let throughput: f64 = element_text(&dom, "throughput")
        .expect("throughput")
        .replace(',', "")
        .parse()
        .expect("a number");
    assert!(throughput > 0.0, "non-zero throughput in the dashboard");
    assert!(dom.contains("class=\"segment\""), "operator graph drawn");
    assert!(dom.contains("<polyline"), "throughput chart drawn");
    // The checkpoint history: totals and one row per recent checkpoint, newest first.
    let completed: u64 = element_text(&dom, "checkpoints-completed").expect("completed").parse().expect("a number");
    assert!(completed >= 2, "checkpoints completed in the dashboard: {completed}");
    assert!(element_text(&dom, "checkpoint-last").is_some_and(|t| t.contains(" ms,") && t.contains("alignment")));
    let rows = dom.matches("data-epoch=\"").count();
    assert!(rows >= 2, "checkpoint history rows: {rows}");
    assert!(dom.contains(">completed</td>"), "a completed checkpoint in the history");
    // Operator latency: one row per shard for the window operator, with percentiles in µs.
    let rows = operator_latency_rows(&dom);
    let window_rows: Vec<&(String, String, [f64; 3])> = rows.iter().filter(|(op, _, _)| op.starts_with("window:")).collect();
    assert_eq!(
        window_rows.iter().map(|(_, shard, _)| shard.as_str()).collect::<Vec<_>>(),
        ["0", "1"],
        "window latency rows per shard: {rows:?}"
    );
    for (op, shard, [p50, p99, p999]) in window_rows {
        assert!(
            *p50 >= 1.0 && p50 <= p99 && p99 <= p999,
            "{op} shard {shard}: p50 {p50} p99 {p99} p99.9 {p999} µs"
        );
    }

    // Keep a screenshot as a test artifact.
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target dir").join("test-artifacts");
    std::fs::create_dir_all(&artifacts).expect("artifacts dir");
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let profile = tempfile::tempdir().expect("profile dir");
    let out = chromium(&browser, profile.path(), &[format!("--screenshot={}", shot.display())], &url);
    assert!(out.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&out.stderr));
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot ({} bytes)", png.len());
}
