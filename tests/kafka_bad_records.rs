//! Bad Kafka records follow the user's policy, never a panic: a value that is not JSON, a
//! missing field, a wrong type, invalid UTF-8 (raw format) and a CSV value with too few
//! fields.
//! - `fail`: the job fails naming topic, partition, offset and field;
//! - `skip`: the good records come through, the bad ones are counted in `bad_records`;
//! - `dead-letter` with a dead-letter topic: the bad ones are in that topic, raw, with the
//!   error, field, topic, partition and offset as headers;
//! - `dead-letter` without one: the dead-letter file of the shard.

#[path = "common/kafka.rs"]
mod kafka_broker;

use kafka_broker::Broker;
use serde::Deserialize;
use weir::config::ErrorPolicy;
use weir::prelude::*;
use weir::source::kafka::{KafkaSource, KafkaSourceOptions};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Ev {
    id: i64,
    name: String,
}

fn config(policy: ErrorPolicy, dead_letter_dir: Option<std::path::PathBuf>) -> EngineConfig {
    EngineConfig {
        cores: 2,
        pin_cores: false,
        on_bad_record: policy,
        dead_letter_dir,
        ..Default::default()
    }
}

fn run_json(broker: &Broker, config: EngineConfig, dead_letter_topic: Option<&str>) -> weir::error::Result<(Vec<Ev>, u64)> {
    let mut opts = KafkaSourceOptions::new(&broker.bootstrap, "json-in").bounded(true);
    if let Some(t) = dead_letter_topic {
        opts = opts.dead_letter_topic(t);
    }
    let env = StreamEnv::new(config);
    let stream = env.source(KafkaSource::<Ev>::json(opts)?).without_event_time();
    let name = stream.name().to_string();
    let out = stream.collect();
    let report = env.execute()?;
    let mut got = out.take();
    got.sort();
    Ok((got, report.operator(&name).bad_records))
}

#[test]
fn bad_records_follow_the_policy() {
    let Some(broker) = Broker::start() else { return };
    broker.create_topic("json-in", 2);
    broker.create_topic("dlq", 1);
    let p0: Vec<(String, i64)> = [r#"{"id": 1, "name": "a"}"#, "not json", r#"{"id": 2, "name": "b"}"#, r#"{"id": 3}"#]
        .iter()
        .map(|s| (s.to_string(), 1))
        .collect();
    let p1: Vec<(String, i64)> = [r#"{"id": "x", "name": "c"}"#, r#"{"id": 4, "name": "d"}"#]
        .iter()
        .map(|s| (s.to_string(), 1))
        .collect();
    broker.produce_lines("json-in", 0, &p0);
    broker.produce_lines("json-in", 1, &p1);
    let good = vec![Ev { id: 1, name: "a".into() }, Ev { id: 2, name: "b".into() }, Ev { id: 4, name: "d".into() }];

    // fail: the first bad record of either partition stops the job, with where and what.
    let err = run_json(&broker, config(ErrorPolicy::Fail, None), None).unwrap_err().to_string();
    let named = err.contains("bad record in json-in[0] offset 1") || err.contains("bad record in json-in[1] offset 0 field `id`");
    assert!(named, "{err}");

    // skip: counted.
    let (got, bad) = run_json(&broker, config(ErrorPolicy::Skip, None), None).unwrap();
    assert_eq!((got, bad), (good.clone(), 3));

    // dead-letter topic: the raw values with the error as headers.
    let (got, bad) = run_json(&broker, config(ErrorPolicy::DeadLetter, None), Some("dlq")).unwrap();
    assert_eq!((got, bad), (good.clone(), 3));
    let mut dead: Vec<(String, String, String, String, String)> = broker
        .read_all("dlq")
        .into_iter()
        .map(|r| {
            (
                r.header("weir.topic").unwrap(),
                r.header("weir.partition").unwrap(),
                r.header("weir.offset").unwrap(),
                r.header("weir.field").unwrap_or_default(),
                String::from_utf8(r.value).unwrap(),
            )
        })
        .collect();
    dead.sort();
    let expect = |p: &str, o: &str, f: &str, v: &str| ("json-in".to_string(), p.to_string(), o.to_string(), f.to_string(), v.to_string());
    assert_eq!(
        dead,
        vec![
            expect("0", "1", "", "not json"),
            expect("0", "3", "name", r#"{"id": 3}"#),
            expect("1", "0", "id", r#"{"id": "x", "name": "c"}"#),
        ]
    );
    let errors: Vec<String> = broker.read_all("dlq").into_iter().map(|r| r.header("weir.error").unwrap()).collect();
    assert!(errors.iter().any(|e| e.contains("missing field `name`")), "{errors:?}");

    // dead-letter without a topic: the shard's dead-letter file.
    let dir = tempfile::tempdir().unwrap();
    let (got, bad) = run_json(&broker, config(ErrorPolicy::DeadLetter, Some(dir.path().to_path_buf())), None).unwrap();
    assert_eq!((got, bad), (good, 3));
    let text: String = (0..2)
        .map(|s| std::fs::read_to_string(dir.path().join(format!("dead-letter-{s}.jsonl"))).unwrap_or_default())
        .collect();
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains(r#""file":"json-in[1]","line":0,"field":"id""#), "{text}");

    // Raw (invalid UTF-8) and CSV (too few fields) values, skipped and counted.
    broker.create_topic("raw-in", 1);
    broker.produce("raw-in", &[(0, None, b"ok", 1), (0, None, b"\xff\xfe", 1), (0, None, b"fine\n", 1)]);
    let env = StreamEnv::new(config(ErrorPolicy::Skip, None));
    let s = env
        .source(KafkaSource::raw(KafkaSourceOptions::new(&broker.bootstrap, "raw-in").bounded(true)).unwrap())
        .without_event_time();
    let name = s.name().to_string();
    let out = s.collect();
    let report = env.execute().unwrap();
    assert_eq!(out.take(), vec!["ok".to_string(), "fine".to_string()]);
    assert_eq!(report.operator(&name).bad_records, 1);

    broker.create_topic("csv-in", 1);
    broker.produce("csv-in", &[(0, None, b"5,e", 1), (0, None, b"6", 1), (0, None, b"7,\"g,h\"", 1)]);
    let env = StreamEnv::new(config(ErrorPolicy::Fail, None));
    let s = env
        .source(KafkaSource::<Ev>::csv(KafkaSourceOptions::new(&broker.bootstrap, "csv-in").bounded(true)).unwrap())
        .without_event_time();
    s.collect();
    let err = env.execute().unwrap_err().to_string();
    assert!(err.contains("bad record in csv-in[0] offset 1 field `name`"), "{err}");
}
