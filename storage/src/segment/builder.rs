//! In-memory construction of a segment file from sorted entries.
//!
//! Invariant: keys are added in strictly increasing order (asserted; the
//! callers iterate sorted maps or merge iterators).

use super::block;
use super::bloom;
use super::format::{encode_footer, key_prefix, BlockHandle, Footer, SegmentIndex};
use crate::memtable::{Entry, Kind};

/// Builds one segment file image.
pub(crate) struct SegmentBuilder {
    buf: Vec<u8>,
    block_start: usize,
    block_count: u32,
    block_bytes: usize,
    bloom_bits: u32,
    hashes: Vec<u64>,
    blocks: Vec<BlockHandle>,
    last_key: Vec<u8>,
    first_key: Option<Vec<u8>>,
    entries: u64,
    tombstones: u64,
}

/// A finished segment image plus summary.
pub(crate) struct Built {
    pub bytes: Vec<u8>,
    pub entries: u64,
    pub first_key: Vec<u8>,
    pub last_key: Vec<u8>,
}

impl SegmentBuilder {
    pub(crate) fn new(block_bytes: usize, bloom_bits: u32) -> Self {
        SegmentBuilder {
            buf: Vec::new(),
            block_start: 0,
            block_count: 0,
            block_bytes,
            bloom_bits,
            hashes: Vec::new(),
            blocks: Vec::new(),
            last_key: Vec::new(),
            first_key: None,
            entries: 0,
            tombstones: 0,
        }
    }

    pub(crate) fn add(&mut self, key: &[u8], e: &Entry) {
        assert!(
            self.first_key.is_none() || key > self.last_key.as_slice(),
            "segment keys must strictly increase"
        );
        if self.first_key.is_none() {
            self.first_key = Some(key.to_vec());
        }
        block::encode_entry(&mut self.buf, key, e);
        self.block_count += 1;
        self.entries += 1;
        if e.kind == Kind::Delete {
            self.tombstones += 1;
        }
        self.hashes.push(bloom::key_hash(key));
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        if self.buf.len() - self.block_start >= self.block_bytes {
            self.seal_block();
        }
    }

    fn seal_block(&mut self) {
        if self.block_count == 0 {
            return;
        }
        block::finish(&mut self.buf, self.block_start, self.block_count);
        self.blocks.push(BlockHandle {
            offset: self.block_start as u64,
            len: (self.buf.len() - self.block_start) as u32,
            last_key: self.last_key.clone(),
        });
        self.block_start = self.buf.len();
        self.block_count = 0;
    }

    /// Bytes so far (approximate final size).
    pub(crate) fn size(&self) -> usize {
        self.buf.len() + self.blocks.len() * 32 + self.hashes.len() * 2
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    pub(crate) fn finish(mut self) -> Built {
        self.seal_block();
        while !self.buf.len().is_multiple_of(16) {
            self.buf.push(0);
        }
        let index_off = self.buf.len() as u64;
        let bloom_bits = bloom::build(&self.hashes, self.bloom_bits);
        let fences = self.blocks.iter().map(|b| key_prefix(&b.last_key)).collect();
        let ix = SegmentIndex {
            fences,
            blocks: std::mem::take(&mut self.blocks),
            bloom_k: if bloom_bits.is_empty() { 0 } else { bloom::probes(self.bloom_bits) },
            bloom: bloom_bits,
            entries: self.entries,
            tombstones: self.tombstones,
            first_key: self.first_key.clone().unwrap_or_default(),
            last_key: self.last_key.clone(),
        };
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&ix).expect("serialising an index cannot fail");
        self.buf.extend_from_slice(&bytes);
        let footer = Footer {
            index_off,
            index_len: bytes.len() as u64,
            entries: self.entries,
            index_crc: crc32fast::hash(&bytes),
        };
        self.buf.extend_from_slice(&encode_footer(&footer));
        Built {
            bytes: self.buf,
            entries: self.entries,
            first_key: ix.first_key,
            last_key: ix.last_key,
        }
    }
}
