//! The task loops that drive a segment on one shard: [`run_source`] for segments that start at a
//! source, [`run_input`] / [`run_two_input`] for segments fed by rings.
//!
//! Each loop takes one input step (a source batch, or one envelope from a ring), pushes it
//! through the operator chain synchronously, then awaits every flusher (ring sends, sink writes)
//! before the next step. Waiting there is backpressure: the loop does not read more input while
//! downstream is full.
//!
//! Invariants:
//! - watermarks handed to the chain never decrease (combined by minimum over splits/channels);
//! - the chain sees the final watermark (`WATERMARK_MAX`) and then `end` exactly once, when
//!   every split or channel has ended;
//! - a channel that closes without `End` (a failed peer) fails this task too;
//! - time accounting is per input step, never per record: waiting for input is idle, a flush
//!   that had to wait (full ring, sink write) is backpressured, the rest busy (cumulative ns on
//!   the head operator's [`OperatorMetrics`]); the head also publishes its watermark and the
//!   input holding it back once per step.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::batch::{Batch, Mark};
use crate::checkpoint::runtime::{CheckpointControl, TaskMessage, TaskSnapshot, FINAL_EPOCH};
use crate::checkpoint::snapshot::{decode, encode};
use crate::error::{Result, WeirError};
use crate::operator::{Push, Push2};
use crate::ring::{Envelope, RingInputs};
use crate::shard::{Flusher, OperatorMetrics, ProcessingTimers};
use crate::source::{ReadStatus, SplitReader};
use crate::time::{now_ms, processing_now_ms, SplitWatermark, Timestamp, WatermarkCombiner, WatermarkStrategy, WATERMARK_MAX, WATERMARK_MIN};
use std::sync::Arc;

/// Shared pieces every segment loop needs.
pub struct SegmentEnv {
    pub name: String,
    pub shard: usize,
    pub batch_size: usize,
    pub flushers: Vec<Box<dyn Flusher>>,
    pub timers: ProcessingTimers,
    pub metrics: Arc<OperatorMetrics>,
    pub connected: bool,
    pub checkpoint: SegmentCheckpoint,
    /// Buffer debloating of the segment's input rings (`None`: off, or a source segment).
    pub inflight: Option<crate::ring::InflightBound>,
}

/// A segment task's part in checkpoints (inert when the job runs without them).
pub struct SegmentCheckpoint {
    control: Option<Arc<CheckpointControl>>,
    participant: usize,
    /// Two-phase-commit flushers: (index in `SegmentEnv::flushers`, sink operator name).
    committers: Vec<(usize, String)>,
    /// Newest epoch this task took part in (a source injected it / an input aligned it).
    last_epoch: u64,
    /// Newest completed epoch whose output this task's sinks committed.
    committed: u64,
    /// Barrier alignment in progress: (epoch, when its first barrier arrived).
    aligning: Option<(u64, Instant)>,
    /// Acknowledgements waiting for asynchronous snapshot parts, oldest first (sent in order).
    deferred: std::collections::VecDeque<DeferredAck>,
}

/// A snapshot taken at a barrier whose asynchronous parts are still being written.
struct DeferredAck {
    epoch: u64,
    snapshot: TaskSnapshot,
    alignment: Duration,
    snapshot_time: Duration,
    /// The same step in this thread's CPU time (wall time minus preemption by other threads).
    snapshot_cpu: Duration,
    aligned_at: Instant,
}

/// What a barrier arriving on one channel means for alignment.
enum Arrival {
    /// Older than what this task already did: ignore it.
    Stale,
    /// Count the channel (block it until aligned). `restart`: a newer epoch replaced the one
    /// being aligned (that one was aborted); unblock every channel first.
    Counted { restart: bool },
}

impl SegmentCheckpoint {
    pub fn new(control: Option<Arc<CheckpointControl>>, participant: usize, committers: Vec<(usize, String)>) -> Self {
        let start = control.as_ref().map_or(0, |c| c.completed());
        Self {
            control,
            participant,
            committers,
            last_epoch: start,
            committed: start,
            aligning: None,
            deferred: std::collections::VecDeque::new(),
        }
    }

    /// A source task: the epoch to inject now, if the coordinator opened a new one.
    #[inline]
    fn barrier_due(&self) -> Option<u64> {
        let t = self.control.as_ref()?.triggered();
        (t > self.last_epoch).then_some(t)
    }

    fn arrive(&mut self, epoch: u64) -> Arrival {
        match self.aligning {
            Some((current, _)) if epoch == current => Arrival::Counted { restart: false },
            Some((current, _)) if epoch < current => Arrival::Stale,
            _ if epoch <= self.last_epoch => Arrival::Stale,
            previous => {
                self.aligning = Some((epoch, Instant::now()));
                Arrival::Counted { restart: previous.is_some() }
            }
        }
    }

    /// The epoch being aligned, taken when `aligned` (every live channel delivered it).
    fn take_aligned(&mut self, aligned: bool) -> Option<(u64, Duration)> {
        if !aligned {
            return None;
        }
        self.aligning.take().map(|(e, since)| (e, since.elapsed()))
    }
}

/// A source split's checkpointed state: the reader's position and its watermark generator.
#[derive(serde::Serialize, serde::Deserialize)]
struct SplitCheckpoint {
    reader: Vec<u8>,
    max_timestamp: Timestamp,
    watermark: Timestamp,
    exhausted: bool,
}

impl SegmentEnv {
    /// Connect every flusher (once; later calls do nothing).
    pub async fn connect(&mut self) -> Result<()> {
        if self.connected {
            return Ok(());
        }
        self.connected = true;
        for r in super::keep_awake_while(join_all(self.flushers.iter_mut().map(|f| f.connect()))).await {
            r?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        for f in self.flushers.iter_mut() {
            if f.has_pending() {
                f.flush().await?;
            }
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        self.flush().await?;
        for f in self.flushers.iter_mut() {
            f.close().await?;
        }
        Ok(())
    }

    fn restore(&self) -> Option<&crate::checkpoint::runtime::RestoreSet> {
        self.checkpoint.control.as_ref().and_then(|c| c.restore.as_ref())
    }

    /// Barrier `epoch` reached this task (aligned over its inputs; `snapshot` holds what the
    /// task itself records, such as split positions): the chain snapshots its operators (the
    /// data path's stall) and forwards the barrier, then the task acknowledges.
    /// `alignment`: first to last barrier of the epoch at this task.
    async fn checkpoint_barrier(
        &mut self,
        epoch: u64,
        mut snapshot: TaskSnapshot,
        alignment: Duration,
        chain: impl FnOnce(u64, &mut TaskSnapshot),
    ) -> Result<()> {
        let control = self.checkpoint.control.as_ref().expect("barriers only flow with checkpoints on");
        snapshot.savepoint = control.is_savepoint(epoch);
        let started = Instant::now();
        let cpu_started = crate::shard::metrics::thread_cpu_time();
        chain(epoch, &mut snapshot);
        let snapshot_time = started.elapsed();
        let snapshot_cpu = crate::shard::metrics::thread_cpu_time().saturating_sub(cpu_started);
        self.acknowledge(epoch, snapshot, alignment, (snapshot_time, snapshot_cpu), started).await
    }

    /// Barrier `epoch` went through the chain into `snapshot`: send it on (flush), pre-commit
    /// the sinks, and acknowledge to the coordinator — at once, or once the asynchronous
    /// snapshot parts the operators began are complete (see [`Flusher::complete_snapshot`]).
    async fn acknowledge(
        &mut self,
        epoch: u64,
        mut snapshot: TaskSnapshot,
        alignment: Duration,
        (snapshot_time, snapshot_cpu): (Duration, Duration),
        aligned_at: Instant,
    ) -> Result<()> {
        self.flush().await?;
        crate::checkpoint::crash_point("barrier-sent");
        for (i, name) in &self.checkpoint.committers {
            if let Some(c) = self.flushers[*i].pre_commit(epoch).await? {
                snapshot.committables.push((name.clone(), c));
            }
        }
        self.checkpoint.last_epoch = epoch;
        self.checkpoint.deferred.push_back(DeferredAck {
            epoch,
            snapshot,
            alignment,
            snapshot_time,
            snapshot_cpu,
            aligned_at,
        });
        self.send_ready_acks().await
    }

    /// Send the acknowledgements whose asynchronous snapshot parts are complete, in epoch order
    /// (each call also lets the flushers advance those parts).
    async fn send_ready_acks(&mut self) -> Result<()> {
        let Some(control) = self.checkpoint.control.clone() else { return Ok(()) };
        while let Some(front) = self.checkpoint.deferred.front_mut() {
            let mut ready = true;
            for f in self.flushers.iter_mut() {
                ready &= f.complete_snapshot(front.epoch, &mut front.snapshot).await?;
            }
            if !ready {
                return Ok(());
            }
            let d = self.checkpoint.deferred.pop_front().expect("front exists");
            control.send(TaskMessage::Ack {
                epoch: d.epoch,
                participant: self.checkpoint.participant,
                shard: self.shard,
                snapshot: d.snapshot,
                alignment_ns: d.alignment.as_nanos() as u64,
                snapshot_ns: d.snapshot_time.as_nanos() as u64,
                snapshot_cpu_ns: d.snapshot_cpu.as_nanos() as u64,
                aligned_at: d.aligned_at,
            });
        }
        Ok(())
    }

    /// Commit the sinks' output up to the newest completed checkpoint (one atomic load when
    /// nothing new completed).
    /// Also sends acknowledgements whose asynchronous snapshot parts completed meanwhile.
    async fn commit_completed(&mut self) -> Result<()> {
        if !self.checkpoint.deferred.is_empty() {
            self.send_ready_acks().await?;
        }
        let Some(control) = &self.checkpoint.control else { return Ok(()) };
        let done = control.completed();
        if done > self.checkpoint.committed {
            for (i, _) in &self.checkpoint.committers {
                self.flushers[*i].commit(done).await?;
            }
            self.checkpoint.committed = done;
            if !self.checkpoint.committers.is_empty() {
                control.send(TaskMessage::Committed {
                    participant: self.checkpoint.participant,
                    epoch: done,
                });
            }
        }
        Ok(())
    }

    /// End of input: without checkpoints, close. With them, pre-commit what is left at
    /// [`FINAL_EPOCH`], report the task finished with its final `snapshot`, wait until the
    /// job's final checkpoint is complete, commit, close.
    async fn finish(&mut self, mut snapshot: TaskSnapshot) -> Result<()> {
        let Some(control) = self.checkpoint.control.clone() else {
            return self.close().await;
        };
        self.flush().await?;
        // Earlier epochs' acknowledgements go first (their asynchronous parts make progress
        // with every call).
        while !self.checkpoint.deferred.is_empty() {
            self.send_ready_acks().await?;
            if !self.checkpoint.deferred.is_empty() {
                if control.cancelled() {
                    return Err(WeirError::Shard {
                        shard: self.shard,
                        message: format!("segment {}: the job failed while a snapshot was being written", self.name),
                    });
                }
                futures_lite::future::yield_now().await;
            }
        }
        for (i, name) in &self.checkpoint.committers {
            if let Some(c) = self.flushers[*i].pre_commit(FINAL_EPOCH).await? {
                snapshot.committables.push((name.clone(), c));
            }
        }
        control.send(TaskMessage::Finished {
            participant: self.checkpoint.participant,
            shard: self.shard,
            snapshot,
        });
        if !self.checkpoint.committers.is_empty() {
            while control.completed() < FINAL_EPOCH {
                if control.cancelled() {
                    return Err(WeirError::Shard {
                        shard: self.shard,
                        message: format!("segment {}: the job failed before its final checkpoint; output stays uncommitted", self.name),
                    });
                }
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            self.commit_completed().await?;
        }
        self.close().await
    }

    fn fire_processing_timers(&self, chain_time: &mut dyn FnMut(Timestamp)) {
        if self.timers.earliest().is_none() {
            return;
        }
        let now = processing_now_ms();
        if self.timers.pop_due(now) {
            chain_time(now);
        }
    }
}

/// Time accounting of one segment task, lapped a few times per input step (never per record):
/// each lap adds the time since the previous lap to one of the head operator's busy, idle or
/// backpressured counters. Off (no clock reads) when instrumentation is switched off.
struct StepClock {
    last: Option<Instant>,
}

impl StepClock {
    fn new() -> Self {
        Self {
            last: super::metrics::instrumentation().then(Instant::now),
        }
    }

    /// Add the time since the previous lap to `counter`.
    #[inline]
    fn lap(&mut self, counter: &AtomicU64) {
        if let Some(last) = &mut self.last {
            let now = Instant::now();
            OperatorMetrics::add(counter, now.duration_since(*last).as_nanos() as u64);
            *last = now;
        }
    }

    /// Input arrived: the wait since the previous lap was idle time; a new step starts now, and
    /// its input entered the job now (a received batch then sets its own ingest time).
    #[inline]
    fn input_arrived(&mut self, metrics: &OperatorMetrics) {
        self.lap(&metrics.idle_ns);
        if let Some(now) = self.last {
            super::metrics::set_current_ingest_ns(super::metrics::instant_ns(now));
        }
    }

    /// A flush ended: its time is backpressure if it had to wait, else busy (sending work).
    #[inline]
    fn flushed(&mut self, metrics: &OperatorMetrics, (result, waited): (Result<()>, bool)) -> Result<()> {
        self.lap(if waited { &metrics.backpressured_ns } else { &metrics.busy_ns });
        result
    }

    /// Forget the time since the previous lap (other tasks of the shard ran).
    #[inline]
    fn skip(&mut self) {
        if let Some(last) = &mut self.last {
            *last = Instant::now();
        }
    }
}

/// A batch from a ring carries its ingest time: the records being processed now entered then.
#[inline]
fn received_ingest(ingest_ns: u64) {
    if ingest_ns != 0 {
        super::metrics::set_current_ingest_ns(ingest_ns);
    }
}

/// Runs a future and reports whether it ever had to wait (returned `Pending`).
struct WaitedOn<F> {
    inner: F,
    waited: bool,
}

impl<F> WaitedOn<F> {
    fn new(inner: F) -> Self {
        Self { inner, waited: false }
    }
}

impl<F: std::future::Future + Unpin> std::future::Future for WaitedOn<F> {
    type Output = (F::Output, bool);
    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        match std::pin::Pin::new(&mut self.inner).poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready((v, self.waited)),
            std::task::Poll::Pending => {
                self.waited = true;
                std::task::Poll::Pending
            }
        }
    }
}

/// The timestamp of records from a source without event time.
pub const NO_EVENT_TIME: Timestamp = 0;

/// How a source stream gets its event time.
pub enum EventTime<TF, KF> {
    /// Timestamps from the records, watermarks by the strategy, per split. With `keep`, a
    /// filter right after the watermark generator (Flink's chain `assigner → filter`): a record
    /// it rejects still advances its split's watermark, then is dropped from the batch.
    Assigned {
        strategy: WatermarkStrategy,
        timestamp_fn: TF,
        keep: Option<KF>,
    },
    /// No event time: timestamps are [`NO_EVENT_TIME`] (0), the watermark only moves at end of input.
    None,
}

struct SplitState<T> {
    /// Index of the split in its source (stable across shard counts).
    id: usize,
    reader: Box<dyn SplitReader<T>>,
    watermark: SplitWatermark,
    live: bool,
    idle: bool,
    idle_since_ms: Option<Timestamp>,
    retry_at_ms: Timestamp,
}

/// Drive a source segment: read this shard's splits round-robin, assign timestamps and
/// per-record watermarks, push through the chain.
pub async fn run_source<T, TF, KF>(
    readers: Vec<(usize, Box<dyn SplitReader<T>>)>,
    event_time: EventTime<TF, KF>,
    mut chain: Box<dyn Push<T>>,
    mut env: SegmentEnv,
) -> Result<()>
where
    TF: FnMut(&T) -> Timestamp,
    KF: FnMut(&T) -> bool,
{
    env.connect().await?;
    let (strategy, mut timestamp_fn, mut keep) = match event_time {
        EventTime::Assigned { strategy, timestamp_fn, keep } => (Some(strategy), Some(timestamp_fn), keep),
        EventTime::None => (None, None, None),
    };
    let default_strategy = WatermarkStrategy::monotonous();
    let mut splits: Vec<SplitState<T>> = readers
        .into_iter()
        .map(|(id, reader)| SplitState {
            id,
            reader,
            watermark: SplitWatermark::new(strategy.as_ref().unwrap_or(&default_strategy)),
            live: true,
            idle: false,
            idle_since_ms: None,
            retry_at_ms: 0,
        })
        .collect();
    let _ = env.metrics.input_names.set(splits.iter().map(|s| s.reader.describe()).collect());
    let mut combiner = WatermarkCombiner::new(splits.len());
    if let Some(restore) = env.restore() {
        for (i, s) in splits.iter_mut().enumerate() {
            let Some(bytes) = restore.position(&env.name, s.id) else { continue };
            let p: SplitCheckpoint = decode(bytes, &format!("position of split {}", s.reader.describe()))?;
            if p.exhausted {
                s.live = false;
                s.watermark.finish();
                combiner.update(i, WATERMARK_MAX);
            } else {
                s.reader.seek(&p.reader)?;
                s.watermark.restore(p.max_timestamp, p.watermark);
                combiner.update(i, p.watermark);
            }
        }
    }
    for s in splits.iter_mut().filter(|s| s.live) {
        s.reader.open().await?;
    }
    let mut batch: Batch<T> = Batch::with_capacity(env.batch_size);
    let mut next = 0usize;
    let idle_timeout = strategy.and_then(|s| s.idle_timeout_ms);
    let mut clock = StepClock::new();

    while splits.iter().any(|s| s.live) {
        if let Some(epoch) = env.checkpoint.barrier_due() {
            // Between two reads: every record read so far was pushed, none after.
            let mut snapshot = TaskSnapshot::default();
            match split_positions(&splits, &env.name) {
                Ok(positions) => snapshot.positions = positions,
                Err(e) => snapshot.decline(&env.name, &e.to_string()),
            }
            env.checkpoint_barrier(epoch, snapshot, Duration::ZERO, |e, s| chain.barrier(e, s)).await?;
            clock.skip();
        }
        // Pick the next live split that is not waiting out an idle retry.
        let now = now_ms();
        let n = splits.len();
        let pick = (0..n).map(|k| (next + k) % n).find(|&i| splits[i].live && splits[i].retry_at_ms <= now);
        let Some(i) = pick else {
            // Every live split is idle: sleep until the earliest retry or processing timer.
            let mut wake = splits.iter().filter(|s| s.live).map(|s| s.retry_at_ms).min().unwrap_or(now + 1);
            if let Some(t) = env.timers.earliest() {
                wake = wake.min(t);
            }
            let longest = if env.checkpoint.deferred.is_empty() { 100 } else { SNAPSHOT_POLL_MS };
            glommio::timer::sleep(Duration::from_millis((wake - now).clamp(1, longest) as u64)).await;
            clock.input_arrived(&env.metrics);
            env.fire_processing_timers(&mut |t| chain.processing_time(t));
            clock.lap(&env.metrics.busy_ns);
            let flushed = WaitedOn::new(std::pin::pin!(env.flush())).await;
            clock.flushed(&env.metrics, flushed)?;
            env.commit_completed().await?;
            continue;
        };
        next = (i + 1) % n;
        let mut became_idle = false;
        let split = &mut splits[i];
        let start = batch.records.len();
        let status = split.reader.read(&mut batch.records, env.batch_size).await?;
        let read = batch.records.len() - start;
        if read == 0 {
            clock.lap(&env.metrics.idle_ns);
        } else {
            clock.input_arrived(&env.metrics);
        }
        let provided = split.reader.source_watermark();
        match &mut timestamp_fn {
            Some(tf) => {
                for idx in start..batch.records.len() {
                    let ts = tf(&batch.records[idx]);
                    batch.timestamps.push(ts);
                    // A split that carries its own watermarks keeps the one it had before
                    // this read for its records; the new one applies after them (below).
                    let split_wm = if provided.is_some() {
                        split.watermark.current()
                    } else {
                        split.watermark.observe(ts)
                    };
                    let combined = if split_wm > combiner.input(i) {
                        combiner.update(i, split_wm)
                    } else {
                        combiner.combined()
                    };
                    push_mark(&mut batch.marks, idx + 1, combined);
                }
            }
            None => batch.timestamps.resize(batch.records.len(), NO_EVENT_TIME),
        }
        if let Some(keep) = &mut keep {
            drop_rejected(&mut batch, start, keep);
        }
        OperatorMetrics::add(&env.metrics.records_out, split.reader.rows_in(&batch.records[start..]));
        if let Some(wm) = provided {
            if wm > split.watermark.current() {
                split.watermark.restore(split.watermark.max_timestamp(), wm);
                let c = combiner.update(i, wm);
                if timestamp_fn.is_some() {
                    push_mark(&mut batch.marks, batch.records.len(), c);
                }
            }
        }
        if read > 0 {
            split.idle_since_ms = None;
            if split.idle {
                split.idle = false;
                push_mark(&mut batch.marks, batch.records.len(), combiner.set_idle(i, false));
            }
        }
        match status {
            ReadStatus::More => {}
            ReadStatus::Exhausted => {
                split.live = false;
                split.watermark.finish();
                let c = combiner.update(i, WATERMARK_MAX);
                if timestamp_fn.is_some() {
                    push_mark(&mut batch.marks, batch.records.len(), c);
                }
            }
            ReadStatus::Idle { retry_after_ms } => {
                let now = now_ms();
                split.retry_at_ms = now + retry_after_ms as i64;
                let since = *split.idle_since_ms.get_or_insert(now);
                if let Some(timeout) = idle_timeout {
                    if now - since >= timeout && !split.idle {
                        split.idle = true;
                        push_mark(&mut batch.marks, batch.records.len(), combiner.set_idle(i, true));
                        became_idle = splits.iter().all(|s| !s.live || s.idle);
                    }
                }
            }
        }
        if !batch.is_void() {
            batch.check();
            chain.push(&mut batch);
            batch.clear();
        }
        if became_idle {
            chain.idle();
        }
        env.fire_processing_timers(&mut |t| chain.processing_time(t));
        if timestamp_fn.is_some() {
            env.metrics.set_watermark(combiner.combined(), combiner.holding_back());
        }
        clock.lap(&env.metrics.busy_ns);
        let flushed = WaitedOn::new(std::pin::pin!(env.flush())).await;
        clock.flushed(&env.metrics, flushed)?;
        env.commit_completed().await?;
        futures_lite::future::yield_now().await;
        clock.skip();
    }
    chain.watermark(WATERMARK_MAX);
    env.metrics.set_watermark(WATERMARK_MAX, None);
    chain.end();
    let mut last = TaskSnapshot::default();
    if env.checkpoint.control.is_some() {
        last.positions = split_positions(&splits, &env.name)?;
    }
    env.finish(last).await
}

/// Every split's checkpoint entry: (source name, split id, encoded [`SplitCheckpoint`]).
fn split_positions<T>(splits: &[SplitState<T>], source: &str) -> Result<Vec<(String, usize, Vec<u8>)>> {
    splits
        .iter()
        .map(|s| {
            let reader = if s.live { s.reader.position()? } else { Vec::new() };
            let entry = SplitCheckpoint {
                reader,
                max_timestamp: s.watermark.max_timestamp(),
                watermark: s.watermark.current(),
                exhausted: !s.live,
            };
            Ok((source.to_string(), s.id, encode(&entry)))
        })
        .collect()
}

/// Remove the records from `start` on that `keep` rejects, after their watermarks were marked:
/// a mark after a removed record moves to before the next kept one (of marks that meet at
/// one index, the last — the highest — stays), so the watermark advances exactly as if the
/// removed records had passed.
fn drop_rejected<T>(batch: &mut Batch<T>, start: usize, keep: &mut impl FnMut(&T) -> bool) {
    let len = batch.records.len();
    let mut kept = start;
    let mut mark = batch.marks.partition_point(|m| (m.index as usize) <= start);
    for i in start..len {
        // Marks "before record i" get the number of records kept so far.
        while mark < batch.marks.len() && batch.marks[mark].index as usize == i {
            batch.marks[mark].index = kept as u32;
            mark += 1;
        }
        if keep(&batch.records[i]) {
            batch.records.swap(kept, i);
            batch.timestamps.swap(kept, i);
            kept += 1;
        }
    }
    for m in &mut batch.marks[mark..] {
        debug_assert_eq!(m.index as usize, len, "a mark beyond the batch");
        m.index = kept as u32;
    }
    batch.records.truncate(kept);
    batch.timestamps.truncate(kept);
    batch.marks.dedup_by(|later, earlier| {
        if later.index == earlier.index {
            earlier.watermark = later.watermark;
            true
        } else {
            false
        }
    });
}

/// Append a mark "before record `index`, the watermark is `wm`" if it advances.
#[inline]
fn push_mark(marks: &mut Vec<Mark>, index: usize, wm: Timestamp) {
    let index = index as u32;
    match marks.last_mut() {
        Some(last) if last.watermark >= wm => {}
        Some(last) if last.index == index => last.watermark = wm,
        _ => {
            if wm > WATERMARK_MIN {
                marks.push(Mark { index, watermark: wm })
            }
        }
    }
}

/// Rewrite the marks of a batch from channel `channel` into the combined watermark domain.
fn combine_marks(marks: &mut Vec<Mark>, combiner: &mut WatermarkCombiner, channel: usize, last_combined: &mut Timestamp) {
    let mut out = 0;
    for k in 0..marks.len() {
        let m = marks[k];
        let c = combiner.update(channel, m.watermark);
        if c > *last_combined {
            *last_combined = c;
            marks[out] = Mark { index: m.index, watermark: c };
            out += 1;
        }
    }
    marks.truncate(out);
    // Marks at equal indexes may have been produced; keep the last of each index.
    marks.dedup_by(|later, earlier| {
        if later.index == earlier.index {
            earlier.watermark = later.watermark;
            true
        } else {
            false
        }
    });
}

/// Input state shared by the one- and two-input loops.
struct InputState {
    combiner: WatermarkCombiner,
    last_combined: Timestamp,
}

impl InputState {
    fn new(channels: usize) -> Self {
        Self {
            combiner: WatermarkCombiner::new(channels),
            last_combined: WATERMARK_MIN,
        }
    }

    /// Mark channel `c` idle; returns the new combined watermark if it advanced.
    fn set_idle(&mut self, c: usize) -> Option<Timestamp> {
        let combined = self.combiner.set_idle(c, true);
        if combined > self.last_combined {
            self.last_combined = combined;
            Some(combined)
        } else {
            None
        }
    }

    /// Update channel `c` to `wm`; returns the new combined watermark if it advanced.
    fn advance(&mut self, c: usize, wm: Timestamp) -> Option<Timestamp> {
        let combined = self.combiner.update(c, wm);
        if combined > self.last_combined {
            self.last_combined = combined;
            Some(combined)
        } else {
            None
        }
    }
}

/// How often a task waiting for input checks on snapshot parts being written in the background
/// (an acknowledgement waits for them; see `Flusher::complete_snapshot`).
const SNAPSHOT_POLL_MS: i64 = 1;

/// The next envelope, or `None` when the earliest processing timer is due — or, while
/// `polling` (acknowledgements wait for background snapshot parts), after at most
/// [`SNAPSHOT_POLL_MS`].
async fn next_or_timer<T: Send + 'static>(inputs: &mut RingInputs<T>, timers: &ProcessingTimers, polling: bool) -> Option<Option<(usize, Envelope<T>)>> {
    let poll_at = polling.then(|| now_ms() + SNAPSHOT_POLL_MS);
    let earliest = match (timers.earliest(), poll_at) {
        (Some(t), Some(p)) => Some(t.min(p)),
        (t, p) => t.or(p),
    };
    match earliest {
        None => Some(inputs.next().await),
        Some(deadline) => {
            use std::future::Future;
            let wait = crate::time::processing_clock().wait_ms(deadline);
            let mut timer = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(wait)));
            // Channels are polled again only when one woke the task, not on every timer wake-up.
            futures_lite::future::poll_fn(|cx| match inputs.poll_if_woken(cx) {
                std::task::Poll::Ready(env) => std::task::Poll::Ready(Some(env)),
                std::task::Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await
        }
    }
}

/// Drive a segment fed by the rings of one edge.
pub async fn run_input<T: Send + 'static>(mut inputs: RingInputs<T>, mut chain: Box<dyn Push<T>>, mut env: SegmentEnv) -> Result<()> {
    env.connect().await?;
    let mut state = InputState::new(inputs.len());
    let mut clock = StepClock::new();
    loop {
        let next = next_or_timer(&mut inputs, &env.timers, !env.checkpoint.deferred.is_empty()).await;
        clock.input_arrived(&env.metrics);
        let Some(next) = next else {
            env.fire_processing_timers(&mut |t| chain.processing_time(t));
            clock.lap(&env.metrics.busy_ns);
            let flushed = WaitedOn::new(std::pin::pin!(env.flush())).await;
            clock.flushed(&env.metrics, flushed)?;
            env.commit_completed().await?;
            continue;
        };
        let Some((c, envelope)) = next else { break };
        let step_started = Instant::now();
        let mut step_records = 0;
        match envelope {
            Envelope::Data(mut batch) => {
                step_records = batch.len() as u64;
                OperatorMetrics::add(&env.metrics.records_in, batch.len() as u64);
                received_ingest(batch.ingest_ns);
                combine_marks(&mut batch.marks, &mut state.combiner, c, &mut state.last_combined);
                chain.push(&mut batch);
            }
            Envelope::Watermark(wm) => {
                if let Some(w) = state.advance(c, wm) {
                    chain.watermark(w);
                }
            }
            Envelope::Barrier(epoch) => match env.checkpoint.arrive(epoch) {
                Arrival::Stale => {}
                Arrival::Counted { restart } => {
                    if restart {
                        inputs.unblock_all();
                    }
                    inputs.set_blocked(c, true);
                }
            },
            Envelope::Idle => {
                let before = state.combiner.combined();
                let after = state.combiner.set_idle(c, true);
                if after > before && after > state.last_combined {
                    state.last_combined = after;
                    chain.watermark(after);
                }
                if state.combiner.all_idle() {
                    chain.idle();
                }
            }
            Envelope::End => {
                if let Some(w) = state.advance(c, WATERMARK_MAX) {
                    chain.watermark(w);
                }
                if inputs.all_ended() {
                    break;
                }
            }
        }
        if let Some((epoch, alignment)) = env.checkpoint.take_aligned(inputs.all_blocked_or_ended()) {
            inputs.unblock_all();
            env.checkpoint_barrier(epoch, TaskSnapshot::default(), alignment, |e, s| chain.barrier(e, s))
                .await?;
        }
        env.fire_processing_timers(&mut |t| chain.processing_time(t));
        env.metrics.set_watermark(state.last_combined, state.combiner.holding_back());
        clock.lap(&env.metrics.busy_ns);
        let flushed = WaitedOn::new(std::pin::pin!(env.flush())).await;
        clock.flushed(&env.metrics, flushed)?;
        env.commit_completed().await?;
        if let Some((limit, floor)) = env.inflight.as_mut().and_then(|b| b.step(step_records, step_started.elapsed())) {
            inputs.set_inflight_limit(limit, floor);
        }
    }
    if inputs.failed() {
        return Err(WeirError::Shard {
            shard: env.shard,
            message: format!("segment {}: an input ring closed before end of input", env.name),
        });
    }
    env.metrics.watermark.store(WATERMARK_MAX as u64, std::sync::atomic::Ordering::Relaxed);
    chain.end();
    env.finish(TaskSnapshot::default()).await
}

/// Drive a two-input segment (joins): channels of both inputs share one watermark combiner.
pub async fn run_two_input<L: Send + 'static, R: Send + 'static>(
    mut left: RingInputs<L>,
    mut right: RingInputs<R>,
    mut chain: Box<dyn Push2<L, R>>,
    mut env: SegmentEnv,
) -> Result<()> {
    env.connect().await?;
    let nl = left.len();
    let mut state = InputState::new(nl + right.len());
    let mut clock = StepClock::new();
    enum Step<L, R> {
        Left(usize, Envelope<L>),
        Right(usize, Envelope<R>),
        Done,
        /// No input within [`SNAPSHOT_POLL_MS`] while snapshot parts are being written.
        Poll,
    }
    loop {
        let polling = !env.checkpoint.deferred.is_empty();
        let mut timer = std::pin::pin!(glommio::timer::sleep(Duration::from_millis(SNAPSHOT_POLL_MS as u64)));
        let step = futures_lite::future::poll_fn(|cx| loop {
            use std::future::Future;
            use std::task::Poll;
            // Data flows only once every channel of both inputs has been heard from.
            let gate = left.all_heard() && right.all_heard();
            left.set_gate(gate);
            right.set_gate(gate);
            let mut any = false;
            // While snapshot parts are pending a timer wakes the task too: then channels are
            // polled again only when one of them woke it (see `RingInputs::poll_if_woken`).
            let l = if polling { left.poll_if_woken(cx) } else { left.poll_next(cx) };
            match l {
                Poll::Ready(Some((c, e))) => return Poll::Ready(Step::Left(c, e)),
                Poll::Ready(None) => {}
                Poll::Pending => any = true,
            }
            let r = if polling { right.poll_if_woken(cx) } else { right.poll_next(cx) };
            match r {
                Poll::Ready(Some((c, e))) => return Poll::Ready(Step::Right(c, e)),
                Poll::Ready(None) => {}
                Poll::Pending => any = true,
            }
            if !gate && left.all_heard() && right.all_heard() {
                continue; // the gate can open now: poll again to release held data
            }
            if !any {
                return Poll::Ready(Step::Done);
            }
            if polling && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Step::Poll);
            }
            return Poll::Pending;
        })
        .await;
        clock.input_arrived(&env.metrics);
        let step_started = Instant::now();
        let step_records = match &step {
            Step::Left(_, Envelope::Data(b)) => b.len() as u64,
            Step::Right(_, Envelope::Data(b)) => b.len() as u64,
            _ => 0,
        };
        match step {
            Step::Done => break,
            Step::Poll => {
                clock.lap(&env.metrics.busy_ns);
                env.commit_completed().await?;
                continue;
            }
            Step::Left(c, Envelope::Data(mut b)) => {
                OperatorMetrics::add(&env.metrics.records_in, b.len() as u64);
                received_ingest(b.ingest_ns);
                combine_marks(&mut b.marks, &mut state.combiner, c, &mut state.last_combined);
                chain.push_left(&mut b);
            }
            Step::Right(c, Envelope::Data(mut b)) => {
                OperatorMetrics::add(&env.metrics.records_in, b.len() as u64);
                received_ingest(b.ingest_ns);
                combine_marks(&mut b.marks, &mut state.combiner, nl + c, &mut state.last_combined);
                chain.push_right(&mut b);
            }
            Step::Left(c, Envelope::Watermark(w)) => {
                if let Some(w) = state.advance(c, w) {
                    chain.watermark(w);
                }
            }
            Step::Right(c, Envelope::Watermark(w)) => {
                if let Some(w) = state.advance(nl + c, w) {
                    chain.watermark(w);
                }
            }
            Step::Left(c, Envelope::End) => {
                if let Some(w) = state.advance(c, WATERMARK_MAX) {
                    chain.watermark(w);
                }
            }
            Step::Right(c, Envelope::End) => {
                if let Some(w) = state.advance(nl + c, WATERMARK_MAX) {
                    chain.watermark(w);
                }
            }
            Step::Left(c, Envelope::Barrier(epoch)) => {
                if let Arrival::Counted { restart } = env.checkpoint.arrive(epoch) {
                    if restart {
                        left.unblock_all();
                        right.unblock_all();
                    }
                    left.set_blocked(c, true);
                }
            }
            Step::Right(c, Envelope::Barrier(epoch)) => {
                if let Arrival::Counted { restart } = env.checkpoint.arrive(epoch) {
                    if restart {
                        left.unblock_all();
                        right.unblock_all();
                    }
                    right.set_blocked(c, true);
                }
            }
            Step::Left(c, Envelope::Idle) => {
                if let Some(w) = state.set_idle(c) {
                    chain.watermark(w);
                }
                if state.combiner.all_idle() {
                    chain.idle();
                }
            }
            Step::Right(c, Envelope::Idle) => {
                if let Some(w) = state.set_idle(nl + c) {
                    chain.watermark(w);
                }
                if state.combiner.all_idle() {
                    chain.idle();
                }
            }
        }
        if let Some((epoch, alignment)) = env.checkpoint.take_aligned(left.all_blocked_or_ended() && right.all_blocked_or_ended()) {
            left.unblock_all();
            right.unblock_all();
            env.checkpoint_barrier(epoch, TaskSnapshot::default(), alignment, |e, s| chain.barrier(e, s))
                .await?;
        }
        env.fire_processing_timers(&mut |t| chain.processing_time(t));
        env.metrics.set_watermark(state.last_combined, state.combiner.holding_back());
        clock.lap(&env.metrics.busy_ns);
        let flushed = WaitedOn::new(std::pin::pin!(env.flush())).await;
        clock.flushed(&env.metrics, flushed)?;
        env.commit_completed().await?;
        if let Some((limit, floor)) = env.inflight.as_mut().and_then(|b| b.step(step_records, step_started.elapsed())) {
            // Split over both inputs by their channel counts.
            let n = (left.len() + right.len()).max(1) as u64;
            left.set_inflight_limit(limit * left.len() as u64 / n, floor);
            right.set_inflight_limit(limit * right.len() as u64 / n, floor);
        }
    }
    if left.failed() || right.failed() {
        return Err(WeirError::Shard {
            shard: env.shard,
            message: format!("segment {}: an input ring closed before end of input", env.name),
        });
    }
    chain.end();
    env.finish(TaskSnapshot::default()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_records_still_advance_the_watermark_before_the_next_kept_one() {
        // Records 10..15 of a read starting at 1 (record 0 and its mark came from a read
        // before); odd values are rejected.
        let mut batch = Batch::<u32> {
            records: vec![0, 10, 11, 12, 13, 15, 14],
            timestamps: vec![0, 10, 11, 12, 13, 15, 14],
            marks: vec![
                Mark { index: 1, watermark: 0 },
                Mark { index: 2, watermark: 10 },
                Mark { index: 3, watermark: 11 },
                Mark { index: 4, watermark: 12 },
                Mark { index: 5, watermark: 13 },
                Mark { index: 6, watermark: 15 },
            ],
            ..Default::default()
        };
        drop_rejected(&mut batch, 1, &mut |r: &u32| r.is_multiple_of(2));
        assert_eq!(batch.records, vec![0, 10, 12, 14]);
        assert_eq!(batch.timestamps, vec![0, 10, 12, 14]);
        // 11 (dropped) moves the watermark to 11 before 12; 13 and 15 (dropped) to 15 before 14.
        assert_eq!(
            batch.marks,
            vec![
                Mark { index: 1, watermark: 0 },
                Mark { index: 2, watermark: 11 },
                Mark { index: 3, watermark: 15 },
            ]
        );
        // A rejected last record: its mark lands after the last kept record.
        let mut batch = Batch::<u32> {
            records: vec![2, 3],
            timestamps: vec![2, 3],
            marks: vec![Mark { index: 1, watermark: 2 }, Mark { index: 2, watermark: 3 }],
            ..Default::default()
        };
        drop_rejected(&mut batch, 0, &mut |r: &u32| r.is_multiple_of(2));
        assert_eq!(batch.records, vec![2]);
        assert_eq!(batch.marks, vec![Mark { index: 1, watermark: 3 }]);
    }

    #[test]
    fn combine_marks_takes_min_over_channels() {
        let mut comb = WatermarkCombiner::new(2);
        let mut last = WATERMARK_MIN;
        comb.update(1, 5);
        let mut marks = vec![
            Mark { index: 0, watermark: 3 },
            Mark { index: 1, watermark: 7 },
            Mark { index: 2, watermark: 9 },
        ];
        combine_marks(&mut marks, &mut comb, 0, &mut last);
        assert_eq!(marks, vec![Mark { index: 0, watermark: 3 }, Mark { index: 1, watermark: 5 }]);
        assert_eq!(last, 5);
    }
}
