//! Shared pieces of weir's benchmarks: CPU-time measurement and small sources/sinks used only
//! here. Benchmarks report ratios measured side by side in one run, never absolute targets in
//! timed tests.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures::future::LocalBoxFuture;
use hdrhistogram::Histogram;
use weir::batch::Batch;
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::BuildCtx;
use weir::sink::Sink;
use weir::source::{ReadStatus, Source, SplitReader};

/// CPU seconds (user + system) this process has used so far, from `/proc/self/stat`.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Nanoseconds since the first call in this process (a clock shared by all shards).
pub fn clock_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// `0..count` in split 0 only (one producing shard), as fast as possible.
pub struct RangeSource {
    pub count: u64,
}

impl Source<u64> for RangeSource {
    fn name(&self) -> String {
        "range".into()
    }
    fn split_count(&self, _shards: usize) -> weir::error::Result<usize> {
        Ok(1)
    }
    fn reader(&self, _split: usize, _ctx: &mut BuildCtx<'_>) -> weir::error::Result<Box<dyn SplitReader<u64>>> {
        Ok(Box::new(RangeReader { next: 0, end: self.count }))
    }
}

struct RangeReader {
    next: u64,
    end: u64,
}

impl SplitReader<u64> for RangeReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<u64>, max: usize) -> LocalBoxFuture<'a, weir::error::Result<ReadStatus>> {
        let n = (self.end - self.next).min(max as u64);
        out.extend(self.next..self.next + n);
        self.next += n;
        let status = if self.next == self.end { ReadStatus::Exhausted } else { ReadStatus::More };
        Box::pin(async move { Ok(status) })
    }
    fn describe(&self) -> String {
        "range".into()
    }
}

/// Records `clock_ns() - ingest_ns` of every record into a histogram (µs resolution).
pub struct LatencySink {
    pub merged: Arc<Mutex<Histogram<u64>>>,
}

impl LatencySink {
    pub fn new() -> Self {
        Self {
            merged: Arc::new(Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"))),
        }
    }
}

impl Default for LatencySink {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Sink<(T, u64)> for LatencySink {
    fn name(&self) -> String {
        "latency".into()
    }
    fn build(&self, _ctx: &mut BuildCtx<'_>, _name: &str) -> weir::error::Result<Box<dyn Push<(T, u64)>>> {
        Ok(Box::new(LatencyPush {
            local: Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            merged: self.merged.clone(),
        }))
    }
}

struct LatencyPush {
    local: Histogram<u64>,
    merged: Arc<Mutex<Histogram<u64>>>,
}

impl<T> Push<(T, u64)> for LatencyPush {
    fn push(&mut self, batch: &mut Batch<(T, u64)>) {
        let now = clock_ns();
        for (_, ingest) in batch.records.drain(..) {
            let micros = now.saturating_sub(ingest) / 1_000;
            self.local.saturating_record(micros.max(1));
        }
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut weir::checkpoint::runtime::TaskSnapshot) {}
    fn end(&mut self) {
        let _ = self.merged.lock().map(|mut m| m.add(&self.local));
    }
}
