//! In-memory write buffer: an ordered map from key to the newest [`Entry`].
//!
//! Invariants: `bytes` equals the sum of [`entry_cost`] over all entries;
//! `max_seq` is the largest sequence number applied (0 when empty).

use std::collections::BTreeMap;
use std::ops::Bound;

/// Kind of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A value.
    Put = 0,
    /// A tombstone hiding older values of the key.
    Delete = 1,
}

impl Kind {
    pub(crate) fn from_u8(b: u8) -> Option<Kind> {
        match b {
            0 => Some(Kind::Put),
            1 => Some(Kind::Delete),
            _ => None,
        }
    }
}

/// The newest version of a key: value or tombstone, with optional expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub kind: Kind,
    /// Expiry time in ms since the epoch; 0 means never.
    pub expire_ms: u64,
    pub value: Vec<u8>,
}

impl Entry {
    /// A value that reads see at time `now_ms`.
    pub(crate) fn is_live(&self, now_ms: u64) -> bool {
        self.kind == Kind::Put && !self.is_expired(now_ms)
    }
    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_ms != 0 && self.expire_ms <= now_ms
    }
    /// A tombstone.
    pub(crate) fn tombstone() -> Entry {
        Entry {
            kind: Kind::Delete,
            expire_ms: 0,
            value: Vec::new(),
        }
    }
}

/// Accounting cost of one entry (payload plus an estimate of map overhead).
pub(crate) fn entry_cost(key: &[u8], e: &Entry) -> usize {
    key.len() + e.value.len() + 64
}

/// Sorted in-memory table.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    map: BTreeMap<Vec<u8>, Entry>,
    bytes: usize,
    max_seq: u64,
}

impl Memtable {
    pub(crate) fn apply(&mut self, seq: u64, key: &[u8], entry: Entry) {
        debug_assert!(seq >= self.max_seq, "sequence numbers go forward");
        self.max_seq = seq;
        self.bytes += entry_cost(key, &entry);
        if let Some(old) = self.map.insert(key.to_vec(), entry) {
            self.bytes -= entry_cost(key, &old);
        }
    }
    pub(crate) fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.map.get(key)
    }
    pub(crate) fn range<'a>(&'a self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> impl Iterator<Item = (&'a Vec<u8>, &'a Entry)> + 'a {
        self.map.range::<[u8], _>((lo, hi))
    }
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
    pub(crate) fn max_seq(&self) -> u64 {
        self.max_seq
    }
}
