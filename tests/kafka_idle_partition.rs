//! An idle (here: empty) Kafka partition does not hold back results when the watermark
//! strategy has idleness; without idleness it does, and the status metrics name the partition.
//!
//! Topic `events` has 2 partitions: partition 0 holds events over 20 s of event time, partition 1
//! nothing. The job is an unbounded source → key_by → 1 s tumbling count → Kafka:
//! - with `with_idleness(200)` (2 shards): the window results of the early seconds reach the output topic
//!   while the job is still running (polled with a timeout), because partition 1's split is
//!   marked idle;
//! - without idleness (1 shard reading both partitions): once every record has been read, the source's watermark is still the
//!   minimum and is held back by input `events[1]`, and nothing has been written; stopping the
//!   source then (end of input) fires every window.

#[path = "common/kafka.rs"]
mod kafka_broker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_broker::Broker;
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::shard::MetricsRegistry;
use weir::sink::kafka::{KafkaSink, KafkaSinkOptions, ValueFormat};
use weir::source::kafka::{KafkaSource, KafkaSourceOptions};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    key: i64,
    ts: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    key: i64,
    start: i64,
    count: i64,
}

const EVENTS: i64 = 2_000;

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Start the job on a thread; returns its stop handle, registry and join handle.
fn start(
    broker: &Broker,
    out_topic: &str,
    cores: usize,
    strategy: WatermarkStrategy,
) -> (weir::source::kafka::StopHandle, Arc<MetricsRegistry>, std::thread::JoinHandle<()>) {
    let config = EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    let source = KafkaSource::<Event>::json(KafkaSourceOptions::new(&broker.bootstrap, "events")).unwrap();
    let stop = source.stop_handle();
    let sink = KafkaSink::<Row>::new(KafkaSinkOptions::new(&broker.bootstrap, out_topic), ValueFormat::Json).unwrap();
    let registry = Arc::new(MetricsRegistry::default());
    let (reg, cfg) = (registry.clone(), config.clone());
    let handle = std::thread::spawn(move || {
        let env = StreamEnv::new(cfg.clone());
        env.source(source)
            .assign_timestamps_and_watermarks(strategy, |e: &Event| e.ts)
            .key_by(|e: &Event| e.key)
            .window(WindowAssigner::tumbling(1_000))
            .aggregate(Count)
            .map(|r: WindowResult<i64, i64>| Row {
                key: r.key,
                start: r.window_start,
                count: r.value,
            })
            .sink(sink);
        weir::shard::runtime::execute_with_registry(env.graph(), &cfg, reg).expect("job");
    });
    (stop, registry, handle)
}

fn rows(broker: &Broker, topic: &str) -> Vec<Row> {
    let mut v: Vec<Row> = broker.read_all(topic).iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
    v.sort();
    v
}

#[test]
fn an_idle_partition_does_not_hold_back_results() {
    let Some(broker) = Broker::start() else { return };
    broker.create_topic("events", 2);
    // Event time 0..20 s on partition 0 only (10 ms apart, in order), keys 0..5.
    let lines: Vec<(String, i64)> = (0..EVENTS)
        .map(|i| {
            let e = Event { key: i % 5, ts: i * 10 };
            (serde_json::to_string(&e).unwrap(), e.ts)
        })
        .collect();
    broker.produce_lines("events", 0, &lines);
    let mut all: Vec<Row> = (0..20)
        .flat_map(|w| {
            (0..5).map(move |k| Row {
                key: k,
                start: w * 1_000,
                count: 20,
            })
        })
        .collect();
    all.sort();

    // With idleness: the first windows arrive while the job runs.
    broker.create_topic("rows-idle", 1);
    let (stop, _, job) = start(&broker, "rows-idle", 2, WatermarkStrategy::bounded_out_of_orderness(0).with_idleness(200));
    wait_for("window results with idleness", Duration::from_secs(60), || {
        rows(&broker, "rows-idle").len() >= 5 * 19
    });
    // Every window but the last (its end is beyond the watermark 19_990) fired, exactly.
    let fired: Vec<Row> = all.iter().filter(|r| r.start < 19_000).cloned().collect();
    assert_eq!(rows(&broker, "rows-idle"), fired, "results before the end of input");
    stop.stop();
    job.join().unwrap();
    assert_eq!(rows(&broker, "rows-idle"), all);

    // Without idleness: everything is read, the watermark stays at the minimum, held back by
    // the empty partition, and nothing fires until the end of input.
    broker.create_topic("rows-stalled", 1);
    let (stop, registry, job) = start(&broker, "rows-stalled", 1, WatermarkStrategy::bounded_out_of_orderness(0));
    let source_heads = || {
        registry
            .operator_snapshots()
            .into_iter()
            .filter(|o| o.name.starts_with("source:kafka"))
            .collect::<Vec<_>>()
    };
    wait_for("every record read", Duration::from_secs(60), || {
        source_heads().iter().map(|o| o.records_out).sum::<u64>() == EVENTS as u64
    });
    // One shard reads both partitions: its source names the split holding the watermark back.
    wait_for("the status naming the empty partition", Duration::from_secs(30), || {
        source_heads().iter().any(|o| o.watermark_held_by_name.as_deref() == Some("events[1]"))
    });
    let window_heads: Vec<_> = registry.operator_snapshots().into_iter().filter(|o| o.name.starts_with("window")).collect();
    assert!(window_heads.iter().all(|o| o.records_out == 0), "no window fired: {window_heads:?}");
    assert!(rows(&broker, "rows-stalled").is_empty());
    stop.stop();
    job.join().unwrap();
    assert_eq!(rows(&broker, "rows-stalled"), all, "end of input fires every window");
}
