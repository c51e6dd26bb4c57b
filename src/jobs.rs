//! Built-in jobs on the Nexmark generator: what `weir run <name>` runs without any external
//! service (the SQL front end adds `weir run job.sql`).
//!
//! Every job reads bids from [`NexmarkBidSource`] with Flink's bounded-out-of-orderness
//! watermark (4 s, as the Nexmark SQL tables declare it) and writes to the chosen sink.

use serde::Serialize;

use crate::api::{DataStream, StreamEnv};
use crate::error::{Result, WeirError};
use crate::operator::aggregate::{Count, Max};
use crate::operator::window::WindowAssigner;
use crate::shard::runtime::JobReport;
use crate::sink::blackhole::BlackholeSink;
use crate::sink::file::FileSink;
use crate::sink::format::Format;
use crate::sink::stdout::StdoutSink;
use crate::source::nexmark::{BidFields, GeneratorConfig};
use crate::source::nexmark_source::NexmarkBidSource;
use crate::time::WatermarkStrategy;

/// Where a built-in job writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkSpec {
    Blackhole,
    Print,
    File { dir: std::path::PathBuf, format: Format },
}

impl std::str::FromStr for SinkSpec {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "blackhole" => Ok(SinkSpec::Blackhole),
            "print" | "stdout" => Ok(SinkSpec::Print),
            _ => {
                if let Some(dir) = s.strip_prefix("csv:") {
                    Ok(SinkSpec::File {
                        dir: dir.into(),
                        format: Format::Csv,
                    })
                } else if let Some(dir) = s.strip_prefix("json:") {
                    Ok(SinkSpec::File {
                        dir: dir.into(),
                        format: Format::Json,
                    })
                } else {
                    Err(format!("unknown sink `{s}`: use blackhole, print, csv:<folder> or json:<folder>"))
                }
            }
        }
    }
}

/// Parameters of a built-in job.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// Events to generate (0: unbounded).
    pub events: u64,
    /// Events per second over all splits (`None`: as fast as possible).
    pub rate_per_second: Option<u64>,
    pub sink: SinkSpec,
    /// Watermark delay (ms).
    pub out_of_orderness_ms: i64,
    /// Generator splits (0: one per shard). A fixed count lets a checkpoint or savepoint
    /// restore on a different number of shards.
    pub splits: usize,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            events: 10_000_000,
            rate_per_second: None,
            sink: SinkSpec::Blackhole,
            out_of_orderness_ms: 4_000,
            splits: 0,
        }
    }
}

/// A built-in job: name, what it computes.
pub const BUILT_IN_JOBS: &[(&str, &str)] = &[
    ("tumble-count", "bids per auction in 10 s tumbling windows (the main job)"),
    ("hop-count", "bids per auction in 10 s windows every 2 s"),
    ("session-bidder", "per bidder, sessions with a 3 s gap: bid count and highest price"),
    ("q0", "Nexmark q0: every bid passed through"),
    ("q1", "Nexmark q1: bid prices converted to euros (price * 0.908)"),
    ("q2", "Nexmark q2: bids of every 123rd auction"),
];

#[derive(Serialize)]
struct BidRow {
    auction: i64,
    bidder: i64,
    price: i64,
    date_time: i64,
}

#[derive(Serialize)]
struct EuroBidRow {
    auction: i64,
    bidder: i64,
    price: f64,
    date_time: i64,
}

#[derive(Serialize)]
struct SessionRow {
    bidder: i64,
    window_start: i64,
    window_end: i64,
    bids: i64,
    highest_price: i64,
}

fn attach<T: Serialize + Send + 'static>(stream: DataStream<T>, sink: &SinkSpec) {
    match sink {
        SinkSpec::Blackhole => stream.sink(BlackholeSink),
        SinkSpec::Print => stream.sink(StdoutSink::default()),
        SinkSpec::File { dir, format } => stream.sink(FileSink::new(dir.clone(), *format)),
    }
}

/// Build the named job into `env`.
pub fn build(env: &StreamEnv, name: &str, options: &JobOptions) -> Result<()> {
    let mut config = GeneratorConfig {
        max_events: options.events,
        ..Default::default()
    };
    if let Some(rate) = options.rate_per_second {
        if rate == 0 || rate > i32::MAX as u64 {
            return Err(WeirError::Config(format!("rate {rate} events/s must be in 1..={}", i32::MAX)));
        }
        config.rate_limited = true;
        config.first_event_rate = rate as i32;
    }
    config.validate().map_err(|e| WeirError::Config(format!("nexmark generator: {e}")))?;
    let bids = env
        .source(NexmarkBidSource {
            config,
            splits: options.splits,
        })
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(options.out_of_orderness_ms), |b: &BidFields| {
            b.date_time
        });
    match name {
        "tumble-count" => attach(
            bids.key_by(|b: &BidFields| b.auction).window(WindowAssigner::tumbling(10_000)).aggregate(Count),
            &options.sink,
        ),
        "hop-count" => attach(
            bids.key_by(|b: &BidFields| b.auction)
                .window(WindowAssigner::sliding(10_000, 2_000))
                .aggregate(Count),
            &options.sink,
        ),
        "session-bidder" => attach(
            bids.key_by(|b: &BidFields| b.bidder)
                .window(WindowAssigner::session(3_000))
                .aggregate((Count, Max(|b: &BidFields| b.price)))
                .map(|r| SessionRow {
                    bidder: r.key,
                    window_start: r.window_start,
                    window_end: r.window_end,
                    bids: r.value.0,
                    highest_price: r.value.1,
                }),
            &options.sink,
        ),
        "q0" => attach(
            bids.map(|b: BidFields| BidRow {
                auction: b.auction,
                bidder: b.bidder,
                price: b.price,
                date_time: b.date_time,
            }),
            &options.sink,
        ),
        "q1" => attach(
            bids.map(|b: BidFields| EuroBidRow {
                auction: b.auction,
                bidder: b.bidder,
                price: 0.908 * b.price as f64,
                date_time: b.date_time,
            }),
            &options.sink,
        ),
        "q2" => attach(
            bids.filter(|b: &BidFields| b.auction % 123 == 0).map(|b: BidFields| (b.auction, b.price)),
            &options.sink,
        ),
        other => {
            let names: Vec<&str> = BUILT_IN_JOBS.iter().map(|(n, _)| *n).collect();
            return Err(WeirError::Config(format!(
                "unknown job `{other}`; built-in jobs: {}; or give a .sql file",
                names.join(", ")
            )));
        }
    }
    Ok(())
}

/// Human-readable summary of a finished job.
pub fn summary(report: &JobReport) -> String {
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let source = report.operators_named("source:");
    let late = report.operators_named("window:");
    let sinks = report.operators_named("sink:");
    let mut s = String::new();
    use std::fmt::Write;
    let _ = writeln!(s, "shards:            {}", report.shards);
    let _ = writeln!(s, "elapsed:           {:.3} s", secs);
    let _ = writeln!(s, "records read:      {}", source.records_out);
    let _ = writeln!(
        s,
        "records/s:         {:.0} ({:.0} per shard)",
        source.records_out as f64 / secs,
        source.records_out as f64 / secs / report.shards as f64
    );
    let _ = writeln!(s, "records written:   {}", sinks.records_in);
    let _ = writeln!(s, "late dropped:      {}", late.late_records_dropped);
    let _ = writeln!(s, "bad records:       {}", source.bad_records);
    let by_shard: Vec<String> = report.backpressure_ns_by_shard().iter().map(|ns| format!("{:.1}", *ns as f64 / 1e6)).collect();
    let _ = writeln!(
        s,
        "ring backpressure: {:.3} ms (per shard: {} ms)",
        report.backpressure_ns() as f64 / 1e6,
        by_shard.join(" / ")
    );
    let c = &report.checkpoints;
    if c.completed + c.aborted + c.failed_writes > 0 || c.restored_from.is_some() {
        let ms = |q| c.duration_percentile(q).map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            s,
            "checkpoints:       {} completed (p50 {} ms, p99 {} ms, last {} bytes, max alignment {:.1} ms, max snapshot stall {:.1} ms), {} aborted, {} failed writes",
            c.completed,
            ms(0.5),
            ms(0.99),
            c.last_bytes,
            c.max_alignment_ms,
            c.max_snapshot_ms,
            c.aborted,
            c.failed_writes
        );
        if let Some(latest) = &c.latest {
            let _ = writeln!(s, "latest checkpoint: {latest}");
        }
        if let Some(from) = &c.restored_from {
            let _ = writeln!(s, "restored from:     {from}");
        }
    }
    if report.restarts > 0 {
        let _ = writeln!(s, "restarts:          {}", report.restarts);
    }
    s
}
