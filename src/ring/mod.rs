//! Cross-core rings: bounded channels between shards carrying batches and control envelopes.
//!
//! Every keyed exchange (`key_by`) is one *edge* of the job graph; an edge is a full mesh of
//! bounded single-producer/single-consumer channels, one per (sending shard, receiving shard)
//! pair, including a shard's channel to itself. A forward edge (used by `union`) only has the
//! `s → s` channels. Channels are glommio shared channels: the sending shard's task owns the
//! producer end, the receiving shard's task the consumer end.
//!
//! Invariants:
//! - Capacity is bounded (`ring_capacity_batches`); a full ring makes the sender wait, and the
//!   wait is measured per ring ([`RingStats::full_ns`]): this is weir's backpressure figure.
//! - Per channel, envelopes arrive in the order they were sent (FIFO), so watermark marks inside
//!   batches keep their exact per-record meaning across the ring.
//! - A producer sends [`Envelope::End`] exactly once, as its last envelope.

mod inputs;

pub use inputs::RingInputs;

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

/// The producer end of one ring, connected on the sending shard.
pub struct RingSender<T: Send + 'static> {
    inner: ConnectedSender<Envelope<T>>,
    stats: Arc<RingStats>,
    to_shard: usize,
}

impl<T: Send + 'static> RingSender<T> {
    /// Send one envelope; waits (and counts the wait) while the ring is full.
    pub async fn send(&self, envelope: Envelope<T>) -> Result<()> {
        let records = match &envelope {
            Envelope::Data(b) => b.len() as u64,
            _ => 0,
        };
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
    /// `Vec<(to_shard, SharedSender<Envelope<T>>)>`
    pub senders: Option<Box<dyn Any + Send>>,
    /// `Vec<(from_shard, SharedReceiver<Envelope<T>>)>`
    pub receivers: Option<Box<dyn Any + Send>>,
    /// Stats of the rings this shard sends into, by destination.
    pub stats: Vec<(usize, Arc<RingStats>)>,
}

type SenderList<T> = Vec<(usize, SharedSender<Envelope<T>>)>;
type ReceiverList<T> = Vec<(usize, SharedReceiver<Envelope<T>>)>;

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
            senders[from].push((to, tx));
            inbox.push((from, rx));
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
    for (to, tx) in *list {
        let stats = ends.stats.iter().find(|(d, _)| *d == to).map(|(_, s)| s.clone()).expect("ring stats");
        out[to] = Some(RingSender {
            inner: tx.connect().await,
            stats,
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
    for (from, rx) in *list {
        channels.push((from, rx.connect().await));
    }
    RingInputs::new(channels)
}
