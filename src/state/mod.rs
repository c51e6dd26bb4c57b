//! Keyed state (Flink's `ValueState`, `ListState`, `MapState`, `AggregatingState`) with
//! processing-time TTL.
//!
//! A keyed function creates its states once per operator instance, in `open`, from a
//! [`StateContext`]: `ctx.value::<V>("count", None)`, `ctx.list`, `ctx.map`, `ctx.aggregating`.
//! Every state is partitioned by the record key `K`: methods take the key explicitly (the key
//! the function was called with), so a state never leaks across keys. A state lives on the shard
//! that owns its keys' key groups and is touched by that shard's thread only.
//!
//! TTL ([`StateTtl`], see [`ttl`]): expired values are never returned (`NeverReturnExpired`),
//! time is the operator's processing-time [`StateClock`], set by the operator once per batch
//! and per timer callback. Expired entries are removed incrementally: every access pops a
//! bounded number of due slots from an expiry queue ordered by time, so no state keeps expired
//! entries without bound while it is used, and the queue itself stays within about twice the
//! number of entries.
//!
//! Metrics: every state registers an entry gauge under its name; [`StateContext::entry_counts`]
//! reads them (entries not yet cleaned up are counted).
//!
//! ## Backends
//!
//! This is the memory backend ([`memory`]). Each state type wraps a private backend enum with
//! one variant today (`Memory`), matched in every method, so a second backend is added without
//! touching callers. Plan for the LSM backend (`weir-storage`, serialising keys and values):
//! - an `Lsm` variant per state holding the shard's store handle, the state's id (from its
//!   name) and the key/value codecs; the store key is `(key group, state id, key[, user key])`
//!   so a key group's state is one contiguous range (rescaling and savepoints by key group);
//! - the store value is `(expires_at, value)`; TTL stays a filter on read (never return
//!   expired) and expired entries are dropped by a compaction filter instead of the expiry
//!   queue;
//! - reads that hand out references (`ValueState::value`, `ListState::get`, `MapState::get`)
//!   decode into a per-state scratch slot and return a reference to it, so signatures stay;
//!   writes go to the store's memtable (no I/O on the data path; flushes run in a `Flusher`);
//! - [`StateContext`] picks the backend from configuration; codec bounds are checked when the
//!   state is created, so the memory backend keeps accepting any `V`.
//!
//! Invariants: state names are unique per operator (a duplicate is a programmer error); the
//! clock never goes back; entry gauges equal the stored entries after every call.

pub mod memory;
pub mod ttl;

use std::cell::RefCell;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memory::{NestedTable, TtlTable};
pub use ttl::{StateClock, StateTtl, TtlUpdate};

use crate::operator::aggregate::AggregateFunction;
use crate::time::Timestamp;

/// Bounds every state key and value type needs.
pub trait StateKey: Hash + Eq + Clone + Send + 'static {}
impl<T: Hash + Eq + Clone + Send + 'static> StateKey for T {}

/// Where the states of one operator instance are created.
pub struct StateContext<K> {
    clock: StateClock,
    gauges: RefCell<Vec<(String, Arc<AtomicUsize>)>>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K: StateKey> StateContext<K> {
    pub fn new(clock: StateClock) -> Self {
        Self {
            clock,
            gauges: RefCell::new(Vec::new()),
            _k: std::marker::PhantomData,
        }
    }

    /// The processing-time clock every state of this context reads.
    pub fn clock(&self) -> &StateClock {
        &self.clock
    }

    /// Register an entry gauge named `name` (unique per context).
    pub fn gauge(&self, name: &str) -> Arc<AtomicUsize> {
        let mut gauges = self.gauges.borrow_mut();
        assert!(gauges.iter().all(|(n, _)| n != name), "state {name:?} created twice in one operator");
        let g = Arc::new(AtomicUsize::new(0));
        gauges.push((name.to_string(), g.clone()));
        g
    }

    /// A single value per key.
    pub fn value<V>(&self, name: &str, ttl: Option<StateTtl>) -> ValueState<K, V> {
        ValueState {
            backend: ValueBackend::Memory(TtlTable::new(ttl, self.clock.clone(), self.gauge(name))),
        }
    }

    /// A list per key (TTL per element).
    pub fn list<V>(&self, name: &str, ttl: Option<StateTtl>) -> ListState<K, V> {
        ListState {
            backend: ListBackend::Memory(TtlTable::new(ttl, self.clock.clone(), self.gauge(name))),
        }
    }

    /// A map per key (TTL per map entry).
    pub fn map<UK: StateKey, UV>(&self, name: &str, ttl: Option<StateTtl>) -> MapState<K, UK, UV> {
        MapState {
            backend: MapBackend::Memory(NestedTable::new(ttl, self.clock.clone(), self.gauge(name))),
        }
    }

    /// An incremental aggregate per key.
    pub fn aggregating<T, A: AggregateFunction<T>>(&self, name: &str, agg: A, ttl: Option<StateTtl>) -> AggregatingState<K, T, A> {
        AggregatingState {
            backend: AggBackend::Memory(TtlTable::new(ttl, self.clock.clone(), self.gauge(name))),
            agg,
            _t: std::marker::PhantomData,
        }
    }

    /// Entries per state, by name (for metrics).
    pub fn entry_counts(&self) -> Vec<(String, usize)> {
        self.gauges.borrow().iter().map(|(n, g)| (n.clone(), g.load(Ordering::Relaxed))).collect()
    }

    /// Entries over all states.
    pub fn total_entries(&self) -> usize {
        self.gauges.borrow().iter().map(|(_, g)| g.load(Ordering::Relaxed)).sum()
    }
}

#[derive(Clone, Debug)]
enum ValueBackend<K, V> {
    Memory(TtlTable<K, V>),
}

/// One value per key (Flink's `ValueState`).
#[derive(Clone, Debug)]
pub struct ValueState<K, V> {
    backend: ValueBackend<K, V>,
}

impl<K: StateKey, V> ValueState<K, V> {
    /// The key's value, if set and not expired.
    pub fn value(&mut self, key: &K) -> Option<&V> {
        let ValueBackend::Memory(t) = &mut self.backend;
        t.read(key).map(|v| &*v)
    }

    /// Set the key's value.
    pub fn update(&mut self, key: &K, value: V) {
        let ValueBackend::Memory(t) = &mut self.backend;
        t.put(key, value)
    }

    /// Change the key's value in place, starting from `init()` if unset or expired.
    pub fn update_with<R>(&mut self, key: &K, init: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let ValueBackend::Memory(t) = &mut self.backend;
        f(t.write(key, init))
    }

    /// Remove the key's value; returns it if it was visible.
    pub fn clear(&mut self, key: &K) -> Option<V> {
        let ValueBackend::Memory(t) = &mut self.backend;
        t.remove(key)
    }

    /// Stored entries (keys), including expired ones not yet cleaned up.
    pub fn entries(&self) -> usize {
        let ValueBackend::Memory(t) = &self.backend;
        t.len()
    }

    /// Slots in the expiry queue (0 without TTL).
    pub fn expiry_queue_len(&self) -> usize {
        let ValueBackend::Memory(t) = &self.backend;
        t.queue_len()
    }

    /// Remove every expired entry now (unbounded work; the incremental cleanup makes this
    /// unnecessary in operators).
    pub fn expire_all(&mut self) {
        let ValueBackend::Memory(t) = &mut self.backend;
        t.expire_all()
    }
}

#[derive(Clone, Debug)]
enum ListBackend<K, V> {
    /// Elements carry their own expiry; appended in time order, so expired ones are a prefix.
    Memory(TtlTable<K, Vec<(V, Timestamp)>>),
}

/// A list per key (Flink's `ListState`); TTL applies per element.
#[derive(Clone, Debug)]
pub struct ListState<K, V> {
    backend: ListBackend<K, V>,
}

impl<K: StateKey, V> ListState<K, V> {
    fn element_expiry(t: &TtlTable<K, Vec<(V, Timestamp)>>) -> Timestamp {
        t.ttl().map_or(Timestamp::MAX, |ttl| t.now().saturating_add(ttl.ttl_ms))
    }

    /// The key's visible elements with their expiry, in insertion order.
    fn visible(&mut self, key: &K) -> &[(V, Timestamp)] {
        let ListBackend::Memory(t) = &mut self.backend;
        let now = t.now();
        let ttl = t.ttl();
        let empty = match t.read(key) {
            None => true,
            Some(list) => {
                let expired = list.partition_point(|(_, exp)| *exp <= now);
                list.drain(..expired);
                if let Some(ttl) = ttl.filter(|t| t.update == TtlUpdate::OnReadAndWrite) {
                    let renewed = now.saturating_add(ttl.ttl_ms);
                    list.iter_mut().for_each(|(_, exp)| *exp = renewed);
                }
                list.is_empty()
            }
        };
        if empty {
            t.remove(key);
            return &[];
        }
        t.peek(key).map_or(&[], |l| &l[..])
    }

    /// The key's visible elements, in insertion order.
    pub fn get(&mut self, key: &K) -> impl Iterator<Item = &V> {
        self.visible(key).iter().map(|(v, _)| v)
    }

    /// Append an element.
    pub fn add(&mut self, key: &K, value: V) {
        let ListBackend::Memory(t) = &mut self.backend;
        let exp = Self::element_expiry(t);
        t.write(key, Vec::new).push((value, exp));
    }

    /// Replace the key's list.
    pub fn update(&mut self, key: &K, values: Vec<V>) {
        let ListBackend::Memory(t) = &mut self.backend;
        if values.is_empty() {
            t.remove(key);
            return;
        }
        let exp = Self::element_expiry(t);
        t.put(key, values.into_iter().map(|v| (v, exp)).collect());
    }

    /// Remove the key's list.
    pub fn clear(&mut self, key: &K) {
        let ListBackend::Memory(t) = &mut self.backend;
        t.remove(key);
    }

    /// Stored entries (keys with a list).
    pub fn entries(&self) -> usize {
        let ListBackend::Memory(t) = &self.backend;
        t.len()
    }
}

#[derive(Clone, Debug)]
enum MapBackend<K, UK, UV> {
    Memory(NestedTable<K, UK, UV>),
}

/// A map per key (Flink's `MapState`); TTL applies per map entry.
#[derive(Clone, Debug)]
pub struct MapState<K, UK, UV> {
    backend: MapBackend<K, UK, UV>,
}

impl<K: StateKey, UK: StateKey, UV> MapState<K, UK, UV> {
    pub fn get(&mut self, key: &K, user_key: &UK) -> Option<&UV> {
        let MapBackend::Memory(t) = &mut self.backend;
        t.get(key, user_key).map(|v| &*v)
    }

    pub fn contains(&mut self, key: &K, user_key: &UK) -> bool {
        self.get(key, user_key).is_some()
    }

    pub fn put(&mut self, key: &K, user_key: UK, value: UV) {
        let MapBackend::Memory(t) = &mut self.backend;
        t.put(key, user_key, value)
    }

    pub fn remove(&mut self, key: &K, user_key: &UK) -> Option<UV> {
        let MapBackend::Memory(t) = &mut self.backend;
        t.remove(key, user_key)
    }

    /// Visit the key's visible entries (in no particular order).
    pub fn for_each(&mut self, key: &K, f: impl FnMut(&UK, &UV)) {
        let MapBackend::Memory(t) = &mut self.backend;
        t.for_each(key, f)
    }

    /// Remove every entry of the key.
    pub fn clear(&mut self, key: &K) {
        let MapBackend::Memory(t) = &mut self.backend;
        t.clear(key)
    }

    /// Stored `(key, user key)` entries, including expired ones not yet cleaned up.
    pub fn entries(&self) -> usize {
        let MapBackend::Memory(t) = &self.backend;
        t.len()
    }

    /// Slots in the expiry queue (0 without TTL).
    pub fn expiry_queue_len(&self) -> usize {
        let MapBackend::Memory(t) = &self.backend;
        t.queue_len()
    }

    /// Remove every expired entry now.
    pub fn expire_all(&mut self) {
        let MapBackend::Memory(t) = &mut self.backend;
        t.expire_all()
    }
}

#[derive(Clone, Debug)]
enum AggBackend<K, Acc> {
    Memory(TtlTable<K, Acc>),
}

/// An incremental aggregate per key (Flink's `AggregatingState`).
#[derive(Clone, Debug)]
pub struct AggregatingState<K, T, A: AggregateFunction<T>> {
    backend: AggBackend<K, A::Acc>,
    agg: A,
    _t: std::marker::PhantomData<fn(&T)>,
}

impl<K: StateKey, T, A: AggregateFunction<T>> AggregatingState<K, T, A> {
    /// Fold `value` into the key's accumulator.
    pub fn add(&mut self, key: &K, value: &T) {
        let AggBackend::Memory(t) = &mut self.backend;
        let agg = &self.agg;
        agg.add(t.write(key, || agg.create()), value);
    }

    /// The key's current result, if it has an accumulator that has not expired.
    pub fn get(&mut self, key: &K) -> Option<A::Out> {
        let AggBackend::Memory(t) = &mut self.backend;
        t.read(key).map(|acc| self.agg.result(acc))
    }

    pub fn clear(&mut self, key: &K) {
        let AggBackend::Memory(t) = &mut self.backend;
        t.remove(key);
    }

    pub fn entries(&self) -> usize {
        let AggBackend::Memory(t) = &self.backend;
        t.len()
    }
}
