//! A real Prometheus server (Debian's `prometheus`) scrapes a running, checkpointing job's
//! `/metrics` on loopback; the test then asks Prometheus' HTTP API for the series, the live
//! checkpoint figures and the per-operator and sink latency percentiles among them. Skipped with a message only
//! when the binary is absent and `CI` is not set (`.ci/setup.sh` installs it); in CI it must run.
//! No sleeps as synchronisation: every wait polls with a bounded deadline.

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::control::{execute_with_control, http_get, ControlConfig};
use weir::jobs::{JobOptions, SinkSpec};
use weir::prelude::*;

const TIMEOUT: Duration = Duration::from_secs(5);

/// Kills the child process when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_binary(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Poll `probe` until it returns `Some`, failing after `limit`.
fn poll<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Prometheus' instant-query results for `query` (URL-safe queries only).
fn query(prometheus: SocketAddr, query: &str) -> Vec<Value> {
    let Ok((200, body)) = http_get(prometheus, &format!("/api/v1/query?query={query}"), None, TIMEOUT) else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(series: &Value) -> f64 {
    series["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

#[test]
fn prometheus_scrapes_a_running_job() {
    let Some(prometheus_bin) = find_binary("prometheus") else {
        assert!(std::env::var_os("CI").is_none(), "prometheus is not installed but CI is set: run .ci/setup.sh");
        eprintln!("SKIPPED: the `prometheus` binary is not installed (run .ci/setup.sh); CI is not set");
        return;
    };

    // The job: unbounded, rate-limited Nexmark bids counted in tumbling windows; it runs until
    // the test process exits.
    let checkpoints = tempfile::tempdir().expect("checkpoint dir");
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        checkpoint_interval_ms: 500,
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
        execute_with_control("prom-test", graph, &config, "127.0.0.1:0", ControlConfig::default(), Duration::ZERO, move |a| {
            tx.send(a).expect("address")
        })
    });
    let weir_addr: SocketAddr = rx.recv_timeout(Duration::from_secs(30)).expect("control server started");

    // A Prometheus of our own on a free loopback port, scraping every second.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let prometheus_addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(
        &config_file,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: weir\n    honor_labels: true\n    static_configs:\n      - targets: ['{weir_addr}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
    let _prometheus = KillOnDrop(
        Command::new(prometheus_bin)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={prometheus_addr}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );

    // The target is up, and the series exist with sane values.
    poll("prometheus to scrape weir (up == 1)", Duration::from_secs(60), || {
        query(prometheus_addr, "up").iter().any(|s| value(s) == 1.0).then_some(())
    });
    let records = poll("weir_records_out_total > 0 for the source on both shards", Duration::from_secs(60), || {
        let series = query(prometheus_addr, "weir_records_out_total");
        let sources: Vec<&Value> = series
            .iter()
            .filter(|s| s["metric"]["job"] == "prom-test" && s["metric"]["operator"].as_str().is_some_and(|o| o.starts_with("source:")) && value(s) > 0.0)
            .collect();
        (sources.len() == 2).then(|| sources.iter().map(|s| value(s)).sum::<f64>())
    });
    assert!(records > 0.0);
    let rates = poll("a positive rate() of records into the windows", Duration::from_secs(60), || {
        let r = query(prometheus_addr, "rate(weir_records_in_total[5s])");
        let total: f64 = r
            .iter()
            .filter(|s| s["metric"]["operator"].as_str().is_some_and(|o| o.starts_with("window:")))
            .map(value)
            .sum();
        (total > 0.0).then_some(total)
    });
    assert!(rates < 1.0e9, "rate {rates}");
    let lag = poll("watermark lag series", Duration::from_secs(60), || {
        let r = query(prometheus_addr, "weir_watermark_lag_ms");
        (!r.is_empty()).then(|| r.iter().map(value).fold(f64::INFINITY, f64::min))
    });
    assert!(lag >= 0.0, "watermark lag {lag}");
    let busy = poll("busy time series", Duration::from_secs(60), || {
        let r = query(prometheus_addr, "weir_busy_time_ms_per_second");
        (r.len() >= 4).then_some(r)
    });
    for s in &busy {
        let v = value(s);
        assert!((0.0..=1000.0).contains(&v), "busy {v} ms/s in {s}");
        assert!(s["metric"]["shard"].as_str().is_some(), "shard label: {s}");
    }
    let rings = poll("ring series", Duration::from_secs(60), || {
        let r = query(prometheus_addr, "weir_ring_records_sent_total");
        (r.len() == 4).then_some(r)
    });
    assert!(rings
        .iter()
        .all(|s| s["metric"]["from_shard"].is_string() && s["metric"]["to_shard"].is_string()));

    // Per-operator latency (ingest → the window's input, across the keyed exchange): p50, p99
    // and p99.9 for the window operator on each of the two shards, ordered, in µs.
    let latency = poll("weir_operator_latency_us for the window on both shards", Duration::from_secs(60), || {
        let r: Vec<Value> = query(prometheus_addr, "weir_operator_latency_us")
            .into_iter()
            .filter(|s| s["metric"]["job"] == "prom-test")
            .collect();
        let window = |shard: &str| {
            r.iter()
                .filter(|s| s["metric"]["operator"].as_str().is_some_and(|o| o.starts_with("window:")) && s["metric"]["shard"] == shard)
                .count()
        };
        (window("0") == 3 && window("1") == 3).then_some(r)
    });
    for s in &latency {
        let v = value(s);
        assert!((1.0..=60_000_000.0).contains(&v), "operator latency {v} µs in {s}");
    }
    for shard in ["0", "1"] {
        let q = |quantile: &str| {
            latency
                .iter()
                .find(|s| {
                    s["metric"]["operator"].as_str().is_some_and(|o| o.starts_with("window:"))
                        && s["metric"]["shard"] == shard
                        && s["metric"]["quantile"] == quantile
                })
                .map(value)
                .unwrap_or_else(|| panic!("quantile {quantile} on shard {shard}"))
        };
        let (p50, p99, p999) = (q("0.5"), q("0.99"), q("0.999"));
        assert!(p50 <= p99 && p99 <= p999, "shard {shard}: p50 {p50} ≤ p99 {p99} ≤ p99.9 {p999} µs");
        // A 50 000 records/s job on two idle-ish shards: the median input waits far below a second.
        assert!(p50 < 1_000_000.0, "shard {shard}: window input p50 {p50} µs");
    }
    // The end-to-end sink latency exists beside it (windows fire every 10 s of event time).
    let sink = poll("weir_sink_latency_us", Duration::from_secs(60), || {
        let r = query(prometheus_addr, "weir_sink_latency_us");
        (!r.is_empty()).then_some(r)
    });
    assert!(sink.iter().all(|s| (1.0..=60_000_000.0).contains(&value(s))), "sink latency: {sink:?}");

    // Live checkpoint figures (the job checkpoints every 500 ms).
    let completed = poll("weir_checkpoints_completed_total >= 2", Duration::from_secs(60), || {
        let r = query(prometheus_addr, "weir_checkpoints_completed_total");
        r.iter().map(value).find(|v| *v >= 2.0)
    });
    assert!(completed.is_finite());
    for (metric, low, high) in [
        ("weir_checkpoints_failed_total", 0.0, 0.0),
        ("weir_checkpoint_last_duration_ms", 0.0, 60_000.0),
        ("weir_checkpoint_last_size_bytes", 1.0, 1e9),
        ("weir_checkpoint_last_alignment_ms", 0.0, 60_000.0),
        ("weir_checkpoint_last_snapshot_ms", 0.0, 60_000.0),
    ] {
        let v = poll(metric, Duration::from_secs(60), || query(prometheus_addr, metric).first().map(value));
        assert!((low..=high).contains(&v), "{metric} = {v}, expected {low}..={high}");
    }
    let age = poll("time since the last checkpoint", Duration::from_secs(60), || {
        query(prometheus_addr, "time()-weir_checkpoint_last_completed_timestamp_seconds")
            .first()
            .map(value)
    });
    assert!(age < 60.0, "last checkpoint {age} s ago");
}
