//! Model-based test: random operation sequences (seeded) against a
//! `BTreeMap` model, with flushes, compaction steps, checkpoints,
//! restores, clean reopens and crashes (drop without commit).
//!
//! Crash rule checked: after a crash, the recovered state equals the model
//! state after some prefix of the writes that is at least as long as the
//! acknowledged prefix (acknowledged writes never vanish, writes are
//! never reordered or invented). Run with and without a WAL: without one,
//! only flushes, checkpoints and clean closes acknowledge (a commit does not).
//!
//! `WEIR_SEED=n` picks the seed, `WEIR_MODEL_OPS=n` the length.
mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use common::{run, seed, tmpdir, Rng};
use weir_storage::{ManualClock, Store, StoreConfig, StoreError, WriteBatch};

type Model = BTreeMap<Vec<u8>, (Vec<u8>, u64)>;

fn visible(m: &Model, now: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    m.iter()
        .filter(|(_, (_, x))| *x == 0 || *x > now)
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

fn contents(s: &Store) -> Vec<(Vec<u8>, Vec<u8>)> {
    s.scan_range(Bound::Unbounded, Bound::Unbounded).unwrap().map(|r| r.unwrap()).collect()
}

fn key(r: &mut Rng) -> Vec<u8> {
    format!("{:02}/{:04}", r.below(4), r.below(150)).into_bytes()
}

async fn open(dir: &std::path::Path, cfg: &StoreConfig, clock: &ManualClock) -> Store {
    Store::open_with_clock(dir, cfg.clone(), Rc::new(clock.clone())).await.unwrap()
}

async fn one_seed(seed: u64, ops: usize, wal: bool) {
    let dir = tmpdir(&format!("model-{seed}-{wal}"));
    let cfg = StoreConfig {
        memtable_budget_bytes: 8 << 10,
        compaction_output_bytes: 12 << 10,
        checkpoints_retained: 3,
        wal,
        ..StoreConfig::small_for_tests()
    };
    let clock = ManualClock::new(1_000_000);
    let mut now = 1_000_000u64;
    let mut r = Rng(seed);
    let mut s = open(&dir, &cfg, &clock).await;
    let mut model = Model::new();
    // Model states since the last acknowledgement: history[0] is acked.
    let mut history: Vec<Model> = vec![model.clone()];
    let mut ckpts: Vec<(u64, Model)> = Vec::new();
    // Begun (asynchronous) checkpoints not yet recorded, oldest first.
    let mut pending: Vec<(u64, Model)> = Vec::new();
    let mut epoch = 0u64;
    let (mut crashes, mut restores, mut compactions) = (0, 0, 0);
    for step in 0..ops {
        let p = r.below(1000);
        let ctx = format!("seed {seed} step {step}");
        if p < 450 {
            // single write
            let k = key(&mut r);
            let w = r.below(10);
            let res = if w < 2 {
                s.delete(&k).map(|_| model.remove(&k)).map(|_| ())
            } else if w < 4 {
                let v = {
                    let n = r.below(200) as usize;
                    r.bytes(n)
                };
                let exp = now + 1 + r.below(5_000);
                s.put_with_ttl(&k, &v, exp).map(|_| {
                    model.insert(k.clone(), (v, exp));
                })
            } else {
                let v = {
                    let n = r.below(300) as usize;
                    r.bytes(n)
                };
                s.put(&k, &v).map(|_| {
                    model.insert(k.clone(), (v, 0));
                })
            };
            match res {
                Ok(()) => history.push(model.clone()),
                Err(StoreError::Backpressure { .. }) => {
                    s.commit().await.unwrap();
                    s.maintain(1 << 20).await.unwrap();
                    if wal {
                        history = vec![model.clone()];
                    }
                }
                Err(e) => panic!("{ctx}: {e}"),
            }
        } else if p < 520 {
            let mut b = WriteBatch::new();
            let mut m2 = model.clone();
            for _ in 0..r.below(6) + 1 {
                let k = key(&mut r);
                if r.below(3) == 0 {
                    b.delete(&k);
                    m2.remove(&k);
                } else {
                    let v = {
                        let n = r.below(100) as usize;
                        r.bytes(n)
                    };
                    b.put(&k, &v);
                    m2.insert(k, (v, 0));
                }
            }
            if s.write(&b).is_ok() {
                model = m2;
                history.push(model.clone());
            }
        } else if p < 650 {
            let k = key(&mut r);
            let want = model.get(&k).filter(|(_, x)| *x == 0 || *x > now).map(|(v, _)| v.clone());
            assert_eq!(s.get(&k).unwrap(), want, "{ctx}: get {k:?}");
        } else if p < 680 {
            let pre = format!("{:02}/", r.below(4)).into_bytes();
            let got: Vec<_> = s.scan_prefix(&pre).unwrap().map(|x| x.unwrap()).collect();
            let want: Vec<_> = visible(&model, now).into_iter().filter(|(k, _)| k.starts_with(&pre)).collect();
            assert_eq!(got, want, "{ctx}: scan_prefix");
        } else if p < 800 {
            s.commit().await.unwrap();
            if wal {
                history = vec![model.clone()];
            }
        } else if p < 860 {
            let prog = s.maintain(r.below(16 << 10) + 1).await.unwrap();
            compactions += prog.installed as u32;
        } else if p < 880 {
            s.flush().await.unwrap();
            if !wal {
                // Without a WAL a flush is what makes writes durable.
                history = vec![model.clone()];
            }
        } else if p < 900 {
            now += r.below(2_000);
            clock.set(now);
        } else if p < 907 {
            epoch += 1;
            s.checkpoint(epoch).await.unwrap();
            history = vec![model.clone()];
            ckpts.append(&mut pending);
            ckpts.push((epoch, model.clone()));
        } else if p < 915 {
            // Asynchronous checkpoint: begun now, recorded by later maintenance.
            epoch += 1;
            s.begin_checkpoint(epoch).unwrap();
            pending.push((epoch, model.clone()));
        } else if p < 925 {
            if !ckpts.is_empty() {
                let i = r.below(ckpts.len() as u64) as usize;
                let (e, m) = ckpts[i].clone();
                s.restore(e).await.unwrap();
                ckpts.truncate(i + 1);
                pending.clear();
                epoch = epoch.max(e);
                model = m;
                history = vec![model.clone()];
                restores += 1;
            }
        } else if p < 960 {
            // crash: drop without commit
            drop(s);
            s = open(&dir, &cfg, &clock).await;
            pending.clear();
            let got = contents(&s);
            let idx = history
                .iter()
                .rposition(|m| visible(m, now) == got)
                .unwrap_or_else(|| panic!("{ctx}: recovered state is no prefix of the writes since the last ack"));
            model = history[idx].clone();
            history = vec![model.clone()];
            crashes += 1;
        } else if p < 975 {
            s.close().await.unwrap();
            s = open(&dir, &cfg, &clock).await;
            if !wal {
                // Without a WAL, close flushes: that records every begun checkpoint.
                ckpts.append(&mut pending);
            }
            pending.clear();
            assert_eq!(contents(&s), visible(&model, now), "{ctx}: clean reopen");
            history = vec![model.clone()];
        } else {
            assert_eq!(contents(&s), visible(&model, now), "{ctx}: full scan");
        }
        // Begun checkpoints become restorable once recorded, in order.
        while let Some((e, _)) = pending.first() {
            if s.checkpoint_info(*e).unwrap().is_none() {
                assert!(s.checkpoint_pending(), "{ctx}: checkpoint {e} neither pending nor recorded");
                break;
            }
            ckpts.push(pending.remove(0));
        }
        while ckpts.len() > cfg.checkpoints_retained {
            ckpts.remove(0);
        }
        assert_eq!(s.checkpoints(), ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), "{ctx}: retained checkpoints");
    }
    assert_eq!(contents(&s), visible(&model, now), "seed {seed}: final");
    let stats = s.stats();
    if !wal {
        assert_eq!((stats.wal_files, stats.wal_bytes_written), (0, 0), "seed {seed}: no WAL written");
    }
    eprintln!("seed {seed} (wal {wal}): {ops} ops, {crashes} crashes, {restores} restores, {compactions} compactions, stats {stats:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_random_ops_with_crashes() {
    let base = seed(0x5eed);
    let ops: usize = std::env::var("WEIR_MODEL_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seeds: u64 = std::env::var("WEIR_MODEL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    for i in 0..seeds {
        run(one_seed(base + i, ops, true));
    }
}

#[test]
fn model_random_ops_with_crashes_without_wal() {
    let base = seed(0x5eed);
    let ops: usize = std::env::var("WEIR_MODEL_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);
    let seeds: u64 = std::env::var("WEIR_MODEL_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    for i in 0..seeds {
        run(one_seed(base + i, ops, false));
    }
}
