//! S3 connector throughput against the S3 test server of `.ci/services.sh` (moto, in-memory,
//! signatures checked; run `eval "$(bash .ci/services.sh start)"` first): a SQL job copies a
//! CSV file of `--rows` rows into an `s3://` table (the `filesystem` connector), once without
//! checkpoints (files completed as they roll) and once exactly-once (checkpoints every second,
//! uploads completed at commit), then reads the objects back with the S3 source into a
//! blackhole. Rows/s and MB/s of the output bytes; the time includes job start and the final
//! commit.
//!
//! `cargo run --release -p weir-bench --bin s3 -- --rows 1000000` writes `bench/results/s3.json`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use weir::config::EngineConfig;
use weir::s3::{S3Client, S3Options};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    #[arg(long, default_value_t = 2)]
    cores: usize,
    #[arg(long, default_value = "bench/results/s3.json")]
    out: std::path::PathBuf,
}

fn main() {
    let args = Args::parse();
    let endpoint = std::env::var("WEIR_TEST_S3").expect("WEIR_TEST_S3 (start the servers: eval \"$(bash .ci/services.sh start)\")");
    let options = S3Options {
        endpoint: Some(endpoint.clone()),
        access_key: std::env::var("WEIR_TEST_S3_ACCESS_KEY").ok(),
        secret_key: std::env::var("WEIR_TEST_S3_SECRET_KEY").ok(),
        ..Default::default()
    };
    let config = Arc::new(options.resolve().unwrap());
    let bucket = format!("bench-{}", std::process::id());
    let target = config.target(&bucket).unwrap();
    let (c, t) = (config.clone(), target.clone());
    weir::s3::blocking(move || async move { S3Client::new(c, t).create_bucket().await.unwrap() }).unwrap();

    let dir = std::env::temp_dir().join(format!("weir-s3-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv: String = (0..args.rows)
        .map(|i| {
            format!(
                "{i},device-{},{},reading-{:016x}\n",
                i % 97,
                i * 7 % 1000,
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            )
        })
        .collect();
    std::fs::write(dir.join("rows.csv"), &csv).unwrap();
    let connection = format!(
        "'s3.endpoint' = '{endpoint}', 's3.access-key' = '{}', 's3.secret-key' = '{}'",
        options.access_key.as_deref().unwrap_or(""),
        options.secret_key.as_deref().unwrap_or("")
    );
    let vars: HashMap<String, String> = [("DATA".to_string(), dir.display().to_string())].into();
    let mut results = serde_json::Map::new();
    for (name, interval) in [("no_checkpoints", 0u64), ("exactly_once_1s_checkpoints", 1000)] {
        let prefix = name.replace('_', "-");
        let script = format!(
            "CREATE TABLE src (id BIGINT, device STRING, v BIGINT, note STRING) WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/rows.csv', 'format' = 'csv');\n\
             CREATE TABLE dst (id BIGINT, device STRING, v BIGINT, note STRING) WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/{prefix}', 'format' = 'csv', {connection});\n\
             INSERT INTO dst SELECT * FROM src;\n"
        );
        let engine = EngineConfig {
            cores: args.cores,
            pin_cores: false,
            checkpoint_interval_ms: interval,
            checkpoint_dir: (interval > 0).then(|| dir.join("checkpoints")),
            ..Default::default()
        };
        let t = Instant::now();
        weir::sql::run_script(&script, &vars, engine).expect("sink job runs");
        let secs = t.elapsed().as_secs_f64();
        let (c, tg, p) = (config.clone(), target.clone(), prefix.clone());
        let objects = weir::s3::blocking(move || async move { S3Client::new(c, tg).list_objects(&p).await.unwrap() }).unwrap();
        let bytes: u64 = objects.iter().map(|o| o.size).sum();
        let (rows_s, mb_s) = ((args.rows as f64 / secs).round(), (bytes as f64 / secs / 1e6 * 10.0).round() / 10.0);
        println!(
            "sink {name}: {rows_s} rows/s, {mb_s} MB/s ({} objects, {bytes} bytes, {secs:.2} s)",
            objects.len()
        );
        results.insert(format!("sink_{name}_rows_per_second"), rows_s.into());
        results.insert(format!("sink_{name}_mb_per_second"), mb_s.into());
        if interval == 0 {
            let script = format!(
                "CREATE TABLE src (id BIGINT, device STRING, v BIGINT, note STRING) WITH ('connector' = 'filesystem', 'path' = 's3://{bucket}/{prefix}', 'format' = 'csv', {connection});\n\
                 CREATE TABLE dst (id BIGINT, device STRING, v BIGINT, note STRING) WITH ('connector' = 'blackhole');\n\
                 INSERT INTO dst SELECT * FROM src;\n"
            );
            let engine = EngineConfig {
                cores: args.cores,
                pin_cores: false,
                ..Default::default()
            };
            let t = Instant::now();
            weir::sql::run_script(&script, &vars, engine).expect("source job runs");
            let secs = t.elapsed().as_secs_f64();
            let (rows_s, mb_s) = ((args.rows as f64 / secs).round(), (bytes as f64 / secs / 1e6 * 10.0).round() / 10.0);
            println!("source: {rows_s} rows/s, {mb_s} MB/s ({secs:.2} s)");
            results.insert("source_rows_per_second".into(), rows_s.into());
            results.insert("source_mb_per_second".into(), mb_s.into());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let doc = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "server": "moto 5.2.1 (in-memory, IAM authentication on), loopback",
        "rows": args.rows,
        "shards": args.cores,
        "results": results,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}
