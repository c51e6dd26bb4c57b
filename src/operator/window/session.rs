//! The session window operator: per key, a record opens the window `[ts, ts + gap)`, which
//! merges with every session of the key it intersects (Flink's `TimeWindow.intersects`: the
//! bounds are inclusive, so touching sessions merge). Aggregation is incremental; merging
//! merges accumulators.
//!
//! Timers: an ordered set of `(end, key, start)`; a session fires when the watermark reaches
//! `end - 1` and is dropped when it reaches `end - 1 + allowed_lateness`.
//!
//! Invariants: a key's sessions never intersect each other; every live session has exactly one
//! entry in `timers`; a record whose new session merges with nothing and whose end has already
//! passed `watermark - allowed_lateness` is late (Flink drops exactly these).

use std::collections::BTreeSet;
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{cleanup_time, WindowAssigner, WindowCore, WindowOutputs, WindowResult, WindowSpec};
use crate::batch::InOrder;
use crate::checkpoint::snapshot::{append, KeyedRestore, KeyedSnapshot, Persist};
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::operator::aggregate::AggregateFunction;
use crate::operator::Output;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

struct Session<Acc> {
    start: Timestamp,
    end: Timestamp,
    fired: bool,
    acc: Acc,
}

/// Keyed session-window aggregation.
pub struct SessionWindowOp<T, K, KF, A: AggregateFunction<T>> {
    gap_ms: i64,
    lateness_ms: i64,
    key_fn: KF,
    agg: A,
    sessions: FxHashMap<K, Vec<Session<A::Acc>>>,
    timers: BTreeSet<(Timestamp, K, Timestamp)>,
    watermark: Timestamp,
    out: WindowOutputs<T, WindowResult<K, A::Out>>,
}

impl<T, K, KF, A> SessionWindowOp<T, K, KF, A>
where
    K: Hash + Eq + Ord + Clone,
    KF: FnMut(&T) -> K,
    A: AggregateFunction<T>,
{
    pub fn new(spec: WindowSpec, key_fn: KF, agg: A, out: Output<WindowResult<K, A::Out>>, late: Option<Output<T>>, metrics: Arc<OperatorMetrics>) -> Self {
        let WindowAssigner::Session { gap_ms } = spec.assigner else {
            panic!("session operator needs a session assigner")
        };
        assert!(gap_ms > 0 && spec.allowed_lateness_ms >= 0);
        Self {
            gap_ms,
            lateness_ms: spec.allowed_lateness_ms,
            key_fn,
            agg,
            sessions: FxHashMap::default(),
            timers: BTreeSet::new(),
            watermark: WATERMARK_MIN,
            out: WindowOutputs::new(out, late, metrics),
        }
    }

    fn process(&mut self, record: T, ts: Timestamp) {
        let key = (self.key_fn)(&record);
        let (mut start, mut end) = (ts, ts.saturating_add(self.gap_ms));
        let wm = self.watermark;
        let list = self.sessions.entry(key.clone()).or_default();
        // Merge with every intersecting session (inclusive bounds, as Flink).
        let mut acc = None::<A::Acc>;
        let mut merged_any = false;
        let mut i = 0;
        while i < list.len() {
            let s = &list[i];
            if s.start <= end && s.end >= start {
                let s = list.swap_remove(i);
                self.timers.remove(&(s.end, key.clone(), s.start));
                start = start.min(s.start);
                end = end.max(s.end);
                merged_any = true;
                match &mut acc {
                    None => acc = Some(s.acc),
                    Some(a) => self.agg.merge(a, &s.acc),
                }
            } else {
                i += 1;
            }
        }
        if !merged_any && cleanup_time(end, self.lateness_ms) <= wm {
            if list.is_empty() {
                self.sessions.remove(&key);
            }
            self.out.late_record(record, ts);
            return;
        }
        let mut acc = acc.unwrap_or_else(|| self.agg.create());
        self.agg.add(&mut acc, &record);
        let fire_now = end.saturating_sub(1) <= wm;
        if fire_now {
            let value = self.agg.result(&acc);
            self.out.emit_result(key.clone(), start, end, value);
        }
        list.push(Session {
            start,
            end,
            fired: fire_now,
            acc,
        });
        self.timers.insert((end, key, start));
    }

    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        let lateness = self.lateness_ms;
        // Timers are ordered by end; fire every session whose end - 1 <= wm.
        let mut keep = Vec::new();
        while let Some((end, _, _)) = self.timers.first() {
            if end.saturating_sub(1) > wm {
                break;
            }
            let (end, key, start) = self.timers.pop_first().expect("timer");
            let Some(list) = self.sessions.get_mut(&key) else {
                continue;
            };
            let Some(pos) = list.iter().position(|s| s.start == start && s.end == end) else {
                continue;
            };
            let remove = cleanup_time(end, lateness) <= wm;
            let s = &mut list[pos];
            if !s.fired {
                s.fired = true;
                let value = self.agg.result(&s.acc);
                self.out.emit_result(key.clone(), start, end, value);
            }
            if remove {
                list.swap_remove(pos);
                if list.is_empty() {
                    self.sessions.remove(&key);
                }
            } else {
                keep.push((end, key, start));
            }
        }
        // Fired sessions waiting out their allowed lateness stay in the timer set; they are
        // checked again at the next watermark.
        for t in keep {
            self.timers.insert(t);
        }
        self.out.mark(wm);
    }
}

impl<T, K, KF, A> InOrder<T> for SessionWindowOp<T, K, KF, A>
where
    K: Hash + Eq + Ord + Clone,
    KF: FnMut(&T) -> K,
    A: AggregateFunction<T>,
{
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
    }
    fn on_record(&mut self, record: T, ts: Timestamp) {
        self.process(record, ts);
    }
}

impl<T, K, KF, A> WindowCore<T> for SessionWindowOp<T, K, KF, A>
where
    K: Hash + Eq + Ord + Clone + StableHash + Persist,
    KF: FnMut(&T) -> K,
    A: AggregateFunction<T>,
    A::Acc: Persist,
{
    type Result = WindowResult<K, A::Out>;

    fn outputs(&mut self) -> &mut WindowOutputs<T, Self::Result> {
        &mut self.out
    }

    /// Entry per session: `(key, start, end, fired, accumulator)`.
    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups) {
        for (key, list) in &self.sessions {
            let kg = groups.key_group(key.stable_hash());
            for s in list {
                append(keyed.group(kg), &(key, s.start, s.end, s.fired, &s.acc));
            }
        }
    }

    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()> {
        keyed.for_each::<(K, Timestamp, Timestamp, bool, A::Acc)>(|_, (key, start, end, fired, acc)| {
            self.timers.insert((end, key.clone(), start));
            self.sessions.entry(key).or_default().push(Session { start, end, fired, acc });
        })
    }

    fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    fn restore_watermark(&mut self, wm: Timestamp) {
        self.watermark = self.watermark.max(wm);
    }
}
