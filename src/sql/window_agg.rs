//! The SQL window aggregate over aligned windows (`TUMBLE`, `HOP`, `CUMULATE`, and the 1 ms
//! windows of a cascaded aggregate), by *slices* as Flink's window aggregate computes them.
//!
//! A slice is the finest interval every window of the assigner is a union of: the window itself
//! for `TUMBLE`, `gcd(size, slide)` for `HOP`, the step for `CUMULATE`. A record updates one
//! accumulator (of its key in its slice) whatever the number of windows it belongs to; when the
//! watermark reaches `window_end - 1` the window's slices are merged per key and the result rows
//! `[keys..., window_start, window_end, window_time, aggregates...]` are emitted with timestamp
//! `window_end - 1`. Keys of one `BIGINT`-like column are held as [`IntKey`] (no row of values
//! per key), and `COUNT(*)`-only aggregates as one counter ([`CountStars`]).
//!
//! Records are `(key, arguments)` ([`KeyedArgs`]): the keyed exchange in front of the operator
//! turns each pre-aggregate row into one ([`keyed_args`]), so the rings carry only what the
//! aggregate reads (16 bytes for an integer key and `COUNT(*)`, instead of a 136-byte row).
//!
//! Lateness (allowed lateness 0, Flink SQL's): a record is dropped (counted in
//! `late_records_dropped`) when every window containing it has fired, i.e. when the last window
//! of its slice ends at or before `watermark + 1`; otherwise it counts in exactly the windows
//! that have not fired, as with one accumulator per window.
//!
//! Invariants: slices are sorted by start, unique and non-empty; every window ending at or
//! before `fired_end` is closed (fired once, or closed empty at a watermark: records arriving
//! later do not count in it, as with one accumulator per window), and a slice is dropped once its
//! last window closed; every window holding at least one accepted record fires exactly once,
//! after all its records.
//!
//! Checkpoints: an entry `(start, end, true, key, accumulators)` per slice and key, in the types
//! (and bytes) of the per-window operator this replaces (`KeyRow`, the accumulator states of
//! [`RowAggregate`]); entries with `false` are windows written by that operator (restored as
//! windows and merged into their window's result when it fires). A `TUMBLE` slice is a window,
//! so its entries read either way.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::exec::{AccState, RowAggregate};
use super::types::{KeyRow, Row, Value};
use crate::batch::InOrder;
use crate::checkpoint::snapshot::{append, KeyedRestore, KeyedSnapshot};
use crate::error::{Result, WeirError};
use crate::key::{combine, fmix64, KeyGroups, StableHash, TUPLE_SEED};
use crate::operator::aggregate::AggregateFunction;
use crate::operator::window::{window_start, WindowAssigner, WindowCore, WindowOutputs};
use crate::operator::Output;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

/// The accumulator states of one key in one slice or window, as checkpoints hold them.
pub type AccStates = SmallVec<[AccState; 2]>;

/// A grouping key held by the window aggregate.
pub trait GroupKey: Hash + Eq + Clone + Send + 'static {
    /// The key of a row whose key columns are `row[..n]`, taken out of the row (they are left
    /// NULL).
    fn take(row: &mut Row, n: usize) -> Self;
    /// The key as checkpoints (and key groups) see it.
    fn to_key_row(&self) -> KeyRow;
    /// Back from a checkpoint; `None` if the row does not have this key's shape.
    fn from_key_row(key: KeyRow) -> Option<Self>;
    /// `self.to_key_row().stable_hash()`, computed directly.
    fn stable_hash(&self) -> u64;
    /// The key's `i`-th value.
    fn value(&self, i: usize) -> Value;
}

impl GroupKey for KeyRow {
    #[inline]
    fn take(row: &mut Row, n: usize) -> Self {
        KeyRow(row[..n].iter_mut().map(std::mem::take).collect())
    }
    fn to_key_row(&self) -> KeyRow {
        self.clone()
    }
    fn from_key_row(key: KeyRow) -> Option<Self> {
        Some(key)
    }
    fn stable_hash(&self) -> u64 {
        StableHash::stable_hash(self)
    }
    #[inline]
    fn value(&self, i: usize) -> Value {
        self.0[i].clone()
    }
}

/// A key of one integer, `TIMESTAMP` or `TIMESTAMP_LTZ` column (or NULL): 16 bytes, hashed and
/// compared as one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntKey {
    tag: u8,
    value: i64,
}

const TAG_NULL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_TS: u8 = 2;
const TAG_LTZ: u8 = 3;

impl IntKey {
    /// The key of `v`, if it is NULL or an integer-like value.
    #[inline]
    pub fn of_value(v: &Value) -> Option<Self> {
        let (tag, value) = match v {
            Value::Null => (TAG_NULL, 0),
            Value::Int(i) => (TAG_INT, *i),
            Value::Timestamp(t) => (TAG_TS, *t),
            Value::TimestampLtz(t) => (TAG_LTZ, *t),
            _ => return None,
        };
        Some(Self { tag, value })
    }

    fn int_value(&self) -> Value {
        match self.tag {
            TAG_INT => Value::Int(self.value),
            TAG_TS => Value::Timestamp(self.value),
            TAG_LTZ => Value::TimestampLtz(self.value),
            _ => Value::Null,
        }
    }
}

impl Hash for IntKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.value as u64 ^ ((self.tag as u64) << 60));
    }
}

impl GroupKey for IntKey {
    #[inline]
    fn take(row: &mut Row, _n: usize) -> Self {
        // The planner picks this key only for integer-like columns, whose values are NULL or
        // integer-like.
        let key = Self::of_value(&row[0]);
        debug_assert!(key.is_some(), "IntKey over a non-integer column: {:?}", row[0]);
        key.unwrap_or(Self { tag: TAG_NULL, value: 0 })
    }
    fn to_key_row(&self) -> KeyRow {
        KeyRow(std::iter::once(self.int_value()).collect())
    }
    fn from_key_row(key: KeyRow) -> Option<Self> {
        match key.0.as_slice() {
            [v] => Self::of_value(v),
            _ => None,
        }
    }
    #[inline]
    fn stable_hash(&self) -> u64 {
        let v = match self.tag {
            TAG_NULL => Value::Null.stable_hash(),
            _ => fmix64(self.value as u64),
        };
        combine(TUPLE_SEED, v)
    }
    #[inline]
    fn value(&self, i: usize) -> Value {
        debug_assert_eq!(i, 0, "an IntKey has one value");
        self.int_value()
    }
}

/// The stable hash of the key `row[..n]` (what `KeyRow(row[..n]).stable_hash()` gives), for
/// exchanges that only route by key.
#[inline]
pub fn row_key_hash(row: &Row, n: usize) -> u64 {
    row[..n].iter().fold(TUPLE_SEED, |h, v| combine(h, v.stable_hash()))
}

/// A precomputed stable key hash: the key type of exchanges that only route rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyHash(pub u64);

impl StableHash for KeyHash {
    #[inline]
    fn stable_hash(&self) -> u64 {
        self.0
    }
}

/// What the window aggregate keeps of a row besides its key: the aggregates' arguments
/// (nothing for `COUNT(*)`), the payload of the compact records its exchange carries.
pub trait WindowArgs: Send + 'static {
    /// The `n` arguments `row[from..from + n]`, taken out of the row (they are left NULL).
    fn take(row: &mut Row, from: usize, n: usize) -> Self;
}

impl WindowArgs for () {
    #[inline]
    fn take(_row: &mut Row, _from: usize, _n: usize) {}
}

impl<A: smallvec::Array<Item = Value> + Send + 'static> WindowArgs for SmallVec<A> {
    #[inline]
    fn take(row: &mut Row, from: usize, n: usize) -> Self {
        row[from..from + n].iter_mut().map(std::mem::take).collect()
    }
}

/// The arguments of up to two aggregate arguments, inline (40 bytes instead of a [`Row`]'s 136).
pub type FewArgs = SmallVec<[Value; 2]>;

/// The record the window aggregate reads: a key and the arguments (see [`WindowArgs`]).
pub type KeyedArgs<K, P> = (K, P);

/// Take the window aggregate's record out of a pre-aggregate row `[keys (nkey)..., arguments
/// (nargs)..., rest...]`.
#[inline]
pub fn keyed_args<K: GroupKey, P: WindowArgs>(row: &mut Row, nkey: usize, nargs: usize) -> KeyedArgs<K, P> {
    let args = P::take(row, nkey, nargs);
    (K::take(row, nkey), args)
}

/// The aggregates of a window aggregate over the arguments `P` of its records.
pub trait SqlAggregates<P>: Clone + 'static {
    type Acc: Clone + 'static;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, args: &P);
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc);
    /// Append the results to an output row.
    fn write(&self, acc: &Self::Acc, out: &mut Row);
    /// The result of aggregate `i`.
    fn value(&self, acc: &Self::Acc, i: usize) -> Value;
    fn to_states(&self, acc: &Self::Acc) -> AccStates;
    /// Back from a checkpoint; `None` if the states do not fit these aggregates.
    fn acc_of_states(&self, states: AccStates) -> Option<Self::Acc>;
}

/// Over arguments laid out from `first_arg` on (0 for the arguments alone).
impl<P: std::ops::Deref<Target = [Value]> + 'static> SqlAggregates<P> for RowAggregate {
    type Acc = AccStates;
    fn create(&self) -> Self::Acc {
        AggregateFunction::create(self)
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, args: &P) {
        self.add_values(acc, args)
    }
    fn merge(&self, acc: &mut Self::Acc, other: &Self::Acc) {
        AggregateFunction::merge(self, acc, other)
    }
    fn write(&self, acc: &Self::Acc, out: &mut Row) {
        out.extend(self.calls.iter().zip(acc.iter()).map(|(c, a)| RowAggregate::result_of(c, a)));
    }
    #[inline]
    fn value(&self, acc: &Self::Acc, i: usize) -> Value {
        RowAggregate::result_of(&self.calls[i], &acc[i])
    }
    fn to_states(&self, acc: &Self::Acc) -> AccStates {
        acc.clone()
    }
    fn acc_of_states(&self, states: AccStates) -> Option<Self::Acc> {
        (states.len() == self.calls.len()).then_some(states)
    }
}

/// `n` aggregates that are all `COUNT(*)`: one counter.
#[derive(Clone, Copy, Debug)]
pub struct CountStars {
    pub n: usize,
}

impl<P> SqlAggregates<P> for CountStars {
    type Acc = i64;
    fn create(&self) -> i64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut i64, _args: &P) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut i64, other: &i64) {
        *acc += other;
    }
    fn write(&self, acc: &i64, out: &mut Row) {
        out.extend(std::iter::repeat_n(Value::Int(*acc), self.n));
    }
    #[inline]
    fn value(&self, acc: &i64, _i: usize) -> Value {
        Value::Int(*acc)
    }
    fn to_states(&self, acc: &i64) -> AccStates {
        std::iter::repeat_n(AccState::Count(*acc), self.n).collect()
    }
    fn acc_of_states(&self, states: AccStates) -> Option<i64> {
        match states.first() {
            Some(AccState::Count(c)) if states.len() == self.n && states.iter().all(|s| matches!(s, AccState::Count(x) if x == c)) => Some(*c),
            _ => None,
        }
    }
}

/// The slice geometry of an aligned window assigner.
#[derive(Clone, Copy, Debug)]
pub struct Slicer {
    assigner: WindowAssigner,
    /// Slice length.
    slice: i64,
    offset: i64,
    /// Window ends are `end_phase + k * end_period`.
    end_phase: i64,
    end_period: i64,
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Slicer {
    /// `None` for session windows (not aligned).
    pub fn new(assigner: WindowAssigner) -> Option<Self> {
        let (slice, offset, end_phase, end_period) = match assigner {
            WindowAssigner::Tumbling { size_ms, offset_ms } => (size_ms, offset_ms, offset_ms, size_ms),
            WindowAssigner::Sliding { size_ms, slide_ms, offset_ms } => (gcd(size_ms, slide_ms), offset_ms, offset_ms.wrapping_add(size_ms), slide_ms),
            WindowAssigner::Cumulate { step_ms, offset_ms, .. } => (step_ms, offset_ms, offset_ms, step_ms),
            WindowAssigner::Session { .. } => return None,
        };
        (slice > 0 && end_period > 0).then_some(Self {
            assigner,
            slice,
            offset,
            end_phase,
            end_period,
        })
    }

    /// Start of the slice holding `ts`.
    #[inline]
    fn slice_start(&self, ts: Timestamp) -> Timestamp {
        window_start(ts, self.offset, self.slice)
    }

    /// End of the last window containing the slice starting at `start`.
    #[inline]
    fn last_end(&self, start: Timestamp) -> Timestamp {
        match self.assigner {
            WindowAssigner::Tumbling { size_ms, .. } => start.saturating_add(size_ms),
            WindowAssigner::Sliding { size_ms, slide_ms, offset_ms } => window_start(start, offset_ms, slide_ms).saturating_add(size_ms),
            WindowAssigner::Cumulate { max_size_ms, offset_ms, .. } => window_start(start, offset_ms, max_size_ms).saturating_add(max_size_ms),
            WindowAssigner::Session { .. } => unreachable!("Slicer::new refuses sessions"),
        }
    }

    /// The smallest window end at or after `at`.
    #[inline]
    fn next_end(&self, at: Timestamp) -> Timestamp {
        let up = (self.end_phase as i128 - at as i128).rem_euclid(self.end_period as i128);
        (at as i128 + up).min(i64::MAX as i128) as i64
    }

    /// The last window end at or before `wm + 1`: every window ending there or earlier is closed
    /// at watermark `wm`.
    #[inline]
    fn closed_end(&self, wm: Timestamp) -> Timestamp {
        self.next_end(wm.saturating_add(2)).saturating_sub(self.end_period)
    }

    /// Start of the window ending at `end`.
    #[inline]
    fn window_start(&self, end: Timestamp) -> Timestamp {
        match self.assigner {
            WindowAssigner::Tumbling { size_ms, .. } | WindowAssigner::Sliding { size_ms, .. } => end.saturating_sub(size_ms),
            WindowAssigner::Cumulate { max_size_ms, offset_ms, .. } => window_start(end.saturating_sub(1), offset_ms, max_size_ms),
            WindowAssigner::Session { .. } => unreachable!("Slicer::new refuses sessions"),
        }
    }
}

/// Where the output row's window columns come from.
#[derive(Clone, Copy, Debug)]
pub struct OutputShape {
    /// Grouping keys written before the window columns.
    pub keys: usize,
    /// Cascaded aggregate: the key ends with the input's `window_start, window_end`, which are
    /// the output's window (the operator's own windows are 1 ms windows at `window_time`).
    pub cascade: bool,
    /// `window_time` is a `TIMESTAMP_LTZ`.
    pub ltz: bool,
}

struct Slice<K, Acc> {
    start: Timestamp,
    end: Timestamp,
    accs: FxHashMap<K, Acc>,
}

/// The window aggregate operator (see the module docs) over records `(key, arguments)`.
pub struct SqlWindowAggOp<K, P, A: SqlAggregates<P>> {
    slicer: Slicer,
    agg: A,
    shape: OutputShape,
    slices: std::collections::VecDeque<Slice<K, A::Acc>>,
    /// Windows restored from a per-window checkpoint, by end.
    legacy: std::collections::BTreeMap<Timestamp, FxHashMap<K, A::Acc>>,
    /// Every window ending at or before this has fired.
    fired_end: Timestamp,
    watermark: Timestamp,
    /// Per-key merge of a window's slices (reused).
    merged: FxHashMap<K, A::Acc>,
    /// Capacity for a new slice's map: the size of the last one that fired.
    capacity_hint: usize,
    /// The output columns kept, in order (a projection fused into the output rows), or all.
    select: Option<Arc<[usize]>>,
    out: WindowOutputs<KeyedArgs<K, P>, Row>,
}

impl<K, P, A> SqlWindowAggOp<K, P, A>
where
    K: GroupKey,
    P: 'static,
    A: SqlAggregates<P>,
{
    /// `select`: output columns to keep, each at most once (a fused projection), or `None`.
    pub fn new(slicer: Slicer, agg: A, shape: OutputShape, select: Option<Arc<[usize]>>, out: Output<Row>, metrics: Arc<OperatorMetrics>) -> Self {
        Self {
            slicer,
            agg,
            shape,
            slices: Default::default(),
            legacy: Default::default(),
            fired_end: WATERMARK_MIN,
            watermark: WATERMARK_MIN,
            merged: FxHashMap::default(),
            capacity_hint: 0,
            select,
            out: WindowOutputs::new(out, None, metrics),
        }
    }

    /// Index of the slice starting at `start`, inserted if missing.
    #[inline]
    fn slice_index(&mut self, start: Timestamp) -> usize {
        let mut i = self.slices.len();
        while i > 0 {
            let s = self.slices[i - 1].start;
            if s == start {
                return i - 1;
            }
            if s < start {
                break;
            }
            i -= 1;
        }
        self.slices.insert(
            i,
            Slice {
                start,
                end: start.saturating_add(self.slicer.slice),
                accs: FxHashMap::with_capacity_and_hasher(self.capacity_hint, Default::default()),
            },
        );
        i
    }

    #[inline]
    fn process(&mut self, (key, args): KeyedArgs<K, P>, ts: Timestamp) {
        let start = self.slicer.slice_start(ts);
        if self.slicer.last_end(start).saturating_sub(1) <= self.watermark {
            // Every window of the record has fired.
            OperatorMetrics::add(&self.out.metrics.late_records_dropped, 1);
            return;
        }
        let i = self.slice_index(start);
        let agg = &self.agg;
        let accs = &mut self.slices[i].accs;
        match accs.get_mut(&key) {
            Some(acc) => agg.add(acc, &args),
            None => {
                let mut acc = agg.create();
                agg.add(&mut acc, &args);
                accs.insert(key, acc);
            }
        }
    }

    /// The end of the next window to fire, if any window holds records.
    fn next_window_end(&self) -> Option<Timestamp> {
        let from_slices = self.slices.front().map(|s| self.slicer.next_end(s.end.max(self.fired_end.saturating_add(1))));
        let from_legacy = self.legacy.keys().next().copied();
        match (from_slices, from_legacy) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The watermark advanced: fire the windows it closes, drop the slices no window needs.
    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        while let Some(end) = self.next_window_end() {
            if end.saturating_sub(1) > wm {
                break;
            }
            self.fire(end);
            self.fired_end = end;
            while self.slices.front().is_some_and(|s| self.slicer.last_end(s.start) <= end) {
                self.slices.pop_front();
            }
        }
        // Windows that closed empty are closed too: a record arriving now is late for them.
        self.fired_end = self.fired_end.max(self.slicer.closed_end(wm));
        self.out.mark(wm);
    }

    /// Emit the window ending at `end`.
    fn fire(&mut self, end: Timestamp) {
        let start = self.slicer.window_start(end);
        let legacy = self.legacy.remove(&end);
        let in_window = |s: &Slice<K, A::Acc>| s.start >= start && s.end <= end;
        let count = self.slices.iter().filter(|s| in_window(s)).count();
        if count == 1 && legacy.is_none() {
            // One slice (always so for TUMBLE): its accumulators are the window's.
            let i = self.slices.iter().position(in_window).expect("counted above");
            self.capacity_hint = self.slices[i].accs.len();
            let last = self.slicer.last_end(self.slices[i].start) <= end;
            if last {
                let accs = std::mem::take(&mut self.slices[i].accs);
                for (key, acc) in accs {
                    self.emit(&key, &acc, start, end);
                }
            } else {
                let slice = &self.slices[i];
                let mut emit = Emit {
                    out: &mut self.out,
                    agg: &self.agg,
                    shape: self.shape,
                    select: self.select.as_deref(),
                };
                for (key, acc) in slice.accs.iter() {
                    emit.row(key, acc, start, end);
                }
            }
            return;
        }
        if let Some(s) = self.slices.iter().find(|s| in_window(s)) {
            self.capacity_hint = s.accs.len();
        }
        let mut merged = std::mem::take(&mut self.merged);
        if let Some(l) = legacy {
            merged.extend(l);
        }
        for s in self.slices.iter().filter(|s| in_window(s)) {
            for (key, acc) in &s.accs {
                match merged.get_mut(key) {
                    Some(m) => self.agg.merge(m, acc),
                    None => {
                        merged.insert(key.clone(), acc.clone());
                    }
                }
            }
        }
        for (key, acc) in merged.drain() {
            self.emit(&key, &acc, start, end);
        }
        self.merged = merged;
    }

    #[inline]
    fn emit(&mut self, key: &K, acc: &A::Acc, start: Timestamp, end: Timestamp) {
        Emit {
            out: &mut self.out,
            agg: &self.agg,
            shape: self.shape,
            select: self.select.as_deref(),
        }
        .row(key, acc, start, end);
    }
}

/// What writing result rows needs (borrowed from the operator while it iterates its state).
struct Emit<'a, K, P, A: SqlAggregates<P>> {
    out: &'a mut WindowOutputs<KeyedArgs<K, P>, Row>,
    agg: &'a A,
    shape: OutputShape,
    select: Option<&'a [usize]>,
}

impl<K: GroupKey, P, A: SqlAggregates<P>> Emit<'_, K, P, A> {
    /// One result row `[keys..., window_start, window_end, window_time, aggregates...]` (or the
    /// `select`ed columns of it) at `end - 1` (`end` of the operator's window), built in the
    /// output buffer.
    #[inline]
    fn row(&mut self, key: &K, acc: &A::Acc, start: Timestamp, end: Timestamp) {
        let (agg, shape) = (self.agg, self.shape);
        let (ws, we) = window_of(shape, key, start, end);
        let nk = shape.keys;
        match self.select {
            None => self.out.results.emit_with(end.saturating_sub(1), |row| {
                (0..nk).for_each(|i| row.push(key.value(i)));
                row.push(Value::Timestamp(ws));
                row.push(Value::Timestamp(we));
                row.push(window_time(shape, we));
                agg.write(acc, row);
            }),
            Some(cols) => {
                let column = |c: usize| match c.checked_sub(nk) {
                    None => key.value(c),
                    Some(0) => Value::Timestamp(ws),
                    Some(1) => Value::Timestamp(we),
                    Some(2) => window_time(shape, we),
                    Some(i) => agg.value(acc, i - 3),
                };
                self.out
                    .results
                    .emit_with(end.saturating_sub(1), |row| row.extend(cols.iter().map(|&c| column(c))));
            }
        }
    }
}

/// The result's window: the operator's, or for a cascaded aggregate the input's window
/// carried in the key after the grouping keys.
#[inline]
fn window_of<K: GroupKey>(shape: OutputShape, key: &K, start: Timestamp, end: Timestamp) -> (Timestamp, Timestamp) {
    if !shape.cascade {
        return (start, end);
    }
    let ts = |v: Value| match v {
        Value::Timestamp(t) | Value::TimestampLtz(t) => t,
        _ => WATERMARK_MIN,
    };
    (ts(key.value(shape.keys)), ts(key.value(shape.keys + 1)))
}

/// `window_time` of a result whose window ends at `end`.
#[inline]
fn window_time(shape: OutputShape, end: Timestamp) -> Value {
    let wt = end.saturating_sub(1);
    if shape.ltz {
        Value::TimestampLtz(wt)
    } else {
        Value::Timestamp(wt)
    }
}

impl<K, P, A> InOrder<KeyedArgs<K, P>> for SqlWindowAggOp<K, P, A>
where
    K: GroupKey,
    P: 'static,
    A: SqlAggregates<P>,
{
    #[inline]
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
    }
    #[inline]
    fn on_record(&mut self, record: KeyedArgs<K, P>, ts: Timestamp) {
        self.process(record, ts);
    }
}

impl<K, P, A> WindowCore<KeyedArgs<K, P>> for SqlWindowAggOp<K, P, A>
where
    K: GroupKey,
    P: 'static,
    A: SqlAggregates<P>,
{
    type Result = Row;

    fn outputs(&mut self) -> &mut WindowOutputs<KeyedArgs<K, P>, Row> {
        &mut self.out
    }

    fn check_finished(&self) {
        debug_assert!(self.slices.is_empty() && self.legacy.is_empty(), "end of input before the final watermark");
    }

    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups) {
        for s in &self.slices {
            for (key, acc) in &s.accs {
                let kg = groups.key_group(key.stable_hash());
                append(keyed.group(kg), &(s.start, s.end, true, key.to_key_row(), self.agg.to_states(acc)));
            }
        }
        for (end, accs) in &self.legacy {
            let start = self.slicer.window_start(*end);
            for (key, acc) in accs {
                let kg = groups.key_group(key.stable_hash());
                append(keyed.group(kg), &(start, *end, false, key.to_key_row(), self.agg.to_states(acc)));
            }
        }
    }

    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()> {
        let mut bad = None;
        keyed.for_each::<(Timestamp, Timestamp, bool, KeyRow, AccStates)>(|_, (start, end, slice, key, states)| {
            let (Some(key), Some(acc)) = (K::from_key_row(key), self.agg.acc_of_states(states)) else {
                bad.get_or_insert_with(|| format!("window [{start}, {end}): the key or accumulators do not fit this aggregate"));
                return;
            };
            let is_slice = self.slicer.slice_start(start) == start && end == start.saturating_add(self.slicer.slice);
            let map = if slice || is_slice && matches!(self.slicer.assigner, WindowAssigner::Tumbling { .. }) {
                if !is_slice {
                    bad.get_or_insert_with(|| format!("[{start}, {end}) is not a slice of {:?}", self.slicer.assigner));
                    return;
                }
                let i = self.slice_index(start);
                &mut self.slices[i].accs
            } else {
                if self.slicer.window_start(end) != start || self.slicer.next_end(end) != end {
                    bad.get_or_insert_with(|| format!("[{start}, {end}) is not a window of {:?}", self.slicer.assigner));
                    return;
                }
                self.legacy.entry(end).or_default()
            };
            match map.get_mut(&key) {
                Some(a) => self.agg.merge(a, &acc),
                None => {
                    map.insert(key, acc);
                }
            }
        })?;
        match bad {
            Some(what) => Err(WeirError::Other(format!("restoring window aggregate {}: {what}", keyed.operator))),
            None => Ok(()),
        }
    }

    fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    fn restore_watermark(&mut self, wm: Timestamp) {
        if wm > self.watermark {
            self.watermark = wm;
            // Windows ending at or before `wm + 1` closed before the checkpoint.
            self.fired_end = self.fired_end.max(self.slicer.closed_end(wm));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends(s: &Slicer, from: i64, n: usize) -> Vec<i64> {
        let mut v = Vec::new();
        let mut at = from;
        for _ in 0..n {
            let e = s.next_end(at);
            v.push(e);
            at = e + 1;
        }
        v
    }

    #[test]
    fn slice_geometry() {
        let hop = Slicer::new(WindowAssigner::sliding(10, 4)).unwrap();
        assert_eq!(hop.slice, 2);
        assert_eq!(ends(&hop, 0, 4), vec![2, 6, 10, 14]);
        assert_eq!(hop.window_start(14), 4);
        assert_eq!(hop.last_end(4), 14);
        assert_eq!((hop.last_end(6), hop.last_end(8)), (14, 18));
        let cum = Slicer::new(WindowAssigner::cumulate(2, 6)).unwrap();
        assert_eq!(ends(&cum, 1, 4), vec![2, 4, 6, 8]);
        assert_eq!(cum.window_start(10), 6);
        assert_eq!(cum.last_end(8), 12);
        let tum = Slicer::new(WindowAssigner::tumbling(5)).unwrap();
        assert_eq!(ends(&tum, -7, 3), vec![-5, 0, 5]);
        assert_eq!(tum.last_end(-5), 0);
        assert_eq!((tum.closed_end(4), tum.closed_end(3), tum.closed_end(-1)), (5, 0, 0));
        assert_eq!((hop.closed_end(9), hop.closed_end(8)), (10, 6));
        assert!(Slicer::new(WindowAssigner::session(3)).is_none());
    }

    #[test]
    fn int_keys_hash_like_key_rows() {
        for v in [
            Value::Null,
            Value::Int(-3),
            Value::Int(1 << 40),
            Value::Timestamp(1_700_000_000_000),
            Value::TimestampLtz(7),
        ] {
            let k = IntKey::of_value(&v).unwrap();
            let row = KeyRow(std::iter::once(v.clone()).collect());
            assert_eq!(GroupKey::stable_hash(&k), StableHash::stable_hash(&row));
            assert_eq!(k.to_key_row(), row);
            assert_eq!(IntKey::from_key_row(row), Some(k));
            let r: Row = std::iter::once(v).collect();
            assert_eq!(row_key_hash(&r, 1), GroupKey::stable_hash(&k));
        }
    }
}
