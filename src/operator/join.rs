//! Keyed two-input joins: the window join (Flink's `join(..).where(..).equalTo(..).window(..)`)
//! and the interval join (Flink's `intervalJoin(..).between(lower, upper)`).
//!
//! Each join is a [`JoinCore`]: per-record `left` / `right` handlers and a watermark `advance`.
//! [`JoinDriver`] runs a core either as a two-input operator ([`Push2`], both sides from their
//! own exchanges, watermark = minimum of both) or as a one-input operator over
//! [`JoinInput`] records (both sides from one upstream segment, so every record is judged
//! against exactly the watermark that preceded it in that stream). Both honour batch marks per
//! record.
//!
//! Window join: a record is buffered in every window `[start, end)` containing its timestamp
//! whose `end - 1` is above the watermark before the record; a record no window accepts is late
//! (dropped, counted in `late_records_dropped`). When the watermark reaches `end - 1` the window
//! emits `f(l, r)` for every pair of its key's left and right records (where `f` returns
//! `Some`) at timestamp `end - 1`, then its buffer is freed: state is bounded by the watermark's
//! progress.
//!
//! Interval join: a left record `l` joins every right record `r` of its key with
//! `r.ts ∈ [l.ts + lower, l.ts + upper]`; output timestamp `max(l.ts, r.ts)`. A record with a
//! timestamp below the current watermark is late (dropped, counted), as in Flink. Each pair is
//! emitted once, by whichever of the two arrives second. A buffered left record is freed once
//! the watermark passes `l.ts + upper`, a right record once it passes `r.ts - lower` (no
//! non-late record can match them after that), so state is bounded by the watermark's progress.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::window::WindowAssigner;
use super::{Output, Push, Push2};
use crate::batch::{Batch, InOrder};
use crate::checkpoint::runtime::TaskSnapshot;
use crate::checkpoint::snapshot::{append, encode, KeyedRestore, KeyedSnapshot, Persist};
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::shard::BuildCtx;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

/// One record of either side of a join carried in one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinInput<L, R> {
    Left(L),
    Right(R),
}

/// The per-record logic of a keyed join.
pub trait JoinCore<L, R> {
    type Out;
    fn left(&mut self, record: L, ts: Timestamp);
    fn right(&mut self, record: R, ts: Timestamp);
    /// The watermark advanced to `wm`: emit what it completes, free what it expires, forward it.
    fn advance(&mut self, wm: Timestamp);
    fn output(&mut self) -> &mut Output<Self::Out>;
    /// Report counters accumulated since the last call.
    fn report(&mut self);
    /// Checkpoints: write every buffered record, by the key group of its key.
    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups);
    /// Restore buffered records (key groups this shard owns, maybe from several old shards).
    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()>;
    fn current_watermark(&self) -> Timestamp;
    /// Restore the watermark (only ever raises it).
    fn restore_watermark(&mut self, wm: Timestamp);
}

/// One input side of a join, consumed in order: marks advance the core, records go to `each`.
struct Side<'a, C, E, L, R> {
    core: &'a mut C,
    each: &'a mut E,
    _sides: std::marker::PhantomData<(L, R)>,
}

impl<C: JoinCore<L, R>, T, E: FnMut(&mut C, T, Timestamp), L, R> InOrder<T> for Side<'_, C, E, L, R> {
    fn on_watermark(&mut self, wm: Timestamp) {
        self.core.advance(wm);
    }
    fn on_record(&mut self, record: T, ts: Timestamp) {
        (self.each)(self.core, record, ts);
    }
}

/// Runs a [`JoinCore`] as a two-input or a [`JoinInput`] operator.
/// A join core as an operator; checkpoints it under its operator name.
pub struct JoinDriver<C> {
    core: C,
    name: String,
    groups: KeyGroups,
}

impl<C> JoinDriver<C> {
    /// Wrap `core` without checkpoint restore (unit tests).
    #[cfg(test)]
    fn bare(core: C) -> Self {
        Self {
            core,
            name: "join".into(),
            groups: KeyGroups::new(128, 1),
        }
    }

    /// Wrap `core` as operator `name`; restores its buffers when the job restores a checkpoint.
    pub fn build<L, R>(mut core: C, ctx: &BuildCtx<'_>, name: &str) -> Result<Self>
    where
        C: JoinCore<L, R>,
    {
        if let Some(restore) = ctx.restore() {
            core.restore(&restore.keyed_for(name, &ctx.groups, ctx.shard))?;
            if let Some(wm) = crate::checkpoint::runtime::restored_watermark(restore, name, ctx.shard, ctx.shards)? {
                core.restore_watermark(wm);
            }
        }
        Ok(Self {
            core,
            name: name.to_string(),
            groups: ctx.groups,
        })
    }

    fn checkpoint<L, R>(&mut self, epoch: u64, snapshot: &mut TaskSnapshot)
    where
        C: JoinCore<L, R>,
    {
        self.core.output().flush();
        self.core.snapshot(snapshot.keyed(&self.name), &self.groups);
        snapshot.operator_state(&self.name, encode(&self.core.current_watermark()));
        self.core.output().barrier(epoch, snapshot);
    }

    fn drive<L, R, T>(&mut self, batch: &mut Batch<T>, mut each: impl FnMut(&mut C, T, Timestamp))
    where
        C: JoinCore<L, R>,
    {
        batch.drain_in_order(&mut Side {
            core: &mut self.core,
            each: &mut each,
            _sides: std::marker::PhantomData::<(L, R)>,
        });
        self.core.output().flush();
        self.core.report();
    }

    fn watermark_<L, R>(&mut self, wm: Timestamp)
    where
        C: JoinCore<L, R>,
    {
        self.core.advance(wm);
        self.core.output().flush();
        self.core.report();
    }
}

impl<L, R, C: JoinCore<L, R>> Push2<L, R> for JoinDriver<C> {
    fn push_left(&mut self, batch: &mut Batch<L>) {
        self.drive::<L, R, L>(batch, |c, l, ts| c.left(l, ts));
    }
    fn push_right(&mut self, batch: &mut Batch<R>) {
        self.drive::<L, R, R>(batch, |c, r, ts| c.right(r, ts));
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.watermark_::<L, R>(wm);
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.core.output().processing_time(now_ms);
    }
    fn end(&mut self) {
        self.core.report();
        self.core.output().end();
    }
    fn idle(&mut self) {
        self.core.output().idle();
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.checkpoint::<L, R>(epoch, snapshot);
    }
}

impl<L, R, C: JoinCore<L, R>> Push<JoinInput<L, R>> for JoinDriver<C> {
    fn push(&mut self, batch: &mut Batch<JoinInput<L, R>>) {
        self.drive::<L, R, JoinInput<L, R>>(batch, |c, x, ts| match x {
            JoinInput::Left(l) => c.left(l, ts),
            JoinInput::Right(r) => c.right(r, ts),
        });
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.watermark_::<L, R>(wm);
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.core.output().processing_time(now_ms);
    }
    fn idle(&mut self) {
        self.core.output().idle();
    }

    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.checkpoint::<L, R>(epoch, snapshot);
    }

    fn end(&mut self) {
        self.core.report();
        self.core.output().end();
    }
}

/// Counters flushed to [`OperatorMetrics`] once per call.
#[derive(Default)]
struct Counts {
    records_in: u64,
    records_out: u64,
    late: u64,
}

impl Counts {
    fn report(&mut self, m: &OperatorMetrics) {
        OperatorMetrics::add(&m.records_in, self.records_in);
        OperatorMetrics::add(&m.records_out, self.records_out);
        OperatorMetrics::add(&m.late_records_dropped, self.late);
        *self = Counts::default();
    }
}

struct JoinWindow<K, L, R> {
    start: Timestamp,
    end: Timestamp,
    keys: FxHashMap<K, (Vec<L>, Vec<R>)>,
}

/// The window join (aligned windows: tumbling, sliding, cumulate).
pub struct WindowJoin<L, R, K, KL, KR, F, O> {
    assigner: WindowAssigner,
    key_left: KL,
    key_right: KR,
    f: F,
    /// Sorted by `(end, start)`, unique.
    windows: Vec<JoinWindow<K, L, R>>,
    scratch: Vec<(Timestamp, Timestamp)>,
    watermark: Timestamp,
    out: Output<O>,
    metrics: Arc<OperatorMetrics>,
    counts: Counts,
}

impl<L, R, K, KL, KR, F, O> WindowJoin<L, R, K, KL, KR, F, O>
where
    L: Clone,
    R: Clone,
    K: Hash + Eq + Clone,
    KL: FnMut(&L) -> K,
    KR: FnMut(&R) -> K,
    F: FnMut(&L, &R) -> Option<O>,
{
    pub fn new(assigner: WindowAssigner, key_left: KL, key_right: KR, f: F, out: Output<O>, metrics: Arc<OperatorMetrics>) -> Self {
        assert!(!matches!(assigner, WindowAssigner::Session { .. }), "window join needs aligned windows");
        Self {
            assigner,
            key_left,
            key_right,
            f,
            windows: Vec::new(),
            scratch: Vec::new(),
            watermark: WATERMARK_MIN,
            out,
            metrics,
            counts: Counts::default(),
        }
    }

    /// Buffered records over all windows (for metrics and tests).
    pub fn buffered(&self) -> usize {
        self.windows.iter().flat_map(|w| w.keys.values()).map(|(l, r)| l.len() + r.len()).sum()
    }

    fn window(&mut self, start: Timestamp, end: Timestamp) -> usize {
        let mut i = self.windows.len();
        while i > 0 {
            let w = &self.windows[i - 1];
            if (w.end, w.start) == (end, start) {
                return i - 1;
            }
            if (w.end, w.start) < (end, start) {
                break;
            }
            i -= 1;
        }
        self.windows.insert(
            i,
            JoinWindow {
                start,
                end,
                keys: FxHashMap::default(),
            },
        );
        i
    }

    /// Windows that still accept a record at `ts` (collected into `scratch`).
    fn open_windows(&mut self, ts: Timestamp) {
        let wm = self.watermark;
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        self.assigner.for_each_window(ts, |s, e| {
            if e.saturating_sub(1) > wm {
                scratch.push((s, e));
            }
        });
        self.scratch = scratch;
    }

    fn insert(&mut self, key: K, ts: Timestamp, mut put: impl FnMut(&mut (Vec<L>, Vec<R>), bool)) {
        self.counts.records_in += 1;
        self.open_windows(ts);
        if self.scratch.is_empty() {
            self.counts.late += 1;
            return;
        }
        let n = self.scratch.len();
        for k in 0..n {
            let (s, e) = self.scratch[k];
            let w = self.window(s, e);
            let slot = self.windows[w].keys.entry(key.clone()).or_default();
            put(slot, k + 1 == n);
        }
    }
}

impl<L, R, K, KL, KR, F, O> JoinCore<L, R> for WindowJoin<L, R, K, KL, KR, F, O>
where
    L: Clone + Persist,
    R: Clone + Persist,
    K: Hash + Eq + Clone + StableHash + Persist,
    KL: FnMut(&L) -> K,
    KR: FnMut(&R) -> K,
    F: FnMut(&L, &R) -> Option<O>,
{
    type Out = O;

    /// Entry per (window, key): `(start, end, key, left records, right records)`.
    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups) {
        for w in &self.windows {
            for (key, (ls, rs)) in &w.keys {
                append(keyed.group(groups.key_group(key.stable_hash())), &(w.start, w.end, key, ls, rs));
            }
        }
    }

    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()> {
        keyed.for_each::<(Timestamp, Timestamp, K, Vec<L>, Vec<R>)>(|_, (start, end, key, ls, rs)| {
            let i = self.window(start, end);
            let (l, r) = self.windows[i].keys.entry(key).or_default();
            l.extend(ls);
            r.extend(rs);
        })
    }

    fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    fn restore_watermark(&mut self, wm: Timestamp) {
        self.watermark = self.watermark.max(wm);
    }

    fn left(&mut self, record: L, ts: Timestamp) {
        let key = (self.key_left)(&record);
        let mut record = Some(record);
        self.insert(key, ts, |slot, last| {
            let r = if last { record.take() } else { record.clone() };
            slot.0.push(r.expect("moved into the last window only"));
        });
    }

    fn right(&mut self, record: R, ts: Timestamp) {
        let key = (self.key_right)(&record);
        let mut record = Some(record);
        self.insert(key, ts, |slot, last| {
            let r = if last { record.take() } else { record.clone() };
            slot.1.push(r.expect("moved into the last window only"));
        });
    }

    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        let due = self.windows.partition_point(|w| w.end.saturating_sub(1) <= wm);
        for w in self.windows.drain(..due) {
            let ts = w.end.saturating_sub(1);
            for (_, (ls, rs)) in w.keys {
                for l in &ls {
                    for r in &rs {
                        if let Some(o) = (self.f)(l, r) {
                            self.counts.records_out += 1;
                            self.out.emit(o, ts);
                        }
                    }
                }
            }
        }
        self.out.mark(wm);
    }

    fn output(&mut self) -> &mut Output<O> {
        &mut self.out
    }

    fn report(&mut self) {
        self.counts.report(&self.metrics);
    }
}

/// The interval join.
pub struct IntervalJoin<L, R, K, KL, KR, F, O> {
    lower: i64,
    upper: i64,
    key_left: KL,
    key_right: KR,
    f: F,
    /// Per key, buffered records sorted by timestamp.
    left: FxHashMap<K, VecDeque<(Timestamp, L)>>,
    right: FxHashMap<K, VecDeque<(Timestamp, R)>>,
    /// `(time after which the record is useless, key)`, one per buffered record.
    left_cleanup: BinaryHeap<Reverse<(Timestamp, K)>>,
    right_cleanup: BinaryHeap<Reverse<(Timestamp, K)>>,
    watermark: Timestamp,
    out: Output<O>,
    metrics: Arc<OperatorMetrics>,
    counts: Counts,
}

/// An interval join's checkpoint entry: one key's buffered records of one side.
#[derive(serde::Serialize, serde::Deserialize)]
enum IntervalEntry<K, LS, RS> {
    Left(K, LS),
    Right(K, RS),
}

/// Insert keeping the deque sorted by timestamp (usually at the back).
fn insert_sorted<T>(d: &mut VecDeque<(Timestamp, T)>, ts: Timestamp, v: T) {
    let at = d.partition_point(|(t, _)| *t <= ts);
    d.insert(at, (ts, v));
}

/// Drop records at the front of `d` with `ts + offset < wm`.
fn drain_expired<T>(d: &mut VecDeque<(Timestamp, T)>, offset: i64, wm: Timestamp) {
    while d.front().is_some_and(|(t, _)| t.saturating_add(offset) < wm) {
        d.pop_front();
    }
}

impl<L, R, K, KL, KR, F, O> IntervalJoin<L, R, K, KL, KR, F, O>
where
    K: Hash + Eq + Ord + Clone,
    KL: FnMut(&L) -> K,
    KR: FnMut(&R) -> K,
    F: FnMut(&L, &R) -> Option<O>,
{
    pub fn new(lower: i64, upper: i64, key_left: KL, key_right: KR, f: F, out: Output<O>, metrics: Arc<OperatorMetrics>) -> Self {
        assert!(lower <= upper, "interval join: lower bound {lower} > upper bound {upper}");
        Self {
            lower,
            upper,
            key_left,
            key_right,
            f,
            left: FxHashMap::default(),
            right: FxHashMap::default(),
            left_cleanup: BinaryHeap::new(),
            right_cleanup: BinaryHeap::new(),
            watermark: WATERMARK_MIN,
            out,
            metrics,
            counts: Counts::default(),
        }
    }

    /// Buffered records on both sides (for metrics and tests).
    pub fn buffered(&self) -> usize {
        self.left.values().map(VecDeque::len).sum::<usize>() + self.right.values().map(VecDeque::len).sum::<usize>()
    }

    #[inline]
    fn is_late(&self, ts: Timestamp) -> bool {
        self.watermark != WATERMARK_MIN && ts < self.watermark
    }
}

impl<L, R, K, KL, KR, F, O> JoinCore<L, R> for IntervalJoin<L, R, K, KL, KR, F, O>
where
    L: Persist,
    R: Persist,
    K: Hash + Eq + Ord + Clone + StableHash + Persist,
    KL: FnMut(&L) -> K,
    KR: FnMut(&R) -> K,
    F: FnMut(&L, &R) -> Option<O>,
{
    type Out = O;

    /// Entry per key and side: `(key, left side?, [(ts, record)])` — right records are
    /// encoded through the same shape with `L` or `R` by side.
    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups) {
        for (key, d) in &self.left {
            append(
                keyed.group(groups.key_group(key.stable_hash())),
                &IntervalEntry::<&K, &VecDeque<(Timestamp, L)>, &VecDeque<(Timestamp, R)>>::Left(key, d),
            );
        }
        for (key, d) in &self.right {
            append(
                keyed.group(groups.key_group(key.stable_hash())),
                &IntervalEntry::<&K, &VecDeque<(Timestamp, L)>, &VecDeque<(Timestamp, R)>>::Right(key, d),
            );
        }
    }

    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()> {
        let neg_lower = self.lower.saturating_neg();
        keyed.for_each::<IntervalEntry<K, Vec<(Timestamp, L)>, Vec<(Timestamp, R)>>>(|_, entry| match entry {
            IntervalEntry::Left(key, records) => {
                for (ts, l) in records {
                    self.left_cleanup.push(Reverse((ts.saturating_add(self.upper), key.clone())));
                    insert_sorted(self.left.entry(key.clone()).or_default(), ts, l);
                }
            }
            IntervalEntry::Right(key, records) => {
                for (ts, r) in records {
                    self.right_cleanup.push(Reverse((ts.saturating_add(neg_lower), key.clone())));
                    insert_sorted(self.right.entry(key.clone()).or_default(), ts, r);
                }
            }
        })
    }

    fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    fn restore_watermark(&mut self, wm: Timestamp) {
        self.watermark = self.watermark.max(wm);
    }

    fn left(&mut self, record: L, ts: Timestamp) {
        self.counts.records_in += 1;
        if self.is_late(ts) {
            self.counts.late += 1;
            return;
        }
        let key = (self.key_left)(&record);
        let (lo, hi) = (ts.saturating_add(self.lower), ts.saturating_add(self.upper));
        if let Some(rs) = self.right.get(&key) {
            let from = rs.partition_point(|(t, _)| *t < lo);
            for (rt, r) in rs.range(from..).take_while(|(t, _)| *t <= hi) {
                if let Some(o) = (self.f)(&record, r) {
                    self.counts.records_out += 1;
                    self.out.emit(o, ts.max(*rt));
                }
            }
        }
        self.left_cleanup.push(Reverse((hi, key.clone())));
        insert_sorted(self.left.entry(key).or_default(), ts, record);
    }

    fn right(&mut self, record: R, ts: Timestamp) {
        self.counts.records_in += 1;
        if self.is_late(ts) {
            self.counts.late += 1;
            return;
        }
        let key = (self.key_right)(&record);
        let (lo, hi) = (ts.saturating_sub(self.upper), ts.saturating_sub(self.lower));
        if let Some(ls) = self.left.get(&key) {
            let from = ls.partition_point(|(t, _)| *t < lo);
            for (lt, l) in ls.range(from..).take_while(|(t, _)| *t <= hi) {
                if let Some(o) = (self.f)(l, &record) {
                    self.counts.records_out += 1;
                    self.out.emit(o, ts.max(*lt));
                }
            }
        }
        self.right_cleanup.push(Reverse((hi, key.clone())));
        insert_sorted(self.right.entry(key).or_default(), ts, record);
    }

    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        while self.left_cleanup.peek().is_some_and(|Reverse((t, _))| *t < wm) {
            let Reverse((_, key)) = self.left_cleanup.pop().expect("peeked");
            if let Some(d) = self.left.get_mut(&key) {
                drain_expired(d, self.upper, wm);
                if d.is_empty() {
                    self.left.remove(&key);
                }
            }
        }
        let neg_lower = self.lower.saturating_neg();
        while self.right_cleanup.peek().is_some_and(|Reverse((t, _))| *t < wm) {
            let Reverse((_, key)) = self.right_cleanup.pop().expect("peeked");
            if let Some(d) = self.right.get_mut(&key) {
                drain_expired(d, neg_lower, wm);
                if d.is_empty() {
                    self.right.remove(&key);
                }
            }
        }
        self.out.mark(wm);
    }

    fn output(&mut self) -> &mut Output<O> {
        &mut self.out
    }

    fn report(&mut self) {
        self.counts.report(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Mark;
    use crate::testing::Recorder;

    #[test]
    fn interval_join_pairs_late_records_and_cleanup() {
        let (rec, log) = Recorder::new();
        let metrics = Arc::new(OperatorMetrics::default());
        let core = IntervalJoin::new(
            -5,
            10,
            |l: &(u8, i64)| l.0,
            |r: &(u8, i64)| r.0,
            |l: &(u8, i64), r: &(u8, i64)| Some((l.1, r.1)),
            Output::new(Box::new(rec), 16),
            metrics.clone(),
        );
        let mut op = JoinDriver::bare(core);
        let mut b: Batch<JoinInput<(u8, i64), (u8, i64)>> = Batch::with_capacity(8);
        b.push(JoinInput::Left((1, 100)), 100);
        b.push(JoinInput::Right((1, 95)), 95); // 95 ∈ [95, 110]
        b.push(JoinInput::Right((1, 111)), 111); // out of range
        b.push(JoinInput::Right((2, 100)), 100); // other key
        b.push(JoinInput::Left((1, 90)), 90); // late: 90 < 99
        b.push(JoinInput::Left((1, 104)), 104); // 95 ∈ [99, 114]? no; 111 yes
        b.marks = vec![Mark { index: 4, watermark: 99 }];
        Push::push(&mut op, &mut b);
        let out: Vec<_> = log.borrow().batches.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(out, vec![(100, 95), (104, 111)]);
        assert_eq!(metrics.late_records_dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(op.core.buffered(), 5);
        // Left 100 is useless after 110, 104 after 114; rights after ts + 5.
        Push::<JoinInput<_, _>>::watermark(&mut op, 111);
        assert_eq!(op.core.buffered(), 2, "left 104 and right 111 remain");
        Push::<JoinInput<_, _>>::watermark(&mut op, 200);
        assert_eq!(op.core.buffered(), 0);
    }

    #[test]
    fn window_join_fires_pairs_at_window_end_and_drops_late_records() {
        let (rec, log) = Recorder::new();
        let metrics = Arc::new(OperatorMetrics::default());
        let core = WindowJoin::new(
            WindowAssigner::tumbling(10),
            |l: &(u8, i64)| l.0,
            |r: &(u8, char)| r.0,
            |l: &(u8, i64), r: &(u8, char)| (l.1 != 3).then_some((l.1, r.1)),
            Output::new(Box::new(rec), 16),
            metrics.clone(),
        );
        let mut op = JoinDriver::bare(core);
        let mut left = Batch::with_capacity(4);
        left.push((1, 1), 1);
        left.push((1, 2), 2);
        left.push((1, 3), 3); // f gives None
        left.push((2, 4), 4); // no right record with key 2
        Push2::push_left(&mut op, &mut left);
        let mut right = Batch::with_capacity(4);
        right.push((1, 'a'), 5);
        right.push((1, 'l'), 8); // late: window [0, 10) fired at watermark 9
        right.push((1, 'b'), 12);
        right.marks = vec![Mark { index: 1, watermark: 9 }];
        Push2::push_right(&mut op, &mut right);
        let batches = log.borrow().batches.clone();
        let out: Vec<_> = batches.iter().flat_map(|(r, _)| r.clone()).collect();
        let mut pairs = out.clone();
        pairs.sort();
        assert_eq!(pairs, vec![(1, 'a'), (2, 'a')]);
        assert_eq!(
            batches.last().map(|(_, m)| m.clone()),
            Some(vec![Mark { index: 2, watermark: 9 }]),
            "pairs precede the mark"
        );
        assert_eq!(metrics.late_records_dropped.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(op.core.buffered(), 1, "only [10, 20) is buffered");
        Push2::watermark(&mut op, 19);
        assert_eq!(op.core.buffered(), 0);
    }
}
