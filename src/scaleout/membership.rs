//! The scale-out supervisor: a weir process's membership in the job's consumer group and the
//! slot processes it runs (see the [module docs](super) for the design).
//!
//! The supervisor subscribes to `<job>-slots` (one partition per slot, created if missing)
//! with the job's `group.id`, under librdkafka's `cooperative-sticky` assignor, and polls it
//! on its own thread. The group coordinator's assignment is the set of slots this process
//! owns; for each owned slot it runs one child process per [`Stage`] (the same `weir`
//! command, told its slot and stage through the environment, see [`ROLE_ENV`]), each restoring
//! the newest complete checkpoint of its stage folder. Children die with the supervisor
//! (`PR_SET_PDEATHSIG`), so a killed supervisor leaves no orphan writing on behalf of a slot the
//! group will hand to someone else.
//!
//! - **Revoke** (inside rdkafka's rebalance callback, before this member rejoins): the
//!   revoked slots' children are killed and reaped. A kill is weir's crash: the next owner
//!   restores the last complete checkpoint and commits what it pre-committed.
//! - **Assign**: the main loop starts the children of newly owned slots.
//! - A child that exits 0 finished its stage (bounded input, final checkpoint committed): a
//!   `DONE` file is written in its stage folder and it is not started again. A child that
//!   fails is started again (from its latest checkpoint), at most `max_restarts` times per
//!   stage of a slot; then the supervisor fails (and leaves the group, which moves its slots).
//! - The supervisor ends when every stage of every slot has its `DONE` file (a bounded job is
//!   finished everywhere); it then leaves the group.
//!
//! Invariants: the children of a slot are never running while the slot is not in this
//! member's assignment (killed before the revocation is acknowledged); every wait polls with a
//! deadline or for the group's events.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::ClientContext;

use super::repartition::{ensure_topic, RepartitionOptions};
use super::{slots_topic, stage_dir, Stage};
use crate::error::{Result, WeirError};
use crate::source::kafka::client::{self, kafka_error, KafkaConnection};

/// The environment variable that tells a child which slot and stage it runs: `<slot>:<stage>`.
pub const ROLE_ENV: &str = "WEIR_SCALE_OUT_ROLE";

/// Parse [`ROLE_ENV`]'s value.
pub fn parse_role(value: &str) -> Option<super::Role> {
    let (slot, stage) = value.split_once(':')?;
    Some(super::Role {
        slot: slot.parse().ok()?,
        stage: Stage::parse(stage)?,
    })
}

/// What a supervisor needs.
pub struct SupervisorConfig {
    /// The cluster, with the job's `properties.*` (e.g. `session.timeout.ms`).
    pub connection: KafkaConnection,
    /// The job's consumer group (`properties.group.id`).
    pub group: String,
    /// The job's name (internal topics are named after it).
    pub job: String,
    pub slots: usize,
    /// The job's checkpoint root (shared by every process): slot `i`'s stage `s` checkpoints
    /// into `<root>/slot-<i>/<s>`.
    pub checkpoint_root: PathBuf,
    /// The command of a child; the supervisor adds [`ROLE_ENV`].
    pub child: Arc<dyn Fn(super::Role) -> Command + Send + Sync>,
    /// Restarts of one stage of one slot before the supervisor gives up.
    pub max_restarts: u32,
}

/// The children of the owned slots, shared by the main loop and the rebalance callback.
#[derive(Default)]
struct Slots {
    owned: BTreeSet<usize>,
    running: BTreeMap<(usize, Stage), Child>,
    /// Failures per (slot, stage) in this process.
    failures: BTreeMap<(usize, Stage), u32>,
    /// How often the group moved a slot here or away (for the log).
    rebalances: u64,
}

impl Slots {
    fn stop_slot(&mut self, slot: usize) {
        for stage in Stage::ALL {
            if let Some(mut child) = self.running.remove(&(slot, stage)) {
                let _ = child.kill(); // SIGKILL: the slot's next owner recovers it as after a crash
                let _ = child.wait();
                eprintln!("weir scale-out: slot {slot} {} stopped (pid {})", stage.name(), child.id());
            }
        }
    }
}

/// rdkafka context: applies revocations before the member rejoins.
struct MembershipContext {
    slots: Arc<Mutex<Slots>>,
}

impl ClientContext for MembershipContext {}

impl ConsumerContext for MembershipContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut slots = self.slots.lock().expect("slots");
            slots.rebalances += 1;
            for e in tpl.elements() {
                let slot = e.partition() as usize;
                slots.owned.remove(&slot);
                slots.stop_slot(slot);
                eprintln!("weir scale-out: slot {slot} revoked");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut slots = self.slots.lock().expect("slots");
            slots.rebalances += 1;
            for e in tpl.elements() {
                let slot = e.partition() as usize;
                if slots.owned.insert(slot) {
                    eprintln!("weir scale-out: slot {slot} assigned");
                }
            }
        }
    }
}

fn done_file(root: &std::path::Path, slot: usize, stage: Stage) -> PathBuf {
    stage_dir(root, slot, stage).join("DONE")
}

/// Join the group and run the owned slots until every slot's every stage is done (see the
/// module docs). Blocks the calling thread.
pub fn run_supervisor(config: SupervisorConfig) -> Result<()> {
    if config.slots == 0 {
        return Err(WeirError::Config("scale-out: weir.scale-out.slots must be at least 1".into()));
    }
    let topic = slots_topic(&config.job);
    ensure_topic(&RepartitionOptions {
        connection: config.connection.clone(),
        topic: topic.clone(),
        partitions: config.slots as u32,
        transaction_timeout_ms: 60_000,
    })
    .map_err(|e| WeirError::Other(format!("scale-out: the slots topic: {e}")))?;
    let shared = Arc::new(Mutex::new(Slots::default()));
    let mut client_config = config.connection.client_config(&[
        ("partition.assignment.strategy", "cooperative-sticky"),
        ("enable.auto.commit", "false"),
        ("auto.offset.reset", "earliest"),
    ]);
    client_config.set("group.id", &config.group);
    let context = MembershipContext { slots: shared.clone() };
    let consumer: BaseConsumer<MembershipContext> = client::create_off_shard_cores(Vec::new(), move || {
        client_config
            .create_with_context(context)
            .map_err(|e| kafka_error("creating the group member", e))
    })?;
    consumer.subscribe(&[&topic]).map_err(|e| kafka_error(&format!("subscribing to {topic}"), e))?;
    eprintln!(
        "weir scale-out: joining group `{}` for job {} ({} slots, checkpoints in {})",
        config.group,
        config.job,
        config.slots,
        config.checkpoint_root.display()
    );
    let result = supervise(&config, &consumer, &shared);
    // Stop every child, then leave the group (its slots move to the others).
    {
        let mut slots = shared.lock().expect("slots");
        let owned: Vec<usize> = slots.owned.iter().copied().collect();
        for slot in owned {
            slots.stop_slot(slot);
        }
    }
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !shared.lock().expect("slots").owned.is_empty() {
        let _ = consumer.poll(Duration::from_millis(50));
    }
    result
}

fn supervise(config: &SupervisorConfig, consumer: &BaseConsumer<MembershipContext>, shared: &Arc<Mutex<Slots>>) -> Result<()> {
    loop {
        // Serves the group's events; revocations stop children inside this call.
        match consumer.poll(Duration::from_millis(100)) {
            Some(Err(e)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) => {
                return Err(kafka_error("group membership", e));
            }
            _ => {}
        }
        let all_done = (0..config.slots).all(|s| Stage::ALL.iter().all(|&st| done_file(&config.checkpoint_root, s, st).exists()));
        if all_done {
            eprintln!("weir scale-out: every slot of job {} is finished", config.job);
            return Ok(());
        }
        let mut slots = shared.lock().expect("slots");
        // Reap exited children.
        let running: Vec<(usize, Stage)> = slots.running.keys().copied().collect();
        for key in running {
            let status = slots.running.get_mut(&key).expect("running").try_wait();
            let status = match status {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => return Err(WeirError::Other(format!("scale-out: waiting for slot {} {}: {e}", key.0, key.1.name()))),
            };
            slots.running.remove(&key);
            let (slot, stage) = key;
            if status.success() {
                let done = done_file(&config.checkpoint_root, slot, stage);
                std::fs::write(&done, b"").map_err(|e| WeirError::io("marking a slot's stage done", &done, e))?;
                eprintln!("weir scale-out: slot {slot} {} finished", stage.name());
            } else {
                let failures = slots.failures.entry(key).or_insert(0);
                *failures += 1;
                eprintln!("weir scale-out: slot {slot} {} failed ({status}), failure {failures}", stage.name());
                if *failures > config.max_restarts {
                    return Err(WeirError::Other(format!(
                        "scale-out: slot {slot} {} failed {} times; giving up",
                        stage.name(),
                        *failures
                    )));
                }
            }
        }
        // Start the stages of owned slots that are neither running nor done.
        let owned: Vec<usize> = slots.owned.iter().copied().collect();
        for slot in owned {
            for stage in Stage::ALL {
                if slots.running.contains_key(&(slot, stage)) || done_file(&config.checkpoint_root, slot, stage).exists() {
                    continue;
                }
                let dir = stage_dir(&config.checkpoint_root, slot, stage);
                std::fs::create_dir_all(&dir).map_err(|e| WeirError::io("creating a slot's checkpoint folder", &dir, e))?;
                let role = super::Role { slot, stage };
                let mut command = (config.child)(role);
                command.env(ROLE_ENV, format!("{slot}:{}", stage.name()));
                die_with_parent(&mut command);
                let child = command
                    .spawn()
                    .map_err(|e| WeirError::Other(format!("scale-out: starting slot {slot} {}: {e}", stage.name())))?;
                eprintln!("weir scale-out: slot {slot} {} started (pid {})", stage.name(), child.id());
                slots.running.insert((slot, stage), child);
            }
        }
    }
}

/// The child gets SIGKILL when the supervisor's thread that started it ends (the supervisor
/// runs on the process's main thread, so: when the supervisor process dies).
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor died before the line above: do not run orphaned.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the scale-out supervisor is gone"));
            }
            Ok(())
        });
    }
}
