//! [`StreamEnv`], [`SourceStream`], [`DataStream`] and [`KeyedStream`]: the builder.
//!
//! A `DataStream<T>` holds a *tail*: a per-shard factory that, given the operator that consumes
//! `T` downstream, builds the task of the current segment. Adding an operator wraps the tail;
//! an exchange (`key_by`, `union`) or a sink closes the segment and registers it in the graph.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use crate::batch::Batch;
use crate::config::EngineConfig;
use crate::error::Result;
use crate::key::StableHash;
use crate::operator::exchange::{Convert, EdgeFlusher, ExchangeOp, Identity, InPlace, Outbox};
use crate::operator::stateless::{FilterOp, FlatMapOp, MapOp};
use crate::operator::Push;
use crate::ring::{build_edge, connect_receivers, EdgeKind, RingInputs};
use crate::shard::runtime::{execute, EdgeDef, JobGraph, JobReport, SegmentDef};
use crate::shard::segment::{run_input, run_source, EventTime, SegmentCheckpoint, SegmentEnv};
use crate::shard::BuildCtx;
use crate::sink::collect::{CollectSink, Collected};
use crate::sink::Sink;
use crate::source::collection::CollectionSource;
use crate::source::Source;
use crate::time::{Timestamp, WatermarkStrategy};

/// Builds the task of a segment on one shard, given the segment's first operator.
pub type Tail<T> = Arc<dyn Fn(&mut BuildCtx<'_>, Box<dyn Push<T>>) -> Result<LocalBoxFuture<'static, Result<()>>> + Send + Sync>;

/// The environment a job is built in (Flink's `StreamExecutionEnvironment`).
#[derive(Clone)]
pub struct StreamEnv {
    graph: Rc<RefCell<JobGraph>>,
    config: Rc<EngineConfig>,
    next_id: Rc<RefCell<usize>>,
}

impl StreamEnv {
    pub fn new(config: EngineConfig) -> Self {
        Self {
            graph: Rc::default(),
            config: Rc::new(config),
            next_id: Rc::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A unique operator name such as `window#3`.
    pub(crate) fn name(&self, kind: &str) -> String {
        let mut id = self.next_id.borrow_mut();
        *id += 1;
        let name = format!("{kind}#{}", *id);
        self.graph.borrow_mut().operators.push(name.clone());
        name
    }

    /// Read from `source`.
    pub fn source<T: Send + 'static, S: Source<T>>(&self, source: S) -> SourceStream<T> {
        let name = self.name(&format!("source:{}", source.name()));
        SourceStream {
            env: self.clone(),
            source: Arc::new(source),
            name,
        }
    }

    /// Read from in-memory records, as one in-order split.
    pub fn from_collection<T: Clone + Send + Sync + 'static>(&self, records: Vec<T>) -> SourceStream<T> {
        self.source(CollectionSource::single(records))
    }

    /// The job graph built so far.
    pub fn graph(&self) -> JobGraph {
        self.graph.borrow().clone()
    }

    /// Run the job to completion (bounded sources) and report.
    pub fn execute(&self) -> Result<JobReport> {
        execute(self.graph(), &self.config)
    }

    pub(crate) fn add_segment(&self, name: String, factory: impl Fn(&mut BuildCtx<'_>) -> Result<LocalBoxFuture<'static, Result<()>>> + Send + Sync + 'static) {
        self.graph.borrow_mut().segments.push(SegmentDef {
            name,
            factory: Arc::new(factory),
        });
    }

    pub(crate) fn add_edge<T: Send + 'static>(&self, name: String, kind: EdgeKind) -> usize {
        let mut g = self.graph.borrow_mut();
        g.edges.push(EdgeDef {
            name,
            kind,
            factory: Arc::new(move |shards, cap| build_edge::<T>(kind, shards, cap)),
        });
        g.edges.len() - 1
    }

    /// The segment environment of the segment being built.
    pub(crate) fn segment_env(ctx: &mut BuildCtx<'_>, name: &str) -> SegmentEnv {
        for e in ctx.reading_edges.drain(..) {
            ctx.registry.edge_reader(e, name);
        }
        let metrics = ctx.operator_metrics(name);
        Self::segment_env_with(ctx, name, metrics)
    }

    /// [`StreamEnv::segment_env`] counting into `metrics`.
    pub(crate) fn segment_env_with(ctx: &mut BuildCtx<'_>, name: &str, metrics: Arc<crate::shard::OperatorMetrics>) -> SegmentEnv {
        let checkpoint = ctx.checkpoint.clone();
        let participant = checkpoint.as_ref().map_or(0, |c| c.participant(ctx.shard, ctx.segment));
        SegmentEnv {
            name: name.to_string(),
            shard: ctx.shard,
            batch_size: ctx.config.batch_size,
            flushers: std::mem::take(&mut ctx.flushers),
            timers: ctx.timers.clone(),
            metrics,
            connected: false,
            checkpoint: SegmentCheckpoint::new(checkpoint, participant, std::mem::take(&mut ctx.committers)),
            inflight: crate::ring::InflightBound::new(ctx.config.inflight_target_ms, ctx.config.batch_size),
        }
    }

    /// Close the upstream segment of `stream` with an exchange into a new edge.
    fn exchange<T: Send + 'static, K: StableHash + 'static, KF>(&self, stream: DataStream<T>, key_fn: Option<KF>, kind: EdgeKind) -> usize
    where
        KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        self.exchange_converted(stream, key_fn, Identity, kind)
    }

    /// [`StreamEnv::exchange`] converting every record by `convert` on its way (routed by
    /// `key_fn` of the converted record): the edge carries `U`.
    fn exchange_converted<T: Send + 'static, U: Send + 'static, K: StableHash + 'static, KF, CF>(
        &self,
        stream: DataStream<T>,
        key_fn: Option<KF>,
        convert: CF,
        kind: EdgeKind,
    ) -> usize
    where
        KF: Fn(&U) -> K + Clone + Send + Sync + 'static,
        CF: Convert<T, U> + Clone + Send + Sync + 'static,
    {
        let name = self.name(if kind == EdgeKind::Hash { "exchange" } else { "forward" });
        let edge = self.add_edge::<U>(name.clone(), kind);
        let prev = stream.tail;
        self.add_segment(name, move |ctx| {
            let outbox: Outbox<U> = Outbox::default();
            let ends = ctx.take_sender_ends(edge);
            let flusher = EdgeFlusher::new(ends, ctx.shards, outbox.clone());
            ctx.add_flusher(Box::new(flusher));
            let bs = ctx.config.batch_size;
            let op: Box<dyn Push<T>> = match &key_fn {
                Some(kf) => Box::new(ExchangeOp::new(kf.clone(), convert.clone(), ctx.groups, None, bs, outbox)),
                None => Box::new(ExchangeOp::new(|_: &U| 0u64, convert.clone(), ctx.groups, Some(ctx.shard), bs, outbox)),
            };
            prev(ctx, op)
        });
        edge
    }

    /// A tail that reads the rings of `edges` (merged into one input).
    fn input_tail<T: Send + 'static>(&self, edges: Vec<usize>) -> DataStream<T> {
        let name = self.name("input");
        let seg_name = name.clone();
        let tail: Tail<T> = Arc::new(move |ctx, chain| {
            let mut ends: Vec<_> = edges.iter().map(|&e| ctx.take_receiver_ends(e)).collect();
            let mut env = StreamEnv::segment_env(ctx, &seg_name);
            Ok(Box::pin(async move {
                let (inputs, connected) = crate::shard::keep_awake_while(async { futures::join!(connect_all::<T>(&mut ends), env.connect()) }).await;
                connected?;
                run_input(inputs, chain, env).await
            }))
        });
        DataStream { env: self.clone(), tail, name }
    }

    pub(crate) fn keyed_input<T: Send + 'static, K: StableHash + 'static, KF>(&self, stream: DataStream<T>, key_fn: KF) -> DataStream<T>
    where
        KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        let edge = self.exchange(stream, Some(key_fn), EdgeKind::Hash);
        self.input_tail(vec![edge])
    }

    /// [`StreamEnv::keyed_input`] of `stream`'s records converted by `convert` in the exchange
    /// (keyed by `key_fn` of the converted record), so the edge carries only what the keyed
    /// operator reads. `convert` takes what it keeps out of the record, in place.
    pub(crate) fn keyed_input_converted<T: Send + 'static, U: Send + 'static, K: StableHash + 'static, KF, CF>(
        &self,
        stream: DataStream<T>,
        convert: CF,
        key_fn: KF,
    ) -> DataStream<U>
    where
        KF: Fn(&U) -> K + Clone + Send + Sync + 'static,
        CF: Fn(&mut T) -> U + Clone + Send + Sync + 'static,
    {
        let edge = self.exchange_converted(stream, Some(key_fn), InPlace(convert), EdgeKind::Hash);
        self.input_tail(vec![edge])
    }

    /// Close `stream`'s segment with a keyed exchange into a new edge (for two-input segments).
    #[allow(dead_code)] // used by the join builders
    pub(crate) fn keyed_edge<T: Send + 'static, K: StableHash + 'static, KF>(&self, stream: DataStream<T>, key_fn: KF) -> usize
    where
        KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        self.exchange(stream, Some(key_fn), EdgeKind::Hash)
    }
}

/// Connect the receiver ends of several edges into one merged input.
pub(crate) async fn connect_all<T: Send + 'static>(ends: &mut [crate::ring::ShardEnds]) -> RingInputs<T> {
    let mut channels = Vec::new();
    for e in ends.iter_mut() {
        channels.extend(connect_receivers::<T>(e).await.into_channels());
    }
    RingInputs::new(channels)
}

/// A source whose event time is not decided yet.
pub struct SourceStream<T> {
    env: StreamEnv,
    source: Arc<dyn Source<T>>,
    name: String,
}

impl<T: Send + 'static> SourceStream<T> {
    /// Event time from `timestamp_fn`, watermarks by `strategy`, per split (Flink's
    /// `assignTimestampsAndWatermarks` at the source).
    pub fn assign_timestamps_and_watermarks<TF>(self, strategy: WatermarkStrategy, timestamp_fn: TF) -> DataStream<T>
    where
        TF: Fn(&T) -> Timestamp + Clone + Send + Sync + 'static,
    {
        self.build(Some((strategy, timestamp_fn, None::<fn(&T) -> bool>)))
    }

    /// [`Self::assign_timestamps_and_watermarks`] followed by a filter chained right after the
    /// watermark generator (Flink's `assigner → filter`): a record `keep` rejects still advances
    /// its split's watermark, so later records are late exactly as if it had passed; then it is
    /// dropped (not counted as read).
    pub fn assign_timestamps_and_watermarks_then_filter<TF, KF>(self, strategy: WatermarkStrategy, timestamp_fn: TF, keep: KF) -> DataStream<T>
    where
        TF: Fn(&T) -> Timestamp + Clone + Send + Sync + 'static,
        KF: Fn(&T) -> bool + Clone + Send + Sync + 'static,
    {
        self.build(Some((strategy, timestamp_fn, Some(keep))))
    }

    /// No event time: event-time windows fire only at end of input.
    pub fn without_event_time(self) -> DataStream<T> {
        self.build(None::<(WatermarkStrategy, fn(&T) -> Timestamp, Option<fn(&T) -> bool>)>)
    }

    fn build<TF, KF>(self, event_time: Option<(WatermarkStrategy, TF, Option<KF>)>) -> DataStream<T>
    where
        TF: Fn(&T) -> Timestamp + Clone + Send + Sync + 'static,
        KF: Fn(&T) -> bool + Clone + Send + Sync + 'static,
    {
        let source = self.source;
        let seg_name = self.name.clone();
        let counted = source.clone();
        self.env
            .graph
            .borrow_mut()
            .source_splits
            .push((seg_name.clone(), Arc::new(move |shards| counted.split_count(shards))));
        let tail: Tail<T> = Arc::new(move |ctx, chain| {
            let splits = source.split_count(ctx.shards)?;
            if let Some(before) = ctx.restore().and_then(|r| r.split_count(&seg_name)) {
                if before != splits {
                    return Err(crate::error::WeirError::Checkpoint(format!(
                        "source {seg_name} had {before} splits when the checkpoint was taken and has {splits} now: \
                         positions cannot be carried over (fix the source's split count, e.g. the generator's `splits`)"
                    )));
                }
            }
            let mut readers = Vec::new();
            let mut split = ctx.shard;
            let mut split_ids = Vec::new();
            // Readers count bad records in the source operator's metrics, the same instance the
            // segment loop counts records in.
            let metrics = ctx.operator_metrics(&seg_name);
            ctx.source_metrics = Some(metrics.clone());
            while split < splits {
                readers.push(source.reader(split, ctx)?);
                split_ids.push(split);
                split += ctx.shards;
            }
            let work = source.shard_work(ctx)?;
            ctx.source_metrics = None;
            let env = StreamEnv::segment_env_with(ctx, &seg_name, metrics);
            let et = match &event_time {
                Some((strategy, tf, keep)) => EventTime::Assigned {
                    strategy: *strategy,
                    timestamp_fn: tf.clone(),
                    keep: keep.clone(),
                },
                None => EventTime::None,
            };
            let run = run_source(split_ids.into_iter().zip(readers).collect(), et, chain, env);
            Ok(match work {
                None => Box::pin(run),
                Some(work) => Box::pin(async move {
                    // Dropped (cancelled) with this task if the segment fails.
                    let work = glommio::spawn_local(work);
                    run.await?;
                    work.await
                }),
            })
        });
        DataStream {
            env: self.env,
            tail,
            name: self.name,
        }
    }
}

/// A stream of records of type `T` (Flink's `DataStream<T>`).
pub struct DataStream<T> {
    pub(crate) env: StreamEnv,
    pub(crate) tail: Tail<T>,
    pub(crate) name: String,
}

impl<T: Send + 'static> DataStream<T> {
    pub fn env(&self) -> &StreamEnv {
        &self.env
    }

    /// Name of the operator (or source) that produces this stream, as used in metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Append an operator built per shard by `make` (given its downstream). Its input gets a
    /// latency probe (ingest → operator, [`crate::control::latency`]) while instrumentation is on.
    pub fn then<U: 'static>(
        self,
        kind: &str,
        make: impl Fn(&mut BuildCtx<'_>, &str, Box<dyn Push<U>>) -> Result<Box<dyn Push<T>>> + Send + Sync + 'static,
    ) -> DataStream<U> {
        let name = self.env.name(kind);
        let op_name = name.clone();
        let prev = self.tail;
        let tail: Tail<U> = Arc::new(move |ctx, down| {
            let op = make(ctx, &op_name, down)?;
            let op = crate::control::latency::LatencyProbe::wrap_operator(op, ctx, &op_name);
            prev(ctx, op)
        });
        DataStream { env: self.env, tail, name }
    }

    /// One output per record.
    pub fn map<U: Send + 'static, F: Fn(T) -> U + Clone + Send + Sync + 'static>(self, f: F) -> DataStream<U> {
        self.then("map", move |ctx, _, down| {
            Ok(Box::new(MapOp {
                f: f.clone(),
                buf: Batch::with_capacity(ctx.config.batch_size),
                down,
                _in: std::marker::PhantomData,
            }))
        })
    }

    /// Keep records for which `f` is true.
    pub fn filter<F: Fn(&T) -> bool + Clone + Send + Sync + 'static>(self, f: F) -> DataStream<T> {
        self.then("filter", move |ctx, _, down| {
            Ok(Box::new(FilterOp {
                f: f.clone(),
                buf: Batch::with_capacity(ctx.config.batch_size),
                down,
            }))
        })
    }

    /// Zero or more outputs per record.
    pub fn flat_map<U: Send + 'static, I: IntoIterator<Item = U> + 'static, F: Fn(T) -> I + Clone + Send + Sync + 'static>(self, f: F) -> DataStream<U> {
        self.then("flat_map", move |ctx, _, down| {
            let bs = ctx.config.batch_size;
            Ok(Box::new(FlatMapOp {
                f: f.clone(),
                buf: Batch::with_capacity(bs),
                down,
                batch_size: bs,
                _p: std::marker::PhantomData,
            }))
        })
    }

    /// Partition by key: every record with the same key goes to the shard owning its key group.
    pub fn key_by<K, KF>(self, key_fn: KF) -> KeyedStream<T, K, KF>
    where
        K: StableHash + std::hash::Hash + Eq + Ord + Clone + Send + 'static,
        KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        let upstream = self.env.clone();
        KeyedStream {
            stream: self,
            key_fn,
            _k: std::marker::PhantomData,
            env: upstream,
        }
    }

    /// Merge with another stream of the same type. The merged watermark is the minimum of both.
    pub fn union(self, other: DataStream<T>) -> DataStream<T> {
        let env = self.env.clone();
        let a = env.exchange(self, None::<fn(&T) -> u64>, EdgeKind::Forward);
        let b = env.exchange(other, None::<fn(&T) -> u64>, EdgeKind::Forward);
        env.input_tail(vec![a, b])
    }

    /// Terminate the stream in `sink`.
    pub fn sink<S: Sink<T>>(self, sink: S) {
        let name = self.env.name(&format!("sink:{}", sink.name()));
        let prev = self.tail;
        let sink = Arc::new(sink);
        let op_name = name.clone();
        self.env.add_segment(name, move |ctx| {
            let push = sink.build(ctx, &op_name)?;
            let push = crate::control::latency::LatencyProbe::wrap_sink(push, ctx, &op_name);
            prev(ctx, push)
        });
    }

    /// Collect every record into memory (the test harness's sink); read it after `execute`.
    pub fn collect(self) -> Collected<T> {
        let (sink, handle) = CollectSink::new();
        self.sink(sink);
        handle
    }
}

/// A stream partitioned by key (Flink's `KeyedStream`).
pub struct KeyedStream<T, K, KF> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key_fn: KF,
    pub(crate) env: StreamEnv,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<T, K, KF> KeyedStream<T, K, KF>
where
    T: Send + 'static,
    K: StableHash + std::hash::Hash + Eq + Ord + Clone + Send + 'static,
    KF: Fn(&T) -> K + Clone + Send + Sync + 'static,
{
    /// The partitioned stream itself (Flink's `KeyedStream` is a `DataStream`): every record is
    /// on the shard owning its key group.
    pub fn partitioned(self) -> DataStream<T> {
        self.exchanged().0
    }

    /// Write the partitioned stream to `sink` (each shard writes the keys it owns).
    pub fn sink<S: Sink<T>>(self, sink: S) {
        self.partitioned().sink(sink)
    }

    /// The stream after the exchange: every record is on the shard owning its key.
    pub(crate) fn exchanged(self) -> (DataStream<T>, KF) {
        let kf = self.key_fn.clone();
        (self.env.keyed_input(self.stream, self.key_fn), kf)
    }
}
