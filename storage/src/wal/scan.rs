//! WAL segment scanning for recovery (pure, fuzzed).
//!
//! A segment is a sequence of frames followed by zero padding (direct I/O
//! writes whole 4 KiB blocks). [`scan`] returns every valid frame up to the
//! first invalid one and classifies the end:
//! * [`Tail::Clean`]: end of buffer or only zero bytes left;
//! * [`Tail::Invalid`]: a frame failed to decode; `valid_follows` tells
//!   whether any valid frame with a larger sequence number starts at a
//!   later offset (then the damage is *not* a torn tail).
//!
//! Invariants: returned records have strictly increasing `seq`, lie inside
//! the buffer, and their payloads decode; `scan` never panics.

use super::record::{decode_frame, decode_payload, FrameError, HEADER_BYTES};

/// A valid frame found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Offset of the frame in the segment.
    pub offset: u64,
    /// Sequence number.
    pub seq: u64,
    /// Epoch field.
    pub epoch: u64,
    /// Payload byte range in the buffer.
    pub payload: (usize, usize),
}

/// How the valid prefix of a segment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// End of data (possibly followed by zero padding).
    Clean,
    /// The frame at `offset` is invalid.
    Invalid {
        /// Offset of the first invalid frame.
        offset: u64,
        /// Expected/got description.
        reason: String,
        /// A valid later frame exists: damage is before the tail.
        valid_follows: bool,
    },
}

/// Scans `buf` (one whole WAL segment). `prev_seq` is the last sequence
/// number seen in earlier segments (0 if none).
pub fn scan(buf: &[u8], prev_seq: u64) -> (Vec<Scanned>, Tail) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut last = prev_seq;
    while pos < buf.len() {
        if buf[pos..].iter().all(|&b| b == 0) {
            return (out, Tail::Clean);
        }
        let reason = match decode_frame(&buf[pos..]) {
            Ok(f) if f.seq <= last && !(last == 0 && out.is_empty() && f.seq == 0) => {
                format!("sequence {} not after previous {}", f.seq, last)
            }
            Ok(f) => match decode_payload(f.payload) {
                Ok(_) => {
                    let start = pos + HEADER_BYTES;
                    out.push(Scanned {
                        offset: pos as u64,
                        seq: f.seq,
                        epoch: f.epoch,
                        payload: (start, start + f.payload.len()),
                    });
                    last = f.seq;
                    pos += f.frame_len;
                    continue;
                }
                Err(at) => format!("checksummed payload malformed at payload byte {at}"),
            },
            Err(FrameError::ShortHeader) => {
                format!("expected a {HEADER_BYTES}-byte header, got {}", buf.len() - pos)
            }
            Err(FrameError::BadLength(l)) => {
                format!("frame length {l} exceeds the {} bytes left", buf.len() - pos)
            }
            Err(FrameError::BadCrc { expected, got }) => {
                format!("crc expected {expected:#010x}, got {got:#010x}")
            }
        };
        let valid_follows = (pos + 1..buf.len()).any(|p| match decode_frame(&buf[p..]) {
            Ok(f) => f.seq > last && decode_payload(f.payload).is_ok(),
            Err(_) => false,
        });
        return (
            out,
            Tail::Invalid {
                offset: pos as u64,
                reason,
                valid_follows,
            },
        );
    }
    (out, Tail::Clean)
}
