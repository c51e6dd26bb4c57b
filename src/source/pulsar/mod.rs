//! The Pulsar source (Flink's `pulsar` connector as a source): topics → partitions → splits,
//! read through a durable subscription with a hand-written client of Pulsar's binary protocol
//! ([`client`], [`proto`]); CSV / JSON / raw values through the Kafka source's decoders.
//!
//! Planning (on the driver, when the source is created): each topic's partition count is asked
//! from the broker; a partitioned topic contributes its partitions `<topic>-partition-<i>`, a
//! non-partitioned one itself; splits are sorted by (topic, partition), so split `i` is read by
//! shard `i % shards` on every run. Each split's broker is looked up. In bounded mode
//! (`source.stop.at-message-id = 'latest'`) each partition's last message id is captured now:
//! the split ends once it handed that message out (or at once if there is nothing to read).
//!
//! Reading (on the shards): every split has its own connection and consumer (Exclusive or
//! Failover subscription type: one reader per partition, messages in order), fed by a fetch task
//! ([`reader`]) that grants the broker `receiver_queue_size` permits and renews them as the job
//! consumes, so at most that many messages per split wait in memory. Batched entries are split
//! into their messages (ids `ledger:entry:batch-index`); compressed entries are bad records.
//! A dropped connection is reopened and the consumer resumes after the last fetched message.
//!
//! Start: a new subscription starts at `source.start.message-id` (`earliest` / `latest`); an
//! existing subscription's cursor (its acknowledged progress) wins when there is no checkpoint.
//!
//! Checkpoints: a split's position is the id of the last message handed to the job. On restore
//! the consumer seeks the subscription to that id and drops every message at or before it, so
//! the job resumes right after it whether the broker's seek is inclusive or not. Progress is
//! acknowledged to the broker (cumulative ack) only after a checkpoint completes, with that
//! checkpoint's positions — information for operators and other tools, never read back by a
//! restore. Without checkpoints, read messages are acknowledged as they are handed out.
//!
//! Event time: any column (SQL `WATERMARK FOR`), or the message's publish time (the decoder's
//! message timestamp; SQL `METADATA FROM 'timestamp'` or `'publish_time'`). Per-partition
//! watermarks and idleness come from the segment loop like every source's.
//!
//! Bad records follow `EngineConfig::on_bad_record` (fail naming topic and message id; skip and
//! count; dead-letter files with `file` = `topic@ledger:entry:batch`).
//!
//! Invariants: a split hands out each message id at most once per run, in increasing id order;
//! the position never runs ahead of what the job received; acknowledgements never run ahead of
//! a completed checkpoint (with checkpoints on); no message content makes the source panic.

pub mod client;
pub mod proto;
mod reader;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::kafka::{decode, DecoderFactory, StopHandle};
use super::{Source, SplitReader};
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;

/// Flink's `source.subscription-type` values weir supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubscriptionType {
    Exclusive,
    Failover,
}

impl SubscriptionType {
    fn wire(self) -> i32 {
        match self {
            SubscriptionType::Exclusive => 0,
            SubscriptionType::Failover => 2,
        }
    }
}

/// Where a new subscription starts (Flink's `source.start.message-id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartCursor {
    Earliest,
    Latest,
}

/// What the source reads and how.
#[derive(Clone, Debug)]
pub struct PulsarSourceOptions {
    /// `pulsar://host:port`.
    pub service_url: String,
    /// Topic names (short names are in `public/default`).
    pub topics: Vec<String>,
    pub subscription: String,
    pub subscription_type: SubscriptionType,
    pub start: StartCursor,
    /// End each split at its partition's last message at planning time.
    pub bounded: bool,
    /// Permits granted to the broker per split (messages buffered at most).
    pub receiver_queue_size: u32,
    /// Timeout of one request (connect, subscribe, seek, lookup).
    pub request_timeout_ms: u64,
    /// Reconnect attempts in a row before the job fails.
    pub max_reconnects: u32,
}

impl PulsarSourceOptions {
    pub fn new(service_url: impl Into<String>, topics: Vec<String>, subscription: impl Into<String>) -> Self {
        Self {
            service_url: service_url.into(),
            topics,
            subscription: subscription.into(),
            subscription_type: SubscriptionType::Exclusive,
            start: StartCursor::Earliest,
            bounded: false,
            receiver_queue_size: 1000,
            request_timeout_ms: 10_000,
            max_reconnects: 10,
        }
    }
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }
    pub fn start(mut self, start: StartCursor) -> Self {
        self.start = start;
        self
    }
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }
}

/// A message id within one partition, ordered as the broker delivers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId {
    pub ledger: u64,
    pub entry: u64,
    /// -1 for a non-batched message.
    pub batch: i32,
}

impl MessageId {
    fn wire(self, partition: i32) -> proto::MessageIdData {
        proto::MessageIdData {
            ledger_id: self.ledger,
            entry_id: self.entry,
            partition: Some(partition),
            batch_index: Some(self.batch),
            ..Default::default()
        }
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.ledger, self.entry, self.batch)
    }
}

/// One partition to read: a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    /// The partition's own topic name (`...-partition-<i>`, or the topic if not partitioned).
    pub topic: Arc<str>,
    /// The partition index (-1: a non-partitioned topic).
    pub partition: i32,
    /// The broker serving it.
    pub broker: SocketAddr,
    /// Bounded mode: the last message to read (`None` inside: nothing to read).
    pub stop: Option<Option<MessageId>>,
}

impl PartitionPlan {
    pub fn describe(&self) -> String {
        self.topic.to_string()
    }
}

static NEXT_SOURCE_ID: AtomicU64 = AtomicU64::new(0);

/// Reads Pulsar topics (see the module docs).
pub struct PulsarSource<T> {
    options: Arc<PulsarSourceOptions>,
    partitions: Arc<Vec<PartitionPlan>>,
    decoder: DecoderFactory<T>,
    stop: StopHandle,
    id: u64,
}

impl<T: DeserializeOwned + 'static> PulsarSource<T> {
    pub fn json(options: PulsarSourceOptions) -> Result<Self> {
        Self::new(options, decode::json::<T>())
    }
    pub fn csv(options: PulsarSourceOptions) -> Result<Self> {
        Self::new(options, decode::csv::<T>(b','))
    }
}

impl PulsarSource<String> {
    pub fn raw(options: PulsarSourceOptions) -> Result<Self> {
        Self::new(options, decode::raw())
    }
}

impl<T: 'static> PulsarSource<T> {
    /// A source with any decoder; plans the partitions now (see the module docs).
    pub fn new(options: PulsarSourceOptions, decoder: DecoderFactory<T>) -> Result<Self> {
        let o = options.clone();
        let partitions = client::blocking(move || async move { plan(&o).await })?.map_err(|e| WeirError::Config(format!("pulsar source: {e}")))?;
        Ok(Self {
            options: Arc::new(options),
            partitions: Arc::new(partitions),
            decoder,
            stop: StopHandle::default(),
            id: NEXT_SOURCE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    pub fn partitions(&self) -> &[PartitionPlan] {
        &self.partitions
    }

    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }
}

impl<T: Send + 'static> Source<T> for PulsarSource<T> {
    fn name(&self) -> String {
        "pulsar".into()
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.partitions.len())
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        let plan = self
            .partitions
            .get(split)
            .cloned()
            .ok_or_else(|| WeirError::Other(format!("pulsar source: split {split} of {} does not exist", self.partitions.len())))?;
        reader::build(self.id | 1 << 61, &self.options, plan, (self.decoder)(), self.stop.clone(), ctx)
    }
}

/// Resolve topics → partitions → brokers (and stop ids in bounded mode).
async fn plan(o: &PulsarSourceOptions) -> std::result::Result<Vec<PartitionPlan>, String> {
    let service = client::resolve_service_url(&o.service_url)?;
    let mut conn = client::Connection::open(service, o.timeout()).await?;
    let mut plans = Vec::new();
    for t in &o.topics {
        let topic = client::full_topic_name(t);
        let n = conn.partitions(&topic).await?;
        let names: Vec<(String, i32)> = if n == 0 {
            vec![(topic.clone(), -1)]
        } else {
            (0..n as i32).map(|i| (format!("{topic}-partition-{i}"), i)).collect()
        };
        for (name, partition) in names {
            let broker = match conn.lookup(&name).await? {
                Some(url) => client::resolve_service_url(&url)?,
                None => service,
            };
            plans.push(PartitionPlan {
                topic: Arc::from(name.as_str()),
                partition,
                broker,
                stop: None,
            });
        }
    }
    plans.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    plans.dedup_by(|a, b| a.topic == b.topic);
    if o.bounded {
        for p in plans.iter_mut() {
            p.stop = Some(last_message_id(o, p).await?.as_ref().and_then(stop_id));
        }
    }
    Ok(plans)
}

/// The last message id of a partition, asked through the job's own subscription (created now
/// if new, at its start cursor). A consumer of a killed earlier run may still hold the
/// (Exclusive) subscription for a moment: retried with backoff for up to ~15 s.
/// `None`: the broker says the partition has no messages (pulsar-lite answers an error then).
async fn last_message_id(o: &PulsarSourceOptions, p: &PartitionPlan) -> std::result::Result<Option<proto::CommandGetLastMessageIdResponse>, String> {
    let mut backoff = crate::source::remote::Backoff::new(50, 1_000, 0x706c_616e);
    let mut attempt = 0;
    loop {
        let result = async {
            let mut c = client::Connection::open(p.broker, o.timeout()).await?;
            let consumer = reader::fresh_consumer_id();
            c.subscribe(
                &p.topic,
                &o.subscription,
                o.subscription_type.wire(),
                consumer,
                o.start == StartCursor::Earliest,
            )
            .await?;
            let last = match c.last_message_id(consumer).await {
                Ok(last) => Some(last),
                Err(e) if e.contains("no messages") => None,
                Err(e) => return Err(format!("last message id of {}: {e}", p.topic)),
            };
            let _ = c.close_consumer(consumer).await;
            Ok::<_, String>(last)
        }
        .await;
        match result {
            Ok(last) => return Ok(last),
            Err(e) if attempt >= 20 => return Err(e),
            Err(_) => {
                attempt += 1;
                glommio::timer::sleep(Duration::from_millis(backoff.next_delay_ms())).await;
            }
        }
    }
}

/// The stop id from a get-last-message-id answer (`None`: the partition is empty, or the
/// subscription already acknowledged everything).
fn stop_id(last: &proto::CommandGetLastMessageIdResponse) -> Option<MessageId> {
    let l = &last.last_message_id;
    // An empty partition answers entry -1 (as an unsigned number) or ledger -1.
    if l.entry_id > i64::MAX as u64 || l.ledger_id > i64::MAX as u64 {
        return None;
    }
    let id = MessageId {
        ledger: l.ledger_id,
        entry: l.entry_id,
        batch: l.batch_index.unwrap_or(-1),
    };
    if let Some(m) = &last.consumer_mark_delete_position {
        if m.entry_id <= i64::MAX as u64 && m.ledger_id <= i64::MAX as u64 && (m.ledger_id, m.entry_id) >= (id.ledger, id.entry) {
            return None;
        }
    }
    Some(id)
}
