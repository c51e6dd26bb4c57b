//! Metrics overhead: the tumble-count job (Nexmark bids, 10 s tumbling count per auction,
//! blackhole sink) with instrumentation on — per-segment busy/idle/backpressure time, watermark
//! publishing, sampled sink latency, a control server with its sampler, and `/metrics` scraped
//! every second — against instrumentation off, side by side in one run, alternating on/off so
//! both see the same machine state. Prints JSON with the median throughput (per wall second and per
//! CPU second, the fairer figure on a shared machine) of each and the ratios,
//! and writes it to `bench/results/metrics_overhead.json`.
//!
//! `cargo run --release -p weir-bench --bin metrics_overhead -- [--events N] [--rounds R] [--cores C]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use weir::control::{execute_with_control, http_get, ControlConfig};
use weir::prelude::*;
use weir::shard::metrics::set_instrumentation;
use weir::source::nexmark::{BidFields, GeneratorConfig};
use weir::source::nexmark_source::NexmarkBidSource;
use weir_bench::cpu_seconds;

#[derive(Parser)]
struct Args {
    /// Nexmark events per run.
    #[arg(long, default_value_t = 20_000_000)]
    events: u64,
    /// Pairs of (on, off) runs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Shards.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/metrics_overhead.json")]
    out: String,
}

fn build(args: &Args) -> StreamEnv {
    let env = StreamEnv::new(EngineConfig {
        cores: args.cores,
        ..Default::default()
    });
    env.source(NexmarkBidSource::new(GeneratorConfig {
        max_events: args.events,
        ..Default::default()
    }))
    .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(4_000), |b: &BidFields| b.date_time)
    .key_by(|b: &BidFields| b.auction)
    .window(WindowAssigner::tumbling(10_000))
    .aggregate(Count)
    .sink(BlackholeSink);
    env
}

/// (bids per wall second, bids per CPU second) of one run.
fn run(args: &Args, instrumented: bool) -> (f64, f64) {
    set_instrumentation(instrumented);
    let cpu0 = cpu_seconds();
    let env = build(args);
    let report = if instrumented {
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let scraper = {
            let done = done.clone();
            std::thread::spawn(move || {
                let addr = rx.recv().expect("control address");
                let mut scrapes = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if let Ok((200, _)) = http_get(addr, "/metrics", None, Duration::from_secs(5)) {
                        scrapes += 1;
                    }
                    std::thread::park_timeout(Duration::from_secs(1));
                }
                scrapes
            })
        };
        let report = execute_with_control(
            "tumble-count",
            env.graph(),
            env.config(),
            "127.0.0.1:0",
            ControlConfig::default(),
            Duration::ZERO,
            move |a| tx.send(a).expect("scraper waits"),
        );
        done.store(true, Ordering::Relaxed);
        scraper.thread().unpark();
        let scrapes = scraper.join().expect("scraper");
        eprintln!("  (scraped /metrics {scrapes} times)");
        report
    } else {
        env.execute()
    }
    .expect("tumble-count runs");
    let cpu = cpu_seconds() - cpu0;
    let bids = report.operators_named("source:").records_out as f64;
    (bids / report.elapsed.as_secs_f64(), bids / cpu.max(1e-9))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let (mut on, mut off, mut on_cpu, mut off_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // Alternate which goes first so warm-up and drift do not favour one side.
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for instrumented in order {
            let (r, per_cpu) = run(&args, instrumented);
            eprintln!(
                "round {round}: instrumentation {}: {:.0} bids/s, {:.0} bids per CPU-second",
                if instrumented { "on " } else { "off" },
                r,
                per_cpu
            );
            if instrumented {
                on.push(r);
                on_cpu.push(per_cpu);
            } else {
                off.push(r);
                off_cpu.push(per_cpu);
            }
        }
    }
    let (m_on, m_off) = (median(on.clone()), median(off.clone()));
    let (c_on, c_off) = (median(on_cpu.clone()), median(off_cpu.clone()));
    // Ratios of each (on, off) pair run back to back: robust to the machine's drift between rounds.
    let paired = |a: &[f64], b: &[f64]| median(a.iter().zip(b).map(|(x, y)| x / y).collect());
    let result = json!({
        "job": "tumble-count", "events": args.events, "shards": args.cores, "rounds": args.rounds,
        "bids_per_s_on": on, "bids_per_s_off": off,
        "median_on": m_on, "median_off": m_off,
        "ratio_on_over_off": m_on / m_off,
        "overhead_percent": (1.0 - m_on / m_off) * 100.0,
        "bids_per_cpu_s_on": on_cpu, "bids_per_cpu_s_off": off_cpu,
        "median_per_cpu_s_on": c_on, "median_per_cpu_s_off": c_off,
        "cpu_ratio_on_over_off": c_on / c_off,
        "paired_ratio_median": paired(&on, &off),
        "paired_cpu_ratio_median": paired(&on_cpu, &off_cpu),
    });
    let text = serde_json::to_string_pretty(&result).expect("json");
    println!("{text}");
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&args.out, text + "\n") {
        eprintln!("writing {}: {e}", args.out);
    }
}
