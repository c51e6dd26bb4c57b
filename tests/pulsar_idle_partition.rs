//! An idle Pulsar partition does not hold back results (pulsar-lite, `WEIR_TEST_PULSAR`): a
//! 2-partition topic whose messages all go to partition 0; the unbounded job (2 shards,
//! watermark idleness 200 ms) → 1 s tumbling count per key delivers the windows of the early
//! seconds while it is still running, because partition 1's split is marked idle. Stopping the
//! source then fires the rest. Waits poll the sink with deadlines.

mod common;

use std::time::{Duration, Instant};

use serde::Deserialize;
use weir::prelude::*;
use weir::source::pulsar::{PulsarSource, PulsarSourceOptions};

#[derive(Clone, Debug, Deserialize)]
struct Event {
    key: i64,
    ts: i64,
}

const EVENTS: i64 = 2_000;

#[test]
fn an_idle_partition_does_not_hold_back_results() {
    let Some(url) = common::test_server("WEIR_TEST_PULSAR") else { return };
    let topic = common::streams::unique("idle");
    let messages: Vec<(Option<String>, Vec<u8>)> = (0..EVENTS)
        .map(|i| (None, format!("{{\"key\":{},\"ts\":{}}}", i % 5, i * 10).into_bytes()))
        .collect();
    weir::source::pulsar::client::produce(&url, &format!("{topic}-partition-0"), messages).unwrap();

    let source = PulsarSource::<Event>::json(PulsarSourceOptions::new(&url, vec![topic.clone()], "weir-idle")).unwrap();
    assert_eq!(source.partitions().len(), 2);
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
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.snapshot().len() < 5 * 19 {
        assert!(
            Instant::now() < deadline,
            "windows did not fire while partition 1 is idle: {} results",
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
    assert_eq!(out.snapshot().len(), 5 * 20, "the last window fires at the end");
}
