//! Copy-on-write hash tables of the memory state backend: a consistent view of a whole table
//! costs one reference-count increment per key group, and the data path goes on writing while
//! a snapshot thread serialises that view (Flink's `CopyOnWriteStateMap` idea, at chunk
//! granularity).
//!
//! Layout: key → [`StableHash`] → key group (as everywhere in weir) → one [`Group`] per key
//! group, behind an `Arc` → `2^bits` chunks selected by the hash's high bits → an `FxHashMap`
//! per chunk, behind an `Arc`. [`CowMap::freeze`] clones the group pointers into a [`Frozen`]
//! view (`Send` when keys and values are `Send + Sync`): one reference-count increment per
//! non-empty key group (at most `max_key_groups`, whatever the state's size). A later write
//! to a group a view still shares first copies the group's chunk list (pointers), and a write
//! to a chunk a view still shares copies that chunk (`Arc::make_mut`): about [`SPLIT_AT`]
//! entries at most, so the copy a write can cause is small and bounded, and every group and
//! chunk is copied at most once per view. Values are copied by `Clone` (the state tables keep them behind
//! `Arc`, so a chunk copy is a reference-count increment per entry). Reads never copy.
//!
//! A group's chunk count doubles when it averages more than [`SPLIT_AT`] entries per chunk
//! (amortised like a hash table's growth); the keys are rehashed into the new chunks.
//!
//! Invariants: an entry lives in the chunk `chunk_of(hash, bits)` of the group
//! `key_group(hash)`; `len` is the sum of the groups' `len`, each the sum of its chunks' sizes;
//! a [`Frozen`] view never changes after it was taken.

use std::hash::Hash;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::key::{KeyGroups, StableHash};

/// Mean entries per chunk above which a group doubles its chunks.
pub(crate) const SPLIT_AT: usize = 256;

type Chunk<K, V> = FxHashMap<K, V>;

/// The entries of one key group.
#[derive(Clone, Debug)]
struct Group<K, V> {
    bits: u32,
    chunks: Vec<Arc<Chunk<K, V>>>,
    len: usize,
}

impl<K, V> Default for Group<K, V> {
    fn default() -> Self {
        Self {
            bits: 0,
            chunks: Vec::new(),
            len: 0,
        }
    }
}

#[inline]
fn chunk_of(hash: u64, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        (hash >> (64 - bits)) as usize
    }
}

/// A hash map from `K` to `V`, partitioned by key group, with cheap consistent views.
#[derive(Clone, Debug)]
pub(crate) struct CowMap<K, V> {
    /// By key group; empty groups share one empty `Group` until first written.
    groups: Vec<Arc<Group<K, V>>>,
    key_groups: KeyGroups,
    len: usize,
}

impl<K: Hash + Eq + Clone + StableHash, V: Clone> CowMap<K, V> {
    pub fn new(key_groups: KeyGroups) -> Self {
        let empty = Arc::new(Group::default());
        Self {
            groups: (0..key_groups.max_key_groups()).map(|_| empty.clone()).collect(),
            key_groups,
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn place(&self, k: &K) -> (usize, u64) {
        let h = k.stable_hash();
        (self.key_groups.key_group(h) as usize, h)
    }

    #[inline]
    fn chunk(&self, g: usize, h: u64) -> Option<&Chunk<K, V>> {
        let group = &self.groups[g];
        group.chunks.get(chunk_of(h, group.bits)).map(|c| &**c)
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        let (g, h) = self.place(k);
        self.chunk(g, h)?.get(k)
    }

    /// The chunk of `(g, h)` for writing (created if the group is empty): copied first if a
    /// frozen view shares it.
    #[inline]
    fn chunk_mut(&mut self, g: usize, h: u64) -> &mut Chunk<K, V> {
        let group = Arc::make_mut(&mut self.groups[g]);
        if group.chunks.is_empty() {
            group.chunks.push(Arc::new(FxHashMap::default()));
        }
        let c = chunk_of(h, group.bits);
        Arc::make_mut(&mut group.chunks[c])
    }

    /// `&mut` of the value of `k` (copying what a frozen view shares only if `k` is present).
    pub fn get_mut(&mut self, k: &K) -> Option<&mut V> {
        let (g, h) = self.place(k);
        let chunk = self.chunk(g, h)?;
        if !chunk.contains_key(k) {
            return None;
        }
        self.chunk_mut(g, h).get_mut(k)
    }

    /// Insert or replace; returns the previous value.
    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let (g, h) = self.place(&k);
        let old = self.chunk_mut(g, h).insert(k, v);
        if old.is_none() {
            self.grew(g);
        }
        old
    }

    /// The value of `k` for writing, inserted by `create` if absent; `true` if it was created.
    pub fn get_or_insert_with(&mut self, k: &K, create: impl FnOnce() -> V) -> (&mut V, bool) {
        let (g, h) = self.place(k);
        let chunk = self.chunk_mut(g, h);
        if chunk.contains_key(k) {
            return (self.chunk_mut(g, h).get_mut(k).expect("present"), false);
        }
        chunk.insert(k.clone(), create());
        if self.grew(g) {
            return (self.get_mut(k).expect("just inserted"), true);
        }
        (self.chunk_mut(g, h).get_mut(k).expect("just inserted"), true)
    }

    /// Remove `k` (copying what a frozen view shares only if `k` is present).
    pub fn remove(&mut self, k: &K) -> Option<V> {
        let (g, h) = self.place(k);
        if !self.chunk(g, h)?.contains_key(k) {
            return None;
        }
        let removed = self.chunk_mut(g, h).remove(k);
        if removed.is_some() {
            self.len -= 1;
            Arc::make_mut(&mut self.groups[g]).len -= 1;
        }
        removed
    }

    /// Group `g` gained an entry: count it and double its chunks if they are too full (then
    /// `true`: entries moved).
    fn grew(&mut self, g: usize) -> bool {
        self.len += 1;
        let group = Arc::make_mut(&mut self.groups[g]);
        group.len += 1;
        if group.len <= group.chunks.len() * SPLIT_AT {
            return false;
        }
        let bits = group.bits + 1;
        let mut chunks: Vec<Chunk<K, V>> = (0..1usize << bits).map(|_| FxHashMap::default()).collect();
        for chunk in std::mem::take(&mut group.chunks) {
            let entries: Vec<(K, V)> = match Arc::try_unwrap(chunk) {
                Ok(owned) => owned.into_iter().collect(),
                Err(shared) => shared.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            };
            for (k, v) in entries {
                chunks[chunk_of(k.stable_hash(), bits)].insert(k, v);
            }
        }
        group.bits = bits;
        group.chunks = chunks.into_iter().map(Arc::new).collect();
        true
    }

    /// Visit every entry mutably (copies every shared chunk).
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&K, &mut V)) {
        for group in self.groups.iter_mut() {
            for chunk in Arc::make_mut(group).chunks.iter_mut() {
                for (k, v) in Arc::make_mut(chunk).iter_mut() {
                    f(k, v);
                }
            }
        }
    }

    /// A consistent view of the map as it is now (see the module docs).
    pub fn freeze(&self) -> Frozen<K, V> {
        Frozen {
            groups: self
                .groups
                .iter()
                .enumerate()
                .filter(|(_, group)| group.len > 0)
                .map(|(g, group)| (g as u32, group.clone()))
                .collect(),
        }
    }
}

/// One key group in a [`Frozen`] view.
type FrozenGroup<K, V> = (u32, Arc<Group<K, V>>);

/// A frozen view of a [`CowMap`]: the chunks of the non-empty groups by key group, ascending.
pub(crate) struct Frozen<K, V> {
    groups: Vec<FrozenGroup<K, V>>,
}

impl<K, V> Frozen<K, V> {
    /// The non-empty key groups, ascending.
    pub fn key_groups(&self) -> impl Iterator<Item = u32> + '_ {
        self.groups.iter().map(|(g, _)| *g)
    }

    /// The entries of key group `key_group`, in no order.
    pub fn group(&self, key_group: u32) -> impl Iterator<Item = (&K, &V)> {
        let chunks: &[Arc<Chunk<K, V>>] = match self.groups.binary_search_by_key(&key_group, |(g, _)| *g) {
            Ok(i) => &self.groups[i].1.chunks,
            Err(_) => &[],
        };
        chunks.iter().flat_map(|c| c.iter())
    }

    /// Every entry with its key group.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u32, &K, &V)> {
        self.groups
            .iter()
            .flat_map(|(g, group)| group.chunks.iter().flat_map(move |c| c.iter().map(move |(k, v)| (*g, k, v))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_after_freeze_do_not_reach_the_view_and_groups_split() {
        let groups = KeyGroups::new(16, 1);
        let mut m: CowMap<u64, u64> = CowMap::new(groups);
        for k in 0..10_000u64 {
            assert_eq!(m.insert(k, k), None);
        }
        assert_eq!(m.len(), 10_000);
        let view = m.freeze();
        for k in 0..10_000u64 {
            *m.get_mut(&k).unwrap() += 1;
        }
        for k in 10_000..20_000u64 {
            m.insert(k, k);
        }
        for k in 0..5_000u64 {
            assert_eq!(m.remove(&k), Some(k + 1));
        }
        assert_eq!(m.remove(&0), None);
        assert_eq!(m.len(), 15_000);
        // The view still holds exactly the state at the freeze.
        let mut seen: Vec<(u64, u64)> = view.iter().map(|(_, k, v)| (*k, *v)).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000u64).map(|k| (k, k)).collect::<Vec<_>>());
        for (g, k, _) in view.iter() {
            assert_eq!(groups.key_group(k.stable_hash()), g);
        }
        let sizes: usize = view.key_groups().map(|g| view.group(g).count()).sum();
        assert_eq!(sizes, 10_000);
        // And the live map answers from its own copy.
        for k in 5_000..10_000u64 {
            assert_eq!(m.get(&k), Some(&(k + 1)));
        }
        for k in 10_000..20_000u64 {
            assert_eq!(m.get(&k), Some(&k));
        }
        let (v, created) = m.get_or_insert_with(&3, || 33);
        assert!(created && *v == 33);
        let (v, created) = m.get_or_insert_with(&3, || 44);
        assert!(!created && *v == 33);
        let mut sum = 0u64;
        m.for_each_mut(|_, v| {
            *v += 1;
            sum += 1;
        });
        assert_eq!(sum as usize, m.len());
        // Chunks stay near the split threshold.
        for group in m.groups.iter() {
            assert!(group.chunks.iter().all(|c| c.len() <= SPLIT_AT * 4), "chunk too large");
        }
    }
}
