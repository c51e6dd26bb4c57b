//! `KeyedStream::process`: run a [`KeyedProcessFunction`] over a keyed stream (Flink's
//! `keyBy(..).process(..)`).
//!
//! ```no_run
//! use weir::prelude::*;
//!
//! /// Counts per key; emits the count one second (event time) after each key's first record.
//! #[derive(Clone, Default)]
//! struct CountThenReport {
//!     count: Option<ValueState<u64, i64>>,
//! }
//!
//! impl KeyedProcessFunction<u64, (u64, i64)> for CountThenReport {
//!     type Out = (u64, i64);
//!     fn open(&mut self, state: &StateContext<u64>) {
//!         let ttl = StateTtl::new(3_600_000, TtlUpdate::OnCreateAndWrite);
//!         self.count = Some(state.value("count", Some(ttl)));
//!     }
//!     fn process(&mut self, key: &u64, _r: (u64, i64), ctx: &mut ProcessContext<'_, u64, (u64, i64)>) {
//!         let count = self.count.as_mut().unwrap();
//!         let n = count.update_with(key, || 0, |n| { *n += 1; *n });
//!         if n == 1 {
//!             ctx.register_event_time_timer(ctx.timestamp() + 1_000);
//!         }
//!     }
//!     fn on_timer(&mut self, key: &u64, _ts: i64, _d: TimeDomain, ctx: &mut ProcessContext<'_, u64, (u64, i64)>) {
//!         let n = self.count.as_mut().unwrap().value(key).copied().unwrap_or(0);
//!         ctx.emit((*key, n));
//!     }
//! }
//!
//! let env = StreamEnv::new(EngineConfig { cores: 2, pin_cores: false, ..Default::default() });
//! let reports = env
//!     .from_collection(vec![(1u64, 0i64), (1, 500), (2, 700)])
//!     .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(), |r| r.1)
//!     .key_by(|r: &(u64, i64)| r.0)
//!     .process(CountThenReport::default())
//!     .collect();
//! env.execute().unwrap();
//! ```
//!
//! The operator's keyed state lives on the job's state backend (`EngineConfig::state_backend`):
//! with `lsm`, each shard's instance gets its own store, opened by a flusher registered with
//! the segment.
//!
//! Invariant: the function is cloned once per shard and opened there; it sees only the keys of
//! the key groups its shard owns.

use std::hash::Hash;

use super::stream::{DataStream, KeyedStream};
use crate::key::StableHash;
use crate::operator::process::{KeyedProcessFunction, KeyedProcessOp};
use crate::operator::{Output, Push};
use crate::state::{StateBackend, StateKey};

impl<T, K, KF> KeyedStream<T, K, KF>
where
    T: Send + 'static,
    K: StableHash + Hash + Eq + Ord + Clone + Send + StateKey,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Apply `f` to every record, with keyed state and timers.
    pub fn process<F: KeyedProcessFunction<K, T>>(self, f: F) -> DataStream<F::Out> {
        let (stream, key_fn) = self.exchanged();
        stream.then("process", move |ctx, name, down| {
            let out = Output::new(down, ctx.config.batch_size);
            let backend = StateBackend::for_operator(ctx, name)?;
            let op = KeyedProcessOp::new(f.clone(), key_fn.clone(), out, ctx.timers(), ctx.operator_metrics(name), backend).checkpointed_as(ctx, name)?;
            let op: Box<dyn Push<T>> = Box::new(op);
            Ok(op)
        })
    }
}
