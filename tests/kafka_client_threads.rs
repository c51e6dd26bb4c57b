//! librdkafka's threads stay off the pinned shard cores.
//!
//! A thread inherits its creator's CPU affinity, and librdkafka starts its threads (`rdk:main`,
//! `rdk:broker…`) when a client is created; weir creates every client on a helper thread whose
//! affinity is the process's CPUs minus the pinned shard cores (all of them when no core is
//! spare). With one shard pinned to CPU 0, every `rdk:` thread of the running job (source
//! consumer, sink producer) must be allowed exactly `client_cpus(config)`, which on a machine
//! with more than one CPU excludes CPU 0.

#[path = "common/kafka.rs"]
mod kafka_broker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_broker::Broker;
use weir::prelude::*;
use weir::shard::MetricsRegistry;
use weir::sink::kafka::{KafkaSink, KafkaSinkOptions, ValueFormat};
use weir::source::kafka::client::client_cpus;
use weir::source::kafka::{KafkaSource, KafkaSourceOptions};

/// (thread name, allowed CPUs) of every thread of this process named `rdk:*`.
fn rdkafka_threads() -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("rdk:") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or("")
            .trim()
            .to_string();
        out.push((comm.trim().to_string(), parse_cpu_list(&list)));
    }
    out
}

fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

#[test]
fn librdkafka_threads_are_not_on_pinned_shard_cores() {
    let Some(broker) = Broker::start() else { return };
    broker.create_topic("in", 1);
    broker.create_topic("out", 1);
    broker.produce_lines("in", 0, &[("a".to_string(), 1), ("b".to_string(), 2)]);
    let config = EngineConfig {
        cores: 1,
        pin_cores: true,
        ..Default::default()
    };
    let expected = client_cpus(&config);
    let online = std::thread::available_parallelism().unwrap().get();
    if online > 1 {
        assert!(!expected.contains(&0), "CPU 0 hosts the pinned shard: {expected:?}");
    }

    let source = KafkaSource::raw(KafkaSourceOptions::new(&broker.bootstrap, "in")).unwrap();
    let stop = source.stop_handle();
    let sink = KafkaSink::<String>::new(KafkaSinkOptions::new(&broker.bootstrap, "out"), ValueFormat::Raw).unwrap();
    let registry = Arc::new(MetricsRegistry::default());
    let (reg, cfg) = (registry.clone(), config.clone());
    let job = std::thread::spawn(move || {
        let env = StreamEnv::new(cfg.clone());
        env.source(source).without_event_time().sink(sink);
        weir::shard::runtime::execute_with_registry(env.graph(), &cfg, reg).expect("job");
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while registry
        .operator_snapshots()
        .iter()
        .filter(|o| o.name.starts_with("source:kafka"))
        .map(|o| o.records_out)
        .sum::<u64>()
        < 2
    {
        assert!(Instant::now() < deadline, "the job did not read its input");
        std::thread::sleep(Duration::from_millis(20));
    }
    let threads = rdkafka_threads();
    stop.stop();
    job.join().unwrap();
    assert!(threads.iter().any(|(n, _)| n.starts_with("rdk:main")), "{threads:?}");
    for (name, cpus) in &threads {
        assert_eq!(cpus, &expected, "thread {name}");
    }
    assert_eq!(broker.read_lines("out"), ["a", "b"]);
}
