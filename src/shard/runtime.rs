//! Running a job: build the rings, start one pinned executor per shard, run every segment on
//! every shard, collect the report.
//!
//! Invariants: shard `i` is pinned to [`EngineConfig::cpu_of_shard`]; a job cancelled through
//! its registry ([`MetricsRegistry::request_cancel`]) stops at the shards' next wake-up tick and
//! is never restarted; a restore logs its progress (checkpoint read, state rebuilt).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use glommio::{LocalExecutorBuilder, Placement};

use super::wakeups::{ExternalWakeups, WakeupSlot};

use super::metrics::{MetricsRegistry, OperatorFigures};
use super::{BuildCtx, ProcessingTimers};
use crate::checkpoint::coordinator::{CheckpointFigures, CoordinatorDriver};
use crate::checkpoint::files::{check_compatible, read_snapshot, CheckpointStore};
use crate::checkpoint::runtime::{CheckpointControl, TaskMessage};
use crate::config::EngineConfig;
use crate::error::{Result, WeirError};
use crate::key::KeyGroups;
use crate::ring::{EdgeKind, RingFigures, ShardEnds};
use std::collections::BTreeMap;

/// A segment's factory: called once on every shard to build that shard's task.
pub type SegmentFactory = Arc<dyn Fn(&mut BuildCtx<'_>) -> Result<LocalBoxFuture<'static, Result<()>>> + Send + Sync>;

/// An edge's factory: builds all channels of the edge for a shard count and capacity.
pub type EdgeFactory = Arc<dyn Fn(usize, usize) -> Vec<ShardEnds> + Send + Sync>;

/// One segment of a job graph.
#[derive(Clone)]
pub struct SegmentDef {
    pub name: String,
    pub factory: SegmentFactory,
}

/// One edge (exchange) of a job graph.
#[derive(Clone)]
pub struct EdgeDef {
    pub name: String,
    pub kind: EdgeKind,
    pub factory: EdgeFactory,
}

/// The runnable form of a job: segments and the edges between them.
#[derive(Clone, Default)]
pub struct JobGraph {
    pub segments: Vec<SegmentDef>,
    pub edges: Vec<EdgeDef>,
    /// Every operator's name (`window:tumble#5`), in build order: what state is restored into.
    pub operators: Vec<String>,
    /// Every source by operator name, with its split count for a number of shards (checked
    /// against a checkpoint's positions before restoring, see `weir check-restore`).
    pub source_splits: Vec<(String, SplitCount)>,
}

/// A source's split count for a number of shards.
pub type SplitCount = Arc<dyn Fn(usize) -> Result<usize> + Send + Sync>;

/// What a finished job reports.
#[derive(Clone, Debug)]
pub struct JobReport {
    pub shards: usize,
    pub elapsed: Duration,
    /// Totals per operator over all shards.
    pub operators: BTreeMap<String, OperatorFigures>,
    /// Per ring: (edge, from shard, to shard) → figures.
    pub rings: Vec<((usize, usize, usize), RingFigures)>,
    /// What checkpoints did in the last attempt (empty without checkpointing).
    pub checkpoints: CheckpointFigures,
    /// Restarts from a checkpoint after failures.
    pub restarts: u32,
    /// From the start of the (last) attempt until every shard had built its operators — with a
    /// restore, reading the checkpoint and rebuilding the state: the time to recover.
    pub startup_ms: u64,
}

impl JobReport {
    /// Totals of the operator named `name` (zero if it does not exist).
    pub fn operator(&self, name: &str) -> OperatorFigures {
        self.operators.get(name).cloned().unwrap_or_default()
    }

    /// Sum over all operators whose name starts with `prefix`.
    pub fn operators_named(&self, prefix: &str) -> OperatorFigures {
        let mut t = OperatorFigures::default();
        for (_, f) in self.operators.iter().filter(|(n, _)| n.starts_with(prefix)) {
            t.records_in += f.records_in;
            t.records_out += f.records_out;
            t.late_records_dropped += f.late_records_dropped;
            t.late_records_side_output += f.late_records_side_output;
            t.bad_records += f.bad_records;
        }
        t
    }

    /// Total nanoseconds senders waited on full rings (backpressure).
    pub fn backpressure_ns(&self) -> u64 {
        self.rings.iter().map(|(_, f)| f.full_ns).sum()
    }

    /// Nanoseconds each shard waited on full rings, summed over the rings it sends into
    /// (index = shard).
    pub fn backpressure_ns_by_shard(&self) -> Vec<u64> {
        let mut by_shard = vec![0u64; self.shards];
        for ((_, from, _), f) in &self.rings {
            by_shard[*from] += f.full_ns;
        }
        by_shard
    }
}

/// Run `graph` to completion with `config`. Bounded jobs return when every source is exhausted
/// and every sink has closed.
pub fn execute(graph: JobGraph, config: &EngineConfig) -> Result<JobReport> {
    execute_with_registry(graph, config, Arc::new(MetricsRegistry::default()))
}

/// [`execute`] with a caller-owned metrics registry (so a control plane can read live figures).
///
/// With checkpointing on, a failed attempt is restarted from the latest complete checkpoint
/// up to `restart_attempts` times after `restart_delay_ms` (Flink's fixed-delay strategy).
pub fn execute_with_registry(graph: JobGraph, config: &EngineConfig, registry: Arc<MetricsRegistry>) -> Result<JobReport> {
    config.validate().map_err(WeirError::Config)?;
    let started = Instant::now();
    let mut restore_from = config.restore_from.clone();
    let mut restarts = 0u32;
    loop {
        let attempt = execute_attempt(&graph, config, &registry, restore_from.as_deref());
        registry
            .checkpoints
            .abort_open(if attempt.is_ok() { "the job ended" } else { "the attempt failed" });
        match attempt {
            Ok(mut report) => {
                report.elapsed = started.elapsed();
                report.restarts = restarts;
                return Ok(report);
            }
            Err(_) if registry.cancel_requested() => return Err(WeirError::Cancelled),
            Err(e) if config.checkpoint_interval_ms > 0 && restarts < config.restart_attempts => {
                restarts += 1;
                let store = CheckpointStore::new(config.checkpoint_dir.clone().expect("validated: checkpointing has a dir"));
                if let Some(latest) = store.latest()? {
                    restore_from = Some(latest);
                }
                tracing::warn!(
                    error = %e,
                    "job failed; restart {restarts} of {} in {} ms from {}",
                    config.restart_attempts,
                    config.restart_delay_ms,
                    restore_from
                        .as_ref()
                        .map_or("the beginning (no complete checkpoint yet)".to_string(), |p| p.display().to_string())
                );
                std::thread::sleep(Duration::from_millis(config.restart_delay_ms));
            }
            Err(e) => return Err(e),
        }
    }
}

const STOPPED_BY_PEER: &str = "stopped: another shard failed";

/// Set when any shard of the job fails: every other shard stops at its next tick (dropping
/// its tasks, which closes their rings), so one failure never leaves the job hanging.
#[derive(Default)]
struct JobCancel(AtomicBool);

/// When a shard's executor ends, even by panic: a failure cancels the job, and the
/// coordinator (if any) hears of the exit.
struct ExitNotice {
    control: Option<Arc<CheckpointControl>>,
    cancel: Arc<JobCancel>,
    shard: usize,
    error: Option<String>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let error = if std::thread::panicking() {
            Some("panicked".to_string())
        } else {
            self.error.take()
        };
        if error.is_some() {
            self.cancel.0.store(true, Ordering::Release);
        }
        if let Some(c) = &self.control {
            c.send(TaskMessage::ShardExited { shard: self.shard, error });
        }
    }
}

fn execute_attempt(graph: &JobGraph, config: &EngineConfig, registry: &Arc<MetricsRegistry>, restore_from: Option<&std::path::Path>) -> Result<JobReport> {
    let shards = config.shard_count();
    let groups = KeyGroups::new(config.max_key_groups, shards as u32);
    let started = Instant::now();
    static NEXT_ATTEMPT: AtomicU64 = AtomicU64::new(0);
    let attempt = NEXT_ATTEMPT.fetch_add(1, Ordering::Relaxed);

    let mut coordinator = None;
    let mut control = None;
    let mut restored_from = None;
    if config.checkpointing() {
        let restore = match restore_from {
            Some(dir) => {
                tracing::info!(from = %dir.display(), "restore: reading the checkpoint");
                let read_started = Instant::now();
                let (meta, set) = read_snapshot(dir)?;
                tracing::info!(
                    from = %dir.display(),
                    epoch = set.epoch,
                    old_shards = meta.shards,
                    "restore: checkpoint read in {} ms; rebuilding state on {shards} shards",
                    read_started.elapsed().as_millis()
                );
                let problems = check_compatible(&meta, &graph.operators, config.max_key_groups);
                if !problems.is_empty() {
                    return Err(WeirError::Checkpoint(format!("cannot restore {}: {}", dir.display(), problems.join("; "))));
                }
                restored_from = Some(dir.display().to_string());
                registry.checkpoints.restored(&dir.display().to_string());
                Some(set)
            }
            None => None,
        };
        let restored_epoch = restore.as_ref().map(|r| r.epoch);
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = match &config.checkpoint_dir {
            Some(d) => d.clone(),
            None => std::env::temp_dir().join(format!("weir-restore-{}", std::process::id())),
        };
        let c = Arc::new(CheckpointControl::new(graph.segments.len(), tx, restore, dir.clone()));
        coordinator = Some(CoordinatorDriver {
            control: c.clone(),
            messages: rx,
            store: CheckpointStore::new(dir),
            settings: config.checkpoint_settings(),
            shards,
            max_key_groups: config.max_key_groups,
            job: graph.segments.first().map(|s| s.name.clone()).unwrap_or_default(),
            restored_epoch,
            registry: registry.clone(),
        });
        control = Some(c);
    }

    let mut per_shard: Vec<Vec<ShardEnds>> = (0..shards).map(|_| Vec::new()).collect();
    for (e, edge) in graph.edges.iter().enumerate() {
        for (s, ends) in (edge.factory)(shards, config.ring_capacity_batches).into_iter().enumerate() {
            for (to, stats) in &ends.stats {
                registry.ring(e, s, *to, stats.clone());
            }
            per_shard[s].push(ends);
        }
    }
    let graph = Arc::new(graph.clone());
    let cancel = Arc::new(JobCancel::default());
    // Milliseconds after `started` at which the slowest shard had built its operators.
    let built_at = Arc::new(AtomicU64::new(0));
    let shards_built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let restoring = restored_from.is_some();
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut handles = Vec::with_capacity(shards);
    // Dropped (thread stopped) when this function returns, after every shard joined.
    let wakeups = ExternalWakeups::start(
        shards,
        Duration::from_millis(config.external_wakeup_ms),
        Duration::from_millis(config.reactor_kick_ms),
        registry.reactor_kicks.clone(),
    )
    .map_err(|e| WeirError::Other(format!("starting the shard wake-up thread: {e}")))?;
    for (shard, mut edges) in per_shard.into_iter().enumerate() {
        let wakeup = wakeups.slot(shard);
        let graph = graph.clone();
        let config = config.clone();
        let registry = registry.clone();
        let control = control.clone();
        let cancel = cancel.clone();
        let built_at = built_at.clone();
        let shards_built = shards_built.clone();
        let placement = if config.pin_cores {
            Placement::Fixed(config.cpu_of_shard(shard, online))
        } else {
            Placement::Unbound
        };
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("weir-shard-{shard}"))
            .io_memory(config.io_memory_bytes)
            .spin_before_park(Duration::from_micros(config.spin_before_park_us))
            .preempt_timer(Duration::from_millis(10));
        let handle = builder
            .spawn(move || async move {
                let mut notice = ExitNotice {
                    control: control.clone(),
                    cancel: cancel.clone(),
                    shard,
                    error: None,
                };
                let result = run_shard(
                    shard,
                    shards,
                    attempt,
                    groups,
                    &graph,
                    &config,
                    &registry,
                    &mut edges,
                    control,
                    &cancel,
                    &wakeup,
                    &|| {
                        built_at.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                        // Once, when the last shard has rebuilt its state: the restore is done.
                        if shards_built.fetch_add(1, Ordering::AcqRel) + 1 == shards && restoring {
                            tracing::info!(
                                "restore: state rebuilt on {shards} shards, {} ms after the start",
                                started.elapsed().as_millis()
                            );
                        }
                    },
                )
                .await;
                notice.error = result.as_ref().err().map(|e| e.to_string());
                result
            })
            .map_err(|e| WeirError::Other(format!("starting shard {shard}: {e}")))?;
        handles.push(handle);
    }
    let mut checkpoints = CheckpointFigures::default();
    if let Some(driver) = coordinator {
        let (figures, _failure) = driver.run()?;
        checkpoints = figures;
    }
    let mut first_error = None;
    let mut stopped = None;
    for (shard, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.to_string().contains(STOPPED_BY_PEER) => {
                stopped.get_or_insert(e);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(WeirError::Shard {
                    shard,
                    message: format!("executor failed: {e}"),
                });
            }
        }
    }
    // A stop-with-savepoint cancels every shard on purpose: whatever the shards report while
    // being cut off (closed rings, "stopped") is not a failure.
    if checkpoints.stopped_with_savepoint.is_none() {
        if let Some(e) = first_error.or(stopped) {
            return Err(e);
        }
    }
    checkpoints.restored_from = restored_from;
    Ok(JobReport {
        shards,
        elapsed: started.elapsed(),
        operators: registry.operator_totals(),
        rings: registry.ring_figures(),
        checkpoints,
        restarts: 0,
        startup_ms: built_at.load(Ordering::Relaxed),
    })
}

/// Build and run every segment of `graph` on this shard.
#[allow(clippy::too_many_arguments)]
async fn run_shard(
    shard: usize,
    shards: usize,
    attempt: u64,
    groups: KeyGroups,
    graph: &JobGraph,
    config: &EngineConfig,
    registry: &Arc<MetricsRegistry>,
    edges: &mut Vec<ShardEnds>,
    control: Option<Arc<CheckpointControl>>,
    cancel: &JobCancel,
    wakeup: &WakeupSlot,
    built: &dyn Fn(),
) -> Result<()> {
    // Processing time on this shard thread: the job's clock (the wall clock unless a test
    // installed its own).
    crate::time::set_processing_clock(config.processing_clock.clone());
    let mut tasks = Vec::with_capacity(graph.segments.len());
    for (segment, seg) in graph.segments.iter().enumerate() {
        if shard == 0 {
            registry.begin_segment();
        }
        let mut ctx = BuildCtx {
            shard,
            shards,
            groups,
            config,
            registry,
            edges,
            flushers: Vec::new(),
            timers: ProcessingTimers::default(),
            source_metrics: None,
            reading_edges: Vec::new(),
            segment,
            checkpoint: control.clone(),
            committers: Vec::new(),
            attempt,
        };
        let task = (seg.factory)(&mut ctx).map_err(|e| WeirError::Shard {
            shard,
            message: format!("building segment {}: {e}", seg.name),
        })?;
        tasks.push(glommio::spawn_local(task));
    }
    built();
    // From here the wake-up thread may interrupt this thread when it makes no progress;
    // detached when this function returns, on this thread, before the executor's thread ends.
    let _attached = wakeup.attach_current_thread();
    // The shard ends when every task ended, at the first task error (the other tasks are
    // dropped, closing their rings), or when another shard failed. The watcher's timer also
    // wakes the reactor every tick: the guard against glommio's lost cross-core wakeups (see
    // `shard::keep_awake_every`); the external wake-up thread wakes it too, in case the
    // reactor's own timers stop firing (see `shard::wakeups`).
    let tick = Duration::from_millis(config.wakeup_tick_ms);
    let result = {
        let all = std::pin::pin!(futures::future::try_join_all(tasks));
        let watch = std::pin::pin!(async {
            while !cancel.0.load(Ordering::Acquire) && !control.as_ref().is_some_and(|c| c.cancelled()) && !registry.cancel_requested() {
                let timer = std::pin::pin!(glommio::timer::sleep(tick));
                let external = std::pin::pin!(wakeup.next());
                futures::future::select(timer, external).await;
            }
        });
        match futures::future::select(all, watch).await {
            futures::future::Either::Left((result, _)) => result.map(|_| ()),
            futures::future::Either::Right(((), _)) => Err(WeirError::Shard {
                shard,
                message: STOPPED_BY_PEER.into(),
            }),
        }
    };
    // The tasks are dropped now; file reads they had started still complete into their
    // buffers, which must outlive the kernel's copy (see `shard::inflight`).
    super::inflight::drain(Duration::from_secs(30)).await;
    result
}
