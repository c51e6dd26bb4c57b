//! File-system helpers: direct-I/O whole-file writes through glommio's
//! io_uring `DmaFile`, directory fsync, the directory lock and file naming.
//!
//! Invariants: a file written by an [`Upload`] is complete and
//! fdatasync'ed only once `step` returned `Ok(true)`; callers remove the
//! partial file (`abort`) on error.
//! Errors of fsync/fdatasync are tagged with an op starting with "fsync"
//! or "fdatasync" so the store can poison itself ([`is_sync_failure`]).
//! Every glommio open goes through [`create_dma`]: glommio's open ends with
//! a `statx` the kernel writes into a buffer of the open's own, which must
//! outlive a caller dropped mid-open (see [`crate::inflight`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use crate::error::{from_glommio, Result, StoreError};

/// Creates `path` (which must not exist) for direct-I/O writing. The open
/// runs through [`crate::inflight::detached`], so dropping the caller
/// mid-open does not free what the kernel still writes into.
pub(crate) async fn create_dma(path: &Path) -> std::io::Result<DmaFile> {
    let owned = path.to_path_buf();
    crate::inflight::detached(async move { OpenOptions::new().write(true).create_new(true).dma_open(&owned).await.map_err(from_glommio) })
        .await
        .unwrap_or_else(|| Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "the executor ended during the open")))
}

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
            let f = create_dma(&self.path).await.map_err(|e| StoreError::io("create", &self.path, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    /// A create dropped after it started stays counted until the kernel is done, then the
    /// file exists (the open completed on its own).
    #[test]
    fn a_dropped_create_stays_counted_until_the_open_completes() {
        let dir = std::env::temp_dir().join(format!("weir-storage-create-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let seen = path.clone();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                {
                    let mut create = std::pin::pin!(create_dma(&path));
                    let polled = create.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                    assert!(polled.is_pending(), "the open runs as a task of its own");
                    assert_eq!(crate::inflight::in_flight(), 1);
                }
                while crate::inflight::in_flight() > 0 {
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                }
                let f = create_dma(&dir.join("g")).await.unwrap();
                f.close().await.unwrap();
                assert_eq!(crate::inflight::in_flight(), 0);
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(seen.exists(), "the dropped create still completed");
        let _ = std::fs::remove_dir_all(seen.parent().unwrap());
    }
}
