//! The control plane: an HTTP server on its own threads that serves Prometheus metrics
//! (`/metrics`), job status (`/api/status`, `/api/jobs`), a dashboard (`/`) and commands
//! (savepoint, stop, cancel) for the jobs it knows — one job for `weir run --http`, every
//! submitted job for the daemon (`weir start`, [`daemon`]), which also accepts submissions.
//!
//! Invariants:
//! - the data plane never waits for the control plane: the server, its sampler and the
//!   progress loggers run on their own threads at a lower scheduling priority
//!   ([`lower_thread_priority`]: nice +10, so a pinned shard wins its core whenever both
//!   are runnable) and only load relaxed atomics the shards write once per batch, or take
//!   the registry's registration locks, which the data path never takes;
//! - everything is bounded ([`ControlConfig`]): connections, request header and body sizes,
//!   socket timeouts, the samples kept per job, the daemon's finished-job history;
//! - the server listens on loopback unless a bearer token is configured: a non-loopback address
//!   without a token is refused at start.

pub mod checkpoints;
pub mod client;
pub mod daemon;
mod http;
pub mod latency;
pub mod metrics;
pub mod progress;
pub mod status;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{Result, WeirError};
use crate::ring::{EdgeKind, RingFigures};
use crate::shard::metrics::{LatencySnapshot, MetricsRegistry, OperatorSnapshot};
use crate::shard::runtime::JobGraph;

/// Limits and settings of the control server (every limit has a default).
#[derive(Clone, Debug)]
pub struct ControlConfig {
    /// Bearer token required on every request when set (mandatory for non-loopback binds).
    pub token: Option<String>,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
    /// Largest request head (request line + headers) accepted, in bytes.
    pub max_header_bytes: usize,
    /// Largest request body accepted, in bytes (commands have none; the daemon raises it to
    /// accept job submissions).
    pub max_body_bytes: usize,
    /// Socket read and write timeout.
    pub io_timeout: Duration,
    /// How often the sampler snapshots the registry (rates are computed over ~1 s of samples).
    pub sample_interval: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_connections: 32,
            max_header_bytes: 8 * 1024,
            max_body_bytes: 4 * 1024,
            io_timeout: Duration::from_secs(5),
            sample_interval: Duration::from_millis(250),
        }
    }
}

/// Lower the calling thread's scheduling priority (Linux: nice +10 for this thread only), so
/// control-plane work yields to the shards. Best effort: an error leaves the priority as is.
pub fn lower_thread_priority() {
    // SAFETY: plain syscalls on the calling thread's own id; no memory is passed.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}

/// Spawn a control-plane thread named `name` at lowered priority.
pub(crate) fn spawn_control_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_thread_priority();
            f()
        })
        .map_err(|e| WeirError::Other(format!("starting the control thread {name}: {e}")))
}

/// Lifecycle state of a job as the control plane reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Finished,
    Failed(String),
    /// Cancelled through the control API.
    Cancelled,
}

impl JobState {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed(_) => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// One segment of the job graph as the dashboard draws it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SegmentView {
    pub name: String,
    /// Operators from head to tail (as registered on shard 0).
    pub operators: Vec<String>,
}

/// One edge of the job graph: which segment sends into it, which reads it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EdgeView {
    pub name: String,
    pub kind: &'static str,
    pub from_segment: Option<usize>,
    pub to_segment: Option<usize>,
    /// Head operator of the reading segment.
    pub reader: Option<String>,
}

/// A running (or finished) job as the control plane sees it.
pub struct JobHandle {
    /// The job's id: `1` for `weir run --http`, a sequence number in the daemon.
    pub id: String,
    pub name: String,
    pub shards: usize,
    /// CPUs the shards are pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    pub registry: Arc<MetricsRegistry>,
    segment_names: Vec<String>,
    edges: Vec<(String, EdgeKind)>,
    started: Instant,
    started_ms: i64,
    /// When the job left the running state.
    ended: Mutex<Option<Instant>>,
    state: Mutex<JobState>,
    /// The savepoint a stop-with-savepoint ended the job with.
    stopped_with_savepoint: Mutex<Option<String>>,
    samples: Samples,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("state", &self.state())
            .finish()
    }
}

impl JobHandle {
    /// A handle for `graph` about to run on `shards` shards, reporting into `registry` (id `1`).
    pub fn new(name: &str, graph: &JobGraph, shards: usize, registry: Arc<MetricsRegistry>) -> Arc<Self> {
        Self::with_id("1", name, graph, shards, Vec::new(), registry)
    }

    /// A handle with an explicit id and the CPUs its shards are pinned to.
    pub fn with_id(id: &str, name: &str, graph: &JobGraph, shards: usize, cpus: Vec<usize>, registry: Arc<MetricsRegistry>) -> Arc<Self> {
        let config = ControlConfig::default();
        let per_second = (Duration::from_secs(1).as_millis() / config.sample_interval.as_millis().max(1)) as usize;
        Arc::new(Self {
            id: id.to_string(),
            name: name.to_string(),
            shards,
            cpus,
            registry,
            segment_names: graph.segments.iter().map(|s| s.name.clone()).collect(),
            edges: graph.edges.iter().map(|e| (e.name.clone(), e.kind)).collect(),
            started: Instant::now(),
            started_ms: crate::time::now_ms(),
            ended: Mutex::new(None),
            state: Mutex::new(JobState::Running),
            stopped_with_savepoint: Mutex::new(None),
            samples: Samples {
                kept: Mutex::new(VecDeque::new()),
                capacity: per_second.max(1),
            },
        })
    }

    pub fn state(&self) -> JobState {
        self.state.lock().expect("job state").clone()
    }

    pub fn is_running(&self) -> bool {
        matches!(self.state(), JobState::Running)
    }

    pub fn set_state(&self, state: JobState) {
        if !matches!(state, JobState::Running) {
            self.ended.lock().expect("job end").get_or_insert_with(Instant::now);
        }
        *self.state.lock().expect("job state") = state;
    }

    /// Record the outcome of the job's run: finished (perhaps stopped with a savepoint),
    /// cancelled or failed.
    pub fn set_outcome(&self, result: &Result<crate::shard::runtime::JobReport>) {
        self.set_state(match result {
            Ok(report) => {
                *self.stopped_with_savepoint.lock().expect("job savepoint") = report.checkpoints.stopped_with_savepoint.clone();
                JobState::Finished
            }
            Err(WeirError::Cancelled) => JobState::Cancelled,
            Err(e) => JobState::Failed(e.to_string()),
        });
    }

    /// The savepoint a stop-with-savepoint ended the job with.
    pub fn stopped_with_savepoint(&self) -> Option<String> {
        self.stopped_with_savepoint.lock().expect("job savepoint").clone()
    }

    /// Time since the start, frozen when the job ended.
    pub fn uptime(&self) -> Duration {
        match *self.ended.lock().expect("job end") {
            Some(end) => end.duration_since(self.started),
            None => self.started.elapsed(),
        }
    }

    /// Wall-clock start (epoch ms).
    pub fn started_ms(&self) -> i64 {
        self.started_ms
    }

    /// The registry's figures now and about a second ago (for rates).
    pub fn window(&self) -> Window {
        self.samples.window(self)
    }

    /// Take one sample for the rates (the sampler thread calls this every interval).
    pub(crate) fn sample(&self) {
        self.samples.push(self.snapshot());
    }

    /// Segments and edges, with the operators of each segment once shard 0 has built them.
    pub fn graph(&self) -> (Vec<SegmentView>, Vec<EdgeView>) {
        let chains = self.registry.segment_operators();
        let segments: Vec<SegmentView> = self
            .segment_names
            .iter()
            .enumerate()
            .map(|(i, name)| SegmentView {
                name: name.clone(),
                operators: chains.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        let edges = self
            .edges
            .iter()
            .enumerate()
            .map(|(e, (name, kind))| {
                let reader = self.registry.reader_of(e);
                EdgeView {
                    name: name.clone(),
                    kind: match kind {
                        EdgeKind::Hash => "hash",
                        EdgeKind::Forward => "forward",
                    },
                    from_segment: segments.iter().position(|s| &s.name == name),
                    to_segment: reader.as_ref().and_then(|r| segments.iter().position(|s| s.operators.first() == Some(r))),
                    reader,
                }
            })
            .collect();
        (segments, edges)
    }

    /// Name of edge `e`.
    pub fn edge_name(&self, e: usize) -> String {
        self.edges.get(e).map(|(n, _)| n.clone()).unwrap_or_else(|| format!("edge{e}"))
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            operators: self.registry.operator_snapshots(),
            rings: self.registry.ring_figures(),
            latencies: self.registry.latency_snapshots(),
            operator_latencies: self.registry.operator_latency_snapshots(),
        }
    }
}

/// The registry's figures at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub operators: Vec<OperatorSnapshot>,
    pub rings: Vec<((usize, usize, usize), RingFigures)>,
    /// Sink latency (ingest → sink).
    pub latencies: Vec<LatencySnapshot>,
    /// Operator latency (ingest → operator input).
    pub operator_latencies: Vec<LatencySnapshot>,
}

/// The latest snapshot and one about a second older, to derive per-second rates.
pub struct Window {
    pub newest: Snapshot,
    pub oldest: Snapshot,
}

impl Window {
    /// Seconds between the two snapshots (never zero).
    pub fn seconds(&self) -> f64 {
        self.newest.at.duration_since(self.oldest.at).as_secs_f64().max(1e-3)
    }
}

/// Snapshots taken at a fixed interval by the sampler thread (bounded: about 1 s of them).
struct Samples {
    kept: Mutex<VecDeque<Snapshot>>,
    capacity: usize,
}

impl Samples {
    fn push(&self, s: Snapshot) {
        let mut kept = self.kept.lock().expect("samples");
        if kept.len() == self.capacity {
            kept.pop_front();
        }
        kept.push_back(s);
    }

    fn window(&self, job: &JobHandle) -> Window {
        let kept = self.kept.lock().expect("samples");
        let newest = job.snapshot();
        let oldest = kept.front().cloned().unwrap_or_else(|| newest.clone());
        Window { newest, oldest }
    }
}

/// The jobs a control server knows (bounded by its owner: one job, or the daemon's limits).
#[derive(Default)]
pub struct JobTable {
    jobs: Mutex<Vec<Arc<JobHandle>>>,
}

impl JobTable {
    pub fn add(&self, job: Arc<JobHandle>) {
        self.jobs.lock().expect("job table").push(job);
    }

    /// Every job, oldest first.
    pub fn all(&self) -> Vec<Arc<JobHandle>> {
        self.jobs.lock().expect("job table").clone()
    }

    pub fn get(&self, id: &str) -> Option<Arc<JobHandle>> {
        self.jobs.lock().expect("job table").iter().find(|j| j.id == id).cloned()
    }

    /// Keep at most `keep` jobs that are no longer running (the oldest go first).
    pub fn trim_finished(&self, keep: usize) {
        let mut jobs = self.jobs.lock().expect("job table");
        let finished = jobs.iter().filter(|j| !j.is_running()).count();
        let mut drop = finished.saturating_sub(keep);
        jobs.retain(|j| {
            if drop > 0 && !j.is_running() {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// What the HTTP handlers share.
pub(crate) struct Shared {
    pub config: ControlConfig,
    pub jobs: Arc<JobTable>,
    /// Set in the daemon: submissions, the daemon overview.
    pub daemon: Option<Arc<daemon::Daemon>>,
}

/// A running control server; stops (and joins its threads, and lets requests in flight
/// answer) when dropped.
pub struct ControlServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Requests being answered (a stop answers when its job has ended: let it finish).
    active: Arc<std::sync::atomic::AtomicUsize>,
    threads: Vec<JoinHandle<()>>,
}

impl ControlServer {
    /// Bind `addr` (port 0: an ephemeral port) and serve `job` until dropped.
    pub fn start(addr: &str, job: Arc<JobHandle>, config: ControlConfig) -> Result<Self> {
        let jobs = Arc::new(JobTable::default());
        jobs.add(job);
        Self::serve(addr, jobs, None, config)
    }

    /// Bind `addr` and serve the jobs in `jobs` (and, with `daemon`, submissions).
    pub(crate) fn serve(addr: &str, jobs: Arc<JobTable>, daemon: Option<Arc<daemon::Daemon>>, config: ControlConfig) -> Result<Self> {
        let addr: SocketAddr = addr.parse().map_err(|e| WeirError::Other(format!("--http {addr}: not an address: {e}")))?;
        if !addr.ip().is_loopback() && config.token.as_deref().is_none_or(str::is_empty) {
            return Err(WeirError::Other(format!(
                "--http {addr}: refusing to serve on a non-loopback address without --http-token"
            )));
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|e| WeirError::Other(format!("--http {addr}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| WeirError::Other(format!("--http {addr}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared { config, jobs, daemon });
        let sampler = {
            let shared = shared.clone();
            let stop = stop.clone();
            spawn_control_thread("weir-control-sampler", move || {
                while !stop.load(Ordering::Relaxed) {
                    for job in shared.jobs.all().iter().filter(|j| j.is_running()) {
                        job.sample();
                    }
                    std::thread::park_timeout(shared.config.sample_interval);
                }
            })?
        };
        let active = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = {
            let stop = stop.clone();
            let active = active.clone();
            spawn_control_thread("weir-control-http", move || http::serve(listener, shared, stop, active))?
        };
        Ok(Self {
            addr,
            stop,
            active,
            threads: vec![sampler, server],
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for t in self.threads.drain(..) {
            t.thread().unpark();
            let _ = t.join();
        }
        // Let requests in flight (a stop-with-savepoint waiting for its job to end) answer;
        // bounded by one socket timeout.
        let deadline = Instant::now() + ControlConfig::default().io_timeout;
        while self.active.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Run `graph` with a control server on `http_addr` serving its metrics, status and dashboard
/// while it runs and for `linger` after it ends. Returns the job's report.
pub fn execute_with_control(
    job_name: &str,
    graph: JobGraph,
    engine: &crate::config::EngineConfig,
    http_addr: &str,
    control: ControlConfig,
    linger: Duration,
    on_start: impl FnOnce(SocketAddr),
) -> Result<crate::shard::runtime::JobReport> {
    let registry = Arc::new(MetricsRegistry::default());
    let cpus = if engine.pin_cores { cpus_of(engine) } else { Vec::new() };
    let job = JobHandle::with_id("1", job_name, &graph, engine.shard_count(), cpus, registry.clone());
    let server = ControlServer::start(http_addr, job.clone(), control)?;
    on_start(server.local_addr());
    let progress = progress::ProgressLogger::start(job.clone(), progress::DEFAULT_INTERVAL)?;
    let result = crate::shard::runtime::execute_with_registry(graph, engine, registry);
    drop(progress);
    job.set_outcome(&result);
    if !linger.is_zero() {
        std::thread::sleep(linger);
    }
    drop(server);
    result
}

/// The CPUs the shards of a job with `engine` are pinned to.
pub fn cpus_of(engine: &crate::config::EngineConfig) -> Vec<usize> {
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    (0..engine.shard_count()).map(|s| engine.cpu_of_shard(s, online)).collect()
}

/// A tiny blocking HTTP/1.1 POST without a body (for commands such as `/api/savepoint`):
/// returns the status code and body.
pub fn http_post(addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request("POST", addr, path, token, timeout, &[])
}

/// A tiny blocking HTTP/1.1 POST of a JSON `body`: returns the status code and body.
pub fn http_post_json(addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_request("POST", addr, path, token, timeout, body)
}

/// A tiny blocking HTTP/1.1 GET (for tests and tooling): returns the status code and body.
/// Bounded by `timeout` per socket operation; reads until the server closes.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request("GET", addr, path, token, timeout, &[])
}

fn http_request(method: &str, addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration, body: &[u8]) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let content_type = if body.is_empty() { "" } else { "Content-Type: application/json\r\n" };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.take(64 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}
