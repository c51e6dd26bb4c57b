//! Scenario: bad input lines (wrong type, missing field, unparsable JSON, invalid UTF-8, too
//! long) under each `on_bad_record` policy: Fail names file, line and field; Skip counts; the
//! dead-letter output holds exactly the bad lines with their errors. And random bytes never
//! make the source panic or lose a line.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use weir::prelude::*;
use weir::source::file::FileSource;

#[derive(Clone, Debug, Deserialize, PartialEq)]
struct Row {
    id: u64,
    name: String,
    score: i64,
}

const MAX_LINE: usize = 64;

fn config(cores: usize, policy: ErrorPolicy, dead_letters: Option<PathBuf>) -> EngineConfig {
    EngineConfig {
        cores,
        pin_cores: false,
        on_bad_record: policy,
        max_line_bytes: MAX_LINE,
        dead_letter_dir: dead_letters,
        dead_letter_buffer_records: 1,
        ..Default::default()
    }
}

fn row(id: u64, name: &str, score: i64) -> Row {
    Row { id, name: name.into(), score }
}

/// One bad line of a kind, as CSV and as JSON, with the field and message expected.
struct Case {
    kind: &'static str,
    csv: Vec<u8>,
    csv_field: Option<&'static str>,
    csv_message: &'static str,
    json: Vec<u8>,
    json_field: Option<&'static str>,
    json_message: &'static str,
}

fn cases() -> Vec<Case> {
    let long = "x".repeat(MAX_LINE + 1);
    vec![
        Case {
            kind: "wrong type",
            csv: b"3,carol,lots".to_vec(),
            csv_field: Some("score"),
            csv_message: "invalid digit found in string (value \"lots\")",
            json: br#"{"id":3,"name":"carol","score":"lots"}"#.to_vec(),
            json_field: Some("score"),
            json_message: "invalid type: string \"lots\", expected i64",
        },
        Case {
            kind: "missing field",
            csv: b"3,carol".to_vec(),
            csv_field: Some("score"),
            csv_message: "missing: the record has 2 fields",
            json: br#"{"id":3,"name":"carol"}"#.to_vec(),
            json_field: Some("score"),
            json_message: "missing field `score`",
        },
        Case {
            kind: "unparsable",
            csv: b"\"3\",carol\",\"x".to_vec(),
            csv_field: Some("score"),
            csv_message: "invalid digit found in string (value \"x\")",
            json: br#"{"id":3,"name":"carol","#.to_vec(),
            json_field: None,
            json_message: "EOF while parsing a value",
        },
        Case {
            kind: "invalid UTF-8",
            csv: b"3,car\xffol,7".to_vec(),
            csv_field: Some("name"),
            csv_message: "invalid utf-8 sequence of 1 bytes from index 3 (value \"car\u{fffd}ol\")",
            json: b"{\"id\":3,\"name\":\"car\xffol\",\"score\":7}".to_vec(),
            json_field: Some("name"),
            json_message: "invalid unicode code point",
        },
        Case {
            kind: "too long",
            csv: format!("3,{long},7").into_bytes(),
            csv_field: None,
            csv_message: "line longer than max_line_bytes = 64",
            json: format!("{{\"id\":3,\"name\":\"{long}\",\"score\":7}}").into_bytes(),
            json_field: None,
            json_message: "line longer than max_line_bytes = 64",
        },
    ]
}

/// Good lines 1, 2 and 4; the bad line is line 3.
fn write_file(path: &Path, json: bool, bad: &[u8]) {
    let good = |r: &Row| {
        if json {
            format!("{{\"id\":{},\"name\":\"{}\",\"score\":{}}}\n", r.id, r.name, r.score)
        } else {
            format!("{},{},{}\n", r.id, r.name, r.score)
        }
    };
    let mut bytes = Vec::new();
    bytes.extend(good(&row(1, "ann", 10)).bytes());
    bytes.extend(good(&row(2, "bob", 20)).bytes());
    bytes.extend_from_slice(bad);
    bytes.push(b'\n');
    bytes.extend(good(&row(4, "dan", 40)).bytes());
    std::fs::write(path, bytes).unwrap();
}

fn source(path: &Path, json: bool) -> FileSource<Row> {
    let s = if json { FileSource::json_lines(path) } else { FileSource::csv(path) };
    s.unwrap().chunk_bytes(7)
}

fn run(config: EngineConfig, source: FileSource<Row>) -> (Result<JobReport>, Vec<Row>) {
    let env = StreamEnv::new(config);
    let out = env.source(source).without_event_time().collect();
    let result = env.execute();
    let mut rows = out.take();
    rows.sort_by_key(|r| r.id);
    (result, rows)
}

#[test]
fn fail_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for case in cases() {
        for json in [false, true] {
            let path = dir.path().join(if json { "rows.jsonl" } else { "rows.csv" });
            write_file(&path, json, if json { &case.json } else { &case.csv });
            let (result, _) = run(config(1, ErrorPolicy::Fail, None), source(&path, json));
            let (field, message) = if json {
                (case.json_field, case.json_message)
            } else {
                (case.csv_field, case.csv_message)
            };
            let field = field.map(|f| format!(" field `{f}`")).unwrap_or_default();
            let want = format!("bad record in {} line 3{field}: {message}", path.display());
            assert_eq!(result.err().map(|e| e.to_string()), Some(want), "{} json={json}", case.kind);
        }
    }
}

#[test]
fn skip_counts_every_bad_line_and_keeps_every_good_one() {
    let dir = tempfile::tempdir().unwrap();
    for json in [false, true] {
        // One file per kind, in one folder, read by 1..3 shards.
        let folder = dir.path().join(if json { "json" } else { "csv" });
        std::fs::create_dir(&folder).unwrap();
        let cases = cases();
        for (i, case) in cases.iter().enumerate() {
            write_file(&folder.join(format!("rows-{i}")), json, if json { &case.json } else { &case.csv });
        }
        for cores in 1..=3 {
            let (result, rows) = run(config(cores, ErrorPolicy::Skip, None), source(&folder, json));
            let report = result.unwrap();
            let mut want: Vec<Row> = (0..cases.len())
                .flat_map(|_| [row(1, "ann", 10), row(2, "bob", 20), row(4, "dan", 40)])
                .collect();
            want.sort_by_key(|r| r.id);
            assert_eq!(rows, want, "json={json} cores={cores}");
            let source_figures = report.operator("source:file#1");
            assert_eq!(source_figures.bad_records, cases.len() as u64, "json={json} cores={cores}");
            assert_eq!(source_figures.records_out, 3 * cases.len() as u64);
        }
    }
}

#[derive(Debug, Deserialize, PartialEq)]
struct DeadLetter {
    file: String,
    line: u64,
    field: Option<String>,
    error: String,
    raw: String,
    #[serde(default)]
    truncated: bool,
}

#[test]
fn dead_letter_holds_exactly_the_bad_lines_with_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    for json in [false, true] {
        let folder = dir.path().join(if json { "json" } else { "csv" });
        let letters = dir.path().join(if json { "json-dead" } else { "csv-dead" });
        std::fs::create_dir(&folder).unwrap();
        let cases = cases();
        let mut want = Vec::new();
        for (i, case) in cases.iter().enumerate() {
            let path = folder.join(format!("rows-{i}"));
            let bad = if json { &case.json } else { &case.csv };
            write_file(&path, json, bad);
            let too_long = case.kind == "too long";
            let raw = if too_long { &bad[..256.min(bad.len())] } else { &bad[..] };
            want.push(DeadLetter {
                file: path.to_string_lossy().into_owned(),
                line: 3,
                field: (if json { case.json_field } else { case.csv_field }).map(str::to_string),
                error: (if json { case.json_message } else { case.csv_message }).to_string(),
                raw: String::from_utf8_lossy(raw).into_owned(),
                truncated: too_long,
            });
        }
        let cores = 2;
        let (result, rows) = run(config(cores, ErrorPolicy::DeadLetter, Some(letters.clone())), source(&folder, json));
        let report = result.unwrap();
        assert_eq!(rows.len(), 3 * cases.len());
        assert_eq!(report.operator("source:file#1").bad_records, cases.len() as u64);
        let mut got: Vec<DeadLetter> = Vec::new();
        for shard in 0..cores {
            let text = std::fs::read_to_string(letters.join(format!("dead-letter-{shard}.jsonl"))).unwrap();
            got.extend(text.lines().map(|l| serde_json::from_str::<DeadLetter>(l).unwrap()));
        }
        got.sort_by(|a, b| a.file.cmp(&b.file));
        assert_eq!(got, want, "json={json}");
    }
}

#[test]
fn with_a_header_the_field_is_the_column_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    std::fs::write(&path, "score;id;name\n10;1;ann\n\n1e3;2;bob\n").unwrap();
    let source = FileSource::csv(&path).unwrap().has_header(true).delimiter(b';');
    // The job fails at the bad line (records read before it are not promised to reach the sink).
    let (result, _) = run(config(1, ErrorPolicy::Fail, None), source);
    let want = format!(
        "bad record in {} line 4 field `score`: invalid digit found in string (value \"1e3\")",
        path.display()
    );
    assert_eq!(result.err().map(|e| e.to_string()), Some(want));
}

#[test]
fn an_unreadable_csv_header_fails_whatever_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rows.csv");
    std::fs::write(&path, format!("id,name,score{}\n1,ann,10\n", ",x".repeat(MAX_LINE))).unwrap();
    let (result, rows) = run(config(1, ErrorPolicy::Skip, None), FileSource::csv(&path).unwrap().has_header(true));
    let want = format!("bad record in {} line 1: header line longer than max_line_bytes = 64", path.display());
    assert_eq!(result.err().map(|e| e.to_string()), Some(want));
    assert_eq!(rows, vec![]);
}

/// What a reference line splitter says about `bytes`: (line text or None if bad, is blank).
fn reference_lines(bytes: &[u8]) -> Vec<Option<String>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    body.split(|&b| b == b'\n')
        .map(|l| {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if l.len() > MAX_LINE {
                None
            } else {
                std::str::from_utf8(l).ok().map(str::to_string)
            }
        })
        .collect()
}

#[test]
fn random_bytes_never_panic_and_every_line_is_accounted_for() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet: &[u8] = b"0123456789,,\"\"{}[]:\n\n\r idnamescore\xff\xc3\xa9-.";
    let dir = tempfile::tempdir().unwrap();
    for round in 0..12 {
        let len = (next() % 600) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                if next() % 8 == 0 {
                    next() as u8
                } else {
                    alphabet[(next() % alphabet.len() as u64) as usize]
                }
            })
            .collect();
        let path = dir.path().join(format!("random-{round}"));
        std::fs::write(&path, &bytes).unwrap();
        let chunk = 1 + (next() % 17) as usize;
        let reference = reference_lines(&bytes);

        // Raw lines: exactly the reference, bad lines counted.
        let env = StreamEnv::new(config(1, ErrorPolicy::Skip, None));
        let out = env.source(FileSource::lines(&path).unwrap().chunk_bytes(chunk)).without_event_time().collect();
        let report = env.execute().unwrap();
        let got: Vec<(String, u64)> = out.take().into_iter().map(|(l, info)| (l, info.line)).collect();
        let want: Vec<(String, u64)> = reference.iter().enumerate().filter_map(|(i, l)| l.clone().map(|l| (l, i as u64 + 1))).collect();
        assert_eq!(got, want, "round {round}");
        let bad = reference.iter().filter(|l| l.is_none()).count() as u64;
        assert_eq!(report.operators_named("source:file").bad_records, bad, "round {round}");

        // CSV and JSON: every line is a record, a bad record, or blank; Fail fails cleanly.
        let blank_csv = bytes.split(|&b| b == b'\n').filter(|l| l.is_empty() || *l == b"\r").count();
        for json in [false, true] {
            let (result, rows) = run(config(1, ErrorPolicy::Skip, None), source(&path, json).chunk_bytes(chunk));
            let report = result.unwrap();
            let accounted = rows.len() as u64 + report.operators_named("source:file").bad_records;
            if !json {
                let blank = blank_csv - usize::from(bytes.is_empty() || bytes.ends_with(b"\n"));
                assert_eq!(accounted + blank as u64, reference.len() as u64, "round {round}");
            } else {
                assert!(accounted <= reference.len() as u64, "round {round}");
            }
            let (result, _) = run(config(1, ErrorPolicy::Fail, None), source(&path, json).chunk_bytes(chunk));
            if let Err(e) = result {
                assert!(e.to_string().starts_with("bad record in "), "round {round}: {e}");
            }
        }
    }
}
