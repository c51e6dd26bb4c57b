//! weir-storage: weir's log-structured keyed-state store, one instance per
//! shard, owned by one core (no locks, `!Send`).
//!
//! Writes go to a write-ahead log ([`wal`]) and a `memtable`; full
//! memtables are flushed into immutable sorted [`segment`] files, which
//! `compaction` merges in small budgeted steps. The [`manifest`] is the
//! atomically replaced record of live files and retained checkpoints.
//! See `storage/README.md` for formats and policies.
//!
//! Invariants: `put`/`get`/`delete`/`scan` are synchronous and touch only
//! memory and mmap'd files; everything doing real I/O is `async` and must
//! run inside a glommio executor; after a fatal error (failed fsync) the
//! instance is poisoned and every call returns [`StoreError::Poisoned`].

pub(crate) mod cache;
pub(crate) mod codec;
pub(crate) mod compaction;
pub mod config;
pub mod error;
pub(crate) mod fsutil;
pub mod inflight;
pub mod manifest;
pub(crate) mod memtable;
pub(crate) mod merge;
pub mod segment;
mod store;
pub mod wal;

pub use config::StoreConfig;
pub use error::{Result, StoreError};
pub use store::{CheckpointExport, CheckpointInfo, Clock, CompactionProgress, ManualClock, ScanIter, Stats, Store, SystemClock, WriteBatch};
