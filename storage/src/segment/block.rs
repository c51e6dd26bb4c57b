//! Data block codec.
//!
//! Layout: `entries | count u32 | crc32 u32`, each entry
//! `kind u8 | klen u32 | vlen u32 | expire_ms u64 | key | value`; the CRC
//! covers entries and count. Keys within a block strictly increase.
//!
//! Invariants: `decode` verifies the CRC first, never reads out of
//! bounds, and rejects unsorted keys; a `Block` only holds in-range
//! offsets into its own buffer.

use crate::codec::{put_u32, put_u64, Reader};
use crate::memtable::{Entry, Kind};

/// Per-entry header bytes.
pub(crate) const ENTRY_HEADER: usize = 17;
/// Trailer bytes (count + crc).
pub(crate) const TRAILER: usize = 8;

/// Appends one entry to a block under construction.
pub(crate) fn encode_entry(out: &mut Vec<u8>, key: &[u8], e: &Entry) {
    out.push(e.kind as u8);
    put_u32(out, key.len() as u32);
    put_u32(out, e.value.len() as u32);
    put_u64(out, e.expire_ms);
    out.extend_from_slice(key);
    out.extend_from_slice(&e.value);
}

/// Seals a block: appends count and CRC.
pub(crate) fn finish(out: &mut Vec<u8>, start: usize, count: u32) {
    put_u32(out, count);
    let crc = crc32fast::hash(&out[start..]);
    put_u32(out, crc);
}

/// Offsets of one decoded entry.
#[derive(Debug, Clone, Copy)]
struct Slot {
    kind: Kind,
    expire_ms: u64,
    key: (u32, u32),
    value: (u32, u32),
}

/// A verified, decoded block (owns a copy of its bytes).
#[derive(Debug)]
pub(crate) struct Block {
    buf: Vec<u8>,
    slots: Vec<Slot>,
}

impl Block {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        let (o, l) = self.slots[i].key;
        &self.buf[o as usize..(o + l) as usize]
    }
    pub(crate) fn entry(&self, i: usize) -> Entry {
        let s = self.slots[i];
        let (o, l) = s.value;
        Entry {
            kind: s.kind,
            expire_ms: s.expire_ms,
            value: self.buf[o as usize..(o + l) as usize].to_vec(),
        }
    }
    /// Index of the first entry with key >= `key`.
    pub(crate) fn lower_bound(&self, key: &[u8]) -> usize {
        self.slots.partition_point(|s| {
            let (o, l) = s.key;
            &self.buf[o as usize..(o + l) as usize] < key
        })
    }
    /// Memory charged to the cache.
    pub(crate) fn charge(&self) -> usize {
        self.buf.len() + self.slots.len() * std::mem::size_of::<Slot>() + 64
    }
}

/// Verifies a block image; returns its entry count (fuzzing/tests entry
/// point). `Err((offset_in_block, what))`.
pub fn verify(data: &[u8]) -> Result<usize, (usize, String)> {
    decode(data).map(|b| b.len())
}

/// Verifies and decodes a block. `Err((offset_in_block, what))`.
pub(crate) fn decode(data: &[u8]) -> Result<Block, (usize, String)> {
    if data.len() < TRAILER {
        return Err((0, format!("block of {} bytes is shorter than its trailer", data.len())));
    }
    let body = data.len() - 4;
    let stored = u32::from_le_bytes([data[body], data[body + 1], data[body + 2], data[body + 3]]);
    let got = crc32fast::hash(&data[..body]);
    if stored != got {
        return Err((body, format!("block crc expected {stored:#010x}, got {got:#010x}")));
    }
    let cpos = data.len() - TRAILER;
    let count = u32::from_le_bytes([data[cpos], data[cpos + 1], data[cpos + 2], data[cpos + 3]]);
    let entries = &data[..cpos];
    let mut r = Reader::new(entries);
    let mut slots = Vec::with_capacity((count as usize).min(entries.len() / ENTRY_HEADER));
    for n in 0..count {
        let at = r.pos();
        let bad = |what: &str| (at, format!("entry {n}: {what}"));
        let kind = r.u8().ok().and_then(Kind::from_u8).ok_or_else(|| bad("bad kind"))?;
        let klen = r.u32().map_err(|_| bad("truncated"))? as usize;
        let vlen = r.u32().map_err(|_| bad("truncated"))? as usize;
        let expire_ms = r.u64().map_err(|_| bad("truncated"))?;
        let ko = r.pos();
        r.bytes(klen).map_err(|_| bad("key past block end"))?;
        let vo = r.pos();
        r.bytes(vlen).map_err(|_| bad("value past block end"))?;
        let slot = Slot {
            kind,
            expire_ms,
            key: (ko as u32, klen as u32),
            value: (vo as u32, vlen as u32),
        };
        if let Some(prev) = slots.last() {
            let p: &Slot = prev;
            let pk = &entries[p.key.0 as usize..(p.key.0 + p.key.1) as usize];
            if pk >= &entries[ko..ko + klen] {
                return Err(bad("keys not strictly increasing"));
            }
        }
        slots.push(slot);
    }
    if r.remaining() != 0 {
        return Err((r.pos(), format!("{} stray bytes after {count} entries", r.remaining())));
    }
    Ok(Block {
        buf: data[..cpos].to_vec(),
        slots,
    })
}
