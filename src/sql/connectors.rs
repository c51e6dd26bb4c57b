//! `WITH (...)` options of the connectors beyond the filesystem: parsing and checking them into
//! the connectors' configurations, with errors at the option's position.
//!
//! `'connector' = 'gateway'` (a source; see [`crate::source::gateway`]): `log.dir` (required),
//! `http.address`, `tcp.address` (at least one; default `http.address` = `127.0.0.1:0`),
//! `format` (`json` default, or `csv`), `partitions` (default: one per shard),
//! `auth.tokens` (comma-separated), and the limits `max-body-bytes`, `max-header-bytes`,
//! `max-connections`, `max-connections-per-client`, `header-timeout`, `idle-timeout`,
//! `body-timeout`, `max-inflight-bytes`, `max-backlog-events`, `retry-after`,
//! `segment-bytes`, `retention-bytes`, `dedup-window`, `validate-json`; MQTT ingestion with
//! `mqtt.broker` (`host:port`), `mqtt.client-id` (the persistent session), `mqtt.topics`
//! (comma-separated filters, QoS 1), `mqtt.username`, `mqtt.password`, `mqtt.keep-alive`.
//! `'connector' = 'mqtt'` is the same connector (events from MQTT only unless an address is set).
//!
//! `'connector' = 'jdbc'` (a PostgreSQL sink; see [`crate::sink::postgres`]): `url`
//! (`jdbc:postgresql://host:port/database`, required), `table-name` (required), `username`,
//! `password`, `driver` (accepted, ignored), `sink.buffer-flush.max-rows` (rows per INSERT,
//! default 100), `sink.delivery-guarantee` (`at-least-once` default, or `exactly-once`: two-phase
//! commit), and weir's `sink.upsert-key` (comma-separated columns: `ON CONFLICT DO UPDATE`) and
//! `sink.transaction-prefix` (prepared transaction ids, default `weir-<table-name>`).
//!
//! `'connector' = 'elasticsearch-7'` (a sink; see [`crate::sink::elasticsearch`]): `hosts`
//! (`http://host:port`, required; the first is used), `index` (required), `username`,
//! `password`, `document-id.key-delimiter` (default `_`), `sink.bulk-flush.max-actions`
//! (default 1000), `sink.bulk-flush.backoff.max-retries` (default 8),
//! `sink.bulk-flush.backoff.delay` (default `50 ms`), `connection.request-timeout` (default
//! `30 s`), `format` (`json` only), and weir's `document-id.fields` (comma-separated columns whose
//! values form the document id — Flink takes the PRIMARY KEY; without it the server assigns ids
//! and replays duplicate).
//! `'connector' = 'filesystem'` with an `s3://bucket/prefix` path (see [`crate::sink::s3`],
//! [`crate::source::s3`]): `path`, `format` (`csv` | `json`), Flink's
//! `sink.rolling-policy.file-size` (default 128mb), `sink.rolling-policy.rollover-interval`
//! (default 30 min), `sink.rolling-policy.check-interval` (accepted; the interval is checked at
//! every flush), `s3.upload.min.part.size` (bytes per uploaded part, default 8mb, at least 5mb),
//! and the connection: `s3.endpoint` (`http://host:port`), `s3.region`, `s3.access-key`,
//! `s3.secret-key`, `s3.session-token`, `s3.path.style.access` (each falls back to its `AWS_*`
//! environment variable), `s3.request-timeout` (30 s), `s3.max-retries` (8),
//! `s3.retry-backoff` (100 ms), `s3.read.chunk-size` (bytes per ranged GET of the source, 4mb).
//!
//! Durations are Flink's (`500 ms`, `10 s`, `1 min`); sizes are bytes or `64kb` / `4mb` / `1gb`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::ast::Pos;
use super::SqlError;
use crate::s3::S3Options;
use crate::sink::format::Format;
use crate::sink::postgres::{DeliveryGuarantee, PostgresConfig};
use crate::sink::s3::RollingPolicy;
use crate::source::gateway::GatewayConfig;

pub(crate) type Options = HashMap<String, (String, Pos)>;

/// A duration in Flink's notation: a number and a unit (`ms`, `s`, `min`, `h`; default ms).
pub(crate) fn parse_duration(text: &str, pos: Pos) -> Result<Duration, SqlError> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| SqlError::at(pos, format!("'{text}' is not a duration")).hint("e.g. '500 ms', '10 s', '1 min'"))?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => n,
        "s" | "sec" | "secs" | "second" | "seconds" => n * 1000,
        "min" | "m" | "minute" | "minutes" => n * 60_000,
        "h" | "hour" | "hours" => n * 3_600_000,
        u => return Err(SqlError::at(pos, format!("unknown duration unit '{u}'")).hint("use ms, s, min or h")),
    };
    Ok(Duration::from_millis(ms))
}

/// A size in bytes, optionally with `kb`, `mb` or `gb` (powers of 1024).
pub(crate) fn parse_bytes(text: &str, pos: Pos) -> Result<u64, SqlError> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| SqlError::at(pos, format!("'{text}' is not a size")).hint("e.g. '4mb' or '65536'"))?;
    let scale = match unit.trim() {
        "" | "b" => 1,
        "kb" | "k" => 1 << 10,
        "mb" | "m" => 1 << 20,
        "gb" | "g" => 1 << 30,
        u => return Err(SqlError::at(pos, format!("unknown size unit '{u}'")).hint("use kb, mb or gb")),
    };
    Ok(n * scale)
}

pub(crate) fn parse_count(text: &str, pos: Pos) -> Result<u64, SqlError> {
    text.trim().parse().map_err(|_| SqlError::at(pos, format!("'{text}' is not a whole number")))
}

pub(crate) fn parse_bool(text: &str, pos: Pos) -> Result<bool, SqlError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(SqlError::at(pos, format!("'{text}' is not a boolean")).hint("'true' or 'false'")),
    }
}

/// Refuse options outside `allowed` (naming the connector and what it supports).
pub(crate) fn check_known(connector: &str, opts: &Options, allowed: &[&str]) -> Result<(), SqlError> {
    for (k, (_, p)) in opts {
        if !allowed.contains(&k.as_str()) {
            return Err(
                SqlError::at(*p, format!("option '{k}' is not supported by weir's {connector} connector")).hint(format!("supported: {}", allowed.join(", ")))
            );
        }
    }
    Ok(())
}

const GATEWAY_OPTIONS: &[&str] = &[
    "connector",
    "log.dir",
    "http.address",
    "tcp.address",
    "format",
    "partitions",
    "auth.tokens",
    "max-body-bytes",
    "max-header-bytes",
    "max-connections",
    "max-connections-per-client",
    "header-timeout",
    "idle-timeout",
    "body-timeout",
    "max-inflight-bytes",
    "max-backlog-events",
    "retry-after",
    "segment-bytes",
    "retention-bytes",
    "dedup-window",
    "validate-json",
    "mqtt.broker",
    "mqtt.client-id",
    "mqtt.topics",
    "mqtt.username",
    "mqtt.password",
    "mqtt.keep-alive",
];

/// The gateway connector's options. `partitions = 0` means one per shard (resolved when the job
/// is built).
pub(crate) fn gateway(opts: &Options, pos: Pos) -> Result<(GatewayConfig, Format), SqlError> {
    check_known("gateway", opts, GATEWAY_OPTIONS)?;
    let (dir, _) = opts.get("log.dir").ok_or_else(|| {
        SqlError::at(pos, "the gateway connector needs a 'log.dir' option").hint("a folder kept across restarts, e.g. '/var/lib/weir/gateway'")
    })?;
    let mut c = GatewayConfig {
        log_dir: PathBuf::from(dir),
        http_address: None,
        partitions: 0,
        ..Default::default()
    };
    let format = match opts.get("format").map(|(v, p)| (v.as_str(), *p)) {
        None | Some(("json", _)) => Format::Json,
        Some(("csv", _)) => Format::Csv,
        Some((f, p)) => return Err(SqlError::at(p, format!("format '{f}' is not supported by the gateway")).hint("'json' or 'csv'")),
    };
    c.validate_json = format == Format::Json;
    for (k, (v, p)) in opts {
        let p = *p;
        match k.as_str() {
            "http.address" => c.http_address = Some(v.clone()),
            "tcp.address" => c.tcp_address = Some(v.clone()),
            "partitions" => c.partitions = parse_count(v, p)? as usize,
            "auth.tokens" => c.tokens = v.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            "max-body-bytes" => c.max_body_bytes = parse_bytes(v, p)? as usize,
            "max-header-bytes" => c.max_header_bytes = parse_bytes(v, p)? as usize,
            "max-connections" => c.max_connections = parse_count(v, p)? as usize,
            "max-connections-per-client" => c.max_connections_per_client = parse_count(v, p)? as usize,
            "header-timeout" => c.header_timeout = parse_duration(v, p)?,
            "idle-timeout" => c.idle_timeout = parse_duration(v, p)?,
            "body-timeout" => c.body_timeout = parse_duration(v, p)?,
            "max-inflight-bytes" => c.max_inflight_bytes = parse_bytes(v, p)? as usize,
            "max-backlog-events" => c.max_backlog_events = parse_count(v, p)?,
            "retry-after" => c.retry_after_secs = parse_duration(v, p)?.as_secs().max(1),
            "segment-bytes" => c.segment_bytes = parse_bytes(v, p)?,
            "retention-bytes" => c.retention_bytes = parse_bytes(v, p)?,
            "dedup-window" => c.dedup_window = parse_count(v, p)? as usize,
            "validate-json" => c.validate_json = parse_bool(v, p)?,
            _ => {}
        }
    }
    if let Some((broker, bp)) = opts.get("mqtt.broker") {
        use std::net::ToSocketAddrs;
        let broker_addr = broker
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| SqlError::at(*bp, format!("cannot resolve MQTT broker '{broker}'")))?;
        let (client_id, _) = opts
            .get("mqtt.client-id")
            .ok_or_else(|| SqlError::at(pos, "MQTT needs 'mqtt.client-id' (the persistent session's id, stable across restarts)"))?;
        let topics: Vec<String> = opts
            .get("mqtt.topics")
            .map(|(t, _)| t.split([',', ';']).map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect())
            .unwrap_or_default();
        if topics.is_empty() {
            return Err(SqlError::at(pos, "MQTT needs 'mqtt.topics' (comma-separated topic filters)"));
        }
        c.mqtt = Some(crate::source::gateway::mqtt::MqttConfig {
            broker: broker_addr,
            client_id: client_id.clone(),
            topics,
            username: opts.get("mqtt.username").map(|(v, _)| v.clone()),
            password: opts.get("mqtt.password").map(|(v, _)| v.clone()),
            keep_alive: match opts.get("mqtt.keep-alive") {
                Some((v, p)) => parse_duration(v, *p)?,
                None => Duration::from_secs(30),
            },
            drop_before_ack_after: None,
        });
        // An MQTT table listens on no port unless asked to.
    } else if opts.contains_key("mqtt.topics") || opts.contains_key("mqtt.client-id") {
        return Err(SqlError::at(pos, "MQTT options need 'mqtt.broker'"));
    }
    if c.http_address.is_none() && c.tcp_address.is_none() && c.mqtt.is_none() {
        c.http_address = Some("127.0.0.1:0".into());
    }
    let mut check = c.clone();
    check.partitions = check.partitions.max(1);
    check.validate().map_err(|e| SqlError::at(pos, e))?;
    Ok((c, format))
}

const JDBC_OPTIONS: &[&str] = &[
    "connector",
    "url",
    "table-name",
    "username",
    "password",
    "driver",
    "sink.buffer-flush.max-rows",
    "sink.delivery-guarantee",
    "sink.upsert-key",
    "sink.transaction-prefix",
];

/// The jdbc connector's options for a table with `columns` (a PostgreSQL URL; the host is
/// resolved now, before the job starts).
pub(crate) fn jdbc(opts: &Options, pos: Pos, columns: &[String]) -> Result<PostgresConfig, SqlError> {
    check_known("jdbc", opts, JDBC_OPTIONS)?;
    let get = |k: &str| opts.get(k).map(|(v, p)| (v.as_str(), *p));
    let (url, url_pos) =
        get("url").ok_or_else(|| SqlError::at(pos, "the jdbc connector needs a 'url' option").hint("'url' = 'jdbc:postgresql://127.0.0.1:5432/db'"))?;
    let rest = url
        .strip_prefix("jdbc:postgresql://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .or_else(|| url.strip_prefix("postgres://"))
        .ok_or_else(|| {
            SqlError::at(url_pos, format!("'{url}' is not a PostgreSQL URL"))
                .hint("weir's jdbc connector speaks PostgreSQL: 'jdbc:postgresql://host:port/database'")
        })?;
    let rest = rest.split('?').next().unwrap_or("");
    let (hostport, database) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    use std::net::ToSocketAddrs;
    let address = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SqlError::at(url_pos, format!("cannot resolve '{hostport}'")))?;
    let (table, _) = get("table-name").ok_or_else(|| SqlError::at(pos, "the jdbc connector needs a 'table-name' option"))?;
    let guarantee = match get("sink.delivery-guarantee") {
        None | Some(("at-least-once", _)) => DeliveryGuarantee::AtLeastOnce,
        Some(("exactly-once", _)) => DeliveryGuarantee::ExactlyOnce,
        Some((g, p)) => return Err(SqlError::at(p, format!("delivery guarantee '{g}' is not supported")).hint("'at-least-once' or 'exactly-once'")),
    };
    let upsert_key: Vec<String> = get("sink.upsert-key")
        .map(|(v, _)| v.split(',').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()).collect())
        .unwrap_or_default();
    if let Some(k) = upsert_key.iter().find(|k| !columns.iter().any(|c| c.eq_ignore_ascii_case(k))) {
        let (_, p) = get("sink.upsert-key").expect("present");
        return Err(SqlError::at(p, format!("upsert key column `{k}` is not a column of the table")));
    }
    let max_rows = match get("sink.buffer-flush.max-rows") {
        Some((v, p)) => parse_count(v, p)?.max(1) as usize,
        None => 100,
    };
    Ok(PostgresConfig {
        address,
        database: if database.is_empty() { "postgres".into() } else { database.to_string() },
        username: get("username").map(|(v, _)| v.to_string()).unwrap_or_else(|| "postgres".into()),
        password: get("password").map(|(v, _)| v.to_string()),
        table: table.to_string(),
        columns: columns.to_vec(),
        upsert_key,
        max_rows,
        guarantee,
        transaction_prefix: get("sink.transaction-prefix")
            .map(|(v, _)| v.to_string())
            .unwrap_or_else(|| format!("weir-{table}")),
    })
}

/// The elasticsearch-7 connector's settings for SQL: the sink's configuration, the columns of
/// the document id and their delimiter.
#[derive(Clone, Debug)]
pub struct ElasticsearchTable {
    pub config: crate::sink::elasticsearch::ElasticsearchConfig,
    pub id_columns: Vec<usize>,
    pub delimiter: String,
}

const ES_OPTIONS: &[&str] = &[
    "connector",
    "hosts",
    "index",
    "username",
    "password",
    "format",
    "document-id.key-delimiter",
    "document-id.fields",
    "sink.bulk-flush.max-actions",
    "sink.bulk-flush.backoff.max-retries",
    "sink.bulk-flush.backoff.delay",
    "sink.bulk-flush.backoff.strategy",
    "connection.request-timeout",
];

pub(crate) fn elasticsearch(opts: &Options, pos: Pos, columns: &[String]) -> Result<ElasticsearchTable, SqlError> {
    check_known("elasticsearch-7", opts, ES_OPTIONS)?;
    let get = |k: &str| opts.get(k).map(|(v, p)| (v.as_str(), *p));
    let (hosts, hp) =
        get("hosts").ok_or_else(|| SqlError::at(pos, "the elasticsearch-7 connector needs a 'hosts' option").hint("'hosts' = 'http://127.0.0.1:9200'"))?;
    let first = hosts.split(';').next().unwrap_or("").trim();
    let hostport = first
        .strip_prefix("http://")
        .ok_or_else(|| SqlError::at(hp, format!("'{first}' is not an http:// address")).hint("weir speaks plain HTTP to Elasticsearch (no TLS)"))?
        .trim_end_matches('/');
    use std::net::ToSocketAddrs;
    let address = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| SqlError::at(hp, format!("cannot resolve '{hostport}'")))?;
    let (index, _) = get("index").ok_or_else(|| SqlError::at(pos, "the elasticsearch-7 connector needs an 'index' option"))?;
    if let Some((f, p)) = get("format") {
        if f != "json" {
            return Err(SqlError::at(p, format!("format '{f}' is not supported by the elasticsearch-7 connector")).hint("'json'"));
        }
    }
    let mut id_columns = Vec::new();
    if let Some((fields, p)) = get("document-id.fields") {
        for f in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let i = columns
                .iter()
                .position(|c| c.eq_ignore_ascii_case(f))
                .ok_or_else(|| SqlError::at(p, format!("document id column `{f}` is not a column of the table")))?;
            id_columns.push(i);
        }
    }
    let basic_auth = get("username").map(|(u, _)| crate::sink::elasticsearch::base64(format!("{u}:{}", get("password").map(|p| p.0).unwrap_or("")).as_bytes()));
    Ok(ElasticsearchTable {
        config: crate::sink::elasticsearch::ElasticsearchConfig {
            address,
            host: hostport.to_string(),
            index: index.to_string(),
            basic_auth,
            max_actions: match get("sink.bulk-flush.max-actions") {
                Some((v, p)) => parse_count(v, p)?.max(1) as usize,
                None => 1000,
            },
            max_retries: match get("sink.bulk-flush.backoff.max-retries") {
                Some((v, p)) => parse_count(v, p)? as u32,
                None => 8,
            },
            backoff_ms: match get("sink.bulk-flush.backoff.delay") {
                Some((v, p)) => parse_duration(v, p)?.as_millis() as u64,
                None => 50,
            },
            timeout: match get("connection.request-timeout") {
                Some((v, p)) => parse_duration(v, p)?,
                None => Duration::from_secs(30),
            },
        },
        id_columns,
        delimiter: get("document-id.key-delimiter").map(|d| d.0.to_string()).unwrap_or_else(|| "_".into()),
    })
}

/// A `filesystem` table on an `s3://` path: where, in which format, how to connect, how to roll.
#[derive(Clone, Debug)]
pub struct S3Table {
    /// The `s3://bucket/prefix` path as given.
    pub path: String,
    pub format: Format,
    pub options: S3Options,
    pub rolling: RollingPolicy,
    pub part_size: usize,
    pub read_chunk_bytes: usize,
}

const S3_OPTIONS: &[&str] = &[
    "connector",
    "path",
    "format",
    "csv.field-delimiter",
    "csv.ignore-parse-errors",
    "json.ignore-parse-errors",
    "sink.rolling-policy.file-size",
    "sink.rolling-policy.rollover-interval",
    "sink.rolling-policy.check-interval",
    "s3.upload.min.part.size",
    "s3.endpoint",
    "s3.region",
    "s3.access-key",
    "s3.secret-key",
    "s3.session-token",
    "s3.path.style.access",
    "s3.request-timeout",
    "s3.max-retries",
    "s3.retry-backoff",
    "s3.read.chunk-size",
];

/// The options of a `filesystem` table whose `path` is on S3 (the connection is checked now:
/// endpoint form, credentials present; the bucket is first contacted when the job is built).
pub(crate) fn s3(opts: &Options, pos: Pos, path: &str, format: Format) -> Result<S3Table, SqlError> {
    check_known("filesystem (s3://)", opts, S3_OPTIONS)?;
    let get = |k: &str| opts.get(k).map(|(v, p)| (v.as_str(), *p));
    let path_pos = get("path").map(|(_, p)| p).unwrap_or(pos);
    crate::s3::S3Url::parse(path).map_err(|e| SqlError::at(path_pos, e))?;
    if let Some((d, p)) = get("csv.field-delimiter") {
        if d != "," {
            return Err(SqlError::at(p, "only ',' is supported as csv.field-delimiter"));
        }
    }
    let options = S3Options {
        endpoint: get("s3.endpoint").map(|(v, _)| v.to_string()),
        region: get("s3.region").map(|(v, _)| v.to_string()),
        access_key: get("s3.access-key").map(|(v, _)| v.to_string()),
        secret_key: get("s3.secret-key").map(|(v, _)| v.to_string()),
        session_token: get("s3.session-token").map(|(v, _)| v.to_string()),
        path_style: match get("s3.path.style.access") {
            Some((v, p)) => Some(parse_bool(v, p)?),
            None => None,
        },
        request_timeout: match get("s3.request-timeout") {
            Some((v, p)) => Some(parse_duration(v, p)?),
            None => None,
        },
        max_retries: match get("s3.max-retries") {
            Some((v, p)) => Some(parse_count(v, p)?.min(u32::MAX as u64) as u32),
            None => None,
        },
        retry_backoff: match get("s3.retry-backoff") {
            Some((v, p)) => Some(parse_duration(v, p)?),
            None => None,
        },
    };
    options.resolve().map_err(|e| {
        let at = get("s3.endpoint").map(|(_, p)| p).unwrap_or(pos);
        SqlError::at(at, e)
    })?;
    let mut rolling = RollingPolicy::default();
    if let Some((v, p)) = get("sink.rolling-policy.file-size") {
        rolling.file_size = parse_bytes(v, p)?.max(1);
    }
    if let Some((v, p)) = get("sink.rolling-policy.rollover-interval") {
        rolling.rollover_interval = parse_duration(v, p)?;
    }
    if let Some((v, p)) = get("sink.rolling-policy.check-interval") {
        parse_duration(v, p)?;
    }
    let part_size = match get("s3.upload.min.part.size") {
        Some((v, p)) => {
            let n = parse_bytes(v, p)?;
            if n < crate::sink::s3::MIN_PART_BYTES as u64 || n > crate::sink::s3::MAX_PART_BYTES as u64 {
                return Err(SqlError::at(p, format!("s3.upload.min.part.size {n} is outside S3's part sizes")).hint("between '5mb' and '5gb'"));
            }
            n as usize
        }
        None => 8 << 20,
    };
    let read_chunk_bytes = match get("s3.read.chunk-size") {
        Some((v, p)) => {
            let n = parse_bytes(v, p)?;
            if !(1 << 10..=64 << 20).contains(&n) {
                return Err(SqlError::at(p, format!("s3.read.chunk-size {n} is outside 1kb..64mb")));
            }
            n as usize
        }
        None => 4 << 20,
    };
    Ok(S3Table {
        path: path.to_string(),
        format,
        options,
        rolling,
        part_size,
        read_chunk_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        pairs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (k.to_string(), (v.to_string(), Pos { line: 2, column: i as u32 + 1 })))
            .collect()
    }

    #[test]
    fn connector_options_are_checked_with_positions() {
        let p = Pos { line: 1, column: 1 };
        let (g, format) = gateway(
            &opts(&[
                ("connector", "gateway"),
                ("log.dir", "/tmp/x"),
                ("max-body-bytes", "1mb"),
                ("header-timeout", "2 s"),
                ("auth.tokens", "a, b"),
            ]),
            p,
        )
        .unwrap();
        assert_eq!(
            (g.max_body_bytes, g.header_timeout, g.tokens.len(), format),
            (1 << 20, Duration::from_secs(2), 2, Format::Json)
        );
        assert_eq!(g.http_address.as_deref(), Some("127.0.0.1:0"), "an ephemeral loopback port by default");
        let e = gateway(&opts(&[("connector", "gateway")]), p).unwrap_err();
        assert!(e.message.contains("log.dir"), "{e}");
        let e = gateway(&opts(&[("connector", "gateway"), ("log.dir", "x"), ("max-bodybytes", "1")]), p).unwrap_err();
        assert!(e.message.contains("max-bodybytes") && e.pos.unwrap().line == 2, "{e}");
        let j = jdbc(
            &opts(&[
                ("connector", "jdbc"),
                ("url", "jdbc:postgresql://127.0.0.1:5433/db?ssl=false"),
                ("table-name", "t"),
                ("sink.upsert-key", "id"),
            ]),
            p,
            &["id".into(), "v".into()],
        )
        .unwrap();
        assert_eq!(
            (j.address.port(), j.database.as_str(), j.upsert_key.len(), j.transaction_prefix.as_str()),
            (5433, "db", 1, "weir-t")
        );
        let e = jdbc(&opts(&[("connector", "jdbc"), ("url", "jdbc:mysql://h/db"), ("table-name", "t")]), p, &[]).unwrap_err();
        assert!(e.message.contains("not a PostgreSQL URL"), "{e}");
        let e = jdbc(
            &opts(&[
                ("connector", "jdbc"),
                ("url", "jdbc:postgresql://127.0.0.1/db"),
                ("table-name", "t"),
                ("sink.upsert-key", "nope"),
            ]),
            p,
            &["id".into()],
        )
        .unwrap_err();
        assert!(e.message.contains("nope"), "{e}");
        let es = elasticsearch(
            &opts(&[
                ("connector", "elasticsearch-7"),
                ("hosts", "http://127.0.0.1:9200"),
                ("index", "i"),
                ("document-id.fields", "id"),
            ]),
            p,
            &["id".into()],
        )
        .unwrap();
        assert_eq!((es.id_columns.clone(), es.delimiter.as_str(), es.config.max_actions), (vec![0], "_", 1000));
        assert!(elasticsearch(&opts(&[("connector", "elasticsearch-7"), ("hosts", "https://h:9200"), ("index", "i")]), p, &[]).is_err());
    }

    #[test]
    fn s3_tables_take_flink_rolling_options_and_check_credentials() {
        let p = Pos { line: 1, column: 1 };
        let base = [
            ("connector", "filesystem"),
            ("path", "s3://bkt/out"),
            ("format", "csv"),
            ("s3.endpoint", "http://127.0.0.1:9000"),
            ("s3.access-key", "a"),
            ("s3.secret-key", "s"),
        ];
        let mut with = base.to_vec();
        with.extend([("sink.rolling-policy.file-size", "64mb"), ("sink.rolling-policy.rollover-interval", "1 min")]);
        let t = s3(&opts(&with), p, "s3://bkt/out", Format::Csv).unwrap();
        assert_eq!(
            (t.rolling.file_size, t.rolling.rollover_interval, t.part_size),
            (64 << 20, Duration::from_secs(60), 8 << 20)
        );
        let mut small = base.to_vec();
        small.push(("s3.upload.min.part.size", "1mb"));
        assert!(s3(&opts(&small), p, "s3://bkt/out", Format::Csv).unwrap_err().message.contains("part sizes"));
        let mut unknown = base.to_vec();
        unknown.push(("sink.rolling-policy.inactivity", "1 s"));
        assert!(s3(&opts(&unknown), p, "s3://bkt/out", Format::Csv)
            .unwrap_err()
            .message
            .contains("not supported"));
        let tls: Vec<_> = base
            .iter()
            .map(|&(k, v)| if k == "s3.endpoint" { (k, "https://s3.amazonaws.com") } else { (k, v) })
            .collect();
        assert!(s3(&opts(&tls), p, "s3://bkt/out", Format::Csv).unwrap_err().message.contains("TLS"));
        assert!(s3(&opts(&base), p, "s3://Bad/out", Format::Csv).unwrap_err().message.contains("bucket name"));
    }

    #[test]
    fn durations_and_sizes() {
        let p = Pos { line: 1, column: 1 };
        assert_eq!(parse_duration("500 ms", p).unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("10s", p).unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("2 min", p).unwrap(), Duration::from_secs(120));
        assert!(parse_duration("fast", p).is_err());
        assert!(parse_duration("3 weeks", p).is_err());
        assert_eq!(parse_bytes("4mb", p).unwrap(), 4 << 20);
        assert_eq!(parse_bytes("65536", p).unwrap(), 65536);
        assert!(parse_bytes("1tb", p).is_err());
    }
}
