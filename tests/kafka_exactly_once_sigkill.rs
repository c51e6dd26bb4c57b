//! Kafka → keyed windows → Kafka exactly-once with `SIGKILL` of the weir process at random
//! (seeded) moments: 0 lost, 0 duplicated committed records.
//!
//! The `weir` binary runs a SQL job (bounded Kafka source of 200 000 bids in one partition →
//! 10 s tumbling count and max per auction → exactly-once Kafka sink, checkpoints every 30 ms)
//! and is killed with `SIGKILL` a seeded 0–400 ms after it completed its first checkpoint, then
//! restarted from the newest complete checkpoint (`restore_from` in its TOML config), up to 5
//! times, then runs to the end. The committed output
//! must equal the same query over a file, each row exactly once.
//!
//! How committed records are identified: tansu's fetch responses carry no aborted-transaction
//! list, so a read-committed reader also sees records of transactions a kill left open (the
//! restarted producer's `init_transactions` aborts them). The sink stamps every record with
//! `weir.txn` (transactional id), `weir.epoch` and `weir.attempt`, and commits a marker with
//! each transaction (offset = epoch, group `<id>.weir-commits`); the committed records are those
//! of epochs up to their id's marker, from the last attempt of each (id, epoch) — the one that
//! committed, since a committed epoch is never attempted again.

#[path = "common/kafka.rs"]
mod kafka_broker;

use std::collections::{BTreeMap, HashMap};
use std::io::Read as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_broker::{Broker, Read};
use rdkafka::consumer::{BaseConsumer, Consumer};
use weir::checkpoint::files::CheckpointStore;
use weir::prelude::*;
use weir::sink::kafka::marker_group;

const BIDS: usize = 200_000;
const SHARDS: usize = 2;
const MAX_KILLS: usize = 5;

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
CREATE TABLE bid (
  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, ms BIGINT, extra STRING,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3),
  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH (
  'connector' = 'kafka', 'topic' = 'bids', 'properties.bootstrap.servers' = '${BROKER}',
  'format' = 'csv', 'scan.bounded.mode' = 'latest-offset'
);
CREATE TABLE out_rows (auction BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), cnt BIGINT, hi BIGINT) WITH (
  'connector' = 'kafka', 'topic' = 'counts', 'properties.bootstrap.servers' = '${BROKER}', 'format' = 'csv',
  'key.fields' = 'auction', 'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = 'sigkill', 'sink.transaction-log-dir' = '${TXN}'
);
INSERT INTO out_rows SELECT auction, window_start, window_end, COUNT(*), MAX(price)
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
GROUP BY auction, window_start, window_end;
";

/// SplitMix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn bid_lines() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oracle/data/bid.csv.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    text.lines().take(BIDS).map(str::to_string).collect()
}

/// The last committed epoch of `id` (its commit marker; `u64::MAX` for the final epoch).
fn marker(broker: &Broker, id: &str) -> u64 {
    let c: BaseConsumer = rdkafka::config::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("group.id", marker_group(id))
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition("counts", 0);
    match c
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .find_partition("counts", 0)
        .unwrap()
        .offset()
    {
        rdkafka::Offset::Offset(i64::MAX) => u64::MAX,
        rdkafka::Offset::Offset(o) if o > 0 => o as u64,
        _ => 0,
    }
}

/// The marker of `id`, once the run that finished has committed its final epoch if it had one.
///
/// tansu applies transactional offset commits lazily (see `weir::sink::kafka`): right after
/// the process exits, a marker can still read an earlier epoch, or nothing while the commit is
/// pending. An id with records of the final epoch (`u64::MAX`) in the topic had them
/// committed by the run that finished (only that run reaches the end, and it commits every
/// pre-committed epoch before it exits), so its marker must come to read `u64::MAX`: wait for
/// that, bounded; a marker that never gets there is returned as read and fails the count.
fn final_marker(broker: &Broker, id: &str, has_final_epoch: bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let m = marker(broker, id);
        if !has_final_epoch || m == u64::MAX || Instant::now() >= deadline {
            if m != u64::MAX {
                eprintln!("the commit marker of {id} reads epoch {m}, not the final epoch, after 60 s");
            }
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The committed records' values (see the module docs).
fn committed(broker: &Broker, read: &[Read]) -> Vec<String> {
    let epoch = |r: &Read| r.header("weir.epoch").unwrap().parse::<u64>().unwrap();
    let attempt = |r: &Read| r.header("weir.attempt").unwrap().parse::<u64>().unwrap();
    let mut markers: HashMap<String, u64> = HashMap::new();
    let mut last: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let with_final_epoch: std::collections::BTreeSet<String> = read.iter().filter(|r| epoch(r) == u64::MAX).map(|r| r.header("weir.txn").unwrap()).collect();
    for r in read {
        let id = r.header("weir.txn").unwrap();
        markers
            .entry(id.clone())
            .or_insert_with(|| final_marker(broker, &id, with_final_epoch.contains(&id)));
        let e = last.entry((id, epoch(r))).or_insert(0);
        *e = (*e).max(attempt(r));
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
    out
}

#[test]
fn exactly_once_through_sigkills() {
    let Some(broker) = Broker::start() else { return };
    let lines = bid_lines();
    let dir = tempfile::tempdir().unwrap();

    // The expected rows: the same query over a file.
    let data = dir.path().join("bid.csv");
    std::fs::write(&data, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let out = dir.path().join("out");
    let vars: HashMap<String, String> = [("DATA".into(), data.display().to_string()), ("OUT".into(), out.display().to_string())].into();
    let config = EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    };
    weir::sql::run_script(FILE_SQL, &vars, config).unwrap();
    let mut want: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .flat_map(|f| std::fs::read_to_string(f.path()).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    want.sort();

    broker.create_topic("bids", 1);
    broker.create_topic("counts", 3);
    let records: Vec<(String, i64)> = lines.iter().map(|l| (l.clone(), 1)).collect();
    broker.produce_lines("bids", 0, &records);

    let script = dir.path().join("job.sql");
    std::fs::write(&script, KAFKA_SQL).unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let mut rng = Rng(0x5eed_0007);
    let mut kills = 0;
    let mut runs = 0;
    let mut restored_runs = 0;
    loop {
        runs += 1;
        assert!(runs <= MAX_KILLS + 1, "the job did not finish");
        let latest = CheckpointStore::new(&checkpoints).latest().unwrap();
        let mut toml = format!(
            "[engine]\ncheckpoint_interval_ms = 30\ncheckpoint_dir = {:?}\nrestart_attempts = 0\n",
            checkpoints.display().to_string()
        );
        if let Some(chk) = &latest {
            restored_runs += 1;
            toml.push_str(&format!("restore_from = {:?}\n", chk.display().to_string()));
        }
        let config_path = dir.path().join("weir.toml");
        std::fs::write(&config_path, toml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("run")
            .arg(&script)
            .args(["--var", &format!("BROKER={}", broker.bootstrap)])
            .args(["--var", &format!("TXN={}", dir.path().join("txn").display())])
            .arg("--config")
            .arg(&config_path)
            .args(["--cores", &SHARDS.to_string(), "--no-pin"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Kill at a seeded moment after this run completed a checkpoint of its own (so every
        // kill lands after progress: mid-processing, mid-checkpoint or mid-commit).
        let kill_delay = (kills < MAX_KILLS).then(|| Duration::from_millis(rng.next() % 400));
        let started = Instant::now();
        let mut armed: Option<Instant> = None;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if armed.is_none() && kill_delay.is_some() && CheckpointStore::new(&checkpoints).latest().ok().flatten() != latest {
                armed = Some(Instant::now());
            }
            if let (Some(at), Some(delay)) = (armed, kill_delay) {
                if at.elapsed() >= delay {
                    child.kill().unwrap(); // SIGKILL
                    child.wait().unwrap();
                    kills += 1;
                    eprintln!("run {runs} killed {:?} after its first checkpoint, {:?} after start", delay, started.elapsed());
                    break None;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(180), "run {runs} hangs");
            std::thread::sleep(Duration::from_millis(2));
        };
        if let Some(status) = status {
            let mut err = String::new();
            child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            assert!(status.success(), "run {runs} failed: {err}");
            eprintln!("run {runs} completed in {:?}", started.elapsed());
            break;
        }
    }
    assert!(kills >= 1, "no run was killed: the job finished before every kill");
    assert!(restored_runs >= 1, "no run restored from a checkpoint");

    let read = broker.read_all("counts");
    let got = committed(&broker, &read);
    assert_eq!(got.len(), want.len(), "{kills} kills, {runs} runs: committed rows");
    assert_eq!(got, want, "{kills} kills: every row committed exactly once");
    let periodic = read.iter().filter(|r| r.header("weir.epoch").as_deref() != Some(&u64::MAX.to_string())).count();
    eprintln!(
        "{kills} kills, {runs} runs ({restored_runs} restored), {} records in the topic ({periodic} from periodic checkpoints), {} committed",
        read.len(),
        got.len()
    );
}
