//! The tables behind the state handles, one enum per shape with a variant per backend, and
//! [`TableOps`]: what the `StateContext` (snapshots, restore) and the LSM flusher (write-back,
//! eviction) do with every table of an operator without knowing its types.
//!
//! Values are stored as `Arc<E>` so a handle can hand out `&E` that outlives the table's
//! `RefCell` borrow: the handle keeps a clone of the `Arc` it returned. A write first drops the
//! handle's clone, so the table's `Arc` is unique again unless a frozen snapshot view still
//! shares it ([`unique_mut`] copies it then; a plain `put` just replaces it). `Arc`, not `Rc`,
//! because memory-backend snapshots are serialised on another thread (see [`super::snapshot`]).
//!
//! Invariant: both variants of a table give the same answers for the same calls (the tests run
//! every state test on both backends).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::codec;
use super::cow::Frozen;
use super::lsm::{LsmMapTable, LsmTable};
use super::memory::{NestedTable, Slot, TtlTable, UserMap};
use super::snapshot::{FrozenTable, Scratch};
use super::ttl::StateTtl;
use super::{StateKey, StateValue};
use crate::error::Result;
use crate::key::StableHash;
use crate::time::Timestamp;

/// `&mut E` of a shared value: the value itself when the `Arc` is unique, else a private copy
/// made through its encoding (only when another handle or a frozen snapshot view still holds
/// the old value).
pub(crate) fn unique_mut<E: serde::Serialize + serde::de::DeserializeOwned>(rc: &mut Arc<E>) -> &mut E {
    if Arc::get_mut(rc).is_none() {
        let mut buf = Vec::new();
        codec::encode_into(&**rc, &mut buf);
        let copy: E = codec::decode(&buf, "state value copy").expect("a state value decodes from its own encoding");
        *rc = Arc::new(copy);
    }
    Arc::get_mut(rc).expect("unique after copy")
}

/// What the context and the LSM flusher do with any table.
pub(crate) trait TableOps {
    /// Memory backend: a frozen view of the table for a snapshot (`None` on the LSM backend).
    fn freeze(&self, state: u32) -> Option<Box<dyn FrozenTable>>;
    /// Add one snapshot entry (entry key and stored value, see [`codec`]).
    fn restore_entry(&self, key_group: u32, key: &[u8], value: &[u8]) -> Result<()>;
    /// LSM: write every dirty cached entry to the store; false if the store pushed back.
    fn write_back_all(&self) -> bool;
    /// LSM: some cached entry is dirty (written through after the next input step).
    fn has_dirty(&self) -> bool;
    /// LSM: evict until the shared cache budget holds (or the store pushes back).
    fn evict_to_budget(&self);
    /// LSM: store key → stored value (`None`: deleted) of every dirty cached entry.
    fn dirty_overlay(&self, out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>);
    fn entries(&self) -> usize;
    /// LSM: the entry count after a native restore.
    fn set_entries(&self, n: usize);
}

/// A frozen memory table of one value per key.
struct FrozenKv<K, E> {
    state: u32,
    view: Frozen<K, Slot<Arc<E>>>,
}

impl<K: StateKey + Sync, E: StateValue> FrozenTable for FrozenKv<K, E> {
    fn key_groups(&self, out: &mut Vec<u32>) {
        out.extend(self.view.key_groups());
    }

    fn write_group(&self, key_group: u32, now: Timestamp, out: &mut Vec<u8>, scratch: &mut Scratch) {
        for (k, slot) in self.view.group(key_group) {
            if slot.expiry.is_expired(now) {
                continue;
            }
            scratch.key.clear();
            scratch.value.clear();
            codec::encode_into(k, &mut scratch.key);
            codec::encode_stored(slot.expiry.expires_at, &*slot.value, &mut scratch.value);
            codec::encode_state_entry(self.state, &scratch.key, &scratch.value, out);
        }
    }
}

/// A frozen memory map-state table.
struct FrozenNested<K, UK, UV> {
    state: u32,
    view: Frozen<K, UserMap<UK, Arc<UV>>>,
}

impl<K: StateKey + Sync, UK: StateKey + Sync, UV: StateValue> FrozenTable for FrozenNested<K, UK, UV> {
    fn key_groups(&self, out: &mut Vec<u32>) {
        out.extend(self.view.key_groups());
    }

    fn write_group(&self, key_group: u32, now: Timestamp, out: &mut Vec<u8>, scratch: &mut Scratch) {
        for (k, map) in self.view.group(key_group) {
            for (uk, slot) in map.iter() {
                if slot.expiry.is_expired(now) {
                    continue;
                }
                scratch.key.clear();
                scratch.value.clear();
                codec::encode_into(k, &mut scratch.key);
                codec::encode_into(uk, &mut scratch.key);
                codec::encode_stored(slot.expiry.expires_at, &*slot.value, &mut scratch.value);
                codec::encode_state_entry(self.state, &scratch.key, &scratch.value, out);
            }
        }
    }
}

/// One value per record key: value state (`E = V`), list state (`E = Vec<(V, expiry)>`),
/// aggregating state (`E = accumulator`).
pub(crate) enum KvTable<K, E> {
    Memory(TtlTable<K, Arc<E>>),
    Lsm(LsmTable<K, E>),
}

impl<K: StateKey + StableHash, E: StateValue> KvTable<K, E> {
    pub fn ttl(&self) -> Option<StateTtl> {
        match self {
            KvTable::Memory(t) => t.ttl(),
            KvTable::Lsm(t) => t.ttl(),
        }
    }

    pub fn now(&self) -> Timestamp {
        match self {
            KvTable::Memory(t) => t.now(),
            KvTable::Lsm(t) => t.now(),
        }
    }

    pub fn is_lsm(&self) -> bool {
        matches!(self, KvTable::Lsm(_))
    }

    /// The visible value of `k` (renewed on read under `OnReadAndWrite`).
    pub fn get(&mut self, k: &K) -> Option<Arc<E>> {
        match self {
            KvTable::Memory(t) => t.get(k).cloned(),
            KvTable::Lsm(t) => t.get(k),
        }
    }

    /// Change `k` in place, created by `init` if missing or expired; renews its expiry.
    /// `grow`: bytes the change adds to the encoded value, if known (LSM cache accounting).
    pub fn update<R>(&mut self, k: &K, init: impl FnOnce() -> E, f: impl FnOnce(&mut E) -> R, grow: Option<usize>) -> R {
        match self {
            KvTable::Memory(t) => f(unique_mut(t.write(k, || Arc::new(init())))),
            KvTable::Lsm(t) => t.update(k, init, f, grow),
        }
    }

    pub fn put(&mut self, k: &K, value: E) {
        match self {
            KvTable::Memory(t) => {
                let mut value = Some(value);
                let slot = t.write(k, || Arc::new(value.take().expect("created once")));
                if let Some(v) = value {
                    match Arc::get_mut(slot) {
                        Some(old) => *old = v,
                        // Shared with a frozen snapshot view: the view keeps the old value.
                        None => *slot = Arc::new(v),
                    }
                }
            }
            KvTable::Lsm(t) => t.put(k, value),
        }
    }

    /// Let `f(value, now)` prune or renew the visible value of `k` in place; `f` returns
    /// `(keep, changed)`; not kept: removed. Returns the visible value afterwards.
    pub fn read_modify(&mut self, k: &K, f: impl FnOnce(&mut E, Timestamp) -> (bool, bool)) -> Option<Arc<E>> {
        match self {
            KvTable::Memory(t) => {
                let now = t.now();
                let keep = match t.read(k) {
                    None => return None,
                    Some(rc) => f(unique_mut(rc), now).0,
                };
                if !keep {
                    t.remove(k);
                    return None;
                }
                t.peek(k).cloned()
            }
            KvTable::Lsm(t) => t.read_modify(k, f),
        }
    }

    /// Remove `k`; returns its value if it was visible.
    pub fn remove(&mut self, k: &K) -> Option<Arc<E>> {
        match self {
            KvTable::Memory(t) => t.remove(k),
            KvTable::Lsm(t) => t.remove(k),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            KvTable::Memory(t) => t.len(),
            KvTable::Lsm(t) => t.len(),
        }
    }

    pub fn queue_len(&self) -> usize {
        match self {
            KvTable::Memory(t) => t.queue_len(),
            KvTable::Lsm(_) => 0,
        }
    }

    pub fn expire_all(&mut self) {
        match self {
            KvTable::Memory(t) => t.expire_all(),
            KvTable::Lsm(t) => t.expire_all(),
        }
    }
}

impl<K: StateKey + StableHash, E: StateValue> TableOps for RefCell<KvTable<K, E>> {
    fn freeze(&self, state: u32) -> Option<Box<dyn FrozenTable>> {
        match &*self.borrow() {
            KvTable::Memory(t) => Some(Box::new(FrozenKv { state, view: t.freeze() })),
            KvTable::Lsm(_) => None,
        }
    }

    fn restore_entry(&self, key_group: u32, key: &[u8], value: &[u8]) -> Result<()> {
        match &mut *self.borrow_mut() {
            KvTable::Memory(t) => {
                let k: K = codec::decode(key, "state key")?;
                let (expires_at, v): (Timestamp, E) = codec::decode_stored(value, "state value")?;
                t.restore(k, Arc::new(v), expires_at);
                Ok(())
            }
            KvTable::Lsm(t) => t.restore_entry(key_group, key, value),
        }
    }

    fn write_back_all(&self) -> bool {
        match &mut *self.borrow_mut() {
            KvTable::Memory(_) => true,
            KvTable::Lsm(t) => t.write_back_all(),
        }
    }

    fn has_dirty(&self) -> bool {
        match &*self.borrow() {
            KvTable::Memory(_) => false,
            KvTable::Lsm(t) => t.has_dirty(),
        }
    }

    fn evict_to_budget(&self) {
        if let KvTable::Lsm(t) = &mut *self.borrow_mut() {
            t.evict_to_budget()
        }
    }

    fn dirty_overlay(&self, out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        if let KvTable::Lsm(t) = &*self.borrow() {
            t.dirty_overlay(out)
        }
    }

    fn entries(&self) -> usize {
        self.borrow().len()
    }

    fn set_entries(&self, n: usize) {
        if let KvTable::Lsm(t) = &mut *self.borrow_mut() {
            t.set_entries(n)
        }
    }
}

/// Map state: record key → user key → value.
pub(crate) enum MapTable<K, UK, UV> {
    Memory(NestedTable<K, UK, Arc<UV>>),
    Lsm(LsmMapTable<K, UK, UV>),
}

impl<K: StateKey + StableHash, UK: StateKey, UV: StateValue> MapTable<K, UK, UV> {
    pub fn get(&mut self, k: &K, uk: &UK) -> Option<Arc<UV>> {
        match self {
            MapTable::Memory(t) => t.get(k, uk).cloned(),
            MapTable::Lsm(t) => t.get(k, uk),
        }
    }

    pub fn put(&mut self, k: &K, uk: UK, value: UV) {
        match self {
            MapTable::Memory(t) => t.put(k, uk, Arc::new(value)),
            MapTable::Lsm(t) => t.put(k, uk, value),
        }
    }

    pub fn remove(&mut self, k: &K, uk: &UK) -> Option<Arc<UV>> {
        match self {
            MapTable::Memory(t) => t.remove(k, uk),
            MapTable::Lsm(t) => t.remove(k, uk),
        }
    }

    pub fn for_each(&mut self, k: &K, mut f: impl FnMut(&UK, &UV)) {
        match self {
            MapTable::Memory(t) => t.for_each(k, |uk, v| f(uk, v)),
            MapTable::Lsm(t) => t.for_each(k, f),
        }
    }

    pub fn clear(&mut self, k: &K) {
        match self {
            MapTable::Memory(t) => t.clear(k),
            MapTable::Lsm(t) => t.clear(k),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MapTable::Memory(t) => t.len(),
            MapTable::Lsm(t) => t.len(),
        }
    }

    pub fn queue_len(&self) -> usize {
        match self {
            MapTable::Memory(t) => t.queue_len(),
            MapTable::Lsm(_) => 0,
        }
    }

    pub fn expire_all(&mut self) {
        match self {
            MapTable::Memory(t) => t.expire_all(),
            MapTable::Lsm(t) => t.expire_all(),
        }
    }
}

impl<K: StateKey + StableHash, UK: StateKey, UV: StateValue> TableOps for RefCell<MapTable<K, UK, UV>> {
    fn freeze(&self, state: u32) -> Option<Box<dyn FrozenTable>> {
        match &*self.borrow() {
            MapTable::Memory(t) => Some(Box::new(FrozenNested { state, view: t.freeze() })),
            MapTable::Lsm(_) => None,
        }
    }

    fn restore_entry(&self, key_group: u32, key: &[u8], value: &[u8]) -> Result<()> {
        match &mut *self.borrow_mut() {
            MapTable::Memory(t) => {
                let (k, rest): (K, &[u8]) = codec::take(key, "map state key")?;
                let uk: UK = codec::decode(rest, "map state user key")?;
                let (expires_at, v): (Timestamp, UV) = codec::decode_stored(value, "map state value")?;
                t.restore(k, uk, Arc::new(v), expires_at);
                Ok(())
            }
            MapTable::Lsm(t) => t.restore_entry(key_group, key, value),
        }
    }

    fn write_back_all(&self) -> bool {
        match &mut *self.borrow_mut() {
            MapTable::Memory(_) => true,
            MapTable::Lsm(t) => t.write_back_all(),
        }
    }

    fn has_dirty(&self) -> bool {
        match &*self.borrow() {
            MapTable::Memory(_) => false,
            MapTable::Lsm(t) => t.has_dirty(),
        }
    }

    fn evict_to_budget(&self) {
        if let MapTable::Lsm(t) = &mut *self.borrow_mut() {
            t.evict_to_budget()
        }
    }

    fn dirty_overlay(&self, out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        if let MapTable::Lsm(t) = &*self.borrow() {
            t.dirty_overlay(out)
        }
    }

    fn entries(&self) -> usize {
        self.borrow().len()
    }

    fn set_entries(&self, n: usize) {
        if let MapTable::Lsm(t) = &mut *self.borrow_mut() {
            t.set_entries(n)
        }
    }
}
