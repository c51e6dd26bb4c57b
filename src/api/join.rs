//! Joins of two keyed streams: [`KeyedStream::window_join`] (Flink's
//! `a.join(b).where(ka).equalTo(kb).window(w).apply(f)`) and [`KeyedStream::interval_join`]
//! (Flink's `a.keyBy(ka).intervalJoin(b.keyBy(kb)).between(lower, upper).process(f)`), plus
//! the same joins over one stream of [`JoinInput`] records ([`DataStream::window_join_by`],
//! [`DataStream::interval_join_by`]).
//!
//! Two keyed streams each go through their own `key_by` exchange into one two-input segment
//! (driven by `run_two_input`); its watermark is the minimum of both inputs' watermarks, so
//! which records are late depends on how far the *other* input has progressed when a record
//! arrives, exactly as in Flink. When both sides come from one upstream segment, the
//! `JoinInput` form keeps them in one exchange, so every record is judged against exactly the
//! watermark that preceded it in that stream: results, late records included, are then
//! independent of the number of cores and of scheduling.
//!
//! Operators are named `join:window#N` / `join:interval#N`; their `late_records_dropped`
//! counts late records (`JobReport::operators_named("join")`).

use std::hash::Hash;
use std::sync::Arc;

use super::stream::{connect_all, DataStream, KeyedStream, StreamEnv, Tail};
use crate::checkpoint::snapshot::Persist;
use crate::error::Result;
use crate::key::StableHash;
pub use crate::operator::join::JoinInput;
use crate::operator::join::{IntervalJoin, JoinDriver, WindowJoin};
use crate::operator::window::WindowAssigner;
use crate::operator::{Output, Push, Push2};
use crate::shard::segment::run_two_input;
use crate::shard::BuildCtx;

impl StreamEnv {
    /// A two-input segment reading the rings of `left_edge` and `right_edge` into the operator
    /// built by `make` (given its downstream).
    fn two_input_tail<L, R, O>(
        &self,
        left_edge: usize,
        right_edge: usize,
        kind: &str,
        make: impl Fn(&mut BuildCtx<'_>, &str, Box<dyn Push<O>>) -> Result<Box<dyn Push2<L, R>>> + Send + Sync + 'static,
    ) -> DataStream<O>
    where
        L: Send + Persist + 'static,
        R: Send + Persist + 'static,
        O: 'static,
    {
        let name = self.name(kind);
        let op_name = name.clone();
        let seg_name = self.name("input");
        let tail: Tail<O> = Arc::new(move |ctx, down| {
            let op = make(ctx, &op_name, down)?;
            let op = crate::control::latency::LatencyProbe2::wrap_operator(op, ctx, &op_name);
            let mut left_ends = vec![ctx.take_receiver_ends(left_edge)];
            let mut right_ends = vec![ctx.take_receiver_ends(right_edge)];
            let mut env = StreamEnv::segment_env(ctx, &seg_name);
            Ok(Box::pin(async move {
                let (left, right, connected) = crate::shard::keep_awake_while(async {
                    futures::join!(connect_all::<L>(&mut left_ends), connect_all::<R>(&mut right_ends), env.connect())
                })
                .await;
                connected?;
                run_two_input(left, right, op, env).await
            }))
        });
        DataStream { env: self.clone(), tail, name }
    }
}

impl<L, K, KL> KeyedStream<L, K, KL>
where
    L: Clone + Send + Persist + 'static,
    K: StableHash + Hash + Eq + Ord + Clone + Send + Persist + 'static,
    KL: Fn(&L) -> K + Clone + Send + Sync + 'static,
{
    /// Join with `other` on equal keys within each event-time window of `assigner` (tumbling,
    /// sliding or cumulate): when a window fires, `f(l, r)` for every left and right record of
    /// a key in it; `Some` results are emitted at `window end - 1`. Records too late for every
    /// window are dropped and counted.
    pub fn window_join<R, KR, O, F>(self, other: KeyedStream<R, K, KR>, assigner: WindowAssigner, f: F) -> DataStream<O>
    where
        R: Clone + Send + Persist + 'static,
        KR: Fn(&R) -> K + Clone + Send + Sync + 'static,
        O: Send + 'static,
        F: Fn(&L, &R) -> Option<O> + Clone + Send + Sync + 'static,
    {
        assert!(
            !matches!(assigner, WindowAssigner::Session { .. }),
            "window_join: session windows are not supported"
        );
        let env = self.env.clone();
        let (kl, kr) = (self.key_fn.clone(), other.key_fn.clone());
        let left = env.keyed_edge(self.stream, self.key_fn);
        let right = env.keyed_edge(other.stream, other.key_fn);
        env.two_input_tail(left, right, "join:window", move |ctx, name, down| {
            let out = Output::new(down, ctx.config.batch_size);
            let core = WindowJoin::new(assigner, kl.clone(), kr.clone(), f.clone(), out, ctx.operator_metrics(name));
            Ok(Box::new(JoinDriver::build(core, ctx, name)?) as Box<dyn Push2<L, R>>)
        })
    }

    /// Join with `other` on equal keys where `r.ts ∈ [l.ts + lower_ms, l.ts + upper_ms]`
    /// (inclusive): `Some(f(l, r))` is emitted at `max(l.ts, r.ts)`. Records below the current
    /// watermark are dropped and counted; buffered records are freed as the watermark passes.
    pub fn interval_join<R, KR, O, F>(self, other: KeyedStream<R, K, KR>, lower_ms: i64, upper_ms: i64, f: F) -> DataStream<O>
    where
        R: Send + Persist + 'static,
        KR: Fn(&R) -> K + Clone + Send + Sync + 'static,
        O: Send + 'static,
        F: Fn(&L, &R) -> Option<O> + Clone + Send + Sync + 'static,
    {
        assert!(lower_ms <= upper_ms, "interval_join: lower bound {lower_ms} > upper bound {upper_ms}");
        let env = self.env.clone();
        let (kl, kr) = (self.key_fn.clone(), other.key_fn.clone());
        let left = env.keyed_edge(self.stream, self.key_fn);
        let right = env.keyed_edge(other.stream, other.key_fn);
        env.two_input_tail(left, right, "join:interval", move |ctx, name, down| {
            let out = Output::new(down, ctx.config.batch_size);
            let core = IntervalJoin::new(lower_ms, upper_ms, kl.clone(), kr.clone(), f.clone(), out, ctx.operator_metrics(name));
            Ok(Box::new(JoinDriver::build(core, ctx, name)?) as Box<dyn Push2<L, R>>)
        })
    }
}

impl<L, R> DataStream<JoinInput<L, R>>
where
    L: Clone + Send + Persist + 'static,
    R: Clone + Send + Persist + 'static,
{
    fn keyed_sides<K, KL, KR>(self, key_left: KL, key_right: KR) -> (DataStream<JoinInput<L, R>>, KL, KR)
    where
        K: StableHash + Hash + Eq + Ord + Clone + Send + Persist + 'static,
        KL: Fn(&L) -> K + Clone + Send + Sync + 'static,
        KR: Fn(&R) -> K + Clone + Send + Sync + 'static,
    {
        let (kl, kr) = (key_left.clone(), key_right.clone());
        let (stream, _) = self
            .key_by(move |x: &JoinInput<L, R>| match x {
                JoinInput::Left(l) => key_left(l),
                JoinInput::Right(r) => key_right(r),
            })
            .exchanged();
        (stream, kl, kr)
    }

    /// [`KeyedStream::window_join`] over one stream carrying both sides.
    pub fn window_join_by<K, KL, KR, O, F>(self, key_left: KL, key_right: KR, assigner: WindowAssigner, f: F) -> DataStream<O>
    where
        K: StableHash + Hash + Eq + Ord + Clone + Send + Persist + 'static,
        KL: Fn(&L) -> K + Clone + Send + Sync + 'static,
        KR: Fn(&R) -> K + Clone + Send + Sync + 'static,
        O: Send + 'static,
        F: Fn(&L, &R) -> Option<O> + Clone + Send + Sync + 'static,
    {
        assert!(
            !matches!(assigner, WindowAssigner::Session { .. }),
            "window_join: session windows are not supported"
        );
        let (stream, kl, kr) = self.keyed_sides(key_left, key_right);
        stream.then("join:window", move |ctx, name, down| {
            let out = Output::new(down, ctx.config.batch_size);
            let core = WindowJoin::new(assigner, kl.clone(), kr.clone(), f.clone(), out, ctx.operator_metrics(name));
            Ok(Box::new(JoinDriver::build(core, ctx, name)?) as Box<dyn Push<JoinInput<L, R>>>)
        })
    }

    /// [`KeyedStream::interval_join`] over one stream carrying both sides.
    pub fn interval_join_by<K, KL, KR, O, F>(self, key_left: KL, key_right: KR, lower_ms: i64, upper_ms: i64, f: F) -> DataStream<O>
    where
        K: StableHash + Hash + Eq + Ord + Clone + Send + Persist + 'static,
        KL: Fn(&L) -> K + Clone + Send + Sync + 'static,
        KR: Fn(&R) -> K + Clone + Send + Sync + 'static,
        O: Send + 'static,
        F: Fn(&L, &R) -> Option<O> + Clone + Send + Sync + 'static,
    {
        assert!(lower_ms <= upper_ms, "interval_join: lower bound {lower_ms} > upper bound {upper_ms}");
        let (stream, kl, kr) = self.keyed_sides(key_left, key_right);
        stream.then("join:interval", move |ctx, name, down| {
            let out = Output::new(down, ctx.config.batch_size);
            let core = IntervalJoin::new(lower_ms, upper_ms, kl.clone(), kr.clone(), f.clone(), out, ctx.operator_metrics(name));
            Ok(Box::new(JoinDriver::build(core, ctx, name)?) as Box<dyn Push<JoinInput<L, R>>>)
        })
    }
}
