//! The consumer side of one or more edges on one shard: fair polling of many channels, with
//! per-channel blocking (for checkpoint barrier alignment) and end-of-input tracking.
//!
//! Startup rule: no data envelope is handed out until every channel has been heard from once
//! (and, for two-input segments, every channel of the other input too: the caller opens the
//! *gate*). Until then data envelopes are held, at most one per channel, and that channel is not
//! polled. So a shard never judges a record against a watermark that is low only because an
//! empty peer's `End` is still in flight: one ordered input gives the same late/not-late
//! decisions on every shard count.
//!
//! Wakers: glommio registers a clone of the polling task's waker with a shared channel every
//! time a poll finds it empty, and wakes (drops) only as many as items arrive; clones of the
//! task's own waker can so pile up until its 16-bit reference count overflows (a panic in
//! glommio). The channels are therefore polled with one [`InputWake`] per input — an `Arc`
//! holding a single clone of the task's waker — which also records that a channel woke the
//! task, so a task woken by a timer need not poll (and register with) empty channels again
//! ([`RingInputs::poll_if_woken`]).
//!
//! Invariants: a blocked, ended or holding channel is never polled; at most one envelope per
//! channel is held; channels are polled round-robin so no sender starves.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_lite::Stream;
use glommio::channels::shared_channel::ConnectedReceiver;

#[cfg(test)]
use super::ShardEnds;
use super::{Envelope, RingCredit};

/// A connected channel: the sending shard, the consumer end, the ring's in-flight credit.
pub type Channel<T> = (usize, ConnectedReceiver<Envelope<T>>, Arc<RingCredit>);

/// The waker the channels of one input are polled with (see the module docs).
struct InputWake {
    /// A channel woke the task since the last poll (or the input's state changed).
    woken: AtomicBool,
    task: Waker,
}

impl Wake for InputWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake_by_ref();
    }
}

/// Consumer ends of the channels feeding one input port of a segment.
pub struct RingInputs<T: Send + 'static> {
    wake: Option<Arc<InputWake>>,
    /// Poll the channels at the next [`RingInputs::poll_if_woken`] even without a wake.
    dirty: bool,
    channels: Vec<Channel<T>>,
    blocked: Vec<bool>,
    ended: Vec<bool>,
    open: usize,
    next: usize,
    closed_without_end: bool,
    heard: Vec<bool>,
    unheard: usize,
    held: Vec<Option<Envelope<T>>>,
    gate_open: bool,
}

impl<T: Send + 'static> RingInputs<T> {
    pub fn new(channels: Vec<Channel<T>>) -> Self {
        let n = channels.len();
        Self {
            wake: None,
            dirty: true,
            channels,
            blocked: vec![false; n],
            ended: vec![false; n],
            open: n,
            next: 0,
            closed_without_end: false,
            heard: vec![false; n],
            unheard: n,
            held: (0..n).map(|_| None).collect(),
            gate_open: true,
        }
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }

    /// The shard that feeds channel `index`.
    pub fn from_shard(&self, index: usize) -> usize {
        self.channels[index].0
    }

    /// True once every channel has delivered `End` (or closed).
    pub fn all_ended(&self) -> bool {
        self.open == 0
    }

    /// True if a channel closed without sending `End` (its producer failed).
    pub fn failed(&self) -> bool {
        self.closed_without_end
    }

    pub fn is_ended(&self, index: usize) -> bool {
        self.ended[index]
    }

    /// Stop (or resume) reading channel `index`.
    pub fn set_blocked(&mut self, index: usize, blocked: bool) {
        self.blocked[index] = blocked;
        self.dirty |= !blocked;
    }

    /// True when every channel has either delivered the barrier being aligned (is blocked) or
    /// ended: the barrier is aligned.
    pub fn all_blocked_or_ended(&self) -> bool {
        self.blocked.iter().zip(&self.ended).all(|(b, e)| *b || *e)
    }

    pub fn unblock_all(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
        self.dirty = true;
    }

    /// True once every channel has sent at least one envelope.
    pub fn all_heard(&self) -> bool {
        self.unheard == 0
    }

    /// Allow (or hold back) data once all channels are heard (two-input segments keep it closed
    /// until the other input is heard too). Open by default.
    pub fn set_gate(&mut self, open: bool) {
        self.dirty |= open && !self.gate_open;
        self.gate_open = open;
    }

    fn released(&self) -> bool {
        self.unheard == 0 && self.gate_open
    }

    fn take_held(&mut self) -> Option<(usize, Envelope<T>)> {
        let i = self.held.iter().position(Option::is_some)?;
        self.held[i].take().map(|e| self.taken(i, e))
    }

    /// Envelope `env` of channel `i` goes to the task: its records leave the ring's credit.
    #[inline]
    fn taken(&self, i: usize, env: Envelope<T>) -> (usize, Envelope<T>) {
        if let Envelope::Data(b) = &env {
            self.channels[i].2.taken(b.len() as u64);
        }
        (i, env)
    }

    /// Allow about `records` in flight over all channels of this input (split evenly over the
    /// channels still open, at least `floor` each).
    pub fn set_inflight_limit(&self, records: u64, floor: u64) {
        let open = (self.open as u64).max(1);
        let each = (records / open).max(floor);
        for (i, (_, _, credit)) in self.channels.iter().enumerate() {
            if !self.ended[i] {
                credit.set_limit(each);
            }
        }
    }

    /// Poll for the next envelope from any readable channel. `Ready(None)` when nothing is
    /// readable any more (all ended or blocked). A channel that closes without `End` is
    /// reported as `End` and remembered ([`RingInputs::failed`]).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Envelope<T>)>> {
        let wake = match &self.wake {
            Some(w) if w.task.will_wake(cx.waker()) => w.clone(),
            _ => {
                let w = Arc::new(InputWake {
                    woken: AtomicBool::new(false),
                    task: cx.waker().clone(),
                });
                self.wake = Some(w.clone());
                w
            }
        };
        wake.woken.store(false, Ordering::Release);
        self.dirty = false;
        let waker = Waker::from(wake);
        let polled = self.poll_channels(&mut Context::from_waker(&waker));
        // Whatever was taken, the next wait looks at the channels again.
        self.dirty |= polled.is_ready();
        polled
    }

    /// Like [`RingInputs::poll_next`], but `Pending` without touching the channels unless one
    /// woke the task since the last poll or the input's state changed (for a task woken by a
    /// timer: see the module docs).
    pub fn poll_if_woken(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Envelope<T>)>> {
        let woken = self.dirty || self.wake.as_ref().is_none_or(|w| w.woken.load(Ordering::Acquire));
        if !woken {
            return Poll::Pending;
        }
        self.poll_next(cx)
    }

    fn poll_channels(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Envelope<T>)>> {
        if self.released() {
            if let Some(h) = self.take_held() {
                return Poll::Ready(Some(h));
            }
        }
        let n = self.channels.len();
        let mut readable = false;
        let mut step = 0;
        while step < n {
            let i = (self.next + step) % n;
            step += 1;
            if self.blocked[i] || self.ended[i] || self.held[i].is_some() {
                continue;
            }
            readable = true;
            let env = match Pin::new(&mut self.channels[i].1).poll_next(cx) {
                Poll::Ready(Some(env)) => env,
                Poll::Ready(None) => {
                    self.closed_without_end = true;
                    Envelope::End
                }
                Poll::Pending => continue,
            };
            if !self.heard[i] {
                self.heard[i] = true;
                self.unheard -= 1;
            }
            if matches!(env, Envelope::End) {
                self.mark_ended(i);
            }
            if matches!(env, Envelope::Data(_)) && !self.released() {
                self.held[i] = Some(env);
                continue;
            }
            self.next = (i + 1) % n;
            return Poll::Ready(Some(self.taken(i, env)));
        }
        if self.released() {
            if let Some(h) = self.take_held() {
                return Poll::Ready(Some(h));
            }
        }
        if readable || self.held.iter().any(Option::is_some) {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    /// Wait for the next envelope (see [`RingInputs::poll_next`]).
    pub async fn next(&mut self) -> Option<(usize, Envelope<T>)> {
        futures_lite::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn mark_ended(&mut self, i: usize) {
        if !self.ended[i] {
            self.ended[i] = true;
            self.open -= 1;
        }
    }
}

impl<T: Send + 'static> RingInputs<T> {
    /// The connected channels, for merging several edges into one input.
    pub fn into_channels(self) -> Vec<Channel<T>> {
        self.channels
    }
}

/// The receiving task's side of buffer debloating: measures how fast the task consumes (records
/// per second of busy time: processing and sending on, not waiting for input) and turns it into
/// an in-flight bound for its input rings of about `target` worth of records.
pub struct InflightBound {
    target: Duration,
    /// At least this many records may be in flight per ring (two batches: the sender can refill
    /// while the receiver works).
    floor: u64,
    window_started: Instant,
    busy: Duration,
    records: u64,
    /// Smoothed consumption rate (records per busy second); 0 until measured.
    rate: f64,
}

/// How often the bound is recomputed.
const BOUND_WINDOW: Duration = Duration::from_millis(50);

impl InflightBound {
    /// `None` when off (`target_ms == 0`).
    pub fn new(target_ms: u64, batch_size: usize) -> Option<Self> {
        (target_ms > 0).then(|| Self {
            target: Duration::from_millis(target_ms),
            floor: 2 * batch_size as u64,
            window_started: Instant::now(),
            busy: Duration::ZERO,
            records: 0,
            rate: 0.0,
        })
    }

    /// One input step took `busy` and consumed `records`. Returns the new bound over all input
    /// channels (records) and the per-ring floor when it is due.
    pub fn step(&mut self, records: u64, busy: Duration) -> Option<(u64, u64)> {
        self.step_at(records, busy, Instant::now())
    }

    fn step_at(&mut self, records: u64, busy: Duration, now: Instant) -> Option<(u64, u64)> {
        self.records += records;
        self.busy += busy;
        if now.saturating_duration_since(self.window_started) < BOUND_WINDOW || self.busy < Duration::from_millis(5) {
            return None;
        }
        let rate = self.records as f64 / self.busy.as_secs_f64();
        self.rate = if self.rate == 0.0 { rate } else { 0.7 * self.rate + 0.3 * rate };
        self.window_started = now;
        self.busy = Duration::ZERO;
        self.records = 0;
        Some(((self.rate * self.target.as_secs_f64()) as u64, self.floor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use crate::ring::{build_edge, connect_receivers, connect_senders, EdgeKind};

    /// One ring (one shard, 64 batches), both ends connected.
    async fn connected_ring() -> (Vec<Option<crate::ring::RingSender<u64>>>, RingInputs<u64>) {
        let mut ends = build_edge::<u64>(EdgeKind::Hash, 1, 64).pop().unwrap();
        crate::shard::keep_awake_while(futures::future::join(
            async {
                let mut e = ShardEnds {
                    senders: ends.senders.take(),
                    receivers: None,
                    stats: ends.stats.clone(),
                };
                connect_senders::<u64>(&mut e, 1).await
            },
            async {
                let mut e = ShardEnds {
                    senders: None,
                    receivers: ends.receivers.take(),
                    stats: Vec::new(),
                };
                connect_receivers::<u64>(&mut e).await
            },
        ))
        .await
    }

    fn batch(n: usize) -> Envelope<u64> {
        let mut b = Batch::with_capacity(n);
        for i in 0..n as u64 {
            b.records.push(i);
            b.timestamps.push(0);
        }
        Envelope::Data(b)
    }

    /// A sender over its ring's in-flight bound waits until the receiver takes data; barriers
    /// and other envelopes are not held back by the bound.
    #[test]
    fn senders_wait_for_credit_and_resume_when_the_receiver_takes() {
        crate::testing::run_local(async {
            let (senders, mut inputs) = connected_ring().await;
            let tx = senders[0].as_ref().unwrap();
            inputs.set_inflight_limit(3_000, 2_048);
            for _ in 0..3 {
                tx.send(batch(1_024)).await.unwrap();
            }
            // 3 072 records in flight >= 3 000: the next batch waits, a barrier does not.
            assert!(futures::FutureExt::now_or_never(tx.send(batch(1_024))).is_none(), "over the bound");
            assert_eq!(tx.stats.full_events.load(std::sync::atomic::Ordering::Relaxed), 1, "counted as backpressure");
            futures::FutureExt::now_or_never(tx.send(Envelope::Barrier(1))).expect("barriers pass").unwrap();
            let (_, first) = inputs.next().await.unwrap();
            assert!(matches!(first, Envelope::Data(_)));
            tx.send(batch(1_024)).await.unwrap();
            let mut records = 1_024;
            while records < 4_096 {
                if let (_, Envelope::Data(b)) = inputs.next().await.unwrap() {
                    records += b.len();
                }
            }
            assert_eq!(tx.credit.in_flight(), 0);
        });
    }

    /// A receiver that takes nothing for a while cannot stop its ring through the bound: the
    /// sender waits at most `CREDIT_WAIT_MAX` per batch, then the capacity bounds the ring.
    #[test]
    fn the_bound_never_stops_a_ring() {
        crate::testing::run_local(async {
            let (senders, inputs) = connected_ring().await;
            let tx = senders[0].as_ref().unwrap();
            inputs.set_inflight_limit(1, 1);
            let started = Instant::now();
            for _ in 0..3 {
                tx.send(batch(10)).await.unwrap();
            }
            assert!(started.elapsed() >= crate::ring::CREDIT_WAIT_MAX * 2, "waited for credit, then sent");
            assert_eq!(tx.credit.in_flight(), 30);
        });
    }

    /// Polling an empty channel many times (a task woken again and again by timers) must not
    /// pile up clones of the task's own waker: glommio keeps one per pending poll, and the
    /// task's 16-bit reference count would overflow (a panic) after 32 767 of them. A task
    /// woken by something else does not touch the channels at all (`poll_if_woken`).
    #[test]
    fn polling_an_empty_channel_does_not_exhaust_the_task_waker() {
        crate::testing::run_local(async {
            let (senders, mut inputs) = connected_ring().await;
            futures::future::poll_fn(|cx| {
                for _ in 0..40_000 {
                    assert!(inputs.poll_next(cx).is_pending());
                }
                // Not woken by the channel since: the channels are left alone.
                assert!(inputs.poll_if_woken(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            senders[0].as_ref().unwrap().send(batch(3)).await.unwrap();
            let (_, env) = inputs.next().await.unwrap();
            assert!(matches!(env, Envelope::Data(b) if b.len() == 3));
        });
    }

    /// The bound is the measured consumption rate times the target, recomputed per window.
    #[test]
    fn bound_follows_the_consumption_rate() {
        let mut b = InflightBound::new(200, 1_024).unwrap();
        let t0 = b.window_started;
        assert_eq!(
            b.step_at(10_000, Duration::from_millis(10), t0 + Duration::from_millis(10)),
            None,
            "window not over"
        );
        // 100 000 records in 100 ms of busy time: 1 M/s; 200 ms of it is 200 000.
        let (limit, floor) = b.step_at(90_000, Duration::from_millis(90), t0 + BOUND_WINDOW).unwrap();
        assert_eq!((limit, floor), (200_000, 2_048));
        // Slower now (250 000/s): smoothed towards it.
        let (limit, _) = b.step_at(25_000, Duration::from_millis(100), t0 + BOUND_WINDOW * 2).unwrap();
        assert!((150_000..200_000).contains(&limit), "{limit}");
        assert!(InflightBound::new(0, 1_024).is_none(), "0 turns it off");
    }
}
