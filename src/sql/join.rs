//! The window join (Flink SQL's window join): both inputs carry `window_start`/`window_end`;
//! rows of the same window and equal join keys are joined when the window fires.
//!
//! State: per window end, the buffered left and right rows in arrival order (no per-key
//! structure while the window fills). When the watermark reaches `window_end - 1`, the window is
//! hash-joined — the smaller side indexed by join key, the other side probing it — (inner, or
//! with the unmatched rows padded with NULLs for outer joins), the results are emitted with
//! timestamp `window_end - 1`, and the window's state is dropped. Checkpoints hold the rows by
//! window and join key (grouped when the snapshot is taken).
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
use smallvec::SmallVec;

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

/// One window's buffered rows.
#[derive(Default)]
struct WindowRows {
    left: Vec<Row>,
    right: Vec<Row>,
}

/// The window-join operator for rows.
pub struct WindowJoinOp<LK, RK> {
    spec: Arc<JoinSpec>,
    /// Operator name (checkpoint sections) and key groups (buffered rows are snapshotted by
    /// the key group of their join key, the key both inputs were exchanged by).
    name: String,
    groups: KeyGroups,
    left_key: LK,
    right_key: RK,
    windows: BTreeMap<Timestamp, WindowRows>,
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
                .for_each::<(Timestamp, KeyRow, Sides)>(|_, (end, _key, (left, right))| {
                    let w = op.windows.entry(end).or_default();
                    w.left.extend(left);
                    w.right.extend(right);
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
        let w = self.windows.entry(end).or_default();
        if left {
            w.left.push(row);
        } else {
            w.right.push(row);
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
            let rows = entry.remove();
            self.join_window(&rows, end.saturating_sub(1));
        }
        self.out.mark(wm);
    }

    /// Join one window's rows: index the smaller side by key, probe with the other; rows of
    /// either side may match several of the other (equal keys), each pair passing the residual
    /// condition is one result row.
    fn join_window(&mut self, rows: &WindowRows, ts: Timestamp) {
        let spec = self.spec.clone();
        let (ls, rs) = (&rows.left, &rows.right);
        let mut left_matched = vec![false; ls.len()];
        let mut right_matched = vec![false; rs.len()];
        let index_left = ls.len() < rs.len();
        let (built, probing) = if index_left { (ls, rs) } else { (rs, ls) };
        let mut index: FxHashMap<KeyRow, SmallVec<[u32; 1]>> = FxHashMap::with_capacity_and_hasher(built.len(), Default::default());
        for (i, r) in built.iter().enumerate() {
            let key = if index_left { (self.left_key)(r) } else { (self.right_key)(r) };
            index.entry(key).or_default().push(i as u32);
        }
        for (p, row) in probing.iter().enumerate() {
            let key = if index_left { (self.right_key)(row) } else { (self.left_key)(row) };
            let Some(hits) = index.get(&key) else { continue };
            for &b in hits {
                let (li, ri) = if index_left { (b as usize, p) } else { (p, b as usize) };
                let mut out = ls[li].clone();
                out.extend(rs[ri].iter().cloned());
                if spec.residual.as_ref().is_none_or(|c| c.test(&out)) {
                    left_matched[li] = true;
                    right_matched[ri] = true;
                    self.out.emit(out, ts);
                }
            }
        }
        if matches!(spec.kind, JoinKind::Left | JoinKind::Full) {
            for (l, _) in ls.iter().zip(&left_matched).filter(|(_, m)| !**m) {
                let mut row = l.clone();
                row.extend(std::iter::repeat_n(Value::Null, spec.right_width));
                self.out.emit(row, ts);
            }
        }
        if matches!(spec.kind, JoinKind::Right | JoinKind::Full) {
            for (r, _) in rs.iter().zip(&right_matched).filter(|(_, m)| !**m) {
                let mut row: Row = std::iter::repeat_n(Value::Null, spec.left_width).collect();
                row.extend(r.iter().cloned());
                self.out.emit(row, ts);
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
        for (end, rows) in &self.windows {
            // Entries per window and join key: `(end, key, (left rows, right rows))`.
            let mut by_key: FxHashMap<KeyRow, (Vec<&Row>, Vec<&Row>)> = FxHashMap::default();
            for r in &rows.left {
                by_key.entry((self.left_key)(r)).or_default().0.push(r);
            }
            for r in &rows.right {
                by_key.entry((self.right_key)(r)).or_default().1.push(r);
            }
            for (key, sides) in &by_key {
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
