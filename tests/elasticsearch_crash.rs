//! No duplicate documents in Elasticsearch across a SIGKILL: a `weir run` child reads a gateway
//! table into an `elasticsearch-7` index with document ids from the event id, is killed
//! mid-stream and restored with `--restore latest` (the shared scenario in
//! `tests/common/crash.rs`); the replay after the checkpoint rewrites the same ids. The index
//! then holds one document per acknowledged event. Needs the osmem-server from `.ci/services.sh`.

mod common;

use std::time::Duration;

use weir::source::gateway::protocol::HttpClient;

fn get(base: &str, path: &str) -> (u16, serde_json::Value) {
    let addr = base.strip_prefix("http://").unwrap().parse().unwrap();
    let r = HttpClient::new(addr, Duration::from_secs(10)).request("GET", path, b"", &[]).unwrap();
    (r.status, serde_json::from_str(&r.body).unwrap_or(serde_json::Value::Null))
}

#[test]
fn every_acknowledged_event_is_one_document_across_a_sigkill() {
    let Some(es) = common::test_server("WEIR_TEST_OPENSEARCH") else { return };
    let index = format!("crash-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let crashed = common::crash::run(
        dir.path(),
        &format!(
            "CREATE TABLE readings (id BIGINT, device STRING) WITH ('connector' = 'gateway', 'log.dir' = '${{LOG}}', 'partitions' = '2');\n\
             CREATE TABLE docs (id BIGINT, device STRING) WITH ('connector' = 'elasticsearch-7', 'hosts' = '${{ES}}', 'index' = '{index}',\n\
               'document-id.fields' = 'id');\n\
             INSERT INTO docs SELECT id, device FROM readings;\n"
        ),
        &[("ES".to_string(), es.clone())],
    );
    get(&es, &format!("/{index}/_refresh"));
    let (status, count) = get(&es, &format!("/{index}/_count"));
    assert_eq!(status, 200, "{count}");
    assert_eq!(
        count["count"].as_u64(),
        Some(crashed.acked_ids.len() as u64),
        "one document per acknowledged event"
    );
    // Every acknowledged id is there (a seeded sample of 200, and the first and last).
    let ids: Vec<u64> = crashed.acked_ids.iter().copied().collect();
    let mut rng = common::Rng::new(11);
    let mut sample: Vec<u64> = (0..200).map(|_| ids[rng.range(0, ids.len() as i64) as usize]).collect();
    sample.extend([ids[0], ids[ids.len() - 1]]);
    for id in sample {
        let (status, doc) = get(&es, &format!("/{index}/_doc/{id}"));
        assert_eq!(status, 200, "document {id}: {doc}");
        assert_eq!(doc["_source"]["id"].as_u64(), Some(id));
    }
}
