//! Keyed process functions (Flink's `KeyedProcessFunction`): per-record user code with keyed
//! state and event-time / processing-time timers.
//!
//! The operator calls [`KeyedProcessFunction::process`] for every record with its key and a
//! [`ProcessContext`] (timestamp, watermark, processing time, output, timers). Timers are per
//! `(key, timestamp)` and deduplicated like Flink's: registering the same pair twice fires once.
//! Event-time timers fire in timestamp order (then key order) as soon as the watermark reaches
//! them, *between* records, at the exact per-record watermark given by the batch marks; a timer
//! registered at or below the current watermark fires at the next watermark advance (Flink's
//! behaviour). Processing-time timers are registered with the segment's
//! [`ProcessingTimers`] so the segment loop wakes up for them, and fire in
//! [`Push::processing_time`].
//!
//! Timers are part of the operator's keyed state: they are bounded by what the function
//! registers, removed when they fire or are deleted, and counted in
//! [`KeyedProcessOp::state_entries`] under `timers:event` / `timers:processing`. Processing-time
//! timers still pending at end of input are dropped (Flink quiesces them).
//!
//! Checkpoints: [`KeyedProcessOp::snapshot`] writes the operator's keyed state — every state
//! the function created (through its `StateContext`) and every pending timer — by key group
//! into a [`KeyedSnapshot`]; [`KeyedProcessOp::restore`] reads it back, on any shard count (the
//! restore carries the key groups this shard now owns). With the LSM backend's native
//! incremental checkpoints, [`KeyedProcessOp::snapshot_timers`] writes the timers only (the
//! store's checkpoint holds the states).
//!
//! Invariants: a watermark is forwarded only after every event-time timer it fires has run
//! (their output precedes the mark); the state clock is set once per batch and per
//! processing-time callback and never goes back.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::batch::{Batch, InOrder};
use crate::checkpoint::snapshot::{KeyedRestore, KeyedSnapshot};
use crate::error::Result;
use crate::key::StableHash;
use crate::operator::{Output, Push};
use crate::shard::{OperatorMetrics, ProcessingTimers};
use crate::state::codec::{self, KeyedEntryBorrowed, KeyedEntryRef};
use crate::state::{StateBackend, StateClock, StateContext, StateKey, TimerKind};
use crate::time::{now_ms, Timestamp, WATERMARK_MIN};

/// Which clock a timer belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeDomain {
    EventTime,
    ProcessingTime,
}

/// User code run per record of a keyed stream, with keyed state and timers.
pub trait KeyedProcessFunction<K, T>: Clone + Send + Sync + 'static {
    type Out: Send + 'static;

    /// Create states (once per operator instance, before any record).
    fn open(&mut self, _state: &StateContext<K>) {}

    /// One record of key `key`.
    fn process(&mut self, key: &K, record: T, ctx: &mut ProcessContext<'_, K, Self::Out>);

    /// A timer of `key` at `ts` fired.
    fn on_timer(&mut self, _key: &K, _ts: Timestamp, _domain: TimeDomain, _ctx: &mut ProcessContext<'_, K, Self::Out>) {}
}

/// Timers of one operator instance, per `(timestamp, key)`.
pub struct TimerService<K> {
    event: BTreeSet<(Timestamp, K)>,
    processing: BTreeSet<(Timestamp, K)>,
    wake: ProcessingTimers,
    event_gauge: Arc<AtomicUsize>,
    processing_gauge: Arc<AtomicUsize>,
}

impl<K: Ord + Clone> TimerService<K> {
    fn sync(&self) {
        self.event_gauge.store(self.event.len(), Ordering::Relaxed);
        self.processing_gauge.store(self.processing.len(), Ordering::Relaxed);
    }

    fn pop_event_due(&mut self, wm: Timestamp) -> Option<(Timestamp, K)> {
        let due = self.event.first().is_some_and(|(t, _)| *t <= wm);
        due.then(|| self.event.pop_first()).flatten()
    }

    fn pop_processing_due(&mut self, now: Timestamp) -> Option<(Timestamp, K)> {
        let due = self.processing.first().is_some_and(|(t, _)| *t <= now);
        due.then(|| self.processing.pop_first()).flatten()
    }
}

/// What user code sees while handling one record or timer.
pub struct ProcessContext<'a, K, O> {
    key: &'a K,
    timestamp: Timestamp,
    watermark: Timestamp,
    clock: &'a StateClock,
    out: &'a mut Output<O>,
    timers: &'a mut TimerService<K>,
    emitted: &'a mut u64,
}

impl<K: Ord + Clone, O> ProcessContext<'_, K, O> {
    /// The key being processed.
    pub fn key(&self) -> &K {
        self.key
    }

    /// The record's event timestamp; in an event-time timer, the timer's timestamp; in a
    /// processing-time timer, the current watermark.
    pub fn timestamp(&self) -> Timestamp {
        self.timestamp
    }

    /// The watermark before the current record (or at the timer firing).
    pub fn current_watermark(&self) -> Timestamp {
        self.watermark
    }

    /// The operator's processing time (wall clock, set once per batch).
    pub fn current_processing_time(&self) -> Timestamp {
        self.clock.now()
    }

    /// Emit `out` with the current [`timestamp`](Self::timestamp).
    pub fn emit(&mut self, out: O) {
        self.emit_at(out, self.timestamp);
    }

    /// Emit `out` with event timestamp `ts`.
    pub fn emit_at(&mut self, out: O, ts: Timestamp) {
        *self.emitted += 1;
        self.out.emit(out, ts);
    }

    /// Fire `on_timer` for the current key once the watermark reaches `ts`.
    pub fn register_event_time_timer(&mut self, ts: Timestamp) {
        self.timers.event.insert((ts, self.key.clone()));
        self.timers.sync();
    }

    /// Fire `on_timer` for the current key once processing time reaches `ts`.
    pub fn register_processing_time_timer(&mut self, ts: Timestamp) {
        if self.timers.processing.insert((ts, self.key.clone())) {
            self.timers.wake.register(ts);
            self.timers.sync();
        }
    }

    pub fn delete_event_time_timer(&mut self, ts: Timestamp) {
        self.timers.event.remove(&(ts, self.key.clone()));
        self.timers.sync();
    }

    pub fn delete_processing_time_timer(&mut self, ts: Timestamp) {
        self.timers.processing.remove(&(ts, self.key.clone()));
        self.timers.sync();
    }
}

/// The keyed process operator.
pub struct KeyedProcessOp<T, K, KF, F: KeyedProcessFunction<K, T>> {
    f: F,
    key_fn: KF,
    state: StateContext<K>,
    clock: StateClock,
    timers: TimerService<K>,
    watermark: Timestamp,
    out: Output<F::Out>,
    metrics: Arc<OperatorMetrics>,
    emitted: u64,
    /// The operator's name in the job: what its checkpointed state is stored under.
    name: String,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T, K, KF, F> KeyedProcessOp<T, K, KF, F>
where
    K: StateKey + StableHash + Ord,
    KF: FnMut(&T) -> K,
    F: KeyedProcessFunction<K, T>,
{
    /// Build the operator on `backend` and `open` the function.
    pub fn new(mut f: F, key_fn: KF, out: Output<F::Out>, wake: ProcessingTimers, metrics: Arc<OperatorMetrics>, backend: StateBackend) -> Self {
        let clock = StateClock::new(now_ms());
        let state = StateContext::with_backend(clock.clone(), backend);
        let timers = TimerService {
            event: BTreeSet::new(),
            processing: BTreeSet::new(),
            wake,
            event_gauge: state.gauge("timers:event"),
            processing_gauge: state.gauge("timers:processing"),
        };
        f.open(&state);
        Self {
            f,
            key_fn,
            state,
            clock,
            timers,
            watermark: WATERMARK_MIN,
            out,
            metrics,
            emitted: 0,
            name: "process".into(),
            _t: std::marker::PhantomData,
        }
    }

    /// Name the operator as in the job (checkpoints store its state under it) and restore its
    /// state and watermark when the job restores a checkpoint.
    pub fn checkpointed_as(mut self, ctx: &crate::shard::BuildCtx<'_>, name: &str) -> Result<Self> {
        self.name = name.to_string();
        if let Some(restore) = ctx.restore() {
            self.state.backend().restore_native(restore, name)?;
            self.restore(&restore.keyed_for(name, &ctx.groups, ctx.shard))?;
            if let Some(wm) = crate::checkpoint::runtime::restored_watermark(restore, name, ctx.shard, ctx.shards)? {
                self.watermark = self.watermark.max(wm);
            }
        }
        Ok(self)
    }

    /// Entries per state (including the timer sets), for metrics.
    pub fn state_entries(&self) -> Vec<(String, usize)> {
        self.state.entry_counts()
    }

    /// The keyed-state backend of this operator instance.
    pub fn state_backend(&self) -> &StateBackend {
        self.state.backend()
    }

    /// Write the operator's keyed state — the function's states and the pending timers — by
    /// key group (the portable format: restores on either backend and any shard count).
    pub fn snapshot(&self, out: &mut KeyedSnapshot) -> Result<()> {
        self.state.snapshot(out)?;
        self.snapshot_timers(out);
        Ok(())
    }

    /// Write the pending timers only (with the LSM backend's native checkpoints, which hold
    /// the states).
    pub fn snapshot_timers(&self, out: &mut KeyedSnapshot) {
        let groups = self.state.backend().key_groups();
        let mut key = Vec::new();
        for (kind, set) in [(TimerKind::EventTime, &self.timers.event), (TimerKind::ProcessingTime, &self.timers.processing)] {
            for (ts, k) in set {
                key.clear();
                codec::encode_into(k, &mut key);
                let entry = KeyedEntryRef::Timer { kind, ts: *ts, key: &key };
                codec::encode_into(&entry, out.group(groups.key_group(k.stable_hash())));
            }
        }
    }

    /// Restore states and timers from `restore` (before the first record). Processing-time
    /// timers that are already due fire at the first processing-time callback.
    pub fn restore(&mut self, restore: &KeyedRestore) -> Result<()> {
        let (state, timers) = (&self.state, &mut self.timers);
        let r = restore.for_each_section(|kg, section| {
            codec::for_each_entry(section, &restore.operator, kg, |entry| match entry {
                KeyedEntryBorrowed::State { state: id, key, value } => state.restore_state(kg, id, key, value),
                KeyedEntryBorrowed::Timer { kind, ts, key } => codec::decode::<K>(key, "timer key").map(|k| match kind {
                    TimerKind::EventTime => {
                        timers.event.insert((ts, k));
                    }
                    TimerKind::ProcessingTime => {
                        if timers.processing.insert((ts, k)) {
                            timers.wake.register(ts);
                        }
                    }
                }),
            })
        });
        self.timers.sync();
        r
    }

    /// The watermark advanced: fire due event-time timers, then forward it.
    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        while let Some((ts, key)) = self.timers.pop_event_due(wm) {
            self.timers.sync();
            let mut ctx = ProcessContext {
                key: &key,
                timestamp: ts,
                watermark: wm,
                clock: &self.clock,
                out: &mut self.out,
                timers: &mut self.timers,
                emitted: &mut self.emitted,
            };
            self.f.on_timer(&key, ts, TimeDomain::EventTime, &mut ctx);
        }
        self.out.mark(wm);
    }

    fn report(&mut self) {
        OperatorMetrics::add(&self.metrics.records_out, std::mem::take(&mut self.emitted));
    }
}

impl<T, K, KF, F> InOrder<T> for KeyedProcessOp<T, K, KF, F>
where
    K: StateKey + StableHash + Ord,
    KF: FnMut(&T) -> K,
    F: KeyedProcessFunction<K, T>,
{
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
    }

    fn on_record(&mut self, record: T, ts: Timestamp) {
        let key = (self.key_fn)(&record);
        let mut ctx = ProcessContext {
            key: &key,
            timestamp: ts,
            watermark: self.watermark,
            clock: &self.clock,
            out: &mut self.out,
            timers: &mut self.timers,
            emitted: &mut self.emitted,
        };
        self.f.process(&key, record, &mut ctx);
    }
}

impl<T, K, KF, F> Push<T> for KeyedProcessOp<T, K, KF, F>
where
    K: StateKey + StableHash + Ord,
    KF: FnMut(&T) -> K,
    F: KeyedProcessFunction<K, T>,
{
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        self.clock.set(now_ms());
        batch.drain_in_order(self);
        self.out.flush();
        self.report();
    }

    fn watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
        self.out.flush();
        self.report();
    }

    fn processing_time(&mut self, now_ms: Timestamp) {
        self.clock.set(now_ms);
        let now = self.clock.now();
        while let Some((ts, key)) = self.timers.pop_processing_due(now) {
            self.timers.sync();
            let mut ctx = ProcessContext {
                key: &key,
                timestamp: self.watermark,
                watermark: self.watermark,
                clock: &self.clock,
                out: &mut self.out,
                timers: &mut self.timers,
                emitted: &mut self.emitted,
            };
            self.f.on_timer(&key, ts, TimeDomain::ProcessingTime, &mut ctx);
        }
        self.report();
        self.out.processing_time(now_ms);
    }

    fn idle(&mut self) {
        self.out.idle();
    }

    fn barrier(&mut self, epoch: u64, snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {
        self.out.flush();
        // Incremental: the store's native checkpoint holds the states (finished in the
        // background), the portable snapshot only the timers. Savepoints are portable.
        // Memory backend: the states are frozen here and written by the backend's writer
        // thread (portable, also for savepoints), the timers inline.
        let native = !snapshot.savepoint && self.state.backend().native_checkpoints();
        let taken = if native {
            self.state
                .backend()
                .begin_native_checkpoint(epoch)
                .map(|()| self.snapshot_timers(snapshot.keyed(&self.name)))
        } else if self.state.backend().async_snapshots() {
            self.state
                .begin_async_snapshot(epoch)
                .map(|()| self.snapshot_timers(snapshot.keyed(&self.name)))
        } else {
            KeyedProcessOp::snapshot(self, snapshot.keyed(&self.name))
        };
        if let Err(e) = taken {
            snapshot.decline(&self.name, &e.to_string());
        }
        snapshot.operator_state(&self.name, crate::checkpoint::snapshot::encode(&self.watermark));
        self.out.barrier(epoch, snapshot);
    }

    fn end(&mut self) {
        debug_assert!(self.timers.event.is_empty(), "end of input before the final watermark");
        self.report();
        self.out.end();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::batch::Mark;
    use crate::key::KeyGroups;
    use crate::shard::Flusher;
    use crate::state::{StateBackendKind, ValueState};
    use crate::testing::{run_local, test_backend, Recorder, TestBackend};

    /// Counts per key; an event-time timer at `ts + 10` emits the count then.
    #[derive(Clone, Default)]
    struct CountThenSummary {
        count: Option<ValueState<u32, i64>>,
    }

    impl KeyedProcessFunction<u32, (u32, i64)> for CountThenSummary {
        type Out = (u32, &'static str, i64, Timestamp);
        fn open(&mut self, state: &StateContext<u32>) {
            self.count = Some(state.value("count", None));
        }
        fn process(&mut self, key: &u32, _r: (u32, i64), ctx: &mut ProcessContext<'_, u32, Self::Out>) {
            let count = self.count.as_mut().expect("opened");
            let c = count.update_with(
                key,
                || 0,
                |c| {
                    *c += 1;
                    *c
                },
            );
            ctx.emit((*key, "record", c, ctx.timestamp()));
            ctx.register_event_time_timer(ctx.timestamp() + 10);
        }
        fn on_timer(&mut self, key: &u32, ts: Timestamp, domain: TimeDomain, ctx: &mut ProcessContext<'_, u32, Self::Out>) {
            assert_eq!(domain, TimeDomain::EventTime);
            let c = self.count.as_mut().expect("opened").value(key).copied().unwrap_or(0);
            ctx.emit((*key, "timer", c, ts));
        }
    }

    #[test]
    fn timers_fire_between_records_at_their_marks_and_dedupe() {
        let (rec, log) = Recorder::new();
        let mut op = KeyedProcessOp::new(
            CountThenSummary::default(),
            |r: &(u32, i64)| r.0,
            Output::new(Box::new(rec), 64),
            ProcessingTimers::default(),
            Arc::new(OperatorMetrics::default()),
            StateBackend::default(),
        );
        let mut b = Batch::with_capacity(8);
        b.push((1, 0), 0);
        b.push((1, 0), 0); // same timer (1, 10): deduplicated
        b.push((2, 5), 5);
        b.push((1, 12), 12);
        b.marks = vec![Mark { index: 3, watermark: 10 }, Mark { index: 4, watermark: 20 }];
        op.push(&mut b);
        let (records, marks) = log.borrow_mut().batches.remove(0);
        let tags: Vec<_> = records.iter().map(|r| (r.0, r.1, r.2, r.3)).collect();
        assert_eq!(
            tags,
            vec![
                (1, "record", 1, 0),
                (1, "record", 2, 0),
                (2, "record", 1, 5),
                (1, "timer", 2, 10),
                (1, "record", 3, 12),
                (2, "timer", 1, 15),
            ]
        );
        // Timer output precedes the watermark that fired it.
        assert_eq!(marks, vec![Mark { index: 4, watermark: 10 }, Mark { index: 6, watermark: 20 }]);
        let entries = op.state_entries();
        assert!(entries.contains(&("count".to_string(), 2)) && entries.contains(&("timers:event".to_string(), 1)));
        op.watermark(crate::time::WATERMARK_MAX);
        op.end();
        assert!(log.borrow().ended);
    }

    /// Registers a processing-time timer 50 ms ahead per record, and an event-time timer it
    /// deletes again at once.
    #[derive(Clone, Default)]
    struct Later;

    impl KeyedProcessFunction<u32, u32> for Later {
        type Out = (u32, TimeDomain, Timestamp);
        fn process(&mut self, _key: &u32, _r: u32, ctx: &mut ProcessContext<'_, u32, Self::Out>) {
            let at = ctx.current_processing_time() + 50;
            ctx.register_processing_time_timer(at);
            ctx.register_event_time_timer(5);
            ctx.delete_event_time_timer(5);
        }
        fn on_timer(&mut self, key: &u32, ts: Timestamp, domain: TimeDomain, ctx: &mut ProcessContext<'_, u32, Self::Out>) {
            ctx.emit((*key, domain, ts));
        }
    }

    #[test]
    fn processing_time_timers_wake_the_segment_and_fire_when_due() {
        let (rec, log) = Recorder::new();
        let wake = ProcessingTimers::default();
        let mut op = KeyedProcessOp::new(
            Later,
            |r: &u32| *r,
            Output::new(Box::new(rec), 64),
            wake.clone(),
            Arc::new(OperatorMetrics::default()),
            StateBackend::default(),
        );
        let mut b = Batch::with_capacity(4);
        b.push(7, 0);
        b.push(7, 0); // same processing time within one batch: one timer
        b.push(8, 0);
        op.push(&mut b);
        let at = op.clock.now() + 50;
        assert_eq!(wake.earliest(), Some(at), "the segment loop wakes for the timer");
        op.watermark(100);
        assert!(
            log.borrow().batches.iter().all(|(r, _)| r.is_empty()),
            "the deleted event-time timer never fires"
        );
        op.processing_time(at - 1);
        assert!(log.borrow().batches.iter().all(|(r, _)| r.is_empty()));
        op.processing_time(at);
        let fired: Vec<_> = log.borrow().batches.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(fired, vec![(7, TimeDomain::ProcessingTime, at), (8, TimeDomain::ProcessingTime, at)]);
        assert!(op.state_entries().iter().all(|(_, n)| *n == 0), "fired timers leave no state");
    }

    fn key_of(r: &(u32, i64)) -> u32 {
        r.0
    }

    type CountOp = KeyedProcessOp<(u32, i64), u32, fn(&(u32, i64)) -> u32, CountThenSummary>;
    type Log = Rc<RefCell<crate::testing::Recorded<(u32, &'static str, i64, Timestamp)>>>;

    /// A `CountThenSummary` operator on a fresh backend; connect the flusher (if any) after an
    /// optional restore.
    fn count_op(kind: StateBackendKind, groups: KeyGroups) -> (CountOp, Log, TestBackend) {
        let (rec, log) = Recorder::new();
        let t = test_backend(kind, 4096, groups, None);
        let op = KeyedProcessOp::new(
            CountThenSummary::default(),
            key_of as fn(&(u32, i64)) -> u32,
            Output::new(Box::new(rec), 64),
            ProcessingTimers::default(),
            Arc::new(OperatorMetrics::default()),
            t.backend.clone(),
        );
        (op, log, t)
    }

    async fn connect(t: &mut TestBackend) {
        if let Some(f) = &mut t.flusher {
            f.connect().await.unwrap();
        }
    }

    fn outputs(log: &Log) -> Vec<(u32, &'static str, i64, Timestamp)> {
        log.borrow().batches.iter().flat_map(|(r, _)| r.clone()).collect()
    }

    fn batch_of(records: &[(u32, i64)], watermark_after: Timestamp) -> Batch<(u32, i64)> {
        let mut b = Batch::with_capacity(records.len());
        for r in records {
            b.push(*r, r.1);
        }
        b.marks = vec![Mark {
            index: records.len() as u32,
            watermark: watermark_after,
        }];
        b
    }

    #[test]
    fn snapshot_and_restore_continue_like_an_uninterrupted_run_on_any_backend_and_shard_count() {
        let records: Vec<(u32, i64)> = (0..600u64).map(|i| ((i * 2_654_435_761 % 97) as u32 % 60, i as i64 * 3)).collect();
        let (first, second) = records.split_at(300);
        let wm_first = first.last().unwrap().1 - 40; // timers of the last 40 ms stay pending
        let wm_second = second.last().unwrap().1 - 40;
        for kind in [StateBackendKind::Memory, StateBackendKind::Lsm] {
            run_local(async {
                let one = KeyGroups::new(128, 1);
                // The uninterrupted run.
                let (mut op, log, mut t) = count_op(kind, one);
                connect(&mut t).await;
                op.push(&mut batch_of(first, wm_first));
                let cut = outputs(&log).len();
                op.push(&mut batch_of(second, wm_second));
                op.watermark(crate::time::WATERMARK_MAX);
                let mut expected = outputs(&log)[cut..].to_vec();
                expected.sort();
                // The same up to the snapshot.
                let (mut op, _, mut t) = count_op(kind, one);
                connect(&mut t).await;
                op.push(&mut batch_of(first, wm_first));
                let mut snap = KeyedSnapshot::default();
                op.snapshot(&mut snap).unwrap();
                assert!(snap.groups.len() > 10);
                for to_kind in [StateBackendKind::Memory, StateBackendKind::Lsm] {
                    for shards in 1..=3u32 {
                        let groups = KeyGroups::new(128, shards);
                        let mut ops = Vec::new();
                        for shard in 0..shards {
                            let (mut op, log, mut t) = count_op(to_kind, groups);
                            let restore = KeyedRestore::new(
                                "process",
                                snap.groups
                                    .iter()
                                    .filter(|(g, _)| groups.shard_of_group(**g) == shard)
                                    .map(|(g, b)| (*g, b.clone()))
                                    .collect(),
                            );
                            op.restore(&restore).unwrap();
                            connect(&mut t).await;
                            ops.push((op, log, t));
                        }
                        let mut got = Vec::new();
                        for (shard, (op, log, _)) in ops.iter_mut().enumerate() {
                            let mine: Vec<_> = second
                                .iter()
                                .filter(|r| groups.shard_of_hash(r.0.stable_hash()) == shard as u32)
                                .copied()
                                .collect();
                            op.push(&mut batch_of(&mine, wm_second));
                            op.watermark(crate::time::WATERMARK_MAX);
                            got.extend(outputs(log));
                        }
                        got.sort();
                        assert_eq!(got, expected, "{kind:?} -> {to_kind:?} on {shards} shards");
                    }
                }
            });
        }
    }

    #[test]
    fn processing_time_timers_survive_a_snapshot() {
        let (rec, _) = Recorder::new();
        let mut op = KeyedProcessOp::new(
            Later,
            |r: &u32| *r,
            Output::new(Box::new(rec), 64),
            ProcessingTimers::default(),
            Arc::new(OperatorMetrics::default()),
            StateBackend::default(),
        );
        let mut b = Batch::with_capacity(2);
        b.push(7, 0);
        b.push(8, 0);
        op.push(&mut b);
        let at = op.clock.now() + 50;
        let mut snap = KeyedSnapshot::default();
        op.snapshot(&mut snap).unwrap();
        let (rec, log) = Recorder::new();
        let wake = ProcessingTimers::default();
        let mut restored = KeyedProcessOp::new(
            Later,
            |r: &u32| *r,
            Output::new(Box::new(rec), 64),
            wake.clone(),
            Arc::new(OperatorMetrics::default()),
            StateBackend::default(),
        );
        let restore = KeyedRestore::new("process", snap.groups.into_iter().collect());
        restored.restore(&restore).unwrap();
        assert_eq!(wake.earliest(), Some(at), "restored timers wake the segment");
        assert!(restored.state_entries().contains(&("timers:processing".to_string(), 2)));
        restored.processing_time(at);
        let fired: Vec<_> = log.borrow().batches.iter().flat_map(|(r, _)| r.clone()).collect();
        assert_eq!(fired, vec![(7, TimeDomain::ProcessingTime, at), (8, TimeDomain::ProcessingTime, at)]);
    }
}
