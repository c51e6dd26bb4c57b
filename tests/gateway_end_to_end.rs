//! The ingestion gateway end to end: events posted over HTTP (JSON lines) and sent over the TCP
//! protocol reach a job on 2 shards exactly once — retries with the same idempotency key are
//! answered as duplicates and not appended again, a bad JSON line rejects its whole request —
//! and draining the gateway ends the job after the last durable event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use weir::prelude::*;
use weir::source::gateway::protocol::{HttpClient, Status, TcpClient};
use weir::source::gateway::{Gateway, GatewayConfig, GatewaySource};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Reading {
    device: u32,
    seq: u64,
}

const TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn http_and_tcp_events_reach_the_job_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        "readings",
        GatewayConfig {
            http_address: Some("127.0.0.1:0".into()),
            tcp_address: Some("127.0.0.1:0".into()),
            log_dir: dir.path().join("log"),
            partitions: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let (http, tcp) = (gateway.http_addr().unwrap(), gateway.tcp_addr().unwrap());
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    });
    let source = GatewaySource::<Reading>::json(gateway);
    let handle = source.handle();
    let out = env.source(source).without_event_time().collect();
    let (graph, config) = (env.graph(), env.config().clone());
    let job = std::thread::spawn(move || weir::shard::runtime::execute(graph, &config));

    let mut expected = Vec::new();
    let mut client = HttpClient::new(http, TIMEOUT);
    for batch in 0..20u64 {
        let body: String = (0..50).map(|i| format!("{{\"device\":1,\"seq\":{}}}\n", batch * 50 + i)).collect();
        let key = format!("Idempotency-Key: http-{batch}");
        let r = client.post("/v1/events", body.as_bytes(), std::slice::from_ref(&key)).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!((v["accepted"].as_u64(), v["duplicate"].as_bool()), (Some(50), Some(false)), "{}", r.body);
        // A retry of every third batch (a lost ack) is answered as a duplicate.
        if batch % 3 == 0 {
            let again = client.post("/v1/events", body.as_bytes(), &[key]).unwrap();
            assert_eq!(again.status, 200);
            let w: serde_json::Value = serde_json::from_str(&again.body).unwrap();
            assert_eq!(w["duplicate"].as_bool(), Some(true), "{}", again.body);
            assert_eq!(w["first"], v["first"]);
        }
        expected.extend((0..50).map(|i| Reading {
            device: 1,
            seq: batch * 50 + i,
        }));
    }
    // A request with one bad line is rejected whole.
    let r = client.post("/v1/events", b"{\"device\":1,\"seq\":1}\n{oops\n", &[]).unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("event 2"), "{}", r.body);

    let mut tcp_client = TcpClient::connect(tcp, None, TIMEOUT).unwrap();
    for batch in 0..10u64 {
        let events: Vec<String> = (0..30).map(|i| format!("{{\"device\":2,\"seq\":{}}}", batch * 30 + i)).collect();
        let key = format!("tcp-{batch}");
        let reply = tcp_client.send(batch, key.as_bytes(), &events).unwrap();
        assert_eq!((reply.status, reply.request_id, reply.count), (Status::Ok, batch, 30), "{reply:?}");
        if batch % 4 == 1 {
            let again = tcp_client.send(100 + batch, key.as_bytes(), &events).unwrap();
            assert_eq!((again.status, again.first), (Status::Duplicate, reply.first));
        }
        expected.extend((0..30).map(|i| Reading {
            device: 2,
            seq: batch * 30 + i,
        }));
    }
    let bad = tcp_client.send(99, b"", &["not json"]).unwrap();
    assert_eq!(bad.status, Status::BadRequest, "{bad:?}");

    handle.drain();
    let report = job.join().unwrap().unwrap();
    let mut got = out.take();
    got.sort();
    expected.sort();
    assert_eq!(got.len(), expected.len());
    assert_eq!(got, expected);
    assert_eq!(report.operators_named("source:gateway").records_out, expected.len() as u64);
    let stats = handle.stats();
    assert_eq!(stats.events_accepted, expected.len() as u64, "{stats:?}");
    assert_eq!(stats.requests_duplicate, 7 + 3, "{stats:?}");
    // Both partitions were used (connections alternate between them) and fully read.
    let per_partition: BTreeMap<usize, u64> = stats.partitions.iter().enumerate().map(|(i, p)| (i, p.durable_next - 1)).collect();
    assert!(per_partition.values().all(|n| *n > 0), "{per_partition:?}");
    assert!(stats.partitions.iter().all(|p| p.consumed == p.durable_next), "{stats:?}");
}
