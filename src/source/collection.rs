//! A bounded source over in-memory vectors, one vector per split: the test harness's input.

use futures::future::LocalBoxFuture;

use super::{ReadStatus, Source, SplitReader};
use crate::checkpoint::snapshot::{decode, encode};
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;
use std::sync::Arc;

/// Splits given as vectors; split `i` is `splits[i]`, read in order.
pub struct CollectionSource<T> {
    splits: Arc<Vec<Vec<T>>>,
}

impl<T> CollectionSource<T> {
    /// One split per vector.
    pub fn new(splits: Vec<Vec<T>>) -> Self {
        Self { splits: Arc::new(splits) }
    }
    /// A single split (one in-order input, like one file).
    pub fn single(records: Vec<T>) -> Self {
        Self::new(vec![records])
    }
}

impl<T: Clone + Send + Sync + 'static> Source<T> for CollectionSource<T> {
    fn name(&self) -> String {
        "collection".into()
    }
    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.splits.len())
    }
    fn reader(&self, split: usize, _ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>> {
        Ok(Box::new(CollectionReader {
            splits: self.splits.clone(),
            split,
            pos: 0,
        }))
    }
}

struct CollectionReader<T> {
    splits: Arc<Vec<Vec<T>>>,
    split: usize,
    pos: usize,
}

impl<T: Clone> SplitReader<T> for CollectionReader<T> {
    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        let data = &self.splits[self.split];
        let end = (self.pos + max).min(data.len());
        out.extend_from_slice(&data[self.pos..end]);
        self.pos = end;
        let status = if self.pos == data.len() { ReadStatus::Exhausted } else { ReadStatus::More };
        Box::pin(async move { Ok(status) })
    }
    fn describe(&self) -> String {
        format!("collection split {}", self.split)
    }
    fn position(&self) -> Result<Vec<u8>> {
        Ok(encode(&(self.pos as u64)))
    }
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let pos: u64 = decode(position, &self.describe())?;
        let len = self.splits[self.split].len();
        if pos as usize > len {
            return Err(WeirError::Checkpoint(format!(
                "{}: checkpointed position {pos} is past its {len} records",
                self.describe()
            )));
        }
        self.pos = pos as usize;
        Ok(())
    }
}
