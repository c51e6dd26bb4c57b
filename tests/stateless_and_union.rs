//! map, filter, flat_map and union across shards: every record arrives once, with its
//! timestamp, and union's watermark is the minimum of both inputs (no record of the slower input
//! is judged late because of the faster one).

mod common;

use std::collections::BTreeMap;

use common::Ev;
use weir::prelude::*;

#[test]
fn map_filter_flat_map_keep_every_record_once() {
    let input: Vec<i64> = (0..10_000).collect();
    for cores in 1..=3 {
        let env = StreamEnv::new(EngineConfig {
            cores,
            pin_cores: false,
            batch_size: 100,
            ..Default::default()
        });
        let out = env
            .from_collection(input.clone())
            .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(), |x: &i64| *x)
            .filter(|x: &i64| x % 3 != 0)
            .flat_map(|x: i64| vec![x; (x % 4) as usize])
            .map(|x: i64| x * 10)
            .key_by(|x: &i64| *x)
            .partitioned()
            .collect();
        env.execute().unwrap();
        let mut got = out.take_with_timestamps();
        got.sort();
        let mut want: Vec<(i64, i64)> = input
            .iter()
            .filter(|x| *x % 3 != 0)
            .flat_map(|&x| vec![(x * 10, x); (x % 4) as usize])
            .collect();
        want.sort();
        assert_eq!(got, want, "cores {cores}");
    }
}

#[test]
fn union_takes_the_minimum_watermark() {
    // Stream A runs far ahead in event time; stream B is behind. If the union used A's
    // watermark, all of B would be late.
    let a: Vec<Ev> = (0..2_000)
        .map(|i| Ev {
            key: i % 5,
            ts: 1_000_000 + i * 10,
            value: 1,
        })
        .collect();
    let b: Vec<Ev> = (0..2_000)
        .map(|i| Ev {
            key: i % 5,
            ts: i * 10,
            value: 2,
        })
        .collect();
    let mut expected: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for e in a.iter().chain(&b) {
        let w = e.ts.div_euclid(1_000) * 1_000;
        let entry = expected.entry((e.key, w)).or_default();
        entry.0 += 1;
        entry.1 += e.value;
    }
    for cores in 1..=3 {
        let env = StreamEnv::new(EngineConfig {
            cores,
            pin_cores: false,
            batch_size: 64,
            ..Default::default()
        });
        let sa = env
            .from_collection(a.clone())
            .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(), |e: &Ev| e.ts);
        let sb = env
            .from_collection(b.clone())
            .assign_timestamps_and_watermarks(WatermarkStrategy::monotonous(), |e: &Ev| e.ts);
        let out = sa
            .union(sb)
            .key_by(|e: &Ev| e.key)
            .window(WindowAssigner::tumbling(1_000))
            .aggregate((Count, Sum(|e: &Ev| e.value)))
            .collect();
        let report = env.execute().unwrap();
        let got: BTreeMap<(i64, i64), (i64, i64)> = out.take().into_iter().map(|r| ((r.key, r.window_start), r.value)).collect();
        assert_eq!(report.operators_named("window:").late_records_dropped, 0, "cores {cores}");
        assert_eq!(got, expected, "cores {cores}");
    }
}

#[test]
fn full_rings_are_counted_as_backpressure_per_shard() {
    // Split 0 runs on shard 0 and every record is routed back to shard 0 (key 0 hashes to key
    // group 0). Each input record becomes 100 one-record batches in one step, so the 1-slot
    // ring from shard 0 to itself is full from the second send of every step on: its consumer
    // runs on the same thread and cannot drain it until the producer waits.
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        batch_size: 1,
        ring_capacity_batches: 1,
        ..Default::default()
    });
    let out = env
        .from_collection((0..200i64).collect())
        .without_event_time()
        .flat_map(|x: i64| vec![x; 100])
        .key_by(|_: &i64| 0i64)
        .partitioned()
        .collect();
    let report = env.execute().unwrap();
    assert_eq!(out.take().len(), 20_000);
    let self_ring = report.rings.iter().find(|((_, from, to), _)| *from == 0 && *to == 0).map(|(_, f)| *f).unwrap();
    assert!(self_ring.full_events >= 200 * 99, "every step after its first send waits: {self_ring:?}");
    let by_shard = report.backpressure_ns_by_shard();
    assert_eq!(by_shard.iter().sum::<u64>(), report.backpressure_ns());
    assert!(by_shard[0] > 0 && by_shard[0] >= self_ring.full_ns);
}
