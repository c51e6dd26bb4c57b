//! The collect sink: keeps every record in memory and hands them to the caller after the job —
//! the test harness's output (Flink's `executeAndCollect` on a MiniCluster).
//!
//! Invariant: each shard appends only to its own vector while running; the vectors are moved into
//! the shared result once, at end of input (one lock per shard per job, off the data path).

use std::sync::{Arc, Mutex};

use super::Sink;
use crate::batch::Batch;
use crate::error::Result;
use crate::operator::Push;
use crate::shard::BuildCtx;
use crate::time::Timestamp;

type Shared<T> = Arc<Mutex<Vec<(usize, Vec<(T, Timestamp)>)>>>;

/// Handle to the records a [`CollectSink`] gathered.
pub struct Collected<T> {
    results: Shared<T>,
}

impl<T> Collected<T> {
    /// All records (shard by shard, each shard's in arrival order).
    pub fn take(&self) -> Vec<T> {
        self.take_with_timestamps().into_iter().map(|(r, _)| r).collect()
    }

    /// All records with their event timestamps.
    pub fn take_with_timestamps(&self) -> Vec<(T, Timestamp)> {
        let mut parts = std::mem::take(&mut *self.results.lock().expect("collect sink"));
        parts.sort_by_key(|(s, _)| *s);
        parts.into_iter().flat_map(|(_, v)| v).collect()
    }
}

/// Sink that collects records in memory.
pub struct CollectSink<T> {
    results: Shared<T>,
}

impl<T> CollectSink<T> {
    pub fn new() -> (Self, Collected<T>) {
        let results: Shared<T> = Arc::default();
        (Self { results: results.clone() }, Collected { results })
    }
}

impl<T: Send + 'static> Sink<T> for CollectSink<T> {
    fn name(&self) -> String {
        "collect".into()
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, _operator_name: &str) -> Result<Box<dyn Push<T>>> {
        Ok(Box::new(CollectPush {
            shard: ctx.shard,
            rows: Vec::new(),
            results: self.results.clone(),
        }))
    }
}

struct CollectPush<T> {
    shard: usize,
    rows: Vec<(T, Timestamp)>,
    results: Shared<T>,
}

impl<T> Push<T> for CollectPush<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        self.rows.extend(batch.records.drain(..).zip(batch.timestamps.drain(..)));
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
    fn end(&mut self) {
        let rows = std::mem::take(&mut self.rows);
        self.results.lock().expect("collect sink").push((self.shard, rows));
    }
}
