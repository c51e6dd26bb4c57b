//! Keyed state (Flink's `ValueState`, `ListState`, `MapState`, `AggregatingState`) with
//! processing-time TTL, on a memory or an LSM backend, snapshotted by key group.
//!
//! A keyed function creates its states once per operator instance, in `open`, from a
//! [`StateContext`]: `ctx.value::<V>("count", None)`, `ctx.list`, `ctx.map`, `ctx.aggregating`.
//! Every state is partitioned by the record key `K`: methods take the key explicitly (the key
//! the function was called with), so a state never leaks across keys. A state lives on the shard
//! that owns its keys' key groups and is touched by that shard's thread only (a handle is
//! [`local::ShardLocal`]: movable, usable only on its shard).
//!
//! Keys, user keys and values are serialisable ([`StateKey`], [`StateValue`]: serde, encoded
//! with postcard, see [`codec`]): the LSM backend stores them and both backends snapshot them.
//!
//! TTL ([`StateTtl`], see [`ttl`]): expired values are never returned (`NeverReturnExpired`),
//! time is the operator's processing-time [`StateClock`], set by the operator once per batch
//! and per timer callback. Memory backend: expired entries are removed incrementally (every
//! access pops a bounded number of due slots from an expiry queue ordered by time). LSM
//! backend: the store reads the same clock, filters expired entries on read and drops them in
//! compaction.
//!
//! ## Backends
//!
//! Chosen per job (`EngineConfig::state_backend`, SQL `SET 'state.backend'`), see [`backend`]:
//! - **memory** ([`memory`]): copy-on-write hash tables per state, partitioned by key group
//!   ([`cow`]); values behind `Arc` so a handle can return `&V` after the table borrow ends
//!   (the handle keeps the `Arc` it returned) and so a frozen snapshot view can share them.
//! - **lsm** ([`lsm`]): one `weir-storage` store per keyed operator instance per shard, store
//!   key `(key group, state id, key[, user key])` so a key group's state is one contiguous
//!   range; a bounded write-back cache of decoded values in front (dirty entries reach the store
//!   on eviction and at checkpoints); store I/O, maintenance and checkpoints run in the
//!   operator's flusher, never on the data path beyond the store's synchronous reads.
//!
//! Each state handle holds an `Rc<RefCell<table>>` whose table is an enum with one variant per
//! backend (module `table`); the context keeps the same tables as `TableOps` objects to
//! snapshot and restore them.
//!
//! ## Snapshots
//!
//! [`StateContext::snapshot`] writes every visible entry of every state into a
//! [`KeyedSnapshot`], one section per key group (`KeyGroups::key_group(key.stable_hash())`),
//! as [`codec::KeyedEntry::State`] entries carrying the stored bytes; the format is the same
//! for both backends, so a snapshot restores on either and on any shard count
//! ([`StateContext::restore`] takes whatever key groups the shard now owns, decoding entries
//! in place). In a job that checkpoints, the memory backend snapshots **asynchronously**
//! ([`StateContext::begin_async_snapshot`], [`snapshot`]): the tables are frozen at the barrier
//! and a snapshot thread writes the same format into a keyed state file. The LSM backend has
//! native incremental checkpoints ([`StateBackend::begin_native_checkpoint`]).
//!
//! Metrics: every state registers an entry gauge under its name; [`StateContext::entry_counts`]
//! reads them (memory: entries not yet cleaned up are counted; LSM: entries that expired
//! unseen stay counted until read).
//!
//! Invariants: state names are unique per operator (a duplicate is a programmer error); the
//! clock never goes back; entry gauges equal the stored entries after every call.

pub mod backend;
pub mod codec;
pub(crate) mod cow;
pub mod local;
pub mod lsm;
pub mod memory;
pub mod snapshot;
pub(crate) mod table;
pub mod ttl;

#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::hash::Hash;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use backend::BackendImpl;
pub use backend::{StateBackend, StateBackendKind};
pub use codec::{KeyedEntry, TimerKind};
use local::ShardLocal;
use lsm::{LsmMapTable, LsmTable};
pub use lsm::{LsmOptions, LsmStats, StateFlusher};
use memory::{NestedTable, TtlTable};
use table::{KvTable, MapTable, TableOps};
pub use ttl::{StateClock, StateTtl, TtlUpdate};

use crate::checkpoint::snapshot::{KeyedRestore, KeyedSnapshot};
use crate::error::{Result, WeirError};
use crate::key::StableHash;
use crate::operator::aggregate::AggregateFunction;
use crate::time::Timestamp;

/// Bounds every state key (record key or map user key) needs (`Sync`: memory-backend
/// snapshots are serialised on another thread, see [`snapshot`]).
pub trait StateKey: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static {}
impl<T: Hash + Eq + Clone + Send + Sync + Serialize + DeserializeOwned + 'static> StateKey for T {}

/// Bounds every state value and accumulator needs (`Send + Sync`: memory-backend snapshots
/// are serialised on another thread, see [`snapshot`]).
pub trait StateValue: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> StateValue for T {}

/// A value handed out by reference: the last one a handle returned stays alive here.
struct Handle<T, S> {
    table: Rc<RefCell<T>>,
    last: Option<Arc<S>>,
}

impl<T, S> Clone for Handle<T, S> {
    fn clone(&self) -> Self {
        Self {
            table: self.table.clone(),
            last: None,
        }
    }
}

/// The value of an `Arc` the caller gets to keep (copied only if another handle or a frozen
/// snapshot view still holds it).
fn into_owned<V: StateValue>(rc: Arc<V>) -> V {
    Arc::try_unwrap(rc).unwrap_or_else(|mut rc| {
        table::unique_mut(&mut rc);
        Arc::try_unwrap(rc).unwrap_or_else(|_| unreachable!("unique after copy"))
    })
}

/// The handle of a state with one value per key (value, list, aggregating).
type KvHandle<K, E> = ShardLocal<Handle<KvTable<K, E>, E>>;

struct Registered {
    name: String,
    id: u32,
    table: Rc<dyn TableOps>,
}

/// Where the states of one operator instance are created.
pub struct StateContext<K> {
    clock: StateClock,
    backend: StateBackend,
    gauges: RefCell<Vec<(String, Arc<AtomicUsize>)>>,
    tables: RefCell<Vec<Registered>>,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<K: StateKey + StableHash> StateContext<K> {
    /// A context on the memory backend (default key groups, one shard).
    pub fn new(clock: StateClock) -> Self {
        Self::with_backend(clock, StateBackend::default())
    }

    /// A context on `backend` (LSM: the backend's store reads `clock` for TTL).
    pub fn with_backend(clock: StateClock, backend: StateBackend) -> Self {
        if let BackendImpl::Lsm(shared) = &backend.imp {
            shared.set_clock(clock.clone());
        }
        Self {
            clock,
            backend,
            gauges: RefCell::new(Vec::new()),
            tables: RefCell::new(Vec::new()),
            _k: std::marker::PhantomData,
        }
    }

    /// The processing-time clock every state of this context reads.
    pub fn clock(&self) -> &StateClock {
        &self.clock
    }

    pub fn backend(&self) -> &StateBackend {
        &self.backend
    }

    /// Register an entry gauge named `name` (unique per context).
    pub fn gauge(&self, name: &str) -> Arc<AtomicUsize> {
        let mut gauges = self.gauges.borrow_mut();
        assert!(gauges.iter().all(|(n, _)| n != name), "state {name:?} created twice in one operator");
        let g = Arc::new(AtomicUsize::new(0));
        gauges.push((name.to_string(), g.clone()));
        g
    }

    fn register(&self, name: &str, id: u32, table: Rc<dyn TableOps>) {
        let mut tables = self.tables.borrow_mut();
        if let Some(other) = tables.iter().find(|r| r.id == id) {
            panic!("states {name:?} and {:?} have the same state id {id:#x}; rename one", other.name);
        }
        if let BackendImpl::Lsm(shared) = &self.backend.imp {
            shared.register(id, Rc::downgrade(&table));
        }
        tables.push(Registered {
            name: name.to_string(),
            id,
            table,
        });
    }

    fn kv_table<E: StateValue>(&self, name: &str, ttl: Option<StateTtl>) -> Rc<RefCell<KvTable<K, E>>> {
        let gauge = self.gauge(name);
        let id = codec::state_id(name);
        let table = match &self.backend.imp {
            BackendImpl::Memory(_) => KvTable::Memory(TtlTable::new(ttl, self.clock.clone(), gauge, self.backend.key_groups)),
            BackendImpl::Lsm(shared) => KvTable::Lsm(LsmTable::new(shared.clone(), id, ttl, self.clock.clone(), gauge)),
        };
        let table = Rc::new(RefCell::new(table));
        self.register(name, id, table.clone());
        table
    }

    /// A single value per key.
    pub fn value<V: StateValue>(&self, name: &str, ttl: Option<StateTtl>) -> ValueState<K, V> {
        ValueState {
            h: ShardLocal::new(Handle {
                table: self.kv_table(name, ttl),
                last: None,
            }),
        }
    }

    /// A list per key (TTL per element).
    pub fn list<V: StateValue>(&self, name: &str, ttl: Option<StateTtl>) -> ListState<K, V> {
        ListState {
            h: ShardLocal::new(Handle {
                table: self.kv_table(name, ttl),
                last: None,
            }),
        }
    }

    /// A map per key (TTL per map entry).
    pub fn map<UK: StateKey, UV: StateValue>(&self, name: &str, ttl: Option<StateTtl>) -> MapState<K, UK, UV> {
        let gauge = self.gauge(name);
        let id = codec::state_id(name);
        let table = match &self.backend.imp {
            BackendImpl::Memory(_) => MapTable::Memory(NestedTable::new(ttl, self.clock.clone(), gauge, self.backend.key_groups)),
            BackendImpl::Lsm(shared) => MapTable::Lsm(LsmMapTable::new(shared.clone(), id, ttl, self.clock.clone(), gauge)),
        };
        let table = Rc::new(RefCell::new(table));
        self.register(name, id, table.clone());
        MapState {
            h: ShardLocal::new(Handle { table, last: None }),
        }
    }

    /// An incremental aggregate per key.
    pub fn aggregating<T, A>(&self, name: &str, agg: A, ttl: Option<StateTtl>) -> AggregatingState<K, T, A>
    where
        A: AggregateFunction<T>,
        A::Acc: StateValue,
    {
        AggregatingState {
            h: ShardLocal::new(Handle {
                table: self.kv_table(name, ttl),
                last: None,
            }),
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

    /// Append every visible entry of every state created here to `out`, one section per key
    /// group (the portable format both backends restore from, on any shard count).
    pub fn snapshot(&self, out: &mut KeyedSnapshot) -> Result<()> {
        match &self.backend.imp {
            BackendImpl::Memory(_) => {
                self.freeze().write_into(out);
                Ok(())
            }
            BackendImpl::Lsm(shared) => shared.snapshot(out),
        }
    }

    /// Memory backend: a consistent view of every state as it is now (microseconds: see
    /// [`cow`]); later writes do not change it.
    pub fn freeze(&self) -> snapshot::FrozenState {
        snapshot::FrozenState {
            tables: self.tables.borrow().iter().filter_map(|r| r.table.freeze(r.id)).collect(),
            now: self.clock.now(),
        }
    }

    /// At checkpoint barrier `epoch` (memory backend with a snapshot writer, see
    /// [`StateBackend::async_snapshots`]): freeze every state and queue the view for the
    /// backend's writer, which writes it on its own thread before the task acknowledges.
    pub fn begin_async_snapshot(&self, epoch: u64) -> Result<()> {
        match &self.backend.imp {
            BackendImpl::Memory(Some(snapshots)) => {
                snapshots.push(epoch, self.freeze());
                Ok(())
            }
            _ => Err(WeirError::State("asynchronous snapshots need the memory backend with a snapshot writer".into())),
        }
    }

    /// Restore the state entries of `restore` (timer entries are the operator's and skipped).
    /// Call after the states were created and before the first record. LSM: the entries are
    /// written to the store when the operator's flusher connects.
    pub fn restore(&self, restore: &KeyedRestore) -> Result<()> {
        restore.for_each_section(|kg, section| {
            codec::for_each_entry(section, &restore.operator, kg, |entry| match entry {
                codec::KeyedEntryBorrowed::State { state, key, value } => self.restore_state(kg, state, key, value),
                codec::KeyedEntryBorrowed::Timer { .. } => Ok(()),
            })
        })
    }

    /// Restore one state entry of key group `key_group`.
    pub fn restore_state(&self, key_group: u32, state: u32, key: &[u8], value: &[u8]) -> Result<()> {
        let tables = self.tables.borrow();
        let Some(r) = tables.iter().find(|r| r.id == state) else {
            let names: Vec<&str> = tables.iter().map(|r| r.name.as_str()).collect();
            return Err(WeirError::State(format!(
                "the snapshot holds state id {state:#x}, which this operator does not create (its states: {names:?})"
            )));
        };
        r.table.restore_entry(key_group, key, value)
    }
}

/// One value per key (Flink's `ValueState`).
pub struct ValueState<K, V> {
    h: KvHandle<K, V>,
}

impl<K, V> Clone for ValueState<K, V> {
    fn clone(&self) -> Self {
        Self { h: self.h.clone() }
    }
}

impl<K, V> std::fmt::Debug for ValueState<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ValueState")
    }
}

impl<K: StateKey + StableHash, V: StateValue> ValueState<K, V> {
    /// The key's value, if set and not expired.
    pub fn value(&mut self, key: &K) -> Option<&V> {
        let h = self.h.get_mut();
        h.last = h.table.borrow_mut().get(key);
        h.last.as_deref()
    }

    /// Set the key's value.
    pub fn update(&mut self, key: &K, value: V) {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().put(key, value)
    }

    /// Change the key's value in place, starting from `init()` if unset or expired.
    pub fn update_with<R>(&mut self, key: &K, init: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().update(key, init, f, None)
    }

    /// Remove the key's value; returns it if it was visible.
    pub fn clear(&mut self, key: &K) -> Option<V> {
        let h = self.h.get_mut();
        h.last = None;
        let removed = h.table.borrow_mut().remove(key);
        removed.map(into_owned)
    }

    /// Stored entries (keys), including expired ones not yet cleaned up.
    pub fn entries(&self) -> usize {
        self.h.get().table.borrow().len()
    }

    /// Slots in the expiry queue (0 without TTL, and on the LSM backend).
    pub fn expiry_queue_len(&self) -> usize {
        self.h.get().table.borrow().queue_len()
    }

    /// Remove every expired entry now (unbounded work; the incremental cleanup makes this
    /// unnecessary in operators). LSM: expired cached entries; the store drops its own.
    pub fn expire_all(&mut self) {
        self.h.get_mut().table.borrow_mut().expire_all()
    }
}

type ListTable<K, V> = KvTable<K, Vec<(V, Timestamp)>>;

/// A list per key (Flink's `ListState`); TTL applies per element.
pub struct ListState<K, V> {
    /// Elements carry their own expiry; appended in time order, so expired ones are a prefix.
    h: KvHandle<K, Vec<(V, Timestamp)>>,
}

impl<K, V> Clone for ListState<K, V> {
    fn clone(&self) -> Self {
        Self { h: self.h.clone() }
    }
}

impl<K, V> std::fmt::Debug for ListState<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ListState")
    }
}

impl<K: StateKey + StableHash, V: StateValue> ListState<K, V> {
    fn element_expiry(t: &ListTable<K, V>) -> Timestamp {
        t.ttl().map_or(Timestamp::MAX, |ttl| t.now().saturating_add(ttl.ttl_ms))
    }

    /// The key's visible elements, in insertion order.
    pub fn get(&mut self, key: &K) -> impl Iterator<Item = &V> {
        let h = self.h.get_mut();
        h.last = None;
        let got = {
            let mut t = h.table.borrow_mut();
            let renew = t.ttl().filter(|t| t.update == TtlUpdate::OnReadAndWrite);
            t.read_modify(key, |list, now| {
                let expired = list.partition_point(|(_, exp)| *exp <= now);
                list.drain(..expired);
                let mut changed = expired > 0;
                if let Some(ttl) = renew {
                    let renewed = now.saturating_add(ttl.ttl_ms);
                    list.iter_mut().for_each(|(_, exp)| *exp = renewed);
                    changed = true;
                }
                (!list.is_empty(), changed)
            })
        };
        h.last = got;
        h.last.as_deref().map_or(&[][..], |l| &l[..]).iter().map(|(v, _)| v)
    }

    /// Append an element.
    pub fn add(&mut self, key: &K, value: V) {
        let h = self.h.get_mut();
        h.last = None;
        let mut t = h.table.borrow_mut();
        let exp = Self::element_expiry(&t);
        let grow = t.is_lsm().then(|| codec::encoded_len(&(&value, exp)));
        t.update(key, Vec::new, |l| l.push((value, exp)), grow);
    }

    /// Replace the key's list.
    pub fn update(&mut self, key: &K, values: Vec<V>) {
        let h = self.h.get_mut();
        h.last = None;
        let mut t = h.table.borrow_mut();
        if values.is_empty() {
            t.remove(key);
            return;
        }
        let exp = Self::element_expiry(&t);
        t.put(key, values.into_iter().map(|v| (v, exp)).collect());
    }

    /// Remove the key's list.
    pub fn clear(&mut self, key: &K) {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().remove(key);
    }

    /// Stored entries (keys with a list).
    pub fn entries(&self) -> usize {
        self.h.get().table.borrow().len()
    }
}

/// A map per key (Flink's `MapState`); TTL applies per map entry.
pub struct MapState<K, UK, UV> {
    h: ShardLocal<Handle<MapTable<K, UK, UV>, UV>>,
}

impl<K, UK, UV> Clone for MapState<K, UK, UV> {
    fn clone(&self) -> Self {
        Self { h: self.h.clone() }
    }
}

impl<K, UK, UV> std::fmt::Debug for MapState<K, UK, UV> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MapState")
    }
}

impl<K: StateKey + StableHash, UK: StateKey, UV: StateValue> MapState<K, UK, UV> {
    pub fn get(&mut self, key: &K, user_key: &UK) -> Option<&UV> {
        let h = self.h.get_mut();
        h.last = h.table.borrow_mut().get(key, user_key);
        h.last.as_deref()
    }

    pub fn contains(&mut self, key: &K, user_key: &UK) -> bool {
        self.get(key, user_key).is_some()
    }

    pub fn put(&mut self, key: &K, user_key: UK, value: UV) {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().put(key, user_key, value)
    }

    pub fn remove(&mut self, key: &K, user_key: &UK) -> Option<UV> {
        let h = self.h.get_mut();
        h.last = None;
        let removed = h.table.borrow_mut().remove(key, user_key);
        removed.map(into_owned)
    }

    /// Visit the key's visible entries (memory: in no particular order; LSM: in user-key
    /// encoding order). `f` must not use this state.
    pub fn for_each(&mut self, key: &K, f: impl FnMut(&UK, &UV)) {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().for_each(key, f)
    }

    /// Remove every entry of the key.
    pub fn clear(&mut self, key: &K) {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().clear(key)
    }

    /// Stored `(key, user key)` entries, including expired ones not yet cleaned up.
    pub fn entries(&self) -> usize {
        self.h.get().table.borrow().len()
    }

    /// Slots in the expiry queue (0 without TTL, and on the LSM backend).
    pub fn expiry_queue_len(&self) -> usize {
        self.h.get().table.borrow().queue_len()
    }

    /// Remove every expired entry now.
    pub fn expire_all(&mut self) {
        self.h.get_mut().table.borrow_mut().expire_all()
    }
}

/// An incremental aggregate per key (Flink's `AggregatingState`).
pub struct AggregatingState<K, T, A: AggregateFunction<T>> {
    h: KvHandle<K, A::Acc>,
    agg: A,
    _t: std::marker::PhantomData<fn(&T)>,
}

impl<K, T, A: AggregateFunction<T>> Clone for AggregatingState<K, T, A> {
    fn clone(&self) -> Self {
        Self {
            h: self.h.clone(),
            agg: self.agg.clone(),
            _t: std::marker::PhantomData,
        }
    }
}

impl<K, T, A: AggregateFunction<T>> std::fmt::Debug for AggregatingState<K, T, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AggregatingState")
    }
}

impl<K: StateKey + StableHash, T, A: AggregateFunction<T>> AggregatingState<K, T, A>
where
    A::Acc: StateValue,
{
    /// Fold `value` into the key's accumulator.
    pub fn add(&mut self, key: &K, value: &T) {
        let h = self.h.get_mut();
        h.last = None;
        let agg = &self.agg;
        h.table.borrow_mut().update(key, || agg.create(), |acc| agg.add(acc, value), None);
    }

    /// The key's current result, if it has an accumulator that has not expired.
    pub fn get(&mut self, key: &K) -> Option<A::Out> {
        let h = self.h.get_mut();
        let acc = h.table.borrow_mut().get(key)?;
        Some(self.agg.result(&acc))
    }

    pub fn clear(&mut self, key: &K) {
        let h = self.h.get_mut();
        h.last = None;
        h.table.borrow_mut().remove(key);
    }

    pub fn entries(&self) -> usize {
        self.h.get().table.borrow().len()
    }
}
