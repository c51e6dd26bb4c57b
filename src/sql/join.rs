//! The window join (Flink SQL's window join): both inputs carry `window_start`/`window_end`;
//! rows of the same window and equal join keys are joined when the window fires.
//!
//! State: per window end, a map from join key to the buffered left and right rows. When the
//! watermark reaches `window_end - 1`, every key of that window is joined (inner, or with the
//! unmatched rows padded with NULLs for outer joins), the results are emitted with timestamp
//! `window_end - 1`, and the window's state is dropped.
//!
//! Invariants (Flink's `WindowJoinOperator`): a row whose window has already fired at the join
//! (`window_end - 1 <= watermark` before the row, the watermark being the minimum over both
//! inputs) is late and dropped, for inner and outer joins alike (counted in
//! `late_records_dropped`); results of a window precede the watermark that fired it. The window
//! TVF before a join drops nothing, so a row late on its own input survives in Flink exactly
//! when the other input's watermark lags behind at that moment (thread timing between Flink's
//! tasks); weir's shards see both inputs' watermarks in step and drop such rows every time (see
//! the `extra_window_left_join` oracle test, which pins the difference to those rows).

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::ast::JoinKind;
use super::expr::Expr;
use super::types::{KeyRow, Row, Value};
use crate::batch::Batch;
use crate::checkpoint::runtime::restored_watermark;
use crate::checkpoint::snapshot::{append, encode};
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::operator::{Output, Push2};
use crate::shard::BuildCtx;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

/// What the join needs to know about its inputs.
#[derive(Debug)]
pub struct JoinSpec {
    pub kind: JoinKind,
    pub left_width: usize,
    pub right_width: usize,
    /// Index of `window_end` in left rows and in right rows.
    pub left_end: usize,
    pub right_end: usize,
    /// Condition on the joined row beyond the equi-keys.
    pub residual: Option<Expr>,
}

type Sides = (Vec<Row>, Vec<Row>);

/// The window-join operator for rows.
pub struct WindowJoinOp<LK, RK> {
    spec: Arc<JoinSpec>,
    /// Operator name (checkpoint sections) and key groups (buffered rows are snapshotted by
    /// the key group of their join key, the key both inputs were exchanged by).
    name: String,
    groups: KeyGroups,
    left_key: LK,
    right_key: RK,
    windows: BTreeMap<Timestamp, FxHashMap<KeyRow, Sides>>,
    watermark: Timestamp,
    out: Output<Row>,
    metrics: Arc<OperatorMetrics>,
}

impl<LK: Fn(&Row) -> KeyRow, RK: Fn(&Row) -> KeyRow> WindowJoinOp<LK, RK> {
    /// The join `name` on the shard `ctx` builds, restoring its buffered rows and watermark
    /// when the job restores.
    pub fn build(spec: Arc<JoinSpec>, left_key: LK, right_key: RK, ctx: &BuildCtx<'_>, name: &str, out: Output<Row>) -> Result<Self> {
        let mut op = Self::new(spec, left_key, right_key, out, ctx.operator_metrics(name));
        op.name = name.to_string();
        op.groups = ctx.groups;
        if let Some(restore) = ctx.restore() {
            restore
                .keyed_for(name, &ctx.groups, ctx.shard)
                .for_each::<(Timestamp, KeyRow, Sides)>(|_, (end, key, sides)| {
                    op.windows.entry(end).or_default().insert(key, sides);
                })?;
            if let Some(wm) = restored_watermark(restore, name, ctx.shard, ctx.shards)? {
                op.watermark = op.watermark.max(wm);
            }
        }
        Ok(op)
    }

    pub fn new(spec: Arc<JoinSpec>, left_key: LK, right_key: RK, out: Output<Row>, metrics: Arc<OperatorMetrics>) -> Self {
        Self {
            spec,
            name: "window:join".into(),
            groups: KeyGroups::new(crate::key::DEFAULT_MAX_KEY_GROUPS, 1),
            left_key,
            right_key,
            windows: BTreeMap::new(),
            watermark: WATERMARK_MIN,
            out,
            metrics,
        }
    }

    fn window_end(row: &Row, idx: usize) -> Option<Timestamp> {
        match row.get(idx) {
            Some(Value::Timestamp(t)) | Some(Value::TimestampLtz(t)) => Some(*t),
            _ => None,
        }
    }

    fn insert(&mut self, row: Row, left: bool) {
        let idx = if left { self.spec.left_end } else { self.spec.right_end };
        let Some(end) = Self::window_end(&row, idx) else {
            // A NULL window end never joins.
            OperatorMetrics::add(&self.metrics.late_records_dropped, 1);
            return;
        };
        if end.saturating_sub(1) <= self.watermark {
            OperatorMetrics::add(&self.metrics.late_records_dropped, 1);
            return;
        }
        let key = if left { (self.left_key)(&row) } else { (self.right_key)(&row) };
        let sides = self.windows.entry(end).or_default().entry(key).or_default();
        if left {
            sides.0.push(row);
        } else {
            sides.1.push(row);
        }
    }

    fn advance(&mut self, wm: Timestamp) {
        if wm <= self.watermark {
            return;
        }
        self.watermark = wm;
        while let Some(entry) = self.windows.first_entry() {
            let end = *entry.key();
            if end.saturating_sub(1) > wm {
                break;
            }
            let groups = entry.remove();
            let ts = end.saturating_sub(1);
            for (_, (ls, rs)) in groups {
                self.join_group(&ls, &rs, ts);
            }
        }
        self.out.mark(wm);
    }

    fn join_group(&mut self, ls: &[Row], rs: &[Row], ts: Timestamp) {
        let spec = self.spec.clone();
        let mut right_matched = vec![false; rs.len()];
        for l in ls {
            let mut matched = false;
            for (j, r) in rs.iter().enumerate() {
                let mut row = l.clone();
                row.extend(r.iter().cloned());
                if spec.residual.as_ref().is_none_or(|p| p.test(&row)) {
                    matched = true;
                    right_matched[j] = true;
                    self.out.emit(row, ts);
                }
            }
            if !matched && matches!(spec.kind, JoinKind::Left | JoinKind::Full) {
                let mut row = l.clone();
                row.extend(std::iter::repeat_n(Value::Null, spec.right_width));
                self.out.emit(row, ts);
            }
        }
        if matches!(spec.kind, JoinKind::Right | JoinKind::Full) {
            for (j, r) in rs.iter().enumerate() {
                if !right_matched[j] {
                    let mut row: Row = std::iter::repeat_n(Value::Null, spec.left_width).collect();
                    row.extend(r.iter().cloned());
                    self.out.emit(row, ts);
                }
            }
        }
    }

    fn push_side(&mut self, batch: &mut Batch<Row>, left: bool) {
        let marks = std::mem::take(&mut batch.marks);
        let mut marks = marks.iter().peekable();
        for (i, r) in batch.records.drain(..).enumerate() {
            while let Some(m) = marks.next_if(|m| m.index as usize <= i) {
                self.advance(m.watermark);
            }
            self.insert(r, left);
        }
        for m in marks {
            self.advance(m.watermark);
        }
        batch.timestamps.clear();
        self.out.flush();
    }
}

impl<LK: Fn(&Row) -> KeyRow, RK: Fn(&Row) -> KeyRow> Push2<Row, Row> for WindowJoinOp<LK, RK> {
    fn push_left(&mut self, batch: &mut Batch<Row>) {
        self.push_side(batch, true);
    }
    fn push_right(&mut self, batch: &mut Batch<Row>) {
        self.push_side(batch, false);
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
        self.out.flush();
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.out.processing_time(now_ms);
    }
    fn idle(&mut self) {
        self.out.idle();
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {
        self.out.flush();
        let keyed = snapshot.keyed(&self.name);
        for (end, keys) in &self.windows {
            for (key, sides) in keys {
                append(keyed.group(self.groups.key_group(key.stable_hash())), &(*end, key, sides));
            }
        }
        snapshot.operator_state(&self.name, encode(&self.watermark));
        self.out.barrier(epoch, snapshot);
    }
    fn end(&mut self) {
        self.out.end();
    }
}
