//! The Kinesis source backs off on `ProvisionedThroughputExceededException` and renews an
//! expired iterator, against a scripted stand-in for the Kinesis API on loopback (kinesalite
//! never throttles): `GetRecords` answers "throttled" three times, then 3 records, then
//! "iterator expired", then (on the renewed `AFTER_SEQUENCE_NUMBER` iterator) 2 more, then an
//! empty page at the tip. The bounded job gets the 5 records once each, in order; the
//! stand-in saw growing gaps between the throttled calls and the renewal after the last
//! fetched sequence number.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use weir::prelude::*;
use weir::source::kinesis::{KinesisSource, KinesisSourceOptions};

/// (operation, request body, when) of every call the stand-in answered.
type Calls = Arc<Mutex<Vec<(String, serde_json::Value, Instant)>>>;

fn record(seq: u64, data: &str) -> serde_json::Value {
    use base64::Engine as _;
    serde_json::json!({
        "Data": base64::engine::general_purpose::STANDARD.encode(data),
        "PartitionKey": "k",
        "SequenceNumber": format!("{seq:056}"),
        "ApproximateArrivalTimestamp": 1_700_000_000.0 + seq as f64,
    })
}

/// Serve the script on one listener until the test ends (one connection at a time).
fn serve(listener: TcpListener, calls: Calls) {
    let mut get_records = 0;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { return };
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut writer = conn;
        loop {
            let (mut target, mut length) = (String::new(), 0usize);
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (name, value) = l.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "x-amz-target" => target = value.trim().rsplit('.').next().unwrap().to_string(),
                    "content-length" => length = value.trim().parse().unwrap(),
                    "authorization" => assert!(value.trim().starts_with("AWS4-HMAC-SHA256 Credential=id/"), "{value}"),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            calls.lock().unwrap().push((target.clone(), request.clone(), Instant::now()));
            let (status, answer) = match target.as_str() {
                "ListShards" => (200, serde_json::json!({ "Shards": [{ "ShardId": "shardId-000000000000" }] })),
                "GetShardIterator" => (200, serde_json::json!({ "ShardIterator": format!("it-{}", calls.lock().unwrap().len()) })),
                "GetRecords" => {
                    get_records += 1;
                    match get_records {
                        1..=3 => (
                            400,
                            serde_json::json!({ "__type": "ProvisionedThroughputExceededException", "message": "Rate exceeded" }),
                        ),
                        4 => (
                            200,
                            serde_json::json!({ "Records": [record(1, "1"), record(2, "2"), record(3, "3")], "NextShardIterator": "it-next", "MillisBehindLatest": 5 }),
                        ),
                        5 => (400, serde_json::json!({ "__type": "ExpiredIteratorException", "message": "Iterator expired" })),
                        6 => (
                            200,
                            serde_json::json!({ "Records": [record(4, "4"), record(5, "5")], "NextShardIterator": "it-tip", "MillisBehindLatest": 0 }),
                        ),
                        _ => (
                            200,
                            serde_json::json!({ "Records": [], "NextShardIterator": "it-tip", "MillisBehindLatest": 0 }),
                        ),
                    }
                }
                other => panic!("unexpected call {other}"),
            };
            let text = answer.to_string();
            let reason = if status == 200 { "OK" } else { "Bad Request" };
            write!(
                writer,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.1\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .unwrap();
        }
    }
}

#[test]
fn throttling_backs_off_and_expired_iterators_are_renewed() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    std::thread::spawn(move || serve(listener, seen));

    let mut options = KinesisSourceOptions::new(&url, "us-east-1", "s")
        .credentials("id", "secret")
        .bounded(true)
        .poll_interval_ms(5);
    options.backoff_base_ms = 40;
    options.backoff_max_ms = 1_000;
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    });
    let out = env.source(KinesisSource::<String>::raw(options).unwrap()).without_event_time().collect();
    env.execute().unwrap();
    assert_eq!(out.take(), vec!["1", "2", "3", "4", "5"]);

    let calls = calls.lock().unwrap();
    let gets: Vec<Instant> = calls.iter().filter(|c| c.0 == "GetRecords").map(|c| c.2).collect();
    // Backoff: at least half of 40, 80, 160 ms after each throttled call (jitter keeps the upper half).
    for (k, min_ms) in [(1, 20u128), (2, 40), (3, 80)] {
        let gap = (gets[k] - gets[k - 1]).as_millis();
        assert!(gap >= min_ms, "gap {k}: {gap} ms < {min_ms} ms");
    }
    // After the expired iterator: a new one right after the last fetched record.
    let renew = calls.iter().filter(|c| c.0 == "GetShardIterator").nth(1).expect("a renewed iterator");
    assert_eq!(renew.1["ShardIteratorType"], "AFTER_SEQUENCE_NUMBER");
    assert_eq!(renew.1["StartingSequenceNumber"], format!("{:056}", 3));
}
