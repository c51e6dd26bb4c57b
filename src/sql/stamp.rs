//! Carrying the source watermark across an exchange, so lateness does not depend on the
//! number of shards.
//!
//! Why: after a keyed exchange, an operator's watermark is the minimum over the rings from
//! every shard. When a table has one file, only one shard reads it; the other shards' source
//! segments end at once, but until their end-of-input reaches a receiving shard, that shard's
//! combined watermark is still "nothing known", so records that were late at the source are
//! judged on time there — and how many depends on thread scheduling. Flink has the same race
//! with more source subtasks than splits; its oracle runs with parallelism 1.
//!
//! What: when everything feeding an exchange comes from exactly one file (one split, no
//! exchange in between), [`StampOp`] appends to each row the watermark that preceded it at the
//! source (a hidden last column), and after the exchange [`ReleaseOp`] removes the column and
//! advances the operator's watermark to it before the row. With one split that is exactly the
//! watermark the row has in a one-shard run, so results are identical for any shard count.
//!
//! Invariants: the stamp is the watermark before the row (marks with `index <= i`);
//! [`ReleaseOp`] never lets watermarks decrease and never advances past a stamp it has seen.

use crate::batch::Batch;
use crate::operator::Push;
use crate::time::{Timestamp, WATERMARK_MIN};

use super::types::{Row, Value};

/// Appends the watermark before each row as its last column.
pub struct StampOp {
    pub(crate) watermark: Timestamp,
    pub(crate) down: Box<dyn Push<Row>>,
}

impl StampOp {
    pub fn new(down: Box<dyn Push<Row>>) -> Self {
        Self {
            watermark: WATERMARK_MIN,
            down,
        }
    }
}

impl Push<Row> for StampOp {
    fn push(&mut self, batch: &mut Batch<Row>) {
        let mut marks = batch.marks.iter().peekable();
        for (i, r) in batch.records.iter_mut().enumerate() {
            while let Some(m) = marks.next_if(|m| m.index as usize <= i) {
                self.watermark = m.watermark;
            }
            r.push(Value::Int(self.watermark));
        }
        if let Some(m) = batch.marks.last() {
            self.watermark = self.watermark.max(m.watermark);
        }
        self.down.push(batch);
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.watermark = self.watermark.max(wm);
        self.down.watermark(wm)
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
}

/// Removes the stamp and advances the watermark to it before each row.
pub struct ReleaseOp {
    watermark: Timestamp,
    buf: Batch<Row>,
    down: Box<dyn Push<Row>>,
}

impl ReleaseOp {
    pub fn new(down: Box<dyn Push<Row>>, batch_size: usize) -> Self {
        Self {
            watermark: WATERMARK_MIN,
            buf: Batch::with_capacity(batch_size),
            down,
        }
    }
}

/// Remove a row's stamp.
pub fn take_stamp(r: &mut Row) -> Timestamp {
    match r.pop() {
        Some(Value::Int(w)) => w,
        _ => WATERMARK_MIN,
    }
}

impl Push<Row> for ReleaseOp {
    fn push(&mut self, batch: &mut Batch<Row>) {
        let marks = std::mem::take(&mut batch.marks);
        let mut marks = marks.iter().peekable();
        for (i, (mut r, ts)) in batch.records.drain(..).zip(batch.timestamps.drain(..)).enumerate() {
            while let Some(m) = marks.next_if(|m| m.index as usize <= i) {
                self.watermark = self.watermark.max(m.watermark);
            }
            let stamp = take_stamp(&mut r);
            self.watermark = self.watermark.max(stamp);
            if self.watermark > WATERMARK_MIN {
                self.buf.mark(self.watermark);
            }
            self.buf.push(r, ts);
        }
        for m in marks {
            self.watermark = self.watermark.max(m.watermark);
        }
        if self.watermark > WATERMARK_MIN {
            self.buf.mark(self.watermark);
        }
        if !self.buf.is_void() {
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }
    fn watermark(&mut self, wm: Timestamp) {
        if wm > self.watermark {
            self.watermark = wm;
            self.down.watermark(wm);
        }
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Recorder;

    #[test]
    fn stamp_then_release_restores_per_row_watermarks() {
        let (rec, log) = Recorder::<Row>::new();
        let release = ReleaseOp::new(Box::new(rec), 16);
        let mut stamp = StampOp::new(Box::new(release));
        let mut b: Batch<Row> = Batch::default();
        b.push(Row::from_iter([Value::Int(1)]), 1);
        b.mark(5);
        b.push(Row::from_iter([Value::Int(2)]), 9);
        b.mark(7);
        stamp.push(&mut b);
        let got = log.borrow().batches[0].clone();
        assert_eq!(got.0.iter().map(|r| r.len()).collect::<Vec<_>>(), vec![1, 1]);
        assert_eq!(got.1.iter().map(|m| (m.index, m.watermark)).collect::<Vec<_>>(), vec![(1, 5), (2, 7)]);
    }
}
