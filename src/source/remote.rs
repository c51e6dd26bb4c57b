//! Shared machinery of the sources whose splits are fed by a background fetch task talking to a
//! remote server (Kinesis, Pulsar): the bounded [`Inbox`] between the fetch task and the split
//! reader, and [`BadRecords`], the engine's bad-record policy for messages.
//!
//! The fetch task (a glommio task on the shard, spawned by the reader's `open`) does the network
//! round trips; the reader's `read` only drains the inbox, so a slow server never stalls the
//! segment loop, other splits or checkpoint barriers.
//!
//! Invariants: the inbox holds at most `capacity` messages (the fetch task waits for space, so
//! memory is bounded and the server is read only as fast as the job consumes); a fetch error is
//! kept and returned by the next `read` after the messages fetched before it; `end` is final.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;

use glommio::sync::Semaphore;

use crate::config::ErrorPolicy;
use crate::error::{Result, WeirError};
use crate::shard::{BuildCtx, OperatorMetrics};
use crate::source::file::dead_letter::{self, SharedDeadLetters};
use crate::source::file::BadLine;

/// Messages fetched but not yet read, shared by one split's fetch task and reader.
pub(crate) struct Inbox<M> {
    queue: RefCell<VecDeque<M>>,
    space: Semaphore,
    capacity: u64,
    error: RefCell<Option<WeirError>>,
    ended: Cell<bool>,
}

impl<M> Inbox<M> {
    pub(crate) fn new(capacity: usize) -> Rc<Self> {
        let capacity = capacity.max(1) as u64;
        Rc::new(Self {
            queue: RefCell::new(VecDeque::new()),
            space: Semaphore::new(capacity),
            capacity,
            error: RefCell::new(None),
            ended: Cell::new(false),
        })
    }

    /// Append `messages`, waiting for space (in pieces of at most the capacity).
    pub(crate) async fn put(&self, messages: impl IntoIterator<Item = M>) {
        let mut it = messages.into_iter().peekable();
        while it.peek().is_some() {
            let piece: Vec<M> = it.by_ref().take(self.capacity as usize).collect();
            // The semaphore is never closed, so acquiring only waits.
            let _ = self.space.acquire(piece.len() as u64).await;
            self.queue.borrow_mut().extend(piece);
        }
    }

    /// Move up to `max` messages into `out`; returns how many.
    pub(crate) fn take(&self, max: usize, out: &mut Vec<M>) -> usize {
        let mut q = self.queue.borrow_mut();
        let n = max.min(q.len());
        out.extend(q.drain(..n));
        self.space.signal(n as u64);
        n
    }

    /// The fetch task failed: the reader fails after the messages before the error.
    pub(crate) fn fail(&self, e: WeirError) {
        self.error.borrow_mut().get_or_insert(e);
    }

    /// The split has no more messages (bounded mode, closed shard).
    pub(crate) fn end(&self) {
        self.ended.set(true);
    }

    /// With the queue empty: the fetch task's error, if any (taken once).
    pub(crate) fn take_error(&self) -> Option<WeirError> {
        self.error.borrow_mut().take()
    }

    pub(crate) fn has_ended(&self) -> bool {
        self.ended.get()
    }
}

/// Applies the engine's bad-record policy to messages that do not decode.
pub(crate) struct BadRecords {
    pub(crate) policy: ErrorPolicy,
    dead_letters: Option<SharedDeadLetters>,
    metrics: Arc<OperatorMetrics>,
}

impl BadRecords {
    /// For the source being built (`source_id` separates its dead-letter buffer from others').
    pub(crate) fn new(source_id: u64, ctx: &mut BuildCtx<'_>) -> Result<Self> {
        let policy = ctx.config.on_bad_record.clone();
        let dead_letters = if policy == ErrorPolicy::DeadLetter {
            let dir = match &ctx.config.dead_letter_dir {
                Some(d) => d.clone(),
                None => std::env::current_dir()
                    .map_err(|e| WeirError::io("finding the working directory", ".", e))?
                    .join("dead-letter"),
            };
            let (buffer, writer) = dead_letter::shard_buffer(source_id, dir, ctx.shard, ctx.config.dead_letter_buffer_records);
            if let Some(writer) = writer {
                ctx.add_flusher(Box::new(writer));
            }
            Some(buffer)
        } else {
            None
        };
        let metrics = ctx
            .source_metrics()
            .ok_or_else(|| WeirError::Other("a source reader built outside a source segment".into()))?;
        Ok(Self { policy, dead_letters, metrics })
    }

    /// True when the dead-letter buffer must be written out before more records are read.
    pub(crate) fn full(&self) -> bool {
        self.dead_letters.as_ref().is_some_and(|b| b.borrow().is_full())
    }

    /// A message at `place` (split and message id, for errors and dead letters; `index`: a
    /// number for the dead-letter record's `line`) did not decode.
    pub(crate) fn handle(&self, place: &str, index: u64, bad: &BadLine, raw: &[u8]) -> Result<()> {
        match self.policy {
            ErrorPolicy::Fail => Err(WeirError::Other(format!(
                "bad record in {place}{}: {}",
                bad.field.as_ref().map(|f| format!(" field `{f}`")).unwrap_or_default(),
                bad.message
            ))),
            ErrorPolicy::Skip => {
                OperatorMetrics::add(&self.metrics.bad_records, 1);
                Ok(())
            }
            ErrorPolicy::DeadLetter => {
                OperatorMetrics::add(&self.metrics.bad_records, 1);
                if let Some(b) = &self.dead_letters {
                    b.borrow_mut().push(place, index, bad.field.as_deref(), &bad.message, raw, false);
                }
                Ok(())
            }
        }
    }
}

/// Exponential backoff with deterministic jitter (SplitMix64 seeded per split): the delay after
/// `attempt` failures, between `base_ms` and `max_ms`.
pub(crate) struct Backoff {
    base_ms: u64,
    max_ms: u64,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub(crate) fn new(base_ms: u64, max_ms: u64, seed: u64) -> Self {
        Self {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms.max(1)),
            attempt: 0,
            rng: seed,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The next delay: `base * 2^attempt` capped at `max`, jittered into its upper half.
    pub(crate) fn next_delay_ms(&mut self) -> u64 {
        let cap = self.base_ms.saturating_mul(1u64 << self.attempt.min(20)).min(self.max_ms);
        self.attempt += 1;
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        cap / 2 + z % (cap / 2 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_and_resets() {
        let mut b = Backoff::new(100, 1_000, 7);
        let delays: Vec<u64> = (0..6).map(|_| b.next_delay_ms()).collect();
        assert!((50..=100).contains(&delays[0]), "{delays:?}");
        assert!((100..=200).contains(&delays[1]), "{delays:?}");
        assert!(delays[4..].iter().all(|d| (500..=1_000).contains(d)), "{delays:?}");
        b.reset();
        assert!(b.next_delay_ms() <= 100);
        // Deterministic per seed.
        let mut a = Backoff::new(100, 1_000, 7);
        assert_eq!(a.next_delay_ms(), delays[0]);
    }

    #[test]
    fn the_inbox_is_bounded_and_keeps_order() {
        crate::testing::run_local(async {
            let inbox = Inbox::<u32>::new(4);
            let writer = inbox.clone();
            let task = glommio::spawn_local(async move { writer.put(0..10).await });
            let mut got = Vec::new();
            while got.len() < 10 {
                glommio::yield_if_needed().await;
                futures_lite::future::yield_now().await;
                assert!(inbox.queue.borrow().len() <= 4);
                inbox.take(3, &mut got);
            }
            task.await;
            assert_eq!(got, (0..10).collect::<Vec<_>>());
        });
    }
}
