//! `GET /metrics`: the job's figures in the Prometheus/OpenMetrics text format, built with the
//! `prometheus-client` crate from a custom [`Collector`] that reads the registry snapshots at
//! scrape time (the data path only ever writes its relaxed atomics).
//!
//! Labels are bounded: `job` (name) and `job_id` (one job, or the daemon's running jobs plus its
//! bounded history), `operator` (operator names of the graph), `shard` (< shard count), rings
//! by `edge`, `from_shard`, `to_shard` (edges × shards²), latency by `quantile` (3 values).
//! A family is described once and holds the rows of every job.
//!
//! Counters (exposed with the `_total` suffix): `weir_records_in`, `weir_records_out`,
//! `weir_late_records_dropped`, `weir_late_records_side_output`, `weir_bad_records`,
//! `weir_busy_seconds`, `weir_idle_seconds`, `weir_backpressured_seconds`,
//! `weir_ring_records_sent`, `weir_ring_full_seconds`, `weir_reactor_kicks` (per job). Gauges: `weir_job_running`,
//! `weir_busy_time_ms_per_second`, `weir_idle_time_ms_per_second`,
//! `weir_backpressured_time_ms_per_second`, `weir_ring_full_ms_per_second`, `weir_watermark_ms`,
//! `weir_watermark_lag_ms`, `weir_sink_latency_us{quantile="0.5"|"0.99"|"0.999"}` (ingest → sink),
//! `weir_operator_latency_us{quantile}` (ingest → the operator's input, for every operator
//! appended to a stream and every join; operators × shards × 3 series).
//!
//! Checkpoints (per job): counters `weir_checkpoints_completed`, `weir_checkpoints_failed`,
//! `weir_checkpoints_aborted`; gauges `weir_checkpoints_in_progress` and, once one completed,
//! `weir_checkpoint_last_duration_ms`, `weir_checkpoint_last_size_bytes`,
//! `weir_checkpoint_last_alignment_ms`, `weir_checkpoint_last_snapshot_ms`,
//! `weir_checkpoint_last_completed_timestamp_seconds`. LSM stores (per keyed operator and
//! shard): `weir_state_memtable_bytes`, `weir_state_segments`, `weir_state_segment_bytes`,
//! `weir_state_compaction_debt_bytes`, `weir_state_wal_bytes`, `weir_state_cache_bytes`.
//! Daemon: `weir_daemon_cores`, `weir_daemon_cores_in_use`, `weir_daemon_jobs{state}`.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::status::{is_segment_head, operator_rates, ring_full_ms_per_second, watermark_lag_ms};
use super::{JobHandle, JobState};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One metric family: its rows over every job.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    rows: Vec<(Labels, f64)>,
}

type Labels = Vec<(&'static str, String)>;

/// Families in a fixed order; rows of every job are appended to the same family.
#[derive(Default)]
struct Families(Vec<Family>);

impl Families {
    fn add(&mut self, name: &'static str, help: &'static str, kind: MetricType, rows: Vec<(Labels, f64)>) {
        match self.0.iter_mut().find(|f| f.name == name) {
            Some(f) => f.rows.extend(rows),
            None => self.0.push(Family { name, help, kind, rows }),
        }
    }
    fn counter(&mut self, name: &'static str, help: &'static str, rows: Vec<(Labels, f64)>) {
        self.add(name, help, MetricType::Counter, rows)
    }
    fn gauge(&mut self, name: &'static str, help: &'static str, rows: Vec<(Labels, f64)>) {
        self.add(name, help, MetricType::Gauge, rows)
    }
}

struct JobsCollector {
    jobs: Vec<Arc<JobHandle>>,
    daemon: Option<DaemonFigures>,
}

/// The daemon's own figures.
pub(crate) struct DaemonFigures {
    pub cores: usize,
    pub cores_in_use: usize,
    pub jobs_by_state: Vec<(&'static str, usize)>,
}

impl std::fmt::Debug for JobsCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("jobs", &self.jobs.len()).finish()
    }
}

/// Every family of one job.
fn job_families(out: &mut Families, job: &JobHandle) {
    let w = job.window();
    let ops = &w.newest.operators;
    let rates = operator_rates(&w);
    let job_labels = || -> Labels { vec![("job", job.name.clone()), ("job_id", job.id.clone())] };
    let op_labels = |name: &str, shard: usize| -> Labels {
        let mut l = job_labels();
        l.push(("operator", name.to_string()));
        l.push(("shard", shard.to_string()));
        l
    };

    let running = matches!(job.state(), JobState::Running) as u8 as f64;
    out.gauge(
        "weir_job_running",
        "1 while the job runs, 0 once it finished, failed or was cancelled",
        vec![(job_labels(), running)],
    );

    out.counter(
        "weir_reactor_kicks",
        "Signals sent to shards whose reactor made no progress for reactor_kick_ms (a long step or a parked reactor; see shard::wakeups)",
        vec![(job_labels(), job.registry.reactor_kicks.load(std::sync::atomic::Ordering::Relaxed) as f64)],
    );
    let per_op = |f: &dyn Fn(&crate::shard::metrics::OperatorSnapshot) -> f64| -> Vec<(Labels, f64)> {
        ops.iter().map(|o| (op_labels(&o.name, o.shard), f(o))).collect()
    };
    out.counter("weir_records_in", "Records received by the operator", per_op(&|o| o.records_in as f64));
    out.counter("weir_records_out", "Records emitted by the operator", per_op(&|o| o.records_out as f64));
    out.counter(
        "weir_late_records_dropped",
        "Records dropped as too late for every window",
        per_op(&|o| o.late_records_dropped as f64),
    );
    out.counter(
        "weir_late_records_side_output",
        "Late records sent to the side output",
        per_op(&|o| o.late_records_side_output as f64),
    );
    out.counter("weir_bad_records", "Input records that could not be parsed", per_op(&|o| o.bad_records as f64));

    let heads: Vec<usize> = (0..ops.len()).filter(|&i| is_segment_head(&ops[i])).collect();
    let head_rows = |f: &dyn Fn(usize) -> f64| -> Vec<(Labels, f64)> { heads.iter().map(|&i| (op_labels(&ops[i].name, ops[i].shard), f(i))).collect() };
    out.counter(
        "weir_busy_seconds",
        "Time the segment task spent processing",
        head_rows(&|i| ops[i].busy_ns as f64 / 1e9),
    );
    out.counter(
        "weir_idle_seconds",
        "Time the segment task waited for input",
        head_rows(&|i| ops[i].idle_ns as f64 / 1e9),
    );
    out.counter(
        "weir_backpressured_seconds",
        "Time the segment task waited for downstream (full rings, sink writes)",
        head_rows(&|i| ops[i].backpressured_ns as f64 / 1e9),
    );
    out.gauge(
        "weir_busy_time_ms_per_second",
        "Busy ms per second over the last second (Flink's busyTimeMsPerSecond)",
        head_rows(&|i| rates[i].busy_ms_per_second),
    );
    out.gauge(
        "weir_idle_time_ms_per_second",
        "Idle ms per second over the last second (Flink's idleTimeMsPerSecond)",
        head_rows(&|i| rates[i].idle_ms_per_second),
    );
    out.gauge(
        "weir_backpressured_time_ms_per_second",
        "Backpressured ms per second over the last second (Flink's backPressuredTimeMsPerSecond)",
        head_rows(&|i| rates[i].backpressured_ms_per_second),
    );

    let with_wm: Vec<usize> = heads.iter().copied().filter(|&i| watermark_lag_ms(ops[i].watermark).is_some()).collect();
    let wm_rows = |f: &dyn Fn(usize) -> f64| -> Vec<(Labels, f64)> { with_wm.iter().map(|&i| (op_labels(&ops[i].name, ops[i].shard), f(i))).collect() };
    out.gauge(
        "weir_watermark_ms",
        "Current event-time watermark of the segment (epoch ms)",
        wm_rows(&|i| ops[i].watermark as f64),
    );
    out.gauge(
        "weir_watermark_lag_ms",
        "Processing time minus watermark (ms)",
        wm_rows(&|i| watermark_lag_ms(ops[i].watermark).unwrap_or(0) as f64),
    );

    let full = ring_full_ms_per_second(&w);
    let ring_labels = |e: usize, from: usize, to: usize| -> Labels {
        let mut l = job_labels();
        l.push(("edge", job.edge_name(e)));
        l.push(("from_shard", from.to_string()));
        l.push(("to_shard", to.to_string()));
        l
    };
    let rings = &w.newest.rings;
    out.counter(
        "weir_ring_records_sent",
        "Records sent through the ring",
        rings.iter().map(|((e, f, t), r)| (ring_labels(*e, *f, *t), r.records_sent as f64)).collect(),
    );
    out.counter(
        "weir_ring_full_seconds",
        "Time the sender waited on the full ring (backpressure)",
        rings.iter().map(|((e, f, t), r)| (ring_labels(*e, *f, *t), r.full_ns as f64 / 1e9)).collect(),
    );
    out.gauge(
        "weir_ring_full_ms_per_second",
        "Ms per second the sender waited on the full ring over the last second",
        rings.iter().zip(&full).map(|(((e, f, t), _), ms)| (ring_labels(*e, *f, *t), *ms)).collect(),
    );

    let quantile_rows = |latencies: &[crate::shard::metrics::LatencySnapshot]| -> Vec<(Labels, f64)> {
        let mut rows = Vec::new();
        for l in latencies.iter().filter(|l| l.samples > 0) {
            for (q, v) in [("0.5", l.p50_us), ("0.99", l.p99_us), ("0.999", l.p999_us)] {
                let mut labels = op_labels(&l.operator, l.shard);
                labels.push(("quantile", q.to_string()));
                rows.push((labels, v as f64));
            }
        }
        rows
    };
    out.gauge(
        "weir_sink_latency_us",
        "Ingest to sink latency, µs, over the last second with samples (sampled per batch)",
        quantile_rows(&w.newest.latencies),
    );
    out.gauge(
        "weir_operator_latency_us",
        "Ingest to operator input latency, µs, over the last second with samples (sampled per batch)",
        quantile_rows(&w.newest.operator_latencies),
    );

    // Checkpoints (live, from the coordinator's driver).
    let c = job.registry.checkpoints.totals();
    let one = |v: f64| vec![(job_labels(), v)];
    let last = |v: Option<f64>| v.map(|v| vec![(job_labels(), v)]).unwrap_or_default();
    out.counter("weir_checkpoints_completed", "Checkpoints (and savepoints) completed", one(c.completed as f64));
    out.counter("weir_checkpoints_failed", "Checkpoints whose files could not be written", one(c.failed as f64));
    out.counter(
        "weir_checkpoints_aborted",
        "Checkpoints aborted (timeout, declined, task failure, restart)",
        one(c.aborted as f64),
    );
    out.gauge(
        "weir_checkpoints_in_progress",
        "Checkpoints triggered and not yet complete",
        one(c.in_progress as f64),
    );
    out.gauge(
        "weir_checkpoint_last_duration_ms",
        "Trigger to durable metadata of the last completed checkpoint (ms)",
        last(c.last_duration_ms.map(|v| v as f64)),
    );
    out.gauge(
        "weir_checkpoint_last_size_bytes",
        "State bytes of the last completed checkpoint",
        last(c.last_bytes.map(|v| v as f64)),
    );
    out.gauge(
        "weir_checkpoint_last_alignment_ms",
        "Longest barrier alignment of any task in the last completed checkpoint (ms)",
        last(c.last_alignment_ms),
    );
    out.gauge(
        "weir_checkpoint_last_snapshot_ms",
        "Longest synchronous snapshot of any task in the last completed checkpoint (ms)",
        last(c.last_snapshot_ms),
    );
    out.gauge(
        "weir_checkpoint_last_completed_timestamp_seconds",
        "Wall-clock time of the last completed checkpoint (Unix seconds)",
        last(c.last_completed_ms.map(|ms| ms as f64 / 1e3)),
    );

    // LSM state stores, per keyed operator and shard.
    let stores = job.registry.store_snapshots();
    let store_rows = |f: &dyn Fn(&crate::shard::metrics::StoreSnapshot) -> u64| -> Vec<(Labels, f64)> {
        stores.iter().map(|s| (op_labels(&s.operator, s.shard), f(s) as f64)).collect()
    };
    out.gauge("weir_state_memtable_bytes", "LSM store: bytes in memtables", store_rows(&|s| s.memtable_bytes));
    out.gauge("weir_state_segments", "LSM store: live segment files", store_rows(&|s| s.segments));
    out.gauge(
        "weir_state_segment_bytes",
        "LSM store: bytes of live segment files",
        store_rows(&|s| s.segment_bytes),
    );
    out.gauge(
        "weir_state_compaction_debt_bytes",
        "LSM store: bytes still to compact",
        store_rows(&|s| s.compaction_debt_bytes),
    );
    out.gauge(
        "weir_state_wal_bytes",
        "LSM store: bytes of write-ahead log on disk",
        store_rows(&|s| s.wal_bytes),
    );
    out.gauge(
        "weir_state_cache_bytes",
        "LSM backend: bytes of decoded state cached",
        store_rows(&|s| s.cache_bytes),
    );
}

impl Collector for JobsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut families = Families::default();
        if let Some(d) = &self.daemon {
            families.gauge("weir_daemon_cores", "CPUs the daemon gives to jobs", vec![(Vec::new(), d.cores as f64)]);
            families.gauge(
                "weir_daemon_cores_in_use",
                "CPUs held by running jobs",
                vec![(Vec::new(), d.cores_in_use as f64)],
            );
            families.gauge(
                "weir_daemon_jobs",
                "Jobs the daemon knows, by state (finished ones are kept in a bounded history)",
                d.jobs_by_state.iter().map(|(s, n)| (vec![("state", s.to_string())], *n as f64)).collect(),
            );
        }
        for job in &self.jobs {
            job_families(&mut families, job);
        }
        for f in &families.0 {
            let mut m = enc.encode_descriptor(f.name, f.help, None, f.kind)?;
            for (labels, v) in &f.rows {
                match (f.kind, labels.is_empty()) {
                    (MetricType::Counter, true) => m.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
                    (MetricType::Counter, false) => m.encode_family(labels)?.encode_counter::<NoLabelSet, f64, f64>(v, None)?,
                    (_, true) => m.encode_gauge(v)?,
                    (_, false) => m.encode_family(labels)?.encode_gauge(v)?,
                }
            }
        }
        Ok(())
    }
}

/// The whole exposition for `jobs` (and the daemon's own figures).
pub(crate) fn render(jobs: &[Arc<JobHandle>], daemon: Option<&super::daemon::Daemon>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(JobsCollector {
        jobs: jobs.to_vec(),
        daemon: daemon.map(|d| d.figures()),
    }));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        out.clear();
        let _ = writeln!(out, "# error encoding metrics: {e}\n# EOF");
    }
    out
}
