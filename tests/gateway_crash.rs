//! Zero acknowledged events lost across a SIGKILL: a `weir run` child process (checkpoints
//! every 100 ms) serves a SQL job reading a `'connector' = 'gateway'` table into CSV files (the
//! exactly-once file sink); four clients post keyed batches until it is killed mid-stream. A
//! restarted `weir --restore latest` on the same log resumes the gateway's readers at the
//! checkpointed log positions; the clients retry the batches that got no answer (same
//! idempotency keys) and send more; a drain ends the job. The committed output holds every
//! acknowledged event exactly once: nothing lost, nothing twice (the log holds each accepted
//! batch once even though some were retried, and the sink commits per checkpoint).
//! No sleeps: waits poll the child's output and exit with deadlines.

mod common;

use std::collections::BTreeMap;

#[test]
fn no_acknowledged_event_is_lost_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = common::crash::run(
        dir.path(),
        "CREATE TABLE readings (id BIGINT, device STRING) WITH ('connector' = 'gateway', 'log.dir' = '${LOG}', 'partitions' = '2');\n\
         CREATE TABLE out_rows (id BIGINT, device STRING) WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');\n\
         INSERT INTO out_rows SELECT id, device FROM readings;\n",
        &[],
    );
    // The first run committed output at its checkpoints: with no event twice in the end, the
    // restarted readers resumed at the checkpointed positions (not from the log's start).
    assert!(crashed.committed_before_kill > 0, "the first run committed output before the kill");
    let ids = common::crash::output_ids(&dir.path().join("out"));
    let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
    for id in &ids {
        *seen.entry(*id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "events committed twice: {twice:?}");
    let missing: Vec<_> = crashed.acked_ids.iter().filter(|id| !seen.contains_key(id)).take(5).collect();
    assert!(missing.is_empty(), "acknowledged events lost: {missing:?} (of {})", crashed.acked_ids.len());
    // Nothing arrived that no client sent.
    assert!(seen.keys().all(|id| crashed.acked_ids.contains(id)), "unexpected events in the output");
    assert_eq!(ids.len(), crashed.acked_ids.len());
}
