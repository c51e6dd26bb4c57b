//! The fused CSV copy (`src/sql/csv_copy.rs`: a CSV → CSV column copy written as text from
//! the parsed fields, no rows built) writes exactly the bytes of the row path
//! (`sql_csv_copy = false`): integers in canonical and other spellings (`+5`, `007`, `-0`,
//! empty = NULL, 19 digits), quoted strings with delimiters, quotes and a CR, long fields, CRLF and
//! blank lines, a last line without a newline, constants, on 1–3 shards over many byte-range
//! splits; bad records fail with the same error or are skipped and counted alike; reads of
//! any size (lines cut across reads, lines longer than a read) give the same rows.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::Rng;

use weir::config::{EngineConfig, ErrorPolicy};

const SCRIPT: &str = "CREATE TABLE t (\n  a BIGINT, b INT, s STRING, c BIGINT, u STRING, ms BIGINT,\n  \
date_time AS TO_TIMESTAMP_LTZ(ms, 3),\n  WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND\n\
) WITH ('connector' = 'filesystem', 'path' = '${DATA}', 'format' = 'csv');\n\
CREATE TABLE out_rows (c BIGINT, s STRING, a BIGINT, k STRING, b INT, n BIGINT, ms BIGINT)\n  \
WITH ('connector' = 'filesystem', 'path' = '${OUT}', 'format' = 'csv');\n\
INSERT INTO out_rows SELECT c, s, a, 'k,\"1\"', b, 7, ms FROM t;\n";

/// An integer field in one of many spellings (canonical most of the time).
fn int_text(next: &mut impl FnMut() -> u64) -> String {
    let v = next() % 2_000_000;
    match next() % 16 {
        0 => format!("+{v}"),
        1 => format!("00{v}"),
        2 => "-0".into(),
        3 => String::new(),
        4 => "0".into(),
        5 => format!("-{v}"),
        6 => "9223372036854775807".into(),
        7 => "-123456789012345678".into(),
        _ => v.to_string(),
    }
}

/// A string field: plain, empty, quoted with delimiters and doubled quotes, non-ASCII, long.
fn str_text(next: &mut impl FnMut() -> u64) -> String {
    match next() % 10 {
        0 => String::new(),
        1 => "\"a,b\"".into(),
        2 => "\"say \"\"hi\"\"\"".into(),
        3 => "grüße".into(),
        4 => "x".repeat(600 + (next() % 50) as usize),
        5 => "\"cr\rinside\"".into(),
        _ => format!("w{}", next() % 1000),
    }
}

/// Seeded files (two, so splits cross files too) with blank and CRLF lines and, in the last
/// file, a last line without a newline; `bad` replaces `b` with a non-integer on those lines
/// of the first file.
fn write_data(dir: &Path, lines: usize, bad: &[usize]) {
    let mut rng = Rng::new(0x005e_edc5_f00d);
    let mut next = move || rng.next_u64();
    for file in 0..2 {
        let mut text = String::new();
        for i in 0..lines {
            let b = if file == 0 && bad.contains(&i) {
                "x7".to_string()
            } else {
                match next() % 8 {
                    0 => "2147483647".into(),
                    1 => "-2147483648".into(),
                    2 => "+3".into(),
                    _ => (next() % 100_000).to_string(),
                }
            };
            let line = format!(
                "{},{b},{},{},{},{}",
                int_text(&mut next),
                str_text(&mut next),
                int_text(&mut next),
                str_text(&mut next),
                1_700_000_000_000 + i as u64
            );
            text.push_str(&line);
            match i % 50 {
                7 => text.push_str("\r\n"),
                11 => text.push_str("\n\n"),
                _ => text.push('\n'),
            }
        }
        if file == 1 {
            text.push_str("1,2,end,3,,1700000009999");
        }
        std::fs::write(dir.join(format!("part-{file}.csv")), text).unwrap();
    }
}

struct Run {
    lines: Vec<String>,
    read: u64,
    written: u64,
    bad: u64,
}

fn config(cores: usize, copy: bool, policy: ErrorPolicy) -> EngineConfig {
    EngineConfig {
        cores,
        pin_cores: false,
        file_split_bytes: 8 << 10,
        sql_csv_copy: copy,
        on_bad_record: policy,
        ..Default::default()
    }
}

fn vars(data: &Path, out: &Path) -> HashMap<String, String> {
    [("DATA".to_string(), data.display().to_string()), ("OUT".to_string(), out.display().to_string())].into()
}

fn run(data: &Path, out: &Path, config: EngineConfig) -> Result<Run, String> {
    let _ = std::fs::remove_dir_all(out);
    let report = weir::sql::run_script(SCRIPT, &vars(data, out), config).map_err(|e| e.to_string())?;
    let source = report.operators_named("source:");
    Ok(Run {
        lines: common::committed_lines(out),
        read: source.records_out,
        written: report.operators_named("sink:").records_in,
        bad: source.bad_records,
    })
}

/// The committed part files' lines with their bytes (CRs and quotes included), sorted: what
/// a file sink promises is the multiset of lines.
fn raw_lines(out: &Path) -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    for e in std::fs::read_dir(out).unwrap() {
        let e = e.unwrap();
        if e.file_name().to_string_lossy().starts_with("part-") {
            let bytes = std::fs::read(e.path()).unwrap();
            assert!(bytes.is_empty() || bytes.ends_with(b"\n"), "a part file ends mid-line");
            lines.extend(bytes.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec));
        }
    }
    lines.sort();
    lines
}

#[test]
fn the_fused_copy_writes_the_bytes_of_the_row_path() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data, 3000, &[]);
    let out = tmp.path().join("out");

    let plan = weir::sql::explain(SCRIPT, &vars(&data, &out), config(2, true, ErrorPolicy::Fail)).unwrap();
    assert!(plan.contains("fused: scan → sink"), "{plan}");
    let plan = weir::sql::explain(SCRIPT, &vars(&data, &out), config(2, false, ErrorPolicy::Fail)).unwrap();
    assert!(!plan.contains("fused: scan → sink"), "{plan}");

    let want = run(&data, &out, config(1, false, ErrorPolicy::Fail)).unwrap();
    let want_raw = raw_lines(&out);
    // 2 × 3000 lines (plus 60 blank ones) and one more without a newline.
    assert_eq!(want.read, 6001, "rows read by the row path");
    assert_eq!(want.written, 6001);
    assert!(want.lines.iter().any(|l| l.starts_with(",")), "NULL integers are written empty");
    assert!(want_raw.iter().any(|l| l.windows(4).any(|w| w == b"\"\"hi")), "quotes are doubled");
    for cores in 1..=3 {
        let got = run(&data, &out, config(cores, true, ErrorPolicy::Fail)).unwrap();
        assert_eq!((got.read, got.written, got.bad), (want.read, want.written, 0), "{cores} shard(s): counts");
        assert!(got.lines == want.lines, "{cores} shard(s): the fused copy's rows differ from the row path's");
        assert!(
            raw_lines(&out) == want_raw,
            "{cores} shard(s): the fused copy's bytes differ from the row path's"
        );
    }
}

#[test]
fn bad_records_fail_or_skip_as_on_the_row_path() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // Lines 40, 41 and 333 of the first file (file lines 42, 43, 341: blank lines come before).
    write_data(&data, 500, &[40, 41, 333]);
    let out = tmp.path().join("out");

    // One shard reads its splits in the same order on both paths: the same first bad line.
    let row_error = run(&data, &out, config(1, false, ErrorPolicy::Fail))
        .err()
        .expect("the row path fails on a bad record");
    let copy_error = run(&data, &out, config(1, true, ErrorPolicy::Fail))
        .err()
        .expect("the fused copy fails on a bad record");
    assert!(
        copy_error.contains("part-0.csv") && copy_error.contains("line 42") && copy_error.contains("`b`"),
        "{copy_error}"
    );
    assert_eq!(copy_error, row_error);
    // On two shards whichever shard meets its bad line first fails the job.
    let copy_error = run(&data, &out, config(2, true, ErrorPolicy::Fail))
        .err()
        .expect("the fused copy fails on a bad record");
    assert!(
        ["line 42 ", "line 341 "].iter().any(|l| copy_error.contains(l)) && copy_error.contains("'x7' is not a valid INT"),
        "{copy_error}"
    );

    let want = run(&data, &out, config(2, false, ErrorPolicy::Skip)).unwrap();
    let got = run(&data, &out, config(2, true, ErrorPolicy::Skip)).unwrap();
    assert_eq!(want.bad, 3);
    assert_eq!((got.read, got.written, got.bad), (want.read, want.written, want.bad));
    assert!(got.lines == want.lines, "skipping: the fused copy's rows differ from the row path's");
}

/// Reads of any size (lines cut across reads, lines longer than a read) give the same rows
/// on both paths: the reader parses where the read landed and carries only a line that runs
/// on into the next read.
#[test]
fn reads_of_any_size_give_the_rows_of_one_big_read() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_data(&data, 800, &[]);
    let out = tmp.path().join("out");
    let want = run(&data, &out, config(1, false, ErrorPolicy::Fail)).unwrap();
    assert_eq!(want.read, 1601);
    for chunk in [7usize, 64, 1000, 4096] {
        for copy in [false, true] {
            let got = run(
                &data,
                &out,
                EngineConfig {
                    file_read_chunk_bytes: chunk,
                    ..config(2, copy, ErrorPolicy::Fail)
                },
            )
            .unwrap();
            assert_eq!(got.read, want.read, "reads of {chunk} bytes, copy {copy}");
            assert!(got.lines == want.lines, "reads of {chunk} bytes, copy {copy}: rows differ");
        }
    }
}
