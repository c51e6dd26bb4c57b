//! Stateless one-to-one and one-to-many operators: map, filter, flat_map, inspect.
//!
//! Invariant: record order and watermark marks are preserved; marks are re-indexed when records
//! are dropped or multiplied.

use super::Push;
use crate::batch::{Batch, Mark};
use crate::checkpoint::runtime::TaskSnapshot;
use crate::time::Timestamp;

/// `map`: one output per input, same timestamp.
pub struct MapOp<T, U, F> {
    pub(crate) f: F,
    pub(crate) buf: Batch<U>,
    pub(crate) down: Box<dyn Push<U>>,
    pub(crate) _in: std::marker::PhantomData<fn(T)>,
}

impl<T, U, F: FnMut(T) -> U> Push<T> for MapOp<T, U, F> {
    fn push(&mut self, batch: &mut Batch<T>) {
        self.buf.records.extend(batch.records.drain(..).map(&mut self.f));
        std::mem::swap(&mut self.buf.timestamps, &mut batch.timestamps);
        std::mem::swap(&mut self.buf.marks, &mut batch.marks);
        self.down.push(&mut self.buf);
        self.buf.clear();
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.down.watermark(wm)
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
    fn idle(&mut self) {
        self.down.idle()
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.down.barrier(epoch, snapshot)
    }
}

/// Re-index marks while records are filtered or multiplied: call [`MarkMapper::advance`] for
/// every input index in order, before the records of that input index are written.
pub(crate) struct MarkMapper<'a> {
    marks: std::iter::Peekable<std::slice::Iter<'a, Mark>>,
}

impl<'a> MarkMapper<'a> {
    pub(crate) fn new(marks: &'a [Mark]) -> Self {
        Self {
            marks: marks.iter().peekable(),
        }
    }

    /// Copy the marks that precede input record `input_index` into `out` at its current end.
    #[inline]
    pub(crate) fn advance<U>(&mut self, input_index: usize, out: &mut Batch<U>) {
        while let Some(m) = self.marks.next_if(|m| m.index as usize <= input_index) {
            out.mark(m.watermark);
        }
    }

    /// Copy the trailing marks.
    pub(crate) fn finish<U>(mut self, out: &mut Batch<U>) {
        for m in self.marks.by_ref() {
            out.mark(m.watermark);
        }
    }
}

/// `filter`: keeps the records for which the predicate is true.
pub struct FilterOp<T, F> {
    pub(crate) f: F,
    pub(crate) buf: Batch<T>,
    pub(crate) down: Box<dyn Push<T>>,
}

impl<T, F: FnMut(&T) -> bool> Push<T> for FilterOp<T, F> {
    fn push(&mut self, batch: &mut Batch<T>) {
        let marks = std::mem::take(&mut batch.marks);
        let mut mapper = MarkMapper::new(&marks);
        for (i, (r, ts)) in batch.records.drain(..).zip(batch.timestamps.drain(..)).enumerate() {
            mapper.advance(i, &mut self.buf);
            if (self.f)(&r) {
                self.buf.push(r, ts);
            }
        }
        mapper.finish(&mut self.buf);
        if !self.buf.is_void() {
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.down.watermark(wm)
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
    fn idle(&mut self) {
        self.down.idle()
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.down.barrier(epoch, snapshot)
    }
}

/// `flat_map`: zero or more outputs per input, each with the input's timestamp.
pub struct FlatMapOp<T, U, I, F> {
    pub(crate) f: F,
    pub(crate) buf: Batch<U>,
    pub(crate) down: Box<dyn Push<U>>,
    pub(crate) batch_size: usize,
    pub(crate) _p: std::marker::PhantomData<fn(T) -> I>,
}

impl<T, U, I: IntoIterator<Item = U>, F: FnMut(T) -> I> Push<T> for FlatMapOp<T, U, I, F> {
    fn push(&mut self, batch: &mut Batch<T>) {
        let marks = std::mem::take(&mut batch.marks);
        let mut mapper = MarkMapper::new(&marks);
        for (i, (r, ts)) in batch.records.drain(..).zip(batch.timestamps.drain(..)).enumerate() {
            mapper.advance(i, &mut self.buf);
            for u in (self.f)(r) {
                self.buf.push(u, ts);
            }
            // Bound the buffer: a record that explodes into many outputs is pushed in pieces.
            if self.buf.len() >= self.batch_size {
                self.down.push(&mut self.buf);
                self.buf.clear();
            }
        }
        mapper.finish(&mut self.buf);
        if !self.buf.is_void() {
            self.down.push(&mut self.buf);
            self.buf.clear();
        }
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.down.watermark(wm)
    }
    fn processing_time(&mut self, now_ms: Timestamp) {
        self.down.processing_time(now_ms)
    }
    fn end(&mut self) {
        self.down.end()
    }
    fn idle(&mut self) {
        self.down.idle()
    }
    fn barrier(&mut self, epoch: u64, snapshot: &mut TaskSnapshot) {
        self.down.barrier(epoch, snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Recorder;

    #[test]
    fn filter_reindexes_marks() {
        let (rec, log) = Recorder::<i64>::new();
        let mut op = FilterOp {
            f: |x: &i64| x % 2 == 0,
            buf: Batch::default(),
            down: Box::new(rec),
        };
        let mut b = Batch::default();
        b.push(1, 1);
        b.mark(1);
        b.push(2, 2);
        b.mark(2);
        b.push(3, 3);
        b.mark(3);
        op.push(&mut b);
        let got = log.borrow().batches[0].clone();
        assert_eq!(got.0, vec![2]);
        assert_eq!(got.1, vec![Mark { index: 0, watermark: 1 }, Mark { index: 1, watermark: 3 }]);
    }
}
