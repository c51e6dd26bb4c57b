//! WAL segment writer: direct I/O through io_uring with group commit.
//!
//! Records are appended to an in-memory tail buffer (synchronously, on
//! the run loop). [`WalWriter::commit`] writes every buffered record with
//! one series of aligned `write_at` calls and a single `fdatasync`: all
//! records appended since the previous commit are acknowledged together.
//!
//! Invariants:
//! * `tail_base` is 4 KiB aligned and `tail_base <= durable_len <= tail_base + tail.len()`;
//! * bytes of the file below `durable_len` are durable and never rewritten
//!   with different content (the partially filled last block is rewritten
//!   with the same prefix plus new records);
//! * a failed write (e.g. ENOSPC) leaves the tail buffer intact so the
//!   commit can be retried; a failed `fdatasync` is reported as fatal.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use super::record::{encode_record, OpRef};
use crate::error::{from_glommio, Result, StoreError};
use crate::fsutil::{align_down, fsync_dir, write_direct_at};

/// Writer of one WAL segment file.
pub(crate) struct WalWriter {
    id: u64,
    path: PathBuf,
    file: DmaFile,
    tail: Vec<u8>,
    tail_base: u64,
    durable_len: u64,
    chunk: usize,
    max_seq: u64,
}

impl WalWriter {
    /// Creates a new, empty segment and makes its directory entry durable.
    pub(crate) async fn create(dir: &Path, id: u64, chunk: usize) -> Result<WalWriter> {
        let path = crate::fsutil::wal_path(dir, id);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .dma_open(&path)
            .await
            .map_err(|e| StoreError::io("create wal", &path, from_glommio(e)))?;
        fsync_dir(dir)?;
        Ok(WalWriter {
            id,
            path,
            file,
            tail: Vec::new(),
            tail_base: 0,
            durable_len: 0,
            chunk,
            max_seq: 0,
        })
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
    /// Largest sequence number appended to this segment.
    pub(crate) fn max_seq(&self) -> u64 {
        self.max_seq
    }

    /// Buffers one record (an atomic batch of ops).
    pub(crate) fn append(&mut self, seq: u64, epoch: u64, ops: &[OpRef<'_>]) {
        assert!(seq > self.max_seq, "WAL sequence numbers strictly increase");
        self.max_seq = seq;
        encode_record(&mut self.tail, seq, epoch, ops);
    }

    /// Bytes appended but not yet durable.
    pub(crate) fn pending_bytes(&self) -> u64 {
        self.tail_base + self.tail.len() as u64 - self.durable_len
    }

    /// Logical length of the segment (durable + pending).
    pub(crate) fn len(&self) -> u64 {
        self.tail_base + self.tail.len() as u64
    }

    /// Durable length of the segment.
    pub(crate) fn durable_len(&self) -> u64 {
        self.durable_len
    }

    /// Writes and fdatasyncs all pending records. On `Err`, callers must
    /// treat errors for which [`crate::fsutil::is_sync_failure`] holds as fatal;
    /// other errors (e.g. disk full during the write) leave the pending
    /// records buffered for a retry.
    pub(crate) async fn commit(&mut self) -> Result<()> {
        if self.pending_bytes() == 0 {
            return Ok(());
        }
        write_direct_at(
            &self.file,
            &self.path,
            self.tail_base,
            &self.tail,
            self.chunk,
            "wal write",
        )
        .await?;
        self.file
            .fdatasync()
            .await
            .map_err(|e| StoreError::io("fdatasync wal", &self.path, from_glommio(e)))?;
        self.durable_len = self.len();
        let new_base = align_down(self.durable_len);
        self.tail.drain(..(new_base - self.tail_base) as usize);
        self.tail_base = new_base;
        debug_assert!(self.tail.len() < 4096);
        Ok(())
    }

    /// Closes the file (pending records are dropped: commit first).
    pub(crate) async fn close(self) {
        let _ = self.file.close().await;
    }
}
