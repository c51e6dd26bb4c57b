//! The filesystem sink writes CSV and JSON-lines part files per shard, commits them from
//! `.inprogress` to their final names, rolls at the configured size, and loses no row.

use weir::prelude::*;

#[derive(Clone, serde::Serialize)]
struct Row {
    id: i64,
    name: String,
    score: f64,
}

fn rows() -> Vec<Row> {
    (0..5_000)
        .map(|i| Row {
            id: i,
            name: format!("n,\"{i}\""),
            score: i as f64 / 4.0,
        })
        .collect()
}

fn read_dir_lines(dir: &std::path::Path) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        lines.extend(std::fs::read_to_string(entry.path()).unwrap().lines().map(str::to_string));
        names.push(name);
    }
    names.sort();
    (names, lines)
}

#[test]
fn csv_part_files_hold_every_row_and_roll() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        sink_part_file_bytes: 16 << 10,
        // Small writes, each followed by a writeback hint (the path large outputs take).
        sink_min_write_bytes: 1 << 10,
        sink_bytes_per_sync: 2 << 10,
        ..Default::default()
    });
    env.from_collection(rows())
        .without_event_time()
        .key_by(|r: &Row| r.id)
        .partitioned()
        .sink(FileSink::csv(&out));
    let report = env.execute().unwrap();
    let (names, lines) = read_dir_lines(&out);
    assert!(names.iter().all(|n| n.starts_with("part-") && n.ends_with(".csv")), "{names:?}");
    assert!(names.len() > 2, "files roll at 16 KiB: {names:?}");
    assert_eq!(report.operators_named("sink:").records_in, 5_000);
    // Parse back with a CSV reader: quoting of `,` and `"` round-trips.
    let mut parsed: Vec<(i64, String, f64)> = Vec::new();
    for line in &lines {
        let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
        let rec: (i64, String, f64) = r.deserialize().next().unwrap().unwrap();
        parsed.push(rec);
    }
    parsed.sort_by_key(|r| r.0);
    assert_eq!(parsed.len(), 5_000);
    for (i, (id, name, score)) in parsed.iter().enumerate() {
        assert_eq!((*id, name.as_str(), *score), (i as i64, format!("n,\"{i}\"").as_str(), i as f64 / 4.0));
    }
}

#[test]
fn json_lines_part_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("json");
    let env = StreamEnv::new(EngineConfig {
        cores: 3,
        pin_cores: false,
        ..Default::default()
    });
    env.from_collection(rows()).without_event_time().sink(FileSink::json(&out));
    env.execute().unwrap();
    let (names, lines) = read_dir_lines(&out);
    assert!(names.iter().all(|n| n.ends_with(".json") && !n.contains("inprogress")), "{names:?}");
    let mut ids: Vec<i64> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (0..5_000).collect::<Vec<_>>());
}
