//! Latency probes, like Flink's latency tracking but measured on every batch instead of on
//! injected markers: a [`Push`] (or [`Push2`]) wrapper in front of an operator's input that
//! samples, once per batch, how long ago the input behind the batch entered the job — the start
//! of the source read that produced it, carried across rings in [`Batch::ingest_ns`] — records it
//! in a shard-local `hdrhistogram`, and publishes p50/p99/p999/max in µs to relaxed-atomic
//! [`LatencyGauges`] about once a second.
//!
//! Two kinds, one mechanism:
//! - **sink latency** (ingest → sink, end to end): [`LatencyProbe::wrap_sink`] in front of every
//!   sink, gauges from [`crate::shard::MetricsRegistry::latency`];
//! - **operator latency** (ingest → the operator's input): [`LatencyProbe::wrap_operator`] in
//!   front of every operator appended with [`crate::api::DataStream::then`] (map, filter,
//!   flat_map, windows, process functions, joins and the SQL operators built on it) and
//!   [`LatencyProbe2::wrap_operator`] in front of two-input operators, gauges from
//!   [`crate::shard::MetricsRegistry::operator_latency`]. Sources (latency 0 by definition),
//!   exchanges and ring inputs carry no probe.
//!
//! Records a window emits on a bare watermark count from that watermark's arrival on the shard
//! (a watermark carries no ingest time).
//!
//! Invariants: one clock read and one histogram record per probe per batch, never per record
//! (batches without records are not sampled); no lock and no allocation on the data path (the
//! histogram is owned by the shard's probe, allocated when the job is built; the gauges are
//! relaxed atomics); the histogram is bounded (values clamp to [`MAX_TRACKED_US`]); cardinality
//! is bounded by the graph: one set of gauges per probed operator per shard. With
//! instrumentation off ([`crate::shard::metrics::set_instrumentation`]) no probe is built.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::batch::Batch;
use crate::checkpoint::runtime::TaskSnapshot;
use crate::operator::{Push, Push2};
use crate::shard::metrics::{current_ingest_ns, instant_ns, instrumentation, LatencyGauges};
use crate::shard::BuildCtx;
use crate::time::Timestamp;

/// Largest latency the histogram tracks (1 minute); larger samples are clamped.
pub const MAX_TRACKED_US: u64 = 60_000_000;

/// How often percentiles are published (and the histogram reset).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The shard-local half of a probe: the histogram of the current period and where it publishes.
pub struct LatencyRecorder {
    histogram: Histogram<u64>,
    gauges: Arc<LatencyGauges>,
    next_publish: Instant,
}

impl LatencyRecorder {
    /// A recorder publishing into `gauges` (allocates the histogram: build time only).
    pub fn new(gauges: Arc<LatencyGauges>) -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, MAX_TRACKED_US, 2).expect("static histogram bounds"),
            gauges,
            next_publish: Instant::now() + PUBLISH_EVERY,
        }
    }

    /// Sample the latency of the input this thread is processing (a batch of `records` records
    /// reached the probe now); publish if a period ended.
    #[inline]
    pub fn sample(&mut self, records: usize) {
        let ingest_ns = current_ingest_ns();
        if records == 0 || ingest_ns == 0 {
            return;
        }
        let now = Instant::now();
        let us = (instant_ns(now).saturating_sub(ingest_ns) / 1_000).clamp(1, MAX_TRACKED_US);
        self.histogram.saturating_record(us);
        if now >= self.next_publish {
            self.publish();
            self.next_publish = now + PUBLISH_EVERY;
        }
    }

    /// Publish the current period's percentiles (if it has samples) and start a new period.
    pub fn publish(&mut self) {
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

/// Samples latency in front of a one-input operator or a sink.
pub struct LatencyProbe<T> {
    inner: Box<dyn Push<T>>,
    recorder: LatencyRecorder,
}

impl<T: 'static> LatencyProbe<T> {
    /// Wrap the sink `name` on this shard (end-to-end latency) unless instrumentation is off.
    pub fn wrap_sink(inner: Box<dyn Push<T>>, ctx: &mut BuildCtx<'_>, name: &str) -> Box<dyn Push<T>> {
        if !instrumentation() {
            return inner;
        }
        Self::wrap_into(inner, ctx.registry.latency(name, ctx.shard))
    }

    /// Wrap the input of operator `name` on this shard (ingest → operator latency) unless
    /// instrumentation is off.
    pub fn wrap_operator(inner: Box<dyn Push<T>>, ctx: &mut BuildCtx<'_>, name: &str) -> Box<dyn Push<T>> {
        if !instrumentation() {
            return inner;
        }
        Self::wrap_into(inner, ctx.registry.operator_latency(name, ctx.shard))
    }

    /// Wrap `inner`, publishing into `gauges`.
    pub fn wrap_into(inner: Box<dyn Push<T>>, gauges: Arc<LatencyGauges>) -> Box<dyn Push<T>> {
        Box::new(Self {
            inner,
            recorder: LatencyRecorder::new(gauges),
        })
    }
}

impl<T> Push<T> for LatencyProbe<T> {
    #[inline]
    fn push(&mut self, batch: &mut Batch<T>) {
        self.recorder.sample(batch.len());
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
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.inner.barrier(epoch, snapshot);
    }
    fn end(&mut self) {
        self.recorder.publish();
        self.inner.end();
    }
}

/// Samples latency in front of a two-input operator (both inputs into one histogram).
pub struct LatencyProbe2<L, R> {
    inner: Box<dyn Push2<L, R>>,
    recorder: LatencyRecorder,
}

impl<L: 'static, R: 'static> LatencyProbe2<L, R> {
    /// Wrap the inputs of two-input operator `name` on this shard unless instrumentation is off.
    pub fn wrap_operator(inner: Box<dyn Push2<L, R>>, ctx: &mut BuildCtx<'_>, name: &str) -> Box<dyn Push2<L, R>> {
        if !instrumentation() {
            return inner;
        }
        Box::new(Self {
            inner,
            recorder: LatencyRecorder::new(ctx.registry.operator_latency(name, ctx.shard)),
        })
    }
}

impl<L, R> Push2<L, R> for LatencyProbe2<L, R> {
    #[inline]
    fn push_left(&mut self, batch: &mut Batch<L>) {
        self.recorder.sample(batch.len());
        self.inner.push_left(batch);
    }
    #[inline]
    fn push_right(&mut self, batch: &mut Batch<R>) {
        self.recorder.sample(batch.len());
        self.inner.push_right(batch);
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
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.inner.barrier(epoch, snapshot);
    }
    fn end(&mut self) {
        self.recorder.publish();
        self.inner.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::metrics::{clock_ns, set_current_ingest_ns};

    /// Counts what reaches it.
    #[derive(Default)]
    struct Counting {
        records: std::rc::Rc<std::cell::Cell<usize>>,
    }

    impl Push<u32> for Counting {
        fn push(&mut self, batch: &mut Batch<u32>) {
            self.records.set(self.records.get() + batch.len());
        }
        fn watermark(&mut self, _: Timestamp) {}
        fn processing_time(&mut self, _: Timestamp) {}
        fn end(&mut self) {}
        fn barrier(&mut self, _: u64, _: &mut TaskSnapshot) {}
    }

    fn batch(n: u32) -> Batch<u32> {
        let mut b = Batch::with_capacity(n as usize);
        for i in 0..n {
            b.push(i, i as i64);
        }
        b
    }

    #[test]
    fn probe_records_one_sample_per_batch_and_publishes_at_end() {
        let gauges = Arc::new(LatencyGauges::default());
        let seen = Counting::default();
        let records = seen.records.clone();
        let mut probe = LatencyProbe::wrap_into(Box::new(seen), gauges.clone());
        // The input entered the job now.
        let ingest = clock_ns();
        set_current_ingest_ns(ingest);
        for _ in 0..10 {
            probe.push(&mut batch(100));
        }
        // A watermark-only batch is forwarded but not sampled.
        let mut marks = Batch::<u32>::with_capacity(0);
        marks.mark(7);
        probe.push(&mut marks);
        probe.end();
        let elapsed_us = (clock_ns() - ingest) / 1_000;
        assert_eq!(records.get(), 1_000, "every record forwarded");
        assert_eq!(gauges.samples.load(Ordering::Relaxed), 10, "one sample per batch with records");
        let (p50, p99, p999, max) = (
            gauges.p50_us.load(Ordering::Relaxed),
            gauges.p99_us.load(Ordering::Relaxed),
            gauges.p999_us.load(Ordering::Relaxed),
            gauges.max_us.load(Ordering::Relaxed),
        );
        assert!(
            p50 >= 1 && p50 <= p99 && p99 <= p999 && p999 <= max,
            "ordered percentiles {p50} {p99} {p999} {max}"
        );
        // Never more than the time that really passed since ingest (µs resolution, 1 % buckets).
        assert!(max <= elapsed_us + elapsed_us / 100 + 1, "max {max} µs after {elapsed_us} µs");
        set_current_ingest_ns(0);
    }

    #[test]
    fn probe_without_ingest_time_records_nothing() {
        let gauges = Arc::new(LatencyGauges::default());
        let mut probe = LatencyProbe::wrap_into(Box::new(Counting::default()), gauges.clone());
        set_current_ingest_ns(0);
        probe.push(&mut batch(3));
        probe.end();
        assert_eq!(gauges.samples.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.p50_us.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_reports_latency_per_operator_and_shard() {
        let env = crate::api::StreamEnv::new(crate::config::EngineConfig {
            cores: 2,
            pin_cores: false,
            batch_size: 16,
            ..Default::default()
        });
        let out = env
            .from_collection((0..1_000u64).collect())
            .without_event_time()
            .map(|x| x * 2)
            .key_by(|x: &u64| *x)
            .partitioned()
            .filter(|x| x % 4 == 0)
            .collect();
        let registry = Arc::new(crate::shard::MetricsRegistry::default());
        crate::shard::runtime::execute_with_registry(env.graph(), env.config(), registry.clone()).expect("job runs");
        assert_eq!(out.take().len(), 500);
        let ops = registry.operator_latency_snapshots();
        let names: std::collections::BTreeSet<&str> = ops.iter().map(|l| l.operator.as_str()).collect();
        assert!(
            names.len() == 2 && names.iter().any(|n| n.starts_with("map#")) && names.iter().any(|n| n.starts_with("filter#")),
            "{names:?}"
        );
        // One set of gauges per operator per shard: bounded by operators × shards.
        assert_eq!(ops.len(), 4, "{ops:?}");
        // The map sits on the shard reading the single split; the filter behind the exchange
        // sees records on both shards.
        let filter_samples: Vec<u64> = ops.iter().filter(|l| l.operator.starts_with("filter#")).map(|l| l.samples).collect();
        assert!(filter_samples.iter().all(|&s| s > 0), "filter sampled on every shard: {ops:?}");
        for l in ops.iter().filter(|l| l.samples > 0) {
            assert!(l.p50_us >= 1 && l.p50_us <= l.p99_us && l.p99_us <= l.p999_us && l.p999_us <= l.max_us, "{l:?}");
            assert!(l.max_us < MAX_TRACKED_US, "{l:?}");
        }
        // The sink keeps its own end-to-end latency.
        assert!(registry.latency_snapshots().iter().any(|l| l.operator.starts_with("sink:") && l.samples > 0));
    }
}
