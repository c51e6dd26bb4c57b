//! Two keyed exchanges in a row (a window over window results, re-keyed), and tiny rings that
//! are full most of the time: results equal a single-shard run and a direct computation.

mod common;

use std::collections::BTreeMap;

use common::{out_of_order_stream, Ev};
use weir::prelude::*;

/// Per key, counts in 100 ms windows; then, per window start, the number of keys with a count
/// and the largest count, in 1 s windows over those results.
fn run(events: &[Ev], config: EngineConfig) -> Vec<(i64, i64, (i64, i64))> {
    let env = StreamEnv::new(config);
    let out = env
        .from_collection(events.to_vec())
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(30), |e: &Ev| e.ts)
        .key_by(|e: &Ev| e.key)
        .window(WindowAssigner::tumbling(100))
        .aggregate(Count)
        .key_by(|r: &WindowResult<i64, i64>| r.window_start / 1_000)
        .window(WindowAssigner::tumbling(1_000))
        .aggregate((Count, Max(|r: &WindowResult<i64, i64>| r.value)))
        .collect();
    let report = env.execute().unwrap();
    // Window results are stamped end − 1 and precede the watermark that fired them, so the
    // second stage never drops any of them.
    let second: Vec<_> = report
        .operators
        .iter()
        .filter(|(n, _)| n.starts_with("window:"))
        .map(|(_, f)| f.late_records_dropped)
        .collect();
    assert_eq!(second.len(), 2);
    let mut rows: Vec<_> = out.take().into_iter().map(|r| (r.key, r.window_start, r.value)).collect();
    rows.sort();
    rows
}

#[test]
fn window_over_window_is_shard_count_independent() {
    let events = out_of_order_stream(42, 5_000, 9, 8, 30, 3);
    // Direct computation of the second stage from the accepted first-stage windows.
    let single = run(
        &events,
        EngineConfig {
            cores: 1,
            pin_cores: false,
            ..Default::default()
        },
    );
    assert!(!single.is_empty());
    let total_windows: i64 = single.iter().map(|r| r.2 .0).sum();
    let mut first_stage: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    let wms = common::watermarks_before(&events, 30);
    for (e, wm) in events.iter().zip(wms) {
        let start = e.ts.div_euclid(100) * 100;
        if start + 100 - 1 > wm {
            *first_stage.entry((e.key, start)).or_default() += 1;
        }
    }
    assert_eq!(total_windows, first_stage.len() as i64, "every first-stage window reaches the second stage");
    for cores in 2..=4 {
        assert_eq!(
            run(
                &events,
                EngineConfig {
                    cores,
                    pin_cores: false,
                    ..Default::default()
                }
            ),
            single,
            "cores {cores}"
        );
    }
}

#[test]
fn tiny_rings_and_batches_under_backpressure() {
    let events = out_of_order_stream(7, 5_000, 9, 8, 30, 3);
    let single = run(
        &events,
        EngineConfig {
            cores: 1,
            pin_cores: false,
            ..Default::default()
        },
    );
    for cores in [2, 3] {
        let config = EngineConfig {
            cores,
            pin_cores: false,
            batch_size: 3,
            ring_capacity_batches: 1,
            ..Default::default()
        };
        assert_eq!(run(&events, config), single, "cores {cores} with 1-batch rings of 3 records");
    }
}
