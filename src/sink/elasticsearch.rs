//! The Elasticsearch / OpenSearch sink (Flink's `elasticsearch-7` connector in SQL): documents
//! are sent with `POST /_bulk` (`index` actions) over a keep-alive HTTP/1.1 connection on a
//! glommio socket (no blocking I/O on the shard).
//!
//! Guarantee: at-least-once with idempotent writes. A document's `_id` is derived from the
//! record's key (SQL: the `document-id.fields` columns joined by `document-id.key-delimiter`,
//! e.g. the group key and window start of a window aggregate), so a replay after a restore
//! overwrites the same documents instead of adding new ones. Everything buffered before a
//! checkpoint barrier is acknowledged by the server before the barrier passes the sink.
//!
//! Failures: the bulk response is checked item by item. Items rejected with 429 / 502 / 503 /
//! 504 (and whole requests failing with those or a connection error) are retried with
//! exponential backoff (`max_retries`, `backoff_ms` doubling); any other item error fails the
//! job with the document id, status, error type and reason of the first failed items.
//!
//! Invariants: the buffer holds at most one input step's documents and is sent in requests of
//! at most `max_actions` documents; the connection is reopened after an I/O error.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::Sink;
use crate::batch::Batch;
use crate::error::{Result, WeirError};
use crate::operator::Push;
use crate::shard::{BuildCtx, Flusher, OperatorMetrics};
use crate::time::Timestamp;

/// A record written as one document.
pub trait EsDocument {
    /// The document id (`None`: the server assigns one, replays then duplicate).
    fn doc_id(&self) -> Option<String>;
    /// Append the document's JSON source (one line, no newline) to `out`.
    fn write_source(&self, out: &mut Vec<u8>) -> std::result::Result<(), String>;
}

/// Settings of the sink (every limit has a default in the SQL connector).
#[derive(Clone, Debug)]
pub struct ElasticsearchConfig {
    /// Server address (resolved before the job starts).
    pub address: SocketAddr,
    /// The `Host` header (`host:port` as given).
    pub host: String,
    pub index: String,
    /// `Authorization: Basic ...` value, if a username is set.
    pub basic_auth: Option<String>,
    /// Documents per bulk request (Flink's `sink.bulk-flush.max-actions`).
    pub max_actions: usize,
    /// Retries of retryable failures (Flink's `sink.bulk-flush.backoff.max-retries`).
    pub max_retries: u32,
    /// First backoff delay, doubled per retry (Flink's `sink.bulk-flush.backoff.delay`).
    pub backoff_ms: u64,
    /// Connect, write and response timeout per request.
    pub timeout: Duration,
}

/// Standard base64 (for basic auth).
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The sink of records `T` into an index.
pub struct ElasticsearchSink<T> {
    config: Arc<ElasticsearchConfig>,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T> ElasticsearchSink<T> {
    pub fn new(config: ElasticsearchConfig) -> Self {
        Self {
            config: Arc::new(config),
            _t: std::marker::PhantomData,
        }
    }
}

#[derive(Default)]
struct DocBuffer {
    docs: Vec<(Option<String>, Vec<u8>)>,
    error: Option<WeirError>,
}

struct FormatDocs<T> {
    buffer: Rc<RefCell<DocBuffer>>,
    metrics: Arc<OperatorMetrics>,
    index: String,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T: EsDocument> Push<T> for FormatDocs<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        let mut b = self.buffer.borrow_mut();
        for r in &batch.records {
            if b.error.is_some() {
                break;
            }
            let mut source = Vec::new();
            match r.write_source(&mut source) {
                Ok(()) => b.docs.push((r.doc_id(), source)),
                Err(e) => {
                    b.error = Some(WeirError::Other(format!(
                        "elasticsearch sink {}: a document cannot be written: {e}",
                        self.index
                    )))
                }
            }
        }
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
}

impl<T: EsDocument + Send + 'static> Sink<T> for ElasticsearchSink<T> {
    fn name(&self) -> String {
        format!("elasticsearch:{}", self.config.index)
    }

    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        let buffer = Rc::new(RefCell::new(DocBuffer::default()));
        ctx.add_flusher(Box::new(BulkWriter {
            config: self.config.clone(),
            buffer: buffer.clone(),
            conn: None,
        }));
        Ok(Box::new(FormatDocs {
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            index: self.config.index.clone(),
            _t: std::marker::PhantomData,
        }))
    }
}

/// An HTTP response: status and body.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// One keep-alive connection (also used by the Kinesis source's client).
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    /// Bytes read past the previous response.
    pub(crate) buf: Vec<u8>,
}

/// Whether a status is worth retrying (the server is overloaded or restarting).
fn retryable(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// The bulk response's verdict: items to retry (by position in the request) and the first
/// non-retryable failures (described).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BulkOutcome {
    pub retry: Vec<usize>,
    pub failed: Vec<String>,
}

/// Read a `_bulk` response body for a request of `count` items with ids `ids`.
pub fn bulk_outcome(body: &[u8], ids: &[Option<String>]) -> std::result::Result<BulkOutcome, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("bulk response is not JSON: {e}"))?;
    let mut out = BulkOutcome::default();
    if v.get("errors").and_then(|e| e.as_bool()) != Some(true) {
        return Ok(out);
    }
    let items = v.get("items").and_then(|i| i.as_array()).ok_or("bulk response without items")?;
    for (k, item) in items.iter().enumerate() {
        let Some(result) = item.as_object().and_then(|o| o.values().next()) else {
            continue;
        };
        let status = result.get("status").and_then(|s| s.as_u64()).unwrap_or(0) as u16;
        if result.get("error").is_none() && status < 300 {
            continue;
        }
        if retryable(status) {
            out.retry.push(k);
        } else {
            let err = result.get("error");
            let kind = err.and_then(|e| e.get("type")).and_then(|t| t.as_str()).unwrap_or("error");
            let reason = err.and_then(|e| e.get("reason")).and_then(|t| t.as_str()).unwrap_or("");
            let id = ids.get(k).cloned().flatten().unwrap_or_else(|| format!("#{k}"));
            out.failed.push(format!("document {id}: {status} {kind}: {reason}"));
        }
    }
    Ok(out)
}

/// The async half: bulk requests with retries.
struct BulkWriter {
    config: Arc<ElasticsearchConfig>,
    buffer: Rc<RefCell<DocBuffer>>,
    conn: Option<Conn>,
}

impl BulkWriter {
    fn fail(&self, what: &str) -> WeirError {
        WeirError::Other(format!("elasticsearch sink {} at {}: {what}", self.config.index, self.config.address))
    }

    async fn request(&mut self, body: &[u8]) -> std::result::Result<Response, String> {
        if self.conn.is_none() {
            let stream = glommio::net::TcpStream::connect_timeout(self.config.address, self.config.timeout)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(self.config.timeout));
            let _ = stream.set_write_timeout(Some(self.config.timeout));
            self.conn = Some(Conn { stream, buf: Vec::new() });
        }
        let mut head = format!(
            "POST /_bulk HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n",
            self.config.host,
            body.len()
        );
        if let Some(auth) = &self.config.basic_auth {
            head.push_str(&format!("Authorization: Basic {auth}\r\n"));
        }
        head.push_str("\r\n");
        let conn = self.conn.as_mut().expect("connected above");
        let result = async {
            conn.stream.write_all(head.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
            conn.stream.write_all(body).await.map_err(|e| format!("write: {e}"))?;
            read_response(conn).await
        }
        .await;
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    /// Send `docs` (retrying what may succeed later); `Err` on a permanent failure.
    async fn send(&mut self, mut docs: Vec<(Option<String>, Vec<u8>)>) -> Result<()> {
        let mut delay = self.config.backoff_ms.max(1);
        let mut attempt = 0u32;
        loop {
            let mut body = Vec::new();
            for (id, source) in &docs {
                let action = match id {
                    Some(id) => serde_json::json!({ "index": { "_index": self.config.index, "_id": id } }),
                    None => serde_json::json!({ "index": { "_index": self.config.index } }),
                };
                serde_json::to_writer(&mut body, &action).expect("JSON of an action");
                body.push(b'\n');
                body.extend_from_slice(source);
                body.push(b'\n');
            }
            let retry: Vec<usize> = match self.request(&body).await {
                Ok(r) if r.status == 200 => {
                    let ids: Vec<Option<String>> = docs.iter().map(|d| d.0.clone()).collect();
                    let outcome = bulk_outcome(&r.body, &ids).map_err(|e| self.fail(&e))?;
                    if !outcome.failed.is_empty() {
                        let n = outcome.failed.len();
                        let shown: Vec<&String> = outcome.failed.iter().take(3).collect();
                        return Err(self.fail(&format!(
                            "{n} document(s) rejected: {}",
                            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("; ")
                        )));
                    }
                    outcome.retry
                }
                Ok(r) if retryable(r.status) => (0..docs.len()).collect(),
                Ok(r) => {
                    let text = String::from_utf8_lossy(&r.body[..r.body.len().min(500)]).into_owned();
                    return Err(self.fail(&format!("bulk request answered {}: {text}", r.status)));
                }
                Err(e) => {
                    if attempt >= self.config.max_retries {
                        return Err(self.fail(&e));
                    }
                    (0..docs.len()).collect()
                }
            };
            if retry.is_empty() {
                return Ok(());
            }
            if attempt >= self.config.max_retries {
                return Err(self.fail(&format!("{} document(s) still rejected as busy after {attempt} retries", retry.len())));
            }
            attempt += 1;
            glommio::timer::sleep(Duration::from_millis(delay)).await;
            delay = delay.saturating_mul(2);
            let mut keep = vec![false; docs.len()];
            for k in retry {
                keep[k] = true;
            }
            let mut k = 0;
            docs.retain(|_| {
                k += 1;
                keep[k - 1]
            });
        }
    }
}

/// Read one response (`Content-Length` or chunked body) from the connection.
pub(crate) async fn read_response(conn: &mut Conn) -> std::result::Result<Response, String> {
    let mut chunk = vec![0u8; 16 << 10];
    let end = loop {
        if let Some(e) = crate::source::gateway::http::head_end(&conn.buf) {
            break e;
        }
        if conn.buf.len() > 64 << 10 {
            return Err("response head too long".into());
        }
        let n = conn.stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a response".into());
        }
        conn.buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&conn.buf[..end]).into_owned();
    conn.buf.drain(..end);
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("bad status line")?;
    let (mut length, mut chunked) = (None, false);
    for l in lines {
        if let Some((n, v)) = l.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let line_end = loop {
                if let Some(i) = conn.buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let n = conn.stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed in a chunked body".into());
                }
                conn.buf.extend_from_slice(&chunk[..n]);
            };
            let size_text = String::from_utf8_lossy(&conn.buf[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16).map_err(|_| "bad chunk size")?;
            conn.buf.drain(..line_end + 2);
            while conn.buf.len() < size + 2 {
                let n = conn.stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed in a chunk".into());
                }
                conn.buf.extend_from_slice(&chunk[..n]);
            }
            body.extend_from_slice(&conn.buf[..size]);
            conn.buf.drain(..size + 2);
            if size == 0 {
                break;
            }
            if body.len() > 256 << 20 {
                return Err("response body too long".into());
            }
        }
    } else {
        let len = length.unwrap_or(0);
        if len > 256 << 20 {
            return Err("response body too long".into());
        }
        while conn.buf.len() < len {
            let n = conn.stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("connection closed in a response body".into());
            }
            conn.buf.extend_from_slice(&chunk[..n]);
        }
        body = conn.buf.drain(..len).collect();
    }
    Ok(Response { status, body })
}

impl Flusher for BulkWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let docs = {
                let mut b = self.buffer.borrow_mut();
                if let Some(e) = b.error.take() {
                    return Err(e);
                }
                std::mem::take(&mut b.docs)
            };
            let mut docs = docs.into_iter().peekable();
            while docs.peek().is_some() {
                let chunk: Vec<_> = docs.by_ref().take(self.config.max_actions.max(1)).collect();
                self.send(chunk).await?;
            }
            Ok(())
        })
    }

    fn has_pending(&self) -> bool {
        let b = self.buffer.borrow();
        !b.docs.is_empty() || b.error.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_items_are_sorted_into_retries_and_failures() {
        let body = br#"{"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_id":"c","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}}]}"#;
        let ids = vec![Some("a".to_string()), Some("b".to_string()), Some("c".to_string())];
        let o = bulk_outcome(body, &ids).unwrap();
        assert_eq!(o.retry, vec![1]);
        assert_eq!(
            o.failed,
            vec!["document c: 400 mapper_parsing_exception: failed to parse field [n]".to_string()]
        );
        assert_eq!(bulk_outcome(br#"{"errors":false,"items":[]}"#, &[]).unwrap(), BulkOutcome::default());
        assert_eq!(base64(b"elastic:changeme"), "ZWxhc3RpYzpjaGFuZ2VtZQ==");
        assert_eq!(base64(b"ab"), "YWI=");
    }
}
