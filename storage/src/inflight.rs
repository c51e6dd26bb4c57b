//! io_uring operations that may outlive the future that asked for them.
//!
//! glommio's open ends with a `statx` the kernel writes into a buffer of the open's own, and a
//! buffered read is copied by a kernel worker into a buffer glommio owns until the completion
//! arrives. When the caller's future is dropped mid-operation (its task cancelled because
//! another task of the executor failed), glommio keeps that buffer only while the executor
//! runs: once the executor ends, the buffer is freed and the kernel may still write into it
//! (heap corruption in some later allocation of another thread).
//!
//! So such operations run through [`detached`]: as a detached task of their own (dropping the
//! caller does not cancel them), counted in [`in_flight`] until the kernel completed them. An
//! executor must not end while [`in_flight`] is above zero; the engine's shards wait for it
//! (`weir`'s `shard::inflight::drain`). One counter serves the store's file creates and the
//! engine's opens and reads.
//!
//! Invariant: the count is per thread (executor) and never negative.

use std::cell::Cell;

thread_local! {
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
}

/// Operations started through [`detached`] on this thread whose completion has not arrived.
pub fn in_flight() -> usize {
    IN_FLIGHT.with(|n| n.get())
}

/// Run `io` (owning what it works on) as a detached task counted in [`in_flight`] until it
/// completes, even if the caller is dropped first. `None` only when the executor itself ends
/// before it completes.
pub async fn detached<T: 'static>(io: impl std::future::Future<Output = T> + 'static) -> Option<T> {
    IN_FLIGHT.with(|n| n.set(n.get() + 1));
    let task = glommio::spawn_local(async move {
        let result = io.await;
        IN_FLIGHT.with(|n| {
            debug_assert!(n.get() > 0, "in-flight count underflow");
            n.set(n.get() - 1)
        });
        result
    })
    .detach();
    task.await
}
