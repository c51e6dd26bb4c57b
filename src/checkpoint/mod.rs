//! Checkpoints: the epoch protocol that makes a job's state and output consistent.
//!
//! [`protocol`] is the coordinator as a pure state machine (no I/O, no clock of its own): it
//! decides when to open epoch *n*, tracks acknowledgements from every participant (each shard's
//! snapshot, each two-phase-commit sink's pre-commit), completes, times out, aborts and
//! subsumes epochs, and tells its driver what to do. The driver (barrier injection at sources,
//! alignment in the rings, snapshot writing, the manifest) is built around it.
//!
//! Invariants (asserted): epochs only increase; an epoch completes at most once and only when
//! every participant acknowledged it; an aborted epoch never completes (so it has no visible
//! effect: two-phase-commit sinks commit only on `Complete`); completing epoch *n* subsumes
//! every pending epoch below *n*.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub mod coordinator;
pub mod files;
pub mod protocol;
pub mod runtime;
pub mod snapshot;

/// Crash test hook: when the environment variable `WEIR_CRASH_POINT` is `<name>:<n>`, the
/// process aborts (as abruptly as SIGKILL: no destructors, no flushing) the `n`-th time it
/// reaches the checkpoint step `name`. Steps: `barrier-sent` (a task sent its barrier on,
/// before acknowledging), `state-written` (the checkpoint's state file is durable, its
/// metadata is not), `metadata-written` (the checkpoint is complete, sinks have not committed).
/// Costs one load per checkpoint step when unset.
pub fn crash_point(name: &str) {
    static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let point = POINT.get_or_init(|| {
        let v = std::env::var("WEIR_CRASH_POINT").ok()?;
        let (n, count) = v.split_once(':').unwrap_or((&v, "1"));
        Some((n.to_string(), count.parse().unwrap_or(1)))
    });
    if let Some((n, at)) = point {
        if n == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *at {
            eprintln!("weir: WEIR_CRASH_POINT {name}:{at} reached: aborting");
            std::process::abort();
        }
    }
}
