//! Exactly-once recovery of the transactional Kafka sink, driven directly through its
//! two-phase-commit methods (the engine's checkpoint barriers are not wired to sinks yet):
//!
//! 1. epoch 1 is pre-committed and committed;
//! 2. epoch 2 is pre-committed (the checkpoint completed) but the process "dies" before
//!    `commit`: a new producer restored with epoch 2's committable re-produces it;
//! 3. restoring the same committable again (a crash right after that commit) publishes nothing;
//! 4. epoch 3's transaction is sent but not committed when a new incarnation starts while the
//!    old one is still alive (a zombie): the new one fences it (`init_transactions` with the
//!    same transactional id), re-produces epoch 3 and commits; the zombie's commit then fails
//!    (Kafka answers PRODUCER_FENCED; tansu lets it time out) and its records stay uncommitted;
//! 5. a log of an epoch after the restored checkpoint is deleted as a leftover.
//!
//! How committed records are identified: tansu's fetch responses carry no aborted-transaction
//! list, so even a `read_committed` reader sees the zombie's aborted records. Every record
//! carries `weir.txn`, `weir.epoch` and `weir.attempt` headers; the commit marker (group
//! `<id>.weir-commits`, offset = last committed epoch) says which epochs are committed; of
//! each committed (txn, epoch) only the last attempt committed. Counting those must give every
//! record exactly once, while the raw log shows the aborted duplicates.

#[path = "common/kafka.rs"]
mod kafka_broker;

use std::collections::BTreeMap;

use kafka_broker::{Broker, Read};
use weir::checkpoint::snapshot;
use weir::sink::kafka::{Committable, KafkaSinkOptions, OutRecord, TransactionalProducer};

fn records(range: std::ops::Range<u32>) -> Vec<OutRecord> {
    range
        .map(|i| OutRecord {
            key: Some(format!("k{}", i % 4).into_bytes()),
            value: format!("r{i}").into_bytes(),
            headers: vec![("app".into(), b"test".to_vec())],
            partition: None,
        })
        .collect()
}

fn committable(bytes: Option<Vec<u8>>) -> Committable {
    snapshot::decode(&bytes.expect("a committable"), "committable").unwrap()
}

/// The committed records by the marker and attempt headers (see the module docs).
fn committed(read: &[Read], marker_epoch: u64) -> Vec<String> {
    let mut last_attempt: BTreeMap<(String, u64), u64> = BTreeMap::new();
    for r in read {
        let key = (r.header("weir.txn").unwrap(), r.header("weir.epoch").unwrap().parse().unwrap());
        let attempt: u64 = r.header("weir.attempt").unwrap().parse().unwrap();
        let e = last_attempt.entry(key).or_insert(0);
        *e = (*e).max(attempt);
    }
    let mut out: Vec<String> = read
        .iter()
        .filter(|r| {
            let epoch: u64 = r.header("weir.epoch").unwrap().parse().unwrap();
            let key = (r.header("weir.txn").unwrap(), epoch);
            epoch <= marker_epoch && r.header("weir.attempt").unwrap().parse::<u64>().unwrap() == last_attempt[&key]
        })
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect();
    out.sort();
    out
}

#[test]
fn transactional_sink_recovers_exactly_once() {
    let Some(broker) = Broker::start() else { return };
    broker.create_topic("eos-out", 2);
    let dir = tempfile::tempdir().unwrap();
    let mut options = KafkaSinkOptions::new(&broker.bootstrap, "eos-out").transaction_log_dir(dir.path());
    // Bounds the zombie's commit attempt below (tansu does not answer a fenced producer's
    // EndTxn with PRODUCER_FENCED as Kafka does: the call times out instead).
    options.transaction_timeout_ms = 5_000;
    let id = "recovery-test-0";
    let (opts, bootstrap) = (options.clone(), broker.bootstrap.clone());
    let zombie_error = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let _ = bootstrap;
            // 1. A normal checkpoint.
            let mut p1 = TransactionalProducer::new(&opts, id, 0, Vec::new()).unwrap();
            p1.connect(Vec::new()).await.unwrap();
            p1.append(&records(0..10)).await.unwrap();
            let c1 = p1.pre_commit(1).await.unwrap();
            assert!(c1.is_some());
            p1.commit(1).await.unwrap();
            assert_eq!(p1.marker_epoch(id).await.unwrap(), 1);

            // 2. Checkpoint 2 completes, the process dies before commit.
            p1.append(&records(10..20)).await.unwrap();
            let c2 = committable(p1.pre_commit(2).await.unwrap());
            assert!(c2.log.exists());
            drop(p1);
            let mut p2 = TransactionalProducer::new(&opts, id, 0, Vec::new()).unwrap();
            p2.connect(vec![c2.clone()]).await.unwrap();
            assert_eq!(p2.marker_epoch(id).await.unwrap(), 2);
            assert!(!c2.log.exists(), "a committed log is deleted");
            drop(p2);

            // 3. Restoring checkpoint 2 again: already committed, nothing is produced.
            let mut p3 = TransactionalProducer::new(&opts, id, 0, Vec::new()).unwrap();
            p3.connect(vec![c2.clone()]).await.unwrap();

            // 4. Epoch 3 is in flight (sent, not committed) when a new incarnation starts.
            p3.append(&records(20..30)).await.unwrap();
            let c3 = committable(p3.pre_commit(3).await.unwrap());
            p3.produce_in_transaction(&c3).await.unwrap();
            // 5. A leftover log of a later, never-completed checkpoint.
            let leftover = c3.log.with_file_name("epoch-9.log");
            std::fs::write(&leftover, b"").unwrap();
            let mut p4 = TransactionalProducer::new(&opts, id, 0, Vec::new()).unwrap();
            p4.connect(vec![c3.clone()]).await.unwrap();
            assert_eq!(p4.marker_epoch(id).await.unwrap(), 3);
            assert!(!leftover.exists(), "leftover logs are deleted");
            // The zombie, still alive, now tries to commit its transaction: it was fenced.
            let err = p3.finish_transaction(&c3).await.err().map(|e| e.to_string());
            assert_eq!(p4.marker_epoch(id).await.unwrap(), 3);
            err
        })
        .unwrap()
        .join()
        .unwrap();
    let zombie_error = zombie_error.expect("the fenced zombie's commit fails");
    assert!(zombie_error.contains("committing epoch 3 of recovery-test-0"), "{zombie_error}");

    let read = broker.read_all("eos-out");
    let mut want: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    want.sort();
    assert_eq!(committed(&read, 3), want, "every record committed exactly once");
    assert!(read.len() > 30, "tansu shows the aborted attempt too: {} records", read.len());
    assert!(read.iter().all(|r| r.header("app").as_deref() == Some("test")));
    // Keys hash to one partition each.
    for k in 0..4 {
        let key = format!("k{k}").into_bytes();
        let parts: std::collections::BTreeSet<i32> = read.iter().filter(|r| r.key.as_deref() == Some(&key[..])).map(|r| r.partition).collect();
        assert_eq!(parts.len(), 1);
    }
}
