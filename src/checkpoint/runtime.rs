//! The running side of checkpoints: what shards and the coordinator share while a job runs.
//!
//! The coordinator ([`super::coordinator`]) runs on the driver thread, never on a shard core. It
//! talks to the shards through [`CheckpointControl`]:
//! - **trigger** (coordinator → sources): `trigger` holds the newest epoch to inject; every
//!   source task polls it once per input step (one relaxed load) and, between two reads, records
//!   its split positions and pushes barrier *n* down its chain. Barriers then travel in band
//!   through the rings (`Envelope::Barrier`), and each segment aligns them over its inputs;
//! - **acknowledge** (tasks → coordinator): a task that aligned barrier *n* snapshots its
//!   operators into a [`TaskSnapshot`], pre-commits its sinks and sends it as a
//!   [`TaskMessage::Ack`]; a task that reached end of input sends [`TaskMessage::Finished`]
//!   with its final snapshot (it acknowledges every later epoch);
//! - **complete** (coordinator → sinks): once the checkpoint's metadata is durable, `completed`
//!   is raised to *n*; tasks poll it and commit their sinks' output up to *n*.
//!
//! A participant is one segment task on one shard: `shard * segments + segment`.
//!
//! Invariants: `trigger` and `completed` only increase; a task acknowledges an epoch at most
//! once, after every record before the barrier (on all of its inputs) was processed and no
//! record after it; sinks commit only epochs the coordinator completed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;

use serde::{Deserialize, Serialize};

use super::files::KeyedFile;
use super::snapshot::{KeyedRestore, KeyedSnapshot};
use crate::key::KeyGroups;

/// The epoch number sinks pre-commit at when their task reaches end of input; it is committed
/// by the job's final checkpoint (or by a restore from any checkpoint that recorded it).
pub const FINAL_EPOCH: u64 = u64::MAX;

/// What one segment task contributes to a checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TaskSnapshot {
    /// Keyed state by operator name.
    pub keyed: Vec<(String, KeyedSnapshot)>,
    /// Per-instance operator state by operator name (Flink's union list state: on restore every
    /// new instance sees the values of all old instances), e.g. an operator's watermark.
    pub operator_state: Vec<(String, Vec<u8>)>,
    /// Source split positions: (source operator name, split index, position).
    pub positions: Vec<(String, usize, Vec<u8>)>,
    /// Sink committables: (sink operator name, committable).
    pub committables: Vec<(String, Vec<u8>)>,
    /// Set when an operator could not snapshot: the epoch is declined (aborted).
    pub declined: Option<String>,
    /// Keyed state written by the task into files of the snapshot directory (large state
    /// snapshotted asynchronously), by operator name: organised by key group like `keyed`.
    pub keyed_files: Vec<(String, KeyedFile)>,
    /// The epoch is a savepoint: operators write the portable, self-contained format only
    /// (no store-native incremental parts). Set by the task before the barrier goes through.
    #[serde(skip)]
    pub savepoint: bool,
}

impl TaskSnapshot {
    /// The keyed snapshot of operator `name` (created on first use).
    pub fn keyed(&mut self, name: &str) -> &mut KeyedSnapshot {
        if let Some(i) = self.keyed.iter().position(|(n, _)| n == name) {
            return &mut self.keyed[i].1;
        }
        self.keyed.push((name.to_string(), KeyedSnapshot::default()));
        &mut self.keyed.last_mut().expect("just pushed").1
    }

    pub fn operator_state(&mut self, name: &str, bytes: Vec<u8>) {
        self.operator_state.push((name.to_string(), bytes));
    }

    /// Operator `name` cannot be checkpointed: the epoch will be aborted with `why`.
    pub fn decline(&mut self, name: &str, why: &str) {
        self.declined.get_or_insert_with(|| format!("operator {name}: {why}"));
    }

    /// Payload bytes (for figures).
    pub fn bytes(&self) -> usize {
        self.keyed.iter().map(|(_, k)| k.bytes()).sum::<usize>()
            + self.keyed_files.iter().map(|(_, f)| f.payload_bytes() as usize).sum::<usize>()
            + self.operator_state.iter().map(|(_, b)| b.len()).sum::<usize>()
            + self.positions.iter().map(|(_, _, b)| b.len()).sum::<usize>()
            + self.committables.iter().map(|(_, b)| b.len()).sum::<usize>()
    }
}

/// Messages from segment tasks to the coordinator.
#[derive(Debug)]
pub enum TaskMessage {
    /// Barrier `epoch` aligned and snapshotted.
    Ack {
        epoch: u64,
        participant: usize,
        shard: usize,
        snapshot: TaskSnapshot,
        /// Time from the first barrier of `epoch` at this task to the last (0 at sources).
        alignment_ns: u64,
        /// Time the task's operators took to snapshot (the data path stalls meanwhile).
        snapshot_ns: u64,
        /// The same in the task thread's CPU time: the snapshot's own cost, without the time
        /// the thread was preempted by others.
        snapshot_cpu_ns: u64,
        /// When the barrier was aligned at the task (its operators began to snapshot); the
        /// acknowledgement is sent once the asynchronous parts are durable too.
        aligned_at: std::time::Instant,
    },
    /// The task reached end of input; `snapshot` is its final state (positions at the end,
    /// final committables) and stands for every later epoch.
    Finished { participant: usize, shard: usize, snapshot: TaskSnapshot },
    /// A shard's executor ended (`error`: it failed or panicked).
    ShardExited { shard: usize, error: Option<String> },
    /// The task's sinks published everything up to `epoch`.
    Committed { participant: usize, epoch: u64 },
}

/// State restored from a checkpoint or savepoint, handed to operators while they are built.
#[derive(Debug, Default)]
pub struct RestoreSet {
    pub epoch: u64,
    pub description: String,
    /// The checkpoint or savepoint directory (store-native parts live below it).
    pub dir: std::path::PathBuf,
    /// Shard count of the job that wrote the checkpoint.
    pub old_shards: usize,
    pub keyed: HashMap<String, Vec<(u32, Vec<u8>)>>,
    /// Keyed state files by operator (in `dir`).
    pub keyed_files: HashMap<String, Vec<KeyedFile>>,
    /// Per-instance operator state by operator: (old shard, bytes).
    pub operator_state: HashMap<String, Vec<(usize, Vec<u8>)>>,
    pub positions: HashMap<(String, usize), Vec<u8>>,
    /// Committables by sink operator: (old shard, committable).
    pub committables: HashMap<String, Vec<(usize, Vec<u8>)>>,
}

impl RestoreSet {
    /// Build from the task snapshots of a checkpoint (`(old shard, snapshot)`).
    pub fn from_tasks(epoch: u64, description: String, old_shards: usize, tasks: Vec<(usize, TaskSnapshot)>) -> Self {
        let mut set = RestoreSet {
            epoch,
            description,
            old_shards,
            ..Default::default()
        };
        for (shard, t) in tasks {
            for (op, snap) in t.keyed {
                set.keyed.entry(op).or_default().extend(snap.groups);
            }
            for (op, file) in t.keyed_files {
                set.keyed_files.entry(op).or_default().push(file);
            }
            for (op, bytes) in t.operator_state {
                set.operator_state.entry(op).or_default().push((shard, bytes));
            }
            for (op, split, pos) in t.positions {
                set.positions.insert((op, split), pos);
            }
            for (op, c) in t.committables {
                set.committables.entry(op).or_default().push((shard, c));
            }
        }
        set
    }

    /// The keyed state of operator `name` for the key groups `shard` owns under `groups`.
    pub fn keyed_for(&self, name: &str, groups: &KeyGroups, shard: usize) -> KeyedRestore {
        let (lo, hi) = groups.range_of_shard(shard as u32);
        let inline = self
            .keyed
            .get(name)
            .map(|all| all.iter().filter(|(kg, _)| (lo..hi).contains(kg)).cloned().collect())
            .unwrap_or_default();
        let files = self
            .keyed_files
            .get(name)
            .map(|all| {
                all.iter()
                    .filter(|f| f.sections.iter().any(|s| (lo..hi).contains(&s.key_group)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        KeyedRestore::new(name, inline).with_files(self.dir.clone(), files, (lo, hi))
    }

    /// Every old instance's operator state of `name`, with the old shard it ran on.
    pub fn operator_state(&self, name: &str) -> &[(usize, Vec<u8>)] {
        self.operator_state.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The committables of sink `name` that new shard `shard` of `shards` resolves: those of
    /// old shards `s` with `s % shards == shard`.
    pub fn committables_for(&self, name: &str, shard: usize, shards: usize) -> Vec<Vec<u8>> {
        self.committables
            .get(name)
            .map(|all| all.iter().filter(|(s, _)| s % shards == shard).map(|(_, c)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// How many splits `source` had when the checkpoint was taken (`None`: no positions).
    pub fn split_count(&self, source: &str) -> Option<usize> {
        self.positions.keys().filter(|(s, _)| s == source).map(|(_, i)| i + 1).max()
    }

    pub fn position(&self, source: &str, split: usize) -> Option<&[u8]> {
        self.positions.get(&(source.to_string(), split)).map(Vec::as_slice)
    }
}

/// Shared by the coordinator and every shard of one running job.
pub struct CheckpointControl {
    attempt: String,
    trigger: AtomicU64,
    /// The newest epoch that is a savepoint (0: none), and the directory it is written to.
    savepoint: AtomicU64,
    savepoint_dir: std::sync::Mutex<Option<(u64, std::path::PathBuf)>>,
    /// Root of the job's checkpoints: `chk-<epoch>` directories are created below it, and
    /// tasks export store-native checkpoint parts into them before acknowledging.
    pub dir: std::path::PathBuf,
    completed: AtomicU64,
    cancelled: AtomicBool,
    messages: Sender<TaskMessage>,
    /// Number of segments per shard (participants = shards × segments).
    pub segments: usize,
    pub restore: Option<RestoreSet>,
}

impl CheckpointControl {
    pub fn new(segments: usize, messages: Sender<TaskMessage>, restore: Option<RestoreSet>, dir: std::path::PathBuf) -> Self {
        let restored = restore.as_ref().map_or(0, |r| r.epoch);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Self {
            attempt: format!("{:x}", nanos as u64 ^ ((std::process::id() as u64) << 48)),
            trigger: AtomicU64::new(restored),
            savepoint: AtomicU64::new(0),
            savepoint_dir: std::sync::Mutex::new(None),
            dir,
            completed: AtomicU64::new(restored),
            cancelled: AtomicBool::new(false),
            messages,
            segments,
            restore,
        }
    }

    /// The newest epoch sources should inject (0: none yet).
    #[inline]
    pub fn triggered(&self) -> u64 {
        self.trigger.load(Ordering::Acquire)
    }

    pub fn trigger(&self, epoch: u64) {
        let prev = self.trigger.fetch_max(epoch, Ordering::AcqRel);
        assert!(prev <= epoch, "checkpoint epochs only increase ({prev} then {epoch})");
    }

    /// Epoch `epoch` (about to be triggered) is a savepoint, written to `dir`.
    pub fn mark_savepoint(&self, epoch: u64, dir: std::path::PathBuf) {
        *self.savepoint_dir.lock().expect("savepoint dir") = Some((epoch, dir));
        self.savepoint.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Is `epoch` a savepoint? (Read by tasks when its barrier arrives: marked before the
    /// trigger, so every task sees it.)
    pub fn is_savepoint(&self, epoch: u64) -> bool {
        self.savepoint.load(Ordering::Acquire) == epoch
    }

    /// A fresh snapshot for barrier `epoch`.
    pub fn snapshot_for(&self, epoch: u64) -> TaskSnapshot {
        TaskSnapshot {
            savepoint: self.is_savepoint(epoch),
            ..TaskSnapshot::default()
        }
    }

    /// The directory checkpoint `epoch` is written to (savepoints are written elsewhere and
    /// hold no store-native parts).
    pub fn epoch_dir(&self, epoch: u64) -> std::path::PathBuf {
        self.dir.join(format!("chk-{epoch}"))
    }

    /// The directory snapshot `epoch` is written to: the savepoint's directory if `epoch` is a
    /// savepoint, else the checkpoint's. The coordinator creates it when it triggers the epoch
    /// (and deletes it when the epoch is aborted): tasks write keyed state files into it.
    pub fn snapshot_dir(&self, epoch: u64) -> std::path::PathBuf {
        match &*self.savepoint_dir.lock().expect("savepoint dir") {
            Some((e, dir)) if *e == epoch => dir.clone(),
            _ => self.epoch_dir(epoch),
        }
    }

    /// The newest epoch whose checkpoint is complete.
    #[inline]
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    pub fn complete(&self, epoch: u64) {
        self.completed.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Send a message to the coordinator. Never blocks (the channel is unbounded, but holds at
    /// most one message per participant per pending epoch). A gone coordinator means the job is
    /// shutting down; the message is dropped.
    pub fn send(&self, message: TaskMessage) {
        let _ = self.messages.send(message);
    }

    /// A token unique to this run of the job (a process, or one restart within it): sinks put
    /// it in the names of files they create, so no attempt overwrites another's output.
    pub fn attempt_token(&self) -> String {
        self.attempt.clone()
    }

    /// The job failed somewhere: tasks waiting for a checkpoint give up.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
    }

    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub fn participant(&self, shard: usize, segment: usize) -> usize {
        shard * self.segments + segment
    }
}

/// User commands to a running job (from the control API): savepoints and stop-with-savepoint.
/// Lives in the job's [`crate::shard::MetricsRegistry`], so it outlives restarts.
#[derive(Debug, Default)]
pub struct JobCommands {
    requested: AtomicU64,
    stop: AtomicBool,
    results: std::sync::Mutex<Vec<SavepointResult>>,
}

/// What became of one savepoint request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SavepointResult {
    /// Request number (from 1).
    pub request: u64,
    /// The savepoint directory, or why it failed.
    pub outcome: Result<String, String>,
}

impl JobCommands {
    /// Ask for a savepoint (and, with `stop`, stop the job once it is complete). Returns the
    /// request number to look for in [`JobCommands::results`].
    pub fn request_savepoint(&self, stop: bool) -> u64 {
        if stop {
            self.stop.store(true, Ordering::Release);
        }
        self.requested.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn record(&self, result: SavepointResult) {
        let mut r = self.results.lock().expect("savepoint results");
        if r.len() == 64 {
            r.remove(0);
        }
        r.push(result);
    }

    /// The outcomes of recent requests (at most 64), oldest first.
    pub fn results(&self) -> Vec<SavepointResult> {
        self.results.lock().expect("savepoint results").clone()
    }
}

/// The watermark operator `name` had when `restore` was taken: this shard's own value when the
/// shard count is unchanged, else the lowest of all old instances (never judge a record late
/// that the old run would have accepted).
pub fn restored_watermark(restore: &RestoreSet, name: &str, shard: usize, shards: usize) -> crate::error::Result<Option<i64>> {
    use super::snapshot::decode;
    let states = restore.operator_state(name);
    if restore.old_shards == shards {
        if let Some((_, bytes)) = states.iter().find(|(s, _)| *s == shard) {
            return decode::<i64>(bytes, "operator watermark").map(Some);
        }
    }
    let all = states
        .iter()
        .map(|(_, b)| decode::<i64>(b, "operator watermark"))
        .collect::<crate::error::Result<Vec<_>>>()?;
    Ok(all.into_iter().min())
}
