//! Choosing the keyed-state backend of a job: [`StateBackendKind`] (configuration:
//! `state_backend = "memory" | "lsm"`, Flink's `hashmap` / `rocksdb` accepted) and
//! [`StateBackend`], the per-operator-instance handle a `StateContext` is built on.
//!
//! For `memory` in a job with checkpoints, [`StateBackend::for_operator`] registers the
//! backend's [`SnapshotWriter`], which writes the snapshots frozen at barriers on a thread of
//! its own (see [`super::snapshot`]).
//!
//! For `lsm`, [`StateBackend::for_operator`] places the operator instance's store in
//! `state_dir/<operator>/shard-<n>` (or, without `state_dir`, in a fresh directory under the
//! system temp dir that is removed when the job ends, or by the next job of another process
//! if this one was killed) and registers the backend's
//! [`StateFlusher`] with the segment, which opens the store at task start.
//!
//! Invariant: one backend (and so one store) per keyed operator instance per shard.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use weir_storage::StoreConfig;

use super::lsm::{native_state_name, LsmOptions, LsmShared, LsmStats, NativeCheckpoint, StateFlusher};
use super::snapshot::{AsyncSnapshots, SnapshotWriter};
use crate::config::EngineConfig;
use crate::error::{Result, WeirError};
use crate::key::{KeyGroups, DEFAULT_MAX_KEY_GROUPS};
use crate::shard::BuildCtx;

/// Which keyed-state backend a job uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// Hash tables in memory (Flink's `hashmap`): fastest; state must fit in memory.
    #[default]
    #[serde(alias = "hashmap")]
    Memory,
    /// The `weir-storage` LSM store with a bounded cache (Flink's `rocksdb`): state larger
    /// than memory, incremental checkpoints.
    #[serde(alias = "rocksdb")]
    Lsm,
}

impl std::str::FromStr for StateBackendKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" | "hashmap" | "heap" => Ok(StateBackendKind::Memory),
            "lsm" | "rocksdb" => Ok(StateBackendKind::Lsm),
            other => Err(format!("unknown state backend `{other}`: use memory (Flink: hashmap) or lsm (Flink: rocksdb)")),
        }
    }
}

#[derive(Clone)]
pub(crate) enum BackendImpl {
    /// With the queue of its snapshot writer when the job checkpoints.
    Memory(Option<Rc<AsyncSnapshots>>),
    Lsm(Rc<LsmShared>),
}

/// The keyed-state backend of one operator instance (cheap to clone: clones share the store).
#[derive(Clone)]
pub struct StateBackend {
    pub(crate) imp: BackendImpl,
    pub(crate) key_groups: KeyGroups,
}

static EPHEMERAL_DIRS: AtomicU64 = AtomicU64::new(0);

impl StateBackend {
    /// The memory backend with `key_groups` (used to cut snapshots by key group).
    pub fn memory(key_groups: KeyGroups) -> Self {
        Self {
            imp: BackendImpl::Memory(None),
            key_groups,
        }
    }

    /// The memory backend with asynchronous snapshots: register the returned writer as the
    /// operator's flusher (it writes the snapshots frozen at barriers; see [`super::snapshot`]).
    pub fn memory_with_snapshots(
        key_groups: KeyGroups,
        control: std::sync::Arc<crate::checkpoint::runtime::CheckpointControl>,
        operator: &str,
        shard: usize,
    ) -> (Self, SnapshotWriter) {
        let snapshots = Rc::new(AsyncSnapshots::default());
        let writer = SnapshotWriter::new(snapshots.clone(), control, operator, shard);
        (
            Self {
                imp: BackendImpl::Memory(Some(snapshots)),
                key_groups,
            },
            writer,
        )
    }

    /// The LSM backend; register the returned flusher with the operator's segment (its
    /// `connect` opens the store; until then no state may be read or written).
    pub fn lsm(options: LsmOptions, key_groups: KeyGroups) -> (Self, StateFlusher) {
        let shared = LsmShared::new(options, key_groups);
        let flusher = StateFlusher::new(shared.clone());
        (
            Self {
                imp: BackendImpl::Lsm(shared),
                key_groups,
            },
            flusher,
        )
    }

    /// The backend the job's configuration asks for, for operator `operator` on the shard being
    /// built (registers the LSM flusher with the segment).
    pub fn for_operator(ctx: &mut BuildCtx<'_>, operator: &str) -> Result<Self> {
        match ctx.config.state_backend {
            StateBackendKind::Memory => match ctx.checkpoint.clone() {
                Some(control) => {
                    let (backend, writer) = Self::memory_with_snapshots(ctx.groups, control, operator, ctx.shard);
                    ctx.add_flusher(Box::new(writer));
                    Ok(backend)
                }
                None => Ok(Self::memory(ctx.groups)),
            },
            StateBackendKind::Lsm => {
                let mut options = lsm_options(ctx.config, operator, ctx.shard)?;
                options.checkpoint_root = ctx.checkpoint.as_ref().map(|c| c.dir.clone());
                let (backend, mut flusher) = Self::lsm(options, ctx.groups);
                flusher.publish_to(ctx.registry.store(operator, ctx.shard));
                ctx.add_flusher(Box::new(flusher));
                Ok(backend)
            }
        }
    }

    pub fn kind(&self) -> StateBackendKind {
        match self.imp {
            BackendImpl::Memory(_) => StateBackendKind::Memory,
            BackendImpl::Lsm(_) => StateBackendKind::Lsm,
        }
    }

    pub fn key_groups(&self) -> KeyGroups {
        self.key_groups
    }

    /// Cache and store figures (LSM only).
    pub fn lsm_stats(&self) -> Option<LsmStats> {
        match &self.imp {
            BackendImpl::Memory(_) => None,
            BackendImpl::Lsm(s) => Some(s.stats()),
        }
    }

    /// Checkpoints take the LSM store's native incremental checkpoint (LSM backend in a job
    /// that checkpoints); otherwise they write the portable snapshot.
    pub fn native_checkpoints(&self) -> bool {
        match &self.imp {
            BackendImpl::Memory(_) => false,
            BackendImpl::Lsm(s) => s.native_checkpoints(),
        }
    }

    /// Checkpoints freeze the states at the barrier and a writer thread writes them
    /// (`StateContext::begin_async_snapshot`): the memory backend in a job that checkpoints.
    pub fn async_snapshots(&self) -> bool {
        matches!(self.imp, BackendImpl::Memory(Some(_)))
    }

    /// At checkpoint barrier `epoch`: begin the store's native checkpoint (see
    /// [`LsmShared::begin_native_checkpoint`]). Only when [`StateBackend::native_checkpoints`].
    pub fn begin_native_checkpoint(&self, epoch: u64) -> Result<()> {
        match &self.imp {
            BackendImpl::Memory(_) => Err(WeirError::State("the memory state backend has no native checkpoints".into())),
            BackendImpl::Lsm(s) => s.begin_native_checkpoint(epoch),
        }
    }

    /// Restore the native checkpoints operator `operator` recorded in `restore` (none: the
    /// checkpoint holds its state in the portable format, restored separately). Call while
    /// the job is built.
    pub fn restore_native(&self, restore: &crate::checkpoint::runtime::RestoreSet, operator: &str) -> Result<()> {
        let recorded = restore.operator_state(&native_state_name(operator));
        if recorded.is_empty() {
            return Ok(());
        }
        let handles = recorded
            .iter()
            .map(|(_, b)| crate::checkpoint::snapshot::decode::<NativeCheckpoint>(b, "native state checkpoint"))
            .collect::<Result<Vec<_>>>()?;
        match &self.imp {
            BackendImpl::Memory(_) => Err(WeirError::Checkpoint(format!(
                "{} holds the state of operator {operator} as incremental LSM store checkpoints: restore it with state.backend = lsm \
                 (Flink: rocksdb), or take a savepoint (portable) to change the state backend",
                restore.description
            ))),
            BackendImpl::Lsm(s) => {
                s.import_native(&restore.dir, handles);
                Ok(())
            }
        }
    }
}

impl Default for StateBackend {
    fn default() -> Self {
        Self::memory(KeyGroups::new(DEFAULT_MAX_KEY_GROUPS, 1))
    }
}

/// Store settings of a state store from the engine configuration. Everything the store keeps
/// in memory scales with the memtable budget `m`: memtables up to `3m` (writes stall there until
/// the flusher flushed), a compaction output image up to `2m`, plus the block cache.
///
/// The store runs **without a write-ahead log** (as Flink runs RocksDB): weir never reopens a
/// state store after a failure — a job either starts from an empty store or restores from a
/// checkpoint, whose store files are flushed and exported at the barrier — so a WAL would
/// only write every byte once more.
pub fn store_config(config: &EngineConfig) -> StoreConfig {
    let memtable = config.state_store_memtable_bytes;
    StoreConfig {
        memtable_budget_bytes: memtable,
        memtable_stall_bytes: memtable * 3,
        wal_max_pending_bytes: (memtable / 2).max(1 << 20),
        compaction_output_bytes: memtable * 2,
        block_cache_bytes: config.state_store_block_cache_bytes,
        wal: false,
        ..StoreConfig::default()
    }
}

/// Temporary store directories are named `weir-state-<pid>-<n>-<operator>-shard-<shard>`.
const TEMP_DIR_PREFIX: &str = "weir-state-";

/// Remove the temporary store directories of processes that are gone (a job killed before it
/// could remove its own). Once per process; directories of live processes are left alone.
fn remove_orphaned_temp_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_DIR_PREFIX)) else {
                continue;
            };
            let Some((pid, _)) = rest.split_once('-') else { continue };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    });
}

/// `name` with every character that is not safe in a file name replaced by `_`.
pub(crate) fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_#.".contains(c) { c } else { '_' })
        .collect()
}

/// The LSM options of operator `operator` on `shard`.
pub fn lsm_options(config: &EngineConfig, operator: &str, shard: usize) -> Result<LsmOptions> {
    let safe = safe_file_name(operator);
    let (dir, ephemeral) = match &config.state_dir {
        Some(root) => (root.join(&safe).join(format!("shard-{shard}")), false),
        None => {
            remove_orphaned_temp_dirs();
            let n = EPHEMERAL_DIRS.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("{TEMP_DIR_PREFIX}{}-{n}-{safe}-shard-{shard}", std::process::id()));
            (dir, true)
        }
    };
    let store = store_config(config);
    store.validate().map_err(|e| WeirError::Config(format!("state store settings: {e}")))?;
    Ok(LsmOptions {
        operator: operator.to_string(),
        shard,
        dir,
        ephemeral,
        cache_bytes: config.state_cache_bytes,
        maintain_step_bytes: config.state_maintain_step_bytes,
        store,
        checkpoint_root: None,
    })
}
