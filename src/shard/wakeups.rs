//! External wake-ups: a plain thread that wakes every shard's reactor on an interval through
//! the executor's eventfd, independent of glommio's timers — and interrupts a reactor that
//! stays parked anyway.
//!
//! Why: every shard already wakes on a glommio timer every `wakeup_tick_ms` (the guard against
//! lost cross-core channel wake-ups, see [`super::keep_awake_every`]), but that guard is itself
//! a glommio timer, and glommio 0.9's timers have been seen not to fire on a loaded VM (a shard
//! parked in `io_uring_wait_cqes` with 0 CPU time for minutes while its peers ticked; upstream
//! reports the same, glommio issues 326 and 547). A reactor that wakes for any reason fires its
//! expired timers and re-checks its shared channels, so waking it from outside turns such a
//! stall into a delay of at most `external_wakeup_ms`.
//!
//! The eventfd wake is not always enough: benchmark runs froze with both shards parked in
//! `io_uring_enter` and the wake-up thread running, and a SIGSTOP/SIGCONT (or a debugger
//! attaching) freed them at once — a signal makes `io_uring_enter` return `EINTR`, which
//! glommio treats as "woke up". So the thread also watches each shard's *progress*: the shard's
//! watcher bumps a generation every time it runs. A shard whose generation has not moved for
//! `reactor_kick_ms` is sent [`kick_signal`] with `pthread_kill` (a no-op handler, installed
//! once per process without `SA_RESTART`), and the first kick of each stall is logged. A
//! shard that is merely busy (a long step) gets a harmless interruption.
//!
//! How: each shard's watcher registers its task's waker in an [`AtomicWaker`] slot and the
//! thread calls `wake()` on every slot each interval; glommio routes a wake from another
//! thread through the executor's foreign-wake queue and eventfd.
//!
//! Invariants: one thread per job run, stopped (and joined) when the job's shards have ended;
//! no lock on the shard's hot side (one atomic register and one relaxed increment per
//! wake-up); a slot with no registered waker is skipped; a signal is only ever sent to a thread
//! attached to its slot, under the slot's lock, and a shard detaches (under the same lock)
//! before its thread ends — so no signal can reach an exited or reused thread id.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

/// The wake-up slots of one job's shards and the thread that fires them.
pub struct ExternalWakeups {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct Shared {
    slots: Vec<Slot>,
    stop: AtomicBool,
    /// Every kick of this run, added to the job's counter (metrics).
    kicks_total: Arc<AtomicU64>,
}

/// One shard's wake-up state.
#[derive(Default)]
struct Slot {
    waker: AtomicWaker,
    /// Bumped by the shard each time its watcher runs: progress, as the thread sees it.
    generation: AtomicU64,
    /// The shard's thread while it is attached (see [`WakeupSlot::attach_current_thread`]).
    thread: Mutex<Option<libc::pthread_t>>,
}

/// The signal sent to a shard whose reactor made no progress: a real-time signal (none of
/// glibc's reserved ones; glommio's optional stall detector uses `SIGUSR1`).
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 6
}

extern "C" fn ignore_kick(_: libc::c_int) {}

/// Install the no-op handler for [`kick_signal`] once per process, without `SA_RESTART`, so a
/// kicked `io_uring_enter` returns `EINTR` instead of being restarted.
fn install_kick_handler() -> std::io::Result<()> {
    static INSTALLED: OnceLock<i32> = OnceLock::new();
    let errno = *INSTALLED.get_or_init(|| {
        // SAFETY: a plain sigaction with an async-signal-safe (empty) handler; the struct is
        // zeroed, then its handler and an empty mask set.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore_kick as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = 0;
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut())
        };
        if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL)
        }
    });
    match errno {
        0 => Ok(()),
        e => Err(std::io::Error::from_raw_os_error(e)),
    }
}

impl ExternalWakeups {
    /// Start the thread waking `shards` slots every `period` and kicking (see the module doc) an
    /// attached shard that made no progress for `kick_after`.
    /// Every kick is counted in `kicks_total` (the job's metric).
    pub fn start(shards: usize, period: Duration, kick_after: Duration, kicks_total: Arc<AtomicU64>) -> std::io::Result<Self> {
        install_kick_handler()?;
        let shared = Arc::new(Shared {
            slots: (0..shards).map(|_| Slot::default()).collect(),
            stop: AtomicBool::new(false),
            kicks_total,
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new().name("weir-wakeups".into()).spawn(move || {
            // Per slot: the generation last seen, when it last moved, and whether this stall
            // was already reported.
            let mut seen: Vec<(u64, std::time::Instant, bool)> = s.slots.iter().map(|_| (0, std::time::Instant::now(), false)).collect();
            while !s.stop.load(Ordering::Acquire) {
                std::thread::park_timeout(period);
                let now = std::time::Instant::now();
                for (shard, (slot, seen)) in s.slots.iter().zip(seen.iter_mut()).enumerate() {
                    slot.waker.wake();
                    let generation = slot.generation.load(Ordering::Relaxed);
                    if generation != seen.0 {
                        *seen = (generation, now, false);
                        continue;
                    }
                    let stalled = now.duration_since(seen.1);
                    if stalled >= kick_after && slot.kick(&s.kicks_total) && !seen.2 {
                        tracing::warn!(
                            shard,
                            stalled_ms = stalled.as_millis() as u64,
                            "shard made no progress (a long step, or a parked reactor); interrupting it"
                        );
                        seen.2 = true;
                    }
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

impl Slot {
    /// Signal the attached thread, if any; true if a signal was sent.
    fn kick(&self, total: &AtomicU64) -> bool {
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tid) = *thread else { return false };
        // SAFETY: `tid` is a live thread: it detaches under this lock before it ends.
        let rc = unsafe { libc::pthread_kill(tid, kick_signal()) };
        if rc == 0 {
            total.fetch_add(1, Ordering::Relaxed);
        }
        rc == 0
    }
}

impl WakeupSlot {
    /// A future that completes once the thread woke this slot (or on a spurious poll).
    /// Each completion counts as progress of the shard.
    pub fn next(&self) -> NextWakeup<'_> {
        NextWakeup { slot: self, registered: false }
    }

    /// Let the thread interrupt the calling thread (the shard's) when it makes no progress,
    /// until the returned guard is dropped — which must happen on this thread, before it ends.
    pub fn attach_current_thread(&self) -> AttachedThread<'_> {
        let slot = &self.shared.slots[self.shard];
        slot.generation.fetch_add(1, Ordering::Relaxed);
        // SAFETY: pthread_self has no preconditions.
        *slot.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(unsafe { libc::pthread_self() });
        AttachedThread { slot }
    }
}

/// See [`WakeupSlot::attach_current_thread`].
pub struct AttachedThread<'a> {
    slot: &'a Slot,
}

impl Drop for AttachedThread<'_> {
    fn drop(&mut self) {
        *self.slot.thread.lock().unwrap_or_else(|e| e.into_inner()) = None;
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
        let slot = &self.slot.shared.slots[self.slot.shard];
        slot.generation.fetch_add(1, Ordering::Relaxed);
        if self.registered {
            return Poll::Ready(());
        }
        slot.waker.register(cx.waker());
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
        let wakeups = ExternalWakeups::start(1, Duration::from_millis(1), Duration::from_secs(3600), Arc::default()).unwrap();
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

    /// A thread blocked in a syscall that only a signal ends early (here `poll` on an empty
    /// pipe, with a 60 s timeout as the failure bound) makes no progress: the wake-up thread
    /// kicks it, the syscall returns `EINTR`, and the thread detaches. The kick counter says the
    /// signal came from the wake-up thread.
    #[test]
    fn a_thread_that_makes_no_progress_is_interrupted() {
        let total = Arc::new(AtomicU64::new(0));
        let wakeups = ExternalWakeups::start(1, Duration::from_millis(1), Duration::from_millis(20), total.clone()).unwrap();
        let slot = wakeups.slot(0);
        let mut fds = [0; 2];
        // SAFETY: a plain pipe(2) into a two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read_end, write_end) = (fds[0], fds[1]);
        let outcome = std::thread::spawn(move || {
            let attached = slot.attach_current_thread();
            let mut pfd = libc::pollfd {
                fd: read_end,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own.
            let n = unsafe { libc::poll(&mut pfd, 1, 60_000) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            drop(attached);
            (n, errno)
        })
        .join()
        .unwrap();
        assert_eq!(outcome, (-1, Some(libc::EINTR)));
        assert!(total.load(Ordering::Relaxed) >= 1, "the kick is counted for the job");
        // SAFETY: closing the two fds we opened.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
    }
}
