//! Bad Pulsar messages follow the engine's bad-record policy (pulsar-lite, `WEIR_TEST_PULSAR`):
//! one partition holds 300 JSON messages of which every 50th is malformed. `skip` delivers the
//! 294 good ones and counts 6; `dead-letter` does the same and writes the 6 raw messages with
//! their errors and places (`topic@ledger:entry:batch`) to the dead-letter file; `fail` stops
//! the job with an error naming the partition's topic and the message id.

mod common;

use serde::Deserialize;
use weir::config::ErrorPolicy;
use weir::prelude::*;
use weir::source::pulsar::{PulsarSource, PulsarSourceOptions};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Reading {
    id: i64,
    v: i64,
}

fn run(url: &str, topic: &str, subscription: &str, policy: ErrorPolicy, dead_letters: &std::path::Path) -> weir::error::Result<(Vec<Reading>, u64)> {
    let options = PulsarSourceOptions::new(url, vec![topic.to_string()], subscription).bounded(true);
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        on_bad_record: policy,
        dead_letter_dir: Some(dead_letters.to_path_buf()),
        ..Default::default()
    });
    let out = env.source(PulsarSource::<Reading>::json(options)?).without_event_time().collect();
    let report = env.execute()?;
    let bad = report.operators.values().map(|o| o.bad_records).sum();
    let mut rows = out.take();
    rows.sort();
    Ok((rows, bad))
}

#[test]
fn bad_messages_follow_the_policy() {
    let Some(url) = common::test_server("WEIR_TEST_PULSAR") else { return };
    let topic = common::streams::unique("bad");
    let messages: Vec<(Option<String>, Vec<u8>)> = (0..300i64)
        .map(|i| {
            let data = if i % 50 == 7 {
                format!("{{\"id\":{i},\"v\":")
            } else {
                format!("{{\"id\":{i},\"v\":{}}}", i * 3)
            };
            (None, data.into_bytes())
        })
        .collect();
    weir::source::pulsar::client::produce(&url, &format!("{topic}-partition-0"), messages).unwrap();
    let good: Vec<Reading> = (0..300).filter(|i| i % 50 != 7).map(|i| Reading { id: i, v: i * 3 }).collect();
    let dir = tempfile::tempdir().unwrap();

    // Each run uses its own subscription: a new one starts at the earliest message.
    let (rows, bad) = run(&url, &topic, "skip", ErrorPolicy::Skip, &dir.path().join("skip")).unwrap();
    assert_eq!((rows, bad), (good.clone(), 6));

    let dl = dir.path().join("dead");
    let (rows, bad) = run(&url, &topic, "dead", ErrorPolicy::DeadLetter, &dl).unwrap();
    assert_eq!((rows, bad), (good, 6));
    let text = std::fs::read_to_string(dl.join("dead-letter-0.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["raw"], "{\"id\":7,\"v\":");
    let place = lines[0]["file"].as_str().unwrap();
    assert!(place.starts_with(&format!("persistent://public/default/{topic}-partition-0@")), "{place}");

    let err = run(&url, &topic, "fail", ErrorPolicy::Fail, &dir.path().join("fail")).unwrap_err().to_string();
    assert!(err.contains(&format!("{topic}-partition-0@")) && err.contains("bad record"), "{err}");
}
