//! Scale-out past one machine through a Kafka consumer group: `N` weir processes started with
//! the same job and the same `properties.group.id` share the job's Kafka partitions; when one
//! dies or joins, the group rebalances, the work moves, and the state moves with it.
//!
//! **Slots.** A scaled-out job is divided into `S` *slots* (`weir.scale-out.slots`, fixed for
//! the life of the job). Slot `i` owns split `j` of every Kafka source when `j % S == i` (splits
//! are partitions in (topic, partition) order) and partition `q` of every repartition topic when
//! `q % S == i`. A slot is a complete, independently checkpointed job instance: its own
//! checkpoint directory (`<checkpoint dir>/slot-<i>/<stage>`, on a filesystem every process
//! sees), its own stable transactional ids (`<prefix>-slot<i>-<shard>`) and transaction logs
//! (inside its checkpoint directory). So *moving work* is exactly weir's crash recovery: the new
//! owner restores the slot's latest complete checkpoint (state, source offsets, pending
//! output), `init_transactions` with the slot's ids fences whatever the old owner left, and the
//! pending epochs are committed once (see [`crate::sink::kafka`]).
//!
//! **Who owns a slot: Kafka's group protocol** ([`membership`]). Each process (a *supervisor*)
//! subscribes with the job's group id to the internal topic `<job>-slots`, which has one
//! partition per slot; the group coordinator assigns those partitions (cooperative-sticky), and
//! rdkafka's rebalance callbacks start and stop the slots' job processes. A revoked slot's
//! processes are killed (and reaped) *inside* the revoke callback, before the supervisor rejoins,
//! so the group hands the slot on only after its old owner stopped. Why slots rather than
//! subscribing to the input topic itself: weir's unit of consistency is a checkpoint of a job
//! instance, with transactional ids per instance; with a fixed partition → slot map, a
//! rebalance moves whole checkpoints and never has to split or merge one, and the zombie
//! fencing of the exactly-once sink keeps working unchanged. The price: parallelism across
//! processes is at most `S`, and `S` is fixed when the job starts (like Flink's max
//! parallelism); more processes than slots stand by.
//!
//! **Keyed exchange across processes: a repartition topic** ([`repartition`]), as Kafka
//! Streams does. A keyed operator's input is written, keyed by key group, to the internal topic
//! `<job>-<operator>-repartition` (created through the admin API with
//! `weir.scale-out.repartition-partitions` partitions, default 4 per slot; partition `q` holds
//! the contiguous key-group range `q` of that many, Flink's range formula) with the
//! checkpoint-tied Kafka transactions of the exactly-once sink; the keyed operator reads the
//! repartition partitions its slot owns, so each slot's keyed state is exactly the key groups of
//! its repartition partitions, and that state moves with the slot.
//!
//! **Stages.** A job with a repartition topic runs as two stages per slot, in two processes:
//! [`Stage::Exchange`] (the slot's input partitions → everything before the keyed operator →
//! the repartition topic) and [`Stage::Keyed`] (the slot's repartition partitions → the keyed
//! operator → the job's sinks). Two processes, because a bounded job commits its last output
//! only at its final checkpoint: in one job, the keyed part would wait for the end of the
//! repartition topic, which the same job would publish only after the keyed part ended.
//!
//! Invariants: a slot runs in at most one live process per stage (the group protocol plus
//! killing on revoke; a paused process that lost its membership is fenced by the transactional
//! ids); every record of the input reaches exactly one slot's exchange stage; every key group is
//! read by exactly one slot's keyed stage.

pub mod membership;
pub mod repartition;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::EngineConfig;

/// The half of a scaled-out job a process runs (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Input partitions → repartition topics (and every part of the job without a keyed
    /// exchange).
    Exchange,
    /// Repartition partitions → keyed operators → sinks.
    Keyed,
}

impl Stage {
    pub const ALL: [Stage; 2] = [Stage::Exchange, Stage::Keyed];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Exchange => "exchange",
            Stage::Keyed => "keyed",
        }
    }

    pub fn parse(text: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == text)
    }
}

/// What one process of a scaled-out job runs: one stage of one slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub slot: usize,
    pub stage: Stage,
}

/// A scaled-out job's consumer group and the cluster it lives on (the job's Kafka tables'
/// `properties.bootstrap.servers`, `properties.group.id` and other `properties.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTarget {
    pub connection: crate::source::kafka::KafkaConnection,
    pub group: String,
}

/// The role of this process, when it runs one slot of a scaled-out job.
pub fn role(config: &EngineConfig) -> Option<(Role, usize)> {
    match config.scale_out_role {
        Some(r) if config.scale_out_slots > 0 => Some((r, config.scale_out_slots)),
        _ => None,
    }
}

/// Does slot `slot` of `slots` own split (or repartition partition) `index`?
pub fn owns(index: usize, slot: usize, slots: usize) -> bool {
    index % slots == slot
}

/// The folder of one stage of one slot under a scaled-out job's checkpoint root.
pub fn stage_dir(root: &Path, slot: usize, stage: Stage) -> PathBuf {
    root.join(format!("slot-{slot}")).join(stage.name())
}

/// The transactional-id prefix of an exactly-once sink in this process: `<prefix>-slot<i>`
/// when it runs a slot (so each slot fences only its own zombies), else `prefix`.
pub fn slot_prefix(prefix: String, config: &EngineConfig) -> String {
    match role(config) {
        Some((r, _)) => format!("{prefix}-slot{}-{}", r.slot, r.stage.name()),
        None => prefix,
    }
}

/// Where an exactly-once sink keeps its transaction logs in this process: inside the slot's
/// checkpoint folder when it runs a slot (every process must see them: a new owner of the slot
/// publishes what the old one pre-committed), else `dir`.
pub fn slot_transaction_dir(dir: PathBuf, config: &EngineConfig) -> PathBuf {
    match (role(config), &config.checkpoint_dir) {
        (Some(_), Some(chk)) => chk.join("transactions"),
        _ => dir,
    }
}

/// A name made safe for a Kafka topic: letters, digits, `.`, `_`, `-`; others become `-`.
pub fn topic_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect()
}

/// The internal topic whose partitions stand for the slots of `job`.
pub fn slots_topic(job: &str) -> String {
    format!("{}-slots", topic_safe(job))
}

/// The repartition topic in front of keyed operator `operator` of `job`.
pub fn repartition_topic(job: &str, operator: &str) -> String {
    format!("{}-{}-repartition", topic_safe(job), topic_safe(operator))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ownership() {
        assert_eq!(repartition_topic("job", "window:tumble#5"), "job-window-tumble-5-repartition");
        assert_eq!(slots_topic("my job"), "my-job-slots");
        let owned: Vec<usize> = (0..7).filter(|&j| owns(j, 1, 3)).collect();
        assert_eq!(owned, vec![1, 4]);
        assert_eq!(Stage::parse("keyed"), Some(Stage::Keyed));
        assert_eq!(stage_dir(Path::new("/c"), 2, Stage::Exchange), PathBuf::from("/c/slot-2/exchange"));
    }
}
