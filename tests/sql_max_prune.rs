//! A window join of rows with their window's MAX (nexmark q7's shape) drops the rows below a
//! maximum already seen before they reach the join: the answer is exactly the unpruned one
//! (the same query with the equi-condition written `price + 0`, which is not pruned), for
//! TUMBLE and HOP windows on disordered input on 1 to 4 shards. The input has no late rows:
//! whether a late row still joins depends on how the join's two inputs' watermarks interleave
//! (a race in Flink as in weir, pruned or not, even on one shard), so such answers cannot be
//! compared; the pruning's lateness rule is unit-tested in `src/sql/prune.rs`.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::Rng;

use weir::config::EngineConfig;
use weir::sql::run_script;

fn script(tvf: &str, condition: &str) -> String {
    format!(
        "CREATE TABLE bid (\n  auction BIGINT, price BIGINT, ms BIGINT,\n  date_time AS TO_TIMESTAMP_LTZ(ms, 3),\n  \
         WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND\n) WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/bid.csv', 'format' = 'csv');\n\
         CREATE TABLE out_rows (auction BIGINT, price BIGINT, window_start TIMESTAMP(3)) WITH ('connector' = 'filesystem', 'path' = '${{OUT}}', 'format' = 'csv');\n\
         INSERT INTO out_rows SELECT L.auction, L.price, L.window_start FROM\n  \
         (SELECT auction, price, window_start, window_end FROM TABLE({tvf})) L\nJOIN\n  \
         (SELECT MAX(price) AS maxprice, window_start, window_end FROM TABLE({tvf}) GROUP BY window_start, window_end) R\n\
         ON L.window_start = R.window_start AND L.window_end = R.window_end AND {condition};\n"
    )
}

/// Seeded bids, up to `disorder_ms` of disorder (against a 1 s watermark delay), prices from
/// a small range (ties for the maximum).
fn write_bids(path: &Path, lines: usize, disorder_ms: u64) {
    let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng.next_u64();
    let mut text = String::new();
    for i in 0..lines {
        let ms = 1_000_000 + (i as u64) * 3 - next() % disorder_ms;
        text.push_str(&format!("{},{},{ms}\n", next() % 100, next() % 500));
    }
    std::fs::write(path, text).unwrap();
}

/// The committed rows (sorted), late records dropped, and whether the pruning ran.
fn run(script: &str, data: &Path, out: &Path, cores: usize) -> (Vec<String>, u64, bool) {
    let _ = std::fs::remove_dir_all(out);
    let vars: HashMap<String, String> = [("DATA".to_string(), data.display().to_string()), ("OUT".to_string(), out.display().to_string())].into();
    let config = EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    let report = run_script(script, &vars, config).unwrap();
    let rows = common::committed_lines(out);
    let late = report.operators.values().map(|f| f.late_records_dropped).sum();
    let pruned = report.operators.keys().any(|name| name.contains("max_prune"));
    (rows, late, pruned)
}

#[test]
fn rows_below_a_window_maximum_are_pruned_without_changing_the_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = dir.join("out");
    for (disorder_ms, shards) in [(900, 1..=4)] {
        write_bids(&data.join("bid.csv"), 30_000, disorder_ms);
        for tvf in [
            "TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND)",
            "HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '1' SECOND, INTERVAL '3' SECOND)",
        ] {
            let pruned = script(tvf, "L.price = R.maxprice");
            let plain = script(tvf, "L.price + 0 = R.maxprice");
            let (want, want_late, was_pruned) = run(&plain, &data, &out, 1);
            assert!(!was_pruned, "`price + 0` is not pruned");
            assert_eq!(want_late, 0, "{disorder_ms} ms of disorder within a 1 s delay");
            assert!(want.len() > 10, "some rows match");
            for cores in shards.clone() {
                let (got, _, was_pruned) = run(&pruned, &data, &out, cores);
                assert!(was_pruned, "the q7 shape is pruned");
                assert!(got == want, "{tvf} on {cores} shards: {} rows, want {}", got.len(), want.len());
            }
        }
    }
}
