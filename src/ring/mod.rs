//! Cross-core rings: bounded channels between shards carrying batches and control envelopes.
//!
//! Every keyed exchange (`key_by`) is one *edge* of the job graph; an edge is a full mesh of
//! bounded single-producer/single-consumer channels, one per (sending shard, receiving shard)
//! pair, including a shard's channel to itself. A forward edge (used by `union`) only has the
//! `s → s` channels. Channels are glommio shared channels: the sending shard's task owns the
//! producer end, the receiving shard's task the consumer end.
//!
//! **In-flight bound** (Flink's buffer debloating): besides its capacity, every ring has a
//! [`RingCredit`]: the receiving task measures how fast it consumes (records per second of
//! its busy time) and allows each of its rings about `inflight_target_ms` worth of records in
//! flight; a sender over that bound waits before its next batch. Under backpressure the rings
//! then hold a fraction of a second of data instead of `ring_capacity_batches` batches, so a
//! checkpoint barrier queued behind that data passes in about the target time.
//!
//! Invariants:
//! - Capacity is bounded (`ring_capacity_batches`, and the credit's limit for data); a full ring
//!   makes the sender wait, and the wait is measured per ring ([`RingStats::full_ns`]): this is
//!   weir's backpressure figure.
//! - Only data envelopes count against the credit; a sender never waits for credit while it
//!   has nothing in flight on that ring, nor longer than `CREDIT_WAIT_MAX` per batch (so the
//!   bound can never stop a ring: at worst the capacity bounds it, as without debloating).
//! - Per channel, envelopes arrive in the order they were sent (FIFO), so watermark marks inside
//!   batches keep their exact per-record meaning across the ring.
//! - A producer sends [`Envelope::End`] exactly once, as its last envelope.

mod inputs;

pub use inputs::{InflightBound, RingInputs};

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use glommio::channels::shared_channel::{self, ConnectedSender, SharedReceiver, SharedSender};
use glommio::{GlommioError, ResourceType};

use crate::batch::Batch;
use crate::error::{Result, WeirError};
use crate::time::Timestamp;

/// What travels through a ring.
#[derive(Debug)]
pub enum Envelope<T> {
    /// Records with their timestamps and watermark marks.
    Data(Batch<T>),
    /// The sender's watermark advanced with no records to carry it.
    Watermark(Timestamp),
    /// Checkpoint barrier of epoch `n`.
    Barrier(u64),
    /// The sender's inputs are all idle: do not wait for its watermark until it sends again.
    Idle,
    /// The sender will send nothing more.
    End,
}

/// Counters of one ring as seen by its sender. Written only by the sending shard (relaxed
/// atomics so the control plane can read them without locks).
#[derive(Debug, Default)]
pub struct RingStats {
    pub batches_sent: AtomicU64,
    pub records_sent: AtomicU64,
    /// Nanoseconds the sender waited because the ring was full.
    pub full_ns: AtomicU64,
    /// Number of sends that found the ring full.
    pub full_events: AtomicU64,
}

/// A snapshot of [`RingStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingFigures {
    pub batches_sent: u64,
    pub records_sent: u64,
    pub full_ns: u64,
    pub full_events: u64,
}

impl RingStats {
    pub fn figures(&self) -> RingFigures {
        RingFigures {
            batches_sent: self.batches_sent.load(Ordering::Relaxed),
            records_sent: self.records_sent.load(Ordering::Relaxed),
            full_ns: self.full_ns.load(Ordering::Relaxed),
            full_events: self.full_events.load(Ordering::Relaxed),
        }
    }
}

/// The in-flight bound of one ring, shared by its sender and its receiver (see the module
/// docs).
#[derive(Debug)]
pub struct RingCredit {
    /// Records sent and not yet taken by the receiver.
    in_flight: AtomicU64,
    /// Records the sender may have in flight (`u64::MAX`: only the capacity bounds them).
    limit: AtomicU64,
}

impl Default for RingCredit {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            limit: AtomicU64::new(u64::MAX),
        }
    }
}

impl RingCredit {
    /// The sender must wait before sending more data.
    #[inline]
    fn exhausted(&self) -> bool {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        in_flight > 0 && in_flight >= self.limit.load(Ordering::Relaxed)
    }

    #[inline]
    fn sent(&self, records: u64) {
        self.in_flight.fetch_add(records, Ordering::AcqRel);
    }

    /// The receiver took `records` out of the ring.
    #[inline]
    pub(crate) fn taken(&self, records: u64) {
        self.in_flight.fetch_sub(records, Ordering::AcqRel);
    }

    /// Allow `records` in flight (set by the receiver).
    pub(crate) fn set_limit(&self, records: u64) {
        self.limit.store(records, Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }
}

/// How often a sender over its ring's credit looks again.
const CREDIT_POLL: std::time::Duration = std::time::Duration::from_micros(200);

/// The longest a sender waits for credit before it sends one batch anyway (a receiver that
/// consumes at least a batch per this time keeps the bound; a slower one sees the ring's
/// capacity as the bound, as without debloating).
const CREDIT_WAIT_MAX: std::time::Duration = std::time::Duration::from_millis(50);

/// The producer end of one ring, connected on the sending shard.
pub struct RingSender<T: Send + 'static> {
    inner: ConnectedSender<Envelope<T>>,
    stats: Arc<RingStats>,
    credit: Arc<RingCredit>,
    to_shard: usize,
}

impl<T: Send + 'static> RingSender<T> {
    /// Send one envelope; waits (and counts the wait) while the ring is full.
    pub async fn send(&self, envelope: Envelope<T>) -> Result<()> {
        let records = match &envelope {
            Envelope::Data(b) => b.len() as u64,
            _ => 0,
        };
        if records > 0 && self.credit.exhausted() {
            // Over the in-flight bound: wait for the receiver (backpressure like a full ring;
            // the receiver lives on another core, so look again every `CREDIT_POLL`), but never
            // longer than `CREDIT_WAIT_MAX`: the bound only trims in-flight data, so it must not
            // be able to stop a ring (the ring's capacity still bounds what is in flight).
            let started = Instant::now();
            self.stats.full_events.fetch_add(1, Ordering::Relaxed);
            while self.credit.exhausted() && started.elapsed() < CREDIT_WAIT_MAX {
                glommio::timer::sleep(CREDIT_POLL).await;
            }
            self.stats.full_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
        // Counted before the send: the receiver may take the batch at once.
        self.credit.sent(records);
        let envelope = match self.inner.try_send(envelope) {
            Ok(()) => None,
            Err(GlommioError::WouldBlock(ResourceType::Channel(e))) => Some(e),
            Err(_) => return Err(WeirError::Other(format!("ring to shard {} closed: the receiving shard stopped", self.to_shard))),
        };
        if let Some(envelope) = envelope {
            let started = Instant::now();
            self.stats.full_events.fetch_add(1, Ordering::Relaxed);
            let sent = self.inner.send(envelope).await;
            self.stats.full_ns.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
            if sent.is_err() {
                return Err(WeirError::Other(format!("ring to shard {} closed: the receiving shard stopped", self.to_shard)));
            }
        }
        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.stats.records_sent.fetch_add(records, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> &Arc<RingStats> {
        &self.stats
    }
}

/// How an edge routes records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EdgeKind {
    /// By key group: a full mesh.
    Hash,
    /// Records stay on their shard: only `s → s` channels.
    Forward,
}

/// One shard's ends of one edge, type-erased until the typed segment code takes them.
pub struct ShardEnds {
    /// `Vec<(to_shard, SharedSender<Envelope<T>>, Arc<RingCredit>)>`
    pub senders: Option<Box<dyn Any + Send>>,
    /// `Vec<(from_shard, SharedReceiver<Envelope<T>>, Arc<RingCredit>)>`
    pub receivers: Option<Box<dyn Any + Send>>,
    /// Stats of the rings this shard sends into, by destination.
    pub stats: Vec<(usize, Arc<RingStats>)>,
}

type SenderList<T> = Vec<(usize, SharedSender<Envelope<T>>, Arc<RingCredit>)>;
type ReceiverList<T> = Vec<(usize, SharedReceiver<Envelope<T>>, Arc<RingCredit>)>;

/// Build every channel of one edge; element `s` of the result belongs to shard `s`.
pub fn build_edge<T: Send + 'static>(kind: EdgeKind, shards: usize, capacity: usize) -> Vec<ShardEnds> {
    assert!(shards >= 1 && capacity >= 1);
    let mut senders: Vec<SenderList<T>> = (0..shards).map(|_| Vec::new()).collect();
    let mut receivers: Vec<ReceiverList<T>> = (0..shards).map(|_| Vec::new()).collect();
    let mut stats: Vec<Vec<(usize, Arc<RingStats>)>> = (0..shards).map(|_| Vec::new()).collect();
    for from in 0..shards {
        for (to, inbox) in receivers.iter_mut().enumerate() {
            if kind == EdgeKind::Forward && from != to {
                continue;
            }
            let (tx, rx) = shared_channel::new_bounded::<Envelope<T>>(capacity);
            let credit = Arc::new(RingCredit::default());
            senders[from].push((to, tx, credit.clone()));
            inbox.push((from, rx, credit));
            stats[from].push((to, Arc::new(RingStats::default())));
        }
    }
    senders
        .into_iter()
        .zip(receivers)
        .zip(stats)
        .map(|((s, r), st)| ShardEnds {
            senders: Some(Box::new(s)),
            receivers: Some(Box::new(r)),
            stats: st,
        })
        .collect()
}

/// Connect this shard's producer ends of an edge. Result is indexed by destination shard
/// (`None` where the edge has no channel, e.g. forward edges).
pub async fn connect_senders<T: Send + 'static>(ends: &mut ShardEnds, shards: usize) -> Vec<Option<RingSender<T>>> {
    let list = ends
        .senders
        .take()
        .expect("edge senders taken twice")
        .downcast::<SenderList<T>>()
        .expect("edge sender type");
    let mut out: Vec<Option<RingSender<T>>> = (0..shards).map(|_| None).collect();
    for (to, tx, credit) in *list {
        let stats = ends.stats.iter().find(|(d, _)| *d == to).map(|(_, s)| s.clone()).expect("ring stats");
        out[to] = Some(RingSender {
            inner: tx.connect().await,
            stats,
            credit,
            to_shard: to,
        });
    }
    out
}

/// Connect this shard's consumer ends of an edge.
pub async fn connect_receivers<T: Send + 'static>(ends: &mut ShardEnds) -> RingInputs<T> {
    let list = ends
        .receivers
        .take()
        .expect("edge receivers taken twice")
        .downcast::<ReceiverList<T>>()
        .expect("edge receiver type");
    let mut channels = Vec::with_capacity(list.len());
    for (from, rx, credit) in *list {
        channels.push((from, rx.connect().await, credit));
    }
    RingInputs::new(channels)
}
