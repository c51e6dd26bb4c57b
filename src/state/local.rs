//! [`ShardLocal`]: a value that may be moved between threads but is only ever touched on the
//! thread that created it.
//!
//! State handles (`ValueState` etc.) share their table with the operator's `StateContext`
//! through `Rc<RefCell<..>>`, which is neither `Send` nor `Sync`. A `KeyedProcessFunction` must be
//! `Send + Sync` because the job graph is built on one thread and each shard clones the function
//! on its own core; the handles are created later, in `open`, on the shard, and stay there.
//! `ShardLocal` makes that promise checkable: it is `Send + Sync`, remembers the thread it was
//! created on, and asserts on every access that it is still on that thread (a handle used on
//! another core is a programmer error). Dropped on a foreign thread, it leaks its value instead
//! of touching `Rc` counters that belong to another thread.
//!
//! Invariant: the wrapped value is only read, written, cloned or dropped on its owner thread.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_THREAD_TOKEN: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD_TOKEN: Cell<u64> = const { Cell::new(0) };
}

/// A number unique to the calling thread for the life of the process (never reused).
#[inline]
fn thread_token() -> u64 {
    THREAD_TOKEN.with(|t| {
        let v = t.get();
        if v != 0 {
            return v;
        }
        let fresh = NEXT_THREAD_TOKEN.fetch_add(1, Ordering::Relaxed);
        t.set(fresh);
        fresh
    })
}

/// A value bound to the thread that created it (see the module docs).
pub struct ShardLocal<T> {
    owner: u64,
    value: ManuallyDrop<T>,
}

// SAFETY: the value is only accessed (read, written, cloned, dropped) on the owner thread; every
// accessor asserts it, and `Drop` on another thread leaks instead of dropping. Moving the
// wrapper itself between threads touches no part of `T`.
unsafe impl<T> Send for ShardLocal<T> {}
// SAFETY: `&ShardLocal<T>` gives access to `T` only on the owner thread (asserted), so two
// threads can never observe `T` at the same time.
unsafe impl<T> Sync for ShardLocal<T> {}

impl<T> ShardLocal<T> {
    pub fn new(value: T) -> Self {
        Self {
            owner: thread_token(),
            value: ManuallyDrop::new(value),
        }
    }

    #[inline]
    fn check(&self) {
        assert!(
            thread_token() == self.owner,
            "keyed state used on a thread other than the shard that created it (state handles stay on their shard)"
        );
    }

    #[inline]
    pub fn get(&self) -> &T {
        self.check();
        &self.value
    }

    #[inline]
    pub fn get_mut(&mut self) -> &mut T {
        self.check();
        &mut self.value
    }
}

impl<T: Clone> Clone for ShardLocal<T> {
    fn clone(&self) -> Self {
        Self::new(self.get().clone())
    }
}

impl<T> Drop for ShardLocal<T> {
    fn drop(&mut self) {
        if thread_token() == self.owner {
            // SAFETY: dropped exactly once, here, on the owner thread.
            unsafe { ManuallyDrop::drop(&mut self.value) }
        }
        // On another thread the value is leaked: its `Rc`s belong to the owner thread.
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn usable_on_its_thread_and_movable_but_not_usable_elsewhere() {
        let local = ShardLocal::new(Rc::new(5));
        assert_eq!(**local.get(), 5);
        let copy = local.clone();
        assert_eq!(Rc::strong_count(copy.get()), 2);
        let moved = std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| **copy.get()));
            (r.is_err(), copy)
        })
        .join()
        .unwrap();
        assert!(moved.0, "access on another thread is refused");
        drop(moved.1);
        assert_eq!(Rc::strong_count(local.get()), 1);
    }
}
