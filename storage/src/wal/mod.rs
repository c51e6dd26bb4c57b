//! Write-ahead log: segment files `wal-NNNNNNNNNN.log` of checksummed frames.
//!
//! * [`record`]: frame and payload codec;
//! * [`scan`]: recovery scan of one segment;
//! * [`writer`]: direct-I/O group-commit writer (also used by weir's ingestion gateway log).
//!
//! Recovery policy ("truncate torn tail, refuse damage"): segments are
//! replayed in id order. In the *last* segment, an invalid frame that no
//! valid frame follows is a torn tail: the file is truncated at that
//! offset and `torn_tails_truncated` is incremented. Any other invalid
//! frame (in an earlier segment, or followed by a valid frame) is damage
//! before the tail: open fails with [`crate::StoreError::Corrupt`] naming
//! the file and offset. A segment is rolled only after a successful
//! commit, so earlier segments never legitimately end torn.
//!
//! Invariant: sequence numbers strictly increase across the whole log.

pub mod record;
pub mod scan;
pub mod writer;

pub use writer::{Committed, WalWriter};

/// Path of WAL segment `id` in `dir` (`wal-NNNNNNNNNN.log`).
pub fn segment_path(dir: &std::path::Path, id: u64) -> std::path::PathBuf {
    crate::fsutil::wal_path(dir, id)
}

/// The id of a WAL segment file name (`wal-NNN.log`), if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    match crate::fsutil::parse_name(name) {
        Some((true, id)) => Some(id),
        _ => None,
    }
}
