//! Exactly-once into S3 across SIGKILLs: a `weir run` child runs a SQL job (Nexmark bids at
//! full speed → key by auction → 100 ms tumbling count and max → the `filesystem` connector on
//! `s3://`, JSON) with checkpoints every 40 ms, and is killed with SIGKILL at seeded random moments, then
//! restarted with `--restore latest`, until it finishes. The objects in the bucket must hold
//! exactly the rows of an uninterrupted run without checkpoints (written to a local folder):
//! 0 lost, 0 duplicated. No multipart upload may be left unfinished: uploads of killed runs
//! are aborted on restore, those of completed checkpoints completed. The child gets its S3
//! endpoint and credentials from `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`. Needs the S3 server of `.ci/services.sh`.
//!
//! More kills: `WEIR_CRASH_KILLS=50 cargo test -p weir --test s3_crash -- --nocapture`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Rng;

fn script(sink_with: &str) -> String {
    format!(
        "CREATE TABLE bid (auction BIGINT, price BIGINT, `dateTime` TIMESTAMP(3), WATERMARK FOR `dateTime` AS `dateTime` - INTERVAL '50' MILLISECOND)\n\
           WITH ('connector' = 'nexmark', 'nexmark.table' = 'bid', 'events.num' = '1000000', 'first-event.rate' = '400000', 'max-emit-speed' = 'true');\n\
         CREATE TABLE counts (auction BIGINT, window_start TIMESTAMP(3), n BIGINT, top BIGINT) WITH ({sink_with});\n\
         INSERT INTO counts SELECT auction, window_start, COUNT(*), MAX(price)\n\
           FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(`dateTime`), INTERVAL '100' MILLISECOND)) GROUP BY auction, window_start, window_end;\n"
    )
}

fn weir(dir: &Path, script: &Path, server: &common::s3::Server) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weir"));
    c.current_dir(dir)
        .arg("run")
        .arg(script)
        .args(["--cores", "2", "--no-pin", "--set", "restart-strategy.type=none"])
        .env("AWS_ENDPOINT_URL", &server.endpoint)
        .env("AWS_ACCESS_KEY_ID", &server.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &server.secret_key)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

#[test]
fn random_sigkills_lose_and_duplicate_no_s3_rows() {
    let Some(server) = common::s3::server() else { return };
    let bucket = server.fresh_bucket("crash");
    let tmp = tempfile::tempdir().unwrap();

    let reference = tmp.path().join("reference.sql");
    std::fs::write(&reference, script("'connector' = 'filesystem', 'path' = 'out', 'format' = 'json'")).unwrap();
    let out = weir(tmp.path(), &reference, &server).arg("--no-checkpoints").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = common::committed_lines(&tmp.path().join("out"));
    assert!(expected.len() > 1_000, "the job writes window results ({})", expected.len());

    let job = tmp.path().join("s3.sql");
    std::fs::write(
        &job,
        script(&format!("'connector' = 'filesystem', 'path' = 's3://{bucket}/counts', 'format' = 'json'")),
    )
    .unwrap();
    let kills: usize = std::env::var("WEIR_CRASH_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(6);
    let mut rng = Rng::new(0x5353_4B49_4C4C);
    let mut killed = 0;
    let mut committed_while_killed = Vec::new();
    for attempt in 0..(kills + 50) {
        let mut child = weir(tmp.path(), &job, &server)
            .args(["--checkpoint-interval-ms", "40", "--checkpoint-dir", "checkpoints", "--restore", "latest"])
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
        let deadline = (attempt < kills).then(|| Instant::now() + Duration::from_millis(rng.range(50, 900) as u64));
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2)); // polling a child process, not synchronising the engine
        };
        let log = log.join().unwrap();
        match status {
            None => {
                killed += 1;
                committed_while_killed.push(server.lines(&bucket, "counts/").len());
            }
            Some(s) if s.success() => break,
            Some(s) => panic!("attempt {attempt} failed ({s}):\n{log}"),
        }
    }
    eprintln!(
        "{killed} kills; rows committed when each kill hit: {committed_while_killed:?} of {}",
        expected.len()
    );
    let got = server.lines(&bucket, "counts/");
    let distinct: std::collections::BTreeSet<&String> = got.iter().collect();
    assert_eq!(distinct.len(), got.len(), "no row committed twice");
    assert_eq!(got.len(), expected.len(), "no row lost");
    assert_eq!(got, expected, "the committed rows are the uninterrupted run's");
    assert!(server.unfinished_uploads(&bucket).is_empty(), "no multipart upload left unfinished");
}
