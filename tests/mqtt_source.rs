//! The MQTT source (the gateway subscribed to a broker) against a real mosquitto started by
//! `.ci/services.sh`: QoS 1 messages on the subscribed topic filters reach the job, others do
//! not; messages published while weir is down are delivered on restart (persistent session);
//! a connection dropped after the append but before the PUBACK makes the broker redeliver
//! (DUP), and the redelivered messages are not appended twice.
//! No sleeps: waits poll the gateway's counters with deadlines.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use weir::prelude::*;
use weir::source::gateway::mqtt::{MqttConfig, MqttPublisher};
use weir::source::gateway::{Gateway, GatewayConfig, GatewaySource};

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
struct Reading {
    id: u64,
}

fn gateway(log: &std::path::Path, broker: std::net::SocketAddr, client: &str, drop_after: Option<u64>) -> Gateway {
    Gateway::start(
        "mqtt",
        GatewayConfig {
            http_address: None,
            log_dir: log.to_path_buf(),
            mqtt: Some(MqttConfig {
                broker,
                client_id: client.into(),
                topics: vec!["sensors/+/temp".into(), "alarms/#".into()],
                username: None,
                password: None,
                keep_alive: Duration::from_secs(10),
                drop_before_ack_after: drop_after,
            }),
            ..Default::default()
        },
    )
    .unwrap()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(10));
    }
}

/// Run a job over the gateway until it drained after `expected_durable` events; the ids read.
fn run_job(gateway: Gateway, expected_durable: u64) -> (Vec<u64>, weir::source::gateway::GatewayStats) {
    let env = StreamEnv::new(EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    });
    let source = GatewaySource::<Reading>::json(gateway);
    let handle = source.handle();
    let out = env.source(source).without_event_time().collect();
    let (graph, config) = (env.graph(), env.config().clone());
    let job = std::thread::spawn(move || weir::shard::runtime::execute(graph, &config));
    wait_for("the messages to be durable", || handle.stats().partitions[0].durable_next > expected_durable);
    handle.drain();
    job.join().unwrap().unwrap();
    (out.take().into_iter().map(|r| r.id).collect(), handle.stats())
}

#[test]
fn qos1_messages_survive_restarts_and_redeliveries_once() {
    let Some(broker) = common::test_server("WEIR_TEST_MQTT") else { return };
    let broker: std::net::SocketAddr = broker.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let client = format!("weir-test-{}", std::process::id());

    // 1. Subscribe (creates the persistent session), then publish 300 messages: 250 match.
    let g = gateway(&log, broker, &client, Some(40));
    wait_for("the subscription", || g.stats().mqtt_connects >= 1);
    let mut publisher = MqttPublisher::connect(broker, &format!("{client}-pub"), Duration::from_secs(10)).unwrap();
    // The subscription is in place once the broker delivers a probe message.
    publisher.publish("alarms/probe", b"{\"id\":0}").unwrap();
    wait_for("the probe", || g.stats().mqtt_messages >= 1);
    let mut expected = vec![0u64];
    for id in 1..=300u64 {
        let topic = match id % 6 {
            0 => "other/topic".to_string(),
            k => format!("sensors/s{k}/temp"),
        };
        publisher.publish(&topic, format!("{{\"id\":{id}}}").as_bytes()).unwrap();
        if id % 6 != 0 {
            expected.push(id);
        }
    }
    let (first_run, stats) = run_job(g, expected.len() as u64);
    assert!(stats.mqtt_connects >= 2, "the test dropped the first connection: {stats:?}");
    assert!(stats.events_duplicate > 0, "the broker redelivered unacknowledged messages: {stats:?}");
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for id in &first_run {
        *counts.entry(*id).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == 1), "a redelivered message was appended twice");
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), expected, "exactly the subscribed messages");

    // 2. Published while weir is down: queued by the broker for the persistent session.
    for id in 1000..1100u64 {
        publisher.publish("sensors/late/temp", format!("{{\"id\":{id}}}").as_bytes()).unwrap();
    }
    let g = gateway(&log, broker, &client, None);
    let stats = g.stats();
    assert!(stats.events_duplicate == 0, "{stats:?}");
    let (second_run, _) = run_job(g, expected.len() as u64 + 100);
    // The restarted readers replay the retained log (no checkpoint here), then the queued ones.
    let late: Vec<u64> = second_run.iter().copied().filter(|id| *id >= 1000).collect();
    assert_eq!(late, (1000..1100).collect::<Vec<_>>(), "messages published while weir was down");
    assert_eq!(second_run.len(), expected.len() + 100, "nothing twice after the restart either");
}
