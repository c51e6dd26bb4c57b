//! Sources: where records enter a job. A source is a list of *splits* (a file, a generator
//! partition, later a Kafka partition); split `i` is read by shard `i % shards`, in order, by one
//! [`SplitReader`]. Event timestamps and watermarks are assigned per split by the segment task
//! (see [`crate::shard::segment::run_source`]).
//!
//! Invariant: a split is read by exactly one shard, start to end, in order; so lateness
//! decisions depend only on the split's own order (Flink's behaviour with one reader per file).

pub mod collection;
pub mod file;
pub mod gateway;
pub mod kafka;
pub mod kinesis;
pub mod nexmark;
pub mod nexmark_source;
pub mod pulsar;
pub(crate) mod remote;
pub mod s3;

use futures::future::LocalBoxFuture;

use crate::error::Result;
use crate::shard::BuildCtx;

/// What one read call found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Records were appended (maybe zero); call again.
    More,
    /// The split is finished; nothing more will come.
    Exhausted,
    /// Nothing available now (unbounded split); try again after this many milliseconds.
    Idle { retry_after_ms: u64 },
}

/// Reads one split in order.
pub trait SplitReader<T> {
    /// Open files etc. (once, on the shard's executor, before the first read).
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Append up to `max` records to `out`.
    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>>;
    /// Human-readable name of the split (file path, generator partition) for errors and status.
    fn describe(&self) -> String;
    /// Checkpoints: where this split stands after the last record `read` handed out, serialised
    /// (a file offset, a generator sequence number, Kafka offsets). Stored in the checkpoint;
    /// the segment loop calls this only between reads, at a barrier.
    fn position(&self) -> Result<Vec<u8>> {
        Err(crate::error::WeirError::Config(format!(
            "source split {} cannot be checkpointed (its reader has no position)",
            self.describe()
        )))
    }
    /// Restore: continue right after `position` (a value `position` returned, maybe in an
    /// earlier process). Called once, before `open`.
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let _ = position;
        Err(crate::error::WeirError::Config(format!("source split {} cannot be restored", self.describe())))
    }
    /// A split whose input carries its own watermarks (the scale-out repartition topic, where
    /// upstream writers record theirs) returns `Some` here, from its first read on: the split's
    /// watermark is then this value, read after every `read`, instead of the strategy's
    /// `max timestamp − delay` (the timestamps still come from the timestamp function). It
    /// must never decrease. Default `None`: the strategy decides.
    fn source_watermark(&self) -> Option<crate::time::Timestamp> {
        None
    }
    /// The rows `records` (just read by this reader) hold, for the records-read metric: one
    /// per record, unless a record carries many (a chunk of encoded rows).
    fn rows_in(&self, records: &[T]) -> u64 {
        records.len() as u64
    }
}

/// A source of records of type `T`.
pub trait Source<T>: Send + Sync + 'static {
    /// Name used in metrics and plans.
    fn name(&self) -> String;
    /// Number of splits (decided on the driver before shards start; must be stable).
    fn split_count(&self, shards: usize) -> Result<usize>;
    /// Create the reader of split `split` on the current shard.
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<T>>>;
    /// Work this source does on the current shard besides reading its splits (e.g. parsing
    /// parts of a file ahead for the shard that reads it in order), built with the shard's
    /// readers. It runs as its own task beside the source's segment, which ends only after
    /// it. It must end once its work is taken or its readers are gone, and report failures
    /// through the readers (its `Err` fails the shard). Default: none.
    fn shard_work(&self, ctx: &mut BuildCtx<'_>) -> Result<Option<LocalBoxFuture<'static, Result<()>>>> {
        let _ = ctx;
        Ok(None)
    }
}
