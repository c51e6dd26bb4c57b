//! The three Nexmark event types (person, auction, bid) and the event union,
//! with the reference's field sets; plus [`BidFields`], the allocation-free
//! view of a bid used by the fast path.
//!
//! Invariants:
//! - Timestamps (`date_time`, `expires`) are epoch milliseconds.
//! - When the generator runs with `with_strings == false`, every `String`
//!   field is empty and every numeric field is what it would be with strings.

use serde::{Deserialize, Serialize};

/// A new person registering (reference `Person`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Person {
    pub id: i64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    pub date_time: i64,
    pub extra: String,
}

/// A new auction opening (reference `Auction`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Auction {
    pub id: i64,
    pub item_name: String,
    pub description: String,
    pub initial_bid: i64,
    pub reserve: i64,
    pub date_time: i64,
    pub expires: i64,
    pub seller: i64,
    pub category: i64,
    pub extra: String,
}

/// A bid on an auction (reference `Bid`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bid {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: String,
    pub url: String,
    pub date_time: i64,
    pub extra: String,
}

/// One Nexmark event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// The event's time, epoch ms.
    pub fn date_time(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }
}

/// A bid without allocation: channel and url point into process-wide tables;
/// `extra` is not generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BidFields {
    pub auction: i64,
    pub bidder: i64,
    pub price: i64,
    pub channel: &'static str,
    pub url: &'static str,
    pub date_time: i64,
}
