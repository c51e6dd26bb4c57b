//! The checkpoint coordinator as a pure state machine. Feed it time (`tick`) and
//! acknowledgements; it answers with [`Action`]s for its driver to carry out. Settings carry
//! Flink's names (`execution.checkpointing.*`).
//!
//! Invariants: see the module docs of [`crate::checkpoint`]; each is asserted on every
//! transition by [`Coordinator::check_invariants`].

use std::collections::{BTreeMap, VecDeque};

/// Flink's checkpointing settings, with Flink's defaults where Flink has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// `execution.checkpointing.interval` (ms).
    pub interval_ms: u64,
    /// `execution.checkpointing.timeout` (ms; Flink: 10 min).
    pub timeout_ms: u64,
    /// `execution.checkpointing.min-pause` (ms between the end of one and the start of the next).
    pub min_pause_ms: u64,
    /// `execution.checkpointing.max-concurrent-checkpoints` (Flink: 1).
    pub max_concurrent: usize,
    /// `state.checkpoints.num-retained` (Flink: 1).
    pub retained: usize,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            timeout_ms: 600_000,
            min_pause_ms: 0,
            max_concurrent: 1,
            retained: 1,
        }
    }
}

impl CheckpointSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_ms == 0 {
            return Err("execution.checkpointing.interval must be > 0".into());
        }
        if self.timeout_ms == 0 {
            return Err("execution.checkpointing.timeout must be > 0".into());
        }
        if self.max_concurrent == 0 {
            return Err("execution.checkpointing.max-concurrent-checkpoints must be >= 1".into());
        }
        if self.retained == 0 {
            return Err("state.checkpoints.num-retained must be >= 1".into());
        }
        Ok(())
    }
}

/// Why an epoch was aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// Not every participant acknowledged within `timeout_ms`.
    Timeout,
    /// A participant declined (e.g. its snapshot failed), with its message.
    Declined { participant: usize, message: String },
    /// A later epoch completed first.
    Subsumed { by: u64 },
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Inject barrier `epoch` at every source split.
    Trigger { epoch: u64 },
    /// Every participant acknowledged: write the manifest for `epoch` atomically, then tell the
    /// two-phase-commit sinks to commit it. `discard` lists retained epochs that fell out of
    /// the retention window and whose files may be deleted.
    Complete { epoch: u64, discard: Vec<u64> },
    /// Forget `epoch`: sinks abort its pre-committed output, snapshots are deleted.
    Abort { epoch: u64, reason: AbortReason },
}

#[derive(Clone, Debug)]
struct Pending {
    started_ms: u64,
    acked: Vec<bool>,
    remaining: usize,
}

/// Counters the control plane publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoordinatorFigures {
    pub triggered: u64,
    pub completed: u64,
    pub aborted: u64,
    pub timed_out: u64,
}

/// The checkpoint coordinator.
#[derive(Clone, Debug)]
pub struct Coordinator {
    settings: CheckpointSettings,
    participants: usize,
    next_epoch: u64,
    pending: BTreeMap<u64, Pending>,
    last_completed: Option<u64>,
    last_finished_ms: Option<u64>,
    last_triggered_ms: Option<u64>,
    retained: VecDeque<u64>,
    figures: CoordinatorFigures,
    /// Participants that reached end of input: they acknowledge every epoch from then on.
    finished: Vec<bool>,
}

impl Coordinator {
    /// A coordinator for `participants` acknowledgers (shards + two-phase-commit sinks). After a
    /// restore from epoch `restored`, numbering continues above it.
    pub fn new(settings: CheckpointSettings, participants: usize, restored: Option<u64>) -> Self {
        assert!(participants > 0, "a checkpoint needs at least one participant");
        settings.validate().expect("checkpoint settings validated by the caller");
        Self {
            settings,
            participants,
            next_epoch: restored.map_or(1, |e| e + 1),
            pending: BTreeMap::new(),
            last_completed: restored,
            last_finished_ms: None,
            last_triggered_ms: None,
            retained: restored.into_iter().collect(),
            figures: CoordinatorFigures::default(),
            finished: vec![false; participants],
        }
    }

    /// True once every participant reached end of input.
    pub fn all_finished(&self) -> bool {
        self.finished.iter().all(|f| *f)
    }

    /// Participant `who` reached end of input with everything it will ever output snapshotted
    /// or pre-committed: it acknowledges every pending and future epoch (Flink's checkpoints
    /// after tasks finished).
    pub fn finish(&mut self, who: usize, now_ms: u64) -> Vec<Action> {
        assert!(who < self.participants, "participant {who} out of range");
        self.finished[who] = true;
        let mut actions = Vec::new();
        for epoch in self.pending_epochs() {
            actions.extend(self.acknowledge(epoch, who, now_ms));
        }
        actions
    }

    /// The final checkpoint of a bounded job: every participant finished, so an epoch is
    /// opened and completed at once (it publishes the sinks' last pre-committed output).
    pub fn complete_final(&mut self, now_ms: u64) -> Vec<Action> {
        assert!(self.all_finished(), "the final checkpoint needs every participant finished");
        assert!(self.pending.is_empty(), "finished participants acknowledge every pending epoch");
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.figures.triggered += 1;
        self.pending.insert(
            epoch,
            Pending {
                started_ms: now_ms,
                acked: vec![false; self.participants],
                remaining: self.participants,
            },
        );
        let mut actions = Vec::new();
        for who in 0..self.participants {
            actions.extend(self.acknowledge(epoch, who, now_ms));
        }
        actions
    }

    pub fn last_completed(&self) -> Option<u64> {
        self.last_completed
    }

    pub fn pending_epochs(&self) -> Vec<u64> {
        self.pending.keys().copied().collect()
    }

    pub fn figures(&self) -> CoordinatorFigures {
        self.figures
    }

    /// Time passed: time out old epochs, open a new one when it is due.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.started_ms) >= self.settings.timeout_ms)
            .map(|(e, _)| *e)
            .collect();
        for epoch in expired {
            self.pending.remove(&epoch);
            self.figures.aborted += 1;
            self.figures.timed_out += 1;
            self.last_finished_ms = Some(now_ms);
            actions.push(Action::Abort {
                epoch,
                reason: AbortReason::Timeout,
            });
        }
        let interval_due = self.last_triggered_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.settings.interval_ms);
        let pause_done = self.last_finished_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.settings.min_pause_ms);
        let room = self.pending.len() < self.settings.max_concurrent;
        // Flink: with a min pause, no checkpoint starts while another is in flight.
        let pause_blocks = self.settings.min_pause_ms > 0 && !self.pending.is_empty();
        if interval_due && pause_done && room && !pause_blocks && !self.all_finished() {
            actions.push(Action::Trigger {
                epoch: self.open_epoch(now_ms),
            });
        }
        self.check_invariants();
        actions
    }

    /// Open an epoch now if there is room, ignoring the interval (a savepoint request).
    pub fn trigger_now(&mut self, now_ms: u64) -> Vec<Action> {
        if self.pending.len() >= self.settings.max_concurrent || self.all_finished() {
            return Vec::new();
        }
        let epoch = self.open_epoch(now_ms);
        self.check_invariants();
        vec![Action::Trigger { epoch }]
    }

    /// Open the next epoch: finished participants count as acknowledged from the start.
    fn open_epoch(&mut self, now_ms: u64) -> u64 {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        self.pending.insert(
            epoch,
            Pending {
                started_ms: now_ms,
                acked: self.finished.clone(),
                remaining: self.finished.iter().filter(|f| !**f).count(),
            },
        );
        self.last_triggered_ms = Some(now_ms);
        self.figures.triggered += 1;
        epoch
    }

    /// Participant `who` finished its part of `epoch` (snapshot written / output pre-committed).
    /// Acknowledgements of unknown (aborted, subsumed) epochs are ignored.
    pub fn acknowledge(&mut self, epoch: u64, who: usize, now_ms: u64) -> Vec<Action> {
        assert!(who < self.participants, "participant {who} out of range");
        let mut actions = Vec::new();
        let Some(p) = self.pending.get_mut(&epoch) else { return actions };
        if !p.acked[who] {
            p.acked[who] = true;
            p.remaining -= 1;
        }
        if p.remaining == 0 {
            self.pending.remove(&epoch);
            // Subsume every older pending epoch.
            let older: Vec<u64> = self.pending.range(..epoch).map(|(e, _)| *e).collect();
            for e in older {
                self.pending.remove(&e);
                self.figures.aborted += 1;
                actions.push(Action::Abort {
                    epoch: e,
                    reason: AbortReason::Subsumed { by: epoch },
                });
            }
            assert!(self.last_completed.is_none_or(|c| c < epoch), "epochs complete in increasing order");
            self.last_completed = Some(epoch);
            self.last_finished_ms = Some(now_ms);
            self.figures.completed += 1;
            self.retained.push_back(epoch);
            let mut discard = Vec::new();
            while self.retained.len() > self.settings.retained {
                discard.push(self.retained.pop_front().expect("retained"));
            }
            actions.push(Action::Complete { epoch, discard });
        }
        self.check_invariants();
        actions
    }

    /// Participant `who` could not take part in `epoch`: abort it (the job goes on).
    pub fn decline(&mut self, epoch: u64, who: usize, message: &str, now_ms: u64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.pending.remove(&epoch).is_some() {
            self.figures.aborted += 1;
            self.last_finished_ms = Some(now_ms);
            actions.push(Action::Abort {
                epoch,
                reason: AbortReason::Declined {
                    participant: who,
                    message: message.to_string(),
                },
            });
        }
        self.check_invariants();
        actions
    }

    /// Assert the protocol's invariants.
    pub fn check_invariants(&self) {
        assert!(self.pending.len() <= self.settings.max_concurrent, "too many concurrent checkpoints");
        if let Some(last) = self.last_completed {
            assert!(self.pending.keys().all(|e| *e > last), "a pending epoch at or below the last completed one");
            assert!(self.next_epoch > last);
        }
        assert!(self.pending.keys().all(|e| *e < self.next_epoch));
        assert!(self.retained.len() <= self.settings.retained);
        assert!(self.retained.iter().zip(self.retained.iter().skip(1)).all(|(a, b)| a < b));
        for p in self.pending.values() {
            assert_eq!(p.remaining, p.acked.iter().filter(|a| !**a).count());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> CheckpointSettings {
        CheckpointSettings {
            interval_ms: 100,
            timeout_ms: 1_000,
            min_pause_ms: 0,
            max_concurrent: 2,
            retained: 2,
        }
    }

    #[test]
    fn epoch_completes_when_all_acknowledge() {
        let mut c = Coordinator::new(settings(), 3, None);
        assert_eq!(c.tick(0), vec![Action::Trigger { epoch: 1 }]);
        assert!(c.tick(50).is_empty(), "interval not reached");
        assert!(c.acknowledge(1, 0, 60).is_empty());
        assert!(c.acknowledge(1, 0, 61).is_empty(), "duplicate ack counts once");
        assert!(c.acknowledge(1, 2, 62).is_empty());
        assert_eq!(c.acknowledge(1, 1, 63), vec![Action::Complete { epoch: 1, discard: vec![] }]);
        assert_eq!(c.last_completed(), Some(1));
    }

    #[test]
    fn timeout_aborts_and_the_job_goes_on() {
        let mut c = Coordinator::new(
            CheckpointSettings {
                max_concurrent: 1,
                ..settings()
            },
            2,
            None,
        );
        c.tick(0);
        c.acknowledge(1, 0, 10);
        assert!(c.tick(500).is_empty(), "max concurrent 1: no second epoch while 1 is pending");
        let actions = c.tick(1_000);
        assert_eq!(
            actions[0],
            Action::Abort {
                epoch: 1,
                reason: AbortReason::Timeout
            }
        );
        assert_eq!(actions[1], Action::Trigger { epoch: 2 });
        assert!(c.acknowledge(1, 1, 1_001).is_empty(), "a late ack of an aborted epoch has no effect");
        assert_eq!(c.figures().timed_out, 1);
    }

    #[test]
    fn later_completion_subsumes_and_retention_discards() {
        let mut c = Coordinator::new(settings(), 1, Some(7));
        assert_eq!(c.tick(0), vec![Action::Trigger { epoch: 8 }], "numbering continues after a restore");
        assert_eq!(c.tick(100), vec![Action::Trigger { epoch: 9 }]);
        let actions = c.acknowledge(9, 0, 150);
        assert_eq!(
            actions[0],
            Action::Abort {
                epoch: 8,
                reason: AbortReason::Subsumed { by: 9 }
            }
        );
        assert_eq!(actions[1], Action::Complete { epoch: 9, discard: vec![] });
        c.tick(200);
        assert_eq!(c.acknowledge(10, 0, 210), vec![Action::Complete { epoch: 10, discard: vec![7] }]);
    }

    #[test]
    fn finished_participants_acknowledge_every_epoch_and_a_final_one_completes() {
        let mut c = Coordinator::new(settings(), 2, None);
        c.tick(0);
        c.acknowledge(1, 0, 5);
        assert_eq!(c.finish(1, 6), vec![Action::Complete { epoch: 1, discard: vec![] }]);
        assert_eq!(c.tick(100), vec![Action::Trigger { epoch: 2 }]);
        assert_eq!(c.acknowledge(2, 0, 101), vec![Action::Complete { epoch: 2, discard: vec![] }]);
        assert!(c.finish(0, 150).is_empty());
        assert!(c.tick(1_000).is_empty(), "nothing left to checkpoint once all finished");
        assert_eq!(c.complete_final(1_001), vec![Action::Complete { epoch: 3, discard: vec![1] }]);
    }

    #[test]
    fn min_pause_spaces_checkpoints() {
        let mut c = Coordinator::new(
            CheckpointSettings {
                min_pause_ms: 300,
                ..settings()
            },
            1,
            None,
        );
        c.tick(0);
        c.acknowledge(1, 0, 250);
        assert!(c.tick(300).is_empty(), "only 50 ms since the last one finished");
        assert_eq!(c.tick(550), vec![Action::Trigger { epoch: 2 }]);
    }

    #[test]
    fn random_schedules_keep_the_invariants() {
        // A seeded random walk over ticks, acks, declines and duplicate/stale acks.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for run in 0..200 {
            let participants = 1 + (next() % 4) as usize;
            let s = CheckpointSettings {
                interval_ms: 1 + next() % 50,
                timeout_ms: 1 + next() % 200,
                min_pause_ms: next() % 3 * 10,
                max_concurrent: 1 + (next() % 3) as usize,
                retained: 1 + (next() % 3) as usize,
            };
            let mut c = Coordinator::new(s, participants, None);
            let mut now = 0u64;
            let mut completed = Vec::new();
            let mut aborted = std::collections::HashSet::new();
            for _ in 0..500 {
                now += next() % 20;
                let actions = match next() % 4 {
                    0 => c.tick(now),
                    1 | 2 => {
                        let epoch = 1 + next() % (c.next_epoch + 1);
                        c.acknowledge(epoch, (next() % participants as u64) as usize, now)
                    }
                    _ => {
                        let epoch = 1 + next() % (c.next_epoch + 1);
                        c.decline(epoch, 0, "snapshot failed", now)
                    }
                };
                for a in actions {
                    match a {
                        Action::Complete { epoch, .. } => {
                            assert!(!aborted.contains(&epoch), "run {run}: aborted epoch {epoch} completed");
                            assert!(completed.last().is_none_or(|l| *l < epoch), "run {run}: completions out of order");
                            completed.push(epoch);
                        }
                        Action::Abort { epoch, .. } => {
                            assert!(!completed.contains(&epoch), "run {run}: completed epoch {epoch} aborted");
                            aborted.insert(epoch);
                        }
                        Action::Trigger { .. } => {}
                    }
                }
            }
        }
    }
}
