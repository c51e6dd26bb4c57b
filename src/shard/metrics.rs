//! Per-shard, per-operator counters. Each counter is written by exactly one shard (relaxed
//! atomics, updated once per batch) and read by the control plane and the job report.
//!
//! Invariant: registration (building a job) takes the registry's lock; the data path never does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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
}

impl OperatorMetrics {
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

/// Every metric of one job.
#[derive(Default)]
pub struct MetricsRegistry {
    operators: Mutex<Vec<(String, usize, Arc<OperatorMetrics>)>>,
    rings: Mutex<Vec<RingEntry>>,
}

impl MetricsRegistry {
    pub fn operator(&self, name: &str, shard: usize) -> Arc<OperatorMetrics> {
        let m = Arc::new(OperatorMetrics::default());
        self.operators.lock().expect("metrics registry").push((name.to_string(), shard, m.clone()));
        m
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
