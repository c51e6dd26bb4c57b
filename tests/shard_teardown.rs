//! A job that fails while its other shards are still opening and reading files must not leave
//! the kernel writing into freed memory: glommio's open (its `statx`) and reads own buffers the
//! kernel fills after the caller's future was dropped, and they died with the shard's executor
//! (heap corruption: `malloc(): mismatching next->prev_size` in some later allocation of another
//! thread). Every shard now waits for its file operations to complete before its executor ends
//! (`shard::inflight`).
//!
//! The job reads a 40-line CSV as 20-byte ranges on 3 shards (each shard opens a dozen files
//! in turn) and fails at the bad line 34; meanwhile a second thread allocates and frees
//! steadily, so glibc reuses the shards' freed chunks. Before the fix, every run of this test
//! aborted within its 150 jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use weir::config::EngineConfig;
use weir::sql::run_script;

const SCRIPT: &str = "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, ms BIGINT,
  date_time AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND
) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');
CREATE TABLE out_rows (a BIGINT, b BIGINT) WITH ('connector' = 'blackhole');
INSERT INTO out_rows SELECT auction, price FROM bid;";

#[test]
fn failing_jobs_leave_no_file_operation_behind() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines: Vec<String> = (0..40).map(|i| format!("{i},2,{i},web,{}", 1000 * i)).collect();
    lines[33] = "33,2,x33,web,33000".into();
    std::fs::write(dir.path().join("bid.csv"), lines.join("\n")).unwrap();
    let vars: HashMap<String, String> = [("DATA".to_string(), dir.path().display().to_string())].into();

    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<Vec<u8>> = Vec::new();
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                held.push(vec![i as u8; (i * 7919) % 300 + 1]);
                if held.len() > 500 {
                    held.drain(..250);
                }
                i += 1;
            }
        })
    };
    for run in 0..150 {
        let config = EngineConfig {
            cores: 3,
            pin_cores: false,
            file_split_bytes: 20,
            ..Default::default()
        };
        let err = run_script(SCRIPT, &vars, config).expect_err("line 34 is bad").to_string();
        assert!(err.contains("bid.csv line 34 field `price`"), "run {run}: {err}");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
}
