//! `KeyedStream::process`: run a [`KeyedProcessFunction`] over a keyed stream (Flink's
//! `keyBy(..).process(..)`).
//!
//! Invariant: the function is cloned once per shard and opened there; it sees only the keys of
//! the key groups its shard owns.

use std::hash::Hash;

use super::stream::{DataStream, KeyedStream};
use crate::key::StableHash;
use crate::operator::process::{KeyedProcessFunction, KeyedProcessOp};
use crate::operator::{Output, Push};

impl<T, K, KF> KeyedStream<T, K, KF>
where
    T: Send + 'static,
    K: StableHash + Hash + Eq + Ord + Clone + Send + 'static,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// Apply `f` to every record, with keyed state and timers.
    pub fn process<F: KeyedProcessFunction<K, T>>(self, f: F) -> DataStream<F::Out> {
        let (stream, key_fn) = self.exchanged();
        stream.then("process", move |ctx, name, down| {
            let out = Output::new(down, ctx.config.batch_size);
            let op: Box<dyn Push<T>> = Box::new(KeyedProcessOp::new(f.clone(), key_fn.clone(), out, ctx.timers(), ctx.operator_metrics(name)));
            Ok(op)
        })
    }
}
