//! Disk full: the store runs on a real size-limited tmpfs (mounted by the
//! test; needs root, otherwise the test is skipped with a message). The
//! free space is eaten by a filler file; writes, commits, flushes and a
//! checkpoint then hit ENOSPC. Checked: the error is `DiskFull`, the
//! instance is not poisoned, everything acknowledged before stays
//! readable (also after a crash), and the store works again once the
//! filler is deleted.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run, tmpdir, Rng};
use weir_storage::{Store, StoreConfig, StoreError};

struct Mount(PathBuf);

impl Mount {
    fn new(size: &str) -> Option<Mount> {
        let d = tmpdir("tmpfs");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&d)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(Mount(d))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Fills the file system with `path` until ENOSPC, then frees `keep` bytes.
fn fill(path: &Path, keep: u64) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    let len = f.metadata().unwrap().len();
    f.set_len(len.saturating_sub(keep)).unwrap();
}

fn cfg() -> StoreConfig {
    StoreConfig {
        memtable_budget_bytes: 64 << 10,
        wal_segment_bytes: 256 << 10,
        ..StoreConfig::small_for_tests()
    }
}

fn check(s: &Store, acked: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in acked {
        assert_eq!(s.get(k).unwrap().as_ref(), Some(v), "acked key {k:?}");
    }
}

#[test]
fn disk_full_during_writes_and_checkpoint() {
    let Some(m) = Mount::new("2m") else {
        eprintln!("SKIPPED: cannot mount tmpfs (needs root)");
        return;
    };
    let dir = m.0.join("store");
    let filler = m.0.join("filler");
    run(async {
        let mut s = Store::open(&dir, cfg()).await.unwrap();
        let mut r = Rng(7);
        let mut acked = BTreeMap::new();
        let mut pending = BTreeMap::new();
        s.put(b"base", b"v").unwrap();
        s.checkpoint(1).await.unwrap();
        acked.insert(b"base".to_vec(), b"v".to_vec());
        fill(&filler, 96 << 10);
        // Write until something reports disk full.
        let mut i = 0u32;
        let err = loop {
            let k = format!("k{:06}", r.below(5000)).into_bytes();
            let v = r.bytes(100);
            match s.put(&k, &v) {
                Ok(_) => {
                    pending.insert(k, v);
                }
                Err(e) => break e,
            }
            i += 1;
            if i.is_multiple_of(50) {
                match s.commit().await {
                    Ok(_) => acked.append(&mut pending),
                    Err(e) => break e,
                }
                if let Err(e) = s.maintain(32 << 10).await {
                    break e;
                }
            }
        };
        assert!(err.is_disk_full(), "expected disk full, got {err}");
        eprintln!("after {i} puts: {err}");
        assert!(!s.stats().poisoned);
        check(&s, &acked);
        // A checkpoint on the full disk fails cleanly too.
        let e = s.checkpoint(2).await.unwrap_err();
        assert!(e.is_disk_full(), "checkpoint on full disk: {e}");
        assert!(!s.stats().poisoned);
        assert_eq!(s.checkpoints(), vec![1]);
        check(&s, &acked);
        // Free space: everything works again.
        std::fs::remove_file(&filler).unwrap();
        s.commit().await.unwrap();
        acked.append(&mut pending);
        s.checkpoint(2).await.unwrap();
        for j in 0..200u32 {
            let k = format!("after{j}").into_bytes();
            s.put(&k, b"x").unwrap();
            acked.insert(k, b"x".to_vec());
        }
        s.commit().await.unwrap();
        check(&s, &acked);
        // Disk full in the WAL write itself: the commit fails, the records
        // stay buffered and are committed once space is back.
        let mut wal_full = false;
        for round in 0..64u32 {
            fill(&filler, 0);
            let k = format!("walfull{round}").into_bytes();
            s.put(&k, &[2u8; 3000]).unwrap();
            let r = s.commit().await;
            std::fs::remove_file(&filler).unwrap();
            match r {
                Err(StoreError::DiskFull { op: "wal write", .. }) => {
                    assert!(!s.stats().poisoned);
                    s.commit().await.unwrap();
                    acked.insert(k, vec![2u8; 3000]);
                    wal_full = true;
                    break;
                }
                Err(e) => panic!("{e}"),
                Ok(_) => {
                    acked.insert(k, vec![2u8; 3000]);
                }
            }
        }
        assert!(wal_full, "WAL write never hit ENOSPC");
        check(&s, &acked);
        // Disk full in the middle of a checkpoint flush, then crash: the
        // acknowledged state survives.
        fill(&filler, 8 << 10);
        for j in 0..300u32 {
            let _ = s.put(format!("late{j}").as_bytes(), &[1u8; 100]);
        }
        let e = s.checkpoint(3).await.unwrap_err();
        assert!(matches!(e, StoreError::DiskFull { .. }), "{e}");
        drop(s);
        std::fs::remove_file(&filler).unwrap();
        let s = Store::open(&dir, cfg()).await.unwrap();
        check(&s, &acked);
        assert_eq!(s.checkpoints(), vec![1, 2]);
        s.close().await.unwrap();
    });
    drop(m);
}
