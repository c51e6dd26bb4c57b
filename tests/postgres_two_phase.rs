//! Exactly-once into PostgreSQL across a SIGKILL (two-phase commit), against the real server
//! from `.ci/services.sh`. A child process (this test binary re-run in the writer role) writes
//! epochs 1–3 and prepares them, sees checkpoint 1 complete, leaves epoch 4 open, and is
//! SIGKILLed. The restored writer gets checkpoint 2's committables: it commits epoch 2, rolls
//! back the leftovers (epoch 3 of its shard, and a prepared epoch of a shard that no longer
//! exists), and the replayed rows after checkpoint 2 are written again: every id lands exactly
//! once. No sleeps: the parent waits for the child's "prepared" line.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use weir::shard::Flusher;
use weir::sink::postgres::{connect, DeliveryGuarantee, PostgresConfig, PostgresWriter, SqlValues};

struct Id(i64);

impl SqlValues for Id {
    fn write_sql(&self, out: &mut String) -> Result<(), String> {
        out.push_str(&format!("({})", self.0));
        Ok(())
    }
}

fn config(url: &str) -> PostgresConfig {
    let rest = url.split("://").nth(1).unwrap();
    let (auth, hostdb) = rest.split_once('@').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    PostgresConfig {
        address: hostport.parse().unwrap(),
        database: db.to_string(),
        username: auth.split(':').next().unwrap().to_string(),
        password: None,
        table: "ids_2pc".into(),
        columns: vec!["id".into()],
        upsert_key: Vec::new(),
        max_rows: 37,
        guarantee: DeliveryGuarantee::ExactlyOnce,
        transaction_prefix: "t2pc".into(),
    }
}

fn ids(range: std::ops::Range<i64>) -> Vec<Id> {
    range.map(Id).collect()
}

fn executor() -> glommio::LocalExecutor {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap()
}

fn query(url: &str, sql: &str) -> Vec<String> {
    let (c, sql) = (config(url), sql.to_string());
    executor().run(async move {
        let client = connect(&c).await.unwrap();
        let mut out = Vec::new();
        for m in client.simple_query(&sql).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                out.push(r.get(0).unwrap_or("").to_string());
            }
        }
        out
    })
}

/// The child: write and prepare, report the committables, then wait to be killed.
fn writer_child(url: &str) {
    let c = config(url);
    executor().run(async move {
        let mut w = PostgresWriter::standalone(c.clone(), 0, 2);
        w.connect().await.unwrap();
        let mut committables = Vec::new();
        for (epoch, range) in [(1u64, 0..100), (2, 100..200), (3, 200..300)] {
            w.write_rows(&ids(range)).unwrap();
            w.flush().await.unwrap();
            committables.push(w.pre_commit(epoch).await.unwrap().expect("rows were written"));
            if epoch == 1 {
                w.commit(1).await.unwrap(); // checkpoint 1 completed
            }
        }
        w.write_rows(&ids(300..400)).unwrap();
        w.flush().await.unwrap(); // epoch 4: an open transaction
                                  // Shard 1 of the old parallelism also prepared an epoch nobody will commit.
        let mut other = PostgresWriter::standalone(c, 1, 2);
        other.connect().await.unwrap();
        other.write_rows(&ids(1000..1010)).unwrap();
        other.flush().await.unwrap();
        other.pre_commit(3).await.unwrap();
        let hex: Vec<String> = committables.iter().map(|c| c.iter().map(|b| format!("{b:02x}")).collect()).collect();
        println!("\nPREPARED {}", hex.join(","));
        std::thread::park(); // until SIGKILL
    });
}

#[test]
fn prepared_transactions_survive_a_sigkill_and_commit_exactly_once() {
    let Some(url) = common::test_server("WEIR_TEST_POSTGRES") else { return };
    if std::env::var_os("WEIR_2PC_CHILD").is_some() {
        writer_child(&url);
        return;
    }
    // Leftovers of an earlier run hold locks on the table: roll them back before dropping it.
    for gid in query(&url, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 't2pc-%'") {
        query(&url, &format!("ROLLBACK PREPARED '{gid}'"));
    }
    query(&url, "DROP TABLE IF EXISTS ids_2pc; CREATE TABLE ids_2pc (id BIGINT PRIMARY KEY); SELECT 1");

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "prepared_transactions_survive_a_sigkill_and_commit_exactly_once",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("WEIR_2PC_CHILD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let line = stdout.lines().map_while(Result::ok).find(|l| l.starts_with("PREPARED "));
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(60)).ok().flatten();
    child.kill().unwrap(); // SIGKILL with three prepared epochs and one open transaction
    child.wait().unwrap();
    let line = line.expect("the child prepared its epochs");
    let committables: Vec<Vec<u8>> = line["PREPARED ".len()..]
        .split(',')
        .map(|h| (0..h.len()).step_by(2).map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap()).collect())
        .collect();

    assert_eq!(query(&url, "SELECT count(*) FROM ids_2pc"), ["100"], "only checkpoint 1 was visible");
    let mut prepared = query(&url, "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 't2pc-%' ORDER BY gid");
    prepared.sort();
    assert_eq!(prepared, ["t2pc-0-2", "t2pc-0-3", "t2pc-1-3"], "prepared transactions outlive the process");

    // Restore from checkpoint 2 on one shard: its committables are epochs 1 and 2.
    let c = config(&url);
    let restored = committables[..2].to_vec();
    executor().run(async move {
        let mut w = PostgresWriter::standalone(c, 0, 1);
        w.restore(restored);
        w.connect().await.unwrap();
        // The job replays what came after checkpoint 2.
        w.write_rows(&ids(200..400)).unwrap();
        w.flush().await.unwrap();
        w.close().await.unwrap();
    });
    assert_eq!(query(&url, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 't2pc-%'"), ["0"]);
    assert_eq!(
        query(
            &url,
            "SELECT count(*) || ',' || count(DISTINCT id) || ',' || min(id) || ',' || max(id) FROM ids_2pc"
        ),
        ["400,400,0,399"]
    );
}
