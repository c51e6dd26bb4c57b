//! Batches: the unit that moves through operator chains and across rings.
//!
//! A [`Batch<T>`] holds records of one typed stream in a struct-of-arrays layout (records and
//! their event timestamps side by side) plus *watermark marks*: `Mark { index, watermark }`
//! means "before record `index` is processed, the watermark is `watermark`". A mark with
//! `index == len` applies after the last record. Marks let one batch carry the exact per-record
//! watermark progression of its input, so batching never changes which records are late.
//!
//! Invariants (checked by [`Batch::check`] in debug builds):
//! - `records.len() == timestamps.len()`;
//! - marks are sorted by `index`, every `index <= len`, and their watermarks strictly increase.

use crate::time::Timestamp;

/// "Before record `index`, the watermark is `watermark`."
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub index: u32,
    pub watermark: Timestamp,
}

/// A consumer of a batch in order: each watermark mark is applied exactly between the records
/// it stands between. Every keyed operator consumes its input this way.
pub trait InOrder<T> {
    fn on_watermark(&mut self, wm: Timestamp);
    fn on_record(&mut self, record: T, ts: Timestamp);
}

/// Records of one stream with their event timestamps and watermark marks.
#[derive(Debug)]
pub struct Batch<T> {
    pub records: Vec<T>,
    pub timestamps: Vec<Timestamp>,
    pub marks: Vec<Mark>,
    /// When the input that produced these records entered the job (ns on
    /// [`crate::shard::metrics::clock_ns`]'s clock; 0: unknown). Stamped where a batch leaves for
    /// a ring, read by the receiving loop: carries ingest time across shards for sink latency.
    pub ingest_ns: u64,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            timestamps: Vec::new(),
            marks: Vec::new(),
            ingest_ns: 0,
        }
    }
}

impl<T> Batch<T> {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            records: Vec::with_capacity(capacity),
            timestamps: Vec::with_capacity(capacity),
            marks: Vec::new(),
            ingest_ns: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.records.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// No records and no marks: nothing to forward.
    #[inline]
    pub fn is_void(&self) -> bool {
        self.records.is_empty() && self.marks.is_empty()
    }

    #[inline]
    pub fn push(&mut self, record: T, ts: Timestamp) {
        self.records.push(record);
        self.timestamps.push(ts);
    }

    /// Record that the watermark is `wm` from the current end of the batch on. Marks that do not
    /// advance past the last mark are ignored.
    #[inline]
    pub fn mark(&mut self, wm: Timestamp) {
        let index = self.records.len() as u32;
        match self.marks.last_mut() {
            Some(last) if last.watermark >= wm => {}
            Some(last) if last.index == index => last.watermark = wm,
            _ => self.marks.push(Mark { index, watermark: wm }),
        }
    }

    /// The last watermark this batch carries, if any.
    pub fn last_watermark(&self) -> Option<Timestamp> {
        self.marks.last().map(|m| m.watermark)
    }

    pub fn clear(&mut self) {
        self.records.clear();
        self.timestamps.clear();
        self.marks.clear();
    }

    /// Move everything out, leaving an empty batch with the same capacity class.
    pub fn take(&mut self) -> Batch<T> {
        let cap = self.records.capacity();
        std::mem::replace(self, Batch::with_capacity(cap))
    }

    /// Hand every record and watermark mark to `consumer` in order, leaving the batch empty
    /// (its allocations are kept for reuse).
    #[inline]
    pub fn drain_in_order(&mut self, consumer: &mut impl InOrder<T>) {
        let mut marks = std::mem::take(&mut self.marks);
        let mut next = 0;
        for (i, (record, ts)) in self.records.drain(..).zip(self.timestamps.drain(..)).enumerate() {
            while next < marks.len() && marks[next].index as usize <= i {
                consumer.on_watermark(marks[next].watermark);
                next += 1;
            }
            consumer.on_record(record, ts);
        }
        for m in &marks[next..] {
            consumer.on_watermark(m.watermark);
        }
        marks.clear();
        self.marks = marks;
    }

    /// Assert the invariants (debug builds).
    #[inline]
    pub fn check(&self) {
        debug_assert_eq!(self.records.len(), self.timestamps.len());
        debug_assert!(self.marks.windows(2).all(|w| w[0].index <= w[1].index && w[0].watermark < w[1].watermark));
        debug_assert!(self.marks.iter().all(|m| m.index as usize <= self.records.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Log(Vec<String>);
    impl InOrder<&'static str> for Log {
        fn on_watermark(&mut self, wm: Timestamp) {
            self.0.push(format!("w{wm}"));
        }
        fn on_record(&mut self, record: &'static str, _ts: Timestamp) {
            self.0.push(record.to_string());
        }
    }

    #[test]
    fn drain_in_order_interleaves_marks() {
        let mut b = Batch::with_capacity(4);
        b.mark(1);
        b.push("a", 1);
        b.push("b", 2);
        b.mark(2);
        b.push("c", 3);
        b.mark(3);
        let mut log = Log(Vec::new());
        b.drain_in_order(&mut log);
        assert_eq!(log.0, ["w1", "a", "b", "w2", "c", "w3"]);
        assert!(b.is_void());
    }

    #[test]
    fn marks_dedupe_and_coalesce() {
        let mut b = Batch::with_capacity(4);
        b.mark(5);
        b.mark(7); // same index: coalesced
        b.push("a", 1);
        b.mark(7); // not advancing: ignored
        b.push("b", 2);
        b.mark(9);
        assert_eq!(b.marks, vec![Mark { index: 0, watermark: 7 }, Mark { index: 2, watermark: 9 }]);
        b.check();
    }
}
