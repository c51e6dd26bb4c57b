//! The `nexmark` SQL connector: the benchmark's `datagen` table (ROW columns, `event_type`) and
//! its `bid` / `person` views, and a flat `bid` table, produce exactly the built-in generator's
//! events, for 1 to 4 shards, whatever columns a query reads (projection pushdown) and with the
//! `event_type` filter pushed into the generator. The benchmark scripts in `bench/nexmark/` plan
//! and run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weir::config::EngineConfig;
use weir::source::nexmark::{Event, GeneratorConfig, NexmarkGenerator};

const EVENTS: u64 = 20_000;
const BENCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench/nexmark");

fn run(script: &str, cores: usize, tag: &str) -> Vec<String> {
    let out = std::env::temp_dir().join(format!("weir-sql-nexmark-{}-{tag}-{cores}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let vars: HashMap<String, String> = [
        ("OUT".to_string(), out.display().to_string()),
        ("EVENTS".to_string(), EVENTS.to_string()),
        ("TPS".to_string(), "10000".to_string()),
        ("SINK".to_string(), "blackhole".to_string()),
    ]
    .into();
    let config = EngineConfig {
        cores,
        pin_cores: false,
        ..Default::default()
    };
    weir::sql::run_script(script, &vars, config).unwrap_or_else(|e| panic!("{tag} on {cores} cores: {e}"));
    let mut lines = Vec::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let p: PathBuf = f.unwrap().path();
        if !p.file_name().unwrap().to_string_lossy().starts_with(['.', '_']) {
            lines.extend(std::fs::read_to_string(&p).unwrap().lines().map(str::to_string));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    lines.sort();
    lines
}

fn ts(ms: i64) -> String {
    let mut s = String::new();
    weir::sql::types::format_timestamp(ms, &mut s);
    s
}

fn events() -> Vec<Event> {
    let config = GeneratorConfig {
        max_events: EVENTS,
        ..Default::default()
    };
    let mut g = NexmarkGenerator::new(config, 0, 1);
    std::iter::from_fn(|| g.next_event().map(|(e, _)| e)).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ddl() -> String {
    std::fs::read_to_string(Path::new(BENCH).join("ddl.sql")).unwrap()
}

#[test]
fn datagen_views_are_the_generators_events() {
    let bids = sorted(
        events()
            .iter()
            .filter_map(|e| match e {
                Event::Bid(b) => Some(format!("{},{},{},{},{}", b.auction, b.bidder, b.price, b.channel, ts(b.date_time))),
                _ => None,
            })
            .collect(),
    );
    let with_extra = sorted(
        events()
            .iter()
            .filter_map(|e| match e {
                Event::Bid(b) => Some(format!("{},{},{}", b.auction, b.extra, ts(b.date_time))),
                _ => None,
            })
            .collect(),
    );
    let persons = sorted(
        events()
            .iter()
            .filter_map(|e| match e {
                Event::Person(p) => Some(format!("{},{},{},{}", p.id, p.name, p.state, ts(p.date_time))),
                _ => None,
            })
            .collect(),
    );
    let sink = |cols: &str| format!("CREATE TABLE o ({cols}) WITH ('connector' = 'filesystem', 'path' = '${{OUT}}', 'format' = 'csv');\n");
    for cores in 1..=4 {
        // Bids without strings but channel: the allocation-free path.
        let script = format!(
            "{}{}INSERT INTO o SELECT auction, bidder, price, channel, `dateTime` FROM bid;",
            ddl(),
            sink("a BIGINT, b BIGINT, p BIGINT, c STRING, t TIMESTAMP(3)")
        );
        assert_eq!(run(&script, cores, "bids"), bids, "bids on {cores} cores");
        // Bids with `extra`: full events.
        let script = format!(
            "{}{}INSERT INTO o SELECT auction, extra, `dateTime` FROM bid;",
            ddl(),
            sink("a BIGINT, e STRING, t TIMESTAMP(3)")
        );
        assert_eq!(run(&script, cores, "extra"), with_extra, "bids with extra on {cores} cores");
        let script = format!(
            "{}{}INSERT INTO o SELECT id, name, state, `dateTime` FROM person;",
            ddl(),
            sink("id BIGINT, n STRING, s STRING, t TIMESTAMP(3)")
        );
        assert_eq!(run(&script, cores, "persons"), persons, "persons on {cores} cores");
    }
    // A flat table of one kind gives the same bids.
    let flat = "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, url STRING, date_time TIMESTAMP(3), extra STRING, \
                WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) WITH ('connector' = 'nexmark', 'events.num' = '${EVENTS}', \
                'max-emit-speed' = 'true');\n";
    let script = format!(
        "{flat}{}INSERT INTO o SELECT auction, bidder, price, channel, date_time FROM bid;",
        sink("a BIGINT, b BIGINT, p BIGINT, c STRING, t TIMESTAMP(3)")
    );
    assert_eq!(run(&script, 2, "flat"), bids);
}

#[test]
fn every_benchmark_query_plans_and_runs() {
    let mut n = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(BENCH).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    for p in names {
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with('q') && name.ends_with(".sql")) {
            continue;
        }
        let script = format!("{}{}", ddl(), std::fs::read_to_string(&p).unwrap());
        let vars: HashMap<String, String> = [
            ("EVENTS".to_string(), "5000".to_string()),
            ("TPS".to_string(), "10000".to_string()),
            ("SINK".to_string(), "blackhole".to_string()),
        ]
        .into();
        let config = EngineConfig {
            cores: 2,
            pin_cores: false,
            ..Default::default()
        };
        let report = weir::sql::run_script(&script, &vars, config).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(report.shards, 2);
        n += 1;
    }
    assert!(n >= 13, "only {n} benchmark queries found");
}

/// q12 (processing-time windows) on the generator: whatever the wall clock does, every bid is
/// counted exactly once, in windows aligned to 10 s, for 1 to 4 shards.
#[test]
fn q12_counts_every_bid_once_in_aligned_processing_time_windows() {
    let mut bids: HashMap<i64, i64> = HashMap::new();
    for e in events() {
        if let Event::Bid(b) = e {
            *bids.entry(b.bidder).or_default() += 1;
        }
    }
    let q12 = std::fs::read_to_string(Path::new(BENCH).join("q12.sql"))
        .unwrap()
        .replace("'${SINK}'", "'filesystem', 'path' = '${OUT}', 'format' = 'csv'");
    for cores in 1..=4 {
        let mut counted: HashMap<i64, i64> = HashMap::new();
        for line in run(&format!("{}{q12}", ddl()), cores, "q12") {
            let f: Vec<&str> = line.split(',').collect();
            let (start, end) = (parse_ts(f[2]), parse_ts(f[3]));
            assert_eq!((start % 10_000, end - start), (0, 10_000), "{line}: a 10 s window aligned to the interval");
            *counted.entry(f[0].parse().unwrap()).or_default() += f[1].parse::<i64>().unwrap();
        }
        assert_eq!(counted, bids, "bids per bidder on {cores} cores");
    }
}

/// `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) as epoch ms.
fn parse_ts(s: &str) -> i64 {
    let (date, time) = s.split_once(' ').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    days * 86_400_000 + ((t[0] * 60 + t[1]) * 60 + t[2]) * 1000 + ms
}
