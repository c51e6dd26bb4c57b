//! Scale-out through a consumer group when a process joins mid-run: one `weir run` process
//! starts the SQL job (three slots) alone and runs every slot; once every slot's keyed stage
//! has a complete checkpoint, a second process joins the group. The group rebalances
//! (cooperative-sticky): the first process's revoked slots are stopped inside the revoke
//! callback, the joiner restores them from their latest checkpoints in the shared folder and
//! finishes them. The committed output equals the single-process output, each row once
//! (committed records identified as in `tests/common/scaleout.rs`).

#[path = "common/kafka.rs"]
mod kafka_broker;
#[path = "common/scaleout.rs"]
mod scaleout;

use std::time::{Duration, Instant};

use kafka_broker::Broker;
use scaleout::*;

#[test]
fn a_joining_process_takes_over_slots_exactly() {
    let Some(broker) = Broker::start() else { return };
    let dir = TestDir::new("scaleout-join");
    produce_input(&broker, 0x0050_1e1d, 900_000, 500);
    let want = single_process_output(dir.path(), &broker);

    let out = "out";
    broker.create_topic(out, OUTPUT_PARTITIONS);
    let checkpoints = dir.path().join("checkpoints-out");
    let mut processes = vec![start(dir.path(), &broker, "first", 3, out, "weir-join", &checkpoints)];
    let started = Instant::now();
    while stage_checkpoints(&checkpoints, "keyed") < 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the slots did not all checkpoint");
        assert!(processes[0].child.try_wait().unwrap().is_none(), "ended early:\n{}", log(dir.path(), "first"));
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(slots_started(dir.path(), "first").len(), 3, "the first process runs every slot");
    processes.push(start(dir.path(), &broker, "joiner", 3, out, "weir-join", &checkpoints));
    let joined = Instant::now();
    // The joiner gets a slot the first process ran (restored from its checkpoints).
    while slots_started(dir.path(), "joiner").is_empty() {
        assert!(
            joined.elapsed() < Duration::from_secs(60),
            "no slot moved to the joiner:\n{}",
            log(dir.path(), "joiner")
        );
        assert!(
            processes[0].child.try_wait().unwrap().is_none(),
            "the job ended before the rebalance: make the input larger"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let moved = slots_started(dir.path(), "joiner");
    eprintln!("slots {moved:?} moved to the joiner {:?} after it started", joined.elapsed());
    let first_log = log(dir.path(), "first");
    for s in &moved {
        assert!(
            first_log.contains(&format!("slot {s} revoked")),
            "slot {s} was not revoked from the first process"
        );
    }

    wait_all(dir.path(), &mut processes, Duration::from_secs(300));
    assert!(
        log(dir.path(), "joiner").contains("restoring Checkpoint"),
        "the joiner restored the moved slots' checkpoints"
    );
    let (got, in_topic) = committed(&broker, out);
    eprintln!("{} committed rows ({in_topic} records in the topic), want {}", got.len(), want.len());
    assert_rows(&broker, out, &got, &want, "0 lost, 0 duplicated: committed rows after the rebalance");
}
