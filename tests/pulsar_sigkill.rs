//! Pulsar → keyed windows → exactly-once files with `SIGKILL` of the weir process at seeded
//! moments, against pulsar-lite (`WEIR_TEST_PULSAR`): 0 lost, 0 duplicated committed rows.
//!
//! The `weir` binary runs a SQL job (a 2-partition topic of 60 000 JSON messages read through
//! an Exclusive subscription, bounded at the partitions' last messages → 1 s tumbling count and
//! sum per key → the filesystem sink, checkpoints every 30 ms) and is killed a seeded 0–300 ms
//! after it completed a checkpoint, up to 4 times. Each restart restores the newest checkpoint:
//! the consumer seeks the subscription to the checkpointed message id and drops everything up
//! to it. The subscription's cursor (acknowledged after checkpoints complete) is only progress
//! information: killed runs leave it behind the restored positions, which must not matter.
//!
//! The broker is a private pulsar-lite (`WEIR_PULSAR_LITE_BIN`), restarted on its data after
//! each kill: pulsar-lite 0.2.0 never removes the consumer of a connection that ends in an
//! error (a SIGKILLed client's connection is reset), so the Exclusive subscription would stay
//! held by the dead consumer ("Exclusive subscription already has a consumer") until the broker
//! restarts. A real Pulsar broker drops that consumer when the connection closes.

mod common;

use weir::source::pulsar::client;

const EVENTS: usize = 60_000;

const SQL: &str = "
CREATE TABLE ev (
  k BIGINT, v BIGINT, ms BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '1' SECOND
) WITH (
  'connector' = 'pulsar', 'service-url' = '${URL}', 'topics' = '${TOPIC}',
  'source.subscription-name' = 'weir-sigkill', 'source.start.message-id' = 'earliest',
  'source.stop.at-message-id' = 'latest', 'source.receiver-queue-size' = '500', 'format' = 'json'
);
CREATE TABLE out_rows (k BIGINT, window_start TIMESTAMP(3), cnt BIGINT, total BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT k, window_start, COUNT(*), SUM(v)
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '1' SECOND))
GROUP BY k, window_start, window_end;
";

#[test]
fn pulsar_exactly_once_through_sigkills() {
    let Some(bin) = common::test_server("WEIR_PULSAR_LITE_BIN") else { return };
    let broker_dir = tempfile::tempdir().unwrap();
    let mut broker = common::streams::PulsarLite::start(&bin, broker_dir.path());
    let url = broker.url();
    let topic = common::streams::unique("sigkill");
    let events = common::streams::seeded_events(0x5eed_0b12, EVENTS, 11);
    let mut parts: [Vec<(Option<String>, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    for (k, v, ms) in &events {
        parts[(k % 2) as usize].push((Some(format!("key-{k}")), format!("{{\"k\":{k},\"v\":{v},\"ms\":{ms}}}").into_bytes()));
    }
    let [p0, p1] = parts;
    client::produce(&url, &format!("{topic}-partition-0"), p0).unwrap();
    client::produce(&url, &format!("{topic}-partition-1"), p1).unwrap();
    let want = common::streams::expected_windows(&events);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let vars = [("URL", url), ("TOPIC", topic), ("OUT", out.display().to_string())];
    let (kills, runs, restored) = common::streams::sigkill_loop_with(SQL, &vars, dir.path(), 0x5eed_0c02, 4, 300, &mut || broker.restart());
    assert!(kills >= 1, "no run was killed: the job finished before every kill");
    assert!(restored >= 1, "no run restored from a checkpoint");
    let got = common::committed_lines(&out);
    assert_eq!(got.len(), want.len(), "{kills} kills, {runs} runs: committed rows");
    assert_eq!(got, want, "{kills} kills: every row committed exactly once");
    eprintln!("{kills} kills, {runs} runs ({restored} restored), {} rows committed", got.len());
}
