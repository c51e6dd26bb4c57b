//! A minimal HTTP/1.1 server over `std::net::TcpListener` for the control plane: one thread
//! accepts, one short-lived thread per connection answers one request and closes.
//!
//! Invariants (all limits from [`super::ControlConfig`]): at most `max_connections` requests are
//! served at once (more get `503`); a request head larger than `max_header_bytes` gets `431`, a
//! body larger than `max_body_bytes` gets `413`; every socket has read and write timeouts; when a
//! token is configured every request must carry `Authorization: Bearer <token>` (else `401`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Shared;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");

/// Accept connections until `stop` is set.
pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(shared.config.io_timeout));
        let _ = stream.set_write_timeout(Some(shared.config.io_timeout));
        if active.load(Ordering::Relaxed) >= shared.config.max_connections {
            let _ = respond(&mut stream, 503, "text/plain", b"too many connections\n", false);
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let active_in_thread = active.clone();
        let spawned = std::thread::Builder::new().name("weir-control-conn".into()).spawn(move || {
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
            return Err(ReadError::Malformed); // no chunked bodies: the API only has GETs
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

fn handle(mut stream: TcpStream, shared: &Arc<Shared>) {
    let config = &shared.config;
    let (req, already_read) = match read_head(&mut stream, config.max_header_bytes) {
        Ok(r) => r,
        Err(ReadError::TooLarge) => {
            let _ = respond(&mut stream, 431, "text/plain", b"request header too large\n", false);
            linger_close(stream);
            return;
        }
        Err(ReadError::Malformed) => {
            let _ = respond(&mut stream, 400, "text/plain", b"bad request\n", false);
            return;
        }
        Err(ReadError::Io) => return,
    };
    if req.content_length > config.max_body_bytes {
        let _ = respond(&mut stream, 413, "text/plain", b"request body too large\n", false);
        linger_close(stream);
        return;
    }
    // Drain the (small, bounded) body so the client sees a clean response.
    let mut remaining = req.content_length.saturating_sub(already_read.len());
    let mut sink = [0u8; 1024];
    while remaining > 0 {
        match stream.read(&mut sink[..remaining.min(1024)]) {
            Ok(0) | Err(_) => return,
            Ok(n) => remaining -= n,
        }
    }
    if let Some(token) = config.token.as_deref() {
        let presented = req.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !same_secret(presented.as_bytes(), token.as_bytes()) {
            let _ = respond(&mut stream, 401, "text/plain", b"missing or wrong bearer token\n", false);
            return;
        }
    }
    let head_only = req.method == "HEAD";
    if req.method == "POST" {
        // Commands: a savepoint, or stop-with-savepoint. The answer waits for the outcome
        // (bounded; also listed under GET /api/savepoints).
        let stop = match req.path.as_str() {
            "/api/savepoint" => false,
            "/api/stop" => true,
            _ => {
                let _ = respond(&mut stream, 404, "text/plain", b"POST goes to /api/savepoint or /api/stop\n", false);
                return;
            }
        };
        let (status, body) = await_savepoint(shared, stop);
        let _ = respond(&mut stream, status, "application/json", body.to_string().as_bytes(), false);
        return;
    }
    if req.method != "GET" && !head_only {
        let _ = respond(&mut stream, 405, "text/plain", b"only GET, HEAD and POST\n", false);
        return;
    }
    let (status, content_type, body): (u16, &str, Vec<u8>) = match req.path.as_str() {
        "/" | "/index.html" => (200, "text/html; charset=utf-8", INDEX_HTML.as_bytes().to_vec()),
        "/app.js" => (200, "text/javascript; charset=utf-8", APP_JS.as_bytes().to_vec()),
        "/metrics" => (200, super::metrics::CONTENT_TYPE, super::metrics::render(shared).into_bytes()),
        "/api/status" => {
            let w = shared.window();
            (200, "application/json", super::status::status_json(&shared.job, &w).to_string().into_bytes())
        }
        "/api/jobs" => (200, "application/json", super::status::jobs_json(&shared.job).to_string().into_bytes()),
        "/api/savepoints" => (
            200,
            "application/json",
            serde_json::to_vec(&shared.job.registry.commands.results()).unwrap_or_default(),
        ),
        _ => (404, "text/plain", b"not found\n".to_vec()),
    };
    let _ = respond(&mut stream, status, content_type, &body, head_only);
}

/// How long a savepoint request waits for its outcome.
const SAVEPOINT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Request a savepoint and wait until it is complete or failed, the job ended, or
/// [`SAVEPOINT_WAIT`] passed. Polls the outcome list every 10 ms (on this connection's thread,
/// never on a shard).
fn await_savepoint(shared: &Arc<Shared>, stop: bool) -> (u16, serde_json::Value) {
    let commands = &shared.job.registry.commands;
    let request = commands.request_savepoint(stop);
    let deadline = std::time::Instant::now() + SAVEPOINT_WAIT;
    loop {
        if let Some(r) = commands.results().into_iter().find(|r| r.request == request) {
            return match r.outcome {
                Ok(path) => (200, serde_json::json!({ "request": request, "stop": stop, "savepoint": path })),
                Err(e) => (500, serde_json::json!({ "request": request, "stop": stop, "error": e })),
            };
        }
        let running = matches!(shared.job.state(), super::JobState::Running);
        if !running || std::time::Instant::now() >= deadline {
            let why = if running {
                "timed out waiting for the savepoint"
            } else {
                "the job ended before the savepoint completed"
            };
            return (504, serde_json::json!({ "request": request, "stop": stop, "error": why }));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
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

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &[u8], head_only: bool) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}
