//! Store configuration: every limit of the store is a field here.
//!
//! Invariant: [`StoreConfig::validate`] is called at open; all sizes are
//! non-zero and mutually consistent (e.g. the stall limit is at least the
//! memtable budget).

use crate::error::{Result, StoreError};

/// Tunables of one store instance. `Default` gives sane values for a
/// shard holding a few GiB of state.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Bytes of the active memtable before it is sealed for flushing.
    pub memtable_budget_bytes: usize,
    /// Active + sealed memtable bytes at which writes get
    /// [`StoreError::Backpressure`] until `maintain` flushes.
    pub memtable_stall_bytes: usize,
    /// WAL bytes buffered but not yet committed before writes get back-pressure.
    pub wal_max_pending_bytes: usize,
    /// A WAL segment file is rolled once it holds this many bytes.
    pub wal_segment_bytes: u64,
    /// Largest single direct-I/O write issued (bytes, multiple of 4096).
    pub io_chunk_bytes: usize,
    /// Target size of an uncompressed data block in a segment file.
    pub block_bytes: usize,
    /// Bloom filter bits per key (0 disables the filter).
    pub bloom_bits_per_key: u32,
    /// Byte budget of the decoded-block cache.
    pub block_cache_bytes: usize,
    /// Minimum number of runs merged by one tiered compaction.
    pub compaction_min_merge: usize,
    /// A run joins the merge candidates while its size is at most this
    /// percentage of the sum of the newer candidates.
    pub compaction_size_ratio_pct: u64,
    /// Hard cap on the number of sorted runs (bounds read amplification).
    pub compaction_max_runs: usize,
    /// Compaction output segments are cut at this size.
    pub compaction_output_bytes: usize,
    /// Number of checkpoints kept; older ones are dropped and their files
    /// deleted once unreferenced.
    pub checkpoints_retained: usize,
    /// Largest key accepted.
    pub max_key_bytes: usize,
    /// Largest value accepted.
    pub max_value_bytes: usize,
    /// Keep a write-ahead log (the default). Without one (`false`) writes are durable only
    /// once their memtable is flushed — by [`crate::Store::flush`], a checkpoint, maintenance,
    /// or [`crate::Store::close`] — and a crash loses the writes of the unflushed memtables (the
    /// store reopens at a prefix of its writes: the flushed ones). For owners that recover from
    /// checkpoints anyway, as Flink runs RocksDB without its WAL: every byte is written once
    /// less, and checkpoints need no WAL commit.
    pub wal: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            memtable_budget_bytes: 32 << 20,
            memtable_stall_bytes: 96 << 20,
            wal_max_pending_bytes: 16 << 20,
            wal_segment_bytes: 64 << 20,
            io_chunk_bytes: 1 << 20,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
            compaction_min_merge: 4,
            compaction_size_ratio_pct: 200,
            compaction_max_runs: 12,
            compaction_output_bytes: 64 << 20,
            checkpoints_retained: 3,
            max_key_bytes: 64 << 10,
            max_value_bytes: 16 << 20,
            wal: true,
        }
    }
}

impl StoreConfig {
    /// A configuration with tiny buffers, for tests that want many
    /// flushes, segments and compactions from little data.
    pub fn small_for_tests() -> Self {
        StoreConfig {
            memtable_budget_bytes: 16 << 10,
            memtable_stall_bytes: 1 << 20,
            wal_max_pending_bytes: 1 << 20,
            wal_segment_bytes: 64 << 10,
            io_chunk_bytes: 64 << 10,
            block_bytes: 512,
            block_cache_bytes: 64 << 10,
            compaction_output_bytes: 32 << 10,
            compaction_max_runs: 6,
            ..StoreConfig::default()
        }
    }

    /// Checks consistency of the limits.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(StoreError::InvalidArgument(format!("StoreConfig: {m}")));
        if self.memtable_budget_bytes == 0 || self.memtable_stall_bytes < self.memtable_budget_bytes {
            return bad("memtable_stall_bytes must be >= memtable_budget_bytes > 0");
        }
        if self.io_chunk_bytes == 0 || !self.io_chunk_bytes.is_multiple_of(4096) {
            return bad("io_chunk_bytes must be a non-zero multiple of 4096");
        }
        if self.block_bytes < 64 || self.wal_segment_bytes < 4096 || self.wal_max_pending_bytes == 0 {
            return bad("block_bytes >= 64, wal_segment_bytes >= 4096, wal_max_pending_bytes > 0");
        }
        if self.compaction_min_merge < 2 || self.compaction_max_runs < self.compaction_min_merge {
            return bad("compaction_max_runs >= compaction_min_merge >= 2");
        }
        if self.checkpoints_retained == 0 || self.compaction_output_bytes == 0 {
            return bad("checkpoints_retained and compaction_output_bytes must be > 0");
        }
        Ok(())
    }
}
