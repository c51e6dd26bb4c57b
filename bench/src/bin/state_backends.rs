//! Keyed-state backends side by side: the same keyed process-function job on the memory
//! backend and on the LSM backend, in one run, with a state far larger than the LSM cache.
//!
//! The job: `records` records over `keys` keys (uniform, or `--skew hot`: 90 % of the records
//! on 10 % of the keys) → `key_by` → a process function that keeps per key a `ValueState` of
//! (count, sum, 48-byte payload) and emits every 4th count → blackhole. Each backend runs in
//! its own child process (this binary re-executed with `--child`) so its peak RSS is its own.
//! Reported per backend: records/s (wall) and per CPU-second, peak anonymous RSS (sampled; the
//! kernel's `VmHWM` also counts the store's mmap'd, reclaimable file pages), and for LSM the
//! store directory's bytes at the end, the cache and the maintenance figures; then the
//! LSM/memory ratios. JSON goes to stdout
//! and to `--out`.
//!
//! `cargo run --release -p weir-bench --bin state_backends -- [--keys N] [--records M] [--cache-bytes B] [--skew uniform|hot]`

use std::process::Command;
use std::sync::Mutex;

use clap::Parser;
use serde_json::json;
use weir::prelude::*;
use weir::state::local::ShardLocal;
use weir::state::{LsmStats, StateBackend, StateBackendKind};
use weir_bench::{cpu_seconds, RangeSource};

#[derive(Parser, Clone)]
struct Args {
    /// Distinct keys (the state holds one value per key).
    #[arg(long, default_value_t = 2_000_000)]
    keys: u64,
    /// Records through the job.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// LSM cache budget per shard (bytes).
    #[arg(long, default_value_t = 16 << 20)]
    cache_bytes: usize,
    /// Shards.
    #[arg(long, default_value_t = 2)]
    cores: usize,
    /// Key distribution: uniform or hot (90 % of records on 10 % of keys).
    #[arg(long, default_value = "uniform")]
    skew: String,
    /// Folder for the LSM stores (a fresh subfolder is used and removed).
    #[arg(long, default_value = "/tmp")]
    dir: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "bench/results/state_backends.json")]
    out: String,
    /// Internal: run one backend and print its JSON line.
    #[arg(long)]
    child: Option<String>,
}

/// Per-shard LSM figures, published when the operator instance is dropped (at job end).
static LSM_STATS: Mutex<Vec<LsmStats>> = Mutex::new(Vec::new());
/// Per-shard state entries (distinct keys), published at the same time.
static ENTRIES: Mutex<Vec<usize>> = Mutex::new(Vec::new());

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Per key: (count, sum, payload).
type Value = (u64, u64, Vec<u8>);

#[derive(Clone, Default)]
struct Accumulate {
    state: Option<ValueState<u64, Value>>,
    backend: Option<ShardLocal<StateBackend>>,
}

impl KeyedProcessFunction<u64, (u64, u64)> for Accumulate {
    type Out = (u64, u64);
    fn open(&mut self, state: &StateContext<u64>) {
        self.state = Some(state.value("acc", None));
        self.backend = Some(ShardLocal::new(state.backend().clone()));
    }
    fn process(&mut self, key: &u64, r: (u64, u64), ctx: &mut ProcessContext<'_, u64, (u64, u64)>) {
        let (count, sum) = self.state.as_mut().expect("opened").update_with(
            key,
            || (0, 0, vec![(*key & 0xff) as u8; 48]),
            |v| {
                v.0 += 1;
                v.1 = v.1.wrapping_add(r.1);
                (v.0, v.1)
            },
        );
        if count.is_multiple_of(4) {
            ctx.emit((*key, sum));
        }
    }
}

impl Drop for Accumulate {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            ENTRIES.lock().expect("entries lock").push(state.entries());
        }
        if let Some(stats) = self.backend.as_ref().and_then(|b| b.get().lsm_stats()) {
            LSM_STATS.lock().expect("stats lock").push(stats);
        }
    }
}

/// A field of `/proc/self/status` in bytes (`VmHWM`: peak resident set, file-backed pages
/// such as mmap'd store segments included; `RssAnon`: resident anonymous memory now).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim_start_matches(':').trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples `RssAnon` every 20 ms (the kernel keeps no peak of it); returns the running peak.
fn sample_anon_peak() -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p = peak.clone();
    std::thread::spawn(move || loop {
        p.fetch_max(status_bytes("RssAnon"), std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(20));
    });
    peak
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Run the job on one backend (in this process) and describe it.
fn run_child(args: &Args, backend: StateBackendKind) -> serde_json::Value {
    let state_dir = std::path::Path::new(&args.dir).join(format!("weir-state-bench-{}", std::process::id()));
    let env = StreamEnv::new(EngineConfig {
        cores: args.cores,
        state_backend: backend,
        state_dir: Some(state_dir.clone()),
        state_cache_bytes: args.cache_bytes,
        ..Default::default()
    });
    let (keys, hot) = (args.keys, args.skew == "hot");
    let anon_peak = sample_anon_peak();
    let out = env
        .source(RangeSource { count: args.records })
        .without_event_time()
        .map(move |i: u64| {
            let r = splitmix(i);
            let key = if hot && !r.is_multiple_of(10) {
                (r >> 8) % (keys / 10).max(1)
            } else {
                (r >> 8) % keys
            };
            (key, i)
        })
        .key_by(|r: &(u64, u64)| r.0)
        .process(Accumulate::default());
    out.sink(BlackholeSink);
    let cpu0 = cpu_seconds();
    let report = env.execute().expect("the job runs");
    let cpu = cpu_seconds() - cpu0;
    let wall = report.elapsed.as_secs_f64();
    let store_bytes = dir_bytes(&state_dir);
    let _ = std::fs::remove_dir_all(&state_dir);
    let stats = LSM_STATS.lock().expect("stats lock").clone();
    let entries: usize = ENTRIES.lock().expect("entries lock").iter().sum();
    let sum = |f: fn(&LsmStats) -> u64| stats.iter().map(f).sum::<u64>();
    json!({
        "backend": format!("{backend:?}").to_lowercase(),
        "records": args.records, "keys": args.keys, "skew": args.skew, "shards": args.cores,
        "state_entries": entries,
        "logical_state_bytes": entries * 60,
        "wall_s": wall, "cpu_s": cpu,
        "records_per_s": args.records as f64 / wall,
        "records_per_cpu_s": args.records as f64 / cpu.max(1e-9),
        "emitted": report.operators_named("process").records_out,
        "peak_rss_bytes": status_bytes("VmHWM"),
        "peak_anon_rss_bytes": anon_peak.load(std::sync::atomic::Ordering::Relaxed),
        "store_dir_bytes_at_end": store_bytes,
        "cache_budget_bytes_per_shard": args.cache_bytes,
        "cache_hits": sum(|s| s.cache_hits),
        "cache_misses": sum(|s| s.cache_misses),
        "evictions": sum(|s| s.evictions),
        "write_backs": sum(|s| s.write_backs),
        "maintenance_rounds": sum(|s| s.maintenance_rounds),
        "maintenance_s": sum(|s| s.maintenance_ns) as f64 / 1e9,
        "blocked_rounds": sum(|s| s.blocked_rounds),
    })
}

fn main() {
    let args = Args::parse();
    if let Some(backend) = &args.child {
        let kind: StateBackendKind = backend.parse().expect("backend name");
        println!("{}", run_child(&args, kind));
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let mut results = serde_json::Map::new();
    for backend in ["memory", "lsm"] {
        let out = Command::new(&exe)
            .args(std::env::args().skip(1))
            .args(["--child", backend])
            .output()
            .expect("run the child");
        assert!(out.status.success(), "{backend} child failed: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8_lossy(&out.stdout);
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("child JSON");
        eprintln!("{backend}: {v}");
        results.insert(backend.to_string(), v);
    }
    let get = |b: &str, f: &str| results[b][f].as_f64().unwrap_or(0.0);
    // Logical state: one (key, value) per distinct key, as postcard encodes it: ~60 bytes.
    let logical = get("memory", "logical_state_bytes");
    let result = json!({
        "job": "keyed process function, ValueState<(u64, u64, [u8; 48])> per key",
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "logical_state_bytes": logical,
        "lsm_cache_bytes_total": args.cache_bytes * args.cores,
        "memory": results["memory"], "lsm": results["lsm"],
        "throughput_ratio_lsm_over_memory": get("lsm", "records_per_s") / get("memory", "records_per_s"),
        "cpu_efficiency_ratio_lsm_over_memory": get("lsm", "records_per_cpu_s") / get("memory", "records_per_cpu_s"),
        "peak_anon_rss_ratio_lsm_over_memory": get("lsm", "peak_anon_rss_bytes") / get("memory", "peak_anon_rss_bytes"),
        "state_over_cache": logical / (args.cache_bytes * args.cores) as f64,
    });
    let text = serde_json::to_string_pretty(&result).expect("JSON");
    println!("{text}");
    if let Some(parent) = std::path::Path::new(&args.out).parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.out, text + "\n").expect("write results");
}
