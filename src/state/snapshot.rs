//! Asynchronous snapshots of the memory backend (Flink's `HashMapStateBackend` with its
//! copy-on-write state maps): at a checkpoint barrier the operator only *freezes* its tables —
//! a consistent view that costs a reference-count increment per key group and state (see
//! [`super::cow`]) — and records goes on at once. The backend's [`SnapshotWriter`] (the
//! operator's flusher) then serialises the view on a thread of its own into a keyed state
//! file of the snapshot directory ([`crate::checkpoint::files::KeyedFile`]: one section per key
//! group, the portable format every backend and shard count restores from), fsyncs it, and
//! only then lets the task acknowledge the barrier (`Flusher::complete_snapshot`).
//!
//! Writes made after the barrier copy the chunk they touch (about
//! [`super::cow::SPLIT_AT`] entries, values shared by `Arc`) the first time, so they never
//! reach the frozen view; the thread drops the view when it is done, which frees what the
//! live tables no longer share.
//!
//! A snapshot that cannot be written (disk full, the epoch's directory deleted because the
//! checkpoint was aborted meanwhile) declines its epoch: the coordinator aborts it and deletes
//! its directory, the job goes on, nothing of it is visible.
//!
//! Invariants: snapshots of one operator instance are written one at a time, in epoch order;
//! the file holds exactly the entries visible at the barrier (at the barrier's processing
//! time); the task acknowledges an epoch only after its file is durable or the epoch was
//! declined.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use crate::checkpoint::files::{KeyedFile, KeyedFileWriter};
use crate::checkpoint::runtime::{CheckpointControl, TaskSnapshot};
use crate::checkpoint::snapshot::KeyedSnapshot;
use crate::error::{Result, WeirError};
use crate::shard::Flusher;
use crate::time::Timestamp;

/// Reused encoding buffers of a snapshot writer.
#[derive(Default)]
pub(crate) struct Scratch {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// A frozen view of one state's table, serialisable on another thread.
pub(crate) trait FrozenTable: Send {
    /// Append the key groups holding entries, ascending.
    fn key_groups(&self, out: &mut Vec<u32>);
    /// Append every entry of `key_group` visible at `now` to `out` as snapshot entries
    /// ([`super::codec::KeyedEntry::State`]).
    fn write_group(&self, key_group: u32, now: Timestamp, out: &mut Vec<u8>, scratch: &mut Scratch);
}

/// Every state of one operator instance, frozen at a barrier.
pub struct FrozenState {
    pub(crate) tables: Vec<Box<dyn FrozenTable>>,
    /// Processing time at the barrier: entries expired by then are left out.
    pub(crate) now: Timestamp,
}

impl FrozenState {
    /// The key groups holding entries, ascending, each once.
    fn key_groups(&self) -> Vec<u32> {
        let mut groups = Vec::new();
        for t in &self.tables {
            t.key_groups(&mut groups);
        }
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    /// Write every section into `out` (synchronously: tests and the portable path of callers
    /// without a snapshot writer).
    pub fn write_into(&self, out: &mut KeyedSnapshot) {
        let mut scratch = Scratch::default();
        for kg in self.key_groups() {
            for t in &self.tables {
                t.write_group(kg, self.now, out.group(kg), &mut scratch);
            }
        }
        out.groups.retain(|_, s| !s.is_empty());
    }

    /// Write every section into keyed state file `name` in the existing directory `dir`, one
    /// key group at a time (memory stays bounded by the largest key group), and fsync it.
    pub fn write_file(&self, dir: &Path, name: &str) -> Result<KeyedFile> {
        let mut writer = KeyedFileWriter::create(dir, name)?;
        let mut scratch = Scratch::default();
        let mut section = Vec::new();
        for kg in self.key_groups() {
            section.clear();
            for t in &self.tables {
                t.write_group(kg, self.now, &mut section, &mut scratch);
            }
            writer.section(kg, &section)?;
        }
        writer.finish()
    }
}

/// A snapshot begun at a barrier and not yet acknowledged.
struct Pending {
    epoch: u64,
    /// The view, until the writer thread takes it.
    frozen: Option<FrozenState>,
    /// The writer thread's answer (sent before it drops the view: freeing what the live
    /// tables no longer share takes a while and need not delay the acknowledgement).
    writing: Option<Receiver<Result<KeyedFile>>>,
}

/// Snapshots of one operator instance waiting for their writer, shared by the backend (which
/// queues them at barriers) and its [`SnapshotWriter`].
#[derive(Default)]
pub(crate) struct AsyncSnapshots {
    pending: RefCell<VecDeque<Pending>>,
}

impl AsyncSnapshots {
    pub fn push(&self, epoch: u64, frozen: FrozenState) {
        let mut q = self.pending.borrow_mut();
        assert!(q.back().is_none_or(|p| p.epoch < epoch), "snapshots are begun in epoch order");
        q.push_back(Pending {
            epoch,
            frozen: Some(frozen),
            writing: None,
        });
    }
}

/// The flusher of a memory backend in a job with checkpoints: writes the snapshots begun at
/// barriers on a thread of their own (see the module docs).
pub struct SnapshotWriter {
    snapshots: Rc<AsyncSnapshots>,
    control: Arc<CheckpointControl>,
    operator: String,
    shard: usize,
}

impl SnapshotWriter {
    pub(crate) fn new(snapshots: Rc<AsyncSnapshots>, control: Arc<CheckpointControl>, operator: &str, shard: usize) -> Self {
        Self {
            snapshots,
            control,
            operator: operator.to_string(),
            shard,
        }
    }

    /// Start writing the front snapshot if it is not being written yet.
    fn start(&self, p: &mut Pending) -> Result<()> {
        if p.writing.is_some() {
            return Ok(());
        }
        let frozen = p.frozen.take().expect("a pending snapshot is written once");
        let dir = self.control.snapshot_dir(p.epoch);
        let name = format!(
            "keyed-{}-{}-{}",
            self.control.attempt_token(),
            self.shard,
            super::backend::safe_file_name(&self.operator)
        );
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("weir-snapshot-{}", self.shard))
            .spawn(move || {
                let _ = tx.send(frozen.write_file(&dir, &name));
                drop(frozen);
            })
            .map_err(|e| WeirError::State(format!("starting the snapshot writer thread: {e}")))?;
        p.writing = Some(rx);
        Ok(())
    }
}

impl Flusher for SnapshotWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn has_pending(&self) -> bool {
        false
    }

    fn complete_snapshot<'a>(&'a mut self, epoch: u64, snapshot: &'a mut TaskSnapshot) -> LocalBoxFuture<'a, Result<bool>> {
        let done = (|| {
            let mut q = self.snapshots.pending.borrow_mut();
            let Some(front) = q.front_mut() else { return true };
            if front.epoch != epoch {
                // Acknowledgements go in epoch order: a later epoch's part waits its turn.
                return !q.iter().any(|p| p.epoch == epoch);
            }
            if let Err(e) = self.start(front) {
                q.pop_front();
                snapshot.decline(&self.operator, &e.to_string());
                return true;
            }
            let written = match front.writing.as_ref().expect("started").try_recv() {
                Err(TryRecvError::Empty) => return false,
                Ok(written) => written,
                Err(TryRecvError::Disconnected) => Err(WeirError::State("the snapshot writer thread panicked".into())),
            };
            q.pop_front();
            match written {
                Ok(file) => snapshot.keyed_files.push((self.operator.clone(), file)),
                Err(e) => snapshot.decline(&self.operator, &format!("writing its keyed state: {e}")),
            }
            true
        })();
        Box::pin(async move { Ok(done) })
    }
}
