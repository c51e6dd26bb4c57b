//! The Nexmark generator as a source (Flink's `nexmark` connector): person, auction and bid
//! events, seeded and deterministic, bounded (`max_events`) or unbounded, rate-limited or as
//! fast as possible.
//!
//! Two shapes: [`NexmarkSource`] yields full [`Event`]s; [`NexmarkBidSource`] yields only bids as
//! allocation-free [`BidFields`] (the hot path of the benchmarks). Split `i` of `n` generates
//! events `i, i + n, i + 2n, ...` of the one global stream, so together the splits are exactly
//! one generator's output whatever the shard count.
//!
//! Invariants: a read call generates at most `max` events (bounded work per step); a
//! rate-limited split never runs ahead of its schedule, it reports `Idle` until the next event
//! is due.

use std::time::Instant;

use futures::future::LocalBoxFuture;

use super::nexmark::{BidFields, Event, GeneratorConfig, NexmarkGenerator};
use super::{ReadStatus, Source, SplitReader};
use crate::checkpoint::snapshot::{decode, encode};
use crate::error::{Result, WeirError};
use crate::shard::BuildCtx;

/// Full Nexmark events.
#[derive(Clone, Debug)]
pub struct NexmarkSource {
    pub config: GeneratorConfig,
    /// Number of splits; 0 means one per shard.
    pub splits: usize,
}

/// Bids only, without allocation.
#[derive(Clone, Debug)]
pub struct NexmarkBidSource {
    pub config: GeneratorConfig,
    /// Number of splits; 0 means one per shard.
    pub splits: usize,
}

impl NexmarkSource {
    pub fn new(config: GeneratorConfig) -> Self {
        Self { config, splits: 0 }
    }
}

impl NexmarkBidSource {
    pub fn new(config: GeneratorConfig) -> Self {
        Self { config, splits: 0 }
    }
}

fn split_count(config: &GeneratorConfig, splits: usize, shards: usize) -> Result<usize> {
    config.validate().map_err(|e| WeirError::Config(format!("nexmark: {e}")))?;
    Ok(if splits == 0 { shards } else { splits })
}

struct Paced {
    generator: NexmarkGenerator,
    started: Option<Instant>,
    split: usize,
}

impl Paced {
    /// `Some(wait_ms)` if the next event is not due yet.
    fn wait_ms(&mut self) -> Option<u64> {
        let due = self.generator.next_event_due_ms()?;
        let started = *self.started.get_or_insert_with(Instant::now);
        let now = started.elapsed().as_millis() as i64;
        (due > now).then(|| (due - now) as u64)
    }
}

impl Paced {
    fn position(&self) -> Result<Vec<u8>> {
        Ok(encode(&self.generator.events_emitted()))
    }

    /// Continue after `position` events; a rate-limited split keeps its schedule (the next
    /// event is due now, not `due` ms after the restore).
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        let emitted: u64 = decode(position, "nexmark split position")?;
        self.generator.skip_to(emitted);
        if let Some(due) = self.generator.next_event_due_ms() {
            self.started = Instant::now().checked_sub(std::time::Duration::from_millis(due.max(0) as u64));
        }
        Ok(())
    }
}

fn paced(config: &GeneratorConfig, split: usize, splits: usize) -> Paced {
    Paced {
        generator: NexmarkGenerator::new(config.clone(), split as u32, splits as u32),
        started: None,
        split,
    }
}

impl Source<Event> for NexmarkSource {
    fn name(&self) -> String {
        "nexmark".into()
    }
    fn split_count(&self, shards: usize) -> Result<usize> {
        split_count(&self.config, self.splits, shards)
    }
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<Event>>> {
        let n = self.split_count(ctx.shards)?;
        Ok(Box::new(EventReader(paced(&self.config, split, n))))
    }
}

impl Source<BidFields> for NexmarkBidSource {
    fn name(&self) -> String {
        "nexmark-bids".into()
    }
    fn split_count(&self, shards: usize) -> Result<usize> {
        split_count(&self.config, self.splits, shards)
    }
    fn reader(&self, split: usize, ctx: &mut BuildCtx<'_>) -> Result<Box<dyn SplitReader<BidFields>>> {
        let n = self.split_count(ctx.shards)?;
        Ok(Box::new(BidReader(paced(&self.config, split, n))))
    }
}

struct EventReader(Paced);
struct BidReader(Paced);

impl Paced {
    /// Generate up to `max` events (bounded work per call), keeping what `next` yields, and
    /// never running ahead of a rate limit.
    fn read_into<T>(&mut self, out: &mut Vec<T>, max: usize, mut next: impl FnMut(&mut NexmarkGenerator) -> Option<Option<T>>) -> ReadStatus {
        if let Some(wait) = self.wait_ms() {
            return ReadStatus::Idle { retry_after_ms: wait };
        }
        let rate_limited = self.generator.next_event_due_ms().is_some();
        for _ in 0..max {
            match next(&mut self.generator) {
                Some(Some(record)) => out.push(record),
                Some(None) => {}
                None => return ReadStatus::Exhausted,
            }
            if rate_limited && self.wait_ms().is_some() {
                break;
            }
        }
        if self.generator.is_done() {
            ReadStatus::Exhausted
        } else {
            ReadStatus::More
        }
    }
}

impl SplitReader<Event> for EventReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<Event>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        let status = self.0.read_into(out, max, |g| g.next_event().map(|(e, _)| Some(e)));
        Box::pin(async move { Ok(status) })
    }
    fn describe(&self) -> String {
        format!("nexmark split {}", self.0.split)
    }
    fn position(&self) -> Result<Vec<u8>> {
        self.0.position()
    }
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        self.0.seek(position)
    }
}

impl SplitReader<BidFields> for BidReader {
    fn read<'a>(&'a mut self, out: &'a mut Vec<BidFields>, max: usize) -> LocalBoxFuture<'a, Result<ReadStatus>> {
        // Persons and auctions are skipped without being generated.
        let status = self.0.read_into(out, max, |g| g.next_bid_fields().map(|(b, _)| b));
        Box::pin(async move { Ok(status) })
    }
    fn describe(&self) -> String {
        format!("nexmark bids split {}", self.0.split)
    }
    fn position(&self) -> Result<Vec<u8>> {
        self.0.position()
    }
    fn seek(&mut self, position: &[u8]) -> Result<()> {
        self.0.seek(position)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prelude::*;

    #[test]
    fn bids_are_identical_for_every_shard_count() {
        let config = GeneratorConfig {
            max_events: 20_000,
            ..Default::default()
        };
        let mut reference: Vec<(i64, i64, i64, i64)> = {
            let mut g = NexmarkGenerator::new(config.clone(), 0, 1);
            std::iter::from_fn(|| g.next_bid_fields())
                .filter_map(|(b, _)| b)
                .map(|b| (b.auction, b.bidder, b.price, b.date_time))
                .collect()
        };
        reference.sort();
        for cores in 1..=3 {
            let env = StreamEnv::new(EngineConfig {
                cores,
                pin_cores: false,
                ..Default::default()
            });
            let out = env
                .source(NexmarkBidSource::new(config.clone()))
                .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(0), |b: &BidFields| b.date_time)
                .map(|b: BidFields| (b.auction, b.bidder, b.price, b.date_time))
                .collect();
            env.execute().unwrap();
            let mut got = out.take();
            got.sort();
            assert_eq!(got, reference, "cores {cores}");
        }
    }
}
