//! The appliance daemon (`weir start`, the analog of Flink's `start-cluster.sh`): one process
//! that owns a set of CPUs, serves the control API, and runs the jobs submitted to it
//! (`POST /api/jobs`, what `weir run JOB.sql` sends when it finds a daemon), each on CPUs of
//! its own.
//!
//! A submission carries the SQL script text (or a built-in job name), its `${VAR}` values and
//! engine overrides ([`EngineOverrides`]); the daemon plans it on the connection's thread, so a
//! bad statement is answered `400` with the planner's message (line, column, hint) and nothing
//! starts. An accepted job gets the next id, is pinned to free CPUs and runs on a driver thread
//! of its own (which also runs its checkpoint coordinator); `weir list`, `weir status ID`,
//! `weir savepoint ID`, `weir stop ID --savepoint` and `weir cancel ID` address it by id.
//!
//! Invariants:
//! - admission is by CPUs: a job needs one free CPU per shard and at most `max_jobs` run at
//!   once; otherwise it is refused (`503`, naming what holds the CPUs), never queued or
//!   oversubscribed; CPUs go back when the job's run returns, whatever its outcome;
//! - two running jobs never share a checkpoint directory (`409`);
//! - finished jobs are kept for `weir list`/`status` in a bounded history (`history`, oldest
//!   dropped first); running jobs are never dropped;
//! - the control plane (HTTP, sampler, progress) runs at lowered priority on its own threads
//!   (see [`super`]); planning a submission happens there too, never on a job's shards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::http::Response;
use super::metrics::DaemonFigures;
use super::{ControlConfig, ControlServer, JobHandle, JobTable};
use crate::config::EngineConfig;
use crate::error::{Result, WeirError};
use crate::shard::metrics::MetricsRegistry;
use crate::state::StateBackendKind;

/// Settings of the daemon (TOML `[daemon]` table of the config file; flags override).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonConfig {
    /// CPUs the daemon gives to jobs: CPUs `0..cores`; 0 = every online CPU.
    pub cores: usize,
    /// Jobs running at once; 0 = one per CPU.
    pub max_jobs: usize,
    /// Shards of a submitted job that does not ask for a number (`--cores`).
    pub default_job_cores: usize,
    /// Finished jobs kept for `weir list` / `weir status`.
    pub history: usize,
    /// Largest submission (script and options) accepted, in bytes.
    pub max_submission_bytes: usize,
    /// Checkpoints of a job go to `<checkpoint_root>/<job name>` unless it names a directory.
    pub checkpoint_root: PathBuf,
    /// Seconds between a running job's progress log lines.
    pub progress_interval_secs: u64,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            cores: 0,
            max_jobs: 0,
            default_job_cores: 1,
            history: 32,
            max_submission_bytes: 1 << 20,
            checkpoint_root: PathBuf::from("checkpoints"),
            progress_interval_secs: 10,
        }
    }
}

impl DaemonConfig {
    /// The `[daemon]` table of a config file (defaults when there is none).
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            daemon: Option<toml::Value>,
        }
        let file: File = toml::from_str(text).map_err(|e| format!("config: {e}"))?;
        let config: DaemonConfig = match file.daemon {
            Some(v) => v.try_into().map_err(|e| format!("config [daemon]: {e}"))?,
            None => DaemonConfig::default(),
        };
        config.validate().map_err(|e| format!("config [daemon]: {e}"))?;
        Ok(config)
    }

    /// The CPUs the daemon owns.
    pub fn cpu_count(&self) -> usize {
        if self.cores == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.cores
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.cores > 1024 {
            return Err(format!("cores = {} must be at most 1024", self.cores));
        }
        if self.default_job_cores == 0 || self.default_job_cores > self.cpu_count() {
            return Err(format!(
                "default_job_cores = {} must be in 1..={} (the daemon's cores)",
                self.default_job_cores,
                self.cpu_count()
            ));
        }
        if self.history == 0 || self.history > 10_000 {
            return Err(format!("history = {} must be in 1..=10000", self.history));
        }
        if self.max_submission_bytes < 1024 || self.max_submission_bytes > 64 << 20 {
            return Err(format!("max_submission_bytes = {} must be in 1024..=67108864", self.max_submission_bytes));
        }
        if self.progress_interval_secs == 0 {
            return Err("progress_interval_secs must be at least 1".into());
        }
        Ok(())
    }
}

/// Engine settings a run or a submission asks for on top of a base configuration (the
/// command line's engine flags; also sent with a submission).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineOverrides {
    /// Text of a TOML config file whose `[engine]` table replaces the base.
    pub config_toml: Option<String>,
    pub cores: Option<usize>,
    pub no_pin: bool,
    pub batch_size: Option<usize>,
    pub ring_capacity: Option<usize>,
    pub max_key_groups: Option<u32>,
    pub on_bad_record: Option<String>,
    /// Flink options `KEY=VALUE`.
    pub options: Vec<String>,
    pub checkpoint_interval_ms: Option<u64>,
    pub checkpoint_dir: Option<PathBuf>,
    pub no_checkpoints: bool,
    pub state_backend: Option<StateBackendKind>,
    pub state_dir: Option<PathBuf>,
    pub state_cache_bytes: Option<usize>,
}

impl EngineOverrides {
    /// `base` (or the `[engine]` table of `config_toml`) with these settings applied.
    pub fn apply(&self, base: EngineConfig) -> std::result::Result<EngineConfig, String> {
        let mut config = match &self.config_toml {
            Some(text) => EngineConfig::from_toml(text)?,
            None => base,
        };
        if let Some(c) = self.cores {
            config.cores = c;
        }
        if self.no_pin {
            config.pin_cores = false;
        }
        if let Some(b) = self.batch_size {
            config.batch_size = b;
        }
        if let Some(r) = self.ring_capacity {
            config.ring_capacity_batches = r;
        }
        if let Some(k) = self.max_key_groups {
            config.max_key_groups = k;
        }
        if let Some(b) = self.state_backend {
            config.state_backend = b;
        }
        if let Some(d) = &self.state_dir {
            config.state_dir = Some(d.clone());
        }
        if let Some(c) = self.state_cache_bytes {
            config.state_cache_bytes = c;
        }
        if let Some(p) = &self.on_bad_record {
            config.on_bad_record = toml::Value::String(p.clone()).try_into().map_err(|e| format!("--on-bad-record: {e}"))?;
        }
        for option in &self.options {
            let (key, value) = option.split_once('=').ok_or_else(|| format!("--set {option}: expected KEY=VALUE"))?;
            let value = value.trim_matches(|c| c == '\'' || c == '"');
            if !config.set_flink_option(key.trim(), value).map_err(|e| format!("--set: {e}"))? {
                return Err(format!("--set {option}: unknown option `{key}`"));
            }
        }
        if let Some(ms) = self.checkpoint_interval_ms {
            config.checkpoint_interval_ms = ms;
        }
        if let Some(dir) = &self.checkpoint_dir {
            config.checkpoint_dir = Some(dir.clone());
        }
        if self.no_checkpoints {
            config.checkpoint_interval_ms = 0;
        }
        Ok(config)
    }

    /// Checkpoint by default (like `weir run`): every 10 s into `<root>/<job stem>`.
    pub fn checkpoint_defaults(&self, config: &mut EngineConfig, job: &str, root: &Path) {
        if self.no_checkpoints {
            return;
        }
        if config.checkpoint_interval_ms == 0 && self.checkpoint_interval_ms.is_none() {
            config.checkpoint_interval_ms = 10_000;
        }
        if config.checkpoint_dir.is_none() {
            let stem = Path::new(job).file_stem().map_or_else(|| job.to_string(), |s| s.to_string_lossy().to_string());
            config.checkpoint_dir = Some(root.join(stem));
        }
    }

    /// Make the paths absolute against `cwd` (a client's paths mean nothing in the daemon's
    /// working directory).
    pub fn absolutize(&mut self, cwd: &Path) {
        for p in [&mut self.checkpoint_dir, &mut self.state_dir].into_iter().flatten() {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        }
    }
}

/// Before a job starts from the beginning (no `--restore`): its checkpoint directory must not
/// hold an earlier run's checkpoints, or a restart after a failure (which restores the newest
/// checkpoint there) and a later `--restore latest` would pick that run's. An earlier run that
/// finished leaves nothing to continue: its checkpoints are removed (logged). One that did not
/// finish is refused, with the ways forward.
pub fn prepare_fresh_start(config: &EngineConfig) -> std::result::Result<(), String> {
    let Some(root) = config.checkpoint_dir.as_ref().filter(|_| config.checkpoint_interval_ms > 0) else {
        return Ok(());
    };
    let store = crate::checkpoint::files::CheckpointStore::new(root);
    let epochs = store.epochs().map_err(|e| e.to_string())?;
    if epochs.is_empty() {
        return Ok(());
    }
    let start_over = format!("remove {} (or choose another --checkpoint-dir) to start over", root.display());
    match store.latest() {
        Ok(Some(dir)) => {
            let meta = crate::checkpoint::files::read_meta(&dir).map_err(|e| e.to_string())?;
            if !meta.finished {
                return Err(format!(
                    "{} is a checkpoint of an earlier run that did not finish: continue that run with --restore latest, or {start_over}",
                    dir.display()
                ));
            }
        }
        Ok(None) => {}
        Err(e) => return Err(format!("{e}: continue from an intact checkpoint with --restore DIR, or {start_over}")),
    }
    tracing::info!(
        "removing {} checkpoint folder(s) of an earlier run in {} (it finished, or never completed a checkpoint)",
        epochs.len(),
        root.display()
    );
    store.clean(&epochs, u64::MAX).map_err(|e| e.to_string())
}

/// `--restore latest|DIR` → the checkpoint directory to restore, if any (logs what it chose).
pub fn resolve_restore(restore: &str, config: &EngineConfig) -> std::result::Result<Option<PathBuf>, String> {
    let dir = if restore == "latest" {
        let root = config
            .checkpoint_dir
            .clone()
            .ok_or("--restore latest needs a checkpoint directory (--checkpoint-dir or execution.checkpointing.dir)")?;
        match crate::checkpoint::files::CheckpointStore::new(&root).latest().map_err(|e| e.to_string())? {
            Some(dir) => dir,
            None => {
                tracing::info!("no complete checkpoint in {}: starting from the beginning", root.display());
                return Ok(None);
            }
        }
    } else {
        PathBuf::from(restore)
    };
    let meta = crate::checkpoint::files::read_meta(&dir).map_err(|e| e.to_string())?;
    tracing::info!(
        "restoring {:?} {} of job {} (taken on {} shards{})",
        meta.kind,
        dir.display(),
        meta.job,
        meta.shards,
        if meta.finished {
            "; the job had finished: only its last output is committed"
        } else {
            ""
        }
    );
    Ok(Some(dir))
}

/// A job submission (`POST /api/jobs`, JSON).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Submission {
    /// The job's name (default: the built-in job's name; required with `sql`).
    pub name: Option<String>,
    /// A Flink SQL script's text.
    pub sql: Option<String>,
    /// A built-in job (`weir jobs`) instead of a script.
    pub builtin: Option<String>,
    /// Built-in jobs: events to generate (0: unbounded; default 10 M), events per second,
    /// sink (`blackhole`, `print`, `csv:DIR`, `json:DIR`), watermark delay.
    pub events: Option<u64>,
    pub rate: Option<u64>,
    pub sink: Option<String>,
    pub out_of_orderness_ms: Option<i64>,
    /// Generator splits of a built-in job (0 or absent: one per shard).
    pub splits: Option<usize>,
    /// Script variables `${NAME}`.
    pub vars: BTreeMap<String, String>,
    pub engine: EngineOverrides,
    /// `latest` or a checkpoint / savepoint directory.
    pub restore: Option<String>,
}

/// A refused submission: HTTP status and the message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Which CPUs and checkpoint directory a running job holds.
struct Holding {
    cpus: Vec<usize>,
    checkpoint_dir: Option<PathBuf>,
}

#[derive(Default)]
struct Allocation {
    next_id: u64,
    /// Running jobs by id.
    running: BTreeMap<String, Holding>,
}

/// The daemon: the job table, the CPUs and their holders.
pub struct Daemon {
    config: DaemonConfig,
    base: EngineConfig,
    /// The CPUs the daemon owns.
    cpus: Vec<usize>,
    jobs: Arc<JobTable>,
    allocation: Mutex<Allocation>,
    started: Instant,
}

impl Daemon {
    /// A daemon running jobs with `base` as their engine configuration.
    pub fn new(config: DaemonConfig, base: EngineConfig) -> Result<Arc<Self>> {
        config.validate().map_err(WeirError::Config)?;
        let cpus: Vec<usize> = (0..config.cpu_count()).collect();
        Ok(Arc::new(Self {
            config,
            base,
            cpus,
            jobs: Arc::new(JobTable::default()),
            allocation: Mutex::new(Allocation {
                next_id: 1,
                ..Default::default()
            }),
            started: Instant::now(),
        }))
    }

    /// Serve the control API (and submissions) on `addr` until the returned server is dropped.
    pub fn serve(self: &Arc<Self>, addr: &str, mut control: ControlConfig) -> Result<ControlServer> {
        control.max_body_bytes = control.max_body_bytes.max(self.config.max_submission_bytes);
        ControlServer::serve(addr, self.jobs.clone(), Some(self.clone()), control)
    }

    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// Every job the daemon knows (running and the finished history), oldest first.
    pub fn jobs(&self) -> Vec<Arc<JobHandle>> {
        self.jobs.all()
    }

    fn max_jobs(&self) -> usize {
        if self.config.max_jobs == 0 {
            self.cpus.len()
        } else {
            self.config.max_jobs
        }
    }

    /// Plan, admit and start a job. Runs on the caller's (control) thread up to the start.
    pub fn submit(self: &Arc<Self>, sub: Submission) -> std::result::Result<Arc<JobHandle>, Refusal> {
        let name = match (&sub.name, &sub.builtin, &sub.sql) {
            (_, Some(_), Some(_)) => return Err(refuse(400, "a submission has either `sql` or `builtin`, not both")),
            (_, None, None) => return Err(refuse(400, "a submission needs `sql` (a script) or `builtin` (a job name)")),
            (Some(n), _, _) => n.clone(),
            (None, Some(b), None) => b.clone(),
            (None, None, Some(_)) => return Err(refuse(400, "a SQL submission needs a `name`")),
        };
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || name.starts_with('.') {
            return Err(refuse(
                400,
                format!("job name `{name}`: use 1 to 64 of A-Z a-z 0-9 - _ . (not starting with .)"),
            ));
        }
        let mut config = sub.engine.apply(self.base.clone()).map_err(|e| refuse(400, e))?;
        if sub.engine.cores.is_none() && (sub.engine.config_toml.is_none() || config.cores == 0) {
            config.cores = self.config.default_job_cores;
        }
        sub.engine.checkpoint_defaults(&mut config, &name, &self.config.checkpoint_root);
        let env = match (&sub.sql, &sub.builtin) {
            (Some(script), _) => {
                let vars = sub.vars.clone().into_iter().collect();
                crate::sql::build(script, &vars, config).map_err(|e| refuse(400, e.to_string()))?
            }
            (None, Some(builtin)) => {
                let defaults = crate::jobs::JobOptions::default();
                let options = crate::jobs::JobOptions {
                    events: sub.events.unwrap_or(defaults.events),
                    rate_per_second: sub.rate,
                    sink: match &sub.sink {
                        Some(s) => s.parse().map_err(|e: String| refuse(400, e))?,
                        None => defaults.sink,
                    },
                    out_of_orderness_ms: sub.out_of_orderness_ms.unwrap_or(defaults.out_of_orderness_ms),
                    splits: sub.splits.unwrap_or(defaults.splits),
                };
                let env = crate::api::StreamEnv::new(config);
                crate::jobs::build(&env, builtin, &options).map_err(|e| refuse(400, e.to_string()))?;
                env
            }
            (None, None) => unreachable!("checked above"),
        };
        let mut config = env.config().clone();
        let shards = config.shard_count();
        if shards > self.cpus.len() {
            return Err(refuse(
                400,
                format!("the job needs {shards} cores; this daemon has {} (daemon cores)", self.cpus.len()),
            ));
        }
        config.validate().map_err(|e| refuse(400, e))?;
        if let Some(restore) = &sub.restore {
            config.restore_from = resolve_restore(restore, &config).map_err(|e| refuse(400, e))?;
            if let Some(dir) = &config.restore_from {
                let meta = crate::checkpoint::files::read_meta(dir).map_err(|e| refuse(400, e.to_string()))?;
                let problems = crate::checkpoint::files::check_compatible(&meta, &env.graph().operators, config.max_key_groups);
                if !problems.is_empty() {
                    return Err(refuse(400, format!("cannot restore {}: {}", dir.display(), problems.join("; "))));
                }
            }
        }

        // Admission: CPUs, the job limit, the checkpoint directory.
        let (id, cpus) = {
            let mut alloc = self.allocation.lock().expect("daemon allocation");
            if let Some(dir) = &config.checkpoint_dir {
                if let Some((other, _)) = alloc.running.iter().find(|(_, h)| h.checkpoint_dir.as_ref() == Some(dir)) {
                    return Err(refuse(
                        409,
                        format!(
                            "job {other} already checkpoints into {}: give this one another --checkpoint-dir (or another name)",
                            dir.display()
                        ),
                    ));
                }
            }
            let held: Vec<usize> = alloc.running.values().flat_map(|h| h.cpus.iter().copied()).collect();
            let free: Vec<usize> = self.cpus.iter().copied().filter(|c| !held.contains(c)).collect();
            if free.len() < shards {
                let holders: Vec<String> = alloc.running.iter().map(|(id, h)| format!("job {id} holds {:?}", h.cpus)).collect();
                return Err(refuse(
                    503,
                    format!(
                        "the job needs {shards} cores but {} of the daemon's {} are free ({})",
                        free.len(),
                        self.cpus.len(),
                        holders.join(", ")
                    ),
                ));
            }
            if alloc.running.len() >= self.max_jobs() {
                return Err(refuse(
                    503,
                    format!("the daemon already runs {} jobs (max_jobs = {})", alloc.running.len(), self.max_jobs()),
                ));
            }
            let cpus: Vec<usize> = free[..shards].to_vec();
            let id = alloc.next_id.to_string();
            alloc.next_id += 1;
            alloc.running.insert(
                id.clone(),
                Holding {
                    cpus: cpus.clone(),
                    checkpoint_dir: config.checkpoint_dir.clone(),
                },
            );
            (id, cpus)
        };
        if config.pin_cores {
            config.cpu_list = cpus.clone();
        }
        let registry = Arc::new(MetricsRegistry::default());
        let graph = env.graph();
        let job = JobHandle::with_id(
            &id,
            &name,
            &graph,
            shards,
            if config.pin_cores { cpus.clone() } else { Vec::new() },
            registry.clone(),
        );
        self.jobs.add(job.clone());
        self.jobs.trim_finished(self.config.history);
        tracing::info!(
            job = %name,
            job_id = %id,
            shards,
            cpus = ?cpus,
            pinned = config.pin_cores,
            checkpoint_dir = %config.checkpoint_dir.as_ref().map_or("none".to_string(), |d| d.display().to_string()),
            "job {id} ({name}) accepted on {shards} shards",
        );
        let daemon = self.clone();
        let runner = job.clone();
        let progress_every = Duration::from_secs(self.config.progress_interval_secs);
        let spawned = std::thread::Builder::new().name(format!("weir-job-{id}")).spawn(move || {
            let progress = super::progress::ProgressLogger::start(runner.clone(), progress_every).ok();
            let result = crate::shard::runtime::execute_with_registry(graph, &config, registry);
            drop(progress);
            // The shards are gone: free the CPUs before anyone can see the job ended.
            daemon.release(&runner.id);
            runner.set_outcome(&result);
            match &result {
                Ok(report) => tracing::info!(
                    job = %runner.name,
                    job_id = %runner.id,
                    "job {} finished{}: {} records read in {:.1} s",
                    runner.id,
                    report
                        .checkpoints
                        .stopped_with_savepoint
                        .as_ref()
                        .map_or(String::new(), |s| format!(" (stopped with savepoint {s})")),
                    report.operators_named("source:").records_out,
                    report.elapsed.as_secs_f64()
                ),
                Err(WeirError::Cancelled) => tracing::info!(job = %runner.name, job_id = %runner.id, "job {} cancelled", runner.id),
                Err(e) => tracing::error!(job = %runner.name, job_id = %runner.id, error = %e, "job {} failed", runner.id),
            }
            daemon.jobs.trim_finished(daemon.config.history);
        });
        if let Err(e) = spawned {
            job.set_state(super::JobState::Failed(format!("could not start the job's thread: {e}")));
            self.release(&id);
            return Err(refuse(500, format!("could not start the job's thread: {e}")));
        }
        Ok(job)
    }

    /// The job `id` ended: its CPUs and checkpoint directory are free again.
    fn release(&self, id: &str) {
        self.allocation.lock().expect("daemon allocation").running.remove(id);
    }

    /// `POST /api/jobs`.
    pub(crate) fn submit_http(self: &Arc<Self>, body: &[u8]) -> Response {
        let sub: Submission = match serde_json::from_slice(body) {
            Ok(s) => s,
            Err(e) => return Response::error(400, &format!("the submission is not valid JSON: {e}")),
        };
        match self.submit(sub) {
            Ok(job) => Response::json(
                201,
                &json!({ "id": job.id, "name": job.name, "shards": job.shards, "cpus": job.cpus, "dashboard": format!("/jobs/{}/", job.id) }),
            ),
            Err(r) => {
                tracing::warn!(status = r.status, "submission refused: {}", r.message);
                Response::error(r.status, &r.message)
            }
        }
    }

    fn cores_in_use(&self) -> usize {
        self.allocation.lock().expect("daemon allocation").running.values().map(|h| h.cpus.len()).sum()
    }

    /// `GET /api/status` and `/api/jobs` of the daemon.
    pub fn overview_json(&self) -> serde_json::Value {
        let jobs = self.jobs.all();
        json!({
            "daemon": true,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "cores": self.cpus.len(),
            "cores_in_use": self.cores_in_use(),
            "max_jobs": self.max_jobs(),
            "running": jobs.iter().filter(|j| j.is_running()).count(),
            "jobs": jobs.iter().map(|j| super::status::job_summary(j)).collect::<Vec<_>>(),
        })
    }

    pub(crate) fn figures(&self) -> DaemonFigures {
        let jobs = self.jobs.all();
        let count = |s: &str| jobs.iter().filter(|j| j.state().as_str() == s).count();
        DaemonFigures {
            cores: self.cpus.len(),
            cores_in_use: self.cores_in_use(),
            jobs_by_state: ["running", "finished", "failed", "cancelled"].into_iter().map(|s| (s, count(s))).collect(),
        }
    }

    /// Cancel every running job and wait (bounded by `wait`) until they stopped. Returns the
    /// jobs still running at the deadline.
    pub fn shutdown(&self, wait: Duration) -> usize {
        let running: Vec<Arc<JobHandle>> = self.jobs.all().into_iter().filter(|j| j.is_running()).collect();
        for job in &running {
            tracing::info!(job = %job.name, job_id = %job.id, "shutdown: cancelling job {}", job.id);
            job.registry.request_cancel();
        }
        let deadline = Instant::now() + wait;
        loop {
            let left = running.iter().filter(|j| j.is_running()).count();
            if left == 0 || Instant::now() >= deadline {
                return left;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(cores: usize) -> Arc<Daemon> {
        let config = DaemonConfig {
            cores,
            checkpoint_root: std::env::temp_dir().join(format!("weir-daemon-unit-{}", std::process::id())),
            ..Default::default()
        };
        let base = EngineConfig {
            pin_cores: false,
            ..Default::default()
        };
        Daemon::new(config, base).unwrap()
    }

    fn builtin(name: &str, cores: usize) -> Submission {
        Submission {
            builtin: Some("q0".into()),
            name: Some(name.into()),
            events: Some(0),
            rate: Some(1_000),
            engine: EngineOverrides {
                cores: Some(cores),
                no_checkpoints: true,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn admission_by_cores_and_bad_submissions() {
        let d = daemon(2);
        let a = d.submit(builtin("a", 1)).expect("first job");
        let refused = d.submit(builtin("b", 2)).unwrap_err();
        assert_eq!(refused.status, 503);
        assert!(
            refused.message.contains("needs 2 cores but 1 of the daemon's 2 are free"),
            "{}",
            refused.message
        );
        assert_eq!(d.submit(builtin("c", 3)).unwrap_err().status, 400);
        let bad_sql = Submission {
            name: Some("bad".into()),
            sql: Some("CREATE TABLE t (a INT) WITH ('connector' = 'blackhole');\nINSERT INTO t SELEKT 1;".into()),
            ..Default::default()
        };
        let err = d.submit(bad_sql).unwrap_err();
        assert_eq!(err.status, 400);
        assert!(err.message.contains("line 2"), "{}", err.message);
        assert_eq!(d.submit(builtin("../x", 1)).unwrap_err().status, 400);
        a.registry.request_cancel();
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.is_running() {
            assert!(Instant::now() < deadline, "cancel took too long");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(a.state(), super::super::JobState::Cancelled);
        // The CPU is free again once the runner released it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let b = loop {
            match d.submit(builtin("b", 2)) {
                Ok(b) => break b,
                Err(r) if r.status == 503 && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                Err(r) => panic!("{r:?}"),
            }
        };
        assert_eq!(b.shards, 2);
        assert_eq!(d.shutdown(Duration::from_secs(30)), 0);
    }
}
