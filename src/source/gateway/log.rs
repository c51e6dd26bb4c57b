//! The gateway's own log: one directory per partition (`p-<n>/`) of weir-storage WAL segments.
//! Events are appended here, made durable by group commit (one write series + one `fdatasync`
//! per commit, for every request appended meanwhile), and only then acknowledged; the source's
//! split readers ([`super::reader`]) read the same files.
//!
//! Record layout: one WAL frame per accepted request (`crc32 | len | seq | epoch | payload`,
//! weir-storage's framing). `seq` is the *ordinal* of the request's last event in the
//! partition (events are numbered from 1, gap-free), `epoch` holds the receive time in ms, and
//! the payload holds one put per event: the first carries the request's idempotency key (empty
//! if none), every value is one event's bytes. A segment file is named `wal-<ordinal>.log`
//! after its first event, so a reader that reaches the end of a segment knows the next file.
//!
//! Shared with the shards (atomics only, no locks): `durable_next` (every event with a smaller
//! ordinal is durable), `consumed` (the reader's next ordinal, for backlog and retention),
//! `oldest` (first retained ordinal).
//!
//! Invariants: ordinals strictly increase across segments with no gaps; `durable_next` only
//! grows and is published after the `fdatasync` that made those events durable; no event at or
//! past `durable_next` is ever handed to a reader; a segment is deleted only when the reader has
//! consumed all of it (in a checkpointed job: all of it lies before the position of the
//! checkpoint before the latest one) and the retained bytes exceed `retention_bytes`; a failed `fdatasync`
//! poisons the log (every later append and read fails).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use weir_storage::wal::record::{decode_payload, OpRef};
use weir_storage::wal::scan::{scan, Tail};
use weir_storage::wal::{parse_segment_name, segment_path, WalWriter};

use super::dedup::DedupWindow;
use super::notify::Notify;
use crate::error::{Result, WeirError};

/// Bytes per direct-I/O write of the WAL writer.
const WRITE_CHUNK_BYTES: usize = 1 << 20;

/// What the shards see of one partition (atomics only).
#[derive(Debug, Default)]
pub struct PartitionShared {
    /// Every event with a smaller ordinal is durable (and may be read).
    pub durable_next: AtomicU64,
    /// The reader's next ordinal (events before it were handed to the job).
    pub consumed: AtomicU64,
    /// The first ordinal still in the log.
    pub oldest: AtomicU64,
    /// Bytes of the segment files of this partition.
    pub retained_bytes: AtomicU64,
    /// Set by a reader of a checkpointed job: segments are then kept back to `retain_from`.
    pub checkpointed: std::sync::atomic::AtomicBool,
    /// The reader's position at the checkpoint barrier before the latest one: with one
    /// checkpoint in flight at a time, every restorable checkpoint starts at or after it.
    pub retain_from: AtomicU64,
}

impl PartitionShared {
    /// Durable events the reader has not taken yet.
    pub fn backlog_events(&self) -> u64 {
        self.durable_next.load(Ordering::Acquire).saturating_sub(self.consumed.load(Ordering::Acquire))
    }
}

/// The first fatal log error (a failed fdatasync): readers and writers fail after it.
#[derive(Debug, Default)]
pub struct Poison(OnceLock<String>);

impl Poison {
    pub fn set(&self, message: String) {
        let _ = self.0.set(message);
    }
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Folder of partition `p` under the log directory.
pub fn partition_dir(log_dir: &Path, p: usize) -> PathBuf {
    log_dir.join(format!("p-{p}"))
}

/// What recovery found in a partition's folder.
pub(crate) struct Recovered {
    /// Segment first ordinals and file sizes, in order.
    pub segments: Vec<(u64, u64)>,
    /// The ordinal the next event gets.
    pub next_ordinal: u64,
    /// Torn tails cut off (0 or 1).
    pub torn_tails: u64,
}

/// Recover a partition folder: check every segment's frames (CRC, ordinals without gaps), cut a
/// torn tail off the last segment, remove empty trailing segments, and feed every request's
/// idempotency key to `dedup` in log order. Runs on the gateway thread before it serves
/// (blocking file reads at start-up, never on a shard).
pub(crate) fn recover(dir: &Path, partition: usize, dedup: &mut DedupWindow) -> Result<Recovered> {
    std::fs::create_dir_all(dir).map_err(|e| WeirError::io("creating gateway log folder", dir, e))?;
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| WeirError::io("listing gateway log folder", dir, e))? {
        let entry = entry.map_err(|e| WeirError::io("listing gateway log folder", dir, e))?;
        if let Some(id) = parse_segment_name(&entry.file_name().to_string_lossy()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let mut segments = Vec::new();
    let mut next: Option<u64> = None;
    let mut torn_tails = 0;
    let count = ids.len();
    for (k, id) in ids.into_iter().enumerate() {
        let path = segment_path(dir, id);
        let last = k + 1 == count;
        if let Some(expected) = next {
            if id != expected {
                return Err(WeirError::Other(format!(
                    "gateway log {}: segment starts at event {id}, expected {expected} (a segment is missing)",
                    path.display()
                )));
            }
        }
        let bytes = std::fs::read(&path).map_err(|e| WeirError::io("reading gateway log segment", &path, e))?;
        let (frames, tail) = scan(&bytes, next.map_or(0, |n| n.saturating_sub(1)));
        let mut ordinal = next.unwrap_or(id);
        for f in &frames {
            let ops = decode_payload(&bytes[f.payload.0..f.payload.1])
                .map_err(|at| WeirError::Other(format!("gateway log {} offset {}: bad payload at byte {at}", path.display(), f.offset)))?;
            if ops.is_empty() || f.seq + 1 != ordinal + ops.len() as u64 {
                return Err(WeirError::Other(format!(
                    "gateway log {} offset {}: frame of {} events ends at event {}, expected it to start at {ordinal}",
                    path.display(),
                    f.offset,
                    ops.len(),
                    f.seq
                )));
            }
            let key = ops[0].key();
            if !key.is_empty() {
                dedup.insert_durable(key, partition, ordinal, ops.len() as u32);
            }
            ordinal += ops.len() as u64;
        }
        let mut size = bytes.len() as u64;
        if let Tail::Invalid { offset, reason, valid_follows } = tail {
            if !last || valid_follows {
                return Err(WeirError::Other(format!(
                    "gateway log {} is damaged at offset {offset}: {reason}",
                    path.display()
                )));
            }
            // A torn tail: the crash hit an unfinished commit; nothing past it was acknowledged.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| WeirError::io("opening gateway log segment", &path, e))?;
            f.set_len(offset).map_err(|e| WeirError::io("cutting a torn tail off", &path, e))?;
            f.sync_all().map_err(|e| WeirError::io("fsync gateway log segment", &path, e))?;
            size = offset;
            torn_tails += 1;
        }
        if frames.is_empty() && last {
            // A segment created just before a crash: remove it, the next writer recreates it.
            std::fs::remove_file(&path).map_err(|e| WeirError::io("removing empty gateway log segment", &path, e))?;
        } else {
            segments.push((id, size));
        }
        next = Some(ordinal);
    }
    Ok(Recovered {
        segments,
        next_ordinal: next.unwrap_or(1),
        torn_tails,
    })
}

/// One partition's log on the gateway thread: appends, the committer loop, rolling, retention.
pub(crate) struct PartitionLog {
    pub index: usize,
    dir: PathBuf,
    gateway: Arc<super::GatewayShared>,
    segment_bytes: u64,
    retention_bytes: u64,
    writer: RefCell<Option<WalWriter>>,
    /// Closed segments: first ordinal and size.
    closed: RefCell<VecDeque<(u64, u64)>>,
    next_ordinal: Cell<u64>,
    /// Bumped when a commit fails: requests waiting across it are answered "retry".
    failures: Cell<u64>,
    /// The last failed commit's error (answered to the requests it failed).
    last_failure: RefCell<String>,
    /// Appends wait while the writer is being replaced.
    rolling: Cell<bool>,
    /// A commit or roll finished.
    pub changed: Notify,
    /// Something was appended.
    appended: Notify,
    pub stop: Cell<bool>,
}

/// Why an append or a wait for durability failed.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The commit failed (not fatally): not acknowledged, the client may retry.
    Retry(String),
    /// The log is poisoned or stopped.
    Fatal(String),
}

impl PartitionLog {
    /// Open the partition for appends after [`recover`].
    pub(crate) async fn open(
        index: usize,
        dir: PathBuf,
        recovered: Recovered,
        gateway: Arc<super::GatewayShared>,
        segment_bytes: u64,
        retention_bytes: u64,
    ) -> Result<Self> {
        let shared = &gateway.partitions[index];
        let writer = WalWriter::create(&dir, recovered.next_ordinal, WRITE_CHUNK_BYTES)
            .await
            .map_err(|e| WeirError::Other(format!("gateway log {}: {e}", dir.display())))?;
        let oldest = recovered.segments.first().map_or(recovered.next_ordinal, |s| s.0);
        shared.oldest.store(oldest, Ordering::Release);
        shared.consumed.store(oldest, Ordering::Release);
        shared.durable_next.store(recovered.next_ordinal, Ordering::Release);
        shared.retained_bytes.store(recovered.segments.iter().map(|s| s.1).sum(), Ordering::Relaxed);
        Ok(Self {
            index,
            dir,
            gateway,
            segment_bytes,
            retention_bytes,
            writer: RefCell::new(Some(writer)),
            closed: RefCell::new(recovered.segments.into_iter().collect()),
            next_ordinal: Cell::new(recovered.next_ordinal),
            failures: Cell::new(0),
            last_failure: RefCell::new(String::new()),
            rolling: Cell::new(false),
            changed: Notify::default(),
            appended: Notify::default(),
            stop: Cell::new(false),
        })
    }

    fn part(&self) -> &PartitionShared {
        &self.gateway.partitions[self.index]
    }

    fn poison(&self) -> &Poison {
        &self.gateway.poison
    }

    /// The current failure generation (see [`Self::wait_durable`]).
    pub(crate) fn failures(&self) -> u64 {
        self.failures.get()
    }

    /// Stop: appends fail, the committer commits what is pending and ends.
    pub(crate) fn shutdown(&self) {
        self.stop.set(true);
        self.appended.notify_all();
        self.changed.notify_all();
    }

    /// Append one request's events (at least one). Returns the ordinal of its first event and
    /// the failure generation to pass to [`Self::wait_durable`].
    pub(crate) async fn append(&self, key: &[u8], events: &[&[u8]], now_ms: i64) -> Result<(u64, u64), AppendError> {
        assert!(!events.is_empty(), "a request frame holds at least one event");
        while self.rolling.get() {
            self.changed.wait().await;
        }
        if let Some(p) = self.poison().get() {
            return Err(AppendError::Fatal(p.to_string()));
        }
        if self.stop.get() {
            return Err(AppendError::Fatal("the gateway is stopping".into()));
        }
        let first = self.next_ordinal.get();
        let ops: Vec<OpRef<'_>> = events
            .iter()
            .enumerate()
            .map(|(i, ev)| OpRef::put(if i == 0 { key } else { &[] }, ev))
            .collect();
        let end = first + events.len() as u64;
        let mut w = self.writer.borrow_mut();
        let writer = w.as_mut().expect("a writer outside rolls");
        writer.append(end - 1, now_ms.max(0) as u64, &ops);
        self.next_ordinal.set(end);
        drop(w);
        self.appended.notify_all();
        Ok((first, self.failures.get()))
    }

    /// Wait until the events before `end` are durable.
    pub(crate) async fn wait_durable(&self, end: u64, generation: u64) -> Result<(), AppendError> {
        loop {
            if self.part().durable_next.load(Ordering::Acquire) >= end {
                return Ok(());
            }
            if let Some(p) = self.poison().get() {
                return Err(AppendError::Fatal(p.to_string()));
            }
            if self.failures.get() != generation {
                return Err(AppendError::Retry(format!(
                    "writing the gateway log failed ({}); retry",
                    self.last_failure.borrow()
                )));
            }
            if self.stop.get() {
                return Err(AppendError::Fatal("the gateway is stopping".into()));
            }
            self.changed.wait().await;
        }
    }

    fn pending(&self) -> bool {
        self.writer.borrow().as_ref().is_some_and(|w| w.pending_bytes() > 0)
    }

    /// The committer: group-commits whatever was appended, publishes durability, rolls
    /// segments and applies retention, until `stop` and nothing is pending.
    pub(crate) async fn run_committer(&self) {
        loop {
            if !self.pending() {
                if self.stop.get() {
                    break;
                }
                self.appended.wait().await;
                continue;
            }
            if self.poison().get().is_some() {
                self.changed.notify_all();
                break;
            }
            match self.commit_once().await {
                Ok(()) => {}
                Err(CommitError::Fatal(message)) => {
                    self.poison().set(message);
                    self.changed.notify_all();
                    break;
                }
                Err(CommitError::Retry(message)) => {
                    *self.last_failure.borrow_mut() = message;
                    self.failures.set(self.failures.get() + 1);
                    self.changed.notify_all();
                    // Give the disk a moment before retrying the buffered records.
                    glommio::timer::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        let writer = self.writer.borrow_mut().take();
        if let Some(w) = writer {
            w.close().await;
        }
    }

    /// Commit what is buffered and publish it: `max_seq` of the commit is the last durable event.
    async fn commit_pending(&self) -> Result<(), CommitError> {
        let fut = self.writer.borrow().as_ref().expect("writer present").commit_future(false);
        let committed = fut.await.map_err(|e| commit_error(self.index, e))?;
        if committed.bytes > 0 {
            self.part().durable_next.store(committed.max_seq + 1, Ordering::Release);
            self.changed.notify_all();
        }
        Ok(())
    }

    async fn commit_once(&self) -> Result<(), CommitError> {
        self.commit_pending().await?;
        let len = self.writer.borrow().as_ref().map_or(0, |w| w.durable_len());
        if len >= self.segment_bytes {
            self.roll().await?;
        }
        self.apply_retention();
        Ok(())
    }

    /// Replace the writer by a fresh segment starting at the next ordinal. Appends wait
    /// meanwhile; whatever they appended before is committed first.
    async fn roll(&self) -> Result<(), CommitError> {
        self.rolling.set(true);
        let result = async {
            if self.pending() {
                self.commit_pending().await?;
            }
            let next = self.next_ordinal.get();
            let fresh = WalWriter::create(&self.dir, next, WRITE_CHUNK_BYTES)
                .await
                .map_err(|e| commit_error(self.index, e))?;
            let old = self.writer.borrow_mut().replace(fresh).expect("writer present");
            let (id, size) = (old.id(), old.durable_len());
            old.close().await;
            self.closed.borrow_mut().push_back((id, size));
            Ok(())
        }
        .await;
        self.rolling.set(false);
        self.changed.notify_all();
        result
    }

    /// Delete the oldest closed segments the reader is done with while the partition holds
    /// more than `retention_bytes`.
    fn apply_retention(&self) {
        let mut closed = self.closed.borrow_mut();
        let active_bytes = self.writer.borrow().as_ref().map_or(0, |w| w.len());
        let mut total: u64 = closed.iter().map(|s| s.1).sum::<u64>() + active_bytes;
        let part = self.part();
        let consumed = if part.checkpointed.load(Ordering::Acquire) {
            part.retain_from.load(Ordering::Acquire).min(part.consumed.load(Ordering::Acquire))
        } else {
            part.consumed.load(Ordering::Acquire)
        };
        while total > self.retention_bytes && !closed.is_empty() {
            let (id, size) = closed[0];
            let next_start = closed
                .get(1)
                .map_or_else(|| self.writer.borrow().as_ref().map_or(u64::MAX, |w| w.id()), |s| s.0);
            if consumed < next_start {
                break;
            }
            let path = segment_path(&self.dir, id);
            if std::fs::remove_file(&path).is_err() {
                break;
            }
            closed.pop_front();
            total -= size;
            self.part().oldest.store(next_start, Ordering::Release);
        }
        self.part().retained_bytes.store(total, Ordering::Relaxed);
    }
}

enum CommitError {
    Retry(String),
    Fatal(String),
}

/// A failed fsync/fdatasync is fatal (the kernel may have dropped the dirty pages); anything
/// else (disk full during the write) leaves the records buffered for a retry.
fn commit_error(partition: usize, e: weir_storage::StoreError) -> CommitError {
    use weir_storage::StoreError;
    let sync = matches!(&e, StoreError::Io { op, .. } | StoreError::DiskFull { op, .. } if op.starts_with("fsync") || op.starts_with("fdatasync"));
    if sync || matches!(e, StoreError::Poisoned { .. }) {
        CommitError::Fatal(format!("gateway log partition {partition}: {e}"))
    } else {
        CommitError::Retry(format!("gateway log partition {partition}: {e}"))
    }
}
