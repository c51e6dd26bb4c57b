//! Nexmark event generator: the person / auction / bid stream of the Nexmark
//! benchmark, generated as the reference generator of `nexmark/nexmark`
//! (`nexmark-flink`, `com.github.nexmark.flink.generator`) defines it.
//!
//! # What it generates
//! Event `c` (counting from 0) has event number `first_event_number + c`
//! (permuted within groups when `out_of_order_group_size > 1`) and event id
//! `first_event_id + number`. The id decides the kind: of every
//! `1 + 3 + 46 = 50` ids, the first is a person, the next three are auctions,
//! the rest are bids. Person and auction ids are consecutive from 1000 + the
//! id's epoch position; with the defaults (first id 1, first number 1, as
//! `nexmark-flink`'s table source) the stream starts at event id 2, so the
//! first auction is 1001 and the first person (event id 50) is 1001. Bids go to a "hot" auction / by a "hot" bidder with probability
//! `1 - 1/ratio`, otherwise to one of the ~100 in-flight auctions / ~1000
//! active people (plus a lead of 10 ids not yet created, as in the reference).
//! Event time is `base_time + number * (1e6 / first_event_rate) µs`,
//! truncated to ms. Every field is
//! drawn from a bit-exact `java.util.Random` seeded with the event id, in the
//! reference's order, so numeric fields and the random strings (names, emails,
//! credit cards, item names, descriptions, `extra` padding) are the
//! reference's.
//!
//! # Interface
//! [`GeneratorConfig`] (Nexmark's knobs and defaults, `validate()`),
//! [`NexmarkGenerator::new`]`(config, split_index, num_splits)`,
//! [`NexmarkGenerator::next_event`] → `(Event, event_time_ms)`,
//! [`NexmarkGenerator::next_bid_fields`] (allocation-free: one event per
//! call, bids materialised as [`BidFields`], persons/auctions skipped),
//! [`NexmarkGenerator::events_emitted`] / [`NexmarkGenerator::skip_to`]
//! (checkpointing), [`NexmarkGenerator::next_event_due_ms`] (rate limiting is
//! the caller's job).
//!
//! # Invariants
//! - Deterministic: an event is a pure function of the config and its number.
//! - Splits interleave by event number (`s, s+n, s+2n, …`): disjoint, and their
//!   union is exactly the unsplit stream; each split's timestamps are
//!   non-decreasing when out-of-order groups are off. Caveat: a split count
//!   sharing a large factor with 50 skews kinds per split (with 50 splits each
//!   split sees a single kind); the union is still exact.
//! - `with_strings = false` leaves every `String` empty (no allocation) and
//!   changes no numeric field.
//!
//! # Deviations from the reference (deliberate)
//! - Seeding: `nexmark-flink` draws from one unseeded `new Random()` per
//!   generator (not reproducible). We seed `java.util.Random` with the event id
//!   per event, as the original Beam Nexmark generator does; this is what makes
//!   splits, checkpoints and runs reproducible.
//! - Splitting: the reference's `GeneratorConfig.split(n)` hands out
//!   contiguous id ranges on parallel timelines; we interleave by event number
//!   so the union of splits equals the single stream, for any `n`.
//! - Bid urls: the reference builds channel urls from unseeded randomness; we
//!   seed them by channel number (same format, same 10,000 channels, same
//!   1/10 chance of no `channel_id`). The choice of channel is exact.
//! - Bidder ids: the reference adds `FIRST_PERSON_ID` twice (issue #30);
//!   we add it once unless `compat_double_bidder_offset` is set.
//! - `base_time` defaults to a fixed instant instead of the wall clock.
//! - Rate shapes (square/sine, `next_event_rate`) are not implemented: the
//!   reference config computes a single inter-event delay too.

mod config;
mod generator;
mod java_random;
mod model;
mod strings;

#[cfg(test)]
mod tests;

pub use config::{GeneratorConfig, FIRST_AUCTION_ID, FIRST_CATEGORY_ID, FIRST_PERSON_ID};
pub use generator::NexmarkGenerator;
pub use java_random::JavaRandom;
pub use model::{Auction, Bid, BidFields, Event, Person};
