//! The LSM keyed-state backend: the states of one keyed operator instance on one shard live in
//! one [`weir_storage::Store`], with a bounded write-back cache of decoded values in front.
//!
//! **Layout** (see [`super::codec`]): store key `key group | state id | entry key`, stored value
//! `(expires_at, payload)`. Value, list and aggregating states keep one store entry per record
//! key (a list is one entry holding its elements with their expiries); map state keeps one
//! store entry per `(key, user key)`.
//!
//! **Cache**: every state has its own cache of decoded entries (`LsmTable`: a slab with a hash
//! index; `LsmMapTable`: ordered by entry key so one key's user entries are a range); all
//! caches of the operator share one byte budget (`LsmShared::cache_used`, charged with an
//! estimate: fixed slot overhead plus the postcard size of the value). A miss reads the store
//! once and caches the answer, absent keys included. Writes only touch the cache and mark the
//! entry dirty; a dirty entry reaches the store when it is evicted (second-chance CLOCK, run
//! before a miss inserts), at a checkpoint ([`LsmShared::checkpoint`]) and when the flusher relieves
//! back-pressure. A tombstone is written only for keys the store may hold (`in_store`).
//!
//! **Store writes never wait**: `put`/`delete` are synchronous memtable appends (the store runs
//! without a WAL, see [`super::backend::store_config`]: checkpoints flush the memtable instead).
//! When the store answers `Backpressure` (memtables full), eviction stops, the
//! cache stays over budget for the rest of the input step and the backend is `blocked`; the
//! operator's [`StateFlusher`] then flushes memtables and evicts down to the
//! budget before the next input step. Store maintenance (flushes, compaction) runs only in the
//! flusher, in steps of `maintain_step_bytes`.
//!
//! **TTL**: the store reads the operator's [`StateClock`] (through [`StateClockAdapter`]) and
//! is given each entry's expiry, so a read never returns an expired entry and compaction drops
//! them; the cache checks the same expiry. There is no expiry queue: expired entries that are
//! never touched again are removed by compaction, and until then they stay in the entry count.
//!
//! **Errors**: a store or decoding error on the synchronous path cannot be returned through the
//! state API; it is recorded (`LsmShared::fail`), the access behaves as if the entry were
//! absent, and the flusher fails the job at the end of the input step.
//!
//! Invariants: `cache_used` equals the sum of the charged bytes of every cached slot; a slot is
//! dirty iff the store does not yet hold its cached version (or its deletion); the store is
//! only touched on the shard's thread, by the states between input steps' flushes and by the
//! flusher while no state code runs; before `connect` opened the store no state is accessed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_storage::{Clock, Store, StoreConfig, StoreError};

use super::codec::{self, HEADER_BYTES, META_KEY_GROUP};
use super::table::{unique_mut, TableOps};
use super::ttl::{StateClock, StateTtl, TtlUpdate};
use crate::checkpoint::snapshot::KeyedSnapshot;
use crate::error::{Result, WeirError};
use crate::key::{KeyGroups, StableHash};
use crate::shard::metrics::{StoreGauges, STORE_PUBLISH_EVERY};
use crate::shard::Flusher;
use crate::time::Timestamp;

/// Where and how one operator instance's LSM store lives.
#[derive(Clone, Debug)]
pub struct LsmOptions {
    /// Operator name (in errors and file names).
    pub operator: String,
    pub shard: usize,
    /// The store directory (one per operator instance and shard).
    pub dir: PathBuf,
    /// Remove `dir` when the job ends (no `state_dir` configured: nothing to restore from).
    pub ephemeral: bool,
    /// Byte budget shared by the caches of all states of the operator instance.
    pub cache_bytes: usize,
    /// Bytes of store maintenance (memtable flush, compaction) per flusher step.
    pub maintain_step_bytes: u64,
    pub store: StoreConfig,
    /// The job's checkpoint directory when it checkpoints: checkpoints then take the store's
    /// native incremental checkpoint and export it to `chk-<epoch>/native/<operator>/shard-<n>`.
    pub checkpoint_root: Option<PathBuf>,
}

/// Where an operator instance's native (incremental) store checkpoint lives, recorded in the
/// checkpoint as operator state under [`native_state_name`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NativeCheckpoint {
    pub epoch: u64,
    /// Key groups `[lo, hi)` the instance owned.
    pub key_groups: (u32, u32),
    /// The exported store directory, relative to the checkpoint directory.
    pub path: String,
    /// Bytes of the store files the checkpoint references, and of those new since the
    /// instance's previous checkpoint (the incremental part).
    pub bytes: u64,
    pub new_bytes: u64,
}

/// The operator-state name under which operator `operator` records its native checkpoints.
pub fn native_state_name(operator: &str) -> String {
    format!("{operator}#lsm")
}

/// A native checkpoint to load into the store when it opens (restore).
#[derive(Clone, Debug)]
struct NativeImport {
    dir: PathBuf,
    key_groups: (u32, u32),
}

/// The store's TTL clock: the operator's processing-time state clock.
pub struct StateClockAdapter(pub StateClock);

impl Clock for StateClockAdapter {
    fn now_ms(&self) -> u64 {
        self.0.now().max(0) as u64
    }
}

/// Figures of one LSM backend instance (cumulative since open unless noted).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LsmStats {
    /// Accesses answered by the cache.
    pub cache_hits: u64,
    /// Accesses that read the store.
    pub cache_misses: u64,
    /// Entries evicted from the cache.
    pub evictions: u64,
    /// Dirty entries written to the store (puts and tombstones).
    pub write_backs: u64,
    /// Bytes charged to the cache now.
    pub cache_bytes: u64,
    /// Live segment bytes of the store now.
    pub store_segment_bytes: u64,
    /// Bytes in the store's memtables now.
    pub store_memtable_bytes: u64,
    /// Bytes of the store directory's segment files (live and checkpointed) now.
    pub store_disk_bytes: u64,
    /// Store compaction debt now.
    pub compaction_debt_bytes: u64,
    /// Live segment files of the store now.
    pub store_segments: u64,
    /// Bytes of the store's WAL on disk now (including its uncommitted buffer).
    pub store_wal_bytes: u64,
    /// Flusher maintenance rounds (commit, memtable flush, compaction steps) and their time.
    pub maintenance_rounds: u64,
    pub maintenance_ns: u64,
    /// Rounds that had to relieve back-pressure (the cache was over budget meanwhile).
    pub blocked_rounds: u64,
}

#[derive(Default)]
struct Counters {
    hits: Cell<u64>,
    misses: Cell<u64>,
    evictions: Cell<u64>,
    write_backs: Cell<u64>,
    rounds: Cell<u64>,
    round_ns: Cell<u64>,
    blocked_rounds: Cell<u64>,
}

/// Outcome of a store write from the synchronous path.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    Yes,
    /// Back-pressure: nothing written; retry after the flusher ran.
    Blocked,
}

/// (store key, stored value, store expiry) of a restored entry.
type RestoredEntry = (Vec<u8>, Vec<u8>, u64);

/// What every state of one operator instance shares: the store, the cache budget, the error.
pub struct LsmShared {
    opts: LsmOptions,
    key_groups: KeyGroups,
    clock: RefCell<StateClock>,
    store: RefCell<Option<Store>>,
    connected: Cell<bool>,
    cache_used: Cell<usize>,
    blocked: Cell<bool>,
    failure: RefCell<Option<String>>,
    written_since_maintain: Cell<u64>,
    written_since_commit: Cell<u64>,
    maintenance_due: Cell<bool>,
    tables: RefCell<Vec<(u32, Weak<dyn TableOps>)>>,
    /// Portable restore entries waiting for the store.
    pending_restore: RefCell<Vec<RestoredEntry>>,
    /// Where native checkpoints are exported (from `LsmOptions::checkpoint_root`).
    checkpoint_root: RefCell<Option<PathBuf>>,
    /// Native checkpoints begun at barriers and not yet exported, oldest first.
    native_pending: RefCell<std::collections::VecDeque<u64>>,
    /// Native checkpoints to load at connect (restore).
    native_imports: RefCell<Vec<NativeImport>>,
    counters: Counters,
}

impl LsmShared {
    pub(crate) fn new(opts: LsmOptions, key_groups: KeyGroups) -> Rc<Self> {
        let checkpoint_root = opts.checkpoint_root.clone();
        Rc::new(Self {
            opts,
            key_groups,
            clock: RefCell::new(StateClock::default()),
            store: RefCell::new(None),
            connected: Cell::new(false),
            cache_used: Cell::new(0),
            blocked: Cell::new(false),
            failure: RefCell::new(None),
            written_since_maintain: Cell::new(0),
            written_since_commit: Cell::new(0),
            maintenance_due: Cell::new(false),
            tables: RefCell::new(Vec::new()),
            pending_restore: RefCell::new(Vec::new()),
            checkpoint_root: RefCell::new(checkpoint_root),
            native_pending: RefCell::new(std::collections::VecDeque::new()),
            native_imports: RefCell::new(Vec::new()),
            counters: Counters::default(),
        })
    }

    pub fn options(&self) -> &LsmOptions {
        &self.opts
    }

    pub(crate) fn key_groups(&self) -> KeyGroups {
        self.key_groups
    }

    /// Use `clock` for the store's TTL decisions (set by the `StateContext`).
    pub(crate) fn set_clock(&self, clock: StateClock) {
        *self.clock.borrow_mut() = clock;
    }

    pub(crate) fn register(&self, state: u32, table: Weak<dyn TableOps>) {
        self.tables.borrow_mut().push((state, table));
    }

    fn tables(&self) -> Vec<(u32, Rc<dyn TableOps>)> {
        self.tables.borrow().iter().filter_map(|(s, t)| t.upgrade().map(|t| (*s, t))).collect()
    }

    /// Record the first error; the flusher fails the job with it.
    pub(crate) fn fail(&self, what: impl std::fmt::Display) {
        let mut f = self.failure.borrow_mut();
        if f.is_none() {
            *f = Some(format!("operator {} shard {}: {what}", self.opts.operator, self.opts.shard));
        }
    }

    fn check(&self) -> Result<()> {
        match &*self.failure.borrow() {
            Some(e) => Err(WeirError::State(e.clone())),
            None => Ok(()),
        }
    }

    #[inline]
    pub(crate) fn charge(&self, add: usize, remove: usize) {
        self.cache_used.set(self.cache_used.get() + add - remove);
    }

    #[inline]
    pub(crate) fn over_budget(&self) -> bool {
        self.cache_used.get() > self.opts.cache_bytes && !self.blocked.get()
    }

    #[inline]
    pub(crate) fn hit(&self) {
        self.counters.hits.set(self.counters.hits.get() + 1);
    }

    #[inline]
    pub(crate) fn evicted(&self) {
        self.counters.evictions.set(self.counters.evictions.get() + 1);
    }

    fn with_store<R>(&self, f: impl FnOnce(&Store) -> R) -> R {
        let store = self.store.borrow();
        let store = store
            .as_ref()
            .expect("LSM keyed state used before its store was opened (the operator's flusher opens it at task start)");
        f(store)
    }

    /// Point read of a store key (an error is recorded and reads as absent).
    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.counters.misses.set(self.counters.misses.get() + 1);
        match self.with_store(|s| s.get(key)) {
            Ok(v) => v,
            Err(e) => {
                self.fail(format!("state read: {e}"));
                None
            }
        }
    }

    /// Every live `(store key, stored value)` with the given prefix, in key order.
    pub(crate) fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let r = self.with_store(|s| s.scan_prefix(prefix).and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>()));
        match r {
            Ok(v) => v,
            Err(e) => {
                self.fail(format!("state scan: {e}"));
                Vec::new()
            }
        }
    }

    fn write(&self, bytes: usize, op: impl FnOnce(&mut Store) -> weir_storage::Result<u64>) -> Written {
        let mut store = self.store.borrow_mut();
        let store = store.as_mut().expect("LSM keyed state used before its store was opened");
        match op(store) {
            Ok(_) => {
                self.counters.write_backs.set(self.counters.write_backs.get() + 1);
                let n = bytes as u64 + 48;
                self.written_since_maintain.set(self.written_since_maintain.get() + n);
                self.written_since_commit.set(self.written_since_commit.get() + n);
                Written::Yes
            }
            Err(StoreError::Backpressure { .. }) => {
                self.blocked.set(true);
                Written::Blocked
            }
            Err(e) => {
                self.fail(format!("state write: {e}"));
                Written::Yes
            }
        }
    }

    /// Write a stored value (see [`codec::store_expiry_ms`] for `expire_ms`).
    pub(crate) fn put(&self, key: &[u8], value: &[u8], expire_ms: u64) -> Written {
        self.write(key.len() + value.len(), |s| s.put_with_ttl(key, value, expire_ms))
    }

    pub(crate) fn delete(&self, key: &[u8]) -> Written {
        self.write(key.len(), |s| s.delete(key))
    }

    /// Queue a restored entry for the store (written when the flusher connects).
    pub(crate) fn queue_restore(&self, store_key: Vec<u8>, value: Vec<u8>, expire_ms: u64) {
        assert!(
            !self.connected.get(),
            "keyed state restored after the operator's task started (restore while the job is built)"
        );
        self.pending_restore.borrow_mut().push((store_key, value, expire_ms));
    }

    pub fn stats(&self) -> LsmStats {
        let mut s = LsmStats {
            cache_hits: self.counters.hits.get(),
            cache_misses: self.counters.misses.get(),
            evictions: self.counters.evictions.get(),
            write_backs: self.counters.write_backs.get(),
            cache_bytes: self.cache_used.get() as u64,
            maintenance_rounds: self.counters.rounds.get(),
            maintenance_ns: self.counters.round_ns.get(),
            blocked_rounds: self.counters.blocked_rounds.get(),
            ..Default::default()
        };
        if let Some(store) = self.store.borrow().as_ref() {
            let st = store.stats();
            s.store_segment_bytes = st.segment_bytes;
            s.store_memtable_bytes = st.memtable_bytes + st.sealed_memtable_bytes;
            s.store_disk_bytes = st.disk_segment_bytes;
            s.compaction_debt_bytes = st.compaction_debt_bytes;
            s.store_segments = st.segments;
            s.store_wal_bytes = st.wal_bytes;
        }
        s
    }

    /// Portable snapshot: every visible entry of every state, by key group (the store's state
    /// range merged with the dirty cache entries, which win).
    pub(crate) fn snapshot(&self, out: &mut KeyedSnapshot) -> Result<()> {
        self.check()?;
        let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for (_, t) in self.tables() {
            t.dirty_overlay(&mut overlay);
        }
        let now = self.clock.borrow().now();
        let mut emit = |key: &[u8], value: &[u8]| -> Result<()> {
            if codec::stored_expiry(value)? <= now {
                return Ok(());
            }
            let (kg, state, entry_key) = codec::split_store_key(key).ok_or_else(|| WeirError::State("store key shorter than its header".into()))?;
            codec::encode_state_entry(state, entry_key, value, out.group(kg));
            Ok(())
        };
        let store = self.store.borrow();
        let store = store.as_ref().expect("snapshot of an LSM state backend before its store was opened");
        let end = META_KEY_GROUP.to_be_bytes();
        let scan = store
            .scan_range(Bound::Unbounded, Bound::Excluded(&end[..]))
            .map_err(|e| WeirError::State(format!("snapshot scan of operator {}: {e}", self.opts.operator)))?;
        let mut overlay = overlay.into_iter().peekable();
        for kv in scan {
            let (k, v) = kv.map_err(|e| WeirError::State(format!("snapshot scan of operator {}: {e}", self.opts.operator)))?;
            while let Some((ok, _)) = overlay.peek() {
                if ok.as_slice() >= k.as_slice() {
                    break;
                }
                let (ok, ov) = overlay.next().expect("peeked");
                if let Some(ov) = ov {
                    emit(&ok, &ov)?;
                }
            }
            match overlay.peek() {
                Some((ok, _)) if ok.as_slice() == k.as_slice() => {
                    let (ok, ov) = overlay.next().expect("peeked");
                    if let Some(ov) = ov {
                        emit(&ok, &ov)?;
                    }
                }
                _ => emit(&k, &v)?,
            }
        }
        for (ok, ov) in overlay {
            if let Some(ov) = ov {
                emit(&ok, &ov)?;
            }
        }
        Ok(())
    }

    /// Rescaled restore: copy the entries of this instance's key groups from each exported
    /// store in `imports` into `store`, then record the entry counts per state.
    async fn read_imports(&self, store: &mut Store, imports: &[NativeImport], own: (u32, u32), clock: Rc<dyn Clock>) -> Result<()> {
        let mut counts: std::collections::BTreeMap<u32, u64> = std::collections::BTreeMap::new();
        for (n, imp) in imports.iter().enumerate() {
            // Open a linked copy: opening writes a WAL, which must not land in the checkpoint.
            let scratch = self.opts.dir.with_extension(format!("import-{n}"));
            let _ = std::fs::remove_dir_all(&scratch);
            link_store_files(&imp.dir, &scratch)?;
            let source = self.wrap(Store::open_with_clock(&scratch, self.opts.store.clone(), clock.clone()).await)?;
            let lo = own.0.max(imp.key_groups.0).to_be_bytes();
            let hi = own.1.min(imp.key_groups.1).to_be_bytes();
            let entries: Vec<(Vec<u8>, Vec<u8>)> = {
                let scan = self.wrap(source.scan_range(Bound::Included(&lo[..]), Bound::Excluded(&hi[..])))?;
                scan.collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| WeirError::State(format!("reading {}: {e}", imp.dir.display())))?
            };
            drop(source);
            let _ = std::fs::remove_dir_all(&scratch);
            for (k, v) in entries {
                let (_, state, _) =
                    codec::split_store_key(&k).ok_or_else(|| WeirError::State(format!("{}: store key shorter than its header", imp.dir.display())))?;
                *counts.entry(state).or_default() += 1;
                let exp = codec::store_expiry_ms(codec::stored_expiry(&v)?);
                self.put_relieving(store, &k, &v, exp).await?;
            }
        }
        let counts: Vec<(u32, u64)> = counts.into_iter().collect();
        let mut value = Vec::new();
        codec::encode_into(&counts, &mut value);
        self.put_relieving(store, &meta_counts_key(), &value, 0).await
    }

    /// Put into `store` while it is not yet shared (opening, restoring), relieving its
    /// back-pressure as often as needed.
    async fn put_relieving(&self, store: &mut Store, key: &[u8], value: &[u8], expire_ms: u64) -> Result<()> {
        loop {
            match store.put_with_ttl(key, value, expire_ms) {
                Err(StoreError::Backpressure { .. }) => {
                    let r = Self::relieve(store, self.opts.maintain_step_bytes).await;
                    self.wrap(r)?;
                }
                other => return self.wrap(other).map(|_| ()),
            }
        }
    }

    /// Set the tables' entry counts from the counts recorded in the store.
    fn apply_entry_counts(&self, store: &Store) -> Result<()> {
        let counts: Vec<(u32, u64)> = match self.wrap(store.get(&meta_counts_key()))? {
            Some(bytes) => codec::decode(&bytes, "state entry counts")?,
            None => Vec::new(),
        };
        for (state, t) in self.tables() {
            if let Some((_, n)) = counts.iter().find(|(s, _)| *s == state) {
                t.set_entries(*n as usize);
            }
        }
        Ok(())
    }

    fn take_store(&self) -> Store {
        self.store.borrow_mut().take().expect("LSM store open")
    }

    fn put_store(&self, store: Store) {
        *self.store.borrow_mut() = Some(store);
    }

    /// Make room in the store: commit the WAL buffer and flush sealed memtables.
    async fn relieve(store: &mut Store, step: u64) -> std::result::Result<(), StoreError> {
        store.commit().await?;
        loop {
            store.maintain(step).await?;
            if store.stats().sealed_memtable_bytes == 0 {
                return Ok(());
            }
        }
    }

    fn wrap<T>(&self, r: std::result::Result<T, StoreError>) -> Result<T> {
        r.map_err(|e| WeirError::State(format!("operator {} shard {}: {e}", self.opts.operator, self.opts.shard)))
    }

    /// Checkpoints of this instance take the store's native incremental checkpoint.
    pub(crate) fn native_checkpoints(&self) -> bool {
        self.checkpoint_root.borrow().is_some()
    }

    /// Export native checkpoints below `root` (tests; jobs set it from their checkpoint
    /// directory when the backend is built).
    pub(crate) fn set_checkpoint_root(&self, root: &std::path::Path) {
        *self.checkpoint_root.borrow_mut() = Some(root.to_path_buf());
    }

    /// At barrier `epoch` (synchronous, on the data path): write the few dirty cache entries
    /// through — past the store's stall limits, a burst bounded by what one input step wrote —,
    /// record the entry counts and begin the store's checkpoint, which seals the memtable
    /// without I/O. The flusher flushes it in the background and exports the checkpoint
    /// ([`StateFlusher`]'s `complete_snapshot`).
    pub(crate) fn begin_native_checkpoint(&self, epoch: u64) -> Result<()> {
        self.check()?;
        self.with_store_mut(|s| s.set_unthrottled(true));
        let mut written = true;
        for (_, t) in self.tables() {
            written &= t.write_back_all();
        }
        let r = (|| {
            if !written {
                return Err(WeirError::State("state write-back pushed back while unthrottled".into()));
            }
            let mut counts: Vec<(u32, u64)> = self.tables().iter().map(|(s, t)| (*s, t.entries() as u64)).collect();
            counts.sort_unstable();
            let mut value = Vec::new();
            codec::encode_into(&counts, &mut value);
            if self.put(&meta_counts_key(), &value, 0) == Written::Blocked {
                return Err(WeirError::State("state entry counts pushed back while unthrottled".into()));
            }
            self.check()?;
            let r = self.with_store_mut(|s| s.begin_checkpoint(epoch));
            self.wrap(r)
        })();
        self.with_store_mut(|s| s.set_unthrottled(false));
        r?;
        self.native_pending.borrow_mut().push_back(epoch);
        Ok(())
    }

    fn with_store_mut<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.borrow_mut();
        f(store.as_mut().expect("LSM keyed state used before its store was opened"))
    }

    /// Load the native checkpoints `handles` (of checkpoint directory `root`) that overlap
    /// this instance's key groups when the store opens. Call while the job is built.
    pub(crate) fn import_native(&self, root: &std::path::Path, handles: Vec<NativeCheckpoint>) {
        assert!(!self.connected.get(), "native restore requested after the task started");
        let (lo, hi) = self.key_groups.range_of_shard(self.opts.shard as u32);
        let mut imports = self.native_imports.borrow_mut();
        for h in handles {
            if h.key_groups.0 < hi && lo < h.key_groups.1 {
                imports.push(NativeImport {
                    dir: root.join(&h.path),
                    key_groups: h.key_groups,
                });
            }
        }
    }

    /// Open the store (see [`StateFlusher`]'s `connect`).
    async fn open(&self) -> Result<()> {
        let dir = &self.opts.dir;
        let clock: Rc<dyn Clock> = Rc::new(StateClockAdapter(self.clock.borrow().clone()));
        clear_store_dir(dir)?;
        let imports = std::mem::take(&mut *self.native_imports.borrow_mut());
        let own = self.key_groups.range_of_shard(self.opts.shard as u32);
        // Same key groups as the instance that took the checkpoint: its exported store becomes
        // this store (links, no copying). Otherwise its entries are read into a fresh store.
        let whole = imports.len() == 1 && imports[0].key_groups == own;
        if whole {
            link_store_files(&imports[0].dir, dir)?;
        }
        let mut store = self.wrap(Store::open_with_clock(dir, self.opts.store.clone(), clock.clone()).await)?;
        if !whole && !imports.is_empty() {
            self.read_imports(&mut store, &imports, own, clock).await?;
        }
        if whole || !imports.is_empty() {
            self.apply_entry_counts(&store)?;
        }
        let pending = std::mem::take(&mut *self.pending_restore.borrow_mut());
        for (k, v, exp) in pending {
            self.put_relieving(&mut store, &k, &v, exp).await?;
        }
        self.put_store(store);
        self.connected.set(true);
        Ok(())
    }
}

impl Drop for LsmShared {
    fn drop(&mut self) {
        // A temporary store directory goes with its backend, also when the job failed and the
        // flusher never closed the store.
        if let Some(store) = self.store.get_mut().take() {
            drop(store);
        }
        if self.opts.ephemeral {
            let _ = std::fs::remove_dir_all(&self.opts.dir);
        }
    }
}

fn meta_counts_key() -> Vec<u8> {
    let mut k = Vec::new();
    codec::store_key_header(META_KEY_GROUP, 0, &mut k);
    k.extend_from_slice(b"entry-counts");
    k
}

/// Start from an empty store: remove `dir` if it holds an earlier run's store. Refuses to
/// remove a directory holding anything that is not a store file.
fn clear_store_dir(dir: &std::path::Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(WeirError::io("read state directory", dir, e)),
    };
    for e in entries {
        let e = e.map_err(|e| WeirError::io("read state directory", dir, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let store_file =
            name == "MANIFEST" || name == "MANIFEST.tmp" || name == "LOCK" || name.ends_with(".seg") || (name.starts_with("wal-") && name.ends_with(".log"));
        if !store_file {
            return Err(WeirError::State(format!(
                "state directory {} holds {name}, which is not a state store file; refusing to clear it",
                dir.display()
            )));
        }
    }
    std::fs::remove_dir_all(dir).map_err(|e| WeirError::io("clear state directory", dir, e))
}

/// Link (or, across file systems, copy) the store files of exported store `from` into a new
/// directory `to`.
fn link_store_files(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| WeirError::io("create state directory", to, e))?;
    let entries = std::fs::read_dir(from).map_err(|e| WeirError::io("read native checkpoint", from, e))?;
    for e in entries {
        let e = e.map_err(|e| WeirError::io("read native checkpoint", from, e))?;
        let name = e.file_name();
        let dst = to.join(&name);
        if std::fs::hard_link(e.path(), &dst).is_err() {
            std::fs::copy(e.path(), &dst).map_err(|err| WeirError::io("copy native checkpoint file", &dst, err))?;
        }
    }
    Ok(())
}

/// The async half of the LSM backend, registered as the operator's flusher: opens the store at
/// task start (applying a pending restore), writes dirty cache entries through and drives store
/// maintenance between input steps, relieves back-pressure, completes and exports native
/// checkpoints begun at barriers (`complete_snapshot`), and closes the store at the end
/// (removing a temporary directory).
pub struct StateFlusher {
    shared: Rc<LsmShared>,
    /// The table whose cache is evicted first in the next over-budget round (rotates).
    next_table: usize,
    /// Where the store's figures are published for the control plane, and when next.
    gauges: Option<(Arc<StoreGauges>, std::time::Instant)>,
}

impl StateFlusher {
    pub(crate) fn new(shared: Rc<LsmShared>) -> Self {
        Self {
            shared,
            next_table: 0,
            gauges: None,
        }
    }

    /// Publish the store's figures to `gauges` (from now on, after maintenance rounds at most
    /// every [`STORE_PUBLISH_EVERY`], and at every checkpoint).
    pub fn publish_to(&mut self, gauges: Arc<StoreGauges>) {
        self.gauges = Some((gauges, std::time::Instant::now()));
    }

    /// Publish the store's figures if a publication is due (or `now_anyway`).
    fn publish(&mut self, now_anyway: bool) {
        let Some((gauges, next)) = &mut self.gauges else { return };
        let now = std::time::Instant::now();
        if !now_anyway && now < *next {
            return;
        }
        *next = now + STORE_PUBLISH_EVERY;
        let st = self.shared.stats();
        let set = |g: &std::sync::atomic::AtomicU64, v: u64| g.store(v, Ordering::Relaxed);
        set(&gauges.memtable_bytes, st.store_memtable_bytes);
        set(&gauges.segments, st.store_segments);
        set(&gauges.segment_bytes, st.store_segment_bytes);
        set(&gauges.compaction_debt_bytes, st.compaction_debt_bytes);
        set(&gauges.wal_bytes, st.store_wal_bytes);
        set(&gauges.cache_bytes, st.cache_bytes);
    }

    /// Store work is due: back-pressure, pending flush or compaction, enough new writes.
    fn store_work_due(&self) -> bool {
        let sh = &self.shared;
        sh.blocked.get() || sh.maintenance_due.get() || sh.written_since_maintain.get() >= sh.opts.maintain_step_bytes
    }

    /// The caches together are clearly over budget (each miss evicts from its own state's cache
    /// only, so a state that is no longer read keeps its entries until this evicts them).
    fn cache_over_budget(&self) -> bool {
        let sh = &self.shared;
        sh.cache_used.get() > sh.opts.cache_bytes + sh.opts.cache_bytes / 8
    }

    async fn maintain(&mut self) -> Result<()> {
        let sh = self.shared.clone();
        sh.check()?;
        // Write-through: what the last input step changed goes to the store now, so barriers
        // find (almost) nothing dirty.
        for (_, t) in sh.tables() {
            if !t.write_back_all() {
                sh.blocked.set(true);
                break;
            }
        }
        if self.store_work_due() {
            self.maintain_store().await?;
        }
        if self.cache_over_budget() {
            let tables = sh.tables();
            let n = tables.len().max(1);
            self.next_table = (self.next_table + 1) % n;
            for (_, t) in tables.iter().cycle().skip(self.next_table).take(tables.len()) {
                t.evict_to_budget();
            }
        }
        sh.check()
    }

    async fn maintain_store(&mut self) -> Result<()> {
        let sh = &self.shared;
        let blocked = sh.blocked.replace(false);
        if blocked {
            sh.counters.blocked_rounds.set(sh.counters.blocked_rounds.get() + 1);
        }
        let step = sh.opts.maintain_step_bytes;
        let commit_at = (sh.opts.store.wal_max_pending_bytes / 2) as u64;
        let mut store = sh.take_store();
        let r = async {
            if blocked {
                LsmShared::relieve(&mut store, step).await?;
                sh.written_since_commit.set(0);
            } else {
                if sh.written_since_commit.get() >= commit_at {
                    Self::commit(&mut store).await?;
                    sh.written_since_commit.set(0);
                }
                store.maintain(step).await?;
            }
            let st = store.stats();
            Ok::<bool, StoreError>(st.sealed_memtable_bytes > 0 || st.compaction_debt_bytes > 0)
        }
        .await;
        sh.put_store(store);
        let due = sh.wrap(r)?;
        sh.maintenance_due.set(due);
        sh.written_since_maintain.set(0);
        Ok(())
    }

    async fn commit(store: &mut Store) -> std::result::Result<(), StoreError> {
        store.commit().await.map(|_| ())
    }
}

impl Flusher for StateFlusher {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.shared.open().await?;
            self.publish(true);
            Ok(())
        })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let start = std::time::Instant::now();
            let r = self.maintain().await;
            let c = &self.shared.counters;
            c.rounds.set(c.rounds.get() + 1);
            c.round_ns.set(c.round_ns.get() + start.elapsed().as_nanos() as u64);
            self.publish(false);
            r
        })
    }

    fn has_pending(&self) -> bool {
        self.store_work_due()
            || self.cache_over_budget()
            || self.shared.failure.borrow().is_some()
            || !self.shared.native_pending.borrow().is_empty()
            || self.shared.tables().iter().any(|(_, t)| t.has_dirty())
    }

    fn complete_snapshot<'a>(&'a mut self, epoch: u64, snapshot: &'a mut crate::checkpoint::runtime::TaskSnapshot) -> LocalBoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let sh = self.shared.clone();
            if sh.native_pending.borrow().front() != Some(&epoch) {
                return Ok(!sh.native_pending.borrow().contains(&epoch));
            }
            sh.check()?;
            let mut recorded = sh.wrap(sh.with_store(|s| s.checkpoint_info(epoch)))?;
            if recorded.is_none() {
                self.maintain_store().await?;
                recorded = sh.wrap(sh.with_store(|s| s.checkpoint_info(epoch)))?;
            }
            // The store records checkpoints in the order they were begun, so the one before
            // this is the previous export: its `new_bytes` are this checkpoint's increment.
            let Some(info) = recorded else { return Ok(false) };
            let export = sh.wrap(sh.with_store(|s| s.checkpoint_export(epoch)))?;
            let root = sh.checkpoint_root.borrow().clone().expect("native checkpoints have a checkpoint directory");
            let rel = format!("native/{}/shard-{}", super::backend::safe_file_name(&sh.opts.operator), sh.opts.shard);
            let dest = root.join(format!("chk-{epoch}")).join(&rel);
            let bytes = export.bytes();
            // Links and a manifest with fsyncs: off the shard's thread.
            let written = glommio::executor().spawn_blocking(move || export.write_to(&dest)).await;
            sh.wrap(written)?;
            let handle = NativeCheckpoint {
                epoch,
                key_groups: sh.key_groups.range_of_shard(sh.opts.shard as u32),
                path: rel,
                bytes,
                new_bytes: info.new_bytes,
            };
            snapshot.operator_state(&native_state_name(&sh.opts.operator), crate::checkpoint::snapshot::encode(&handle));
            sh.native_pending.borrow_mut().pop_front();
            Ok(true)
        })
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.publish(true);
            let sh = &self.shared;
            sh.check()?;
            let Some(store) = sh.store.borrow_mut().take() else { return Ok(()) };
            let r = store.close().await;
            if sh.opts.ephemeral {
                let _ = std::fs::remove_dir_all(&sh.opts.dir);
            }
            sh.wrap(r)
        })
    }
}

/// Fixed bytes charged per cached slot on top of the value's encoded size.
const SLOT_OVERHEAD: usize = 64;

struct Slot<K, E> {
    key: K,
    key_group: u32,
    value: Option<Arc<E>>,
    expires_at: Timestamp,
    bytes: usize,
    dirty: bool,
    in_store: bool,
    referenced: bool,
}

/// One value per record key (value, list, aggregating state) on the LSM backend.
pub(crate) struct LsmTable<K, E> {
    shared: Rc<LsmShared>,
    state: u32,
    ttl: Option<StateTtl>,
    clock: StateClock,
    slots: Vec<Slot<K, E>>,
    index: FxHashMap<K, u32>,
    hand: usize,
    /// Indexes of dirty slots (every dirty slot is listed; stale indexes are harmless): written
    /// through to the store after every input step, so a barrier finds almost nothing dirty.
    dirty: Vec<u32>,
    entries: usize,
    gauge: Arc<AtomicUsize>,
    key_buf: Vec<u8>,
    val_buf: Vec<u8>,
}

impl<K, E> LsmTable<K, E>
where
    K: std::hash::Hash + Eq + Clone + Serialize + DeserializeOwned + StableHash,
    E: Serialize + DeserializeOwned,
{
    pub fn new(shared: Rc<LsmShared>, state: u32, ttl: Option<StateTtl>, clock: StateClock, gauge: Arc<AtomicUsize>) -> Self {
        Self {
            shared,
            state,
            ttl,
            clock,
            slots: Vec::new(),
            index: FxHashMap::default(),
            hand: 0,
            dirty: Vec::new(),
            entries: 0,
            gauge,
            key_buf: Vec::new(),
            val_buf: Vec::new(),
        }
    }

    pub fn ttl(&self) -> Option<StateTtl> {
        self.ttl
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    #[inline]
    fn sync_gauge(&self) {
        self.gauge.store(self.entries, Ordering::Relaxed);
    }

    fn charge_of(value: &Option<Arc<E>>) -> usize {
        SLOT_OVERHEAD + value.as_ref().map_or(0, |v| codec::encoded_len(&**v))
    }

    fn set_bytes(&mut self, i: usize, bytes: usize) {
        let s = &mut self.slots[i];
        self.shared.charge(bytes, s.bytes);
        s.bytes = bytes;
    }

    /// The slot of `k`, read from the store on a miss.
    fn locate(&mut self, k: &K) -> usize {
        if let Some(&i) = self.index.get(k) {
            self.shared.hit();
            self.slots[i as usize].referenced = true;
            return i as usize;
        }
        self.evict_to_budget();
        let key_group = self.shared.key_groups().key_group(k.stable_hash());
        codec::store_key_header(key_group, self.state, &mut self.key_buf);
        codec::encode_into(k, &mut self.key_buf);
        let stored = self.shared.get(&self.key_buf);
        let now = self.clock.now();
        let (value, expires_at, in_store) = match stored {
            None => (None, Timestamp::MAX, false),
            Some(bytes) => match codec::decode_stored::<E>(&bytes, "state value") {
                Ok((exp, _)) if exp <= now => (None, exp, true),
                Ok((exp, v)) => (Some(Arc::new(v)), exp, true),
                Err(e) => {
                    self.shared.fail(e);
                    (None, Timestamp::MAX, true)
                }
            },
        };
        let bytes = Self::charge_of(&value);
        self.shared.charge(bytes, 0);
        let i = self.slots.len();
        self.slots.push(Slot {
            key: k.clone(),
            key_group,
            value,
            expires_at,
            bytes,
            dirty: false,
            in_store,
            referenced: true,
        });
        self.index.insert(k.clone(), i as u32);
        i
    }

    /// True if slot `i` holds a visible value; an expired one is dropped (and uncounted).
    fn live(&mut self, i: usize, now: Timestamp) -> bool {
        let s = &mut self.slots[i];
        if s.value.is_none() {
            return false;
        }
        if s.expires_at > now {
            return true;
        }
        // Expired: delete the store's copy too (it expired as well unless the TTL changed).
        s.value = None;
        if s.in_store {
            self.mark_dirty(i);
        }
        self.entries -= 1;
        self.set_bytes(i, SLOT_OVERHEAD);
        self.sync_gauge();
        false
    }

    fn renew_on_read(&mut self, i: usize, now: Timestamp) {
        if let Some(t) = self.ttl.filter(|t| t.update == TtlUpdate::OnReadAndWrite) {
            self.slots[i].expires_at = now.saturating_add(t.ttl_ms);
            self.mark_dirty(i);
        }
    }

    /// The visible value of `k` (renewed under `OnReadAndWrite`).
    pub fn get(&mut self, k: &K) -> Option<Arc<E>> {
        let i = self.locate(k);
        let now = self.clock.now();
        if !self.live(i, now) {
            return None;
        }
        self.renew_on_read(i, now);
        self.slots[i].value.clone()
    }

    /// Change the value of `k` in place, created by `init` if missing or expired; renewed.
    /// `grow`: bytes the change adds to the encoded value (`None`: measure it again).
    pub fn update<R>(&mut self, k: &K, init: impl FnOnce() -> E, f: impl FnOnce(&mut E) -> R, grow: Option<usize>) -> R {
        let i = self.locate(k);
        let now = self.clock.now();
        let mut grow = grow;
        if !self.live(i, now) {
            self.slots[i].value = Some(Arc::new(init()));
            self.entries += 1;
            self.sync_gauge();
            grow = None;
        }
        let expires_at = self.ttl.map_or(Timestamp::MAX, |t| now.saturating_add(t.ttl_ms));
        self.mark_dirty(i);
        let s = &mut self.slots[i];
        s.expires_at = expires_at;
        let rc = s.value.as_mut().expect("live or just created");
        let r = f(unique_mut(rc));
        let bytes = match grow {
            Some(n) => s.bytes + n,
            None => Self::charge_of(&s.value),
        };
        self.set_bytes(i, bytes);
        r
    }

    /// Replace the value of `k`.
    pub fn put(&mut self, k: &K, value: E) {
        let i = self.locate(k);
        let now = self.clock.now();
        if self.live(i, now) {
            *unique_mut(self.slots[i].value.as_mut().expect("live")) = value;
        } else {
            self.slots[i].value = Some(Arc::new(value));
            self.entries += 1;
            self.sync_gauge();
        }
        self.mark_dirty(i);
        let s = &mut self.slots[i];
        s.expires_at = self.ttl.map_or(Timestamp::MAX, |t| now.saturating_add(t.ttl_ms));
        let bytes = Self::charge_of(&s.value);
        self.set_bytes(i, bytes);
    }

    /// Read `k` and let `f` prune or renew it in place; `f` returns (keep, changed). Not kept:
    /// the entry is removed. Returns the visible value after `f`.
    pub fn read_modify(&mut self, k: &K, f: impl FnOnce(&mut E, Timestamp) -> (bool, bool)) -> Option<Arc<E>> {
        let i = self.locate(k);
        let now = self.clock.now();
        if !self.live(i, now) {
            return None;
        }
        self.renew_on_read(i, now);
        let s = &mut self.slots[i];
        let (keep, changed) = f(unique_mut(s.value.as_mut().expect("live")), now);
        if !keep {
            self.remove_at(i);
            return None;
        }
        if changed {
            let bytes = Self::charge_of(&s.value);
            self.mark_dirty(i);
            self.set_bytes(i, bytes);
        }
        self.slots[i].value.clone()
    }

    fn remove_at(&mut self, i: usize) -> Option<Arc<E>> {
        let s = &mut self.slots[i];
        let prev = s.value.take();
        if prev.is_some() {
            self.entries -= 1;
            if s.in_store {
                self.mark_dirty(i);
            }
            self.set_bytes(i, SLOT_OVERHEAD);
            self.sync_gauge();
        }
        prev
    }

    /// Remove `k`; returns its value if it was visible.
    pub fn remove(&mut self, k: &K) -> Option<Arc<E>> {
        let i = self.locate(k);
        let now = self.clock.now();
        if !self.live(i, now) {
            return None;
        }
        self.remove_at(i)
    }

    /// Drop every expired cached entry now (entries in the store expire there by themselves).
    pub fn expire_all(&mut self) {
        let now = self.clock.now();
        for i in 0..self.slots.len() {
            self.live(i, now);
        }
    }

    /// Write slot `i` to the store if dirty; false if the store pushed back.
    fn write_back_slot(&mut self, i: usize) -> bool {
        let now = self.clock.now();
        let s = &self.slots[i];
        if !s.dirty {
            return true;
        }
        codec::store_key_header(s.key_group, self.state, &mut self.key_buf);
        codec::encode_into(&s.key, &mut self.key_buf);
        let (written, in_store) = match &s.value {
            Some(v) if s.expires_at > now => {
                self.val_buf.clear();
                codec::encode_stored(s.expires_at, &**v, &mut self.val_buf);
                (self.shared.put(&self.key_buf, &self.val_buf, codec::store_expiry_ms(s.expires_at)), true)
            }
            Some(_) | None if s.in_store => (self.shared.delete(&self.key_buf), false),
            _ => (Written::Yes, false),
        };
        if written == Written::Blocked {
            return false;
        }
        let s = &mut self.slots[i];
        s.dirty = false;
        s.in_store = in_store;
        true
    }

    fn remove_slot(&mut self, i: usize) {
        let s = self.slots.swap_remove(i);
        debug_assert!(!s.dirty, "a dirty slot is written back before it is evicted");
        self.index.remove(&s.key);
        if i < self.slots.len() {
            *self.index.get_mut(&self.slots[i].key).expect("indexed") = i as u32;
            if self.slots[i].dirty {
                self.dirty.push(i as u32); // moved: list it under its new index
            }
        }
        if s.value.is_some() && s.expires_at <= self.clock.now() {
            self.entries -= 1; // expired while cached: it is gone from the store too
            self.sync_gauge();
        }
        self.shared.charge(0, s.bytes);
        self.shared.evicted();
    }

    /// Second-chance CLOCK eviction until the shared cache is within budget, this cache is
    /// empty, or the store pushes back.
    pub fn evict_to_budget(&mut self) {
        let mut steps = 2 * self.slots.len() + 1;
        while self.shared.over_budget() && !self.slots.is_empty() && steps > 0 {
            steps -= 1;
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            if self.slots[i].referenced {
                self.slots[i].referenced = false;
                self.hand += 1;
                continue;
            }
            if !self.write_back_slot(i) {
                return;
            }
            self.remove_slot(i);
        }
    }

    #[inline]
    fn mark_dirty(&mut self, i: usize) {
        let s = &mut self.slots[i];
        if !s.dirty {
            s.dirty = true;
            self.dirty.push(i as u32);
        }
    }

    /// Write every dirty slot to the store (they are all in the dirty list); false if the
    /// store pushed back (the rest stay listed).
    pub fn write_back_all(&mut self) -> bool {
        let list = std::mem::take(&mut self.dirty);
        for (n, &i) in list.iter().enumerate() {
            let i = i as usize;
            if i < self.slots.len() && !self.write_back_slot(i) {
                self.dirty.extend_from_slice(&list[n..]);
                return false;
            }
        }
        true
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn dirty_overlay(&self, out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let now = self.clock.now();
        for s in self.slots.iter().filter(|s| s.dirty) {
            let mut key = Vec::new();
            codec::store_key_header(s.key_group, self.state, &mut key);
            codec::encode_into(&s.key, &mut key);
            let value = s.value.as_ref().filter(|_| s.expires_at > now).map(|v| {
                let mut b = Vec::new();
                codec::encode_stored(s.expires_at, &**v, &mut b);
                b
            });
            out.insert(key, value);
        }
    }

    /// A restored entry goes to the store when the flusher connects.
    pub fn restore_entry(&mut self, key_group: u32, entry_key: &[u8], value: &[u8]) -> Result<()> {
        let exp = codec::stored_expiry(value)?;
        if exp <= self.clock.now() {
            return Ok(());
        }
        let mut key = Vec::with_capacity(HEADER_BYTES + entry_key.len());
        codec::store_key_header(key_group, self.state, &mut key);
        key.extend_from_slice(entry_key);
        self.shared.queue_restore(key, value.to_vec(), codec::store_expiry_ms(exp));
        self.entries += 1;
        self.sync_gauge();
        Ok(())
    }

    pub fn set_entries(&mut self, n: usize) {
        self.entries = n;
        self.sync_gauge();
    }
}

struct MapSlot<UK, UV> {
    key_group: u32,
    user_key: UK,
    value: Option<Arc<UV>>,
    expires_at: Timestamp,
    bytes: usize,
    dirty: bool,
    in_store: bool,
    referenced: bool,
}

/// Map state on the LSM backend: one store entry per `(key, user key)`; the cache is ordered by
/// entry key (`postcard(K) | postcard(UK)`), so one key's cached entries are one range.
pub(crate) struct LsmMapTable<K, UK, UV> {
    shared: Rc<LsmShared>,
    state: u32,
    ttl: Option<StateTtl>,
    clock: StateClock,
    cache: BTreeMap<Vec<u8>, MapSlot<UK, UV>>,
    hand: Option<Vec<u8>>,
    /// Entry keys of dirty slots (every dirty slot is listed), written through after every
    /// input step.
    dirty: Vec<Vec<u8>>,
    entries: usize,
    gauge: Arc<AtomicUsize>,
    /// Entry key of the last `locate`.
    entry_key: Vec<u8>,
    store_key: Vec<u8>,
    val_buf: Vec<u8>,
    _k: std::marker::PhantomData<fn(&K)>,
}

impl<K, UK, UV> LsmMapTable<K, UK, UV>
where
    K: Serialize + StableHash,
    UK: Clone + Serialize + DeserializeOwned,
    UV: Serialize + DeserializeOwned,
{
    pub fn new(shared: Rc<LsmShared>, state: u32, ttl: Option<StateTtl>, clock: StateClock, gauge: Arc<AtomicUsize>) -> Self {
        Self {
            shared,
            state,
            ttl,
            clock,
            cache: BTreeMap::new(),
            hand: None,
            dirty: Vec::new(),
            entries: 0,
            gauge,
            entry_key: Vec::new(),
            store_key: Vec::new(),
            val_buf: Vec::new(),
            _k: std::marker::PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.entries
    }

    #[inline]
    fn sync_gauge(&self) {
        self.gauge.store(self.entries, Ordering::Relaxed);
    }

    fn charge_of(value: &Option<Arc<UV>>, entry_key_len: usize) -> usize {
        SLOT_OVERHEAD + entry_key_len + value.as_ref().map_or(0, |v| codec::encoded_len(&**v))
    }

    /// Insert a slot for the entry key in `self.entry_key` read from store bytes `stored`.
    fn insert_loaded(&mut self, entry_key: Vec<u8>, key_group: u32, user_key: UK, stored: Option<&[u8]>) {
        let now = self.clock.now();
        let (value, expires_at, in_store) = match stored {
            None => (None, Timestamp::MAX, false),
            Some(bytes) => match codec::decode_stored::<UV>(bytes, "map state value") {
                Ok((exp, _)) if exp <= now => (None, exp, true),
                Ok((exp, v)) => (Some(Arc::new(v)), exp, true),
                Err(e) => {
                    self.shared.fail(e);
                    (None, Timestamp::MAX, true)
                }
            },
        };
        let bytes = Self::charge_of(&value, entry_key.len());
        self.shared.charge(bytes, 0);
        self.cache.insert(
            entry_key,
            MapSlot {
                key_group,
                user_key,
                value,
                expires_at,
                bytes,
                dirty: false,
                in_store,
                referenced: true,
            },
        );
    }

    /// Make `self.entry_key` the entry key of `(k, uk)` and make sure it is cached.
    fn locate(&mut self, k: &K, uk: &UK) {
        self.entry_key.clear();
        codec::encode_into(k, &mut self.entry_key);
        codec::encode_into(uk, &mut self.entry_key);
        if let Some(s) = self.cache.get_mut(self.entry_key.as_slice()) {
            s.referenced = true;
            self.shared.hit();
            return;
        }
        self.evict_to_budget();
        let key_group = self.shared.key_groups().key_group(k.stable_hash());
        codec::store_key_header(key_group, self.state, &mut self.store_key);
        self.store_key.extend_from_slice(&self.entry_key);
        let stored = self.shared.get(&self.store_key);
        let entry_key = self.entry_key.clone();
        self.insert_loaded(entry_key, key_group, uk.clone(), stored.as_deref());
    }

    /// Is the located slot visible? An expired one is dropped.
    fn live(&mut self, now: Timestamp) -> bool {
        let ekl = self.entry_key.len();
        let s = self.cache.get_mut(self.entry_key.as_slice()).expect("located");
        if s.value.is_none() {
            return false;
        }
        if s.expires_at > now {
            return true;
        }
        s.value = None;
        let in_store = s.in_store;
        set_dirty(&mut s.dirty, in_store, &mut self.dirty, &self.entry_key);
        let old = std::mem::replace(&mut s.bytes, SLOT_OVERHEAD + ekl);
        self.shared.charge(SLOT_OVERHEAD + ekl, old);
        self.entries -= 1;
        self.sync_gauge();
        false
    }

    pub fn get(&mut self, k: &K, uk: &UK) -> Option<Arc<UV>> {
        self.locate(k, uk);
        let now = self.clock.now();
        if !self.live(now) {
            return None;
        }
        let ttl = self.ttl;
        let s = self.cache.get_mut(self.entry_key.as_slice()).expect("located");
        if let Some(t) = ttl.filter(|t| t.update == TtlUpdate::OnReadAndWrite) {
            s.expires_at = now.saturating_add(t.ttl_ms);
            set_dirty(&mut s.dirty, true, &mut self.dirty, &self.entry_key);
        }
        s.value.clone()
    }

    pub fn put(&mut self, k: &K, uk: UK, value: UV) {
        self.locate(k, &uk);
        let now = self.clock.now();
        if !self.live(now) {
            self.entries += 1;
            self.sync_gauge();
        }
        let ttl = self.ttl;
        let ekl = self.entry_key.len();
        let s = self.cache.get_mut(self.entry_key.as_slice()).expect("located");
        s.value = Some(Arc::new(value));
        s.expires_at = ttl.map_or(Timestamp::MAX, |t| now.saturating_add(t.ttl_ms));
        set_dirty(&mut s.dirty, true, &mut self.dirty, &self.entry_key);
        let bytes = Self::charge_of(&s.value, ekl);
        let old = std::mem::replace(&mut s.bytes, bytes);
        self.shared.charge(bytes, old);
    }

    pub fn remove(&mut self, k: &K, uk: &UK) -> Option<Arc<UV>> {
        self.locate(k, uk);
        let now = self.clock.now();
        if !self.live(now) {
            return None;
        }
        let ekl = self.entry_key.len();
        let s = self.cache.get_mut(self.entry_key.as_slice()).expect("located");
        let prev = s.value.take();
        let in_store = s.in_store;
        set_dirty(&mut s.dirty, in_store, &mut self.dirty, &self.entry_key);
        let old = std::mem::replace(&mut s.bytes, SLOT_OVERHEAD + ekl);
        self.shared.charge(SLOT_OVERHEAD + ekl, old);
        self.entries -= 1;
        self.sync_gauge();
        prev
    }

    /// Cache every stored entry of `k` that is not cached yet; returns `postcard(k)`.
    fn load_key(&mut self, k: &K) -> Vec<u8> {
        let mut prefix = Vec::new();
        codec::encode_into(k, &mut prefix);
        let key_group = self.shared.key_groups().key_group(k.stable_hash());
        codec::store_key_header(key_group, self.state, &mut self.store_key);
        self.store_key.extend_from_slice(&prefix);
        for (store_key, stored) in self.shared.scan_prefix(&self.store_key) {
            let entry_key = &store_key[HEADER_BYTES..];
            if self.cache.contains_key(entry_key) {
                continue;
            }
            match codec::decode::<UK>(&entry_key[prefix.len()..], "map state user key") {
                Ok(uk) => {
                    self.insert_loaded(entry_key.to_vec(), key_group, uk, Some(&stored));
                    if let Some(s) = self.cache.get_mut(entry_key) {
                        s.referenced = false;
                    }
                }
                Err(e) => self.shared.fail(e),
            }
        }
        prefix
    }

    /// Visit the visible entries of `k` in entry-key order (expired ones are dropped).
    pub fn for_each(&mut self, k: &K, mut f: impl FnMut(&UK, &UV)) {
        let prefix = self.load_key(k);
        let now = self.clock.now();
        let renew = self.ttl.filter(|t| t.update == TtlUpdate::OnReadAndWrite);
        let mut expired = 0usize;
        let mut freed = 0usize;
        for (ek, s) in self.cache.range_mut::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded)) {
            if !ek.starts_with(&prefix) {
                break;
            }
            let Some(v) = &s.value else { continue };
            if s.expires_at <= now {
                s.value = None;
                set_dirty(&mut s.dirty, s.in_store, &mut self.dirty, ek);
                freed += s.bytes - (SLOT_OVERHEAD + ek.len());
                s.bytes = SLOT_OVERHEAD + ek.len();
                expired += 1;
                continue;
            }
            if let Some(t) = renew {
                s.expires_at = now.saturating_add(t.ttl_ms);
                set_dirty(&mut s.dirty, true, &mut self.dirty, ek);
            }
            f(&s.user_key, v);
        }
        self.shared.charge(0, freed);
        self.entries -= expired;
        self.sync_gauge();
        self.evict_to_budget();
    }

    /// Remove every entry of `k`.
    pub fn clear(&mut self, k: &K) {
        let prefix = self.load_key(k);
        let mut removed = 0usize;
        let mut freed = 0usize;
        for (ek, s) in self.cache.range_mut::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded)) {
            if !ek.starts_with(&prefix) {
                break;
            }
            if s.value.take().is_some() {
                removed += 1;
                set_dirty(&mut s.dirty, s.in_store, &mut self.dirty, ek);
                freed += s.bytes - (SLOT_OVERHEAD + ek.len());
                s.bytes = SLOT_OVERHEAD + ek.len();
            }
        }
        self.shared.charge(0, freed);
        self.entries -= removed;
        self.sync_gauge();
        self.evict_to_budget();
    }

    pub fn expire_all(&mut self) {
        let now = self.clock.now();
        let mut expired = 0usize;
        let mut freed = 0usize;
        for (ek, s) in self.cache.iter_mut() {
            if s.value.is_some() && s.expires_at <= now {
                s.value = None;
                set_dirty(&mut s.dirty, s.in_store, &mut self.dirty, ek);
                freed += s.bytes - (SLOT_OVERHEAD + ek.len());
                s.bytes = SLOT_OVERHEAD + ek.len();
                expired += 1;
            }
        }
        self.shared.charge(0, freed);
        self.entries -= expired;
        self.sync_gauge();
    }

    /// Write the slot at entry key `ek` if dirty; false if the store pushed back.
    fn write_back(&mut self, ek: &[u8]) -> bool {
        let now = self.clock.now();
        let state = self.state;
        let Some(s) = self.cache.get(ek) else {
            return true; // a stale listing of an evicted slot
        };
        if !s.dirty {
            return true;
        }
        codec::store_key_header(s.key_group, state, &mut self.store_key);
        self.store_key.extend_from_slice(ek);
        let (written, in_store) = match &s.value {
            Some(v) if s.expires_at > now => {
                self.val_buf.clear();
                codec::encode_stored(s.expires_at, &**v, &mut self.val_buf);
                (self.shared.put(&self.store_key, &self.val_buf, codec::store_expiry_ms(s.expires_at)), true)
            }
            Some(_) | None if s.in_store => (self.shared.delete(&self.store_key), false),
            _ => (Written::Yes, false),
        };
        if written == Written::Blocked {
            return false;
        }
        let s = self.cache.get_mut(ek).expect("cached");
        s.dirty = false;
        s.in_store = in_store;
        true
    }

    pub fn evict_to_budget(&mut self) {
        let mut steps = 2 * self.cache.len() + 1;
        while self.shared.over_budget() && !self.cache.is_empty() && steps > 0 {
            steps -= 1;
            let next = match &self.hand {
                Some(h) => self.cache.range::<[u8], _>((Bound::Excluded(h.as_slice()), Bound::Unbounded)).next(),
                None => None,
            };
            let ek = match next.or_else(|| self.cache.iter().next()) {
                Some((k, _)) => k.clone(),
                None => return,
            };
            let s = self.cache.get_mut(&ek).expect("just found");
            if s.referenced {
                s.referenced = false;
                self.hand = Some(ek);
                continue;
            }
            if !self.write_back(&ek) {
                return;
            }
            let s = self.cache.remove(&ek).expect("cached");
            if s.value.is_some() && s.expires_at <= self.clock.now() {
                self.entries -= 1;
                self.sync_gauge();
            }
            self.shared.charge(0, s.bytes);
            self.shared.evicted();
            self.hand = Some(ek);
        }
    }

    /// Write every dirty slot to the store (they are all in the dirty list); false if the
    /// store pushed back (the rest stay listed).
    pub fn write_back_all(&mut self) -> bool {
        let list = std::mem::take(&mut self.dirty);
        for (n, ek) in list.iter().enumerate() {
            if !self.write_back(ek) {
                self.dirty.extend(list[n..].iter().cloned());
                return false;
            }
        }
        true
    }

    pub fn has_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub fn dirty_overlay(&self, out: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>) {
        let now = self.clock.now();
        for (ek, s) in self.cache.iter().filter(|(_, s)| s.dirty) {
            let mut key = Vec::new();
            codec::store_key_header(s.key_group, self.state, &mut key);
            key.extend_from_slice(ek);
            let value = s.value.as_ref().filter(|_| s.expires_at > now).map(|v| {
                let mut b = Vec::new();
                codec::encode_stored(s.expires_at, &**v, &mut b);
                b
            });
            out.insert(key, value);
        }
    }

    pub fn restore_entry(&mut self, key_group: u32, entry_key: &[u8], value: &[u8]) -> Result<()> {
        let exp = codec::stored_expiry(value)?;
        if exp <= self.clock.now() {
            return Ok(());
        }
        let mut key = Vec::with_capacity(HEADER_BYTES + entry_key.len());
        codec::store_key_header(key_group, self.state, &mut key);
        key.extend_from_slice(entry_key);
        self.shared.queue_restore(key, value.to_vec(), codec::store_expiry_ms(exp));
        self.entries += 1;
        self.sync_gauge();
        Ok(())
    }

    pub fn set_entries(&mut self, n: usize) {
        self.entries = n;
        self.sync_gauge();
    }
}

/// Set a map slot's dirty flag, listing its entry key when it becomes dirty.
#[inline]
fn set_dirty(flag: &mut bool, dirty: bool, list: &mut Vec<Vec<u8>>, entry_key: &[u8]) {
    if dirty && !*flag {
        list.push(entry_key.to_vec());
    }
    *flag = dirty;
}
