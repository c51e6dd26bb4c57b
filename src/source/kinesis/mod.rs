//! The Kinesis source (Flink's `kinesis` connector as a source): one split per shard of a
//! stream, records polled with `GetShardIterator` / `GetRecords`, CSV / JSON / raw data through
//! the Kafka source's decoders ([`crate::source::kafka::DecodeMessage`]).
//!
//! Planning (on the driver, when the source is created): `ListShards` lists the stream's
//! shards, sorted by shard id; shard `i` is split `i`, read by shard `i % shards`. Shards
//! created later by resharding are not picked up (restart the job), and a parent shard is read
//! alongside its children (order across a reshard is not kept).
//!
//! Reading (on the shards): each split has its own API connection and a fetch task
//! ([`reader`]) that calls `GetRecords` with at most `max_records_per_get` records per call, waits
//! `poll_interval_ms` when it reached the shard's tip, backs off exponentially (with seeded
//! jitter) on `ProvisionedThroughputExceeded`, renews expired iterators after the last fetched
//! sequence number, and retries transient failures `max_retries` times. Fetched records wait in
//! a bounded inbox; the reader only drains it, so an empty shard reports `Idle` and per-shard
//! watermarks and idleness come from the segment loop like every source's.
//!
//! Event time: any column (SQL `WATERMARK FOR`), or the approximate arrival time (the
//! decoder's message timestamp; SQL `METADATA FROM 'timestamp'`).
//!
//! Checkpoints: a split's position is the sequence number of the last record handed to the
//! job (or, before the first, where the shard starts: `TRIM_HORIZON`, or `AT_TIMESTAMP` — a
//! `LATEST` start is pinned to `AT_TIMESTAMP` of the moment the reader opened, so a restore
//! before the first record misses nothing); `seek` resumes `AFTER_SEQUENCE_NUMBER`.
//!
//! Bounded mode (weir's `scan.bounded.mode = 'latest'`, for tests and batch jobs): a split ends
//! at the first empty `GetRecords` answer with `MillisBehindLatest = 0` (it caught up); a
//! closed shard ends when its iterator does, in either mode.
//!
//! Bad records follow `EngineConfig::on_bad_record` (fail naming stream, shard and sequence
//! number; skip and count; dead-letter files with `file` = `stream/shard@sequence-number`).
//!
//! Invariants: a split hands out each sequence number at most once per run, in order; the
//! position never runs ahead of what the job received; no record content makes it panic.

pub mod client;
mod reader;
pub mod sigv4;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use self::client::{IteratorStart, KinesisEndpoint};
use self::sigv4::Credentials;
use super::kafka::{decode, DecoderFactory, StopHandle};
use super::{Source, SplitReader};
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;

/// Where a shard starts when there is no checkpoint (Flink's `scan.stream.initpos`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitialPosition {
    /// Records that arrive after the reader opened (`LATEST`).
    Latest,
    /// The oldest record still kept (`TRIM_HORIZON`).
    TrimHorizon,
    /// Records that arrived at or after this time, ms since the epoch (`AT_TIMESTAMP`).
    AtTimestamp(i64),
}

/// What the source reads and how (every limit has a default).
#[derive(Clone, Debug)]
pub struct KinesisSourceOptions {
    pub stream: String,
    /// `http://host:port` (`aws.endpoint`).
    pub endpoint: String,
    /// `aws.region` (signed into every request).
    pub region: String,
    /// `None`: from the `AWS_*` environment variables.
    pub credentials: Option<Credentials>,
    pub initial_position: InitialPosition,
    /// End each split when it caught up (see the module docs).
    pub bounded: bool,
    /// `Limit` of one `GetRecords` call (Flink's `scan.shard.getrecords.maxrecordcount`).
    pub max_records_per_get: u32,
    /// Wait between `GetRecords` calls at the shard's tip (`scan.shard.getrecords.intervalmillis`).
    pub poll_interval_ms: u64,
    /// Backoff after throttling or a transient failure: first delay and cap.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Transient failures (connection, 5xx) in a row before the job fails.
    pub max_retries: u32,
    /// Records fetched ahead per split (the inbox).
    pub fetch_ahead_records: usize,
    /// Timeout of one API request.
    pub request_timeout_ms: u64,
}

impl KinesisSourceOptions {
    /// Read `stream` at `endpoint` from `TRIM_HORIZON`, unbounded.
    pub fn new(endpoint: impl Into<String>, region: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            endpoint: endpoint.into(),
            region: region.into(),
            credentials: None,
            initial_position: InitialPosition::TrimHorizon,
            bounded: false,
            max_records_per_get: 10_000,
            poll_interval_ms: 200,
            backoff_base_ms: 300,
            backoff_max_ms: 10_000,
            max_retries: 10,
            fetch_ahead_records: 20_000,
            request_timeout_ms: 10_000,
        }
    }
    pub fn credentials(mut self, access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        self.credentials = Some(Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        });
        self
    }
    pub fn initial_position(mut self, p: InitialPosition) -> Self {
        self.initial_position = p;
        self
    }
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }
    pub fn poll_interval_ms(mut self, ms: u64) -> Self {
        self.poll_interval_ms = ms;
        self
    }

    /// The API endpoint with credentials (options, else environment).
    pub fn endpoint(&self) -> Result<KinesisEndpoint> {
        let credentials = self.credentials.clone().or_else(Credentials::from_env).ok_or_else(|| {
            WeirError::Config(format!(
                "kinesis source {}: no credentials (set aws.credentials.basic.accesskeyid / secretkey, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
                self.stream
            ))
        })?;
        let mut e = KinesisEndpoint::new(&self.endpoint, &self.region, credentials)?;
        e.timeout = std::time::Duration::from_millis(self.request_timeout_ms.max(1));
        Ok(e)
    }

    fn iterator_start(&self) -> IteratorStart {
        match self.initial_position {
            InitialPosition::Latest => IteratorStart::Latest,
            InitialPosition::TrimHorizon => IteratorStart::TrimHorizon,
            InitialPosition::AtTimestamp(ms) => IteratorStart::AtTimestamp(ms),
        }
    }
}

/// One shard to read: a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub stream: Arc<str>,
    pub shard_id: String,
    /// Its index among the stream's shards (the decoder's `partition`).
    pub index: i32,
}

impl ShardPlan {
    pub fn describe(&self) -> String {
        format!("{}/{}", self.stream, self.shard_id)
    }
}

static NEXT_SOURCE_ID: AtomicU64 = AtomicU64::new(0);

/// Reads a Kinesis stream (see the module docs).
pub struct KinesisSource<T> {
    options: Arc<KinesisSourceOptions>,
    endpoint: Arc<KinesisEndpoint>,
    shards: Arc<Vec<ShardPlan>>,
    decoder: DecoderFactory<T>,
    stop: StopHandle,
    id: u64,
}

impl<T: DeserializeOwned + 'static> KinesisSource<T> {
    /// JSON data (one document per record) into `T`.
    pub fn json(options: KinesisSourceOptions) -> Result<Self> {
        Self::new(options, decode::json::<T>())
    }
    /// CSV data (one line per record) into `T`.
    pub fn csv(options: KinesisSourceOptions) -> Result<Self> {
        Self::new(options, decode::csv::<T>(b','))
    }
}

impl KinesisSource<String> {
    /// Raw data as UTF-8 text.
    pub fn raw(options: KinesisSourceOptions) -> Result<Self> {
        Self::new(options, decode::raw())
    }
}

impl<T: 'static> KinesisSource<T> {
    /// A source with any decoder (SQL rows use their own); lists the shards now.
    pub fn new(options: KinesisSourceOptions, decoder: DecoderFactory<T>) -> Result<Self> {
        let endpoint = Arc::new(options.endpoint()?);
        let stream = options.stream.clone();
        let (max_retries, base, max) = (options.max_retries, options.backoff_base_ms, options.backoff_max_ms);
        // A transient failure (connection reset, 5xx, throttling) is retried with backoff, as
        // the readers do; anything else fails the job at once.
        let shards = client::blocking(endpoint.clone(), move |mut c| async move {
            let mut backoff = crate::source::remote::Backoff::new(base, max, 0x6c69_7374);
            let mut failures = 0;
            loop {
                match c.list_shards(&stream).await {
                    Err(client::ApiError::Transient(m) | client::ApiError::Throttled(m)) if failures < max_retries => {
                        failures += 1;
                        tracing::warn!(stream = %stream, attempt = failures, "kinesis ListShards failed, retrying: {m}");
                        glommio::timer::sleep(std::time::Duration::from_millis(backoff.next_delay_ms())).await;
                    }
                    other => return other,
                }
            }
        })?
        .map_err(|e| WeirError::Config(format!("kinesis source: listing the shards of stream `{}`: {e}", options.stream)))?;
        if shards.is_empty() {
            return Err(WeirError::Config(format!("kinesis source: stream `{}` has no shards", options.stream)));
        }
        let stream: Arc<str> = Arc::from(options.stream.as_str());
        let shards = shards
            .into_iter()
            .enumerate()
            .map(|(i, s)| ShardPlan {
                stream: stream.clone(),
                shard_id: s.shard_id,
                index: i as i32,
            })
            .collect();
        Ok(Self {
            options: Arc::new(options),
            endpoint,
            shards: Arc::new(shards),
            decoder,
            stop: StopHandle::default(),
            id: NEXT_SOURCE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The shards (splits) in split order.
    pub fn shards(&self) -> &[ShardPlan] {
        &self.shards
    }

    /// A handle that ends the source's splits at their next read.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }
}

impl<T: Send + 'static> Source<T> for KinesisSource<T> {
    fn name(&self) -> String {
        "kinesis".into()
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.shards.len())
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        let plan = self
            .shards
            .get(split)
            .cloned()
            .ok_or_else(|| WeirError::Other(format!("kinesis source: split {split} of {} does not exist", self.shards.len())))?;
        // Dead-letter buffers are keyed by source id; keep Kinesis ids apart from others'.
        reader::build(self.id | 1 << 62, &self.options, &self.endpoint, plan, (self.decoder)(), self.stop.clone(), ctx)
    }
}
