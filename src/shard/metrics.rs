//! Per-shard, per-operator counters. Each counter is written by exactly one shard (relaxed
//! atomics, updated once per batch) and read by the control plane and the job report.
//!
//! Invariant: registration (building a job) takes the registry's lock; the data path never does.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::ring::{RingFigures, RingStats};

/// Counters of one operator instance on one shard.
#[derive(Debug, Default)]
pub struct OperatorMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    /// Records dropped because every window they belong to had already fired (Flink's
    /// `numLateRecordsDropped`).
    pub late_records_dropped: AtomicU64,
    /// Late records sent to a side output instead.
    pub late_records_side_output: AtomicU64,
    /// Input records that could not be parsed (skipped or sent to the dead-letter output).
    pub bad_records: AtomicU64,
    /// Current watermark seen by the operator (i64 as u64 bits).
    pub watermark: AtomicU64,
    /// Segment heads only: 1 + index of the input (split or channel) holding the watermark
    /// back, 0 if none ([`crate::time::WatermarkCombiner::holding_back`]).
    pub watermark_held_by: AtomicU64,
    /// Source segment heads only: the names of the inputs (split `describe()`s, e.g. a Kafka
    /// partition `topic[partition]`), set once when the segment starts.
    pub input_names: std::sync::OnceLock<Vec<String>>,
    /// Segment heads only: cumulative ns the segment task spent processing (Flink's busy time).
    pub busy_ns: AtomicU64,
    /// Segment heads only: cumulative ns waiting for input.
    pub idle_ns: AtomicU64,
    /// Segment heads only: cumulative ns waiting for downstream (rings full, sink writes).
    pub backpressured_ns: AtomicU64,
}

impl OperatorMetrics {
    /// A fresh set of counters; the watermark starts at [`crate::time::WATERMARK_MIN`].
    pub fn new() -> Self {
        let m = Self::default();
        m.watermark.store(crate::time::WATERMARK_MIN as u64, Ordering::Relaxed);
        m
    }

    /// Publish a segment head's current watermark and the input holding it back.
    #[inline]
    pub fn set_watermark(&self, wm: crate::time::Timestamp, held_by: Option<usize>) {
        self.watermark.store(wm as u64, Ordering::Relaxed);
        self.watermark_held_by.store(held_by.map_or(0, |i| i as u64 + 1), Ordering::Relaxed);
    }

    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// Totals of one operator over all shards.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorFigures {
    pub records_in: u64,
    pub records_out: u64,
    pub late_records_dropped: u64,
    pub late_records_side_output: u64,
    pub bad_records: u64,
}

/// A ring's figures by (edge, from shard, to shard).
type RingEntry = (usize, usize, usize, Arc<RingStats>);

thread_local! {
    /// Ingest time (on [`clock_ns`]'s clock; 0: unknown) of the input this thread is processing.
    static CURRENT_INGEST_NS: Cell<u64> = const { Cell::new(0) };
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// CPU time this thread has used (`CLOCK_THREAD_CPUTIME_ID`): for figures that must not count
/// time the thread was preempted by others.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own; the thread CPU clock always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    debug_assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is always available on Linux");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// `at` on the process-wide latency clock: ns since the clock's epoch (never 0).
#[inline]
pub fn instant_ns(at: Instant) -> u64 {
    let epoch = *EPOCH.get_or_init(Instant::now);
    at.saturating_duration_since(epoch).as_nanos() as u64 + 1
}

/// Now on the process-wide latency clock (shared by all shards).
#[inline]
pub fn clock_ns() -> u64 {
    instant_ns(Instant::now())
}

/// The input this thread processes now entered the job at `ns` (set by the segment loops: a
/// source read's start, a received batch's [`crate::batch::Batch::ingest_ns`]).
#[inline]
pub fn set_current_ingest_ns(ns: u64) {
    CURRENT_INGEST_NS.with(|c| c.set(ns));
}

/// Ingest time of the input this thread is processing (0: unknown).
#[inline]
pub fn current_ingest_ns() -> u64 {
    CURRENT_INGEST_NS.with(|c| c.get())
}

static INSTRUMENTATION: AtomicBool = AtomicBool::new(true);

/// Switch time accounting (busy/idle/backpressured) and sink and operator latency sampling on
/// or off for segments built afterwards (on by default; the overhead benchmark turns it off).
pub fn set_instrumentation(on: bool) {
    INSTRUMENTATION.store(on, Ordering::Relaxed);
}

/// Whether segments built now account time and sample latency.
pub fn instrumentation() -> bool {
    INSTRUMENTATION.load(Ordering::Relaxed)
}

/// Latency of one sink (ingest → sink, end to end) or one operator (ingest → the operator's
/// input) on one shard, published about once a second by the shard's
/// [`crate::control::latency::LatencyProbe`] (percentiles of the samples of the last period, in
/// µs; written by one shard only).
#[derive(Debug, Default)]
pub struct LatencyGauges {
    pub p50_us: AtomicU64,
    pub p99_us: AtomicU64,
    pub p999_us: AtomicU64,
    pub max_us: AtomicU64,
    /// Samples taken since the job started.
    pub samples: AtomicU64,
}

/// Figures of one keyed operator's LSM state store on one shard, published by the store's
/// flusher between input steps (at most every [`STORE_PUBLISH_EVERY`], and at checkpoints and
/// close); written by that shard only.
#[derive(Debug, Default)]
pub struct StoreGauges {
    /// Bytes in the active and sealed memtables.
    pub memtable_bytes: AtomicU64,
    /// Live segment files.
    pub segments: AtomicU64,
    /// Bytes of live segment files.
    pub segment_bytes: AtomicU64,
    /// Bytes the store still has to compact.
    pub compaction_debt_bytes: AtomicU64,
    /// Bytes of WAL on disk (including the uncommitted buffer).
    pub wal_bytes: AtomicU64,
    /// Bytes of decoded state in the backend's cache.
    pub cache_bytes: AtomicU64,
}

/// How often a store's flusher publishes its [`StoreGauges`] at most.
pub const STORE_PUBLISH_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A copy of one store's gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreSnapshot {
    pub operator: String,
    pub shard: usize,
    pub memtable_bytes: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    pub compaction_debt_bytes: u64,
    pub wal_bytes: u64,
    pub cache_bytes: u64,
}

/// A copy of one operator instance's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorSnapshot {
    pub name: String,
    pub shard: usize,
    pub records_in: u64,
    pub records_out: u64,
    pub late_records_dropped: u64,
    pub late_records_side_output: u64,
    pub bad_records: u64,
    pub watermark: i64,
    pub watermark_held_by: Option<usize>,
    /// The name of that input, when known (source splits: e.g. `topic[partition]`).
    pub watermark_held_by_name: Option<String>,
    pub busy_ns: u64,
    pub idle_ns: u64,
    pub backpressured_ns: u64,
}

/// A copy of one sink or operator instance's latency gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// The sink or operator name.
    pub operator: String,
    pub shard: usize,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub samples: u64,
}

type LatencyEntries = Mutex<Vec<(String, usize, Arc<LatencyGauges>)>>;

/// Fresh gauges for (`name`, `shard`) in `entries`; a restarted attempt registering the same
/// instance again replaces the old gauges (one entry per instance).
fn register_latency(entries: &LatencyEntries, name: &str, shard: usize) -> Arc<LatencyGauges> {
    let m = Arc::new(LatencyGauges::default());
    let mut entries = entries.lock().expect("metrics registry");
    entries.retain(|(n, s, _)| !(n == name && *s == shard));
    entries.push((name.to_string(), shard, m.clone()));
    m
}

fn latency_snapshots(entries: &LatencyEntries) -> Vec<LatencySnapshot> {
    entries
        .lock()
        .expect("metrics registry")
        .iter()
        .map(|(name, shard, m)| LatencySnapshot {
            operator: name.clone(),
            shard: *shard,
            p50_us: m.p50_us.load(Ordering::Relaxed),
            p99_us: m.p99_us.load(Ordering::Relaxed),
            p999_us: m.p999_us.load(Ordering::Relaxed),
            max_us: m.max_us.load(Ordering::Relaxed),
            samples: m.samples.load(Ordering::Relaxed),
        })
        .collect()
}

/// Every metric of one job.
#[derive(Default)]
pub struct MetricsRegistry {
    operators: Mutex<Vec<(String, usize, Arc<OperatorMetrics>)>>,
    rings: Mutex<Vec<RingEntry>>,
    latencies: LatencyEntries,
    operator_latencies: LatencyEntries,
    /// Head operator of the segment reading each edge (by edge index).
    edge_readers: Mutex<BTreeMap<usize, String>>,
    /// Operators registered on shard 0 per segment, in registration order (tail first).
    segments: Mutex<Vec<Vec<String>>>,
    stores: Mutex<Vec<(String, usize, Arc<StoreGauges>)>>,
    /// Savepoint and stop requests from the control API.
    pub commands: crate::checkpoint::runtime::JobCommands,
    /// Live checkpoint figures and history (written by the job's driver thread).
    pub checkpoints: crate::control::checkpoints::CheckpointHistory,
    /// Set by the control API to cancel the job (shards stop at their next tick, no restart).
    cancel: AtomicBool,
    /// Signals sent to shards whose reactor made no progress (see `shard::wakeups`), over
    /// every attempt of the job.
    pub reactor_kicks: Arc<AtomicU64>,
}

impl MetricsRegistry {
    pub fn operator(&self, name: &str, shard: usize) -> Arc<OperatorMetrics> {
        let m = Arc::new(OperatorMetrics::new());
        self.operators.lock().expect("metrics registry").push((name.to_string(), shard, m.clone()));
        if shard == 0 {
            if let Some(seg) = self.segments.lock().expect("metrics registry").last_mut() {
                seg.push(name.to_string());
            }
        }
        m
    }

    /// Shard 0 starts building the next segment of the graph (operators registered on shard 0
    /// until the next call belong to it).
    pub fn begin_segment(&self) {
        self.segments.lock().expect("metrics registry").push(Vec::new());
    }

    /// Operators of each segment, head first (as registered on shard 0).
    pub fn segment_operators(&self) -> Vec<Vec<String>> {
        let segs = self.segments.lock().expect("metrics registry");
        segs.iter().map(|ops| ops.iter().rev().cloned().collect()).collect()
    }

    /// End-to-end latency gauges of sink `name` on `shard`.
    pub fn latency(&self, name: &str, shard: usize) -> Arc<LatencyGauges> {
        register_latency(&self.latencies, name, shard)
    }

    /// Ingest → input latency gauges of operator `name` on `shard`.
    pub fn operator_latency(&self, name: &str, shard: usize) -> Arc<LatencyGauges> {
        register_latency(&self.operator_latencies, name, shard)
    }

    /// Note that the segment headed by `reader` reads edge `edge`.
    pub fn edge_reader(&self, edge: usize, reader: &str) {
        self.edge_readers.lock().expect("metrics registry").insert(edge, reader.to_string());
    }

    /// Head operator of the segment reading `edge`, if known.
    pub fn reader_of(&self, edge: usize) -> Option<String> {
        self.edge_readers.lock().expect("metrics registry").get(&edge).cloned()
    }

    /// Every operator instance's counters, in registration order.
    pub fn operator_snapshots(&self) -> Vec<OperatorSnapshot> {
        let held = |v: u64| v.checked_sub(1).map(|i| i as usize);
        self.operators
            .lock()
            .expect("metrics registry")
            .iter()
            .map(|(name, shard, m)| OperatorSnapshot {
                name: name.clone(),
                shard: *shard,
                records_in: m.records_in.load(Ordering::Relaxed),
                records_out: m.records_out.load(Ordering::Relaxed),
                late_records_dropped: m.late_records_dropped.load(Ordering::Relaxed),
                late_records_side_output: m.late_records_side_output.load(Ordering::Relaxed),
                bad_records: m.bad_records.load(Ordering::Relaxed),
                watermark: m.watermark.load(Ordering::Relaxed) as i64,
                watermark_held_by: held(m.watermark_held_by.load(Ordering::Relaxed)),
                watermark_held_by_name: held(m.watermark_held_by.load(Ordering::Relaxed)).and_then(|i| m.input_names.get().and_then(|n| n.get(i)).cloned()),
                busy_ns: m.busy_ns.load(Ordering::Relaxed),
                idle_ns: m.idle_ns.load(Ordering::Relaxed),
                backpressured_ns: m.backpressured_ns.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Every sink instance's end-to-end latency gauges, in registration order.
    pub fn latency_snapshots(&self) -> Vec<LatencySnapshot> {
        latency_snapshots(&self.latencies)
    }

    /// Every probed operator instance's latency gauges, in registration order (upstream
    /// operators of a segment register after downstream ones).
    pub fn operator_latency_snapshots(&self) -> Vec<LatencySnapshot> {
        latency_snapshots(&self.operator_latencies)
    }

    /// Store gauges of keyed operator `name` on `shard`.
    pub fn store(&self, name: &str, shard: usize) -> Arc<StoreGauges> {
        let m = Arc::new(StoreGauges::default());
        let mut stores = self.stores.lock().expect("metrics registry");
        // A restarted attempt registers the same store again: keep one entry per (name, shard).
        stores.retain(|(n, s, _)| !(n == name && *s == shard));
        stores.push((name.to_string(), shard, m.clone()));
        m
    }

    /// Every store's gauges.
    pub fn store_snapshots(&self) -> Vec<StoreSnapshot> {
        self.stores
            .lock()
            .expect("metrics registry")
            .iter()
            .map(|(name, shard, m)| StoreSnapshot {
                operator: name.clone(),
                shard: *shard,
                memtable_bytes: m.memtable_bytes.load(Ordering::Relaxed),
                segments: m.segments.load(Ordering::Relaxed),
                segment_bytes: m.segment_bytes.load(Ordering::Relaxed),
                compaction_debt_bytes: m.compaction_debt_bytes.load(Ordering::Relaxed),
                wal_bytes: m.wal_bytes.load(Ordering::Relaxed),
                cache_bytes: m.cache_bytes.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Ask the job to stop without a savepoint (Flink's cancel): every shard stops at its next
    /// wake-up tick and the job is not restarted.
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Whether [`MetricsRegistry::request_cancel`] was called.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    pub fn ring(&self, edge: usize, from: usize, to: usize, stats: Arc<RingStats>) {
        self.rings.lock().expect("metrics registry").push((edge, from, to, stats));
    }

    /// Totals per operator name.
    pub fn operator_totals(&self) -> BTreeMap<String, OperatorFigures> {
        let mut out: BTreeMap<String, OperatorFigures> = BTreeMap::new();
        for (name, _, m) in self.operators.lock().expect("metrics registry").iter() {
            let f = out.entry(name.clone()).or_default();
            f.records_in += m.records_in.load(Ordering::Relaxed);
            f.records_out += m.records_out.load(Ordering::Relaxed);
            f.late_records_dropped += m.late_records_dropped.load(Ordering::Relaxed);
            f.late_records_side_output += m.late_records_side_output.load(Ordering::Relaxed);
            f.bad_records += m.bad_records.load(Ordering::Relaxed);
        }
        out
    }

    /// Figures per ring: (edge, from shard, to shard).
    pub fn ring_figures(&self) -> Vec<((usize, usize, usize), RingFigures)> {
        let mut v: Vec<_> = self
            .rings
            .lock()
            .expect("metrics registry")
            .iter()
            .map(|(e, f, t, s)| ((*e, *f, *t), s.figures()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }
}
