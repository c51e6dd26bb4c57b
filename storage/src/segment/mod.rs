//! Immutable sorted segment files (`NNNNNNNNNN.seg`) and their readers.
//!
//! * [`block`]: checksummed data block codec;
//! * [`bloom`]: per-segment bloom filter;
//! * [`format`](mod@format): rkyv index + footer;
//! * `builder`: builds a file image from sorted entries.
//!
//! Reads go through `memmap2`: the index is accessed zero-copy from the
//! mapping (validated once at open), data blocks are CRC-checked and
//! decoded into the bounded block cache (`cache` module).
//!
//! Invariants: a `Segment` is only constructed after footer and index
//! validation; segment files are never modified after being written
//! (rewriting one under a live mapping would be a bug).

pub mod block;
pub mod bloom;
pub(crate) mod builder;
pub mod format;

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use memmap2::Mmap;

use crate::cache::BlockCache;
use crate::error::{Result, StoreError};
use crate::memtable::Entry;
use block::Block;
use format::{ArchivedSegmentIndex, Footer};

/// An open, validated segment file.
pub(crate) struct Segment {
    id: u64,
    path: PathBuf,
    mmap: Mmap,
    footer: Footer,
    cache: Rc<BlockCache>,
}

impl Segment {
    /// Maps and validates a segment file.
    pub(crate) fn open(path: &Path, id: u64, cache: Rc<BlockCache>) -> Result<Rc<Segment>> {
        let f = std::fs::File::open(path).map_err(|e| StoreError::io("open segment", path, e))?;
        let len = f.metadata().map_err(|e| StoreError::io("stat segment", path, e))?.len();
        if len < format::FOOTER_BYTES as u64 {
            return Err(StoreError::corrupt(path, 0, format!("segment of {len} bytes has no footer")));
        }
        // SAFETY: segment files are immutable once written and only deleted
        // (never truncated or rewritten) while mapped; see module invariants.
        let mmap = unsafe { Mmap::map(&f) }.map_err(|e| StoreError::io("mmap segment", path, e))?;
        let footer = format::parse_footer(&mmap).map_err(|(o, w)| StoreError::corrupt(path, o, w))?;
        let range = footer.index_off as usize..(footer.index_off + footer.index_len) as usize;
        format::check_index(&mmap[range], &footer).map_err(|(o, w)| StoreError::corrupt(path, o, w))?;
        Ok(Rc::new(Segment {
            id,
            path: path.to_path_buf(),
            mmap,
            footer,
            cache,
        }))
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn file_bytes(&self) -> u64 {
        self.mmap.len() as u64
    }

    fn index(&self) -> &ArchivedSegmentIndex {
        let r = self.footer.index_off as usize..(self.footer.index_off + self.footer.index_len) as usize;
        // SAFETY: these exact bytes were validated by `check_index` in
        // `open`, the mapping is immutable and 16-aligned at `index_off`.
        unsafe { rkyv::access_unchecked::<ArchivedSegmentIndex>(&self.mmap[r]) }
    }

    pub(crate) fn num_blocks(&self) -> usize {
        self.index().blocks.len()
    }

    /// Loads block `i` through the cache.
    pub(crate) fn block(&self, i: usize) -> Result<Rc<Block>> {
        if let Some(b) = self.cache.get(self.id, i as u32) {
            return Ok(b);
        }
        let h = &self.index().blocks[i];
        let (o, l) = (h.offset.to_native() as usize, h.len.to_native() as usize);
        let b = block::decode(&self.mmap[o..o + l]).map_err(|(at, w)| StoreError::corrupt(&self.path, (o + at) as u64, w))?;
        if b.len() > 0 && b.key(b.len() - 1) != h.last_key.as_slice() {
            return Err(StoreError::corrupt(&self.path, o as u64, "block last key disagrees with index"));
        }
        let b = Rc::new(b);
        self.cache.insert(self.id, i as u32, b.clone());
        Ok(b)
    }

    /// Index of the first block that may hold keys >= `key`.
    pub(crate) fn seek_block(&self, key: &[u8]) -> usize {
        let ix = self.index();
        let kp = format::key_prefix(key);
        let fences = ix.fences.as_slice();
        // Blocks before `lo` end below `key`; blocks from `hi` end above it.
        let lo = fences.partition_point(|f| f.to_native() < kp);
        let hi = lo + fences[lo..].partition_point(|f| f.to_native() <= kp);
        lo + ix.blocks[lo..hi].partition_point(|b| b.last_key.as_slice() < key)
    }

    /// Point lookup (bloom, index, block).
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Entry>> {
        let ix = self.index();
        if !bloom::may_contain(ix.bloom.as_slice(), ix.bloom_k.to_native(), key) {
            return Ok(None);
        }
        let bi = self.seek_block(key);
        if bi >= self.num_blocks() {
            return Ok(None);
        }
        let b = self.block(bi)?;
        let i = b.lower_bound(key);
        if i < b.len() && b.key(i) == key {
            return Ok(Some(b.entry(i)));
        }
        Ok(None)
    }
}

/// Validates a whole segment image in memory (footer, index, every block).
/// Used by the fuzz targets and by tests. `Err((offset, what))`.
pub fn verify_image(bytes: &[u8]) -> std::result::Result<u64, (u64, String)> {
    let f = format::parse_footer(bytes)?;
    let mut al = rkyv::util::AlignedVec::<16>::new();
    al.extend_from_slice(&bytes[f.index_off as usize..(f.index_off + f.index_len) as usize]);
    let ix = format::check_index(&al, &f)?;
    let mut n = 0u64;
    for h in ix.blocks.iter() {
        let (o, l) = (h.offset.to_native() as usize, h.len.to_native() as usize);
        let b = block::decode(&bytes[o..o + l]).map_err(|(at, w)| ((o + at) as u64, w))?;
        n += b.len() as u64;
    }
    if n != f.entries {
        return Err((f.index_off, format!("entries expected {}, got {n}", f.entries)));
    }
    Ok(n)
}

/// Ordered cursor over one sorted run (segments with disjoint, increasing
/// key ranges), bounded by `[lo, hi)`-style bounds.
pub(crate) struct RunCursor {
    segs: Vec<Rc<Segment>>,
    si: usize,
    bi: usize,
    ei: usize,
    block: Option<Rc<Block>>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    started: bool,
    done: bool,
}

impl RunCursor {
    pub(crate) fn new(segs: Vec<Rc<Segment>>, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Self {
        RunCursor {
            segs,
            si: 0,
            bi: 0,
            ei: 0,
            block: None,
            lo,
            hi,
            started: false,
            done: false,
        }
    }

    fn seek(&mut self) -> Result<()> {
        self.started = true;
        let lo: Option<Vec<u8>> = match &self.lo {
            Bound::Included(k) | Bound::Excluded(k) => Some(k.clone()),
            Bound::Unbounded => None,
        };
        if let Some(k) = lo {
            self.si = self.segs.partition_point(|s| s.index().last_key.as_slice() < k.as_slice());
            if self.si < self.segs.len() {
                self.bi = self.segs[self.si].seek_block(&k);
                if self.bi < self.segs[self.si].num_blocks() {
                    let b = self.segs[self.si].block(self.bi)?;
                    self.ei = b.lower_bound(&k);
                    self.block = Some(b);
                }
            }
        }
        Ok(())
    }

    fn next_raw(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        loop {
            if self.si >= self.segs.len() {
                return Ok(None);
            }
            if self.block.is_none() {
                if self.bi >= self.segs[self.si].num_blocks() {
                    self.si += 1;
                    self.bi = 0;
                    self.ei = 0;
                    continue;
                }
                self.block = Some(self.segs[self.si].block(self.bi)?);
            }
            let b = self.block.as_ref().expect("set above");
            if self.ei < b.len() {
                let r = (b.key(self.ei).to_vec(), b.entry(self.ei));
                self.ei += 1;
                return Ok(Some(r));
            }
            self.block = None;
            self.bi += 1;
            self.ei = 0;
        }
    }
}

impl Iterator for RunCursor {
    type Item = Result<(Vec<u8>, Entry)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.started {
            if let Err(e) = self.seek() {
                self.done = true;
                return Some(Err(e));
            }
        }
        loop {
            match self.next_raw() {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(None) => {
                    self.done = true;
                    return None;
                }
                Ok(Some((k, e))) => {
                    if let Bound::Excluded(lo) = &self.lo {
                        if &k == lo {
                            continue;
                        }
                    }
                    let past = match &self.hi {
                        Bound::Included(h) => &k > h,
                        Bound::Excluded(h) => &k >= h,
                        Bound::Unbounded => false,
                    };
                    if past {
                        self.done = true;
                        return None;
                    }
                    return Some(Ok((k, e)));
                }
            }
        }
    }
}

impl Segment {
    /// Smallest key of the segment.
    pub(crate) fn first_key(&self) -> &[u8] {
        self.index().first_key.as_slice()
    }
    /// Decodes every block (bypassing the cache); returns the entry count.
    pub(crate) fn verify(&self) -> Result<u64> {
        let mut n = 0u64;
        for h in self.index().blocks.iter() {
            let (o, l) = (h.offset.to_native() as usize, h.len.to_native() as usize);
            let b = block::decode(&self.mmap[o..o + l]).map_err(|(at, w)| StoreError::corrupt(&self.path, (o + at) as u64, w))?;
            n += b.len() as u64;
        }
        Ok(n)
    }
    /// Largest key of the segment.
    pub(crate) fn last_key(&self) -> &[u8] {
        self.index().last_key.as_slice()
    }
}
