//! The idempotency window: the last `capacity` idempotency keys the gateway accepted, with the
//! partition and ordinals their events got, so a retried request is answered with the first
//! attempt's result instead of being appended again.
//!
//! Keys are remembered from the moment their request is appended (so a retry racing the first
//! attempt's commit waits for it rather than appending twice) and rebuilt from the log at
//! start-up (the key is stored with the request's first event), so the window survives a crash.
//!
//! Invariants: at most `capacity` keys are held (the oldest is forgotten first); a key maps to
//! exactly one append; a key whose append failed is removed so the retry appends.

use std::collections::{HashMap, VecDeque};

/// Where a key's request went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub partition: usize,
    /// Ordinal of the request's first event in its partition.
    pub first: u64,
    pub count: u32,
}

/// The bounded window of recent idempotency keys.
pub struct DedupWindow {
    capacity: usize,
    keys: HashMap<Box<[u8]>, Accepted>,
    order: VecDeque<Box<[u8]>>,
}

impl DedupWindow {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            keys: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<Accepted> {
        self.keys.get(key).copied()
    }

    /// Remember `key` (the caller checked it is new).
    pub fn insert(&mut self, key: &[u8], accepted: Accepted) {
        if self.capacity == 0 {
            return;
        }
        if self.keys.insert(key.into(), accepted).is_none() {
            self.order.push_back(key.into());
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// Recovery: remember a key found in the log.
    pub fn insert_durable(&mut self, key: &[u8], partition: usize, first: u64, count: u32) {
        self.insert(key, Accepted { partition, first, count });
    }

    /// Forget a key whose append failed, so the retry appends.
    pub fn remove(&mut self, key: &[u8]) {
        if self.keys.remove(key).is_some() {
            if let Some(i) = self.order.iter().rposition(|k| &**k == key) {
                self.order.remove(i);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_keys_up_to_capacity() {
        let mut w = DedupWindow::new(2);
        let a = |first| Accepted { partition: 0, first, count: 1 };
        w.insert(b"k1", a(1));
        w.insert(b"k2", a(2));
        w.insert(b"k3", a(3));
        assert_eq!(w.get(b"k1"), None);
        assert_eq!(w.get(b"k3"), Some(a(3)));
        w.remove(b"k3");
        assert_eq!((w.get(b"k3"), w.len()), (None, 1));
        w.insert(b"k4", a(4));
        assert_eq!(w.get(b"k2"), Some(a(2)));
    }
}
