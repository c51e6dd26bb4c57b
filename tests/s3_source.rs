//! Reading S3 end to end: seeded CSV objects under `s3://bucket/in` (nested keys, one empty
//! object, a `_SUCCESS` marker and a hidden object that must be skipped) are read by a SQL job
//! (`filesystem` connector on `s3://`, one split per object, ranged GETs of 1 KiB so lines
//! span chunks) into a keyed 10 s tumbling count and sum. The rows equal those of the same
//! job reading the same files from a local folder. Then the S3 job runs with checkpoints every
//! 5 ms and aborts right after its second checkpoint completed (`WEIR_CRASH_POINT`); restarted
//! with `--restore latest`, the readers resume at their checkpointed object offsets and the
//! committed rows again equal the reference exactly. The `weir run` child gets its endpoint and
//! credentials from `AWS_*` variables. Needs the S3 server of `.ci/services.sh`.

mod common;

use std::path::Path;
use std::process::Command;

use common::Rng;

fn script(source_with: &str) -> String {
    format!(
        "CREATE TABLE ev (k BIGINT, ms BIGINT, v BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
           WITH ('connector' = 'filesystem', 'format' = 'csv', {source_with});\n\
         CREATE TABLE counts (k BIGINT, window_start TIMESTAMP(3), n BIGINT, total BIGINT)\n\
           WITH ('connector' = 'filesystem', 'path' = 'out', 'format' = 'csv');\n\
         INSERT INTO counts SELECT k, window_start, COUNT(*), SUM(v)\n\
           FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;\n"
    )
}

fn weir(dir: &Path, script: &Path, server: &common::s3::Server, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    std::fs::create_dir_all(dir).unwrap();
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .current_dir(dir)
        .arg("run")
        .arg(script)
        .args(["--cores", "2", "--no-pin"])
        .args(extra)
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn objects_are_read_as_splits_and_resume_at_their_offsets() {
    let Some(server) = common::s3::server() else { return };
    let bucket = server.fresh_bucket("source");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    std::fs::create_dir_all(&local).unwrap();

    // Five objects of seeded events, each in time order (jitter below the watermark delay, so
    // no event is late whatever the interleaving of splits).
    let mut rng = Rng::new(0x53_4F_55_52);
    for (i, rows) in [3_000, 0, 12_000, 800, 6_000].into_iter().enumerate() {
        let mut ms = 1_700_000_000_000i64 + rng.range(0, 5_000);
        let mut text = String::new();
        for _ in 0..rows {
            ms += rng.range(0, 60);
            text.push_str(&format!("{},{},{}\n", rng.range(0, 25), ms - rng.range(0, 300), rng.range(-50, 50)));
        }
        // (No `=`, `+` or `,` in keys: moto checks signatures over the decoded path.)
        let key = format!("in/day-{}/events-{i}.csv", i % 2);
        std::fs::write(local.join(format!("events-{i}.csv")), &text).unwrap();
        server.put(&bucket, &key, text.into_bytes());
    }
    server.put(&bucket, "in/_SUCCESS", Vec::new());
    server.put(&bucket, "in/.hidden.csv", b"not,a,row\n".to_vec());
    server.put(&bucket, "input-elsewhere.csv", b"1,2,3\n".to_vec());

    let reference_sql = tmp.path().join("reference.sql");
    std::fs::write(&reference_sql, script(&format!("'path' = '{}'", local.display()))).unwrap();
    let reference = tmp.path().join("reference");
    let out = weir(&reference, &reference_sql, &server, &["--no-checkpoints"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = common::committed_lines(&reference.join("out"));
    assert!(expected.len() > 500, "{} window results", expected.len());
    let counted: i64 = expected.iter().map(|l| l.split(',').nth(2).unwrap().parse::<i64>().unwrap()).sum();
    assert_eq!(counted, 21_800, "every event of the five files counted");

    let s3_sql = tmp.path().join("s3.sql");
    std::fs::write(&s3_sql, script(&format!("'path' = 's3://{bucket}/in', 's3.read.chunk-size' = '1kb'"))).unwrap();
    let plain = tmp.path().join("plain");
    let out = weir(&plain, &s3_sql, &server, &["--no-checkpoints"], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(common::committed_lines(&plain.join("out")), expected, "S3 objects read like the local files");

    let restored = tmp.path().join("restored");
    let checkpoints = ["--checkpoint-interval-ms", "5", "--checkpoint-dir", "checkpoints"];
    let first = weir(&restored, &s3_sql, &server, &checkpoints, &[("WEIR_CRASH_POINT", "metadata-written:2")]);
    assert!(!first.status.success(), "the first run aborts at the crash point");
    let partial = common::committed_lines(&restored.join("out")).len();
    assert!(partial < expected.len(), "aborted part-way ({partial} of {} rows)", expected.len());
    let mut resume = checkpoints.to_vec();
    resume.extend(["--restore", "latest"]);
    let second = weir(&restored, &s3_sql, &server, &resume, &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{stderr}");
    assert!(stderr.contains("restoring Checkpoint"), "{stderr}");
    assert_eq!(
        common::committed_lines(&restored.join("out")),
        expected,
        "resumed at the checkpointed offsets, exactly"
    );
}
