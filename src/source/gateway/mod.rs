//! The edge ingestion gateway: a source that accepts events over HTTP (`POST /v1/events`, JSON
//! lines), a length-prefixed TCP protocol ([`protocol`]) and MQTT subscriptions ([`mqtt`]),
//! acknowledges them only once they
//! are durable in weir's own log ([`log`]: weir-storage WAL segments, CRC-framed, group commit +
//! `fdatasync`), and feeds them to the job through one split per log partition ([`reader`]).
//!
//! ## Threads
//! The network and the log writer run on one dedicated *gateway thread* (its own unpinned glommio
//! executor: io_uring sockets and direct-I/O files, never a shard core). Why not on the shards:
//! the gateway must keep answering — accepting, or refusing with 503 — while the shards are busy
//! running operators (a shard only yields between input steps), connection limits are global
//! and trivially exact on one thread, and ack latency then does not depend on operator work.
//! The shards read the log files with their own direct-I/O reads; the two sides share only
//! atomics (durable frontier, reader position), never a lock.
//!
//! ## Guarantees
//! - An acknowledged event is durable (fdatasync'ed) in the log; a crash after the ack loses
//!   nothing: on restart the log is recovered (torn tail cut) and the readers replay it (from the
//!   oldest retained event, or from a checkpoint's position through `SplitReader::seek`).
//! - A request carrying an `Idempotency-Key` (HTTP header) or key (TCP frame) is appended at most
//!   once while its key is among the last `dedup_window` keys, across restarts: a retry gets the
//!   first attempt's answer (`"duplicate": true`).
//! - A request is atomic: all its events are accepted or none (a bad JSON line rejects the request).
//!
//! ## Limits (every one in [`GatewayConfig`])
//! Tokens (`Authorization: Bearer` / AUTH frame; without tokens the gateway binds loopback only),
//! body size (checked against `Content-Length` before any body byte is read), connections in total
//! and per client IP, header / idle / body timeouts, in-flight bytes, backlog. When the job falls
//! behind (more than `max_backlog_events` durable events not yet read) or in-flight bytes would
//! pass `max_inflight_bytes`, requests are refused with 503 + `Retry-After` instead of buffered.
//! At the total connection limit the longest-waiting connection that is not mid-request is
//! evicted, so idle and trickling connections cannot lock legitimate clients out.

pub mod dedup;
pub mod http;
pub mod log;
pub mod mqtt;
mod notify;
pub mod protocol;
pub mod reader;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use self::log::{partition_dir, PartitionShared, Poison};
use self::reader::GatewayReader;
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;
use crate::source::file::{FileFormat, Line, LineInfo, ParseLine};
use crate::source::{Source, SplitReader};

/// Settings of a gateway; every limit has a default.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// HTTP listen address (`None`: no HTTP endpoint). Port 0 picks a free port.
    pub http_address: Option<String>,
    /// TCP protocol listen address (`None`: no TCP endpoint).
    pub tcp_address: Option<String>,
    /// Folder of the log (`p-<n>/wal-*.log` per partition). Keep it across restarts.
    pub log_dir: PathBuf,
    /// Log partitions = source splits (split `i` is read by shard `i % shards`). A connection
    /// writes to partition `connection number % partitions`. Fixed for the life of a log folder.
    pub partitions: usize,
    /// Accepted bearer tokens; empty = no authentication, loopback addresses only.
    pub tokens: Vec<String>,
    /// Largest request body (HTTP) or frame (TCP) in bytes.
    pub max_body_bytes: usize,
    /// Largest HTTP request head in bytes.
    pub max_header_bytes: usize,
    /// Open connections in total (at the limit the longest-waiting idle one is evicted).
    pub max_connections: usize,
    /// Open connections per client IP address (more are answered 429).
    pub max_connections_per_client: usize,
    /// Time a new connection has to send a complete request head (and a started head to end).
    pub header_timeout: Duration,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Time to receive a request body (and to write a response).
    pub body_timeout: Duration,
    /// Request bytes held in memory at once (bodies being read or waiting for their commit).
    pub max_inflight_bytes: usize,
    /// Durable events not yet read by the job, per partition, above which requests get 503.
    pub max_backlog_events: u64,
    /// Seconds clients are told to wait (`Retry-After`) after a 503 or 429.
    pub retry_after_secs: u64,
    /// Size at which a log segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Bytes of log kept per partition (consumed segments beyond it are deleted).
    pub retention_bytes: u64,
    /// Idempotency keys remembered (the dedup window).
    pub dedup_window: usize,
    /// Longest accepted idempotency key in bytes.
    pub max_idempotency_key_bytes: usize,
    /// Check at ingestion that every event is valid JSON (format `json`), answering 400.
    pub validate_json: bool,
    /// How long a reader with nothing to read waits before looking again (ms).
    pub poll_ms: u64,
    /// Bytes a reader reads from a segment per request.
    pub read_chunk_bytes: usize,
    /// io_uring buffer memory of the gateway thread's executor.
    pub io_memory_bytes: usize,
    /// Also ingest from an MQTT broker (QoS 1, persistent session; see [`mqtt`]).
    pub mqtt: Option<mqtt::MqttConfig>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            http_address: Some("127.0.0.1:0".into()),
            tcp_address: None,
            log_dir: PathBuf::from("gateway-log"),
            partitions: 1,
            tokens: Vec::new(),
            max_body_bytes: 4 << 20,
            max_header_bytes: 16 << 10,
            max_connections: 1024,
            max_connections_per_client: 64,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            max_inflight_bytes: 64 << 20,
            max_backlog_events: 1_000_000,
            retry_after_secs: 1,
            segment_bytes: 16 << 20,
            retention_bytes: 256 << 20,
            dedup_window: 100_000,
            max_idempotency_key_bytes: 256,
            validate_json: true,
            poll_ms: 2,
            read_chunk_bytes: 256 << 10,
            io_memory_bytes: 1 << 20,
            mqtt: None,
        }
    }
}

impl GatewayConfig {
    /// Check the limits; the error names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.http_address.is_none() && self.tcp_address.is_none() && self.mqtt.is_none() {
            return Err("gateway: set http_address, tcp_address or mqtt".into());
        }
        if self.mqtt.as_ref().is_some_and(|m| m.topics.is_empty() || m.client_id.is_empty()) {
            return Err("gateway: mqtt needs a client id and at least one topic filter".into());
        }
        let positive = [
            ("partitions", self.partitions as u64),
            ("max_body_bytes", self.max_body_bytes as u64),
            ("max_header_bytes", self.max_header_bytes as u64),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_client", self.max_connections_per_client as u64),
            ("max_inflight_bytes", self.max_inflight_bytes as u64),
            ("max_backlog_events", self.max_backlog_events),
            ("poll_ms", self.poll_ms),
            ("read_chunk_bytes", self.read_chunk_bytes as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(format!("gateway: {name} must be at least 1"));
            }
        }
        if self.partitions > 1024 {
            return Err(format!("gateway: partitions = {} (at most 1024)", self.partitions));
        }
        if self.max_inflight_bytes < self.max_body_bytes {
            return Err(format!(
                "gateway: max_inflight_bytes = {} is smaller than max_body_bytes = {}",
                self.max_inflight_bytes, self.max_body_bytes
            ));
        }
        if self.segment_bytes < 64 << 10 {
            return Err(format!("gateway: segment_bytes = {} (at least 65536)", self.segment_bytes));
        }
        if self.tokens.iter().any(|t| t.is_empty() || t.contains(char::is_whitespace)) {
            return Err("gateway: tokens must be non-empty and without spaces".into());
        }
        if self.poll_ms > 1000 {
            return Err(format!("gateway: poll_ms = {} (at most 1000)", self.poll_ms));
        }
        Ok(())
    }

    /// Largest frame a reader may meet (a request of `max_body_bytes` with framing overhead).
    pub(crate) fn max_frame_bytes(&self) -> usize {
        // Per event 17 bytes of put header; an event is at least 1 byte plus a newline.
        self.max_body_bytes * 10 + self.max_idempotency_key_bytes + 64
    }
}

/// Counters of a gateway (relaxed atomics, read by [`Gateway::stats`] and `GET /v1/stats`).
#[derive(Debug, Default)]
pub struct GatewayCounters {
    pub connections_open: AtomicU64,
    pub connections_accepted: AtomicU64,
    pub connections_evicted: AtomicU64,
    pub rejected_connection_limit: AtomicU64,
    pub rejected_client_limit: AtomicU64,
    pub rejected_unauthorized: AtomicU64,
    pub rejected_too_large: AtomicU64,
    pub rejected_bad_request: AtomicU64,
    pub rejected_backpressure: AtomicU64,
    pub timeouts: AtomicU64,
    pub requests_accepted: AtomicU64,
    pub requests_duplicate: AtomicU64,
    pub events_accepted: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub body_bytes_read: AtomicU64,
    pub inflight_bytes: AtomicU64,
    pub inflight_bytes_high_water: AtomicU64,
    pub torn_tails_recovered: AtomicU64,
    pub mqtt_connects: AtomicU64,
    pub mqtt_messages: AtomicU64,
    pub mqtt_errors: AtomicU64,
}

/// A snapshot of the gateway's counters and its partitions.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GatewayStats {
    pub connections_open: u64,
    pub connections_accepted: u64,
    pub connections_evicted: u64,
    pub rejected_connection_limit: u64,
    pub rejected_client_limit: u64,
    pub rejected_unauthorized: u64,
    pub rejected_too_large: u64,
    pub rejected_bad_request: u64,
    pub rejected_backpressure: u64,
    pub timeouts: u64,
    pub requests_accepted: u64,
    pub requests_duplicate: u64,
    pub events_accepted: u64,
    pub events_duplicate: u64,
    pub body_bytes_read: u64,
    pub inflight_bytes: u64,
    pub inflight_bytes_high_water: u64,
    pub torn_tails_recovered: u64,
    pub mqtt_connects: u64,
    pub mqtt_messages: u64,
    pub mqtt_errors: u64,
    pub mqtt_last_error: Option<String>,
    /// Per partition: durable events end, reader position, oldest retained, bytes retained.
    pub partitions: Vec<PartitionStats>,
    pub draining: bool,
    pub failed: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PartitionStats {
    pub durable_next: u64,
    pub consumed: u64,
    pub oldest: u64,
    pub retained_bytes: u64,
}

/// State shared by the gateway thread, the shards' readers and the handle.
#[derive(Debug)]
pub struct GatewayShared {
    pub name: String,
    pub log_dir: PathBuf,
    pub partitions: Vec<PartitionShared>,
    pub poison: Poison,
    pub counters: GatewayCounters,
    /// Stop accepting; readers end once they have read everything durable (set by the gateway
    /// thread when the last in-flight request is done).
    pub drained: AtomicBool,
    pub(crate) drain_requested: AtomicBool,
    pub(crate) stop: AtomicBool,
    /// The MQTT client's last connection error (for stats).
    pub(crate) mqtt_last_error: std::sync::Mutex<Option<String>>,
}

impl GatewayShared {
    pub fn stats(&self) -> GatewayStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GatewayStats {
            connections_open: l(&c.connections_open),
            connections_accepted: l(&c.connections_accepted),
            connections_evicted: l(&c.connections_evicted),
            rejected_connection_limit: l(&c.rejected_connection_limit),
            rejected_client_limit: l(&c.rejected_client_limit),
            rejected_unauthorized: l(&c.rejected_unauthorized),
            rejected_too_large: l(&c.rejected_too_large),
            rejected_bad_request: l(&c.rejected_bad_request),
            rejected_backpressure: l(&c.rejected_backpressure),
            timeouts: l(&c.timeouts),
            requests_accepted: l(&c.requests_accepted),
            requests_duplicate: l(&c.requests_duplicate),
            events_accepted: l(&c.events_accepted),
            events_duplicate: l(&c.events_duplicate),
            body_bytes_read: l(&c.body_bytes_read),
            inflight_bytes: l(&c.inflight_bytes),
            inflight_bytes_high_water: l(&c.inflight_bytes_high_water),
            torn_tails_recovered: l(&c.torn_tails_recovered),
            mqtt_connects: l(&c.mqtt_connects),
            mqtt_messages: l(&c.mqtt_messages),
            mqtt_errors: l(&c.mqtt_errors),
            mqtt_last_error: self.mqtt_last_error.lock().expect("mqtt error slot").clone(),
            partitions: self
                .partitions
                .iter()
                .map(|p| PartitionStats {
                    durable_next: p.durable_next.load(Ordering::Acquire),
                    consumed: p.consumed.load(Ordering::Acquire),
                    oldest: p.oldest.load(Ordering::Acquire),
                    retained_bytes: p.retained_bytes.load(Ordering::Relaxed),
                })
                .collect(),
            draining: self.drain_requested.load(Ordering::Relaxed),
            failed: self.poison.get().map(str::to_string),
        }
    }
}

/// A running gateway (its thread stops when the last handle is dropped).
pub struct Gateway {
    shared: Arc<GatewayShared>,
    config: GatewayConfig,
    http_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    thread: Option<glommio::ExecutorJoinHandle<()>>,
    _lock: std::fs::File,
}

/// Bind `addr` (no SO_REUSEPORT: a second gateway on the same port is an error), non-blocking,
/// with a listen backlog of `backlog`.
fn bind(addr: &str, backlog: i32) -> Result<(OwnedFd, SocketAddr)> {
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .map_err(|e| WeirError::Config(format!("gateway address `{addr}`: {e}")))?
        .next()
        .ok_or_else(|| WeirError::Config(format!("gateway address `{addr}` resolves to nothing")))?;
    let domain = if sa.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let io = |e| WeirError::io("binding the gateway", PathBuf::from(addr), e);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP)).map_err(io)?;
    socket.set_reuse_address(true).map_err(io)?;
    socket.bind(&sa.into()).map_err(io)?;
    socket.listen(backlog).map_err(io)?;
    socket.set_nonblocking(true).map_err(io)?;
    let local = socket
        .local_addr()
        .map_err(io)?
        .as_socket()
        .ok_or_else(|| WeirError::Config(format!("gateway address `{addr}` is not an IP address")))?;
    // SAFETY: the descriptor comes from `into_raw_fd` and is owned by nothing else.
    Ok((
        unsafe { std::os::fd::FromRawFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(socket)) },
        local,
    ))
}

fn is_loopback(addr: &str) -> bool {
    use std::net::ToSocketAddrs;
    addr.to_socket_addrs().map(|mut a| a.all(|s| s.ip().is_loopback())).unwrap_or(false)
}

/// Take an exclusive lock on `<log_dir>/LOCK` (two gateways must never share a log).
fn lock_log_dir(dir: &std::path::Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::create_dir_all(dir).map_err(|e| WeirError::io("creating gateway log folder", dir, e))?;
    let path = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WeirError::io("opening gateway log lock", &path, e))?;
    // SAFETY: flock on an owned, open descriptor has no memory effects.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(WeirError::Config(format!("gateway log {} is in use by another gateway", dir.display())));
    }
    Ok(f)
}

/// A log written with more partitions than configured would leave events unread: refuse.
fn check_partition_count(config: &GatewayConfig) -> Result<()> {
    let entries = std::fs::read_dir(&config.log_dir).map_err(|e| WeirError::io("listing gateway log folder", &config.log_dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let n = name.to_string_lossy().strip_prefix("p-").and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = n {
            if n >= config.partitions {
                return Err(WeirError::Config(format!(
                    "gateway log {} has partition {n} but partitions = {}: keep the partition count of a log",
                    config.log_dir.display(),
                    config.partitions
                )));
            }
        }
    }
    Ok(())
}

impl Gateway {
    /// Recover the log, bind the endpoints and start serving on the gateway thread. `name`
    /// names the gateway in errors, stats and dead letters (the SQL table name).
    pub fn start(name: &str, config: GatewayConfig) -> Result<Self> {
        config.validate().map_err(WeirError::Config)?;
        if config.tokens.is_empty() {
            for addr in [&config.http_address, &config.tcp_address].into_iter().flatten() {
                if !is_loopback(addr) {
                    return Err(WeirError::Config(format!("gateway {name}: binding {addr} (not loopback) needs an auth token")));
                }
            }
        }
        let lock = lock_log_dir(&config.log_dir)?;
        check_partition_count(&config)?;
        let backlog = config.max_connections.min(65_535) as i32;
        let http = config.http_address.as_deref().map(|a| bind(a, backlog)).transpose()?;
        let tcp = config.tcp_address.as_deref().map(|a| bind(a, backlog)).transpose()?;
        let shared = Arc::new(GatewayShared {
            name: name.to_string(),
            log_dir: config.log_dir.clone(),
            partitions: (0..config.partitions).map(|_| PartitionShared::default()).collect(),
            poison: Poison::default(),
            counters: GatewayCounters::default(),
            drained: AtomicBool::new(false),
            drain_requested: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            mqtt_last_error: std::sync::Mutex::new(None),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_shared = shared.clone();
        let thread_config = config.clone();
        let (http_addr, tcp_addr) = (http.as_ref().map(|h| h.1), tcp.as_ref().map(|t| t.1));
        let (http_fd, tcp_fd) = (http.map(|h| h.0), tcp.map(|t| t.0));
        let builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .name("weir-gateway")
            .io_memory(config.io_memory_bytes);
        let thread = builder
            .spawn(move || server::run(thread_config, thread_shared, http_fd, tcp_fd, ready_tx))
            .map_err(|e| WeirError::Other(format!("starting the gateway thread: {e}")))?;
        let started = ready_rx
            .recv()
            .unwrap_or_else(|_| Err(WeirError::Other("the gateway thread ended during start-up".into())));
        if let Err(e) = started {
            // The thread has returned already (it reports start-up failures and ends).
            let _ = thread.join();
            return Err(e);
        }
        Ok(Self {
            shared,
            config,
            http_addr,
            tcp_addr,
            thread: Some(thread),
            _lock: lock,
        })
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    pub fn shared(&self) -> &Arc<GatewayShared> {
        &self.shared
    }

    pub fn stats(&self) -> GatewayStats {
        self.shared.stats()
    }

    /// Stop accepting events; once the requests in flight are answered the source's readers end
    /// after the last durable event (a bounded run). Also `POST /v1/drain`.
    pub fn drain(&self) {
        self.shared.drain_requested.store(true, Ordering::Release);
    }

    /// True once draining finished (no request in flight, nothing more will be appended).
    pub fn drained(&self) -> bool {
        self.shared.drained.load(Ordering::Acquire)
    }

    /// A printable summary of the endpoints, e.g. for the CLI.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("weir gateway `{}`:", self.shared.name)];
        if let Some(a) = self.http_addr {
            parts.push(format!("http://{a}/v1/events"));
        }
        if let Some(a) = self.tcp_addr {
            parts.push(format!("tcp://{a}"));
        }
        if let Some(m) = &self.config.mqtt {
            parts.push(format!("mqtt://{} topics {}", m.broker, m.topics.join(",")));
        }
        parts.push(format!("log {}", self.config.log_dir.display()));
        parts.join(" ")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Builds a parser of the source's records (one per split).
pub(crate) type ParserMaker<T> = Arc<dyn Fn() -> Box<dyn ParseLine<T>> + Send + Sync>;

/// The gateway as a job source: one split per log partition.
pub struct GatewaySource<T> {
    gateway: Arc<Gateway>,
    make_parser: ParserMaker<T>,
    id: u64,
}

impl<T: serde::de::DeserializeOwned + 'static> GatewaySource<T> {
    /// Events are JSON documents deserialised into `T`.
    pub fn json(gateway: Gateway) -> Self {
        Self::with_parser(gateway, Arc::new(|| crate::source::file::json_parser::<T>(FileFormat::JsonLines)))
    }
}

impl GatewaySource<Line> {
    /// Events as text, with `gateway <name> partition <p>` and the event's ordinal as position.
    pub fn lines(gateway: Gateway) -> Self {
        Self::with_parser(gateway, Arc::new(|| crate::source::file::line_parser(FileFormat::Lines)))
    }
}

impl<T> GatewaySource<T> {
    pub(crate) fn with_parser(gateway: Gateway, make_parser: ParserMaker<T>) -> Self {
        Self {
            gateway: Arc::new(gateway),
            make_parser,
            id: crate::source::file::next_source_id(),
        }
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    /// A handle to the gateway (for tests and the CLI: addresses, stats, drain).
    pub fn handle(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }
}

impl<T: Send + 'static> Source<T> for GatewaySource<T> {
    fn name(&self) -> String {
        "gateway".into()
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.gateway.config.partitions)
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        let config = &self.gateway.config;
        if split >= config.partitions {
            return Err(WeirError::Other(format!(
                "gateway source: split {split} of {} does not exist",
                config.partitions
            )));
        }
        let shared = self.gateway.shared.clone();
        Ok(Box::new(GatewayReader {
            info: LineInfo {
                file: Arc::from(format!("gateway {} partition {split}", shared.name).as_str()),
                line: 0,
            },
            dir: partition_dir(&config.log_dir, split),
            shared,
            partition: split,
            position: None,
            file: None,
            buf: Vec::new(),
            buf_offset: 0,
            chunk_bytes: config.read_chunk_bytes,
            max_frame_bytes: config.max_frame_bytes(),
            poll_ms: config.poll_ms,
            parser: (self.make_parser)(),
            policy: ctx.config.on_bad_record.clone(),
            metrics: ctx
                .source_metrics()
                .ok_or_else(|| WeirError::Other("gateway source built outside a source segment".into()))?,
            dead_letters: crate::source::file::dead_letters_for(self.id, ctx)?,
            checkpointing: ctx.checkpointing(),
            last_checkpoint_next: std::cell::Cell::new(None),
        }))
    }
}

/// The client address a connection is counted under.
pub(crate) fn client_of(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests;
