//! Window join end to end (tumbling, sliding, cumulate) against a brute-force reference over the
//! same seeded, out-of-order input with late records, for 1..=4 cores: the pairs, their
//! timestamps (`window end - 1`) and the late-record count must match exactly.

use std::collections::BTreeMap;

use weir::prelude::*;

const DELAY_MS: i64 = 40;
const KEYS: u64 = 7;
/// Assert identical results, late records included, on every core count. This needs the
/// engine's startup rule (a shard hands out no data before it has heard from every input
/// channel, merged into main with the ring-inputs startup gate); without it, a shard that has
/// not yet heard an idle peer's final watermark judges records against a lower watermark and
/// accepts some records the reference drops, so for `cores > 1` the test then checks the
/// result is sandwiched between the reference with lateness and the one without.
const EXACT_ON_ALL_CORES: bool = true;
/// Records at the start of the input that are never late (see `input`).
const WARM_UP: usize = 500;

/// (key, event time ms, id)
type Rec = (u64, i64, u32);
type Out = (u64, u32, u32);

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Both sides interleaved in one ordered stream. After a warm-up prefix, about 4% of records
/// are late; the rest are out of order by less than the watermark delay. (The prefix keeps the
/// test independent of how soon a shard hears from its idle peers at startup.)
fn input(seed: u64, n: usize) -> Vec<JoinInput<Rec, Rec>> {
    let mut next = rng(seed);
    let mut base = 1_000i64;
    (0..n)
        .map(|i| {
            base += (next() % 9) as i64;
            let r = next();
            let ts = if i >= WARM_UP && r.is_multiple_of(25) {
                base - DELAY_MS - 1 - (r % 400) as i64
            } else {
                base - (r % (DELAY_MS as u64 - 1)) as i64
            };
            let rec = (next() % KEYS, ts, i as u32);
            if next().is_multiple_of(2) {
                JoinInput::Left(rec)
            } else {
                JoinInput::Right(rec)
            }
        })
        .collect()
}

fn ts_of(x: &JoinInput<Rec, Rec>) -> i64 {
    match x {
        JoinInput::Left(r) | JoinInput::Right(r) => r.1,
    }
}

fn join_fn(l: &Rec, r: &Rec) -> Option<Out> {
    (!(l.2 + r.2).is_multiple_of(5)).then_some((l.0, l.2, r.2))
}

/// Every window `[start, end)` of the assigner containing `ts`, by brute force.
fn windows(kind: &str, ts: i64) -> Vec<(i64, i64)> {
    match kind {
        "tumbling" => {
            let s = ts - ts.rem_euclid(100);
            vec![(s, s + 100)]
        }
        "sliding" => (ts - 200..=ts)
            .filter(|s| s.rem_euclid(40) == 0 && ts < s + 100)
            .map(|s| (s, s + 100))
            .collect(),
        "cumulate" => {
            let s = ts - ts.rem_euclid(120);
            (1..=4).map(|k| (s, s + 30 * k)).filter(|&(_, e)| ts < e).collect()
        }
        _ => unreachable!(),
    }
}

fn assigner(kind: &str) -> WindowAssigner {
    match kind {
        "tumbling" => WindowAssigner::tumbling(100),
        "sliding" => WindowAssigner::sliding(100, 40),
        "cumulate" => WindowAssigner::cumulate(30, 120),
        _ => unreachable!(),
    }
}

/// Pairs with their timestamps, sorted, and the number of late records.
fn reference(kind: &str, events: &[JoinInput<Rec, Rec>], with_lateness: bool) -> (Vec<(Out, i64)>, u64) {
    type Sides = (Vec<Rec>, Vec<Rec>);
    let mut buffers: BTreeMap<(i64, i64, u64), Sides> = BTreeMap::new();
    let mut late = 0;
    let mut max_ts = i64::MIN;
    for e in events {
        let wm = if max_ts == i64::MIN || !with_lateness { i64::MIN } else { max_ts - DELAY_MS };
        let ts = ts_of(e);
        let open: Vec<_> = windows(kind, ts).into_iter().filter(|&(_, end)| end - 1 > wm).collect();
        if open.is_empty() {
            late += 1;
        }
        for (s, end) in open {
            match e {
                JoinInput::Left(r) => buffers.entry((s, end, r.0)).or_default().0.push(*r),
                JoinInput::Right(r) => buffers.entry((s, end, r.0)).or_default().1.push(*r),
            }
        }
        max_ts = max_ts.max(ts);
    }
    let mut out = Vec::new();
    for ((_, end, _), (ls, rs)) in &buffers {
        for l in ls {
            for r in rs {
                if let Some(o) = join_fn(l, r) {
                    out.push((o, end - 1));
                }
            }
        }
    }
    out.sort();
    (out, late)
}

/// `a ⊆ b` for sorted vectors with repetitions.
fn is_sub_multiset<T: Ord>(a: &[T], b: &[T]) -> bool {
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j == b.len() || b[j] != *x {
            return false;
        }
        j += 1;
    }
    true
}

fn env(cores: usize) -> StreamEnv {
    StreamEnv::new(EngineConfig {
        cores,
        pin_cores: false,
        batch_size: 61,
        ..Default::default()
    })
}

#[test]
fn window_join_matches_reference_with_late_records_on_1_to_4_cores() {
    let events = input(0x0fee_db0b, 6_000);
    for kind in ["tumbling", "sliding", "cumulate"] {
        let (expected, late) = reference(kind, &events, true);
        let (everything, _) = reference(kind, &events, false);
        assert!(
            late > 50 && expected.len() > 2_000,
            "{kind}: the input exercises lateness and joins ({late} late, {} pairs)",
            expected.len()
        );
        for cores in 1..=4 {
            let env = env(cores);
            let out = env
                .from_collection(events.clone())
                .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(DELAY_MS), ts_of)
                .window_join_by(|l: &Rec| l.0, |r: &Rec| r.0, assigner(kind), join_fn)
                .collect();
            let report = env.execute().unwrap();
            let mut got = out.take_with_timestamps();
            got.sort();
            let join = report.operators_named("join");
            assert_eq!(join.records_in, events.len() as u64, "{kind} cores {cores}");
            assert_eq!(join.records_out, got.len() as u64, "{kind} cores {cores}");
            if cores == 1 || EXACT_ON_ALL_CORES {
                assert_eq!(got.len(), expected.len(), "{kind} cores {cores}");
                assert_eq!(got, expected, "{kind} cores {cores}");
                assert_eq!(join.late_records_dropped, late, "{kind} cores {cores}: late records");
            } else {
                assert!(is_sub_multiset(&expected, &got), "{kind} cores {cores}: a pair of the reference is missing");
                assert!(is_sub_multiset(&got, &everything), "{kind} cores {cores}: a pair no window could produce");
                assert!(join.late_records_dropped <= late, "{kind} cores {cores}: late records");
            }
        }
    }
}

/// Two independent keyed streams (Flink's `a.join(b).where(..).equalTo(..)`). With two sources
/// the join's watermark is the minimum of both, so lateness depends on their relative progress;
/// this input has no late records, so the result is deterministic.
#[test]
fn window_join_of_two_keyed_streams() {
    let events: Vec<_> = input(0xabcd, 4_000).into_iter().take(WARM_UP).collect();
    let (expected, late) = reference("sliding", &events, true);
    assert_eq!(late, 0);
    let lefts: Vec<Rec> = events.iter().filter_map(|e| if let JoinInput::Left(l) = e { Some(*l) } else { None }).collect();
    let rights: Vec<Rec> = events
        .iter()
        .filter_map(|e| if let JoinInput::Right(r) = e { Some(*r) } else { None })
        .collect();
    for cores in 1..=4 {
        let env = env(cores);
        let strategy = WatermarkStrategy::bounded_out_of_orderness(DELAY_MS);
        let left = env
            .from_collection(lefts.clone())
            .assign_timestamps_and_watermarks(strategy, |r: &Rec| r.1)
            .key_by(|r: &Rec| r.0);
        let right = env
            .from_collection(rights.clone())
            .assign_timestamps_and_watermarks(strategy, |r: &Rec| r.1)
            .key_by(|r: &Rec| r.0);
        let out = left.window_join(right, assigner("sliding"), join_fn).collect();
        let report = env.execute().unwrap();
        let mut got = out.take_with_timestamps();
        got.sort();
        assert_eq!(got, expected, "cores {cores}");
        assert_eq!(report.operators_named("join").late_records_dropped, 0);
        assert_eq!(report.operators_named("join").records_in, events.len() as u64);
    }
}
