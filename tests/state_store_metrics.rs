//! The LSM state store's figures reach the control plane: a keyed process function counting
//! per key on the LSM backend (with a state folder, so the store checkpoints) runs with
//! checkpoints and a cache far smaller than its state, and the job's registry — what `/metrics` and `/api/status` read — then holds
//! one store per shard with the memtable, segment, WAL and cache figures the store published,
//! and the exposition carries them labelled by operator and shard.

use std::sync::Arc;

use weir::prelude::*;
use weir::shard::MetricsRegistry;
use weir::state::StateBackendKind;

#[derive(Clone, Default)]
struct Count {
    count: Option<ValueState<u64, i64>>,
}

impl KeyedProcessFunction<u64, (u64, i64)> for Count {
    type Out = (u64, i64);
    fn open(&mut self, state: &StateContext<u64>) {
        self.count = Some(state.value("count", None));
    }
    fn process(&mut self, key: &u64, _e: (u64, i64), ctx: &mut ProcessContext<'_, u64, (u64, i64)>) {
        let c = self.count.as_mut().expect("opened").update_with(
            key,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        ctx.emit((*key, c));
    }
}

#[test]
fn lsm_store_figures_are_published_per_operator_and_shard() {
    let state = tempfile::tempdir().expect("state dir");
    let checkpoints = tempfile::tempdir().expect("checkpoint dir");
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        state_backend: StateBackendKind::Lsm,
        state_dir: Some(state.path().to_path_buf()),
        // A cache far smaller than the state: values are evicted into the store.
        state_cache_bytes: 4096,
        checkpoint_interval_ms: 50,
        checkpoint_dir: Some(checkpoints.path().to_path_buf()),
        ..Default::default()
    });
    let events: Vec<(u64, i64)> = (0..200_000u64).map(|i| (i % 5_000, i as i64)).collect();
    env.from_collection(events)
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(0), |e: &(u64, i64)| e.1)
        .key_by(|e: &(u64, i64)| e.0)
        .process(Count::default())
        .sink(BlackholeSink);
    let registry = Arc::new(MetricsRegistry::default());
    let graph = env.graph();
    weir::shard::runtime::execute_with_registry(graph.clone(), env.config(), registry.clone()).expect("job");

    let stores = registry.store_snapshots();
    assert_eq!(stores.len(), 2, "one store per shard: {stores:?}");
    for s in &stores {
        assert!(s.operator.starts_with("process"), "{s:?}");
        // Evicted values went to the store; the figures were published at the latest at close.
        assert!(s.memtable_bytes + s.segment_bytes > 0, "state in the store: {s:?}");
        assert!(s.wal_bytes > 0 || s.segments > 0, "durable state: {s:?}");
        assert!(s.cache_bytes <= 8192, "the cache keeps to its budget: {s:?}");
    }
    let mut shards: Vec<usize> = stores.iter().map(|s| s.shard).collect();
    shards.sort_unstable();
    assert_eq!(shards, [0, 1]);

    // The same figures in the Prometheus exposition of the job.
    let job = weir::control::JobHandle::new("lsm-metrics", &graph, 2, registry);
    let server = weir::control::ControlServer::start("127.0.0.1:0", job, weir::control::ControlConfig::default()).expect("server");
    let (code, text) = weir::control::http_get(server.local_addr(), "/metrics", None, std::time::Duration::from_secs(5)).expect("GET");
    assert_eq!(code, 200);
    for metric in [
        "weir_state_memtable_bytes",
        "weir_state_segments",
        "weir_state_wal_bytes",
        "weir_state_compaction_debt_bytes",
    ] {
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(&format!("{metric}{{"))).collect();
        assert_eq!(rows.len(), 2, "{metric}: {rows:?}");
        assert!(rows.iter().all(|r| r.contains("operator=\"process") && r.contains("shard=\"")), "{rows:?}");
    }
}
