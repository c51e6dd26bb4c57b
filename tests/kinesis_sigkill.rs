//! Kinesis → keyed windows → exactly-once files with `SIGKILL` of the weir process at seeded
//! moments, against kinesalite (`WEIR_TEST_KINESIS`): 0 lost, 0 duplicated committed rows.
//!
//! The `weir` binary runs a SQL job (a 2-shard stream of 60 000 CSV records, bounded at the
//! shards' tips → 1 s tumbling count and sum per key → the filesystem sink, checkpoints every
//! 30 ms) and is killed a seeded 0–300 ms after it completed a checkpoint, up to 4 times; each
//! restart restores the newest checkpoint, whose split positions are the shards' last handed
//! out sequence numbers (`AFTER_SEQUENCE_NUMBER` on restore). The committed part files must
//! hold exactly the windows computed here.

mod common;

const EVENTS: usize = 60_000;

const SQL: &str = "
CREATE TABLE ev (
  k BIGINT, v BIGINT, ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'kinesis', 'stream' = '${STREAM}', 'aws.endpoint' = '${ENDPOINT}',
  'aws.credentials.basic.accesskeyid' = 'weir-test', 'aws.credentials.basic.secretkey' = 'weir-test-secret',
  'scan.stream.initpos' = 'TRIM_HORIZON', 'scan.bounded.mode' = 'latest',
  'scan.shard.getrecords.maxrecordcount' = '500', 'scan.shard.getrecords.intervalmillis' = '10', 'format' = 'csv'
);
CREATE TABLE out_rows (k BIGINT, window_start TIMESTAMP(3), cnt BIGINT, total BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT k, window_start, COUNT(*), SUM(v)
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
";

#[test]
fn kinesis_exactly_once_through_sigkills() {
    let Some(url) = common::test_server("WEIR_TEST_KINESIS") else { return };
    let stream = common::streams::unique("sigkill");
    common::streams::create_stream(&url, &stream, 2);
    let events = common::streams::seeded_events(0x5eed_0b11, EVENTS, 11);
    let records: Vec<(String, Vec<u8>)> = events
        .iter()
        .map(|(k, v, ms)| (format!("key-{k}"), format!("{k},{v},{ms}").into_bytes()))
        .collect();
    common::streams::put_records(&url, &stream, records, None);
    let want = common::streams::expected_windows(&events);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let vars = [("STREAM", stream), ("ENDPOINT", url), ("OUT", out.display().to_string())];
    let (kills, runs, restored) = common::streams::sigkill_loop(SQL, &vars, dir.path(), 0x5eed_0c01, 4, 300);
    assert!(kills >= 1, "no run was killed: the job finished before every kill");
    assert!(restored >= 1, "no run restored from a checkpoint");
    let got = common::committed_lines(&out);
    assert_eq!(got.len(), want.len(), "{kills} kills, {runs} runs: committed rows");
    assert_eq!(got, want, "{kills} kills: every row committed exactly once");
    eprintln!("{kills} kills, {runs} runs ({restored} restored), {} rows committed", got.len());
}
