//! K-way merge of sorted sources with recency precedence.
//!
//! Sources are ordered newest first; for equal keys the entry of the
//! lowest-index source wins and the others are skipped.
//!
//! Invariant: output keys strictly increase (given sorted sources).

use crate::error::Result;
use crate::memtable::Entry;

/// A sorted source of entries.
pub(crate) type Source<'a> = Box<dyn Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a>;

/// Merges sources (newest first).
pub(crate) struct MergeIter<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<(Vec<u8>, Entry)>>,
    primed: bool,
    failed: bool,
}

impl<'a> MergeIter<'a> {
    pub(crate) fn new(sources: Vec<Source<'a>>) -> Self {
        let n = sources.len();
        MergeIter {
            sources,
            heads: (0..n).map(|_| None).collect(),
            primed: false,
            failed: false,
        }
    }

    fn fill(&mut self, i: usize) -> Result<()> {
        self.heads[i] = self.sources[i].next().transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        if !self.primed {
            self.primed = true;
            for i in 0..self.sources.len() {
                self.fill(i)?;
            }
        }
        let mut best: Option<usize> = None;
        for (i, h) in self.heads.iter().enumerate() {
            if let Some((k, _)) = h {
                match best {
                    Some(b) if self.heads[b].as_ref().expect("best is Some").0 <= *k => {}
                    _ => best = Some(i),
                }
            }
        }
        let Some(b) = best else { return Ok(None) };
        let out = self.heads[b].take().expect("best is Some");
        self.fill(b)?;
        for i in 0..self.heads.len() {
            if i != b && self.heads[i].as_ref().is_some_and(|(k, _)| *k == out.0) {
                self.fill(i)?;
            }
        }
        Ok(Some(out))
    }
}

impl Iterator for MergeIter<'_> {
    type Item = Result<(Vec<u8>, Entry)>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(v) => v.map(Ok),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
