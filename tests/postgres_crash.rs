//! Exactly-once into PostgreSQL through the engine's checkpoints, across a SIGKILL: a `weir run`
//! child reads a gateway table into a `jdbc` table with `sink.delivery-guarantee` =
//! `exactly-once` (prepared transactions committed when checkpoints complete), is killed
//! mid-stream and restored with `--restore latest` (the shared scenario in
//! `tests/common/crash.rs`). The table then holds every acknowledged event exactly once and no
//! prepared transaction is left behind. Needs the PostgreSQL from `.ci/services.sh`.

mod common;

use weir::sink::postgres::{connect, DeliveryGuarantee, PostgresConfig};

fn query(url: &str, sql: &str) -> Vec<String> {
    let rest = url.split("://").nth(1).unwrap();
    let (auth, hostdb) = rest.split_once('@').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    let config = PostgresConfig {
        address: hostport.parse().unwrap(),
        database: db.to_string(),
        username: auth.to_string(),
        password: None,
        table: String::new(),
        columns: Vec::new(),
        upsert_key: Vec::new(),
        max_rows: 1,
        guarantee: DeliveryGuarantee::AtLeastOnce,
        transaction_prefix: String::new(),
    };
    let sql = sql.to_string();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap()
        .run(async move {
            let client = connect(&config).await.unwrap();
            let mut out = Vec::new();
            for m in client.simple_query(&sql).await.unwrap() {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    out.push(r.get(0).unwrap_or("").to_string());
                }
            }
            out
        })
}

#[test]
fn every_acknowledged_event_lands_in_postgres_once_across_a_sigkill() {
    let Some(url) = common::test_server("WEIR_TEST_POSTGRES") else { return };
    let table = format!("crash_rows_{}", std::process::id());
    for gid in query(&url, &format!("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'weir-{table}-%'")) {
        query(&url, &format!("ROLLBACK PREPARED '{gid}'"));
    }
    query(
        &url,
        &format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id BIGINT, device TEXT); SELECT 1"),
    );
    let pg = format!("jdbc:postgresql://{}", url.split('@').nth(1).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let crashed = common::crash::run(
        dir.path(),
        &format!(
            "CREATE TABLE readings (id BIGINT, device STRING) WITH ('connector' = 'gateway', 'log.dir' = '${{LOG}}', 'partitions' = '2');\n\
             CREATE TABLE pg (id BIGINT, device STRING) WITH ('connector' = 'jdbc', 'url' = '${{PG}}', 'table-name' = '{table}',\n\
               'username' = 'postgres', 'sink.delivery-guarantee' = 'exactly-once');\n\
             INSERT INTO pg SELECT id, device FROM readings;\n"
        ),
        &[("PG".to_string(), pg)],
    );
    let counts = query(&url, &format!("SELECT count(*) || ',' || count(DISTINCT id) FROM {table}"));
    let n = crashed.acked_ids.len();
    assert_eq!(counts, [format!("{n},{n}")], "every acknowledged event once (count, distinct)");
    let ids: std::collections::BTreeSet<u64> = query(&url, &format!("SELECT id FROM {table}")).iter().map(|v| v.parse().unwrap()).collect();
    assert_eq!(ids, crashed.acked_ids);
    let left = query(&url, &format!("SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'weir-{table}-%'"));
    assert_eq!(left, ["0"], "no prepared transaction left behind");
}
