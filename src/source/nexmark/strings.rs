//! String material for Nexmark events: the reference's fixed word lists
//! (`&'static str` tables), its random-string routines (`nextString`,
//! `nextExactString`, `nextExtra`) and the bid channel/url tables.
//!
//! Invariants:
//! - Every routine consumes the random stream exactly like the reference, with
//!   or without an output buffer; without one nothing is allocated and the
//!   returned length is the length the string would have had.
//! - Channel/url tables are deterministic (the reference builds its urls from
//!   unseeded `new Random()`; see the module docs of `mod.rs`), built once per
//!   process and shared read-only.

use std::fmt::Write as _;
use std::sync::OnceLock;

use super::java_random::{JavaRandom, LANES};

/// Reference `PersonGenerator.US_STATES`.
pub const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
/// Reference `PersonGenerator.US_CITIES`.
pub const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
/// Reference `PersonGenerator.FIRST_NAMES`.
pub const FIRST_NAMES: [&str; 11] = ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];
/// Reference `PersonGenerator.LAST_NAMES`.
pub const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];

/// Reference `BidGenerator.HOT_CHANNELS`.
pub const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Reference `BidGenerator.CHANNELS_NUMBER`.
pub const CHANNELS_NUMBER: i32 = 10_000;
/// Reference `BidGenerator.HOT_CHANNELS_RATIO`.
pub const HOT_CHANNELS_RATIO: i32 = 2;

/// Reference `StringsGenerator.MIN_STRING_LENGTH`.
const MIN_STRING_LENGTH: i32 = 3;

/// Reference `nextString(random, maxLength, special)`: `3 + nextInt(max - 3)`
/// characters, each `special` with probability 1/13 else a lowercase letter,
/// then `trim()`med. Appends to `out` when given; returns the trimmed length.
pub fn next_string(random: &mut JavaRandom, max_length: i32, special: u8, out: Option<&mut String>) -> usize {
    let len = MIN_STRING_LENGTH + random.next_int_bounded(max_length - MIN_STRING_LENGTH);
    // Java's trim() strips chars <= ' '; only a ' ' special can be stripped.
    let trimmable = special <= b' ';
    match out {
        Some(out) => {
            let start = out.len();
            out.reserve(len.max(0) as usize);
            for _ in 0..len {
                let c = if random.next_int_bounded(13) == 0 {
                    special
                } else {
                    b'a' + random.next_int_bounded(26) as u8
                };
                out.push(c as char);
            }
            if trimmable {
                let sp = special as char;
                let end = start + out[start..].trim_end_matches(sp).len();
                out.truncate(end);
                let lead = out[start..].len() - out[start..].trim_start_matches(sp).len();
                out.drain(start..start + lead);
            }
            out.len() - start
        }
        None => {
            // Track the first and last non-trimmable positions only.
            let mut first: Option<i32> = None;
            let mut last = 0i32;
            for i in 0..len {
                let is_special = random.next_int_bounded(13) == 0;
                if !is_special {
                    random.next_int_bounded(26);
                }
                if !is_special || !trimmable {
                    if first.is_none() {
                        first = Some(i);
                    }
                    last = i;
                }
            }
            first.map_or(0, |f| (last - f + 1) as usize)
        }
    }
}

/// Reference `nextExactString(random, length)`: one `nextInt()` per six
/// characters, `'a' + rnd % 26` each (Java remainder, so some characters fall
/// below `'a'`, exactly as in the reference).
pub fn next_exact_string(random: &mut JavaRandom, length: i32, out: Option<&mut String>) {
    match out {
        Some(out) => {
            let mut bytes = std::mem::take(out).into_bytes();
            next_exact_bytes(random, length, &mut bytes);
            // Every character is ASCII ('a' - 25 ..= 'a' + 25).
            *out = String::from_utf8(bytes).expect("ASCII");
        }
        None if length > 0 => random.skip((length as u32).div_ceil(6)),
        None => {}
    }
}

/// [`next_exact_string`] appending ASCII bytes to `out`.
#[inline]
pub fn next_exact_bytes(random: &mut JavaRandom, length: i32, out: &mut Vec<u8>) {
    if length <= 0 {
        return;
    }
    let start = out.len();
    out.resize(start + length as usize, 0);
    // Java's `'a' + rnd % 26`, `rnd /= 26` (both truncate toward zero), on the magnitude: two
    // base-26 digits per step through a table of the 676 pairs, six letters per draw.
    let six = |rnd: i32| -> [u8; 6] {
        let a = rnd.unsigned_abs();
        let pairs = if rnd < 0 { &PAIRS_BELOW } else { &PAIRS_ABOVE };
        let (p0, p1, p2) = (
            pairs[(a % 676) as usize],
            pairs[(a / 676 % 676) as usize],
            pairs[(a / (676 * 676) % 676) as usize],
        );
        [p0[0], p0[1], p1[0], p1[1], p2[0], p2[1]]
    };
    // Draws taken side by side (one draw per six letters, the same draws in the same order).
    let mut groups = out[start..].chunks_exact_mut(6 * LANES);
    for group in &mut groups {
        for (chunk, rnd) in group.chunks_exact_mut(6).zip(random.next_ints()) {
            chunk.copy_from_slice(&six(rnd));
        }
    }
    let mut chunks = groups.into_remainder().chunks_exact_mut(6);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&six(random.next_int()));
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        let letters = six(random.next_int());
        rest.copy_from_slice(&letters[..rest.len()]);
    }
}

/// The characters of two base-26 digits `n % 26`, `n / 26 % 26` for `n < 676`: `'a' + d`
/// (`PAIRS_ABOVE`, non-negative draws) or `'a' - d` (`PAIRS_BELOW`, negative ones).
const fn digit_pairs(below: bool) -> [[u8; 2]; 676] {
    let mut t = [[0u8; 2]; 676];
    let mut n = 0;
    while n < 676 {
        let (d0, d1) = ((n % 26) as u8, (n / 26) as u8);
        t[n] = if below { [b'a' - d0, b'a' - d1] } else { [b'a' + d0, b'a' + d1] };
        n += 1;
    }
    t
}
static PAIRS_ABOVE: [[u8; 2]; 676] = digit_pairs(false);
static PAIRS_BELOW: [[u8; 2]; 676] = digit_pairs(true);

/// Reference `nextExtra(random, currentSize, desiredAverageSize)`: padding so
/// the event's idealized size averages `desired_average_size`.
pub fn next_extra(random: &mut JavaRandom, current_size: i32, desired_average_size: i32, out: Option<&mut String>) {
    if let Some(size) = extra_size(random, current_size, desired_average_size) {
        next_exact_string(random, size, out);
    }
}

/// [`next_extra`] appending ASCII bytes to `out`.
#[inline]
pub fn next_extra_bytes(random: &mut JavaRandom, current_size: i32, desired_average_size: i32, out: &mut Vec<u8>) {
    if let Some(size) = extra_size(random, current_size, desired_average_size) {
        next_exact_bytes(random, size, out);
    }
}

/// The length of the `extra` padding (drawn), `None` when there is none.
#[inline]
fn extra_size(random: &mut JavaRandom, current_size: i32, desired_average_size: i32) -> Option<i32> {
    if current_size > desired_average_size {
        return None;
    }
    let desired = desired_average_size - current_size;
    // Java: (int) Math.round(desired * 0.2); non-negative, so round() agrees.
    let delta = (desired as f64 * 0.2).round() as i32;
    let min_size = desired - delta;
    Some(min_size + if delta == 0 { 0 } else { random.next_int_bounded(2 * delta) })
}

/// Reference `nextCreditCard`: four `%04d` groups separated by spaces.
/// Always 19 characters.
pub fn next_credit_card(random: &mut JavaRandom, out: Option<&mut String>) -> usize {
    match out {
        Some(out) => {
            for i in 0..4 {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{:04}", random.next_int_bounded(10_000));
            }
        }
        None => {
            for _ in 0..4 {
                random.next_int_bounded(10_000);
            }
        }
    }
    19
}

/// Reference `getBaseUrl`, but from a seeded generator.
fn base_url(random: &mut JavaRandom) -> String {
    let mut s = String::from("https://www.nexmark.com/");
    for _ in 0..3 {
        next_string(random, 5, b'_', Some(&mut s));
        s.push('/');
    }
    s.push_str("item.htm?query=1");
    s
}

struct ChannelTables {
    hot_urls: Vec<String>,
    names: Vec<String>,
    urls: Vec<String>,
}

fn tables() -> &'static ChannelTables {
    static TABLES: OnceLock<ChannelTables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let hot_urls = (0..HOT_CHANNELS.len() as i64).map(|i| base_url(&mut JavaRandom::new(-1 - i))).collect();
        let mut names = Vec::with_capacity(CHANNELS_NUMBER as usize);
        let mut urls = Vec::with_capacity(CHANNELS_NUMBER as usize);
        for c in 0..CHANNELS_NUMBER {
            let mut r = JavaRandom::new(c as i64);
            let mut url = base_url(&mut r);
            if r.next_int_bounded(10) > 0 {
                let _ = write!(url, "&channel_id={}", c.reverse_bits().wrapping_abs());
            }
            names.push(format!("channel-{c}"));
            urls.push(url);
        }
        ChannelTables { hot_urls, names, urls }
    })
}

/// A bid's channel choice: one of the hot channels or a numbered channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelRef {
    Hot(u8),
    Numbered(u16),
}

impl ChannelRef {
    /// Draws the channel exactly as the reference `nextBid` does.
    #[inline]
    pub fn draw(random: &mut JavaRandom) -> ChannelRef {
        if random.next_int_bounded(HOT_CHANNELS_RATIO) > 0 {
            ChannelRef::Hot(random.next_int_bounded(HOT_CHANNELS.len() as i32) as u8)
        } else {
            ChannelRef::Numbered(random.next_int_bounded(CHANNELS_NUMBER) as u16)
        }
    }

    /// The channel name.
    pub fn channel(self) -> &'static str {
        match self {
            ChannelRef::Hot(i) => HOT_CHANNELS[i as usize],
            ChannelRef::Numbered(c) => &tables().names[c as usize],
        }
    }

    /// The channel's url.
    pub fn url(self) -> &'static str {
        let t = tables();
        match self {
            ChannelRef::Hot(i) => &t.hot_urls[i as usize],
            ChannelRef::Numbered(c) => &t.urls[c as usize],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_lengths_match_with_and_without_buffer() {
        for seed in 0..2000 {
            for (max, special) in [(5, b'_'), (7, b' '), (20, b' '), (100, b' ')] {
                let mut a = JavaRandom::new(seed);
                let mut b = JavaRandom::new(seed);
                let mut s = String::new();
                let la = next_string(&mut a, max, special, Some(&mut s));
                let lb = next_string(&mut b, max, special, None);
                assert_eq!(la, s.len());
                assert_eq!(la, lb, "seed {seed} max {max}: {s:?}");
                assert_eq!(s.trim().len(), s.len());
                assert_eq!(a.next_int(), b.next_int());
            }
            let mut a = JavaRandom::new(seed);
            let mut b = JavaRandom::new(seed);
            let mut s = String::new();
            next_extra(&mut a, 32, 100, Some(&mut s));
            next_extra(&mut b, 32, 100, None);
            assert!((54..82).contains(&s.len()));
            assert_eq!(a.next_int(), b.next_int());
            let mut c = JavaRandom::new(seed);
            let mut bytes = Vec::new();
            next_extra_bytes(&mut c, 32, 100, &mut bytes);
            assert_eq!(bytes, s.as_bytes());
        }
    }

    #[test]
    fn exact_strings_follow_java_arithmetic() {
        for seed in 0..500 {
            let mut a = JavaRandom::new(seed);
            let mut b = JavaRandom::new(seed);
            let mut fast = Vec::new();
            next_exact_bytes(&mut a, 41, &mut fast);
            let mut java = Vec::new();
            let (mut rnd, mut n) = (0i32, 0);
            for _ in 0..41 {
                if n == 0 {
                    rnd = b.next_int();
                    n = 6;
                }
                java.push((b'a' as i32 + rnd % 26) as u8);
                rnd /= 26;
                n -= 1;
            }
            assert_eq!(fast, java, "seed {seed}");
        }
    }

    #[test]
    fn channel_tables_are_deterministic() {
        assert_eq!(ChannelRef::Numbered(7).channel(), "channel-7");
        assert!(ChannelRef::Numbered(7).url().starts_with("https://www.nexmark.com/"));
        assert!(ChannelRef::Hot(0).url().ends_with("item.htm?query=1"));
    }
}
