//! Processing time in SQL: `PROCTIME()` attributes and the window TVFs `TUMBLE`, `HOP` and
//! `CUMULATE` over them (Flink's processing-time windows, e.g. Nexmark q12).
//!
//! A column is a *processing-time attribute* when it is `PROCTIME()` — a computed column
//! (`p AS PROCTIME()`) or a select item (`SELECT *, PROCTIME() AS p FROM t`) — followed through
//! projections, filters and window TVFs ([`is_proctime`]). Its value, where a query reads it, is
//! the processing time at which the row is evaluated (TIMESTAMP_LTZ(3)); a window TVF over it
//! puts each row into the windows of the clock at the window operator, as Flink does.
//!
//! The window aggregate of a processing-time window is the engine's aligned window operator
//! driven by the clock instead of the watermark ([`fired_by_clock`]): every batch's records
//! take the current processing time as their timestamp, and a window `[start, end)` fires as
//! soon as processing time reaches `end` (the segment loop wakes for the next window end, which
//! the operator registers as a processing-time timer). Event-time watermarks from upstream do
//! not reach the window. At end of input the windows still open fire at once (Flink drops
//! pending processing-time timers when a bounded input ends; weir counts every record).
//! Results carry `window_end - 1` as their timestamp and `window_time`, and are not a windowed
//! relation for later window operators (no event time downstream).
//!
//! Invariants: a record is never late (its timestamp is the clock, which only moves forward
//! past every fired window); a window fires once, after the clock passed its end or at end of
//! input; the window state is checkpointed by key group like any aligned window's, and after a
//! restore the clock is taken to be no earlier than the restored operator's.

use super::expr::{Expr, Func};
use super::plan::{ColumnSource, Plan, Rel};
use crate::batch::Batch;
use crate::checkpoint::runtime::TaskSnapshot;
use crate::operator::window::WindowAssigner;
use crate::operator::Push;
use crate::shard::{BuildCtx, ProcessingTimers};
use crate::time::{processing_now_ms, Timestamp, WATERMARK_MAX};

/// Is `e` the call `PROCTIME()`?
fn is_proctime_call(e: &Expr) -> bool {
    matches!(e, Expr::Call(Func::Proctime, args) if args.is_empty())
}

/// Is column `col` of `rel` a processing-time attribute (`PROCTIME()` in the table or a
/// projection, passed on unchanged)?
pub fn is_proctime(rel: &Rel, col: usize) -> bool {
    match &rel.plan {
        Plan::Scan { table } => matches!(table.layout.get(col), Some(ColumnSource::Computed(e)) if is_proctime_call(e)),
        Plan::Project { input, exprs } => match exprs.get(col) {
            Some(Expr::Col(i)) => is_proctime(input, *i),
            Some(e) => is_proctime_call(e),
            None => false,
        },
        Plan::Filter { input, .. } => is_proctime(input, col),
        Plan::WindowTvf { input, .. } => col < input.scope.columns.len() && is_proctime(input, col),
        _ => false,
    }
}

/// The window operator `inner` (an aligned window aggregate over `assigner`'s windows, built
/// as operator `name` on the shard `ctx` builds) driven by processing time.
pub fn fired_by_clock<T: 'static>(inner: Box<dyn Push<T>>, assigner: WindowAssigner, ctx: &BuildCtx<'_>, name: &str) -> crate::error::Result<Box<dyn Push<T>>> {
    let mut op = ClockFiredWindows::new(inner, assigner, ctx.timers(), processing_now_ms());
    if let Some(restore) = ctx.restore() {
        // The restored windows fired up to the restored watermark (the clock then, minus 1 ms).
        let restored = crate::checkpoint::runtime::restored_watermark(restore, name, ctx.shard, ctx.shards)?;
        op.restored(restored);
    }
    Ok(Box::new(op))
}

/// An aligned window operator whose windows fire by processing time (see the module doc).
pub struct ClockFiredWindows<T> {
    inner: Box<dyn Push<T>>,
    assigner: WindowAssigner,
    timers: ProcessingTimers,
    /// The newest processing time seen: records get it as their timestamp.
    now: Timestamp,
    /// The end of the latest window holding records (nothing is open past it).
    open_until: Timestamp,
    /// The next window end due (registered with the segment loop), if any window is open.
    deadline: Option<Timestamp>,
}

impl<T> ClockFiredWindows<T> {
    /// `inner` receives records stamped with the clock and watermarks of the clock; `now`: the
    /// clock at build time.
    pub fn new(inner: Box<dyn Push<T>>, assigner: WindowAssigner, timers: ProcessingTimers, now: Timestamp) -> Self {
        Self {
            inner,
            assigner,
            timers,
            now,
            open_until: Timestamp::MIN,
            deadline: None,
        }
    }

    /// After a restore: windows up to `fired` (the restored watermark) fired; later ones may hold
    /// restored records, so a deadline is kept until the longest window past the clock ends.
    fn restored(&mut self, fired: Option<Timestamp>) {
        if let Some(wm) = fired {
            self.now = self.now.max(wm.saturating_add(1));
        }
        self.open_until = self.now.saturating_add(self.longest_window());
        self.schedule();
    }

    fn longest_window(&self) -> i64 {
        match self.assigner {
            WindowAssigner::Tumbling { size_ms, .. } | WindowAssigner::Sliding { size_ms, .. } => size_ms,
            WindowAssigner::Cumulate { max_size_ms, .. } => max_size_ms,
            WindowAssigner::Session { gap_ms } => gap_ms,
        }
    }

    /// The earliest end of a window containing `t`: the next time a window can be due.
    fn next_end(&self, t: Timestamp) -> Timestamp {
        let mut next = Timestamp::MAX;
        self.assigner.for_each_window(t, |_, e| next = next.min(e));
        next
    }

    /// The latest end of a window containing `t`.
    fn last_end(&self, t: Timestamp) -> Timestamp {
        let mut last = Timestamp::MIN;
        self.assigner.for_each_window(t, |_, e| last = last.max(e));
        last
    }

    /// Register the next window end as a processing-time timer if a window is open.
    fn schedule(&mut self) {
        if self.open_until <= self.now {
            self.deadline = None;
            return;
        }
        let next = self.next_end(self.now);
        if self.deadline != Some(next) {
            self.deadline = Some(next);
            self.timers.register(next);
        }
    }

    /// Advance the clock to `t`; fire the windows that ended (`end <= t`).
    fn tick(&mut self, t: Timestamp) {
        self.now = self.now.max(t);
        if self.deadline.is_some_and(|d| d <= self.now) {
            // Windows `[s, e)` with `e - 1 <= now - 1` fire.
            self.inner.watermark(self.now - 1);
            self.deadline = None;
            self.schedule();
        }
    }
}

impl<T> Push<T> for ClockFiredWindows<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        self.tick(processing_now_ms());
        // Event-time watermarks do not reach processing-time windows; the end of input does.
        let ended = batch.marks.last().is_some_and(|m| m.watermark == WATERMARK_MAX);
        batch.marks.clear();
        if !batch.records.is_empty() {
            batch.timestamps.iter_mut().for_each(|t| *t = self.now);
            self.open_until = self.open_until.max(self.last_end(self.now));
            self.inner.push(batch);
            self.schedule();
        }
        if ended {
            self.inner.watermark(WATERMARK_MAX);
        }
    }

    fn watermark(&mut self, wm: Timestamp) {
        if wm == WATERMARK_MAX {
            // End of input: every window still open fires now.
            self.inner.watermark(WATERMARK_MAX);
        }
    }

    fn processing_time(&mut self, now_ms: Timestamp) {
        self.tick(now_ms);
        self.inner.processing_time(now_ms);
    }

    fn end(&mut self) {
        self.inner.end();
    }

    fn idle(&mut self) {
        self.inner.idle();
    }

    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.inner.barrier(epoch, snapshot);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;

    use super::*;
    use crate::operator::aggregate::AggregateFunction;
    use crate::operator::window::aligned::AlignedWindowOp;
    use crate::operator::window::{WindowCore, WindowResult, WindowSpec};
    use crate::operator::Output;
    use crate::shard::OperatorMetrics;
    use crate::testing::Recorder;
    use crate::time::{set_processing_clock, ProcessingClock, TestClock};

    /// Counts records.
    #[derive(Clone)]
    struct Count;
    impl AggregateFunction<u32> for Count {
        type Acc = u64;
        type Out = u64;
        fn create(&self) -> u64 {
            0
        }
        fn add(&self, acc: &mut u64, _: &u32) {
            *acc += 1;
        }
        fn merge(&self, acc: &mut u64, other: &u64) {
            *acc += other;
        }
        fn result(&self, acc: &u64) -> u64 {
            *acc
        }
    }

    type Log = Rc<RefCell<crate::testing::Recorded<WindowResult<u32, u64>>>>;

    /// A window core as a `Push` (what `WindowDriver` does, without checkpoints).
    struct Driven<W>(W);
    impl<W: WindowCore<u32>> Push<u32> for Driven<W> {
        fn push(&mut self, batch: &mut Batch<u32>) {
            batch.drain_in_order(&mut self.0);
            self.0.outputs().flush();
        }
        fn watermark(&mut self, wm: Timestamp) {
            self.0.on_watermark(wm);
            self.0.outputs().flush();
        }
        fn processing_time(&mut self, now_ms: Timestamp) {
            self.0.outputs().processing_time(now_ms);
        }
        fn end(&mut self) {
            self.0.outputs().end();
        }
        fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
            self.0.outputs().barrier(epoch, snapshot);
        }
    }

    fn op(assigner: WindowAssigner, timers: &ProcessingTimers, now: Timestamp) -> (ClockFiredWindows<u32>, Log) {
        let (rec, log) = Recorder::new();
        let spec = WindowSpec {
            assigner,
            allowed_lateness_ms: 0,
        };
        let inner = AlignedWindowOp::new(
            spec,
            |r: &u32| *r,
            Count,
            Output::new(Box::new(rec), 64),
            None,
            Arc::new(OperatorMetrics::default()),
        );
        (ClockFiredWindows::new(Box::new(Driven(inner)), assigner, timers.clone(), now), log)
    }

    fn batch(keys: &[u32], event_ts: i64) -> Batch<u32> {
        let mut b = Batch::with_capacity(keys.len());
        for k in keys {
            b.push(*k, event_ts);
        }
        b.mark(event_ts);
        b
    }

    fn fired(log: &Log) -> Vec<(u32, i64, i64, u64)> {
        let mut v: Vec<_> = log
            .borrow()
            .batches
            .iter()
            .flat_map(|(r, _)| r.iter().map(|w| (w.key, w.window_start, w.window_end, w.value)))
            .collect();
        v.sort();
        v
    }

    /// Records go to the window of the clock when they arrive, whatever their event time; a
    /// window fires when the clock passes its end (not before), through the timer the operator
    /// registered; event-time watermarks fire nothing; the end of input fires what is open.
    #[test]
    fn tumbling_windows_fire_by_the_clock() {
        let clock = TestClock::manual(1_000_000);
        set_processing_clock(ProcessingClock::Test(clock.clone()));
        let timers = ProcessingTimers::default();
        let (mut w, log) = op(WindowAssigner::tumbling(10_000), &timers, clock.peek());
        w.push(&mut batch(&[1, 2, 1], 5));
        assert_eq!(timers.earliest(), Some(1_010_000), "the segment wakes at the window's end");
        w.watermark(9_999_999_999);
        clock.advance(9_999);
        w.push(&mut batch(&[1], 7));
        w.processing_time(1_009_999);
        assert!(fired(&log).is_empty(), "nothing fires before the clock reaches the end");
        clock.advance(1);
        assert!(timers.pop_due(1_010_000));
        w.processing_time(1_010_000);
        assert_eq!(fired(&log), vec![(1, 1_000_000, 1_010_000, 3), (2, 1_000_000, 1_010_000, 1)]);
        clock.advance(5_000);
        w.push(&mut batch(&[2, 2], 8));
        assert_eq!(timers.earliest(), Some(1_020_000));
        w.watermark(WATERMARK_MAX);
        w.end();
        assert_eq!(
            fired(&log),
            vec![(1, 1_000_000, 1_010_000, 3), (2, 1_000_000, 1_010_000, 1), (2, 1_010_000, 1_020_000, 2)],
            "the open window fires at end of input"
        );
        set_processing_clock(ProcessingClock::Wall);
    }

    /// HOP windows: a record counts in every window of the clock; each fires at its own end.
    #[test]
    fn hop_windows_fire_one_slide_at_a_time() {
        let clock = TestClock::manual(100);
        set_processing_clock(ProcessingClock::Test(clock.clone()));
        let timers = ProcessingTimers::default();
        let (mut w, log) = op(WindowAssigner::sliding(20, 10), &timers, clock.peek());
        w.push(&mut batch(&[7], 0));
        clock.advance(10);
        w.processing_time(clock.peek());
        assert_eq!(fired(&log), vec![(7, 90, 110, 1)]);
        assert!(timers.pop_due(110), "the next window end is registered");
        clock.advance(10);
        w.processing_time(clock.peek());
        assert_eq!(fired(&log), vec![(7, 90, 110, 1), (7, 100, 120, 1)]);
        clock.advance(100);
        w.processing_time(clock.peek());
        w.watermark(WATERMARK_MAX);
        assert_eq!(fired(&log).len(), 2, "no window without records fires");
        set_processing_clock(ProcessingClock::Wall);
    }
}
