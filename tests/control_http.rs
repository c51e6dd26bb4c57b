//! The control plane over real HTTP: a rate-limited Nexmark job serves `/metrics`,
//! `/api/status` and the dashboard while it runs; a slow sink behind tiny rings makes
//! `/api/status` name the backpressured ring and its reader; non-loopback binds need a token.
//! No sleeps as synchronisation: every wait polls with a bounded deadline.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir::batch::Batch;
use weir::control::{execute_with_control, http_get, ControlConfig, ControlServer, JobHandle};
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::{BuildCtx, MetricsRegistry};
use weir::sink::Sink;
use weir::source::nexmark::{BidFields, GeneratorConfig};
use weir::source::nexmark_source::NexmarkBidSource;

const TIMEOUT: Duration = Duration::from_secs(5);

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get(addr, path, None, TIMEOUT).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn status(addr: SocketAddr) -> Value {
    let (code, body) = get(addr, "/api/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("status is JSON")
}

/// Poll `probe` until it returns `Some`, failing after `limit`.
fn poll<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

/// Value of the first sample of `metric` whose line contains every `needle`.
fn sample(exposition: &str, metric: &str, needles: &[&str]) -> Option<f64> {
    exposition
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{'))
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Start `env`'s job with a control server on an ephemeral loopback port; the job's result
/// arrives on the returned channel (wait with a deadline: a hung job fails the test, never hangs it).
fn start(env: &StreamEnv, name: &'static str, linger: Duration) -> (SocketAddr, mpsc::Receiver<Result<JobReport>>) {
    let (addr_tx, addr_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let graph = env.graph();
    let config = env.config().clone();
    std::thread::spawn(move || {
        let result = execute_with_control(name, graph, &config, "127.0.0.1:0", ControlConfig::default(), linger, move |addr| {
            addr_tx.send(addr).expect("test waits for the address")
        });
        let _ = done_tx.send(result);
    });
    let addr = addr_rx.recv_timeout(Duration::from_secs(30)).expect("control server started");
    (addr, done_rx)
}

/// The job's report, waiting at most `limit`.
fn finished(job: &mpsc::Receiver<Result<JobReport>>, limit: Duration) -> JobReport {
    job.recv_timeout(limit).expect("the job ended in time").expect("job succeeded")
}

#[test]
fn serves_metrics_status_and_dashboard_while_a_job_runs() {
    let config = EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    };
    let env = StreamEnv::new(config);
    let generator = GeneratorConfig {
        max_events: 600_000,
        rate_limited: true,
        first_event_rate: 200_000,
        ..Default::default()
    };
    env.source(NexmarkBidSource::new(generator))
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(100), |b: &BidFields| b.date_time)
        .key_by(|b: &BidFields| b.auction)
        .window(WindowAssigner::tumbling(200))
        .aggregate(Count)
        .sink(BlackholeSink);
    let (addr, job) = start(&env, "control-test", Duration::from_secs(10));

    // Records flow and increase between two scrapes.
    let records = |text: &str| {
        sample(
            text,
            "weir_records_in_total",
            &["job=\"control-test\"", "operator=\"window:tumble#", "shard=\"0\""],
        )
    };
    let first = poll("window records on shard 0", Duration::from_secs(30), || {
        let (code, text) = get(addr, "/metrics");
        assert_eq!(code, 200);
        records(&text).filter(|&v| v > 0.0)
    });
    let text = poll("records to increase", Duration::from_secs(30), || {
        let (_, text) = get(addr, "/metrics");
        records(&text).filter(|&v| v > first).map(|_| text)
    });
    assert!(text.ends_with("# EOF\n"), "OpenMetrics exposition ends with # EOF");
    for shard in ["shard=\"0\"", "shard=\"1\""] {
        let out = sample(&text, "weir_records_out_total", &["operator=\"source:nexmark-bids#", shard]).expect("source records out");
        assert!(out > 0.0, "source on {shard} produced records");
        let busy = sample(&text, "weir_busy_time_ms_per_second", &["operator=\"input#", shard]).expect("busy time of the input segment");
        assert!((0.0..=1000.0).contains(&busy), "busy {busy} ms/s");
        sample(&text, "weir_backpressured_time_ms_per_second", &["operator=\"source:nexmark-bids#", shard]).expect("backpressure gauge");
        sample(&text, "weir_ring_full_seconds_total", &["edge=\"exchange#", &format!("from_{shard}")]).expect("ring full time");
    }
    let lag = sample(&text, "weir_watermark_lag_ms", &["operator=\"input#"]).expect("watermark lag of the window input");
    assert!(lag >= 0.0, "watermark lag {lag}");
    assert!(sample(&text, "weir_watermark_ms", &["operator=\"input#"]).expect("watermark") > 1.0e12);
    poll("sink latency percentiles", Duration::from_secs(30), || {
        let (_, text) = get(addr, "/metrics");
        sample(&text, "weir_sink_latency_us", &["operator=\"sink:blackhole#", "quantile=\"0.99\""])
    });

    // The status API: job, state, shards with throughput, graph, watermarks.
    let st = poll("throughput in the status", Duration::from_secs(30), || {
        let st = status(addr);
        (st["records_per_second"].as_f64().unwrap_or(0.0) > 0.0).then_some(st)
    });
    assert_eq!(st["job"], "control-test");
    assert_eq!(st["state"], "running");
    assert_eq!(st["shards"], 2);
    let shards = st["shard_status"].as_array().expect("shard_status");
    assert_eq!(shards.len(), 2);
    for s in shards {
        assert!(s["busy_ms_per_second"].as_f64().expect("busy") <= 1000.0);
        assert!(s["watermark_lag_ms"].as_i64().expect("watermark lag") >= 0);
    }
    let segments = st["graph"]["segments"].as_array().expect("segments");
    assert_eq!(segments.len(), 2, "source segment and window segment: {segments:?}");
    let edge = &st["graph"]["edges"][0];
    assert_eq!(edge["kind"], "hash");
    assert_eq!(edge["from_segment"], 0);
    assert_eq!(edge["to_segment"], 1);
    assert!(edge["reader"].as_str().expect("reader").starts_with("input#"));
    assert_eq!(st["rings"].as_array().expect("rings").len(), 4, "full mesh of 2 shards");

    let (code, jobs) = get(addr, "/api/jobs");
    assert_eq!(code, 200);
    assert!(jobs.contains("\"control-test\""));
    let (code, html) = get(addr, "/");
    assert_eq!(code, 200);
    assert!(html.contains("<title>weir dashboard</title>") && html.contains("app.js"));
    let (code, js) = get(addr, "/app.js");
    assert_eq!(code, 200);
    assert!(js.contains("api/status"));
    assert_eq!(get(addr, "/nope").0, 404);

    // After the end the server keeps serving the final state while it lingers.
    poll("the job to finish", Duration::from_secs(60), || {
        (status(addr)["state"] == "finished").then_some(())
    });
    let (_, text) = get(addr, "/metrics");
    assert_eq!(sample(&text, "weir_job_running", &["control-test"]), Some(0.0));
    // Stalled-reactor kicks are exported per job (their count depends on the machine's load).
    assert!(sample(&text, "weir_reactor_kicks_total", &["control-test"]).is_some(), "{text}");
    let report = finished(&job, Duration::from_secs(60));
    assert!(report.operators_named("window:").records_in > 0);
}

/// A sink that takes 2 ms per batch: the job's bottleneck.
struct SlowSink;

struct SlowPush;

impl<T> Push<T> for SlowPush {
    fn push(&mut self, batch: &mut Batch<T>) {
        // Deliberately blocking: this stands for a slow external system.
        std::thread::sleep(Duration::from_millis(2));
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut weir::checkpoint::runtime::TaskSnapshot) {}
}

impl<T: 'static> Sink<T> for SlowSink {
    fn name(&self) -> String {
        "slow".into()
    }
    fn build(&self, _ctx: &mut BuildCtx<'_>, _operator_name: &str) -> Result<Box<dyn Push<T>>> {
        Ok(Box::new(SlowPush))
    }
}

#[test]
fn status_names_the_backpressured_ring_and_its_reader() {
    let config = EngineConfig {
        cores: 2,
        pin_cores: false,
        batch_size: 64,
        ring_capacity_batches: 1,
        ..Default::default()
    };
    let env = StreamEnv::new(config);
    let records: Vec<(i64, i64)> = (0..300_000).map(|i| (i % 1_000, i)).collect();
    env.from_collection(records)
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(0), |r: &(i64, i64)| r.1)
        .key_by(|r: &(i64, i64)| r.0)
        .sink(SlowSink);
    let (addr, job) = start(&env, "slow-sink", Duration::ZERO);

    let st = poll("a bottleneck", Duration::from_secs(60), || {
        let st = status(addr);
        st["bottleneck"].is_object().then_some(st)
    });
    let b = &st["bottleneck"];
    let reader = st["graph"]["edges"][0]["reader"].as_str().expect("edge reader");
    assert_eq!(b["kind"], "ring");
    assert_eq!(b["operator"], reader, "the reader of the full ring is named: {b}");
    assert!(b["edge"].as_str().expect("edge").starts_with("exchange#"));
    assert!(b["full_ms_per_second"].as_f64().expect("full ms/s") > 0.0);
    // The sending shard reports the wait as backpressure (cumulative: a per-second rate sampled
    // at one instant may fall between two waits).
    let source_bp = |st: &serde_json::Value| {
        st["operators"]
            .as_array()
            .expect("operators")
            .iter()
            .filter(|o| o["name"].as_str().is_some_and(|n| n.starts_with("source:")))
            .map(|o| o["backpressured_ms_total"].as_f64().unwrap_or(0.0))
            .fold(0.0, f64::max)
    };
    let bp = poll("source backpressure", Duration::from_secs(60), || {
        let bp = source_bp(&status(addr));
        (bp > 0.0).then_some(bp)
    });
    assert!(bp > 0.0, "source segment backpressured: {bp}");
    let report = finished(&job, Duration::from_secs(120));
    assert!(report.backpressure_ns() > 0);
}

#[test]
fn non_loopback_bind_needs_a_token_and_the_token_is_checked() {
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    });
    env.from_collection(vec![1i64]).without_event_time().sink(BlackholeSink);
    let job = JobHandle::new("auth", &env.graph(), 1, std::sync::Arc::new(MetricsRegistry::default()));

    let refused = ControlServer::start("0.0.0.0:0", job.clone(), ControlConfig::default());
    let err = refused.err().expect("non-loopback bind without a token is refused").to_string();
    assert!(err.contains("--http-token"), "{err}");

    let token = ControlConfig {
        token: Some("s3cret".into()),
        ..Default::default()
    };
    let server = ControlServer::start("127.0.0.1:0", job.clone(), token.clone()).expect("loopback with token");
    let addr = server.local_addr();
    assert_eq!(http_get(addr, "/api/jobs", None, TIMEOUT).expect("GET").0, 401);
    assert_eq!(http_get(addr, "/api/jobs", Some("wrong"), TIMEOUT).expect("GET").0, 401);
    let (code, body) = http_get(addr, "/api/jobs", Some("s3cret"), TIMEOUT).expect("GET");
    assert_eq!(code, 200);
    assert!(body.contains("\"auth\""));
    drop(server);
    // With a token, a non-loopback bind is allowed.
    let open = ControlServer::start("0.0.0.0:0", job, token).expect("non-loopback bind with a token");
    drop(open);
}

#[test]
fn weir_run_with_http_serves_the_job_and_lingers_after_it_ends() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "q0", "--events", "300000", "--rate", "100000", "--cores", "2", "--no-pin"])
        .arg("--no-checkpoints")
        .args(["--http", "127.0.0.1:0", "--linger-secs", "30"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start weir");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("weir printed the address before exiting").expect("stderr line");
        if let Some(rest) = line.split("serving http://").nth(1) {
            break rest.split('/').next().expect("address").parse().expect("socket address");
        }
    };
    // Drain the rest of stderr so weir never blocks writing its summary.
    let drain = std::thread::spawn(move || lines.map_while(|l| l.ok()).collect::<Vec<_>>());

    let st = status(addr);
    assert_eq!(st["job"], "q0");
    assert_eq!(st["shards"], 2);
    // The job ends after 3 s of events; the server keeps the final state while lingering.
    let st = poll("q0 to finish", Duration::from_secs(60), || {
        let st = status(addr);
        (st["state"] == "finished").then_some(st)
    });
    let sunk: u64 = st["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .filter(|o| o["name"].as_str().is_some_and(|n| n.starts_with("sink:")))
        .map(|o| o["records_in"].as_u64().unwrap_or(0))
        .sum();
    assert!(sunk > 0, "the final state shows what the sink received");
    let (code, text) = get(addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(sample(&text, "weir_job_running", &["q0"]), Some(0.0));
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
}

/// Send `request` raw and return the status code of the response.
fn raw_status(addr: SocketAddr, request: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    // The server may answer (and close) before reading everything: ignore write errors.
    let _ = s.write_all(request);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[test]
fn request_limits_are_enforced() {
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    });
    env.from_collection(vec![1i64]).without_event_time().sink(BlackholeSink);
    let job = JobHandle::new("limits", &env.graph(), 1, std::sync::Arc::new(MetricsRegistry::default()));
    let config = ControlConfig::default();
    let (max_header, max_body) = (config.max_header_bytes, config.max_body_bytes);
    let server = ControlServer::start("127.0.0.1:0", job, config).expect("start");
    let addr = server.local_addr();

    let big_header = format!("GET / HTTP/1.1\r\nX-Filler: {}\r\n\r\n", "a".repeat(max_header + 1));
    assert_eq!(raw_status(addr, big_header.as_bytes()), 431);
    let big_body = format!("POST /api/status HTTP/1.1\r\nContent-Length: {}\r\n\r\n", max_body + 1);
    assert_eq!(raw_status(addr, big_body.as_bytes()), 413);
    assert_eq!(raw_status(addr, b"POST /api/status HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"), 405);
    assert_eq!(raw_status(addr, b"GET / SPDY/9\r\n\r\n"), 400);
    assert_eq!(raw_status(addr, b"HEAD /api/jobs HTTP/1.1\r\n\r\n"), 200);
}
