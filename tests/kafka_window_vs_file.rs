//! Kafka → keyed tumbling window → Kafka gives exactly the rows of the same job on files.
//!
//! A seeded out-of-order stream is written to a 3-partition topic and, in the same
//! per-partition order, to 3 files; each partition and each file is one split read in order.
//! The stream has no late records there (with several splits, lateness would depend on how far
//! each was read); a second, single-partition stream has late records, and its late records
//! and rows must match too. The Kafka job
//! writes its results with the at-least-once sink, then with the exactly-once (transactional)
//! sink without checkpoints (end of input commits) and with checkpoints every 5 ms (each
//! completed checkpoint commits its epoch); every topic must hold exactly the file job's rows,
//! once each, and the exactly-once runs must leave their commit markers.

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

/// The file job on `parts` (one file per part) and the Kafka job on `topic` (one partition per
/// part) into each `(output topic, delivery, checkpointed)`; returns the late records dropped.
fn compare(broker: &Broker, dir: &std::path::Path, topic: &str, parts: &[Vec<Event>], variants: &[(&str, DeliveryGuarantee, bool)]) -> u64 {
    let files = dir.join(format!("files-{topic}"));
    std::fs::create_dir_all(&files).unwrap();
    broker.create_topic(topic, parts.len() as i32);
    for (p, evs) in parts.iter().enumerate() {
        let lines: Vec<(String, i64)> = evs.iter().map(|e| (serde_json::to_string(e).unwrap(), e.ts)).collect();
        broker.produce_lines(topic, p as i32, &lines);
        let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
        std::fs::write(files.join(format!("part-{p}.json")), text).unwrap();
    }

    // The file job.
    let env = StreamEnv::new(config());
    let src = env.source(FileSource::<Event>::json_lines(&files).unwrap());
    let out = windowed(src.assign_timestamps_and_watermarks(strategy(), |e: &Event| e.ts)).collect();
    let file_report = env.execute().unwrap();
    let mut want = out.take();
    want.sort();
    assert!(want.len() > 100, "{} rows", want.len());
    let late = file_report.operators_named("window").late_records_dropped;

    for &(out_topic, delivery, checkpointed) in variants {
        broker.create_topic(out_topic, 2);
        let mut cfg = config();
        if checkpointed {
            cfg.checkpoint_interval_ms = 5;
            cfg.checkpoint_dir = Some(dir.join(format!("chk-{out_topic}")));
        }
        let env = StreamEnv::new(cfg);
        let source = KafkaSource::<Event>::json(KafkaSourceOptions::new(&broker.bootstrap, topic).bounded(true)).unwrap();
        let sink_options = KafkaSinkOptions::new(&broker.bootstrap, out_topic)
            .delivery(delivery)
            .transactional_id_prefix(format!("window-test-{out_topic}"))
            .transaction_log_dir(dir.join("txn"));
        let sink = KafkaSink::<Row>::new(sink_options, ValueFormat::Json)
            .unwrap()
            .key(|r: &Row| Some(r.key.to_string().into_bytes()));
        windowed(env.source(source).assign_timestamps_and_watermarks(strategy(), |e: &Event| e.ts)).sink(sink);
        let report = env.execute().unwrap();
        assert_eq!(report.operators_named("window").late_records_dropped, late, "{out_topic}: same late records");

        let read = broker.read_all(out_topic);
        let mut got: Vec<Row> = read.iter().map(|r| serde_json::from_slice(&r.value).unwrap()).collect();
        got.sort();
        if got != want {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
            let again = broker.read_all(out_topic);
            let mut per: std::collections::BTreeMap<i32, (usize, i64, i64)> = Default::default();
            for r in &again {
                let e = per.entry(r.partition).or_insert((0, i64::MAX, -1));
                e.0 += 1;
                e.1 = e.1.min(r.offset);
                e.2 = e.2.max(r.offset);
            }
            let again = format!("{} per partition (count, first, last offset) {per:?}", again.len());
            panic!(
                "{out_topic}: {} rows (read again: {again}), want {}; missing {missing:?}; extra {extra:?}; operators {:?}",
                got.len(),
                want.len(),
                report.operators
            );
        }
        // Keys hash to partitions: one key's rows all sit in one partition.
        for r in &read {
            let row: Row = serde_json::from_slice(&r.value).unwrap();
            assert_eq!(r.key.as_deref(), Some(row.key.to_string().as_bytes()));
            let same_key_partitions: std::collections::BTreeSet<i32> = read.iter().filter(|o| o.key == r.key).map(|o| o.partition).collect();
            assert_eq!(same_key_partitions.len(), 1);
        }
        if delivery == DeliveryGuarantee::ExactlyOnce {
            // Every record carries its transaction; each shard's marker names the last epoch
            // committed: without checkpoints, epoch 1 at end of input; with them, the final
            // epoch (u64::MAX, marked i64::MAX) after the periodic ones.
            for shard in 0..2 {
                let id = format!("window-test-{out_topic}-{shard}");
                let epochs: std::collections::BTreeSet<String> = read
                    .iter()
                    .filter(|r| r.header("weir.txn").as_deref() == Some(&id))
                    .map(|r| r.header("weir.epoch").unwrap())
                    .collect();
                assert!(!epochs.is_empty(), "{id} wrote records");
                let marker = committed_marker(broker, &id, out_topic);
                if checkpointed {
                    assert_eq!(marker, i64::MAX, "{id}: final commit marker");
                } else {
                    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), ["1"], "{id}: one epoch (end of input)");
                    assert_eq!(marker, 1, "{id}: commit marker");
                }
            }
            let leftover: Vec<_> = walk(&dir.join("txn"));
            assert!(leftover.is_empty(), "transaction logs are deleted once committed: {leftover:?}");
        }
    }
    late
}

fn events(seed: u64, n: usize, late_percent: u64) -> Vec<Event> {
    out_of_order_stream(seed, n, 40, 10, 40, late_percent)
        .into_iter()
        .map(|Ev { key, ts, value }| Event { key, ts, value })
        .collect()
}

#[test]
fn kafka_window_job_equals_the_file_job() {
    let Some(broker) = Broker::start() else { return };
    let dir = tempfile::tempdir().unwrap();

    // Three partitions, records at most 40 ms early (delay 50): no record can be late, whatever
    // the interleaving of the partitions, so the rows are fully determined.
    let all = events(7, 6_000, 0);
    let parts: Vec<Vec<Event>> = (0..PARTITIONS).map(|p| all.iter().skip(p).step_by(PARTITIONS).cloned().collect()).collect();
    let variants = [
        ("rows-alo", DeliveryGuarantee::AtLeastOnce, false),
        ("rows-eos", DeliveryGuarantee::ExactlyOnce, false),
        ("rows-eos-checkpointed", DeliveryGuarantee::ExactlyOnce, true),
    ];
    assert_eq!(compare(&broker, dir.path(), "events", &parts, &variants), 0);

    // One partition with late records: one ordered input decides lateness the same way on
    // every run, so the late records and the rows match too. (With several partitions the
    // late/not-late decision depends on how far the others have been read, in weir as in Flink.)
    let late = compare(
        &broker,
        dir.path(),
        "late-events",
        &[events(8, 4_000, 3)],
        &[("rows-late", DeliveryGuarantee::AtLeastOnce, false)],
    );
    assert!(late > 0, "the stream should have late records");
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
