//! Bounded cache of verified, decoded data blocks.
//!
//! Segment files are read through `memmap2` (the page cache holds raw
//! bytes); this cache holds blocks whose CRC was checked and whose entry
//! offsets were decoded, so a hot block is verified once per residency.
//! Eviction is FIFO ("second chance" would be a later refinement).
//!
//! Invariant: `used <= budget` after every insert (a block larger than the
//! whole budget is returned but not cached).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use crate::segment::block::Block;

type Key = (u64, u32);

/// Cheap multiplicative hasher for the small integer keys (SipHash showed
/// up in get profiles; keys are not attacker-controlled).
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
}

type Map = HashMap<Key, Rc<Block>, std::hash::BuildHasherDefault<KeyHasher>>;

#[derive(Default)]
struct Inner {
    map: Map,
    order: VecDeque<Key>,
    used: usize,
    hits: u64,
    misses: u64,
}

/// Decoded-block cache shared by the segments of one store.
pub(crate) struct BlockCache {
    budget: usize,
    inner: RefCell<Inner>,
}

impl BlockCache {
    pub(crate) fn new(budget: usize) -> Self {
        BlockCache {
            budget,
            inner: RefCell::default(),
        }
    }

    pub(crate) fn get(&self, seg: u64, block: u32) -> Option<Rc<Block>> {
        let mut i = self.inner.borrow_mut();
        let r = i.map.get(&(seg, block)).cloned();
        if r.is_some() {
            i.hits += 1;
        } else {
            i.misses += 1;
        }
        r
    }

    pub(crate) fn insert(&self, seg: u64, block: u32, b: Rc<Block>) {
        let charge = b.charge();
        if charge > self.budget {
            return;
        }
        let mut i = self.inner.borrow_mut();
        if i.map.contains_key(&(seg, block)) {
            return;
        }
        while i.used + charge > self.budget {
            let Some(k) = i.order.pop_front() else { break };
            if let Some(old) = i.map.remove(&k) {
                i.used -= old.charge();
            }
        }
        i.used += charge;
        i.map.insert((seg, block), b);
        i.order.push_back((seg, block));
        debug_assert!(i.used <= self.budget);
    }

    /// Drops every block of a segment (called when the segment is retired).
    pub(crate) fn forget_segment(&self, seg: u64) {
        let mut i = self.inner.borrow_mut();
        let keys: Vec<Key> = i.map.keys().filter(|k| k.0 == seg).copied().collect();
        for k in keys {
            if let Some(old) = i.map.remove(&k) {
                i.used -= old.charge();
            }
        }
        i.order.retain(|k| k.0 != seg);
    }

    /// (bytes used, hits, misses)
    pub(crate) fn stats(&self) -> (usize, u64, u64) {
        let i = self.inner.borrow();
        (i.used, i.hits, i.misses)
    }
}
