//! Source throughput of the Kinesis and Pulsar sources against the test servers of
//! `.ci/services.sh` (run `eval "$(bash .ci/services.sh start)"` first): N CSV records are put
//! into a 2-shard stream / 2-partition topic, then a bounded SQL job reads them into a keyed
//! count (blackhole sink); events/s = N / job wall time (planning included, producing not).
//!
//! `cargo run --release -p weir-bench --bin streams -- --events 200000` writes
//! `bench/results/streams.json`.

use std::collections::HashMap;
use std::time::Instant;

use clap::Parser;
use weir::prelude::*;
use weir::source::kinesis::client::{self, KinesisEndpoint};
use weir::source::kinesis::sigv4::Credentials;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    #[arg(long, default_value_t = 2)]
    cores: usize,
    #[arg(long, default_value = "bench/results/streams.json")]
    out: std::path::PathBuf,
}

const SINK: &str = "CREATE TABLE out_rows (k BIGINT, n BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out_rows SELECT k, COUNT(*) FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;";
const COLUMNS: &str = "k BIGINT, v BIGINT, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND";

fn timed(script: &str, vars: &HashMap<String, String>, cores: usize) -> f64 {
    let config = EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    let t = Instant::now();
    weir::sql::run_script(script, vars, config).expect("job runs");
    t.elapsed().as_secs_f64()
}

fn main() {
    let args = Args::parse();
    let n = args.events;
    let line = |i: u64| format!("{},{},{}", i % 97, i * 7 % 1000, 1_700_000_000_000 + i);
    let mut results = serde_json::Map::new();
    if let Ok(url) = std::env::var("WEIR_TEST_KINESIS") {
        let stream = format!("bench-{}", std::process::id());
        let endpoint = std::sync::Arc::new(
            KinesisEndpoint::new(
                &url,
                "us-east-1",
                Credentials {
                    access_key_id: "bench".into(),
                    secret_access_key: "bench".into(),
                    session_token: None,
                },
            )
            .unwrap(),
        );
        let records: Vec<(String, Vec<u8>)> = (0..n).map(|i| (format!("k{}", i % 97), line(i).into_bytes())).collect();
        let s = stream.clone();
        client::blocking(endpoint, move |mut c| async move {
            c.create_stream(&s, 2).await.unwrap();
            c.put_records(&s, &records, None).await.unwrap();
        })
        .unwrap();
        let sql = format!(
            "CREATE TABLE ev ({COLUMNS}) WITH ('connector' = 'kinesis', 'stream' = '{stream}', 'aws.endpoint' = '{url}', \
             'aws.credentials.basic.accesskeyid' = 'bench', 'aws.credentials.basic.secretkey' = 'bench', 'scan.stream.initpos' = 'TRIM_HORIZON', \
             'scan.bounded.mode' = 'latest', 'format' = 'csv');\n{SINK}"
        );
        let secs = timed(&sql, &HashMap::new(), args.cores);
        let rate = n as f64 / secs;
        println!("kinesis: {n} records in {secs:.2} s = {rate:.0} events/s");
        results.insert("kinesis_events_per_s".into(), serde_json::json!(rate.round()));
    }
    if let Ok(url) = std::env::var("WEIR_TEST_PULSAR") {
        let topic = format!("bench-{}", std::process::id());
        for p in 0..2u64 {
            let messages: Vec<(Option<String>, Vec<u8>)> = (0..n).filter(|i| i % 2 == p).map(|i| (None, line(i).into_bytes())).collect();
            weir::source::pulsar::client::produce(&url, &format!("{topic}-partition-{p}"), messages).unwrap();
        }
        let sql = format!(
            "CREATE TABLE ev ({COLUMNS}) WITH ('connector' = 'pulsar', 'service-url' = '{url}', 'topics' = '{topic}', \
             'source.subscription-name' = 'bench', 'source.stop.at-message-id' = 'latest', 'format' = 'csv');\n{SINK}"
        );
        let secs = timed(&sql, &HashMap::new(), args.cores);
        let rate = n as f64 / secs;
        println!("pulsar: {n} messages in {secs:.2} s = {rate:.0} events/s");
        results.insert("pulsar_events_per_s".into(), serde_json::json!(rate.round()));
    }
    results.insert("events".into(), serde_json::json!(n));
    results.insert("cores".into(), serde_json::json!(args.cores));
    if let Some(d) = args.out.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&results).unwrap()).unwrap();
}
