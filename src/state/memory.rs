//! The in-memory state backend: hash tables owned by one operator instance on one shard.
//!
//! `TtlTable` maps a key to a value with optional TTL bookkeeping; value, list and aggregating
//! states are one table keyed by the record key. `NestedTable` is the map state: key → user
//! key → value, with TTL per user entry (Flink's semantics) and an expiry queue over
//! `(key, user key)`.
//!
//! Invariants: an expired entry is never returned (a read that meets one removes it); every
//! access first runs bounded incremental cleanup (see [`super::ttl`]); the entry gauge equals
//! the number of stored entries after every mutation.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::ttl::{Expiry, ExpiryQueue, ExpiryStore, StateClock, StateTtl, TtlUpdate};
use crate::time::Timestamp;

const NO_EXPIRY: Expiry = Expiry {
    expires_at: Timestamp::MAX,
    queued_at: Timestamp::MAX,
};

#[derive(Clone, Debug)]
struct Slot<E> {
    value: E,
    expiry: Expiry,
}

#[derive(Clone, Debug)]
struct Slots<Q, E>(FxHashMap<Q, Slot<E>>);

impl<Q: Hash + Eq + Clone, E> ExpiryStore<Q> for Slots<Q, E> {
    fn expiry_mut(&mut self, q: &Q) -> Option<&mut Expiry> {
        self.0.get_mut(q).map(|s| &mut s.expiry)
    }
    fn remove_expired(&mut self, q: &Q) {
        self.0.remove(q);
    }
    fn entries(&self) -> usize {
        self.0.len()
    }
    fn for_each_expiry(&mut self, f: &mut dyn FnMut(Q, &mut Expiry)) {
        for (q, s) in self.0.iter_mut() {
            f(q.clone(), &mut s.expiry);
        }
    }
}

/// Key → value with optional TTL.
#[derive(Clone, Debug)]
pub(crate) struct TtlTable<Q, E> {
    slots: Slots<Q, E>,
    queue: ExpiryQueue<Q>,
    ttl: Option<StateTtl>,
    clock: StateClock,
    gauge: Arc<AtomicUsize>,
}

impl<Q: Hash + Eq + Clone, E> TtlTable<Q, E> {
    pub fn new(ttl: Option<StateTtl>, clock: StateClock, gauge: Arc<AtomicUsize>) -> Self {
        Self {
            slots: Slots(FxHashMap::default()),
            queue: ExpiryQueue::default(),
            ttl,
            clock,
            gauge,
        }
    }

    pub fn ttl(&self) -> Option<StateTtl> {
        self.ttl
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn len(&self) -> usize {
        self.slots.0.len()
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    #[inline]
    fn sync_gauge(&self) {
        self.gauge.store(self.slots.0.len(), Ordering::Relaxed);
    }

    /// Bounded incremental cleanup (a no-op without TTL).
    #[inline]
    fn maintain(&mut self) {
        if let Some(ttl) = self.ttl {
            let now = self.clock.now();
            self.queue.expire(&mut self.slots, now, ttl.cleanup_per_access);
        }
    }

    /// Remove every due entry now (unbounded; for tests and shutdown).
    pub fn expire_all(&mut self) {
        if self.ttl.is_some() {
            let now = self.clock.now();
            self.queue.expire(&mut self.slots, now, usize::MAX);
            self.sync_gauge();
        }
    }

    /// The visible value of `q` for reading (renewed under `OnReadAndWrite`).
    pub fn read(&mut self, q: &Q) -> Option<&mut E> {
        self.maintain();
        let now = self.clock.now();
        let ttl = self.ttl;
        let expired = match self.slots.0.get(q) {
            None => {
                self.sync_gauge();
                return None;
            }
            Some(s) => s.expiry.is_expired(now),
        };
        if expired {
            self.slots.0.remove(q);
            self.sync_gauge();
            return None;
        }
        self.sync_gauge();
        let slot = self.slots.0.get_mut(q).expect("checked above");
        if let Some(t) = ttl {
            if t.update == TtlUpdate::OnReadAndWrite {
                slot.expiry.expires_at = now.saturating_add(t.ttl_ms);
            }
        }
        Some(&mut slot.value)
    }

    /// The value of `q` for writing, created by `create` if missing or expired; renewed.
    pub fn write(&mut self, q: &Q, create: impl FnOnce() -> E) -> &mut E {
        self.maintain();
        let now = self.clock.now();
        let ttl = self.ttl;
        let live = self.slots.0.get(q).is_some_and(|s| !s.expiry.is_expired(now));
        if !live {
            let expiry = match ttl {
                Some(t) => self.queue.track(now, t.ttl_ms, q),
                None => NO_EXPIRY,
            };
            self.slots.0.insert(q.clone(), Slot { value: create(), expiry });
            self.sync_gauge();
            return &mut self.slots.0.get_mut(q).expect("just inserted").value;
        }
        let slot = self.slots.0.get_mut(q).expect("checked above");
        if let Some(t) = ttl {
            slot.expiry.expires_at = now.saturating_add(t.ttl_ms);
        }
        &mut slot.value
    }

    /// The stored value of `q` without expiry checks or renewal (after a `read` that checked).
    pub fn peek(&self, q: &Q) -> Option<&E> {
        self.slots.0.get(q).map(|s| &s.value)
    }

    /// Remove `q`; returns its value if it was visible.
    pub fn remove(&mut self, q: &Q) -> Option<E> {
        self.maintain();
        let now = self.clock.now();
        let removed = self.slots.0.remove(q);
        self.sync_gauge();
        removed.filter(|s| !s.expiry.is_expired(now)).map(|s| s.value)
    }

    /// Visit every visible entry with its expiry (`Timestamp::MAX`: none), in no order; no
    /// cleanup, no renewal (for snapshots).
    pub fn for_each_visible(&self, mut f: impl FnMut(&Q, &E, Timestamp)) {
        let now = self.clock.now();
        for (q, s) in &self.slots.0 {
            if !s.expiry.is_expired(now) {
                f(q, &s.value, s.expiry.expires_at);
            }
        }
    }

    /// Insert a restored entry expiring at `expires_at` (ignored if already expired).
    pub fn restore(&mut self, q: Q, value: E, expires_at: Timestamp) {
        if expires_at <= self.clock.now() {
            return;
        }
        let expiry = match self.ttl {
            Some(_) if expires_at != Timestamp::MAX => Expiry {
                expires_at,
                queued_at: self.queue.push(expires_at, q.clone()),
            },
            _ => NO_EXPIRY,
        };
        self.slots.0.insert(q, Slot { value, expiry });
        self.sync_gauge();
    }
}

/// Key → user key → value, TTL per user entry.
#[derive(Clone, Debug)]
pub(crate) struct NestedTable<K, UK, UV> {
    maps: Nested<K, UK, UV>,
    queue: ExpiryQueue<(K, UK)>,
    ttl: Option<StateTtl>,
    clock: StateClock,
    gauge: Arc<AtomicUsize>,
}

#[derive(Clone, Debug)]
struct Nested<K, UK, UV> {
    maps: FxHashMap<K, FxHashMap<UK, Slot<UV>>>,
    entries: usize,
}

impl<K: Hash + Eq + Clone, UK: Hash + Eq + Clone, UV> ExpiryStore<(K, UK)> for Nested<K, UK, UV> {
    fn expiry_mut(&mut self, q: &(K, UK)) -> Option<&mut Expiry> {
        self.maps.get_mut(&q.0).and_then(|m| m.get_mut(&q.1)).map(|s| &mut s.expiry)
    }
    fn remove_expired(&mut self, q: &(K, UK)) {
        self.remove(&q.0, &q.1);
    }
    fn entries(&self) -> usize {
        self.entries
    }
    fn for_each_expiry(&mut self, f: &mut dyn FnMut((K, UK), &mut Expiry)) {
        for (k, m) in self.maps.iter_mut() {
            for (uk, s) in m.iter_mut() {
                f((k.clone(), uk.clone()), &mut s.expiry);
            }
        }
    }
}

impl<K: Hash + Eq, UK: Hash + Eq, UV> Nested<K, UK, UV> {
    fn remove(&mut self, k: &K, uk: &UK) -> Option<Slot<UV>> {
        let m = self.maps.get_mut(k)?;
        let removed = m.remove(uk);
        if removed.is_some() {
            self.entries -= 1;
        }
        if m.is_empty() {
            self.maps.remove(k);
        }
        removed
    }
}

impl<K: Hash + Eq + Clone, UK: Hash + Eq + Clone, UV> NestedTable<K, UK, UV> {
    pub fn new(ttl: Option<StateTtl>, clock: StateClock, gauge: Arc<AtomicUsize>) -> Self {
        Self {
            maps: Nested {
                maps: FxHashMap::default(),
                entries: 0,
            },
            queue: ExpiryQueue::default(),
            ttl,
            clock,
            gauge,
        }
    }

    pub fn len(&self) -> usize {
        self.maps.entries
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    #[inline]
    fn sync_gauge(&self) {
        self.gauge.store(self.maps.entries, Ordering::Relaxed);
    }

    fn maintain_with(&mut self, budget: usize) {
        if self.ttl.is_some() {
            let now = self.clock.now();
            self.queue.expire(&mut self.maps, now, budget);
            self.sync_gauge();
        }
    }

    #[inline]
    fn maintain(&mut self) {
        let budget = self.ttl.map_or(0, |t| t.cleanup_per_access);
        self.maintain_with(budget);
    }

    /// Remove every due entry now (unbounded; for tests and shutdown).
    pub fn expire_all(&mut self) {
        self.maintain_with(usize::MAX);
    }

    fn renew_on_read(ttl: Option<StateTtl>, now: Timestamp, s: &mut Slot<UV>) {
        if let Some(t) = ttl {
            if t.update == TtlUpdate::OnReadAndWrite {
                s.expiry.expires_at = now.saturating_add(t.ttl_ms);
            }
        }
    }

    pub fn get(&mut self, k: &K, uk: &UK) -> Option<&mut UV> {
        self.maintain();
        let now = self.clock.now();
        let expired = self.maps.maps.get(k).and_then(|m| m.get(uk)).map(|s| s.expiry.is_expired(now))?;
        if expired {
            self.maps.remove(k, uk);
            self.sync_gauge();
            return None;
        }
        let ttl = self.ttl;
        let s = self.maps.maps.get_mut(k).and_then(|m| m.get_mut(uk)).expect("checked above");
        Self::renew_on_read(ttl, now, s);
        Some(&mut s.value)
    }

    pub fn put(&mut self, k: &K, uk: UK, value: UV) {
        self.maintain();
        let now = self.clock.now();
        let ttl = self.ttl;
        let m = self.maps.maps.entry(k.clone()).or_default();
        match m.get_mut(&uk) {
            Some(s) if !s.expiry.is_expired(now) => {
                s.value = value;
                if let Some(t) = ttl {
                    s.expiry.expires_at = now.saturating_add(t.ttl_ms);
                }
            }
            existing => {
                let fresh = existing.is_none();
                let expiry = match ttl {
                    Some(t) => self.queue.track(now, t.ttl_ms, &(k.clone(), uk.clone())),
                    None => NO_EXPIRY,
                };
                m.insert(uk, Slot { value, expiry });
                if fresh {
                    self.maps.entries += 1;
                }
            }
        }
        self.sync_gauge();
    }

    pub fn remove(&mut self, k: &K, uk: &UK) -> Option<UV> {
        self.maintain();
        let now = self.clock.now();
        let removed = self.maps.remove(k, uk);
        self.sync_gauge();
        removed.filter(|s| !s.expiry.is_expired(now)).map(|s| s.value)
    }

    /// Visit the visible entries of `k` (expired ones are removed on the way).
    pub fn for_each(&mut self, k: &K, mut f: impl FnMut(&UK, &UV)) {
        self.maintain();
        let now = self.clock.now();
        let ttl = self.ttl;
        let Some(m) = self.maps.maps.get_mut(k) else { return };
        let before = m.len();
        m.retain(|_, s| !s.expiry.is_expired(now));
        self.maps.entries -= before - m.len();
        for (uk, s) in m.iter_mut() {
            Self::renew_on_read(ttl, now, s);
            f(uk, &s.value);
        }
        if m.is_empty() {
            self.maps.maps.remove(k);
        }
        self.sync_gauge();
    }

    pub fn clear(&mut self, k: &K) {
        self.maintain();
        if let Some(m) = self.maps.maps.remove(k) {
            self.maps.entries -= m.len();
        }
        self.sync_gauge();
    }

    /// Visit every visible entry with its expiry, in no order; no cleanup, no renewal.
    pub fn for_each_visible(&self, mut f: impl FnMut(&K, &UK, &UV, Timestamp)) {
        let now = self.clock.now();
        for (k, m) in &self.maps.maps {
            for (uk, s) in m {
                if !s.expiry.is_expired(now) {
                    f(k, uk, &s.value, s.expiry.expires_at);
                }
            }
        }
    }

    /// Insert a restored entry expiring at `expires_at` (ignored if already expired).
    pub fn restore(&mut self, k: K, uk: UK, value: UV, expires_at: Timestamp) {
        if expires_at <= self.clock.now() {
            return;
        }
        let expiry = match self.ttl {
            Some(_) if expires_at != Timestamp::MAX => Expiry {
                expires_at,
                queued_at: self.queue.push(expires_at, (k.clone(), uk.clone())),
            },
            _ => NO_EXPIRY,
        };
        let m = self.maps.maps.entry(k).or_default();
        if m.insert(uk, Slot { value, expiry }).is_none() {
            self.maps.entries += 1;
        }
        self.sync_gauge();
    }
}
