//! Segment file layout: index (rkyv) and footer codecs.
//!
//! File: `data blocks | zero pad to 16 | index (rkyv, 16-aligned) | footer`.
//! Footer (48 bytes, little-endian): `magic "WEIRSEG1" | version u32 |
//! pad u32 | index_off u64 | index_len u64 | entries u64 | index_crc u32 |
//! footer_crc u32` (footer_crc covers the 44 bytes before it).
//!
//! Invariants: [`parse_footer`] and [`check_index`] validate every field
//! against the file length; after [`check_index`] succeeds the index bytes
//! may be accessed without re-validation.

use rkyv::{Archive, Deserialize, Serialize};

/// Footer size.
pub const FOOTER_BYTES: usize = 48;
/// Magic at the start of the footer.
pub const MAGIC: &[u8; 8] = b"WEIRSEG1";
/// Format version.
pub const VERSION: u32 = 1;

/// Location and last key of one data block.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct BlockHandle {
    /// File offset.
    pub offset: u64,
    /// Bytes including the trailer.
    pub len: u32,
    /// Largest key in the block.
    pub last_key: Vec<u8>,
}

/// Index of a segment, archived with rkyv and read zero-copy from the mmap.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    /// Blocks in key order.
    pub blocks: Vec<BlockHandle>,
    /// `fence[i]` = [`key_prefix`] of `blocks[i].last_key`: a contiguous
    /// array searched first, so a lookup touches few scattered keys.
    pub fences: Vec<u64>,
    /// Bloom filter bits (empty: disabled).
    pub bloom: Vec<u8>,
    /// Bloom probes.
    pub bloom_k: u32,
    /// Number of entries.
    pub entries: u64,
    /// Number of tombstones.
    pub tombstones: u64,
    /// Smallest key.
    pub first_key: Vec<u8>,
    /// Largest key.
    pub last_key: Vec<u8>,
}

/// First 8 bytes of `key`, big-endian, zero-padded: monotone in key order.
pub fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Parsed footer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Index offset.
    pub index_off: u64,
    /// Index length.
    pub index_len: u64,
    /// Entry count.
    pub entries: u64,
    /// CRC of the index bytes.
    pub index_crc: u32,
}

/// Encodes a footer.
pub fn encode_footer(f: &Footer) -> [u8; FOOTER_BYTES] {
    let mut b = [0u8; FOOTER_BYTES];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&f.index_off.to_le_bytes());
    b[24..32].copy_from_slice(&f.index_len.to_le_bytes());
    b[32..40].copy_from_slice(&f.entries.to_le_bytes());
    b[40..44].copy_from_slice(&f.index_crc.to_le_bytes());
    let crc = crc32fast::hash(&b[..44]);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    b
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

/// Parses and validates the footer of a file of `file` bytes.
/// `Err((offset, what))` with the offset in the file.
pub fn parse_footer(file: &[u8]) -> Result<Footer, (u64, String)> {
    if file.len() < FOOTER_BYTES {
        return Err((0, format!("file of {} bytes has no {FOOTER_BYTES}-byte footer", file.len())));
    }
    let at = file.len() - FOOTER_BYTES;
    let b = &file[at..];
    let at = at as u64;
    let stored = u32_at(b, 44);
    let got = crc32fast::hash(&b[..44]);
    if stored != got {
        return Err((at + 44, format!("footer crc expected {stored:#010x}, got {got:#010x}")));
    }
    if &b[0..8] != MAGIC {
        return Err((at, format!("magic expected {MAGIC:?}, got {:?}", &b[0..8])));
    }
    let v = u32_at(b, 8);
    if v != VERSION {
        return Err((at + 8, format!("version expected {VERSION}, got {v}")));
    }
    let f = Footer {
        index_off: u64_at(b, 16),
        index_len: u64_at(b, 24),
        entries: u64_at(b, 32),
        index_crc: u32_at(b, 40),
    };
    let end = f.index_off.checked_add(f.index_len);
    if !f.index_off.is_multiple_of(16) || end.is_none_or(|e| e > at) {
        return Err((at + 16, format!("index range {}+{} outside the {} data bytes", f.index_off, f.index_len, at)));
    }
    Ok(f)
}

/// Validates arbitrary index bytes with a matching synthetic footer
/// (copies into an aligned buffer; fuzzing entry point). Returns the
/// number of block handles.
pub fn check_index_bytes(idx: &[u8], data_bytes: u64) -> Result<usize, (u64, String)> {
    let mut al = rkyv::util::AlignedVec::<16>::new();
    al.extend_from_slice(idx);
    let data_bytes = data_bytes / 16 * 16;
    let entries = rkyv::access::<ArchivedSegmentIndex, rkyv::rancor::Error>(&al)
        .map(|ix| ix.entries.to_native())
        .unwrap_or(0);
    let f = Footer {
        index_off: data_bytes,
        index_len: idx.len() as u64,
        entries,
        index_crc: crc32fast::hash(idx),
    };
    check_index(&al, &f).map(|ix| ix.blocks.len())
}

/// Checks the index bytes (CRC, rkyv validation, block handles within
/// `index_off`, sorted last keys). `idx` must be 16-aligned.
/// `Err((offset, what))` with the offset in the file.
pub fn check_index<'a>(idx: &'a [u8], f: &Footer) -> Result<&'a ArchivedSegmentIndex, (u64, String)> {
    let got = crc32fast::hash(idx);
    if got != f.index_crc {
        return Err((f.index_off, format!("index crc expected {:#010x}, got {got:#010x}", f.index_crc)));
    }
    let ix = rkyv::access::<ArchivedSegmentIndex, rkyv::rancor::Error>(idx).map_err(|e| (f.index_off, format!("index does not validate: {e}")))?;
    let mut prev_end = 0u64;
    let mut prev_key: Option<&[u8]> = None;
    for (i, b) in ix.blocks.iter().enumerate() {
        let (o, l) = (b.offset.to_native(), b.len.to_native() as u64);
        if o != prev_end || l < super::block::TRAILER as u64 || o + l > f.index_off {
            return Err((f.index_off, format!("block handle {i} ({o}+{l}) out of place")));
        }
        if prev_key.is_some_and(|p| p >= b.last_key.as_slice()) {
            return Err((f.index_off, format!("block handle {i} last key out of order")));
        }
        prev_key = Some(b.last_key.as_slice());
        prev_end = o + l;
    }
    if ix.fences.len() != ix.blocks.len()
        || ix
            .fences
            .iter()
            .zip(ix.blocks.iter())
            .any(|(f, b)| f.to_native() != key_prefix(b.last_key.as_slice()))
    {
        return Err((f.index_off, "block fences disagree with block last keys".into()));
    }
    if ix.entries.to_native() != f.entries || ix.bloom_k.to_native() > 30 {
        return Err((f.index_off, "index entry count or bloom probes disagree with footer".into()));
    }
    Ok(ix)
}
