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

pub mod coordinator;
pub mod files;
pub mod protocol;
pub mod runtime;
pub mod snapshot;
