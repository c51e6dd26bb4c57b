//! The Kafka sink (Flink's `kafka` connector as a sink): records as CSV, JSON or raw values,
//! with optional keys and headers, to one topic; delivery `none`, `at-least-once` or
//! `exactly-once` (Flink's `sink.delivery-guarantee`).
//!
//! The synchronous half formats each batch into a shared buffer (one byte arena plus ranges,
//! no allocation per record unless keys or headers are asked for); the async half (a
//! [`Flusher`]) hands it to librdkafka with non-blocking `send`s, polls delivery reports and
//! waits on a glommio timer while librdkafka's queue is full (that wait is the sink's
//! backpressure).
//!
//! **At-least-once**: `pre_commit` and `close` wait until every record sent so far is
//! acknowledged; a delivery failure fails the job.
//!
//! **Exactly-once** — Kafka transactions tied to checkpoints, through a write-ahead log:
//! - between barriers, records are appended to a per-shard log file
//!   (`<transaction-log-dir>/<transactional id>/`), not sent;
//! - `pre_commit(epoch)` syncs and closes that file as `epoch-<epoch>.log` and returns a
//!   committable naming it (transactional id, epoch, path, records);
//! - `commit(epoch)` produces each pre-committed log `<= epoch` in one Kafka transaction, adds a
//!   *commit marker* to the same transaction — the offset `epoch` committed for partition 0 of
//!   the topic in the group `<transactional id>.weir-commits` through
//!   `send_offsets_to_transaction` — commits it and deletes the log. The marker becomes visible
//!   exactly when the transaction's records do, so "is epoch E committed?" is answered by the
//!   group's committed offset `>= E`, and commit skips epochs already committed (idempotent).
//! - Restore: librdkafka cannot resume another process's open transaction, so recovery does
//!   not try: `connect` calls `init_transactions` with the stable transactional id
//!   `<prefix>-<shard>` — which fences a zombie producer of the same id and aborts its open
//!   transaction — then commits each restored committable through the same path as `commit`
//!   (re-producing its log in a fresh transaction unless its marker says it is done), then
//!   every other pre-committed log of an epoch up to the restored checkpoint still on disk (a
//!   checkpoint names only its own epoch's committable; an earlier epoch whose commit was
//!   interrupted after a later checkpoint completed is known only by its log), and deletes
//!   logs of later epochs (leftovers of a checkpoint that never completed).
//!
//!   Why a log rather than sending records inside the transaction as they come (Flink's way,
//!   with a pool of producers): the log is needed anyway to re-produce a checkpoint whose
//!   transaction the crashed process never committed; with it, one transactional id per shard
//!   suffices, recovery runs the same code as every commit, and nothing depends on resuming a
//!   transaction. The cost: records reach the broker at commit time (read-committed readers
//!   could not see them earlier anyway) and are written to local disk once.
//! - A restored committable whose log is gone is committed: logs are deleted only after their
//!   transaction committed. (The marker alone is not enough on the tansu test broker, which
//!   applies transactional offset commits lazily: right after a commit the marker can read a
//!   few epochs behind.)
//! - Records of a transaction carry headers `weir.txn` (transactional id), `weir.epoch` and
//!   `weir.attempt` (start time of the transaction attempt, ns): a reader that cannot honour
//!   abort markers (tansu's fetch responses omit the aborted-transaction list) identifies the
//!   committed records as those of epochs `<=` the marker whose attempt is the last one of
//!   their (transactional id, epoch).
//! - A fresh start (no checkpoint restored) resets the marker to 0 first: epochs start again at
//!   1, and an earlier run's marker must not make this run's epochs look committed.
//! - With checkpoints on, the engine pre-commits at every barrier and at end of input (the
//!   final epoch, `u64::MAX`, marked as offset `i64::MAX`) and commits when a checkpoint
//!   completes. Without checkpoints, end of input is the only commit (`close`); an unbounded
//!   job without checkpoints publishes nothing, as Flink's exactly-once sink.
//! - At-least-once also waits for acknowledgements at every checkpoint barrier.
//!
//! Partitioners (Flink's `sink.partitioner`): `default` (librdkafka's `murmur2_random`, Java
//! Kafka's key hash; no key: random), `fixed` (shard `i` writes partition `i % partitions`),
//! `round-robin`.
//!
//! Invariants: the buffer holds at most one input step; nothing blocks a shard (blocking
//! librdkafka calls run on glommio's blocking pool); clients are created off the shard cores.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use glommio::io::{BufferedFile, ReadResult};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::Sink;
use crate::batch::Batch;
use crate::checkpoint::snapshot;
use crate::error::{Result, WeirError};
use crate::operator::Push;
use crate::shard::{BuildCtx, Flusher, OperatorMetrics};
use crate::source::kafka::client::{self, kafka_error, DeliveryErrors, KafkaConnection};
use crate::time::Timestamp;

/// Flink's `sink.delivery-guarantee`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Fire and forget (delivery failures still fail the job when reported).
    None,
    AtLeastOnce,
    ExactlyOnce,
}

/// Flink's `sink.partitioner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioner {
    /// By key hash (Java Kafka's murmur2); records without a key go to a random partition.
    Default,
    /// Shard `i` writes partition `i % partitions`.
    Fixed,
    /// Each shard cycles through the partitions.
    RoundRobin,
}

/// How a record becomes a message value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueFormat {
    /// One CSV line, no newline.
    Csv,
    /// One JSON document.
    Json,
    /// The record's text as is (records must serialise as a string or bytes).
    Raw,
}

/// Where and how the sink writes.
#[derive(Clone, Debug)]
pub struct KafkaSinkOptions {
    pub connection: KafkaConnection,
    pub topic: String,
    pub delivery: DeliveryGuarantee,
    /// Exactly-once: transactional ids are `<prefix>-<shard>` (Flink's
    /// `sink.transactional-id-prefix`); default `weir-<topic>-<operator>`.
    pub transactional_id_prefix: Option<String>,
    pub partitioner: Partitioner,
    /// Exactly-once: where the per-epoch record logs live.
    pub transaction_log_dir: PathBuf,
    /// Exactly-once: librdkafka's `transaction.timeout.ms`, also the limit of each blocking call.
    pub transaction_timeout_ms: u64,
}

impl KafkaSinkOptions {
    /// At-least-once to `topic`, default partitioner.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            connection: KafkaConnection::new(bootstrap_servers),
            topic: topic.into(),
            delivery: DeliveryGuarantee::AtLeastOnce,
            transactional_id_prefix: None,
            partitioner: Partitioner::Default,
            transaction_log_dir: PathBuf::from("weir-kafka-transactions"),
            transaction_timeout_ms: 60_000,
        }
    }
    pub fn delivery(mut self, delivery: DeliveryGuarantee) -> Self {
        self.delivery = delivery;
        self
    }
    pub fn transactional_id_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.transactional_id_prefix = Some(prefix.into());
        self
    }
    pub fn partitioner(mut self, partitioner: Partitioner) -> Self {
        self.partitioner = partitioner;
        self
    }
    pub fn transaction_log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.transaction_log_dir = dir.into();
        self
    }
    /// A librdkafka producer property (`properties.<key>` in Flink SQL).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.connection.properties.insert(key.into(), value.into());
        self
    }
}

type KeyFn<T> = Arc<dyn Fn(&T) -> Option<Vec<u8>> + Send + Sync>;
type HeadersFn<T> = Arc<dyn Fn(&T) -> Vec<(String, Vec<u8>)> + Send + Sync>;

/// Writes records to a Kafka topic (see the module docs).
pub struct KafkaSink<T> {
    options: Arc<KafkaSinkOptions>,
    format: ValueFormat,
    key: Option<KeyFn<T>>,
    headers: Option<HeadersFn<T>>,
    partitions: i32,
    restored: Arc<Vec<Vec<u8>>>,
}

impl<T> KafkaSink<T> {
    /// A sink writing `format` values (looks the topic up: it must exist).
    pub fn new(options: KafkaSinkOptions, format: ValueFormat) -> Result<Self> {
        let partitions = topic_partitions(&options.connection, &options.topic)?;
        Ok(Self {
            options: Arc::new(options),
            format,
            key: None,
            headers: None,
            partitions,
            restored: Arc::new(Vec::new()),
        })
    }

    /// The message key of each record (`None`: no key).
    pub fn key(mut self, key: impl Fn(&T) -> Option<Vec<u8>> + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(key));
        self
    }

    /// Message headers of each record.
    pub fn headers(mut self, headers: impl Fn(&T) -> Vec<(String, Vec<u8>)> + Send + Sync + 'static) -> Self {
        self.headers = Some(Arc::new(headers));
        self
    }

    /// Exactly-once restore: the committables of the checkpoint being restored (until the
    /// engine hands them over through its build context).
    pub fn restore_committables(mut self, committables: Vec<Vec<u8>>) -> Self {
        self.restored = Arc::new(committables);
        self
    }
}

/// The number of partitions of `topic` (it must exist).
fn topic_partitions(connection: &KafkaConnection, topic: &str) -> Result<i32> {
    let config = connection.client_config(&[]);
    let consumer: BaseConsumer = client::create_off_shard_cores(Vec::new(), move || config.create().map_err(|e| kafka_error("creating a client", e)))?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| kafka_error(&format!("reading metadata of topic {topic}"), e))?;
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => Ok(t.partitions().len() as i32),
        _ => Err(WeirError::Config(format!(
            "kafka sink: topic `{topic}` does not exist on {}",
            connection.bootstrap_servers
        ))),
    }
}

/// One record to produce: ranges into [`OutBuffer::bytes`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub partition: Option<i32>,
}

#[derive(Clone, Debug)]
struct BufferedRecord {
    key: Option<Vec<u8>>,
    value: std::ops::Range<usize>,
    headers: Vec<(String, Vec<u8>)>,
    partition: Option<i32>,
}

/// Formatted records of one input step.
#[derive(Default)]
struct OutBuffer {
    bytes: Vec<u8>,
    records: Vec<BufferedRecord>,
    error: Option<WeirError>,
}

type SharedOut = Rc<RefCell<OutBuffer>>;

/// The synchronous half: formats records into the shared buffer.
struct KafkaPush<T> {
    format: ValueFormat,
    key: Option<KeyFn<T>>,
    headers: Option<HeadersFn<T>>,
    partitioner: Partitioner,
    partitions: i32,
    shard: usize,
    next_round_robin: i32,
    buffer: SharedOut,
    metrics: Arc<OperatorMetrics>,
}

impl<T: Serialize> KafkaPush<T> {
    fn format_batch(&mut self, records: &[T], out: &mut OutBuffer) -> Result<()> {
        let mut csv = match self.format {
            ValueFormat::Csv => Some(csv::WriterBuilder::new().has_headers(false).from_writer(std::mem::take(&mut out.bytes))),
            _ => None,
        };
        for r in records {
            let start = match &csv {
                Some(w) => w.get_ref().len(),
                None => out.bytes.len(),
            };
            let end = match self.format {
                ValueFormat::Csv => {
                    let w = csv.as_mut().expect("csv writer");
                    w.serialize(r)
                        .map_err(|e| WeirError::Other(format!("kafka sink: formatting a CSV value: {e}")))?;
                    w.flush().map_err(|e| WeirError::Other(format!("kafka sink: formatting a CSV value: {e}")))?;
                    let b = w.get_ref();
                    // Without the record terminator.
                    b.len() - usize::from(b.last() == Some(&b'\n'))
                }
                ValueFormat::Json => {
                    serde_json::to_writer(&mut out.bytes, r).map_err(|e| WeirError::Other(format!("kafka sink: formatting a JSON value: {e}")))?;
                    out.bytes.len()
                }
                ValueFormat::Raw => {
                    match serde_json::to_value(r) {
                        Ok(serde_json::Value::String(s)) => out.bytes.extend_from_slice(s.as_bytes()),
                        Ok(serde_json::Value::Array(a)) if a.iter().all(|v| v.as_u64().is_some_and(|b| b <= 255)) => {
                            out.bytes.extend(a.iter().map(|v| v.as_u64().unwrap_or(0) as u8))
                        }
                        _ => return Err(WeirError::Other("kafka sink: the raw format needs records that are text or bytes".into())),
                    }
                    out.bytes.len()
                }
            };
            let partition = match self.partitioner {
                Partitioner::Default => None,
                Partitioner::Fixed => Some(self.shard as i32 % self.partitions),
                Partitioner::RoundRobin => {
                    let p = self.next_round_robin;
                    self.next_round_robin = (p + 1) % self.partitions;
                    Some(p)
                }
            };
            out.records.push(BufferedRecord {
                key: self.key.as_ref().and_then(|k| k(r)),
                value: start..end,
                headers: self.headers.as_ref().map(|h| h(r)).unwrap_or_default(),
                partition,
            });
        }
        if let Some(w) = csv {
            out.bytes = w
                .into_inner()
                .map_err(|e| WeirError::Other(format!("kafka sink: formatting CSV values: {e}")))?;
        }
        Ok(())
    }
}

impl<T: Serialize> Push<T> for KafkaPush<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        let buffer = self.buffer.clone();
        let mut out = buffer.borrow_mut();
        if out.error.is_none() {
            if let Err(e) = self.format_batch(&batch.records, &mut out) {
                out.error = Some(e);
            }
        }
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    /// The flusher pre-commits at the barrier (everything before it is in the buffer).
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
}

impl<T: Serialize + Send + 'static> Sink<T> for KafkaSink<T> {
    fn name(&self) -> String {
        format!("kafka:{}", self.options.topic)
    }

    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        let buffer = SharedOut::default();
        let cpus = client::client_cpus(ctx.config);
        let o = &self.options;
        let committing = o.delivery != DeliveryGuarantee::None;
        let writer: Box<dyn Flusher> = match o.delivery {
            DeliveryGuarantee::None | DeliveryGuarantee::AtLeastOnce => {
                let acks = if o.delivery == DeliveryGuarantee::None { "1" } else { "all" };
                let config = o.connection.client_config(&[
                    ("acks", acks),
                    ("enable.idempotence", "true"),
                    ("partitioner", "murmur2_random"),
                    ("linger.ms", "1"),
                ]);
                let producer = client::create_off_shard_cores(cpus, move || {
                    config
                        .create_with_context::<_, BaseProducer<DeliveryErrors>>(DeliveryErrors::default())
                        .map_err(|e| kafka_error("creating a producer", e))
                })?;
                Box::new(KafkaWriter {
                    topic: o.topic.clone(),
                    producer,
                    buffer: buffer.clone(),
                })
            }
            DeliveryGuarantee::ExactlyOnce => {
                let prefix = o
                    .transactional_id_prefix
                    .clone()
                    .unwrap_or_else(|| format!("weir-{}-{}", o.topic, operator_name.replace([':', '#'], "-")));
                // A slot of a scaled-out job: ids and logs of its own (see crate::scaleout).
                let prefix = crate::scaleout::slot_prefix(prefix, ctx.config);
                let mut slot_options = (**o).clone();
                slot_options.transaction_log_dir = crate::scaleout::slot_transaction_dir(o.transaction_log_dir.clone(), ctx.config);
                // A restore hands this shard the committables of the old shards it takes over.
                let fresh = ctx.restore().is_none() && self.restored.is_empty();
                let given = self.restored.iter().filter_map(|c| {
                    let c = snapshot::decode::<Committable>(c, "kafka sink committable");
                    c.map(|c| (c.shard % ctx.shards == ctx.shard).then_some(c)).transpose()
                });
                let from_engine = ctx
                    .restored_committables(operator_name)
                    .into_iter()
                    .map(|c| snapshot::decode::<Committable>(&c, "kafka sink committable"));
                let restored = given.chain(from_engine).collect::<Result<Vec<_>>>()?;
                Box::new(TransactionalWriter {
                    producer: TransactionalProducer::new(&slot_options, &format!("{prefix}-{}", ctx.shard), ctx.shard, cpus)?,
                    buffer: buffer.clone(),
                    restored: Some((restored, fresh, ctx.restore().map_or(0, |r| r.epoch))),
                })
            }
        };
        if committing {
            ctx.add_committing_flusher(operator_name, writer);
        } else {
            ctx.add_flusher(writer);
        }
        Ok(Box::new(KafkaPush {
            format: self.format,
            key: self.key.clone(),
            headers: self.headers.clone(),
            partitioner: o.partitioner,
            partitions: self.partitions,
            shard: ctx.shard,
            next_round_robin: ctx.shard as i32 % self.partitions,
            buffer,
            metrics: ctx.operator_metrics(operator_name),
        }))
    }
}

fn owned_headers(headers: &[(String, Vec<u8>)], extra: &[(&str, &[u8])]) -> Option<OwnedHeaders> {
    if headers.is_empty() && extra.is_empty() {
        return None;
    }
    let mut h = OwnedHeaders::new_with_capacity(headers.len() + extra.len());
    for (k, v) in headers {
        h = h.insert(Header { key: k, value: Some(v) });
    }
    for (k, v) in extra {
        h = h.insert(Header { key: k, value: Some(*v) });
    }
    Some(h)
}

/// Send one record, waiting (on a glommio timer, serving delivery reports) while librdkafka's
/// queue is full.
async fn send_one(
    producer: &BaseProducer<DeliveryErrors>,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: Option<OwnedHeaders>,
    partition: Option<i32>,
) -> Result<()> {
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).payload(value);
    if let Some(k) = key {
        record = record.key(k);
    }
    if let Some(h) = headers {
        record = record.headers(h);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    let mut record = Some(record);
    while let Some(r) = record.take() {
        match producer.send(r) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::ZERO);
                glommio::timer::sleep(Duration::from_millis(1)).await;
                record = Some(r);
            }
            Err((e, _)) => return Err(kafka_error(&format!("producing to {topic}"), e)),
        }
    }
    Ok(())
}

fn check_deliveries(producer: &BaseProducer<DeliveryErrors>, topic: &str) -> Result<()> {
    match producer.context().first() {
        Some(e) => Err(WeirError::Other(format!("kafka sink {topic}: {e}"))),
        None => Ok(()),
    }
}

/// Wait until librdkafka has acknowledged everything sent (serving delivery reports).
async fn wait_acknowledged(producer: &BaseProducer<DeliveryErrors>, topic: &str) -> Result<()> {
    loop {
        producer.poll(Duration::ZERO);
        check_deliveries(producer, topic)?;
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// At-least-once / none: sends as records come.
struct KafkaWriter {
    topic: String,
    producer: BaseProducer<DeliveryErrors>,
    buffer: SharedOut,
}

impl KafkaWriter {
    async fn send_buffered(&mut self) -> Result<()> {
        let (bytes, records) = {
            let mut b = self.buffer.borrow_mut();
            if let Some(e) = b.error.take() {
                return Err(e);
            }
            (std::mem::take(&mut b.bytes), std::mem::take(&mut b.records))
        };
        for r in &records {
            let headers = owned_headers(&r.headers, &[]);
            send_one(&self.producer, &self.topic, r.key.as_deref(), &bytes[r.value.clone()], headers, r.partition).await?;
        }
        self.producer.poll(Duration::ZERO);
        check_deliveries(&self.producer, &self.topic)?;
        let mut b = self.buffer.borrow_mut();
        if b.bytes.is_empty() {
            let mut bytes = bytes;
            bytes.clear();
            b.bytes = bytes;
        }
        Ok(())
    }
}

impl Flusher for KafkaWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.send_buffered())
    }
    fn has_pending(&self) -> bool {
        let b = self.buffer.borrow();
        !b.records.is_empty() || b.error.is_some() || self.producer.in_flight_count() > 0
    }
    fn pre_commit(&mut self, _epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.send_buffered().await?;
            wait_acknowledged(&self.producer, &self.topic).await?;
            Ok(None)
        })
    }
    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.send_buffered().await?;
            wait_acknowledged(&self.producer, &self.topic).await
        })
    }
}

/// What a checkpoint stores for one pre-committed epoch of one transactional id.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Committable {
    pub transactional_id: String,
    pub shard: usize,
    pub epoch: u64,
    pub topic: String,
    /// The epoch's record log.
    pub log: PathBuf,
    pub records: u64,
}

/// The log file being written (records of the epoch in progress).
struct OpenLog {
    file: BufferedFile,
    path: PathBuf,
    written: u64,
    records: u64,
}

/// One transactional id: the epoch logs, the transactions, the commit markers. Usable on its
/// own (on a glommio executor), which is how the recovery tests drive it directly.
pub struct TransactionalProducer {
    transactional_id: String,
    shard: usize,
    topic: String,
    connection: KafkaConnection,
    producer: Option<Arc<BaseProducer<DeliveryErrors>>>,
    producer_config: Option<rdkafka::config::ClientConfig>,
    cpus: Vec<usize>,
    dir: PathBuf,
    timeout: Duration,
    log: Option<OpenLog>,
    next_log: u64,
    pre_committed: BTreeMap<u64, Committable>,
    last_epoch: u64,
    markers: BTreeMap<String, Arc<BaseConsumer>>,
}

impl TransactionalProducer {
    /// Not connected yet: call [`Self::connect`] on the shard.
    pub fn new(options: &KafkaSinkOptions, transactional_id: &str, shard: usize, cpus: Vec<usize>) -> Result<Self> {
        let timeout_ms = options.transaction_timeout_ms.to_string();
        let config = options.connection.client_config(&[
            ("transactional.id", transactional_id),
            ("transaction.timeout.ms", &timeout_ms),
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
        ]);
        Ok(Self {
            transactional_id: transactional_id.to_string(),
            shard,
            topic: options.topic.clone(),
            connection: options.connection.clone(),
            producer: None,
            producer_config: Some(config),
            cpus,
            dir: options.transaction_log_dir.join(transactional_id),
            timeout: Duration::from_millis(options.transaction_timeout_ms),
            log: None,
            next_log: 0,
            pre_committed: BTreeMap::new(),
            last_epoch: 0,
            markers: BTreeMap::new(),
        })
    }

    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    fn producer(&self) -> &Arc<BaseProducer<DeliveryErrors>> {
        self.producer.as_ref().expect("transactional producer connected")
    }

    /// Create the producer and `init_transactions` (fences a zombie with the same id and
    /// aborts its open transaction), then commit `restored` committables idempotently and
    /// delete logs of later epochs. The restored checkpoint's epoch is taken to be the newest
    /// restored committable's; see [`Self::connect_at`].
    pub async fn connect(&mut self, restored: Vec<Committable>) -> Result<()> {
        let epoch = restored.iter().map(|c| c.epoch).max().unwrap_or(0);
        self.connect_at(restored, epoch).await
    }

    /// [`Self::connect`] after restoring checkpoint `checkpoint_epoch`. Besides the restored
    /// committables, every pre-committed log of an epoch `<= checkpoint_epoch` still on disk
    /// (in this id's folder and in the folders of the restored committables' ids) is
    /// published, in epoch order: a checkpoint stores only the committable of its own epoch, so
    /// an earlier epoch whose checkpoint completed — or was subsumed — but whose commit had not
    /// finished when the process died is known only by its log. Its records were output
    /// before the restored checkpoint's barrier, so they belong to the restored state.
    /// Publishing is idempotent (commit markers), and a published log is deleted. Logs of later
    /// epochs and unfinished logs are deleted.
    pub async fn connect_at(&mut self, restored: Vec<Committable>, checkpoint_epoch: u64) -> Result<()> {
        let config = self.producer_config.take().expect("connect once");
        let producer = client::create_off_shard_cores(self.cpus.clone(), move || {
            config
                .create_with_context::<_, BaseProducer<DeliveryErrors>>(DeliveryErrors::default())
                .map_err(|e| kafka_error("creating a transactional producer", e))
        })?;
        let producer = Arc::new(producer);
        let (p, timeout) = (producer.clone(), self.timeout);
        client::blocking(move || p.init_transactions(timeout))
            .await
            .map_err(|e| kafka_error(&format!("init_transactions for {}", self.transactional_id), e))?;
        self.producer = Some(producer);
        std::fs::create_dir_all(&self.dir).map_err(|e| WeirError::io("creating the transaction log folder", &self.dir, e))?;
        let mut restored = restored;
        let restored_epoch = restored.iter().map(|c| c.epoch).max().unwrap_or(0).max(checkpoint_epoch);
        // Pre-committed logs on disk that the checkpoint does not name.
        let base = self.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut ids: Vec<String> = restored.iter().map(|c| c.transactional_id.clone()).collect();
        ids.push(self.transactional_id.clone());
        ids.sort();
        ids.dedup();
        for id in ids {
            let dir = base.join(&id);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(epoch) = name
                    .strip_prefix("epoch-")
                    .and_then(|n| n.strip_suffix(".log"))
                    .and_then(|n| n.parse::<u64>().ok())
                else {
                    continue;
                };
                if epoch > checkpoint_epoch || restored.iter().any(|c| c.transactional_id == id && c.epoch == epoch) {
                    continue;
                }
                let records = read_log(&entry.path())?.len() as u64;
                restored.push(Committable {
                    transactional_id: id.clone(),
                    shard: self.shard,
                    epoch,
                    topic: self.topic.clone(),
                    log: entry.path(),
                    records,
                });
            }
        }
        restored.sort_by(|a, b| (a.epoch, &a.transactional_id).cmp(&(b.epoch, &b.transactional_id)));
        for c in &restored {
            self.publish(c).await?;
        }
        // Leftovers: logs of epochs after the restored checkpoint and unfinished logs.
        for entry in std::fs::read_dir(&self.dir).map_err(|e| WeirError::io("listing the transaction log folder", &self.dir, e))? {
            let entry = entry.map_err(|e| WeirError::io("listing the transaction log folder", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let later = name
                .strip_prefix("epoch-")
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|e| e > restored_epoch);
            if later || name.starts_with("open-") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        self.last_epoch = restored_epoch.max(self.marker_epoch(&self.transactional_id.clone()).await?);
        Ok(())
    }

    /// Whether records were appended since the last pre-commit.
    pub fn has_open_log(&self) -> bool {
        self.log.is_some()
    }

    /// Append records to the log of the epoch in progress.
    pub async fn append(&mut self, records: &[OutRecord]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for r in records {
            let body = postcard::to_allocvec(r).map_err(|e| WeirError::Other(format!("kafka sink: encoding a log record: {e}")))?;
            bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&body);
        }
        if self.log.is_none() {
            let path = self.dir.join(format!("open-{}.log", self.next_log));
            self.next_log += 1;
            let file = crate::shard::inflight::create_buffered(&path)
                .await
                .map_err(|e| WeirError::io("creating a transaction log", &path, e.into()))?;
            self.log = Some(OpenLog {
                file,
                path,
                written: 0,
                records: 0,
            });
        }
        let log = self.log.as_mut().expect("log open");
        crate::sink::file::write_all_at(&log.file, bytes, &mut log.written, &log.path, "writing a transaction log").await?;
        log.records += records.len() as u64;
        Ok(())
    }

    /// Phase one: make the epoch's records durable (synced log) and return its committable
    /// (`None` when the epoch had no records).
    pub async fn pre_commit(&mut self, epoch: u64) -> Result<Option<Vec<u8>>> {
        let Some(log) = self.log.take() else {
            self.last_epoch = self.last_epoch.max(epoch);
            return Ok(None);
        };
        log.file
            .fdatasync()
            .await
            .map_err(|e| WeirError::io("syncing a transaction log", &log.path, e.into()))?;
        log.file
            .close()
            .await
            .map_err(|e| WeirError::io("closing a transaction log", &log.path, e.into()))?;
        let path = self.dir.join(format!("epoch-{epoch}.log"));
        glommio::io::rename(&log.path, &path)
            .await
            .map_err(|e| WeirError::io("naming a transaction log", &path, e.into()))?;
        let c = Committable {
            transactional_id: self.transactional_id.clone(),
            shard: self.shard,
            epoch,
            topic: self.topic.clone(),
            log: path,
            records: log.records,
        };
        let bytes = snapshot::encode(&c);
        self.pre_committed.insert(epoch, c);
        self.last_epoch = self.last_epoch.max(epoch);
        Ok(Some(bytes))
    }

    /// Phase two: publish every pre-committed epoch `<= epoch`, in order (idempotent).
    pub async fn commit(&mut self, epoch: u64) -> Result<()> {
        while let Some((&e, _)) = self.pre_committed.first_key_value() {
            if e > epoch {
                break;
            }
            let c = self.pre_committed.remove(&e).expect("first entry");
            self.publish(&c).await?;
        }
        Ok(())
    }

    /// The epoch a bounded job's end of input commits as.
    pub fn next_epoch(&self) -> u64 {
        self.last_epoch.saturating_add(1)
    }

    /// The last epoch committed for `transactional_id` (its commit marker; 0 if none).
    pub async fn marker_epoch(&mut self, transactional_id: &str) -> Result<u64> {
        let consumer = self.marker_consumer(transactional_id)?;
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        let committed = client::blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topic, 0);
            consumer.committed_offsets(tpl, timeout)
        })
        .await
        .map_err(|e| kafka_error(&format!("reading the commit marker of {transactional_id}"), e))?;
        Ok(match committed.find_partition(&self.topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o > 0 => epoch_of_marker(o),
            _ => 0,
        })
    }

    /// A fresh start (no checkpoint restored): epochs begin again at 1, so the commit marker
    /// an earlier run of the same transactional id left is reset to 0 (a plain offset commit).
    /// Call before [`Self::connect`].
    pub async fn reset_marker(&mut self) -> Result<()> {
        let id = self.transactional_id.clone();
        let consumer = self.marker_consumer(&id)?;
        let (topic, timeout) = (self.topic.clone(), self.timeout);
        client::blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(0))?;
            let committed = consumer.committed_offsets(tpl.clone(), timeout)?;
            match committed.find_partition(&topic, 0).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o > 0 => consumer.commit(&tpl, rdkafka::consumer::CommitMode::Sync),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| kafka_error(&format!("resetting the commit marker of {id}"), e))
    }

    fn marker_consumer(&mut self, transactional_id: &str) -> Result<Arc<BaseConsumer>> {
        if let Some(c) = self.markers.get(transactional_id) {
            return Ok(c.clone());
        }
        let config = self.connection.client_config(&[
            ("group.id", &marker_group(transactional_id)),
            ("enable.auto.commit", "false"),
            ("isolation.level", "read_committed"),
        ]);
        let consumer = client::create_off_shard_cores(self.cpus.clone(), move || {
            config.create::<BaseConsumer>().map_err(|e| kafka_error("creating a commit-marker client", e))
        })?;
        let consumer = Arc::new(consumer);
        self.markers.insert(transactional_id.to_string(), consumer.clone());
        Ok(consumer)
    }

    /// Produce a committable's log in one transaction with its marker, unless already done.
    ///
    /// A missing log means the epoch is committed: a log is deleted only after its transaction
    /// committed (or its marker said so). This does not trust the marker alone, because the
    /// tansu test broker applies transactional offset commits lazily: its marker can read a few
    /// epochs behind for a while after the transaction committed.
    async fn publish(&mut self, c: &Committable) -> Result<()> {
        if !c.log.exists() {
            return Ok(());
        }
        if self.marker_epoch(&c.transactional_id).await? >= c.epoch {
            let _ = std::fs::remove_file(&c.log);
            return Ok(());
        }
        self.produce_in_transaction(c).await?;
        self.finish_transaction(c).await
    }

    /// Commit the transaction [`Self::produce_in_transaction`] began and delete the log (the
    /// second half of publishing). A fenced producer (a newer incarnation called
    /// `init_transactions` with the same id) gets an error here.
    pub async fn finish_transaction(&mut self, c: &Committable) -> Result<()> {
        let (p, timeout) = (self.producer().clone(), self.timeout);
        client::blocking(move || p.commit_transaction(timeout))
            .await
            .map_err(|e| kafka_error(&format!("committing epoch {} of {}", c.epoch, c.transactional_id), e))?;
        let _ = std::fs::remove_file(&c.log);
        Ok(())
    }

    /// Begin a transaction and send a committable's records and marker, without committing
    /// (the first half of publishing; tests stop here to play a crash mid-commit).
    pub async fn produce_in_transaction(&mut self, c: &Committable) -> Result<()> {
        let producer = self.producer().clone();
        producer
            .begin_transaction()
            .map_err(|e| kafka_error(&format!("beginning a transaction for {}", c.transactional_id), e))?;
        let attempt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            .to_string();
        let epoch = c.epoch.to_string();
        let file = std::rc::Rc::new(
            crate::shard::inflight::open_buffered(&c.log)
                .await
                .map_err(|e| WeirError::io("opening a transaction log", &c.log, e.into()))?,
        );
        let mut offset = 0u64;
        let mut pending: Vec<u8> = Vec::new();
        let mut sent = 0u64;
        loop {
            let chunk: ReadResult = crate::shard::inflight::read_at(&file, offset, 256 << 10)
                .await
                .map_err(|e| WeirError::io("reading a transaction log", &c.log, e))?;
            if chunk.is_empty() {
                break;
            }
            offset += chunk.len() as u64;
            pending.extend_from_slice(&chunk);
            let mut at = 0;
            while pending.len() - at >= 4 {
                let len = u32::from_le_bytes(pending[at..at + 4].try_into().expect("4 bytes")) as usize;
                if pending.len() - at - 4 < len {
                    break;
                }
                let r: OutRecord = postcard::from_bytes(&pending[at + 4..at + 4 + len])
                    .map_err(|e| WeirError::Other(format!("kafka sink: transaction log {} is corrupt: {e}", c.log.display())))?;
                at += 4 + len;
                let headers = owned_headers(
                    &r.headers,
                    &[
                        ("weir.txn", c.transactional_id.as_bytes()),
                        ("weir.epoch", epoch.as_bytes()),
                        ("weir.attempt", attempt.as_bytes()),
                    ],
                );
                send_one(&producer, &c.topic, r.key.as_deref(), &r.value, headers, r.partition).await?;
                sent += 1;
            }
            pending.drain(..at);
        }
        if let Ok(file) = std::rc::Rc::try_unwrap(file) {
            let _ = file.close().await;
        }
        if sent != c.records || !pending.is_empty() {
            return Err(WeirError::Other(format!(
                "kafka sink: transaction log {} holds {sent} whole records, the checkpoint says {}",
                c.log.display(),
                c.records
            )));
        }
        wait_acknowledged(&producer, &c.topic).await?;
        // The commit marker, atomically with the records.
        let marker = self.marker_consumer(&c.transactional_id)?;
        let (topic, e, timeout) = (c.topic.clone(), marker_offset(c.epoch), self.timeout);
        client::blocking(move || {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Offset(e))?;
            let group = marker.group_metadata().ok_or(KafkaError::Global(RDKafkaErrorCode::UnknownGroup))?;
            producer.send_offsets_to_transaction(&tpl, &group, timeout)
        })
        .await
        .map_err(|e| kafka_error(&format!("adding the commit marker of epoch {} of {}", c.epoch, c.transactional_id), e))?;
        Ok(())
    }
}

/// The marker offset of an epoch (offsets are `i64`; the final epoch `u64::MAX` is `i64::MAX`).
fn marker_offset(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

fn epoch_of_marker(offset: i64) -> u64 {
    if offset == i64::MAX {
        u64::MAX
    } else {
        offset as u64
    }
}

/// The consumer group whose committed offset is a transactional id's commit marker.
pub fn marker_group(transactional_id: &str) -> String {
    format!("{transactional_id}.weir-commits")
}

/// Exactly-once: the flusher around a [`TransactionalProducer`].
struct TransactionalWriter {
    producer: TransactionalProducer,
    buffer: SharedOut,
    /// Until connect: the committables to resolve, whether this is a fresh start, and the
    /// restored checkpoint's epoch (0: none).
    restored: Option<(Vec<Committable>, bool, u64)>,
}

impl TransactionalWriter {
    async fn log_buffered(&mut self) -> Result<()> {
        let (bytes, records) = {
            let mut b = self.buffer.borrow_mut();
            if let Some(e) = b.error.take() {
                return Err(e);
            }
            (std::mem::take(&mut b.bytes), std::mem::take(&mut b.records))
        };
        let records: Vec<OutRecord> = records
            .into_iter()
            .map(|r| OutRecord {
                key: r.key,
                value: bytes[r.value].to_vec(),
                headers: r.headers,
                partition: r.partition,
            })
            .collect();
        self.producer.append(&records).await
    }
}

impl Flusher for TransactionalWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let (restored, fresh, epoch) = self.restored.take().unwrap_or_default();
            if fresh {
                self.producer.reset_marker().await?;
            }
            self.producer.connect_at(restored, epoch).await
        })
    }
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.log_buffered())
    }
    fn has_pending(&self) -> bool {
        let b = self.buffer.borrow();
        !b.records.is_empty() || b.error.is_some()
    }
    fn pre_commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.log_buffered().await?;
            self.producer.pre_commit(epoch).await
        })
    }
    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.producer.commit(epoch))
    }
    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // End of input is the last checkpoint of a bounded job.
            self.log_buffered().await?;
            let epoch = self.producer.next_epoch();
            self.producer.pre_commit(epoch).await?;
            self.producer.commit(epoch).await
        })
    }
}

/// Read a transaction log's records (tests and tools).
pub fn read_log(path: &Path) -> Result<Vec<OutRecord>> {
    let bytes = std::fs::read(path).map_err(|e| WeirError::io("reading a transaction log", path, e))?;
    let mut out = Vec::new();
    let mut at = 0;
    while bytes.len() - at >= 4 {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let body = bytes
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| WeirError::Other(format!("transaction log {} is truncated", path.display())))?;
        out.push(postcard::from_bytes(body).map_err(|e| WeirError::Other(format!("transaction log {} is corrupt: {e}", path.display())))?);
        at += 4 + len;
    }
    Ok(out)
}
