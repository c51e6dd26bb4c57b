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
//! each checkpoint barrier (and at the end) a writer closes its epoch in every partition with
//! an [`Envelope::Watermark`] carrying its watermark, after its data of that epoch.
//!
//! **A chain per writer and partition.** Envelopes are numbered per writer, partition and
//! epoch (`seq` = 0, 1, ...; the closing watermark last), and each names the writer's previous
//! epoch (`prev`; the epoch header `weir.epoch` names its own). So a reader knows exactly what
//! must come next from each writer in its partition: the next `seq` of the open epoch, or —
//! once the epoch was closed — `seq` 0 of an epoch whose `prev` is the closed one. Anything
//! below that is a repeat (a retried epoch, see below) and is skipped; anything above it means
//! the reader missed envelopes, and it reads the partition again from just after that
//! writer's last accepted envelope (repeats are skipped again). A broker that lets a consumer
//! skip records — the tansu test broker can show one producer's batch before another
//! producer's earlier one in the same partition, and a consumer reading at that moment moves
//! past the earlier batch for good — therefore costs a re-read, never a record; a reader that
//! idles while a writer is behind (in an open epoch, or an epoch older than another writer's)
//! reads again from that writer's last envelope, in case its next ones (its final epoch, say)
//! were skipped — after 1 s, doubling up to 32 s while that finds nothing; in the steady state
//! every writer closed the same epoch and nothing is re-read. A gap that persists (60 s) fails
//! the job.
//!
//! **Reading** ([`RepartitionSource`], stage [`Stage::Keyed`]): one split per repartition
//! partition the slot owns. A partition's watermark is the minimum over all writers of the
//! last watermark each wrote there (the split hands it to the engine through
//! [`SplitReader::source_watermark`]); the partition ends when every writer wrote the final
//! watermark (`i64::MAX`). Watermarks therefore lag upstream by about one checkpoint interval
//! and never judge a record later than upstream would have.
//!
//! **Exactly once without relying on the broker's transactions.** Readers read *uncommitted*:
//! a transaction left open — a writer killed while publishing, until the slot's next owner
//! fences its id; or one a broker keeps open (the tansu test broker has no transaction timeout
//! and can leave a committed transaction "prepared" while another one overlaps it) — would stop
//! every `read_committed` reader of the partition at its first record, and with it the
//! watermark of every slot's keyed stage. So a reader sees records of transactions that are
//! later aborted, and then the same epoch again from the retry: a retry re-produces the *same*
//! log, so `(epoch, seq)` names an envelope across attempts and the chain skips the repeats.
//! Reading a record before its transaction commits is safe because a writer produces an epoch
//! only after the checkpoint holding its log completed, and every later run of the slot
//! restores a checkpoint at least that new, which re-produces the epoch until it commits: the
//! records read early are exactly the records that will be committed. A restored writer's
//! first epoch names the restored checkpoint's epoch as `prev`, whose log (closing envelopes
//! included) was published before it.
//!
//! Invariants: per writer and partition, the envelopes of the attempts that commit form one
//! chain (epochs in order, each `seq` 0..=n ending with the closing watermark, each epoch's
//! `prev` the one before); the reader hands each `(writer, epoch, seq)` out at most once and
//! only in chain order; all processes of a job run the same number of shards (the writer
//! count is in every watermark and a mismatch fails the reader).

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

/// One message of a repartition topic (postcard). `seq` numbers the envelopes of one writer's
/// epoch in one partition; `prev` is the writer's epoch before this one (0: none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Envelope<T> {
    /// A record with its event time.
    Data {
        writer: u32,
        seq: u64,
        prev: u64,
        ts: Timestamp,
        record: T,
    },
    /// The last envelope of writer `writer`'s (of `writers`) epoch in this partition: its
    /// watermark is `watermark` (its later records are after it).
    Watermark {
        writer: u32,
        writers: u32,
        seq: u64,
        prev: u64,
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
    /// Per partition: the sequence number of the next envelope of the epoch being written.
    seqs: Vec<u64>,
    /// The writer's epoch before the one being written (0: none); every envelope names it.
    prev_epoch: u64,
    /// The newest watermark seen.
    watermark: Timestamp,
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
            let partition = self.partitions.shard_of_group(group) as usize;
            let envelope = Envelope::Data {
                writer: self.writer,
                seq: b.seqs[partition],
                prev: b.prev_epoch,
                ts,
                record,
            };
            match postcard::to_allocvec(&envelope) {
                Ok(value) => {
                    b.seqs[partition] += 1;
                    b.records.push(OutRecord {
                        key: None,
                        value,
                        headers: Vec::new(),
                        partition: Some(partition as i32),
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
        // The last epoch this writer closed: the restored checkpoint's (its log, closing
        // envelopes included, is published before anything new), or a finished task's final.
        let prev_epoch = restored.iter().map(|c| c.epoch).chain(ctx.restore().map(|r| r.epoch)).max().unwrap_or(0);
        let buffer = Rc::new(RefCell::new(WriterBuffer {
            seqs: vec![0; o.partitions as usize],
            prev_epoch,
            watermark: WATERMARK_MIN,
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

    /// End the epoch: log the buffered records and the closing watermark of every partition,
    /// and pre-commit.
    async fn end_epoch(&mut self, epoch: u64) -> Result<Option<Vec<u8>>> {
        {
            let mut b = self.buffer.borrow_mut();
            let (watermark, prev) = (b.watermark, b.prev_epoch);
            for q in 0..self.partitions as usize {
                let envelope: Envelope<()> = Envelope::Watermark {
                    writer: self.writer,
                    writers: self.writers,
                    seq: b.seqs[q],
                    prev,
                    watermark,
                };
                let value = postcard::to_allocvec(&envelope).map_err(|e| WeirError::Other(format!("repartition: encoding a watermark: {e}")))?;
                b.records.push(OutRecord {
                    key: None,
                    value,
                    headers: Vec::new(),
                    partition: Some(q as i32),
                });
            }
        }
        self.log_buffered().await?;
        let committable = self.producer.pre_commit(epoch).await?;
        let mut b = self.buffer.borrow_mut();
        b.seqs.fill(0);
        b.prev_epoch = epoch;
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
            // committed already; this only catches records buffered since.
            if !self.has_pending() && !self.producer.has_open_log() {
                return Ok(());
            }
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
            // See the module docs: duplicates are dropped by (writer, epoch, seq).
            ("isolation.level", "read_uncommitted"),
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
            gap: None,
            idle_since: None,
            reread_after: IDLE_REREAD,
            rereads: 0,
            _t: PhantomData,
        }))
    }
}

/// Where the chain of one writer in a partition stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct WriterCursor {
    /// The writer's newest epoch read, the `seq` expected next in it, and whether its closing
    /// watermark was read.
    epoch: u64,
    next_seq: u64,
    closed: bool,
    /// Offset of the last envelope accepted from the writer (-1: none).
    last_offset: i64,
}

impl Default for WriterCursor {
    /// A writer not heard from: its first epoch must name no previous one.
    fn default() -> Self {
        Self {
            epoch: 0,
            next_seq: 0,
            closed: true,
            last_offset: -1,
        }
    }
}

/// What to do with an envelope, given its writer's cursor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// The next one of the chain.
    Accept,
    /// Read before (a retried epoch's repeat, or a re-read).
    Repeat,
    /// Envelopes before it were not seen: read again from after the writer's last accepted one.
    Gap,
}

impl WriterCursor {
    fn verdict(&self, epoch: u64, seq: u64, prev: u64) -> Verdict {
        if (epoch, seq) < (self.epoch, self.next_seq) {
            return Verdict::Repeat;
        }
        if epoch == self.epoch {
            return match (self.closed, seq == self.next_seq) {
                // Nothing of a closed epoch follows its closing watermark.
                (true, _) => Verdict::Repeat,
                (false, true) => Verdict::Accept,
                (false, false) => Verdict::Gap,
            };
        }
        // A later epoch: it must follow the closed one, from its start.
        if self.closed && prev == self.epoch && seq == 0 {
            Verdict::Accept
        } else {
            Verdict::Gap
        }
    }

    fn advance(&mut self, epoch: u64, seq: u64, closing: bool, offset: i64) {
        *self = Self {
            epoch,
            next_seq: seq + 1,
            closed: closing,
            last_offset: offset,
        };
    }

    /// The writer's final epoch is closed: nothing more comes from it.
    fn finished(&self) -> bool {
        self.epoch == crate::checkpoint::runtime::FINAL_EPOCH && self.closed
    }
}

/// Where a repartition split stands: its checkpointed position.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ReaderPosition {
    /// The next offset to read (every envelope below it was accepted or is a repeat).
    next_offset: i64,
    /// Per writer: its chain in this partition.
    cursors: BTreeMap<u32, WriterCursor>,
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

    fn cursor(&self, writer: u32) -> WriterCursor {
        self.cursors.get(&writer).copied().unwrap_or_default()
    }

    /// Where to read again from when a writer's last envelopes may have been skipped: after
    /// the last accepted envelope of the writers *behind* — not finished, and in an open epoch
    /// or one older than another writer's (offset 0 while a writer was never heard from) — or
    /// `None` when no writer is behind (the steady state: every writer closed the same epoch).
    fn reread_from(&self) -> Option<i64> {
        if self.writers == 0 || self.cursors.len() < self.writers as usize {
            return Some(0);
        }
        let newest = self.cursors.values().map(|c| c.epoch).max().unwrap_or(0);
        self.cursors
            .values()
            .filter(|c| !c.finished() && (c.epoch < newest || !c.closed))
            .map(|c| c.last_offset + 1)
            .min()
    }
}

/// A gap that does not close within this is an error (the broker lost records, or a bug).
const GAP_LIMIT: Duration = Duration::from_secs(60);
/// A reader idle this long with a writer behind reads again from that writer's last envelope;
/// the wait doubles with every such re-read that brings nothing new, up to the maximum.
const IDLE_REREAD: Duration = Duration::from_secs(1);
const IDLE_REREAD_MAX: Duration = Duration::from_secs(32);

struct RepartitionReader<T> {
    topic: String,
    partition: i32,
    consumer: BaseConsumer,
    position: ReaderPosition,
    opened: bool,
    /// The writer whose chain has a gap, and since when (cleared by its next accepted envelope).
    gap: Option<(u32, std::time::Instant)>,
    /// Since when nothing was read, and how long to idle before the next re-read.
    idle_since: Option<std::time::Instant>,
    reread_after: Duration,
    /// Re-reads after a gap or an idle period (for the log at the end).
    rereads: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> RepartitionReader<T> {
    fn describe(&self) -> String {
        format!("{}[{}]", self.topic, self.partition)
    }

    fn ended(&self) -> bool {
        self.position.watermark() == WATERMARK_MAX
    }

    /// Read the partition again from `offset` (asynchronous seek: librdkafka drops what it
    /// fetched from the old position).
    fn reread(&mut self, offset: i64) -> Result<()> {
        self.position.next_offset = offset;
        self.rereads += 1;
        self.consumer
            .seek(&self.topic, self.partition, Offset::Offset(offset), Duration::ZERO)
            .map_err(|e| kafka_error(&format!("seeking {} to offset {offset}", self.describe()), e))
    }

    fn read_messages(&mut self, out: &mut Vec<(Timestamp, T)>, max: usize) -> Result<ReadStatus> {
        if self.ended() {
            if self.rereads > 0 {
                tracing::info!(split = %self.describe(), rereads = self.rereads, "repartition split read to its end (re-read after skipped records)");
                self.rereads = 0;
            }
            return Ok(ReadStatus::Exhausted);
        }
        let start = out.len();
        let mut polled = false;
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
            polled = true;
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
            let (writer, seq, prev, closing) = match &envelope {
                Envelope::Data { writer, seq, prev, .. } => (*writer, *seq, *prev, false),
                Envelope::Watermark {
                    writer, writers, seq, prev, ..
                } => {
                    if self.position.writers != 0 && self.position.writers != *writers {
                        return Err(WeirError::Config(format!(
                            "scale-out: {} has writers from jobs with {} and {writers} writers: every process must run the same number of shards",
                            self.describe(),
                            self.position.writers
                        )));
                    }
                    self.position.writers = *writers;
                    (*writer, *seq, *prev, true)
                }
            };
            let mut cursor = self.position.cursor(writer);
            match cursor.verdict(epoch, seq, prev) {
                Verdict::Repeat => continue,
                Verdict::Gap => {
                    let since = match self.gap {
                        Some((w, since)) if w == writer => since,
                        _ => std::time::Instant::now(),
                    };
                    if since.elapsed() > GAP_LIMIT {
                        return Err(WeirError::Other(format!(
                            "repartition: {} misses envelopes of writer {writer} (after epoch {} seq {}, offset {}; offset {offset} holds epoch {epoch} seq {seq}) for {GAP_LIMIT:?}",
                            self.describe(),
                            cursor.epoch,
                            cursor.next_seq,
                            cursor.last_offset
                        )));
                    }
                    self.gap = Some((writer, since));
                    self.reread(cursor.last_offset + 1)?;
                    break;
                }
                Verdict::Accept => {
                    if matches!(self.gap, Some((w, _)) if w == writer) {
                        self.gap = None;
                    }
                    cursor.advance(epoch, seq, closing, offset);
                    self.position.cursors.insert(writer, cursor);
                    self.reread_after = IDLE_REREAD;
                }
            }
            match envelope {
                Envelope::Data { ts, record, .. } => out.push((ts, record)),
                Envelope::Watermark { watermark, .. } => {
                    let before = self.position.watermark();
                    let w = self.position.watermarks.entry(writer).or_insert(WATERMARK_MIN);
                    *w = (*w).max(watermark);
                    if self.position.watermark() > before {
                        break; // the new watermark applies after the records read so far
                    }
                }
            }
        }
        if out.len() == start && !self.ended() {
            // Idle with a writer behind: read again from its last envelope, in case a skipped
            // batch held the rest (its final epoch, say), backing off while that finds nothing.
            if polled {
                self.idle_since = None;
            }
            let since = *self.idle_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() > self.reread_after {
                self.idle_since = None;
                if let Some(offset) = self.position.reread_from() {
                    if offset < self.position.next_offset {
                        self.reread(offset)?;
                        self.reread_after = (self.reread_after * 2).min(IDLE_REREAD_MAX);
                    }
                }
            }
            return Ok(ReadStatus::Idle { retry_after_ms: 1 });
        }
        self.idle_since = None;
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
    fn the_chain_accepts_in_order_skips_repeats_and_finds_gaps() {
        let mut c = WriterCursor::default();
        let step = |c: &mut WriterCursor, epoch, seq, prev, closing| {
            let v = c.verdict(epoch, seq, prev);
            if v == Verdict::Accept {
                c.advance(epoch, seq, closing, 0);
            }
            v
        };
        // First epoch 3 (prev 0): attempt 1 got seq 0..=2 out and was aborted; attempt 2
        // repeats 0..=4, 4 being the closing watermark.
        for seq in 0..=2 {
            assert_eq!(step(&mut c, 3, seq, 0, false), Verdict::Accept);
        }
        for seq in 0..=2 {
            assert_eq!(step(&mut c, 3, seq, 0, false), Verdict::Repeat);
        }
        assert_eq!(step(&mut c, 3, 3, 0, false), Verdict::Accept);
        assert_eq!(step(&mut c, 3, 4, 0, true), Verdict::Accept);
        assert_eq!(step(&mut c, 3, 4, 0, true), Verdict::Repeat, "a closed epoch only repeats");
        // Epoch 4 follows 3 from seq 0; seq 2 before seq 1 is a gap.
        assert_eq!(step(&mut c, 4, 1, 3, false), Verdict::Gap, "epoch 4 must start at seq 0");
        assert_eq!(step(&mut c, 4, 0, 3, false), Verdict::Accept);
        assert_eq!(step(&mut c, 4, 2, 3, false), Verdict::Gap);
        assert_eq!(step(&mut c, 4, 1, 3, true), Verdict::Accept);
        // Epoch 6 names 5 as its previous one: epoch 5 was missed.
        assert_eq!(step(&mut c, 6, 0, 5, false), Verdict::Gap);
        // A restored writer's first epoch names the restored checkpoint's (here 4).
        assert_eq!(step(&mut c, 5, 0, 4, true), Verdict::Accept);
        // An open epoch followed by a later one: its closing watermark was missed.
        assert_eq!(step(&mut c, 6, 0, 5, false), Verdict::Accept);
        assert_eq!(step(&mut c, 7, 0, 6, false), Verdict::Gap);
        // The first epoch ever must name none.
        assert_eq!(WriterCursor::default().verdict(2, 0, 1), Verdict::Gap);
    }

    #[test]
    fn reread_starts_after_the_oldest_writer_behind() {
        let mut p = ReaderPosition {
            writers: 2,
            ..Default::default()
        };
        assert_eq!(p.reread_from(), Some(0), "a writer not heard from yet");
        let (mut a, mut b) = (WriterCursor::default(), WriterCursor::default());
        a.advance(7, 3, true, 40);
        b.advance(7, 5, true, 45);
        p.cursors.insert(0, a);
        p.cursors.insert(1, b);
        assert_eq!(p.reread_from(), None, "both closed epoch 7: nobody is behind");
        b.advance(8, 0, false, 60);
        p.cursors.insert(1, b);
        assert_eq!(p.reread_from(), Some(41), "writer 0 is an epoch behind, writer 1's epoch is open");
        b.advance(crate::checkpoint::runtime::FINAL_EPOCH, 5, true, 70);
        p.cursors.insert(1, b);
        assert_eq!(p.reread_from(), Some(41), "writer 0 has not closed its final epoch");
        a.advance(crate::checkpoint::runtime::FINAL_EPOCH, 0, true, 80);
        p.cursors.insert(0, a);
        assert_eq!(p.reread_from(), None, "both finished");
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
            prev: 2,
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
            prev: 0,
            watermark: 7,
        };
        let bytes = postcard::to_allocvec(&w).unwrap();
        assert!(matches!(
            postcard::from_bytes::<Envelope<(i64, String)>>(&bytes).unwrap(),
            Envelope::Watermark { watermark: 7, .. }
        ));
    }
}
