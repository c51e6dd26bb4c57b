//! Functional tests of the public API.
mod common;

use std::ops::Bound;
use std::rc::Rc;

use common::{run, tmpdir};
use weir_storage::{ManualClock, Store, StoreConfig, StoreError, WriteBatch};

fn kv(s: &Store, it: weir_storage::Result<weir_storage::ScanIter<'_>>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let _ = s;
    it.unwrap().map(|r| r.unwrap()).collect()
}

#[test]
fn put_get_delete_batch_scan_reopen() {
    let dir = tmpdir("basic");
    run(async move {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        s.put(b"a", b"1").unwrap();
        s.put(b"b", b"2").unwrap();
        s.put(b"c", b"3").unwrap();
        s.delete(b"b").unwrap();
        let mut wb = WriteBatch::new();
        wb.put(b"d", b"4").put(b"e", b"5").delete(b"a");
        s.write(&wb).unwrap();
        assert_eq!(s.get(b"a").unwrap(), None);
        assert_eq!(s.get(b"c").unwrap(), Some(b"3".to_vec()));
        let all = kv(&s, s.scan_range(Bound::Unbounded, Bound::Unbounded));
        assert_eq!(
            all.iter().map(|p| p.0.clone()).collect::<Vec<_>>(),
            vec![b"c".to_vec(), b"d".to_vec(), b"e".to_vec()]
        );
        let acked = s.commit().await.unwrap();
        assert_eq!(acked, 5);
        drop(s);
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        assert_eq!(s.get(b"d").unwrap(), Some(b"4".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        s.flush().await.unwrap();
        assert_eq!(s.stats().segments, 1);
        assert_eq!(s.get(b"e").unwrap(), Some(b"5".to_vec()));
        s.close().await.unwrap();
        let s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        assert_eq!(kv(&s, s.scan_prefix(b"")).len(), 3);
    });
}

#[test]
fn prefix_scans_across_memtable_and_segments() {
    let dir = tmpdir("prefix");
    run(async move {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        for i in 0..2000u32 {
            let k = format!("k{:02}/{:05}", i % 7, i);
            s.put(k.as_bytes(), &i.to_le_bytes()).unwrap();
            if i % 300 == 0 {
                s.commit().await.unwrap();
                s.maintain(4096).await.unwrap();
            }
        }
        s.flush().await.unwrap();
        for i in (0..2000u32).step_by(3) {
            s.delete(format!("k{:02}/{:05}", i % 7, i).as_bytes()).unwrap();
        }
        let got = kv(&s, s.scan_prefix(b"k03/"));
        let want: Vec<u32> = (0..2000u32).filter(|i| i % 7 == 3 && i % 3 != 0).collect();
        assert_eq!(got.len(), want.len());
        for ((k, v), i) in got.iter().zip(&want) {
            assert_eq!(k, format!("k03/{:05}", i).as_bytes());
            assert_eq!(v, &i.to_le_bytes());
        }
        let r = kv(
            &s,
            s.scan_range(Bound::Excluded(b"k01/00008".as_slice()), Bound::Included(b"k01/00050".as_slice())),
        );
        let want: Vec<u32> = (9..=50u32).filter(|i| i % 7 == 1 && i % 3 != 0).collect();
        assert_eq!(r.len(), want.len());
        assert!(s.stats().runs >= 2);
    });
}

#[test]
fn ttl_entries_invisible_and_dropped_at_compaction() {
    let dir = tmpdir("ttl");
    run(async move {
        let clock = ManualClock::new(1_000);
        let mut s = Store::open_with_clock(&dir, StoreConfig::small_for_tests(), Rc::new(clock.clone()))
            .await
            .unwrap();
        s.put(b"old", b"v0").unwrap();
        s.flush().await.unwrap();
        s.put_with_ttl(b"old", b"v1", 2_000).unwrap();
        s.put_with_ttl(b"x", b"y", 1_500).unwrap();
        s.put(b"keep", b"k").unwrap();
        assert_eq!(s.get(b"old").unwrap(), Some(b"v1".to_vec()));
        s.flush().await.unwrap();
        clock.set(2_000);
        assert_eq!(s.get(b"old").unwrap(), None, "expired newer version hides older one");
        assert_eq!(s.get(b"x").unwrap(), None);
        assert_eq!(kv(&s, s.scan_prefix(b"")).len(), 1);
        // Force merging everything: many small runs.
        for i in 0..8u8 {
            s.put(&[b'z', i], b"z").unwrap();
            s.flush().await.unwrap();
        }
        while !s.compact_step(1 << 20).await.unwrap().idle {}
        assert_eq!(s.stats().runs, 1);
        assert_eq!(s.get(b"old").unwrap(), None);
        assert_eq!(kv(&s, s.scan_prefix(b"")).len(), 9);
        assert_eq!(s.stats().compaction_debt_bytes, 0);
    });
}

#[test]
fn checkpoints_are_incremental_restorable_and_retained() {
    let dir = tmpdir("ckpt");
    run(async move {
        let cfg = StoreConfig {
            checkpoints_retained: 2,
            ..StoreConfig::small_for_tests()
        };
        let mut s = Store::open(&dir, cfg.clone()).await.unwrap();
        s.put(b"a", b"1").unwrap();
        let c1 = s.checkpoint(1).await.unwrap();
        assert_eq!(c1.new_files.len(), 1);
        s.put(b"a", b"2").unwrap();
        s.put(b"b", b"2").unwrap();
        let c2 = s.checkpoint(2).await.unwrap();
        assert_eq!(c2.files.len(), 2);
        assert_eq!(c2.new_files.len(), 1, "only the new flush is new");
        assert!(matches!(s.checkpoint(2).await, Err(StoreError::InvalidArgument(_))));
        s.put(b"c", b"3").unwrap();
        s.commit().await.unwrap();
        s.restore(1).await.unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"b").unwrap(), None);
        assert_eq!(s.get(b"c").unwrap(), None);
        assert_eq!(s.checkpoints(), vec![1]);
        drop(s);
        // The restore is durable: WAL records after the checkpoint are not replayed.
        let mut s = Store::open(&dir, cfg.clone()).await.unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(s.get(b"c").unwrap(), None);
        for e in 2..6u64 {
            s.put(format!("e{e}").as_bytes(), b"x").unwrap();
            s.checkpoint(e).await.unwrap();
        }
        assert_eq!(s.checkpoints(), vec![4, 5]);
        assert!(matches!(s.restore(1).await, Err(StoreError::CheckpointNotFound { .. })));
        // Merge everything; files of checkpoints stay until no longer referenced.
        while !s.compact_step(1 << 20).await.unwrap().idle {}
        for f in s.checkpoint_files(4).unwrap() {
            assert!(f.exists(), "{f:?} referenced by a checkpoint");
        }
        s.checkpoint(6).await.unwrap();
        s.checkpoint(7).await.unwrap();
        let live: Vec<_> = s.checkpoint_files(7).unwrap();
        let on_disk = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
            .count();
        assert_eq!(on_disk, live.len(), "unreferenced files deleted");
        s.restore(6).await.unwrap();
        assert_eq!(s.get(b"e5").unwrap(), Some(b"x".to_vec()));
    });
}

#[test]
fn backpressure_and_limits() {
    let dir = tmpdir("bp");
    run(async move {
        let cfg = StoreConfig {
            wal_max_pending_bytes: 4096,
            ..StoreConfig::small_for_tests()
        };
        let mut s = Store::open(&dir, cfg).await.unwrap();
        let mut n = 0;
        let err = loop {
            match s.put(&[n as u8, (n >> 8) as u8], &[0u8; 100]) {
                Ok(_) => n += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(err, StoreError::Backpressure { .. }), "{err}");
        s.commit().await.unwrap();
        s.put(b"more", b"ok").unwrap();
        assert!(matches!(s.put(&vec![0u8; 100_000], b"v"), Err(StoreError::InvalidArgument(_))));
        let locked = Store::open(&dir, StoreConfig::small_for_tests()).await;
        assert!(matches!(locked, Err(StoreError::Locked { .. })));
    });
}

#[test]
fn failed_fdatasync_poisons_the_instance() {
    let dir = tmpdir("poison");
    run(async move {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        s.put(b"a", b"1").unwrap();
        s.commit().await.unwrap();
        s.put(b"b", b"2").unwrap();
        s.inject_sync_failure();
        let e = s.commit().await.unwrap_err();
        assert!(e.to_string().contains("fdatasync wal"), "{e}");
        assert!(s.stats().poisoned);
        assert!(matches!(s.get(b"a"), Err(StoreError::Poisoned { .. })));
        assert!(matches!(s.put(b"c", b"3"), Err(StoreError::Poisoned { .. })));
        assert!(matches!(s.commit().await, Err(StoreError::Poisoned { .. })), "never retried blindly");
        drop(s);
        // Reopening recovers from disk: the acknowledged write is there.
        let s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        assert_eq!(s.get(b"a").unwrap(), Some(b"1".to_vec()));
    });
}

#[test]
fn exported_checkpoint_opens_as_a_store() {
    let dir = tmpdir("export");
    let out = tmpdir("export-dest");
    run(async move {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        s.put(b"a", b"1").unwrap();
        s.checkpoint(1).await.unwrap();
        s.put(b"b", b"2").unwrap();
        s.checkpoint(2).await.unwrap();
        s.put(b"c", b"3").unwrap();
        s.commit().await.unwrap();
        let d1 = out.join("e1");
        let d2 = out.join("e2");
        s.export_checkpoint(1, &d1).await.unwrap();
        s.export_checkpoint(2, &d2).await.unwrap();
        let e1 = Store::open(&d1, StoreConfig::small_for_tests()).await.unwrap();
        assert_eq!(e1.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(e1.get(b"b").unwrap(), None);
        let e2 = Store::open(&d2, StoreConfig::small_for_tests()).await.unwrap();
        assert_eq!(e2.get(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(e2.get(b"c").unwrap(), None);
        assert_eq!(e2.checkpoints(), vec![2]);
        assert_eq!(s.get(b"c").unwrap(), Some(b"3".to_vec()));
    });
}

#[test]
fn commit_future_overlaps_with_writes() {
    let dir = tmpdir("overlap");
    run(async move {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        for i in 0..100u32 {
            s.put(&i.to_be_bytes(), b"first").unwrap();
        }
        // The commit runs as its own task while the "run loop" keeps writing.
        let c1 = glommio::spawn_local(s.commit());
        for i in 100..200u32 {
            s.put(&i.to_be_bytes(), b"second").unwrap();
        }
        let c2 = s.commit();
        let acked1 = c1.await.unwrap();
        assert!(acked1 >= 100, "first commit covers the first 100 writes");
        assert_eq!(c2.await.unwrap(), 200);
        assert_eq!(s.stats().acked_seq, 200);
        assert_eq!(s.commit().await.unwrap(), 200, "nothing pending");
        drop(s);
        let s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        assert_eq!(s.scan_prefix(b"").unwrap().count(), 200);
    });
}

#[test]
fn begun_checkpoint_holds_exactly_the_writes_before_it_while_writes_go_on() {
    let dir = tmpdir("begin-checkpoint");
    let out = tmpdir("begin-checkpoint-dest");
    run(async move {
        let mut s = Store::open(&dir, StoreConfig::small_for_tests()).await.unwrap();
        for i in 0..500u32 {
            s.put(&i.to_be_bytes(), b"before").unwrap();
        }
        s.begin_checkpoint(1).unwrap();
        assert!(s.checkpoint_pending());
        assert!(s.checkpoint_info(1).unwrap().is_none(), "nothing flushed yet");
        // Writes go on: overwrite half, add new keys, delete some.
        for i in 250..750u32 {
            s.put(&i.to_be_bytes(), b"after").unwrap();
        }
        for i in 0..10u32 {
            s.delete(&i.to_be_bytes()).unwrap();
        }
        s.begin_checkpoint(2).unwrap();
        assert!(matches!(s.begin_checkpoint(2), Err(StoreError::InvalidArgument(_))));
        while s.checkpoint_pending() {
            s.maintain(4 << 10).await.unwrap();
        }
        assert_eq!(s.checkpoints(), vec![1, 2]);
        let e1 = out.join("e1");
        s.export_checkpoint(1, &e1).await.unwrap();
        let c1 = Store::open(&e1, StoreConfig::small_for_tests()).await.unwrap();
        for i in 0..750u32 {
            let want = (i < 500).then(|| b"before".to_vec());
            assert_eq!(c1.get(&i.to_be_bytes()).unwrap(), want, "checkpoint 1, key {i}");
        }
        let info2 = s.checkpoint_info(2).unwrap().unwrap();
        assert!(!info2.new_files.is_empty() && info2.new_files.len() < info2.files.len() + 1);
        s.restore(2).await.unwrap();
        for i in 0..750u32 {
            let want = match i {
                0..=9 => None,
                10..=249 => Some(b"before".to_vec()),
                _ => Some(b"after".to_vec()),
            };
            assert_eq!(s.get(&i.to_be_bytes()).unwrap(), want, "checkpoint 2, key {i}");
        }
    });
}
