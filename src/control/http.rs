//! A minimal HTTP/1.1 server over `std::net::TcpListener` for the control plane: one thread
//! accepts, one short-lived thread per connection (at the control plane's lowered priority)
//! answers one request and closes. Routes: `/jobs/<id>/...` address one job (dashboard,
//! `api/status`, `metrics`, `api/checkpoints`, POST `api/savepoint|stop|cancel`); at the root,
//! a one-job server serves its job, the daemon its overview and `POST /api/jobs` (submit).
//!
//! Invariants (all limits from [`super::ControlConfig`]): at most `max_connections` requests are
//! served at once (more get `503`); a request head larger than `max_header_bytes` gets `431`, a
//! body larger than `max_body_bytes` gets `413`; every socket has read and write timeouts; when a
//! token is configured every request must carry `Authorization: Bearer <token>` (else `401`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::{JobHandle, Shared};

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");

/// Accept connections until `stop` is set.
pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>, active: Arc<AtomicUsize>) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(shared.config.io_timeout));
        let _ = stream.set_write_timeout(Some(shared.config.io_timeout));
        if active.load(Ordering::Relaxed) >= shared.config.max_connections {
            let _ = respond(&mut stream, &Response::text(503, "too many connections\n"), false);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let active_in_thread = active.clone();
        let spawned = std::thread::Builder::new().name("weir-control-conn".into()).spawn(move || {
            super::lower_thread_priority();
            handle(stream, &shared);
            active_in_thread.fetch_sub(1, Ordering::Relaxed);
        });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    path: String,
    authorization: Option<String>,
    content_length: usize,
}

enum ReadError {
    TooLarge,
    Malformed,
    Io,
}

/// Read the request head (up to the blank line), bounded by `max` bytes.
fn read_head(stream: &mut TcpStream, max: usize) -> Result<(Request, Vec<u8>), ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        if buf.len() > max {
            return Err(ReadError::TooLarge);
        }
        let n = stream.read(&mut chunk).map_err(|_| ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if end > max {
        return Err(ReadError::TooLarge);
    }
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| ReadError::Malformed)?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().ok_or(ReadError::Malformed)?.split(' ');
    let method = first.next().ok_or(ReadError::Malformed)?.to_string();
    let target = first.next().ok_or(ReadError::Malformed)?;
    let version = first.next().ok_or(ReadError::Malformed)?;
    if !version.starts_with("HTTP/1.") {
        return Err(ReadError::Malformed);
    }
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut authorization = None;
    let mut content_length = 0usize;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(ReadError::Malformed);
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| ReadError::Malformed)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(ReadError::Malformed); // no chunked bodies: clients send Content-Length
        }
    }
    let rest = buf[end + 4..].to_vec();
    Ok((
        Request {
            method,
            path,
            authorization,
            content_length,
        },
        rest,
    ))
}

/// Compare without an early exit on the first differing byte.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// One response: status, content type, body, and an optional `Location` header.
pub(crate) struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub location: Option<String>,
}

impl Response {
    pub fn json(status: u16, v: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            location: None,
        }
    }

    pub fn text(status: u16, text: &str) -> Self {
        Self {
            status,
            content_type: "text/plain",
            body: text.as_bytes().to_vec(),
            location: None,
        }
    }

    fn bytes(content_type: &'static str, body: Vec<u8>) -> Self {
        Self {
            status: 200,
            content_type,
            body,
            location: None,
        }
    }

    /// `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> Self {
        Self::json(status, &serde_json::json!({ "error": message }))
    }
}

fn handle(mut stream: TcpStream, shared: &Arc<Shared>) {
    let config = &shared.config;
    let (req, already_read) = match read_head(&mut stream, config.max_header_bytes) {
        Ok(r) => r,
        Err(ReadError::TooLarge) => {
            let _ = respond(&mut stream, &Response::text(431, "request header too large\n"), false);
            linger_close(stream);
            return;
        }
        Err(ReadError::Malformed) => {
            let _ = respond(&mut stream, &Response::text(400, "bad request\n"), false);
            return;
        }
        Err(ReadError::Io) => return,
    };
    if req.content_length > config.max_body_bytes {
        let _ = respond(&mut stream, &Response::text(413, "request body too large\n"), false);
        linger_close(stream);
        return;
    }
    // Read the (bounded) body.
    let mut body = already_read;
    body.truncate(req.content_length);
    let mut chunk = [0u8; 4096];
    while body.len() < req.content_length {
        let want = (req.content_length - body.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    if let Some(token) = config.token.as_deref() {
        let presented = req.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !same_secret(presented.as_bytes(), token.as_bytes()) {
            let _ = respond(&mut stream, &Response::text(401, "missing or wrong bearer token\n"), false);
            return;
        }
    }
    let head_only = req.method == "HEAD";
    let method = if head_only { "GET" } else { req.method.as_str() };
    if method != "GET" && method != "POST" {
        let _ = respond(&mut stream, &Response::text(405, "only GET, HEAD and POST\n"), false);
        return;
    }
    let response = route(shared, method, &req.path, &body);
    let _ = respond(&mut stream, &response, head_only);
}

/// Dispatch a request: `/jobs/<id>/...` to that job; other paths to the daemon's own routes, or
/// (one-job server) to its job.
fn route(shared: &Arc<Shared>, method: &str, path: &str, body: &[u8]) -> Response {
    if let Some(rest) = path.strip_prefix("/jobs/") {
        let (id, sub) = rest.split_once('/').map_or((rest, None), |(id, sub)| (id, Some(sub)));
        let Some(job) = shared.jobs.get(id) else {
            return Response::error(404, &format!("no job {id}"));
        };
        return match sub {
            // Relative links of the dashboard need the trailing slash.
            None => Response {
                status: 301,
                content_type: "text/plain",
                body: Vec::new(),
                location: Some(format!("/jobs/{id}/")),
            },
            Some(sub) => job_route(&job, method, &format!("/{sub}")),
        };
    }
    match path {
        "/" | "/index.html" if method == "GET" => return Response::bytes("text/html; charset=utf-8", INDEX_HTML.as_bytes().to_vec()),
        "/app.js" if method == "GET" => return Response::bytes("text/javascript; charset=utf-8", APP_JS.as_bytes().to_vec()),
        "/metrics" if method == "GET" => {
            let jobs = shared.jobs.all();
            return Response::bytes(
                super::metrics::CONTENT_TYPE,
                super::metrics::render(&jobs, shared.daemon.as_deref()).into_bytes(),
            );
        }
        _ => {}
    }
    if let Some(daemon) = &shared.daemon {
        return match (method, path) {
            ("GET", "/api/status") => Response::json(200, &daemon.overview_json()),
            ("GET", "/api/jobs") => Response::json(200, &daemon.overview_json()),
            ("POST", "/api/jobs") => daemon.submit_http(body),
            ("POST", _) => Response::text(405, "POST goes to /api/jobs (submit) or /jobs/<id>/api/savepoint|stop|cancel\n"),
            _ => Response::text(404, "not found\n"),
        };
    }
    match shared.jobs.all().first() {
        Some(job) => job_route(job, method, path),
        None => Response::text(404, "not found\n"),
    }
}

/// Routes of one job (relative to `/jobs/<id>`, or the root of a one-job server).
fn job_route(job: &Arc<JobHandle>, method: &str, path: &str) -> Response {
    if method == "POST" {
        return match path {
            "/api/savepoint" => await_savepoint(job, false),
            "/api/stop" => await_savepoint(job, true),
            "/api/cancel" => await_cancel(job),
            _ => Response::text(405, "only GET and HEAD here; POST goes to /api/savepoint, /api/stop or /api/cancel\n"),
        };
    }
    match path {
        "/" | "/index.html" => Response::bytes("text/html; charset=utf-8", INDEX_HTML.as_bytes().to_vec()),
        "/app.js" => Response::bytes("text/javascript; charset=utf-8", APP_JS.as_bytes().to_vec()),
        "/metrics" => Response::bytes(
            super::metrics::CONTENT_TYPE,
            super::metrics::render(std::slice::from_ref(job), None).into_bytes(),
        ),
        "/api/status" => Response::json(200, &super::status::status_json(job, &job.window())),
        "/api/jobs" => Response::json(200, &super::status::jobs_json(std::slice::from_ref(job))),
        "/api/checkpoints" => Response::json(200, &super::status::checkpoints_json(job)),
        "/api/savepoints" => Response::bytes("application/json", serde_json::to_vec(&job.registry.commands.results()).unwrap_or_default()),
        _ => Response::text(404, "not found\n"),
    }
}

/// How long a savepoint request waits for its outcome.
const SAVEPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long a cancel request waits for the job to stop.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Request a savepoint and wait until it is complete or failed, the job ended, or
/// [`SAVEPOINT_WAIT`] passed. Polls the outcome list every 10 ms (on this connection's thread,
/// never on a shard).
fn await_savepoint(job: &Arc<JobHandle>, stop: bool) -> Response {
    if !job.is_running() {
        return Response::error(409, &format!("job {} is {}: no savepoint", job.id, job.state().as_str()));
    }
    let commands = &job.registry.commands;
    let request = commands.request_savepoint(stop);
    tracing::info!(job = %job.name, job_id = %job.id, stop, "savepoint requested");
    let deadline = std::time::Instant::now() + SAVEPOINT_WAIT;
    loop {
        if let Some(r) = commands.results().into_iter().find(|r| r.request == request) {
            return match r.outcome {
                Ok(path) => {
                    // A stop answers once the job has ended (bounded), so `weir list` right after
                    // shows it stopped.
                    let deadline = std::time::Instant::now() + CANCEL_WAIT;
                    while stop && job.is_running() && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    Response::json(
                        200,
                        &serde_json::json!({ "id": job.id, "request": request, "stop": stop, "savepoint": path, "state": job.state().as_str() }),
                    )
                }
                Err(e) => Response::json(500, &serde_json::json!({ "id": job.id, "request": request, "stop": stop, "error": e })),
            };
        }
        let running = job.is_running();
        if !running || std::time::Instant::now() >= deadline {
            let why = if running {
                "timed out waiting for the savepoint"
            } else {
                "the job ended before the savepoint completed"
            };
            return Response::json(504, &serde_json::json!({ "id": job.id, "request": request, "stop": stop, "error": why }));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Cancel the job and wait (bounded by [`CANCEL_WAIT`], polling every 10 ms) until it stopped.
fn await_cancel(job: &Arc<JobHandle>) -> Response {
    if !job.is_running() {
        return Response::error(409, &format!("job {} is already {}", job.id, job.state().as_str()));
    }
    tracing::info!(job = %job.name, job_id = %job.id, "cancel requested");
    job.registry.request_cancel();
    let deadline = std::time::Instant::now() + CANCEL_WAIT;
    while job.is_running() {
        if std::time::Instant::now() >= deadline {
            return Response::error(504, "timed out waiting for the job to stop");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Response::json(200, &serde_json::json!({ "id": job.id, "state": job.state().as_str() }))
}

/// After an early error response: read and discard what the client is still sending (bounded:
/// 64 KiB, 100 ms per read) so closing with unread data does not reset the connection before
/// the client has read the response.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(std::time::Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn respond(stream: &mut TcpStream, response: &Response, head_only: bool) -> std::io::Result<()> {
    let status = response.status;
    let reason = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        301 => "Moved Permanently",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let location = response.location.as_ref().map(|l| format!("Location: {l}\r\n")).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{location}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        response.content_type,
        response.body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(&response.body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}
