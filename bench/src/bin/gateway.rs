//! Gateway figures: acknowledged events per second and the ack latency of requests (time from
//! sending a batch to its durable ack: group commit + fdatasync), over HTTP keep-alive and the
//! TCP protocol, with a job on the shards reading every event into a blackhole sink.
//!
//! `cargo run --release -p weir-bench --bin gateway -- --seconds 10 --clients 8 --batch 100`
//! writes `bench/results/gateway.json`. The log lives in `--dir` (default: a folder under the
//! system temp dir; put it on the disk you care about: fdatasync cost is the figure).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use weir::prelude::*;
use weir::source::gateway::protocol::{HttpClient, TcpClient};
use weir::source::gateway::{Gateway, GatewayConfig, GatewaySource};

#[derive(Parser)]
struct Args {
    /// Seconds per protocol.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent clients (one connection each).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Bytes of padding per event (an event is ~40 bytes plus this).
    #[arg(long, default_value_t = 100)]
    pad: usize,
    /// Shards of the reading job (and log partitions).
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Log folder (emptied first).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    #[arg(long, default_value = "bench/results/gateway.json")]
    out: std::path::PathBuf,
}

#[derive(serde::Deserialize)]
struct Ev {
    #[allow(dead_code)]
    id: u64,
}

struct Run {
    events: u64,
    requests: u64,
    seconds: f64,
    latency: Histogram<u64>,
}

fn run(args: &Args, tcp: bool) -> Run {
    let dir = args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join("weir-gateway-bench"));
    let _ = std::fs::remove_dir_all(&dir);
    let gateway = Gateway::start(
        "bench",
        GatewayConfig {
            http_address: Some("127.0.0.1:0".into()),
            tcp_address: Some("127.0.0.1:0".into()),
            log_dir: dir.clone(),
            partitions: args.cores,
            max_backlog_events: 10_000_000,
            retention_bytes: 64 << 20,
            ..Default::default()
        },
    )
    .expect("gateway starts");
    let (http, tcp_addr) = (gateway.http_addr().unwrap(), gateway.tcp_addr().unwrap());
    let env = StreamEnv::new(EngineConfig {
        cores: args.cores,
        pin_cores: false,
        ..Default::default()
    });
    let source = GatewaySource::<Ev>::json(gateway);
    let handle = source.handle();
    env.source(source).without_event_time().sink(BlackholeSink);
    let (graph, config) = (env.graph(), env.config().clone());
    let job = std::thread::spawn(move || weir::shard::runtime::execute(graph, &config));

    let stop = Arc::new(AtomicBool::new(false));
    let pad = "x".repeat(args.pad);
    let started = Instant::now();
    let clients: Vec<_> = (0..args.clients)
        .map(|c| {
            let (stop, pad, batch) = (stop.clone(), pad.clone(), args.batch);
            std::thread::spawn(move || {
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut events, mut requests) = (0u64, 0u64);
                let mut http_client = HttpClient::new(http, Duration::from_secs(30));
                let mut tcp_client = if tcp {
                    Some(TcpClient::connect(tcp_addr, None, Duration::from_secs(30)).unwrap())
                } else {
                    None
                };
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let first = ((c as u64) << 40) | (n * batch as u64);
                    let lines: Vec<String> = (0..batch as u64).map(|i| format!("{{\"id\":{},\"pad\":\"{pad}\"}}", first + i)).collect();
                    let t = Instant::now();
                    let ok = match &mut tcp_client {
                        Some(tc) => tc.send(n, format!("c{c}-{n}").as_bytes(), &lines).map(|r| r.status.accepted()).unwrap_or(false),
                        None => {
                            let body = lines.join("\n");
                            let key = format!("Idempotency-Key: c{c}-{n}");
                            http_client
                                .post("/v1/events", body.as_bytes(), &[key])
                                .map(|r| r.status == 200)
                                .unwrap_or(false)
                        }
                    };
                    if ok {
                        hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                        events += batch as u64;
                        requests += 1;
                    }
                    n += 1;
                }
                (hist, events, requests)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut total = Run {
        events: 0,
        requests: 0,
        seconds: 0.0,
        latency: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    };
    for c in clients {
        let (h, e, r) = c.join().unwrap();
        total.latency.add(h).unwrap();
        total.events += e;
        total.requests += r;
    }
    total.seconds = started.elapsed().as_secs_f64();
    handle.drain();
    job.join().unwrap().expect("job ends after the drain");
    drop(handle);
    let _ = std::fs::remove_dir_all(&dir);
    total
}

fn main() {
    let args = Args::parse();
    let mut results = serde_json::Map::new();
    for (name, tcp) in [("http", false), ("tcp", true)] {
        let r = run(&args, tcp);
        let q = |p: f64| r.latency.value_at_quantile(p) as f64 / 1000.0;
        let figures = serde_json::json!({
            "events_per_second": (r.events as f64 / r.seconds).round(),
            "requests_per_second": (r.requests as f64 / r.seconds).round(),
            "ack_latency_ms": { "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": r.latency.max() as f64 / 1000.0 },
        });
        println!("{name}: {figures}");
        results.insert(name.into(), figures);
    }
    let doc = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "clients": args.clients,
        "events_per_request": args.batch,
        "event_bytes": args.pad + 30,
        "shards": args.cores,
        "results": results,
    });
    std::fs::create_dir_all(args.out.parent().unwrap()).unwrap();
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}
