//! The gateway thread: recovers the log, accepts HTTP and TCP-protocol connections, enforces
//! the limits, appends accepted requests to the log and answers once they are durable.
//!
//! Everything here runs on the gateway thread's own glommio executor (io_uring sockets, one task
//! per connection, one committer task per partition), never on a shard.
//!
//! Invariants:
//! - a request body is read only after its head passed authentication, the body-size limit, the
//!   backlog bound and the in-flight budget; the budget (`max_inflight_bytes`) is reserved before
//!   the first body byte is read and released after the answer, so request memory is bounded;
//! - a request is answered 200 / `Ok` only after every one of its events is durable;
//! - connections: at most `max_connections` (the longest-waiting connection that is between
//!   requests is evicted to admit a new one) and `max_connections_per_client` per client IP;
//! - every wait on a client has a deadline (header, idle, body timeouts).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Shutdown};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::dedup::{Accepted, DedupWindow};
use super::http::{error_body, head_end, parse_head, response, RequestHead};
use super::log::{partition_dir, recover, AppendError, PartitionLog};
use super::mqtt::{self, MqttConfig};
use super::protocol::{self, Reply, Status};
use super::{client_of, GatewayConfig, GatewayShared};
use crate::error::Result;

/// Bytes read from a socket per read call while looking for a request head.
const READ_BYTES: usize = 16 << 10;
/// After an early error answer: discard at most this much of what the client still sends.
const LINGER_BYTES: usize = 256 << 10;
const LINGER: Duration = Duration::from_millis(200);

/// Run `f` until `deadline`; `None` if the deadline passed first.
async fn within<F: Future>(deadline: Instant, f: F) -> Option<F::Output> {
    let now = Instant::now();
    if deadline <= now {
        return None;
    }
    let sleep = std::pin::pin!(glommio::timer::sleep(deadline - now));
    let f = std::pin::pin!(f);
    match select(f, sleep).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Append up to `max` bytes from the socket to `buf`; the number read (0 at end of stream).
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, max: usize) -> std::io::Result<usize> {
    let old = buf.len();
    buf.resize(old + max, 0);
    let r = stream.read(&mut buf[old..]).await;
    buf.truncate(old + *r.as_ref().unwrap_or(&0));
    r
}

/// Read until `buf` holds `want` bytes, by `deadline`. `Ok(false)`: the deadline passed.
async fn fill_to(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize, deadline: Instant) -> std::io::Result<bool> {
    while buf.len() < want {
        match within(deadline, read_some(stream, buf, (want - buf.len()).min(1 << 20))).await {
            None => return Ok(false),
            Some(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e),
        }
    }
    Ok(true)
}

async fn write_by(stream: &mut TcpStream, bytes: &[u8], deadline: Instant) -> bool {
    matches!(within(deadline, stream.write_all(bytes)).await, Some(Ok(())))
}

/// Half-close after an early answer and discard (never buffer) a bounded amount of what the
/// client is still sending, so it can read the answer before the connection closes.
async fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write).await;
    let deadline = Instant::now() + LINGER;
    let mut scratch = vec![0u8; READ_BYTES];
    let mut left = LINGER_BYTES;
    while left > 0 {
        match within(deadline, stream.read(&mut scratch)).await {
            Some(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Compare without an early exit on the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct ConnEntry {
    fd: RawFd,
    client: IpAddr,
    /// When it started waiting for its next request; `None` while a request is being served.
    waiting_since: Option<Instant>,
}

#[derive(Default)]
struct Conns {
    open: HashMap<u64, ConnEntry>,
    per_client: HashMap<IpAddr, usize>,
}

impl Conns {
    fn remove(&mut self, id: u64) -> Option<ConnEntry> {
        let e = self.open.remove(&id)?;
        if let Some(n) = self.per_client.get_mut(&e.client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&e.client);
            }
        }
        Some(e)
    }
}

enum Admission {
    Admitted(u64),
    ClientLimit,
    Full,
}

/// The gateway thread's state.
struct Server {
    config: GatewayConfig,
    shared: Arc<GatewayShared>,
    logs: Vec<Rc<PartitionLog>>,
    dedup: RefCell<DedupWindow>,
    conns: RefCell<Conns>,
    next_conn: Cell<u64>,
    inflight: Cell<usize>,
    active_requests: Cell<usize>,
    draining: Cell<bool>,
}

/// Unregisters a connection when its task ends (declared after the stream, so it drops first
/// and the descriptor is still open while it is in the table).
struct ConnGuard {
    server: Rc<Server>,
    id: u64,
}

impl ConnGuard {
    fn waiting(&self) {
        if let Some(e) = self.server.conns.borrow_mut().open.get_mut(&self.id) {
            e.waiting_since = Some(Instant::now());
        }
    }
    fn busy(&self) {
        if let Some(e) = self.server.conns.borrow_mut().open.get_mut(&self.id) {
            e.waiting_since = None;
        }
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if self.server.conns.borrow_mut().remove(self.id).is_some() {
            self.server.shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A reservation of in-flight request bytes, released on drop.
struct Inflight<'a> {
    server: &'a Server,
    bytes: usize,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let now = self.server.inflight.get() - self.bytes;
        self.server.inflight.set(now);
        self.server.shared.counters.inflight_bytes.store(now as u64, Ordering::Relaxed);
    }
}

/// Why a request was not accepted (mapped to an HTTP status or a TCP status).
enum Refusal {
    Unauthorized,
    TooLarge(String),
    BadRequest(String),
    /// Backpressure, draining, or a failed commit: come back later.
    RetryLater(String),
    Timeout,
    Failed(String),
}

/// An appended request (to wait for), or a known key's earlier request.
enum Appended {
    New { accepted: Accepted, generation: u64 },
    Known(Accepted),
}

/// What an accepted request got.
struct Ack {
    accepted: Accepted,
    duplicate: bool,
}

impl Server {
    fn authorized(&self, presented: Option<&[u8]>) -> bool {
        if self.config.tokens.is_empty() {
            return true;
        }
        let presented = presented.unwrap_or(&[]);
        // Check every token (no early exit tells which one matched).
        self.config.tokens.iter().fold(false, |ok, t| same_secret(presented, t.as_bytes()) | ok)
    }

    fn admit(&self, fd: RawFd, client: IpAddr) -> Admission {
        let mut conns = self.conns.borrow_mut();
        if conns.per_client.get(&client).copied().unwrap_or(0) >= self.config.max_connections_per_client {
            return Admission::ClientLimit;
        }
        if conns.open.len() >= self.config.max_connections {
            let victim = conns
                .open
                .iter()
                .filter_map(|(id, e)| e.waiting_since.map(|t| (t, *id)))
                .min()
                .map(|(_, id)| id);
            let Some(victim) = victim else {
                return Admission::Full;
            };
            let e = conns.remove(victim).expect("victim is open");
            // Its task sees end of stream and ends; its guard finds it gone.
            // SAFETY: the descriptor is open (its task owns the stream and unregisters before
            // closing it); shutdown has no memory effects.
            unsafe { libc::shutdown(e.fd, libc::SHUT_RDWR) };
            self.shared.counters.connections_open.fetch_sub(1, Ordering::Relaxed);
            add(&self.shared.counters.connections_evicted, 1);
        }
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        conns.open.insert(
            id,
            ConnEntry {
                fd,
                client,
                waiting_since: Some(Instant::now()),
            },
        );
        *conns.per_client.entry(client).or_insert(0) += 1;
        add(&self.shared.counters.connections_open, 1);
        add(&self.shared.counters.connections_accepted, 1);
        Admission::Admitted(id)
    }

    fn reserve(&self, bytes: usize) -> Option<Inflight<'_>> {
        let now = self.inflight.get() + bytes;
        if now > self.config.max_inflight_bytes {
            return None;
        }
        self.inflight.set(now);
        let c = &self.shared.counters;
        c.inflight_bytes.store(now as u64, Ordering::Relaxed);
        c.inflight_bytes_high_water.fetch_max(now as u64, Ordering::Relaxed);
        Some(Inflight { server: self, bytes })
    }

    /// Checks made before any body byte is read: draining, backlog, in-flight budget.
    fn admit_body(&self, partition: usize, bytes: usize) -> Result<Inflight<'_>, Refusal> {
        if self.draining.get() {
            return Err(Refusal::RetryLater("the gateway is draining".into()));
        }
        if let Some(p) = self.shared.poison.get() {
            return Err(Refusal::Failed(p.to_string()));
        }
        let backlog = self.shared.partitions[partition].backlog_events();
        if backlog > self.config.max_backlog_events {
            add(&self.shared.counters.rejected_backpressure, 1);
            return Err(Refusal::RetryLater(format!(
                "backpressure: {backlog} events wait for the job (max_backlog_events = {})",
                self.config.max_backlog_events
            )));
        }
        self.reserve(bytes).ok_or_else(|| {
            add(&self.shared.counters.rejected_backpressure, 1);
            Refusal::RetryLater(format!("backpressure: {} request bytes in flight", self.inflight.get()))
        })
    }

    /// Wait for a known key's request to be durable and answer it as a duplicate.
    async fn duplicate(&self, accepted: Accepted) -> Result<Ack, Refusal> {
        let log = &self.logs[accepted.partition];
        log.wait_durable(accepted.first + accepted.count as u64, log.failures())
            .await
            .map_err(refusal_of)?;
        add(&self.shared.counters.requests_duplicate, 1);
        add(&self.shared.counters.events_duplicate, accepted.count as u64);
        Ok(Ack { accepted, duplicate: true })
    }

    /// Validate (if `validate`), deduplicate and append; the result says what to wait for.
    async fn append_request(&self, partition: usize, key: &[u8], events: &[&[u8]], validate: bool) -> Result<Appended, Refusal> {
        if validate && self.config.validate_json {
            for (i, ev) in events.iter().enumerate() {
                if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(ev) {
                    add(&self.shared.counters.rejected_bad_request, 1);
                    return Err(Refusal::BadRequest(format!("event {}: not JSON: {e}", i + 1)));
                }
            }
        }
        if !key.is_empty() {
            let known = self.dedup.borrow().get(key);
            if let Some(a) = known {
                return Ok(Appended::Known(a));
            }
        }
        let log = &self.logs[partition];
        let (first, generation) = log.append(key, events, crate::time::now_ms()).await.map_err(refusal_of)?;
        let accepted = Accepted {
            partition,
            first,
            count: events.len() as u32,
        };
        if !key.is_empty() {
            // No await since the append: a retry arriving from now on finds the key.
            self.dedup.borrow_mut().insert(key, accepted);
        }
        Ok(Appended::New { accepted, generation })
    }

    /// Wait until an appended (or known) request is durable.
    async fn settle(&self, appended: Appended) -> Result<Ack, Refusal> {
        match appended {
            Appended::Known(a) => self.duplicate(a).await,
            Appended::New { accepted, generation } => {
                let log = &self.logs[accepted.partition];
                log.wait_durable(accepted.first + accepted.count as u64, generation).await.map_err(refusal_of)?;
                add(&self.shared.counters.requests_accepted, 1);
                add(&self.shared.counters.events_accepted, accepted.count as u64);
                Ok(Ack { accepted, duplicate: false })
            }
        }
    }

    /// Validate, deduplicate, append and wait for durability.
    async fn ingest(&self, partition: usize, key: &[u8], events: &[&[u8]]) -> Result<Ack, Refusal> {
        let appended = self.append_request(partition, key, events, true).await?;
        self.settle(appended).await
    }

    fn retry_after(&self) -> u64 {
        self.config.retry_after_secs
    }
}

fn refusal_of(e: AppendError) -> Refusal {
    match e {
        AppendError::Retry(m) => Refusal::RetryLater(m),
        AppendError::Fatal(m) => Refusal::Failed(m),
    }
}

/// The gateway thread's main future.
pub(crate) async fn run(config: GatewayConfig, shared: Arc<GatewayShared>, http: Option<OwnedFd>, tcp: Option<OwnedFd>, ready: Sender<Result<()>>) {
    let mut dedup = DedupWindow::new(config.dedup_window);
    let mut logs = Vec::new();
    for p in 0..config.partitions {
        let dir = partition_dir(&config.log_dir, p);
        let opened = async {
            let recovered = recover(&dir, p, &mut dedup)?;
            add(&shared.counters.torn_tails_recovered, recovered.torn_tails);
            PartitionLog::open(p, dir.clone(), recovered, shared.clone(), config.segment_bytes, config.retention_bytes).await
        }
        .await;
        match opened {
            Ok(log) => logs.push(Rc::new(log)),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
    }
    // SAFETY: the descriptors are bound, listening, non-blocking sockets handed over by `start`.
    let http = http.map(|fd| unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) });
    let tcp = tcp.map(|fd| unsafe { TcpListener::from_raw_fd(fd.into_raw_fd()) });
    let server = Rc::new(Server {
        config,
        shared: shared.clone(),
        logs,
        dedup: RefCell::new(dedup),
        conns: RefCell::new(Conns::default()),
        next_conn: Cell::new(0),
        inflight: Cell::new(0),
        active_requests: Cell::new(0),
        draining: Cell::new(false),
    });
    let committers: Vec<_> = server
        .logs
        .iter()
        .map(|log| {
            let log = log.clone();
            glommio::spawn_local(async move { log.run_committer().await })
        })
        .collect();
    let mut acceptors = Vec::new();
    if let Some(l) = http {
        acceptors.push(glommio::spawn_local(accept_loop(server.clone(), l, Protocol::Http)));
    }
    if let Some(l) = tcp {
        acceptors.push(glommio::spawn_local(accept_loop(server.clone(), l, Protocol::Tcp)));
    }
    if let Some(mqtt) = server.config.mqtt.clone() {
        acceptors.push(glommio::spawn_local(mqtt_loop(server.clone(), mqtt)));
    }
    let _ = ready.send(Ok(()));
    // The control loop: stop and drain requests come from other threads through atomics.
    loop {
        glommio::timer::sleep(Duration::from_millis(10)).await;
        if shared.stop.load(Ordering::Acquire) {
            break;
        }
        if shared.drain_requested.load(Ordering::Acquire) {
            server.draining.set(true);
            if server.active_requests.get() == 0 && !shared.drained.load(Ordering::Relaxed) {
                shared.drained.store(true, Ordering::Release);
            }
        }
    }
    for a in acceptors {
        a.cancel().await;
    }
    for log in &server.logs {
        log.shutdown();
    }
    for c in committers {
        c.await;
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Http,
    Tcp,
}

async fn accept_loop(server: Rc<Server>, listener: TcpListener, protocol: Protocol) {
    loop {
        let mut stream = match listener.accept().await {
            Ok(s) => s,
            Err(_) => {
                // Out of descriptors or similar: back off briefly instead of spinning.
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else { continue };
        let _ = stream.set_nodelay(true);
        let client = client_of(peer);
        match server.admit(stream.as_raw_fd(), client) {
            Admission::Admitted(id) => {
                let guard = ConnGuard { server: server.clone(), id };
                let server = server.clone();
                glommio::spawn_local(async move {
                    match protocol {
                        Protocol::Http => serve_http(&server, stream, guard, id).await,
                        Protocol::Tcp => serve_tcp(&server, stream, guard, id).await,
                    }
                })
                .detach();
            }
            refusal => {
                let (message, counter) = match refusal {
                    Admission::ClientLimit => ("too many connections from this client", &server.shared.counters.rejected_client_limit),
                    _ => ("too many connections", &server.shared.counters.rejected_connection_limit),
                };
                add(counter, 1);
                let answer = match protocol {
                    Protocol::Http => response(429, "application/json", &error_body(message), Some(server.retry_after()), true),
                    Protocol::Tcp => Reply {
                        status: Status::TooManyConnections,
                        request_id: 0,
                        retry_after_ms: (server.retry_after() * 1000) as u32,
                        partition: 0,
                        first: 0,
                        count: 0,
                        message: message.into(),
                    }
                    .encode(),
                };
                // A small answer fits the socket buffer; never wait long on a refused client.
                write_by(&mut stream, &answer, Instant::now() + Duration::from_millis(50)).await;
            }
        }
    }
}

/// Wait for a request head in `buf`: `Ok(Some(end))`, `Ok(None)` at a clean end of stream, or
/// the refusal to answer (timeout, head too large).
async fn read_head(server: &Server, stream: &mut TcpStream, buf: &mut Vec<u8>, first: bool, accepted_at: Instant) -> Result<Option<usize>, Refusal> {
    let c = &server.config;
    if buf.is_empty() {
        let deadline = if first {
            accepted_at + c.header_timeout
        } else {
            Instant::now() + c.idle_timeout
        };
        match within(deadline, read_some(stream, buf, READ_BYTES)).await {
            None if first => return Err(Refusal::Timeout),
            None => return Ok(None), // keep-alive expiry: close quietly
            Some(Ok(0)) | Some(Err(_)) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
    let deadline = if first {
        accepted_at + c.header_timeout
    } else {
        Instant::now() + c.header_timeout
    };
    loop {
        if let Some(end) = head_end(buf) {
            if end > c.max_header_bytes {
                return Err(Refusal::TooLarge(format!("request head larger than {} bytes", c.max_header_bytes)));
            }
            return Ok(Some(end));
        }
        if buf.len() > c.max_header_bytes {
            return Err(Refusal::TooLarge(format!("request head larger than {} bytes", c.max_header_bytes)));
        }
        match within(deadline, read_some(stream, buf, READ_BYTES)).await {
            None => return Err(Refusal::Timeout),
            Some(Ok(0)) | Some(Err(_)) => return Ok(None),
            Some(Ok(_)) => {}
        }
    }
}

/// An HTTP answer: status, body, whether the connection closes.
fn http_refusal(server: &Server, refusal: &Refusal, head_too_large: bool) -> (u16, Vec<u8>, Option<u64>) {
    let c = &server.shared.counters;
    match refusal {
        Refusal::Unauthorized => (401, error_body("missing or wrong bearer token"), None),
        Refusal::TooLarge(m) => {
            add(&c.rejected_too_large, 1);
            (if head_too_large { 431 } else { 413 }, error_body(m), None)
        }
        Refusal::BadRequest(m) => (400, error_body(m), None),
        Refusal::RetryLater(m) => (503, error_body(m), Some(server.retry_after())),
        Refusal::Timeout => {
            add(&c.timeouts, 1);
            (408, error_body("request timeout"), None)
        }
        Refusal::Failed(m) => (500, error_body(m), None),
    }
}

async fn serve_http(server: &Server, mut stream: TcpStream, guard: ConnGuard, conn: u64) {
    let accepted_at = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut first = true;
    loop {
        guard.waiting();
        let end = match read_head(server, &mut stream, &mut buf, first, accepted_at).await {
            Ok(Some(end)) => end,
            Ok(None) => return,
            Err(r) => {
                let too_large = matches!(r, Refusal::TooLarge(_));
                let (status, body, retry) = http_refusal(server, &r, too_large);
                let deadline = Instant::now() + server.config.body_timeout;
                if write_by(&mut stream, &response(status, "application/json", &body, retry, true), deadline).await {
                    linger_close(&mut stream).await;
                }
                return;
            }
        };
        guard.busy();
        let head = match parse_head(&buf[..end]) {
            Ok(h) => h,
            Err(m) => {
                add(&server.shared.counters.rejected_bad_request, 1);
                let deadline = Instant::now() + server.config.body_timeout;
                write_by(&mut stream, &response(400, "application/json", &error_body(m), None, true), deadline).await;
                return;
            }
        };
        buf.drain(..end);
        server.active_requests.set(server.active_requests.get() + 1);
        let keep = handle_http(server, &mut stream, &head, &mut buf, conn).await;
        server.active_requests.set(server.active_requests.get() - 1);
        if !keep {
            return;
        }
        first = false;
    }
}

/// Answer one HTTP request; false if the connection must close.
async fn handle_http(server: &Server, stream: &mut TcpStream, head: &RequestHead, buf: &mut Vec<u8>, conn: u64) -> bool {
    let deadline = Instant::now() + server.config.body_timeout;
    let has_body = head.content_length.unwrap_or(0) > 0 || head.transfer_encoding;
    let authorized = server.authorized(head.bearer.as_deref().map(str::as_bytes));
    let answer = |status: u16, body: Vec<u8>, retry: Option<u64>, close: bool| response(status, "application/json", &body, retry, close);
    let (bytes, close) = match (head.method.as_str(), head.path.as_str()) {
        ("POST", "/v1/events") => match ingest_http(server, stream, head, buf, conn).await {
            Ok(ack) => {
                let body = serde_json::json!({
                    "accepted": ack.accepted.count,
                    "partition": ack.accepted.partition,
                    "first": ack.accepted.first,
                    "duplicate": ack.duplicate,
                });
                let close = !head.keep_alive();
                (answer(200, format!("{body}\n").into_bytes(), None, close), close)
            }
            Err((refusal, body_read)) => {
                if matches!(refusal, Refusal::Unauthorized) {
                    add(&server.shared.counters.rejected_unauthorized, 1);
                }
                let (status, body, retry) = http_refusal(server, &refusal, false);
                let close = !body_read || !head.keep_alive() || matches!(refusal, Refusal::Timeout | Refusal::Failed(_));
                (answer(status, body, retry, close), close)
            }
        },
        (_, "/v1/health") if head.method == "GET" && !has_body => {
            (answer(200, b"{\"status\":\"ok\"}\n".to_vec(), None, !head.keep_alive()), !head.keep_alive())
        }
        ("GET", "/v1/stats") if !has_body => {
            if authorized {
                let body = serde_json::to_vec(&server.shared.stats()).expect("stats serialise");
                (answer(200, body, None, !head.keep_alive()), !head.keep_alive())
            } else {
                add(&server.shared.counters.rejected_unauthorized, 1);
                (answer(401, error_body("missing or wrong bearer token"), None, true), true)
            }
        }
        ("POST", "/v1/drain") if !has_body => {
            if authorized {
                server.shared.drain_requested.store(true, Ordering::Release);
                (answer(202, b"{\"draining\":true}\n".to_vec(), None, true), true)
            } else {
                add(&server.shared.counters.rejected_unauthorized, 1);
                (answer(401, error_body("missing or wrong bearer token"), None, true), true)
            }
        }
        (_, "/v1/events" | "/v1/health" | "/v1/stats" | "/v1/drain") => (answer(405, error_body("method not allowed"), None, true), true),
        _ => (answer(404, error_body("not found"), None, true), true),
    };
    if !write_by(stream, &bytes, deadline).await {
        return false;
    }
    if close {
        linger_close(stream).await;
        return false;
    }
    true
}

/// Handle `POST /v1/events`. On refusal, also tells whether the body was read (the connection
/// can stay open only then).
async fn ingest_http(server: &Server, stream: &mut TcpStream, head: &RequestHead, buf: &mut Vec<u8>, conn: u64) -> Result<Ack, (Refusal, bool)> {
    let c = &server.config;
    if !server.authorized(head.bearer.as_deref().map(str::as_bytes)) {
        return Err((Refusal::Unauthorized, false));
    }
    if head.transfer_encoding {
        add(&server.shared.counters.rejected_bad_request, 1);
        return Err((Refusal::BadRequest("send a Content-Length (chunked bodies are not accepted)".into()), false));
    }
    let Some(len) = head.content_length else {
        add(&server.shared.counters.rejected_bad_request, 1);
        return Err((Refusal::BadRequest("a Content-Length is required".into()), false));
    };
    if len > c.max_body_bytes as u64 {
        return Err((
            Refusal::TooLarge(format!("body of {len} bytes is larger than max_body_bytes = {}", c.max_body_bytes)),
            false,
        ));
    }
    let len = len as usize;
    let key = head.idempotency_key.as_deref().unwrap_or("").as_bytes();
    if key.len() > c.max_idempotency_key_bytes {
        add(&server.shared.counters.rejected_bad_request, 1);
        return Err((
            Refusal::BadRequest(format!("Idempotency-Key longer than {} bytes", c.max_idempotency_key_bytes)),
            false,
        ));
    }
    let partition = (conn % c.partitions as u64) as usize;
    let reservation = server.admit_body(partition, len).map_err(|r| (r, false))?;
    if head.expect_continue && buf.len() < len {
        let deadline = Instant::now() + c.body_timeout;
        if !write_by(stream, b"HTTP/1.1 100 Continue\r\n\r\n", deadline).await {
            return Err((Refusal::Timeout, false));
        }
    }
    let deadline = Instant::now() + c.body_timeout;
    match fill_to(stream, buf, len, deadline).await {
        Ok(true) => {}
        Ok(false) => return Err((Refusal::Timeout, false)),
        Err(_) => return Err((Refusal::BadRequest("connection closed in the body".into()), false)),
    }
    add(&server.shared.counters.body_bytes_read, len as u64);
    let body: Vec<u8> = buf.drain(..len).collect();
    let events: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .collect();
    if events.is_empty() {
        return Ok(Ack {
            accepted: Accepted {
                partition,
                first: server.shared.partitions[partition].durable_next.load(Ordering::Acquire),
                count: 0,
            },
            duplicate: false,
        });
    }
    let result = server.ingest(partition, key, &events).await.map_err(|r| (r, true));
    drop(reservation);
    result
}

fn tcp_reply(server: &Server, request_id: u64, result: &Result<Ack, Refusal>) -> (Reply, bool) {
    let mut reply = Reply {
        status: Status::Ok,
        request_id,
        retry_after_ms: 0,
        partition: 0,
        first: 0,
        count: 0,
        message: String::new(),
    };
    let close = match result {
        Ok(ack) => {
            reply.status = if ack.duplicate { Status::Duplicate } else { Status::Ok };
            reply.partition = ack.accepted.partition as u32;
            reply.first = ack.accepted.first;
            reply.count = ack.accepted.count;
            false
        }
        Err(r) => {
            let c = &server.shared.counters;
            let (status, message, close) = match r {
                Refusal::Unauthorized => {
                    add(&c.rejected_unauthorized, 1);
                    (Status::Unauthorized, "missing or wrong token".to_string(), true)
                }
                Refusal::TooLarge(m) => {
                    add(&c.rejected_too_large, 1);
                    (Status::TooLarge, m.clone(), true)
                }
                Refusal::BadRequest(m) => (Status::BadRequest, m.clone(), false),
                Refusal::RetryLater(m) => {
                    reply.retry_after_ms = (server.retry_after() * 1000) as u32;
                    (Status::RetryLater, m.clone(), false)
                }
                Refusal::Timeout => {
                    add(&c.timeouts, 1);
                    (Status::Timeout, "timeout".to_string(), true)
                }
                Refusal::Failed(m) => (Status::Failed, m.clone(), true),
            };
            reply.status = status;
            reply.message = message;
            close
        }
    };
    (reply, close)
}

async fn serve_tcp(server: &Server, mut stream: TcpStream, guard: ConnGuard, conn: u64) {
    let c = &server.config;
    let accepted_at = Instant::now();
    let mut authenticated = c.tokens.is_empty();
    let mut first = true;
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    let max_frame = c.max_body_bytes + c.max_idempotency_key_bytes + 64;
    loop {
        guard.waiting();
        buf.clear();
        // The length prefix: the first byte may wait (idle), the rest of the head may not.
        let wait = if first {
            accepted_at + c.header_timeout
        } else {
            Instant::now() + c.idle_timeout
        };
        match within(wait, read_some(&mut stream, &mut buf, 4)).await {
            None if first => {
                add(&server.shared.counters.timeouts, 1);
                return;
            }
            None | Some(Ok(0)) | Some(Err(_)) => return,
            Some(Ok(_)) => {}
        }
        let head_deadline = if first {
            accepted_at + c.header_timeout
        } else {
            Instant::now() + c.header_timeout
        };
        // The length prefix, then the kind and (for EVENTS) the request id, inside the frame.
        if !matches!(fill_to(&mut stream, &mut buf, 4, head_deadline).await, Ok(true)) {
            add(&server.shared.counters.timeouts, 1);
            return;
        }
        guard.busy();
        let len = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
        let refuse = |request_id: u64, r: Refusal| tcp_reply(server, request_id, &Err(r)).0.encode();
        let deadline = Instant::now() + c.body_timeout;
        if len == 0 || len > max_frame {
            let r = refuse(0, Refusal::TooLarge(format!("frame of {len} bytes (at most {max_frame})")));
            if write_by(&mut stream, &r, deadline).await {
                linger_close(&mut stream).await;
            }
            return;
        }
        if !matches!(fill_to(&mut stream, &mut buf, 5, head_deadline).await, Ok(true)) {
            add(&server.shared.counters.timeouts, 1);
            return;
        }
        let kind = buf[4];
        match kind {
            protocol::KIND_AUTH => {
                if len > c.max_header_bytes || !matches!(fill_to(&mut stream, &mut buf, 4 + len, deadline).await, Ok(true)) {
                    add(&server.shared.counters.rejected_bad_request, 1);
                    return;
                }
                if server.authorized(Some(&buf[5..4 + len])) {
                    authenticated = true;
                    let ok = tcp_reply(
                        server,
                        0,
                        &Ok(Ack {
                            accepted: Accepted {
                                partition: 0,
                                first: 0,
                                count: 0,
                            },
                            duplicate: false,
                        }),
                    )
                    .0;
                    if !write_by(&mut stream, &ok.encode(), deadline).await {
                        return;
                    }
                } else {
                    let r = refuse(0, Refusal::Unauthorized);
                    write_by(&mut stream, &r, deadline).await;
                    return;
                }
            }
            protocol::KIND_EVENTS => {
                if len < 11 || !matches!(fill_to(&mut stream, &mut buf, 13, head_deadline).await, Ok(true)) {
                    add(&server.shared.counters.rejected_bad_request, 1);
                    let r = refuse(0, Refusal::BadRequest("short EVENTS frame".into()));
                    write_by(&mut stream, &r, deadline).await;
                    return;
                }
                let request_id = u64::from_be_bytes(buf[5..13].try_into().expect("8 bytes"));
                if !authenticated {
                    let r = refuse(request_id, Refusal::Unauthorized);
                    if write_by(&mut stream, &r, deadline).await {
                        linger_close(&mut stream).await;
                    }
                    return;
                }
                let partition = (conn % c.partitions as u64) as usize;
                server.active_requests.set(server.active_requests.get() + 1);
                let outcome = tcp_events(server, &mut stream, &mut buf, len, partition, deadline).await;
                server.active_requests.set(server.active_requests.get() - 1);
                let (result, body_read) = match outcome {
                    Ok(ack) => (Ok(ack), true),
                    Err((r, read)) => (Err(r), read),
                };
                let (reply, close) = tcp_reply(server, request_id, &result);
                if !write_by(&mut stream, &reply.encode(), Instant::now() + c.body_timeout).await {
                    return;
                }
                if close || !body_read {
                    linger_close(&mut stream).await;
                    return;
                }
            }
            _ => {
                add(&server.shared.counters.rejected_bad_request, 1);
                let r = refuse(0, Refusal::BadRequest(format!("unknown frame kind {kind}")));
                write_by(&mut stream, &r, deadline).await;
                return;
            }
        }
        first = false;
    }
}

/// The rest of an EVENTS frame (`buf` holds its first 13 bytes): admit, read, ingest.
async fn tcp_events(
    server: &Server,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    len: usize,
    partition: usize,
    deadline: Instant,
) -> Result<Ack, (Refusal, bool)> {
    let reservation = server.admit_body(partition, len).map_err(|r| (r, false))?;
    match fill_to(stream, buf, 4 + len, deadline).await {
        Ok(true) => {}
        Ok(false) => return Err((Refusal::Timeout, false)),
        Err(_) => return Err((Refusal::BadRequest("connection closed in a frame".into()), false)),
    }
    add(&server.shared.counters.body_bytes_read, len as u64);
    let (key, events) = protocol::decode_events(&buf[13..4 + len]).map_err(|m| {
        add(&server.shared.counters.rejected_bad_request, 1);
        (Refusal::BadRequest(m.into()), true)
    })?;
    if key.len() > server.config.max_idempotency_key_bytes {
        add(&server.shared.counters.rejected_bad_request, 1);
        return Err((Refusal::BadRequest("idempotency key too long".into()), true));
    }
    if events.is_empty() {
        return Err((Refusal::BadRequest("no events in the frame".into()), true));
    }
    let result = server.ingest(partition, key, &events).await.map_err(|r| (r, true));
    drop(reservation);
    result
}

/// The MQTT client: (re)connect with a persistent session and ingest what the broker delivers.
async fn mqtt_loop(server: Rc<Server>, config: MqttConfig) {
    let mut backoff = Duration::from_millis(100);
    let mut dropped_once = false;
    loop {
        if server.draining.get() {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            continue;
        }
        let connected = Cell::new(false);
        let result = mqtt_session(&server, &config, &mut dropped_once, &connected).await;
        if let Err(e) = result {
            add(&server.shared.counters.mqtt_errors, 1);
            *server.shared.mqtt_last_error.lock().expect("mqtt error slot") = Some(e);
        }
        if connected.get() {
            backoff = Duration::from_millis(100);
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn mqtt_read(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> std::result::Result<Option<(u8, std::ops::Range<usize>, usize)>, String> {
    loop {
        if let Some(p) = mqtt::split_packet(buf, max).map_err(str::to_string)? {
            return Ok(Some(p));
        }
        match within(deadline, read_some(stream, buf, READ_BYTES)).await {
            None => return Ok(None),
            Some(Ok(0)) => return Err("the broker closed the connection".into()),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("reading from the broker: {e}")),
        }
    }
}

async fn mqtt_session(server: &Server, config: &MqttConfig, dropped_once: &mut bool, connected: &Cell<bool>) -> std::result::Result<(), String> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(config.broker, timeout)
        .await
        .map_err(|e| format!("connecting to the MQTT broker {}: {e}", config.broker))?;
    let _ = stream.set_nodelay(true);
    let keep_alive = config.keep_alive.as_secs().clamp(1, 65_535) as u16;
    let hello = mqtt::connect_packet(&config.client_id, false, keep_alive, config.username.as_deref(), config.password.as_deref());
    if !write_by(&mut stream, &hello, Instant::now() + timeout).await {
        return Err("writing CONNECT".into());
    }
    let max = server.config.max_body_bytes + 64;
    let mut buf = Vec::new();
    let (first, range, total) = mqtt_read(&mut stream, &mut buf, max, Instant::now() + timeout)
        .await?
        .ok_or("no CONNACK from the broker")?;
    if first >> 4 != mqtt::CONNACK || buf[range.clone()].get(1) != Some(&0) {
        return Err(format!("the broker refused the connection: {:?}", &buf[range]));
    }
    buf.drain(..total);
    if !write_by(&mut stream, &mqtt::subscribe_packet(1, &config.topics), Instant::now() + timeout).await {
        return Err("writing SUBSCRIBE".into());
    }
    connected.set(true);
    add(&server.shared.counters.mqtt_connects, 1);
    let mut appended_since_connect = 0u64;
    loop {
        if server.draining.get() || server.shared.stop.load(Ordering::Relaxed) {
            // Stop taking messages: the broker keeps them for the next session.
            return Ok(());
        }
        // Backpressure: leave messages with the broker while the job is behind.
        let behind = server.shared.partitions.iter().any(|p| p.backlog_events() > server.config.max_backlog_events);
        if behind {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let deadline = Instant::now() + config.keep_alive / 2;
        let Some(_) = mqtt_read(&mut stream, &mut buf, max, deadline).await? else {
            if !write_by(&mut stream, &mqtt::pingreq_packet(), Instant::now() + timeout).await {
                return Err("writing PINGREQ".into());
            }
            continue;
        };
        // Every whole packet read so far: append them all, then acknowledge after one commit.
        // Counted as a request in flight, so a drain waits for it.
        server.active_requests.set(server.active_requests.get() + 1);
        let result = mqtt_batch(server, config, &mut buf, max, &mut appended_since_connect).await;
        server.active_requests.set(server.active_requests.get() - 1);
        let acks = result?;
        if let Some(n) = config.drop_before_ack_after {
            if !*dropped_once && appended_since_connect >= n {
                *dropped_once = true;
                return Err("test: connection dropped before acknowledging".into());
            }
        }
        if !acks.is_empty() && !write_by(&mut stream, &acks, Instant::now() + timeout).await {
            return Err("writing PUBACK".into());
        }
    }
}

/// Append every whole PUBLISH in `buf` and wait until they are durable; the PUBACKs to send.
async fn mqtt_batch(server: &Server, config: &MqttConfig, buf: &mut Vec<u8>, max: usize, appended: &mut u64) -> std::result::Result<Vec<u8>, String> {
    {
        let mut pending: Vec<(Option<u16>, Appended)> = Vec::new();
        while let Some((first, range, total)) = mqtt::split_packet(buf, max).map_err(str::to_string)? {
            if first >> 4 == mqtt::SUBACK && buf[range.clone()].iter().skip(2).any(|c| *c == 0x80) {
                return Err(format!("the broker refused a subscription of {:?}", config.topics));
            }
            if first >> 4 == mqtt::PUBLISH {
                let p = mqtt::decode_publish(first, &buf[range]).map_err(str::to_string)?;
                let partition = topic_partition(p.topic, server.config.partitions);
                let key = if p.qos > 0 { mqtt::message_key(&config.client_id, &p) } else { Vec::new() };
                if p.qos > 0 && !p.dup {
                    // A fresh message: packet ids are reused, an old entry is not a duplicate.
                    server.dedup.borrow_mut().remove(&key);
                }
                let result = server.append_request(partition, &key, &[p.payload], false).await;
                let appended_request = result.map_err(|r| format!("appending an MQTT message: {}", refusal_text(&r)))?;
                add(&server.shared.counters.mqtt_messages, 1);
                pending.push((p.packet_id, appended_request));
                *appended += 1;
            }
            buf.drain(..total);
        }
        let mut acks = Vec::new();
        for (id, appended) in pending {
            server
                .settle(appended)
                .await
                .map_err(|r| format!("MQTT message not durable: {}", refusal_text(&r)))?;
            if let Some(id) = id {
                acks.extend_from_slice(&mqtt::puback_packet(id));
            }
        }
        Ok(acks)
    }
}

fn topic_partition(topic: &[u8], partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions as u64) as usize
}

fn refusal_text(r: &Refusal) -> String {
    match r {
        Refusal::Unauthorized => "unauthorized".into(),
        Refusal::Timeout => "timeout".into(),
        Refusal::TooLarge(m) | Refusal::BadRequest(m) | Refusal::RetryLater(m) | Refusal::Failed(m) => m.clone(),
    }
}
