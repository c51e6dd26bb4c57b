//! The split reader of the Kafka source: one partition, polled without blocking from the
//! shard's consumer, plus the dead-letter-topic producer of bad records.
//!
//! Invariants: the shard's consumer of a source is shared by that source's splits on the shard
//! (one librdkafka client per source and shard, created off the shard's core); each split
//! polls only its own partition queue (split off before its partition is assigned) and, when
//! that is empty, serves the consumer's main queue (errors, offset commits); a fatal client
//! error fails the job, transient ones are retried by librdkafka.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::client::{self, kafka_error, DeliveryErrors, KafkaConnection};
use super::decode::{DecodeMessage, MessageView};
use super::{KafkaSourceOptions, PartitionPlan, StopHandle};
use crate::checkpoint::snapshot;
use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::shard::{BuildCtx, Flusher, OperatorMetrics};
use crate::source::file::dead_letter::{self, SharedDeadLetters};
use crate::source::file::BadLine;
use crate::source::{ReadStatus, SplitReader};

type SharedConsumer = Arc<BaseConsumer<DefaultConsumerContext>>;

thread_local! {
    /// Per shard thread: the consumer of each Kafka source (by source id).
    static CONSUMERS: RefCell<HashMap<u64, Weak<SharedConsumer>>> = RefCell::new(HashMap::new());
    /// Per shard thread: the dead-letter-topic buffer of each Kafka source (by source id).
    static DEAD_LETTER_TOPICS: RefCell<HashMap<u64, Weak<RefCell<DeadLetterTopicBuffer>>>> = RefCell::new(HashMap::new());
}

/// This shard's consumer of source `source_id` (created by the first split built here).
fn shard_consumer(source_id: u64, options: &KafkaSourceOptions, ctx: &BuildCtx<'_>) -> Result<Rc<SharedConsumer>> {
    if let Some(c) = CONSUMERS.with(|m| m.borrow().get(&source_id).and_then(Weak::upgrade)) {
        return Ok(c);
    }
    let mut config = options.connection.client_config(&[
        ("enable.partition.eof", "true"),
        ("isolation.level", "read_committed"),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("fetch.wait.max.ms", "20"),
        // librdkafka's assign needs a group id even when nothing is committed.
        ("group.id", "weir-source"),
    ]);
    if let (Some(g), None) = (&options.group_id, options.slot) {
        // Progress information only: librdkafka commits what the readers stored.
        config.set("group.id", g);
        config.set("enable.auto.commit", "true");
        config.set("enable.auto.offset.store", "false");
    }
    let consumer = client::create_off_shard_cores(client::client_cpus(ctx.config), move || {
        config.create::<BaseConsumer>().map_err(|e| kafka_error("creating a consumer", e))
    })?;
    let consumer = Rc::new(Arc::new(consumer));
    CONSUMERS.with(|m| m.borrow_mut().insert(source_id, Rc::downgrade(&consumer)));
    Ok(consumer)
}

/// Where bad records go.
enum DeadLetters {
    None,
    Files(SharedDeadLetters),
    Topic(Rc<RefCell<DeadLetterTopicBuffer>>),
}

/// Build the reader of one partition on this shard.
pub(super) fn build<T: 'static>(
    source_id: u64,
    options: &KafkaSourceOptions,
    plan: PartitionPlan,
    decoder: Box<dyn DecodeMessage<T>>,
    stop: StopHandle,
    ctx: &mut BuildCtx<'_>,
) -> Result<Box<dyn SplitReader<T>>> {
    let consumer = shard_consumer(source_id, options, ctx)?;
    let queue = consumer
        .split_partition_queue(&plan.topic, plan.partition)
        .ok_or_else(|| WeirError::Other(format!("kafka: cannot read partition {}", plan.describe())))?;
    let policy = ctx.config.on_bad_record.clone();
    let dead_letters = match (&policy, &options.dead_letter_topic) {
        (ErrorPolicy::DeadLetter, Some(topic)) => DeadLetters::Topic(dead_letter_topic_buffer(source_id, &options.connection, topic, ctx)?),
        (ErrorPolicy::DeadLetter, None) => {
            let dir = match &ctx.config.dead_letter_dir {
                Some(d) => d.clone(),
                None => std::env::current_dir()
                    .map_err(|e| WeirError::io("finding the working directory", ".", e))?
                    .join("dead-letter"),
            };
            // Kafka sources use ids far from the file sources' so their buffers never collide.
            let (buffer, writer) = dead_letter::shard_buffer(source_id | 1 << 63, dir, ctx.shard, ctx.config.dead_letter_buffer_records);
            if let Some(writer) = writer {
                ctx.add_flusher(Box::new(writer));
            }
            DeadLetters::Files(buffer)
        }
        _ => DeadLetters::None,
    };
    let metrics = ctx
        .source_metrics()
        .ok_or_else(|| WeirError::Other("kafka source built outside a source segment".into()))?;
    Ok(Box::new(KafkaSplitReader {
        describe: plan.describe(),
        next_offset: plan.start,
        plan,
        consumer,
        queue,
        decoder,
        policy,
        dead_letters,
        metrics,
        stop,
        store_offsets: options.group_id.is_some() && options.slot.is_none(),
        poll_idle_ms: options.poll_idle_ms.max(1),
        opened: false,
        done: false,
    }))
}

struct KafkaSplitReader<T> {
    plan: PartitionPlan,
    describe: String,
    /// The next offset to hand out (the split's position).
    next_offset: i64,
    consumer: Rc<SharedConsumer>,
    queue: rdkafka::consumer::base_consumer::PartitionQueue<DefaultConsumerContext>,
    decoder: Box<dyn DecodeMessage<T>>,
    policy: ErrorPolicy,
    dead_letters: DeadLetters,
    metrics: Arc<crate::shard::OperatorMetrics>,
    stop: StopHandle,
    store_offsets: bool,
    poll_idle_ms: u64,
    opened: bool,
    done: bool,
}

impl<T> KafkaSplitReader<T> {
    fn reached_stop(&self) -> bool {
        self.plan.stop.is_some_and(|stop| self.next_offset >= stop)
    }

    fn dead_letters_full(&self) -> bool {
        match &self.dead_letters {
            DeadLetters::Files(b) => b.borrow().is_full(),
            DeadLetters::Topic(b) => b.borrow().is_full(),
            DeadLetters::None => false,
        }
    }

    /// Serve the consumer's main queue (errors, commits). Messages never arrive there: every
    /// assigned partition has its queue split off first.
    fn serve_main_queue(&self) -> Result<()> {
        match self.consumer.poll(Duration::ZERO) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => Ok(()),
            Some(Err(e)) => fatal_or_ignore(&self.describe, e),
            Some(Ok(m)) => Err(WeirError::Other(format!(
                "kafka: a message of {}[{}] arrived outside its partition queue",
                m.topic(),
                m.partition()
            ))),
        }
    }

    /// The consumer's fetch position of this partition (after an end-of-partition event).
    fn fetch_position(&self) -> Option<i64> {
        let positions = self.consumer.position().ok()?;
        match positions.find_partition(&self.plan.topic, self.plan.partition)?.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        }
    }

    async fn read_messages(&mut self, out: &mut Vec<T>, max: usize) -> Result<ReadStatus> {
        if self.done || self.reached_stop() || self.stop.is_stopped() {
            self.done = true;
            return Ok(ReadStatus::Exhausted);
        }
        let start_len = out.len();
        let target = out.len() + max.max(1);
        let mut status = ReadStatus::More;
        while out.len() < target {
            if self.dead_letters_full() {
                break; // let the segment task write them out first
            }
            let polled = self.queue.poll(Duration::ZERO);
            let msg = match polled {
                None => {
                    if out.len() == start_len {
                        status = ReadStatus::Idle {
                            retry_after_ms: self.poll_idle_ms,
                        };
                    }
                    break;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {
                    if let Some(stop) = self.plan.stop {
                        // Transaction markers take offsets no message has: trust the fetch position.
                        if self.fetch_position().is_some_and(|p| p >= stop) {
                            self.next_offset = self.next_offset.max(stop);
                            self.done = true;
                            status = ReadStatus::Exhausted;
                            break;
                        }
                    }
                    continue;
                }
                Some(Err(e)) => {
                    fatal_or_ignore(&self.describe, e)?;
                    continue;
                }
                Some(Ok(msg)) => msg,
            };
            let offset = msg.offset();
            if offset < self.next_offset {
                continue; // re-delivered after a seek
            }
            if self.plan.stop.is_some_and(|stop| offset >= stop) {
                self.done = true;
                status = ReadStatus::Exhausted;
                break;
            }
            self.next_offset = offset + 1;
            let timestamp = msg.timestamp().to_millis().unwrap_or(i64::MIN);
            if let Some(t) = self.plan.skip_before_timestamp {
                if timestamp < t {
                    continue;
                }
                self.plan.skip_before_timestamp = None;
            }
            let view = MessageView {
                topic: &self.plan.topic,
                partition: self.plan.partition,
                offset,
                timestamp,
                key: msg.key(),
                value: msg.payload(),
            };
            if let Err(bad) = self.decoder.decode(&view, out) {
                match self.policy {
                    ErrorPolicy::Fail => {
                        return Err(WeirError::BadMessage {
                            topic: self.plan.topic.to_string(),
                            partition: self.plan.partition,
                            offset,
                            field: bad.field,
                            message: bad.message,
                        })
                    }
                    ErrorPolicy::Skip => OperatorMetrics::add(&self.metrics.bad_records, 1),
                    ErrorPolicy::DeadLetter => {
                        OperatorMetrics::add(&self.metrics.bad_records, 1);
                        dead_letter(&self.dead_letters, &self.plan, offset, &bad, msg.key(), msg.payload().unwrap_or_default());
                    }
                }
            }
            if self.reached_stop() {
                self.done = true;
                status = ReadStatus::Exhausted;
                break;
            }
        }
        if out.len() == start_len && status == ReadStatus::More && !self.dead_letters_full() {
            status = ReadStatus::Idle {
                retry_after_ms: self.poll_idle_ms,
            };
        }
        if matches!(status, ReadStatus::Idle { .. }) {
            self.serve_main_queue()?;
        }
        if self.store_offsets && out.len() > start_len {
            // Progress information for the group; failures (e.g. during a rebalance) are harmless.
            let _ = self.consumer.store_offset(&self.plan.topic, self.plan.partition, self.next_offset);
        }
        Ok(status)
    }
}

fn fatal_or_ignore(what: &str, e: KafkaError) -> Result<()> {
    let fatal = matches!(&e, KafkaError::MessageConsumptionFatal(_)) || e.rdkafka_error_code().is_some_and(|c| c == rdkafka::types::RDKafkaErrorCode::Fatal);
    if fatal {
        Err(kafka_error(&format!("reading {what}"), e))
    } else {
        // Transient (broker down, leader moved, ...): librdkafka retries by itself.
        Ok(())
    }
}

fn dead_letter(dl: &DeadLetters, plan: &PartitionPlan, offset: i64, bad: &BadLine, key: Option<&[u8]>, value: &[u8]) {
    match dl {
        DeadLetters::Files(buffer) => {
            buffer
                .borrow_mut()
                .push(&plan.describe(), offset as u64, bad.field.as_deref(), &bad.message, value, false);
        }
        DeadLetters::Topic(buffer) => buffer.borrow_mut().push(plan, offset, bad, key, value),
        DeadLetters::None => unreachable!("dead-letter policy without a dead-letter output"),
    }
}

impl<T> SplitReader<T> for KafkaSplitReader<T> {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.opened && !self.reached_stop() {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&self.plan.topic, self.plan.partition, Offset::Offset(self.next_offset))
                    .map_err(|e| kafka_error("building an assignment", e))?;
                self.consumer
                    .incremental_assign(&tpl)
                    .map_err(|e| kafka_error(&format!("assigning {}", self.describe), e))?;
            }
            self.opened = true;
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(self.read_messages(out, max))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn position(&self) -> Result<Vec<u8>> {
        Ok(snapshot::encode(&self.next_offset))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let offset: i64 = snapshot::decode(position, &format!("position of {}", self.describe))?;
        self.next_offset = offset;
        // A restored position is exact: no timestamp skipping.
        self.plan.skip_before_timestamp = None;
        Ok(())
    }
}

/// Bad records waiting to be produced to the dead-letter topic (one per source and shard).
pub(crate) struct DeadLetterTopicBuffer {
    records: Vec<(Option<Vec<u8>>, Vec<u8>, OwnedHeaders)>,
    capacity_records: usize,
}

impl DeadLetterTopicBuffer {
    fn is_full(&self) -> bool {
        self.records.len() >= self.capacity_records
    }

    fn push(&mut self, plan: &PartitionPlan, offset: i64, bad: &BadLine, key: Option<&[u8]>, value: &[u8]) {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "weir.error",
                value: Some(bad.message.as_str()),
            })
            .insert(Header {
                key: "weir.field",
                value: bad.field.as_deref(),
            })
            .insert(Header {
                key: "weir.topic",
                value: Some(&*plan.topic),
            })
            .insert(Header {
                key: "weir.partition",
                value: Some(&plan.partition.to_string()),
            })
            .insert(Header {
                key: "weir.offset",
                value: Some(&offset.to_string()),
            });
        self.records.push((key.map(<[u8]>::to_vec), value.to_vec(), headers));
    }
}

fn dead_letter_topic_buffer(source_id: u64, connection: &KafkaConnection, topic: &str, ctx: &mut BuildCtx<'_>) -> Result<Rc<RefCell<DeadLetterTopicBuffer>>> {
    if let Some(b) = DEAD_LETTER_TOPICS.with(|m| m.borrow().get(&source_id).and_then(Weak::upgrade)) {
        return Ok(b);
    }
    let buffer = Rc::new(RefCell::new(DeadLetterTopicBuffer {
        records: Vec::new(),
        capacity_records: ctx.config.dead_letter_buffer_records,
    }));
    DEAD_LETTER_TOPICS.with(|m| m.borrow_mut().insert(source_id, Rc::downgrade(&buffer)));
    let config = connection.client_config(&[("enable.idempotence", "true"), ("linger.ms", "5")]);
    let producer = client::create_off_shard_cores(client::client_cpus(ctx.config), move || {
        config
            .create_with_context::<_, BaseProducer<DeliveryErrors>>(DeliveryErrors::default())
            .map_err(|e| kafka_error("creating the dead-letter producer", e))
    })?;
    // A committing flusher, so every checkpoint barrier waits until the dead letters before it
    // are acknowledged (it stores no committable).
    ctx.add_committing_flusher(
        "kafka-dead-letter-topic",
        Box::new(DeadLetterTopicWriter {
            topic: topic.to_string(),
            producer,
            buffer: buffer.clone(),
        }),
    );
    Ok(buffer)
}

/// Produces the buffered bad records to the dead-letter topic; waits for their delivery at
/// every checkpoint barrier and at the end (at-least-once, tied to checkpoints).
struct DeadLetterTopicWriter {
    topic: String,
    producer: BaseProducer<DeliveryErrors>,
    buffer: Rc<RefCell<DeadLetterTopicBuffer>>,
}

impl DeadLetterTopicWriter {
    async fn send_buffered(&mut self) -> Result<()> {
        let records = std::mem::take(&mut self.buffer.borrow_mut().records);
        for (key, value, headers) in records {
            let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&self.topic).payload(&value[..]).headers(headers);
            if let Some(k) = &key {
                record = record.key(&k[..]);
            }
            let mut record = Some(record);
            while let Some(r) = record.take() {
                match self.producer.send(r) {
                    Ok(()) => {}
                    Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                        self.producer.poll(Duration::ZERO);
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                        record = Some(r);
                    }
                    Err((e, _)) => return Err(kafka_error(&format!("producing to dead-letter topic {}", self.topic), e)),
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        self.check_delivered()
    }

    fn check_delivered(&self) -> Result<()> {
        match self.producer.context().first() {
            Some(e) => Err(WeirError::Other(format!("kafka: dead-letter topic {}: {e}", self.topic))),
            None => Ok(()),
        }
    }

    async fn wait_delivered(&mut self) -> Result<()> {
        self.send_buffered().await?;
        while self.producer.in_flight_count() > 0 {
            self.producer.poll(Duration::ZERO);
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        self.check_delivered()
    }
}

impl Flusher for DeadLetterTopicWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.send_buffered())
    }
    fn has_pending(&self) -> bool {
        !self.buffer.borrow().records.is_empty()
    }
    fn pre_commit(&mut self, _epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.wait_delivered().await?;
            Ok(None)
        })
    }
    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.wait_delivered())
    }
}
