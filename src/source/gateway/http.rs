//! HTTP/1.1 request heads and responses for the gateway (pure functions, no I/O).
//!
//! Only what an ingestion endpoint needs: the request line, `Content-Length` (required for
//! bodies; `Transfer-Encoding` is refused with 411), `Authorization: Bearer`, `Idempotency-Key`,
//! `Connection` and `Expect: 100-continue`. Conflicting `Content-Length` headers, header lines
//! without a colon, non-UTF-8 heads and unknown versions are malformed.
//!
//! Invariant: no byte sequence makes parsing panic; the head is bounded by the caller
//! (`max_header_bytes`) before it is parsed.

/// The end of the request head in `buf` (the index after `\r\n\r\n`), if it is complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4)
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RequestHead {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    /// HTTP/1.0 (keep-alive off by default).
    pub http10: bool,
    pub content_length: Option<u64>,
    pub transfer_encoding: bool,
    /// The bearer token of `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// `Authorization` was present but not a bearer token.
    pub other_authorization: bool,
    pub idempotency_key: Option<String>,
    pub connection_close: bool,
    pub connection_keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    /// Whether the connection stays open after the response.
    pub fn keep_alive(&self) -> bool {
        if self.http10 {
            self.connection_keep_alive && !self.connection_close
        } else {
            !self.connection_close
        }
    }
}

/// Parse a complete head (up to and including the blank line).
pub fn parse_head(head: &[u8]) -> Result<RequestHead, &'static str> {
    let text = std::str::from_utf8(head).map_err(|_| "the request head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or("empty request")?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("malformed method");
    }
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err("unsupported HTTP version"),
    };
    let path = target.split('?').next().unwrap_or("").to_string();
    if !path.starts_with('/') {
        return Err("the request target must be a path");
    }
    let mut h = RequestHead {
        method: method.to_string(),
        path,
        http10,
        ..Default::default()
    };
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line.split_once(':').ok_or("header line without a colon")?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err("malformed header name");
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().map_err(|_| "malformed Content-Length")?;
            if h.content_length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length headers");
            }
            h.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.transfer_encoding = true;
        } else if name.eq_ignore_ascii_case("authorization") {
            match value.strip_prefix("Bearer ") {
                Some(token) => h.bearer = Some(token.trim().to_string()),
                None => h.other_authorization = true,
            }
        } else if name.eq_ignore_ascii_case("idempotency-key") {
            h.idempotency_key = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',') {
                let t = token.trim();
                if t.eq_ignore_ascii_case("close") {
                    h.connection_close = true;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    h.connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            h.expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    Ok(h)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Payload Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A complete response. `retry_after_secs` adds `Retry-After`; `close` adds `Connection: close`.
pub fn response(status: u16, content_type: &str, body: &[u8], retry_after_secs: Option<u64>, close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        reason(status),
        body.len()
    );
    if status == 401 {
        out.push_str("WWW-Authenticate: Bearer\r\n");
    }
    if let Some(s) = retry_after_secs {
        out.push_str(&format!("Retry-After: {s}\r\n"));
    }
    out.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A JSON error body: `{"error": message}`.
pub fn error_body(message: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({ "error": message })).expect("JSON of a string");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ingest_request_head() {
        let raw = b"POST /v1/events?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nAuthorization: Bearer s3cret\r\nIdempotency-Key: k-1\r\nExpect: 100-continue\r\n\r\n";
        let end = head_end(raw).unwrap();
        assert_eq!(end, raw.len());
        let h = parse_head(&raw[..end]).unwrap();
        assert_eq!((h.method.as_str(), h.path.as_str()), ("POST", "/v1/events"));
        assert_eq!(h.content_length, Some(12));
        assert_eq!(h.bearer.as_deref(), Some("s3cret"));
        assert_eq!(h.idempotency_key.as_deref(), Some("k-1"));
        assert!(h.expect_continue && h.keep_alive());
    }

    #[test]
    fn rejects_malformed_heads() {
        for bad in [
            &b"POST /v1/events HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST /v1/events HTTP/2\r\n\r\n",
            b"post /v1/events HTTP/1.1\r\n\r\n",
            b"POST v1 HTTP/1.1\r\n\r\n",
            b"POST /v1/events HTTP/1.1\r\nNoColon\r\n\r\n",
            b"POST /v1/events HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"\xff\xfe",
        ] {
            assert!(parse_head(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(!h.keep_alive());
    }

    #[test]
    fn responses_carry_retry_after_and_connection() {
        let r = String::from_utf8(response(503, "application/json", b"{}", Some(2), true)).unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{r}");
        assert!(r.contains("Retry-After: 2\r\n") && r.contains("Connection: close\r\n\r\n{}"), "{r}");
    }
}
