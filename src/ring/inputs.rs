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
//! Invariants: a blocked, ended or holding channel is never polled; at most one envelope per
//! channel is held; channels are polled round-robin so no sender starves.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::Stream;
use glommio::channels::shared_channel::ConnectedReceiver;

use super::Envelope;

/// Consumer ends of the channels feeding one input port of a segment.
pub struct RingInputs<T: Send + 'static> {
    channels: Vec<(usize, ConnectedReceiver<Envelope<T>>)>,
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
    pub fn new(channels: Vec<(usize, ConnectedReceiver<Envelope<T>>)>) -> Self {
        let n = channels.len();
        Self {
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
    }

    /// True when every channel has either delivered the barrier being aligned (is blocked) or
    /// ended: the barrier is aligned.
    pub fn all_blocked_or_ended(&self) -> bool {
        self.blocked.iter().zip(&self.ended).all(|(b, e)| *b || *e)
    }

    pub fn unblock_all(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// True once every channel has sent at least one envelope.
    pub fn all_heard(&self) -> bool {
        self.unheard == 0
    }

    /// Allow (or hold back) data once all channels are heard (two-input segments keep it closed
    /// until the other input is heard too). Open by default.
    pub fn set_gate(&mut self, open: bool) {
        self.gate_open = open;
    }

    fn released(&self) -> bool {
        self.unheard == 0 && self.gate_open
    }

    fn take_held(&mut self) -> Option<(usize, Envelope<T>)> {
        let i = self.held.iter().position(Option::is_some)?;
        self.held[i].take().map(|e| (i, e))
    }

    /// Poll for the next envelope from any readable channel. `Ready(None)` when nothing is
    /// readable any more (all ended or blocked). A channel that closes without `End` is
    /// reported as `End` and remembered ([`RingInputs::failed`]).
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Envelope<T>)>> {
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
            return Poll::Ready(Some((i, env)));
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
    pub fn into_channels(self) -> Vec<(usize, ConnectedReceiver<Envelope<T>>)> {
        self.channels
    }
}
