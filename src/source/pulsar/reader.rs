//! The split reader of the Pulsar source: one partition, one connection and consumer, fed by
//! a fetch task into a bounded inbox; and the acknowledger that reports completed checkpoints'
//! positions to the broker.
//!
//! Invariants: the fetch task drops every message at or before the resume point (the restored
//! position, or after a reconnect the last fetched id), so nothing is handed out twice; it
//! grants permits only for messages the inbox accepted; an acknowledgement names a position
//! taken at a barrier whose checkpoint completed (or, without checkpoints, one handed out);
//! dropping the reader cancels the fetch task and closes the connection.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;

use super::client::Connection;
use super::proto::{self, kind};
use super::{MessageId, PartitionPlan, PulsarSourceOptions, StartCursor};
use crate::checkpoint::snapshot;
use crate::error::{Result, WeirError};
use crate::shard::{BuildCtx, Flusher};
use crate::source::file::BadLine;
use crate::source::kafka::{DecodeMessage, MessageView, StopHandle};
use crate::source::remote::{Backoff, BadRecords, Inbox};
use crate::source::{ReadStatus, SplitReader};

/// A fetched message.
struct Fetched {
    id: MessageId,
    key: Option<String>,
    /// `Ok(None)`: a null value; `Err`: the entry could not be split (e.g. compressed).
    value: std::result::Result<Option<Vec<u8>>, String>,
    publish_ms: i64,
}

/// Positions on their way to the broker (shared by the reader, the acknowledger flusher and
/// the fetch task).
#[derive(Default)]
struct Progress {
    /// The position taken at the latest barrier (set by `position()`).
    at_barrier: Option<MessageId>,
    /// Pre-committed: epoch → position at its barrier.
    by_epoch: BTreeMap<u64, MessageId>,
    /// To acknowledge (cumulatively) at the fetch task's next turn.
    to_ack: Option<MessageId>,
    acked: Option<MessageId>,
}

pub(super) fn build<T: 'static>(
    source_id: u64,
    options: &Arc<PulsarSourceOptions>,
    plan: PartitionPlan,
    decoder: Box<dyn DecodeMessage<T>>,
    stop: StopHandle,
    ctx: &mut BuildCtx<'_>,
) -> Result<Box<dyn SplitReader<T>>> {
    let progress = Rc::new(RefCell::new(Progress::default()));
    let checkpointing = ctx.checkpointing();
    if checkpointing {
        // A committing flusher: `commit` runs once a checkpoint completes. It stores nothing.
        ctx.add_committing_flusher(
            &format!("pulsar-ack {}", plan.describe()),
            Box::new(Acknowledger { progress: progress.clone() }),
        );
    }
    Ok(Box::new(PulsarSplitReader {
        describe: plan.describe(),
        topic: Arc::from(plan.topic.as_ref()),
        position: None,
        plan,
        options: options.clone(),
        inbox: Inbox::new(options.receiver_queue_size as usize),
        fetch: None,
        decoder,
        bad: BadRecords::new(source_id, ctx)?,
        stop,
        progress,
        checkpointing,
        scratch: Vec::new(),
        handed_out: 0,
    }))
}

struct PulsarSplitReader<T> {
    plan: PartitionPlan,
    describe: String,
    topic: Arc<str>,
    /// The last message handed out.
    position: Option<MessageId>,
    options: Arc<PulsarSourceOptions>,
    inbox: Rc<Inbox<Fetched>>,
    fetch: Option<glommio::Task<()>>,
    decoder: Box<dyn DecodeMessage<T>>,
    bad: BadRecords,
    stop: StopHandle,
    progress: Rc<RefCell<Progress>>,
    checkpointing: bool,
    scratch: Vec<Fetched>,
    handed_out: u64,
}

impl<T> PulsarSplitReader<T> {
    fn read_messages(&mut self, out: &mut Vec<T>, max: usize) -> Result<ReadStatus> {
        if self.stop.is_stopped() {
            return Ok(ReadStatus::Exhausted);
        }
        if self.bad.full() {
            return Ok(ReadStatus::More);
        }
        self.scratch.clear();
        let taken = self.inbox.take(max.max(1), &mut self.scratch);
        for m in self.scratch.drain(..) {
            self.handed_out += 1;
            let outcome = match &m.value {
                Ok(value) => {
                    let view = MessageView {
                        topic: &self.topic,
                        partition: self.plan.partition.max(0),
                        offset: m.id.entry as i64,
                        timestamp: m.publish_ms,
                        key: m.key.as_deref().map(str::as_bytes),
                        value: value.as_deref(),
                    };
                    self.decoder.decode(&view, out)
                }
                Err(e) => Err(BadLine {
                    field: None,
                    message: e.clone(),
                }),
            };
            if let Err(bad) = outcome {
                let place = format!("{}@{}", self.describe, m.id);
                let raw = m.value.as_ref().ok().and_then(|v| v.as_deref()).unwrap_or_default();
                if let Err(e) = self.bad.handle(&place, self.handed_out, &bad, raw) {
                    return Err(WeirError::Other(format!("pulsar: {e}")));
                }
            }
            self.position = Some(m.id);
        }
        if taken > 0 {
            if !self.checkpointing {
                self.progress.borrow_mut().to_ack = self.position;
            }
            return Ok(ReadStatus::More);
        }
        if let Some(e) = self.inbox.take_error() {
            return Err(e);
        }
        if self.inbox.has_ended() {
            return Ok(ReadStatus::Exhausted);
        }
        Ok(ReadStatus::Idle { retry_after_ms: 1 })
    }
}

impl<T> SplitReader<T> for PulsarSplitReader<T> {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.fetch.is_some() {
                return Ok(());
            }
            let nothing_left = match (&self.plan.stop, self.position) {
                (Some(None), _) => true,
                (Some(Some(stop)), Some(pos)) => (pos.ledger, pos.entry) >= (stop.ledger, stop.entry),
                _ => false,
            };
            if nothing_left {
                self.inbox.end();
                return Ok(());
            }
            let fetcher = Fetcher {
                options: self.options.clone(),
                plan: self.plan.clone(),
                inbox: self.inbox.clone(),
                progress: self.progress.clone(),
                resume_after: self.position,
                restored: self.position.is_some(),
            };
            self.fetch = Some(glommio::spawn_local(fetcher.run()));
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(async move { self.read_messages(out, max) })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn position(&self) -> Result<Vec<u8>> {
        self.progress.borrow_mut().at_barrier = self.position;
        Ok(snapshot::encode(&self.position))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        self.position = snapshot::decode(position, &format!("position of {}", self.describe))?;
        Ok(())
    }
}

/// Reports the positions of completed checkpoints to the broker (through the fetch task, which
/// owns the consumer's connection).
struct Acknowledger {
    progress: Rc<RefCell<Progress>>,
}

impl Flusher for Acknowledger {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn has_pending(&self) -> bool {
        false
    }
    fn pre_commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        let mut p = self.progress.borrow_mut();
        if let Some(at) = p.at_barrier.take() {
            p.by_epoch.insert(epoch, at);
        }
        Box::pin(async { Ok(None) })
    }
    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        let mut p = self.progress.borrow_mut();
        let done: Vec<u64> = p.by_epoch.range(..=epoch).map(|(e, _)| *e).collect();
        if let Some(last) = done.last() {
            p.to_ack = p.by_epoch.get(last).copied();
        }
        for e in done {
            p.by_epoch.remove(&e);
        }
        Box::pin(async { Ok(()) })
    }
}

/// The background half: one consumer on one partition (see the module docs of [`super`]).
struct Fetcher {
    options: Arc<PulsarSourceOptions>,
    plan: PartitionPlan,
    inbox: Rc<Inbox<Fetched>>,
    progress: Rc<RefCell<Progress>>,
    /// Messages at or before this id are dropped.
    resume_after: Option<MessageId>,
    /// Seek the subscription to `resume_after` (a restore; after a reconnect the broker
    /// redelivers everything unacknowledged, which the filter drops).
    restored: bool,
}

/// How long a read waits before the fetch task looks at pending acknowledgements.
const TURN: Duration = Duration::from_millis(50);
/// Silence after which the fetch task pings the broker, and after which it reconnects.
const PING_AFTER: Duration = Duration::from_secs(30);
const DEAD_AFTER: Duration = Duration::from_secs(90);

/// A consumer id unique across this process's sessions and (with high probability) across
/// processes: the protocol scopes ids to a connection, but some brokers (pulsar-lite) key
/// consumers by id within a subscription.
pub(super) fn fresh_consumer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let seed = (std::process::id() as u64) << 40 ^ (crate::time::now_ms() as u64) << 8 ^ n;
    // SplitMix64 finaliser, kept below 2^53 (JSON-safe in brokers' admin views).
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) >> 11
}

impl Fetcher {
    async fn run(mut self) {
        let mut backoff = Backoff::new(100, 5_000, 0x7075_6c73 ^ self.plan.partition as u64);
        let mut failures = 0u32;
        loop {
            match self.session().await {
                Ok(()) => return,
                Err(e) => {
                    failures += 1;
                    if failures > self.options.max_reconnects {
                        self.inbox.fail(WeirError::Other(format!(
                            "pulsar {}: {e} (after {} reconnects)",
                            self.plan.describe(),
                            self.options.max_reconnects
                        )));
                        return;
                    }
                    glommio::timer::sleep(Duration::from_millis(backoff.next_delay_ms())).await;
                }
            }
        }
    }

    /// One connection's life: subscribe, (seek,) flow, receive until the split ends (`Ok`) or
    /// the connection fails (`Err`: reconnect).
    async fn session(&mut self) -> std::result::Result<(), String> {
        let o = self.options.clone();
        let mut conn = Connection::open(self.plan.broker, o.timeout()).await?;
        let consumer = fresh_consumer_id();
        conn.subscribe(
            &self.plan.topic,
            &o.subscription,
            o.subscription_type.wire(),
            consumer,
            o.start == StartCursor::Earliest,
        )
        .await?;
        if self.restored {
            if let Some(id) = self.resume_after {
                conn.seek(consumer, id.wire(self.plan.partition)).await?;
                self.restored = false;
                // A broker may close the consumer after a seek: subscribe again if so.
                if let Some(f) = conn.read_frame(Duration::from_millis(20)).await? {
                    if f.command.r#type == kind::CLOSE_CONSUMER {
                        conn.subscribe(&self.plan.topic, &o.subscription, o.subscription_type.wire(), consumer, false)
                            .await?;
                    }
                }
            }
        }
        let permits = o.receiver_queue_size.max(1);
        conn.flow(consumer, permits).await?;
        let mut unreported = 0u32;
        let mut last_traffic = Instant::now();
        let mut pinged = false;
        loop {
            let to_ack = self.progress.borrow_mut().to_ack.take();
            if let Some(wire) = to_ack.and_then(|id| ack_id(id, self.plan.partition)) {
                conn.ack_cumulative(consumer, wire).await?;
                self.progress.borrow_mut().acked = to_ack;
            }
            let Some(frame) = conn.read_frame(TURN).await? else {
                let silent = last_traffic.elapsed();
                if silent > DEAD_AFTER {
                    return Err(format!("no traffic from {} for {silent:?}", conn.address));
                }
                if silent > PING_AFTER && !pinged {
                    conn.send(&proto::BaseCommand::of(kind::PING)).await?;
                    pinged = true;
                }
                continue;
            };
            last_traffic = Instant::now();
            pinged = false;
            match frame.command.r#type {
                kind::MESSAGE => {
                    let Some(m) = frame.command.message else { continue };
                    let Some(metadata) = frame.metadata else {
                        return Err("a MESSAGE without metadata".into());
                    };
                    let (ledger, entry) = (m.message_id.ledger_id, m.message_id.entry_id);
                    let publish_ms = metadata.publish_time.min(i64::MAX as u64) as i64;
                    let (mut messages, mut singles) = (Vec::new(), Vec::new());
                    let split = proto::entry_messages(&metadata, &frame.payload, &mut messages, &mut singles);
                    let mut batch: Vec<Fetched> = Vec::with_capacity(messages.len().max(1));
                    let count = match &split {
                        Ok(()) => {
                            for em in &messages {
                                batch.push(Fetched {
                                    id: MessageId {
                                        ledger,
                                        entry,
                                        batch: em.batch_index,
                                    },
                                    key: em.key.map(str::to_string),
                                    value: Ok(em.value.map(<[u8]>::to_vec)),
                                    publish_ms,
                                });
                            }
                            metadata.num_messages_in_batch.unwrap_or(1).max(1) as u32
                        }
                        Err(e) => {
                            batch.push(Fetched {
                                id: MessageId { ledger, entry, batch: -1 },
                                key: metadata.partition_key.clone(),
                                value: Err(e.clone()),
                                publish_ms,
                            });
                            metadata.num_messages_in_batch.unwrap_or(1).max(1) as u32
                        }
                    };
                    let resume = self.resume_after;
                    batch.retain(|f| resume.is_none_or(|r| f.id > r));
                    if let Some(last) = batch.last() {
                        self.resume_after = Some(last.id);
                    }
                    self.inbox.put(batch).await;
                    unreported += count;
                    if unreported >= permits / 2 {
                        conn.flow(consumer, unreported).await?;
                        unreported = 0;
                    }
                    if let Some(Some(stop)) = self.plan.stop {
                        if (ledger, entry) >= (stop.ledger, stop.entry) {
                            self.inbox.end();
                            let _ = self.final_ack(&mut conn, consumer).await;
                            return Ok(());
                        }
                    }
                }
                kind::CLOSE_CONSUMER => return Err("the broker closed the consumer".into()),
                kind::REACHED_END_OF_TOPIC => {
                    self.inbox.end();
                    return Ok(());
                }
                _ => {}
            }
        }
    }

    /// At the end of a bounded split: keep the connection until the job's final checkpoint
    /// acknowledges, briefly (progress information only).
    async fn final_ack(&mut self, conn: &mut Connection, consumer: u64) -> std::result::Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let to_ack = self.progress.borrow_mut().to_ack.take();
            if let Some(wire) = to_ack.and_then(|id| ack_id(id, self.plan.partition)) {
                conn.ack_cumulative(consumer, wire).await?;
                return Ok(());
            }
            let _ = conn.read_frame(TURN).await?;
        }
        Ok(())
    }
}

/// The id to acknowledge cumulatively for position `id`: the entry itself (a batch member
/// acknowledges its whole entry only once the reader passed it; weir acknowledges the
/// previous entry then — progress information may lag by one entry, never lead).
fn ack_id(id: MessageId, partition: i32) -> Option<proto::MessageIdData> {
    let (ledger, entry) = match (id.batch >= 0, id.entry) {
        (false, e) => (id.ledger, e),
        (true, 0) => return None,
        (true, e) => (id.ledger, e - 1),
    };
    Some(proto::MessageIdData {
        ledger_id: ledger,
        entry_id: entry,
        partition: Some(partition),
        batch_index: Some(-1),
        ..Default::default()
    })
}
