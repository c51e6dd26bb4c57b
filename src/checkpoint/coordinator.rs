//! The checkpoint coordinator's driver: runs the pure [`Coordinator`] state machine on the
//! job's driver thread (never on a shard core), carries out its actions — trigger through
//! [`CheckpointControl`], write the checkpoint files, raise the completed epoch, discard —
//! and reports figures.
//!
//! Invariants: a checkpoint's files are written and durable before `completed` is raised (so a
//! sink never commits output of a checkpoint that a crash could lose); an epoch's files hold
//! one snapshot per participant — its acknowledgement, or the final snapshot of a finished
//! task; when a shard fails, no new epoch is triggered and waiting tasks are cancelled.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::files::{write_snapshot, CheckpointMeta, CheckpointStore, SnapshotKind, FORMAT_VERSION};
use super::protocol::{Action, CheckpointSettings, Coordinator};
use super::runtime::{CheckpointControl, SavepointResult, TaskMessage, TaskSnapshot, FINAL_EPOCH};
use crate::error::Result;
use crate::time::now_ms;

/// What a job's checkpoints did (in [`crate::shard::runtime::JobReport`]).
#[derive(Clone, Debug, Default)]
pub struct CheckpointFigures {
    pub completed: u64,
    pub aborted: u64,
    /// Checkpoints whose files could not be written (e.g. disk full); the job went on.
    pub failed_writes: u64,
    /// Trigger → durable metadata of the most recent completed checkpoints (ms; at most
    /// [`MAX_DURATIONS`], oldest dropped first).
    pub durations_ms: Vec<u64>,
    /// Where each of those durations went (same order): see [`CheckpointPhases`].
    pub phases: Vec<CheckpointPhases>,
    /// State bytes of the last completed checkpoint.
    pub last_bytes: u64,
    /// Longest barrier alignment seen at any task (ms).
    pub max_alignment_ms: f64,
    /// Longest synchronous snapshot at any task (ms): the data path's stall.
    pub max_snapshot_ms: f64,
    /// The same step's longest CPU time on its thread (ms): the stall the snapshot itself
    /// causes, without preemption by other threads of a loaded machine.
    pub max_snapshot_cpu_ms: f64,
    /// The newest complete checkpoint directory.
    pub latest: Option<String>,
    /// The checkpoint or savepoint this attempt restored from.
    pub restored_from: Option<String>,
    /// Messages about aborted or failed checkpoints, newest last (bounded).
    pub problems: Vec<String>,
    /// The job was stopped with this savepoint (stop-with-savepoint).
    pub stopped_with_savepoint: Option<String>,
}

/// The phases of one completed checkpoint (ms), each the slowest participant's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CheckpointPhases {
    /// Trigger → the barrier aligned at the last task: the barrier's way through the data
    /// in flight (rings full under backpressure) and the alignment.
    pub barrier_ms: u64,
    /// Aligned → acknowledged, longest over the tasks: the synchronous snapshot plus the
    /// asynchronous parts (memory state written by the snapshot thread, LSM store flushed and
    /// exported).
    pub snapshot_ms: u64,
    /// Last acknowledgement → durable metadata: the coordinator's state file and metadata.
    pub finish_ms: u64,
}

const MAX_PROBLEMS: usize = 32;
/// Durations kept for percentiles (a long-running job completes a checkpoint every interval).
pub const MAX_DURATIONS: usize = 4096;

impl CheckpointFigures {
    fn problem(&mut self, message: String) {
        tracing::warn!("checkpoint: {message}");
        if self.problems.len() == MAX_PROBLEMS {
            self.problems.remove(0);
        }
        self.problems.push(message);
    }

    /// Duration percentile (ms) over completed checkpoints.
    pub fn duration_percentile(&self, q: f64) -> Option<u64> {
        let mut d = self.durations_ms.clone();
        if d.is_empty() {
            return None;
        }
        d.sort_unstable();
        let i = ((d.len() as f64 - 1.0) * q).round() as usize;
        Some(d[i])
    }
}

/// Everything the driver loop needs.
pub struct CoordinatorDriver {
    pub control: Arc<CheckpointControl>,
    pub messages: Receiver<TaskMessage>,
    pub store: CheckpointStore,
    pub settings: CheckpointSettings,
    pub shards: usize,
    pub max_key_groups: u32,
    pub job: String,
    pub restored_epoch: Option<u64>,
    /// Savepoint requests from the control API.
    pub registry: Arc<crate::shard::MetricsRegistry>,
}

/// How long a stop-with-savepoint waits for sinks to publish the savepoint's output.
const STOP_COMMIT_WAIT: Duration = Duration::from_secs(10);

impl CoordinatorDriver {
    /// Run until every shard exited; returns the figures and the first shard error.
    pub fn run(self) -> Result<(CheckpointFigures, Option<String>)> {
        let participants = self.shards * self.control.segments;
        let mut coordinator = Coordinator::new(self.settings.clone(), participants, self.restored_epoch);
        let mut figures = CheckpointFigures::default();
        let mut acks: BTreeMap<u64, Vec<(usize, usize, TaskSnapshot)>> = BTreeMap::new();
        // Per pending epoch: latest alignment, longest aligned → acknowledged, latest ack.
        let mut timing: BTreeMap<u64, (Instant, Duration, Instant)> = BTreeMap::new();
        let mut finished: Vec<Option<(usize, TaskSnapshot)>> = (0..participants).map(|_| None).collect();
        let mut started: BTreeMap<u64, Instant> = BTreeMap::new();
        let mut exited = 0usize;
        let mut failure: Option<String> = None;
        let mut final_epoch: Option<u64> = None;
        let commands = &self.registry.commands;
        // Live figures for the control plane (figures go to the report at the end).
        let live = &self.registry.checkpoints;
        // Requests survive restarts: every request gets exactly one result.
        let mut served = commands.results().last().map_or(0, |r| r.request);
        // Savepoint epochs in flight → request number.
        let mut savepoints: BTreeMap<u64, u64> = BTreeMap::new();
        // Stop-with-savepoint: (savepoint path, epoch, participants whose sinks must commit, deadline).
        let mut stopping: Option<(String, u64, Vec<bool>, Instant)> = None;
        let mut committed: Vec<u64> = vec![0; participants];
        // The directory of every triggered epoch (created at the trigger: tasks write keyed
        // state files into it).
        let mut dirs: BTreeMap<u64, std::path::PathBuf> = BTreeMap::new();
        let clock = Instant::now();
        let tick = Duration::from_millis(self.settings.interval_ms.clamp(1, 10));
        self.store.clean(&[], u64::MAX)?;
        while exited < self.shards {
            let now = clock.elapsed().as_millis() as u64;
            let mut actions = Vec::new();
            match self.messages.recv_timeout(tick) {
                Ok(TaskMessage::Ack {
                    epoch,
                    participant,
                    shard,
                    snapshot,
                    alignment_ns,
                    snapshot_ns,
                    snapshot_cpu_ns,
                    aligned_at,
                }) => {
                    let acked_at = Instant::now();
                    let t = timing.entry(epoch).or_insert((aligned_at, Duration::ZERO, acked_at));
                    t.0 = t.0.max(aligned_at);
                    t.1 = t.1.max(acked_at.saturating_duration_since(aligned_at));
                    t.2 = t.2.max(acked_at);
                    figures.max_alignment_ms = figures.max_alignment_ms.max(alignment_ns as f64 / 1e6);
                    figures.max_snapshot_ms = figures.max_snapshot_ms.max(snapshot_ns as f64 / 1e6);
                    figures.max_snapshot_cpu_ms = figures.max_snapshot_cpu_ms.max(snapshot_cpu_ns as f64 / 1e6);
                    live.acknowledged(epoch, alignment_ns, snapshot_ns);
                    if coordinator.pending_epochs().contains(&epoch) {
                        if let Some(why) = &snapshot.declined {
                            actions.extend(coordinator.decline(epoch, participant, why, now));
                        } else {
                            acks.entry(epoch).or_default().push((participant, shard, snapshot));
                            actions.extend(coordinator.acknowledge(epoch, participant, now));
                        }
                    }
                }
                Ok(TaskMessage::Finished { participant, shard, snapshot }) => {
                    finished[participant] = Some((shard, snapshot));
                    actions.extend(coordinator.finish(participant, now));
                }
                Ok(TaskMessage::Committed { participant, epoch }) => {
                    committed[participant] = committed[participant].max(epoch);
                }
                Ok(TaskMessage::ShardExited { shard, error }) => {
                    exited += 1;
                    if let Some(e) = error {
                        failure.get_or_insert(format!("shard {shard}: {e}"));
                        self.control.cancel();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Some((path, epoch, must_commit, deadline)) = &stopping {
                let all_committed = must_commit.iter().enumerate().all(|(p, m)| !m || committed[p] >= *epoch);
                if all_committed || Instant::now() >= *deadline {
                    if !all_committed {
                        figures.problem(format!(
                            "stop: sinks did not confirm publishing savepoint {path} in time; a restore from it publishes the rest"
                        ));
                    }
                    figures.stopped_with_savepoint = Some(path.clone());
                    self.control.cancel();
                    stopping = None;
                }
            }
            if failure.is_none() && savepoints.is_empty() && figures.stopped_with_savepoint.is_none() && stopping.is_none() && commands.requested() > served {
                for action in coordinator.trigger_now(now) {
                    if let Action::Trigger { epoch } = action {
                        served += 1;
                        savepoints.insert(epoch, served);
                    }
                    actions.push(action);
                }
            }
            if failure.is_none() {
                actions.extend(coordinator.tick(now));
                if coordinator.all_finished() && final_epoch.is_none() {
                    let final_actions = coordinator.complete_final(now);
                    final_epoch = final_actions.iter().find_map(|a| match a {
                        Action::Complete { epoch, .. } => Some(*epoch),
                        _ => None,
                    });
                    started.insert(final_epoch.expect("the final checkpoint completes at once"), Instant::now());
                    actions.extend(final_actions);
                }
            }
            for action in actions {
                match action {
                    Action::Trigger { epoch } => {
                        started.insert(epoch, Instant::now());
                        live.triggered(epoch, savepoints.contains_key(&epoch));
                        let dir = if savepoints.contains_key(&epoch) {
                            let dir = self.store.savepoint_dir(epoch, now_ms());
                            self.control.mark_savepoint(epoch, dir.clone());
                            dir
                        } else {
                            self.store.epoch_dir(epoch)
                        };
                        // A directory that cannot be created fails the epoch's snapshot writers,
                        // which decline it: the epoch aborts and the job goes on.
                        if let Err(e) = std::fs::create_dir_all(&dir) {
                            figures.problem(format!("creating {}: {e}", dir.display()));
                        }
                        dirs.insert(epoch, dir);
                        self.control.trigger(epoch);
                    }
                    Action::Complete { epoch, discard } => {
                        let is_final = final_epoch == Some(epoch);
                        let savepoint = savepoints.remove(&epoch);
                        let mut tasks: Vec<(usize, TaskSnapshot)> = Vec::with_capacity(participants);
                        let acked = acks.remove(&epoch).unwrap_or_default();
                        let mut covered = vec![false; participants];
                        let mut has_committables = vec![false; participants];
                        for (p, shard, snap) in acked {
                            covered[p] = true;
                            has_committables[p] = !snap.committables.is_empty();
                            tasks.push((shard, snap));
                        }
                        for (p, f) in finished.iter().enumerate() {
                            if let (false, Some((shard, snap))) = (covered[p], f) {
                                tasks.push((*shard, snap.clone()));
                            }
                        }
                        let meta = CheckpointMeta {
                            format_version: FORMAT_VERSION,
                            kind: if savepoint.is_some() {
                                SnapshotKind::Savepoint
                            } else {
                                SnapshotKind::Checkpoint
                            },
                            epoch,
                            job: self.job.clone(),
                            shards: self.shards,
                            max_key_groups: self.max_key_groups,
                            finished: is_final,
                            created_ms: now_ms(),
                            state_bytes: 0,
                            state_crc: 0,
                            keyed_operators: Vec::new(),
                            sources: Vec::new(),
                            keyed_file_bytes: 0,
                            sinks: Vec::new(),
                        };
                        let dir = match (dirs.remove(&epoch), savepoint) {
                            (Some(dir), _) => dir,
                            (None, Some(_)) => self.store.savepoint_dir(epoch, now_ms()),
                            (None, None) => self.store.epoch_dir(epoch),
                        };
                        match write_snapshot(&dir, meta, tasks) {
                            Ok(meta) => {
                                super::crash_point("metadata-written");
                                if let Some(request) = savepoint {
                                    let path = dir.display().to_string();
                                    tracing::info!(savepoint = %path, "savepoint complete");
                                    commands.record(SavepointResult {
                                        request,
                                        outcome: Ok(path.clone()),
                                    });
                                    if commands.stop_requested() {
                                        stopping = Some((path, epoch, has_committables.clone(), Instant::now() + STOP_COMMIT_WAIT));
                                    }
                                }
                                self.control.complete(if is_final { FINAL_EPOCH } else { epoch });
                                figures.completed += 1;
                                figures.last_bytes = meta.total_bytes();
                                figures.latest = Some(dir.display().to_string());
                                live.completed(epoch, meta.total_bytes(), &dir.display().to_string());
                                if let Some(t) = started.remove(&epoch) {
                                    if figures.durations_ms.len() == MAX_DURATIONS {
                                        figures.durations_ms.remove(0);
                                        figures.phases.remove(0);
                                    }
                                    figures.durations_ms.push(t.elapsed().as_millis() as u64);
                                    let phases = match timing.get(&epoch) {
                                        Some((aligned, snapshot, acked)) => CheckpointPhases {
                                            barrier_ms: aligned.saturating_duration_since(t).as_millis() as u64,
                                            snapshot_ms: snapshot.as_millis() as u64,
                                            finish_ms: acked.elapsed().as_millis() as u64,
                                        },
                                        None => CheckpointPhases::default(),
                                    };
                                    figures.phases.push(phases);
                                }
                                if let Err(e) = self.store.clean(&discard, epoch) {
                                    figures.problem(format!("cleaning old checkpoints: {e}"));
                                }
                            }
                            Err(e) => {
                                if let Some(request) = savepoint {
                                    commands.record(SavepointResult {
                                        request,
                                        outcome: Err(e.to_string()),
                                    });
                                }
                                figures.failed_writes += 1;
                                live.failed(epoch, &e.to_string());
                                figures.problem(format!("checkpoint {epoch} could not be written: {e}"));
                                let _ = CheckpointStore::remove(&dir);
                                if is_final {
                                    // Nothing else will commit the sinks' last output: fail the job
                                    // (a restore commits it from the previous checkpoint's state).
                                    failure.get_or_insert(format!("the final checkpoint could not be written: {e}"));
                                    self.control.cancel();
                                }
                            }
                        }
                        started.retain(|e, _| *e > epoch);
                        timing.retain(|e, _| *e > epoch);
                    }
                    Action::Abort { epoch, reason } => {
                        if let Some(request) = savepoints.remove(&epoch) {
                            commands.record(SavepointResult {
                                request,
                                outcome: Err(format!("aborted: {reason:?}")),
                            });
                        }
                        acks.remove(&epoch);
                        started.remove(&epoch);
                        timing.remove(&epoch);
                        figures.aborted += 1;
                        live.aborted(epoch, &format!("{reason:?}"));
                        figures.problem(format!("checkpoint {epoch} aborted: {reason:?}"));
                        // Its keyed state files go with it (a task still writing one finds the
                        // directory gone and gives up).
                        match dirs.remove(&epoch) {
                            Some(dir) => {
                                let _ = CheckpointStore::remove(&dir);
                            }
                            None => {
                                let _ = self.store.discard(epoch);
                            }
                        }
                    }
                }
            }
        }
        Ok((figures, failure))
    }
}
