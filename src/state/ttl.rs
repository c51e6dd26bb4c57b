//! State time-to-live: the configuration ([`StateTtl`]), the processing-time clock states read
//! ([`StateClock`]), and the expiry queue that cleans expired entries incrementally.
//!
//! Semantics (Flink's `StateTtlConfig` with `NeverReturnExpired` and processing time): an entry
//! written (or, with [`TtlUpdate::OnReadAndWrite`], read) at time `t` expires at `t + ttl_ms`;
//! it is invisible from the first instant `now >= t + ttl_ms`.
//!
//! Cleanup: the TTL of a state is constant and the clock never goes back, so expiry times are
//! pushed in non-decreasing order and the queue is a plain deque ordered by time. Each live
//! entry has exactly one *live* queue slot whose time is `<=` the entry's expiry (its
//! `queued_at`); a rewrite only moves the entry's expiry forward and pushes nothing. When a slot
//! reaches the front and is due, the entry is removed if expired, or re-queued at its real
//! expiry (clamped up to the back of the queue, which keeps the deque sorted). Slots of entries
//! that were deleted or re-created are stale and are skipped. Every state access pops at most
//! `cleanup_per_access` due slots, so cleanup is incremental and bounded per access, and each
//! write pushes at most one slot, so cleanup keeps pace with growth. The queue is rebuilt from
//! the live entries when stale slots outnumber them (see `ExpiryQueue::needs_compaction`), so
//! it never grows beyond about twice the number of entries.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use crate::time::Timestamp;

/// When an entry's expiry is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlUpdate {
    /// On creation and every write (Flink's `OnCreateAndWrite`).
    OnCreateAndWrite,
    /// Also on every read that returns it (Flink's `OnReadAndWrite`).
    OnReadAndWrite,
}

/// Time-to-live of the entries of one state (processing time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateTtl {
    pub ttl_ms: i64,
    pub update: TtlUpdate,
    /// Most due expiry-queue slots examined per state access (Flink's incremental cleanup size).
    pub cleanup_per_access: usize,
}

/// Default of [`StateTtl::cleanup_per_access`].
pub const DEFAULT_CLEANUP_PER_ACCESS: usize = 4;

impl StateTtl {
    /// Entries expire `ttl_ms` after their last write (or read, per `update`).
    pub fn new(ttl_ms: i64, update: TtlUpdate) -> Self {
        assert!(ttl_ms > 0, "state TTL must be > 0 ms");
        Self {
            ttl_ms,
            update,
            cleanup_per_access: DEFAULT_CLEANUP_PER_ACCESS,
        }
    }

    /// Examine at most `n` (>= 1) due queue slots per access.
    pub fn cleanup_per_access(mut self, n: usize) -> Self {
        assert!(n >= 1, "cleanup_per_access must be >= 1");
        self.cleanup_per_access = n;
        self
    }
}

/// The processing-time clock of one operator's states: set by the operator (once per batch and
/// per timer callback), read by every state it created. Setting it backwards is ignored, so it
/// never decreases.
#[derive(Clone, Debug, Default)]
pub struct StateClock(Arc<AtomicI64>);

impl StateClock {
    pub fn new(now_ms: Timestamp) -> Self {
        Self(Arc::new(AtomicI64::new(now_ms)))
    }

    /// Advance to `now_ms` (never backwards).
    #[inline]
    pub fn set(&self, now_ms: Timestamp) {
        self.0.fetch_max(now_ms, Ordering::Relaxed);
    }

    #[inline]
    pub fn now(&self) -> Timestamp {
        self.0.load(Ordering::Relaxed)
    }
}

/// Expiry bookkeeping stored next to every value of a state with TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Expiry {
    /// The entry is invisible from this time on.
    pub expires_at: Timestamp,
    /// Time of the entry's live queue slot (`<= expires_at`).
    pub queued_at: Timestamp,
}

impl Expiry {
    #[inline]
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}

/// The store side of expiry: look up an entry's bookkeeping by queue key, remove entries.
pub(crate) trait ExpiryStore<Q> {
    /// The bookkeeping of `q` for reading (never copies shared storage).
    fn expiry(&self, q: &Q) -> Option<Expiry>;
    fn expiry_mut(&mut self, q: &Q) -> Option<&mut Expiry>;
    fn remove_expired(&mut self, q: &Q);
    /// Number of live (possibly expired, not yet removed) entries.
    fn entries(&self) -> usize;
    /// Every live entry (for compaction).
    fn for_each_expiry(&mut self, f: &mut dyn FnMut(Q, &mut Expiry));
}

/// Expiry slots ordered by time (see the module doc).
#[derive(Clone, Debug)]
pub(crate) struct ExpiryQueue<Q> {
    slots: VecDeque<(Timestamp, Q)>,
}

impl<Q> Default for ExpiryQueue<Q> {
    fn default() -> Self {
        Self { slots: VecDeque::new() }
    }
}

/// Stale slots tolerated before a rebuild, on top of one slot per entry.
const COMPACTION_SLACK: usize = 64;

impl<Q: Clone> ExpiryQueue<Q> {
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Queue `q` at `at` (clamped up to the back, keeping the deque sorted); returns the slot
    /// time, to be stored as the entry's `queued_at`.
    pub fn push(&mut self, at: Timestamp, q: Q) -> Timestamp {
        let at = match self.slots.back() {
            Some(&(back, _)) if back > at => back,
            _ => at,
        };
        self.slots.push_back((at, q));
        at
    }

    /// A fresh entry's bookkeeping, queued.
    pub fn track(&mut self, now: Timestamp, ttl_ms: i64, q: &Q) -> Expiry {
        let expires_at = now.saturating_add(ttl_ms);
        let queued_at = self.push(expires_at, q.clone());
        Expiry { expires_at, queued_at }
    }

    /// Pop at most `budget` due slots: remove expired entries, re-queue renewed ones, skip stale.
    pub fn expire<S: ExpiryStore<Q>>(&mut self, store: &mut S, now: Timestamp, budget: usize) {
        for _ in 0..budget {
            match self.slots.front() {
                Some(&(at, _)) if at <= now => {}
                _ => break,
            }
            let (at, q) = self.slots.pop_front().expect("front checked");
            let Some(e) = store.expiry(&q) else { continue };
            if e.queued_at != at {
                continue; // stale: the entry was re-created and has a later slot
            }
            if e.is_expired(now) {
                store.remove_expired(&q);
            } else {
                let expires_at = e.expires_at;
                let queued = self.push(expires_at, q.clone());
                if let Some(e) = store.expiry_mut(&q) {
                    e.queued_at = queued;
                }
            }
        }
        if self.needs_compaction(store.entries()) {
            self.rebuild(store);
        }
    }

    /// True when stale slots dominate: more than `2 * entries + slack` slots.
    pub fn needs_compaction(&self, entries: usize) -> bool {
        self.slots.len() > entries.saturating_mul(2).saturating_add(COMPACTION_SLACK)
    }

    /// Rebuild from the live entries (one slot each, at their expiry).
    pub fn rebuild<S: ExpiryStore<Q>>(&mut self, store: &mut S) {
        let mut slots: Vec<(Timestamp, Q)> = Vec::new();
        store.for_each_expiry(&mut |q, e| {
            e.queued_at = e.expires_at;
            slots.push((e.expires_at, q));
        });
        slots.sort_by_key(|(t, _)| *t);
        self.slots = slots.into();
    }
}
