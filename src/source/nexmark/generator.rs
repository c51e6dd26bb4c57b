//! The Nexmark event generator: event number → event id → kind and fields.
//!
//! For the `c`-th event overall (`c` counts from 0 across all splits):
//! - adjusted number `a = adjusted_event_number(c)` (identity unless
//!   out-of-order groups are on), event id `first_event_id + a`;
//! - event time `timestamp_for_event(a)`, due time `timestamp_for_event(c)`;
//! - kind by `event_id % total_proportion` (person, then auctions, then bids);
//! - fields from a `java.util.Random` seeded with the event id, consumed in the
//!   reference's order.
//!
//! Invariants:
//! - An event is a pure function of (config, `c`); there is no other state, so
//!   splits, `skip_to` and restarts reproduce exactly.
//! - Split `s` of `n` emits `c = s, s + n, s + 2n, ...` below the event bound.
//! - No panics for a config that passed `validate()`; `new` clamps an invalid
//!   config's split arguments and `next_event` returns `None` for an invalid
//!   config rather than panicking.

use super::config::{GeneratorConfig, FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID};
use super::java_random::{next_long_below, JavaRandom};
use super::model::{Auction, Bid, BidFields, Event, Person};
use super::strings::{next_credit_card, next_extra, next_extra_bytes, next_string, ChannelRef, FIRST_NAMES, LAST_NAMES, US_CITIES, US_STATES};

/// Reference `PersonGenerator.PERSON_ID_LEAD`.
const PERSON_ID_LEAD: i64 = 10;
/// Reference `AuctionGenerator.AUCTION_ID_LEAD`.
const AUCTION_ID_LEAD: i64 = 10;
/// Reference `HOT_AUCTION_RATIO` / `HOT_BIDDER_RATIO` / `HOT_SELLER_RATIO`:
/// size of the id batch whose first member is "hot".
const HOT_BATCH: i64 = 100;
/// Reference `AuctionGenerator.NUM_CATEGORIES`.
const NUM_CATEGORIES: i32 = 5;

/// Deterministic Nexmark generator for one split of the event sequence.
#[derive(Debug, Clone)]
pub struct NexmarkGenerator {
    cfg: GeneratorConfig,
    valid: bool,
    split_index: i64,
    num_splits: i64,
    /// Events this split has emitted (or skipped over).
    emitted: u64,
    /// Bound on the global event count `c`.
    max_events: i64,
    total: i64,
    rng: JavaRandom,
}

impl NexmarkGenerator {
    /// Split `split_index` of `num_splits` (`num_splits == 0` is treated as 1,
    /// an out-of-range index yields an empty split). Splits are disjoint and
    /// together emit exactly the events of the unsplit generator.
    pub fn new(config: GeneratorConfig, split_index: u32, num_splits: u32) -> Self {
        let valid = config.validate().is_ok();
        let num_splits = num_splits.max(1) as i64;
        let max_events = if valid { config.effective_max_events() } else { 0 };
        NexmarkGenerator {
            total: config.total_proportion().max(1),
            cfg: config,
            valid,
            split_index: split_index as i64,
            num_splits,
            emitted: 0,
            max_events,
            rng: JavaRandom::new(0),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &GeneratorConfig {
        &self.cfg
    }

    /// Events emitted (or skipped) by this split so far.
    pub fn events_emitted(&self) -> u64 {
        self.emitted
    }

    /// Restore position: the next event is the one that would follow
    /// `events_emitted` events of this split.
    pub fn skip_to(&mut self, events_emitted: u64) {
        self.emitted = events_emitted;
    }

    /// Whether this split has no more events.
    pub fn is_done(&self) -> bool {
        self.global_count().is_none()
    }

    /// Global event count `c` of this split's next event, if any.
    #[inline]
    fn global_count(&self) -> Option<i64> {
        if !self.valid || self.split_index >= self.num_splits {
            return None;
        }
        let k = i64::try_from(self.emitted).ok()?;
        let c = k.checked_mul(self.num_splits)?.checked_add(self.split_index)?;
        (c < self.max_events).then_some(c)
    }

    /// Wall-clock time, in ms since the generator started, at which the next
    /// event is due at the configured rate (reference `wallclockTimestamp -
    /// wallclockBaseTime`). `None` when not rate limited or when done.
    pub fn next_event_due_ms(&self) -> Option<i64> {
        if !self.cfg.rate_limited {
            return None;
        }
        let c = self.global_count()?;
        let n = self.cfg.event_number(c);
        Some(self.cfg.timestamp_for_event(n) - self.cfg.base_time)
    }

    /// The next event and its event timestamp (ms), or `None` when done.
    pub fn next_event(&mut self) -> Option<(Event, i64)> {
        let c = self.global_count()?;
        self.emitted += 1;
        let adjusted = self.cfg.adjusted_event_number(c);
        let ts = self.cfg.timestamp_for_event(adjusted);
        let event_id = self.cfg.first_event_id.wrapping_add(adjusted);
        self.rng.set_seed(event_id);
        let rem = event_id % self.total;
        let person = self.cfg.person_proportion as i64;
        let event = if rem < person {
            Event::Person(self.person(event_id, ts))
        } else if rem < person + self.cfg.auction_proportion as i64 {
            Event::Auction(self.auction(c, event_id, ts))
        } else {
            Event::Bid(self.bid(event_id, ts))
        };
        Some((event, ts))
    }

    /// Like [`Self::next_event`], but events of kinds not in `kinds` (`[person, auction,
    /// bid]`) are skipped without being generated and come back as `Some((None, ts))`.
    pub fn next_event_of_kinds(&mut self, kinds: [bool; 3]) -> Option<(Option<Event>, i64)> {
        let c = self.global_count()?;
        let adjusted = self.cfg.adjusted_event_number(c);
        let event_id = self.cfg.first_event_id.wrapping_add(adjusted);
        let rem = event_id % self.total;
        let person = self.cfg.person_proportion as i64;
        let kind = if rem < person {
            0
        } else if rem < person + self.cfg.auction_proportion as i64 {
            1
        } else {
            2
        };
        if kinds[kind] {
            return self.next_event().map(|(e, ts)| (Some(e), ts));
        }
        self.emitted += 1;
        Some((None, self.cfg.timestamp_for_event(adjusted)))
    }

    /// Fast path for bid-only consumers. Advances exactly one event, like
    /// [`Self::next_event`]: a bid comes back as `Some((Some(fields), ts))`; a
    /// person or auction is skipped without being generated and comes back as
    /// `Some((None, ts))`; `None` when done. Never allocates. (One event per
    /// call keeps the work per call bounded: a split may see no bids at all,
    /// e.g. with 50 splits and the 1/3/46 proportions.)
    pub fn next_bid_fields(&mut self) -> Option<(Option<BidFields>, i64)> {
        self.next_bid_with_extra(None)
    }

    /// [`Self::next_bid_fields`], also writing a bid's `extra` padding into
    /// `extra` (cleared first) when given: the bytes [`Self::next_event`]
    /// generates for it.
    #[inline]
    pub fn next_bid_with_extra(&mut self, extra: Option<&mut Vec<u8>>) -> Option<(Option<BidFields>, i64)> {
        let c = self.global_count()?;
        self.emitted += 1;
        let adjusted = self.cfg.adjusted_event_number(c);
        let ts = self.cfg.timestamp_for_event(adjusted);
        let event_id = self.cfg.first_event_id.wrapping_add(adjusted);
        let rem = event_id % self.total;
        if rem < self.cfg.person_proportion as i64 + self.cfg.auction_proportion as i64 {
            return Some((None, ts));
        }
        self.rng.set_seed(event_id);
        let (auction, bidder, price, ch) = self.bid_core(event_id);
        if let Some(extra) = extra {
            extra.clear();
            next_extra_bytes(&mut self.rng, 8 * 4, self.cfg.avg_bid_byte_size, extra);
        }
        let fields = BidFields {
            auction,
            bidder,
            price,
            channel: ch.channel(),
            url: ch.url(),
            date_time: ts,
        };
        Some((Some(fields), ts))
    }

    // ----- id arithmetic (reference PersonGenerator / AuctionGenerator) -----

    /// Reference `lastBase0PersonId`.
    #[inline]
    fn last_base0_person_id(&self, event_id: i64) -> i64 {
        let epoch = event_id / self.total;
        let mut offset = event_id % self.total;
        let person = self.cfg.person_proportion as i64;
        if offset >= person {
            offset = person - 1;
        }
        epoch.wrapping_mul(person).wrapping_add(offset)
    }

    /// Reference `lastBase0AuctionId`.
    #[inline]
    fn last_base0_auction_id(&self, event_id: i64) -> i64 {
        let mut epoch = event_id / self.total;
        let mut offset = event_id % self.total;
        let person = self.cfg.person_proportion as i64;
        let auction = self.cfg.auction_proportion as i64;
        if offset < person {
            epoch -= 1;
            offset = auction - 1;
        } else if offset >= person + auction {
            offset = auction - 1;
        } else {
            offset -= person;
        }
        epoch.wrapping_mul(auction).wrapping_add(offset)
    }

    /// Reference `nextBase0PersonId`.
    #[inline]
    fn next_base0_person_id(&mut self, event_id: i64) -> i64 {
        let num_people = self.last_base0_person_id(event_id) + 1;
        let active = num_people.min(self.cfg.num_active_people as i64);
        let n = next_long_below(&mut self.rng, active + PERSON_ID_LEAD);
        num_people - active + n
    }

    /// Reference `nextBase0AuctionId`.
    #[inline]
    fn next_base0_auction_id(&mut self, event_id: i64) -> i64 {
        let max_auction = self.last_base0_auction_id(event_id);
        let min_auction = (max_auction - self.cfg.num_in_flight_auctions as i64).max(0);
        min_auction + next_long_below(&mut self.rng, max_auction - min_auction + 1 + AUCTION_ID_LEAD)
    }

    /// Reference `PriceGenerator.nextPrice`.
    #[inline]
    fn next_price(&mut self) -> i64 {
        // Java Math.round of a positive finite double == f64::round.
        (10f64.powf(self.rng.next_double() * 6.0) * 100.0).round() as i64
    }

    // ----- event bodies -----

    fn person(&mut self, event_id: i64, ts: i64) -> Person {
        let id = self.last_base0_person_id(event_id) + FIRST_PERSON_ID;
        let with = self.cfg.with_strings;
        let r = &mut self.rng;
        let first = FIRST_NAMES[r.next_int_bounded(FIRST_NAMES.len() as i32) as usize];
        let last = LAST_NAMES[r.next_int_bounded(LAST_NAMES.len() as i32) as usize];
        let mut p = Person {
            id,
            date_time: ts,
            ..Person::default()
        };
        let name_len = first.len() + 1 + last.len();
        if with {
            p.name.reserve(name_len);
            p.name.push_str(first);
            p.name.push(' ');
            p.name.push_str(last);
        }
        let mut email_len = 0;
        {
            let mut out = with.then_some(&mut p.email_address);
            email_len += next_string(r, 7, b' ', out.as_deref_mut());
            if let Some(o) = out.as_deref_mut() {
                o.push('@');
            }
            email_len += 1 + next_string(r, 5, b' ', out.as_deref_mut());
            if let Some(o) = out {
                o.push_str(".com");
            }
            email_len += 4;
        }
        let cc_len = next_credit_card(r, with.then_some(&mut p.credit_card));
        let city = US_CITIES[r.next_int_bounded(US_CITIES.len() as i32) as usize];
        let state = US_STATES[r.next_int_bounded(US_STATES.len() as i32) as usize];
        if with {
            p.city.push_str(city);
            p.state.push_str(state);
            let current = 8 + name_len + email_len + cc_len + city.len() + state.len();
            next_extra(r, current as i32, self.cfg.avg_person_byte_size, Some(&mut p.extra));
        }
        // Without strings the extra padding is the last draw: skip it.
        p
    }

    fn auction(&mut self, count: i64, event_id: i64, ts: i64) -> Auction {
        let id = self.last_base0_auction_id(event_id) + FIRST_AUCTION_ID;
        let with = self.cfg.with_strings;
        let seller = if self.rng.next_int_bounded(self.cfg.hot_sellers_ratio) > 0 {
            (self.last_base0_person_id(event_id) / HOT_BATCH) * HOT_BATCH
        } else {
            self.next_base0_person_id(event_id)
        } + FIRST_PERSON_ID;
        let category = FIRST_CATEGORY_ID + self.rng.next_int_bounded(NUM_CATEGORIES) as i64;
        let initial_bid = self.next_price();
        let expires = ts.wrapping_add(self.next_auction_length_ms(count, ts));
        let mut a = Auction {
            id,
            initial_bid,
            date_time: ts,
            expires,
            seller,
            category,
            ..Auction::default()
        };
        let name_len = next_string(&mut self.rng, 20, b' ', with.then_some(&mut a.item_name));
        let desc_len = next_string(&mut self.rng, 100, b' ', with.then_some(&mut a.description));
        a.reserve = initial_bid + self.next_price();
        if with {
            let current = 8 + name_len + desc_len + 8 * 5;
            next_extra(&mut self.rng, current as i32, self.cfg.avg_auction_byte_size, Some(&mut a.extra));
        }
        a
    }

    /// Reference `nextAuctionLengthMs`: uniform in `[1, 2 * horizon]` where
    /// horizon is the time until `num_in_flight_auctions` more auctions.
    fn next_auction_length_ms(&mut self, count: i64, ts: i64) -> i64 {
        let current = self.cfg.adjusted_event_number(count);
        let events_for_auctions = (self.cfg.num_in_flight_auctions as i64 * self.total) / self.cfg.auction_proportion as i64;
        let future = self.cfg.timestamp_for_event(current.wrapping_add(events_for_auctions));
        let horizon = future.wrapping_sub(ts);
        1 + next_long_below(&mut self.rng, horizon.wrapping_mul(2).max(1))
    }

    /// Bid numeric fields and channel, in the reference's draw order.
    #[inline]
    fn bid_core(&mut self, event_id: i64) -> (i64, i64, i64, ChannelRef) {
        let auction = if self.rng.next_int_bounded(self.cfg.hot_auction_ratio) > 0 {
            (self.last_base0_auction_id(event_id) / HOT_BATCH) * HOT_BATCH
        } else {
            self.next_base0_auction_id(event_id)
        } + FIRST_AUCTION_ID;
        let mut bidder = if self.rng.next_int_bounded(self.cfg.hot_bidders_ratio) > 0 {
            (self.last_base0_person_id(event_id) / HOT_BATCH) * HOT_BATCH + 1
        } else {
            self.next_base0_person_id(event_id)
        } + FIRST_PERSON_ID;
        if self.cfg.compat_double_bidder_offset {
            bidder += FIRST_PERSON_ID;
        }
        let price = self.next_price();
        let channel = ChannelRef::draw(&mut self.rng);
        (auction, bidder, price, channel)
    }

    fn bid(&mut self, event_id: i64, ts: i64) -> Bid {
        let (auction, bidder, price, ch) = self.bid_core(event_id);
        let mut b = Bid {
            auction,
            bidder,
            price,
            date_time: ts,
            ..Bid::default()
        };
        if self.cfg.with_strings {
            b.channel.push_str(ch.channel());
            b.url.push_str(ch.url());
            next_extra(&mut self.rng, 8 * 4, self.cfg.avg_bid_byte_size, Some(&mut b.extra));
        }
        b
    }
}
