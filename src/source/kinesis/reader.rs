//! The split reader of the Kinesis source: one shard, fetched by a background task on the
//! shard's executor into a bounded inbox, decoded by the reader.
//!
//! Invariants: the fetch task starts where the reader's position says (set by `seek` before
//! `open`) and fetches strictly forward; the reader's position is the last record it handed
//! out, never one only fetched; dropping the reader cancels the fetch task.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};

use super::client::{decode_data, ApiError, IteratorStart, KinesisClient, KinesisEndpoint, WireRecord};
use super::{KinesisSourceOptions, ShardPlan};
use crate::checkpoint::snapshot;
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;
use crate::source::file::BadLine;
use crate::source::kafka::{DecodeMessage, MessageView, StopHandle};
use crate::source::remote::{Backoff, BadRecords, Inbox};
use crate::source::{ReadStatus, SplitReader};

/// A split's checkpointed position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum ShardPosition {
    /// Nothing handed out yet: the shard starts here.
    Start(IteratorStart),
    /// The sequence number of the last record handed out.
    After(String),
}

/// A fetched record.
struct Fetched {
    sequence_number: String,
    partition_key: String,
    data: std::result::Result<Vec<u8>, String>,
    arrival_ms: i64,
}

impl From<WireRecord> for Fetched {
    fn from(r: WireRecord) -> Self {
        Fetched {
            data: decode_data(&r.data),
            partition_key: r.partition_key,
            sequence_number: r.sequence_number,
            arrival_ms: (r.approximate_arrival_timestamp * 1000.0).round() as i64,
        }
    }
}

pub(super) fn build<T: 'static>(
    source_id: u64,
    options: &Arc<KinesisSourceOptions>,
    endpoint: &Arc<KinesisEndpoint>,
    plan: ShardPlan,
    decoder: Box<dyn DecodeMessage<T>>,
    stop: StopHandle,
    ctx: &mut BuildCtx<'_>,
) -> Result<Box<dyn SplitReader<T>>> {
    Ok(Box::new(KinesisSplitReader {
        describe: plan.describe(),
        position: ShardPosition::Start(options.iterator_start()),
        plan,
        options: options.clone(),
        endpoint: endpoint.clone(),
        inbox: Inbox::new(options.fetch_ahead_records),
        fetch: None,
        decoder,
        bad: BadRecords::new(source_id, ctx)?,
        stop,
        scratch: Vec::new(),
        handed_out: 0,
    }))
}

struct KinesisSplitReader<T> {
    plan: ShardPlan,
    describe: String,
    position: ShardPosition,
    options: Arc<KinesisSourceOptions>,
    endpoint: Arc<KinesisEndpoint>,
    inbox: Rc<Inbox<Fetched>>,
    fetch: Option<glommio::Task<()>>,
    decoder: Box<dyn DecodeMessage<T>>,
    bad: BadRecords,
    stop: StopHandle,
    scratch: Vec<Fetched>,
    /// Records handed out in this run (the dead-letter record's `line`).
    handed_out: u64,
}

impl<T> KinesisSplitReader<T> {
    fn read_records(&mut self, out: &mut Vec<T>, max: usize) -> Result<ReadStatus> {
        if self.stop.is_stopped() {
            return Ok(ReadStatus::Exhausted);
        }
        if self.bad.full() {
            return Ok(ReadStatus::More); // the segment task writes the dead letters out first
        }
        self.scratch.clear();
        let taken = self.inbox.take(max.max(1), &mut self.scratch);
        let stream = self.plan.stream.clone();
        for r in self.scratch.drain(..) {
            self.handed_out += 1;
            let outcome = match &r.data {
                Ok(data) => {
                    let view = MessageView {
                        topic: &stream,
                        partition: self.plan.index,
                        offset: -1,
                        timestamp: r.arrival_ms,
                        key: Some(r.partition_key.as_bytes()),
                        value: Some(data),
                    };
                    self.decoder.decode(&view, out)
                }
                Err(e) => Err(BadLine {
                    field: None,
                    message: e.clone(),
                }),
            };
            if let Err(bad) = outcome {
                let place = format!("{}@{}", self.describe, r.sequence_number);
                let raw = r.data.as_deref().unwrap_or_default();
                if let Err(e) = self.bad.handle(&place, self.handed_out, &bad, raw) {
                    return Err(WeirError::Other(format!("kinesis: {e}")));
                }
            }
            self.position = ShardPosition::After(r.sequence_number);
        }
        if taken > 0 {
            return Ok(ReadStatus::More);
        }
        if let Some(e) = self.inbox.take_error() {
            return Err(e);
        }
        if self.inbox.has_ended() {
            return Ok(ReadStatus::Exhausted);
        }
        Ok(ReadStatus::Idle { retry_after_ms: 1 })
    }
}

impl<T> SplitReader<T> for KinesisSplitReader<T> {
    fn open(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.fetch.is_none() {
                if self.position == ShardPosition::Start(IteratorStart::Latest) {
                    // Pin LATEST to a time, so a restore before the first record misses nothing.
                    self.position = ShardPosition::Start(IteratorStart::AtTimestamp(crate::time::now_ms()));
                }
                let start = match &self.position {
                    ShardPosition::Start(s) => s.clone(),
                    ShardPosition::After(seq) => IteratorStart::AfterSequenceNumber(seq.clone()),
                };
                let fetcher = Fetcher {
                    client: KinesisClient::new(self.endpoint.clone()),
                    options: self.options.clone(),
                    plan: self.plan.clone(),
                    inbox: self.inbox.clone(),
                };
                self.fetch = Some(glommio::spawn_local(fetcher.run(start)));
            }
            Ok(())
        })
    }

    fn read<'a>(&'a mut self, out: &'a mut Vec<T>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        Box::pin(async move { self.read_records(out, max) })
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn position(&self) -> Result<Vec<u8>> {
        Ok(snapshot::encode(&self.position))
    }

    fn seek(&mut self, position: &[u8]) -> Result<()> {
        self.position = snapshot::decode(position, &format!("position of {}", self.describe))?;
        Ok(())
    }
}

/// The background half: `GetRecords` in a loop (see the module docs of [`super`]).
struct Fetcher {
    client: KinesisClient,
    options: Arc<KinesisSourceOptions>,
    plan: ShardPlan,
    inbox: Rc<Inbox<Fetched>>,
}

impl Fetcher {
    async fn run(mut self, start: IteratorStart) {
        if let Err(e) = self.fetch(start).await {
            self.inbox.fail(e);
        }
    }

    async fn fetch(&mut self, start: IteratorStart) -> Result<()> {
        let o = self.options.clone();
        let (stream, shard) = (&*self.plan.stream, self.plan.shard_id.as_str());
        let mut backoff = Backoff::new(o.backoff_base_ms, o.backoff_max_ms, 0x6b69_6e65 ^ self.plan.index as u64);
        let mut last_fetched: Option<String> = None;
        let mut iterator: Option<String> = None;
        let mut transient_failures = 0u32;
        loop {
            let result = match &iterator {
                None => {
                    let from = match &last_fetched {
                        Some(s) => IteratorStart::AfterSequenceNumber(s.clone()),
                        None => start.clone(),
                    };
                    self.client.get_shard_iterator(stream, shard, &from).await.map(|i| {
                        iterator = Some(i);
                        None
                    })
                }
                Some(it) => self.client.get_records(it, o.max_records_per_get.max(1)).await.map(Some),
            };
            match result {
                Ok(None) => {
                    backoff.reset();
                    transient_failures = 0;
                }
                Ok(Some(page)) => {
                    backoff.reset();
                    transient_failures = 0;
                    let n = page.records.len();
                    if let Some(last) = page.records.last() {
                        last_fetched = Some(last.sequence_number.clone());
                    }
                    self.inbox.put(page.records.into_iter().map(Fetched::from)).await;
                    let Some(next) = page.next_shard_iterator else {
                        self.inbox.end(); // a closed shard, fully read
                        return Ok(());
                    };
                    iterator = Some(next);
                    let caught_up = page.millis_behind_latest <= 0 && n < o.max_records_per_get as usize;
                    if n == 0 && caught_up && o.bounded {
                        self.inbox.end();
                        return Ok(());
                    }
                    if caught_up {
                        glommio::timer::sleep(Duration::from_millis(o.poll_interval_ms.max(1))).await;
                    }
                }
                Err(ApiError::ExpiredIterator(_)) => iterator = None,
                Err(ApiError::Throttled(_)) => {
                    glommio::timer::sleep(Duration::from_millis(backoff.next_delay_ms())).await;
                }
                Err(ApiError::Transient(m)) => {
                    transient_failures += 1;
                    if transient_failures > o.max_retries {
                        return Err(WeirError::Other(format!(
                            "kinesis {}: {m} (after {} retries)",
                            self.plan.describe(),
                            o.max_retries
                        )));
                    }
                    glommio::timer::sleep(Duration::from_millis(backoff.next_delay_ms())).await;
                }
                Err(ApiError::Fatal(m)) => return Err(WeirError::Other(format!("kinesis {}: {m}", self.plan.describe()))),
            }
        }
    }
}
