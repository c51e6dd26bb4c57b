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
    /// With `pin_cores`: pin shard `i` to CPU `cpu_list[i]` instead of CPU `i` (the daemon
    /// gives each job its own CPUs). Empty: shard `i` on CPU `i`.
    pub cpu_list: Vec<usize>,
    /// Number of key groups, the unit of rescaling. Fixed for the life of a job's savepoints.
    pub max_key_groups: u32,
    /// Records per batch handed between operators and across rings.
    pub batch_size: usize,
    /// Capacity of each ring (shard → shard channel), in batches.
    pub ring_capacity_batches: usize,
    /// In-flight data bound (Flink's buffer debloating target): a receiving task lets each of
    /// its input rings hold about this many milliseconds of its consumption in records, so a
    /// checkpoint barrier queued behind data under backpressure passes in about this time.
    /// 0 = off (only `ring_capacity_batches` bounds the rings).
    pub inflight_target_ms: u64,
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
    /// A SQL scan whose rows reach an order-insensitive sink without an event-time operator
    /// (scan, filter, projection into a filesystem, print or blackhole table) reads each file
    /// as byte ranges of about this size, aligned to line starts, split `i` on shard
    /// `i % shards`; other scans read a file as one split. 0: never split. The ranges depend on
    /// the file's size only (not the shard count), so checkpoints restore on any shard count.
    pub file_split_bytes: u64,
    /// A SQL scan that reads a lone file as one split in order (event-time queries) on more
    /// than one shard: the other shards parse the file's chunks of about this size (aligned
    /// to line starts) ahead, and the reading shard hands their rows out in file order, so
    /// watermarks and late records stay exactly those of one in-order read. 0: off.
    pub file_parse_chunk_bytes: u64,
    /// Parsed chunks (of `file_parse_chunk_bytes`) a shard may hold ahead of the reading shard.
    pub file_parse_ahead_chunks: usize,
    /// A SQL INSERT that copies columns of a CSV `filesystem` table into a CSV `filesystem`
    /// table (physical columns and constants, no filter, order-free) writes each line's output
    /// text straight from the parsed fields, without building rows (`src/sql/csv_copy.rs`).
    /// The same bytes either way; false: the row path.
    pub sql_csv_copy: bool,
    /// Largest accepted input line in bytes; longer lines are bad records.
    pub max_line_bytes: usize,
    /// A shard's reactor wakes at least this often (ms) to re-check its rings: bounds the
    /// delay of a lost cross-core wakeup in glommio 0.9 (see `shard::keep_awake_every`).
    pub wakeup_tick_ms: u64,
    /// A plain thread wakes every shard's reactor at least this often (ms), through the
    /// executor's eventfd rather than a glommio timer: the backstop for a reactor whose own
    /// timers stop firing (glommio 0.9 on some VMs; see `shard::external_wakeups`).
    pub external_wakeup_ms: u64,
    /// A shard whose reactor made no progress for this long (ms) is interrupted with a signal
    /// (its parked `io_uring_enter` returns), and the stall is logged: the backstop for a
    /// reactor the eventfd wake-up does not reach (see `shard::wakeups`).
    pub reactor_kick_ms: u64,
    /// Rolling size of filesystem sink part files.
    pub sink_part_file_bytes: u64,
    /// A filesystem sink writes its buffered output once this much is pending (and always at
    /// checkpoints, part rolls and the end): fewer, larger writes. 0: after every input step.
    pub sink_min_write_bytes: usize,
    /// A filesystem sink asks the kernel to start writing a part file back to disk after each
    /// this many bytes written (`sync_file_range`, like RocksDB's `bytes_per_sync`), so the
    /// `fdatasync` at a checkpoint or the end finds little left to write. 0: off.
    pub sink_bytes_per_sync: u64,
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
    /// Keyed-state backend of keyed process functions: `memory` (Flink: `hashmap`) or `lsm`
    /// (Flink: `rocksdb`). Window, join and SQL operator buffers stay in memory either way.
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
    /// Scale-out through a Kafka consumer group (`weir.scale-out.slots`): the number of slots
    /// the job's Kafka partitions are divided into — also the most processes that can share
    /// the job; 0 = off (one process). See [`crate::scaleout`].
    pub scale_out_slots: usize,
    /// Partitions of each repartition topic (`weir.scale-out.repartition-partitions`); 0: four
    /// per slot. At most `max_key_groups`; fixed for the life of the job.
    pub scale_out_repartition_partitions: u32,
    /// The job's name in its internal topics (`weir.scale-out.job`; `weir run` uses the
    /// script's file stem).
    pub scale_out_job: Option<String>,
    /// Set by the scale-out supervisor in the processes it starts: the slot and stage this
    /// process runs. Never set by hand.
    pub scale_out_role: Option<crate::scaleout::Role>,
    /// A scaled-out job's consumer group and cluster (from its Kafka tables; set by the SQL
    /// planner).
    #[serde(skip)]
    pub scale_out_group: Option<crate::scaleout::GroupTarget>,
    /// The processing-time clock of the job's shards: the wall clock, or a test clock that
    /// tests drive (see [`crate::time::TestClock`]). Never read from TOML.
    #[serde(skip)]
    pub processing_clock: crate::time::ProcessingClock,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cores: 0,
            pin_cores: true,
            cpu_list: Vec::new(),
            max_key_groups: DEFAULT_MAX_KEY_GROUPS,
            batch_size: 1024,
            ring_capacity_batches: 64,
            inflight_target_ms: 200,
            io_memory_bytes: 2 << 20,
            spin_before_park_us: 0,
            on_bad_record: ErrorPolicy::Fail,
            dead_letter_buffer_records: 1024,
            dead_letter_dir: None,
            file_read_chunk_bytes: 256 << 10,
            file_split_bytes: 16 << 20,
            file_parse_chunk_bytes: 4 << 20,
            file_parse_ahead_chunks: 4,
            sql_csv_copy: true,
            max_line_bytes: 1 << 20,
            wakeup_tick_ms: 1,
            external_wakeup_ms: 10,
            reactor_kick_ms: 200,
            sink_part_file_bytes: 128 << 20,
            sink_min_write_bytes: 1 << 20,
            sink_bytes_per_sync: 8 << 20,
            checkpoint_interval_ms: 0,
            checkpoint_dir: None,
            checkpoint_timeout_ms: 600_000,
            checkpoint_min_pause_ms: 0,
            checkpoint_max_concurrent: 1,
            checkpoints_retained: 1,
            restart_attempts: 3,
            restart_delay_ms: 1_000,
            restore_from: None,
            state_backend: StateBackendKind::Memory,
            state_dir: None,
            state_cache_bytes: 64 << 20,
            state_maintain_step_bytes: 1 << 20,
            state_store_memtable_bytes: 8 << 20,
            state_store_block_cache_bytes: 8 << 20,
            scale_out_slots: 0,
            scale_out_repartition_partitions: 0,
            scale_out_job: None,
            scale_out_role: None,
            scale_out_group: None,
            processing_clock: crate::time::ProcessingClock::Wall,
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

    /// The CPU shard `shard` is pinned to on a machine with `online` CPUs.
    pub fn cpu_of_shard(&self, shard: usize, online: usize) -> usize {
        match self.cpu_list.get(shard) {
            Some(cpu) => *cpu,
            None => shard % online.max(1),
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
        if !self.cpu_list.is_empty() && self.cpu_list.len() < shards {
            return Err(format!("cpu_list names {} CPUs for {shards} shards", self.cpu_list.len()));
        }
        if self.batch_size == 0 || self.batch_size > 1 << 20 {
            return Err(format!("batch_size = {} must be in 1..=1048576", self.batch_size));
        }
        if self.external_wakeup_ms == 0 || self.external_wakeup_ms > 1_000 {
            return Err(format!("external_wakeup_ms = {} must be in 1..=1000", self.external_wakeup_ms));
        }
        if self.reactor_kick_ms < self.external_wakeup_ms || self.reactor_kick_ms > 600_000 {
            return Err(format!(
                "reactor_kick_ms = {} must be at least external_wakeup_ms ({}) and at most 600000",
                self.reactor_kick_ms, self.external_wakeup_ms
            ));
        }
        if self.wakeup_tick_ms == 0 || self.wakeup_tick_ms > 1_000 {
            return Err(format!("wakeup_tick_ms = {} must be in 1..=1000", self.wakeup_tick_ms));
        }
        if self.ring_capacity_batches == 0 {
            return Err("ring_capacity_batches must be at least 1".into());
        }
        if self.inflight_target_ms > 60_000 {
            return Err(format!("inflight_target_ms = {} must be at most 60000 (0: off)", self.inflight_target_ms));
        }
        if self.dead_letter_buffer_records == 0 {
            return Err("dead_letter_buffer_records must be at least 1".into());
        }
        if self.file_read_chunk_bytes == 0 || self.file_read_chunk_bytes > 64 << 20 {
            return Err(format!("file_read_chunk_bytes = {} must be in 1..=67108864", self.file_read_chunk_bytes));
        }
        if self.sink_min_write_bytes > 1 << 30 {
            return Err(format!("sink_min_write_bytes = {} must be at most 1073741824", self.sink_min_write_bytes));
        }
        if self.sink_bytes_per_sync > 1 << 30 {
            return Err(format!("sink_bytes_per_sync = {} must be at most 1073741824", self.sink_bytes_per_sync));
        }
        if self.file_parse_ahead_chunks == 0 || self.file_parse_ahead_chunks > 1024 {
            return Err(format!("file_parse_ahead_chunks = {} must be in 1..=1024", self.file_parse_ahead_chunks));
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
        if self.checkpoint_interval_ms > 0 {
            if self.checkpoint_dir.is_none() {
                return Err("execution.checkpointing.interval is set but execution.checkpointing.dir (checkpoint_dir) is not".into());
            }
            self.checkpoint_settings().validate()?;
        }
        if self.scale_out_slots > 0 {
            let partitions = self.repartition_partitions();
            if partitions as usize > self.max_key_groups as usize || (partitions as usize) < self.scale_out_slots {
                return Err(format!(
                    "weir.scale-out.repartition-partitions = {partitions} must be in {}..={} (slots..=max_key_groups)",
                    self.scale_out_slots, self.max_key_groups
                ));
            }
        }
        Ok(())
    }

    /// Partitions of each repartition topic of a scaled-out job (see
    /// [`Self::scale_out_repartition_partitions`]).
    pub fn repartition_partitions(&self) -> u32 {
        match self.scale_out_repartition_partitions {
            0 => (self.scale_out_slots as u32).saturating_mul(4).min(self.max_key_groups),
            n => n,
        }
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

    /// Apply one Flink configuration option (`SET 'key' = 'value'` in SQL, `--set key=value`
    /// on the command line). `Ok(false)`: not an option this method knows; `Err`: a known
    /// option with a bad value (the message names both).
    pub fn set_flink_option(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let v = value.trim();
        let bad = |what: &str| format!("{key} = '{value}': {what}");
        let count = |v: &str| v.parse::<u64>().map_err(|_| bad("expected a whole number"));
        match key {
            "execution.checkpointing.interval" => self.checkpoint_interval_ms = parse_duration_ms(v).map_err(|e| bad(&e))?,
            "execution.checkpointing.dir" | "state.checkpoints.dir" => {
                let path = v.strip_prefix("file://").unwrap_or(v);
                if path.is_empty() || v.contains("://") && !v.starts_with("file://") {
                    return Err(bad("expected a local path or a file:// URI"));
                }
                self.checkpoint_dir = Some(PathBuf::from(path));
            }
            "execution.checkpointing.timeout" => self.checkpoint_timeout_ms = parse_duration_ms(v).map_err(|e| bad(&e))?,
            "execution.checkpointing.min-pause" => self.checkpoint_min_pause_ms = parse_duration_ms(v).map_err(|e| bad(&e))?,
            "execution.checkpointing.max-concurrent-checkpoints" => self.checkpoint_max_concurrent = count(v)? as usize,
            "state.checkpoints.num-retained" | "execution.checkpointing.num-retained" => self.checkpoints_retained = count(v)? as usize,
            "execution.checkpointing.mode" => {
                if !v.eq_ignore_ascii_case("EXACTLY_ONCE") {
                    return Err(bad("weir checkpoints are aligned and exactly-once (EXACTLY_ONCE)"));
                }
            }
            "restart-strategy.type" | "restart-strategy" => match v.to_ascii_lowercase().as_str() {
                "fixed-delay" | "fixeddelay" => {}
                "none" | "off" | "disable" => self.restart_attempts = 0,
                _ => return Err(bad("supported: fixed-delay, none")),
            },
            "restart-strategy.fixed-delay.attempts" => self.restart_attempts = count(v)?.min(u32::MAX as u64) as u32,
            "restart-strategy.fixed-delay.delay" => self.restart_delay_ms = parse_duration_ms(v).map_err(|e| bad(&e))?,
            "weir.scale-out.slots" => self.scale_out_slots = count(v)?.min(4096) as usize,
            "weir.scale-out.repartition-partitions" => self.scale_out_repartition_partitions = count(v)?.min(u32::MAX as u64) as u32,
            "weir.scale-out.job" => {
                if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
                    return Err(bad("expected a name of letters, digits, `.`, `_` and `-` (it names Kafka topics)"));
                }
                self.scale_out_job = Some(v.to_string())
            }
            _ => return Ok(false),
        }
        Ok(true)
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

/// A Flink duration: `500 ms`, `10 s`, `10s`, `2 min`, `1 h`, or a bare number of milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 10 s, 500 ms)"))?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000,
        "min" | "mins" | "minute" | "minutes" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        other => return Err(format!("unknown duration unit `{other}` in `{text}` (use ms, s, min or h)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("`{text}` is too long"))
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

    #[test]
    fn flink_checkpoint_options() {
        let mut c = EngineConfig::default();
        assert!(c.set_flink_option("execution.checkpointing.interval", "10 s").unwrap());
        assert!(c.set_flink_option("execution.checkpointing.dir", "file:///tmp/chk").unwrap());
        assert!(c.set_flink_option("restart-strategy.fixed-delay.delay", "250ms").unwrap());
        assert_eq!((c.checkpoint_interval_ms, c.restart_delay_ms), (10_000, 250));
        assert_eq!(c.checkpoint_dir, Some(PathBuf::from("/tmp/chk")));
        assert!(!c.set_flink_option("no.such.key", "1").unwrap());
        let err = c.set_flink_option("execution.checkpointing.interval", "10 parsecs").unwrap_err();
        assert!(err.contains("execution.checkpointing.interval") && err.contains("parsecs"), "{err}");
        assert!(c.set_flink_option("execution.checkpointing.dir", "s3://bucket/x").is_err());
    }
}
