//! Crash test: a child process (this test binary re-executed with
//! `WEIR_CRASH_CHILD_DIR` set) writes, group-commits and prints every
//! acknowledged operation count; the parent SIGKILLs it after a random
//! number of acknowledgements, reopens the store and checks that every
//! acknowledged operation is present and that the state equals the
//! result of some prefix of the operations (nothing reordered or invented).
//!
//! The same without a WAL (`StoreConfig::wal = false`): the child acknowledges only what a
//! flush or a checkpoint made durable, and the reopened store must hold a prefix of the
//! operations at least that long.
//!
//! Default: 10 iterations. Long run:
//! `WEIR_CRASH_ITERS=500 cargo test -p weir-storage --release --test crash -- --nocapture`
mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::ops::Bound;
use std::process::{Command, Stdio};

use common::{run, seed, tmpdir, Rng};
use weir_storage::{Store, StoreConfig};

fn cfg() -> StoreConfig {
    StoreConfig {
        memtable_budget_bytes: 64 << 10,
        compaction_output_bytes: 128 << 10,
        wal: std::env::var_os("WEIR_CRASH_NO_WAL").is_none(),
        ..StoreConfig::small_for_tests()
    }
}

fn key(ns: u64, i: u64) -> Vec<u8> {
    format!("it{ns:04}/k{i:08}").into_bytes()
}
fn val(ns: u64, i: u64) -> Vec<u8> {
    let mut v = format!("v{ns}-{i}-").into_bytes();
    v.resize(20 + (i % 90) as usize, b'x');
    v
}
/// Operation `i` puts key `i`; operations with `i % 10 == 9` also delete key `i - 7`.
fn expected(ns: u64, m: u64) -> BTreeSet<Vec<u8>> {
    let mut s: BTreeSet<Vec<u8>> = (0..m).map(|i| key(ns, i)).collect();
    for j in (0..m).filter(|j| j % 10 == 9) {
        s.remove(&key(ns, j - 7));
    }
    s
}

#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os("WEIR_CRASH_CHILD_DIR") else {
        return;
    };
    let ns: u64 = std::env::var("WEIR_CRASH_NS").unwrap().parse().unwrap();
    let mut r = Rng(ns * 7919 + 1);
    run(async move {
        let mut s = Store::open(&dir, cfg()).await.unwrap();
        let mut i = 0u64;
        loop {
            let group = r.below(20) + 1;
            for _ in 0..group {
                let mut b = weir_storage::WriteBatch::new();
                b.put(&key(ns, i), &val(ns, i));
                if i % 10 == 9 {
                    b.delete(&key(ns, i - 7));
                }
                s.write(&b).unwrap();
                i += 1;
            }
            if cfg().wal {
                s.commit().await.unwrap();
                println!("ACK {i}");
            } else if r.below(4) == 0 {
                // Without a WAL, a flush makes the writes durable.
                s.flush().await.unwrap();
                println!("ACK {i}");
            }
            match r.below(100) {
                0..=9 => {
                    s.maintain(32 << 10).await.unwrap();
                }
                10 => {
                    let e = s.checkpoints().last().copied().unwrap_or(0) + 1;
                    s.checkpoint(e).await.unwrap();
                }
                _ => {}
            }
        }
    });
}

fn verify(dir: &std::path::Path, done: &[(u64, u64)], ns: u64, acked: u64, no_wal: bool) -> u64 {
    run(async {
        let cfg = StoreConfig { wal: !no_wal, ..cfg() };
        let s = Store::open(dir, cfg).await.unwrap();
        if no_wal {
            assert_eq!(s.stats().wal_files, 0, "no WAL without a WAL");
        }
        for &(pns, m) in done {
            let got: BTreeSet<Vec<u8>> = s.scan_prefix(format!("it{pns:04}/").as_bytes()).unwrap().map(|r| r.unwrap().0).collect();
            assert_eq!(got, expected(pns, m), "earlier iteration {pns} changed");
        }
        let got: Vec<(Vec<u8>, Vec<u8>)> = s
            .scan_range(Bound::Included(key(ns, 0).as_slice()), Bound::Included(key(ns, u64::MAX / 2).as_slice()))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let max = got
            .iter()
            .map(|(k, _)| std::str::from_utf8(&k[8..]).unwrap().parse::<u64>().unwrap())
            .max()
            .map_or(0, |x| x + 1);
        let keys: BTreeSet<Vec<u8>> = got.iter().map(|p| p.0.clone()).collect();
        for (k, v) in &got {
            let i: u64 = std::str::from_utf8(&k[8..]).unwrap().parse().unwrap();
            assert_eq!(v, &val(ns, i), "value of {i}");
        }
        let m = [max, max + 1]
            .into_iter()
            .find(|&m| m >= acked && keys == expected(ns, m))
            .unwrap_or_else(|| panic!("iteration {ns}: state is not a prefix >= acked {acked} (max key {max})"));
        eprintln!("iteration {ns}: acked {acked}, recovered {m}, stats {:?}", s.stats().torn_tails_truncated);
        m
    })
}

#[test]
fn crash_loop_sigkill() {
    crash_loop(false);
}

#[test]
fn crash_loop_sigkill_without_wal() {
    crash_loop(true);
}

fn crash_loop(no_wal: bool) {
    let iters: u64 = std::env::var("WEIR_CRASH_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut r = Rng(seed(42));
    let dir = tmpdir(if no_wal { "crash-no-wal" } else { "crash" });
    let exe = std::env::current_exe().unwrap();
    let mut done = Vec::new();
    for ns in 0..iters {
        let kill_after = r.below(300) + 1;
        let mut command = Command::new(&exe);
        command
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("WEIR_CRASH_CHILD_DIR", &dir)
            .env("WEIR_CRASH_NS", ns.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if no_wal {
            command.env("WEIR_CRASH_NO_WAL", "1");
        }
        let mut child = command.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = 0u64;
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(l)) = lines.next() else { break };
            if let Some(n) = l.strip_prefix("ACK ") {
                acked = n.parse().unwrap();
                seen += 1;
            }
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        for l in lines.map_while(|l| l.ok()) {
            if let Some(n) = l.strip_prefix("ACK ") {
                acked = n.parse().unwrap();
            }
        }
        let status = child.wait().unwrap();
        if seen < kill_after {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("child ended early ({status}): {err}");
        }
        let m = verify(&dir, &done, ns, acked, no_wal);
        done.push((ns, m));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
