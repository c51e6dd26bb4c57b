//! Test helpers: a recording `Push` for operator unit tests. (The in-process job harness is
//! [`crate::api::StreamEnv`] with [`crate::api::DataStream::collect`].)

use std::cell::RefCell;
use std::rc::Rc;

use crate::batch::{Batch, Mark};
use crate::operator::Push;
use crate::time::Timestamp;

/// What a [`Recorder`] saw.
#[derive(Debug)]
pub struct Recorded<T> {
    pub batches: Vec<(Vec<T>, Vec<Mark>)>,
    pub watermarks: Vec<Timestamp>,
    pub ended: bool,
}

/// A `Push` that records every call, for operator unit tests.
pub struct Recorder<T> {
    log: Rc<RefCell<Recorded<T>>>,
}

impl<T> Recorder<T> {
    pub fn new() -> (Self, Rc<RefCell<Recorded<T>>>) {
        let log = Rc::new(RefCell::new(Recorded {
            batches: Vec::new(),
            watermarks: Vec::new(),
            ended: false,
        }));
        (Self { log: log.clone() }, log)
    }
}

impl<T> Push<T> for Recorder<T> {
    fn push(&mut self, batch: &mut Batch<T>) {
        let records = std::mem::take(&mut batch.records);
        let marks = std::mem::take(&mut batch.marks);
        batch.timestamps.clear();
        self.log.borrow_mut().batches.push((records, marks));
    }
    fn watermark(&mut self, wm: Timestamp) {
        self.log.borrow_mut().watermarks.push(wm);
    }
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut crate::checkpoint::runtime::TaskSnapshot) {}
    fn end(&mut self) {
        self.log.borrow_mut().ended = true;
    }
}
