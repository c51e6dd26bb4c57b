//! Kafka clients for the source and the sink: `rdkafka` (librdkafka, bundled, no tokio) used
//! without its async layer, so nothing of it runs on a shard's executor but non-blocking calls.
//!
//! - **Polling, not futures.** Consumers are read through per-partition queues polled with a
//!   zero timeout; producers enqueue with `send` (never blocks) and deliver reports when polled.
//!   A shard never waits inside librdkafka: it polls, and when nothing is there it yields to
//!   glommio (the split reports `Idle`, the sink sleeps on a glommio timer).
//! - **Blocking calls off the shard.** The few librdkafka calls that block (metadata, committed
//!   offsets, `init_transactions`, `commit_transaction`, ...) run on the driver while a job is
//!   planned, or on a shard through [`blocking`] (glommio's blocking thread pool, awaited).
//! - **librdkafka's threads off the shard cores.** A new thread inherits the CPU affinity of the
//!   thread that creates it, and librdkafka starts its own threads (`rdk:main`, `rdk:broker*`)
//!   when a client is created. A shard thread is pinned to its core, so a client created there
//!   would put librdkafka's network threads on that core. [`create_off_shard_cores`] creates
//!   clients on a short-lived helper thread whose affinity is first set to the process's CPUs
//!   minus the pinned shard cores ([`client_cpus`]); the helper's affinity is what librdkafka's
//!   threads inherit. When the shards are pinned to every CPU (no spare core) the helper gets all
//!   of the process's CPUs: librdkafka's threads then float instead of sharing one pinned core.
//!   `tests/kafka_client_threads.rs` checks the affinity of the `rdk:` threads.
//!
//! Invariant: every client weir creates goes through [`create_off_shard_cores`].

use std::collections::BTreeMap;

use std::sync::OnceLock;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

use crate::config::EngineConfig;
use crate::error::{Result, WeirError};

/// How to reach the cluster, plus any librdkafka property (`properties.*` in Flink SQL).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KafkaConnection {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub bootstrap_servers: String,
    /// Extra librdkafka properties; they override weir's defaults.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConnection {
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            properties: BTreeMap::new(),
        }
    }

    /// A client configuration with `defaults` under the user's properties.
    pub(crate) fn client_config(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap_servers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// An rdkafka error with what weir was doing.
pub(crate) fn kafka_error(what: &str, e: impl std::fmt::Display) -> WeirError {
    WeirError::Other(format!("kafka: {what}: {e}"))
}

/// The CPUs this process may run on (the main thread's affinity, which glommio never changes).
fn process_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(libc::getpid(), std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// The CPUs librdkafka's threads may use: the process's CPUs minus the cores shards are pinned
/// to; all of the process's CPUs if that leaves none (or shards are not pinned).
pub fn client_cpus(config: &EngineConfig) -> Vec<usize> {
    let all = process_cpus();
    if !config.pin_cores {
        return all;
    }
    let online = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pinned: Vec<usize> = (0..config.shard_count()).map(|s| s % online).collect();
    let spare: Vec<usize> = all.iter().copied().filter(|c| !pinned.contains(c)).collect();
    if spare.is_empty() {
        all
    } else {
        spare
    }
}

/// Set the calling thread's affinity to `cpus` (no-op for an empty list).
fn set_thread_affinity(cpus: &[usize]) -> std::io::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: as above; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Run `create` (which creates an rdkafka client) on a helper thread whose affinity is `cpus`,
/// so librdkafka's threads inherit `cpus` and not the caller's pinned core. Blocks the caller
/// for the client's creation only (no network round trip: librdkafka connects in the background).
pub fn create_off_shard_cores<T: Send + 'static>(cpus: Vec<usize>, create: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    std::thread::Builder::new()
        .name("weir-kafka-create".into())
        .spawn(move || {
            set_thread_affinity(&cpus).map_err(|e| WeirError::Other(format!("kafka: setting the affinity of librdkafka's threads to {cpus:?}: {e}")))?;
            create()
        })
        .map_err(|e| WeirError::Other(format!("kafka: starting the client-creation thread: {e}")))?
        .join()
        .map_err(|_| WeirError::Other("kafka: the client-creation thread panicked".into()))?
}

/// Run a blocking librdkafka call on glommio's blocking thread pool and await it (shards only).
pub async fn blocking<R: Send + 'static>(call: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(call).await
}

/// A producer context that keeps the first delivery failure (reports are served by `poll` on
/// the polling thread, the shard's; the first failure fails the job at its next flush).
#[derive(Default)]
pub struct DeliveryErrors {
    first: OnceLock<String>,
}

impl DeliveryErrors {
    /// The first delivery failure, if any.
    pub fn first(&self) -> Option<&str> {
        self.first.get().map(String::as_str)
    }
}

impl ClientContext for DeliveryErrors {}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, m)) = result {
            use rdkafka::Message;
            let _ = self.first.set(format!("delivery to {}[{}] failed: {e}", m.topic(), m.partition()));
        }
    }
}
