//! Scale-out through a consumer group: two, then three `weir run` processes of the same SQL job
//! (Kafka → 10 s tumbling count and sum per key → Kafka exactly-once) with the same group id,
//! on one machine, each with its own state folder, sharing one checkpoint folder. The union of
//! their committed output equals the output of the same job in one plain process, row for row,
//! each row once.
//!
//! The input (seeded, 40 000 events over 300 keys in 6 partitions, round-robin: not
//! partitioned by key) makes every process's windows need records the other processes read,
//! so the keyed exchange crosses processes through the repartition topic. Committed records are
//! identified by the sink's commit markers (see `tests/common/scaleout.rs`).

#[path = "common/kafka.rs"]
mod kafka_broker;
#[path = "common/scaleout.rs"]
mod scaleout;

use std::time::Duration;

use kafka_broker::Broker;
use scaleout::*;

#[test]
fn union_of_two_and_of_three_processes_equals_one() {
    let Some(broker) = Broker::start() else { return };
    let dir = TestDir::new("scaleout-union");
    produce_input(&broker, 0x5ca1_e007, 40_000, 300);
    let want = single_process_output(dir.path(), &broker);

    for processes in [2usize, 3] {
        let out = format!("out{processes}");
        broker.create_topic(&out, OUTPUT_PARTITIONS);
        let checkpoints = dir.path().join(format!("checkpoints-{out}"));
        let group = format!("weir-{out}");
        let mut running: Vec<Process> = (0..processes)
            .map(|i| start(dir.path(), &broker, &format!("{out}-p{i}"), 3, &out, &group, &checkpoints))
            .collect();
        wait_all(dir.path(), &mut running, Duration::from_secs(300));
        let (got, in_topic) = committed(&broker, &out);
        eprintln!(
            "{processes} processes: {} committed rows ({in_topic} records in the topic), want {}",
            got.len(),
            want.len()
        );
        // Every process ran a share of the slots.
        let mut all = Vec::new();
        for p in &running {
            let slots = slots_started(dir.path(), &p.name);
            eprintln!("  {} ran slots {slots:?}", p.name);
            assert!(!slots.is_empty(), "process {} ran no slot:\n{}", p.name, log(dir.path(), &p.name));
            all.extend(slots);
        }
        all.sort();
        all.dedup();
        assert_eq!(all, vec![0, 1, 2], "every slot ran somewhere");
        assert_rows(
            &broker,
            &out,
            &got,
            &want,
            &format!("{processes} processes: the union of their committed output"),
        );
    }
}
