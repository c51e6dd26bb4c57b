//! A single-threaded broadcast wake-up for the gateway thread: tasks wait for "something
//! changed" (a commit finished, a roll ended) and re-check their condition.
//!
//! Invariant: `notify_all` wakes every task waiting at that moment; a wait that starts after a
//! notification waits for the next one (callers check their condition before waiting).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every waiting task on [`Notify::notify_all`].
#[derive(Default)]
pub(crate) struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub(crate) fn notify_all(&self) {
        self.generation.set(self.generation.get() + 1);
        for w in self.waiters.borrow_mut().drain(..) {
            w.wake();
        }
    }

    /// Completes at the next [`Self::notify_all`].
    pub(crate) fn wait(&self) -> Wait<'_> {
        Wait {
            notify: self,
            seen: self.generation.get(),
        }
    }
}

pub(crate) struct Wait<'a> {
    notify: &'a Notify,
    seen: u64,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            return Poll::Ready(());
        }
        // A wait is polled again only after a wake-up, so the list holds about one waker per
        // waiting task; it is emptied at every notification.
        self.notify.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}
