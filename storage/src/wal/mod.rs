//! Write-ahead log: segment files `wal-NNNNNNNNNN.log` of checksummed frames.
//!
//! * [`record`]: frame and payload codec;
//! * [`scan`]: recovery scan of one segment;
//! * `writer`: direct-I/O group-commit writer.
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
pub(crate) mod writer;
