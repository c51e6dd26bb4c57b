//! Backend equivalence and snapshot tests: seeded random operations on every state type give
//! the same answers on the memory backend and on the LSM backend (large cache, and a cache so
//! small that most reads go to the store); snapshots restore into identical state on any
//! backend and any shard count; the LSM store's native checkpoint restores.

use std::collections::BTreeMap;

use super::*;
use crate::checkpoint::snapshot::KeyedRestore;
use crate::key::KeyGroups;
use crate::operator::aggregate::Count;
use crate::shard::Flusher;
use crate::testing::{run_local, StateHarness};

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Every state type, with and without TTL.
struct States {
    name: ValueState<u64, String>,
    total: ValueState<u64, u64>,
    recent: ListState<u64, u32>,
    buckets: MapState<u64, u32, Vec<u8>>,
    count: AggregatingState<u64, u64, Count>,
}

impl States {
    fn open(ctx: &StateContext<u64>) -> Self {
        States {
            name: ctx.value("name", Some(StateTtl::new(500, TtlUpdate::OnCreateAndWrite))),
            total: ctx.value("total", None),
            recent: ctx.list("recent", Some(StateTtl::new(300, TtlUpdate::OnReadAndWrite))),
            buckets: ctx.map("buckets", Some(StateTtl::new(400, TtlUpdate::OnCreateAndWrite))),
            count: ctx.aggregating("count", Count, Some(StateTtl::new(700, TtlUpdate::OnReadAndWrite))),
        }
    }

    /// Everything visible for `key` (reads renew `OnReadAndWrite` entries, on every backend alike).
    fn dump(&mut self, key: u64) -> String {
        let mut map = Vec::new();
        self.buckets.for_each(&key, |uk, v| map.push((*uk, v.clone())));
        map.sort();
        format!(
            "{key}: {:?} {:?} {:?} {map:?} {:?}",
            self.name.value(&key),
            self.total.value(&key),
            self.recent.get(&key).collect::<Vec<_>>(),
            self.count.get(&key)
        )
    }
}

/// One random operation; returns what it observed.
fn step(s: &mut States, clock: &StateClock, rng: &mut Rng, keys: u64) -> String {
    let k = rng.below(keys);
    let uk = rng.below(12) as u32;
    match rng.below(20) {
        0 => {
            s.name.update(&k, format!("n{}", rng.below(1000)));
            String::new()
        }
        1 => {
            let c = (b'a' + rng.below(26) as u8) as char;
            s.name.update_with(&k, String::new, |n| {
                n.push(c);
                n.len().to_string()
            })
        }
        2 => format!("{:?}", s.name.value(&k)),
        3 => format!("{:?}", s.name.clear(&k)),
        4 => {
            let d = rng.below(10);
            s.total.update_with(
                &k,
                || 0,
                |t| {
                    *t += d;
                    *t
                },
            );
            format!("{:?}", s.total.value(&k))
        }
        5 => format!("{:?}", s.total.clear(&k)),
        6 | 7 => {
            s.recent.add(&k, rng.below(100) as u32);
            String::new()
        }
        8 => format!("{:?}", s.recent.get(&k).collect::<Vec<_>>()),
        9 => {
            let n = rng.below(4) as u32;
            s.recent.update(&k, (0..n).collect());
            String::new()
        }
        10 => {
            s.recent.clear(&k);
            String::new()
        }
        11 | 12 => {
            s.buckets.put(&k, uk, vec![uk as u8; rng.below(20) as usize]);
            String::new()
        }
        13 => {
            let got = format!("{:?}", s.buckets.get(&k, &uk));
            format!("{got} {}", s.buckets.contains(&k, &(uk + 1)))
        }
        14 => format!("{:?}", s.buckets.remove(&k, &uk)),
        15 => {
            if rng.below(8) == 0 {
                s.buckets.clear(&k);
            }
            s.dump(k)
        }
        16 => {
            s.count.add(&k, &k);
            String::new()
        }
        17 => format!("{:?}", s.count.get(&k)),
        18 => {
            s.count.clear(&k);
            String::new()
        }
        _ => {
            clock.set(clock.now() + rng.below(40) as i64);
            format!("total entries {}", s.total.entries())
        }
    }
}

/// Run `ops` seeded operations; returns the observations and (LSM) the backend figures.
fn run_ops(kind: StateBackendKind, cache: usize, seed: u64, ops: usize, keys: u64) -> (Vec<String>, Option<LsmStats>) {
    run_local(async move {
        let mut h = StateHarness::<u64>::new(kind, cache, 1_000);
        let mut s = States::open(&h.ctx);
        h.connect().await;
        let mut rng = Rng(seed);
        let mut log = Vec::with_capacity(ops + keys as usize);
        for i in 0..ops {
            log.push(step(&mut s, &h.clock, &mut rng, keys));
            if i % 97 == 0 {
                h.pump().await;
            }
        }
        for k in 0..keys {
            log.push(s.dump(k));
        }
        (log, h.lsm_stats())
    })
}

#[test]
fn random_operations_agree_on_every_backend() {
    for seed in [1u64, 2, 3] {
        let (reference, _) = run_ops(StateBackendKind::Memory, 0, seed, 6_000, 150);
        let (large, stats) = run_ops(StateBackendKind::Lsm, 64 << 20, seed, 6_000, 150);
        assert_eq!(stats.expect("lsm").evictions, 0, "a large cache never evicts");
        first_difference(&reference, &large, "lsm, large cache", seed);
        let (tiny, stats) = run_ops(StateBackendKind::Lsm, 4096, seed, 6_000, 150);
        let stats = stats.expect("lsm");
        assert!(
            stats.evictions > 1_000 && stats.cache_misses > 1_000,
            "the tiny cache evicts and misses: {stats:?}"
        );
        assert!(stats.cache_bytes < 4096 + 4096, "the cache stays near its budget: {stats:?}");
        assert!(stats.store_segment_bytes > 0, "memtables were flushed to segments: {stats:?}");
        first_difference(&reference, &tiny, "lsm, tiny cache", seed);
    }
}

fn first_difference(reference: &[String], other: &[String], what: &str, seed: u64) {
    assert_eq!(reference.len(), other.len());
    if let Some(i) = (0..reference.len()).find(|&i| reference[i] != other[i]) {
        panic!("seed {seed}, {what}: observation {i} differs\n memory: {}\n {what}: {}", reference[i], other[i]);
    }
}

/// Entries written under `kind` on `shards` shards (each key on the shard owning its key
/// group), snapshotted; then restored on `to_shards` shards of backend `to_kind`: every key
/// reads back the same, and TTL expiries carried over.
fn snapshot_round_trip(kind: StateBackendKind, shards: u32, to_kind: StateBackendKind, to_shards: u32) {
    const KEYS: u64 = 200;
    const GROUPS: u32 = 64;
    let (expected, sections) = run_local(async move {
        let mut expected = BTreeMap::new();
        let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
        for shard in 0..shards {
            let groups = KeyGroups::new(GROUPS, shards);
            let mut h = StateHarness::<u64>::with_groups(kind, 4096, 1_000, groups, None);
            let mut s = States::open(&h.ctx);
            h.connect().await;
            let mut rng = Rng(7 + shard as u64);
            let mine = |k: &u64| groups.shard_of_hash(k.stable_hash()) == shard;
            for _ in 0..3_000 {
                let k = rng.below(KEYS);
                if !mine(&k) {
                    continue;
                }
                match rng.below(5) {
                    0 => s.name.update(&k, format!("n{k}")),
                    1 => s.total.update(&k, k * 3),
                    2 => s.recent.add(&k, rng.below(50) as u32),
                    3 => s.buckets.put(&k, rng.below(6) as u32, vec![k as u8]),
                    _ => s.count.add(&k, &k),
                }
            }
            h.pump().await;
            let mut snap = KeyedSnapshot::default();
            h.ctx.snapshot(&mut snap).unwrap();
            assert!(snap.groups.keys().all(|g| groups.shard_of_group(*g) == shard), "only own key groups");
            // The snapshot does not change what is visible.
            for k in (0..KEYS).filter(mine) {
                expected.insert(k, s.dump(k));
            }
            sections.extend(snap.groups);
        }
        (expected, sections)
    });
    let restored = run_local(async move {
        let mut restored = BTreeMap::new();
        for shard in 0..to_shards {
            let groups = KeyGroups::new(GROUPS, to_shards);
            let mut h = StateHarness::<u64>::with_groups(to_kind, 4096, 1_000, groups, None);
            let mut s = States::open(&h.ctx);
            let restore = KeyedRestore::new(
                "process",
                sections.iter().filter(|(g, _)| groups.shard_of_group(*g) == shard).cloned().collect(),
            );
            h.ctx.restore(&restore).unwrap();
            h.connect().await;
            for k in (0..KEYS).filter(|k| groups.shard_of_hash(k.stable_hash()) == shard) {
                restored.insert(k, s.dump(k));
            }
            // Expiries carried over: at 1_000 + 700 every TTL'd entry written before 1_000 expired
            // (the untimed `total` stays).
            h.clock.set(1_700);
            for k in (0..KEYS).filter(|k| groups.shard_of_hash(k.stable_hash()) == shard) {
                let left = s.dump(k);
                let total = format!("{:?}", s.total.value(&k));
                assert_eq!(left, format!("{k}: None {total} [] [] None"), "{k} after expiry");
            }
        }
        restored
    });
    assert_eq!(expected, restored, "{kind:?} x{shards} -> {to_kind:?} x{to_shards}");
}

#[test]
fn snapshots_restore_identical_state_on_any_backend_and_shard_count() {
    use StateBackendKind::{Lsm, Memory};
    for (from, to) in [(Memory, Memory), (Lsm, Lsm), (Memory, Lsm), (Lsm, Memory)] {
        for shards in 1..=4 {
            for to_shards in 1..=4 {
                snapshot_round_trip(from, shards, to, to_shards);
            }
        }
    }
}

#[test]
fn lsm_native_checkpoint_restores_the_checkpointed_state() {
    let dir = std::env::temp_dir().join(format!("weir-state-native-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let groups = KeyGroups::new(128, 1);
    let d = dir.clone();
    let at_checkpoint = run_local(async move {
        let mut h = StateHarness::<u64>::with_groups(StateBackendKind::Lsm, 4096, 1_000, groups, Some(d.join("a")));
        let mut s = States::open(&h.ctx);
        h.connect().await;
        let mut rng = Rng(11);
        for _ in 0..4_000 {
            step(&mut s, &h.clock, &mut rng, 100);
        }
        // Some changes stay dirty in the cache until the barrier writes them through.
        h.pump().await;
        for k in 0..20 {
            s.total.update(&k, 7);
        }
        let snapshot = h.native_checkpoint(1, &d.join("checkpoints")).await;
        let now = h.clock.now();
        let counts = h.ctx.entry_counts();
        let dumps: Vec<String> = (0..100).map(|k| s.dump(k)).collect();
        // Changes after the barrier are not in the checkpoint.
        for k in 0..100 {
            s.total.update(&k, 999);
            s.buckets.clear(&k);
        }
        h.pump().await;
        h.close().await;
        (dumps, counts, now, snapshot)
    });
    let d = dir.clone();
    let restored = run_local(async move {
        let mut h = StateHarness::<u64>::with_groups(StateBackendKind::Lsm, 4096, at_checkpoint.2, groups, Some(d.join("b")));
        let mut s = States::open(&h.ctx);
        let set = crate::checkpoint::runtime::RestoreSet {
            dir: d.join("checkpoints").join("chk-1"),
            ..crate::checkpoint::runtime::RestoreSet::from_tasks(1, "test".into(), 1, vec![(0, at_checkpoint.3)])
        };
        h.ctx.backend().restore_native(&set, "test").unwrap();
        h.connect().await;
        let counts = h.ctx.entry_counts();
        ((0..100).map(|k| s.dump(k)).collect::<Vec<_>>(), counts)
    });
    let _ = std::fs::remove_dir_all(&dir);
    // The restored store reads at the checkpoint's processing time, like the dumps taken right
    // after the checkpoint (their renewals of `OnReadAndWrite` entries change no visibility).
    assert_eq!(at_checkpoint.0, restored.0);
    assert_eq!(at_checkpoint.1, restored.1, "entry counts are restored with the store");
}

#[test]
fn a_fresh_lsm_backend_does_not_see_an_earlier_run_in_its_directory() {
    let dir = std::env::temp_dir().join(format!("weir-state-fresh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let groups = KeyGroups::new(128, 1);
    for run in 0..2u64 {
        let d = dir.clone();
        run_local(async move {
            let mut h = StateHarness::<u64>::with_groups(StateBackendKind::Lsm, 4096, 1_000, groups, Some(d));
            let mut v = h.ctx.value::<u64>("v", None);
            h.connect().await;
            for k in 0..500 {
                assert_eq!(v.value(&k), None, "run {run} key {k}");
                v.update(&k, run);
            }
            h.pump().await;
            h.close().await;
        });
    }
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let d = dir.clone();
    let err = run_local(async move {
        let mut t = crate::testing::test_backend(StateBackendKind::Lsm, 4096, groups, Some(d));
        t.flusher.as_mut().unwrap().connect().await.unwrap_err().to_string()
    });
    assert!(err.contains("notes.txt") && err.contains("refusing"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An entry that expires in the cache is deleted from the store as well, even when the store
/// holds an older copy that would live longer (restored under a longer TTL).
#[test]
fn lsm_expiry_in_the_cache_never_resurrects_an_older_store_copy() {
    run_local(async {
        // A snapshot taken under a 10 s TTL at time 1 000: expires at 11 000.
        let mut old = StateHarness::<u64>::new(StateBackendKind::Memory, 0, 1_000);
        let mut v = old.ctx.value::<u64>("v", Some(StateTtl::new(10_000, TtlUpdate::OnCreateAndWrite)));
        old.connect().await;
        v.update(&1, 100);
        let mut snap = KeyedSnapshot::default();
        old.ctx.snapshot(&mut snap).unwrap();
        // Restored under a 100 ms TTL.
        let mut h = StateHarness::<u64>::new(StateBackendKind::Lsm, 4096, 1_000);
        let mut v = h.ctx.value::<u64>("v", Some(StateTtl::new(100, TtlUpdate::OnCreateAndWrite)));
        h.ctx.restore(&KeyedRestore::new("p", snap.groups.into_iter().collect())).unwrap();
        h.connect().await;
        assert_eq!(v.value(&1), Some(&100));
        v.update(&1, 200); // expires at 1 100 in the cache; the store's copy at 11 000
        h.clock.set(1_100);
        assert_eq!(v.value(&1), None);
        for k in 1_000..2_000 {
            v.update(&k, k); // evicts key 1 from the tiny cache
        }
        h.pump().await;
        assert!(h.lsm_stats().unwrap().evictions > 900);
        h.clock.set(1_200);
        assert_eq!(v.value(&1), None, "the store's older copy must not come back");
    });
}

/// Values that grow in the cache (hits never evict) push the caches over budget; the flusher
/// evicts them back under it, from every state.
#[test]
fn lsm_flusher_brings_grown_caches_back_under_budget() {
    run_local(async {
        let mut h = StateHarness::<u64>::new(StateBackendKind::Lsm, 4096, 0);
        let mut a = h.ctx.value::<String>("a", None);
        let mut b = h.ctx.list::<u64>("b", None);
        h.connect().await;
        for k in 0..20 {
            a.update(&k, String::new());
            b.add(&k, k);
        }
        for k in 0..20 {
            a.update_with(&k, String::new, |s| s.push_str(&"x".repeat(300)));
            for i in 0..30 {
                b.add(&k, i);
            }
        }
        let before = h.lsm_stats().unwrap().cache_bytes;
        assert!(before > 8192, "grown past the budget: {before}");
        h.pump().await;
        let after = h.lsm_stats().unwrap().cache_bytes;
        assert!(after <= 4096, "evicted back under budget: {after}");
        for k in 0..20 {
            assert_eq!(a.value(&k).map(String::len), Some(300));
            assert_eq!(b.get(&k).count(), 31);
        }
    });
}

/// `ops` seeded operations on a fresh memory harness (one shard of `GROUPS` key groups); the
/// dump of every key at the end.
fn reference_dump(seed: u64, ops: usize, keys: u64) -> (Vec<String>, Timestamp) {
    run_local(async move {
        let mut h = StateHarness::<u64>::with_groups(StateBackendKind::Memory, 4096, 1_000, KeyGroups::new(64, 1), None);
        let mut s = States::open(&h.ctx);
        h.connect().await;
        let mut rng = Rng(seed);
        for _ in 0..ops {
            step(&mut s, &h.clock, &mut rng, keys);
        }
        let now = h.clock.now();
        ((0..keys).map(|k| s.dump(k)).collect(), now)
    })
}

/// The memory backend's asynchronous snapshot: the state is frozen at a barrier, thousands of
/// writes, deletes, renewals and expiries follow, and only then is the view written to a keyed
/// state file. Restored on 1, 2 and 3 shards of either backend, it holds exactly the state at
/// the freeze; the live state went on exactly as without the freeze.
#[test]
fn async_snapshot_holds_exactly_the_state_at_the_barrier() {
    const KEYS: u64 = 300;
    const SEED: u64 = 11;
    const BEFORE: usize = 6_000;
    const AFTER: usize = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let (file, live_after, frozen_at) = run_local(async move {
        let mut h = StateHarness::<u64>::with_groups(StateBackendKind::Memory, 4096, 1_000, KeyGroups::new(64, 1), None);
        let mut s = States::open(&h.ctx);
        h.connect().await;
        let mut rng = Rng(SEED);
        for _ in 0..BEFORE {
            step(&mut s, &h.clock, &mut rng, KEYS);
        }
        let frozen_at = h.clock.now();
        let frozen = h.ctx.freeze();
        for _ in 0..AFTER {
            step(&mut s, &h.clock, &mut rng, KEYS);
        }
        // Written on another thread, after the writes above.
        let file = std::thread::spawn(move || frozen.write_file(&path, "keyed-test")).join().unwrap().unwrap();
        let live: Vec<String> = (0..KEYS).map(|k| s.dump(k)).collect();
        (file, live, frozen_at)
    });
    let (expected_live, _) = reference_dump(SEED, BEFORE + AFTER, KEYS);
    assert_eq!(live_after, expected_live, "writes after the freeze change the live state as usual");
    let (expected, now) = reference_dump(SEED, BEFORE, KEYS);
    assert_eq!(now, frozen_at);
    assert!(file.sections.len() > 10 && file.payload_bytes() > 0);
    for to_kind in [StateBackendKind::Memory, StateBackendKind::Lsm] {
        for to_shards in 1..=3u32 {
            let (dir, file) = (dir.path().to_path_buf(), file.clone());
            let restored = run_local(async move {
                let mut restored = BTreeMap::new();
                let groups = KeyGroups::new(64, to_shards);
                for shard in 0..to_shards {
                    let mut h = StateHarness::<u64>::with_groups(to_kind, 4096, now, groups, None);
                    let mut s = States::open(&h.ctx);
                    let range = groups.range_of_shard(shard);
                    let restore = KeyedRestore::new("process", Vec::new()).with_files(dir.clone(), vec![file.clone()], range);
                    h.ctx.restore(&restore).unwrap();
                    h.connect().await;
                    for k in (0..KEYS).filter(|k| groups.shard_of_hash(k.stable_hash()) == shard) {
                        restored.insert(k, s.dump(k));
                    }
                }
                restored.into_values().collect::<Vec<_>>()
            });
            let mut want = expected.clone();
            want.sort_by_key(|d| d.split(':').next().unwrap().parse::<u64>().unwrap());
            assert_eq!(restored, want, "restored on {to_shards} {to_kind:?} shards");
        }
    }
    // A damaged section is refused with the file and the key group.
    let path = dir.path().join("keyed-test");
    let mut bytes = std::fs::read(&path).unwrap();
    let s = file.sections[3];
    bytes[s.offset as usize + 1] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let restore = KeyedRestore::new("process", Vec::new()).with_files(dir.path().to_path_buf(), vec![file], (0, 64));
    let err = restore.for_each_section(|_, _| Ok(())).unwrap_err().to_string();
    assert!(err.contains("keyed-test") && err.contains(&format!("key group {}", s.key_group)), "{err}");
}

/// The snapshot writer of a job: a barrier's frozen state is written on the writer's thread
/// into the epoch's directory and the acknowledgement carries the file; when the directory is
/// gone (the checkpoint was aborted and discarded meanwhile) the epoch is declined and nothing
/// is left behind.
#[test]
fn snapshot_writer_writes_in_the_background_and_declines_when_the_epoch_is_gone() {
    let root = tempfile::tempdir().unwrap();
    let (tx, _rx) = std::sync::mpsc::channel();
    let control = Arc::new(crate::checkpoint::runtime::CheckpointControl::new(1, tx, None, root.path().to_path_buf()));
    let groups = KeyGroups::new(32, 1);
    run_local(async move {
        let (backend, mut writer) = StateBackend::memory_with_snapshots(groups, control.clone(), "process#1", 0);
        let ctx = StateContext::<u64>::with_backend(StateClock::new(1_000), backend);
        assert!(ctx.backend().async_snapshots());
        let mut v = ctx.value::<u64>("v", None);
        for k in 0..1_000u64 {
            v.update(&k, k);
        }
        std::fs::create_dir_all(control.snapshot_dir(1)).unwrap();
        ctx.begin_async_snapshot(1).unwrap();
        for k in 0..1_000u64 {
            v.update(&k, k + 1); // after the barrier
        }
        let mut snap = crate::checkpoint::runtime::TaskSnapshot::default();
        // Epoch 2 begun too: its part waits until epoch 1's is acknowledged.
        ctx.begin_async_snapshot(2).unwrap();
        assert!(!writer.complete_snapshot(2, &mut snap).await.unwrap(), "epoch 2 waits for epoch 1");
        while !writer.complete_snapshot(1, &mut snap).await.unwrap() {
            std::thread::yield_now();
        }
        assert!(snap.declined.is_none(), "{:?}", snap.declined);
        let [(op, file)] = &snap.keyed_files[..] else {
            panic!("one keyed file: {:?}", snap.keyed_files)
        };
        assert_eq!(op, "process#1");
        let mut seen = Vec::new();
        let restore = KeyedRestore::new(op, Vec::new()).with_files(control.snapshot_dir(1), vec![file.clone()], (0, 32));
        restore
            .for_each_section(|kg, section| {
                codec::for_each_entry(section, op, kg, |e| {
                    if let codec::KeyedEntryBorrowed::State { key, value, .. } = e {
                        let k: u64 = codec::decode(key, "k")?;
                        let (_, v): (Timestamp, u64) = codec::decode_stored(value, "v")?;
                        seen.push((k, v));
                    }
                    Ok(())
                })
            })
            .unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..1_000u64).map(|k| (k, k)).collect::<Vec<_>>(), "the state at the barrier");
        // Epoch 2's directory was never created (as after an abort): declined, no file.
        let mut snap2 = crate::checkpoint::runtime::TaskSnapshot::default();
        while !writer.complete_snapshot(2, &mut snap2).await.unwrap() {
            std::thread::yield_now();
        }
        assert!(snap2.declined.as_deref().is_some_and(|d| d.contains("process#1")), "{:?}", snap2.declined);
        assert!(snap2.keyed_files.is_empty() && !control.snapshot_dir(2).exists());
    });
}
