//! The consumer side of one or more edges on one shard: fair polling of many channels, with
//! per-channel blocking (for checkpoint barrier alignment) and end-of-input tracking.
//!
//! Invariants: a blocked or ended channel is never polled; channels are polled round-robin so
//! no sender starves.

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

    pub fn unblock_all(&mut self) {
        self.blocked.iter_mut().for_each(|b| *b = false);
    }

    /// Poll for the next envelope from any readable channel. `Ready(None)` when nothing is
    /// readable any more (all ended or blocked). A channel that closes without `End` is
    /// reported as `End`.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<(usize, Envelope<T>)>> {
        let n = self.channels.len();
        let mut readable = false;
        for step in 0..n {
            let i = (self.next + step) % n;
            if self.blocked[i] || self.ended[i] {
                continue;
            }
            readable = true;
            match Pin::new(&mut self.channels[i].1).poll_next(cx) {
                Poll::Ready(Some(env)) => {
                    if matches!(env, Envelope::End) {
                        self.mark_ended(i);
                    }
                    self.next = (i + 1) % n;
                    return Poll::Ready(Some((i, env)));
                }
                Poll::Ready(None) => {
                    self.closed_without_end = true;
                    self.mark_ended(i);
                    return Poll::Ready(Some((i, Envelope::End)));
                }
                Poll::Pending => {}
            }
        }
        if readable {
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
