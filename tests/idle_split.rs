//! An idle split does not hold back the watermark — not on its own shard, and not across the
//! rings to the other shards.
//!
//! Split 0 holds bounded data; split 1 (on another shard when there are two) produces nothing
//! and stays idle until a window result has reached the sink, then ends. Without idleness the
//! combined watermark would stay at the idle split's minimum, no window could fire before the
//! end, and split 1 would give up after its patience runs out: the test then fails because no
//! result arrived while split 1 was still open.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use futures::future::LocalBoxFuture;
use weir::batch::Batch;
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::BuildCtx;
use weir::sink::Sink;
use weir::source::{ReadStatus, Source, SplitReader};

/// Split 0: `records`; split 1: idle until `released`, then exhausted.
struct IdleSource {
    records: Vec<(i64, i64)>,
    released: Arc<AtomicBool>,
    idle_polls: Arc<AtomicU64>,
}

impl Source<(i64, i64)> for IdleSource {
    fn name(&self) -> String {
        "idle-test".into()
    }
    fn split_count(&self, _shards: usize) -> weir::error::Result<usize> {
        Ok(2)
    }
    fn reader(&self, split: usize, _ctx: &mut BuildCtx<'_>) -> weir::error::Result<Box<dyn SplitReader<(i64, i64)>>> {
        Ok(Box::new(IdleReader {
            split,
            records: self.records.clone(),
            pos: 0,
            released: self.released.clone(),
            idle_polls: self.idle_polls.clone(),
        }))
    }
}

struct IdleReader {
    split: usize,
    records: Vec<(i64, i64)>,
    pos: usize,
    released: Arc<AtomicBool>,
    idle_polls: Arc<AtomicU64>,
}

/// Upper bound on how long the idle split waits (polls of 2 ms): the test fails rather than hangs.
const PATIENCE_POLLS: u64 = 5_000;

impl SplitReader<(i64, i64)> for IdleReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<(i64, i64)>, max: usize) -> LocalBoxFuture<'a, weir::error::Result<ReadStatus>> {
        let status = if self.split == 0 {
            let end = (self.pos + max).min(self.records.len());
            out.extend_from_slice(&self.records[self.pos..end]);
            self.pos = end;
            // Split 0 stays open (idle) too until a result arrived, so the job cannot end
            // early and fire everything at the final watermark.
            if self.pos < self.records.len() {
                ReadStatus::More
            } else if self.released.load(Ordering::SeqCst) {
                ReadStatus::Exhausted
            } else {
                ReadStatus::Idle { retry_after_ms: 2 }
            }
        } else if self.released.load(Ordering::SeqCst) || self.idle_polls.fetch_add(1, Ordering::SeqCst) > PATIENCE_POLLS {
            ReadStatus::Exhausted
        } else {
            ReadStatus::Idle { retry_after_ms: 2 }
        };
        Box::pin(async move { Ok(status) })
    }
    fn describe(&self) -> String {
        format!("idle-test split {}", self.split)
    }
}

/// Sets `released` on the first window result.
struct ReleaseSink {
    released: Arc<AtomicBool>,
    results: Arc<AtomicU64>,
}

impl Sink<WindowResult<i64, i64>> for ReleaseSink {
    fn name(&self) -> String {
        "release".into()
    }
    fn build(&self, _ctx: &mut BuildCtx<'_>, _name: &str) -> weir::error::Result<Box<dyn Push<WindowResult<i64, i64>>>> {
        Ok(Box::new(ReleasePush {
            released: self.released.clone(),
            results: self.results.clone(),
        }))
    }
}

struct ReleasePush {
    released: Arc<AtomicBool>,
    results: Arc<AtomicU64>,
}

impl Push<WindowResult<i64, i64>> for ReleasePush {
    fn push(&mut self, batch: &mut Batch<WindowResult<i64, i64>>) {
        if !batch.is_empty() {
            self.results.fetch_add(batch.len() as u64, Ordering::SeqCst);
            self.released.store(true, Ordering::SeqCst);
        }
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut weir::checkpoint::runtime::TaskSnapshot) {}
}

#[test]
fn idle_split_does_not_hold_back_windows_on_any_shard_count() {
    for cores in [1, 2] {
        let released = Arc::new(AtomicBool::new(false));
        let results_before_release = Arc::new(AtomicU64::new(0));
        let idle_polls = Arc::new(AtomicU64::new(0));
        // Keys 0..4, timestamps 0..3000 ms: windows [0,1000) and [1000,2000) can fire once the
        // watermark (max − 100 ms) passes them.
        let records: Vec<(i64, i64)> = (0..3_000).map(|t| (t % 4, t)).collect();
        let env = StreamEnv::new(EngineConfig {
            cores,
            pin_cores: false,
            ..Default::default()
        });
        env.source(IdleSource {
            records,
            released: released.clone(),
            idle_polls: idle_polls.clone(),
        })
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(100).with_idleness(20), |r: &(i64, i64)| r.1)
        .key_by(|r: &(i64, i64)| r.0)
        .window(WindowAssigner::tumbling(1_000))
        .aggregate(Count)
        .sink(ReleaseSink {
            released: released.clone(),
            results: results_before_release.clone(),
        });
        env.execute().unwrap();
        assert!(
            idle_polls.load(Ordering::SeqCst) <= PATIENCE_POLLS,
            "cores {cores}: no window fired while split 1 was idle — the idle split held the watermark back"
        );
        // Windows [0,1000) and [1000,2000) for 4 keys fired before the end; [2000,3000) at the end.
        assert_eq!(results_before_release.load(Ordering::SeqCst), 12, "cores {cores}");
    }
}

/// Idle status passes through a window operator: stream A (both splits idle) goes through a
/// window and is unioned with stream B (bounded data). Downstream windows must fire from B's
/// watermark while A is idle; if the window swallowed A's idleness, the union would wait for A.
#[test]
fn idleness_passes_through_windows_into_a_union() {
    for cores in [1, 2] {
        let released = Arc::new(AtomicBool::new(false));
        let results_before_release = Arc::new(AtomicU64::new(0));
        let idle_polls = Arc::new(AtomicU64::new(0));
        let env = StreamEnv::new(EngineConfig {
            cores,
            pin_cores: false,
            ..Default::default()
        });
        let a = env
            .source(IdleSource {
                records: Vec::new(),
                released: released.clone(),
                idle_polls: idle_polls.clone(),
            })
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(100).with_idleness(20), |r: &(i64, i64)| r.1)
            .key_by(|r: &(i64, i64)| r.0)
            .window(WindowAssigner::tumbling(1_000))
            .aggregate(Count)
            .map(|r: WindowResult<i64, i64>| (r.key, r.window_end - 1));
        let b = env
            .from_collection((0..3_000i64).map(|t| (t % 4, t)).collect::<Vec<_>>())
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(100), |r: &(i64, i64)| r.1);
        a.union(b)
            .key_by(|r: &(i64, i64)| r.0)
            .window(WindowAssigner::tumbling(1_000))
            .aggregate(Count)
            .sink(ReleaseSink {
                released: released.clone(),
                results: results_before_release.clone(),
            });
        env.execute().unwrap();
        assert!(
            idle_polls.load(Ordering::SeqCst) <= PATIENCE_POLLS,
            "cores {cores}: the union waited for the idle stream"
        );
        assert!(results_before_release.load(Ordering::SeqCst) >= 4, "cores {cores}");
    }
}
