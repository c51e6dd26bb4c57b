//! A lone file read in order by an event-time query, parsed in chunks by every shard
//! (`file_parse_chunk_bytes`): the rows, late records, bad-record counts and the failing line of
//! a bad record are exactly those of one in-order read by one shard, for any chunk size, queue
//! depth and shard count (restoring checkpoints of such reads: `tests/sql_over_restore.rs`).

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::Rng;

use weir::config::{EngineConfig, ErrorPolicy};
use weir::sql::run_script;

const SCRIPT: &str = "CREATE TABLE bid (\n  auction BIGINT, price BIGINT, channel STRING, ms BIGINT,\n  date_time AS TO_TIMESTAMP_LTZ(ms, 3),\n  \
WATERMARK FOR date_time AS date_time - INTERVAL '2' SECOND\n) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');\n\
CREATE TABLE out_rows (auction BIGINT, window_start TIMESTAMP(3), n BIGINT, top BIGINT)\n  WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');\n\
INSERT INTO out_rows SELECT auction, window_start, COUNT(*), MAX(price)\n\
FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND))\nGROUP BY auction, window_start, window_end;\n";

/// Seeded bids with up to 5 s of disorder (so a good share is late at a 2 s delay), some
/// empty lines and CRLF endings, `bad` lines of bad prices.
fn write_bids(path: &Path, lines: usize, bad: &[usize]) {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.next_u64();
    let mut text = String::new();
    for i in 0..lines {
        let ms = 1_000_000 + (i as u64) * 7 - next() % 5000;
        let price = if bad.contains(&i) { "x9".to_string() } else { (next() % 1000).to_string() };
        match i % 97 {
            13 => text.push('\n'),
            29 => text.push_str(&format!("{},{price},web,{ms}\r\n", next() % 50)),
            _ => text.push_str(&format!("{},{price},app,{ms}\n", next() % 50)),
        }
    }
    std::fs::write(path, text).unwrap();
}

struct Run {
    /// The committed rows, sorted.
    rows: Vec<String>,
    late: u64,
    bad: u64,
}

fn run(data: &Path, out: &Path, config: EngineConfig) -> Result<Run, String> {
    let _ = std::fs::remove_dir_all(out);
    let vars: HashMap<String, String> = [("DATA".to_string(), data.display().to_string()), ("OUT".to_string(), out.display().to_string())].into();
    let report = run_script(SCRIPT, &vars, config).map_err(|e| e.to_string())?;
    let late = report.operators.values().map(|f| f.late_records_dropped).sum();
    Ok(Run {
        rows: common::committed_lines(out),
        late,
        bad: report.operators_named("source:bid").bad_records,
    })
}

fn config(cores: usize, chunk: u64, ahead: usize) -> EngineConfig {
    EngineConfig {
        cores,
        pin_cores: false,
        file_parse_chunk_bytes: chunk,
        file_parse_ahead_chunks: ahead,
        ..Default::default()
    }
}

#[test]
fn chunks_parsed_on_every_shard_give_the_in_order_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = dir.join("out");
    write_bids(&data.join("bid.csv"), 20_000, &[]);

    // The in-order read on one shard is the reference.
    let want = run(&data, &out, config(1, 0, 1)).unwrap();
    assert!(want.late > 1000, "the data must have late records: {}", want.late);
    for cores in 2..=4 {
        for (chunk, ahead) in [(1000, 1), (7777, 3), (64 << 10, 2)] {
            let got = run(&data, &out, config(cores, chunk, ahead)).unwrap();
            assert_eq!(got.late, want.late, "late records, {cores} shards, chunks of {chunk}");
            assert!(got.rows == want.rows, "rows differ on {cores} shards, chunks of {chunk}");
        }
    }

    // Bad lines (one in a chunk another shard parses): skipped and counted alike, or the job
    // fails naming the same line of the file.
    write_bids(&data.join("bid.csv"), 20_000, &[3, 11_111, 17_000]);
    let skip = |c: EngineConfig| EngineConfig {
        on_bad_record: ErrorPolicy::Skip,
        ..c
    };
    let want = run(&data, &out, skip(config(1, 0, 1))).unwrap();
    assert_eq!(want.bad, 3);
    let want_error = run(&data, &out, config(1, 0, 1)).err().expect("a bad line fails the job");
    assert!(want_error.contains("line 4 field `price`"), "{want_error}");
    for cores in [2, 3] {
        let got = run(&data, &out, skip(config(cores, 5000, 2))).unwrap();
        assert_eq!((got.bad, got.late), (want.bad, want.late));
        assert!(got.rows == want.rows, "rows differ on {cores} shards with bad lines skipped");
    }
    write_bids(&data.join("bid.csv"), 20_000, &[11_111]);
    let want_error = run(&data, &out, config(1, 0, 1)).err().expect("a bad line fails the job");
    // Lines before it: 11 111, of which the empty ones count too.
    assert!(want_error.contains("line 11112 field `price`"), "{want_error}");
    for cores in [2, 3] {
        let got = run(&data, &out, config(cores, 5000, 2)).err().expect("a bad line fails the job");
        assert_eq!(got, want_error);
    }
}
