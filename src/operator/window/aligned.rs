//! The window operator for aligned windows (tumbling, sliding, cumulate) with an incremental
//! aggregate.
//!
//! State: one *bucket* per window `[start, end)` holding a hash map key → accumulator. Buckets
//! are kept sorted by `(end, start)`, so firing at a watermark pops buckets from the front and
//! a record usually finds its bucket at the back in one or two comparisons. No per-key timers:
//! a window fires for all keys at once.
//!
//! Invariants: buckets are sorted and unique; a bucket fires once when the watermark reaches
//! `end - 1` (or at once for a record accepted after that point), then once more per accepted
//! late record; it is removed when
//! `end - 1 + allowed_lateness <= watermark`, so state is bounded by the watermark's progress.

use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{cleanup_time, WindowCore, WindowOutputs, WindowResult, WindowSpec};
use crate::batch::InOrder;
use crate::checkpoint::snapshot::{append, KeyedRestore, KeyedSnapshot, Persist};
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::operator::aggregate::AggregateFunction;
use crate::operator::Output;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

struct Bucket<K, Acc> {
    start: Timestamp,
    end: Timestamp,
    fired: bool,
    accs: FxHashMap<K, Acc>,
}

/// Keyed aligned-window aggregation.
pub struct AlignedWindowOp<T, K, KF, A: AggregateFunction<T>> {
    spec: WindowSpec,
    key_fn: KF,
    agg: A,
    buckets: Vec<Bucket<K, A::Acc>>,
    watermark: Timestamp,
    out: WindowOutputs<T, WindowResult<K, A::Out>>,
}

impl<T, K, KF, A> AlignedWindowOp<T, K, KF, A>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    A: AggregateFunction<T>,
{
    pub fn new(spec: WindowSpec, key_fn: KF, agg: A, out: Output<WindowResult<K, A::Out>>, late: Option<Output<T>>, metrics: Arc<OperatorMetrics>) -> Self {
        assert!(!matches!(spec.assigner, super::WindowAssigner::Session { .. }));
        assert!(spec.allowed_lateness_ms >= 0);
        Self {
            spec,
            key_fn,
            agg,
            buckets: Vec::new(),
            watermark: WATERMARK_MIN,
            out: WindowOutputs::new(out, late, metrics),
        }
    }

    /// Index of the bucket for `[start, end)`, inserted if missing.
    #[inline]
    fn bucket(&mut self, start: Timestamp, end: Timestamp) -> usize {
        let mut i = self.buckets.len();
        while i > 0 {
            let b = &self.buckets[i - 1];
            if (b.end, b.start) == (end, start) {
                return i - 1;
            }
            if (b.end, b.start) < (end, start) {
                break;
            }
            i -= 1;
        }
        self.buckets.insert(
            i,
            Bucket {
                start,
                end,
                fired: false,
                accs: FxHashMap::default(),
            },
        );
        i
    }

    #[inline]
    fn process(&mut self, record: T, ts: Timestamp) {
        let key = (self.key_fn)(&record);
        let wm = self.watermark;
        let lateness = self.spec.allowed_lateness_ms;
        let mut accepted = false;
        let mut windows: [(Timestamp, Timestamp); 8] = [(0, 0); 8];
        let mut n = 0usize;
        let mut overflow: Vec<(Timestamp, Timestamp)> = Vec::new();
        self.spec.assigner.for_each_window(ts, |s, e| {
            if n < windows.len() {
                windows[n] = (s, e);
                n += 1;
            } else {
                overflow.push((s, e));
            }
        });
        for &(start, end) in windows[..n].iter().chain(overflow.iter()) {
            // Late for this window: it fired and its lateness has passed.
            if cleanup_time(end, lateness) <= wm {
                continue;
            }
            accepted = true;
            let b = self.bucket(start, end);
            let agg = &self.agg;
            let bucket = &mut self.buckets[b];
            let acc = match bucket.accs.get_mut(&key) {
                Some(acc) => acc,
                None => bucket.accs.entry(key.clone()).or_insert_with(|| agg.create()),
            };
            agg.add(acc, &record);
            if end.saturating_sub(1) <= wm {
                // Late firing (Flink's EventTimeTrigger fires on such an element): emit the
                // updated result at once; the window counts as fired from now on.
                bucket.fired = true;
                let value = agg.result(acc);
                self.out.emit_result(key.clone(), start, end, value);
            }
        }
        if !accepted {
            self.out.late_record(record, ts);
        }
    }

    /// The watermark advanced: fire and clean up windows.
    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        let lateness = self.spec.allowed_lateness_ms;
        let mut i = 0;
        while i < self.buckets.len() && self.buckets[i].end.saturating_sub(1) <= wm {
            let remove = cleanup_time(self.buckets[i].end, lateness) <= wm;
            let bucket = &mut self.buckets[i];
            let (start, end) = (bucket.start, bucket.end);
            if !bucket.fired {
                bucket.fired = true;
                if remove {
                    for (key, acc) in bucket.accs.drain() {
                        let value = self.agg.result(&acc);
                        self.out.emit_result(key, start, end, value);
                    }
                } else {
                    for (key, acc) in bucket.accs.iter() {
                        let value = self.agg.result(acc);
                        self.out.emit_result(key.clone(), start, end, value);
                    }
                }
            }
            if remove {
                self.buckets.remove(i);
            } else {
                i += 1;
            }
        }
        self.out.mark(wm);
    }
}

impl<T, K, KF, A> InOrder<T> for AlignedWindowOp<T, K, KF, A>
where
    K: Hash + Eq + Clone,
    KF: FnMut(&T) -> K,
    A: AggregateFunction<T>,
{
    #[inline]
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
    }
    #[inline]
    fn on_record(&mut self, record: T, ts: Timestamp) {
        self.process(record, ts);
    }
}

impl<T, K, KF, A> WindowCore<T> for AlignedWindowOp<T, K, KF, A>
where
    K: Hash + Eq + Clone + StableHash + Persist,
    KF: FnMut(&T) -> K,
    A: AggregateFunction<T>,
    A::Acc: Persist,
{
    type Result = WindowResult<K, A::Out>;

    fn outputs(&mut self) -> &mut WindowOutputs<T, Self::Result> {
        &mut self.out
    }

    fn check_finished(&self) {
        debug_assert!(self.buckets.iter().all(|b| b.fired), "end of input before the final watermark");
    }

    /// Entry per (window, key): `(start, end, fired, key, accumulator)`.
    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups) {
        for b in &self.buckets {
            for (key, acc) in &b.accs {
                let kg = groups.key_group(key.stable_hash());
                append(keyed.group(kg), &(b.start, b.end, b.fired, key, acc));
            }
        }
    }

    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()> {
        keyed.for_each::<(Timestamp, Timestamp, bool, K, A::Acc)>(|_, (start, end, fired, key, acc)| {
            let b = self.bucket(start, end);
            let bucket = &mut self.buckets[b];
            bucket.fired |= fired;
            bucket.accs.insert(key, acc);
        })
    }

    fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    fn restore_watermark(&mut self, wm: Timestamp) {
        self.watermark = self.watermark.max(wm);
    }
}
