//! Deterministic tests of the Nexmark generator: kind sequence, id ranges,
//! foreign keys, hot ratios, timestamps, splits, `skip_to`, strings on/off.
//!
//! Invariants: no test depends on wall-clock time or on test order.

use super::*;

fn bounded(n: u64) -> GeneratorConfig {
    GeneratorConfig {
        max_events: n,
        ..GeneratorConfig::default()
    }
}

fn collect(cfg: GeneratorConfig, split: u32, splits: u32) -> Vec<(Event, i64)> {
    let mut g = NexmarkGenerator::new(cfg, split, splits);
    std::iter::from_fn(|| g.next_event()).collect()
}

#[test]
fn kind_sequence_follows_proportions() {
    let events = collect(bounded(10_000), 0, 1);
    assert_eq!(events.len(), 10_000);
    for (i, (e, _)) in events.iter().enumerate() {
        let rem = i % 50;
        match e {
            Event::Person(_) => assert_eq!(rem, 0, "event {i}"),
            Event::Auction(_) => assert!((1..4).contains(&rem), "event {i}"),
            Event::Bid(_) => assert!(rem >= 4, "event {i}"),
        }
    }
}

#[test]
fn ids_are_consecutive_and_bids_reference_known_ids() {
    let events = collect(bounded(50_000), 0, 1);
    let mut next_person = FIRST_PERSON_ID;
    let mut next_auction = FIRST_AUCTION_ID;
    let (mut hot_auction, mut bids) = (0u64, 0u64);
    for (e, ts) in &events {
        match e {
            Event::Person(p) => {
                assert_eq!(p.id, next_person);
                next_person += 1;
            }
            Event::Auction(a) => {
                assert_eq!(a.id, next_auction);
                next_auction += 1;
                assert!(a.expires > a.date_time);
                assert!(a.reserve >= a.initial_bid);
                assert!((10..15).contains(&a.category));
                // Seller: an existing person or one of the next 10 (lead).
                assert!(a.seller >= FIRST_PERSON_ID && a.seller < next_person + 10);
            }
            Event::Bid(b) => {
                bids += 1;
                assert_eq!(b.date_time, *ts);
                assert!(b.auction >= FIRST_AUCTION_ID && b.auction < next_auction + 10);
                // Hot bidder is the 2nd of its batch of 100, so it may run
                // one ahead of the newest person; random ones have a lead of 10.
                assert!(b.bidder >= FIRST_PERSON_ID && b.bidder < next_person + 10);
                assert!(b.price > 0);
                if b.auction % 100 == FIRST_AUCTION_ID % 100
                    && b.auction == ((next_auction - 1 - FIRST_AUCTION_ID) / 100) * 100 + 1000
                {
                    hot_auction += 1;
                }
            }
        }
    }
    // Hot auction ratio 2: ~1/2 of bids go to the hot auction (plus a few
    // random hits on it).
    let frac = hot_auction as f64 / bids as f64;
    assert!((0.45..0.60).contains(&frac), "hot fraction {frac}");
}

#[test]
fn timestamps_non_decreasing_and_rate() {
    let cfg = bounded(20_000);
    let base = cfg.base_time;
    let events = collect(cfg, 0, 1);
    let mut prev = i64::MIN;
    for (e, ts) in &events {
        assert!(*ts >= prev);
        assert_eq!(e.date_time(), *ts);
        prev = *ts;
    }
    // 10,000 events/s: 20,000 events span ~2 s.
    assert_eq!(events.last().unwrap().1 - base, 1999);
}

#[test]
fn splits_partition_the_stream() {
    let cfg = bounded(5_003);
    let whole = collect(cfg.clone(), 0, 1);
    for n in 1..=4u32 {
        let mut parts: Vec<Vec<(Event, i64)>> =
            (0..n).map(|s| collect(cfg.clone(), s, n)).collect();
        let total: usize = parts.iter().map(Vec::len).sum();
        assert_eq!(total, whole.len(), "n={n}");
        for (c, expected) in whole.iter().enumerate() {
            let part = &mut parts[c % n as usize];
            let got = &part[c / n as usize];
            assert_eq!(got, expected, "n={n} c={c}");
        }
        for p in parts.iter_mut() {
            assert!(p.windows(2).all(|w| w[0].1 <= w[1].1));
        }
    }
    // Out-of-range split index: empty, no panic.
    assert!(collect(cfg.clone(), 5, 4).is_empty());
    assert_eq!(collect(cfg, 0, 0).len(), whole.len());
}

#[test]
fn skip_to_resumes_exactly() {
    let cfg = bounded(3_000);
    let whole = collect(cfg.clone(), 1, 3);
    for k in [0u64, 1, 17, 500, 999, 1000, 1001] {
        let mut g = NexmarkGenerator::new(cfg.clone(), 1, 3);
        g.skip_to(k);
        assert_eq!(g.events_emitted(), k);
        let rest: Vec<_> = std::iter::from_fn(|| g.next_event()).collect();
        assert_eq!(rest.as_slice(), &whole[(k as usize).min(whole.len())..]);
        assert_eq!(g.events_emitted(), k.max(whole.len() as u64));
    }
}

fn strip(e: &Event) -> Event {
    let mut e = e.clone();
    match &mut e {
        Event::Person(p) => {
            p.name.clear();
            p.email_address.clear();
            p.credit_card.clear();
            p.city.clear();
            p.state.clear();
            p.extra.clear();
        }
        Event::Auction(a) => {
            a.item_name.clear();
            a.description.clear();
            a.extra.clear();
        }
        Event::Bid(b) => {
            b.channel.clear();
            b.url.clear();
            b.extra.clear();
        }
    }
    e
}

#[test]
fn strings_off_keeps_numbers() {
    let on = collect(bounded(20_000), 0, 1);
    let off = collect(
        GeneratorConfig {
            with_strings: false,
            ..bounded(20_000)
        },
        0,
        1,
    );
    assert_eq!(on.len(), off.len());
    for ((a, ta), (b, tb)) in on.iter().zip(&off) {
        assert_eq!(ta, tb);
        assert_eq!(&strip(a), b);
    }
}

#[test]
fn extra_sizes_average_out() {
    let cfg = bounded(50_000);
    let (p_avg, a_avg, b_avg) = (
        cfg.avg_person_byte_size as f64,
        cfg.avg_auction_byte_size as f64,
        cfg.avg_bid_byte_size as f64,
    );
    let (mut ps, mut pn, mut as_, mut an, mut bs, mut bn) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    for (e, _) in collect(cfg, 0, 1) {
        match e {
            Event::Person(p) => {
                let s = 8
                    + p.name.len()
                    + p.email_address.len()
                    + p.credit_card.len()
                    + p.city.len()
                    + p.state.len()
                    + p.extra.len();
                assert_eq!(p.credit_card.len(), 19);
                assert!(p.email_address.ends_with(".com"));
                ps += s as f64;
                pn += 1.0;
            }
            Event::Auction(a) => {
                let s = 8 + a.item_name.len() + a.description.len() + 40 + a.extra.len();
                as_ += s as f64;
                an += 1.0;
            }
            Event::Bid(b) => {
                assert!(!b.channel.is_empty() && b.url.starts_with("https://www.nexmark.com/"));
                bs += (32 + b.extra.len()) as f64;
                bn += 1.0;
            }
        }
    }
    assert!((ps / pn - p_avg).abs() < 0.05 * p_avg, "person {}", ps / pn);
    assert!(
        (as_ / an - a_avg).abs() < 0.05 * a_avg,
        "auction {}",
        as_ / an
    );
    assert!((bs / bn - b_avg).abs() < 0.05 * b_avg, "bid {}", bs / bn);
}

#[test]
fn bid_fast_path_matches_full_path() {
    let cfg = bounded(10_000);
    let full: Vec<_> = collect(cfg.clone(), 1, 2)
        .into_iter()
        .filter_map(|(e, ts)| match e {
            Event::Bid(b) => Some((b, ts)),
            _ => None,
        })
        .collect();
    let mut g = NexmarkGenerator::new(cfg, 1, 2);
    let fast: Vec<_> = std::iter::from_fn(|| g.next_bid_fields()).collect();
    assert_eq!(full.len(), fast.len());
    for ((b, t1), (f, t2)) in full.iter().zip(&fast) {
        assert_eq!(t1, t2);
        assert_eq!(
            (b.auction, b.bidder, b.price, b.date_time),
            (f.auction, f.bidder, f.price, f.date_time)
        );
        assert_eq!((b.channel.as_str(), b.url.as_str()), (f.channel, f.url));
    }
    assert_eq!(g.events_emitted(), 5_000);
}

#[test]
fn rate_limit_due_times() {
    let mut g = NexmarkGenerator::new(bounded(100), 0, 1);
    assert_eq!(g.next_event_due_ms(), None);
    let cfg = GeneratorConfig {
        rate_limited: true,
        first_event_rate: 1000,
        ..bounded(100)
    };
    g = NexmarkGenerator::new(cfg, 1, 2);
    assert_eq!(g.next_event_due_ms(), Some(1));
    g.next_event();
    assert_eq!(g.next_event_due_ms(), Some(3));
    g.skip_to(50);
    assert_eq!(g.next_event_due_ms(), None);
    assert!(g.next_event().is_none());
}

#[test]
fn out_of_order_groups_permute_within_group() {
    let cfg = GeneratorConfig {
        out_of_order_group_size: 10,
        ..bounded(1_000)
    };
    let events = collect(cfg.clone(), 0, 1);
    let mut person_ids: Vec<i64> = events
        .iter()
        .filter_map(|(e, _)| match e {
            Event::Person(p) => Some(p.id),
            _ => None,
        })
        .collect();
    person_ids.sort();
    assert_eq!(person_ids, (1000..1020).collect::<Vec<_>>());
    // Splits still partition.
    let a = collect(cfg.clone(), 0, 2);
    let b = collect(cfg, 1, 2);
    assert_eq!(a.len() + b.len(), events.len());
}

#[test]
fn invalid_config_yields_nothing_without_panic() {
    let cfg = GeneratorConfig {
        auction_proportion: 0,
        ..GeneratorConfig::default()
    };
    assert!(cfg.validate().unwrap_err().contains("auction_proportion"));
    let mut g = NexmarkGenerator::new(cfg, 0, 1);
    assert!(g.next_event().is_none());
    assert!(g.next_bid_fields().is_none());
}

#[test]
fn unbounded_keeps_going() {
    let mut g = NexmarkGenerator::new(GeneratorConfig::default(), 0, 1);
    g.skip_to(1 << 40);
    assert!(g.next_event().is_some());
}
