//! The Kafka source (Flink's `kafka` connector as a source): topics or a topic pattern, one
//! split per partition, CSV / JSON / raw values, optionally with the message metadata.
//!
//! Planning (on the driver, when the source is created): the topic list or pattern is resolved
//! against the cluster's metadata; every partition becomes a split, sorted by (topic,
//! partition), so split `i` is read by shard `i % shards` on every run. The start offset of
//! each partition is resolved here too (earliest, latest, the group's committed offsets,
//! a timestamp, or given offsets), and in bounded mode the stop offset: the partition's high
//! watermark at that moment. Every shard therefore reads exactly the same offsets.
//!
//! Reading (on the shards): each shard has one consumer per source (created off the shard's
//! core, see [`client`]); each split polls its own partition queue without blocking. An empty
//! queue makes the split report `Idle`, so per-partition watermarks and idleness come from the
//! segment loop's per-split machinery: an empty or idle partition is marked idle after the
//! watermark strategy's idle timeout and stops holding the watermark back. A split's
//! [`SplitReader::describe`] is `topic[partition]`.
//!
//! Checkpoints: a split's position is the partition's next offset (postcard `i64`); `seek`
//! starts there. Offsets are committed back to the consumer group (when a group is given) only
//! as progress information: librdkafka's auto-commit of offsets the reader stored after handing
//! records out; restores never read them.
//!
//! Bad records (the value does not parse, a field is missing, ...) follow
//! `EngineConfig::on_bad_record`: fail (error naming topic, partition, offset and field), skip
//! and count, or dead-letter: to a dead-letter topic when [`KafkaSourceOptions::dead_letter_topic`]
//! is set (the raw value and key, with headers `weir.error`, `weir.field`, `weir.topic`,
//! `weir.partition`, `weir.offset`), else to the file source's `dead-letter-<shard>.jsonl`.
//!
//! Scale-out ([`KafkaSourceOptions::slot`]): a process running slot `i` of `S` keeps only the
//! splits `j` (in the order above) with `j % S == i`, renumbered from 0.
//!
//! Invariants: a split hands out each offset at most once per run, in order; in bounded mode it
//! ends once its position reaches the stop offset (transaction markers included), never before;
//! no message content makes the source panic.

pub mod client;
pub mod decode;
mod reader;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::de::DeserializeOwned;

use self::client::kafka_error;
pub use self::client::KafkaConnection;
pub use self::decode::{DecodeMessage, DecoderFactory, KafkaRecord, MessageView};
use super::{Source, SplitReader};
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;

/// Which topics to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topics {
    /// These topics (each must exist).
    Names(Vec<String>),
    /// Every topic whose whole name matches this regular expression, when the source is
    /// created (Flink's `topic-pattern`; topics created later are not picked up).
    Pattern(String),
}

/// Where each partition starts (Flink's `scan.startup.mode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupMode {
    /// The first offset still in the log (`earliest-offset`).
    Earliest,
    /// The end of the log when the source is created (`latest-offset`).
    Latest,
    /// The consumer group's committed offsets (`group-offsets`); partitions without one follow
    /// the `auto.offset.reset` property (`earliest` by default, `latest`, or `none`: fail).
    GroupOffsets,
    /// The first message whose timestamp is at or after this (ms since the epoch; `timestamp`).
    Timestamp(i64),
    /// Given offsets per (topic, partition); others start at the earliest offset
    /// (`specific-offsets`).
    SpecificOffsets(BTreeMap<(String, i32), i64>),
}

/// What the source reads and how.
#[derive(Clone, Debug)]
pub struct KafkaSourceOptions {
    pub connection: KafkaConnection,
    pub topics: Topics,
    /// `group.id`: needed for [`StartupMode::GroupOffsets`]; when set, read offsets are
    /// committed to the group as progress information.
    pub group_id: Option<String>,
    pub startup: StartupMode,
    /// Stop at the high watermarks captured when the source is created (for tests and batch
    /// jobs); otherwise read forever.
    pub bounded: bool,
    /// Dead-letter topic for bad records under the `dead-letter` policy (else the dead-letter
    /// files).
    pub dead_letter_topic: Option<String>,
    /// How long an empty partition waits before it is polled again (ms).
    pub poll_idle_ms: u64,
    /// Timeout of the metadata and offset look-ups made while planning (ms).
    pub request_timeout_ms: u64,
    /// Scale-out: `(slot, slots)` — read only the splits `j` with `j % slots == slot` (see
    /// [`crate::scaleout`]). The group is then the slots' membership group: read offsets are
    /// not committed to it.
    pub slot: Option<(usize, usize)>,
}

impl KafkaSourceOptions {
    /// Read `topic` from the earliest offset, unbounded.
    pub fn new(bootstrap_servers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            connection: KafkaConnection::new(bootstrap_servers),
            topics: Topics::Names(vec![topic.into()]),
            group_id: None,
            startup: StartupMode::Earliest,
            bounded: false,
            dead_letter_topic: None,
            poll_idle_ms: 1,
            request_timeout_ms: 10_000,
            slot: None,
        }
    }
    pub fn topics(mut self, topics: Topics) -> Self {
        self.topics = topics;
        self
    }
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }
    pub fn startup(mut self, startup: StartupMode) -> Self {
        self.startup = startup;
        self
    }
    pub fn bounded(mut self, bounded: bool) -> Self {
        self.bounded = bounded;
        self
    }
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }
    /// A librdkafka property (`properties.<key>` in Flink SQL).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.connection.properties.insert(key.into(), value.into());
        self
    }
}

/// One partition to read: a split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionPlan {
    pub topic: Arc<str>,
    pub partition: i32,
    /// First offset to read.
    pub start: i64,
    /// Bounded mode: the offset to stop at (exclusive).
    pub stop: Option<i64>,
    /// Timestamp start: skip messages before the first one at or after this timestamp (the
    /// broker's timestamp index may answer an earlier offset).
    pub skip_before_timestamp: Option<i64>,
}

impl PartitionPlan {
    pub fn describe(&self) -> String {
        format!("{}[{}]", self.topic, self.partition)
    }
}

static NEXT_SOURCE_ID: AtomicU64 = AtomicU64::new(0);

/// Stops an unbounded Kafka source: its splits end at their next read (the job then drains
/// and finishes as a bounded one would, firing every window). For tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Reads Kafka partitions (see the module docs).
pub struct KafkaSource<T> {
    options: Arc<KafkaSourceOptions>,
    partitions: Arc<Vec<PartitionPlan>>,
    decoder: DecoderFactory<T>,
    stop: StopHandle,
    id: u64,
}

impl<T: DeserializeOwned + 'static> KafkaSource<T> {
    /// JSON values (one JSON document per message) into `T`.
    pub fn json(options: KafkaSourceOptions) -> Result<Self> {
        Self::new(options, decode::json::<T>())
    }

    /// CSV values (one CSV line per message, `,` delimited) into `T`.
    pub fn csv(options: KafkaSourceOptions) -> Result<Self> {
        Self::new(options, decode::csv::<T>(b','))
    }
}

impl KafkaSource<String> {
    /// Raw values as UTF-8 text.
    pub fn raw(options: KafkaSourceOptions) -> Result<Self> {
        Self::new(options, decode::raw())
    }
}

impl<T: 'static> KafkaSource<T> {
    /// A source with any decoder (SQL rows use their own).
    pub fn new(options: KafkaSourceOptions, decoder: DecoderFactory<T>) -> Result<Self> {
        let mut partitions = plan_partitions(&options)?;
        if let Some((slot, slots)) = options.slot {
            let mut index = 0;
            partitions.retain(|_| {
                index += 1;
                crate::scaleout::owns(index - 1, slot, slots)
            });
        }
        Ok(Self {
            options: Arc::new(options),
            partitions: Arc::new(partitions),
            decoder,
            stop: StopHandle::default(),
            id: NEXT_SOURCE_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// Records with the message's key, topic, partition, offset and timestamp.
    pub fn with_metadata(self) -> KafkaSource<KafkaRecord<T>> {
        KafkaSource {
            options: self.options,
            partitions: self.partitions,
            decoder: decode::with_metadata(self.decoder),
            stop: self.stop,
            id: self.id,
        }
    }

    /// The partitions (splits) in split order, with their resolved offsets.
    pub fn partitions(&self) -> &[PartitionPlan] {
        &self.partitions
    }

    /// A handle that ends the source's splits (see [`StopHandle`]).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }
}

impl<T: Send + 'static> Source<T> for KafkaSource<T> {
    fn name(&self) -> String {
        "kafka".into()
    }

    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.partitions.len())
    }

    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        let plan = self
            .partitions
            .get(split)
            .cloned()
            .ok_or_else(|| WeirError::Other(format!("kafka source: split {split} of {} does not exist", self.partitions.len())))?;
        reader::build(self.id, &self.options, plan, (self.decoder)(), self.stop.clone(), ctx)
    }
}

/// A planning-time consumer (on the driver thread, which is not pinned).
fn planning_consumer(options: &KafkaSourceOptions) -> Result<BaseConsumer> {
    let mut config = options.connection.client_config(&[("enable.auto.commit", "false")]);
    if let Some(g) = &options.group_id {
        config.set("group.id", g);
    }
    let cpus = client::client_cpus(&crate::config::EngineConfig {
        pin_cores: false,
        ..Default::default()
    });
    client::create_off_shard_cores(cpus, move || config.create::<BaseConsumer>().map_err(|e| kafka_error("creating a consumer", e)))
}

/// Resolve topics, partitions and offsets (see the module docs).
fn plan_partitions(options: &KafkaSourceOptions) -> Result<Vec<PartitionPlan>> {
    let consumer = planning_consumer(options)?;
    let timeout = Duration::from_millis(options.request_timeout_ms);
    let metadata = consumer
        .fetch_metadata(None, timeout)
        .map_err(|e| kafka_error(&format!("reading metadata from {}", options.connection.bootstrap_servers), e))?;
    let mut found: BTreeMap<String, i32> = BTreeMap::new();
    for t in metadata.topics() {
        if t.error().is_none() {
            found.insert(t.name().to_string(), t.partitions().len() as i32);
        }
    }
    let topics: Vec<(String, i32)> = match &options.topics {
        Topics::Names(names) => {
            let mut v = Vec::new();
            for n in names {
                match found.get(n) {
                    Some(p) => v.push((n.clone(), *p)),
                    None => {
                        return Err(WeirError::Config(format!(
                            "kafka source: topic `{n}` does not exist on {}",
                            options.connection.bootstrap_servers
                        )))
                    }
                }
            }
            v
        }
        Topics::Pattern(p) => {
            let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| WeirError::Config(format!("kafka source: topic-pattern `{p}`: {e}")))?;
            let v: Vec<(String, i32)> = found.iter().filter(|(n, _)| re.is_match(n)).map(|(n, p)| (n.clone(), *p)).collect();
            if v.is_empty() {
                return Err(WeirError::Config(format!("kafka source: no topic matches topic-pattern `{p}`")));
            }
            v
        }
    };
    let mut plans = Vec::new();
    for (topic, count) in &topics {
        for partition in 0..*count {
            // Earliest is offset 0, not the listed earliest offset: tansu's ListOffsets answers
            // are unreliable (its earliest can lie past the first records after transactional
            // batches); a broker resets an offset below its log start to the true earliest
            // (`auto.offset.reset = earliest`).
            plans.push(PartitionPlan {
                topic: Arc::from(topic.as_str()),
                partition,
                start: 0,
                stop: None,
                skip_before_timestamp: None,
            });
        }
    }
    plans.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    let ends = end_offsets(options, &plans, timeout)?;
    for (p, end) in plans.iter_mut().zip(&ends) {
        p.stop = options.bounded.then_some(*end);
    }
    resolve_starts(options, &consumer, &mut plans, &ends, timeout)?;
    Ok(plans)
}

/// The end offset (high watermark) of each partition, by fetching to its end.
///
/// The listed-offsets answer is not used alone: the tansu broker answers the base offset of the
/// last record batch + 1 there, while its fetch responses carry the true high watermark. So
/// each non-empty partition is read from just before that answer until the end-of-partition
/// event, and the consumer's fetch position then is the end. Costs one small fetch per
/// partition at planning; with Kafka the answer is the same.
fn end_offsets(options: &KafkaSourceOptions, plans: &[PartitionPlan], timeout: Duration) -> Result<Vec<i64>> {
    // librdkafka's assign needs a group id; this consumer never joins nor commits.
    let mut config = options
        .connection
        .client_config(&[("enable.auto.commit", "false"), ("enable.partition.eof", "true"), ("group.id", "weir-planner")]);
    config.set("isolation.level", "read_uncommitted");
    let consumer: BaseConsumer = client::create_off_shard_cores(Vec::new(), move || config.create().map_err(|e| kafka_error("creating a consumer", e)))?;
    let mut ends = Vec::with_capacity(plans.len());
    for p in plans {
        let (_, high) = consumer
            .fetch_watermarks(&p.topic, p.partition, timeout)
            .map_err(|e| kafka_error(&format!("reading the offsets of {}", p.describe()), e))?;
        ends.push(high);
    }
    // One topic at a time: the end-of-partition event names the partition only.
    let mut topics: Vec<&Arc<str>> = plans.iter().map(|p| &p.topic).collect();
    topics.dedup();
    for topic in topics {
        let mut tpl = TopicPartitionList::new();
        let mut open = std::collections::BTreeSet::new();
        for (i, p) in plans.iter().enumerate().filter(|(_, p)| &p.topic == topic) {
            if ends[i] > p.start {
                tpl.add_partition_offset(topic, p.partition, Offset::Offset((ends[i] - 1).max(p.start)))
                    .map_err(|e| kafka_error("building an assignment", e))?;
                open.insert(p.partition);
            }
        }
        if open.is_empty() {
            continue;
        }
        consumer.assign(&tpl).map_err(|e| kafka_error("assigning partitions", e))?;
        let deadline = std::time::Instant::now() + timeout;
        while !open.is_empty() {
            if std::time::Instant::now() > deadline {
                return Err(WeirError::Other(format!("kafka: reading to the end of {topic} {open:?} timed out")));
            }
            match consumer.poll(Duration::from_millis(50)) {
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) if open.remove(&partition) => {
                    let positions = consumer.position().map_err(|e| kafka_error("reading positions", e))?;
                    if let Some(Offset::Offset(o)) = positions.find_partition(topic, partition).map(|e| e.offset()) {
                        if let Some(i) = plans.iter().position(|p| &p.topic == topic && p.partition == partition) {
                            ends[i] = ends[i].max(o);
                        }
                    }
                }
                Some(Err(e)) if e.rdkafka_error_code().is_some_and(|c| c == rdkafka::types::RDKafkaErrorCode::Fatal) => {
                    return Err(kafka_error("reading to the end of the partitions", e))
                }
                _ => {}
            }
        }
    }
    Ok(ends)
}

/// Set each plan's start offset by the startup mode (plans start at their low watermark).
fn resolve_starts(options: &KafkaSourceOptions, consumer: &BaseConsumer, plans: &mut [PartitionPlan], ends: &[i64], timeout: Duration) -> Result<()> {
    match &options.startup {
        StartupMode::Earliest => {}
        StartupMode::Latest => {
            for (p, end) in plans.iter_mut().zip(ends) {
                p.start = *end;
            }
        }
        StartupMode::SpecificOffsets(offsets) => {
            for p in plans.iter_mut() {
                if let Some(o) = offsets.get(&(p.topic.to_string(), p.partition)) {
                    p.start = (*o).max(p.start);
                }
            }
        }
        StartupMode::GroupOffsets => {
            let Some(group) = &options.group_id else {
                return Err(WeirError::Config(
                    "kafka source: scan.startup.mode = group-offsets needs properties.group.id".into(),
                ));
            };
            let mut tpl = TopicPartitionList::new();
            for p in plans.iter() {
                tpl.add_partition(&p.topic, p.partition);
            }
            let committed = consumer
                .committed_offsets(tpl, timeout)
                .map_err(|e| kafka_error(&format!("reading the committed offsets of group `{group}`"), e))?;
            let reset = options.connection.properties.get("auto.offset.reset").map(String::as_str).unwrap_or("earliest");
            for (p, end) in plans.iter_mut().zip(ends) {
                let offset = committed.find_partition(&p.topic, p.partition).map(|e| e.offset());
                match offset {
                    Some(Offset::Offset(o)) if o >= 0 => p.start = o.max(p.start),
                    _ => match reset {
                        "earliest" | "smallest" | "beginning" => {}
                        "latest" | "largest" | "end" => p.start = *end,
                        _ => {
                            return Err(WeirError::Config(format!(
                                "kafka source: group `{group}` has no committed offset for {} and auto.offset.reset = {reset}",
                                p.describe()
                            )))
                        }
                    },
                }
            }
        }
        StartupMode::Timestamp(ts) => {
            let mut tpl = TopicPartitionList::new();
            for p in plans.iter() {
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(*ts))
                    .map_err(|e| kafka_error("building an offsets-for-times request", e))?;
            }
            let found = consumer
                .offsets_for_times(tpl, timeout)
                .map_err(|e| kafka_error(&format!("looking up offsets for timestamp {ts}"), e))?;
            for (p, end) in plans.iter_mut().zip(ends) {
                match found.find_partition(&p.topic, p.partition).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => p.start = o.max(p.start),
                    // No message at or after the timestamp: start at the end.
                    _ => p.start = *end,
                }
                p.skip_before_timestamp = Some(*ts);
            }
        }
    }
    for p in plans.iter_mut() {
        if let Some(stop) = p.stop {
            p.start = p.start.min(stop);
        }
    }
    Ok(())
}
