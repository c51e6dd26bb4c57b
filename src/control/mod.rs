//! The control plane: an HTTP server on its own thread that serves Prometheus metrics
//! (`/metrics`), the job status (`/api/status`, `/api/jobs`) and a dashboard (`/`) for a running
//! job, reading the job's [`MetricsRegistry`] atomics when asked.
//!
//! Invariants:
//! - the data plane never waits for the control plane: the server and its sampler run on their
//!   own threads and only load relaxed atomics the shards write once per batch;
//! - everything is bounded ([`ControlConfig`]): connections, request header and body sizes,
//!   socket timeouts, the number of samples kept;
//! - the server listens on loopback unless a bearer token is configured: a non-loopback address
//!   without a token is refused at start.

mod http;
pub mod latency;
pub mod metrics;
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
    /// Largest request body accepted, in bytes (the API only has GETs).
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

/// Lifecycle state of a job as the control plane reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Finished,
    Failed(String),
}

impl JobState {
    pub fn as_str(&self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed(_) => "failed",
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
    pub name: String,
    pub shards: usize,
    pub registry: Arc<MetricsRegistry>,
    segment_names: Vec<String>,
    edges: Vec<(String, EdgeKind)>,
    started: Instant,
    state: Mutex<JobState>,
}

impl JobHandle {
    /// A handle for `graph` about to run on `shards` shards, reporting into `registry`.
    pub fn new(name: &str, graph: &JobGraph, shards: usize, registry: Arc<MetricsRegistry>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            shards,
            registry,
            segment_names: graph.segments.iter().map(|s| s.name.clone()).collect(),
            edges: graph.edges.iter().map(|e| (e.name.clone(), e.kind)).collect(),
            started: Instant::now(),
            state: Mutex::new(JobState::Running),
        })
    }

    pub fn state(&self) -> JobState {
        self.state.lock().expect("job state").clone()
    }

    pub fn set_state(&self, state: JobState) {
        *self.state.lock().expect("job state") = state;
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
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
        }
    }
}

/// The registry's figures at one instant.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub at: Instant,
    pub operators: Vec<OperatorSnapshot>,
    pub rings: Vec<((usize, usize, usize), RingFigures)>,
    pub latencies: Vec<LatencySnapshot>,
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

/// What the HTTP handlers share.
pub(crate) struct Shared {
    pub job: Arc<JobHandle>,
    pub config: ControlConfig,
    samples: Samples,
}

impl Shared {
    pub fn window(&self) -> Window {
        self.samples.window(&self.job)
    }
}

/// A running control server; stops (and joins its threads) when dropped.
pub struct ControlServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl ControlServer {
    /// Bind `addr` (port 0: an ephemeral port) and serve `job` until dropped.
    pub fn start(addr: &str, job: Arc<JobHandle>, config: ControlConfig) -> Result<Self> {
        let addr: SocketAddr = addr.parse().map_err(|e| WeirError::Other(format!("--http {addr}: not an address: {e}")))?;
        if !addr.ip().is_loopback() && config.token.as_deref().is_none_or(str::is_empty) {
            return Err(WeirError::Other(format!(
                "--http {addr}: refusing to serve on a non-loopback address without --http-token"
            )));
        }
        let listener = std::net::TcpListener::bind(addr).map_err(|e| WeirError::Other(format!("--http {addr}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| WeirError::Other(format!("--http {addr}: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let per_second = (Duration::from_secs(1).as_millis() / config.sample_interval.as_millis().max(1)) as usize;
        let shared = Arc::new(Shared {
            job,
            samples: Samples {
                kept: Mutex::new(VecDeque::new()),
                capacity: per_second.max(1),
            },
            config,
        });
        let sampler = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weir-control-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        shared.samples.push(shared.job.snapshot());
                        std::thread::sleep(shared.config.sample_interval);
                    }
                })
                .map_err(|e| WeirError::Other(format!("starting the control sampler: {e}")))?
        };
        let server = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("weir-control-http".into())
                .spawn(move || http::serve(listener, shared, stop))
                .map_err(|e| WeirError::Other(format!("starting the control server: {e}")))?
        };
        Ok(Self {
            addr,
            stop,
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
            let _ = t.join();
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
    let job = JobHandle::new(job_name, &graph, engine.shard_count(), registry.clone());
    let server = ControlServer::start(http_addr, job.clone(), control)?;
    on_start(server.local_addr());
    let result = crate::shard::runtime::execute_with_registry(graph, engine, registry);
    job.set_state(match &result {
        Ok(_) => JobState::Finished,
        Err(e) => JobState::Failed(e.to_string()),
    });
    if !linger.is_zero() {
        std::thread::sleep(linger);
    }
    drop(server);
    result
}

/// A tiny blocking HTTP/1.1 POST without a body (for commands such as `/api/savepoint`):
/// returns the status code and body.
pub fn http_post(addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request("POST", addr, path, token, timeout)
}

/// A tiny blocking HTTP/1.1 GET (for tests and tooling): returns the status code and body.
/// Bounded by `timeout` per socket operation; reads until the server closes.
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration) -> std::io::Result<(u16, String)> {
    http_request("GET", addr, path, token, timeout)
}

fn http_request(method: &str, addr: SocketAddr, path: &str, token: Option<&str>, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.take(64 << 20).read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok((status, body.to_string()))
}
