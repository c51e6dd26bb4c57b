//! File-system helpers: direct-I/O whole-file writes through glommio's
//! io_uring `DmaFile`, directory fsync, the directory lock and file naming.
//!
//! Invariants: a file written by an [`Upload`] is complete and
//! fdatasync'ed only once `step` returned `Ok(true)`; callers remove the
//! partial file (`abort`) on error.
//! Errors of fsync/fdatasync are tagged with an op starting with "fsync"
//! or "fdatasync" so the store can poison itself ([`is_sync_failure`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use crate::error::{from_glommio, Result, StoreError};

/// Alignment of direct-I/O writes (covers 512 B and 4 KiB devices).
pub(crate) const IO_ALIGN: u64 = 4096;

pub(crate) fn align_up(v: u64) -> u64 {
    v.div_ceil(IO_ALIGN) * IO_ALIGN
}
pub(crate) fn align_down(v: u64) -> u64 {
    v / IO_ALIGN * IO_ALIGN
}

/// Name of a segment file.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}
/// Name of a WAL segment file.
pub(crate) fn wal_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("wal-{id:010}.log"))
}
/// Parses `NNN.seg` / `wal-NNN.log` names.
pub(crate) fn parse_name(name: &str) -> Option<(bool, u64)> {
    if let Some(n) = name.strip_suffix(".seg") {
        return n.parse().ok().map(|id| (false, id));
    }
    let n = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    n.parse().ok().map(|id| (true, id))
}

/// True if the error came from a failed fsync/fdatasync (fatal).
pub(crate) fn is_sync_failure(e: &StoreError) -> bool {
    match e {
        StoreError::Io { op, .. } | StoreError::DiskFull { op, .. } => op.starts_with("fsync") || op.starts_with("fdatasync"),
        _ => false,
    }
}

/// fsyncs a directory so renames/creations/unlinks in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(|e| StoreError::io("open dir", dir, e))?;
    f.sync_all().map_err(|e| StoreError::io("fsync dir", dir, e))
}

/// Takes an exclusive `flock` on `dir/LOCK`; held while the file is open.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let p = dir.join("LOCK");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| StoreError::io("open lock", &p, e))?;
    // SAFETY: flock on a valid, owned descriptor has no memory effects.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(StoreError::Locked { path: dir.to_path_buf() });
    }
    Ok(f)
}

/// Writes `data` at `pos` (aligned) with direct I/O, in chunks of at most
/// `chunk` bytes, zero-padding the last block. Does not sync.
pub(crate) async fn write_direct_at(file: &DmaFile, path: &Path, pos: u64, data: &[u8], chunk: usize, op: &'static str) -> Result<()> {
    assert_eq!(pos % IO_ALIGN, 0, "direct I/O position must be aligned");
    let mut done = 0usize;
    while done < data.len() {
        let n = (data.len() - done).min(chunk);
        let aligned = align_up(n as u64) as usize;
        let mut buf = file.alloc_dma_buffer(aligned);
        let b = buf.as_bytes_mut();
        b[..n].copy_from_slice(&data[done..done + n]);
        b[n..].fill(0);
        let written = file
            .write_at(buf, pos + done as u64)
            .await
            .map_err(|e| StoreError::io(op, path, from_glommio(e)))?;
        if written == 0 {
            let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(StoreError::io(op, path, e));
        }
        // A short write is followed by a retry of the rest; it stays aligned
        // because the kernel completes whole blocks for O_DIRECT.
        let advanced = (written.min(aligned) as u64 / IO_ALIGN * IO_ALIGN) as usize;
        if advanced == 0 {
            let e = std::io::Error::from_raw_os_error(libc::ENOSPC);
            return Err(StoreError::io(op, path, e));
        }
        done += advanced.min(n);
    }
    Ok(())
}

/// A file image written with direct I/O across several calls, so no
/// single call blocks the run loop for the whole file.
///
/// Invariant: `off` is a multiple of `chunk` (hence 4 KiB aligned) until
/// the image is fully written; the file is complete and fdatasync'ed
/// only when [`Upload::step`] returned `Ok(true)`.
pub(crate) struct Upload {
    /// File id (for the caller).
    pub id: u64,
    path: PathBuf,
    /// The image being written.
    pub image: crate::segment::builder::Built,
    file: Option<DmaFile>,
    off: usize,
}

impl Upload {
    pub(crate) fn new(path: PathBuf, id: u64, image: crate::segment::builder::Built) -> Upload {
        Upload {
            id,
            path,
            image,
            file: None,
            off: 0,
        }
    }

    /// Writes at least one chunk and about `budget` bytes; finishes the
    /// file (truncate to length, fdatasync, close) after the last chunk.
    pub(crate) async fn step(&mut self, budget: u64, chunk: usize) -> Result<bool> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .dma_open(&self.path)
                .await
                .map_err(|e| StoreError::io("create", &self.path, from_glommio(e)))?;
            self.file = Some(f);
        }
        let file = self.file.as_ref().expect("opened above");
        let len = self.image.bytes.len();
        let mut written = 0u64;
        while self.off < len && (written == 0 || written < budget) {
            let end = len.min(self.off + chunk);
            let data = &self.image.bytes[self.off..end];
            write_direct_at(file, &self.path, self.off as u64, data, chunk, "segment write").await?;
            written += (end - self.off) as u64;
            self.off = end;
        }
        if self.off < len {
            return Ok(false);
        }
        file.truncate(len as u64)
            .await
            .map_err(|e| StoreError::io("segment truncate", &self.path, from_glommio(e)))?;
        file.fdatasync()
            .await
            .map_err(|e| StoreError::io("fdatasync segment", &self.path, from_glommio(e)))?;
        if let Some(f) = self.file.take() {
            let _ = f.close().await;
        }
        Ok(true)
    }

    /// Closes and removes a partial file.
    pub(crate) async fn abort(mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.close().await;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
