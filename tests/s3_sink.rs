//! End to end into S3: a SQL job reads a CSV file of seeded events, counts and sums them per
//! key in 10 s tumbling windows and writes the results as JSON lines to an `s3://` table
//! (`filesystem` connector) on 2 shards with checkpoints every 10 ms. The objects read back
//! from the server hold exactly the rows the same job writes to a local folder without
//! checkpoints; the files rolled at checkpoints (several objects per run), and no multipart
//! upload is left unfinished. Needs the S3 server of `.ci/services.sh`.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::Rng;
use weir::config::EngineConfig;

const EVENTS: usize = 60_000;

fn script(sink_with: &str) -> String {
    format!(
        "CREATE TABLE ev (k BIGINT, ms BIGINT, v BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
           WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/events.csv', 'format' = 'csv');\n\
         CREATE TABLE counts (k BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), n BIGINT, total BIGINT) WITH ({sink_with});\n\
         INSERT INTO counts SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS total\n\
           FROM TABLE(TUMBLE(TABLE ev, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY k, window_start, window_end;\n"
    )
}

fn run(script: &str, data: &Path, checkpoints: Option<&Path>) {
    let vars: HashMap<String, String> = [("DATA".to_string(), data.display().to_string())].into();
    let config = EngineConfig {
        cores: 2,
        pin_cores: false,
        checkpoint_interval_ms: if checkpoints.is_some() { 10 } else { 0 },
        checkpoint_dir: checkpoints.map(Path::to_path_buf),
        ..Default::default()
    };
    weir::sql::run_script(script, &vars, config).unwrap();
}

#[test]
fn window_results_land_in_s3_exactly() {
    let Some(server) = common::s3::server() else { return };
    let bucket = server.fresh_bucket("sink");
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng::new(0x53_51_4E_4B);
    let mut ms = 1_700_000_000_000i64;
    let mut csv = String::new();
    for _ in 0..EVENTS {
        ms += rng.range(0, 40);
        let ts = ms - rng.range(0, 500); // out of order, never late for a 1 s delay
        csv.push_str(&format!("{},{ts},{}\n", rng.range(0, 40), rng.range(-100, 100)));
    }
    std::fs::write(dir.path().join("events.csv"), csv).unwrap();

    let local = dir.path().join("reference");
    run(
        &script(&format!("'connector' = 'filesystem', 'path' = '{}', 'format' = 'json'", local.display())),
        dir.path(),
        None,
    );
    let expected = common::committed_lines(&local);
    assert!(expected.len() > 2_000, "{} window results", expected.len());

    let s3 = format!(
        "'connector' = 'filesystem', 'path' = 's3://{bucket}/counts', 'format' = 'json', {}",
        server.sql_options()
    );
    run(&script(&s3), dir.path(), Some(&dir.path().join("checkpoints")));
    let got = server.lines(&bucket, "counts/");
    assert_eq!(got.len(), expected.len(), "row count");
    assert_eq!(got, expected, "the rows in S3 are the reference rows");
    let counted: i64 = got
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_i64().unwrap())
        .sum();
    assert_eq!(counted, EVENTS as i64, "every event counted once");

    let objects = server.list(&bucket, "counts/");
    assert!(objects.len() >= 3, "part files rolled at checkpoints: {objects:?}");
    for o in &objects {
        let name = o.key.strip_prefix("counts/").unwrap();
        assert!(name.starts_with("part-") && name.ends_with(".json"), "{name}");
    }
    assert!(server.unfinished_uploads(&bucket).is_empty(), "no unfinished upload left");
}
