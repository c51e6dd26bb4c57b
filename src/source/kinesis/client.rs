//! A small Kinesis API client: JSON 1.1 over HTTP/1.1 (keep-alive) on a glommio `TcpStream`,
//! signed with SigV4 ([`super::sigv4`]). Only the calls weir needs: `ListShards`,
//! `GetShardIterator`, `GetRecords`, and for tests and benchmarks `CreateStream`,
//! `DescribeStreamSummary` and `PutRecords`.
//!
//! Off a shard (planning on the driver, test set-up) [`blocking`] runs the same async client on a
//! short-lived glommio executor thread, so there is one implementation and no blocking socket on
//! a shard.
//!
//! Invariants: every request has a timeout (connect, write and read); a connection that failed
//! or timed out is dropped and reopened by the next call; errors keep the service's error type
//! (`__type`) so callers can tell throttling and expired iterators from real failures; plain
//! HTTP only (no TLS: AWS itself needs a TLS-terminating proxy in front, see the README).

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_lite::AsyncWriteExt;
use serde::{Deserialize, Serialize};

use super::sigv4::{self, Credentials};
use crate::error::{Result, WeirError};
use crate::sink::elasticsearch::{read_response, Conn};

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Where and how to reach the Kinesis API.
#[derive(Clone, Debug)]
pub struct KinesisEndpoint {
    /// Resolved socket address.
    pub address: SocketAddr,
    /// `host[:port]` as given (the `Host` header, signed).
    pub host: String,
    pub region: String,
    pub credentials: Credentials,
    /// Connect / write / read timeout per request.
    pub timeout: Duration,
}

impl KinesisEndpoint {
    /// Parse `http://host:port` (`aws.endpoint`). HTTPS is refused with the reason.
    pub fn new(endpoint: &str, region: &str, credentials: Credentials) -> Result<Self> {
        let rest = if let Some(r) = endpoint.strip_prefix("http://") {
            r
        } else if endpoint.starts_with("https://") {
            return Err(WeirError::Config(format!(
                "kinesis: endpoint {endpoint}: weir's Kinesis client speaks plain HTTP only (put a TLS-terminating proxy in front of HTTPS endpoints)"
            )));
        } else {
            endpoint
        };
        let host = rest.trim_end_matches('/').to_string();
        let with_port = if host.contains(':') { host.clone() } else { format!("{host}:80") };
        let address = with_port
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| WeirError::Config(format!("kinesis: cannot resolve endpoint {endpoint}")))?;
        Ok(Self {
            address,
            host,
            region: region.to_string(),
            credentials,
            timeout: Duration::from_secs(10),
        })
    }
}

/// A failed API call, classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiError {
    /// `ProvisionedThroughputExceededException` / `LimitExceededException`: back off and retry.
    Throttled(String),
    /// `ExpiredIteratorException`: get a new iterator and retry.
    ExpiredIterator(String),
    /// The connection failed or timed out, or the service answered 5xx: retry a few times.
    Transient(String),
    /// Anything else (missing stream, bad request, access denied): fail.
    Fatal(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Throttled(m) | ApiError::ExpiredIterator(m) | ApiError::Transient(m) | ApiError::Fatal(m) => f.write_str(m),
        }
    }
}

/// Classify an error answer (`status`, body `{"__type": ..., "message": ...}`).
pub fn classify(status: u16, body: &[u8]) -> ApiError {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: String,
        #[serde(default, alias = "Message")]
        message: String,
    }
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or(ErrorBody {
        kind: String::new(),
        message: String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    });
    let kind = parsed.kind.rsplit('#').next().unwrap_or("").to_string();
    let text = format!("{status} {kind}: {}", parsed.message);
    match kind.as_str() {
        "ProvisionedThroughputExceededException" | "LimitExceededException" | "ThrottlingException" => ApiError::Throttled(text),
        "ExpiredIteratorException" => ApiError::ExpiredIterator(text),
        _ if status >= 500 => ApiError::Transient(text),
        _ => ApiError::Fatal(text),
    }
}

/// A shard as `ListShards` describes it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Shard {
    pub shard_id: String,
    #[serde(default)]
    pub parent_shard_id: Option<String>,
}

/// One record of a `GetRecords` answer (data still base64).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WireRecord {
    pub data: String,
    #[serde(default)]
    pub partition_key: String,
    pub sequence_number: String,
    /// Seconds since the epoch (fractional).
    #[serde(default)]
    pub approximate_arrival_timestamp: f64,
}

/// A `GetRecords` answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RecordsPage {
    #[serde(default)]
    pub records: Vec<WireRecord>,
    /// `None`: the shard is closed and fully read.
    #[serde(default)]
    pub next_shard_iterator: Option<String>,
    #[serde(default)]
    pub millis_behind_latest: i64,
}

/// Where a shard iterator starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum IteratorStart {
    TrimHorizon,
    Latest,
    /// First record that arrived at or after this time (ms since the epoch).
    AtTimestamp(i64),
    /// Right after this sequence number.
    AfterSequenceNumber(String),
    /// At this sequence number (tests).
    AtSequenceNumber(String),
}

/// One connection to the Kinesis API (one per split reader: requests on it are sequential).
pub struct KinesisClient {
    endpoint: Arc<KinesisEndpoint>,
    conn: Option<Conn>,
}

impl KinesisClient {
    pub fn new(endpoint: Arc<KinesisEndpoint>) -> Self {
        Self { endpoint, conn: None }
    }

    /// Call `operation` with a JSON body; the JSON answer or a classified error.
    pub async fn call(&mut self, operation: &str, body: &serde_json::Value) -> std::result::Result<serde_json::Value, ApiError> {
        let body = serde_json::to_vec(body).expect("JSON of a request");
        let target = format!("Kinesis_20131202.{operation}");
        let e = &self.endpoint;
        let request = sigv4::Request {
            host: &e.host,
            target: &target,
            content_type: CONTENT_TYPE,
            body: &body,
        };
        let headers = sigv4::sign(&e.credentials, &e.region, "kinesis", &request, crate::time::now_ms());
        let mut head = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nContent-Type: {CONTENT_TYPE}\r\nX-Amz-Target: {target}\r\nContent-Length: {}\r\n",
            e.host,
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let timeout = e.timeout;
        let address = e.address;
        let exchange = async {
            if self.conn.is_none() {
                let stream = glommio::net::TcpStream::connect_timeout(address, timeout)
                    .await
                    .map_err(|err| format!("connect to {address}: {err}"))?;
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(timeout));
                let _ = stream.set_write_timeout(Some(timeout));
                self.conn = Some(Conn { stream, buf: Vec::new() });
            }
            let conn = self.conn.as_mut().expect("connected above");
            conn.stream.write_all(head.as_bytes()).await.map_err(|err| format!("write: {err}"))?;
            conn.stream.write_all(&body).await.map_err(|err| format!("write: {err}"))?;
            read_response(conn).await
        };
        let response = match exchange.await {
            Ok(r) => r,
            Err(err) => {
                self.conn = None;
                return Err(ApiError::Transient(format!("kinesis {operation} at {address}: {err}")));
            }
        };
        if response.status != 200 {
            return Err(match classify(response.status, &response.body) {
                ApiError::Throttled(m) => ApiError::Throttled(format!("kinesis {operation}: {m}")),
                ApiError::ExpiredIterator(m) => ApiError::ExpiredIterator(format!("kinesis {operation}: {m}")),
                ApiError::Transient(m) => ApiError::Transient(format!("kinesis {operation}: {m}")),
                ApiError::Fatal(m) => ApiError::Fatal(format!("kinesis {operation}: {m}")),
            });
        }
        if response.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Null); // CreateStream answers nothing
        }
        serde_json::from_slice(&response.body).map_err(|err| ApiError::Fatal(format!("kinesis {operation}: answer is not JSON: {err}")))
    }

    /// Every shard of `stream` (following `NextToken`), sorted by shard id.
    pub async fn list_shards(&mut self, stream: &str) -> std::result::Result<Vec<Shard>, ApiError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Page {
            #[serde(default)]
            shards: Vec<Shard>,
            #[serde(default)]
            next_token: Option<String>,
        }
        let mut shards = Vec::new();
        let mut body = serde_json::json!({ "StreamName": stream });
        loop {
            let page: Page = serde_json::from_value(self.call("ListShards", &body).await?).map_err(|e| ApiError::Fatal(format!("kinesis ListShards: {e}")))?;
            shards.extend(page.shards);
            match page.next_token {
                Some(t) => body = serde_json::json!({ "NextToken": t }),
                None => break,
            }
        }
        shards.sort_by(|a, b| a.shard_id.cmp(&b.shard_id));
        Ok(shards)
    }

    pub async fn get_shard_iterator(&mut self, stream: &str, shard: &str, start: &IteratorStart) -> std::result::Result<String, ApiError> {
        let mut body = serde_json::json!({ "StreamName": stream, "ShardId": shard });
        let kind = match start {
            IteratorStart::TrimHorizon => "TRIM_HORIZON",
            IteratorStart::Latest => "LATEST",
            IteratorStart::AtTimestamp(ms) => {
                body["Timestamp"] = serde_json::json!(*ms as f64 / 1000.0);
                "AT_TIMESTAMP"
            }
            IteratorStart::AfterSequenceNumber(s) => {
                body["StartingSequenceNumber"] = serde_json::json!(s);
                "AFTER_SEQUENCE_NUMBER"
            }
            IteratorStart::AtSequenceNumber(s) => {
                body["StartingSequenceNumber"] = serde_json::json!(s);
                "AT_SEQUENCE_NUMBER"
            }
        };
        body["ShardIteratorType"] = serde_json::json!(kind);
        let v = self.call("GetShardIterator", &body).await?;
        v.get("ShardIterator")
            .and_then(|i| i.as_str())
            .map(str::to_string)
            .ok_or_else(|| ApiError::Fatal("kinesis GetShardIterator: no ShardIterator in the answer".into()))
    }

    pub async fn get_records(&mut self, iterator: &str, limit: u32) -> std::result::Result<RecordsPage, ApiError> {
        let v = self
            .call("GetRecords", &serde_json::json!({ "ShardIterator": iterator, "Limit": limit }))
            .await?;
        serde_json::from_value(v).map_err(|e| ApiError::Fatal(format!("kinesis GetRecords: unexpected answer: {e}")))
    }

    /// Create a stream and wait (polling `DescribeStreamSummary`, with a deadline) until it is ACTIVE.
    pub async fn create_stream(&mut self, stream: &str, shards: u32) -> std::result::Result<(), ApiError> {
        self.call("CreateStream", &serde_json::json!({ "StreamName": stream, "ShardCount": shards }))
            .await?;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.call("DescribeStreamSummary", &serde_json::json!({ "StreamName": stream })).await?;
            if v.pointer("/StreamDescriptionSummary/StreamStatus").and_then(|s| s.as_str()) == Some("ACTIVE") {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(ApiError::Fatal(format!("kinesis: stream {stream} did not become ACTIVE in 30 s")));
            }
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Put records `(partition key, data)` in requests of at most 500 (with `explicit_hash_key`
    /// all go to the shard owning that hash key); the sequence numbers in order.
    pub async fn put_records(
        &mut self,
        stream: &str,
        records: &[(String, Vec<u8>)],
        explicit_hash_key: Option<&str>,
    ) -> std::result::Result<Vec<String>, ApiError> {
        let engine = base64::engine::general_purpose::STANDARD;
        let mut sequence_numbers = Vec::with_capacity(records.len());
        for chunk in records.chunks(500) {
            let entries: Vec<serde_json::Value> = chunk
                .iter()
                .map(|(k, d)| match explicit_hash_key {
                    Some(h) => serde_json::json!({ "PartitionKey": k, "Data": engine.encode(d), "ExplicitHashKey": h }),
                    None => serde_json::json!({ "PartitionKey": k, "Data": engine.encode(d) }),
                })
                .collect();
            let v = self
                .call("PutRecords", &serde_json::json!({ "StreamName": stream, "Records": entries }))
                .await?;
            if v.get("FailedRecordCount").and_then(|c| c.as_u64()).unwrap_or(0) > 0 {
                return Err(ApiError::Fatal(format!("kinesis PutRecords: some records failed: {v}")));
            }
            for r in v.get("Records").and_then(|r| r.as_array()).into_iter().flatten() {
                sequence_numbers.push(r.get("SequenceNumber").and_then(|s| s.as_str()).unwrap_or_default().to_string());
            }
        }
        Ok(sequence_numbers)
    }
}

/// Run `work` (given a client) to completion on a fresh glommio executor on a helper thread:
/// for the driver and tests, which are not on a shard.
pub fn blocking<R: Send + 'static, F>(endpoint: Arc<KinesisEndpoint>, work: impl FnOnce(KinesisClient) -> F + Send + 'static) -> Result<R>
where
    F: std::future::Future<Output = R> + 'static,
{
    std::thread::Builder::new()
        .name("weir-kinesis-client".into())
        .spawn(move || {
            glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .map_err(|e| WeirError::Other(format!("kinesis: starting a client executor: {e}")))
                .map(|ex| ex.run(work(KinesisClient::new(endpoint))))
        })
        .map_err(|e| WeirError::Other(format!("kinesis: starting the client thread: {e}")))?
        .join()
        .map_err(|_| WeirError::Other("kinesis: the client thread panicked".into()))?
}

/// Base64-decode a record's data.
pub fn decode_data(data: &str) -> std::result::Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("record data is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_type() {
        let t = br#"{"__type":"ProvisionedThroughputExceededException","message":"Rate exceeded for shard"}"#;
        assert!(matches!(classify(400, t), ApiError::Throttled(m) if m.contains("Rate exceeded")));
        let e = br#"{"__type":"com.amazonaws.kinesis#ExpiredIteratorException","message":"Iterator expired"}"#;
        assert!(matches!(classify(400, e), ApiError::ExpiredIterator(_)));
        assert!(matches!(
            classify(400, br#"{"__type":"ResourceNotFoundException","message":"no"}"#),
            ApiError::Fatal(_)
        ));
        assert!(matches!(classify(503, b"busy"), ApiError::Transient(_)));
    }

    #[test]
    fn https_endpoints_are_refused_with_the_reason() {
        let c = Credentials {
            access_key_id: "a".into(),
            secret_access_key: "b".into(),
            session_token: None,
        };
        let e = KinesisEndpoint::new("https://kinesis.eu-west-1.amazonaws.com", "eu-west-1", c.clone()).unwrap_err();
        assert!(e.to_string().contains("plain HTTP"), "{e}");
        let ok = KinesisEndpoint::new("http://127.0.0.1:4567/", "eu-west-1", c).unwrap();
        assert_eq!(ok.host, "127.0.0.1:4567");
    }
}
