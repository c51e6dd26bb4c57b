//! The status API (`GET /api/status`, `GET /api/jobs`, `GET /api/checkpoints`): the job's
//! state, per-shard throughput and time accounting, rings and how often they are full,
//! watermarks and what holds them back, sink latency (ingest → sink) and operator latency
//! (ingest → each operator's input, per shard), checkpoints (totals, last figures,
//! history), LSM store figures, the job graph, and the *bottleneck*: the ring whose sender
//! waited longest on it in the last second, with the operator that reads it.
//!
//! A shard's `records_per_second` counts the records its segment heads take in (source reads
//! plus ring receives), so a record that crosses a ring counts on both sides; `busy` is the sum
//! over the shard's segment tasks (they share one thread), `backpressured` and `idle` the maximum.
//!
//! Invariant: everything is derived from two registry snapshots about a second apart (rates) and
//! the newest one (totals); nothing here touches the data path.

use serde_json::{json, Value};

use super::{JobHandle, Window};
use crate::shard::metrics::OperatorSnapshot;
use crate::time::{now_ms, WATERMARK_MAX, WATERMARK_MIN};

/// Per-second rate of a counter between the window's snapshots.
fn rate(new: u64, old: u64, seconds: f64) -> f64 {
    new.saturating_sub(old) as f64 / seconds
}

/// Milliseconds per second spent in a nanosecond counter (Flink's `*TimeMsPerSecond`), at most 1000.
fn ms_per_second(new_ns: u64, old_ns: u64, seconds: f64) -> f64 {
    (new_ns.saturating_sub(old_ns) as f64 / 1e6 / seconds).min(1000.0)
}

/// True for the segment heads (they carry time accounting and watermarks).
pub fn is_segment_head(op: &OperatorSnapshot) -> bool {
    op.busy_ns + op.idle_ns + op.backpressured_ns > 0
}

/// The watermark as JSON (`null` before the first one and after the last).
fn watermark_json(wm: i64) -> Value {
    if wm == WATERMARK_MIN || wm == WATERMARK_MAX {
        Value::Null
    } else {
        json!(wm)
    }
}

/// Processing time minus watermark in ms, when the watermark is a real time.
pub fn watermark_lag_ms(wm: i64) -> Option<i64> {
    (wm > WATERMARK_MIN && wm < WATERMARK_MAX).then(|| (now_ms() - wm).max(0))
}

/// Rates of one operator instance over the window.
#[derive(Clone, Debug, Default)]
pub struct OperatorRates {
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    pub busy_ms_per_second: f64,
    pub idle_ms_per_second: f64,
    pub backpressured_ms_per_second: f64,
}

/// Rates of every operator instance of the newest snapshot, in the same order.
pub fn operator_rates(w: &Window) -> Vec<OperatorRates> {
    let secs = w.seconds();
    w.newest
        .operators
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let old = w
                .oldest
                .operators
                .get(i)
                .filter(|o| o.name == op.name && o.shard == op.shard)
                .cloned()
                .unwrap_or_default();
            OperatorRates {
                records_in_per_second: rate(op.records_in, old.records_in, secs),
                records_out_per_second: rate(op.records_out, old.records_out, secs),
                busy_ms_per_second: ms_per_second(op.busy_ns, old.busy_ns, secs),
                idle_ms_per_second: ms_per_second(op.idle_ns, old.idle_ns, secs),
                backpressured_ms_per_second: ms_per_second(op.backpressured_ns, old.backpressured_ns, secs),
            }
        })
        .collect()
}

/// Ms per second each ring was full over the window, in the newest snapshot's ring order.
pub fn ring_full_ms_per_second(w: &Window) -> Vec<f64> {
    let secs = w.seconds();
    w.newest
        .rings
        .iter()
        .map(|(key, f)| {
            let old = w.oldest.rings.iter().find(|(k, _)| k == key).map(|(_, o)| o.full_ns).unwrap_or(0);
            ms_per_second(f.full_ns, old, secs)
        })
        .collect()
}

/// One line of a job list: id, name, state, shards, CPUs, times, error, final savepoint.
pub fn job_summary(job: &JobHandle) -> Value {
    let state = job.state();
    let totals = job.registry.checkpoints.totals();
    json!({
        "id": job.id,
        "name": job.name,
        "state": state.as_str(),
        "error": match &state { super::JobState::Failed(e) => Some(e.clone()), _ => None },
        "shards": job.shards,
        "cpus": job.cpus,
        "started_ms": job.started_ms(),
        "uptime_ms": job.uptime().as_millis() as u64,
        "checkpoints_completed": totals.completed,
        "stopped_with_savepoint": job.stopped_with_savepoint(),
    })
}

/// `GET /api/jobs`: the jobs this server knows.
pub fn jobs_json(jobs: &[std::sync::Arc<JobHandle>]) -> Value {
    json!({ "jobs": jobs.iter().map(|j| job_summary(j)).collect::<Vec<_>>() })
}

/// `GET .../api/checkpoints`: totals, the last completed checkpoint's figures, the history
/// (newest last) and the outcomes of savepoint requests.
pub fn checkpoints_json(job: &JobHandle) -> Value {
    let registry = &job.registry;
    json!({
        "totals": registry.checkpoints.totals(),
        "history": registry.checkpoints.history(),
        "savepoints": registry.commands.results(),
    })
}

/// Operator latency rows in graph order (source side first, operators in chain order; the
/// registry holds them tail first per segment), then by shard; operators without a sample yet
/// are left out.
pub fn operator_latency_json(latencies: &[crate::shard::metrics::LatencySnapshot]) -> Vec<Value> {
    let mut rows: Vec<(usize, &crate::shard::metrics::LatencySnapshot)> =
        latencies.iter().filter(|l| l.samples > 0).map(|l| (operator_number(&l.operator), l)).collect();
    rows.sort_by_key(|(n, l)| (*n, l.shard));
    rows.into_iter()
        .map(|(_, l)| json!({ "operator": l.operator, "shard": l.shard, "p50_us": l.p50_us, "p99_us": l.p99_us, "p999_us": l.p999_us, "max_us": l.max_us, "samples": l.samples }))
        .collect()
}

/// The graph-order number of an operator name such as `window#3` (names without one last).
fn operator_number(name: &str) -> usize {
    name.rsplit_once('#').and_then(|(_, n)| n.parse().ok()).unwrap_or(usize::MAX)
}

/// `GET /api/status`.
pub fn status_json(job: &JobHandle, w: &Window) -> Value {
    let state = job.state();
    let rates = operator_rates(w);
    let full = ring_full_ms_per_second(w);
    let ops = &w.newest.operators;

    let operators: Vec<Value> = ops
        .iter()
        .zip(&rates)
        .map(|(op, r)| {
            json!({
                "name": op.name,
                "shard": op.shard,
                "segment_head": is_segment_head(op),
                "records_in": op.records_in,
                "records_out": op.records_out,
                "records_in_per_second": r.records_in_per_second,
                "records_out_per_second": r.records_out_per_second,
                "late_records_dropped": op.late_records_dropped,
                "late_records_side_output": op.late_records_side_output,
                "bad_records": op.bad_records,
                "watermark": watermark_json(op.watermark),
                "watermark_lag_ms": watermark_lag_ms(op.watermark),
                "watermark_held_back_by_input": op.watermark_held_by,
                "watermark_held_back_by": op.watermark_held_by_name,
                "busy_ms_per_second": r.busy_ms_per_second,
                "idle_ms_per_second": r.idle_ms_per_second,
                "backpressured_ms_per_second": r.backpressured_ms_per_second,
                "backpressured_ms_total": op.backpressured_ns as f64 / 1e6,
            })
        })
        .collect();

    let shards: Vec<Value> = (0..job.shards)
        .map(|s| {
            let heads = || ops.iter().zip(&rates).filter(move |(op, _)| op.shard == s && is_segment_head(op));
            let throughput: f64 = heads().map(|(_, r)| r.records_in_per_second + r.records_out_per_second).sum();
            let busy: f64 = heads().map(|(_, r)| r.busy_ms_per_second).sum::<f64>().min(1000.0);
            let backpressured = heads().map(|(_, r)| r.backpressured_ms_per_second).fold(0.0, f64::max);
            let idle = heads().map(|(_, r)| r.idle_ms_per_second).fold(0.0, f64::max);
            // The lowest watermark of the shard's segment heads, and which input holds it.
            let lowest = heads()
                .map(|(op, _)| op)
                .filter(|op| op.watermark > WATERMARK_MIN)
                .min_by_key(|op| op.watermark);
            json!({
                "shard": s,
                "records_per_second": throughput,
                "busy_ms_per_second": busy,
                "idle_ms_per_second": idle,
                "backpressured_ms_per_second": backpressured,
                "watermark": lowest.map_or(Value::Null, |op| watermark_json(op.watermark)),
                "watermark_lag_ms": lowest.and_then(|op| watermark_lag_ms(op.watermark)),
                "watermark_operator": lowest.map(|op| op.name.clone()),
                "watermark_held_back_by_input": lowest.and_then(|op| op.watermark_held_by),
                "watermark_held_back_by": lowest.and_then(|op| op.watermark_held_by_name.clone()),
            })
        })
        .collect();

    let rings: Vec<Value> = w
        .newest
        .rings
        .iter()
        .zip(&full)
        .map(|(((e, from, to), f), full_ms)| {
            json!({
                "edge": e,
                "name": job.edge_name(*e),
                "from_shard": from,
                "to_shard": to,
                "reader": job.registry.reader_of(*e),
                "records_sent": f.records_sent,
                "batches_sent": f.batches_sent,
                "full_events": f.full_events,
                "full_ms_total": f.full_ns / 1_000_000,
                "full_ms_per_second": full_ms,
            })
        })
        .collect();

    let bottleneck = w
        .newest
        .rings
        .iter()
        .zip(&full)
        .filter(|(_, ms)| **ms > 0.0)
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(((e, from, to), _), ms)| {
            let reader = job.registry.reader_of(*e);
            json!({
                "kind": "ring",
                "ring": format!("{} {from}->{to}", job.edge_name(*e)),
                "edge": job.edge_name(*e),
                "from_shard": from,
                "to_shard": to,
                "full_ms_per_second": ms,
                "operator": reader,
                "shard": to,
                "explanation": format!(
                    "shard {from} waited {ms:.0} ms/s on the full ring {} to shard {to}: {} on shard {to} is the slowest reader",
                    job.edge_name(*e),
                    reader.as_deref().unwrap_or("its reader")
                ),
            })
        });

    let latency: Vec<Value> = w
        .newest
        .latencies
        .iter()
        .map(|l| json!({ "sink": l.operator, "shard": l.shard, "p50_us": l.p50_us, "p99_us": l.p99_us, "p999_us": l.p999_us, "max_us": l.max_us, "samples": l.samples }))
        .collect();
    let operator_latency = operator_latency_json(&w.newest.operator_latencies);

    let (segments, edges) = job.graph();
    let totals = |f: fn(&OperatorSnapshot) -> u64| ops.iter().map(f).sum::<u64>();
    json!({
        "id": job.id,
        "job": job.name,
        "state": state.as_str(),
        "cpus": job.cpus,
        "stopped_with_savepoint": job.stopped_with_savepoint(),
        "error": match &state { super::JobState::Failed(e) => Some(e.clone()), _ => None },
        "shards": job.shards,
        "uptime_ms": job.uptime().as_millis() as u64,
        "window_seconds": w.seconds(),
        "records_per_second": shards.iter().map(|s| s["records_per_second"].as_f64().unwrap_or(0.0)).sum::<f64>(),
        "late_records_dropped": totals(|o| o.late_records_dropped),
        "bad_records": totals(|o| o.bad_records),
        "bottleneck": bottleneck,
        "shard_status": shards,
        "operators": operators,
        "rings": rings,
        "latency": latency,
        "operator_latency": operator_latency,
        "checkpoints": checkpoints_json(job),
        "stores": job.registry.store_snapshots(),
        "graph": { "segments": segments, "edges": edges },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::metrics::LatencySnapshot;

    fn sample(operator: &str, shard: usize, samples: u64) -> LatencySnapshot {
        LatencySnapshot {
            operator: operator.to_string(),
            shard,
            p50_us: 10,
            p99_us: 20,
            p999_us: 30,
            max_us: 40,
            samples,
        }
    }

    #[test]
    fn operator_latency_rows_are_in_graph_order_and_skip_unsampled_instances() {
        // The registry holds a segment's operators tail first, shard by shard.
        let registry_order = [
            sample("filter#7", 0, 5),
            sample("map#3", 0, 5),
            sample("filter#7", 1, 5),
            sample("map#3", 1, 0),
            sample("window:tumble#12", 1, 2),
            sample("window:tumble#12", 0, 2),
        ];
        let rows = operator_latency_json(&registry_order);
        let got: Vec<(String, u64)> = rows
            .iter()
            .map(|r| (r["operator"].as_str().unwrap().to_string(), r["shard"].as_u64().unwrap()))
            .collect();
        let want = [("map#3", 0), ("filter#7", 0), ("filter#7", 1), ("window:tumble#12", 0), ("window:tumble#12", 1)];
        assert_eq!(got, want.map(|(o, s)| (o.to_string(), s)));
        assert_eq!(rows[0]["p99_us"], 20);
        assert_eq!(rows[0]["samples"], 5);
    }
}
