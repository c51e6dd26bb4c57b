//! The filesystem sink: CSV or JSON-lines part files in a folder (Flink's `filesystem`
//! connector as a sink).
//!
//! Each shard writes its own part files `part-<shard>-<n>.<ext>`. A part file is written as
//! `.part-<shard>-<n>.<ext>.inprogress` and renamed to its final name when it rolls (at
//! `sink_part_file_bytes`) or when the job ends, so readers never see a half-written file.
//! Writes go through glommio's buffered file I/O (io_uring positional writes), never blocking
//! the shard. (Not glommio's `StreamWriter`: it panics when its task is polled again before a
//! write completed, which happens in segments whose task is also woken by rings.)
//!
//! With checkpoints the sink is **exactly-once** (Flink's `FileSink` protocol, two-phase
//! commit): part files are named `part-<shard>-<attempt>-<n>`, where `<attempt>` is unique per
//! run, and stay hidden `.inprogress` files until the checkpoint that covers them completes.
//! At a barrier the open part file is synced and closed (*pending*), and the list of pending
//! files is the committable stored in the checkpoint; when the checkpoint completes they are
//! renamed to their final names. A restore renames the pending files of the restored
//! checkpoint (idempotently: a file already renamed is left alone) and deletes in-progress
//! files of earlier attempts that no checkpoint references — output written after the last
//! complete checkpoint is discarded and produced again by the replay.
//!
//! Invariant: bytes buffered by the synchronous half are written by the flusher after every
//! input step; a formatting error is kept and fails the job at the next flush. With
//! checkpoints, a final name only ever appears for a file of a completed checkpoint.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use glommio::io::BufferedFile;
use serde::Serialize;

use super::format::Format;
use super::Sink;
use crate::batch::Batch;
use crate::checkpoint::snapshot::{decode, encode};
use crate::error::{Result, WeirError};
use crate::operator::Push;
use crate::shard::{BuildCtx, Flusher, OperatorMetrics};
use crate::time::Timestamp;

/// Writes rows into part files under `dir`.
#[derive(Clone, Debug)]
pub struct FileSink {
    pub dir: PathBuf,
    pub format: Format,
}

impl FileSink {
    pub fn new(dir: impl Into<PathBuf>, format: Format) -> Self {
        Self { dir: dir.into(), format }
    }
    pub fn csv(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, Format::Csv)
    }
    pub fn json(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, Format::Json)
    }
}

#[derive(Default)]
pub(crate) struct SinkBuffer {
    pub(crate) bytes: Vec<u8>,
    pub(crate) error: Option<WeirError>,
}

pub(crate) type SharedBuffer = Rc<RefCell<SinkBuffer>>;

impl SinkBuffer {
    /// Take the buffered bytes, or the formatting error that stopped the sink.
    pub(crate) fn take_bytes(&mut self) -> Result<Vec<u8>> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(std::mem::take(&mut self.bytes)),
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.bytes.is_empty() || self.error.is_some()
    }
}

/// Write all of `bytes` at `*offset` with a positional io_uring write (not glommio's
/// `StreamWriter`, which panics when its task is polled again before a write completed — as
/// happens in segments woken by rings), advancing `*offset`. Returns the buffer's capacity
/// (see [`reuse_allocation`]).
///
/// The buffer moves into the write (glommio takes it by value; cloning it to keep a copy for
/// a retry cost a memcpy of all output). So a short write, which a regular file returns only
/// when the disk fills up mid-write, is an error: the job fails and restarts from its last
/// checkpoint, which writes the part again — nothing accepted is lost.
pub(crate) async fn write_all_at(file: &BufferedFile, bytes: Vec<u8>, offset: &mut u64, path: &Path, op: &'static str) -> Result<usize> {
    let (len, capacity) = (bytes.len(), bytes.capacity());
    if len == 0 {
        return Ok(capacity);
    }
    let n = file.write_at(bytes, *offset).await.map_err(|e| WeirError::io(op, path, e.into()))?;
    *offset += n as u64;
    if n != len {
        return Err(WeirError::io(
            op,
            path,
            std::io::Error::new(std::io::ErrorKind::WriteZero, format!("short write: {n} of {len} bytes (is the disk full?)")),
        ));
    }
    Ok(capacity)
}

/// After a buffer of `capacity` was written out: give `slot` (empty unless new bytes were
/// buffered meanwhile) that capacity again, so formatting does not grow it from nothing.
pub(crate) fn reuse_allocation(slot: &mut Vec<u8>, capacity: usize) {
    if slot.capacity() < capacity {
        slot.reserve(capacity - slot.len());
    }
}

/// Formats records into a shared buffer (the synchronous half of a byte sink): `encode`
/// appends a batch's records to the buffer — a serde [`Format`] ([`format_encoder`]) or a
/// sink's own encoder (e.g. SQL rows as CSV without serde).
pub(crate) struct EncodePush<E, T> {
    pub(crate) encode: E,
    pub(crate) buffer: SharedBuffer,
    pub(crate) metrics: Arc<OperatorMetrics>,
    /// The rows a batch's records hold, for the records-written metric ([`one_row_each`], or
    /// more for records that are chunks of encoded rows).
    pub(crate) rows: fn(&[T]) -> u64,
}

/// Each record is one row (for [`EncodePush::rows`]).
pub(crate) fn one_row_each<T>(records: &[T]) -> u64 {
    records.len() as u64
}

/// The encoder of a serde `format`, for [`EncodePush`].
pub(crate) fn format_encoder<T: Serialize>(format: Format) -> impl FnMut(&[T], &mut Vec<u8>) -> Result<()> {
    move |records, bytes| format.write_all(records.iter(), bytes)
}

impl<T, E: FnMut(&[T], &mut Vec<u8>) -> Result<()>> Push<T> for EncodePush<E, T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, (self.rows)(&batch.records));
        let mut b = self.buffer.borrow_mut();
        let b = &mut *b;
        if b.error.is_none() {
            if let Err(e) = (self.encode)(&batch.records, &mut b.bytes) {
                b.error = Some(e);
            }
        }
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
}

impl FileSink {
    /// Build this shard's instance with `encode` formatting the records (the file's format
    /// must be what `encode` writes).
    pub(crate) fn build_encoding<T: 'static, E: FnMut(&[T], &mut Vec<u8>) -> Result<()> + 'static>(
        &self,
        ctx: &mut BuildCtx<'_>,
        operator_name: &str,
        encode: E,
    ) -> Result<Box<dyn Push<T>>> {
        self.build_encoding_rows(ctx, operator_name, encode, one_row_each::<T>)
    }

    /// [`FileSink::build_encoding`] for records that each hold `rows(records)` rows.
    pub(crate) fn build_encoding_rows<T: 'static, E: FnMut(&[T], &mut Vec<u8>) -> Result<()> + 'static>(
        &self,
        ctx: &mut BuildCtx<'_>,
        operator_name: &str,
        encode: E,
        rows: fn(&[T]) -> u64,
    ) -> Result<Box<dyn Push<T>>> {
        let buffer = self.start_writer(ctx, operator_name)?;
        Ok(Box::new(EncodePush {
            encode,
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            rows,
        }))
    }
}

impl<T: Serialize + Send + 'static> Sink<T> for FileSink {
    fn name(&self) -> String {
        format!("filesystem:{}", self.dir.display())
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        let buffer = self.start_writer(ctx, operator_name)?;
        Ok(Box::new(EncodePush {
            encode: format_encoder::<T>(self.format),
            buffer,
            metrics: ctx.operator_metrics(operator_name),
            rows: one_row_each::<T>,
        }))
    }
}

impl FileSink {
    /// Register this shard's part-file writer (a flusher) and return the buffer it drains.
    fn start_writer(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<SharedBuffer> {
        std::fs::create_dir_all(&self.dir).map_err(|e| WeirError::io("creating sink folder", &self.dir, e))?;
        let buffer = SharedBuffer::default();
        let mut writer = PartFileWriter {
            dir: self.dir.clone(),
            ext: self.format.extension(),
            shard: ctx.shard,
            roll_bytes: ctx.config.sink_part_file_bytes,
            // Parts roll after a write: never wait for more than a part holds.
            min_write: ctx
                .config
                .sink_min_write_bytes
                .min(usize::try_from(ctx.config.sink_part_file_bytes).unwrap_or(usize::MAX)),
            bytes_per_sync: ctx.config.sink_bytes_per_sync,
            buffer: buffer.clone(),
            current: None,
            next_part: 0,
            exactly_once: None,
        };
        match &ctx.checkpoint {
            Some(control) => {
                let all_restored: Vec<Vec<u8>> = ctx
                    .restore()
                    .and_then(|r| r.committables.get(operator_name))
                    .map(|v| v.iter().map(|(_, c)| c.clone()).collect())
                    .unwrap_or_default();
                writer.exactly_once = Some(ExactlyOnce {
                    attempt: control.attempt_token(),
                    closed: Vec::new(),
                    pending: Vec::new(),
                    restored: ctx.restored_committables(operator_name),
                    referenced: all_restored,
                    clean_leftovers: ctx.shard == 0,
                });
                ctx.add_committing_flusher(operator_name, Box::new(writer));
            }
            None => ctx.add_flusher(Box::new(writer)),
        }
        Ok(buffer)
    }
}

struct OpenPart {
    file: BufferedFile,
    temp: PathBuf,
    final_path: PathBuf,
    written: u64,
    /// Bytes before this offset were handed to the kernel's writeback (see `bytes_per_sync`).
    writeback_from: u64,
}

/// The async half: appends the buffer to the current part file, rolls and renames.
struct PartFileWriter {
    dir: PathBuf,
    ext: &'static str,
    shard: usize,
    roll_bytes: u64,
    /// Output pending before a write (see `EngineConfig::sink_min_write_bytes`).
    min_write: usize,
    /// Start the writeback of every this many written bytes (`EngineConfig::sink_bytes_per_sync`; 0: off).
    bytes_per_sync: u64,
    buffer: SharedBuffer,
    current: Option<OpenPart>,
    next_part: u64,
    /// Two-phase commit state (checkpointing on).
    exactly_once: Option<ExactlyOnce>,
}

/// A part file written and synced, waiting for its checkpoint to complete: (hidden
/// in-progress path, final path), as file names relative to the sink folder.
type PendingPart = (String, String);

/// The exactly-once half of a [`PartFileWriter`].
struct ExactlyOnce {
    /// Unique per run, part of every file name (no name is ever reused across attempts).
    attempt: String,
    /// Parts closed (rolled) since the last barrier.
    closed: Vec<PendingPart>,
    /// Pre-committed parts by epoch, not yet committed.
    pending: Vec<(u64, PendingPart)>,
    /// Committables of the restored checkpoint this shard commits at connect.
    restored: Vec<Vec<u8>>,
    /// Committables of every shard in the restored checkpoint (never deleted as leftovers).
    referenced: Vec<Vec<u8>>,
    /// This instance deletes in-progress files of earlier attempts.
    clean_leftovers: bool,
}

impl PartFileWriter {
    async fn open_part(&mut self) -> Result<()> {
        let name = match &self.exactly_once {
            Some(eo) => format!("part-{}-{}-{}.{}", self.shard, eo.attempt, self.next_part, self.ext),
            None => format!("part-{}-{}.{}", self.shard, self.next_part, self.ext),
        };
        self.next_part += 1;
        let final_path = self.dir.join(&name);
        let temp = self.dir.join(format!(".{name}.inprogress"));
        let file = crate::shard::inflight::create_buffered(&temp)
            .await
            .map_err(|e| WeirError::io("creating part file", &temp, e.into()))?;
        self.current = Some(OpenPart {
            file,
            temp,
            final_path,
            written: 0,
            writeback_from: 0,
        });
        Ok(())
    }

    async fn finish_part(&mut self) -> Result<()> {
        if let Some(part) = self.current.take() {
            match &mut self.exactly_once {
                Some(eo) => {
                    // Durable now; visible only when its checkpoint completes.
                    part.file
                        .fdatasync()
                        .await
                        .map_err(|e| WeirError::io("syncing part file", &part.temp, e.into()))?;
                    part.file.close().await.map_err(|e| WeirError::io("closing part file", &part.temp, e.into()))?;
                    eo.closed.push((file_name(&part.temp), file_name(&part.final_path)));
                }
                None => {
                    part.file.close().await.map_err(|e| WeirError::io("closing part file", &part.temp, e.into()))?;
                    commit_rename(&part.temp, &part.final_path).await?;
                }
            }
        }
        Ok(())
    }

    /// Rename pending parts to their final names; a part already renamed (a commit repeated
    /// after a restore) is left alone.
    async fn publish(&self, parts: &[PendingPart]) -> Result<()> {
        for (temp, final_name) in parts {
            let (temp, final_path) = (self.dir.join(temp), self.dir.join(final_name));
            if temp.exists() {
                commit_rename(&temp, &final_path).await?;
            } else if !final_path.exists() {
                return Err(WeirError::Checkpoint(format!(
                    "part file {} of a completed checkpoint is missing (neither {} nor the final file exists)",
                    final_path.display(),
                    temp.display()
                )));
            }
        }
        if !parts.is_empty() {
            sync_dir(&self.dir).await?;
        }
        Ok(())
    }

    /// After a restore: publish this shard's share of the restored checkpoint's pending parts,
    /// and (one instance) delete in-progress files of earlier attempts no checkpoint references.
    async fn recover(&mut self) -> Result<()> {
        let Some(eo) = &mut self.exactly_once else { return Ok(()) };
        let restored = std::mem::take(&mut eo.restored);
        let referenced: std::collections::HashSet<String> = eo
            .referenced
            .iter()
            .filter_map(|c| decode::<Vec<(u64, PendingPart)>>(c, "file sink committable").ok())
            .flatten()
            .map(|(_, (temp, _))| temp)
            .collect();
        let (attempt, clean) = (eo.attempt.clone(), eo.clean_leftovers);
        let mut parts = Vec::new();
        for c in &restored {
            parts.extend(decode::<Vec<(u64, PendingPart)>>(c, "file sink committable")?.into_iter().map(|(_, p)| p));
        }
        self.publish(&parts).await?;
        if clean {
            let entries = std::fs::read_dir(&self.dir).map_err(|e| WeirError::io("listing sink folder", &self.dir, e))?;
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let leftover = name.starts_with(".part-") && name.ends_with(".inprogress") && !name.contains(&format!("-{attempt}-"));
                if leftover && !referenced.contains(&name) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        Ok(())
    }
}

/// Ask the kernel to start writing `len` bytes at `offset` of `file` back to disk
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: it does not wait for the writes, but may wait for
/// room in the device's queue, so it runs on glommio's blocking thread pool). Only a hint:
/// durability still comes from the `fdatasync` before a part is committed, which also reports
/// any write error, so a failure here is ignored.
async fn start_writeback(file: &BufferedFile, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // The caller holds the file open while this is awaited; if the caller is dropped first, the
    // call may reach a closed (or reused) descriptor, which costs at most a useless hint.
    let _ = glommio::executor()
        .spawn_blocking(move || {
            // SAFETY: a plain syscall on a file descriptor the awaiting caller keeps open.
            unsafe { libc::sync_file_range(fd, offset as libc::off64_t, len as libc::off64_t, libc::SYNC_FILE_RANGE_WRITE) }
        })
        .await;
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()
}

async fn sync_dir(dir: &Path) -> Result<()> {
    let dir = dir.to_path_buf();
    // Directory fsync has no io_uring form in glommio; it runs on glommio's blocking thread pool.
    glommio::executor()
        .spawn_blocking(move || {
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| WeirError::io("fsync sink folder", &dir, e))
        })
        .await
}

async fn commit_rename(from: &Path, to: &Path) -> Result<()> {
    glommio::io::rename(from, to)
        .await
        .map_err(|e| WeirError::io("committing part file", to, e.into()))
}

impl Flusher for PartFileWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.recover())
    }

    fn pre_commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        Box::pin(async move {
            self.flush().await?;
            self.finish_part().await?;
            let eo = self.exactly_once.as_mut().expect("pre-commit only with checkpoints");
            for part in eo.closed.drain(..) {
                eo.pending.push((epoch, part));
            }
            Ok((!eo.pending.is_empty()).then(|| encode(&eo.pending)))
        })
    }

    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let Some(eo) = self.exactly_once.as_mut() else { return Ok(()) };
            let (done, keep): (Vec<_>, Vec<_>) = eo.pending.drain(..).partition(|(e, _)| *e <= epoch);
            eo.pending = keep;
            let parts: Vec<PendingPart> = done.into_iter().map(|(_, p)| p).collect();
            self.publish(&parts).await
        })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bytes = self.buffer.borrow_mut().take_bytes()?;
            if bytes.is_empty() {
                return Ok(());
            }
            if self.current.is_none() {
                self.open_part().await?;
            }
            let part = self.current.as_mut().expect("part file open");
            let bytes = write_all_at(&part.file, bytes, &mut part.written, &part.temp, "writing part file").await?;
            if self.bytes_per_sync > 0 && part.written - part.writeback_from >= self.bytes_per_sync {
                start_writeback(&part.file, part.writeback_from, part.written - part.writeback_from).await;
                part.writeback_from = part.written;
            }
            if part.written >= self.roll_bytes {
                self.finish_part().await?;
            }
            reuse_allocation(&mut self.buffer.borrow_mut().bytes, bytes);
            Ok(())
        })
    }

    fn has_pending(&self) -> bool {
        // Small output waits for more (pre-commit, close and part rolls write everything).
        let b = self.buffer.borrow();
        b.error.is_some() || (!b.bytes.is_empty() && b.bytes.len() >= self.min_write)
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.flush().await?;
            if let Some(eo) = &self.exactly_once {
                // Everything was pre-committed at the final barrier and committed by the final
                // checkpoint; an open part here would be output no checkpoint covers.
                assert!(
                    self.current.is_none() && eo.closed.is_empty(),
                    "file sink closed with output no checkpoint covers"
                );
                return Ok(());
            }
            self.finish_part().await
        })
    }
}
