//! Shared by the scale-out scenarios (`tests/kafka_scaleout_*.rs`): a seeded keyed input in a
//! Kafka topic, the SQL job (Kafka → 10 s tumbling count and sum per key → Kafka exactly-once),
//! `weir run` processes sharing one consumer group and one checkpoint folder, and the committed
//! output of a topic.
//!
//! How committed records are identified: tansu's fetch responses carry no aborted-transaction
//! list, so a `read_committed` reader also sees records of transactions a kill left open (the
//! next owner of the slot aborts them with `init_transactions` and produces the epoch again).
//! Every record the exactly-once sink writes carries `weir.txn` (transactional id),
//! `weir.epoch` and `weir.attempt`; each transaction commits a marker (offset = epoch in group
//! `<id>.weir-commits`) atomically with its records. The committed records are those of epochs
//! up to their id's marker, from the last attempt of each (id, epoch) — the attempt that
//! committed, since a committed epoch is never attempted again.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use weir::sink::kafka::marker_group;

use super::kafka_broker::{Broker, Read};

/// Input partitions (not partitioned by key: the keyed exchange must cross processes).
pub const INPUT_PARTITIONS: i32 = 6;
pub const OUTPUT_PARTITIONS: i32 = 3;

/// The job. `${SLOTS}` = 0 runs it in one process without Kafka in between.
pub const SQL: &str = "
SET 'weir.scale-out.slots' = '${SLOTS}';
SET 'weir.scale-out.repartition-partitions' = '${REPARTITION}';
SET 'weir.scale-out.job' = '${JOB}';
SET 'execution.checkpointing.interval' = '150 ms';
CREATE TABLE ev (
  k BIGINT, ms BIGINT, v BIGINT,
  ts AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR ts AS ts - INTERVAL '2' SECOND
) WITH (
  'connector' = 'kafka', 'topic' = 'events', 'properties.bootstrap.servers' = '${BROKER}',
  'properties.group.id' = '${GROUP}', 'properties.session.timeout.ms' = '6000',
  'properties.heartbeat.interval.ms' = '500',
  'format' = 'csv', 'scan.bounded.mode' = 'latest-offset'
);
CREATE TABLE out_rows (k BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT, total BIGINT) WITH (
  'connector' = 'kafka', 'topic' = '${OUT}', 'properties.bootstrap.servers' = '${BROKER}', 'format' = 'csv',
  'key.fields' = 'k', 'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '${OUT}', 'sink.transaction-log-dir' = '${TXN}'
);
INSERT INTO out_rows SELECT k, window_start, window_end, COUNT(*), SUM(v)
FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND))
GROUP BY k, window_start, window_end;
";

/// SplitMix64.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// `n` events `k,ms,v` over `keys` keys, time advancing 0..20 ms per event with up to 500 ms
/// of jitter (below the 2 s watermark delay: no record is late, in any process layout), spread
/// round-robin over the input partitions.
pub fn produce_input(broker: &Broker, seed: u64, n: usize, keys: u64) {
    let mut rng = Rng(seed);
    let mut t: i64 = 1_700_000_000_000;
    let mut per_partition: Vec<Vec<(String, i64)>> = vec![Vec::new(); INPUT_PARTITIONS as usize];
    for i in 0..n {
        t += (rng.next() % 20) as i64;
        let ms = t - (rng.next() % 500) as i64;
        let line = format!("{},{ms},{}", rng.next() % keys, (rng.next() % 1000) as i64 - 500);
        per_partition[i % INPUT_PARTITIONS as usize].push((line, ms));
    }
    broker.create_topic("events", INPUT_PARTITIONS);
    for (p, lines) in per_partition.iter().enumerate() {
        broker.produce_lines("events", p as i32, lines);
    }
}

/// One `weir run` process of the job; killed (by PID) when dropped, so a failing test leaves
/// no process behind (its slot processes die with it).
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's folder: removed at the end, unless `WEIR_TEST_KEEP` is set (it is then printed
/// and kept for a look at the logs and checkpoints).
pub enum TestDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl TestDir {
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new().prefix(&format!("weir-{name}-")).tempdir().unwrap();
        if std::env::var_os("WEIR_TEST_KEEP").is_some() {
            eprintln!("keeping {}", dir.path().display());
            TestDir::Kept(dir.keep())
        } else {
            TestDir::Temp(dir)
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            TestDir::Temp(d) => d.path(),
            TestDir::Kept(p) => p,
        }
    }
}

/// Start `weir run` on the job (`slots` = 0: one plain process) with its own state folder and
/// the shared checkpoint folder `checkpoints`.
pub fn start(dir: &Path, broker: &Broker, name: &str, slots: usize, out: &str, group: &str, checkpoints: &Path) -> Process {
    let script = dir.join("job.sql");
    if !script.exists() {
        std::fs::write(&script, SQL).unwrap();
    }
    let state = dir.join(format!("state-{name}"));
    let vars = [
        ("BROKER", broker.bootstrap.clone()),
        ("GROUP", group.to_string()),
        ("OUT", out.to_string()),
        ("SLOTS", slots.to_string()),
        ("REPARTITION", (slots * 2).max(1).to_string()),
        ("JOB", format!("job-{out}")),
        ("TXN", dir.join(format!("txn-{name}")).display().to_string()),
    ];
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .arg("run")
        .arg(&script)
        .args(vars.iter().flat_map(|(k, v)| ["--var".to_string(), format!("{k}={v}")]))
        .args(["--cores", "2", "--no-pin", "--checkpoint-dir"])
        .arg(checkpoints)
        .arg("--state-dir")
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap()))
        .spawn()
        .unwrap();
    Process { child, name: name.to_string() }
}

/// The slots a process started a stage of (from its log), in order of first start.
pub fn slots_started(dir: &Path, name: &str) -> Vec<usize> {
    let mut slots = Vec::new();
    for line in log(dir, name).lines() {
        let Some(rest) = line.strip_prefix("weir scale-out: slot ") else { continue };
        if !line.contains(" started (pid") {
            continue;
        }
        if let Some(slot) = rest.split(' ').next().and_then(|s| s.parse::<usize>().ok()) {
            if !slots.contains(&slot) {
                slots.push(slot);
            }
        }
    }
    slots
}

/// The log a process wrote (its children's too).
pub fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// Wait (polling, with a deadline) until every process exited; each must succeed.
pub fn wait_all(dir: &Path, processes: &mut [Process], limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let mut running = 0;
        for p in processes.iter_mut() {
            match p.child.try_wait().unwrap() {
                Some(status) => assert!(status.success(), "process {} failed ({status}):\n{}", p.name, log(dir, &p.name)),
                None => running += 1,
            }
        }
        if running == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            for p in processes.iter_mut() {
                let _ = p.child.kill();
                let _ = p.child.wait();
                eprintln!("--- {} ---\n{}", p.name, log(dir, &p.name));
            }
            panic!("the job did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The committed marker epoch of transactional id `id` on `topic` (`u64::MAX`: the final one).
fn marker(broker: &Broker, topic: &str, id: &str) -> u64 {
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", marker_group(id))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    match c
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .find_partition(topic, 0)
        .unwrap()
        .offset()
    {
        rdkafka::Offset::Offset(i64::MAX) => u64::MAX,
        rdkafka::Offset::Offset(o) if o > 0 => o as u64,
        _ => 0,
    }
}

/// The committed records' values of `topic`, sorted (see the module docs), and how many
/// records the topic holds in all. Call it once every process of the job exited 0.
pub fn committed(broker: &Broker, topic: &str) -> (Vec<String>, usize) {
    assert_open_transactions_resolved(broker, topic);
    let read: Vec<Read> = broker.read_all(topic);
    let epoch = |r: &Read| r.header("weir.epoch").unwrap().parse::<u64>().unwrap();
    let attempt = |r: &Read| r.header("weir.attempt").unwrap().parse::<u64>().unwrap();
    let mut newest: HashMap<String, u64> = HashMap::new();
    let mut last: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for r in &read {
        let id = r.header("weir.txn").unwrap();
        let n = newest.entry(id.clone()).or_insert(0);
        *n = (*n).max(epoch(r));
        let e = last.entry((id, epoch(r))).or_insert(0);
        *e = (*e).max(attempt(r));
    }
    // Every epoch in the topic of a finished job (every process exited 0) was committed: an
    // epoch is published only after its checkpoint completed, and every later owner publishes
    // it again until it commits. tansu applies a transaction's marker lazily — only once the
    // transaction no longer overlaps an open one, so behind a transaction tansu keeps open for
    // good (see `assert_open_transactions_resolved`) it may never apply. Wait (with a
    // deadline) for each id's marker to reach its newest epoch; one still behind then is
    // taken as the newest epoch, said loudly. The rows are still compared exactly, from the
    // last attempt of every epoch.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut markers: HashMap<String, u64> = HashMap::new();
    for (id, &n) in &newest {
        let mut m = marker(broker, topic, id);
        while m < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            m = marker(broker, topic, id);
        }
        if m < n {
            eprintln!("NOTE: the marker of {id} stays at epoch {m} (tansu has not applied it); its newest epoch in {topic}, {n}, counts as committed");
            m = n;
        }
        markers.insert(id.clone(), m);
    }
    let mut out: Vec<String> = read
        .iter()
        .filter(|r| {
            let id = r.header("weir.txn").unwrap();
            epoch(r) <= markers[&id] && attempt(r) == last[&(id, epoch(r))]
        })
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    out.sort();
    (out, read.len())
}

/// The expected output: the job in one plain process into topic `single`.
pub fn single_process_output(dir: &Path, broker: &Broker) -> Vec<String> {
    broker.create_topic("single", OUTPUT_PARTITIONS);
    let checkpoints = dir.join("checkpoints-single");
    let mut p = vec![start(dir, broker, "single", 0, "single", "weir-single", &checkpoints)];
    wait_all(dir, &mut p, Duration::from_secs(180));
    let (rows, _) = committed(broker, "single");
    assert!(rows.len() > 100, "the reference run committed only {} rows", rows.len());
    rows
}

/// Checkpoint folders of `stage` of any slot under the shared root that hold a complete
/// checkpoint.
pub fn stage_checkpoints(root: &Path, stage: &str) -> usize {
    let Ok(slots) = std::fs::read_dir(root) else { return 0 };
    slots
        .flatten()
        .filter(|s| {
            let dir: PathBuf = s.path().join(stage);
            weir::checkpoint::files::CheckpointStore::new(&dir).latest().ok().flatten().is_some()
        })
        .count()
}

/// Every transaction a finished job left open in `topic` or in a repartition topic was resolved
/// by weir: its epoch was committed (the id's marker) or published again by a later attempt.
/// (The tansu test broker keeps some committed transactions open — it has no transaction
/// timeout and parks a commit that overlaps an open transaction — so an open transaction alone
/// is not weir's doing; one weir never finished is.)
pub fn assert_open_transactions_resolved(broker: &Broker, topic: &str) {
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut topics: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|t| t.ends_with("-repartition"))
        .collect();
    topics.push(topic.to_string());
    for t in topics {
        let open = broker.open_transactions(&t);
        if open.is_empty() {
            continue;
        }
        eprintln!("transactions open in {t} (partition, last stable offset, end, first open record): {open:?}");
        let read = broker.read_all(&t);
        for (partition, stable, _, _) in &open {
            let first = read.iter().find(|r| r.partition == *partition && r.offset >= *stable).expect("an open record");
            let (id, epoch, attempt) = (
                first.header("weir.txn").unwrap(),
                first.header("weir.epoch").unwrap().parse::<u64>().unwrap(),
                first.header("weir.attempt").unwrap(),
            );
            let committed = marker(broker, &t, &id) >= epoch;
            let retried = read.iter().any(|r| {
                r.header("weir.txn").as_deref() == Some(id.as_str())
                    && r.header("weir.epoch").and_then(|e| e.parse::<u64>().ok()) == Some(epoch)
                    && r.header("weir.attempt").and_then(|a| a.parse::<u64>().ok()) > attempt.parse::<u64>().ok()
            });
            assert!(
                committed || retried,
                "{t}[{partition}]: transaction {id} epoch {epoch} attempt {attempt} is open and was neither committed nor retried"
            );
        }
    }
}

/// Assert the committed rows of `topic` equal `want`; on a difference, name up to 8 missing and
/// 8 extra rows with every copy of them in the topic (partition, offset, transactional id,
/// epoch, attempt, the id's marker, the epoch's last attempt) — what a failure needs explained.
pub fn assert_rows(broker: &Broker, topic: &str, got: &[String], want: &[String], what: &str) {
    if got == want {
        return;
    }
    let count = |rows: &[String]| {
        let mut m: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows {
            *m.entry(r.clone()).or_insert(0) += 1;
        }
        m
    };
    let (g, w) = (count(got), count(want));
    let missing: Vec<&String> = w.iter().filter(|(r, n)| g.get(*r).copied().unwrap_or(0) < **n).map(|(r, _)| r).collect();
    let extra: Vec<&String> = g.iter().filter(|(r, n)| w.get(*r).copied().unwrap_or(0) < **n).map(|(r, _)| r).collect();
    let read = broker.read_all(topic);
    let mut last: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for r in &read {
        let id = r.header("weir.txn").unwrap_or_default();
        let e = r.header("weir.epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
        let a = r.header("weir.attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
        let l = last.entry((id, e)).or_insert(0);
        *l = (*l).max(a);
    }
    let mut report = String::new();
    for (kind, rows) in [("missing", &missing), ("extra", &extra)] {
        report.push_str(&format!("{} {kind} rows\n", rows.len()));
        for row in rows.iter().take(8) {
            report.push_str(&format!("  {kind} {row}\n"));
            for r in read.iter().filter(|r| r.value == row.as_bytes()) {
                let id = r.header("weir.txn").unwrap_or_default();
                let e: u64 = r.header("weir.epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
                report.push_str(&format!(
                    "    copy at {}[{}]: txn {id} epoch {e} attempt {:?} (marker {}, last attempt {:?})\n",
                    r.partition,
                    r.offset,
                    r.header("weir.attempt"),
                    marker(broker, topic, &id),
                    last.get(&(id.clone(), e))
                ));
            }
        }
    }
    report.push_str(&repartition_order_report(broker));
    panic!("{what}: {} committed rows, want {}\n{report}", got.len(), want.len());
}

/// Repartition records a reader drops although they are new: per partition and writer, an
/// envelope whose `(epoch, seq)` lies below one read before from that writer there, without
/// having been read itself before (a repeat of a retried epoch is fine). Decodes only the
/// envelope's head (postcard: the variant, then writer and seq — writers in between for a
/// watermark — as varints).
pub fn repartition_order_report(broker: &Broker) -> String {
    fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*at)?;
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    let md = c.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    let mut report = String::new();
    for t in md.topics().iter().map(|t| t.name().to_string()).filter(|t| t.ends_with("-repartition")) {
        let read = broker.read_all(&t);
        let mut newest: BTreeMap<(i32, u64), (u64, u64)> = BTreeMap::new();
        let mut seen: std::collections::HashSet<(i32, u64, u64, u64)> = std::collections::HashSet::new();
        let mut violations = 0;
        for r in &read {
            let mut at = 0;
            // Data { writer, seq, .. } | Watermark { writer, writers, seq, .. }
            let (Some(variant), Some(writer), Some(mut seq)) = (varint(&r.value, &mut at), varint(&r.value, &mut at), varint(&r.value, &mut at)) else {
                continue;
            };
            if variant == 1 {
                let Some(s) = varint(&r.value, &mut at) else { continue };
                seq = s;
            }
            let epoch: u64 = r.header("weir.epoch").and_then(|e| e.parse().ok()).unwrap_or(0);
            let key = (r.partition, writer);
            let fresh = seen.insert((r.partition, writer, epoch, seq));
            match newest.get(&key) {
                Some(&n) if (epoch, seq) <= n && fresh => {
                    violations += 1;
                    if violations <= 8 {
                        report.push_str(&format!(
                            "  {t}[{}] offset {}: writer {writer} epoch {epoch} seq {seq} is new but below {n:?} (txn {:?}, attempt {:?})\n",
                            r.partition,
                            r.offset,
                            r.header("weir.txn"),
                            r.header("weir.attempt")
                        ));
                    }
                }
                Some(&n) if (epoch, seq) <= n => {}
                _ => {
                    newest.insert(key, (epoch, seq));
                }
            }
        }
        report.push_str(&format!(
            "{t}: {} records, {violations} new records below an earlier one of their writer\n",
            read.len()
        ));
    }
    report
}
