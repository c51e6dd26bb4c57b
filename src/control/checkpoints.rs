//! Live checkpoint figures of a running job, for `/metrics`, `/api/status` and the dashboard's
//! checkpoint history: the coordinator's driver reports every trigger, acknowledgement,
//! completion, abort and failed write here as it happens (the final [`JobReport`] still gets
//! its own `CheckpointFigures`).
//!
//! Invariants: only the job's driver thread writes (never a shard), the control plane reads;
//! one short mutex section per event, nothing on the data path; the history is bounded
//! ([`HISTORY`] entries, oldest dropped first) and totals are monotonic over the job's life,
//! restarts included (Prometheus counters).
//!
//! [`JobReport`]: crate::shard::runtime::JobReport

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// Checkpoints kept in the history.
pub const HISTORY: usize = 32;

/// What became of one checkpoint (or savepoint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Aborted,
    /// Every task acknowledged but the files could not be written.
    Failed,
}

/// One checkpoint in the history.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointEntry {
    pub epoch: u64,
    pub savepoint: bool,
    pub status: CheckpointStatus,
    /// Wall-clock trigger time (epoch ms).
    pub triggered_ms: i64,
    /// Trigger → durable metadata (or → abort), ms; `None` while in progress.
    pub duration_ms: Option<u64>,
    /// State bytes written (completed only).
    pub bytes: u64,
    /// Longest barrier alignment among the acknowledging tasks (ms).
    pub alignment_ms: f64,
    /// Longest synchronous snapshot among the acknowledging tasks (ms): the data path's stall.
    pub snapshot_ms: f64,
    /// Tasks that acknowledged.
    pub acknowledged: u32,
    /// Directory (completed) or why it was aborted or failed.
    pub detail: Option<String>,
}

/// Totals and the figures of the last completed checkpoint.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CheckpointTotals {
    pub completed: u64,
    pub aborted: u64,
    pub failed: u64,
    pub in_progress: u64,
    pub last_duration_ms: Option<u64>,
    pub last_bytes: Option<u64>,
    pub last_alignment_ms: Option<f64>,
    pub last_snapshot_ms: Option<f64>,
    /// Wall-clock time of the last completion (epoch ms).
    pub last_completed_ms: Option<i64>,
    pub latest: Option<String>,
    pub restored_from: Option<String>,
}

#[derive(Default)]
struct Inner {
    totals: CheckpointTotals,
    history: VecDeque<CheckpointEntry>,
    started: Vec<(u64, Instant)>,
}

/// The live checkpoint record of one job (in its `MetricsRegistry`).
#[derive(Default)]
pub struct CheckpointHistory {
    inner: Mutex<Inner>,
}

impl CheckpointHistory {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        f(&mut self.inner.lock().expect("checkpoint history"))
    }

    /// Checkpoint `epoch` was triggered.
    pub fn triggered(&self, epoch: u64, savepoint: bool) {
        self.with(|i| {
            if i.history.len() == HISTORY {
                i.history.pop_front();
            }
            i.history.push_back(CheckpointEntry {
                epoch,
                savepoint,
                status: CheckpointStatus::InProgress,
                triggered_ms: crate::time::now_ms(),
                duration_ms: None,
                bytes: 0,
                alignment_ms: 0.0,
                snapshot_ms: 0.0,
                acknowledged: 0,
                detail: None,
            });
            i.started.retain(|(e, _)| *e != epoch);
            i.started.push((epoch, Instant::now()));
            i.totals.in_progress = i.started.len() as u64;
        })
    }

    /// A task acknowledged `epoch` after aligning for `alignment_ns` and snapshotting for `snapshot_ns`.
    pub fn acknowledged(&self, epoch: u64, alignment_ns: u64, snapshot_ns: u64) {
        self.with(|i| {
            if let Some(e) = i.history.iter_mut().rev().find(|e| e.epoch == epoch) {
                e.acknowledged += 1;
                e.alignment_ms = e.alignment_ms.max(alignment_ns as f64 / 1e6);
                e.snapshot_ms = e.snapshot_ms.max(snapshot_ns as f64 / 1e6);
            }
        })
    }

    fn finish(i: &mut Inner, epoch: u64, status: CheckpointStatus, detail: Option<String>, bytes: u64) -> Option<CheckpointEntry> {
        let duration = i.started.iter().find(|(e, _)| *e == epoch).map(|(_, t)| t.elapsed().as_millis() as u64);
        i.started.retain(|(e, _)| *e != epoch);
        i.totals.in_progress = i.started.len() as u64;
        let e = i.history.iter_mut().rev().find(|e| e.epoch == epoch)?;
        e.status = status;
        e.duration_ms = duration;
        e.detail = detail;
        e.bytes = bytes;
        Some(e.clone())
    }

    /// Checkpoint `epoch` is durable in `dir` with `bytes` of state.
    pub fn completed(&self, epoch: u64, bytes: u64, dir: &str) {
        self.with(|i| {
            let entry = Self::finish(i, epoch, CheckpointStatus::Completed, Some(dir.to_string()), bytes);
            let t = &mut i.totals;
            t.completed += 1;
            t.last_bytes = Some(bytes);
            t.latest = Some(dir.to_string());
            t.last_completed_ms = Some(crate::time::now_ms());
            if let Some(e) = entry {
                t.last_duration_ms = e.duration_ms;
                t.last_alignment_ms = Some(e.alignment_ms);
                t.last_snapshot_ms = Some(e.snapshot_ms);
            }
        })
    }

    /// Checkpoint `epoch` was aborted (timeout, declined, failure).
    pub fn aborted(&self, epoch: u64, reason: &str) {
        self.with(|i| {
            Self::finish(i, epoch, CheckpointStatus::Aborted, Some(reason.to_string()), 0);
            i.totals.aborted += 1;
        })
    }

    /// Checkpoint `epoch`'s files could not be written.
    pub fn failed(&self, epoch: u64, error: &str) {
        self.with(|i| {
            Self::finish(i, epoch, CheckpointStatus::Failed, Some(error.to_string()), 0);
            i.totals.failed += 1;
        })
    }

    /// The job (attempt) restored from `dir`.
    pub fn restored(&self, dir: &str) {
        self.with(|i| i.totals.restored_from = Some(dir.to_string()))
    }

    /// A new attempt starts, or the job ended: checkpoints still in flight will never finish
    /// and count as aborted for `reason`.
    pub fn abort_open(&self, reason: &str) {
        self.with(|i| {
            let open: Vec<u64> = i.started.iter().map(|(e, _)| *e).collect();
            for epoch in open {
                Self::finish(i, epoch, CheckpointStatus::Aborted, Some(reason.to_string()), 0);
                i.totals.aborted += 1;
            }
        })
    }

    pub fn totals(&self) -> CheckpointTotals {
        self.with(|i| i.totals.clone())
    }

    /// Recent checkpoints, oldest first.
    pub fn history(&self) -> Vec<CheckpointEntry> {
        self.with(|i| i.history.iter().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_a_checkpoint_life_and_stays_bounded() {
        let h = CheckpointHistory::default();
        h.triggered(1, false);
        h.acknowledged(1, 2_000_000, 500_000);
        h.acknowledged(1, 1_000_000, 3_000_000);
        assert_eq!(h.totals().in_progress, 1);
        h.completed(1, 4096, "/c/chk-1");
        let t = h.totals();
        assert_eq!((t.completed, t.in_progress, t.last_bytes), (1, 0, Some(4096)));
        assert_eq!(t.last_alignment_ms, Some(2.0));
        assert_eq!(t.last_snapshot_ms, Some(3.0));
        assert!(t.last_duration_ms.is_some());
        h.triggered(2, true);
        h.aborted(2, "timeout");
        h.triggered(3, false);
        h.failed(3, "disk full");
        h.triggered(4, false);
        h.abort_open("the job restarted");
        let t = h.totals();
        assert_eq!((t.completed, t.aborted, t.failed, t.in_progress), (1, 2, 1, 0));
        let hist = h.history();
        assert_eq!(hist.len(), 4);
        assert_eq!(hist[0].acknowledged, 2);
        assert!(hist[1].savepoint && hist[1].status == CheckpointStatus::Aborted);
        for e in 10..10 + HISTORY as u64 * 2 {
            h.triggered(e, false);
            h.completed(e, 1, "x");
        }
        assert_eq!(h.history().len(), HISTORY);
        assert_eq!(h.history().last().unwrap().epoch, 9 + HISTORY as u64 * 2);
    }
}
