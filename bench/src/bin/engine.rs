//! Engine benchmark: tumbling count per auction on the Nexmark generator (events/s per core),
//! ring throughput between two shards, and end-to-end latency through a keyed exchange at a
//! fixed rate. Prints JSON and writes it to `bench/results/engine.json`.
//!
//! `cargo run --release -p weir-bench --bin engine -- [--events N] [--latency-rate R]`

use clap::Parser;
use serde_json::json;
use weir::key::{KeyGroups, StableHash};
use weir::prelude::*;
use weir::source::nexmark::{BidFields, GeneratorConfig};
use weir::source::nexmark_source::NexmarkBidSource;
use weir_bench::{clock_ns, cpu_seconds, LatencySink, RangeSource};

#[derive(Parser)]
struct Args {
    /// Nexmark events per throughput run.
    #[arg(long, default_value_t = 50_000_000)]
    events: u64,
    /// Records through the ring benchmark.
    #[arg(long, default_value_t = 100_000_000)]
    ring_records: u64,
    /// Events per second for the latency run.
    #[arg(long, default_value_t = 1_000_000)]
    latency_rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/engine.json")]
    out: String,
}

fn engine(cores: usize) -> EngineConfig {
    EngineConfig { cores, ..Default::default() }
}

/// Tumbling 10 s count per auction over `events` generated events on `cores` shards.
fn tumble_count(events: u64, cores: usize) -> serde_json::Value {
    let env = StreamEnv::new(engine(cores));
    env.source(NexmarkBidSource::new(GeneratorConfig {
        max_events: events,
        ..Default::default()
    }))
    .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(4_000), |b: &BidFields| b.date_time)
    .key_by(|b: &BidFields| b.auction)
    .window(WindowAssigner::tumbling(10_000))
    .aggregate(Count)
    .sink(BlackholeSink);
    let cpu0 = cpu_seconds();
    let report = env.execute().expect("tumble-count runs");
    let cpu = cpu_seconds() - cpu0;
    let wall = report.elapsed.as_secs_f64();
    let bids = report.operators_named("source:").records_out;
    json!({
        "job": "tumble-count", "shards": cores, "events_generated": events, "bids": bids,
        "wall_s": wall, "cpu_s": cpu,
        "bids_per_s": bids as f64 / wall,
        "bids_per_s_per_core_wall": bids as f64 / wall / cores as f64,
        "bids_per_cpu_s": bids as f64 / cpu.max(1e-9),
        "windows_out": report.operators_named("sink:").records_in,
        "ring_backpressure_ms": report.backpressure_ns() as f64 / 1e6,
    })
}

/// Shard 0 sends every record to shard 1 through one ring.
fn ring_throughput(records: u64) -> serde_json::Value {
    let groups = KeyGroups::new(weir::key::DEFAULT_MAX_KEY_GROUPS, 2);
    let to_shard_1 = (0u64..).find(|k| groups.shard_of_hash(k.stable_hash()) == 1).expect("a key on shard 1");
    let env = StreamEnv::new(engine(2));
    env.source(RangeSource { count: records })
        .without_event_time()
        .key_by(move |_: &u64| to_shard_1)
        .sink(BlackholeSink);
    let cpu0 = cpu_seconds();
    let report = env.execute().expect("ring benchmark runs");
    let cpu = cpu_seconds() - cpu0;
    let wall = report.elapsed.as_secs_f64();
    let ring = report
        .rings
        .iter()
        .find(|((_, from, to), _)| *from == 0 && *to == 1)
        .map(|(_, f)| *f)
        .unwrap_or_default();
    json!({
        "records": records, "wall_s": wall, "cpu_s": cpu,
        "records_per_s": records as f64 / wall,
        "batches_sent": ring.batches_sent,
        "ring_full_ms": ring.full_ns as f64 / 1e6,
        "ring_full_events": ring.full_events,
    })
}

/// Bids at a fixed rate → key_by(auction) → sink; latency = sink time − time the bid left the
/// generator (µs).
fn latency(rate: u64, seconds: u64, cores: usize) -> serde_json::Value {
    let sink = LatencySink::new();
    let merged = sink.merged.clone();
    let env = StreamEnv::new(EngineConfig {
        batch_size: 256,
        ..engine(cores)
    });
    let config = GeneratorConfig {
        max_events: rate * seconds,
        rate_limited: true,
        first_event_rate: rate as i32,
        ..Default::default()
    };
    env.source(NexmarkBidSource::new(config))
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(4_000), |b: &BidFields| b.date_time)
        .map(|b: BidFields| (b, clock_ns()))
        .key_by(|r: &(BidFields, u64)| r.0.auction)
        .sink(sink);
    let report = env.execute().expect("latency run");
    let h = merged.lock().expect("histogram");
    json!({
        "pipeline": "nexmark bids -> map(stamp) -> key_by(auction) -> sink", "shards": cores,
        "rate_events_per_s": rate, "records": h.len(), "wall_s": report.elapsed.as_secs_f64(),
        "latency_us": { "p50": h.value_at_quantile(0.50), "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max() },
    })
}

/// Tumbling count per auction at a fixed rate; latency of each window result = sink time −
/// the wall time at which the watermark closing its window was due. In a rate-limited Nexmark
/// run event time advances with wall time, so window `[s, e)` can fire once an event with
/// timestamp `e − 1 + delay` has been read: at wall offset + (e − 1 + delay).
fn window_latency(rate: u64, seconds: u64, cores: usize) -> serde_json::Value {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::{Arc, Mutex};
    static OFFSET_NS: AtomicI64 = AtomicI64::new(i64::MIN);
    const DELAY_MS: i64 = 100;
    let hist = Arc::new(Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram"),
    ));
    let env = StreamEnv::new(EngineConfig {
        batch_size: 256,
        ..engine(cores)
    });
    let config = GeneratorConfig {
        max_events: rate * seconds,
        rate_limited: true,
        first_event_rate: rate as i32,
        ..Default::default()
    };
    let sink_hist = hist.clone();
    env.source(NexmarkBidSource::new(config))
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(DELAY_MS), |b: &BidFields| b.date_time)
        .map(|b: BidFields| {
            // Wall clock minus event time, from the first bid read (ns).
            let _ = OFFSET_NS.compare_exchange(i64::MIN, clock_ns() as i64 - b.date_time * 1_000_000, Ordering::Relaxed, Ordering::Relaxed);
            b
        })
        .key_by(|b: &BidFields| b.auction)
        .window(WindowAssigner::tumbling(1_000))
        .aggregate(Count)
        .map(move |r: WindowResult<i64, i64>| {
            let due_ns = OFFSET_NS.load(Ordering::Relaxed) + (r.window_end - 1 + DELAY_MS) * 1_000_000;
            let micros = ((clock_ns() as i64 - due_ns).max(1_000) / 1_000) as u64;
            if let Ok(mut h) = sink_hist.lock() {
                h.saturating_record(micros);
            }
            r
        })
        .sink(BlackholeSink);
    let report = env.execute().expect("window latency run");
    let h = hist.lock().expect("histogram");
    json!({
        "pipeline": "nexmark bids -> key_by(auction) -> tumbling 1 s count -> sink", "shards": cores,
        "rate_events_per_s": rate, "window_results": h.len(), "wall_s": report.elapsed.as_secs_f64(),
        "firing_latency_us": { "p50": h.value_at_quantile(0.50), "p99": h.value_at_quantile(0.99), "p999": h.value_at_quantile(0.999), "max": h.max() },
    })
}

fn main() {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut results = json!({ "machine_cores": cores });
    results["tumble_count_1_shard"] = tumble_count(args.events, 1);
    eprintln!("{}", results["tumble_count_1_shard"]);
    if cores >= 2 {
        results["tumble_count_2_shards"] = tumble_count(args.events, 2);
        eprintln!("{}", results["tumble_count_2_shards"]);
        results["ring_0_to_1"] = ring_throughput(args.ring_records);
        eprintln!("{}", results["ring_0_to_1"]);
    }
    results["latency"] = latency(args.latency_rate, args.latency_seconds, cores.min(2));
    eprintln!("{}", results["latency"]);
    results["tumble_count_latency"] = window_latency(args.latency_rate, args.latency_seconds, cores.min(2));
    eprintln!("{}", results["tumble_count_latency"]);
    let text = serde_json::to_string_pretty(&results).expect("json");
    println!("{text}");
    if let Err(e) = std::fs::write(&args.out, &text) {
        eprintln!("could not write {}: {e}", args.out);
    }
}
