//! Shared helpers for integration tests: a seeded PRNG and stream generators.
#![allow(dead_code)]

pub mod crash;
pub mod s3;
pub mod streams;

/// The committed output of a filesystem sink folder: every line of its final-named part files
/// (`part-*`; hidden in-progress files are not output), sorted. Empty if the folder is missing.
pub fn committed_lines(dir: &std::path::Path) -> Vec<String> {
    let mut lines = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return lines };
    for e in entries {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("part-") {
            lines.extend(std::fs::read_to_string(e.path()).unwrap().lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// SplitMix64: small, seeded, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi > lo);
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }
}

/// One test event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ev {
    pub key: i64,
    pub ts: i64,
    pub value: i64,
}

/// An out-of-order stream: time advances 0..`step_max` ms per event, each event is up to
/// `jitter` ms early, and `late_percent` % of events are 60..600 ms behind (mostly late for a
/// watermark delay below 60 ms).
pub fn out_of_order_stream(seed: u64, n: usize, keys: i64, step_max: i64, jitter: i64, late_percent: u64) -> Vec<Ev> {
    let mut rng = Rng::new(seed);
    let mut base = 1_000_000i64;
    (0..n)
        .map(|_| {
            base += rng.range(0, step_max);
            let ts = if rng.chance(late_percent) {
                base - rng.range(60, 600)
            } else {
                base - rng.range(0, jitter + 1)
            };
            Ev {
                key: rng.range(0, keys),
                ts,
                value: rng.range(-1000, 1000),
            }
        })
        .collect()
}

/// The watermark before each record: max ts seen so far − delay (MIN before the first).
pub fn watermarks_before(events: &[Ev], delay: i64) -> Vec<i64> {
    let mut max = i64::MIN;
    events
        .iter()
        .map(|e| {
            let before = if max == i64::MIN { i64::MIN } else { max - delay };
            max = max.max(e.ts);
            before
        })
        .collect()
}

/// The address of a test server started by `.ci/services.sh` (`WEIR_TEST_<NAME>`), or `None`
/// (the test then skips, loudly). Under CI (`CI` set) a missing server fails the test.
pub fn test_server(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: .ci/run starts the test servers with `eval \"$(bash .ci/services.sh start)\"`")
        }
        _ => {
            eprintln!("SKIPPED: {var} is not set (start the servers: eval \"$(bash .ci/services.sh start)\")");
            None
        }
    }
}

/// Copy the directory tree `from` to `to` (created).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Put `base` back exactly as `pristine` (a copy of a stopped or failed run). Restores run in
/// place, not in a copy elsewhere: a file sink's pending output is matched to the sink by its
/// operator name, which includes its folder.
pub fn reset_from(pristine: &std::path::Path, base: &std::path::Path) {
    let _ = std::fs::remove_dir_all(base);
    copy_tree(pristine, base);
}
