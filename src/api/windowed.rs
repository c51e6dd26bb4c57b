//! [`WindowedStream`]: `key_by(..).window(..)` with allowed lateness, a late side output, and
//! an incremental aggregate.

use std::hash::Hash;
use std::sync::Arc;

use super::stream::{DataStream, KeyedStream};
use crate::checkpoint::snapshot::Persist;
use crate::key::StableHash;
use crate::operator::aggregate::AggregateFunction;
use crate::operator::window::aligned::AlignedWindowOp;
use crate::operator::window::session::SessionWindowOp;
use crate::operator::window::{WindowAssigner, WindowDriver, WindowResult, WindowSpec};
use crate::operator::{Output, Push};
use crate::shard::BuildCtx;
use crate::sink::Sink;

/// A keyed stream with a window assigner (Flink's `WindowedStream`).
pub struct WindowedStream<T, K, KF> {
    keyed: KeyedStream<T, K, KF>,
    spec: WindowSpec,
    late_sink: Option<Arc<dyn Sink<T>>>,
}

impl<T, K, KF> KeyedStream<T, K, KF>
where
    T: Send + 'static,
    K: StableHash + Hash + Eq + Ord + Clone + Send + Persist + 'static,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Group records of each key into event-time windows.
    pub fn window(self, assigner: WindowAssigner) -> WindowedStream<T, K, KF> {
        WindowedStream {
            keyed: self,
            spec: WindowSpec {
                assigner,
                allowed_lateness_ms: 0,
            },
            late_sink: None,
        }
    }
}

impl<T, K, KF> WindowedStream<T, K, KF>
where
    T: Send + 'static,
    K: StableHash + Hash + Eq + Ord + Clone + Send + Persist + 'static,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Keep window state this long after the window fired; late records within it fire the
    /// window again with the updated result.
    pub fn allowed_lateness(mut self, ms: i64) -> Self {
        assert!(ms >= 0, "allowed lateness must be >= 0");
        self.spec.allowed_lateness_ms = ms;
        self
    }

    /// Send records that are too late for every window to `sink` instead of dropping them
    /// (Flink's `sideOutputLateData`). Without it they are dropped and counted.
    pub fn late_records_to<S: Sink<T>>(mut self, sink: S) -> Self {
        self.late_sink = Some(Arc::new(sink));
        self
    }

    /// Aggregate each window incrementally with `agg`.
    pub fn aggregate<A>(self, agg: A) -> DataStream<WindowResult<K, A::Out>>
    where
        A: AggregateFunction<T>,
        A::Acc: Persist,
    {
        let spec = self.spec;
        let late_sink = self.late_sink;
        let (stream, key_fn) = self.keyed.exchanged();
        let kind = match spec.assigner {
            WindowAssigner::Tumbling { .. } => "window:tumble",
            WindowAssigner::Sliding { .. } => "window:hop",
            WindowAssigner::Cumulate { .. } => "window:cumulate",
            WindowAssigner::Session { .. } => "window:session",
        };
        stream.then(kind, move |ctx: &mut BuildCtx<'_>, name, down| {
            let bs = ctx.config.batch_size;
            let metrics = ctx.operator_metrics(name);
            let late = match &late_sink {
                Some(s) => Some(Output::new(s.build(ctx, &format!("{name}.late"))?, bs)),
                None => None,
            };
            let out = Output::new(down, bs);
            let op: Box<dyn Push<T>> = match spec.assigner {
                WindowAssigner::Session { .. } => Box::new(WindowDriver::build(
                    SessionWindowOp::new(spec, key_fn.clone(), agg.clone(), out, late, metrics),
                    ctx,
                    name,
                )?),
                _ => Box::new(WindowDriver::build(
                    AlignedWindowOp::new(spec, key_fn.clone(), agg.clone(), out, late, metrics),
                    ctx,
                    name,
                )?),
            };
            Ok(op)
        })
    }
}
