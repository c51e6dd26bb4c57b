//! Job and engine configuration: every limit with a sane default, loadable from TOML.
//!
//! Precedence (lowest to highest): built-in defaults, the TOML file given with `--config`, then
//! command-line flags. Every field is documented with its unit in the name.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::key::DEFAULT_MAX_KEY_GROUPS;

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
    /// `execution.checkpointing.interval` (ms); 0 turns checkpointing off.
    pub checkpoint_interval_ms: u64,
    /// `execution.checkpointing.dir`: this job's checkpoints (`chk-<epoch>` directories).
    pub checkpoint_dir: Option<PathBuf>,
    /// `execution.checkpointing.timeout` (ms): a checkpoint not complete by then is aborted.
    pub checkpoint_timeout_ms: u64,
    /// `execution.checkpointing.min-pause` (ms) between the end of one checkpoint and the next.
    pub checkpoint_min_pause_ms: u64,
    /// `execution.checkpointing.max-concurrent-checkpoints`.
    pub checkpoint_max_concurrent: usize,
    /// `state.checkpoints.num-retained`: complete checkpoints kept on disk.
    pub checkpoints_retained: usize,
    /// `restart-strategy.fixed-delay.attempts`: restarts from the latest checkpoint after a
    /// failure (with checkpointing on) before the job fails.
    pub restart_attempts: u32,
    /// `restart-strategy.fixed-delay.delay` (ms) before a restart.
    pub restart_delay_ms: u64,
    /// Restore from this checkpoint or savepoint directory at start (`--restore`).
    pub restore_from: Option<PathBuf>,
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
            checkpoint_interval_ms: 0,
            checkpoint_dir: None,
            checkpoint_timeout_ms: 600_000,
            checkpoint_min_pause_ms: 0,
            checkpoint_max_concurrent: 1,
            checkpoints_retained: 1,
            restart_attempts: 3,
            restart_delay_ms: 1_000,
            restore_from: None,
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
        if self.max_line_bytes < 16 {
            return Err(format!("max_line_bytes = {} is too small", self.max_line_bytes));
        }
        if self.checkpoint_interval_ms > 0 {
            if self.checkpoint_dir.is_none() {
                return Err("execution.checkpointing.interval is set but execution.checkpointing.dir (checkpoint_dir) is not".into());
            }
            self.checkpoint_settings().validate()?;
        }
        Ok(())
    }

    /// True when the job runs with checkpoints (or restores from one).
    pub fn checkpointing(&self) -> bool {
        self.checkpoint_interval_ms > 0 || self.restore_from.is_some()
    }

    /// The coordinator's settings (an interval of 0 — restore without new checkpoints — never
    /// triggers one).
    pub fn checkpoint_settings(&self) -> crate::checkpoint::protocol::CheckpointSettings {
        crate::checkpoint::protocol::CheckpointSettings {
            interval_ms: if self.checkpoint_interval_ms == 0 {
                u64::MAX / 4
            } else {
                self.checkpoint_interval_ms
            },
            timeout_ms: self.checkpoint_timeout_ms,
            min_pause_ms: self.checkpoint_min_pause_ms,
            max_concurrent: self.checkpoint_max_concurrent,
            retained: self.checkpoints_retained,
        }
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
    }
}
