//! The in-memory state backend: hash tables owned by one operator instance on one shard.
//!
//! `TtlTable` maps a key to a value with optional TTL bookkeeping; value, list and aggregating
//! states are one table keyed by the record key. `NestedTable` is the map state: key → user
//! key → value, with TTL per user entry (Flink's semantics) and an expiry queue over
//! `(key, user key)`.
//!
//! Both keep their entries in a [`CowMap`] (copy-on-write by key group and chunk), so
//! [`TtlTable::freeze`] / [`NestedTable::freeze`] take a consistent view for an asynchronous
//! snapshot in microseconds while records keep changing the live table (see
//! [`super::snapshot`]). A map state's per-key user map sits behind its own `Arc`, copied on
//! its first write after a freeze.
//!
//! Invariants: an expired entry is never returned (a read that meets one removes it); every
//! access first runs bounded incremental cleanup (see [`super::ttl`]); the entry gauge equals
//! the number of stored entries after every mutation; a frozen view never changes.

use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::cow::{CowMap, Frozen};
use super::ttl::{Expiry, ExpiryQueue, ExpiryStore, StateClock, StateTtl, TtlUpdate};
use crate::key::{KeyGroups, StableHash};
use crate::time::Timestamp;

const NO_EXPIRY: Expiry = Expiry {
    expires_at: Timestamp::MAX,
    queued_at: Timestamp::MAX,
};

/// A stored value with its expiry bookkeeping.
#[derive(Clone, Debug)]
pub(crate) struct Slot<E> {
    pub value: E,
    pub expiry: Expiry,
}

#[derive(Clone, Debug)]
struct Slots<Q, E>(CowMap<Q, Slot<E>>);

impl<Q: Hash + Eq + Clone + StableHash, E: Clone> ExpiryStore<Q> for Slots<Q, E> {
    fn expiry(&self, q: &Q) -> Option<Expiry> {
        self.0.get(q).map(|s| s.expiry)
    }
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
        self.0.for_each_mut(|q, s| f(q.clone(), &mut s.expiry));
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

impl<Q: Hash + Eq + Clone + StableHash, E: Clone> TtlTable<Q, E> {
    pub fn new(ttl: Option<StateTtl>, clock: StateClock, gauge: Arc<AtomicUsize>, key_groups: KeyGroups) -> Self {
        Self {
            slots: Slots(CowMap::new(key_groups)),
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

    /// A consistent view of every entry as it is now (for an asynchronous snapshot).
    pub fn freeze(&self) -> Frozen<Q, Slot<E>> {
        self.slots.0.freeze()
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

    /// The visible value of `q` for reading: renewed under `OnReadAndWrite` (a write: it copies
    /// what a frozen view shares), otherwise read without copying anything.
    pub fn get(&mut self, q: &Q) -> Option<&E> {
        if self.ttl.is_some_and(|t| t.update == TtlUpdate::OnReadAndWrite) {
            return self.read(q).map(|v| &*v);
        }
        self.read_shared(q)
    }

    /// The visible value of `q` without renewal and without copying shared storage.
    fn read_shared(&mut self, q: &Q) -> Option<&E> {
        self.maintain();
        let now = self.clock.now();
        let expired = self.slots.0.get(q)?.expiry.is_expired(now);
        if expired {
            self.slots.0.remove(q);
            self.sync_gauge();
            return None;
        }
        self.sync_gauge();
        self.slots.0.get(q).map(|s| &s.value)
    }

    /// The value of `q` for writing, created by `create` if missing or expired; renewed.
    pub fn write(&mut self, q: &Q, create: impl FnOnce() -> E) -> &mut E {
        self.maintain();
        let now = self.clock.now();
        let ttl = self.ttl;
        let mut create = Some(create);
        let before = self.slots.0.len();
        let (slot, created) = self.slots.0.get_or_insert_with(q, || Slot {
            value: (create.take().expect("created once"))(),
            expiry: NO_EXPIRY,
        });
        if created || slot.expiry.is_expired(now) {
            // New, or expired (replaced in place): a fresh value with a fresh expiry.
            if let Some(create) = create.take() {
                slot.value = create();
            }
            slot.expiry = match ttl {
                Some(t) => self.queue.track(now, t.ttl_ms, q),
                None => NO_EXPIRY,
            };
        } else if let Some(t) = ttl {
            slot.expiry.expires_at = now.saturating_add(t.ttl_ms);
        }
        self.gauge.store(before + created as usize, Ordering::Relaxed);
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

/// The user map of one key (shared with frozen views until its first write after a freeze).
pub(crate) type UserMap<UK, UV> = Arc<FxHashMap<UK, Slot<UV>>>;

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
    maps: CowMap<K, UserMap<UK, UV>>,
    entries: usize,
}

impl<K: Hash + Eq + Clone + StableHash, UK: Hash + Eq + Clone, UV: Clone> ExpiryStore<(K, UK)> for Nested<K, UK, UV> {
    fn expiry(&self, q: &(K, UK)) -> Option<Expiry> {
        self.maps.get(&q.0).and_then(|m| m.get(&q.1)).map(|s| s.expiry)
    }
    fn expiry_mut(&mut self, q: &(K, UK)) -> Option<&mut Expiry> {
        self.user_map_mut(&q.0).and_then(|m| m.get_mut(&q.1)).map(|s| &mut s.expiry)
    }
    fn remove_expired(&mut self, q: &(K, UK)) {
        self.remove(&q.0, &q.1);
    }
    fn entries(&self) -> usize {
        self.entries
    }
    fn for_each_expiry(&mut self, f: &mut dyn FnMut((K, UK), &mut Expiry)) {
        self.maps.for_each_mut(|k, m| {
            for (uk, s) in Arc::make_mut(m).iter_mut() {
                f((k.clone(), uk.clone()), &mut s.expiry);
            }
        });
    }
}

impl<K: Hash + Eq + Clone + StableHash, UK: Hash + Eq + Clone, UV: Clone> Nested<K, UK, UV> {
    /// The user map of `k` for writing (copied first if a frozen view shares it).
    fn user_map_mut(&mut self, k: &K) -> Option<&mut FxHashMap<UK, Slot<UV>>> {
        self.maps.get_mut(k).map(Arc::make_mut)
    }

    fn remove(&mut self, k: &K, uk: &UK) -> Option<Slot<UV>> {
        if !self.maps.get(k).is_some_and(|m| m.contains_key(uk)) {
            return None;
        }
        let m = self.user_map_mut(k)?;
        let removed = m.remove(uk);
        let empty = m.is_empty();
        if removed.is_some() {
            self.entries -= 1;
        }
        if empty {
            self.maps.remove(k);
        }
        removed
    }
}

impl<K: Hash + Eq + Clone + StableHash, UK: Hash + Eq + Clone, UV: Clone> NestedTable<K, UK, UV> {
    pub fn new(ttl: Option<StateTtl>, clock: StateClock, gauge: Arc<AtomicUsize>, key_groups: KeyGroups) -> Self {
        Self {
            maps: Nested {
                maps: CowMap::new(key_groups),
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

    /// A consistent view of every key's user map as it is now (for an asynchronous snapshot).
    pub fn freeze(&self) -> Frozen<K, UserMap<UK, UV>> {
        self.maps.maps.freeze()
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

    /// The visible value of `(k, uk)`; renewed on read under `OnReadAndWrite` (a write: it
    /// copies what a frozen view shares).
    pub fn get(&mut self, k: &K, uk: &UK) -> Option<&UV> {
        self.maintain();
        let now = self.clock.now();
        let expired = self.maps.maps.get(k).and_then(|m| m.get(uk)).map(|s| s.expiry.is_expired(now))?;
        if expired {
            self.maps.remove(k, uk);
            self.sync_gauge();
            return None;
        }
        let ttl = self.ttl;
        if ttl.is_some_and(|t| t.update == TtlUpdate::OnReadAndWrite) {
            let s = self.maps.user_map_mut(k).and_then(|m| m.get_mut(uk)).expect("checked above");
            Self::renew_on_read(ttl, now, s);
            return Some(&s.value);
        }
        self.maps.maps.get(k).and_then(|m| m.get(uk)).map(|s| &s.value)
    }

    pub fn put(&mut self, k: &K, uk: UK, value: UV) {
        self.maintain();
        let now = self.clock.now();
        let ttl = self.ttl;
        let m = Arc::make_mut(self.maps.maps.get_or_insert_with(k, Default::default).0);
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
        let Some(shared) = self.maps.maps.get(k) else { return };
        let renews = ttl.is_some_and(|t| t.update == TtlUpdate::OnReadAndWrite);
        if !renews && shared.values().all(|s| !s.expiry.is_expired(now)) {
            // Nothing to change: read without copying what a frozen view shares.
            for (uk, s) in shared.iter() {
                f(uk, &s.value);
            }
            return;
        }
        let m = self.maps.user_map_mut(k).expect("checked above");
        let before = m.len();
        m.retain(|_, s| !s.expiry.is_expired(now));
        let removed = before - m.len();
        for (uk, s) in m.iter_mut() {
            Self::renew_on_read(ttl, now, s);
            f(uk, &s.value);
        }
        let empty = m.is_empty();
        self.maps.entries -= removed;
        if empty {
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
        let m = Arc::make_mut(self.maps.maps.get_or_insert_with(&k, Default::default).0);
        if m.insert(uk, Slot { value, expiry }).is_none() {
            self.maps.entries += 1;
        }
        self.sync_gauge();
    }
}
