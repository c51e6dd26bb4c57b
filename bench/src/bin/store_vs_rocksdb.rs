//! weir-storage vs RocksDB on 100-byte values: random puts, point gets
//! (hot and cold), prefix scans. Prints one JSON document.
//!
//! Both engines: WAL on, group commit every `--sync-every` puts
//! (weir: `commit().await` = direct write + fdatasync; RocksDB: a write
//! with `sync = true`, which syncs the WAL including earlier writes), no
//! compression, 10 bits/key bloom filters, 32 MiB memtable, 64 MiB block
//! cache. RocksDB is only compiled with `--features rocksdb`.
//!
//! Usage: `store_vs_rocksdb [--keys N] [--ops M] [--sync-every K]
//!         [--dir PATH] [--engine weir|rocksdb|both] [--drop-caches]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use weir_storage::{Store, StoreConfig, StoreError};

const VALUE: usize = 100;

struct Args {
    keys: u64,
    ops: u64,
    sync_every: u64,
    dir: PathBuf,
    engine: String,
    drop_caches: bool,
}

fn args() -> Args {
    let mut a = Args {
        keys: 10_000_000,
        ops: 1_000_000,
        sync_every: 1000,
        dir: std::env::temp_dir().join("weir-bench"),
        engine: if cfg!(feature = "rocksdb") { "both" } else { "weir" }.into(),
        drop_caches: false,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < v.len() {
        let next = || v.get(i + 1).cloned().expect("flag needs a value");
        match v[i].as_str() {
            "--keys" => a.keys = next().parse().expect("--keys N"),
            "--ops" => a.ops = next().parse().expect("--ops M"),
            "--sync-every" => a.sync_every = next().parse().expect("--sync-every K"),
            "--dir" => a.dir = next().into(),
            "--engine" => a.engine = next(),
            "--drop-caches" => {
                a.drop_caches = true;
                i += 1;
                continue;
            }
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn groups(n: u64) -> u64 {
    (n / 100).max(1)
}

/// Key `i`: 4-byte group (≈100 keys per group) + 8-byte id; insertion
/// order over `i` is random in key space.
fn key(i: u64, n: u64) -> [u8; 12] {
    let h = mix(i);
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&((h % groups(n)) as u32).to_be_bytes());
    k[4..].copy_from_slice(&h.to_be_bytes());
    k
}

fn value(i: u64) -> [u8; VALUE] {
    let mut v = [0u8; VALUE];
    for (j, c) in v.chunks_mut(8).enumerate() {
        let b = mix(i ^ (j as u64) << 40).to_le_bytes();
        c.copy_from_slice(&b[..c.len()]);
    }
    v
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds")
}

fn summary(name: &str, n: u64, secs: f64, h: &Histogram<u64>) -> Value {
    json!({
        "phase": name,
        "ops": n,
        "seconds": secs,
        "ops_per_sec": n as f64 / secs,
        "p50_us": h.value_at_quantile(0.50) as f64 / 1000.0,
        "p99_us": h.value_at_quantile(0.99) as f64 / 1000.0,
        "p999_us": h.value_at_quantile(0.999) as f64 / 1000.0,
        "max_us": h.max() as f64 / 1000.0,
    })
}

fn dir_bytes(p: &Path) -> u64 {
    let mut t = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let m = e.metadata().unwrap();
            t += if m.is_dir() { dir_bytes(&e.path()) } else { m.len() };
        }
    }
    t
}

fn drop_caches(on: bool) {
    if on {
        // SAFETY: sync(2) has no memory effects.
        unsafe { libc_sync() };
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
}

extern "C" {
    #[link_name = "sync"]
    fn libc_sync();
}

/// Random-order phases shared by both engines, driven through closures.
struct Phases<'a> {
    a: &'a Args,
}

impl Phases<'_> {
    fn gets(&self, name: &str, hot: bool, mut get: impl FnMut(&[u8]) -> bool) -> Value {
        let mut h = hist();
        let n = self.a.keys;
        let hot_n = (n / 100).max(1);
        let t0 = Instant::now();
        let mut found = 0u64;
        for j in 0..self.a.ops {
            let i = if hot { mix(j ^ 0xabc) % hot_n } else { mix(j ^ 0xdef) % n };
            let t = Instant::now();
            found += get(&key(i, n)) as u64;
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        let mut s = summary(name, self.a.ops, t0.elapsed().as_secs_f64(), &h);
        assert_eq!(found, self.a.ops, "every key read must exist");
        s["found"] = json!(found);
        s
    }

    fn scans(&self, mut scan: impl FnMut(&[u8]) -> u64) -> Value {
        let mut h = hist();
        let scans = (self.a.ops / 100).max(1);
        let t0 = Instant::now();
        let mut rows = 0;
        for j in 0..scans {
            let g = (mix(j ^ 0x5ca) % groups(self.a.keys)) as u32;
            let t = Instant::now();
            rows += scan(&g.to_be_bytes());
            h.record(t.elapsed().as_nanos() as u64).unwrap();
        }
        let mut s = summary("prefix_scan", scans, t0.elapsed().as_secs_f64(), &h);
        s["rows"] = json!(rows);
        s["rows_per_sec"] = json!(rows as f64 / t0.elapsed().as_secs_f64());
        s
    }
}

fn run_weir(a: &Args) -> Value {
    let dir = a.dir.join("weir");
    let _ = std::fs::remove_dir_all(&dir);
    let a2 = Args {
        dir: dir.clone(),
        engine: a.engine.clone(),
        ..*a
    };
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .expect("glommio executor")
        .run(async move {
            let a = &a2;
            let cfg = StoreConfig::default();
            let mut s = Store::open(&dir, cfg).await.unwrap();
            let n = a.keys;
            let mut h = hist();
            let (mut hc, mut hm) = (hist(), hist());
            let t0 = Instant::now();
            for i in 0..n {
                let t = Instant::now();
                let (k, v) = (key(i, n), value(i));
                loop {
                    match s.put(&k, &v) {
                        Ok(_) => break,
                        Err(StoreError::Backpressure { .. }) => {
                            s.commit().await.unwrap();
                            s.maintain(8 << 20).await.unwrap();
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                if (i + 1) % a.sync_every == 0 {
                    let tc = Instant::now();
                    s.commit().await.unwrap();
                    hc.record(tc.elapsed().as_nanos() as u64).unwrap();
                    // Run-loop style: a bounded flush/compaction step per group commit.
                    let tm = Instant::now();
                    s.maintain(4 << 20).await.unwrap();
                    hm.record(tm.elapsed().as_nanos() as u64).unwrap();
                }
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
            s.commit().await.unwrap();
            let load_secs = t0.elapsed().as_secs_f64();
            let mut load = summary("random_put", n, load_secs, &h);
            let t1 = Instant::now();
            s.flush().await.unwrap();
            while !s.compact_step(64 << 20).await.unwrap().idle {}
            let settle = t1.elapsed().as_secs_f64();
            let st = s.stats();
            let user = n * (12 + VALUE as u64);
            let written = st.wal_bytes_written + st.flushed_bytes + st.compacted_bytes;
            load["settle_seconds"] = json!(settle);
            let lat = |h: &Histogram<u64>| {
                json!({"count": h.len(), "p99_us": h.value_at_quantile(0.99) as f64 / 1000.0,
                       "max_us": h.max() as f64 / 1000.0})
            };
            load["commit_latency"] = lat(&hc);
            load["maintain_latency"] = lat(&hm);
            let disk = dir_bytes(&dir);
            drop_caches(a.drop_caches);
            let p = Phases { a };
            let hot = p.gets("get_hot", true, |k| s.get(k).unwrap().is_some());
            drop_caches(a.drop_caches);
            let cold = p.gets("get_cold", false, |k| s.get(k).unwrap().is_some());
            let scans = p.scans(|pre| s.scan_prefix(pre).unwrap().try_fold(0u64, |n, r| r.map(|_| n + 1)).unwrap());
            let st2 = s.stats();
            json!({
                "engine": "weir-storage",
                "phases": [load, hot, cold, scans],
                "write_amplification": written as f64 / user as f64,
                "space_amplification": disk as f64 / user as f64,
                "bytes": {"user": user, "wal": st.wal_bytes_written, "flush": st.flushed_bytes,
                          "compaction": st.compacted_bytes, "disk_after_settle": disk},
                "runs_after_settle": st.runs,
                "block_cache_hits": st2.block_cache_hits,
                "block_cache_misses": st2.block_cache_misses,
            })
        })
}

#[cfg(feature = "rocksdb")]
fn run_rocksdb(a: &Args) -> Value {
    use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Direction, IteratorMode, Options, WriteOptions, DB};
    let dir = a.dir.join("rocksdb");
    let _ = std::fs::remove_dir_all(&dir);
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_compression_type(DBCompressionType::None);
    o.set_write_buffer_size(32 << 20);
    o.set_max_background_jobs(2);
    o.enable_statistics();
    let mut t = BlockBasedOptions::default();
    t.set_bloom_filter(10.0, false);
    t.set_block_cache(&Cache::new_lru_cache(64 << 20));
    o.set_block_based_table_factory(&t);
    let db = DB::open(&o, &dir).unwrap();
    let mut nosync = WriteOptions::default();
    nosync.set_sync(false);
    let mut sync = WriteOptions::default();
    sync.set_sync(true);
    let n = a.keys;
    let mut h = hist();
    let t0 = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let w = if (i + 1) % a.sync_every == 0 || i + 1 == n { &sync } else { &nosync };
        db.put_opt(key(i, n), value(i), w).unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let mut load = summary("random_put", n, t0.elapsed().as_secs_f64(), &h);
    let t1 = Instant::now();
    db.flush().unwrap();
    loop {
        let pending = db.property_int_value("rocksdb.compaction-pending").unwrap().unwrap_or(0);
        let running = db.property_int_value("rocksdb.num-running-compactions").unwrap().unwrap_or(0);
        if pending == 0 && running == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    load["settle_seconds"] = json!(t1.elapsed().as_secs_f64());
    let stats = o.get_statistics().unwrap_or_default();
    let ticker = |name: &str| -> u64 {
        stats
            .lines()
            .find(|l| l.starts_with(&format!("{name} COUNT")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    let user = n * (12 + VALUE as u64);
    let (wal, flush, comp) = (
        ticker("rocksdb.wal.bytes"),
        ticker("rocksdb.flush.write.bytes"),
        ticker("rocksdb.compact.write.bytes"),
    );
    let disk = dir_bytes(&dir);
    drop_caches(a.drop_caches);
    let p = Phases { a };
    let hot = p.gets("get_hot", true, |k| db.get(k).unwrap().is_some());
    drop_caches(a.drop_caches);
    let cold = p.gets("get_cold", false, |k| db.get(k).unwrap().is_some());
    let scans = p.scans(|pre| {
        let mut c = 0;
        for r in db.iterator(IteratorMode::From(pre, Direction::Forward)) {
            let (k, _) = r.unwrap();
            if !k.starts_with(pre) {
                break;
            }
            c += 1;
        }
        c
    });
    json!({
        "engine": "rocksdb",
        "phases": [load, hot, cold, scans],
        "write_amplification": (wal + flush + comp) as f64 / user as f64,
        "space_amplification": disk as f64 / user as f64,
        "bytes": {"user": user, "wal": wal, "flush": flush, "compaction": comp, "disk_after_settle": disk},
    })
}

#[cfg(not(feature = "rocksdb"))]
fn run_rocksdb(_: &Args) -> Value {
    json!({"engine": "rocksdb", "error": "built without --features rocksdb"})
}

fn ratios(w: &Value, r: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let (Some(wp), Some(rp)) = (w["phases"].as_array(), r["phases"].as_array()) {
        for (x, y) in wp.iter().zip(rp) {
            let name = x["phase"].as_str().unwrap_or("?").to_string();
            let f = |k: &str| x[k].as_f64().unwrap_or(0.0) / y[k].as_f64().unwrap_or(f64::NAN);
            out.insert(name, json!({"ops_per_sec": f("ops_per_sec"), "p99": f("p99_us")}));
        }
    }
    for k in ["write_amplification", "space_amplification"] {
        out.insert(k.into(), json!(w[k].as_f64().unwrap_or(0.0) / r[k].as_f64().unwrap_or(f64::NAN)));
    }
    Value::Object(out)
}

fn main() {
    let a = args();
    std::fs::create_dir_all(&a.dir).unwrap();
    let mut res = json!({
        "keys": a.keys, "ops": a.ops, "value_bytes": VALUE, "key_bytes": 12,
        "sync_every": a.sync_every, "drop_caches": a.drop_caches,
    });
    let w = (a.engine != "rocksdb").then(|| run_weir(&a));
    let r = (a.engine != "weir").then(|| run_rocksdb(&a));
    if let (Some(w), Some(r)) = (&w, &r) {
        res["weir_over_rocksdb"] = ratios(w, r);
    }
    res["weir"] = w.unwrap_or(Value::Null);
    res["rocksdb"] = r.unwrap_or(Value::Null);
    println!("{}", serde_json::to_string_pretty(&res).unwrap());
}
