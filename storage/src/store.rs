//! The store: one instance per shard, tying WAL, memtables, segments,
//! compaction, manifest and checkpoints together.
//!
//! Without a WAL (`StoreConfig::wal == false`) writes only touch the memtable;
//! they become durable when their memtable is flushed (the manifest's
//! `replay_from_seq` moves past them), so a reopened store holds the writes
//! of every flushed memtable: a prefix of the writes.
//!
//! Invariants:
//! * every write gets the next sequence number and (with a WAL) is appended
//!   to the WAL buffer before it touches the memtable;
//! * `acked_seq` only advances after a successful WAL `fdatasync` (without a
//!   WAL: after the flush of the memtable holding the write);
//! * `runs` mirrors `manifest.runs` (same ids, same order) at all times;
//! * segment files referenced by the manifest's live runs or a retained
//!   checkpoint are never deleted;
//! * once `poisoned` is set it is never cleared.

use std::cell::Cell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::cache::BlockCache;
use crate::compaction::{self, Job};
use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use crate::fsutil::{self, is_sync_failure};
use crate::manifest::{self, CheckpointMeta, Manifest, SegmentMeta};
use crate::memtable::{Entry, Kind, Memtable};
use crate::merge::{MergeIter, Source};
use crate::segment::builder::{Built, SegmentBuilder};
use crate::segment::{RunCursor, Segment};
use crate::wal::record::{decode_payload, OpRef};
use crate::wal::scan::{scan, Tail};
use crate::wal::writer::WalWriter;

/// Source of "now" for TTL decisions.
pub trait Clock {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// Wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Manually advanced clock (tests, event-time TTL).
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Rc<Cell<u64>>);

impl ManualClock {
    /// A clock at `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock(Rc::new(Cell::new(ms)))
    }
    /// Sets the time.
    pub fn set(&self, ms: u64) {
        self.0.set(ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

#[derive(Debug, Clone)]
struct BatchOp {
    kind: Kind,
    key: Vec<u8>,
    value: Vec<u8>,
    expire_ms: u64,
}

/// An atomic group of writes (one WAL record).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// Empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a put without expiry.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.put_with_ttl(key, value, 0)
    }
    /// Adds a put that expires at `expire_ms` (0: never).
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], expire_ms: u64) -> &mut Self {
        self.ops.push(BatchOp {
            kind: Kind::Put,
            key: key.to_vec(),
            value: value.to_vec(),
            expire_ms,
        });
        self
    }
    /// Adds a delete.
    pub fn delete(&mut self, key: &[u8]) -> &mut Self {
        self.ops.push(BatchOp {
            kind: Kind::Delete,
            key: key.to_vec(),
            value: Vec::new(),
            expire_ms: 0,
        });
        self
    }
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Observable figures of a store instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in the active memtable.
    pub memtable_bytes: u64,
    /// Bytes in the sealed memtable waiting for flush.
    pub sealed_memtable_bytes: u64,
    /// Sorted runs.
    pub runs: u64,
    /// Live segment files.
    pub segments: u64,
    /// Bytes of live segment files.
    pub segment_bytes: u64,
    /// Bytes of all segment files on disk (live + checkpoint-only + in-progress).
    pub disk_segment_bytes: u64,
    /// Compaction debt (see `compaction` module docs).
    pub compaction_debt_bytes: u64,
    /// True while a compaction job is in progress.
    pub compaction_running: bool,
    /// Bytes of WAL segments on disk (including unflushed pending bytes).
    pub wal_bytes: u64,
    /// WAL bytes buffered but not yet committed.
    pub wal_pending_bytes: u64,
    /// WAL segment files.
    pub wal_files: u64,
    /// Torn WAL tails truncated at open.
    pub torn_tails_truncated: u64,
    /// Retained checkpoint epochs, oldest first.
    pub checkpoints: Vec<u64>,
    /// Key + value bytes accepted by writes since open.
    pub user_bytes_written: u64,
    /// WAL bytes made durable since open.
    pub wal_bytes_written: u64,
    /// Segment bytes written by flushes (cumulative, persisted).
    pub flushed_bytes: u64,
    /// Segment bytes written by compaction (cumulative, persisted).
    pub compacted_bytes: u64,
    /// Decoded-block cache bytes / hits / misses.
    pub block_cache_bytes: u64,
    /// Cache hits.
    pub block_cache_hits: u64,
    /// Cache misses.
    pub block_cache_misses: u64,
    /// Last sequence number assigned.
    pub last_seq: u64,
    /// Last sequence number acknowledged durable.
    pub acked_seq: u64,
    /// True once a fatal error poisoned the instance.
    pub poisoned: bool,
}

/// Result of [`Store::checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Epoch.
    pub epoch: u64,
    /// Last sequence number included.
    pub seq: u64,
    /// All segment files of the checkpoint.
    pub files: Vec<PathBuf>,
    /// Files not in the previous checkpoint (the incremental part).
    pub new_files: Vec<PathBuf>,
    /// Bytes of `new_files`.
    pub new_bytes: u64,
}

/// Result of [`Store::compact_step`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionProgress {
    /// Input bytes merged in this step.
    pub consumed_bytes: u64,
    /// Output bytes written in this step.
    pub written_bytes: u64,
    /// A job finished and was installed in this step.
    pub installed: bool,
    /// Nothing to do.
    pub idle: bool,
}

/// State shared with in-flight commit futures (which do not borrow the store).
#[derive(Default)]
struct Shared {
    acked_seq: Cell<u64>,
    wal_bytes_written: Cell<u64>,
    poisoned: std::cell::RefCell<Option<String>>,
}

impl Shared {
    fn check(&self) -> Result<()> {
        match &*self.poisoned.borrow() {
            Some(r) => Err(StoreError::Poisoned { reason: r.clone() }),
            None => Ok(()),
        }
    }

    /// Poisons on fatal errors (failed fsync, failed non-ENOSPC WAL write).
    fn note(&self, e: &StoreError) {
        let fatal = is_sync_failure(e) || matches!(e, StoreError::Io { op: "wal write", .. });
        let mut p = self.poisoned.borrow_mut();
        if fatal && p.is_none() {
            *p = Some(e.to_string());
        }
    }
}

/// A memtable flush in progress (see `Store::maintain`).
struct FlushJob {
    builder: Option<SegmentBuilder>,
    /// Last key already added to `builder`.
    resume_after: Option<Vec<u8>>,
    /// Set once the image is built: the file being written.
    upload: Option<fsutil::Upload>,
}

/// A checkpoint detached from its store for export (see [`Store::checkpoint_export`]).
#[derive(Debug)]
pub struct CheckpointExport {
    files: Vec<(u64, PathBuf)>,
    manifest: Manifest,
}

impl CheckpointExport {
    /// Bytes of the checkpoint's segment files.
    pub fn bytes(&self) -> u64 {
        self.manifest.runs.iter().flatten().map(|m| m.bytes).sum()
    }

    /// Number of segment files.
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Write the export into `dest` (created): a hard link per segment file (a copy, fsynced,
    /// where linking fails, e.g. across file systems) and a manifest, written atomically last,
    /// so `Store::open(dest)` opens the checkpoint's state. Blocking file I/O.
    pub fn write_to(&self, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest).map_err(|e| StoreError::io("create export dir", dest, e))?;
        for (id, src) in &self.files {
            let dst = fsutil::segment_path(dest, *id);
            if dst.exists() {
                continue;
            }
            if std::fs::hard_link(src, &dst).is_err() {
                std::fs::copy(src, &dst).map_err(|e| StoreError::io("copy checkpoint file", &dst, e))?;
                std::fs::File::open(&dst)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| StoreError::io("fsync checkpoint file", &dst, e))?;
            }
        }
        manifest::store(dest, &self.manifest)
    }
}

/// A keyed-state store for one shard.
pub struct Store {
    dir: PathBuf,
    cfg: StoreConfig,
    clock: Rc<dyn Clock>,
    _lock: std::fs::File,
    manifest: Manifest,
    segs: HashMap<u64, Rc<Segment>>,
    runs: Vec<Vec<Rc<Segment>>>,
    cache: Rc<BlockCache>,
    active: Memtable,
    /// Sealed memtables waiting for flush, oldest first (flushed in this order).
    sealed: VecDeque<Memtable>,
    /// Checkpoints begun but not yet recorded: (epoch, last sequence number they hold). One is
    /// recorded as soon as every sealed memtable holding sequence numbers up to it is flushed.
    pending_checkpoints: VecDeque<(u64, u64)>,
    wal: Option<WalWriter>,
    old_wals: Vec<(u64, PathBuf, u64, u64)>,
    next_seq: u64,
    shared: Rc<Shared>,
    job: Option<Job>,
    flush_job: Option<FlushJob>,
    torn_tails: u64,
    user_bytes: u64,
    fail_next_sync: bool,
    /// Writes ignore the memtable stall limit (see [`Store::set_unthrottled`]).
    unthrottled: bool,
}

fn meta_of(id: u64, b: &Built) -> SegmentMeta {
    SegmentMeta {
        id,
        bytes: b.bytes.len() as u64,
        entries: b.entries,
        first_key: b.first_key.clone(),
        last_key: b.last_key.clone(),
    }
}

fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last != 0xff {
            p.push(last + 1);
            return Bound::Excluded(p);
        }
    }
    Bound::Unbounded
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering from the WAL.
    pub async fn open(dir: impl AsRef<Path>, cfg: StoreConfig) -> Result<Store> {
        Self::open_with_clock(dir, cfg, Rc::new(SystemClock)).await
    }

    /// Like [`Store::open`] with an explicit clock for TTL decisions.
    pub async fn open_with_clock(dir: impl AsRef<Path>, cfg: StoreConfig, clock: Rc<dyn Clock>) -> Result<Store> {
        cfg.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| StoreError::io("create dir", &dir, e))?;
        let lock = fsutil::lock_dir(&dir)?;
        let _ = std::fs::remove_file(dir.join("MANIFEST.tmp"));
        let manifest = manifest::load(&dir)?.unwrap_or(Manifest {
            next_file_id: 1,
            replay_from_seq: 1,
            ..Manifest::default()
        });
        let cache = Rc::new(BlockCache::new(cfg.block_cache_bytes));
        let mut st = Store {
            dir,
            cfg,
            clock,
            _lock: lock,
            manifest,
            segs: HashMap::new(),
            runs: Vec::new(),
            cache,
            active: Memtable::default(),
            sealed: VecDeque::new(),
            pending_checkpoints: VecDeque::new(),
            wal: None,
            old_wals: Vec::new(),
            next_seq: 1,
            shared: Rc::new(Shared::default()),
            job: None,
            flush_job: None,
            torn_tails: 0,
            user_bytes: 0,
            fail_next_sync: false,
            unthrottled: false,
        };
        for run in st.manifest.runs.clone() {
            for m in run {
                let p = fsutil::segment_path(&st.dir, m.id);
                let s = Segment::open(&p, m.id, st.cache.clone())?;
                if s.file_bytes() != m.bytes {
                    return Err(StoreError::corrupt(
                        &p,
                        0,
                        format!("size expected {} (manifest), got {}", m.bytes, s.file_bytes()),
                    ));
                }
                st.segs.insert(m.id, s);
            }
        }
        for c in &st.manifest.checkpoints {
            for m in c.runs.iter().flatten() {
                let p = fsutil::segment_path(&st.dir, m.id);
                if !p.exists() {
                    return Err(StoreError::corrupt(&p, 0, format!("segment of checkpoint epoch {} is missing", c.epoch)));
                }
            }
        }
        st.rebuild_runs();
        let mut wal_ids = Vec::new();
        let rd = std::fs::read_dir(&st.dir).map_err(|e| StoreError::io("list dir", &st.dir, e))?;
        for ent in rd {
            let ent = ent.map_err(|e| StoreError::io("list dir", &st.dir, e))?;
            if let Some((true, id)) = ent.file_name().to_str().and_then(fsutil::parse_name) {
                wal_ids.push(id);
            }
        }
        wal_ids.sort_unstable();
        st.gc_files();
        st.replay(&wal_ids).await?;
        if st.cfg.wal {
            let next_wal = wal_ids.last().map_or(1, |l| l + 1);
            st.wal = Some(WalWriter::create(&st.dir, next_wal, st.cfg.io_chunk_bytes).await?);
        } else {
            // Writes replayed from a WAL of an earlier run with one: keep them by flushing, so
            // the WAL files can go.
            st.seal_active();
            st.flush_sealed().await?;
            st.shared.acked_seq.set(st.next_seq - 1);
        }
        manifest::store(&st.dir, &st.manifest)?;
        st.gc_wals();
        Ok(st)
    }

    async fn replay(&mut self, wal_ids: &[u64]) -> Result<()> {
        let mut prev = 0u64;
        for (i, &id) in wal_ids.iter().enumerate() {
            let path = fsutil::wal_path(&self.dir, id);
            let buf = std::fs::read(&path).map_err(|e| StoreError::io("read wal", &path, e))?;
            let (recs, tail) = scan(&buf, prev);
            let mut max_seq = 0;
            for r in &recs {
                max_seq = r.seq;
                prev = r.seq;
                if r.seq < self.manifest.replay_from_seq {
                    continue;
                }
                let ops = decode_payload(&buf[r.payload.0..r.payload.1]).expect("scan checked the payload");
                for op in &ops {
                    self.active.apply(r.seq, op.key, op_entry(op));
                }
                if self.active.bytes() >= self.cfg.memtable_budget_bytes {
                    self.seal_active();
                    self.flush_sealed().await?;
                }
            }
            if let Tail::Invalid { offset, reason, valid_follows } = tail {
                if i + 1 == wal_ids.len() && !valid_follows {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| StoreError::io("open wal for truncation", &path, e))?;
                    f.set_len(offset).map_err(|e| StoreError::io("truncate torn wal tail", &path, e))?;
                    f.sync_all().map_err(|e| StoreError::io("fsync truncated wal", &path, e))?;
                    self.torn_tails += 1;
                } else {
                    return Err(StoreError::corrupt(
                        &path,
                        offset,
                        format!("{reason}; damage before the WAL tail, refusing to open"),
                    ));
                }
            }
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            self.old_wals.push((id, path, max_seq, bytes));
        }
        self.next_seq = self.manifest.replay_from_seq.max(prev + 1);
        self.shared.acked_seq.set(self.next_seq - 1);
        Ok(())
    }

    fn rebuild_runs(&mut self) {
        self.runs = self
            .manifest
            .runs
            .iter()
            .map(|r| r.iter().map(|m| self.segs[&m.id].clone()).collect())
            .collect();
    }

    fn check(&self) -> Result<()> {
        self.shared.check()
    }

    /// Poisons the instance on fatal errors; passes the result through.
    fn guard<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            self.shared.note(e);
        }
        r
    }

    // ---------------------------------------------------------------- writes

    fn write_ops(&mut self, ops: &[OpRef<'_>]) -> Result<u64> {
        self.check()?;
        for op in ops {
            if op.key.len() > self.cfg.max_key_bytes || op.value.len() > self.cfg.max_value_bytes {
                return Err(StoreError::InvalidArgument(format!(
                    "key of {} bytes / value of {} bytes exceeds max_key_bytes {} / max_value_bytes {}",
                    op.key.len(),
                    op.value.len(),
                    self.cfg.max_key_bytes,
                    self.cfg.max_value_bytes
                )));
            }
        }
        let mem = self.memtable_bytes();
        let pending = self.wal.as_ref().map_or(0, |w| w.pending_bytes());
        if pending >= self.cfg.wal_max_pending_bytes as u64 && !self.unthrottled {
            return Err(StoreError::Backpressure {
                what: "uncommitted WAL buffer (call commit)",
                used: pending,
                limit: self.cfg.wal_max_pending_bytes as u64,
            });
        }
        if mem >= self.cfg.memtable_stall_bytes && !self.unthrottled {
            return Err(StoreError::Backpressure {
                what: "memtables (call maintain/flush)",
                used: mem as u64,
                limit: self.cfg.memtable_stall_bytes as u64,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(wal) = self.wal.as_mut() {
            wal.append(seq, self.manifest.epoch, ops);
        }
        for op in ops {
            self.user_bytes += (op.key.len() + op.value.len()) as u64;
            self.active.apply(seq, op.key, op_entry(op));
        }
        if self.active.bytes() >= self.cfg.memtable_budget_bytes {
            self.seal_active();
        }
        Ok(seq)
    }

    /// Buffers a put; durable after the next successful [`Store::commit`].
    /// Returns the sequence number.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<u64> {
        self.put_with_ttl(key, value, 0)
    }

    /// Put with an absolute expiry time in ms (0: never expires).
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], expire_ms: u64) -> Result<u64> {
        self.write_ops(&[OpRef {
            kind: Kind::Put,
            key,
            value,
            expire_ms,
        }])
    }

    /// Buffers a delete.
    pub fn delete(&mut self, key: &[u8]) -> Result<u64> {
        self.write_ops(&[OpRef {
            kind: Kind::Delete,
            key,
            value: &[],
            expire_ms: 0,
        }])
    }

    /// Applies a batch atomically (one WAL record, one sequence number).
    pub fn write(&mut self, batch: &WriteBatch) -> Result<u64> {
        let ops: Vec<OpRef<'_>> = batch
            .ops
            .iter()
            .map(|o| OpRef {
                kind: o.kind,
                key: &o.key,
                value: &o.value,
                expire_ms: o.expire_ms,
            })
            .collect();
        self.write_ops(&ops)
    }

    /// Group commit: returns a future that makes every write buffered so
    /// far durable (one series of direct writes + one fdatasync) and
    /// resolves to the acknowledged sequence number. The future does not
    /// borrow the store: the run loop may spawn it and keep writing; writes
    /// made meanwhile go to the next commit. Disk full leaves the writes
    /// buffered (retry later); an fdatasync failure poisons the instance.
    ///
    /// Without a WAL there is nothing to commit: the future resolves at once
    /// to the last sequence number made durable by a memtable flush.
    pub fn commit(&mut self) -> impl std::future::Future<Output = Result<u64>> + 'static {
        let early = self.check();
        let inject = std::mem::take(&mut self.fail_next_sync) && self.wal.as_ref().is_some_and(|w| w.pending_bytes() > 0);
        let fut = self.wal.as_ref().map(|w| w.commit_future(inject));
        let shared = self.shared.clone();
        async move {
            early?;
            let Some(fut) = fut else {
                return Ok(shared.acked_seq.get());
            };
            match fut.await {
                Ok(done) => {
                    shared.check()?;
                    let acked = shared.acked_seq.get().max(done.max_seq);
                    shared.acked_seq.set(acked);
                    shared.wal_bytes_written.set(shared.wal_bytes_written.get() + done.bytes);
                    Ok(acked)
                }
                Err(e) => {
                    shared.note(&e);
                    Err(e)
                }
            }
        }
    }

    /// Rolls the WAL segment once it reached `wal_segment_bytes`.
    async fn maybe_roll_wal(&mut self) -> Result<()> {
        if self.wal.as_ref().is_some_and(|w| w.durable_len() >= self.cfg.wal_segment_bytes) {
            self.commit().await?;
            // A failed roll (e.g. disk full creating the next segment) is
            // retried at the next call; the records are durable already.
            let _ = self.roll_wal().await;
        }
        Ok(())
    }

    async fn roll_wal(&mut self) -> Result<()> {
        let id = self.wal.as_ref().expect("open store has a WAL").id() + 1;
        let new = WalWriter::create(&self.dir, id, self.cfg.io_chunk_bytes).await?;
        let old = self.wal.replace(new).expect("open store has a WAL");
        assert_eq!(old.pending_bytes(), 0, "roll only after commit");
        self.old_wals.push((old.id(), old.path().to_path_buf(), old.max_seq(), old.len()));
        old.close().await;
        self.gc_wals();
        Ok(())
    }

    fn gc_wals(&mut self) {
        let floor = self.manifest.replay_from_seq;
        self.old_wals.retain(|(_, p, max, _)| {
            if *max < floor {
                let _ = std::fs::remove_file(p);
                false
            } else {
                true
            }
        });
    }

    // ----------------------------------------------------------------- reads

    /// Point read of the newest live value.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check()?;
        let now = self.clock.now_ms();
        let live = |e: &Entry| {
            if e.is_live(now) {
                Some(e.value.clone())
            } else {
                None
            }
        };
        if let Some(e) = self.active.get(key) {
            return Ok(live(e));
        }
        for m in self.sealed.iter().rev() {
            if let Some(e) = m.get(key) {
                return Ok(live(e));
            }
        }
        for run in &self.runs {
            let i = run.partition_point(|s| s.last_key() < key);
            if i < run.len() && run[i].first_key() <= key {
                if let Some(e) = run[i].get(key)? {
                    return Ok(live(&e));
                }
            }
        }
        Ok(None)
    }

    /// Ordered scan of live entries with keys in `(lo, hi)`.
    pub fn scan_range(&self, lo: Bound<&[u8]>, hi: Bound<&[u8]>) -> Result<ScanIter<'_>> {
        self.check()?;
        let own = |b: Bound<&[u8]>| match b {
            Bound::Included(k) => Bound::Included(k.to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut sources: Vec<Source<'_>> = Vec::new();
        sources.push(Box::new(self.active.range(lo, hi).map(|(k, e)| Ok((k.clone(), e.clone())))));
        for m in self.sealed.iter().rev() {
            sources.push(Box::new(m.range(lo, hi).map(|(k, e)| Ok((k.clone(), e.clone())))));
        }
        for run in &self.runs {
            sources.push(Box::new(RunCursor::new(run.clone(), own(lo), own(hi))));
        }
        Ok(ScanIter {
            inner: MergeIter::new(sources),
            now: self.clock.now_ms(),
        })
    }

    /// Ordered scan of live entries whose key starts with `prefix`.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<ScanIter<'_>> {
        match prefix_end(prefix) {
            Bound::Excluded(end) => {
                // `end` is computed, so it cannot be borrowed from the caller.
                let it = self.scan_range(Bound::Included(prefix), Bound::Excluded(&end))?;
                Ok(it)
            }
            _ => self.scan_range(Bound::Included(prefix), Bound::Unbounded),
        }
    }

    // --------------------------------------------------------------- flushes

    /// Seals the active memtable and writes every memtable to segment files.
    pub async fn flush(&mut self) -> Result<()> {
        self.check()?;
        self.seal_active();
        self.flush_sealed().await
    }

    /// Seals the active memtable (when it holds anything): it joins the flush queue.
    fn seal_active(&mut self) {
        if !self.active.is_empty() {
            let m = std::mem::take(&mut self.active);
            self.sealed.push_back(m);
        }
    }

    /// Bytes in the active and the sealed memtables.
    fn memtable_bytes(&self) -> usize {
        self.active.bytes() + self.sealed.iter().map(|m| m.bytes()).sum::<usize>()
    }

    async fn flush_sealed(&mut self) -> Result<()> {
        while !self.flush_step(u64::MAX).await? {}
        Ok(())
    }

    /// Adds about `budget` bytes of the sealed memtable to the segment
    /// being built; once all entries are in, writes and installs it.
    /// Returns true when no sealed memtable is left.
    async fn flush_step(&mut self, budget: u64) -> Result<bool> {
        self.record_covered_checkpoints()?;
        let Some(m) = self.sealed.front() else {
            self.flush_job = None;
            return Ok(true);
        };
        if m.is_empty() {
            self.sealed.pop_front();
            self.flush_job = None;
            return Ok(self.sealed.is_empty());
        }
        let now = self.clock.now_ms();
        let (block_bytes, bloom_bits) = (self.cfg.block_bytes, self.cfg.bloom_bits_per_key);
        let job = self.flush_job.get_or_insert_with(|| FlushJob {
            builder: Some(SegmentBuilder::new(block_bytes, bloom_bits)),
            resume_after: None,
            upload: None,
        });
        if job.upload.is_none() {
            let builder = job.builder.as_mut().expect("building until uploaded");
            let lo = match &job.resume_after {
                Some(k) => Bound::Excluded(k.as_slice()),
                None => Bound::Unbounded,
            };
            let mut used = 0u64;
            let mut last: Option<&Vec<u8>> = None;
            let mut exhausted = true;
            for (k, e) in m.range(lo, Bound::Unbounded) {
                if used >= budget.max(1) {
                    exhausted = false;
                    break;
                }
                used += (k.len() + e.value.len() + 17) as u64;
                if e.kind == Kind::Put && e.is_expired(now) {
                    builder.add(k, &Entry::tombstone());
                } else {
                    builder.add(k, e);
                }
                last = Some(k);
            }
            if !exhausted {
                job.resume_after = last.cloned();
                return Ok(false);
            }
            let built = job.builder.take().expect("building").finish();
            let id = self.manifest.next_file_id;
            self.manifest.next_file_id += 1;
            let path = fsutil::segment_path(&self.dir, id);
            job.upload = Some(fsutil::Upload::new(path, id, built));
        }
        // Write the image, about `budget` bytes per call.
        let chunk = self.cfg.io_chunk_bytes;
        let job = self.flush_job.as_mut().expect("set above");
        let r = job.upload.as_mut().expect("set above").step(budget, chunk).await;
        match self.guard(r) {
            Ok(false) => return Ok(false),
            Ok(true) => {}
            Err(e) => {
                let up = self.flush_job.take().and_then(|j| j.upload);
                if let Some(u) = up {
                    u.abort().await;
                }
                return Err(e);
            }
        }
        let up = self.flush_job.take().and_then(|j| j.upload).expect("uploaded");
        let (id, built) = (up.id, up.image);
        let path = fsutil::segment_path(&self.dir, id);
        let seg = match Segment::open(&path, id, self.cache.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        let max_seq = self.sealed.front().expect("checked above").max_seq();
        let mut next = self.manifest.clone();
        next.runs.insert(0, vec![meta_of(id, &built)]);
        next.replay_from_seq = next.replay_from_seq.max(max_seq + 1);
        next.flushed_bytes += built.bytes.len() as u64;
        if let Err(e) = self.store_manifest(&next) {
            let _ = std::fs::remove_file(fsutil::segment_path(&self.dir, id));
            return Err(e);
        }
        self.segs.insert(id, seg);
        self.rebuild_runs();
        self.sealed.pop_front();
        if self.wal.is_none() {
            // Without a WAL, a write is durable once its memtable is.
            self.shared.acked_seq.set(self.shared.acked_seq.get().max(max_seq));
        }
        self.record_covered_checkpoints()?;
        // If the active WAL segment holds only flushed records, roll it so
        // it can be deleted now (keeps space amplification down).
        // (During recovery there is no WAL writer yet.)
        let floor = self.manifest.replay_from_seq;
        if self
            .wal
            .as_ref()
            .is_some_and(|w| w.pending_bytes() == 0 && w.max_seq() < floor && !w.is_empty())
        {
            let _ = self.roll_wal().await;
        }
        self.gc_wals();
        Ok(self.sealed.is_empty())
    }

    fn store_manifest(&mut self, next: &Manifest) -> Result<()> {
        let r = manifest::store(&self.dir, next);
        self.guard(r)?;
        self.manifest = next.clone();
        Ok(())
    }

    // ------------------------------------------------------------ compaction

    /// Advances the flush of a sealed memtable by about `budget_bytes`
    /// (writing and installing the segment once it is complete); when no
    /// flush is pending, runs one compaction step with the same budget.
    /// Call from the shard's run loop when idle or periodically.
    pub async fn maintain(&mut self, budget_bytes: u64) -> Result<CompactionProgress> {
        self.check()?;
        self.maybe_roll_wal().await?;
        if !self.flush_step(budget_bytes).await? {
            // The flush used this call's budget; compaction waits.
            return Ok(CompactionProgress::default());
        }
        self.compact_step(budget_bytes).await
    }

    /// Runs one compaction step merging at most about `budget_bytes` of
    /// input (plus writing any output segment that became full).
    pub async fn compact_step(&mut self, budget_bytes: u64) -> Result<CompactionProgress> {
        self.check()?;
        let mut prog = CompactionProgress::default();
        if self.job.is_none() {
            let sizes: Vec<u64> = self.manifest.runs.iter().map(|r| r.iter().map(|m| m.bytes).sum()).collect();
            let Some((start, n)) = compaction::pick(&sizes, &self.cfg) else {
                prog.idle = true;
                return Ok(prog);
            };
            let runs = self.runs[start..start + n].to_vec();
            self.job = Some(Job::new(runs, start + n == self.runs.len()));
        }
        // Finish writing queued output files first, about `budget` bytes per call.
        let chunk = self.cfg.io_chunk_bytes;
        loop {
            let job = self.job.as_mut().expect("set above");
            let Some(up) = job.uploads.front_mut() else {
                break;
            };
            let r = up.step(budget_bytes, chunk).await;
            match self.guard(r) {
                Ok(true) => {
                    let job = self.job.as_mut().expect("set above");
                    let up = job.uploads.pop_front().expect("front exists");
                    let n = up.image.bytes.len() as u64;
                    prog.written_bytes += n;
                    job.written += n;
                    job.outputs.push(meta_of(up.id, &up.image));
                }
                Ok(false) => return Ok(prog),
                Err(e) => {
                    if let Some(j) = self.job.take() {
                        for u in j.uploads {
                            u.abort().await;
                        }
                    }
                    self.gc_files();
                    return Err(e);
                }
            }
        }
        let now = self.clock.now_ms();
        let job = self.job.as_mut().expect("set above");
        let before = job.consumed;
        let built = match job.advance(budget_bytes, now, &self.cfg) {
            Ok(b) => b,
            Err(e) => {
                self.job = None;
                self.gc_files();
                return Err(e);
            }
        };
        prog.consumed_bytes = job.consumed - before;
        for b in built {
            let id = self.manifest.next_file_id;
            self.manifest.next_file_id += 1;
            let path = fsutil::segment_path(&self.dir, id);
            let job = self.job.as_mut().expect("job in progress");
            job.uploads.push_back(fsutil::Upload::new(path, id, b));
        }
        if self.job.as_ref().is_some_and(|j| j.is_done() && j.uploads.is_empty()) {
            let job = self.job.take().expect("checked");
            let pos = self.manifest.runs.iter().position(|r| r[0].id == job.inputs[0]).expect("job inputs are live");
            for (i, id) in job.inputs.iter().enumerate() {
                assert_eq!(self.manifest.runs[pos + i][0].id, *id, "job inputs stay adjacent");
            }
            let mut next = self.manifest.clone();
            let removed: Vec<SegmentMeta> = next
                .runs
                .splice(
                    pos..pos + job.inputs.len(),
                    if job.outputs.is_empty() { vec![] } else { vec![job.outputs.clone()] },
                )
                .flatten()
                .collect();
            next.compacted_bytes += job.written;
            if let Err(e) = self.store_manifest(&next) {
                self.gc_files();
                return Err(e);
            }
            for m in &job.outputs {
                let p = fsutil::segment_path(&self.dir, m.id);
                let s = Segment::open(&p, m.id, self.cache.clone())?;
                self.segs.insert(m.id, s);
            }
            for m in removed {
                self.segs.remove(&m.id);
            }
            self.rebuild_runs();
            self.gc_files();
            prog.installed = true;
        }
        Ok(prog)
    }

    /// Deletes segment files referenced by neither the live runs, a
    /// retained checkpoint nor the compaction in progress.
    fn gc_files(&mut self) {
        let mut keep: HashSet<u64> = self.manifest.runs.iter().flatten().map(|m| m.id).collect();
        for c in &self.manifest.checkpoints {
            keep.extend(c.runs.iter().flatten().map(|m| m.id));
        }
        if let Some(j) = &self.job {
            keep.extend(j.outputs.iter().map(|m| m.id));
            keep.extend(j.uploads.iter().map(|u| u.id));
        }
        if let Some(u) = self.flush_job.as_ref().and_then(|j| j.upload.as_ref()) {
            keep.insert(u.id);
        }
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for ent in rd.flatten() {
            if let Some((false, id)) = ent.file_name().to_str().and_then(fsutil::parse_name) {
                if !keep.contains(&id) {
                    self.cache.forget_segment(id);
                    let _ = std::fs::remove_file(ent.path());
                }
            }
        }
    }

    // ----------------------------------------------------------- checkpoints

    /// Takes checkpoint `epoch`: commits the WAL, flushes the memtables and
    /// records the live file set under `epoch` in the manifest. Files are
    /// immutable, so only files created since the previous checkpoint are
    /// new. Keeps the last `checkpoints_retained` checkpoints.
    pub async fn checkpoint(&mut self, epoch: u64) -> Result<CheckpointInfo> {
        self.begin_checkpoint(epoch)?;
        let done = async {
            self.commit().await?;
            self.flush_sealed().await?;
            self.record_covered_checkpoints()
        }
        .await;
        if let Err(e) = done {
            // A failed checkpoint is not taken: it may be retried under the same epoch.
            self.pending_checkpoints.retain(|p| p.0 != epoch);
            return Err(e);
        }
        self.checkpoint_info(epoch)?
            .ok_or_else(|| StoreError::InvalidArgument(format!("checkpoint {epoch} was not recorded after its flush")))
    }

    /// Begins checkpoint `epoch` without I/O: the checkpoint holds exactly the writes made so
    /// far (sequence numbers up to now); the active memtable is sealed and joins the flush
    /// queue, and writes go on into a new one. The checkpoint is recorded in the manifest once
    /// the memtables holding its writes are flushed ([`Store::maintain`] does that first);
    /// [`Store::checkpoint_info`] tells when. Several checkpoints may be pending at once.
    pub fn begin_checkpoint(&mut self, epoch: u64) -> Result<()> {
        self.check()?;
        let last = self
            .pending_checkpoints
            .back()
            .map(|p| p.0)
            .or(self.manifest.checkpoints.last().map(|c| c.epoch));
        if let Some(last) = last {
            if epoch <= last {
                return Err(StoreError::InvalidArgument(format!(
                    "checkpoint epoch {epoch} is not after the last one ({last})"
                )));
            }
        }
        self.seal_active();
        self.pending_checkpoints.push_back((epoch, self.next_seq - 1));
        Ok(())
    }

    /// True while a begun checkpoint is not yet recorded.
    pub fn checkpoint_pending(&self) -> bool {
        !self.pending_checkpoints.is_empty()
    }

    /// Records every pending checkpoint whose writes are all in segment files. Runs before any
    /// later memtable is flushed, so the recorded file set holds exactly the checkpoint's writes
    /// (a compaction only merges files, never changes what they hold).
    fn record_covered_checkpoints(&mut self) -> Result<()> {
        let mut next: Option<Manifest> = None;
        while let Some(&(epoch, seq)) = self.pending_checkpoints.front() {
            if self.sealed.iter().any(|m| !m.is_empty() && m.max_seq() <= seq) {
                break;
            }
            debug_assert!(
                self.active.is_empty() || self.active.max_seq() > seq,
                "the active memtable holds only writes after a pending checkpoint"
            );
            self.pending_checkpoints.pop_front();
            let m = next.get_or_insert_with(|| self.manifest.clone());
            m.epoch = epoch;
            m.checkpoints.push(CheckpointMeta {
                epoch,
                seq,
                runs: m.runs.clone(),
            });
            while m.checkpoints.len() > self.cfg.checkpoints_retained {
                m.checkpoints.remove(0);
            }
        }
        if let Some(m) = next {
            self.store_manifest(&m)?;
            self.gc_files();
        }
        Ok(())
    }

    /// The recorded checkpoint `epoch`: its files and which of them are new since the
    /// checkpoint before it (`None` while pending or when not retained).
    pub fn checkpoint_info(&self, epoch: u64) -> Result<Option<CheckpointInfo>> {
        let cps = &self.manifest.checkpoints;
        let Some(i) = cps.iter().position(|c| c.epoch == epoch) else {
            return Ok(None);
        };
        let c = &cps[i];
        let prev: HashSet<u64> = if i > 0 {
            cps[i - 1].runs.iter().flatten().map(|m| m.id).collect()
        } else {
            HashSet::new()
        };
        let mut info = CheckpointInfo {
            epoch,
            seq: c.seq,
            files: Vec::new(),
            new_files: Vec::new(),
            new_bytes: 0,
        };
        for m in c.runs.iter().flatten() {
            let p = fsutil::segment_path(&self.dir, m.id);
            if !prev.contains(&m.id) {
                info.new_files.push(p.clone());
                info.new_bytes += m.bytes;
            }
            info.files.push(p);
        }
        Ok(Some(info))
    }

    /// Lets writes go past the memtable stall and uncommitted-WAL limits (`true`) — for a bounded burst that must
    /// not wait, such as writing back a cache at a checkpoint barrier — or restores it.
    pub fn set_unthrottled(&mut self, on: bool) {
        self.unthrottled = on;
    }

    /// Epochs of the retained checkpoints, oldest first.
    pub fn checkpoints(&self) -> Vec<u64> {
        self.manifest.checkpoints.iter().map(|c| c.epoch).collect()
    }

    /// Rolls the store back to checkpoint `epoch`: the live state becomes
    /// exactly the checkpoint's; every later write (WAL, memtables,
    /// segments) and every later checkpoint is discarded.
    pub async fn restore(&mut self, epoch: u64) -> Result<()> {
        self.check()?;
        let Some(c) = self.manifest.checkpoints.iter().find(|c| c.epoch == epoch).cloned() else {
            return Err(StoreError::CheckpointNotFound {
                epoch,
                retained: self.checkpoints(),
            });
        };
        let mut segs = HashMap::new();
        for m in c.runs.iter().flatten() {
            let p = fsutil::segment_path(&self.dir, m.id);
            let s = match self.segs.get(&m.id) {
                Some(s) => s.clone(),
                None => Segment::open(&p, m.id, self.cache.clone())?,
            };
            segs.insert(m.id, s);
        }
        let new_wal = match &self.wal {
            Some(w) => Some(WalWriter::create(&self.dir, w.id() + 1, self.cfg.io_chunk_bytes).await?),
            None => None,
        };
        let mut next = self.manifest.clone();
        next.runs = c.runs.clone();
        next.checkpoints.retain(|k| k.epoch <= epoch);
        next.epoch = epoch;
        next.replay_from_seq = self.next_seq;
        self.job = None;
        self.flush_job = None;
        if let Err(e) = self.store_manifest(&next) {
            if let Some(new_wal) = new_wal {
                let _ = std::fs::remove_file(new_wal.path());
                new_wal.close().await;
            }
            return Err(e);
        }
        if let Some(new_wal) = new_wal {
            let old = self.wal.replace(new_wal).expect("a store with a WAL has a WAL writer");
            self.old_wals
                .push((old.id(), old.path().to_path_buf(), old.max_seq().max(self.next_seq - 1), old.len()));
            old.close().await;
        }
        self.active = Memtable::default();
        self.sealed.clear();
        self.pending_checkpoints.clear();
        self.segs = segs;
        self.rebuild_runs();
        self.shared.acked_seq.set(self.next_seq - 1);
        self.gc_wals();
        self.gc_files();
        Ok(())
    }

    // ------------------------------------------------------------------ misc

    /// Current figures.
    pub fn stats(&self) -> Stats {
        let sizes: Vec<u64> = self.manifest.runs.iter().map(|r| r.iter().map(|m| m.bytes).sum()).collect();
        let mut debt = self.job.as_ref().map_or(0, |j| j.remaining());
        if self.job.is_none() {
            if let Some((s, n)) = compaction::pick(&sizes, &self.cfg) {
                debt += sizes[s..s + n].iter().sum::<u64>();
            }
        }
        let wal = self.wal.as_ref();
        let (cache_bytes, hits, misses) = self.cache.stats();
        let mut ids: HashMap<u64, u64> = HashMap::new();
        let all = self.manifest.runs.iter().chain(self.manifest.checkpoints.iter().flat_map(|c| c.runs.iter()));
        for m in all.flatten() {
            ids.insert(m.id, m.bytes);
        }
        for m in self.job.iter().flat_map(|j| j.outputs.iter()) {
            ids.insert(m.id, m.bytes);
        }
        let disk_segment_bytes = ids.values().sum();
        Stats {
            memtable_bytes: self.active.bytes() as u64,
            sealed_memtable_bytes: self.sealed.iter().map(|m| m.bytes()).sum::<usize>() as u64,
            runs: self.runs.len() as u64,
            segments: self.segs.len() as u64,
            segment_bytes: sizes.iter().sum(),
            disk_segment_bytes,
            compaction_debt_bytes: debt,
            compaction_running: self.job.is_some(),
            wal_bytes: self.old_wals.iter().map(|w| w.3).sum::<u64>() + wal.map_or(0, |w| w.len()),
            wal_pending_bytes: wal.map_or(0, |w| w.pending_bytes()),
            wal_files: self.old_wals.len() as u64 + self.wal.is_some() as u64,
            torn_tails_truncated: self.torn_tails,
            checkpoints: self.checkpoints(),
            user_bytes_written: self.user_bytes,
            wal_bytes_written: self.shared.wal_bytes_written.get(),
            flushed_bytes: self.manifest.flushed_bytes,
            compacted_bytes: self.manifest.compacted_bytes,
            block_cache_bytes: cache_bytes as u64,
            block_cache_hits: hits,
            block_cache_misses: misses,
            last_seq: self.next_seq - 1,
            acked_seq: self.shared.acked_seq.get(),
            poisoned: self.shared.poisoned.borrow().is_some(),
        }
    }

    /// Reads and CRC-checks every data block of every live segment
    /// (blocks are otherwise verified lazily when first read). Returns the
    /// number of entries checked.
    pub async fn verify(&self) -> Result<u64> {
        self.check()?;
        let mut n = 0;
        for s in self.segs.values() {
            n += s.verify()?;
            glommio::yield_if_needed().await;
        }
        Ok(n)
    }

    /// Fault injection for tests: the next commit with pending records
    /// fails as if `fdatasync` returned EIO (which poisons the instance).
    #[doc(hidden)]
    pub fn inject_sync_failure(&mut self) {
        self.fail_next_sync = true;
    }

    /// Directory of the store.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Paths of the segment files of retained checkpoint `epoch` (to ship
    /// or hard-link elsewhere).
    pub fn checkpoint_files(&self, epoch: u64) -> Result<Vec<PathBuf>> {
        let c = self
            .manifest
            .checkpoints
            .iter()
            .find(|c| c.epoch == epoch)
            .ok_or_else(|| StoreError::CheckpointNotFound {
                epoch,
                retained: self.checkpoints(),
            })?;
        Ok(c.runs.iter().flatten().map(|m| fsutil::segment_path(&self.dir, m.id)).collect())
    }

    /// Materialises retained checkpoint `epoch` as a self-contained store
    /// directory `dest` (hard links to the immutable segment files, a copy
    /// when linking fails, plus a manifest): `Store::open(dest)` opens it
    /// in the checkpoint's state. Exporting successive checkpoints into
    /// separate directories shares unchanged files (incremental).
    pub async fn export_checkpoint(&self, epoch: u64, dest: &Path) -> Result<()> {
        self.check()?;
        self.checkpoint_export(epoch)?.write_to(dest)
    }

    /// What exporting checkpoint `epoch` takes, detached from the store, so the file work
    /// (links, a manifest write with fsyncs) can run on a blocking thread: see
    /// [`CheckpointExport::write_to`]. The segment files stay valid while the checkpoint is
    /// retained.
    pub fn checkpoint_export(&self, epoch: u64) -> Result<CheckpointExport> {
        let c = self
            .manifest
            .checkpoints
            .iter()
            .find(|c| c.epoch == epoch)
            .cloned()
            .ok_or_else(|| StoreError::CheckpointNotFound {
                epoch,
                retained: self.checkpoints(),
            })?;
        let files = c.runs.iter().flatten().map(|m| (m.id, fsutil::segment_path(&self.dir, m.id))).collect();
        let manifest = Manifest {
            next_file_id: self.manifest.next_file_id,
            replay_from_seq: c.seq + 1,
            epoch,
            runs: c.runs.clone(),
            checkpoints: vec![c],
            flushed_bytes: 0,
            compacted_bytes: 0,
        };
        Ok(CheckpointExport { files, manifest })
    }

    /// Commits pending writes and closes the WAL (without a WAL: flushes the memtables, so
    /// a clean close loses nothing).
    pub async fn close(mut self) -> Result<()> {
        if self.wal.is_none() {
            self.flush().await?;
        }
        self.commit().await?;
        if let Some(w) = self.wal.take() {
            w.close().await;
        }
        Ok(())
    }
}

fn op_entry(op: &OpRef<'_>) -> Entry {
    Entry {
        kind: op.kind,
        expire_ms: op.expire_ms,
        value: op.value.to_vec(),
    }
}

/// Iterator over live `(key, value)` pairs of a scan, in key order.
pub struct ScanIter<'a> {
    inner: MergeIter<'a>,
    now: u64,
}

impl Iterator for ScanIter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;
    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.inner.next()? {
                Err(e) => return Some(Err(e)),
                Ok((k, e)) if e.is_live(self.now) => return Some(Ok((k, e.value))),
                Ok(_) => continue,
            }
        }
    }
}
