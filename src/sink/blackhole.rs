//! The blackhole sink: counts and discards (Flink's `blackhole` connector), for benchmarks.

use std::sync::Arc;

use super::Sink;
use crate::batch::Batch;
use crate::error::Result;
use crate::operator::Push;
use crate::shard::{BuildCtx, OperatorMetrics};
use crate::time::Timestamp;

/// Discards every record; counts them in the operator's `records_in`.
#[derive(Clone, Copy, Debug, Default)]
pub struct BlackholeSink;

impl<T: 'static> Sink<T> for BlackholeSink {
    fn name(&self) -> String {
        "blackhole".into()
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, operator_name: &str) -> Result<Box<dyn Push<T>>> {
        Ok(Box::new(BlackholePush {
            metrics: ctx.operator_metrics(operator_name),
        }))
    }
}

struct BlackholePush {
    metrics: Arc<OperatorMetrics>,
}

impl<T> Push<T> for BlackholePush {
    fn push(&mut self, batch: &mut Batch<T>) {
        OperatorMetrics::add(&self.metrics.records_in, batch.len() as u64);
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
}
