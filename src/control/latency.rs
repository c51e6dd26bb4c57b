//! Sink latency (ingest → sink): a [`Push`] wrapper in front of every sink that samples, once per
//! batch, how long ago the input behind the batch entered the job — the start of the source read
//! that produced it, carried across rings in [`Batch::ingest_ns`] — records it in a shard-local
//! `hdrhistogram`, and publishes p50/p99/p999/max in µs to the sink's [`LatencyGauges`] about
//! once a second. Records a window emits on a bare watermark count from that watermark's arrival
//! on the shard (a watermark carries no ingest time).
//!
//! Invariants: one clock read and one histogram record per batch, never per record; no lock and
//! no allocation on the data path (the histogram is owned by the shard; the gauges are relaxed
//! atomics); the histogram is bounded (values clamp to [`MAX_TRACKED_US`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::batch::Batch;
use crate::operator::Push;
use crate::shard::metrics::{current_ingest_ns, instant_ns, instrumentation, LatencyGauges};
use crate::shard::BuildCtx;
use crate::time::Timestamp;

/// Largest latency the histogram tracks (1 minute); larger samples are clamped.
pub const MAX_TRACKED_US: u64 = 60_000_000;

/// How often percentiles are published (and the histogram reset).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// Samples sink latency in front of a sink.
pub struct LatencyProbe<T> {
    inner: Box<dyn Push<T>>,
    histogram: Histogram<u64>,
    gauges: Arc<LatencyGauges>,
    next_publish: Instant,
}

impl<T: 'static> LatencyProbe<T> {
    /// Wrap `inner` (the sink `name` on this shard) unless instrumentation is off.
    pub fn wrap(inner: Box<dyn Push<T>>, ctx: &mut BuildCtx<'_>, name: &str) -> Box<dyn Push<T>> {
        if !instrumentation() {
            return inner;
        }
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKED_US, 2).expect("static histogram bounds");
        Box::new(Self {
            inner,
            histogram,
            gauges: ctx.registry.latency(name, ctx.shard),
            next_publish: Instant::now() + PUBLISH_EVERY,
        })
    }
}

impl<T> LatencyProbe<T> {
    fn publish(&mut self) {
        if self.histogram.is_empty() {
            return;
        }
        let h = &self.histogram;
        self.gauges.p50_us.store(h.value_at_quantile(0.5), Ordering::Relaxed);
        self.gauges.p99_us.store(h.value_at_quantile(0.99), Ordering::Relaxed);
        self.gauges.p999_us.store(h.value_at_quantile(0.999), Ordering::Relaxed);
        self.gauges.max_us.store(h.max(), Ordering::Relaxed);
        self.gauges.samples.fetch_add(h.len(), Ordering::Relaxed);
        self.histogram.reset();
    }
}

impl<T> Push<T> for LatencyProbe<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        let ingest_ns = current_ingest_ns();
        if !batch.is_empty() && ingest_ns != 0 {
            let now = Instant::now();
            let us = (instant_ns(now).saturating_sub(ingest_ns) / 1_000).clamp(1, MAX_TRACKED_US);
            self.histogram.saturating_record(us);
            if now >= self.next_publish {
                self.publish();
                self.next_publish = now + PUBLISH_EVERY;
            }
        }
        self.inner.push(batch);
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.inner.watermark(wm);
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.inner.processing_time(now_ms);
    }
    fn idle(&mut self) {
        self.inner.idle();
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {
        self.inner.barrier(epoch, snapshot);
    }
    fn end(&mut self) {
        self.publish();
        self.inner.end();
    }
}
