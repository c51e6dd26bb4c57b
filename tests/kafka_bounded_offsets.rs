//! Bounded mode and start offsets of the Kafka source against a real broker (tansu): a bounded
//! source stops at the high watermarks captured when it was created (records produced later
//! are not read), and each startup mode (earliest, latest, timestamp, group offsets, specific
//! offsets) starts each partition where Flink's would. Splits are partitions, named
//! `topic[partition]`.

#[path = "common/kafka.rs"]
mod kafka_broker;

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_broker::Broker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Deserialize;
use weir::prelude::*;
use weir::source::kafka::{KafkaSource, KafkaSourceOptions, StartupMode, Topics};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    id: i64,
    ts: i64,
}

fn config() -> EngineConfig {
    EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    }
}

/// Run a bounded source to the end; the ids read, sorted.
fn read_ids(source: KafkaSource<Ev>) -> Vec<i64> {
    let env = StreamEnv::new(config());
    let out = env.source(source).without_event_time().collect();
    env.execute().expect("job");
    let mut ids: Vec<i64> = out.take().into_iter().map(|e| e.id).collect();
    ids.sort();
    ids
}

fn lines(ids: std::ops::Range<i64>, ts0: i64) -> Vec<(String, i64)> {
    ids.map(|i| (format!(r#"{{"id": {i}, "ts": {}}}"#, ts0 + i), ts0 + i)).collect()
}

#[test]
fn bounded_mode_and_startup_modes() {
    let Some(broker) = Broker::start() else { return };
    broker.create_topic("events", 2);
    broker.create_topic("other", 1);
    broker.produce_lines("events", 0, &lines(0..10, 1_000));
    broker.produce_lines("events", 1, &lines(100..105, 1_000));
    broker.produce_lines("other", 0, &lines(200..203, 1_000));
    let opts = || KafkaSourceOptions::new(&broker.bootstrap, "events").bounded(true);

    // Earliest, bounded: the offsets are captured now; records produced afterwards are not read.
    let earliest = KafkaSource::<Ev>::json(opts()).unwrap();
    let plans = earliest.partitions().to_vec();
    assert_eq!(plans.iter().map(|p| p.describe()).collect::<Vec<_>>(), ["events[0]", "events[1]"]);
    assert_eq!(plans.iter().map(|p| (p.start, p.stop)).collect::<Vec<_>>(), [(0, Some(10)), (0, Some(5))]);
    broker.produce_lines("events", 0, &lines(10..13, 1_000));
    let want: Vec<i64> = (0..10).chain(100..105).collect();
    assert_eq!(read_ids(earliest), want);

    // Latest: starts at the end, so a bounded read is empty.
    let latest = KafkaSource::<Ev>::json(opts().startup(StartupMode::Latest)).unwrap();
    assert_eq!(
        latest.partitions().iter().map(|p| (p.start, p.stop)).collect::<Vec<_>>(),
        [(13, Some(13)), (5, Some(5))]
    );
    assert_eq!(read_ids(latest), Vec::<i64>::new());

    // Timestamp: from the first message at or after 1_007 in each partition.
    let by_time = KafkaSource::<Ev>::json(opts().startup(StartupMode::Timestamp(1_007))).unwrap();
    let want: Vec<i64> = (7..13).chain(100..105).collect();
    assert_eq!(read_ids(by_time), want);

    // Group offsets: a group committed 4 on partition 0 and nothing on partition 1 (earliest).
    let group_consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", "weir-test-group")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("events", 0, Offset::Offset(4)).unwrap();
    group_consumer.commit(&tpl, CommitMode::Sync).expect("commit group offsets");
    let by_group = KafkaSource::<Ev>::json(opts().group_id("weir-test-group").startup(StartupMode::GroupOffsets)).unwrap();
    let want: Vec<i64> = (4..13).chain(100..105).collect();
    assert_eq!(read_ids(by_group), want);

    // Specific offsets; the other partition starts at the earliest offset.
    let specific = BTreeMap::from([(("events".to_string(), 1), 3i64)]);
    let by_offsets = KafkaSource::<Ev>::json(opts().startup(StartupMode::SpecificOffsets(specific))).unwrap();
    let want: Vec<i64> = (0..13).chain(103..105).collect();
    assert_eq!(read_ids(by_offsets), want);

    // A topic pattern: both topics, splits in (topic, partition) order.
    let pattern = KafkaSource::<Ev>::json(opts().topics(Topics::Pattern("ev.*|oth.+".into()))).unwrap();
    assert_eq!(
        pattern.partitions().iter().map(|p| p.describe()).collect::<Vec<_>>(),
        ["events[0]", "events[1]", "other[0]"]
    );
    let want: Vec<i64> = (0..13).chain(100..105).chain(200..203).collect();
    assert_eq!(read_ids(pattern), want);

    // A missing topic is named.
    let err = KafkaSource::<Ev>::json(KafkaSourceOptions::new(&broker.bootstrap, "nope").bounded(true))
        .err()
        .unwrap();
    assert!(err.to_string().contains("topic `nope` does not exist"), "{err}");
    let _ = Duration::ZERO;
}
