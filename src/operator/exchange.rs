//! The keyed exchange: the end of a segment that routes each record to the shard owning its
//! key group, through the rings of one edge.
//!
//! Per destination the operator fills a batch; watermark marks are broadcast lazily: a mark is
//! added to a destination's batch just before the first record that follows it, and every
//! destination gets the latest watermark at the end of each call. So each record reaches its
//! shard behind exactly the watermark that preceded it in the input (per-record lateness is
//! preserved), at O(1) cost per record.
//!
//! A record may be converted on its way ([`InPlace`]; [`Identity`] for plain exchanges): the
//! consumer then reads a compact form of what the producer holds (e.g. a window aggregate's
//! key and arguments instead of a whole SQL row), routed by the key of the converted record.
//! A conversion reads each record where it lies in the input batch (it takes what it keeps,
//! the rest is dropped with the batch), so large records are never moved.
//!
//! Invariants: batches handed to the outbox never exceed `batch_size` records; the outbox is
//! drained (awaiting ring space = backpressure) by the segment task after every input step, so
//! it holds at most one step's output.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use futures::future::LocalBoxFuture;

use super::Push;
use crate::batch::{Batch, InOrder};
use crate::checkpoint::runtime::TaskSnapshot;
use crate::error::Result;
use crate::key::{KeyGroups, StableHash};
use crate::ring::{connect_senders, Envelope, RingSender, ShardEnds};
use crate::shard::Flusher;
use crate::time::{Timestamp, WATERMARK_MIN};

/// Envelopes waiting for ring space, by destination shard.
pub(crate) type Outbox<T> = Rc<RefCell<VecDeque<(usize, Envelope<T>)>>>;

/// How an exchange turns its input records (`T`) into the records it routes (`U`).
pub trait Convert<T, U> {
    /// Records are converted where they lie ([`Convert::convert_in_place`]), not moved out.
    const IN_PLACE: bool;
    fn convert(&mut self, record: T) -> U;
    /// Take what the routed record needs out of `record` (only if `IN_PLACE`).
    fn convert_in_place(&mut self, record: &mut T) -> U;
}

/// Records are routed as they are.
#[derive(Clone, Copy)]
pub struct Identity;

impl<T> Convert<T, T> for Identity {
    const IN_PLACE: bool = false;
    #[inline]
    fn convert(&mut self, record: T) -> T {
        record
    }
    fn convert_in_place(&mut self, _record: &mut T) -> T {
        unreachable!("the identity moves records")
    }
}

/// Records are converted by `F`, reading them in place.
#[derive(Clone)]
pub struct InPlace<F>(pub F);

impl<T, U, F: FnMut(&mut T) -> U> Convert<T, U> for InPlace<F> {
    const IN_PLACE: bool = true;
    #[inline]
    fn convert(&mut self, mut record: T) -> U {
        (self.0)(&mut record)
    }
    #[inline]
    fn convert_in_place(&mut self, record: &mut T) -> U {
        (self.0)(record)
    }
}

/// Routes records by key to their owning shard, converted by `convert` (`T` to `U`).
pub struct ExchangeOp<T, U, K, KF, CF> {
    key_fn: KF,
    convert: CF,
    groups: KeyGroups,
    /// Destination shards this edge reaches (all shards for hash edges, one for forward edges).
    forward_to: Option<usize>,
    pending: Vec<Batch<U>>,
    sent_watermark: Vec<Timestamp>,
    watermark: Timestamp,
    batch_size: usize,
    outbox: Outbox<U>,
    _k: std::marker::PhantomData<fn(T) -> K>,
}

impl<T, U, K: StableHash, KF: FnMut(&U) -> K, CF: Convert<T, U>> ExchangeOp<T, U, K, KF, CF> {
    pub(crate) fn new(key_fn: KF, convert: CF, groups: KeyGroups, forward_to: Option<usize>, batch_size: usize, outbox: Outbox<U>) -> Self {
        let shards = groups.shards() as usize;
        Self {
            key_fn,
            convert,
            groups,
            forward_to,
            pending: (0..shards).map(|_| Batch::with_capacity(batch_size)).collect(),
            sent_watermark: vec![WATERMARK_MIN; shards],
            watermark: WATERMARK_MIN,
            batch_size,
            outbox,
            _k: std::marker::PhantomData,
        }
    }

    fn destinations(&self) -> std::ops::Range<usize> {
        match self.forward_to {
            Some(d) => d..d + 1,
            None => 0..self.pending.len(),
        }
    }

    /// Hand every destination its partial batch and the latest watermark.
    fn flush_all(&mut self) {
        let mut outbox = self.outbox.borrow_mut();
        for d in self.destinations() {
            let p = &mut self.pending[d];
            if self.sent_watermark[d] < self.watermark {
                p.mark(self.watermark);
                self.sent_watermark[d] = self.watermark;
            }
            if !p.is_empty() {
                let mut out = p.take();
                out.ingest_ns = crate::shard::metrics::current_ingest_ns();
                outbox.push_back((d, Envelope::Data(out)));
            } else if let Some(wm) = p.last_watermark() {
                p.clear();
                outbox.push_back((d, Envelope::Watermark(wm)));
            }
        }
    }
}

impl<T, U, K: StableHash, KF: FnMut(&U) -> K, CF: Convert<T, U>> InOrder<T> for ExchangeOp<T, U, K, KF, CF> {
    #[inline]
    fn on_watermark(&mut self, wm: Timestamp) {
        self.watermark = wm;
    }

    #[inline]
    fn on_record(&mut self, record: T, ts: Timestamp) {
        let record = self.convert.convert(record);
        self.route(record, ts);
    }
}

impl<T, U, K: StableHash, KF: FnMut(&U) -> K, CF: Convert<T, U>> ExchangeOp<T, U, K, KF, CF> {
    #[inline]
    fn route(&mut self, record: U, ts: Timestamp) {
        let d = match self.forward_to {
            Some(d) => d,
            None => self.groups.shard_of_hash((self.key_fn)(&record).stable_hash()) as usize,
        };
        let p = &mut self.pending[d];
        if self.sent_watermark[d] < self.watermark {
            p.mark(self.watermark);
            self.sent_watermark[d] = self.watermark;
        }
        p.push(record, ts);
        if p.len() >= self.batch_size {
            let mut full = p.take();
            full.ingest_ns = crate::shard::metrics::current_ingest_ns();
            self.outbox.borrow_mut().push_back((d, Envelope::Data(full)));
        }
    }
}

impl<T, U, K: StableHash, KF: FnMut(&U) -> K, CF: Convert<T, U>> Push<T> for ExchangeOp<T, U, K, KF, CF> {
    fn push(&mut self, batch: &mut Batch<T>) {
        if CF::IN_PLACE {
            // As `drain_in_order`, reading the records where they lie.
            let mut next = 0;
            let marks = &batch.marks;
            for (i, (record, &ts)) in batch.records.iter_mut().zip(batch.timestamps.iter()).enumerate() {
                while next < marks.len() && marks[next].index as usize <= i {
                    self.watermark = marks[next].watermark;
                    next += 1;
                }
                let record = self.convert.convert_in_place(record);
                self.route(record, ts);
            }
            if let Some(last) = marks[next..].last() {
                self.watermark = last.watermark;
            }
            batch.clear();
        } else {
            batch.drain_in_order(self);
        }
        self.flush_all();
    }

    fn watermark(&mut self, wm: Timestamp) {
        if wm > self.watermark {
            self.watermark = wm;
            self.flush_all();
        }
    }

    fn processing_time(&mut self, _now_ms: Timestamp) {}

    fn idle(&mut self) {
        self.flush_all();
        let dests: Vec<usize> = self.destinations().collect();
        let mut outbox = self.outbox.borrow_mut();
        for d in dests {
            outbox.push_back((d, Envelope::Idle));
        }
    }

    fn barrier(&mut self, epoch: u64, _snapshot: &mut TaskSnapshot) {
        self.flush_all();
        let dests: Vec<usize> = self.destinations().collect();
        let mut outbox = self.outbox.borrow_mut();
        for d in dests {
            outbox.push_back((d, Envelope::Barrier(epoch)));
        }
    }

    fn end(&mut self) {
        self.flush_all();
        let dests: Vec<usize> = self.destinations().collect();
        let mut outbox = self.outbox.borrow_mut();
        for d in dests {
            outbox.push_back((d, Envelope::End));
        }
    }
}

/// Drains an exchange's outbox into the rings of its edge (the async half of [`ExchangeOp`]).
pub(crate) struct EdgeFlusher<T: Send + 'static> {
    ends: Option<ShardEnds>,
    shards: usize,
    senders: Vec<Option<RingSender<T>>>,
    outbox: Outbox<T>,
}

impl<T: Send + 'static> EdgeFlusher<T> {
    pub(crate) fn new(ends: ShardEnds, shards: usize, outbox: Outbox<T>) -> Self {
        Self {
            ends: Some(ends),
            shards,
            senders: Vec::new(),
            outbox,
        }
    }
}

impl<T: Send + 'static> Flusher for EdgeFlusher<T> {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut ends = self.ends.take().expect("edge flusher connected twice");
            self.senders = connect_senders::<T>(&mut ends, self.shards).await;
            Ok(())
        })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            loop {
                let next = self.outbox.borrow_mut().pop_front();
                let Some((d, envelope)) = next else {
                    return Ok(());
                };
                let sender = self.senders[d].as_ref().expect("exchange routed to a shard without a ring");
                sender.send(envelope).await?;
            }
        })
    }

    fn has_pending(&self) -> bool {
        !self.outbox.borrow().is_empty()
    }
}
