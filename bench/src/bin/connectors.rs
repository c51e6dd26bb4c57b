//! Connector throughput against the test servers of `.ci/services.sh` (run
//! `eval "$(bash .ci/services.sh start)"` first): rows/s into PostgreSQL (at-least-once and
//! exactly-once), documents/s into Elasticsearch (osmem-server), MQTT messages/s through the
//! gateway (one QoS 1 publisher waiting for each PUBACK, so this is the round-trip-bound rate).
//!
//! `cargo run --release -p weir-bench --bin connectors -- --rows 200000 --messages 20000`
//! writes `bench/results/connectors.json`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clap::Parser;
use weir::prelude::*;
use weir::sink::postgres::{connect, DeliveryGuarantee, PostgresConfig};
use weir::source::gateway::mqtt::{MqttConfig, MqttPublisher};
use weir::source::gateway::{Gateway, GatewayConfig, GatewaySource};

#[derive(Parser)]
struct Args {
    /// Rows per sink run.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// MQTT messages.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    #[arg(long, default_value_t = 2)]
    cores: usize,
    #[arg(long, default_value = "bench/results/connectors.json")]
    out: std::path::PathBuf,
}

fn pg_admin(url: &str, sql: &str) {
    let rest = url.split("://").nth(1).unwrap();
    let (auth, hostdb) = rest.split_once('@').unwrap();
    let (hostport, db) = hostdb.split_once('/').unwrap();
    let config = PostgresConfig {
        address: hostport.parse().unwrap(),
        database: db.into(),
        username: auth.into(),
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
        .run(async move { connect(&config).await.unwrap().batch_execute(&sql).await.unwrap() });
}

fn timed(script: &str, vars: &HashMap<String, String>, cores: usize) -> f64 {
    let config = EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    let t = Instant::now();
    weir::sql::run_script(script, vars, config).expect("job runs");
    t.elapsed().as_secs_f64()
}

#[derive(serde::Deserialize)]
struct Msg {
    #[allow(dead_code)]
    id: u64,
}

fn main() {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("weir-connectors-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv: String = (0..args.rows).map(|i| format!("{i},device-{},{}\n", i % 97, i * 7 % 1000)).collect();
    std::fs::write(dir.join("rows.csv"), csv).unwrap();
    let mut results = serde_json::Map::new();
    let source = "CREATE TABLE src (id BIGINT, device STRING, v BIGINT) WITH ('connector' = 'filesystem', 'path' = '${DATA}/rows.csv', 'format' = 'csv');\n";

    if let Ok(url) = std::env::var("WEIR_TEST_POSTGRES") {
        let pg = format!("jdbc:postgresql://{}", url.split('@').nth(1).unwrap());
        let vars: HashMap<String, String> = [("DATA".to_string(), dir.display().to_string()), ("PG".to_string(), pg)].into();
        for guarantee in ["at-least-once", "exactly-once"] {
            pg_admin(
                &url,
                "DROP TABLE IF EXISTS bench_rows; CREATE TABLE bench_rows (id BIGINT, device TEXT, v BIGINT)",
            );
            let script = format!(
                "{source}CREATE TABLE dst (id BIGINT, device STRING, v BIGINT) WITH ('connector' = 'jdbc', 'url' = '${{PG}}', 'table-name' = 'bench_rows', \
                 'username' = 'postgres', 'sink.buffer-flush.max-rows' = '1000', 'sink.delivery-guarantee' = '{guarantee}');\n\
                 INSERT INTO dst SELECT id, device, v FROM src;\n"
            );
            let secs = timed(&script, &vars, args.cores);
            let rate = (args.rows as f64 / secs).round();
            println!("postgres {guarantee}: {rate} rows/s");
            results.insert(format!("postgres_{guarantee}_rows_per_second"), rate.into());
        }
    }
    if let Ok(es) = std::env::var("WEIR_TEST_OPENSEARCH") {
        let vars: HashMap<String, String> = [("DATA".to_string(), dir.display().to_string()), ("ES".to_string(), es)].into();
        let script = format!(
            "{source}CREATE TABLE dst (id BIGINT, device STRING, v BIGINT) WITH ('connector' = 'elasticsearch-7', 'hosts' = '${{ES}}', \
             'index' = 'bench-{}', 'document-id.fields' = 'id');\nINSERT INTO dst SELECT id, device, v FROM src;\n",
            std::process::id()
        );
        let secs = timed(&script, &vars, args.cores);
        let rate = (args.rows as f64 / secs).round();
        println!("elasticsearch: {rate} documents/s");
        results.insert("elasticsearch_documents_per_second".into(), rate.into());
    }
    if let Ok(broker) = std::env::var("WEIR_TEST_MQTT") {
        let broker = broker.parse().unwrap();
        let client = format!("weir-bench-{}", std::process::id());
        let gateway = Gateway::start(
            "mqtt-bench",
            GatewayConfig {
                http_address: None,
                log_dir: dir.join("log"),
                mqtt: Some(MqttConfig {
                    broker,
                    client_id: client.clone(),
                    topics: vec!["bench/#".into()],
                    username: None,
                    password: None,
                    keep_alive: Duration::from_secs(30),
                    drop_before_ack_after: None,
                }),
                ..Default::default()
            },
        )
        .unwrap();
        let env = StreamEnv::new(EngineConfig {
            cores: 1,
            pin_cores: false,
            ..Default::default()
        });
        let source = GatewaySource::<Msg>::json(gateway);
        let handle = source.handle();
        env.source(source).without_event_time().sink(BlackholeSink);
        let (graph, config) = (env.graph(), env.config().clone());
        let job = std::thread::spawn(move || weir::shard::runtime::execute(graph, &config));
        while handle.stats().mqtt_connects == 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut publisher = MqttPublisher::connect(broker, &format!("{client}-pub"), Duration::from_secs(10)).unwrap();
        publisher.publish("bench/probe", b"{\"id\":0}").unwrap();
        while handle.stats().mqtt_messages == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        for i in 1..=args.messages {
            publisher.publish("bench/x", format!("{{\"id\":{i}}}").as_bytes()).unwrap();
        }
        while handle.stats().partitions[0].durable_next <= args.messages + 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let rate = (args.messages as f64 / t.elapsed().as_secs_f64()).round();
        println!("mqtt (one QoS 1 publisher, each publish waits for the broker's PUBACK): {rate} messages/s durable");
        results.insert("mqtt_messages_per_second_single_publisher".into(), rate.into());
        handle.drain();
        job.join().unwrap().unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let doc = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "rows": args.rows,
        "messages": args.messages,
        "shards": args.cores,
        "results": results,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}
