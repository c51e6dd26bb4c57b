//! Window Top-N and window deduplication (Flink SQL's `WindowRank` / `WindowDeduplicate`):
//! `ROW_NUMBER() OVER (PARTITION BY window_start, window_end, keys ORDER BY ...)` over a
//! windowed relation, filtered by `rownum <= N` (deduplication is Top-1 ordered by the time
//! attribute).
//!
//! State: per window end, per partition key, the best `N` rows so far in sort order (ties keep
//! arrival order: a later row with an equal sort key ranks after the earlier ones, as in
//! Flink; except Flink's keep-last-row deduplication, `ORDER BY rowtime DESC` Top-1, where the
//! later row wins). When the watermark reaches `window_end - 1` every partition of that window emits its
//! rows with their row number appended, at timestamp `window_end - 1`, and the window's state is
//! dropped.
//!
//! Invariants: a row whose window has fired (`window_end - 1 <= watermark` before the row) is
//! late: dropped and counted in `late_records_dropped`, as Flink drops it; at most `N` rows per
//! partition are buffered; results of a window precede the watermark that fired it.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::expr::Expr;
use super::types::{KeyRow, Row, Value};
use crate::batch::{Batch, InOrder};
use crate::checkpoint::runtime::restored_watermark;
use crate::checkpoint::snapshot::{append, encode};
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::operator::{Output, Push};
use crate::shard::BuildCtx;
use crate::shard::OperatorMetrics;
use crate::time::{Timestamp, WATERMARK_MIN};

/// What the rank operator needs to know.
#[derive(Debug)]
pub struct RankSpec {
    /// Index of `window_end` in input rows.
    pub window_end: usize,
    /// Partition keys besides the window.
    pub keys: Vec<Expr>,
    /// Sort keys, each descending or not.
    pub order: Vec<(Expr, bool)>,
    /// Rows kept per partition.
    pub limit: usize,
    /// Among equal sort keys the later row ranks first (Flink's keep-last-row deduplication:
    /// `ORDER BY time_attribute DESC` with `rownum = 1`); otherwise the earlier one does.
    pub later_wins_ties: bool,
}

impl RankSpec {
    /// The partition key of a row: window end, then the keys.
    pub fn partition(&self, row: &Row) -> KeyRow {
        let mut k: smallvec::SmallVec<[Value; 4]> = smallvec::SmallVec::new();
        k.push(row.get(self.window_end).cloned().unwrap_or(Value::Null));
        for e in &self.keys {
            k.push(e.eval(row));
        }
        KeyRow(k)
    }

    fn sort_key(&self, row: &Row) -> Vec<Value> {
        self.order.iter().map(|(e, _)| e.eval(row)).collect()
    }

    /// Compare sort keys (NULLs first when ascending, last when descending, as Flink).
    fn cmp(&self, a: &[Value], b: &[Value]) -> Ordering {
        for ((x, y), (_, desc)) in a.iter().zip(b).zip(&self.order) {
            let o = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => x.total_cmp(y),
            };
            let o = if *desc { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }
}

/// The best rows of one partition, in rank order, with their sort keys.
type Ranked = Vec<(Vec<Value>, Row)>;

/// The window rank operator.
pub struct WindowRankOp {
    spec: Arc<RankSpec>,
    /// Operator name (checkpoint sections) and key groups (partitions are snapshotted by the
    /// key group of their partition key, the key they were exchanged by).
    name: String,
    groups: KeyGroups,
    windows: BTreeMap<Timestamp, FxHashMap<KeyRow, Ranked>>,
    watermark: Timestamp,
    out: Output<Row>,
    metrics: Arc<OperatorMetrics>,
    late: u64,
}

impl WindowRankOp {
    /// The operator `name` on the shard `ctx` builds, restoring its partitions and watermark
    /// when the job restores.
    pub fn build(spec: Arc<RankSpec>, ctx: &BuildCtx<'_>, name: &str, out: Output<Row>) -> Result<Self> {
        let mut op = Self::new(spec, out, ctx.operator_metrics(name));
        op.name = name.to_string();
        op.groups = ctx.groups;
        if let Some(restore) = ctx.restore() {
            restore
                .keyed_for(name, &ctx.groups, ctx.shard)
                .for_each::<(Timestamp, KeyRow, Ranked)>(|_, (end, key, ranked)| {
                    op.windows.entry(end).or_default().insert(key, ranked);
                })?;
            if let Some(wm) = restored_watermark(restore, name, ctx.shard, ctx.shards)? {
                op.watermark = op.watermark.max(wm);
            }
        }
        Ok(op)
    }

    pub fn new(spec: Arc<RankSpec>, out: Output<Row>, metrics: Arc<OperatorMetrics>) -> Self {
        Self {
            spec,
            name: "window:rank".into(),
            groups: KeyGroups::new(crate::key::DEFAULT_MAX_KEY_GROUPS, 1),
            windows: BTreeMap::new(),
            watermark: WATERMARK_MIN,
            out,
            metrics,
            late: 0,
        }
    }

    fn insert(&mut self, row: Row) {
        let end = match row.get(self.spec.window_end) {
            Some(Value::Timestamp(t)) | Some(Value::TimestampLtz(t)) => *t,
            _ => {
                self.late += 1;
                return;
            }
        };
        if end.saturating_sub(1) <= self.watermark {
            self.late += 1;
            return;
        }
        let spec = self.spec.clone();
        let key = spec.partition(&row);
        let sk = spec.sort_key(&row);
        let ranked = self.windows.entry(end).or_default().entry(key).or_default();
        // After every row that sorts before or equal (ties keep arrival order).
        let at = if spec.later_wins_ties {
            ranked.partition_point(|(k, _)| spec.cmp(k, &sk) == Ordering::Less)
        } else {
            ranked.partition_point(|(k, _)| spec.cmp(k, &sk) != Ordering::Greater)
        };
        if at >= spec.limit {
            return;
        }
        ranked.insert(at, (sk, row));
        ranked.truncate(spec.limit);
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
            let ts = end.saturating_sub(1);
            for (_, ranked) in entry.remove() {
                for (n, (_, mut row)) in ranked.into_iter().enumerate() {
                    row.push(Value::Int(n as i64 + 1));
                    self.out.emit(row, ts);
                }
            }
        }
        self.out.mark(wm);
    }
}

impl InOrder<Row> for WindowRankOp {
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
    }
    fn on_record(&mut self, record: Row, _ts: Timestamp) {
        self.insert(record);
    }
}

impl Push<Row> for WindowRankOp {
    fn push(&mut self, batch: &mut Batch<Row>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.records.len() as u64);
        batch.drain_in_order(self);
        OperatorMetrics::add(&self.metrics.late_records_dropped, std::mem::take(&mut self.late));
        self.out.flush();
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
        for (end, partitions) in &self.windows {
            for (key, ranked) in partitions {
                append(keyed.group(self.groups.key_group(key.stable_hash())), &(*end, key, ranked));
            }
        }
        snapshot.operator_state(&self.name, encode(&self.watermark));
        self.out.barrier(epoch, snapshot);
    }
    fn end(&mut self) {
        self.out.end();
    }
}
