//! Event-time windows: assigners (tumbling, sliding, cumulate, session), the window result type,
//! and the lateness rule they share.
//!
//! Lateness (Flink's rule, identical for the DataStream window operator and SQL window TVFs): a
//! window `[start, end)` fires when the watermark reaches `end - 1`, and accepts a record while
//! `end - 1 + allowed_lateness > watermark`, where `watermark` is the watermark *before* the
//! record. A record that no window accepts is late: it is counted in
//! `late_records_dropped`, or sent to the late side output when one is configured. With allowed
//! lateness, a record accepted by an already-fired window fires that window again at once with
//! the updated result (Flink's late firing), and the window's state is dropped when the
//! watermark passes `end - 1 + allowed_lateness`.

pub mod aligned;
pub mod session;

use serde::Serialize;

use crate::checkpoint::runtime::TaskSnapshot;
use crate::checkpoint::snapshot::{encode, KeyedRestore, KeyedSnapshot};
use crate::error::Result;
use crate::key::KeyGroups;
use crate::shard::BuildCtx;
use crate::time::Timestamp;

/// Which windows a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowAssigner {
    /// Fixed-size, non-overlapping windows (`TUMBLE`).
    Tumbling { size_ms: i64, offset_ms: i64 },
    /// Fixed-size windows every `slide_ms` (`HOP`); a record is in `size / slide` windows.
    Sliding { size_ms: i64, slide_ms: i64, offset_ms: i64 },
    /// Windows growing by `step_ms` from the start of each `max_size_ms` window (`CUMULATE`).
    Cumulate { step_ms: i64, max_size_ms: i64, offset_ms: i64 },
    /// Per key, records closer than `gap_ms` form one session (`SESSION`); sessions merge.
    Session { gap_ms: i64 },
}

impl WindowAssigner {
    pub fn tumbling(size_ms: i64) -> Self {
        assert!(size_ms > 0, "window size must be > 0");
        Self::Tumbling { size_ms, offset_ms: 0 }
    }
    pub fn sliding(size_ms: i64, slide_ms: i64) -> Self {
        assert!(size_ms > 0 && slide_ms > 0, "window size and slide must be > 0");
        Self::Sliding {
            size_ms,
            slide_ms,
            offset_ms: 0,
        }
    }
    pub fn cumulate(step_ms: i64, max_size_ms: i64) -> Self {
        assert!(
            step_ms > 0 && max_size_ms > 0 && max_size_ms % step_ms == 0,
            "cumulate: max size must be a positive multiple of the step"
        );
        Self::Cumulate {
            step_ms,
            max_size_ms,
            offset_ms: 0,
        }
    }
    pub fn session(gap_ms: i64) -> Self {
        assert!(gap_ms > 0, "session gap must be > 0");
        Self::Session { gap_ms }
    }

    /// Check parameters without panicking (for SQL and config input).
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Tumbling { size_ms, .. } if size_ms <= 0 => Err(format!("tumbling window size {size_ms} ms must be > 0")),
            Self::Sliding { size_ms, slide_ms, .. } if size_ms <= 0 || slide_ms <= 0 => {
                Err(format!("hop window size {size_ms} ms and slide {slide_ms} ms must be > 0"))
            }
            Self::Sliding { size_ms, slide_ms, .. } if size_ms / slide_ms > 100_000 => Err(format!(
                "hop window size {size_ms} ms / slide {slide_ms} ms puts each record in too many windows"
            )),
            Self::Cumulate { step_ms, max_size_ms, .. } if step_ms <= 0 || max_size_ms <= 0 || max_size_ms % step_ms != 0 => {
                Err(format!("cumulate max size {max_size_ms} ms must be a positive multiple of step {step_ms} ms"))
            }
            Self::Session { gap_ms } if gap_ms <= 0 => Err(format!("session gap {gap_ms} ms must be > 0")),
            _ => Ok(()),
        }
    }

    /// Call `f(start, end)` for every aligned window containing `ts`, latest end first.
    /// Not for sessions.
    #[inline]
    pub fn for_each_window(&self, ts: Timestamp, mut f: impl FnMut(Timestamp, Timestamp)) {
        match *self {
            Self::Tumbling { size_ms, offset_ms } => {
                let start = window_start(ts, offset_ms, size_ms);
                f(start, start.saturating_add(size_ms));
            }
            Self::Sliding { size_ms, slide_ms, offset_ms } => {
                let mut start = window_start(ts, offset_ms, slide_ms);
                while start > ts.saturating_sub(size_ms) {
                    f(start, start.saturating_add(size_ms));
                    start -= slide_ms;
                }
            }
            Self::Cumulate {
                step_ms,
                max_size_ms,
                offset_ms,
            } => {
                let start = window_start(ts, offset_ms, max_size_ms);
                let mut end = start.saturating_add(max_size_ms);
                while end > ts {
                    f(start, end);
                    end -= step_ms;
                }
            }
            Self::Session { .. } => unreachable!("sessions are assigned by the session operator"),
        }
    }
}

/// Start of the aligned window of `size` containing `ts` (Flink's
/// `TimeWindow.getWindowStartWithOffset`, correct for negative timestamps).
#[inline]
pub fn window_start(ts: Timestamp, offset: i64, size: i64) -> Timestamp {
    match ts.checked_sub(offset) {
        Some(d) => ts - d.rem_euclid(size),
        None => ts.saturating_sub((ts as i128 - offset as i128).rem_euclid(size as i128) as i64),
    }
}

/// The last timestamp at which a window ending at `end` still accepts records, given the
/// allowed lateness: the window is late once the watermark reaches it (saturating, so extreme
/// timestamps from bad input never overflow).
#[inline]
pub fn cleanup_time(end: Timestamp, allowed_lateness_ms: i64) -> Timestamp {
    end.saturating_sub(1).saturating_add(allowed_lateness_ms)
}

/// One window's aggregate for one key. Its event timestamp is `window_end - 1`.
#[derive(Clone, Debug, PartialEq, PartialOrd, Serialize)]
pub struct WindowResult<K, V> {
    pub key: K,
    pub window_start: Timestamp,
    pub window_end: Timestamp,
    pub value: V,
}

/// Shared settings of a window operator.
#[derive(Clone, Copy, Debug)]
pub struct WindowSpec {
    pub assigner: WindowAssigner,
    pub allowed_lateness_ms: i64,
}

/// The two outputs of a window operator: results, and the optional late side output. Routing
/// of late records and the forwarding of watermarks, processing time and end of input are the
/// same for every window kind, so they live here.
pub struct WindowOutputs<T, R> {
    pub(crate) results: crate::operator::Output<R>,
    pub(crate) late: Option<crate::operator::Output<T>>,
    pub(crate) metrics: std::sync::Arc<crate::shard::OperatorMetrics>,
}

impl<T, R> WindowOutputs<T, R> {
    pub fn new(results: crate::operator::Output<R>, late: Option<crate::operator::Output<T>>, metrics: std::sync::Arc<crate::shard::OperatorMetrics>) -> Self {
        Self { results, late, metrics }
    }

    /// A record no window accepts: to the side output if there is one, else dropped; counted
    /// either way.
    pub fn late_record(&mut self, record: T, ts: Timestamp) {
        use crate::shard::OperatorMetrics;
        match &mut self.late {
            Some(late) => {
                OperatorMetrics::add(&self.metrics.late_records_side_output, 1);
                late.emit(record, ts);
            }
            None => OperatorMetrics::add(&self.metrics.late_records_dropped, 1),
        }
    }

    /// Forward watermark `wm` on both outputs, after what it fired.
    pub fn mark(&mut self, wm: Timestamp) {
        self.results.mark(wm);
        if let Some(late) = &mut self.late {
            late.mark(wm);
        }
    }

    pub fn flush(&mut self) {
        self.results.flush();
        if let Some(late) = &mut self.late {
            late.flush();
        }
    }

    pub fn processing_time(&mut self, now_ms: Timestamp) {
        self.results.processing_time(now_ms);
        if let Some(late) = &mut self.late {
            late.processing_time(now_ms);
        }
    }

    /// Every input is idle: so are both outputs.
    pub fn idle(&mut self) {
        self.results.idle();
        if let Some(late) = &mut self.late {
            late.idle();
        }
    }

    pub fn end(&mut self) {
        self.results.end();
        if let Some(late) = &mut self.late {
            late.end();
        }
    }

    /// Forward checkpoint barrier `epoch` on both outputs (after what they hold).
    pub fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.results.barrier(epoch, snapshot);
        if let Some(late) = &mut self.late {
            late.barrier(epoch, snapshot);
        }
    }
}

impl<T, K, V> WindowOutputs<T, WindowResult<K, V>> {
    /// Emit one window's result for one key, stamped with the window's last timestamp
    /// (`window_end - 1`, Flink's `maxTimestamp`).
    #[inline]
    pub fn emit_result(&mut self, key: K, window_start: Timestamp, window_end: Timestamp, value: V) {
        self.results.emit(
            WindowResult {
                key,
                window_start,
                window_end,
                value,
            },
            window_end.saturating_sub(1),
        );
    }
}

/// What a window operator provides: in-order record and watermark handling (`advance` as
/// `on_watermark`) and its outputs. [`WindowDriver`] turns it into a [`crate::operator::Push`],
/// so every window kind forwards batches, watermarks, idleness, processing time and end of
/// input the same way.
pub trait WindowCore<T>: crate::batch::InOrder<T> {
    type Result;
    fn outputs(&mut self) -> &mut WindowOutputs<T, Self::Result>;
    /// Called at end of input, after the final watermark: assert nothing was left unfired.
    fn check_finished(&self) {}
    /// Checkpoints: write every window of every key into `keyed`, by the key's key group.
    fn snapshot(&self, keyed: &mut KeyedSnapshot, groups: &KeyGroups);
    /// Restore: add the windows in `keyed` (key groups this shard owns, maybe from several old
    /// shards).
    fn restore(&mut self, keyed: &KeyedRestore) -> Result<()>;
    /// The watermark the operator judges lateness against.
    fn current_watermark(&self) -> Timestamp;
    /// Restore the watermark (only ever raises it).
    fn restore_watermark(&mut self, wm: Timestamp);
}

/// A window operator as a `Push`: drives a [`WindowCore`] and checkpoints it under its
/// operator name.
pub struct WindowDriver<W> {
    core: W,
    name: String,
    groups: KeyGroups,
}

impl<W> WindowDriver<W> {
    /// Wrap `core` as operator `name`; restores its state when the job restores a checkpoint.
    pub fn build<T>(mut core: W, ctx: &BuildCtx<'_>, name: &str) -> Result<Self>
    where
        W: WindowCore<T>,
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
}

impl<T, W: WindowCore<T>> crate::operator::Push<T> for WindowDriver<W> {
    fn push(&mut self, batch: &mut crate::batch::Batch<T>) {
        crate::shard::OperatorMetrics::add(&self.core.outputs().metrics.records_in, batch.len() as u64);
        batch.drain_in_order(&mut self.core);
        self.core.outputs().flush();
    }

    fn watermark(&mut self, wm: Timestamp) {
        self.core.on_watermark(wm);
        self.core.outputs().flush();
    }

    fn idle(&mut self) {
        self.core.outputs().idle();
    }

    fn processing_time(&mut self, now_ms: Timestamp) {
        self.core.outputs().processing_time(now_ms);
    }

    fn end(&mut self) {
        self.core.check_finished();
        self.core.outputs().end();
    }

    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.core.outputs().flush();
        self.core.snapshot(snapshot.keyed(&self.name), &self.groups);
        snapshot.operator_state(&self.name, encode(&self.core.current_watermark()));
        self.core.outputs().barrier(epoch, snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(a: WindowAssigner, ts: i64) -> Vec<(i64, i64)> {
        let mut v = Vec::new();
        a.for_each_window(ts, |s, e| v.push((s, e)));
        v
    }

    #[test]
    fn assigners() {
        assert_eq!(windows(WindowAssigner::tumbling(10), 25), vec![(20, 30)]);
        assert_eq!(windows(WindowAssigner::tumbling(10), -1), vec![(-10, 0)]);
        assert_eq!(windows(WindowAssigner::sliding(10, 5), 12), vec![(10, 20), (5, 15)]);
        assert_eq!(windows(WindowAssigner::sliding(10, 5), 10), vec![(10, 20), (5, 15)]);
        assert_eq!(windows(WindowAssigner::cumulate(2, 6), 13), vec![(12, 18), (12, 16), (12, 14)]);
        assert_eq!(windows(WindowAssigner::cumulate(2, 6), 15), vec![(12, 18), (12, 16)]);
    }
}
