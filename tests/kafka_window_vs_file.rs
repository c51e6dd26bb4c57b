//! Kafka → keyed tumbling window → Kafka gives exactly the rows of the same job on files.
//!
//! A seeded out-of-order stream (with late records) is written to a 3-partition topic and, in
//! the same per-partition order, to 3 files. Each partition and each file is one split read in
//! order, so watermarks, lateness decisions and window results must be identical. The Kafka job
//! writes its results with the at-least-once sink and, in a second run, with the exactly-once
//! (transactional) sink; both topics must hold exactly the file job's rows, once each, and the
//! exactly-once run must leave its commit marker.

mod common;
#[path = "common/kafka.rs"]
mod kafka_broker;

use common::{out_of_order_stream, Ev};
use kafka_broker::Broker;
use serde::{Deserialize, Serialize};
use weir::prelude::*;
use weir::sink::kafka::{marker_group, DeliveryGuarantee, KafkaSink, KafkaSinkOptions, ValueFormat};
use weir::source::file::FileSource;
use weir::source::kafka::{KafkaSource, KafkaSourceOptions};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    key: i64,
    ts: i64,
    value: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    key: i64,
    window_start: i64,
    count: i64,
    sum: i64,
}

const PARTITIONS: usize = 3;

fn config() -> EngineConfig {
    EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    }
}

/// The window job on `stream`.
fn windowed(stream: DataStream<Event>) -> DataStream<Row> {
    stream
        .key_by(|e: &Event| e.key)
        .window(WindowAssigner::tumbling(1_000))
        .aggregate((Count, Sum(|e: &Event| e.value)))
        .map(|r: WindowResult<i64, (i64, i64)>| Row {
            key: r.key,
            window_start: r.window_start,
            count: r.value.0,
            sum: r.value.1,
        })
}

fn strategy() -> WatermarkStrategy {
    WatermarkStrategy::bounded_out_of_orderness(50)
}

#[test]
fn kafka_window_job_equals_the_file_job() {
    let Some(broker) = Broker::start() else { return };
    let events: Vec<Event> = out_of_order_stream(7, 6_000, 40, 10, 40, 3)
        .into_iter()
        .map(|Ev { key, ts, value }| Event { key, ts, value })
        .collect();
    // Partition i gets every 3rd event, in stream order; file i the same.
    let parts: Vec<Vec<&Event>> = (0..PARTITIONS).map(|p| events.iter().skip(p).step_by(PARTITIONS).collect()).collect();
    let dir = tempfile::tempdir().unwrap();
    broker.create_topic("events", PARTITIONS as i32);
    for (p, evs) in parts.iter().enumerate() {
        let lines: Vec<(String, i64)> = evs.iter().map(|e| (serde_json::to_string(e).unwrap(), e.ts)).collect();
        broker.produce_lines("events", p as i32, &lines);
        let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
        std::fs::write(dir.path().join(format!("part-{p}.json")), text).unwrap();
    }

    // The file job.
    let env = StreamEnv::new(config());
    let src = env.source(FileSource::<Event>::json_lines(dir.path()).unwrap());
    let out = windowed(src.assign_timestamps_and_watermarks(strategy(), |e: &Event| e.ts)).collect();
    let file_report = env.execute().unwrap();
    let mut want = out.take();
    want.sort();
    assert!(want.len() > 100, "{} rows", want.len());
    let late = file_report.operators_named("window").late_records_dropped;
    assert!(late > 0, "the stream should have late records");

    for (topic, delivery) in [("rows-alo", DeliveryGuarantee::AtLeastOnce), ("rows-eos", DeliveryGuarantee::ExactlyOnce)] {
        broker.create_topic(topic, 2);
        let env = StreamEnv::new(config());
        let source = KafkaSource::<Event>::json(KafkaSourceOptions::new(&broker.bootstrap, "events").bounded(true)).unwrap();
        let sink_options = KafkaSinkOptions::new(&broker.bootstrap, topic)
            .delivery(delivery)
            .transactional_id_prefix(format!("window-test-{topic}"))
            .transaction_log_dir(dir.path().join("txn"));
        let sink = KafkaSink::<Row>::new(sink_options, ValueFormat::Json)
            .unwrap()
            .key(|r: &Row| Some(r.key.to_string().into_bytes()));
        windowed(env.source(source).assign_timestamps_and_watermarks(strategy(), |e: &Event| e.ts)).sink(sink);
        let report = env.execute().unwrap();
        assert_eq!(report.operators_named("window").late_records_dropped, late, "{topic}: same late records");

        let read = broker.read_all(topic);
        let mut got: Vec<Row> = read.iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
        got.sort();
        assert_eq!(got, want, "{topic}: the Kafka job's rows");
        // Keys hash to partitions: one key's rows all sit in one partition.
        for r in &read {
            let row: Row = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(r.key.as_deref(), Some(row.key.to_string().as_bytes()));
            let same_key_partitions: std::collections::BTreeSet<i32> = read.iter().filter(|o| o.key == r.key).map(|o| o.partition).collect();
            assert_eq!(same_key_partitions.len(), 1);
        }
        if delivery == DeliveryGuarantee::ExactlyOnce {
            // Every record carries its transaction; each shard's marker names the epoch committed.
            for shard in 0..2 {
                let id = format!("window-test-{topic}-{shard}");
                let epochs: Vec<String> = read
                    .iter()
                    .filter(|r| r.header("weir.txn").as_deref() == Some(&id))
                    .map(|r| r.header("weir.epoch").unwrap())
                    .collect();
                assert!(!epochs.is_empty(), "{id} wrote records");
                assert!(epochs.iter().all(|e| e == "1"), "{id}: one epoch (end of input)");
                assert_eq!(committed_marker(&broker, &id, topic), 1, "{id}: commit marker");
            }
            let leftover: Vec<_> = walk(&dir.path().join("txn"));
            assert!(leftover.is_empty(), "transaction logs are deleted once committed: {leftover:?}");
        }
    }
}

fn committed_marker(broker: &Broker, transactional_id: &str, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", marker_group(transactional_id))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let got = c.committed_offsets(tpl, std::time::Duration::from_secs(10)).unwrap();
    match got.find_partition(topic, 0).unwrap().offset() {
        rdkafka::Offset::Offset(o) => o,
        _ => 0,
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}
