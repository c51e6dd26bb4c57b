//! OVER aggregations on event time (Flink SQL's `OverAggregate`):
//! `agg(x) OVER (PARTITION BY k ORDER BY rowtime ROWS BETWEEN n PRECEDING AND CURRENT ROW)`
//! and `... RANGE BETWEEN INTERVAL '..' .. PRECEDING AND CURRENT ROW`, inline or through a
//! `WINDOW w AS (...)` clause, with COUNT(*), COUNT, SUM, MIN, MAX and AVG. Each input row comes
//! out once, with the aggregates over its frame appended (then the select list is projected).
//!
//! Semantics (Flink 2.3's `RowTimeRowsBoundedPrecedingFunction` /
//! `RowTimeRangeBoundedPrecedingFunction`): rows are buffered per partition key until the
//! watermark passes their timestamp, then emitted in timestamp order, at their timestamp.
//! - ROWS: rows of equal timestamp are emitted one by one in arrival order; each row's frame is
//!   itself and the `n` rows emitted before it in its partition.
//! - RANGE: rows of equal timestamp share one frame — every row of the partition with a
//!   timestamp in `[t - interval, t]`, all peers included — and one result.
//! - Lateness, as Flink judges it: a row is dropped (and counted in `late_records_dropped`)
//!   when its timestamp is not after the time of its partition's newest fired timer (`0`
//!   before the first; so rows at or before the epoch are dropped, as in Flink) — not when it
//!   is behind the watermark: such a row is kept and emitted at the next watermark advance,
//!   exactly as Flink's timer for it fires then.
//! - RANGE frames also keep Flink's cleanup timer: 1.5 intervals (+1 ms) after a partition's
//!   newest row, moved only when a row comes more than one interval after it. When it fires
//!   with no newer row the partition is dropped (frame, accumulators and lateness bar); when
//!   newer rows moved it, its firing still raises the lateness bar to its time.
//! - A WHERE directly over the table runs after the watermark generator (not inside the
//!   reader, as other queries' filters do): Flink assigns watermarks before the filter, and
//!   rows it drops still decide lateness here.
//!
//! State per partition key: the pending rows by timestamp, the frame (the aggregate arguments
//! of the rows in it: at most `n + 1` for ROWS, the rows within the interval of the newest
//! emission for RANGE) and its accumulators. Accumulators retract the frame's oldest row when it
//! leaves: counts and sums subtract (in the order Flink adds and subtracts, so DOUBLE sums round
//! alike); MIN and MAX keep a monotonic queue of candidates (a frame only ever loses its oldest
//! row, so the front of the queue is the extreme; RANGE frames retract in time order where
//! Flink walks its state map, so a DOUBLE SUM/AVG may differ in the last bits). Partitions are
//! checkpointed by the key group of their key (the key they are exchanged by), accumulators
//! and timers included, and restore on any number of shards. A ROWS partition's state is kept
//! after its rows stop, as Flink keeps it without a state TTL: memory grows with the number of
//! keys, not with time (RANGE partitions go with their cleanup timer).
//!
//! Planning errors (with line, column and the supported form): OVER with GROUP BY, windows that
//! differ within one select list, no ORDER BY or one that is not the ascending event-time
//! attribute (processing-time OVER windows are not supported), unbounded or FOLLOWING frames,
//! RANGE offsets that are not intervals, DISTINCT and functions other than COUNT, SUM, MIN, MAX,
//! AVG.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use super::ast::{self, ExprKind, FrameBound, SelectItem};
use super::expr::{bind, bind_with, AggregateHook, Column, Expr, Scope, Typed};
use super::plan::{output_name, projection, AggCall, AggFunc, Plan, Rel};
use super::types::{KeyRow, Row, SqlType, Value};
use super::SqlError;
use crate::api::{DataStream, StreamEnv};
use crate::batch::{Batch, InOrder};
use crate::checkpoint::runtime::TaskSnapshot;
use crate::checkpoint::snapshot::append;
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::operator::{Output, Push};
use crate::shard::{BuildCtx, OperatorMetrics};
use crate::time::Timestamp;

/// The frame of an OVER window (always ending at the current row).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    /// `ROWS BETWEEN n PRECEDING AND CURRENT ROW`.
    Rows(u64),
    /// `RANGE BETWEEN INTERVAL 'ms' PRECEDING AND CURRENT ROW`.
    Range(i64),
}

/// A planned OVER aggregation: output rows are the input's columns, then one column per
/// aggregate.
#[derive(Clone, Debug)]
pub struct OverNode {
    pub input: Rel,
    /// PARTITION BY expressions over the input.
    pub keys: Vec<Expr>,
    pub key_texts: Vec<String>,
    pub frame: Frame,
    /// Argument expressions of the aggregates (over the input).
    pub args: Vec<Expr>,
    pub aggs: Vec<AggCall>,
    /// The window as written, for plans.
    pub text: String,
}

/// Does the select list hold an OVER aggregate?
pub fn in_select(select: &[SelectItem]) -> bool {
    !overs(select).is_empty()
}

/// The OVER aggregates of a select list (not looking inside them).
fn overs(select: &[SelectItem]) -> Vec<&ast::Expr> {
    let mut out = Vec::new();
    for s in select {
        if let SelectItem::Expr { expr, .. } = s {
            collect_overs(expr, &mut out);
        }
    }
    out
}

fn collect_overs<'a>(e: &'a ast::Expr, out: &mut Vec<&'a ast::Expr>) {
    let mut go = |x: &'a ast::Expr| collect_overs(x, out);
    match &e.kind {
        ExprKind::Over { .. } => out.push(e),
        ExprKind::Neg(a) | ExprKind::Not(a) | ExprKind::Cast(a, _) | ExprKind::IsNull(a, _) => go(a),
        ExprKind::Binary(_, a, b) => {
            go(a);
            go(b);
        }
        ExprKind::Function { args, .. } => args.iter().for_each(go),
        ExprKind::Case { operand, whens, else_ } => {
            operand.iter().for_each(|o| go(o));
            for (a, b) in whens {
                go(a);
                go(b);
            }
            else_.iter().for_each(|x| go(x));
        }
        ExprKind::Between { expr, low, high, .. } => {
            go(expr);
            go(low);
            go(high);
        }
        ExprKind::InList { expr, list, .. } => {
            go(expr);
            list.iter().for_each(go);
        }
        ExprKind::Like { expr, pattern, .. } => {
            go(expr);
            go(pattern);
        }
        ExprKind::RowNumber { .. }
        | ExprKind::Column(_)
        | ExprKind::Number(_)
        | ExprKind::Str(_)
        | ExprKind::Bool(_)
        | ExprKind::Null
        | ExprKind::Interval(_) => {}
    }
}

/// An aggregate query (GROUP BY, HAVING or plain aggregates) must not also hold OVER
/// aggregates.
pub fn not_with_group_by(select: &[SelectItem]) -> std::result::Result<(), SqlError> {
    match overs(select).first() {
        Some(o) => Err(
            SqlError::at(o.pos, "OVER aggregates cannot be mixed with GROUP BY or plain aggregates in one query")
                .hint("compute the OVER aggregate in a subquery and group its result in an outer query (or the other way round)"),
        ),
        None => Ok(()),
    }
}

const FRAME_HINT: &str = "write ROWS BETWEEN n PRECEDING AND CURRENT ROW or RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW";

/// Plan `SELECT ..., agg(x) OVER w, ... FROM rel`: the OVER aggregation node and the
/// projection of the select list over it.
pub fn plan(rel: Rel, select: &[SelectItem]) -> std::result::Result<Rel, SqlError> {
    let found = overs(select);
    let Some(first) = found.first() else {
        unreachable!("plan() is called for select lists with an OVER aggregate")
    };
    let ExprKind::Over { window, .. } = &first.kind else {
        unreachable!("overs() returns OVER expressions")
    };
    let text = window.display();
    for o in &found[1..] {
        if let ExprKind::Over { window: w, .. } = &o.kind {
            if !w.display().eq_ignore_ascii_case(&text) {
                return Err(SqlError::at(
                    w.pos,
                    format!("all OVER aggregates of a query must use the same window; this one differs from {text}"),
                )
                .hint("use one window for all (WINDOW w AS (...) ... OVER w), or compute the others in another query"));
            }
        }
    }
    check_order(&rel, window)?;
    let frame = frame(window)?;
    let mut keys = Vec::new();
    let mut key_texts = Vec::new();
    for p in &window.partition_by {
        let t = bind(p, &rel.scope)?;
        if t.ty == SqlType::Interval {
            return Err(SqlError::at(p.pos, "cannot partition by an interval"));
        }
        keys.push(t.expr);
        key_texts.push(p.display());
    }
    let n_in = rel.scope.columns.len();
    let mut hook = OverHook {
        scope: &rel.scope,
        n_in,
        args: Vec::new(),
        aggs: Vec::new(),
    };
    let mut items = Vec::new();
    for s in select {
        match s {
            SelectItem::Wildcard { qualifier, pos } => {
                let before = items.len();
                for (i, c) in rel.scope.columns.iter().enumerate() {
                    if qualifier
                        .as_ref()
                        .is_none_or(|q| c.qualifier.as_deref().is_some_and(|cq| cq.eq_ignore_ascii_case(q)))
                    {
                        items.push((Typed { expr: Expr::Col(i), ty: c.ty }, c.name.clone()));
                    }
                }
                if items.len() == before {
                    return Err(SqlError::at(*pos, format!("`{}.*` matches no table", qualifier.clone().unwrap_or_default())));
                }
            }
            SelectItem::Expr { expr, alias } => {
                let t = bind_with(expr, &rel.scope, &mut hook)?;
                if t.ty == SqlType::Interval {
                    return Err(SqlError::at(expr.pos, "selecting an interval is not supported"));
                }
                items.push((t, output_name(expr, alias.as_deref(), items.len())));
            }
        }
    }
    let OverHook { args, aggs, .. } = hook;
    let mut scope = rel.scope.clone();
    for (k, a) in aggs.iter().enumerate() {
        scope.columns.push(Column {
            qualifier: None,
            name: format!("$over{k}"),
            ty: a.out_type,
        });
    }
    let (rowtime, window_cols) = (rel.rowtime, rel.window);
    let over = Rel {
        plan: Plan::Over(Box::new(OverNode {
            input: rel,
            keys,
            key_texts,
            frame,
            args: args.into_iter().map(|a| a.expr).collect(),
            aggs,
            text,
        })),
        scope,
        rowtime,
        window: window_cols,
    };
    Ok(projection(over, items))
}

/// The window must be ordered by the input's event-time attribute, ascending.
fn check_order(rel: &Rel, window: &ast::OverWindow) -> std::result::Result<(), SqlError> {
    let rowtime_hint = || match rel.rowtime {
        Some(rt) => format!("ORDER BY {} (the input's time attribute)", rel.scope.columns[rt].name),
        None => "the input has no event-time attribute: declare WATERMARK FOR <column> AS <column> - INTERVAL ... in its CREATE TABLE".into(),
    };
    let (e, desc) = match window.order_by.as_slice() {
        [] => {
            return Err(SqlError::at(window.pos, "an OVER window must ORDER BY the time attribute").hint(rowtime_hint()));
        }
        [(e, desc)] => (e, *desc),
        [_, (e, _), ..] => {
            return Err(SqlError::at(e.pos, "an OVER window is ordered by the time attribute alone").hint(rowtime_hint()));
        }
    };
    let t = bind(e, &rel.scope)?;
    match t.expr {
        Expr::Col(i) if Some(i) == rel.rowtime => {
            if desc {
                return Err(SqlError::at(e.pos, "an OVER window must be ordered by ascending time").hint("drop DESC"));
            }
            Ok(())
        }
        Expr::Col(i) if super::proctime::is_proctime(rel, i) => {
            Err(SqlError::at(e.pos, "OVER windows on processing time are not supported").hint(format!("order by the event-time attribute; {}", rowtime_hint())))
        }
        _ => Err(SqlError::at(
            e.pos,
            format!("OVER windows must be ordered by the event-time attribute, not `{}`", e.display()),
        )
        .hint(rowtime_hint())),
    }
}

/// The frame of the window, or an error naming the unsupported form.
fn frame(window: &ast::OverWindow) -> std::result::Result<Frame, SqlError> {
    let Some(f) = &window.frame else {
        return Err(SqlError::at(
            window.pos,
            "an OVER window without a frame is unbounded (RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), which weir does not support",
        )
        .hint(FRAME_HINT));
    };
    match &f.end {
        FrameBound::CurrentRow(_) => {}
        other => {
            return Err(SqlError::at(other.pos(), format!("a frame ending at {} is not supported", other.display()))
                .hint("frames end at CURRENT ROW: rows are emitted when the watermark passes them"))
        }
    }
    match &f.start {
        FrameBound::UnboundedPreceding(p) => {
            Err(SqlError::at(*p, "UNBOUNDED PRECEDING frames are not supported (their state per key grows without bound)").hint(FRAME_HINT))
        }
        FrameBound::Following(_, p) => Err(SqlError::at(*p, "a frame starting after the current row is not supported").hint(FRAME_HINT)),
        FrameBound::CurrentRow(_) => Ok(if f.rows { Frame::Rows(0) } else { Frame::Range(0) }),
        FrameBound::Preceding(e) => match (&e.kind, f.rows) {
            (ExprKind::Number(n), true) => n
                .parse::<u64>()
                .map(Frame::Rows)
                .map_err(|_| SqlError::at(e.pos, format!("ROWS {n} PRECEDING: the row count must be a whole number of rows"))),
            (ExprKind::Interval(ms), false) if *ms >= 0 => Ok(Frame::Range(*ms)),
            (_, true) => Err(SqlError::at(e.pos, format!("ROWS needs a row count, found `{}`", e.display())).hint("ROWS BETWEEN 10 PRECEDING AND CURRENT ROW")),
            (_, false) => Err(SqlError::at(e.pos, format!("RANGE over time needs an interval, found `{}`", e.display()))
                .hint("RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW")),
        },
    }
}

/// Binds `agg(...) OVER w` to the aggregate's output column.
struct OverHook<'a> {
    scope: &'a Scope,
    n_in: usize,
    args: Vec<Typed>,
    aggs: Vec<AggCall>,
}

impl AggregateHook for OverHook<'_> {
    fn lookup(&mut self, e: &ast::Expr) -> std::result::Result<Option<Typed>, SqlError> {
        let ExprKind::Over { call, .. } = &e.kind else { return Ok(None) };
        let ExprKind::Function { name, args, distinct, star } = &call.kind else {
            return Err(SqlError::at(call.pos, "expected an aggregate call before OVER"));
        };
        if !matches!(name.as_str(), "COUNT" | "SUM" | "MIN" | "MAX" | "AVG") {
            return Err(SqlError::at(call.pos, format!("{name}(...) OVER is not supported"))
                .hint("OVER windows compute COUNT, SUM, MIN, MAX and AVG; ROW_NUMBER() OVER (PARTITION BY window_start, window_end ...) is window Top-N"));
        }
        let text = e.display();
        if *distinct {
            return Err(SqlError::at(call.pos, format!("{name}(DISTINCT ...) OVER is not supported")).hint(format!("{name}(...) OVER")));
        }
        let (func, arg) = if *star {
            if name != "COUNT" {
                return Err(SqlError::at(call.pos, format!("{name}(*) is not valid")).hint("only COUNT(*) takes *"));
            }
            (AggFunc::CountStar, None)
        } else {
            if args.len() != 1 {
                return Err(SqlError::at(call.pos, format!("{name} takes exactly one argument")));
            }
            let t = bind(&args[0], self.scope)?;
            let func = match name.as_str() {
                "COUNT" => AggFunc::Count,
                "SUM" => AggFunc::Sum,
                "MIN" => AggFunc::Min,
                "MAX" => AggFunc::Max,
                _ => AggFunc::Avg,
            };
            (func, Some(t))
        };
        let arg_type = arg.as_ref().map(|a| a.ty).unwrap_or(SqlType::BigInt);
        let out_type = match func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::CountDistinct => SqlType::BigInt,
            AggFunc::Sum => match arg_type {
                SqlType::Decimal(_, s) => SqlType::Decimal(38, s),
                t if t.is_numeric() => t,
                t => return Err(SqlError::at(e.pos, format!("type error in `{text}`: SUM of {t}")).hint("SUM takes a number")),
            },
            AggFunc::Avg => match arg_type {
                SqlType::Decimal(_, s) => SqlType::Decimal(38, s.max(6)),
                t if t.is_numeric() => t,
                t => return Err(SqlError::at(e.pos, format!("type error in `{text}`: AVG of {t}")).hint("AVG takes a number")),
            },
            AggFunc::Min | AggFunc::Max => {
                if matches!(arg_type, SqlType::Interval | SqlType::Null) {
                    return Err(SqlError::at(e.pos, format!("type error in `{text}`: {name} of {arg_type}")));
                }
                arg_type
            }
        };
        let arg_index = arg.map(|a| {
            self.args.push(a);
            self.args.len() - 1
        });
        self.aggs.push(AggCall {
            func,
            arg: arg_index,
            arg_type,
            out_type,
            text,
        });
        Ok(Some(Typed {
            expr: Expr::Col(self.n_in + self.aggs.len() - 1),
            ty: out_type,
        }))
    }
    fn column_allowed(&self) -> bool {
        true
    }
}

/// The stream of an OVER aggregation: the input, exchanged by the partition key, into
/// [`OverOp`].
pub fn build(env: &StreamEnv, node: &OverNode, needed: &[bool]) -> std::result::Result<DataStream<Row>, SqlError> {
    let n_in = node.input.scope.columns.len();
    let mut need: Vec<bool> = (0..n_in).map(|k| needed.get(k).copied().unwrap_or(true)).collect();
    for e in node.keys.iter().chain(node.args.iter()) {
        super::exec::mark(e, &mut need);
    }
    if let Some(rt) = node.input.rowtime {
        need[rt] = true;
    }
    super::exec::no_scale_out(env, "OVER aggregations")?;
    let spec = Arc::new(OverSpec {
        keys: node.keys.clone(),
        args: node.args.clone(),
        aggs: node.aggs.clone(),
        frame: node.frame,
    });
    let key_spec = spec.clone();
    let input = match &node.input.plan {
        // Flink assigns a table's watermarks before the query's WHERE: rows the filter drops
        // still move the watermark, which decides what is late here. So the filter runs after
        // the scan's watermark generator rather than inside the reader.
        Plan::Filter { input: scan, predicate, .. } if matches!(scan.plan, Plan::Scan { .. }) && scan.rowtime.is_some() => {
            super::exec::mark(predicate, &mut need);
            let p = Arc::new(predicate.clone());
            super::exec::build(env, scan, &need)?.filter(move |r: &Row| p.test(r))
        }
        _ => super::exec::build(env, &node.input, &need)?,
    };
    let (stream, _) = input.key_by(move |r: &Row| key_spec.partition(r)).exchanged();
    Ok(stream.then("over", move |ctx, name, down| {
        let out = Output::new(down, ctx.config.batch_size);
        Ok(Box::new(OverOp::build(spec.clone(), ctx, name, out)?) as Box<dyn Push<Row>>)
    }))
}

/// Describe the node for `explain`.
pub fn describe(node: &OverNode, pad: &str, depth: usize, out: &mut String, edges: &mut Vec<String>) {
    let a: Vec<&str> = node.aggs.iter().map(|a| a.text.as_str()).collect();
    let frame = match node.frame {
        Frame::Rows(n) => format!("the row and the {n} before it"),
        Frame::Range(ms) => format!("rows of the last {ms} ms, peers included"),
    };
    let _ = writeln!(
        out,
        "{pad}over_aggregate {} aggregates [{}] ({frame}; rows wait for the watermark, emitted in time order; late rows dropped, as Flink)",
        node.text,
        a.join(", ")
    );
    let _ = writeln!(out, "{pad}  <- hash exchange by [{}]", node.key_texts.join(", "));
    edges.push(format!("hash by [{}] into over_aggregate", node.key_texts.join(", ")));
    super::exec::describe(&node.input, depth + 2, out, edges);
}

/// What the OVER operator computes.
#[derive(Debug)]
pub struct OverSpec {
    pub keys: Vec<Expr>,
    /// Aggregate argument expressions; `aggs[i].arg` indexes them.
    pub args: Vec<Expr>,
    pub aggs: Vec<AggCall>,
    pub frame: Frame,
}

impl OverSpec {
    /// The partition key of a row.
    pub fn partition(&self, row: &Row) -> KeyRow {
        KeyRow(self.keys.iter().map(|e| e.eval(row)).collect())
    }
}

/// Aggregate arguments of one row of a frame.
type Args = SmallVec<[Value; 2]>;

/// One aggregate's accumulator over a sliding frame (adds and retracts).
#[derive(Clone, Debug, Serialize, Deserialize)]
enum SlideAcc {
    /// COUNT(*) and COUNT(x): rows (non-NULL arguments).
    Count(i64),
    /// Sum (wrapping at the output type's width) and non-NULL count.
    SumInt(i64, i64),
    SumDouble(f64, i64),
    /// Unscaled sum at the argument's scale, and count.
    SumDecimal(i128, i64),
    AvgInt(i128, i64),
    AvgDouble(f64, i64),
    AvgDecimal(i128, i64),
    /// MIN / MAX: candidates `(sequence number, value)` in frame order, the extreme first; a
    /// later row with a value at least as good removes earlier ones.
    Extreme(VecDeque<(u64, Value)>),
}

fn wrap_bits(v: i64, ty: SqlType) -> i64 {
    match ty.int_bits() {
        8 => v as i8 as i64,
        16 => v as i16 as i64,
        32 => v as i32 as i64,
        _ => v,
    }
}

impl SlideAcc {
    fn new(call: &AggCall) -> Self {
        let decimal = matches!(call.arg_type, SqlType::Decimal(..));
        let double = matches!(call.arg_type, SqlType::Double | SqlType::Float);
        match call.func {
            AggFunc::CountStar | AggFunc::Count | AggFunc::CountDistinct => SlideAcc::Count(0),
            AggFunc::Sum if decimal => SlideAcc::SumDecimal(0, 0),
            AggFunc::Sum if double => SlideAcc::SumDouble(0.0, 0),
            AggFunc::Sum => SlideAcc::SumInt(0, 0),
            AggFunc::Avg if decimal => SlideAcc::AvgDecimal(0, 0),
            AggFunc::Avg if double => SlideAcc::AvgDouble(0.0, 0),
            AggFunc::Avg => SlideAcc::AvgInt(0, 0),
            AggFunc::Min | AggFunc::Max => SlideAcc::Extreme(VecDeque::new()),
        }
    }

    /// Add the row `seq` whose argument is `v` (`None`: COUNT(*)).
    fn add(&mut self, call: &AggCall, seq: u64, v: Option<&Value>) {
        let Some(v) = v else {
            if let SlideAcc::Count(n) = self {
                *n += 1;
            }
            return;
        };
        match (self, v) {
            (_, Value::Null) => {}
            (SlideAcc::Count(n), _) => *n += 1,
            (SlideAcc::SumInt(s, n), Value::Int(x)) => {
                *s = wrap_bits(s.wrapping_add(*x), call.out_type);
                *n += 1;
            }
            (SlideAcc::SumDouble(s, n) | SlideAcc::AvgDouble(s, n), Value::Double(x)) => {
                *s += x;
                *n += 1;
            }
            (SlideAcc::SumDecimal(s, n) | SlideAcc::AvgDecimal(s, n), Value::Decimal(x, _)) => {
                *s = s.saturating_add(*x as i128);
                *n += 1;
            }
            (SlideAcc::AvgInt(s, n), Value::Int(x)) => {
                *s += *x as i128;
                *n += 1;
            }
            (SlideAcc::Extreme(q), v) => {
                let max = call.func == AggFunc::Max;
                while q.back().is_some_and(|(_, b)| {
                    let o = v.total_cmp(b);
                    if max {
                        o.is_ge()
                    } else {
                        o.is_le()
                    }
                }) {
                    q.pop_back();
                }
                q.push_back((seq, v.clone()));
            }
            _ => {}
        }
    }

    /// Retract the row `seq` (the oldest of the frame) whose argument is `v`.
    fn retract(&mut self, call: &AggCall, seq: u64, v: Option<&Value>) {
        let Some(v) = v else {
            if let SlideAcc::Count(n) = self {
                *n -= 1;
            }
            return;
        };
        match (self, v) {
            (_, Value::Null) => {}
            (SlideAcc::Count(n), _) => *n -= 1,
            (SlideAcc::SumInt(s, n), Value::Int(x)) => {
                *s = wrap_bits(s.wrapping_sub(*x), call.out_type);
                *n -= 1;
            }
            (SlideAcc::SumDouble(s, n) | SlideAcc::AvgDouble(s, n), Value::Double(x)) => {
                *s -= x;
                *n -= 1;
            }
            (SlideAcc::SumDecimal(s, n) | SlideAcc::AvgDecimal(s, n), Value::Decimal(x, _)) => {
                *s = s.saturating_sub(*x as i128);
                *n -= 1;
            }
            (SlideAcc::AvgInt(s, n), Value::Int(x)) => {
                *s -= *x as i128;
                *n -= 1;
            }
            (SlideAcc::Extreme(q), _) if q.front().is_some_and(|(s, _)| *s == seq) => {
                q.pop_front();
            }
            _ => {}
        }
    }

    fn result(&self, call: &AggCall) -> Value {
        let scale = match call.arg_type {
            SqlType::Decimal(_, s) => s,
            _ => 0,
        };
        match self {
            SlideAcc::Count(n) => Value::Int(*n),
            _ if self.count() == 0 => Value::Null,
            SlideAcc::SumInt(s, _) => Value::Int(*s),
            SlideAcc::SumDouble(s, _) => Value::Double(*s),
            SlideAcc::SumDecimal(s, _) => i64::try_from(*s).map(|v| Value::Decimal(v, scale)).unwrap_or(Value::Null),
            SlideAcc::AvgInt(s, n) => Value::Int(wrap_bits((*s / *n as i128) as i64, call.out_type)),
            SlideAcc::AvgDouble(s, n) => Value::Double(*s / *n as f64),
            SlideAcc::AvgDecimal(s, n) => {
                let SqlType::Decimal(_, out_scale) = call.out_type else { return Value::Null };
                // sum at scale `scale` / n, at scale `out_scale`, rounded half up.
                let num = s.saturating_mul(10i128.pow(out_scale.saturating_sub(scale) as u32));
                let den = *n as i128;
                let q = num / den;
                let r = num % den;
                let q = if r.abs() * 2 >= den { q + num.signum() } else { q };
                i64::try_from(q).map(|v| Value::Decimal(v, out_scale)).unwrap_or(Value::Null)
            }
            SlideAcc::Extreme(q) => q.front().map(|(_, v)| v.clone()).unwrap_or(Value::Null),
        }
    }

    /// Rows the accumulator holds (non-NULL arguments); `-1` for MIN/MAX (never "empty" here).
    fn count(&self) -> i64 {
        match self {
            SlideAcc::Count(n)
            | SlideAcc::SumInt(_, n)
            | SlideAcc::SumDouble(_, n)
            | SlideAcc::SumDecimal(_, n)
            | SlideAcc::AvgInt(_, n)
            | SlideAcc::AvgDouble(_, n)
            | SlideAcc::AvgDecimal(_, n) => *n,
            SlideAcc::Extreme(_) => -1,
        }
    }
}

/// One row of a frame: its sequence number, timestamp and aggregate arguments.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct FrameRow {
    seq: u64,
    ts: Timestamp,
    args: Args,
}

/// The state of one partition key.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Partition {
    /// The newest timer time passed (Flink's `lastTriggeringTs`, 0 before the first): rows at
    /// or before it are late.
    last_emitted: Timestamp,
    /// Timer times registered for this key (each fires once, as Flink's timers of a key do):
    /// the timestamps of pending rows and, for RANGE frames, the cleanup time.
    timers: std::collections::BTreeSet<Timestamp>,
    /// RANGE frames: when the partition's state is dropped if no newer row came (Flink's
    /// `cleanupTsState`).
    cleanup_at: Option<Timestamp>,
    /// Rows waiting for the watermark, by timestamp, in arrival order.
    pending: BTreeMap<Timestamp, Vec<Row>>,
    /// The rows of the current frame, oldest first.
    frame: VecDeque<FrameRow>,
    accs: Vec<SlideAcc>,
    next_seq: u64,
}

impl Partition {
    fn new(spec: &OverSpec) -> Self {
        Self {
            last_emitted: 0,
            timers: std::collections::BTreeSet::new(),
            cleanup_at: None,
            pending: BTreeMap::new(),
            frame: VecDeque::new(),
            accs: spec.aggs.iter().map(SlideAcc::new).collect(),
            next_seq: 0,
        }
    }

    fn add(&mut self, spec: &OverSpec, ts: Timestamp, row: &Row) {
        let args: Args = spec.args.iter().map(|e| e.eval(row)).collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        for (call, acc) in spec.aggs.iter().zip(self.accs.iter_mut()) {
            acc.add(call, seq, call.arg.map(|i| &args[i]));
        }
        self.frame.push_back(FrameRow { seq, ts, args });
    }

    fn retract_oldest(&mut self, spec: &OverSpec) {
        let Some(old) = self.frame.pop_front() else { return };
        for (call, acc) in spec.aggs.iter().zip(self.accs.iter_mut()) {
            acc.retract(call, old.seq, call.arg.map(|i| &old.args[i]));
        }
    }

    fn results(&self, spec: &OverSpec) -> SmallVec<[Value; 4]> {
        spec.aggs.iter().zip(self.accs.iter()).map(|(c, a)| a.result(c)).collect()
    }

    /// Emit the rows pending at `ts` with their aggregates (a timer at `ts` fired).
    fn emit(&mut self, spec: &OverSpec, ts: Timestamp, out: &mut Output<Row>) {
        // Every timer fired moves the lateness bar, whether rows were pending or not (in Flink
        // a RANGE frame's cleanup timer that finds newer rows does this too).
        self.last_emitted = ts;
        let Some(rows) = self.pending.remove(&ts) else { return };
        match spec.frame {
            Frame::Rows(n) => {
                for mut row in rows {
                    if self.frame.len() as u64 > n {
                        self.retract_oldest(spec);
                    }
                    self.add(spec, ts, &row);
                    row.extend(self.results(spec));
                    out.emit(row, ts);
                }
            }
            Frame::Range(interval) => {
                while self.frame.front().is_some_and(|f| ts.saturating_sub(f.ts) > interval) {
                    self.retract_oldest(spec);
                }
                for row in &rows {
                    self.add(spec, ts, row);
                }
                let results = self.results(spec);
                for mut row in rows {
                    row.extend(results.iter().cloned());
                    out.emit(row, ts);
                }
            }
        }
    }
}

/// The OVER aggregation operator (see the module doc).
pub struct OverOp {
    spec: Arc<OverSpec>,
    /// Operator name (checkpoint sections) and key groups (partitions are snapshotted by the key
    /// group of their key).
    name: String,
    groups: KeyGroups,
    partitions: FxHashMap<KeyRow, Partition>,
    /// Pending emissions: timestamp → keys with rows at that timestamp.
    timers: BTreeMap<Timestamp, Vec<KeyRow>>,
    out: Output<Row>,
    metrics: Arc<OperatorMetrics>,
    late: u64,
}

impl OverOp {
    /// The operator `name` on the shard `ctx` builds, restoring its partitions when the job
    /// restores.
    pub fn build(spec: Arc<OverSpec>, ctx: &BuildCtx<'_>, name: &str, out: Output<Row>) -> Result<Self> {
        let mut op = Self::new(spec, out, ctx.operator_metrics(name));
        op.name = name.to_string();
        op.groups = ctx.groups;
        if let Some(restore) = ctx.restore() {
            restore
                .keyed_for(name, &ctx.groups, ctx.shard)
                .for_each::<(KeyRow, Partition)>(|_, (key, partition)| op.restore_partition(key, partition))?;
        }
        Ok(op)
    }

    pub fn new(spec: Arc<OverSpec>, out: Output<Row>, metrics: Arc<OperatorMetrics>) -> Self {
        Self {
            spec,
            name: "over".into(),
            groups: KeyGroups::new(crate::key::DEFAULT_MAX_KEY_GROUPS, 1),
            partitions: FxHashMap::default(),
            timers: BTreeMap::new(),
            out,
            metrics,
            late: 0,
        }
    }

    fn restore_partition(&mut self, key: KeyRow, partition: Partition) {
        for ts in &partition.timers {
            self.timers.entry(*ts).or_default().push(key.clone());
        }
        self.partitions.insert(key, partition);
    }

    fn insert(&mut self, row: Row, ts: Timestamp) {
        let key = self.spec.partition(&row);
        let partition = match self.partitions.get_mut(&key) {
            Some(p) => p,
            None => self.partitions.entry(key.clone()).or_insert_with(|| Partition::new(&self.spec)),
        };
        if ts <= partition.last_emitted {
            self.late += 1;
            return;
        }
        match partition.pending.get_mut(&ts) {
            Some(rows) => rows.push(row),
            None => {
                partition.pending.insert(ts, vec![row]);
            }
        }
        let mut new_timers: SmallVec<[Timestamp; 2]> = SmallVec::new();
        if partition.timers.insert(ts) {
            new_timers.push(ts);
        }
        if let Frame::Range(interval) = self.spec.frame {
            // Flink's RANGE function keeps a cleanup time between 1 and 1.5 intervals after the
            // newest row (moved only when it falls below the lower bound).
            let min_cleanup = ts.saturating_add(interval).saturating_add(1);
            let max_cleanup = ts.saturating_add((interval as f64 * 1.5) as i64).saturating_add(1);
            if partition.cleanup_at.is_none_or(|c| c < min_cleanup) {
                partition.cleanup_at = Some(max_cleanup);
                if partition.timers.insert(max_cleanup) {
                    new_timers.push(max_cleanup);
                }
            }
        }
        for t in new_timers {
            self.timers.entry(t).or_default().push(key.clone());
        }
    }

    /// The timer at `ts` of partition `key` fires: drop a RANGE partition whose cleanup time
    /// came (no rows since), else emit its rows at `ts`.
    fn fire(&mut self, key: &KeyRow, ts: Timestamp) {
        let Some(p) = self.partitions.get_mut(key) else { return };
        p.timers.remove(&ts);
        if p.cleanup_at.is_some_and(|c| c <= ts) {
            // Nothing pending (a row would have moved the cleanup time past itself) and every
            // frame row is older than the interval: Flink clears the key, lateness bar
            // included.
            self.partitions.remove(key);
            return;
        }
        p.emit(&self.spec, ts, &mut self.out);
    }

    fn advance(&mut self, wm: Timestamp) {
        while let Some(entry) = self.timers.first_entry() {
            if *entry.key() > wm {
                break;
            }
            let (ts, keys) = entry.remove_entry();
            for key in keys {
                self.fire(&key, ts);
            }
        }
        self.out.mark(wm);
    }
}

impl InOrder<Row> for OverOp {
    fn on_watermark(&mut self, wm: Timestamp) {
        self.advance(wm);
    }
    fn on_record(&mut self, record: Row, ts: Timestamp) {
        self.insert(record, ts);
    }
}

impl Push<Row> for OverOp {
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
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.out.flush();
        let keyed = snapshot.keyed(&self.name);
        for (key, partition) in &self.partitions {
            append(keyed.group(self.groups.key_group(key.stable_hash())), &(key, partition));
        }
        self.out.barrier(epoch, snapshot);
    }
    fn end(&mut self) {
        self.out.end();
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;
    use crate::testing::{Recorded, Recorder};

    type Log = Rc<RefCell<Recorded<Row>>>;

    /// Rows `[key, value]`; aggregates COUNT(*), SUM, MIN, MAX of the value (BIGINT).
    fn op(frame: Frame) -> (OverOp, Log, Arc<OperatorMetrics>) {
        let call = |func, arg: Option<usize>, out_type| AggCall {
            func,
            arg,
            arg_type: SqlType::BigInt,
            out_type,
            text: String::new(),
        };
        let spec = Arc::new(OverSpec {
            keys: vec![Expr::Col(0)],
            args: vec![Expr::Col(1)],
            aggs: vec![
                call(AggFunc::CountStar, None, SqlType::BigInt),
                call(AggFunc::Sum, Some(0), SqlType::BigInt),
                call(AggFunc::Min, Some(0), SqlType::BigInt),
                call(AggFunc::Max, Some(0), SqlType::BigInt),
            ],
            frame,
        });
        let (rec, log) = Recorder::new();
        let metrics = Arc::new(OperatorMetrics::default());
        (OverOp::new(spec, Output::new(Box::new(rec), 64), metrics.clone()), log, metrics)
    }

    fn row(key: i64, v: Option<i64>) -> Row {
        [Value::Int(key), v.map(Value::Int).unwrap_or(Value::Null)].into_iter().collect()
    }

    /// Push `(key, value, ts)` records, each followed by the watermark `wm` if given.
    fn push(op: &mut OverOp, records: &[(i64, Option<i64>, Timestamp)], wm: Option<Timestamp>) {
        let mut b = Batch::with_capacity(records.len());
        for (k, v, ts) in records {
            b.push(row(*k, *v), *ts);
        }
        if let Some(wm) = wm {
            b.mark(wm);
        }
        op.push(&mut b);
    }

    /// Emitted rows as `(key, value, count, sum, min, max)` in emission order.
    type Out = (i64, Option<i64>, i64, Option<i64>, Option<i64>, Option<i64>);
    fn emitted(log: &Log) -> Vec<Out> {
        let int = |v: &Value| match v {
            Value::Int(x) => Some(*x),
            _ => None,
        };
        log.borrow()
            .batches
            .iter()
            .flat_map(|(rows, _)| {
                rows.iter()
                    .map(|r| (int(&r[0]).unwrap(), int(&r[1]), int(&r[2]).unwrap(), int(&r[3]), int(&r[4]), int(&r[5])))
            })
            .collect()
    }

    /// ROWS frames: rows wait for the watermark and come out in time order; equal times in
    /// arrival order, each with its own frame of itself and the `n` rows before; MIN and MAX
    /// follow the frame as its oldest rows leave; NULL arguments count for COUNT(*) only.
    #[test]
    fn rows_frames_slide_one_row_at_a_time() {
        let (mut op, log, _) = op(Frame::Rows(2));
        push(&mut op, &[(1, Some(5), 30), (1, Some(9), 10), (1, Some(1), 20), (1, Some(7), 20)], Some(15));
        assert_eq!(emitted(&log), vec![(1, Some(9), 1, Some(9), Some(9), Some(9))], "only the row at 10 is due");
        push(&mut op, &[(1, None, 40)], Some(100));
        assert_eq!(
            emitted(&log),
            vec![
                (1, Some(9), 1, Some(9), Some(9), Some(9)),
                (1, Some(1), 2, Some(10), Some(1), Some(9)),
                (1, Some(7), 3, Some(17), Some(1), Some(9)),
                (1, Some(5), 3, Some(13), Some(1), Some(7)),
                (1, None, 3, Some(12), Some(5), Some(7)),
            ]
        );
    }

    /// A row is late when it is not after the newest time its key emitted — not when it is
    /// behind the watermark: such a row still comes out, at the next watermark advance, in time
    /// order with its key's other pending rows.
    #[test]
    fn lateness_is_judged_per_key_by_its_last_emission() {
        let (mut op, log, metrics) = op(Frame::Rows(5));
        push(&mut op, &[(1, Some(1), 100), (2, Some(2), 50)], Some(100));
        push(&mut op, &[(1, Some(3), 100), (1, Some(4), 90), (2, Some(5), 60), (2, Some(6), 55)], None);
        assert_eq!(
            metrics.late_records_dropped.load(std::sync::atomic::Ordering::Relaxed),
            2,
            "key 1's rows at 100 and 90"
        );
        assert_eq!(emitted(&log).len(), 2, "nothing fires without a watermark advance");
        push(&mut op, &[], Some(101));
        let got = emitted(&log);
        assert_eq!(
            &got[2..],
            &[(2, Some(6), 2, Some(8), Some(2), Some(6)), (2, Some(5), 3, Some(13), Some(2), Some(6))]
        );
    }

    /// RANGE frames: rows at equal times share one frame and one result; rows older than the
    /// interval leave. A key with no newer rows for 1.5 intervals is dropped (Flink's cleanup
    /// timer), taking its lateness bar with it; before that, its cleanup timer's time is the bar.
    #[test]
    fn range_frames_share_peers_and_clean_up_idle_keys() {
        let (mut op, log, metrics) = op(Frame::Range(100));
        push(
            &mut op,
            &[(1, Some(4), 1000), (1, Some(6), 1000), (1, Some(1), 1050), (1, Some(8), 1101)],
            Some(2000),
        );
        assert_eq!(
            emitted(&log),
            vec![
                (1, Some(4), 2, Some(10), Some(4), Some(6)),
                (1, Some(6), 2, Some(10), Some(4), Some(6)),
                (1, Some(1), 3, Some(11), Some(1), Some(6)),
                (1, Some(8), 2, Some(9), Some(1), Some(8)),
            ],
            "at 1101 the rows at 1000 are more than 100 ms old"
        );
        // Cleanup time: 1101 + 150 + 1 = 1252 (fired at watermark 2000): the key is gone.
        assert!(op.partitions.is_empty());
        push(&mut op, &[(1, Some(3), 500)], Some(2001));
        assert_eq!(metrics.late_records_dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
        push(&mut op, &[], Some(3000));
        assert_eq!(emitted(&log).last(), Some(&(1, Some(3), 1, Some(3), Some(3), Some(3))), "a fresh frame");
        // A cleanup timer that finds a newer row moves the lateness bar to its own time.
        let (mut op, _, metrics) = super::tests::op(Frame::Range(100));
        push(&mut op, &[(1, Some(1), 1000)], Some(1000));
        push(&mut op, &[(1, Some(1), 1060)], Some(1200));
        push(&mut op, &[(1, Some(1), 1140)], None);
        assert_eq!(
            metrics.late_records_dropped.load(std::sync::atomic::Ordering::Relaxed),
            1,
            "1140 <= 1151, the first cleanup time"
        );
    }

    /// Partitions survive a checkpoint's serialisation with their accumulators (a restored
    /// frame retracts exactly what it added).
    #[test]
    fn partitions_round_trip_through_checkpoint_encoding() {
        let (mut op, _, _) = op(Frame::Rows(1));
        push(&mut op, &[(7, Some(3), 10), (7, Some(9), 20)], Some(20));
        push(&mut op, &[(7, Some(4), 30)], None);
        let (key, p) = op.partitions.iter().next().map(|(k, p)| (k.clone(), p.clone())).unwrap();
        let bytes = crate::checkpoint::snapshot::encode(&(&key, &p));
        let (key2, p2): (KeyRow, Partition) = crate::checkpoint::snapshot::decode(&bytes, "over partition").unwrap();
        let (mut restored, log, _) = super::tests::op(Frame::Rows(1));
        restored.restore_partition(key2, p2);
        push(&mut restored, &[], Some(30));
        assert_eq!(emitted(&log), vec![(7, Some(4), 2, Some(13), Some(4), Some(9))]);
    }
}
