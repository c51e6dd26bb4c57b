//! Windows and watermarks against a brute-force reference.
//!
//! For seeded out-of-order streams with late events, every window kind (tumbling, sliding,
//! cumulate, session), with and without allowed lateness, on 1, 2, 3 and 4 shards, weir's output
//! (every firing, including late firings) must equal a reference that recomputes each window from
//! scratch, and the late records weir drops or side-outputs must be exactly the reference's.

mod common;

use std::collections::{BTreeMap, HashSet};

use common::{out_of_order_stream, watermarks_before, Ev};
use weir::prelude::*;
use weir::sink::collect::CollectSink;

type Agg = (i64, i64, i64, i64); // count, sum, min, max
type Row = (i64, i64, i64, Agg); // key, start, end, aggregate

const DELAY_MS: i64 = 40;

fn agg_of(values: &[i64]) -> Agg {
    (
        values.len() as i64,
        values.iter().sum(),
        *values.iter().min().unwrap(),
        *values.iter().max().unwrap(),
    )
}

fn aligned_windows(assigner: WindowAssigner, ts: i64) -> Vec<(i64, i64)> {
    // Independent of the engine's assigner code: enumerate candidate starts on the grid.
    match assigner {
        WindowAssigner::Tumbling { size_ms, .. } => {
            let s = ts.div_euclid(size_ms) * size_ms;
            vec![(s, s + size_ms)]
        }
        WindowAssigner::Sliding { size_ms, slide_ms, .. } => {
            let mut v = Vec::new();
            let mut s = (ts - size_ms).div_euclid(slide_ms) * slide_ms;
            while s <= ts {
                if s <= ts && ts < s + size_ms {
                    v.push((s, s + size_ms));
                }
                s += slide_ms;
            }
            v
        }
        WindowAssigner::Cumulate { step_ms, max_size_ms, .. } => {
            let s = ts.div_euclid(max_size_ms) * max_size_ms;
            (1..=max_size_ms / step_ms).map(|k| (s, s + k * step_ms)).filter(|&(_, e)| ts < e).collect()
        }
        WindowAssigner::Session { .. } => unreachable!(),
    }
}

/// Every firing of aligned windows, recomputed from the accepted records of each window.
fn aligned_reference(events: &[Ev], assigner: WindowAssigner, lateness: i64) -> (Vec<Row>, Vec<Ev>) {
    let wms = watermarks_before(events, DELAY_MS);
    let mut windows: BTreeMap<(i64, i64, i64), (Vec<i64>, usize)> = BTreeMap::new();
    let mut rows = Vec::new();
    let mut late = Vec::new();
    for (e, &wm) in events.iter().zip(&wms) {
        let mut accepted = false;
        for (s, end) in aligned_windows(assigner, e.ts) {
            if end - 1 + lateness <= wm {
                continue;
            }
            accepted = true;
            let (values, on_time) = windows.entry((e.key, s, end)).or_default();
            values.push(e.value);
            if end - 1 > wm {
                *on_time += 1;
            } else {
                rows.push((e.key, s, end, agg_of(values)));
            }
        }
        if !accepted {
            late.push(*e);
        }
    }
    for ((key, s, end), (values, on_time)) in windows {
        if on_time > 0 {
            rows.push((key, s, end, agg_of(&values[..on_time])));
        }
    }
    rows.sort();
    (rows, late)
}

/// Sessions of a set of timestamps/values: sort, merge while the next record's window touches.
fn sessions_of(records: &[(i64, i64)], gap: i64) -> Vec<(i64, i64, Vec<i64>)> {
    let mut sorted = records.to_vec();
    sorted.sort();
    let mut out: Vec<(i64, i64, Vec<i64>)> = Vec::new();
    for (ts, v) in sorted {
        match out.last_mut() {
            Some((_, end, values)) if ts <= *end => {
                *end = (*end).max(ts + gap);
                values.push(v);
            }
            _ => out.push((ts, ts + gap, vec![v])),
        }
    }
    out
}

/// Every firing of session windows, recomputing each key's sessions from its records in state.
fn session_reference(events: &[Ev], gap: i64, lateness: i64) -> (Vec<Row>, Vec<Ev>) {
    let wms = watermarks_before(events, DELAY_MS);
    let mut state: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
    let mut emitted: HashSet<(i64, i64, i64, usize)> = HashSet::new();
    let mut rows = Vec::new();
    let mut late = Vec::new();
    let mut current = i64::MIN;
    let advance = |wm: i64, state: &mut BTreeMap<i64, Vec<(i64, i64)>>, emitted: &mut HashSet<(i64, i64, i64, usize)>, rows: &mut Vec<Row>| {
        for (key, records) in state.iter_mut() {
            let mut keep = Vec::new();
            for (s, end, values) in sessions_of(records, gap) {
                if end - 1 <= wm && emitted.insert((*key, s, end, values.len())) {
                    rows.push((*key, s, end, agg_of(&values)));
                }
                if end - 1 + lateness > wm {
                    keep.extend(records.iter().filter(|(t, _)| *t >= s && *t < end).copied());
                }
            }
            *records = keep;
        }
    };
    for (e, &wm) in events.iter().zip(&wms) {
        if wm > current {
            current = wm;
            advance(wm, &mut state, &mut emitted, &mut rows);
        }
        let records = state.entry(e.key).or_default();
        let (start, end) = (e.ts, e.ts + gap);
        let merges = sessions_of(records, gap).iter().any(|(s, en, _)| *s <= end && *en >= start);
        if !merges && end - 1 + lateness <= wm {
            late.push(*e);
            continue;
        }
        records.push((e.ts, e.value));
        let group = sessions_of(records, gap).into_iter().find(|(s, en, _)| *s <= e.ts && e.ts < *en).unwrap();
        if group.1 - 1 <= wm {
            emitted.insert((e.key, group.0, group.1, group.2.len()));
            rows.push((e.key, group.0, group.1, agg_of(&group.2)));
        }
    }
    advance(i64::MAX, &mut state, &mut emitted, &mut rows);
    rows.sort();
    (rows, late)
}

/// Run the window job on weir; returns (sorted rows, late records side-output or dropped count).
fn run_weir(events: &[Ev], assigner: WindowAssigner, lateness: i64, cores: usize, side_output: bool) -> (Vec<Row>, Vec<Ev>, JobReport) {
    let env = StreamEnv::new(EngineConfig {
        cores,
        pin_cores: false,
        batch_size: 64,
        ..Default::default()
    });
    let (late_sink, late_handle) = CollectSink::new();
    let mut windowed = env
        .from_collection(events.to_vec())
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(DELAY_MS), |e: &Ev| e.ts)
        .key_by(|e: &Ev| e.key)
        .window(assigner)
        .allowed_lateness(lateness);
    if side_output {
        windowed = windowed.late_records_to(late_sink);
    }
    let out = windowed
        .aggregate((Count, Sum(|e: &Ev| e.value), Min(|e: &Ev| e.value), Max(|e: &Ev| e.value)))
        .collect();
    let report = env.execute().expect("job runs");
    let mut rows: Vec<Row> = out.take().into_iter().map(|r| (r.key, r.window_start, r.window_end, r.value)).collect();
    rows.sort();
    let mut late = late_handle.take();
    late.sort_by_key(|e| (e.ts, e.key, e.value));
    (rows, late, report)
}

fn check(kind: &str, assigner: WindowAssigner, lateness: i64, seed: u64) {
    let events = out_of_order_stream(seed, 3_000, 12, 12, DELAY_MS, 4);
    let (expected, expected_late) = match assigner {
        WindowAssigner::Session { gap_ms } => session_reference(&events, gap_ms, lateness),
        _ => aligned_reference(&events, assigner, lateness),
    };
    assert!(!expected.is_empty());
    assert!(!expected_late.is_empty(), "{kind}: the stream must contain late records");
    let mut first: Option<Vec<Row>> = None;
    for cores in 1..=4 {
        let side = cores % 2 == 0;
        let (rows, late, report) = run_weir(&events, assigner, lateness, cores, side);
        assert_eq!(rows.len(), expected.len(), "{kind} lateness {lateness} cores {cores}: number of firings");
        assert_eq!(rows, expected, "{kind} lateness {lateness} cores {cores}: firings differ from the reference");
        let figures = report.operators_named("window:");
        if side {
            let mut want = expected_late.clone();
            want.sort_by_key(|e| (e.ts, e.key, e.value));
            assert_eq!(late, want, "{kind} cores {cores}: side-output late records");
            assert_eq!(figures.late_records_side_output, expected_late.len() as u64);
            assert_eq!(figures.late_records_dropped, 0);
        } else {
            assert!(late.is_empty());
            assert_eq!(
                figures.late_records_dropped,
                expected_late.len() as u64,
                "{kind} cores {cores}: dropped late count"
            );
        }
        assert_eq!(figures.records_in, events.len() as u64);
        match &first {
            None => first = Some(rows),
            Some(f) => assert_eq!(&rows, f, "identical output for every shard count"),
        }
    }
}

#[test]
fn tumbling_matches_reference() {
    check("tumbling", WindowAssigner::tumbling(100), 0, 1);
    check("tumbling", WindowAssigner::tumbling(100), 150, 2);
}

#[test]
fn sliding_matches_reference() {
    check("sliding", WindowAssigner::sliding(100, 25), 0, 3);
    check("sliding", WindowAssigner::sliding(100, 25), 150, 4);
}

#[test]
fn cumulate_matches_reference() {
    check("cumulate", WindowAssigner::cumulate(25, 100), 0, 5);
    check("cumulate", WindowAssigner::cumulate(25, 100), 150, 6);
}

#[test]
fn session_matches_reference() {
    check("session", WindowAssigner::session(30), 0, 7);
    check("session", WindowAssigner::session(30), 150, 8);
}

#[test]
fn several_splits_without_late_data_count_every_record() {
    // Three splits read in parallel; with a generous delay nothing is late, so the union of
    // windows is exact whatever the interleaving.
    let splits: Vec<Vec<Ev>> = (0..3).map(|s| out_of_order_stream(100 + s, 1_000, 7, 10, 20, 0)).collect();
    let all: Vec<Ev> = splits.iter().flatten().copied().collect();
    let mut expected: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for e in &all {
        *expected.entry((e.key, e.ts.div_euclid(50) * 50)).or_default() += 1;
    }
    for cores in [1, 3] {
        let env = StreamEnv::new(EngineConfig {
            cores,
            pin_cores: false,
            ..Default::default()
        });
        let out = env
            .source(CollectionSource::new(splits.clone()))
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(100_000), |e: &Ev| e.ts)
            .key_by(|e: &Ev| e.key)
            .window(WindowAssigner::tumbling(50))
            .aggregate(Count)
            .collect();
        let report = env.execute().unwrap();
        let got: BTreeMap<(i64, i64), i64> = out.take().into_iter().map(|r| ((r.key, r.window_start), r.value)).collect();
        assert_eq!(got, expected);
        assert_eq!(report.operators_named("window:").late_records_dropped, 0);
    }
}
