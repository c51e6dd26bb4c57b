//! The PostgreSQL sink (SQL `'connector' = 'jdbc'`) against a real PostgreSQL 15 started by
//! `.ci/services.sh`: a windowed count over 10 000 seeded bids lands in a table exactly once
//! (exactly-once: two-phase commit, committed at end of input), and the at-least-once mode with
//! an upsert key overwrites instead of duplicating when the same job runs again.

mod common;

use std::collections::{BTreeMap, HashMap};

use weir::prelude::*;
use weir::sink::postgres::{connect, DeliveryGuarantee, PostgresConfig};

fn admin_config(url: &str) -> PostgresConfig {
    let rest = url.split("://").nth(1).unwrap();
    let (auth, hostdb) = rest.split_once('@').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    PostgresConfig {
        address: hostport.parse().unwrap(),
        database: db.to_string(),
        username: auth.split(':').next().unwrap().to_string(),
        password: None,
        table: String::new(),
        columns: Vec::new(),
        upsert_key: Vec::new(),
        max_rows: 100,
        guarantee: DeliveryGuarantee::AtLeastOnce,
        transaction_prefix: "admin".into(),
    }
}

/// Run `sql` statements and return the rows of the last one as text.
fn psql(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let config = admin_config(url);
    let sql = sql.to_string();
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .unwrap()
        .run(async move {
            let client = connect(&config).await.unwrap();
            let mut rows = Vec::new();
            for m in client.simple_query(&sql).await.unwrap() {
                if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
                    rows.push((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect());
                }
            }
            rows
        })
}

#[test]
fn a_windowed_count_lands_in_postgres_exactly_once() {
    let Some(url) = common::test_server("WEIR_TEST_POSTGRES") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::Rng::new(42);
    let mut csv = String::new();
    let mut expected: BTreeMap<(i64, i64), (i64, i64)> = BTreeMap::new();
    let mut ms = 1_000i64;
    for _ in 0..10_000 {
        ms += rng.range(0, 20);
        let (auction, price) = (rng.range(1, 50), rng.range(1, 10_000));
        csv.push_str(&format!("{auction},{price},{ms}\n"));
        let e = expected.entry((auction, ms / 10_000 * 10_000)).or_insert((0, 0));
        e.0 += 1;
        e.1 = e.1.max(price);
    }
    std::fs::write(dir.path().join("bids.csv"), csv).unwrap();
    psql(
        &url,
        "DROP TABLE IF EXISTS counts_eo, counts_up; \
         CREATE TABLE counts_eo (auction BIGINT, window_start TIMESTAMP, n BIGINT, hi BIGINT, PRIMARY KEY (auction, window_start)); \
         CREATE TABLE counts_up (auction BIGINT, window_start TIMESTAMP, n BIGINT, hi BIGINT, PRIMARY KEY (auction, window_start));",
    );
    let script = |table: &str, extra: &str| {
        format!(
            "CREATE TABLE bids (auction BIGINT, price BIGINT, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)\n\
               WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/bids.csv', 'format' = 'csv');\n\
             CREATE TABLE out_pg (auction BIGINT, window_start TIMESTAMP(3), n BIGINT, hi BIGINT)\n\
               WITH ('connector' = 'jdbc', 'url' = 'jdbc:${{PG}}', 'table-name' = '{table}', 'username' = 'postgres',\n\
                     'sink.buffer-flush.max-rows' = '50'{extra});\n\
             INSERT INTO out_pg SELECT auction, window_start, COUNT(*), MAX(price)\n\
               FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;\n"
        )
    };
    let pg = url.replacen("postgres://", "postgresql://", 1);
    let pg = pg.split_once('@').map(|(_, rest)| format!("postgresql://{rest}")).unwrap();
    let vars: HashMap<String, String> = [("DATA".to_string(), dir.path().display().to_string()), ("PG".to_string(), pg)].into();
    let config = EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    };
    let read = |table: &str| -> BTreeMap<(i64, i64), (i64, i64)> {
        psql(
            &url,
            &format!("SELECT auction, (extract(epoch from window_start) * 1000)::bigint, n, hi FROM {table}"),
        )
        .into_iter()
        .map(|r| {
            let v: Vec<i64> = r.iter().map(|c| c.as_ref().unwrap().parse().unwrap()).collect();
            ((v[0], v[1]), (v[2], v[3]))
        })
        .collect()
    };

    weir::sql::run_script(&script("counts_eo", ", 'sink.delivery-guarantee' = 'exactly-once'"), &vars, config.clone()).unwrap();
    assert_eq!(read("counts_eo"), expected);
    let prepared = psql(&url, "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'weir-counts_eo-%'");
    assert_eq!(prepared[0][0].as_deref(), Some("0"), "every prepared transaction was committed");

    // At-least-once with an upsert key: running the job twice overwrites, never duplicates.
    let upsert = ", 'sink.upsert-key' = 'auction,window_start'";
    weir::sql::run_script(&script("counts_up", upsert), &vars, config.clone()).unwrap();
    weir::sql::run_script(&script("counts_up", upsert), &vars, config).unwrap();
    assert_eq!(read("counts_up"), expected);
    let total = psql(&url, "SELECT sum(n), count(*) FROM counts_up");
    assert_eq!(total[0][0].as_deref(), Some("10000"));
}
