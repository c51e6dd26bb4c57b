//! OVER aggregations resume from checkpoints on any number of shards: the oracle's OVER jobs
//! (ROWS and RANGE frames over the bundled bids) run as `weir run` on 4 shards, abort right
//! after a checkpoint completed (before their sinks committed), and are restored with
//! `--restore latest` on 1, 2 and 3 shards. The committed rows equal an uninterrupted run's:
//! pending rows, frames, accumulators, lateness bars and RANGE cleanup times come back from the
//! checkpoint with the key groups of their partition keys.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Output};

fn run(dir: &Path, script: &Path, data: &Path, cores: usize, extra: &[&str], env: &[(&str, &str)]) -> Output {
    std::fs::create_dir_all(dir).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir)
        .arg("run")
        .arg(script)
        .arg("--var")
        .arg(format!("DATA={}", data.display()))
        .args(["--var", "OUT=out", "--cores", &cores.to_string(), "--no-pin", "--checkpoint-interval-ms", "5"])
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn over_aggregations_restore_on_other_shard_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let oracle = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/oracle");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(oracle.join("data/bid.csv.gz")).unwrap())
        .read_to_end(&mut text)
        .unwrap();
    std::fs::write(data.join("bid.csv"), text).unwrap();
    for job in ["over_rows", "over_range"] {
        let script = oracle.join(format!("weir_sql/sql/{job}.sql"));
        let reference = tmp.path().join(format!("{job}-reference"));
        let out = run(&reference, &script, &data, 2, &["--no-checkpoints"], &[]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let expected = common::committed_lines(&reference.join("out"));
        assert!(expected.len() > 10_000, "{job}: {}", expected.len());
        let aborted = tmp.path().join(format!("{job}-aborted"));
        let first = run(&aborted, &script, &data, 4, &[], &[("WEIR_CRASH_POINT", "metadata-written:4")]);
        assert!(!first.status.success(), "{job}: the first run aborts at the crash point");
        let partial = common::committed_lines(&aborted.join("out"));
        assert!(
            partial.len() < expected.len(),
            "{job}: aborted part-way ({} of {} rows)",
            partial.len(),
            expected.len()
        );
        for cores in [1, 2, 3] {
            let dir = tmp.path().join(format!("{job}-restored-{cores}"));
            common::copy_tree(&aborted, &dir);
            let second = run(&dir, &script, &data, cores, &["--restore", "latest"], &[]);
            let stderr = String::from_utf8_lossy(&second.stderr);
            assert!(second.status.success(), "{job} on {cores} shards: {stderr}");
            assert!(stderr.contains("restoring Checkpoint"), "{job}: {stderr}");
            assert_eq!(
                common::committed_lines(&dir.join("out")),
                expected,
                "{job}: committed rows after the restore on {cores} shards"
            );
        }
    }
}
