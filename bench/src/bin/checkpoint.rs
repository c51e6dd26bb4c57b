//! Checkpoint figures for large keyed state: a keyed process function keeps a `value_bytes`
//! payload per key in value state (`keys` keys, ≈ keys × value_bytes of state), fed round-robin
//! over the keys as fast as the engine goes, checkpointing every `interval_ms`. Reports the
//! checkpoint durations (p50/p99), the longest synchronous snapshot of any task (the data path's
//! stall), the longest barrier alignment, the checkpoint size, and the time to recover (a second
//! run restoring the last checkpoint: read it and rebuild the state). Each checkpoint's time is
//! split into phases (barrier travel, snapshot incl. asynchronous parts, final write), and the
//! machine's load average is recorded before and after (the machine is shared).
//!
//! `cargo run --release -p weir-bench --bin checkpoint -- --keys 8000000 --value-bytes 100`

use std::path::PathBuf;

use clap::Parser;
use futures::future::LocalBoxFuture;
use weir::checkpoint::snapshot::{decode, encode};
use weir::prelude::*;
use weir::shard::BuildCtx;
use weir::source::{ReadStatus, Source, SplitReader};
use weir::state::StateBackendKind;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 8_000_000)]
    keys: u64,
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Passes over all keys (the first builds the state, later ones overwrite it).
    #[arg(long, default_value_t = 3)]
    rounds: u64,
    #[arg(long, default_value_t = 2_000)]
    interval_ms: u64,
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// memory or lsm
    #[arg(long, default_value = "memory")]
    backend: String,
    #[arg(long, default_value = "target/bench-checkpoint")]
    dir: PathBuf,
    /// Ring capacity in batches (in-flight data between shards; default: the engine's).
    #[arg(long)]
    ring_capacity_batches: Option<usize>,
    /// In-flight bound per ring in ms of the receiver's consumption (0: off; default: the engine's).
    #[arg(long)]
    inflight_target_ms: Option<u64>,
}

/// Records `(key, sequence)` for keys `0..keys`, `rounds` times, split by `key % splits`.
#[derive(Clone)]
struct KeySweep {
    keys: u64,
    rounds: u64,
    splits: usize,
}

struct SweepReader {
    next: u64,
    end: u64,
    step: u64,
    keys: u64,
}

impl Source<(u64, u64)> for KeySweep {
    fn name(&self) -> String {
        "key-sweep".into()
    }
    fn split_count(&self, _shards: usize) -> Result<usize> {
        Ok(self.splits)
    }
    fn reader(&self, split: usize, _ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<(u64, u64)>>> {
        Ok(Box::new(SweepReader {
            next: split as u64,
            end: self.keys * self.rounds,
            step: self.splits as u64,
            keys: self.keys,
        }))
    }
}

impl SplitReader<(u64, u64)> for SweepReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<(u64, u64)>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        for _ in 0..max {
            if self.next >= self.end {
                break;
            }
            out.push((self.next % self.keys, self.next));
            self.next += self.step;
        }
        let status = if self.next >= self.end { ReadStatus::Exhausted } else { ReadStatus::More };
        Box::pin(async move { Ok(status) })
    }
    fn describe(&self) -> String {
        format!("key sweep from {}", self.next)
    }
    fn position(&self) -> Result<Vec<u8>> {
        Ok(encode(&self.next))
    }
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        self.next = decode(position, "key sweep position")?;
        Ok(())
    }
}

#[derive(Clone)]
struct KeepPayload {
    value_bytes: usize,
    state: Option<weir::state::ValueState<u64, Vec<u8>>>,
}

impl KeyedProcessFunction<u64, (u64, u64)> for KeepPayload {
    type Out = u64;
    fn open(&mut self, state: &weir::state::StateContext<u64>) {
        self.state = Some(state.value("payload", None));
    }
    fn process(&mut self, key: &u64, record: (u64, u64), _ctx: &mut ProcessContext<'_, u64, u64>) {
        let mut payload = vec![(record.1 & 0xff) as u8; self.value_bytes];
        payload[..8].copy_from_slice(&record.1.to_le_bytes());
        self.state.as_mut().expect("opened").update(key, payload);
    }
}

fn job(args: &Args, restore: Option<PathBuf>) -> JobReport {
    let backend = match args.backend.as_str() {
        "lsm" => StateBackendKind::Lsm,
        _ => StateBackendKind::Memory,
    };
    let env = StreamEnv::new(EngineConfig {
        cores: args.cores,
        pin_cores: false,
        checkpoint_interval_ms: args.interval_ms,
        checkpoint_dir: Some(args.dir.join("checkpoints")),
        checkpoints_retained: 3,
        restart_attempts: 0,
        restore_from: restore,
        state_backend: backend,
        state_dir: Some(args.dir.join("state")),
        ring_capacity_batches: args.ring_capacity_batches.unwrap_or(EngineConfig::default().ring_capacity_batches),
        inflight_target_ms: args.inflight_target_ms.unwrap_or(EngineConfig::default().inflight_target_ms),
        ..Default::default()
    });
    env.source(KeySweep {
        keys: args.keys,
        rounds: args.rounds,
        splits: args.cores,
    })
    .without_event_time()
    .key_by(|r: &(u64, u64)| r.0)
    .process(KeepPayload {
        value_bytes: args.value_bytes,
        state: None,
    })
    .sink(BlackholeSink);
    env.execute().expect("benchmark job")
}

/// The 1, 5 and 15 minute load averages (the machine is shared: figures depend on them).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let args = Args::parse();
    let load_before = load_average();
    let _ = std::fs::remove_dir_all(&args.dir);
    let report = job(&args, None);
    let c = &report.checkpoints;
    let mid = c.durations_ms.len().saturating_sub(1); // the last one is the final (empty-state) checkpoint
    let mut durations = c.durations_ms[..mid].to_vec();
    durations.sort_unstable();
    let pct = |q: f64| durations.get(((durations.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
    // Where the time went: percentiles of each phase over the same checkpoints.
    let phase = |f: fn(&weir::checkpoint::coordinator::CheckpointPhases) -> u64| {
        let mut v: Vec<u64> = c.phases[..mid].iter().map(f).collect();
        v.sort_unstable();
        let at = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0);
        serde_json::json!({ "p50": at(0.5), "p99": at(0.99) })
    };
    let phases = serde_json::json!({
        "barrier_ms": phase(|p| p.barrier_ms),
        "snapshot_ms": phase(|p| p.snapshot_ms),
        "finish_ms": phase(|p| p.finish_ms),
    });
    // Recovery: restore a retained mid-run checkpoint (the final one holds no state).
    let store = weir::checkpoint::files::CheckpointStore::new(args.dir.join("checkpoints"));
    let mut dirs: Vec<_> = std::fs::read_dir(&store.root)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.join("_metadata").exists())
        .collect();
    dirs.sort_by_key(|p| p.file_name().unwrap().to_string_lossy().trim_start_matches("chk-").parse::<u64>().unwrap_or(0));
    // The retained checkpoint holding the most state (checkpoints completed after the sources
    // finished hold only final positions).
    let full = dirs
        .iter()
        .max_by_key(|d| (dir_bytes(d), weir::checkpoint::files::read_meta(d).unwrap().total_bytes()))
        .cloned();
    let state_bytes = full.as_ref().map_or(0, |d| weir::checkpoint::files::read_meta(d).unwrap().total_bytes());
    // On disk: the state file plus, with the LSM backend, the exported store files (hard links
    // shared with the previous checkpoint: the full size of one checkpoint).
    let on_disk = full.as_ref().map_or(0, |d| dir_bytes(d));
    // Incremental size: for each retained checkpoint after the first, the bytes of its files
    // that the retained checkpoint before it does not share (hard links share inodes). The
    // memory backend writes everything each time.
    let incremental: Vec<u64> = dirs
        .windows(2)
        .map(|pair| {
            let previous = inodes(&pair[0]);
            inodes(&pair[1])
                .into_iter()
                .filter(|(ino, _)| !previous.contains_key(ino))
                .map(|(_, len)| len)
                .sum()
        })
        .collect();
    let recovery = full.map(|d| job(&args, Some(d)));
    let out = serde_json::json!({
        "keys": args.keys, "value_bytes": args.value_bytes, "backend": args.backend, "cores": args.cores,
        "ring_capacity_batches": args.ring_capacity_batches.unwrap_or(EngineConfig::default().ring_capacity_batches),
        "inflight_target_ms": args.inflight_target_ms.unwrap_or(EngineConfig::default().inflight_target_ms),
        "records_per_s": (args.keys * args.rounds) as f64 / report.elapsed.as_secs_f64(),
        "checkpoints": durations.len(), "duration_p50_ms": pct(0.5), "duration_p99_ms": pct(0.99),
        "max_snapshot_stall_ms": c.max_snapshot_ms, "max_snapshot_stall_cpu_ms": c.max_snapshot_cpu_ms, "max_alignment_ms": c.max_alignment_ms,
        "checkpoint_bytes": state_bytes, "checkpoint_dir_bytes": on_disk,
        "incremental_bytes": incremental, "aborted": c.aborted,
        "recovery_startup_ms": recovery.as_ref().map(|r| r.startup_ms),
        "phases": phases, "durations_ms": c.durations_ms, "load_average_before": load_before, "load_average_after": load_average(),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}

/// Every file below `dir`: inode → bytes.
fn inodes(dir: &std::path::Path) -> std::collections::HashMap<u64, u64> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            out.extend(inodes(&p));
        } else if let Ok(m) = std::fs::metadata(&p) {
            out.insert(m.ino(), m.len());
        }
    }
    out
}

/// Bytes of every file below `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                dir_bytes(&p)
            } else {
                std::fs::metadata(&p).map_or(0, |m| m.len())
            }
        })
        .sum()
}
