//! The Elasticsearch sink (SQL `'connector' = 'elasticsearch-7'`) against osmem-server (an
//! OpenSearch-compatible server started by `.ci/services.sh`): a windowed count over 5 000
//! seeded bids becomes one document per (auction, window) with the id `auction_windowstart`;
//! running the job again overwrites the same documents (no duplicates); a document the index
//! rejects (mapping conflict) fails the job with the document id, status and reason.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use weir::prelude::*;
use weir::source::gateway::protocol::HttpClient;

fn get(base: &str, path: &str) -> serde_json::Value {
    let addr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let r = HttpClient::new(addr, Duration::from_secs(10)).request("GET", path, b"", &[]).unwrap();
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn put(base: &str, path: &str, body: &str) {
    let addr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let r = HttpClient::new(addr, Duration::from_secs(10))
        .request("PUT", path, body.as_bytes(), &["Content-Type: application/json".into()])
        .unwrap();
    assert!(r.status == 200 || r.body.contains("already_exists"), "{path}: {}", r.body);
}

#[test]
fn window_results_are_indexed_once_and_rejections_are_named() {
    let Some(es) = common::test_server("WEIR_TEST_OPENSEARCH") else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut rng = common::Rng::new(7);
    let mut csv = String::new();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut ms = 0i64;
    for _ in 0..5_000 {
        ms += rng.range(0, 20);
        let auction = rng.range(1, 30);
        csv.push_str(&format!("{auction},{ms}\n"));
        let start = ms / 10_000 * 10_000;
        let text = format!("1970-01-01 00:{:02}:{:02}", start / 60_000, start / 1000 % 60);
        *expected.entry(format!("{auction}_{text}")).or_default() += 1;
    }
    std::fs::write(dir.path().join("bids.csv"), csv).unwrap();
    let index = format!("counts-{}", std::process::id());
    let script = format!(
        "CREATE TABLE bids (auction BIGINT, ms BIGINT, ts AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR ts AS ts)\n\
           WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/bids.csv', 'format' = 'csv');\n\
         CREATE TABLE counts (auction BIGINT, window_start TIMESTAMP(3), n BIGINT)\n\
           WITH ('connector' = 'elasticsearch-7', 'hosts' = '${{ES}}', 'index' = '{index}',\n\
                 'document-id.fields' = 'auction,window_start', 'sink.bulk-flush.max-actions' = '100');\n\
         INSERT INTO counts SELECT auction, window_start, COUNT(*)\n\
           FROM TABLE(TUMBLE(TABLE bids, DESCRIPTOR(ts), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;\n"
    );
    let vars: HashMap<String, String> = [("DATA".to_string(), dir.path().display().to_string()), ("ES".to_string(), es.clone())].into();
    let config = EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    };
    let docs = |es: &str| -> BTreeMap<String, i64> {
        let v = get(es, &format!("/{index}/_search?size=10000"));
        v["hits"]["hits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["_id"].as_str().unwrap().to_string(), h["_source"]["n"].as_i64().unwrap()))
            .collect()
    };
    for run in 0..2 {
        weir::sql::run_script(&script, &vars, config.clone()).unwrap_or_else(|e| panic!("run {run}: {e}"));
        get(&es, &format!("/{index}/_refresh"));
        let count = get(&es, &format!("/{index}/_count"))["count"].as_u64().unwrap();
        assert_eq!(count as usize, expected.len(), "run {run}: one document per window and auction");
        assert_eq!(docs(&es), expected, "run {run}");
    }

    // A mapping conflict is a per-item error: the job fails and says which document and why.
    let typed = format!("typed-{}", std::process::id());
    put(&es, &format!("/{typed}"), r#"{"mappings":{"properties":{"n":{"type":"long"}}}}"#);
    std::fs::write(dir.path().join("bad.csv"), "1,x\n2,notanumber\n").unwrap();
    let bad = format!(
        "CREATE TABLE src (id BIGINT, n STRING) WITH ('connector' = 'filesystem', 'path' = '${{DATA}}/bad.csv', 'format' = 'csv');\n\
         CREATE TABLE dst (id BIGINT, n STRING) WITH ('connector' = 'elasticsearch-7', 'hosts' = '${{ES}}', 'index' = '{typed}', 'document-id.fields' = 'id');\n\
         INSERT INTO dst SELECT id, n FROM src;\n"
    );
    let err = weir::sql::run_script(&bad, &vars, config)
        .expect_err("the index rejects the documents")
        .to_string();
    assert!(
        err.contains("mapper_parsing_exception") && err.contains("document 1") && err.contains("400"),
        "{err}"
    );
}
