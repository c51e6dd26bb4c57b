//! WAL segment writer: direct I/O through io_uring with group commit.
//!
//! Records are appended to an in-memory tail buffer (synchronously, on
//! the run loop). [`WalWriter::commit_future`] returns a `'static` future
//! that snapshots every buffered record and makes it durable with one
//! series of aligned `write_at` calls and a single `fdatasync`; records
//! appended while it is in flight go to the next commit. Commits are
//! serialised by a semaphore, so the file is written in order.
//!
//! Invariants:
//! * `tail_base` is 4 KiB aligned and `tail_base <= durable_len <= tail_base + tail.len()`;
//! * only a commit holding the lock moves `tail_base`/`durable_len`;
//! * bytes of the file below `durable_len` are durable and never rewritten
//!   with different content (the partially filled last block is rewritten
//!   with the same prefix plus new records);
//! * a failed write (e.g. ENOSPC) leaves the tail buffer intact so the
//!   commit can be retried; a failed `fdatasync` is reported as fatal.

use std::cell::RefCell;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;
use glommio::sync::Semaphore;

use super::record::{encode_record, OpRef};
use crate::error::{from_glommio, Result, StoreError};
use crate::fsutil::{align_down, fsync_dir, write_direct_at};

struct State {
    tail: Vec<u8>,
    tail_base: u64,
    durable_len: u64,
    max_seq: u64,
    durable_max_seq: u64,
}

struct Inner {
    id: u64,
    path: PathBuf,
    file: Rc<DmaFile>,
    chunk: usize,
    lock: Semaphore,
    st: RefCell<State>,
}

/// Outcome of a successful commit.
pub struct Committed {
    /// Largest sequence number now durable in this segment (0 if none).
    pub max_seq: u64,
    /// Record bytes made durable by this commit.
    pub bytes: u64,
}

/// Writer of one WAL segment file.
pub struct WalWriter {
    sh: Rc<Inner>,
}

impl WalWriter {
    /// Creates a new, empty segment and makes its directory entry durable.
    pub async fn create(dir: &Path, id: u64, chunk: usize) -> Result<WalWriter> {
        let path = crate::fsutil::wal_path(dir, id);
        let file = crate::fsutil::create_dma(&path).await.map_err(|e| StoreError::io("create wal", &path, e))?;
        if let Err(e) = fsync_dir(dir) {
            let _ = file.close().await;
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(WalWriter {
            sh: Rc::new(Inner {
                id,
                path,
                file: Rc::new(file),
                chunk,
                lock: Semaphore::new(1),
                st: RefCell::new(State {
                    tail: Vec::new(),
                    tail_base: 0,
                    durable_len: 0,
                    max_seq: 0,
                    durable_max_seq: 0,
                }),
            }),
        })
    }

    pub fn id(&self) -> u64 {
        self.sh.id
    }
    pub fn path(&self) -> &Path {
        &self.sh.path
    }
    /// Largest sequence number appended to this segment.
    pub fn max_seq(&self) -> u64 {
        self.sh.st.borrow().max_seq
    }

    /// Buffers one record (an atomic batch of ops).
    pub fn append(&mut self, seq: u64, epoch: u64, ops: &[OpRef<'_>]) {
        let mut st = self.sh.st.borrow_mut();
        assert!(seq > st.max_seq, "WAL sequence numbers strictly increase");
        st.max_seq = seq;
        encode_record(&mut st.tail, seq, epoch, ops);
    }

    /// Bytes appended but not yet durable.
    pub fn pending_bytes(&self) -> u64 {
        let st = self.sh.st.borrow();
        st.tail_base + st.tail.len() as u64 - st.durable_len
    }

    /// Logical length of the segment (durable + pending).
    pub fn len(&self) -> u64 {
        let st = self.sh.st.borrow();
        st.tail_base + st.tail.len() as u64
    }

    /// True if nothing was appended to this segment.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Durable length of the segment.
    pub fn durable_len(&self) -> u64 {
        self.sh.st.borrow().durable_len
    }

    /// A future that writes and fdatasyncs every record buffered when it
    /// first runs. It does not borrow the writer, so the caller can keep
    /// appending while it is in flight. `inject_sync_failure` (tests) makes
    /// it fail as if fdatasync returned EIO. On `Err`, errors for which
    /// [`crate::fsutil::is_sync_failure`] holds are fatal; others (e.g. disk
    /// full during the write) leave the records buffered for a retry.
    pub fn commit_future(&self, inject_sync_failure: bool) -> impl Future<Output = Result<Committed>> + 'static {
        let sh = self.sh.clone();
        async move {
            let _permit = sh
                .lock
                .acquire_permit(1)
                .await
                .map_err(|e| StoreError::io("wal commit lock", &sh.path, from_glommio(e)))?;
            let (base, buf, end, max_seq, pending) = {
                let st = sh.st.borrow();
                let end = st.tail_base + st.tail.len() as u64;
                if end == st.durable_len {
                    return Ok(Committed {
                        max_seq: st.durable_max_seq,
                        bytes: 0,
                    });
                }
                (st.tail_base, st.tail.clone(), end, st.max_seq, end - st.durable_len)
            };
            if inject_sync_failure {
                let e = std::io::Error::from_raw_os_error(libc::EIO);
                return Err(StoreError::io("fdatasync wal", &sh.path, e));
            }
            write_direct_at(&sh.file, &sh.path, base, &buf, sh.chunk, "wal write").await?;
            sh.file
                .fdatasync()
                .await
                .map_err(|e| StoreError::io("fdatasync wal", &sh.path, from_glommio(e)))?;
            let mut st = sh.st.borrow_mut();
            assert_eq!(st.tail_base, base, "only the lock holder moves the tail base");
            st.durable_len = end;
            st.durable_max_seq = max_seq;
            let new_base = align_down(end);
            st.tail.drain(..(new_base - base) as usize);
            st.tail_base = new_base;
            Ok(Committed { max_seq, bytes: pending })
        }
    }

    /// Waits for in-flight commits, then closes the file (records still
    /// pending are dropped: commit first).
    pub async fn close(self) {
        if let Ok(p) = self.sh.lock.acquire_permit(1).await {
            drop(p);
        }
        if let Ok(inner) = Rc::try_unwrap(self.sh) {
            let _ = inner.file.close_rc().await;
        }
    }
}
