//! External wake-ups: a plain thread that wakes every shard's reactor on an interval through
//! the executor's eventfd, independent of glommio's timers.
//!
//! Why: every shard already wakes on a glommio timer every `wakeup_tick_ms` (the guard against
//! lost cross-core channel wake-ups, see [`super::keep_awake_every`]), but that guard is itself
//! a glommio timer, and glommio 0.9's timers have been seen not to fire on a loaded VM (a shard
//! parked in `io_uring_wait_cqes` with 0 CPU time for minutes while its peers ticked; upstream
//! reports the same, glommio issues 326 and 547). A reactor that wakes for any reason fires its
//! expired timers and re-checks its shared channels, so waking it from outside turns such a
//! stall into a delay of at most `external_wakeup_ms`.
//!
//! How: each shard's watcher registers its task's waker in an [`AtomicWaker`] slot and the
//! thread calls `wake()` on every slot each interval; glommio routes a wake from another
//! thread through the executor's foreign-wake queue and eventfd.
//!
//! Invariants: one thread per job run, stopped (and joined) when the job's shards have ended;
//! no lock on the shard side (one atomic register per wake-up); a slot with no registered waker
//! is skipped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

/// The wake-up slots of one job's shards and the thread that fires them.
pub struct ExternalWakeups {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    slots: Vec<AtomicWaker>,
    stop: AtomicBool,
}

impl ExternalWakeups {
    /// Start the thread waking `shards` slots every `period`.
    pub fn start(shards: usize, period: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            slots: (0..shards).map(|_| AtomicWaker::new()).collect(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("weir-wakeups".into()).spawn(move || {
            while !s.stop.load(Ordering::Acquire) {
                std::thread::park_timeout(period);
                for slot in &s.slots {
                    slot.wake();
                }
            }
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// The slot of `shard`, to await on that shard's executor.
    pub fn slot(&self, shard: usize) -> WakeupSlot {
        assert!(shard < self.shared.slots.len(), "shard {shard} has no wake-up slot");
        WakeupSlot {
            shared: self.shared.clone(),
            shard,
        }
    }
}

impl Drop for ExternalWakeups {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// One shard's end: [`WakeupSlot::next`] completes at the next external wake-up.
#[derive(Clone)]
pub struct WakeupSlot {
    shared: Arc<Shared>,
    shard: usize,
}

impl WakeupSlot {
    /// A future that completes once the thread woke this slot (or on a spurious poll).
    pub fn next(&self) -> NextWakeup<'_> {
        NextWakeup { slot: self, registered: false }
    }
}

/// See [`WakeupSlot::next`].
pub struct NextWakeup<'a> {
    slot: &'a WakeupSlot,
    registered: bool,
}

impl Future for NextWakeup<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        self.slot.shared.slots[self.slot.shard].register(cx.waker());
        self.registered = true;
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shard whose only pending future is the external slot still gets woken, repeatedly.
    #[test]
    fn the_thread_wakes_a_parked_executor_again_and_again() {
        let wakeups = ExternalWakeups::start(1, Duration::from_millis(1)).unwrap();
        let slot = wakeups.slot(0);
        let woken = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .spawn(move || async move {
                let mut n = 0;
                while n < 5 {
                    slot.next().await;
                    n += 1;
                }
                n
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(woken, 5);
    }
}
