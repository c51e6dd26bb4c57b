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
//! Invariant: bytes buffered by the synchronous half are written by the flusher after every
//! input step; a formatting error is kept and fails the job at the next flush.

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

/// Write all of `bytes` at `*offset` with positional io_uring writes (not glommio's
/// `StreamWriter`, which panics when its task is polled again before a write completed — as
/// happens in segments woken by rings), advancing `*offset`. Returns the buffer for reuse.
pub(crate) async fn write_all_at(file: &BufferedFile, bytes: Vec<u8>, offset: &mut u64, path: &Path, op: &'static str) -> Result<Vec<u8>> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = file.write_at(rest.clone(), *offset).await.map_err(|e| WeirError::io(op, path, e.into()))?;
        if n == 0 {
            return Err(WeirError::io(op, path, std::io::Error::from(std::io::ErrorKind::WriteZero)));
        }
        *offset += n as u64;
        if n == rest.len() {
            break;
        }
        rest.drain(..n);
    }
    Ok(rest)
}

/// Give a written-out buffer's allocation back to `slot` for reuse, unless new bytes were
/// buffered meanwhile.
pub(crate) fn reuse_allocation(slot: &mut Vec<u8>, mut written: Vec<u8>) {
    if slot.is_empty() {
        written.clear();
        *slot = written;
    }
}

/// Formats records into a shared buffer (the synchronous half of a byte sink).
pub(crate) struct FormatPush {
    pub(crate) format: Format,
    pub(crate) buffer: SharedBuffer,
    pub(crate) metrics: Arc<OperatorMetrics>,
}

impl<T: Serialize> Push<T> for FormatPush {
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        let mut b = self.buffer.borrow_mut();
        let b = &mut *b;
        if b.error.is_none() {
            if let Err(e) = self.format.write_all(batch.records.iter(), &mut b.bytes) {
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

impl<T: Serialize + Send + 'static> Sink<T> for FileSink {
    fn name(&self) -> String {
        format!("filesystem:{}", self.dir.display())
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        std::fs::create_dir_all(&self.dir).map_err(|e| WeirError::io("creating sink folder", &self.dir, e))?;
        let buffer = SharedBuffer::default();
        ctx.add_flusher(Box::new(PartFileWriter {
            dir: self.dir.clone(),
            ext: self.format.extension(),
            shard: ctx.shard,
            roll_bytes: ctx.config.sink_part_file_bytes,
            buffer: buffer.clone(),
            current: None,
            next_part: 0,
        }));
        Ok(Box::new(FormatPush {
            format: self.format,
            buffer,
            metrics: ctx.operator_metrics(operator_name),
        }))
    }
}

struct OpenPart {
    file: BufferedFile,
    temp: PathBuf,
    final_path: PathBuf,
    written: u64,
}

/// The async half: appends the buffer to the current part file, rolls and renames.
struct PartFileWriter {
    dir: PathBuf,
    ext: &'static str,
    shard: usize,
    roll_bytes: u64,
    buffer: SharedBuffer,
    current: Option<OpenPart>,
    next_part: u64,
}

impl PartFileWriter {
    async fn open_part(&mut self) -> Result<()> {
        let name = format!("part-{}-{}.{}", self.shard, self.next_part, self.ext);
        self.next_part += 1;
        let final_path = self.dir.join(&name);
        let temp = self.dir.join(format!(".{name}.inprogress"));
        let file = BufferedFile::create(&temp)
            .await
            .map_err(|e| WeirError::io("creating part file", &temp, e.into()))?;
        self.current = Some(OpenPart {
            file,
            temp,
            final_path,
            written: 0,
        });
        Ok(())
    }

    async fn finish_part(&mut self) -> Result<()> {
        if let Some(part) = self.current.take() {
            part.file.close().await.map_err(|e| WeirError::io("closing part file", &part.temp, e.into()))?;
            commit_rename(&part.temp, &part.final_path).await?;
        }
        Ok(())
    }
}

async fn commit_rename(from: &Path, to: &Path) -> Result<()> {
    glommio::io::rename(from, to)
        .await
        .map_err(|e| WeirError::io("committing part file", to, e.into()))
}

impl Flusher for PartFileWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
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
            if part.written >= self.roll_bytes {
                self.finish_part().await?;
            }
            reuse_allocation(&mut self.buffer.borrow_mut().bytes, bytes);
            Ok(())
        })
    }

    fn has_pending(&self) -> bool {
        self.buffer.borrow().has_pending()
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.flush().await?;
            self.finish_part().await
        })
    }
}
