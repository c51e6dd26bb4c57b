//! Scenario: bids read from CSV and JSON-lines files (a folder of several files, or one file)
//! with event time, counted per auction in tumbling windows, for 1 to 4 shards; plus raw lines
//! cut at every chunk size. The expected answers are computed by brute force.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use weir::prelude::*;
use weir::source::file::{FileSource, LineInfo};

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Bid {
    auction: u64,
    bidder: u64,
    price: i64,
    ts: i64,
}

const WINDOW_MS: i64 = 1_000;
const DELAY_MS: i64 = 300;

/// A small seeded generator (xorshift), so the tests need no extra crates.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` bids with timestamps rising by ~25 ms and shuffled back by up to `disorder_ms`.
fn bids(seed: u64, n: usize, disorder_ms: i64) -> Vec<Bid> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| Bid {
            auction: rng.below(7),
            bidder: rng.below(1000),
            price: rng.below(10_000) as i64,
            ts: 10_000 + i as i64 * 25 - rng.below(disorder_ms as u64 + 1) as i64,
        })
        .collect()
}

fn write_csv(path: &Path, bids: &[Bid], crlf: bool) {
    let nl = if crlf { "\r\n" } else { "\n" };
    let text: String = bids.iter().map(|b| format!("{},{},{},{}{nl}", b.auction, b.bidder, b.price, b.ts)).collect();
    std::fs::write(path, text).unwrap();
}

fn write_json(path: &Path, bids: &[Bid]) {
    let text: String = bids
        .iter()
        .map(|b| format!("{{\"auction\":{},\"bidder\":{},\"price\":{},\"ts\":{}}}\n", b.auction, b.bidder, b.price, b.ts))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// Brute force: each file read in order on its own, windows of `WINDOW_MS`, no allowed lateness;
/// a record is dropped when its window's end - 1 <= the file's watermark before it.
/// Exact for one file; for several files exact when nothing is late within any file.
fn expected(files: &[Vec<Bid>]) -> (Vec<(u64, i64, i64)>, u64) {
    let mut counts: BTreeMap<(u64, i64), i64> = BTreeMap::new();
    let mut late = 0;
    for file in files {
        let mut max_ts = i64::MIN;
        for b in file {
            let wm = if max_ts == i64::MIN { i64::MIN } else { max_ts - DELAY_MS };
            let start = b.ts - b.ts.rem_euclid(WINDOW_MS);
            if start + WINDOW_MS - 1 <= wm {
                late += 1;
            } else {
                *counts.entry((b.auction, start)).or_default() += 1;
            }
            max_ts = max_ts.max(b.ts);
        }
    }
    (counts.into_iter().map(|((a, s), c)| (a, s, c)).collect(), late)
}

fn run<S: weir::source::Source<Bid>>(cores: usize, source: S) -> (Vec<(u64, i64, i64)>, JobReport) {
    let env = StreamEnv::new(EngineConfig {
        cores,
        pin_cores: false,
        batch_size: 64,
        ..Default::default()
    });
    let out = env
        .source(source)
        .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(DELAY_MS), |b: &Bid| b.ts)
        .key_by(|b: &Bid| b.auction)
        .window(WindowAssigner::tumbling(WINDOW_MS))
        .aggregate(Count)
        .collect();
    let report = env.execute().unwrap();
    let mut got: Vec<(u64, i64, i64)> = out.take().into_iter().map(|r| (r.key, r.window_start, r.value)).collect();
    got.sort();
    (got, report)
}

/// A folder of five files (one empty, one CRLF), plus a hidden and an in-progress file that
/// must be skipped. Disorder stays below the delay, so nothing is late however files interleave.
fn bid_folder(dir: &Path, json: bool) -> Vec<Vec<Bid>> {
    let files: Vec<Vec<Bid>> = (0..5)
        .map(|i| if i == 2 { Vec::new() } else { bids(100 + i, 300 + 50 * i as usize, DELAY_MS) })
        .collect();
    for (i, f) in files.iter().enumerate() {
        let path = dir.join(format!("bids-{i}.{}", if json { "jsonl" } else { "csv" }));
        if json {
            write_json(&path, f)
        } else {
            write_csv(&path, f, i == 3)
        }
    }
    std::fs::write(dir.join(".hidden.csv"), "not,a,bid\n").unwrap();
    std::fs::write(dir.join("part-0.csv.inprogress"), "not,a,bid\n").unwrap();
    files
}

/// Shard counts every keyed test runs on: identical answers on each.
const SHARDS: std::ops::RangeInclusive<usize> = 1..=4;

#[test]
fn csv_folder_counts_match_brute_force_for_every_shard_count() {
    csv_folder(SHARDS);
}

fn csv_folder(shards: std::ops::RangeInclusive<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let files = bid_folder(dir.path(), false);
    let (want, late) = expected(&files);
    assert_eq!(late, 0);
    for cores in shards {
        let source = FileSource::<Bid>::csv(dir.path()).unwrap();
        assert_eq!(source.files().len(), 5);
        let (got, report) = run(cores, source);
        assert_eq!(got, want, "cores {cores}");
        let total: usize = files.iter().map(Vec::len).sum();
        assert_eq!(report.operators_named("source:file").records_out, total as u64);
        assert_eq!(report.operators_named("source:file").bad_records, 0);
    }
}

#[test]
fn json_folder_counts_match_brute_force_for_every_shard_count() {
    json_folder(SHARDS);
}

fn json_folder(shards: std::ops::RangeInclusive<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let files = bid_folder(dir.path(), true);
    let (want, _) = expected(&files);
    for cores in shards {
        let (got, _) = run(cores, FileSource::<Bid>::json_lines(dir.path()).unwrap().chunk_bytes(1000));
        assert_eq!(got, want, "cores {cores}");
    }
}

#[test]
fn one_file_with_late_records_gives_the_same_answer_on_every_shard_count() {
    one_file_with_late_records(SHARDS);
}

fn one_file_with_late_records(shards: std::ops::RangeInclusive<usize>) {
    let dir = tempfile::tempdir().unwrap();
    let file = bids(7, 2_000, 3 * DELAY_MS);
    let (csv, json) = (dir.path().join("bids.csv"), dir.path().join("bids.jsonl"));
    write_csv(&csv, &file, false);
    write_json(&json, &file);
    let (want, late) = expected(std::slice::from_ref(&file));
    assert!(late > 50, "the data must have late records ({late})");
    for cores in shards {
        for source in [FileSource::<Bid>::csv(&csv).unwrap(), FileSource::<Bid>::json_lines(&json).unwrap()] {
            let (got, report) = run(cores, source.chunk_bytes(4096));
            assert_eq!(got, want, "cores {cores}");
            assert_eq!(report.operators_named("window").late_records_dropped, late, "cores {cores}");
        }
    }
}

#[test]
fn csv_header_delimiter_and_tiny_chunks() {
    #[derive(Debug, Deserialize, PartialEq)]
    struct City {
        name: String,
        population: u64,
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cities.csv");
    std::fs::write(
        &path,
        "population;name\r\n2148000;Paris\r\n\r\n118000;\"Besançon; Doubs\"\r\n3878;Évian-les-Bains",
    )
    .unwrap();
    for chunk in 1..=9 {
        let env = StreamEnv::new(EngineConfig {
            cores: 1,
            pin_cores: false,
            ..Default::default()
        });
        let source = FileSource::<City>::csv(&path).unwrap().has_header(true).delimiter(b';').chunk_bytes(chunk);
        let out = env.source(source).without_event_time().collect();
        env.execute().unwrap();
        let city = |name: &str, population| City { name: name.into(), population };
        assert_eq!(
            out.take(),
            vec![city("Paris", 2148000), city("Besançon; Doubs", 118000), city("Évian-les-Bains", 3878)],
            "chunk {chunk}"
        );
    }
}

#[test]
fn raw_lines_with_positions_survive_every_chunk_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lines.txt");
    let text = "première ligne\r\n\n日本語のテキスト\n🦀 crab\r\nlast without newline é";
    std::fs::write(&path, text).unwrap();
    let file: std::sync::Arc<str> = path.to_string_lossy().as_ref().into();
    let want: Vec<(String, LineInfo)> = ["première ligne", "", "日本語のテキスト", "🦀 crab", "last without newline é"]
        .iter()
        .enumerate()
        .map(|(i, l)| {
            (
                l.to_string(),
                LineInfo {
                    file: file.clone(),
                    line: i as u64 + 1,
                },
            )
        })
        .collect();
    for chunk in 1..=text.len() + 1 {
        let env = StreamEnv::new(EngineConfig {
            cores: 2,
            pin_cores: false,
            ..Default::default()
        });
        let out = env.source(FileSource::lines(&path).unwrap().chunk_bytes(chunk)).without_event_time().collect();
        env.execute().unwrap();
        assert_eq!(out.take(), want, "chunk {chunk}");
    }
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let err = FileSource::<Bid>::csv("/nonexistent/weir/bids.csv").err().unwrap();
    assert_eq!(
        err.to_string(),
        "reading input path /nonexistent/weir/bids.csv: No such file or directory (os error 2)"
    );
}
