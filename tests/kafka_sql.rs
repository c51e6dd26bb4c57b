//! A Flink SQL job over Kafka (`'connector' = 'kafka'`): the first 20 000 Nexmark bids of the
//! oracle data go to a topic as CSV values with their event time as the message timestamp;
//! `TUMBLE` counts per auction read the time from `METADATA FROM 'timestamp'` and write CSV
//! rows, keyed by auction, through the exactly-once sink. The rows must equal those of the
//! same query over the same bids in a file (event time from the `ms` column), on 2 shards.

#[path = "common/kafka.rs"]
mod kafka_broker;

use std::collections::HashMap;
use std::io::Read;

use kafka_broker::Broker;
use weir::prelude::*;

const BIDS: usize = 20_000;

const FILE_SQL: &str = "
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}', 'format' = 'csv');
CREATE TABLE out_rows (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT, hi BIGINT)
  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');
INSERT INTO out_rows SELECT auction, window_start, window_end, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
";

const KAFKA_SQL: &str = "
SET 'parallelism.default' = '2';
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '${BROKER}',
  'format' = 'csv', 'scan.startup.mode' = 'earliest-offset', 'scan.bounded.mode' = 'latest-offset'
);
CREATE TABLE out_rows (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT, hi BIGINT) WITH (
  'connector' = 'kafka', 'topic' = 'counts', 'properties.bootstrap.servers' = '${BROKER}', 'format' = 'csv',
  'key.fields' = 'auction', 'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'sql-test', 'sink.transaction-log-dir' = '${TXN}'
);
INSERT INTO out_rows SELECT auction, window_start, window_end, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
";

fn bid_lines() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oracle/data/bid.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines().take(BIDS).map(str::to_string).collect()
}

fn config(cores: usize) -> EngineConfig {
    EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    }
}

#[test]
fn sql_job_over_kafka_equals_the_file_job() {
    let Some(broker) = Broker::start() else { return };
    let lines = bid_lines();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bid.csv");
    std::fs::write(&data, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();

    // The file job.
    let out = dir.path().join("out");
    let vars: HashMap<String, String> = [("DATA".into(), data.display().to_string()), ("OUT".into(), out.display().to_string())].into();
    weir::sql::run_script(FILE_SQL, &vars, config(1)).unwrap();
    let mut want: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .flat_map(|f| std::fs::read_to_string(f.path()).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    want.sort();
    assert!(want.len() > 1_000, "{} rows", want.len());

    // The Kafka job: one partition, so the order (and so lateness) is the file's.
    broker.create_topic("bids", 1);
    broker.create_topic("counts", 3);
    let records: Vec<(String, i64)> = lines.iter().map(|l| (l.clone(), l.split(',').nth(5).unwrap().parse().unwrap())).collect();
    broker.produce_lines("bids", 0, &records);
    let vars: HashMap<String, String> = [
        ("BROKER".into(), broker.bootstrap.clone()),
        ("TXN".into(), dir.path().join("txn").display().to_string()),
    ]
    .into();
    let plan = weir::sql::explain(KAFKA_SQL, &vars, config(2)).unwrap();
    assert!(plan.contains("kafka"), "{plan}");
    let report = weir::sql::run_script(KAFKA_SQL, &vars, config(2)).unwrap();
    assert_eq!(report.shards, 2);
    let read = broker.read_all("counts");
    let mut got: Vec<String> = read.iter().map(|r| String::from_utf8(r.value.clone()).unwrap()).collect();
    got.sort();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
    // key.fields: the key is the auction column.
    for r in &read {
        let value = String::from_utf8(r.value.clone()).unwrap();
        assert_eq!(r.key.as_deref(), Some(value.split(',').next().unwrap().as_bytes()));
    }
}
