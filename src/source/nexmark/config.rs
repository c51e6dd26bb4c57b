//! Nexmark generator configuration: the knobs of the reference
//! `NexmarkConfiguration` / `GeneratorConfig`, with the reference defaults,
//! plus the derived quantities the generator needs (inter-event delay,
//! event-number → timestamp, out-of-order adjustment).
//!
//! Invariants:
//! - [`GeneratorConfig::validate`] accepts exactly the configurations for which
//!   every generator computation is defined without panics or overflow-driven
//!   nonsense; it names the first offending field.
//! - Derived arithmetic follows the reference bit for bit (Java `long` and
//!   `double` semantics, wrapping where Java wraps).

use serde::{Deserialize, Serialize};

/// First person id (reference `GeneratorConfig.FIRST_PERSON_ID`).
pub const FIRST_PERSON_ID: i64 = 1000;
/// First auction id (reference `GeneratorConfig.FIRST_AUCTION_ID`).
pub const FIRST_AUCTION_ID: i64 = 1000;
/// First category id (reference `GeneratorConfig.FIRST_CATEGORY_ID`).
pub const FIRST_CATEGORY_ID: i64 = 10;

/// Upper bound accepted for the byte-size knobs (keeps `extra` padding sane).
pub const MAX_AVG_BYTE_SIZE: i32 = 1 << 20;
/// Upper bound accepted for the sum of the three proportions.
pub const MAX_TOTAL_PROPORTION: i32 = 1 << 20;

/// Parameters of the Nexmark event generator. Defaults are the reference
/// `NexmarkConfiguration` defaults, except `base_time` (the reference uses the
/// wall clock; here it is a fixed instant so runs are reproducible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneratorConfig {
    /// Event id offset (reference `firstEventId`; 1, as `nexmark-flink`'s
    /// table source sets it). Event id = `first_event_id + event number`; ids
    /// seed each event's random stream and decide its kind.
    pub first_event_id: i64,
    /// Event number of the first event (reference `firstEventNumber`; 1, as
    /// `nexmark-flink`'s table source sets it); event numbers decide
    /// timestamps. With the 1/1 defaults the first event has id 2 (an
    /// auction, id 1001) and the first person (id 1001) is event id 50; set
    /// both to 0 for the Beam layout where person 1000 comes first.
    pub first_event_number: i64,
    /// Number of events to generate in total over all splits; 0 = unbounded
    /// (reference: `Long.MAX_VALUE / (totalProportion * max avg byte size)`).
    pub max_events: u64,
    /// Overall events per second (reference `firstEventRate`, 10000). Decides
    /// the inter-event delay, hence event timestamps.
    pub first_event_rate: i32,
    /// Reference `numEventGenerators` (1): the inter-event delay is multiplied
    /// by it, as in the reference (where each parallel generator runs its own
    /// timeline). Weir's splits share one timeline, so leave this at 1 unless
    /// reproducing the reference's per-generator timestamps.
    pub num_event_generators: i32,
    /// Whether [`super::NexmarkGenerator::next_event_due_ms`] reports a due
    /// time (reference `isRateLimited`, false = as fast as possible).
    pub rate_limited: bool,
    /// Person proportion (1).
    pub person_proportion: i32,
    /// Auction proportion (3).
    pub auction_proportion: i32,
    /// Bid proportion (46).
    pub bid_proportion: i32,
    /// Average idealized size of a person event in bytes (200).
    pub avg_person_byte_size: i32,
    /// Average idealized size of an auction event in bytes (500).
    pub avg_auction_byte_size: i32,
    /// Average idealized size of a bid event in bytes (100).
    pub avg_bid_byte_size: i32,
    /// Bids go to a hot auction with probability `1 - 1/hot_auction_ratio` (2).
    pub hot_auction_ratio: i32,
    /// Auctions are by a hot seller with probability `1 - 1/ratio` (4).
    pub hot_sellers_ratio: i32,
    /// Bids are by a hot bidder with probability `1 - 1/ratio` (4).
    pub hot_bidders_ratio: i32,
    /// Average number of auctions in flight (100).
    pub num_in_flight_auctions: i32,
    /// Number of people considered active for auctions and bids (1000).
    pub num_active_people: i32,
    /// Events per out-of-order group (1 = in order).
    pub out_of_order_group_size: i64,
    /// Event time of the first event, ms since the epoch (fixed default
    /// 2023-11-14T22:13:20Z; the reference uses the wall clock).
    pub base_time: i64,
    /// Reproduce the reference's bug of adding `FIRST_PERSON_ID` twice to a
    /// bid's bidder (nexmark/nexmark issue #30). Default false: bidders are
    /// real person ids, as the code's comments and the Beam original intend.
    pub compat_double_bidder_offset: bool,
    /// Fill `String` fields. With `false` they stay empty (no allocation); all
    /// numeric fields are identical either way.
    pub with_strings: bool,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            first_event_id: 1,
            first_event_number: 1,
            max_events: 0,
            first_event_rate: 10_000,
            num_event_generators: 1,
            rate_limited: false,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_in_flight_auctions: 100,
            num_active_people: 1000,
            out_of_order_group_size: 1,
            base_time: 1_700_000_000_000,
            compat_double_bidder_offset: false,
            with_strings: true,
        }
    }
}

fn check(ok: bool, field: &str, rule: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("nexmark config: `{field}` must be {rule}"))
    }
}

impl GeneratorConfig {
    /// Checks every knob; `Err` names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        check(self.first_event_id >= 0, "first_event_id", ">= 0")?;
        check(self.first_event_number >= 0, "first_event_number", ">= 0")?;
        check(
            self.max_events <= i64::MAX as u64 && (self.first_event_id as i128 + self.first_event_number as i128 + self.max_events as i128) <= i64::MAX as i128,
            "max_events",
            "small enough that first_event_id + first_event_number + max_events fits in i64",
        )?;
        check(self.first_event_rate >= 1, "first_event_rate", ">= 1")?;
        check(self.num_event_generators >= 1, "num_event_generators", ">= 1")?;
        check(self.person_proportion >= 1, "person_proportion", ">= 1")?;
        check(self.auction_proportion >= 1, "auction_proportion", ">= 1")?;
        check(self.bid_proportion >= 0, "bid_proportion", ">= 0")?;
        check(
            self.person_proportion as i64 + self.auction_proportion as i64 + self.bid_proportion as i64 <= MAX_TOTAL_PROPORTION as i64,
            "bid_proportion",
            "such that the three proportions sum to at most 2^20",
        )?;
        for (v, name) in [
            (self.avg_person_byte_size, "avg_person_byte_size"),
            (self.avg_auction_byte_size, "avg_auction_byte_size"),
            (self.avg_bid_byte_size, "avg_bid_byte_size"),
        ] {
            check((1..=MAX_AVG_BYTE_SIZE).contains(&v), name, "in 1..=2^20")?;
        }
        check(self.hot_auction_ratio >= 1, "hot_auction_ratio", ">= 1")?;
        check(self.hot_sellers_ratio >= 1, "hot_sellers_ratio", ">= 1")?;
        check(self.hot_bidders_ratio >= 1, "hot_bidders_ratio", ">= 1")?;
        check(
            (0..=1_000_000_000).contains(&self.num_in_flight_auctions),
            "num_in_flight_auctions",
            "in 0..=1e9",
        )?;
        check((0..=1_000_000_000).contains(&self.num_active_people), "num_active_people", "in 0..=1e9")?;
        check(self.out_of_order_group_size >= 1, "out_of_order_group_size", ">= 1")?;
        check(self.base_time.checked_abs().is_some_and(|t| t < 1 << 60), "base_time", "within +-2^60 ms")?;
        Ok(())
    }

    /// Sum of the three proportions (50 by default).
    #[inline]
    pub fn total_proportion(&self) -> i64 {
        self.person_proportion as i64 + self.auction_proportion as i64 + self.bid_proportion as i64
    }

    /// Reference `interEventDelayUs[0]`: microseconds between events.
    #[inline]
    pub fn inter_event_delay_us(&self) -> f64 {
        1_000_000.0 / self.first_event_rate as f64 * self.num_event_generators as f64
    }

    /// Effective event bound: `max_events`, or the reference's overflow-safe
    /// maximum when `max_events == 0`.
    pub fn effective_max_events(&self) -> i64 {
        if self.max_events != 0 {
            return self.max_events as i64;
        }
        let biggest = self.avg_person_byte_size.max(self.avg_auction_byte_size).max(self.avg_bid_byte_size) as i64;
        let limit = i64::MAX / (self.total_proportion() * biggest).max(1);
        // Keep event ids in range even with a large first id.
        limit.min(i64::MAX - self.first_event_id - self.first_event_number)
    }

    /// Reference `nextEventNumber`: event number after `count` events.
    #[inline]
    pub fn event_number(&self, count: i64) -> i64 {
        self.first_event_number.wrapping_add(count)
    }

    /// Reference `nextAdjustedEventNumber`: the event number permuted within
    /// its out-of-order group (identity when the group size is 1).
    #[inline]
    pub fn adjusted_event_number(&self, count: i64) -> i64 {
        let n = self.out_of_order_group_size;
        let e = self.event_number(count);
        if n == 1 {
            return e;
        }
        let base = (e / n) * n;
        base.wrapping_add(e.wrapping_mul(953) % n)
    }

    /// Reference `nextEventNumberForWatermark`.
    #[inline]
    pub fn watermark_event_number(&self, count: i64) -> i64 {
        let n = self.out_of_order_group_size;
        let e = self.event_number(count);
        (e / n) * n
    }

    /// Reference `timestampForEvent`: `baseTime + (long)(n * delayUs) / 1000`.
    #[inline]
    pub fn timestamp_for_event(&self, event_number: i64) -> i64 {
        // `as i64` saturates like Java's (long) cast of a double.
        let us = (event_number as f64 * self.inter_event_delay_us()) as i64;
        self.base_time.wrapping_add(us / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(GeneratorConfig::default().validate(), Ok(()));
    }

    #[test]
    fn validate_names_field() {
        let c = GeneratorConfig {
            hot_bidders_ratio: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("hot_bidders_ratio"));
        let c = GeneratorConfig {
            first_event_rate: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("first_event_rate"));
        let c = GeneratorConfig {
            max_events: u64::MAX,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("max_events"));
        let c = GeneratorConfig {
            out_of_order_group_size: 0,
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("out_of_order_group_size"));
    }

    #[test]
    fn timestamps_at_default_rate() {
        let c = GeneratorConfig::default();
        assert_eq!(c.timestamp_for_event(0), c.base_time);
        assert_eq!(c.timestamp_for_event(9), c.base_time);
        assert_eq!(c.timestamp_for_event(10), c.base_time + 1);
        assert_eq!(c.timestamp_for_event(10_000), c.base_time + 1000);
    }
}
