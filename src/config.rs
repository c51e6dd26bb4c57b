//! Job and engine configuration: every limit with a sane default, loadable from TOML.
//!
//! Precedence (lowest to highest): built-in defaults, the TOML file given with `--config`, then
//! command-line flags. Every field is documented with its unit in the name.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::key::DEFAULT_MAX_KEY_GROUPS;
use crate::state::StateBackendKind;

/// What to do with a record that cannot be parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// Stop the job with an error naming file, line and field (the default).
    #[default]
    Fail,
    /// Skip the record and count it.
    Skip,
    /// Write the raw record and the error to a dead-letter output and count it.
    DeadLetter,
}

/// Engine settings for one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Number of shards (pinned cores). `0` means all online cores.
    pub cores: usize,
    /// Pin shard `i` to CPU `i` (turn off when sharing a machine).
    pub pin_cores: bool,
    /// Number of key groups, the unit of rescaling. Fixed for the life of a job's savepoints.
    pub max_key_groups: u32,
    /// Records per batch handed between operators and across rings.
    pub batch_size: usize,
    /// Capacity of each ring (shard → shard channel), in batches.
    pub ring_capacity_batches: usize,
    /// Bytes of memory glommio may lock per shard for io_uring buffers.
    pub io_memory_bytes: usize,
    /// How long a shard spins before parking when idle (µs); 0 parks at once.
    pub spin_before_park_us: u64,
    /// What to do with unparsable input records.
    pub on_bad_record: ErrorPolicy,
    /// Most dead-letter records kept in memory per shard before they are written out.
    pub dead_letter_buffer_records: usize,
    /// Folder of the dead-letter files `dead-letter-<shard>.jsonl` (policy `dead-letter`);
    /// `None` means `./dead-letter` under the working directory.
    pub dead_letter_dir: Option<PathBuf>,
    /// Bytes the file source reads from a file per I/O request.
    pub file_read_chunk_bytes: usize,
    /// Largest accepted input line in bytes; longer lines are bad records.
    pub max_line_bytes: usize,
    /// A shard's reactor wakes at least this often (ms) to re-check its rings: bounds the
    /// delay of a lost cross-core wakeup in glommio 0.9 (see `shard::keep_awake_every`).
    pub wakeup_tick_ms: u64,
    /// Rolling size of filesystem sink part files.
    pub sink_part_file_bytes: u64,
    /// Keyed-state backend: `memory` (Flink: `hashmap`) or `lsm` (Flink: `rocksdb`).
    pub state_backend: StateBackendKind,
    /// Root of the LSM state stores (`<state_dir>/<operator>/shard-<n>`); kept after the job so
    /// a restart can restore from the stores' checkpoints. `None`: a temporary directory per
    /// store, removed when the job ends.
    pub state_dir: Option<PathBuf>,
    /// LSM backend: bytes of decoded state cached in memory per keyed operator per shard.
    pub state_cache_bytes: usize,
    /// LSM backend: store maintenance (memtable flush, compaction) per step between inputs.
    pub state_maintain_step_bytes: u64,
    /// LSM backend: memtable budget of each store (writes stall at 3x until flushed).
    pub state_store_memtable_bytes: usize,
    /// LSM backend: decoded-block cache of each store.
    pub state_store_block_cache_bytes: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cores: 0,
            pin_cores: true,
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
            batch_size: 1024,
            ring_capacity_batches: 64,
            io_memory_bytes: 2 << 20,
            spin_before_park_us: 0,
            on_bad_record: ErrorPolicy::Fail,
            dead_letter_buffer_records: 1024,
            dead_letter_dir: None,
            file_read_chunk_bytes: 256 << 10,
            max_line_bytes: 1 << 20,
            wakeup_tick_ms: 1,
            sink_part_file_bytes: 128 << 20,
            state_backend: StateBackendKind::Memory,
            state_dir: None,
            state_cache_bytes: 64 << 20,
            state_maintain_step_bytes: 1 << 20,
            state_store_memtable_bytes: 8 << 20,
            state_store_block_cache_bytes: 8 << 20,
        }
    }
}

impl EngineConfig {
    /// The number of shards this configuration asks for on this machine.
    pub fn shard_count(&self) -> usize {
        if self.cores == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            self.cores
        }
    }

    /// Check the limits; the error names the field and the bad value.
    pub fn validate(&self) -> Result<(), String> {
        let shards = self.shard_count();
        if shards > 1024 {
            return Err(format!("cores = {shards}: at most 1024 shards are supported"));
        }
        if (self.max_key_groups as usize) < shards {
            return Err(format!(
                "max_key_groups = {} is smaller than the number of shards ({shards})",
                self.max_key_groups
            ));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return Err(format!("batch_size = {} must be in 1..=1048576", self.batch_size));
        }
        if self.wakeup_tick_ms == 0 || self.wakeup_tick_ms > 1_000 {
            return Err(format!("wakeup_tick_ms = {} must be in 1..=1000", self.wakeup_tick_ms));
        }
        if self.ring_capacity_batches == 0 {
            return Err("ring_capacity_batches must be at least 1".into());
        }
        if self.dead_letter_buffer_records == 0 {
            return Err("dead_letter_buffer_records must be at least 1".into());
        }
        if self.file_read_chunk_bytes == 0 || self.file_read_chunk_bytes > 64 << 20 {
            return Err(format!("file_read_chunk_bytes = {} must be in 1..=67108864", self.file_read_chunk_bytes));
        }
        if self.state_cache_bytes < 4096 {
            return Err(format!("state_cache_bytes = {} must be at least 4096", self.state_cache_bytes));
        }
        if self.state_maintain_step_bytes < 4096 {
            return Err(format!("state_maintain_step_bytes = {} must be at least 4096", self.state_maintain_step_bytes));
        }
        if self.state_store_memtable_bytes < 64 << 10 || self.state_store_memtable_bytes > 1 << 30 {
            return Err(format!(
                "state_store_memtable_bytes = {} must be in 65536..=1073741824",
                self.state_store_memtable_bytes
            ));
        }
        if self.state_store_block_cache_bytes < 4096 {
            return Err(format!(
                "state_store_block_cache_bytes = {} must be at least 4096",
                self.state_store_block_cache_bytes
            ));
        }
        if self.max_line_bytes < 16 {
            return Err(format!("max_line_bytes = {} is too small", self.max_line_bytes));
        }
        Ok(())
    }

    /// Parse a TOML document (the `[engine]` table of a config file, or the whole file).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            engine: Option<toml::Value>,
        }
        let file: File = toml::from_str(text).map_err(|e| format!("config: {e}"))?;
        let config: EngineConfig = match file.engine {
            Some(v) => v.try_into().map_err(|e| format!("config [engine]: {e}"))?,
            None => EngineConfig::default(),
        };
        config.validate().map_err(|e| format!("config [engine]: {e}"))?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let c = EngineConfig::from_toml("[engine]\ncores = 2\nbatch_size = 256\n").unwrap();
        assert_eq!((c.cores, c.batch_size, c.ring_capacity_batches), (2, 256, 64));
        let err = EngineConfig::from_toml("[engine]\nbatchsize = 2\n").unwrap_err();
        assert!(err.contains("batchsize"), "{err}");
        let err = EngineConfig::from_toml("[engine]\nbatch_size = 0\n").unwrap_err();
        assert!(err.contains("batch_size = 0"), "{err}");
        let c = EngineConfig::from_toml("[engine]\nstate_backend = \"rocksdb\"\nstate_dir = \"/tmp/s\"\nstate_cache_bytes = 8192\n").unwrap();
        assert_eq!(
            (c.state_backend, c.state_dir.as_deref(), c.state_cache_bytes),
            (StateBackendKind::Lsm, Some(std::path::Path::new("/tmp/s")), 8192)
        );
        assert_eq!(
            EngineConfig::from_toml("[engine]\nstate_backend = \"hashmap\"\n").unwrap().state_backend,
            StateBackendKind::Memory
        );
        assert!(EngineConfig::from_toml("[engine]\nstate_backend = \"disk\"\n").is_err());
    }
}
