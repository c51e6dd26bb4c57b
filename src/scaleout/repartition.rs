//! The repartition topic: a keyed exchange between weir processes through Kafka (see the
//! [module docs](super) for where it sits in a scaled-out job).
//!
//! **Writing** ([`RepartitionSink`], stage [`Stage::Exchange`]): each record goes to the
//! partition of its key group — partition `q` of `Q` holds key groups `[⌈q·G/Q⌉, ⌈(q+1)·G/Q⌉)`
//! (`G` = `max_key_groups`; Flink's range formula, [`KeyGroups::shard_of_group`] with `Q`
//! "shards") — as an [`Envelope::Data`] (postcard) with its event time. Delivery is the
//! exactly-once sink's [`TransactionalProducer`]: records go to a per-epoch log and are
//! produced in one Kafka transaction when the checkpoint completes, re-produced from the same
//! log after a crash. Every shard of every slot is one *writer* (`slot · shards + shard`); at
//! each checkpoint barrier (and at the end) a writer whose watermark advanced appends an
//! [`Envelope::Watermark`] to every partition, after its data of that epoch.
//!
//! **Reading** ([`RepartitionSource`], stage [`Stage::Keyed`]): one split per repartition
//! partition the slot owns. A partition's watermark is the minimum over all writers of the
//! last watermark each wrote there (the split hands it to the engine through
//! [`SplitReader::source_watermark`]); the partition ends when every writer wrote the final
//! watermark (`i64::MAX`). Watermarks therefore lag upstream by about one checkpoint interval
//! and never judge a record later than upstream would have.
//!
//! **Exactly once without relying on the broker's abort markers.** A reader may see records of
//! a transaction that was later aborted (tansu's fetch responses carry no aborted-transaction
//! list, so `read_committed` does not hide them) and then the same epoch again from the
//! retry. Every envelope carries its writer and a sequence number inside its epoch's log
//! (header `weir.epoch`); a retry re-produces the *same* log, so `(epoch, seq)` names a record
//! across attempts, and a reader accepts an envelope only when its `(epoch, seq)` is above the
//! last one accepted from that writer in that partition (kept in the split's checkpointed
//! position). Reading a record before its transaction commits is safe here because a writer
//! produces an epoch only after the checkpoint holding its log completed, and every later run
//! of the slot restores a checkpoint at least that new, which re-produces the epoch until it
//! commits: the records read early are exactly the records that will be committed. On a broker
//! that honours `read_committed` (Kafka) aborted records are never seen at all.
//!
//! Invariants: per writer and partition, envelopes appear in `(epoch, seq)` order except for
//! repeats of a retried epoch's prefix (one producer per writer, idempotent, committed in epoch
//! order); the reader hands each `(writer, epoch, seq)` out at most once, in that order; all
//! processes of a job run the same number of shards (the writer count is in every watermark and
//! a mismatch fails the reader).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{owns, role, Stage};
use crate::api::{DataStream, KeyedStream, StreamEnv};
use crate::batch::Batch;
use crate::checkpoint::snapshot;
use crate::error::{Result, WeirError};
use crate::key::{KeyGroups, StableHash};
use crate::operator::Push;
use crate::shard::{BuildCtx, Flusher, OperatorMetrics};
use crate::sink::kafka::{Committable, DeliveryGuarantee, KafkaSinkOptions, OutRecord, TransactionalProducer};
use crate::sink::Sink;
use crate::source::kafka::client::{self, kafka_error, KafkaConnection};
use crate::source::{ReadStatus, Source, SplitReader};
use crate::time::{Timestamp, WatermarkStrategy, WATERMARK_MAX, WATERMARK_MIN};

/// One message of a repartition topic (postcard).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope<T> {
    /// A record with its event time.
    Data { writer: u32, seq: u64, ts: Timestamp, record: T },
    /// Writer `writer` (of `writers`) has watermark `watermark`: its later records are after it.
    Watermark {
        writer: u32,
        writers: u32,
        seq: u64,
        watermark: Timestamp,
    },
}

/// Where a repartition topic lives and how it is laid out.
#[derive(Clone, Debug)]
pub struct RepartitionOptions {
    pub connection: KafkaConnection,
    /// The topic (`<job>-<operator>-repartition`, see [`super::repartition_topic`]).
    pub topic: String,
    /// Its partition count (fixed for the life of the job).
    pub partitions: u32,
    /// librdkafka's `transaction.timeout.ms` of the writers, also their blocking calls' limit.
    pub transaction_timeout_ms: u64,
}

impl RepartitionOptions {
    /// A repartition topic in front of keyed operator `operator`, laid out by `config`.
    pub fn new(connection: KafkaConnection, config: &crate::config::EngineConfig, operator: &str) -> Self {
        let job = config.scale_out_job.clone().unwrap_or_else(|| "weir".into());
        Self {
            connection,
            topic: super::repartition_topic(&job, operator),
            partitions: config.repartition_partitions(),
            transaction_timeout_ms: 60_000,
        }
    }
}

/// A keyed exchange that crosses processes when the job is scaled out (see the module docs):
/// - not scaled out: `stream.key_by(key_fn)`, nothing goes through Kafka;
/// - stage [`Stage::Exchange`]: `stream` is written to the repartition topic (created if
///   missing) and `None` is returned: build nothing downstream in this process;
/// - stage [`Stage::Keyed`]: `stream` is dropped (never built) and the keyed stream is read
///   back from the repartition partitions of this process's slot.
///
/// `T` crosses as postcard; its event time rides along.
pub fn through_kafka<T, K, KF>(
    env: &StreamEnv,
    stream: DataStream<T>,
    key_fn: KF,
    options: impl FnOnce() -> RepartitionOptions,
) -> Result<Option<KeyedStream<T, K, KF>>>
where
    T: Serialize + DeserializeOwned + Clone + Send + 'static,
    K: StableHash + std::hash::Hash + Eq + Ord + Clone + Send + 'static,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    let config = env.config();
    let Some((role, slots)) = role(config) else {
        return Ok(Some(stream.key_by(key_fn)));
    };
    let options = options();
    ensure_topic(&options)?;
    match role.stage {
        Stage::Exchange => {
            stream.sink(RepartitionSink {
                options: Arc::new(options),
                key_fn,
                slot: role.slot,
                slots,
                _t: PhantomData,
            });
            Ok(None)
        }
        Stage::Keyed => {
            drop(stream);
            let owned: Vec<i32> = (0..options.partitions as usize)
                .filter(|&q| owns(q, role.slot, slots))
                .map(|q| q as i32)
                .collect();
            let source = RepartitionSource::<T> {
                options: Arc::new(options),
                partitions: Arc::new(owned),
                _t: PhantomData,
            };
            // The strategy is unused: the splits carry their writers' watermarks.
            let keyed = env
                .source(source)
                .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(), |r: &(Timestamp, T)| r.0)
                .map(|(_, r): (Timestamp, T)| r)
                .key_by(key_fn);
            Ok(Some(keyed))
        }
    }
}

/// Create the topic with its partition count if it does not exist (admin API); fail when it
/// exists with another partition count.
pub fn ensure_topic(options: &RepartitionOptions) -> Result<()> {
    let config = options.connection.client_config(&[]);
    let admin: AdminClient<DefaultClientContext> =
        client::create_off_shard_cores(Vec::new(), move || config.create().map_err(|e| kafka_error("creating an admin client", e)))?;
    let topic = NewTopic::new(&options.topic, options.partitions as i32, TopicReplication::Fixed(-1));
    let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)))))
        .map_err(|e| kafka_error(&format!("creating topic {}", options.topic), e))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(kafka_error(&format!("creating topic {t}"), e)),
        }
    }
    let found = wait_for_partitions(&options.connection, &options.topic, Duration::from_secs(20))?;
    if found != options.partitions as usize {
        return Err(WeirError::Config(format!(
            "kafka: repartition topic {} has {found} partitions, the job needs {} (weir.scale-out.repartition-partitions)",
            options.topic, options.partitions
        )));
    }
    Ok(())
}

/// Poll the metadata until `topic` shows its partitions; returns their count.
pub(crate) fn wait_for_partitions(connection: &KafkaConnection, topic: &str, limit: Duration) -> Result<usize> {
    let config = connection.client_config(&[]);
    let consumer: BaseConsumer = client::create_off_shard_cores(Vec::new(), move || config.create().map_err(|e| kafka_error("creating a client", e)))?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .map_err(|e| kafka_error(&format!("reading metadata of {topic}"), e))?;
        if let Some(t) = md
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        {
            return Ok(t.partitions().len());
        }
        if std::time::Instant::now() > deadline {
            return Err(WeirError::Other(format!("kafka: topic {topic} did not appear within {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes a stream to a repartition topic, exactly once (see the module docs).
pub struct RepartitionSink<T, KF> {
    options: Arc<RepartitionOptions>,
    key_fn: KF,
    slot: usize,
    slots: usize,
    _t: PhantomData<fn(T)>,
}

/// What the synchronous half hands the flusher.
#[derive(Default)]
struct WriterBuffer {
    records: Vec<OutRecord>,
    /// Sequence number of the next envelope in the epoch being written.
    seq: u64,
    /// The newest watermark seen, and the last one written to the topic.
    watermark: Timestamp,
    written_watermark: Timestamp,
    error: Option<WeirError>,
}

struct RepartitionPush<T, KF> {
    key_fn: KF,
    groups: KeyGroups,
    partitions: KeyGroups,
    writer: u32,
    buffer: Rc<RefCell<WriterBuffer>>,
    metrics: Arc<OperatorMetrics>,
    _t: PhantomData<fn(T)>,
}

impl<T, K, KF> Push<T> for RepartitionPush<T, KF>
where
    T: Serialize,
    K: StableHash,
    KF: Fn(&T) -> K,
{
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        let mut b = self.buffer.borrow_mut();
        for (record, &ts) in batch.records.iter().zip(&batch.timestamps) {
            let group = self.groups.key_group((self.key_fn)(record).stable_hash());
            let partition = self.partitions.shard_of_group(group) as i32;
            let envelope = Envelope::Data {
                writer: self.writer,
                seq: b.seq,
                ts,
                record,
            };
            match postcard::to_allocvec(&envelope) {
                Ok(value) => {
                    b.seq += 1;
                    b.records.push(OutRecord {
                        key: None,
                        value,
                        headers: Vec::new(),
                        partition: Some(partition),
                    });
                }
                Err(e) => {
                    b.error.get_or_insert(WeirError::Other(format!("repartition: encoding a record: {e}")));
                }
            }
        }
        if let Some(wm) = batch.marks.iter().map(|m| m.watermark).max() {
            b.watermark = b.watermark.max(wm);
        }
        drop(b);
        batch.clear();
    }
    fn watermark(&mut self, wm: Timestamp) {
        let mut b = self.buffer.borrow_mut();
        b.watermark = b.watermark.max(wm);
    }
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    /// The flusher pre-commits at the barrier.
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
}

impl<T, K, KF> Sink<T> for RepartitionSink<T, KF>
where
    T: Serialize + Send + 'static,
    K: StableHash,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    fn name(&self) -> String {
        format!("repartition:{}", self.options.topic)
    }

    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        if !ctx.checkpointing() {
            return Err(WeirError::Config(
                "scale-out: the repartition topic needs checkpoints (execution.checkpointing.interval)".into(),
            ));
        }
        if let Some(r) = ctx.restore() {
            if r.old_shards != ctx.shards {
                return Err(WeirError::Config(format!(
                    "scale-out: slot {} was checkpointed on {} shards; every process of a scaled-out job must run the same number of shards (here {})",
                    self.slot, r.old_shards, ctx.shards
                )));
            }
        }
        let o = &self.options;
        let chk = ctx
            .config
            .checkpoint_dir
            .clone()
            .ok_or_else(|| WeirError::Config("scale-out: the repartition topic needs a checkpoint directory".into()))?;
        let mut sink_options = KafkaSinkOptions::new(o.connection.bootstrap_servers.clone(), o.topic.clone())
            .delivery(DeliveryGuarantee::ExactlyOnce)
            .transaction_log_dir(chk.join("transactions"));
        sink_options.connection = o.connection.clone();
        sink_options.transaction_timeout_ms = o.transaction_timeout_ms;
        let transactional_id = format!("weir-{}-slot{}-{}", o.topic, self.slot, ctx.shard);
        let producer = TransactionalProducer::new(&sink_options, &transactional_id, ctx.shard, client::client_cpus(ctx.config))?;
        let restored = ctx
            .restored_committables(operator_name)
            .iter()
            .map(|c| snapshot::decode::<Committable>(c, "repartition committable"))
            .collect::<Result<Vec<_>>>()?;
        let buffer = Rc::new(RefCell::new(WriterBuffer {
            watermark: WATERMARK_MIN,
            written_watermark: WATERMARK_MIN,
            ..Default::default()
        }));
        ctx.add_committing_flusher(
            operator_name,
            Box::new(RepartitionWriter {
                producer,
                buffer: buffer.clone(),
                partitions: o.partitions,
                writer: (self.slot * ctx.shards + ctx.shard) as u32,
                writers: (self.slots * ctx.shards) as u32,
                restored: Some((restored, ctx.restore().is_none(), ctx.restore().map_or(0, |r| r.epoch))),
            }),
        );
        Ok(Box::new(RepartitionPush {
            key_fn: self.key_fn.clone(),
            groups: ctx.groups,
            partitions: KeyGroups::new(ctx.config.max_key_groups, o.partitions),
            writer: (self.slot * ctx.shards + ctx.shard) as u32,
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            _t: PhantomData,
        }))
    }
}

/// The async half of a writer: epoch logs and transactions.
struct RepartitionWriter {
    producer: TransactionalProducer,
    buffer: Rc<RefCell<WriterBuffer>>,
    partitions: u32,
    writer: u32,
    writers: u32,
    /// Until connect: the committables to resolve, whether this is a fresh start, and the
    /// restored checkpoint's epoch.
    restored: Option<(Vec<Committable>, bool, u64)>,
}

impl RepartitionWriter {
    async fn log_buffered(&mut self) -> Result<()> {
        let records = {
            let mut b = self.buffer.borrow_mut();
            if let Some(e) = b.error.take() {
                return Err(e);
            }
            std::mem::take(&mut b.records)
        };
        self.producer.append(&records).await
    }

    /// End the epoch: log the buffered records, a watermark to every partition if it advanced,
    /// and pre-commit.
    async fn end_epoch(&mut self, epoch: u64) -> Result<Option<Vec<u8>>> {
        {
            let mut b = self.buffer.borrow_mut();
            if b.watermark > b.written_watermark {
                let watermark = b.watermark;
                for q in 0..self.partitions {
                    let envelope: Envelope<()> = Envelope::Watermark {
                        writer: self.writer,
                        writers: self.writers,
                        seq: b.seq,
                        watermark,
                    };
                    let value = postcard::to_allocvec(&envelope).map_err(|e| WeirError::Other(format!("repartition: encoding a watermark: {e}")))?;
                    b.seq += 1;
                    b.records.push(OutRecord {
                        key: None,
                        value,
                        headers: Vec::new(),
                        partition: Some(q as i32),
                    });
                }
                b.written_watermark = watermark;
            }
        }
        self.log_buffered().await?;
        let committable = self.producer.pre_commit(epoch).await?;
        self.buffer.borrow_mut().seq = 0;
        Ok(committable)
    }
}

impl Flusher for RepartitionWriter {
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
        Box::pin(self.end_epoch(epoch))
    }
    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.producer.commit(epoch))
    }
    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            // Checkpoints are on (checked at build): the final epoch was pre-committed and
            // committed already; this only catches a step buffered since.
            let epoch = self.producer.next_epoch();
            self.end_epoch(epoch).await?;
            self.producer.commit(epoch).await
        })
    }
}

/// Reads the repartition partitions a slot owns (see the module docs). Records come out as
/// `(event time, record)`.
pub struct RepartitionSource<T> {
    options: Arc<RepartitionOptions>,
    /// The partitions read, in split order.
    partitions: Arc<Vec<i32>>,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned + Send + 'static> Source<(Timestamp, T)> for RepartitionSource<T> {
    fn name(&self) -> String {
        format!("repartition:{}", self.options.topic)
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.partitions.len())
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<(Timestamp, T)>>> {
        let partition = *self
            .partitions
            .get(split)
            .ok_or_else(|| WeirError::Other(format!("repartition source: split {split} of {} does not exist", self.partitions.len())))?;
        let mut config = self.options.connection.client_config(&[
            ("enable.partition.eof", "false"),
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("fetch.wait.max.ms", "20"),
            ("group.id", "weir-repartition-reader"),
        ]);
        // Never the job's group: this consumer only assigns, it does not join.
        config.set("group.id", "weir-repartition-reader");
        let consumer = client::create_off_shard_cores(client::client_cpus(ctx.config), move || {
            config.create::<BaseConsumer>().map_err(|e| kafka_error("creating a repartition consumer", e))
        })?;
        Ok(Box::new(RepartitionReader::<T> {
            topic: self.options.topic.clone(),
            partition,
            consumer,
            position: ReaderPosition::default(),
            opened: false,
            _t: PhantomData,
        }))
    }
}

/// Where a repartition split stands: its checkpointed position.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ReaderPosition {
    next_offset: i64,
    /// Per writer: the last accepted `(epoch, seq)`.
    accepted: BTreeMap<u32, (u64, u64)>,
    /// Per writer: its watermark in this partition.
    watermarks: BTreeMap<u32, Timestamp>,
    /// The writer count (from the watermarks; 0 until the first).
    writers: u32,
}

impl ReaderPosition {
    /// Min over all writers (MIN while one was not heard from).
    fn watermark(&self) -> Timestamp {
        if self.writers == 0 || self.watermarks.len() < self.writers as usize {
            return WATERMARK_MIN;
        }
        self.watermarks.values().copied().min().unwrap_or(WATERMARK_MIN)
    }

    /// Accept envelope `(writer, epoch, seq)` unless it repeats one accepted before.
    fn accept(&mut self, writer: u32, epoch: u64, seq: u64) -> bool {
        match self.accepted.get(&writer) {
            Some(&last) if (epoch, seq) <= last => false,
            _ => {
                self.accepted.insert(writer, (epoch, seq));
                true
            }
        }
    }
}

struct RepartitionReader<T> {
    topic: String,
    partition: i32,
    consumer: BaseConsumer,
    position: ReaderPosition,
    opened: bool,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> RepartitionReader<T> {
    fn describe(&self) -> String {
        format!("{}[{}]", self.topic, self.partition)
    }

    fn ended(&self) -> bool {
        self.position.watermark() == WATERMARK_MAX
    }

    fn read_messages(&mut self, out: &mut Vec<(Timestamp, T)>, max: usize) -> Result<ReadStatus> {
        if self.ended() {
            return Ok(ReadStatus::Exhausted);
        }
        let start = out.len();
        while out.len() - start < max.max(1) {
            let msg = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => {
                    let fatal = matches!(&e, KafkaError::MessageConsumptionFatal(_)) || e.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal);
                    if fatal {
                        return Err(kafka_error(&format!("reading {}", self.describe()), e));
                    }
                    continue; // transient: librdkafka retries
                }
                Some(Ok(m)) => m,
            };
            let offset = msg.offset();
            if offset < self.position.next_offset {
                continue;
            }
            self.position.next_offset = offset + 1;
            let epoch = msg
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "weir.epoch").and_then(|h| h.value))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
                .ok_or_else(|| WeirError::Other(format!("repartition: {} offset {offset} has no weir.epoch header", self.describe())))?;
            let envelope: Envelope<T> = postcard::from_bytes(msg.payload().unwrap_or_default())
                .map_err(|e| WeirError::Other(format!("repartition: {} offset {offset} is not an envelope: {e}", self.describe())))?;
            match envelope {
                Envelope::Data { writer, seq, ts, record } => {
                    if self.position.accept(writer, epoch, seq) {
                        out.push((ts, record));
                    }
                }
                Envelope::Watermark {
                    writer,
                    writers,
                    seq,
                    watermark,
                } => {
                    if self.position.writers != 0 && self.position.writers != writers {
                        return Err(WeirError::Config(format!(
                            "scale-out: {} has writers from jobs with {} and {writers} writers: every process must run the same number of shards",
                            self.describe(),
                            self.position.writers
                        )));
                    }
                    self.position.writers = writers;
                    if self.position.accept(writer, epoch, seq) {
                        let before = self.position.watermark();
                        let w = self.position.watermarks.entry(writer).or_insert(WATERMARK_MIN);
                        *w = (*w).max(watermark);
                        if self.position.watermark() > before {
                            break; // the new watermark applies after the records read so far
                        }
                    }
                }
            }
        }
        if out.len() == start && !self.ended() {
            return Ok(ReadStatus::Idle { retry_after_ms: 1 });
        }
        Ok(ReadStatus::More)
    }
}

impl<T: DeserializeOwned> SplitReader<(Timestamp, T)> for RepartitionReader<T> {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.opened && !self.ended() {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&self.topic, self.partition, Offset::Offset(self.position.next_offset))
                    .map_err(|e| kafka_error("building an assignment", e))?;
                self.consumer
                    .assign(&tpl)
                    .map_err(|e| kafka_error(&format!("assigning {}", self.describe()), e))?;
            }
            self.opened = true;
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<(Timestamp, T)>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(async move { self.read_messages(out, max) })
    }

    fn describe(&self) -> String {
        RepartitionReader::describe(self)
    }

    fn position(&self) -> Result<Vec<u8>> {
        Ok(snapshot::encode(&self.position))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        self.position = snapshot::decode(position, &format!("position of {}", self.describe()))?;
        Ok(())
    }

    fn source_watermark(&self) -> Option<Timestamp> {
        Some(self.position.watermark())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_of_a_retried_epoch_are_skipped() {
        let mut p = ReaderPosition::default();
        // Attempt 1 of epoch 3 got seq 0..2 out, then was aborted; attempt 2 repeats 0..4.
        assert!(p.accept(7, 3, 0) && p.accept(7, 3, 1) && p.accept(7, 3, 2));
        assert!(!p.accept(7, 3, 0) && !p.accept(7, 3, 1) && !p.accept(7, 3, 2));
        assert!(p.accept(7, 3, 3) && p.accept(7, 3, 4));
        assert!(p.accept(7, 4, 0), "the next epoch starts at seq 0");
        assert!(p.accept(8, 1, 0), "writers are independent");
    }

    #[test]
    fn watermark_waits_for_every_writer() {
        let mut p = ReaderPosition {
            writers: 2,
            ..Default::default()
        };
        p.watermarks.insert(0, 100);
        assert_eq!(p.watermark(), WATERMARK_MIN);
        p.watermarks.insert(1, 50);
        assert_eq!(p.watermark(), 50);
        p.watermarks.insert(1, WATERMARK_MAX);
        p.watermarks.insert(0, WATERMARK_MAX);
        assert_eq!(p.watermark(), WATERMARK_MAX);
    }

    #[test]
    fn envelopes_round_trip() {
        let e = Envelope::Data {
            writer: 3,
            seq: 9,
            ts: -5,
            record: (1i64, "x".to_string()),
        };
        let bytes = postcard::to_allocvec(&e).unwrap();
        assert_eq!(postcard::from_bytes::<Envelope<(i64, String)>>(&bytes).unwrap(), e);
        // A watermark decodes as any record type.
        let w: Envelope<()> = Envelope::Watermark {
            writer: 1,
            writers: 2,
            seq: 0,
            watermark: 7,
        };
        let bytes = postcard::to_allocvec(&w).unwrap();
        assert!(matches!(
            postcard::from_bytes::<Envelope<(i64, String)>>(&bytes).unwrap(),
            Envelope::Watermark { watermark: 7, .. }
        ));
    }
}
