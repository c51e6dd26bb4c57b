//! Error type of the store.
//!
//! Every operating error (I/O failure, disk full, damaged bytes on disk,
//! back-pressure, poisoned instance) is a [`StoreError`] carrying the
//! operation, the path and, for damage, the byte offset plus what was
//! expected and what was found. Programmer errors (broken internal
//! invariants) are assertions instead.
//!
//! Invariant: bad on-disk bytes never panic; they surface as
//! [`StoreError::Corrupt`].

use std::io;
use std::path::{Path, PathBuf};

/// Result alias used throughout the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Operating errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed (other than disk full).
    #[error("{op} failed on {path}: {source}")]
    Io {
        /// The operation attempted, e.g. `"wal write"`.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// The file system is full (ENOSPC / EDQUOT). Nothing acknowledged
    /// before is damaged; retry once space has been freed.
    #[error("disk full during {op} on {path}: {source}")]
    DiskFull {
        /// The operation attempted.
        op: &'static str,
        /// The file being written.
        path: PathBuf,
        /// The underlying OS error.
        #[source]
        source: io::Error,
    },
    /// Damaged or unexpected bytes on disk.
    #[error("corruption in {path} at offset {offset}: {what}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged structure in that file.
        offset: u64,
        /// What was expected and what was found.
        what: String,
    },
    /// An earlier fatal error (failed fdatasync, failed WAL write) made
    /// this instance unusable; reopen the store to recover from disk.
    #[error("store poisoned by an earlier fatal error: {reason}")]
    Poisoned {
        /// Description of the original failure.
        reason: String,
    },
    /// A bounded in-memory buffer is full; call `maintain`/`commit` first.
    #[error("write back-pressure: {what} ({used} bytes used, limit {limit})")]
    Backpressure {
        /// Which buffer is full.
        what: &'static str,
        /// Bytes in use.
        used: u64,
        /// Configured limit.
        limit: u64,
    },
    /// The requested checkpoint is not retained.
    #[error("checkpoint for epoch {epoch} not found; retained epochs: {retained:?}")]
    CheckpointNotFound {
        /// Requested epoch.
        epoch: u64,
        /// Epochs that are retained.
        retained: Vec<u64>,
    },
    /// A caller-supplied value exceeds a configured limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Another store instance holds the directory lock.
    #[error("store directory {path} is locked by another instance")]
    Locked {
        /// The store directory.
        path: PathBuf,
    },
}

impl StoreError {
    /// Builds an I/O error, classifying ENOSPC/EDQUOT as [`StoreError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        if is_disk_full(&source) {
            StoreError::DiskFull {
                op,
                path: path.to_path_buf(),
                source,
            }
        } else {
            StoreError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        }
    }

    /// Builds a corruption error.
    pub(crate) fn corrupt(path: &Path, offset: u64, what: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }

    /// True for [`StoreError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::DiskFull { .. })
    }

    /// True for [`StoreError::Corrupt`].
    pub fn is_corrupt(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. })
    }
}

/// True if the OS error means "no space left" (ENOSPC) or "quota exceeded".
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT)) || e.kind() == io::ErrorKind::StorageFull
}

/// Converts a glommio error into the `io::Error` it wraps, keeping the OS
/// error code (glommio's own conversion drops it for enhanced errors).
pub(crate) fn from_glommio<T>(e: glommio::GlommioError<T>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}
