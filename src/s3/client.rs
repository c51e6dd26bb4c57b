//! S3 operations over one keep-alive HTTP/1.1 connection on a glommio `TcpStream`: multipart
//! uploads (create, upload part, complete, abort, list), object listing, ranged and whole
//! GETs, HEAD, PUT, bucket creation. Requests are signed with [`super::sigv4`].
//!
//! Failures: an S3 error answer (XML `<Error>` body) becomes an [`S3Error`] naming operation,
//! bucket, key, HTTP status, S3 code, message and request id. Connection errors, 5xx, 429 and
//! the codes S3 documents as transient (`SlowDown`, `RequestTimeout`, `InternalError`, ...)
//! are retried `max_retries` times with exponential backoff from `retry_backoff`, on a fresh
//! connection; every other error is returned at once.
//!
//! Invariants: a response body is read only up to [`MAX_RESPONSE_BYTES`] (a ranged GET asks
//! for less); a connection is reused only after a complete, keep-alive response; every request
//! (connect, send, answer) is bounded by `request_timeout`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::sigv4::{self, SignInput};
use super::xml;
use super::{BucketTarget, S3Config};
use crate::error::WeirError;

/// The largest response body read (ranged GETs are capped below it by the source's chunk size).
pub const MAX_RESPONSE_BYTES: usize = 80 << 20;

/// A failed S3 request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Error {
    pub operation: &'static str,
    pub bucket: String,
    pub key: String,
    /// HTTP status (0: no answer, see `message`).
    pub status: u16,
    /// S3's error code (`NoSuchBucket`, `SignatureDoesNotMatch`, ...) or `ConnectionError`.
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3 {} s3://{}/{}: ", self.operation, self.bucket, self.key)?;
        if self.status == 0 {
            write!(f, "{}: {}", self.code, self.message)
        } else {
            write!(f, "{} (HTTP {}): {}", self.code, self.status, self.message)?;
            if let Some(id) = &self.request_id {
                write!(f, " [request id {id}]")?;
            }
            Ok(())
        }
    }
}

impl std::error::Error for S3Error {}

impl From<S3Error> for WeirError {
    fn from(e: S3Error) -> Self {
        WeirError::Other(e.to_string())
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// With its quotes, as S3 sends it.
    pub etag: String,
}

/// An answer.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One request to make (retried as a whole).
struct Request<'a> {
    operation: &'static str,
    method: &'static str,
    key: Option<&'a str>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

struct Conn {
    stream: TcpStream,
    /// Bytes read past the previous response.
    buf: Vec<u8>,
}

/// Requests to one bucket (see the module docs). Not `Send`: one per shard.
pub struct S3Client {
    config: Arc<S3Config>,
    target: BucketTarget,
    conn: Option<Conn>,
    /// Requests retried so far (for tests and metrics).
    pub retries: u64,
}

fn retryable_code(code: &str) -> bool {
    matches!(
        code,
        "SlowDown" | "RequestTimeout" | "InternalError" | "ServiceUnavailable" | "RequestTimeTooSkewed" | "OperationAborted" | "ConnectionError"
    )
}

impl S3Client {
    pub fn new(config: Arc<S3Config>, target: BucketTarget) -> Self {
        Self {
            config,
            target,
            conn: None,
            retries: 0,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.target.bucket
    }

    fn error(&self, operation: &'static str, key: Option<&str>, status: u16, code: &str, message: String) -> S3Error {
        S3Error {
            operation,
            bucket: self.target.bucket.clone(),
            key: key.unwrap_or("").to_string(),
            status,
            code: code.to_string(),
            message,
            request_id: None,
        }
    }

    /// The error of a non-2xx answer (S3's XML, or the status alone: HEAD answers have no body).
    fn answer_error(&self, req: &Request<'_>, r: &Response) -> S3Error {
        let text = String::from_utf8_lossy(&r.body[..r.body.len().min(4096)]).into_owned();
        let default_code = match r.status {
            301 => "PermanentRedirect (wrong region or addressing style?)",
            403 => "AccessDenied",
            404 if req.key.is_some() => "NoSuchKey",
            404 => "NoSuchBucket",
            _ => "HttpError",
        };
        let code = xml::text(&text, "Code").unwrap_or_else(|| default_code.to_string());
        let message = xml::text(&text, "Message").unwrap_or_else(|| {
            if text.trim().is_empty() {
                "(no message)".into()
            } else {
                text.trim().to_string()
            }
        });
        let mut e = self.error(req.operation, req.key, r.status, &code, message);
        e.request_id = xml::text(&text, "RequestId").or_else(|| r.header("x-amz-request-id").map(str::to_string));
        if let Some(b) = xml::text(&text, "BucketName") {
            e.bucket = b;
        }
        e
    }

    /// Send `req`, retrying what may succeed later; `Ok` for a 2xx answer.
    async fn send(&mut self, req: Request<'_>) -> Result<Response, S3Error> {
        let mut delay = self.config.retry_backoff.max(Duration::from_millis(1));
        let mut attempt = 0u32;
        loop {
            let outcome = match glommio::timer::timeout(self.config.request_timeout, async { Ok(self.attempt(&req).await) }).await {
                Ok(r) => r,
                Err(_) => {
                    self.conn = None;
                    Err(format!("no answer within {:?}", self.config.request_timeout))
                }
            };
            let err = match outcome {
                Ok(r) if (200..300).contains(&r.status) => return Ok(r),
                Ok(r) => {
                    let e = self.answer_error(&req, &r);
                    if !(r.status >= 500 || r.status == 429 || retryable_code(&e.code)) {
                        return Err(e);
                    }
                    e
                }
                Err(msg) => {
                    self.conn = None;
                    self.error(
                        req.operation,
                        req.key,
                        0,
                        "ConnectionError",
                        format!("{msg} (endpoint {} at {})", self.target.host, self.target.address),
                    )
                }
            };
            if attempt >= self.config.max_retries {
                let mut e = err;
                e.message = format!("{} (after {attempt} retries)", e.message);
                return Err(e);
            }
            attempt += 1;
            self.retries += 1;
            glommio::timer::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(20));
        }
    }

    /// One try: connect if needed, sign, write, read the answer.
    async fn attempt(&mut self, req: &Request<'_>) -> Result<Response, String> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(self.target.address, self.config.request_timeout)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(self.config.request_timeout));
            let _ = stream.set_write_timeout(Some(self.config.request_timeout));
            self.conn = Some(Conn { stream, buf: Vec::new() });
        }
        let path = match req.key {
            Some(k) => format!("{}/{}", self.target.path_prefix, sigv4::uri_encode(k, true)),
            None if self.target.path_prefix.is_empty() => "/".to_string(),
            None => self.target.path_prefix.clone(),
        };
        let payload = sigv4::sha256_hex(req.body);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let date = sigv4::amz_date(now);
        let signed = sigv4::sign(
            &SignInput {
                method: req.method,
                path: &path,
                query: &req.query,
                extra_headers: &req.headers,
                host: &self.target.host,
                payload_sha256: &payload,
                date: &date,
                region: &self.config.region,
            },
            &self.config.credentials,
        );
        let query = sigv4::canonical_query(&req.query);
        let mut head = format!(
            "{} {path}{}{query} HTTP/1.1\r\nhost: {}\r\n",
            req.method,
            if query.is_empty() { "" } else { "?" },
            self.target.host
        );
        for (k, v) in req.headers.iter().chain(signed.iter()) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", req.body.len()));
        let conn = self.conn.as_mut().expect("connected above");
        conn.stream.write_all(head.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        if !req.body.is_empty() {
            conn.stream.write_all(req.body).await.map_err(|e| format!("write: {e}"))?;
        }
        conn.stream.flush().await.map_err(|e| format!("write: {e}"))?;
        let (response, keep_alive) = read_response(conn, req.method == "HEAD").await?;
        if !keep_alive {
            self.conn = None;
        }
        Ok(response)
    }

    /// Start a multipart upload of `key`; returns its upload id.
    pub async fn create_multipart_upload(&mut self, key: &str) -> Result<String, S3Error> {
        let r = self
            .send(Request {
                operation: "CreateMultipartUpload",
                method: "POST",
                key: Some(key),
                query: vec![("uploads".into(), String::new())],
                headers: Vec::new(),
                body: b"",
            })
            .await?;
        let text = String::from_utf8_lossy(&r.body);
        xml::text(&text, "UploadId").ok_or_else(|| {
            self.error(
                "CreateMultipartUpload",
                Some(key),
                r.status,
                "MalformedResponse",
                "no UploadId in the answer".into(),
            )
        })
    }

    /// Upload part `number` (from 1) of an upload; returns its ETag.
    pub async fn upload_part(&mut self, key: &str, upload_id: &str, number: u32, body: &[u8]) -> Result<String, S3Error> {
        let r = self
            .send(Request {
                operation: "UploadPart",
                method: "PUT",
                key: Some(key),
                query: vec![("partNumber".into(), number.to_string()), ("uploadId".into(), upload_id.to_string())],
                headers: Vec::new(),
                body,
            })
            .await?;
        r.header("etag")
            .map(str::to_string)
            .ok_or_else(|| self.error("UploadPart", Some(key), r.status, "MalformedResponse", "no ETag in the answer".into()))
    }

    /// Complete an upload from its parts `(number, etag)`: the object appears. Idempotent: an
    /// upload that is gone (`NoSuchUpload`) while the object exists counts as completed.
    pub async fn complete_multipart_upload(&mut self, key: &str, upload_id: &str, parts: &[(u32, String)]) -> Result<(), S3Error> {
        let mut body = String::from("<CompleteMultipartUpload>");
        for (n, etag) in parts {
            body.push_str(&format!("<Part><PartNumber>{n}</PartNumber><ETag>{}</ETag></Part>", xml::escape(etag)));
        }
        body.push_str("</CompleteMultipartUpload>");
        let mut delay = self.config.retry_backoff.max(Duration::from_millis(1));
        for attempt in 0.. {
            let result = self
                .send(Request {
                    operation: "CompleteMultipartUpload",
                    method: "POST",
                    key: Some(key),
                    query: vec![("uploadId".into(), upload_id.to_string())],
                    headers: vec![("content-type".into(), "application/xml".into())],
                    body: body.as_bytes(),
                })
                .await;
            match result {
                Ok(r) => {
                    // S3 may answer 200 and report an error in the body (documented quirk).
                    let text = String::from_utf8_lossy(&r.body);
                    if text.contains("<Error>") {
                        let mut e = self.answer_error(
                            &Request {
                                operation: "CompleteMultipartUpload",
                                method: "POST",
                                key: Some(key),
                                query: Vec::new(),
                                headers: Vec::new(),
                                body: b"",
                            },
                            &r,
                        );
                        if retryable_code(&e.code) && attempt < self.config.max_retries {
                            glommio::timer::sleep(delay).await;
                            delay *= 2;
                            continue;
                        }
                        e.status = r.status;
                        return Err(e);
                    }
                    return Ok(());
                }
                Err(e) if e.code == "NoSuchUpload" => {
                    return match self.head_object(key).await? {
                        Some(_) => Ok(()),
                        None => Err(S3Error {
                            message: format!(
                                "upload {upload_id} is gone and the object does not exist (aborted, or expired by a lifecycle rule): {}",
                                e.message
                            ),
                            ..e
                        }),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }

    /// Abort an upload (gone already: done).
    pub async fn abort_multipart_upload(&mut self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        let r = self
            .send(Request {
                operation: "AbortMultipartUpload",
                method: "DELETE",
                key: Some(key),
                query: vec![("uploadId".into(), upload_id.to_string())],
                headers: Vec::new(),
                body: b"",
            })
            .await;
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code == "NoSuchUpload" => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Unfinished multipart uploads under `prefix`: `(key, upload id)`, every page.
    pub async fn list_multipart_uploads(&mut self, prefix: &str) -> Result<Vec<(String, String)>, S3Error> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let mut query = vec![("uploads".into(), String::new()), ("prefix".into(), prefix.to_string())];
            if let Some(k) = &key_marker {
                query.push(("key-marker".into(), k.clone()));
            }
            if let Some(u) = &id_marker {
                query.push(("upload-id-marker".into(), u.clone()));
            }
            let r = self
                .send(Request {
                    operation: "ListMultipartUploads",
                    method: "GET",
                    key: None,
                    query,
                    headers: Vec::new(),
                    body: b"",
                })
                .await
                .map_err(|e| S3Error { key: prefix.to_string(), ..e })?;
            let text = String::from_utf8_lossy(&r.body).into_owned();
            for b in xml::blocks(&text, "Upload") {
                if let (Some(k), Some(u)) = (xml::text(b, "Key"), xml::text(b, "UploadId")) {
                    out.push((k, u));
                }
            }
            if xml::text(&text, "IsTruncated").as_deref() != Some("true") {
                return Ok(out);
            }
            key_marker = xml::text(&text, "NextKeyMarker");
            id_marker = xml::text(&text, "NextUploadIdMarker");
            if key_marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// Objects under `prefix` (all pages, in key order).
    pub async fn list_objects(&mut self, prefix: &str) -> Result<Vec<ObjectInfo>, S3Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("list-type".into(), "2".into()), ("prefix".into(), prefix.to_string())];
            if let Some(t) = &token {
                query.push(("continuation-token".into(), t.clone()));
            }
            let r = self
                .send(Request {
                    operation: "ListObjectsV2",
                    method: "GET",
                    key: None,
                    query,
                    headers: Vec::new(),
                    body: b"",
                })
                .await
                .map_err(|e| S3Error { key: prefix.to_string(), ..e })?;
            let text = String::from_utf8_lossy(&r.body).into_owned();
            for b in xml::blocks(&text, "Contents") {
                if let Some(key) = xml::text(b, "Key") {
                    out.push(ObjectInfo {
                        key,
                        size: xml::text(b, "Size").and_then(|s| s.parse().ok()).unwrap_or(0),
                        etag: xml::text(b, "ETag").unwrap_or_default(),
                    });
                }
            }
            token = xml::text(&text, "NextContinuationToken");
            if xml::text(&text, "IsTruncated").as_deref() != Some("true") || token.is_none() {
                out.sort_by(|a, b| a.key.cmp(&b.key));
                return Ok(out);
            }
        }
    }

    /// Bytes `start .. start + len` of `key` (fewer at the end of the object); with `if_match`
    /// the object must still have that ETag (`PreconditionFailed` otherwise).
    pub async fn get_range(&mut self, key: &str, start: u64, len: u64, if_match: Option<&str>) -> Result<Vec<u8>, S3Error> {
        let mut headers = vec![("range".to_string(), format!("bytes={start}-{}", start + len.max(1) - 1))];
        if let Some(etag) = if_match.filter(|e| !e.is_empty()) {
            headers.push(("if-match".into(), etag.to_string()));
        }
        let r = self
            .send(Request {
                operation: "GetObject",
                method: "GET",
                key: Some(key),
                query: Vec::new(),
                headers,
                body: b"",
            })
            .await?;
        let mut body = r.body;
        if r.status == 200 {
            // A server that ignores Range sends the whole object.
            let end = (start + len).min(body.len() as u64) as usize;
            body = body.get(start as usize..end).map(<[u8]>::to_vec).unwrap_or_default();
        }
        Ok(body)
    }

    /// The whole object.
    pub async fn get_object(&mut self, key: &str) -> Result<Vec<u8>, S3Error> {
        let r = self
            .send(Request {
                operation: "GetObject",
                method: "GET",
                key: Some(key),
                query: Vec::new(),
                headers: Vec::new(),
                body: b"",
            })
            .await?;
        Ok(r.body)
    }

    /// Size and ETag of `key`, `None` if there is no such object.
    pub async fn head_object(&mut self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        let r = self
            .send(Request {
                operation: "HeadObject",
                method: "HEAD",
                key: Some(key),
                query: Vec::new(),
                headers: Vec::new(),
                body: b"",
            })
            .await;
        match r {
            Ok(r) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: r.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0),
                etag: r.header("etag").unwrap_or("").to_string(),
            })),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Write a whole object at once (tools and tests; the sink uses multipart uploads).
    pub async fn put_object(&mut self, key: &str, body: &[u8]) -> Result<(), S3Error> {
        self.send(Request {
            operation: "PutObject",
            method: "PUT",
            key: Some(key),
            query: Vec::new(),
            headers: Vec::new(),
            body,
        })
        .await
        .map(|_| ())
    }

    pub async fn delete_object(&mut self, key: &str) -> Result<(), S3Error> {
        self.send(Request {
            operation: "DeleteObject",
            method: "DELETE",
            key: Some(key),
            query: Vec::new(),
            headers: Vec::new(),
            body: b"",
        })
        .await
        .map(|_| ())
    }

    /// Create the bucket in the configured region (tests, tools). Owned already: done.
    pub async fn create_bucket(&mut self) -> Result<(), S3Error> {
        let body = if self.config.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                xml::escape(&self.config.region)
            )
        };
        match self
            .send(Request {
                operation: "CreateBucket",
                method: "PUT",
                key: None,
                query: Vec::new(),
                headers: Vec::new(),
                body: body.as_bytes(),
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code == "BucketAlreadyOwnedByYou" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Read one answer: status line, headers, and a body by `Content-Length`, chunked encoding, or
/// up to the end of the connection; a HEAD answer has no body. Returns whether the connection
/// may be reused.
async fn read_response(conn: &mut Conn, head_request: bool) -> Result<(Response, bool), String> {
    let mut chunk = vec![0u8; 64 << 10];
    let end = loop {
        if let Some(e) = memchr::memmem::find(&conn.buf, b"\r\n\r\n") {
            break e + 4;
        }
        if conn.buf.len() > 64 << 10 {
            return Err("response head longer than 64 KiB".into());
        }
        let n = conn.stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before an answer".into());
        }
        conn.buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&conn.buf[..end]).into_owned();
    conn.buf.drain(..end);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line '{status_line}'"))?;
    let mut keep_alive = status_line.starts_with("HTTP/1.1");
    let mut headers = Vec::new();
    let (mut length, mut chunked) = (None::<usize>, false);
    for l in lines.filter(|l| !l.is_empty()) {
        let Some((n, v)) = l.split_once(':') else { continue };
        let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
        match n.as_str() {
            "content-length" => length = v.parse().ok(),
            "transfer-encoding" if v.to_ascii_lowercase().contains("chunked") => chunked = true,
            "connection" if v.eq_ignore_ascii_case("close") => keep_alive = false,
            "connection" if v.eq_ignore_ascii_case("keep-alive") => keep_alive = true,
            _ => {}
        }
        headers.push((n, v));
    }
    let mut body = Vec::new();
    let no_body = head_request || status == 204 || status == 304 || (100..200).contains(&status);
    if no_body {
    } else if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = memchr::memmem::find(&conn.buf, b"\r\n") {
                    break i;
                }
                read_more(conn, &mut chunk).await?;
            };
            let size_text = String::from_utf8_lossy(&conn.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| format!("bad chunk size '{size_text}'"))?;
            conn.buf.drain(..line_end + 2);
            if body.len() + size > MAX_RESPONSE_BYTES {
                return Err("response body too long".into());
            }
            while conn.buf.len() < size + 2 {
                read_more(conn, &mut chunk).await?;
            }
            body.extend_from_slice(&conn.buf[..size]);
            conn.buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = length {
        if len > MAX_RESPONSE_BYTES {
            return Err(format!("response body of {len} bytes is too long"));
        }
        while conn.buf.len() < len {
            read_more(conn, &mut chunk).await?;
        }
        body = conn.buf.drain(..len).collect();
    } else {
        // No length: the body runs to the end of the connection.
        keep_alive = false;
        loop {
            let n = conn.stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            conn.buf.extend_from_slice(&chunk[..n]);
            if conn.buf.len() > MAX_RESPONSE_BYTES {
                return Err("response body too long".into());
            }
        }
        body = std::mem::take(&mut conn.buf);
    }
    Ok((Response { status, headers, body }, keep_alive))
}

async fn read_more(conn: &mut Conn, chunk: &mut [u8]) -> Result<(), String> {
    let n = conn.stream.read(chunk).await.map_err(|e| format!("read: {e}"))?;
    if n == 0 {
        return Err("connection closed in the middle of an answer".into());
    }
    conn.buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
