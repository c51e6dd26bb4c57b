//! Metrics overhead: the filter-tumble-count job (Nexmark bids, a pass-through filter, 10 s
//! tumbling count per auction, blackhole sink) with instrumentation on — per-segment
//! busy/idle/backpressure time, watermark publishing, per-batch latency probes in front of the
//! filter and the window (ingest → operator input) and the sink (ingest → sink), a control
//! server with its sampler, and `/metrics` scraped every second — against instrumentation off,
//! side by side in one run, alternating on/off so both see the same machine state. Prints JSON
//! with the median throughput (per wall second and per CPU second, the fairer figure on a shared
//! machine) of each, the ratios, and the latency series the last scrape of each instrumented run
//! held (proof the probes ran), and writes it to `bench/results/metrics_overhead.json`. Before
//! the runs it times one probe alone (a bare operator vs the same operator behind a probe,
//! fastest of five, batches of the default size): the cost the per-operator probes add per
//! batch, too small for the job runs to resolve on a shared machine.
//!
//! `cargo run --release -p weir-bench --bin metrics_overhead -- [--events N] [--rounds R] [--cores C]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use weir::batch::Batch;
use weir::checkpoint::runtime::TaskSnapshot;
use weir::control::latency::LatencyProbe;
use weir::control::{execute_with_control, http_get, ControlConfig};
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::metrics::{clock_ns, set_current_ingest_ns, set_instrumentation, LatencyGauges};
use weir::source::nexmark::{BidFields, GeneratorConfig};
use weir::source::nexmark_source::NexmarkBidSource;
use weir::time::Timestamp;
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
    // Keeps every bid (prices are positive): a stateless operator with its own latency probe in
    // the source segment.
    .filter(|b: &BidFields| b.price > 0)
    .key_by(|b: &BidFields| b.auction)
    .window(WindowAssigner::tumbling(10_000))
    .aggregate(Count)
    .sink(BlackholeSink);
    env
}

/// What one run measured.
struct RunFigures {
    bids_per_second: f64,
    bids_per_cpu_second: f64,
    /// Instrumented runs: the operator and sink latency series of the last `/metrics` scrape.
    latency_series: Vec<String>,
}

/// The `weir_operator_latency_us` / `weir_sink_latency_us` p50 lines of an exposition, as
/// `metric{operator,shard} value`.
fn latency_series(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter(|l| (l.starts_with("weir_operator_latency_us{") || l.starts_with("weir_sink_latency_us{")) && l.contains("quantile=\"0.5\""))
        .map(str::to_string)
        .collect()
}

/// Throughput of one run.
fn run(args: &Args, instrumented: bool) -> RunFigures {
    set_instrumentation(instrumented);
    let cpu0 = cpu_seconds();
    let env = build(args);
    let mut series = Vec::new();
    let report = if instrumented {
        let (tx, rx) = mpsc::channel();
        let done = Arc::new(AtomicBool::new(false));
        let scraper = {
            let done = done.clone();
            std::thread::spawn(move || {
                let addr = rx.recv().expect("control address");
                let mut scrapes = 0u64;
                let mut last = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok((200, body)) = http_get(addr, "/metrics", None, Duration::from_secs(5)) {
                        scrapes += 1;
                        let seen = latency_series(&body);
                        if !seen.is_empty() {
                            last = seen;
                        }
                    }
                    std::thread::park_timeout(Duration::from_secs(1));
                }
                (scrapes, last)
            })
        };
        let report = execute_with_control(
            "filter-tumble-count",
            env.graph(),
            env.config(),
            "127.0.0.1:0",
            ControlConfig::default(),
            Duration::ZERO,
            move |a| tx.send(a).expect("scraper waits"),
        );
        done.store(true, Ordering::Relaxed);
        scraper.thread().unpark();
        let (scrapes, last) = scraper.join().expect("scraper");
        eprintln!("  (scraped /metrics {scrapes} times; latency p50 series of the last scrape: {last:?})");
        series = last;
        report
    } else {
        env.execute()
    }
    .expect("filter-tumble-count runs");
    let cpu = cpu_seconds() - cpu0;
    let bids = report.operators_named("source:").records_out as f64;
    RunFigures {
        bids_per_second: bids / report.elapsed.as_secs_f64(),
        bids_per_cpu_second: bids / cpu.max(1e-9),
        latency_series: series,
    }
}

/// Sums the records it is handed (the cheapest operator there is).
struct Summing(u64);

impl Push<u64> for Summing {
    fn push(&mut self, batch: &mut Batch<u64>) {
        self.0 = self.0.wrapping_add(std::hint::black_box(batch.records.iter().sum::<u64>()));
    }
    fn watermark(&mut self, _: Timestamp) {}
    fn processing_time(&mut self, _: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _: u64, _: &mut TaskSnapshot) {}
}

/// ns one latency probe adds to a batch of `batch_size` records: the fastest of several
/// alternating timings of a bare operator and the same operator behind a probe (the machine's
/// noise only ever adds time, so the minimum is the cost).
fn probe_ns_per_batch(batch_size: usize) -> (f64, f64) {
    const BATCHES: u32 = 2_000_000;
    let mut batch = Batch::with_capacity(batch_size);
    for i in 0..batch_size as u64 {
        batch.push(i, i as i64);
    }
    set_current_ingest_ns(clock_ns());
    let time = |push: &mut dyn Push<u64>, batch: &mut Batch<u64>| {
        let t = Instant::now();
        for _ in 0..BATCHES {
            push.push(std::hint::black_box(&mut *batch));
        }
        t.elapsed().as_nanos() as f64 / BATCHES as f64
    };
    let (mut bare, mut probed) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        let mut op = Summing(0);
        bare = bare.min(time(&mut op, &mut batch));
        let mut op = LatencyProbe::wrap_into(Box::new(Summing(0)), Arc::new(LatencyGauges::default()));
        probed = probed.min(time(op.as_mut(), &mut batch));
    }
    set_current_ingest_ns(0);
    (bare, probed)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = Args::parse();
    let (mut on, mut off, mut on_cpu, mut off_cpu) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut probes_seen = Vec::new();
    let batch_size = EngineConfig::default().batch_size;
    let (bare_ns, probed_ns) = probe_ns_per_batch(batch_size);
    eprintln!(
        "one latency probe: {:.1} ns per batch of {batch_size} (bare operator {bare_ns:.1} ns, probed {probed_ns:.1} ns)",
        probed_ns - bare_ns
    );
    for round in 0..args.rounds {
        // Alternate which goes first so warm-up and drift do not favour one side.
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for instrumented in order {
            let figures = run(&args, instrumented);
            let (r, per_cpu) = (figures.bids_per_second, figures.bids_per_cpu_second);
            if !figures.latency_series.is_empty() {
                probes_seen = figures.latency_series;
            }
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
        "job": "filter-tumble-count", "events": args.events, "shards": args.cores, "rounds": args.rounds,
        "bids_per_s_on": on, "bids_per_s_off": off,
        "median_on": m_on, "median_off": m_off,
        "ratio_on_over_off": m_on / m_off,
        "overhead_percent": (1.0 - m_on / m_off) * 100.0,
        "bids_per_cpu_s_on": on_cpu, "bids_per_cpu_s_off": off_cpu,
        "median_per_cpu_s_on": c_on, "median_per_cpu_s_off": c_off,
        "cpu_ratio_on_over_off": c_on / c_off,
        "paired_ratio_median": paired(&on, &off),
        "paired_cpu_ratio_median": paired(&on_cpu, &off_cpu),
        "latency_p50_series_last_scrape": probes_seen,
        "probe_ns_per_batch": probed_ns - bare_ns,
        "probe_batch_size": batch_size,
        "probe_bare_operator_ns_per_batch": bare_ns,
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
