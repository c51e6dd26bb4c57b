//! Operators: the per-shard, single-threaded code that records flow through.
//!
//! Within a shard a *segment* (the operators between two exchanges) is a push-based chain: each
//! operator owns its downstream as a `Box<dyn Push<_>>` and hands it whole batches. Dynamic
//! dispatch happens once per batch per operator; the per-record work inside an operator is
//! monomorphised over the user's closures, so there is no virtual call per record.
//!
//! Invariants every operator keeps:
//! - it forwards a watermark `w` only after everything it emits in response to `w` (window
//!   results fired by `w` precede the mark `w` in its output);
//! - it never buffers output beyond one call: output produced during a call is pushed downstream
//!   before the call returns (in batches of at most `batch_size` records);
//! - `end` is called once, after the final watermark, and is forwarded downstream.

pub mod aggregate;
pub mod exchange;
pub mod join;
pub mod process;
pub mod stateless;
pub mod window;

use crate::batch::Batch;
use crate::checkpoint::runtime::TaskSnapshot;
use crate::time::Timestamp;

/// The input side of an operator (or a sink) within a segment.
pub trait Push<T> {
    /// Records with their timestamps and watermark marks, in order. The callee may drain the
    /// batch; the caller clears it afterwards.
    fn push(&mut self, batch: &mut Batch<T>);
    /// The input watermark advanced to `wm` with no records.
    fn watermark(&mut self, wm: Timestamp);
    /// Processing time reached `now_ms` (processing-time timers fire). Forward it.
    fn processing_time(&mut self, now_ms: Timestamp);
    /// End of input (after the final watermark). Forward it.
    fn end(&mut self);
    /// Every input of this operator is idle (Flink's `WatermarkStatus.IDLE`): the watermark
    /// will not move until records arrive again. Stateless operators forward it; exchanges send
    /// it to every shard so an idle source does not hold back the others. The default ignores
    /// it, which is safe (the watermark is only held back).
    fn idle(&mut self) {}
    /// Checkpoint barrier `epoch`: everything before it was pushed, nothing after it. A stateful
    /// operator writes its state into `snapshot` (keyed state by key group); every operator then
    /// forwards the barrier after the output it already produced. Exchanges send it through
    /// their rings; sinks end it (their flusher pre-commits).
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot);
}

/// The input side of a two-input operator (joins).
pub trait Push2<L, R> {
    fn push_left(&mut self, batch: &mut Batch<L>);
    fn push_right(&mut self, batch: &mut Batch<R>);
    fn watermark(&mut self, wm: Timestamp);
    fn processing_time(&mut self, now_ms: Timestamp);
    fn end(&mut self);
    /// Every channel of both inputs is idle (see [`Push::idle`]).
    fn idle(&mut self) {}
    /// Checkpoint barrier `epoch`, aligned over both inputs (see [`Push::barrier`]).
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot);
}

/// An operator's output buffer: collects records and marks and pushes full batches downstream.
pub struct Output<T> {
    buf: Batch<T>,
    batch_size: usize,
    pub(crate) down: Box<dyn Push<T>>,
}

impl<T> Output<T> {
    pub fn new(down: Box<dyn Push<T>>, batch_size: usize) -> Self {
        assert!(batch_size > 0);
        Self {
            buf: Batch::with_capacity(batch_size),
            batch_size,
            down,
        }
    }

    #[inline]
    pub fn emit(&mut self, record: T, ts: Timestamp) {
        self.buf.push(record, ts);
        if self.buf.len() >= self.batch_size {
            self.flush();
        }
    }

    /// Emit a record built in place by `build` from `T::default()` (not moved into the buffer
    /// afterwards: for large records).
    #[inline]
    pub fn emit_with(&mut self, ts: Timestamp, build: impl FnOnce(&mut T))
    where
        T: Default,
    {
        // `resize_with` writes the default record in place once there is room (a `push` builds
        // it on the stack first and copies it in).
        let len = self.buf.records.len();
        self.buf.records.resize_with(len + 1, T::default);
        build(&mut self.buf.records[len]);
        self.buf.timestamps.push(ts);
        if self.buf.len() >= self.batch_size {
            self.flush();
        }
    }

    /// Forward watermark `wm` after everything emitted so far.
    #[inline]
    pub fn mark(&mut self, wm: Timestamp) {
        self.buf.mark(wm);
    }

    /// Push what is buffered downstream.
    pub fn flush(&mut self) {
        if !self.buf.is_void() {
            self.buf.check();
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }

    /// Flush, then forward a bare watermark.
    pub fn watermark(&mut self, wm: Timestamp) {
        self.buf.mark(wm);
        self.flush();
    }

    pub fn processing_time(&mut self, now_ms: Timestamp) {
        self.flush();
        self.down.processing_time(now_ms);
    }

    pub fn end(&mut self) {
        self.flush();
        self.down.end();
    }

    pub fn idle(&mut self) {
        self.flush();
        self.down.idle();
    }

    /// Flush, then forward checkpoint barrier `epoch`.
    pub fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.flush();
        self.down.barrier(epoch, snapshot);
    }
}
