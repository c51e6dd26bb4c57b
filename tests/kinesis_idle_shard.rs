//! An idle Kinesis shard does not hold back results (kinesalite, `WEIR_TEST_KINESIS`): a
//! 2-shard stream whose records all go to shard 0 (explicit hash key 0); the unbounded job
//! (2 shards, watermark idleness 200 ms) → 1 s tumbling count per key delivers the windows of
//! the early seconds while it is still running, because shard 1's split is marked idle. Stopping
//! the source then fires the rest. Waits poll the sink with deadlines.

mod common;

use std::time::{Duration, Instant};

use serde::Deserialize;
use weir::prelude::*;
use weir::source::kinesis::{KinesisSource, KinesisSourceOptions};

#[derive(Clone, Debug, Deserialize)]
struct Event {
    key: i64,
    ts: i64,
}

const EVENTS: i64 = 2_000;

#[test]
fn an_idle_shard_does_not_hold_back_results() {
    let Some(url) = common::test_server("WEIR_TEST_KINESIS") else { return };
    let stream = common::streams::unique("idle");
    common::streams::create_stream(&url, &stream, 2);
    // Event time 0..20 s on shard 0 only, 10 ms apart, keys 0..5.
    let records: Vec<(String, Vec<u8>)> = (0..EVENTS)
        .map(|i| (format!("k{}", i % 5), format!("{{\"key\":{},\"ts\":{}}}", i % 5, i * 10).into_bytes()))
        .collect();
    common::streams::put_records(&url, &stream, records, Some("0"));

    let options = KinesisSourceOptions::new(&url, "us-east-1", &stream)
        .credentials(common::streams::ACCESS_KEY, common::streams::SECRET_KEY)
        .poll_interval_ms(10);
    let source = KinesisSource::<Event>::json(options).unwrap();
    assert_eq!(source.shards().len(), 2);
    let stop = source.stop_handle();
    let sink = common::streams::SharedSink::<(i64, i64, i64)>::default();
    let out = sink.clone();
    let job = std::thread::spawn(move || {
        let env = StreamEnv::new(EngineConfig {
            cores: 2,
            pin_cores: false,
            ..Default::default()
        });
        env.source(source)
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(0).with_idleness(200), |e: &Event| e.ts)
            .key_by(|e: &Event| e.key)
            .window(WindowAssigner::tumbling(1_000))
            .aggregate(Count)
            .map(|r: WindowResult<i64, i64>| (r.window_start, r.key, r.value))
            .sink(sink);
        env.execute().expect("job");
    });
    // Every window but the last (its end is past the watermark 19 990) fires while running.
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.snapshot().len() < 5 * 19 {
        assert!(
            Instant::now() < deadline,
            "windows did not fire while shard 1 is idle: {} results",
            out.snapshot().len()
        );
        assert!(!job.is_finished(), "the job ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut early = out.snapshot();
    early.sort();
    let want: Vec<(i64, i64, i64)> = (0..19).flat_map(|w| (0..5).map(move |k| (w * 1_000, k, 20))).collect();
    assert_eq!(early, want, "exactly the fired windows, each once");
    stop.stop();
    job.join().unwrap();
    let mut all = out.snapshot();
    all.sort();
    assert_eq!(all.len(), 5 * 20, "the last window fires at the end");
}
