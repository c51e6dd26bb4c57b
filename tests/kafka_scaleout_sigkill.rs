//! Scale-out through a consumer group with a process `SIGKILL`ed mid-run: three `weir run`
//! processes share the SQL job (Kafka → 10 s tumbling count and sum per key → Kafka
//! exactly-once, three slots, checkpoints every 150 ms); once every slot's exchange stage has a
//! complete checkpoint, a seeded 0–1500 ms later a seeded one of them is killed with `SIGKILL`.
//! Its slot processes die with it; after the session timeout (6 s) the group hands its slots to
//! the survivors, which restore the slots' latest checkpoints (shared folder), fence the dead
//! process's transactional ids and commit what it had pre-committed. The committed output must
//! equal the single-process output: 0 lost, 0 duplicated committed records (identified by the
//! sink's commit markers and attempt headers, see `tests/common/scaleout.rs`).

#[path = "common/kafka.rs"]
mod kafka_broker;
#[path = "common/scaleout.rs"]
mod scaleout;

use std::time::{Duration, Instant};

use kafka_broker::Broker;
use scaleout::*;

/// The pids of the slot processes a supervisor started (from its log).
fn children(dir: &std::path::Path, name: &str) -> Vec<i32> {
    log(dir, name)
        .lines()
        .filter_map(|l| l.split("started (pid ").nth(1)?.strip_suffix(')')?.parse().ok())
        .collect()
}

fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped by a dead parent's reaper) counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_killed_process_loses_and_duplicates_nothing() {
    let Some(broker) = Broker::start() else { return };
    let dir = TestDir::new("scaleout-sigkill");
    produce_input(&broker, 0x0dea_d007, 150_000, 500);
    let want = single_process_output(dir.path(), &broker);

    let out = "out";
    broker.create_topic(out, OUTPUT_PARTITIONS);
    let checkpoints = dir.path().join("checkpoints-out");
    let mut rng = Rng(std::env::var("WEIR_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x51_6b11));
    let mut processes: Vec<Process> = (0..3)
        .map(|i| start(dir.path(), &broker, &format!("p{i}"), 3, out, "weir-out", &checkpoints))
        .collect();

    // Arm once every slot's exchange stage checkpointed (the job is running everywhere); the
    // seeded delay below lands the kill in an exchange stage still publishing to the
    // repartition topic or, later, in the keyed stages only.
    let started = Instant::now();
    while stage_checkpoints(&checkpoints, "exchange") < 3 {
        assert!(started.elapsed() < Duration::from_secs(120), "the slots did not all checkpoint");
        for p in processes.iter_mut() {
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "{} ended before the kill:\n{}",
                p.name,
                log(dir.path(), &p.name)
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let delay = Duration::from_millis(rng.next() % 1500);
    let armed = Instant::now();
    while armed.elapsed() < delay {
        std::thread::sleep(Duration::from_millis(5));
    }
    let victim = (rng.next() % 3) as usize;
    let name = processes[victim].name.clone();
    let victim_slots = slots_started(dir.path(), &name);
    let unfinished = victim_slots
        .iter()
        .filter(|&&s| ["exchange", "keyed"].iter().any(|st| !checkpoints.join(format!("slot-{s}/{st}/DONE")).exists()))
        .count();
    let orphans = children(dir.path(), &name);
    processes[victim].child.kill().unwrap(); // SIGKILL
    processes[victim].child.wait().unwrap();
    let killed_at = Instant::now();
    let victim_process = processes.remove(victim);
    eprintln!(
        "killed {name} (slots {victim_slots:?}, {unfinished} unfinished) {delay:?} after every slot checkpointed, {:?} after start",
        started.elapsed()
    );
    assert!(unfinished > 0, "the victim had finished its slots before the kill: the test proves nothing");

    // Its slot processes die with it (PR_SET_PDEATHSIG).
    let deadline = Instant::now() + Duration::from_secs(10);
    while orphans.iter().any(|&pid| alive(pid)) {
        assert!(Instant::now() < deadline, "slot processes of the killed supervisor survive: {orphans:?}");
        std::thread::sleep(Duration::from_millis(10));
    }

    // The survivors take the victim's slots over once the group noticed (session timeout 6 s).
    while !victim_slots
        .iter()
        .all(|s| processes.iter().any(|p| slots_started(dir.path(), &p.name).contains(s)))
    {
        assert!(killed_at.elapsed() < Duration::from_secs(60), "the killed process's slots were not taken over");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("slots {victim_slots:?} restarted on a survivor {:?} after the kill", killed_at.elapsed());

    wait_all(dir.path(), &mut processes, Duration::from_secs(300));
    drop(victim_process);

    let (got, in_topic) = committed(&broker, out);
    eprintln!("{} committed rows ({in_topic} records in the topic), want {}", got.len(), want.len());
    assert_rows(&broker, out, &got, &want, "0 lost, 0 duplicated: committed rows after the kill");
}
