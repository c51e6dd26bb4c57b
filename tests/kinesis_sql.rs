//! End to end against kinesalite (`WEIR_TEST_KINESIS`): a SQL job reads a 3-shard Kinesis
//! stream (CSV records, `TRIM_HORIZON`, bounded at the shards' tips) into a keyed 1 s tumbling
//! window and the file sink; the committed rows equal the windows computed here from the same
//! seeded events. A second table over the same stream takes the approximate arrival time as
//! its event time (`METADATA FROM 'timestamp'`) and counts every record exactly once.

mod common;

use std::collections::{BTreeMap, HashMap};

use weir::prelude::*;

const EVENTS: i64 = 6_000;
const KEYS: i64 = 7;

const SQL: &str = "
CREATE TABLE ev (
  k BIGINT, v BIGINT, ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'kinesis', 'stream' = '${STREAM}', 'aws.region' = 'us-east-1', 'aws.endpoint' = '${ENDPOINT}',
  'aws.credentials.provider' = 'BASIC', 'aws.credentials.basic.accesskeyid' = 'weir-test',
  'aws.credentials.basic.secretkey' = 'weir-test-secret',
  'scan.stream.initpos' = 'TRIM_HORIZON', 'scan.bounded.mode' = 'latest',
  'scan.shard.getrecords.intervalmillis' = '10', 'format' = 'csv'
);
CREATE TABLE arrivals (
  k BIGINT, v BIGINT, ms BIGINT,
  arrival TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  WATERMARK FOR arrival AS arrival - INTERVAL '5' SECOND
) WITH (
  'connector' = 'kinesis', 'stream' = '${STREAM}', 'aws.endpoint' = '${ENDPOINT}',
  'aws.credentials.basic.accesskeyid' = 'weir-test', 'aws.credentials.basic.secretkey' = 'weir-test-secret',
  'scan.stream.initpos' = 'TRIM_HORIZON', 'scan.bounded.mode' = 'latest', 'format' = 'csv'
);
CREATE TABLE out_rows (k BIGINT, window_start TIMESTAMP(3), cnt BIGINT, total BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
CREATE TABLE out_arrivals (n BIGINT) WITH ('connector' = 'filesystem', 'path' = '${OUT2}', 'format' = 'csv');
INSERT INTO out_rows SELECT k, window_start, COUNT(*), SUM(v)
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
INSERT INTO out_arrivals SELECT COUNT(*) FROM TABLE(TUMBLE(TABLE arrivals, DESCRIPTOR(arrival), INTERVAL '1' DAY))
GROUP BY window_start, window_end;
";

#[test]
fn kinesis_into_keyed_windows_and_files() {
    let Some(url) = common::test_server("WEIR_TEST_KINESIS") else { return };
    let stream = common::streams::unique("e2e");
    common::streams::create_stream(&url, &stream, 3);

    // Seeded events: time moves forward 0..20 ms per event, each up to 300 ms early (< the 1 s
    // watermark delay, so nothing is late whichever shard a key lands on).
    let mut rng = common::Rng::new(0x5eed_4b1e);
    let mut base = 1_700_000_000_000i64;
    let mut events = Vec::new();
    for _ in 0..EVENTS {
        base += rng.range(0, 20);
        events.push((rng.range(0, KEYS), rng.range(-50, 50), base - rng.range(0, 300)));
    }
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|(k, v, ms)| (format!("key-{k}"), format!("{k},{v},{ms}").into_bytes()))
        .collect();
    common::streams::put_records(&url, &stream, records, None);

    let mut want: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    for (k, v, ms) in &events {
        let w = want.entry((*k, ms - ms.rem_euclid(1000))).or_default();
        w.0 += 1;
        w.1 += v;
    }
    let fmt = |ms: i64| {
        let mut s = String::new();
        weir::sql::types::format_timestamp(ms, &mut s);
        s
    };
    let mut want: Vec<String> = want.iter().map(|((k, w), (c, t))| format!("{k},{},{c},{t}", fmt(*w))).collect();
    want.sort();

    let dir = tempfile::tempdir().unwrap();
    let (out, out2) = (dir.path().join("out"), dir.path().join("out2"));
    let vars: HashMap<String, String> = [
        ("STREAM".into(), stream.clone()),
        ("ENDPOINT".into(), url.clone()),
        ("OUT".into(), out.display().to_string()),
        ("OUT2".into(), out2.display().to_string()),
    ]
    .into();
    let config = EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    };
    weir::sql::run_script(SQL, &vars, config).unwrap();
    let got = common::committed_lines(&out);
    assert_eq!(got.len(), want.len(), "window rows");
    assert_eq!(got, want);
    // Arrival time as event time: every record counted once (arrivals span well under a day,
    // but may straddle midnight: sum the day windows).
    let counted: i64 = common::committed_lines(&out2).iter().map(|l| l.parse::<i64>().unwrap()).sum();
    assert_eq!(counted, EVENTS);
}
