//! `WITH (...)` options of the Kinesis and Pulsar source tables (Flink's `kinesis` and `pulsar`
//! connectors), checked into the sources' options with errors at the option's position.
//!
//! `'connector' = 'kinesis'` ([`crate::source::kinesis`]): `stream` (required), `aws.region`
//! (default `us-east-1`), `aws.endpoint` (`http://host:port`, required: weir's client has no
//! TLS), `aws.credentials.provider` (`BASIC`, `ENV` or `AUTO`), `aws.credentials.basic.accesskeyid`
//! / `.secretkey` (else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`), `scan.stream.initpos`
//! (`LATEST` default, `TRIM_HORIZON`, `AT_TIMESTAMP` with `scan.stream.initpos-timestamp` in
//! epoch seconds), `format` (`csv`, `json`, `raw`), `scan.shard.getrecords.maxrecordcount`
//! (10000), `scan.shard.getrecords.intervalmillis` (200), `scan.shard.getrecords.backoff.base`
//! (300 ms), `scan.shard.getrecords.backoff.max` (10 s), `scan.shard.getrecords.maxretries`
//! (10), `scan.watermark.idle-timeout`, and weir's `scan.bounded.mode` (`unbounded` default,
//! `latest`: end at the shards' tips).
//!
//! `'connector' = 'pulsar'` ([`crate::source::pulsar`]): `service-url` (`pulsar://host:port`,
//! required), `topics` (`;`-separated; a partitioned topic contributes its partitions),
//! `source.subscription-name` (required), `source.subscription-type` (`Exclusive` default or
//! `Failover`), `source.start.message-id` (`earliest` default, `latest`), `source.stop.at-message-id`
//! (`never` default, `latest`: end at each partition's last message when the job starts),
//! `format` (`csv`, `json`, `raw`), `scan.watermark.idle-timeout`, `source.receiver-queue-size`
//! (1000 permits per partition).

use super::ast::Pos;
use super::connectors::{check_known, parse_count, parse_duration, Options};
use super::plan::KafkaFormat;
use super::types::SqlType;
use super::SqlError;
use crate::source::kinesis::{InitialPosition, KinesisSourceOptions};
use crate::source::pulsar::{PulsarSourceOptions, StartCursor, SubscriptionType};

/// A Kinesis table.
#[derive(Clone, Debug)]
pub struct KinesisTable {
    pub source: KinesisSourceOptions,
    pub format: KafkaFormat,
    pub idle_timeout_ms: Option<i64>,
}

/// A Pulsar table.
#[derive(Clone, Debug)]
pub struct PulsarTable {
    pub source: PulsarSourceOptions,
    pub format: KafkaFormat,
    pub idle_timeout_ms: Option<i64>,
}

fn format(connector: &str, opts: &Options, pos: Pos, physical: &[(String, SqlType)]) -> Result<KafkaFormat, SqlError> {
    match opts.get("format").or_else(|| opts.get("value.format")).map(|(v, p)| (v.as_str(), *p)) {
        Some(("csv", _)) => Ok(KafkaFormat::Csv),
        Some(("json", _)) => Ok(KafkaFormat::Json),
        Some(("raw", p)) => {
            if physical.len() != 1 || physical[0].1 != SqlType::String {
                return Err(SqlError::at(p, "the raw format needs exactly one physical STRING column"));
            }
            Ok(KafkaFormat::Raw)
        }
        Some((f, p)) => Err(SqlError::at(p, format!("format '{f}' is not supported")).hint("use 'csv', 'json' or 'raw'")),
        None => Err(SqlError::at(pos, format!("the {connector} connector needs a 'format' option")).hint("'format' = 'csv', 'json' or 'raw'")),
    }
}

fn idle_timeout(opts: &Options) -> Result<Option<i64>, SqlError> {
    opts.get("scan.watermark.idle-timeout")
        .map(|(v, p)| parse_duration(v, *p).map(|d| d.as_millis() as i64))
        .transpose()
}

const KINESIS_OPTIONS: &[&str] = &[
    "connector",
    "stream",
    "aws.region",
    "aws.endpoint",
    "aws.credentials.provider",
    "aws.credentials.basic.accesskeyid",
    "aws.credentials.basic.secretkey",
    "scan.stream.initpos",
    "scan.stream.initpos-timestamp",
    "format",
    "value.format",
    "scan.shard.getrecords.maxrecordcount",
    "scan.shard.getrecords.intervalmillis",
    "scan.shard.getrecords.backoff.base",
    "scan.shard.getrecords.backoff.max",
    "scan.shard.getrecords.maxretries",
    "scan.watermark.idle-timeout",
    "scan.bounded.mode",
];

/// The kinesis connector's options.
pub(crate) fn kinesis(opts: &Options, pos: Pos, physical: &[(String, SqlType)]) -> Result<KinesisTable, SqlError> {
    check_known("kinesis", opts, KINESIS_OPTIONS)?;
    let get = |k: &str| opts.get(k).map(|(v, p)| (v.as_str(), *p));
    let (stream, _) = get("stream").ok_or_else(|| SqlError::at(pos, "the kinesis connector needs a 'stream' option"))?;
    let (endpoint, _) = get("aws.endpoint").ok_or_else(|| {
        SqlError::at(pos, "the kinesis connector needs 'aws.endpoint'")
            .hint("weir's Kinesis client speaks plain HTTP: 'aws.endpoint' = 'http://127.0.0.1:4567'")
    })?;
    let region = get("aws.region").map(|(r, _)| r).unwrap_or("us-east-1");
    let mut o = KinesisSourceOptions::new(endpoint, region, stream);
    o.initial_position = InitialPosition::Latest;
    match get("aws.credentials.provider").map(|(v, p)| (v.to_ascii_uppercase(), p)) {
        None => {}
        Some((v, _)) if v == "BASIC" || v == "ENV" || v == "AUTO" => {}
        Some((v, p)) => return Err(SqlError::at(p, format!("aws.credentials.provider '{v}' is not supported")).hint("BASIC, ENV or AUTO")),
    }
    match (get("aws.credentials.basic.accesskeyid"), get("aws.credentials.basic.secretkey")) {
        (Some((id, _)), Some((secret, _))) => o = o.credentials(id, secret),
        (None, None) => {}
        (_, _) => {
            return Err(SqlError::at(
                pos,
                "give both aws.credentials.basic.accesskeyid and aws.credentials.basic.secretkey",
            ))
        }
    }
    if let Some((v, p)) = get("scan.stream.initpos") {
        o.initial_position = match v.to_ascii_uppercase().as_str() {
            "LATEST" => InitialPosition::Latest,
            "TRIM_HORIZON" => InitialPosition::TrimHorizon,
            "AT_TIMESTAMP" => {
                let (ts, tp) = get("scan.stream.initpos-timestamp")
                    .ok_or_else(|| SqlError::at(p, "AT_TIMESTAMP needs 'scan.stream.initpos-timestamp' (epoch seconds)"))?;
                let secs: f64 = ts
                    .trim()
                    .parse()
                    .map_err(|_| SqlError::at(tp, format!("'{ts}' is not a time in epoch seconds")).hint("e.g. '1700000000.5'"))?;
                InitialPosition::AtTimestamp((secs * 1000.0).round() as i64)
            }
            _ => return Err(SqlError::at(p, format!("scan.stream.initpos '{v}' is not supported")).hint("LATEST, TRIM_HORIZON or AT_TIMESTAMP")),
        };
    }
    for (k, (v, p)) in opts {
        let p = *p;
        match k.as_str() {
            "scan.shard.getrecords.maxrecordcount" => o.max_records_per_get = parse_count(v, p)?.clamp(1, 10_000) as u32,
            "scan.shard.getrecords.intervalmillis" => o.poll_interval_ms = parse_count(v, p)?,
            "scan.shard.getrecords.backoff.base" => o.backoff_base_ms = parse_duration(v, p)?.as_millis() as u64,
            "scan.shard.getrecords.backoff.max" => o.backoff_max_ms = parse_duration(v, p)?.as_millis() as u64,
            "scan.shard.getrecords.maxretries" => o.max_retries = parse_count(v, p)? as u32,
            "scan.bounded.mode" => {
                o.bounded = match v.as_str() {
                    "unbounded" => false,
                    "latest" | "latest-offset" => true,
                    _ => return Err(SqlError::at(p, format!("scan.bounded.mode '{v}' is not supported")).hint("unbounded or latest")),
                }
            }
            _ => {}
        }
    }
    Ok(KinesisTable {
        format: format("kinesis", opts, pos, physical)?,
        idle_timeout_ms: idle_timeout(opts)?,
        source: o,
    })
}

const PULSAR_OPTIONS: &[&str] = &[
    "connector",
    "service-url",
    "admin-url",
    "topics",
    "source.subscription-name",
    "source.subscription-type",
    "source.start.message-id",
    "source.stop.at-message-id",
    "source.receiver-queue-size",
    "format",
    "value.format",
    "scan.watermark.idle-timeout",
];

/// The pulsar connector's options (`admin-url` is accepted and unused: weir asks the broker).
pub(crate) fn pulsar(opts: &Options, pos: Pos, physical: &[(String, SqlType)]) -> Result<PulsarTable, SqlError> {
    check_known("pulsar", opts, PULSAR_OPTIONS)?;
    let get = |k: &str| opts.get(k).map(|(v, p)| (v.as_str(), *p));
    let (url, _) = get("service-url")
        .ok_or_else(|| SqlError::at(pos, "the pulsar connector needs a 'service-url' option").hint("'service-url' = 'pulsar://127.0.0.1:6650'"))?;
    let (topics, tp) = get("topics").ok_or_else(|| SqlError::at(pos, "the pulsar connector needs a 'topics' option"))?;
    let topics: Vec<String> = topics.split([';', ',']).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect();
    if topics.is_empty() {
        return Err(SqlError::at(tp, "'topics' names no topic"));
    }
    let (subscription, _) = get("source.subscription-name")
        .ok_or_else(|| SqlError::at(pos, "the pulsar connector needs 'source.subscription-name'").hint("its cursor holds the acknowledged progress"))?;
    let mut o = PulsarSourceOptions::new(url, topics, subscription);
    if let Some((v, p)) = get("source.subscription-type") {
        o.subscription_type =
            match v.to_ascii_lowercase().as_str() {
                "exclusive" => SubscriptionType::Exclusive,
                "failover" => SubscriptionType::Failover,
                "shared" | "key_shared" => return Err(
                    SqlError::at(p, format!("subscription type '{v}' is not supported by weir's pulsar source")).hint(
                        "Exclusive or Failover: a checkpoint stores one position per partition, which needs the partition's messages in order on one reader",
                    ),
                ),
                _ => return Err(SqlError::at(p, format!("unknown subscription type '{v}'")).hint("Exclusive or Failover")),
            };
    }
    if let Some((v, p)) = get("source.start.message-id") {
        o.start = match v.to_ascii_lowercase().as_str() {
            "earliest" => StartCursor::Earliest,
            "latest" => StartCursor::Latest,
            _ => return Err(SqlError::at(p, format!("source.start.message-id '{v}' is not supported")).hint("earliest or latest")),
        };
    }
    if let Some((v, p)) = get("source.stop.at-message-id") {
        o.bounded = match v.to_ascii_lowercase().as_str() {
            "never" => false,
            "latest" => true,
            _ => return Err(SqlError::at(p, format!("source.stop.at-message-id '{v}' is not supported")).hint("never or latest")),
        };
    }
    if let Some((v, p)) = get("source.receiver-queue-size") {
        o.receiver_queue_size = parse_count(v, p)?.clamp(1, 1 << 20) as u32;
    }
    Ok(PulsarTable {
        format: format("pulsar", opts, pos, physical)?,
        idle_timeout_ms: idle_timeout(opts)?,
        source: o,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> Options {
        let p = Pos { line: 1, column: 1 };
        kv.iter().map(|(k, v)| (k.to_string(), (v.to_string(), p))).collect()
    }

    #[test]
    fn kinesis_options_are_checked() {
        let p = Pos { line: 1, column: 1 };
        let phys = vec![("a".to_string(), SqlType::BigInt)];
        let base = [
            ("connector", "kinesis"),
            ("stream", "s"),
            ("aws.endpoint", "http://127.0.0.1:4567"),
            ("format", "csv"),
        ];
        let t = kinesis(&opts(&base), p, &phys).unwrap();
        assert_eq!(t.source.initial_position, InitialPosition::Latest);
        assert!(!t.source.bounded);
        let mut with = base.to_vec();
        with.extend([
            ("scan.stream.initpos", "AT_TIMESTAMP"),
            ("scan.stream.initpos-timestamp", "1700000000.5"),
            ("scan.bounded.mode", "latest"),
            ("scan.shard.getrecords.maxrecordcount", "500"),
        ]);
        let t = kinesis(&opts(&with), p, &phys).unwrap();
        assert_eq!(t.source.initial_position, InitialPosition::AtTimestamp(1_700_000_000_500));
        assert!(t.source.bounded);
        assert_eq!(t.source.max_records_per_get, 500);
        let mut bad = base.to_vec();
        bad.push(("scan.stream.initpos", "AT_TIMESTAMP"));
        assert!(kinesis(&opts(&bad), p, &phys).unwrap_err().message.contains("initpos-timestamp"));
        let mut unknown = base.to_vec();
        unknown.push(("scan.shard.discovery.intervalmillis", "10"));
        assert!(kinesis(&opts(&unknown), p, &phys).is_err());
        assert!(kinesis(&opts(&base[..3]), p, &phys).unwrap_err().message.contains("format"));
    }

    #[test]
    fn pulsar_options_are_checked() {
        let p = Pos { line: 1, column: 1 };
        let phys = vec![("a".to_string(), SqlType::String)];
        let base = [
            ("connector", "pulsar"),
            ("service-url", "pulsar://127.0.0.1:6650"),
            ("topics", "a;b"),
            ("source.subscription-name", "s"),
            ("format", "raw"),
        ];
        let t = pulsar(&opts(&base), p, &phys).unwrap();
        assert_eq!(t.source.topics, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(t.source.subscription_type, SubscriptionType::Exclusive);
        let mut shared = base.to_vec();
        shared.push(("source.subscription-type", "Shared"));
        assert!(pulsar(&opts(&shared), p, &phys).unwrap_err().message.contains("not supported"));
        let mut failover = base.to_vec();
        failover.extend([
            ("source.subscription-type", "Failover"),
            ("source.stop.at-message-id", "latest"),
            ("source.start.message-id", "latest"),
        ]);
        let t = pulsar(&opts(&failover), p, &phys).unwrap();
        assert_eq!(
            (t.source.subscription_type, t.source.bounded, t.source.start),
            (SubscriptionType::Failover, true, StartCursor::Latest)
        );
        assert!(pulsar(&opts(&base[..4]), p, &phys).unwrap_err().message.contains("format"));
    }
}
