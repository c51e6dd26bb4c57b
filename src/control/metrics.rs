//! `GET /metrics`: the job's figures in the Prometheus/OpenMetrics text format, built with the
//! `prometheus-client` crate from a custom [`Collector`] that reads the registry snapshots at
//! scrape time (the data path only ever writes its relaxed atomics).
//!
//! Labels are bounded: `job`, `operator` (operator names of the graph), `shard` (< shard count),
//! rings by `edge`, `from_shard`, `to_shard` (edges × shards²), latency by `quantile` (3 values).
//!
//! Counters (exposed with the `_total` suffix): `weir_records_in`, `weir_records_out`,
//! `weir_late_records_dropped`, `weir_late_records_side_output`, `weir_bad_records`,
//! `weir_busy_seconds`, `weir_idle_seconds`, `weir_backpressured_seconds`,
//! `weir_ring_records_sent`, `weir_ring_full_seconds`. Gauges: `weir_job_running`,
//! `weir_busy_time_ms_per_second`, `weir_idle_time_ms_per_second`,
//! `weir_backpressured_time_ms_per_second`, `weir_ring_full_ms_per_second`, `weir_watermark_ms`,
//! `weir_watermark_lag_ms`, `weir_sink_latency_us{quantile="0.5"|"0.99"|"0.999"}`.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::status::{is_segment_head, operator_rates, ring_full_ms_per_second, watermark_lag_ms};
use super::{JobState, Shared};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

struct JobCollector {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for JobCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCollector").field("job", &self.shared.job.name).finish()
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter_family(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, f64)]) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_counter::<NoLabelSet, f64, f64>(v, None)?;
    }
    Ok(())
}

fn gauge_family(enc: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(Labels, f64)]) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in rows {
        m.encode_family(labels)?.encode_gauge(v)?;
    }
    Ok(())
}

impl Collector for JobCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let job = &self.shared.job;
        let w = self.shared.window();
        let ops = &w.newest.operators;
        let rates = operator_rates(&w);
        let op_labels = |name: &str, shard: usize| -> Labels { vec![("job", job.name.clone()), ("operator", name.to_string()), ("shard", shard.to_string())] };

        let running = matches!(job.state(), JobState::Running) as u8 as f64;
        gauge_family(
            &mut enc,
            "weir_job_running",
            "1 while the job runs, 0 once it finished or failed",
            &[(vec![("job", job.name.clone())], running)],
        )?;

        let per_op = |f: &dyn Fn(&crate::shard::metrics::OperatorSnapshot) -> f64| -> Vec<(Labels, f64)> {
            ops.iter().map(|o| (op_labels(&o.name, o.shard), f(o))).collect()
        };
        counter_family(
            &mut enc,
            "weir_records_in",
            "Records received by the operator",
            &per_op(&|o| o.records_in as f64),
        )?;
        counter_family(
            &mut enc,
            "weir_records_out",
            "Records emitted by the operator",
            &per_op(&|o| o.records_out as f64),
        )?;
        counter_family(
            &mut enc,
            "weir_late_records_dropped",
            "Records dropped as too late for every window",
            &per_op(&|o| o.late_records_dropped as f64),
        )?;
        counter_family(
            &mut enc,
            "weir_late_records_side_output",
            "Late records sent to the side output",
            &per_op(&|o| o.late_records_side_output as f64),
        )?;
        counter_family(
            &mut enc,
            "weir_bad_records",
            "Input records that could not be parsed",
            &per_op(&|o| o.bad_records as f64),
        )?;

        let heads: Vec<usize> = (0..ops.len()).filter(|&i| is_segment_head(&ops[i])).collect();
        let head_rows = |f: &dyn Fn(usize) -> f64| -> Vec<(Labels, f64)> { heads.iter().map(|&i| (op_labels(&ops[i].name, ops[i].shard), f(i))).collect() };
        counter_family(
            &mut enc,
            "weir_busy_seconds",
            "Time the segment task spent processing",
            &head_rows(&|i| ops[i].busy_ns as f64 / 1e9),
        )?;
        counter_family(
            &mut enc,
            "weir_idle_seconds",
            "Time the segment task waited for input",
            &head_rows(&|i| ops[i].idle_ns as f64 / 1e9),
        )?;
        counter_family(
            &mut enc,
            "weir_backpressured_seconds",
            "Time the segment task waited for downstream (full rings, sink writes)",
            &head_rows(&|i| ops[i].backpressured_ns as f64 / 1e9),
        )?;
        gauge_family(
            &mut enc,
            "weir_busy_time_ms_per_second",
            "Busy ms per second over the last second (Flink's busyTimeMsPerSecond)",
            &head_rows(&|i| rates[i].busy_ms_per_second),
        )?;
        gauge_family(
            &mut enc,
            "weir_idle_time_ms_per_second",
            "Idle ms per second over the last second (Flink's idleTimeMsPerSecond)",
            &head_rows(&|i| rates[i].idle_ms_per_second),
        )?;
        gauge_family(
            &mut enc,
            "weir_backpressured_time_ms_per_second",
            "Backpressured ms per second over the last second (Flink's backPressuredTimeMsPerSecond)",
            &head_rows(&|i| rates[i].backpressured_ms_per_second),
        )?;

        let with_wm: Vec<usize> = heads.iter().copied().filter(|&i| watermark_lag_ms(ops[i].watermark).is_some()).collect();
        let wm_rows = |f: &dyn Fn(usize) -> f64| -> Vec<(Labels, f64)> { with_wm.iter().map(|&i| (op_labels(&ops[i].name, ops[i].shard), f(i))).collect() };
        gauge_family(
            &mut enc,
            "weir_watermark_ms",
            "Current event-time watermark of the segment (epoch ms)",
            &wm_rows(&|i| ops[i].watermark as f64),
        )?;
        gauge_family(
            &mut enc,
            "weir_watermark_lag_ms",
            "Processing time minus watermark (ms)",
            &wm_rows(&|i| watermark_lag_ms(ops[i].watermark).unwrap_or(0) as f64),
        )?;

        let full = ring_full_ms_per_second(&w);
        let ring_labels = |e: usize, from: usize, to: usize| -> Labels {
            vec![
                ("job", job.name.clone()),
                ("edge", job.edge_name(e)),
                ("from_shard", from.to_string()),
                ("to_shard", to.to_string()),
            ]
        };
        let rings = &w.newest.rings;
        counter_family(
            &mut enc,
            "weir_ring_records_sent",
            "Records sent through the ring",
            &rings
                .iter()
                .map(|((e, f, t), r)| (ring_labels(*e, *f, *t), r.records_sent as f64))
                .collect::<Vec<_>>(),
        )?;
        counter_family(
            &mut enc,
            "weir_ring_full_seconds",
            "Time the sender waited on the full ring (backpressure)",
            &rings
                .iter()
                .map(|((e, f, t), r)| (ring_labels(*e, *f, *t), r.full_ns as f64 / 1e9))
                .collect::<Vec<_>>(),
        )?;
        gauge_family(
            &mut enc,
            "weir_ring_full_ms_per_second",
            "Ms per second the sender waited on the full ring over the last second",
            &rings
                .iter()
                .zip(&full)
                .map(|(((e, f, t), _), ms)| (ring_labels(*e, *f, *t), *ms))
                .collect::<Vec<_>>(),
        )?;

        let mut latency_rows = Vec::new();
        for l in w.newest.latencies.iter().filter(|l| l.samples > 0) {
            for (q, v) in [("0.5", l.p50_us), ("0.99", l.p99_us), ("0.999", l.p999_us)] {
                let mut labels = op_labels(&l.sink, l.shard);
                labels.push(("quantile", q.to_string()));
                latency_rows.push((labels, v as f64));
            }
        }
        gauge_family(
            &mut enc,
            "weir_sink_latency_us",
            "Ingest to sink latency, µs, over the last second with samples (sampled per batch)",
            &latency_rows,
        )?;
        Ok(())
    }
}

/// The whole exposition for the job in `shared`.
pub(crate) fn render(shared: &Arc<Shared>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(JobCollector { shared: shared.clone() }));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        out.clear();
        let _ = writeln!(out, "# error encoding metrics: {e}\n# EOF");
    }
    out
}
