//! Flink's own answers: every oracle job in `tests/data/oracle/sql` run through weir's SQL
//! front end must produce exactly the rows Apache Flink 2.3.0 produced
//! (`tests/data/oracle/expected`), as multisets, for 1, 2, 3 and 4 shards. Values are compared
//! the way the oracle's `compare.py` does: timestamps as UTC epoch ms, numbers to 6 decimals.
//! The `extra_*` jobs are weir's own scripts, answered by Flink 2.3.0 the same way.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use weir::config::EngineConfig;

const ORACLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/oracle");

/// Gunzip the oracle's input files once per test process into a private folder.
fn data_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("weir-sql-oracle-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["bid", "person", "auction"] {
            let text = gunzip(&Path::new(ORACLE).join(format!("data/{name}.csv.gz")));
            std::fs::write(dir.join(format!("{name}.csv")), text).unwrap();
        }
        dir
    })
}

fn gunzip(path: &Path) -> String {
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut s).unwrap();
    s
}

/// A field normalised like compare.py: numbers (and timestamps as epoch ms) to 6 decimals.
fn norm(v: &str) -> String {
    let v = v.trim();
    if let Some(ms) = parse_ts(v) {
        return format!("{:.6}", ms as f64);
    }
    match v.parse::<f64>() {
        Ok(x) if !v.is_empty() => format!("{x:.6}"),
        _ => v.to_string(),
    }
}

fn parse_ts(v: &str) -> Option<i64> {
    let b = v.as_bytes();
    if b.len() < 16 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b' ' || b[10] == b'T') {
        return None;
    }
    let s = v.trim_end_matches('Z');
    let (date, time) = s.split_at(10);
    let time = &time[1..];
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (h, mi) = (t.next()?.ok()?, t.next()?.ok()?);
    let sec = t.next().map(|x| x.ok()).unwrap_or(Some(0))?;
    let mut ms = 0;
    for k in 0..3 {
        ms = ms * 10 + frac.as_bytes().get(k).map(|c| (c - b'0') as i64).unwrap_or(0);
    }
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + dd - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400_000 + ((h * 60 + mi) * 60 + sec) * 1000 + ms)
}

fn load_rows(texts: impl IntoIterator<Item = String>) -> BTreeMap<Vec<String>, usize> {
    let mut rows = BTreeMap::new();
    for text in texts {
        let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(text.as_bytes());
        for rec in r.records() {
            let rec = rec.unwrap();
            if rec.is_empty() {
                continue;
            }
            *rows.entry(rec.iter().map(norm).collect()).or_insert(0) += 1;
        }
    }
    rows
}

fn output_texts(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !name.starts_with('.') && !name.starts_with('_') {
            out.push(std::fs::read_to_string(&p).unwrap());
        }
    }
    out
}

fn run_oracle(job: &str) {
    run_job(Path::new(ORACLE), job);
}

/// weir's own extra jobs, answered by Flink 2.3.0 the same way (see weir_sql/README.md).
fn run_extra(job: &str) {
    run_job(&Path::new(ORACLE).join("weir_sql"), job);
}

fn run_job(dir: &Path, job: &str) {
    let script = std::fs::read_to_string(dir.join(format!("sql/{job}.sql"))).unwrap();
    let expected = dir.join(format!("expected/{job}.csv.gz"));
    run_script_against(&script, job, &[(None, expected)]);
}

/// Run `script` on 1 to 4 shards; each `(subfolder of ${OUT}, expected answer)` must match.
fn run_script_against(script: &str, job: &str, answers: &[(Option<&str>, PathBuf)]) {
    run_script_against_timing(script, job, answers, &|_| false);
}

/// [`run_job`] with the input files read as byte ranges of `split_bytes` (jobs that only scan,
/// filter and project read them so; the others as whole files, as before).
fn run_job_split(dir: &Path, job: &str, split_bytes: u64) {
    let script = std::fs::read_to_string(dir.join(format!("sql/{job}.sql"))).unwrap();
    let expected = dir.join(format!("expected/{job}.csv.gz"));
    let label = format!("{job}-ranges");
    run_with_config(&script, &label, &[(None, expected)], &|_| false, &|c| c.file_split_bytes = split_bytes);
}

/// [`run_script_against`], where rows that `timing_dependent` names may appear once beyond the
/// expected answer: rows whose presence depends on how two inputs' watermarks interleave (a
/// race in Flink as in weir), never any other row.
fn run_script_against_timing(script: &str, job: &str, answers: &[(Option<&str>, PathBuf)], timing_dependent: &dyn Fn(&[String]) -> bool) {
    run_with_config(script, job, answers, timing_dependent, &|_| {});
}

fn run_with_config(
    script: &str,
    job: &str,
    answers: &[(Option<&str>, PathBuf)],
    timing_dependent: &dyn Fn(&[String]) -> bool,
    configure: &dyn Fn(&mut EngineConfig),
) {
    for cores in 1..=4 {
        let out = std::env::temp_dir().join(format!("weir-sql-oracle-out-{}-{job}-{cores}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let vars: HashMap<String, String> = [
            ("DATA".to_string(), data_dir().display().to_string()),
            ("OUT".to_string(), out.display().to_string()),
        ]
        .into();
        let mut config = EngineConfig {
            cores,
            pin_cores: false,
            ..Default::default()
        };
        configure(&mut config);
        let report = weir::sql::run_script(script, &vars, config).unwrap_or_else(|e| panic!("{job} on {cores} cores: {e}"));
        assert_eq!(report.shards, cores);
        for (sub, expected) in answers {
            let want = load_rows([gunzip(expected)]);
            let total: usize = want.values().sum();
            let mut got = load_rows(output_texts(&sub.map(|s| out.join(s)).unwrap_or_else(|| out.clone())));
            got.retain(|row, n| want.contains_key(row) || !(*n == 1 && timing_dependent(row)));
            if got != want {
                let missing: Vec<_> = want.iter().filter(|(r, n)| got.get(*r) != Some(n)).take(3).collect();
                let extra: Vec<_> = got.iter().filter(|(r, n)| want.get(*r) != Some(n)).take(3).collect();
                let got_total: usize = got.values().sum();
                panic!("{job} {sub:?} on {cores} cores: {got_total} rows, want {total}\n  missing/diff {missing:?}\n  extra/diff {extra:?}");
            }
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn q1_project() {
    run_oracle("q1_project");
}

#[test]
fn q2_filter() {
    run_oracle("q2_filter");
}

/// Scans that only filter and project read the bid file as ~150 byte ranges, split among the
/// shards: the same rows.
#[test]
fn project_and_filter_over_byte_ranges() {
    for job in ["q1_project", "q2_filter"] {
        run_job_split(Path::new(ORACLE), job, 100_000);
    }
    run_job_split(&Path::new(ORACLE).join("weir_sql"), "scalar_functions", 100_000);
}

#[test]
fn tumble_agg() {
    run_oracle("tumble_agg");
}

#[test]
fn hop_count() {
    run_oracle("hop_count");
}

#[test]
fn session_bidder() {
    run_oracle("session_bidder");
}

#[test]
fn q7_highest_bid() {
    run_oracle("q7_highest_bid");
}

#[test]
fn extra_cumulate_distinct() {
    run_extra("cumulate_distinct");
}

#[test]
fn extra_scalar_functions() {
    run_extra("scalar_functions");
}

#[test]
fn extra_session_channel() {
    run_extra("session_channel");
}

#[test]
fn extra_view_having() {
    run_extra("view_having");
}

/// A WHERE over an event-time table (through a view) before a tumbling window: Flink
/// generates the watermark before the filter, so the bids it drops still advance it, and two
/// expensive bids that would be on time by the expensive bids' own watermark are late.
#[test]
fn extra_filtered_tumble() {
    run_extra("filtered_tumble");
}

/// The same, with the input read as byte ranges (the fused filter runs in every range's reader).
#[test]
fn extra_filtered_tumble_parallel_parse() {
    let dir = Path::new(ORACLE).join("weir_sql");
    let script = std::fs::read_to_string(dir.join("sql/filtered_tumble.sql")).unwrap();
    let expected = dir.join("expected/filtered_tumble.csv.gz");
    run_with_config(&script, "filtered_tumble-chunks", &[(None, expected)], &|_| false, &|c| {
        c.file_parse_chunk_bytes = 64 * 1024
    });
}

/// Outer window join. Flink's WindowJoinOperator drops a row only if its window has already
/// fired at the join, i.e. `window_end - 1 <= min(left watermark, right watermark)`; the window
/// TVF before it drops nothing. The 9 bids of the left input that are late on their own stream
/// (window_end - 1 <= the bid stream's watermark before them) therefore survive in Flink exactly
/// when the right input's watermark (the output of a window aggregate in another task) happened
/// to lag behind at that moment: in the recorded run, 5 did (padded with NULLs, no right row
/// matched) and 4 did not. That split is thread timing, not a rule — in weir too, whose two
/// scans of the bid table are separate source tasks: usually the join sees both watermarks in
/// step and drops all 9, but now and then one survives. This test checks weir's rows are
/// Flink's answer minus the NULL-padded rows of such late left bids, where each of those 9 may
/// still appear once (padded), and nothing else differs.
#[test]
fn extra_window_left_join() {
    let dir = Path::new(ORACLE).join("weir_sql");
    let expected = gunzip(&dir.join("expected/window_left_join.csv.gz"));
    // Left rows late on the bid stream: (auction, price, window_start) with the watermark rule.
    let mut late = std::collections::HashSet::new();
    let (mut max_ts, mut wm) = (i64::MIN, i64::MIN);
    for line in std::fs::read_to_string(data_dir().join("bid.csv")).unwrap().lines() {
        let f: Vec<&str> = line.split(',').collect();
        let (auction, price, ms): (i64, i64, i64) = (f[0].parse().unwrap(), f[2].parse().unwrap(), f[5].parse().unwrap());
        let start = ms - ms.rem_euclid(10_000);
        if auction % 50 == 0 && start + 10_000 - 1 <= wm {
            late.insert((auction, price, start));
        }
        max_ts = max_ts.max(ms);
        wm = max_ts - 4000;
    }
    let mut kept = String::new();
    let mut removed = 0;
    for line in expected.lines() {
        let f: Vec<&str> = line.split(',').collect();
        let key = (f[0].parse::<i64>().unwrap(), f[1].parse::<i64>().unwrap(), f[3].parse::<i64>().unwrap());
        if f[2].is_empty() && late.contains(&key) {
            removed += 1;
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    assert_eq!((late.len(), removed), (9, 5), "late left bids, and those Flink padded");
    let path = std::env::temp_dir().join(format!("weir-sql-oracle-wlj-{}.csv.gz", std::process::id()));
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, kept.as_bytes()).unwrap();
    gz.finish().unwrap();
    let script = std::fs::read_to_string(dir.join("sql/window_left_join.sql")).unwrap();
    let int = |v: &String| v.parse::<f64>().ok().map(|x| x as i64);
    let late_padded = |row: &[String]| match (row.len(), row.get(2).map(String::is_empty)) {
        (4, Some(true)) => matches!((int(&row[0]), int(&row[1]), int(&row[3])), (Some(a), Some(p), Some(s)) if late.contains(&(a, p, s))),
        _ => false,
    };
    run_script_against_timing(&script, "window_left_join", &[(None, path.clone())], &late_padded);
    let _ = std::fs::remove_file(path);
}

/// Two INSERTs in one `EXECUTE STATEMENT SET` job: each sink gets exactly Flink's answer to its
/// query alone (q1_project and q2_filter).
#[test]
fn extra_statement_set() {
    let dir = Path::new(ORACLE).join("weir_sql");
    let script = std::fs::read_to_string(dir.join("sql/statement_set.sql")).unwrap();
    let expected = |job: &str| Path::new(ORACLE).join(format!("expected/{job}.csv.gz"));
    run_script_against(
        &script,
        "statement_set",
        &[(Some("q1_project"), expected("q1_project")), (Some("q2_filter"), expected("q2_filter"))],
    );
}

/// Window Top-N over a window aggregate (ties broken by the ORDER BY's later keys).
#[test]
fn extra_window_topn() {
    run_extra("window_topn");
}

/// Window Top-N directly over a HOP window TVF, partitioned by a string key.
#[test]
fn extra_window_topn_tvf() {
    run_extra("window_topn_tvf");
}

/// Window deduplication: the last bid of each bidder per tumbling window.
#[test]
fn extra_window_dedup() {
    run_extra("window_dedup");
}

/// Interval join of auctions with the bids of their first two seconds.
#[test]
fn extra_interval_join() {
    run_extra("interval_join");
}

/// OVER aggregation with a ROWS frame through a `WINDOW` clause: COUNT, SUM, MIN, MAX, AVG of
/// BIGINT and of DOUBLE over each bid and the 4 before it of its auction. Bids of one auction
/// at equal times are framed one by one in file order; bids not after their auction's last
/// emitted time are late and dropped, as Flink drops them.
#[test]
fn extra_over_rows() {
    run_extra("over_rows");
}

/// OVER aggregation with a RANGE frame of 10 s per bidder (peers at equal times share the
/// frame), with NULL arguments (COUNT and SUM of a CASE without ELSE) and a DECIMAL average.
#[test]
fn extra_over_range() {
    run_extra("over_range");
}

/// OVER aggregation without PARTITION BY (one partition): MIN/MAX over a sliding ROWS frame.
#[test]
fn extra_over_global_rows() {
    run_extra("over_global_rows");
}

/// OVER aggregation over a window aggregate's result, ordered by its `window_time`.
#[test]
fn extra_over_window_agg() {
    run_extra("over_window_agg");
}
