//! S3 connector errors name what was wrong: a wrong secret key (`SignatureDoesNotMatch`: the
//! test server checks every signature), an unknown access key (`InvalidAccessKeyId`), a
//! missing bucket (`NoSuchBucket`, for the sink and for the source), and an endpoint nobody
//! listens on (a connection error after the configured retries). Each error names the
//! operation and the `s3://bucket/key` it concerned. Needs the S3 server of `.ci/services.sh`.

mod common;

use std::collections::HashMap;

use weir::config::EngineConfig;

fn run(script: &str, data: &std::path::Path) -> String {
    let vars: HashMap<String, String> = [("DATA".to_string(), data.display().to_string())].into();
    let config = EngineConfig {
        cores: 1,
        pin_cores: false,
        ..Default::default()
    };
    match weir::sql::run_script(script, &vars, config) {
        Ok(_) => panic!("the job should fail:\n{script}"),
        Err(e) => {
            eprintln!("{e}");
            e.to_string()
        }
    }
}

fn sink_script(path: &str, connection: &str) -> String {
    format!(
        "CREATE TABLE src (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/rows.csv', 'format' = 'csv');\n\
         CREATE TABLE dst (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = '{path}', 'format' = 'csv', {connection});\n\
         INSERT INTO dst SELECT id, name FROM src;\n"
    )
}

#[test]
fn bad_credentials_missing_buckets_and_dead_endpoints_are_named() {
    let Some(server) = common::s3::server() else { return };
    let bucket = server.fresh_bucket("errors");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rows.csv"), "1,a\n2,b\n").unwrap();
    let endpoint = &server.endpoint;

    let wrong_secret = format!(
        "'s3.endpoint' = '{endpoint}', 's3.access-key' = '{}', 's3.secret-key' = 'not-the-secret'",
        server.access_key
    );
    let e = run(&sink_script(&format!("s3://{bucket}/out"), &wrong_secret), dir.path());
    assert!(e.contains("SignatureDoesNotMatch") && e.contains(&format!("s3://{bucket}/out/part-0-")), "{e}");
    assert!(!e.contains("not-the-secret"), "the secret is never printed: {e}");

    let unknown_key = format!("'s3.endpoint' = '{endpoint}', 's3.access-key' = 'AKIANOSUCHKEY0000000', 's3.secret-key' = 'x'");
    let e = run(&sink_script(&format!("s3://{bucket}/out"), &unknown_key), dir.path());
    assert!(e.contains("InvalidAccessKeyId") && e.contains(&bucket), "{e}");

    let missing = format!("no-such-bucket-{}", std::process::id());
    let e = run(&sink_script(&format!("s3://{missing}/out"), &server.sql_options()), dir.path());
    assert!(e.contains("NoSuchBucket") && e.contains(&format!("s3://{missing}/")), "{e}");

    let source = format!(
        "CREATE TABLE src (id BIGINT, name STRING) WITH ('connector' = 'filesystem', 'path' = 's3://{missing}/in', 'format' = 'csv', {});\n\
         CREATE TABLE dst (id BIGINT, name STRING) WITH ('connector' = 'blackhole');\n\
         INSERT INTO dst SELECT id, name FROM src;\n",
        server.sql_options()
    );
    let e = run(&source, dir.path());
    assert!(
        e.contains("table `src`") && e.contains("NoSuchBucket") && e.contains("ListObjectsV2") && e.contains(&format!("s3://{missing}/in")),
        "{e}"
    );

    let dead = "'s3.endpoint' = 'http://127.0.0.1:1', 's3.access-key' = 'a', 's3.secret-key' = 'b', 's3.max-retries' = '2', 's3.retry-backoff' = '1 ms'";
    let e = run(&sink_script(&format!("s3://{bucket}/out"), dead), dir.path());
    assert!(
        e.contains("ConnectionError") && e.contains("127.0.0.1:1") && e.contains("after 2 retries"),
        "{e}"
    );

    assert!(server.list(&bucket, "").is_empty(), "nothing was written by the failed jobs");
}
