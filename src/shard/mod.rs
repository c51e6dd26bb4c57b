//! Shards: one glommio executor per core, each running every segment of the job over its own
//! key groups.
//!
//! Lifecycle: [`runtime::execute`] builds the rings of every edge, then spawns one pinned
//! `LocalExecutor` per shard. On its shard, each segment of the job graph is instantiated by
//! its factory (with this shard's ring ends) and spawned as a local task; the shard ends when
//! all its segment tasks end. Segments talk to each other only through rings, so a shard has no
//! locks and no shared mutable state on the data path (single-threaded `Rc<RefCell<_>>` links an
//! operator to the async flusher of the same task).
//!
//! Invariants: a segment task drains every flusher (rings, sinks) after each input step before
//! taking the next input, which bounds in-flight data to one step per task; all waiting on a
//! full ring is counted as backpressure.

pub mod inflight;
pub mod metrics;
pub mod runtime;
pub mod segment;
pub mod wakeups;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use crate::checkpoint::runtime::{CheckpointControl, RestoreSet};
use crate::config::EngineConfig;
use crate::error::Result;
use crate::key::KeyGroups;
use crate::ring::ShardEnds;
use crate::time::Timestamp;
pub use metrics::{MetricsRegistry, OperatorMetrics};

/// The async half of an operator that does I/O: drains what the synchronous operator buffered.
pub trait Flusher {
    /// Open connections / files (once, at task start).
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>>;
    /// Write out everything buffered so far.
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>>;
    /// True if `flush` has work to do.
    fn has_pending(&self) -> bool;
    /// After end of input and the last flush: finish files, commit.
    fn close(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    /// Two-phase commit, phase one: the barrier of checkpoint `epoch` passed this operator and
    /// everything before it was flushed. Make that output durable but not yet visible, and
    /// return what `commit` (maybe in a restored process) needs to publish it: the
    /// *committable*, stored in the checkpoint. `None`: nothing to commit.
    fn pre_commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<Option<Vec<u8>>>> {
        let _ = epoch;
        Box::pin(async { Ok(None) })
    }
    /// Two-phase commit, phase two: checkpoint `epoch` is complete; publish everything
    /// pre-committed at epochs `<= epoch`. Must be idempotent.
    fn commit(&mut self, epoch: u64) -> LocalBoxFuture<'_, Result<()>> {
        let _ = epoch;
        Box::pin(async { Ok(()) })
    }
    /// Asynchronous snapshots: barrier `epoch` went through the chain and an operator began a
    /// snapshot part that this flusher completes in the background (a state store flushing
    /// the memtable sealed at the barrier) while records keep flowing. Called after every
    /// input step until it returns `true`, which it does once its part is durable and added
    /// to `snapshot`; the task's acknowledgement waits for that. Flushers without such parts
    /// return `true` at once.
    fn complete_snapshot<'a>(&'a mut self, epoch: u64, snapshot: &'a mut crate::checkpoint::runtime::TaskSnapshot) -> LocalBoxFuture<'a, Result<bool>> {
        let _ = (epoch, snapshot);
        Box::pin(async { Ok(true) })
    }
}

/// Run `connecting` while a 1 ms timer keeps this shard's reactor awake.
///
/// glommio 0.9's shared-channel `connect` records its own side and waits for the peer, but does
/// not wake the peer's reactor: a peer executor that is parked would never notice the
/// connection and both sides would wait forever. The ticking timer makes every reactor poll its
/// connection wakers until the handshake is done.
pub async fn keep_awake_while<F: std::future::Future>(connecting: F) -> F::Output {
    keep_awake_every(std::time::Duration::from_millis(1), connecting).await
}

/// Run `work` while a timer wakes this shard's reactor every `period`.
///
/// Guards against a lost wakeup in glommio 0.9's shared channels: a reactor going to sleep
/// publishes `should_notify` with a relaxed store and then re-checks its channels, while a
/// producer pushes and then reads `should_notify` with a relaxed compare-exchange. On x86 the
/// sleeper's load may pass its own store (store buffer), both sides miss each other, and the
/// consumer sleeps with data in its ring (seen as ~1 hung job in 150). Every reactor wake-up
/// re-checks all shared channels, so a periodic timer turns the hang into a delay of at most
/// one period. The runtime wraps every shard in this (`EngineConfig::wakeup_tick_ms`).
pub async fn keep_awake_every<F: std::future::Future>(period: std::time::Duration, work: F) -> F::Output {
    let ticker = async {
        loop {
            glommio::timer::sleep(period).await;
        }
    };
    let connecting = std::pin::pin!(work);
    let ticker = std::pin::pin!(ticker);
    match futures::future::select(connecting, ticker).await {
        futures::future::Either::Left((out, _)) => out,
        futures::future::Either::Right(((), _)) => unreachable!("the ticker never ends"),
    }
}

/// Processing-time deadlines registered by operators of one segment (shared with the task loop,
/// which wakes at the earliest one).
#[derive(Clone, Default)]
pub struct ProcessingTimers(Rc<RefCell<BinaryHeap<Reverse<Timestamp>>>>);

impl ProcessingTimers {
    pub fn register(&self, at_ms: Timestamp) {
        self.0.borrow_mut().push(Reverse(at_ms));
    }
    pub fn earliest(&self) -> Option<Timestamp> {
        self.0.borrow().peek().map(|r| r.0)
    }
    /// Remove every deadline `<= now_ms`; true if any was due.
    pub fn pop_due(&self, now_ms: Timestamp) -> bool {
        let mut heap = self.0.borrow_mut();
        let mut due = false;
        while heap.peek().is_some_and(|r| r.0 <= now_ms) {
            heap.pop();
            due = true;
        }
        due
    }
}

/// What a segment factory gets on its shard while it builds the segment's operators.
pub struct BuildCtx<'a> {
    pub shard: usize,
    pub shards: usize,
    pub groups: KeyGroups,
    pub config: &'a EngineConfig,
    pub registry: &'a Arc<MetricsRegistry>,
    pub(crate) edges: &'a mut Vec<ShardEnds>,
    pub(crate) flushers: Vec<Box<dyn Flusher>>,
    pub(crate) timers: ProcessingTimers,
    /// While a source's readers are built: the source operator's metrics (bad records etc.).
    pub(crate) source_metrics: Option<Arc<OperatorMetrics>>,
    /// Edges whose receiving ends this segment took (registered as read by the segment's head).
    pub(crate) reading_edges: Vec<usize>,
    /// Index of the segment being built in the job graph.
    pub(crate) segment: usize,
    /// The running job's checkpoint control (`None`: checkpointing off).
    pub(crate) checkpoint: Option<Arc<CheckpointControl>>,
    /// Flushers of two-phase-commit sinks: (index in `flushers`, sink operator name).
    pub(crate) committers: Vec<(usize, String)>,
    /// Identifies the job attempt being built (unique in the process): shards that build
    /// parts of one thing (a file read in order on one shard and parsed ahead on the others)
    /// meet by it.
    pub attempt: u64,
}

impl BuildCtx<'_> {
    /// Register the async half of an operator of the segment being built.
    pub fn add_flusher(&mut self, flusher: Box<dyn Flusher>) {
        self.flushers.push(flusher);
    }

    /// Register the flusher of a two-phase-commit sink named `operator`: its `pre_commit` runs
    /// at every checkpoint barrier (the committable is stored under `operator`) and `commit`
    /// once the checkpoint is complete.
    pub fn add_committing_flusher(&mut self, operator: &str, flusher: Box<dyn Flusher>) {
        self.committers.push((self.flushers.len(), operator.to_string()));
        self.flushers.push(flusher);
    }

    /// True when the job runs with checkpoints (sinks then hold output until commit).
    pub fn checkpointing(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// What the job restores from, if it restores.
    pub fn restore(&self) -> Option<&RestoreSet> {
        self.checkpoint.as_ref().and_then(|c| c.restore.as_ref())
    }

    /// The committables sink `operator` must resolve on this shard after a restore (commit them
    /// idempotently at connect; abort anything else it left behind).
    pub fn restored_committables(&self, operator: &str) -> Vec<Vec<u8>> {
        self.restore()
            .map(|r| r.committables_for(operator, self.shard, self.shards))
            .unwrap_or_default()
    }

    /// Metrics of an operator on this shard.
    pub fn operator_metrics(&self, name: &str) -> Arc<OperatorMetrics> {
        self.registry.operator(name, self.shard)
    }

    /// The metrics of the source whose split readers are being built (`None` elsewhere).
    pub fn source_metrics(&self) -> Option<Arc<OperatorMetrics>> {
        self.source_metrics.clone()
    }

    pub fn timers(&self) -> ProcessingTimers {
        self.timers.clone()
    }

    pub(crate) fn take_sender_ends(&mut self, edge: usize) -> ShardEnds {
        let e = &mut self.edges[edge];
        ShardEnds {
            senders: e.senders.take(),
            receivers: None,
            stats: e.stats.clone(),
        }
    }

    pub(crate) fn take_receiver_ends(&mut self, edge: usize) -> ShardEnds {
        self.reading_edges.push(edge);
        let e = &mut self.edges[edge];
        ShardEnds {
            senders: None,
            receivers: e.receivers.take(),
            stats: Vec::new(),
        }
    }
}
