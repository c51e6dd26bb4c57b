//! The gateway's length-prefixed TCP protocol (pure encode/decode) and small blocking clients
//! for it and for the HTTP endpoint (used by tests, benches and edge tools — never on a shard).
//!
//! Every frame, both ways: `len: u32 BE` (bytes after the prefix) then `len` bytes.
//! Client frames start with a kind byte:
//! - `0x01 AUTH`: the token (UTF-8). Required first when the gateway has tokens.
//! - `0x02 EVENTS`: `request_id: u64 BE | key_len: u16 BE | key | (event_len: u32 BE | event)*`.
//!   An empty key means no idempotency key.
//!
//! Server frames (one per client frame, in order): `status: u8 | request_id: u64 BE |
//! retry_after_ms: u32 BE | partition: u32 BE | first: u64 BE | count: u32 BE | message (UTF-8)`.
//! After a status that closes the connection (unauthorized, too large, bad request, too many
//! connections, timeout) the server closes it.
//!
//! Invariant: decoding never panics on any bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const KIND_AUTH: u8 = 1;
pub const KIND_EVENTS: u8 = 2;

/// Outcome of one client frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Durable in the gateway log.
    Ok = 0,
    /// A retry of an accepted request (same idempotency key): durable, not appended again.
    Duplicate = 1,
    Unauthorized = 2,
    TooLarge = 3,
    BadRequest = 4,
    /// Backpressure or a failed commit: retry after `retry_after_ms`.
    RetryLater = 5,
    TooManyConnections = 6,
    Timeout = 7,
    /// The gateway's log failed; it accepts nothing more.
    Failed = 8,
}

impl Status {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Status::Ok,
            1 => Status::Duplicate,
            2 => Status::Unauthorized,
            3 => Status::TooLarge,
            4 => Status::BadRequest,
            5 => Status::RetryLater,
            6 => Status::TooManyConnections,
            7 => Status::Timeout,
            8 => Status::Failed,
            _ => return None,
        })
    }
    /// True if the events are durable.
    pub fn accepted(self) -> bool {
        matches!(self, Status::Ok | Status::Duplicate)
    }
}

/// A server frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub request_id: u64,
    pub retry_after_ms: u32,
    pub partition: u32,
    pub first: u64,
    pub count: u32,
    pub message: String,
}

impl Reply {
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(33 + self.message.len());
        body.push(self.status as u8);
        body.extend_from_slice(&self.request_id.to_be_bytes());
        body.extend_from_slice(&self.retry_after_ms.to_be_bytes());
        body.extend_from_slice(&self.partition.to_be_bytes());
        body.extend_from_slice(&self.first.to_be_bytes());
        body.extend_from_slice(&self.count.to_be_bytes());
        body.extend_from_slice(self.message.as_bytes());
        framed(body)
    }

    /// Decode a server frame body (without the length prefix).
    pub fn decode(body: &[u8]) -> Result<Self, &'static str> {
        if body.len() < 29 {
            return Err("short reply");
        }
        let status = Status::from_u8(body[0]).ok_or("unknown status")?;
        let u32_at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        Ok(Self {
            status,
            request_id: u64_at(1),
            retry_after_ms: u32_at(9),
            partition: u32_at(13),
            first: u64_at(17),
            count: u32_at(25),
            message: String::from_utf8_lossy(&body[29..]).into_owned(),
        })
    }
}

fn framed(body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// An AUTH frame.
pub fn encode_auth(token: &str) -> Vec<u8> {
    let mut body = vec![KIND_AUTH];
    body.extend_from_slice(token.as_bytes());
    framed(body)
}

/// An EVENTS frame.
pub fn encode_events<E: AsRef<[u8]>>(request_id: u64, key: &[u8], events: &[E]) -> Vec<u8> {
    assert!(key.len() <= u16::MAX as usize, "idempotency key too long");
    let size: usize = 11 + key.len() + events.iter().map(|e| 4 + e.as_ref().len()).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.push(KIND_EVENTS);
    body.extend_from_slice(&request_id.to_be_bytes());
    body.extend_from_slice(&(key.len() as u16).to_be_bytes());
    body.extend_from_slice(key);
    for e in events {
        let e = e.as_ref();
        body.extend_from_slice(&(e.len() as u32).to_be_bytes());
        body.extend_from_slice(e);
    }
    framed(body)
}

/// The key and events of an EVENTS body after its kind byte and request id.
pub fn decode_events(rest: &[u8]) -> Result<(&[u8], Vec<&[u8]>), &'static str> {
    if rest.len() < 2 {
        return Err("missing idempotency key length");
    }
    let key_len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    let key = rest.get(2..2 + key_len).ok_or("idempotency key past the frame end")?;
    let mut at = 2 + key_len;
    let mut events = Vec::new();
    while at < rest.len() {
        let len_bytes = rest.get(at..at + 4).ok_or("event length past the frame end")?;
        let len = u32::from_be_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
        let ev = rest.get(at + 4..at + 4 + len).ok_or("event past the frame end")?;
        events.push(ev);
        at += 4 + len;
    }
    Ok((key, events))
}

/// A blocking client of the TCP protocol (one request at a time).
pub struct TcpClient {
    stream: TcpStream,
}

impl TcpClient {
    /// Connect, and authenticate if `token` is given (the AUTH reply must be Ok).
    pub fn connect(addr: SocketAddr, token: Option<&str>, timeout: Duration) -> std::io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut client = Self { stream };
        if let Some(t) = token {
            client.stream.write_all(&encode_auth(t))?;
            let reply = client.read_reply()?;
            if reply.status != Status::Ok {
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, format!("auth: {reply:?}")));
            }
        }
        Ok(client)
    }

    /// Send a raw frame (tests send malformed ones) and read the reply.
    pub fn send_raw(&mut self, frame: &[u8]) -> std::io::Result<Reply> {
        self.stream.write_all(frame)?;
        self.read_reply()
    }

    /// Send events and wait for the reply.
    pub fn send<E: AsRef<[u8]>>(&mut self, request_id: u64, key: &[u8], events: &[E]) -> std::io::Result<Reply> {
        self.send_raw(&encode_events(request_id, key, events))
    }

    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 20 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "reply too long"));
        }
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Reply::decode(&body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// An HTTP response as the blocking client sees it.
#[derive(Clone, Debug)]
pub struct HttpReply {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub close: bool,
    pub body: String,
}

/// A blocking HTTP/1.1 keep-alive client for `POST /v1/events` (reconnects when the server
/// closed the connection).
pub struct HttpClient {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// Bind the client side to this local address (tests use 127.0.0.x to act as many clients).
    pub local: Option<std::net::IpAddr>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            stream: None,
            local: None,
        }
    }

    fn connection(&mut self) -> std::io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = match self.local {
                Some(ip) => connect_from(ip, self.addr, self.timeout)?,
                None => TcpStream::connect_timeout(&self.addr, self.timeout)?,
            };
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        Ok(self.stream.as_mut().expect("connected above"))
    }

    /// `POST path` with `body`; `headers` are extra header lines (`Name: value`).
    pub fn post(&mut self, path: &str, body: &[u8], headers: &[String]) -> std::io::Result<HttpReply> {
        self.request("POST", path, body, headers)
    }

    pub fn request(&mut self, method: &str, path: &str, body: &[u8], headers: &[String]) -> std::io::Result<HttpReply> {
        self.send_request(method, path, body, headers, false)
    }

    /// `POST path` with `Expect: 100-continue`: the body is sent only after the server's
    /// `100 Continue`, so a refused request (401, 413, 503) never transfers its body.
    pub fn post_expect_continue(&mut self, path: &str, body: &[u8], headers: &[String]) -> std::io::Result<HttpReply> {
        self.send_request("POST", path, body, headers, true)
    }

    fn send_request(&mut self, method: &str, path: &str, body: &[u8], headers: &[String], expect: bool) -> std::io::Result<HttpReply> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: weir\r\nContent-Length: {}\r\n", body.len());
        for h in headers {
            head.push_str(h);
            head.push_str("\r\n");
        }
        if expect {
            head.push_str("Expect: 100-continue\r\n");
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        if !expect {
            request.extend_from_slice(body);
        }
        let result = (|| {
            let s = self.connection()?;
            s.write_all(&request)?;
            if expect {
                let first = read_response(s)?;
                if first.status != 100 {
                    return Ok(first);
                }
                s.write_all(body)?;
            }
            read_response(s)
        })();
        match result {
            Ok(r) => {
                if r.close {
                    self.stream = None;
                }
                Ok(r)
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// Connect to `to` from local address `from` (port chosen by the kernel).
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let domain = if to.is_ipv6() { socket2::Domain::IPV6 } else { socket2::Domain::IPV4 };
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), timeout)?;
    Ok(socket.into())
}

/// Read one response (head + `Content-Length` body) from `s`.
pub fn read_response(s: &mut TcpStream) -> std::io::Result<HttpReply> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(e) = super::http::head_end(&buf) {
            break e;
        }
        if buf.len() > 64 << 10 {
            return Err(bad("response head too long"));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("response head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let (mut len, mut retry_after, mut close) = (0usize, None, false);
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            let v = v.trim();
            if n.eq_ignore_ascii_case("content-length") {
                len = v.parse().map_err(|_| bad("bad Content-Length"))?;
            } else if n.eq_ignore_ascii_case("retry-after") {
                retry_after = v.parse().ok();
            } else if n.eq_ignore_ascii_case("connection") {
                close = v.eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = buf[end..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed in a response body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    Ok(HttpReply {
        status,
        retry_after,
        close,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        let f = encode_events(7, b"key", &[&b"{\"a\":1}"[..], b""]);
        let len = u32::from_be_bytes(f[..4].try_into().unwrap()) as usize;
        assert_eq!(len, f.len() - 4);
        assert_eq!(f[4], KIND_EVENTS);
        assert_eq!(u64::from_be_bytes(f[5..13].try_into().unwrap()), 7);
        let (key, events) = decode_events(&f[13..]).unwrap();
        assert_eq!(key, b"key");
        assert_eq!(events, vec![&b"{\"a\":1}"[..], b""]);
        assert!(decode_events(&[0, 9, 1]).is_err());
        assert!(decode_events(&[0, 0, 0, 0, 0, 9, 1]).is_err());
        let r = Reply {
            status: Status::RetryLater,
            request_id: 3,
            retry_after_ms: 1000,
            partition: 1,
            first: 42,
            count: 2,
            message: "busy".into(),
        };
        let bytes = r.encode();
        assert_eq!(Reply::decode(&bytes[4..]).unwrap(), r);
        assert!(Reply::decode(&bytes[4..20]).is_err());
    }
}
