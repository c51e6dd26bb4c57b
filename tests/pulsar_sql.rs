//! End to end against pulsar-lite (`WEIR_TEST_PULSAR`): a SQL job reads a 2-partition Pulsar
//! topic (JSON messages, a new subscription from the earliest message, bounded at the
//! partitions' last messages when the job starts) into a keyed 1 s tumbling window and the file
//! sink; the committed rows equal the windows computed here from the same seeded events.

mod common;

use std::collections::{BTreeMap, HashMap};

use weir::prelude::*;
use weir::source::pulsar::client;

const EVENTS: i64 = 6_000;
const KEYS: i64 = 7;

const SQL: &str = "
CREATE TABLE ev (
  k BIGINT, v BIGINT, ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'pulsar', 'service-url' = '${URL}', 'topics' = '${TOPIC}',
  'source.subscription-name' = 'weir-e2e', 'source.subscription-type' = 'Exclusive',
  'source.start.message-id' = 'earliest', 'source.stop.at-message-id' = 'latest', 'format' = 'json'
);
CREATE TABLE out_rows (k BIGINT, window_start TIMESTAMP(3), cnt BIGINT, total BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT k, window_start, COUNT(*), SUM(v)
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
";

#[test]
fn pulsar_into_keyed_windows_and_files() {
    let Some(url) = common::test_server("WEIR_TEST_PULSAR") else { return };
    let topic = common::streams::unique("e2e");
    let mut rng = common::Rng::new(0x5eed_9015);
    let mut base = 1_700_000_000_000i64;
    let mut parts: [Vec<(Option<String>, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    let mut events = Vec::new();
    for _ in 0..EVENTS {
        base += rng.range(0, 20);
        let (k, v, ms) = (rng.range(0, KEYS), rng.range(-50, 50), base - rng.range(0, 300));
        events.push((k, v, ms));
        parts[(k % 2) as usize].push((Some(format!("key-{k}")), format!("{{\"k\":{k},\"v\":{v},\"ms\":{ms}}}").into_bytes()));
    }
    let [p0, p1] = parts;
    client::produce(&url, &format!("{topic}-partition-0"), p0).unwrap();
    client::produce(&url, &format!("{topic}-partition-1"), p1).unwrap();

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
    let out = dir.path().join("out");
    let vars: HashMap<String, String> = [
        ("URL".into(), url.clone()),
        ("TOPIC".into(), topic.clone()),
        ("OUT".into(), out.display().to_string()),
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
}
