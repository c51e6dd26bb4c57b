//! Test helpers: a recording `Push` for operator unit tests, and [`StateHarness`], a keyed-state
//! context on either backend. (The in-process job harness is [`crate::api::StreamEnv`] with
//! [`crate::api::DataStream::collect`].)

use std::cell::RefCell;
use std::rc::Rc;

use crate::batch::{Batch, Mark};
use crate::key::{KeyGroups, StableHash, DEFAULT_MAX_KEY_GROUPS};
use crate::operator::Push;
use crate::shard::Flusher;
use crate::state::{LsmOptions, LsmStats, StateBackend, StateBackendKind, StateClock, StateContext, StateFlusher, StateKey};
use crate::time::Timestamp;

/// What a [`Recorder`] saw.
#[derive(Debug)]
pub struct Recorded<T> {
    pub batches: Vec<(Vec<T>, Vec<Mark>)>,
    pub watermarks: Vec<Timestamp>,
    pub ended: bool,
}

/// A `Push` that records every call, for operator unit tests.
pub struct Recorder<T> {
    log: Rc<RefCell<Recorded<T>>>,
}

impl<T> Recorder<T> {
    pub fn new() -> (Self, Rc<RefCell<Recorded<T>>>) {
        let log = Rc::new(RefCell::new(Recorded {
            batches: Vec::new(),
            watermarks: Vec::new(),
            ended: false,
        }));
        (Self { log: log.clone() }, log)
    }
}

impl<T> Push<T> for Recorder<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        let records = std::mem::take(&mut batch.records);
        let marks = std::mem::take(&mut batch.marks);
        batch.timestamps.clear();
        self.log.borrow_mut().batches.push((records, marks));
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.log.borrow_mut().watermarks.push(wm);
    }
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
    fn end(&mut self) {
        self.log.borrow_mut().ended = true;
    }
}

/// Run `fut` to completion on a fresh glommio executor on this thread (LSM state tests need
/// one: the store does its I/O through glommio).
pub fn run_local<F: std::future::Future>(fut: F) -> F::Output {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(fut)
}

static HARNESS_DIRS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A state backend for tests (see [`test_backend`]).
pub struct TestBackend {
    pub backend: StateBackend,
    /// LSM: connect it before touching state; run it with `has_pending`/`flush`.
    pub flusher: Option<StateFlusher>,
    /// LSM without an explicit directory: the temporary store directory (removed on drop).
    pub temp_dir: Option<std::path::PathBuf>,
}

/// A backend of `kind` for tests; LSM gets a small store (64 KiB memtables, 1 KiB blocks) in
/// `dir` or a fresh temporary directory, and a cache of `cache_bytes`.
pub fn test_backend(kind: StateBackendKind, cache_bytes: usize, groups: KeyGroups, dir: Option<std::path::PathBuf>) -> TestBackend {
    match kind {
        StateBackendKind::Memory => TestBackend {
            backend: StateBackend::memory(groups),
            flusher: None,
            temp_dir: None,
        },
        StateBackendKind::Lsm => {
            let n = HARNESS_DIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let temp = dir
                .is_none()
                .then(|| std::env::temp_dir().join(format!("weir-state-test-{}-{n}", std::process::id())));
            let options = LsmOptions {
                operator: "test".into(),
                shard: 0,
                dir: dir.or(temp.clone()).expect("a directory"),
                ephemeral: temp.is_some(),
                cache_bytes,
                maintain_step_bytes: 64 << 10,
                checkpoint_root: None,
                store: weir_storage::StoreConfig {
                    memtable_budget_bytes: 64 << 10,
                    memtable_stall_bytes: 192 << 10,
                    wal_max_pending_bytes: 256 << 10,
                    wal_segment_bytes: 1 << 20,
                    io_chunk_bytes: 64 << 10,
                    block_bytes: 1024,
                    block_cache_bytes: 64 << 10,
                    compaction_output_bytes: 256 << 10,
                    // With the store's WAL (jobs run without one, see
                    // `state::backend::store_config`; the integration tests cover that): its
                    // back-pressure keeps these tiny harness stores' cache behaviour as the
                    // unit tests expect it.
                    ..weir_storage::StoreConfig::default()
                },
            };
            let (backend, flusher) = StateBackend::lsm(options, groups);
            TestBackend {
                backend,
                flusher: Some(flusher),
                temp_dir: temp,
            }
        }
    }
}

/// A [`StateContext`] on a chosen backend for tests: the LSM variant gets a small store in a
/// fresh temporary directory (removed on drop) so little data exercises memtable flushes and
/// compaction. Create states, optionally `restore`, then [`StateHarness::connect`] (inside
/// [`run_local`]) before touching them.
pub struct StateHarness<K> {
    pub ctx: StateContext<K>,
    pub clock: StateClock,
    backend: TestBackend,
}

impl<K: StateKey + StableHash> StateHarness<K> {
    /// Backend `kind`, LSM cache budget `cache_bytes`, clock at `now`, default key groups.
    pub fn new(kind: StateBackendKind, cache_bytes: usize, now: Timestamp) -> Self {
        Self::with_groups(kind, cache_bytes, now, KeyGroups::new(DEFAULT_MAX_KEY_GROUPS, 1), None)
    }

    /// Like [`StateHarness::new`] with explicit key groups and (LSM) store directory `dir`
    /// (kept on drop; `None`: a temporary one).
    pub fn with_groups(kind: StateBackendKind, cache_bytes: usize, now: Timestamp, groups: KeyGroups, dir: Option<std::path::PathBuf>) -> Self {
        let clock = StateClock::new(now);
        let backend = test_backend(kind, cache_bytes, groups, dir);
        Self {
            ctx: StateContext::with_backend(clock.clone(), backend.backend.clone()),
            clock,
            backend,
        }
    }

    /// Open the LSM store (applying a restore); a no-op on the memory backend.
    pub async fn connect(&mut self) {
        if let Some(f) = &mut self.backend.flusher {
            f.connect().await.expect("open the state store");
        }
    }

    /// Run the LSM flusher (maintenance, back-pressure relief) until it has nothing to do.
    pub async fn pump(&mut self) {
        if let Some(f) = &mut self.backend.flusher {
            for _ in 0..10_000 {
                if !f.has_pending() {
                    return;
                }
                f.flush().await.expect("state flusher");
            }
            panic!("the state flusher never settles");
        }
    }

    /// LSM: the flusher's `pre_commit` (the store's incremental checkpoint).
    /// LSM: take native checkpoint `epoch` as a barrier does (begin it, then let the flusher
    /// flush and export it below `root`); returns the snapshot part it recorded.
    pub async fn native_checkpoint(&mut self, epoch: u64, root: &std::path::Path) -> crate::checkpoint::runtime::TaskSnapshot {
        let mut snapshot = crate::checkpoint::runtime::TaskSnapshot::default();
        let crate::state::backend::BackendImpl::Lsm(shared) = &self.backend.backend.imp else {
            panic!("native checkpoints need the LSM backend");
        };
        shared.set_checkpoint_root(root);
        self.backend.backend.begin_native_checkpoint(epoch).expect("begin the store checkpoint");
        let f = self.backend.flusher.as_mut().expect("LSM flusher");
        for _ in 0..100_000 {
            if f.complete_snapshot(epoch, &mut snapshot).await.expect("store checkpoint") {
                return snapshot;
            }
        }
        panic!("the native checkpoint did not complete");
    }

    /// LSM: close the store (as at the end of a job).
    pub async fn close(&mut self) {
        if let Some(f) = &mut self.backend.flusher {
            f.close().await.expect("close the state store");
        }
    }

    pub fn lsm_stats(&self) -> Option<LsmStats> {
        self.ctx.backend().lsm_stats()
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(d) = &self.temp_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
