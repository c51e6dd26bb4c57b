//! The dead-letter output of the file source: bad lines with their errors, as JSON lines in
//! `<dead_letter_dir>/dead-letter-<shard>.jsonl`.
//!
//! One record per bad line: `{"file", "line", "field", "error", "raw"}` (`raw` is the line as
//! text, invalid UTF-8 replaced by U+FFFD; for an over-long line only its first bytes, with
//! `"truncated": true`).
//!
//! Invariants: the readers of one source on one shard share one [`DeadLetterBuffer`]; it holds at
//! most `dead_letter_buffer_records` records (a reader stops its read call when it is full, so
//! the segment task flushes it before reading on); the [`DeadLetterWriter`] flusher writes it
//! out through glommio's async file I/O after every input step; the file is created at the
//! first bad line only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::{Rc, Weak};

use futures::future::LocalBoxFuture;
use glommio::io::BufferedFile;
use serde::Serialize;

use crate::error::{Result, WeirError};
use crate::shard::Flusher;

/// One dead-letter record.
#[derive(Serialize)]
struct DeadLetterRecord<'a> {
    file: &'a str,
    line: u64,
    field: Option<&'a str>,
    error: &'a str,
    raw: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

/// Dead-letter records waiting to be written (shared by a shard's readers of one source).
pub(crate) struct DeadLetterBuffer {
    bytes: Vec<u8>,
    records: usize,
    capacity_records: usize,
}

pub(crate) type SharedDeadLetters = Rc<RefCell<DeadLetterBuffer>>;

impl DeadLetterBuffer {
    /// True when no more records fit until the next flush.
    pub(crate) fn is_full(&self) -> bool {
        self.records >= self.capacity_records
    }

    /// Append one record (callers check [`Self::is_full`] first; one past capacity is tolerated).
    pub(crate) fn push(&mut self, file: &str, line: u64, field: Option<&str>, error: &str, raw: &[u8], truncated: bool) {
        let raw = String::from_utf8_lossy(raw);
        let record = DeadLetterRecord {
            file,
            line,
            field,
            error,
            raw: &raw,
            truncated,
        };
        serde_json::to_writer(&mut self.bytes, &record).expect("serialising to a Vec cannot fail");
        self.bytes.push(b'\n');
        self.records += 1;
    }
}

thread_local! {
    /// Per shard thread: the dead-letter buffer of each file source (by source id).
    static BUFFERS: RefCell<HashMap<u64, Weak<RefCell<DeadLetterBuffer>>>> = RefCell::new(HashMap::new());
}

/// The dead-letter buffer of source `source_id` on this shard. The first call on a shard creates
/// it and returns the flusher to register with the segment; later calls share the buffer.
pub(crate) fn shard_buffer(source_id: u64, dir: PathBuf, shard: usize, capacity_records: usize) -> (SharedDeadLetters, Option<DeadLetterWriter>) {
    BUFFERS.with(|b| {
        let mut map = b.borrow_mut();
        if let Some(existing) = map.get(&source_id).and_then(Weak::upgrade) {
            return (existing, None);
        }
        let buffer = Rc::new(RefCell::new(DeadLetterBuffer {
            bytes: Vec::new(),
            records: 0,
            capacity_records,
        }));
        map.insert(source_id, Rc::downgrade(&buffer));
        let writer = DeadLetterWriter {
            path: dir.join(format!("dead-letter-{shard}.jsonl")),
            dir,
            buffer: buffer.clone(),
            writer: None,
        };
        (buffer, Some(writer))
    })
}

/// The async half: appends buffered records to the shard's dead-letter file.
pub(crate) struct DeadLetterWriter {
    dir: PathBuf,
    path: PathBuf,
    buffer: SharedDeadLetters,
    /// The open dead-letter file and the offset to append at.
    writer: Option<(BufferedFile, u64)>,
}

impl Flusher for DeadLetterWriter {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let bytes = {
                let mut b = self.buffer.borrow_mut();
                b.records = 0;
                std::mem::take(&mut b.bytes)
            };
            if bytes.is_empty() {
                return Ok(());
            }
            if self.writer.is_none() {
                std::fs::create_dir_all(&self.dir).map_err(|e| WeirError::io("creating dead-letter folder", &self.dir, e))?;
                let file = crate::shard::inflight::create_buffered(&self.path)
                    .await
                    .map_err(|e| WeirError::io("creating dead-letter file", &self.path, e.into()))?;
                self.writer = Some((file, 0));
            }
            let (file, offset) = self.writer.as_mut().expect("dead-letter file open");
            let bytes = crate::sink::file::write_all_at(file, bytes, offset, &self.path, "writing dead-letter file").await?;
            crate::sink::file::reuse_allocation(&mut self.buffer.borrow_mut().bytes, bytes);
            Ok(())
        })
    }

    fn has_pending(&self) -> bool {
        !self.buffer.borrow().bytes.is_empty()
    }

    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.flush().await?;
            if let Some((file, _)) = self.writer.take() {
                file.close()
                    .await
                    .map_err(|e| WeirError::io("closing dead-letter file", &self.path, e.into()))?;
            }
            Ok(())
        })
    }
}
