//! Scale-out through a consumer group with a process `SIGKILL`ed mid-run: three `weir run`
//! processes share the SQL job (Kafka → 10 s tumbling count and sum per key → Kafka
//! exactly-once, three slots, checkpoints every 150 ms); a seeded one of them is killed with
//! `SIGKILL` a seeded 0–1500 ms after its slots' exchange stages have a complete checkpoint.
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

    // Arm once the victim's slots all have an exchange checkpoint (it is running); the seeded
    // delay below lands the kill in an exchange stage still publishing to the repartition topic
    // or, later, in the keyed stage only.
    let victim = (rng.next() % 3) as usize;
    let name = processes[victim].name.clone();
    let started = Instant::now();
    loop {
        let slots = slots_started(dir.path(), &name);
        let checkpointed = |s: &usize| {
            weir::checkpoint::files::CheckpointStore::new(checkpoints.join(format!("slot-{s}/exchange")))
                .latest()
                .ok()
                .flatten()
                .is_some()
        };
        if !slots.is_empty() && slots.iter().all(checkpointed) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{name}'s slots did not checkpoint");
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
    let victim_slots = slots_started(dir.path(), &name);
    let unfinished: Vec<String> = victim_slots
        .iter()
        .flat_map(|&s| ["exchange", "keyed"].into_iter().map(move |st| (s, st)))
        .filter(|(s, st)| !checkpoints.join(format!("slot-{s}/{st}/DONE")).exists())
        .map(|(s, st)| format!("{s}/{st}"))
        .collect();
    let orphans = children(dir.path(), &name);
    processes[victim].child.kill().unwrap(); // SIGKILL
    processes[victim].child.wait().unwrap();
    let killed_at = Instant::now();
    let victim_process = processes.remove(victim);
    eprintln!(
        "killed {name} (slots {victim_slots:?}, unfinished {unfinished:?}) {delay:?} after its exchange checkpointed, {:?} after start",
        started.elapsed()
    );
    assert!(
        !unfinished.is_empty(),
        "the victim had finished its slots before the kill: the test proves nothing"
    );

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
