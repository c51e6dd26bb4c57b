//! Event time: timestamps, watermarks and the per-split watermark generator.
//!
//! All times are epoch milliseconds in an `i64`. A watermark `w` promises that no more records
//! with timestamp `<= w` are expected (Flink's meaning). [`WATERMARK_MIN`] is "nothing known yet",
//! [`WATERMARK_MAX`] is "end of input".
//!
//! Invariants:
//! - A split's watermark never decreases.
//! - The watermark *after* a record is `max event time seen so far − delay` (Flink SQL's
//!   `WATERMARK FOR ts AS ts - INTERVAL ...`, equivalent to Flink with
//!   `pipeline.auto-watermark-interval = 0`). Note: Flink's DataStream
//!   `forBoundedOutOfOrderness` subtracts one more millisecond; weir follows the SQL definition
//!   everywhere so the SQL and the Rust API agree.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (event time or processing time).
pub type Timestamp = i64;

/// The lowest watermark: nothing is known about event time yet.
pub const WATERMARK_MIN: Timestamp = i64::MIN;
/// The final watermark, emitted when an input ends: every event-time window fires.
pub const WATERMARK_MAX: Timestamp = i64::MAX;

/// How a source derives watermarks from the timestamps it reads (per split).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkStrategy {
    /// Records may arrive up to this many milliseconds out of order.
    pub out_of_orderness_ms: i64,
    /// A split that produced nothing for this long (processing time) is idle: it no longer holds
    /// back the combined watermark until it produces again. `None`: never idle.
    pub idle_timeout_ms: Option<i64>,
}

impl WatermarkStrategy {
    /// Watermark = max timestamp seen − `delay_ms`.
    pub fn bounded_out_of_orderness(delay_ms: i64) -> Self {
        assert!(delay_ms >= 0, "out-of-orderness must be >= 0");
        Self {
            out_of_orderness_ms: delay_ms,
            idle_timeout_ms: None,
        }
    }

    /// Timestamps never decrease: watermark = max timestamp seen.
    pub fn monotonous() -> Self {
        Self::bounded_out_of_orderness(0)
    }

    /// Mark a split idle after `timeout_ms` of processing time without records.
    pub fn with_idleness(mut self, timeout_ms: i64) -> Self {
        assert!(timeout_ms > 0, "idle timeout must be > 0");
        self.idle_timeout_ms = Some(timeout_ms);
        self
    }
}

/// Watermark state of one source split.
#[derive(Clone, Debug)]
pub struct SplitWatermark {
    delay_ms: i64,
    max_timestamp: Timestamp,
    watermark: Timestamp,
}

impl SplitWatermark {
    pub fn new(strategy: &WatermarkStrategy) -> Self {
        Self {
            delay_ms: strategy.out_of_orderness_ms,
            max_timestamp: WATERMARK_MIN,
            watermark: WATERMARK_MIN,
        }
    }

    /// Current watermark (the watermark *before* the next record).
    #[inline]
    pub fn current(&self) -> Timestamp {
        self.watermark
    }

    /// Account for one record; returns the watermark after it.
    #[inline]
    pub fn observe(&mut self, ts: Timestamp) -> Timestamp {
        if ts > self.max_timestamp {
            self.max_timestamp = ts;
            let wm = ts.saturating_sub(self.delay_ms);
            if wm > self.watermark {
                self.watermark = wm;
            }
        }
        self.watermark
    }

    /// The split ended: its watermark becomes [`WATERMARK_MAX`].
    pub fn finish(&mut self) {
        self.watermark = WATERMARK_MAX;
    }

    /// Restore from a checkpointed position.
    pub fn restore(&mut self, max_timestamp: Timestamp, watermark: Timestamp) {
        self.max_timestamp = max_timestamp;
        self.watermark = watermark;
    }

    pub fn max_timestamp(&self) -> Timestamp {
        self.max_timestamp
    }
}

/// Combines the watermarks of several inputs by minimum, as Flink does for operators with
/// several input channels. Inputs that are idle do not hold the minimum back; finished inputs
/// count as [`WATERMARK_MAX`].
///
/// Invariant: the combined watermark never decreases (an input that wakes up from idleness
/// below the combined watermark does not pull it back; its records are judged against it).
#[derive(Clone, Debug)]
pub struct WatermarkCombiner {
    inputs: Vec<Timestamp>,
    idle: Vec<bool>,
    combined: Timestamp,
}

impl WatermarkCombiner {
    pub fn new(inputs: usize) -> Self {
        Self {
            inputs: vec![WATERMARK_MIN; inputs],
            idle: vec![false; inputs],
            combined: if inputs == 0 { WATERMARK_MAX } else { WATERMARK_MIN },
        }
    }

    #[inline]
    pub fn combined(&self) -> Timestamp {
        self.combined
    }

    pub fn input(&self, index: usize) -> Timestamp {
        self.inputs[index]
    }

    pub fn len(&self) -> usize {
        self.inputs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inputs.is_empty()
    }

    /// Input `index` advanced to `wm`; returns the new combined watermark.
    #[inline]
    pub fn update(&mut self, index: usize, wm: Timestamp) -> Timestamp {
        let old = self.inputs[index];
        let was_idle = self.idle[index];
        if wm > old {
            self.inputs[index] = wm;
        }
        self.idle[index] = false;
        // Only an input that sat at the minimum (or woke up) can move the minimum.
        if old <= self.combined || was_idle {
            self.recompute();
        }
        self.combined
    }

    /// Mark input `index` idle (or active again). Returns the new combined watermark.
    pub fn set_idle(&mut self, index: usize, idle: bool) -> Timestamp {
        self.idle[index] = idle;
        self.recompute();
        self.combined
    }

    /// True if every input is idle (none is finished-and-active either).
    pub fn all_idle(&self) -> bool {
        !self.idle.is_empty() && self.idle.iter().zip(&self.inputs).all(|(idle, wm)| *idle || *wm == WATERMARK_MAX)
    }

    /// Index of the input holding the combined watermark back (lowest, not idle), if any.
    pub fn holding_back(&self) -> Option<usize> {
        (0..self.inputs.len()).filter(|&i| !self.idle[i]).min_by_key(|&i| self.inputs[i])
    }

    fn recompute(&mut self) {
        let mut min = WATERMARK_MAX;
        let mut any_active = false;
        for (wm, idle) in self.inputs.iter().zip(&self.idle) {
            if !*idle {
                any_active = true;
                min = min.min(*wm);
            }
        }
        if !any_active {
            // All inputs idle: keep the combined watermark where it is (Flink: idle everywhere
            // means no progress, not end of input).
            return;
        }
        if min > self.combined {
            self.combined = min;
        }
    }
}

/// Wall-clock milliseconds since the Unix epoch (processing time).
pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The clock processing time is read from: the wall clock, or a [`TestClock`] a test drives
/// (`EngineConfig::processing_clock`). Each shard thread reads the job's clock through
/// [`processing_now_ms`]; processing-time timers, processing-time windows and `PROCTIME()`
/// all use it.
#[derive(Clone, Debug, Default)]
pub enum ProcessingClock {
    #[default]
    Wall,
    Test(std::sync::Arc<TestClock>),
}

/// A processing-time clock for tests: set by hand ([`TestClock::advance`]) and/or moving
/// forward by a fixed step on every read, so a job's processing time advances with its work
/// and no test has to sleep. Reads from every shard share one atomic counter; the clock never
/// goes back.
#[derive(Debug)]
pub struct TestClock {
    now: std::sync::atomic::AtomicI64,
    step_per_read_ms: i64,
}

impl TestClock {
    /// A clock standing at `start_ms` until [`advance`](Self::advance)d.
    pub fn manual(start_ms: Timestamp) -> std::sync::Arc<Self> {
        Self::stepping(start_ms, 0)
    }
    /// A clock at `start_ms` that moves `step_ms` forward on every read (the value read is the
    /// time after the step).
    pub fn stepping(start_ms: Timestamp, step_ms: i64) -> std::sync::Arc<Self> {
        assert!(step_ms >= 0, "a test clock cannot run backwards");
        std::sync::Arc::new(Self {
            now: std::sync::atomic::AtomicI64::new(start_ms),
            step_per_read_ms: step_ms,
        })
    }
    /// Read (and step) the clock.
    pub fn now(&self) -> Timestamp {
        self.now.fetch_add(self.step_per_read_ms, std::sync::atomic::Ordering::AcqRel) + self.step_per_read_ms
    }
    /// The current time without stepping.
    pub fn peek(&self) -> Timestamp {
        self.now.load(std::sync::atomic::Ordering::Acquire)
    }
    /// Move the clock `ms` forward.
    pub fn advance(&self, ms: i64) {
        assert!(ms >= 0, "a test clock cannot run backwards");
        self.now.fetch_add(ms, std::sync::atomic::Ordering::AcqRel);
    }
}

impl ProcessingClock {
    /// Now on this clock.
    pub fn now(&self) -> Timestamp {
        match self {
            ProcessingClock::Wall => now_ms(),
            ProcessingClock::Test(c) => c.now(),
        }
    }
    /// How long (real ms) a task may sleep waiting for processing time `deadline`: the time
    /// left on the wall clock; a test clock is polled every millisecond instead.
    pub fn wait_ms(&self, deadline: Timestamp) -> u64 {
        match self {
            ProcessingClock::Wall => (deadline - now_ms()).max(0) as u64,
            ProcessingClock::Test(_) => 1,
        }
    }
}

thread_local! {
    static THREAD_CLOCK: std::cell::RefCell<ProcessingClock> = const { std::cell::RefCell::new(ProcessingClock::Wall) };
}

/// Make `clock` this thread's processing-time clock (each shard thread installs its job's
/// clock when it starts; unit tests install a [`TestClock`] on their own thread).
pub fn set_processing_clock(clock: ProcessingClock) {
    THREAD_CLOCK.with(|c| *c.borrow_mut() = clock);
}

/// This thread's processing-time clock.
pub fn processing_clock() -> ProcessingClock {
    THREAD_CLOCK.with(|c| c.borrow().clone())
}

/// Processing time now, on this thread's clock (the wall clock unless a test installed one).
pub fn processing_now_ms() -> Timestamp {
    THREAD_CLOCK.with(|c| c.borrow().now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_is_max_minus_delay_and_monotone() {
        let mut s = SplitWatermark::new(&WatermarkStrategy::bounded_out_of_orderness(4));
        assert_eq!(s.current(), WATERMARK_MIN);
        assert_eq!(s.observe(10), 6);
        assert_eq!(s.observe(8), 6);
        assert_eq!(s.observe(20), 16);
        s.finish();
        assert_eq!(s.current(), WATERMARK_MAX);
    }

    #[test]
    fn combiner_takes_min_skips_idle_and_never_regresses() {
        let mut c = WatermarkCombiner::new(3);
        assert_eq!(c.update(0, 10), WATERMARK_MIN);
        assert_eq!(c.update(1, 5), WATERMARK_MIN);
        assert_eq!(c.update(2, 7), 5);
        assert_eq!(c.holding_back(), Some(1));
        assert_eq!(c.set_idle(1, true), 7);
        // Waking up below the combined watermark does not pull it back.
        assert_eq!(c.update(1, 6), 7);
        assert_eq!(c.update(1, 30), 7);
        assert_eq!(c.update(2, 40), 10);
        assert_eq!(c.update(0, WATERMARK_MAX), 30);
    }

    #[test]
    fn empty_combiner_is_finished() {
        assert_eq!(WatermarkCombiner::new(0).combined(), WATERMARK_MAX);
    }
}
