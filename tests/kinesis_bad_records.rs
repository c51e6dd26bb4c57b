//! Bad Kinesis records follow the engine's bad-record policy (kinesalite, `WEIR_TEST_KINESIS`):
//! a 1-shard stream of 300 CSV records `id,value` of which every 50th is malformed. `skip`
//! delivers the 294 good ones and counts 6; `dead-letter` does the same and writes the 6 raw
//! records with their errors and places (`stream/shard@sequence-number`) to the dead-letter
//! file; `fail` stops the job with an error naming the stream, shard and sequence number of the
//! first bad record.

mod common;

use weir::config::ErrorPolicy;
use weir::prelude::*;
use weir::source::kinesis::{KinesisSource, KinesisSourceOptions};

fn run(url: &str, stream: &str, policy: ErrorPolicy, dead_letters: &std::path::Path) -> weir::error::Result<(Vec<(i64, i64)>, u64)> {
    let options = KinesisSourceOptions::new(url, "us-east-1", stream)
        .credentials(common::streams::ACCESS_KEY, common::streams::SECRET_KEY)
        .bounded(true)
        .poll_interval_ms(10);
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        on_bad_record: policy,
        dead_letter_dir: Some(dead_letters.to_path_buf()),
        ..Default::default()
    });
    let out = env.source(KinesisSource::<(i64, i64)>::csv(options)?).without_event_time().collect();
    let report = env.execute()?;
    let bad = report.operators.values().map(|o| o.bad_records).sum();
    let mut rows = out.take();
    rows.sort();
    Ok((rows, bad))
}

#[test]
fn bad_records_follow_the_policy() {
    let Some(url) = common::test_server("WEIR_TEST_KINESIS") else { return };
    let stream = common::streams::unique("bad");
    common::streams::create_stream(&url, &stream, 1);
    let records: Vec<(String, Vec<u8>)> = (0..300i64)
        .map(|i| {
            let data = if i % 50 == 7 { format!("{i},not-a-number") } else { format!("{i},{}", i * 3) };
            ("k".to_string(), data.into_bytes())
        })
        .collect();
    let sequence_numbers = common::streams::put_records(&url, &stream, records, None);
    let good: Vec<(i64, i64)> = (0..300).filter(|i| i % 50 != 7).map(|i| (i, i * 3)).collect();
    let dir = tempfile::tempdir().unwrap();

    let (rows, bad) = run(&url, &stream, ErrorPolicy::Skip, &dir.path().join("skip")).unwrap();
    assert_eq!((rows, bad), (good.clone(), 6));

    let dl = dir.path().join("dead");
    let (rows, bad) = run(&url, &stream, ErrorPolicy::DeadLetter, &dl).unwrap();
    assert_eq!((rows, bad), (good, 6));
    let text = std::fs::read_to_string(dl.join("dead-letter-0.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["raw"], "7,not-a-number");
    let place = lines[0]["file"].as_str().unwrap();
    assert!(
        place.starts_with(&format!("{stream}/shardId-")) && place.ends_with(&format!("@{}", sequence_numbers[7])),
        "{place}"
    );

    let err = run(&url, &stream, ErrorPolicy::Fail, &dir.path().join("fail")).unwrap_err().to_string();
    assert!(err.contains(&format!("@{}", sequence_numbers[7])) && err.contains(&stream), "{err}");
}
