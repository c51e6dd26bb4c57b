//! WAL record framing and decoding (pure functions, fuzzed).
//!
//! Frame layout (little-endian):
//! `crc32 u32 | len u32 | seq u64 | epoch u64 | payload[len]`, where the CRC
//! (crc32fast, IEEE) covers everything after itself. The payload of a
//! record is one atomic write batch:
//! `count u32 | count × (kind u8 | klen u32 | vlen u32 | expire_ms u64 | key | value)`.
//!
//! Invariants: a frame is accepted only if its length is within the
//! buffer and `max_record_bytes`, and its CRC matches; decoding never
//! panics on arbitrary bytes.

use crate::codec::{put_u32, put_u64, Reader};
use crate::memtable::Kind;

/// Bytes of the frame header.
pub const HEADER_BYTES: usize = 24;
/// Upper bound on a record payload accepted by the decoder.
pub const MAX_RECORD_BYTES: usize = 1 << 30;

/// One operation inside a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRef<'a> {
    pub(crate) kind: Kind,
    pub(crate) key: &'a [u8],
    pub(crate) value: &'a [u8],
    pub(crate) expire_ms: u64,
}

impl<'a> OpRef<'a> {
    /// A put of `key` = `value` (no expiry).
    pub fn put(key: &'a [u8], value: &'a [u8]) -> Self {
        Self {
            kind: Kind::Put,
            key,
            value,
            expire_ms: 0,
        }
    }
    /// The key.
    pub fn key(&self) -> &'a [u8] {
        self.key
    }
    /// The value.
    pub fn value(&self) -> &'a [u8] {
        self.value
    }
}

/// A frame that passed its checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Sequence number of the record.
    pub seq: u64,
    /// Checkpoint epoch current when it was written.
    pub epoch: u64,
    /// Record payload.
    pub payload: &'a [u8],
    /// Total bytes of the frame.
    pub frame_len: usize,
}

/// Appends a framed record holding `ops` to `out`.
pub fn encode_record(out: &mut Vec<u8>, seq: u64, epoch: u64, ops: &[OpRef<'_>]) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    put_u32(out, ops.len() as u32);
    for op in ops {
        out.push(op.kind as u8);
        put_u32(out, op.key.len() as u32);
        put_u32(out, op.value.len() as u32);
        put_u64(out, op.expire_ms);
        out.extend_from_slice(op.key);
        out.extend_from_slice(op.value);
    }
    let len = (out.len() - start - HEADER_BYTES) as u32;
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 16].copy_from_slice(&seq.to_le_bytes());
    out[start + 16..start + 24].copy_from_slice(&epoch.to_le_bytes());
    let crc = crc32fast::hash(&out[start + 4..]);
    out[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header.
    ShortHeader,
    /// Length field beyond the buffer or the limit.
    BadLength(u64),
    /// Checksum mismatch.
    BadCrc {
        /// Stored CRC.
        expected: u32,
        /// Computed CRC.
        got: u32,
    },
}

/// Decodes the frame at the start of `buf`.
pub fn decode_frame(buf: &[u8]) -> Result<Frame<'_>, FrameError> {
    let mut r = Reader::new(buf);
    let (crc, len, seq, epoch) = match (r.u32(), r.u32(), r.u64(), r.u64()) {
        (Ok(c), Ok(l), Ok(s), Ok(e)) => (c, l as usize, s, e),
        _ => return Err(FrameError::ShortHeader),
    };
    if len > MAX_RECORD_BYTES || len > r.remaining() {
        return Err(FrameError::BadLength(len as u64));
    }
    let got = crc32fast::hash(&buf[4..HEADER_BYTES + len]);
    if got != crc {
        return Err(FrameError::BadCrc { expected: crc, got });
    }
    Ok(Frame {
        seq,
        epoch,
        payload: &buf[HEADER_BYTES..HEADER_BYTES + len],
        frame_len: HEADER_BYTES + len,
    })
}

/// Decodes a record payload into its operations. `Err(offset)` gives the
/// offset inside the payload where decoding failed.
pub fn decode_payload(payload: &[u8]) -> Result<Vec<OpRef<'_>>, usize> {
    let mut r = Reader::new(payload);
    let count = r.u32().map_err(|_| 0usize)? as usize;
    // Each op takes at least 17 bytes: bound the allocation by the input.
    let mut ops = Vec::with_capacity(count.min(payload.len() / 17));
    for _ in 0..count {
        let at = r.pos();
        let kind = r.u8().ok().and_then(Kind::from_u8).ok_or(at)?;
        let klen = r.u32().map_err(|_| at)? as usize;
        let vlen = r.u32().map_err(|_| at)? as usize;
        let expire_ms = r.u64().map_err(|_| at)?;
        let key = r.bytes(klen).map_err(|_| at)?;
        let value = r.bytes(vlen).map_err(|_| at)?;
        ops.push(OpRef { kind, key, value, expire_ms });
    }
    if r.remaining() != 0 {
        return Err(r.pos());
    }
    Ok(ops)
}
