//! Pruning rows that cannot join a window maximum: in a window join `… ON L.window_start =
//! R.window_start AND L.window_end = R.window_end AND L.p = R.m` where `R.m` is `MAX(x)` of a
//! window aggregate grouped by the window only, over the very rows `L` windows (nexmark q7's
//! "bids at their window's highest price"), a row of `L` whose `p` is below a maximum already
//! seen in its window can never equal `R.m`: it is dropped before the exchange instead of
//! being buffered by the join until the window fires.
//!
//! Invariants (why the answer is exactly the unpruned one):
//! - Only rows not late at this operator (window end − 1 > the watermark before the row, the
//!   join's and the aggregate's own rule with no allowed lateness) raise a window's running
//!   maximum. `L` and the aggregate's input are the same deterministic scan (same rows, same
//!   order, same per-split watermarks: [`prunable`] admits only `filesystem` and `nexmark`
//!   tables), and the aggregate sees at most this watermark before the same row (its
//!   watermark is a minimum over channels), so every row that raised the running maximum is
//!   counted by the aggregate: running maximum ≤ `R.m`, and a row below it cannot match.
//! - Rows whose `p` is not an integer (NULL) pass; ties pass. The sides pruned are never
//!   preserved by the join (inner joins; the non-preserved side of LEFT/RIGHT joins).
//! - State: one entry per open window, dropped once the watermark passes the window's end.
//!   Not checkpointed: after a restore the maxima start empty, which only prunes less.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::expr::Expr;
use super::plan::{AggFunc, Connector, Plan, Rel};
use super::types::{Row, Value};
use crate::batch::{Batch, InOrder};
use crate::checkpoint::runtime::TaskSnapshot;
use crate::operator::Push;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

/// If rows of `side` (joined on `side_keys[t] = agg_keys[t]` with `agg_side`) can be pruned
/// by a window maximum: the column of `side` compared with the maximum.
pub(crate) fn prunable(side: &Rel, side_keys: &[Expr], agg_side: &Rel, agg_keys: &[Expr]) -> Option<usize> {
    let (side_exprs, tvf) = through_project(side);
    let Plan::WindowTvf {
        input: tvf_input,
        assigner,
        proctime: false,
    } = &tvf.plan
    else {
        return None;
    };
    let (agg_exprs, agg) = through_project(agg_side);
    let Plan::WindowAgg {
        input: agg_input,
        assigner: agg_assigner,
        keys,
        args,
        aggs,
        cascade: None,
        proctime: false,
        ..
    } = &agg.plan
    else {
        return None;
    };
    if assigner != agg_assigner || !keys.is_empty() || !deterministic(tvf_input) || tvf_input.rowtime != agg_input.rowtime {
        return None;
    }
    let width = tvf_input.scope.columns.len();
    for (s, a) in side_keys.iter().zip(agg_keys) {
        let (Expr::Col(i), Expr::Col(j)) = (s, a) else { continue };
        let Some(x) = column_through(side_exprs, *i).filter(|x| *x < width) else {
            continue;
        };
        let Some(m) = column_through(agg_exprs, *j) else { continue };
        // Window aggregate output: [keys (none), window_start, window_end, window_time, aggregates...].
        let Some(call) = m.checked_sub(3).and_then(|a| aggs.get(a)) else { continue };
        if call.func != AggFunc::Max || !tvf_input.scope.columns[x].ty.is_integer() {
            continue;
        }
        if !matches!(call.arg.and_then(|k| args.get(k)), Some(Expr::Col(y)) if *y == x) {
            continue;
        }
        // The same rows: the same plan over the same tables.
        if format!("{:?}", tvf_input.plan) != format!("{:?}", agg_input.plan) {
            return None;
        }
        return Some(*i);
    }
    None
}

/// A relation and the projection above it (if any).
fn through_project(rel: &Rel) -> (Option<&[Expr]>, &Rel) {
    match &rel.plan {
        Plan::Project { input, exprs } => (Some(exprs), input),
        _ => (None, rel),
    }
}

/// The input column that output column `k` of a projection copies.
fn column_through(exprs: Option<&[Expr]>, k: usize) -> Option<usize> {
    match exprs {
        None => Some(k),
        Some(exprs) => match exprs.get(k)? {
            Expr::Col(c) => Some(*c),
            _ => None,
        },
    }
}

/// Scans, filters and projections of bounded tables whose every read gives the same rows in
/// the same order with the same watermarks.
fn deterministic(rel: &Rel) -> bool {
    match &rel.plan {
        Plan::Scan { table } => matches!(table.connector, Connector::Filesystem { .. } | Connector::Nexmark { .. }),
        Plan::Filter { input, .. } | Plan::Project { input, .. } => deterministic(input),
        _ => false,
    }
}

/// The pruning operator (see the module docs).
pub(crate) struct MaxPruneOp {
    /// Column compared with the window's maximum, and the `window_end` column.
    value: usize,
    end: usize,
    watermark: Timestamp,
    /// Per open window (by end): the largest value of a row that was not late.
    maxima: FxHashMap<Timestamp, i64>,
    buf: Batch<Row>,
    down: Box<dyn Push<Row>>,
    /// Rows in and rows kept.
    metrics: Arc<OperatorMetrics>,
}

impl MaxPruneOp {
    pub(crate) fn new(value: usize, end: usize, metrics: Arc<OperatorMetrics>, down: Box<dyn Push<Row>>) -> Self {
        Self {
            value,
            end,
            watermark: WATERMARK_MIN,
            maxima: FxHashMap::default(),
            buf: Batch::default(),
            down,
            metrics,
        }
    }

    fn advance(&mut self, wm: Timestamp) {
        if wm > self.watermark {
            self.watermark = wm;
            if !self.maxima.is_empty() {
                self.maxima.retain(|end, _| end.saturating_sub(1) > wm);
            }
        }
    }
}

impl InOrder<Row> for MaxPruneOp {
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
        self.buf.mark(wm);
    }

    fn on_record(&mut self, record: Row, ts: Timestamp) {
        if let (Some(Value::Int(v)), Some(Value::Timestamp(end) | Value::TimestampLtz(end))) = (record.get(self.value), record.get(self.end)) {
            let (v, end) = (*v, *end);
            let on_time = end.saturating_sub(1) > self.watermark;
            match self.maxima.get_mut(&end) {
                Some(max) if v < *max => return,
                Some(max) => {
                    if on_time {
                        *max = v;
                    }
                }
                None => {
                    if on_time {
                        self.maxima.insert(end, v);
                    }
                }
            }
        }
        self.buf.push(record, ts);
    }
}

impl Push<Row> for MaxPruneOp {
    fn push(&mut self, batch: &mut Batch<Row>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        batch.drain_in_order(self);
        OperatorMetrics::add(&self.metrics.records_out, self.buf.len() as u64);
        if !self.buf.is_void() {
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
        self.down.watermark(wm)
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
    fn idle(&mut self) {
        self.down.idle()
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.down.barrier(epoch, snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Mark;

    /// Collects what the pruning lets through.
    struct Sink(std::rc::Rc<std::cell::RefCell<Vec<i64>>>);
    impl Push<Row> for Sink {
        fn push(&mut self, batch: &mut Batch<Row>) {
            let mut got = self.0.borrow_mut();
            got.extend(batch.records.iter().map(|r| match r[0] {
                Value::Int(v) => v,
                _ => -1,
            }));
            batch.clear();
        }
        fn watermark(&mut self, _wm: Timestamp) {}
        fn processing_time(&mut self, _now_ms: Timestamp) {}
        fn end(&mut self) {}
        fn barrier(&mut self, _epoch: u64, _snapshot: &mut TaskSnapshot) {}
    }

    fn row(v: Option<i64>, end: Timestamp) -> Row {
        [v.map(Value::Int).unwrap_or(Value::Null), Value::Timestamp(end)].into_iter().collect()
    }

    /// Rows below the running maximum of on-time rows are dropped; a late row never raises
    /// the maximum; ties and NULLs pass; a window's maximum is forgotten once it closed.
    #[test]
    fn only_on_time_rows_raise_the_maximum() {
        let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let metrics = Arc::new(OperatorMetrics::default());
        let mut op = MaxPruneOp::new(0, 1, metrics, Box::new(Sink(got.clone())));
        let mut batch = Batch::default();
        // Window ending at 1000 and one ending at 2000.
        for (v, end) in [
            (Some(5), 1000),
            (Some(3), 1000),
            (Some(5), 1000),
            (None, 1000),
            (Some(9), 2000),
            (Some(7), 2000),
        ] {
            batch.push(row(v, end), 0);
        }
        // Watermark 999 before the 7th row: window 1000 is closed (late) from there on.
        for (v, end) in [(Some(50), 1000), (Some(6), 1000), (Some(8), 2000), (Some(10), 2000)] {
            batch.push(row(v, end), 0);
        }
        batch.marks.push(Mark { index: 6, watermark: 999 });
        op.push(&mut batch);
        // 3 < 5 dropped; 7 < 9 dropped; once window 1000 closed its maximum is gone and its
        // late rows (50, then 6) raise nothing and pass; 8 < 9 dropped; 10 passes.
        assert_eq!(*got.borrow(), vec![5, 5, -1, 9, 50, 6, 10]);
        assert_eq!(op.maxima.len(), 1, "the closed window's maximum is dropped");
        assert_eq!(op.maxima.get(&2000), Some(&10));
    }
}
