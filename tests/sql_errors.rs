//! Unsupported or wrong SQL is rejected with the line and column of the offending construct and,
//! where one exists, the supported alternative; bad input data stops the job naming file, line
//! and field (or is skipped and counted); and no script — however mangled — makes the front end
//! panic.

use std::collections::HashMap;

use weir::config::{EngineConfig, ErrorPolicy};
use weir::sql::{explain, run_script, SqlError};

const BID: &str = "CREATE TABLE bid (\n  auction BIGINT, bidder BIGINT, price BIGINT, channel STRING, ms BIGINT,\n  date_time AS TO_TIMESTAMP_LTZ(ms, 3),\n  WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND\n) WITH ('connector' = 'filesystem', 'path' = '${DATA}/bid.csv', 'format' = 'csv');\n\
CREATE TABLE out_rows (a BIGINT, b BIGINT) WITH ('connector' = 'blackhole');\n";

fn config() -> EngineConfig {
    EngineConfig {
        cores: 2,
        pin_cores: false,
        ..Default::default()
    }
}

fn vars() -> HashMap<String, String> {
    [
        ("DATA".to_string(), "/nonexistent".to_string()),
        ("OUT".to_string(), "/nonexistent/out".to_string()),
    ]
    .into()
}

/// Plan `BID` + `tail`; the error must point at the first occurrence of `anchor` in `tail`
/// (the script's start when `anchor` is empty) and contain `needles`.
fn rejects(tail: &str, anchor: &str, needles: &[&str]) -> SqlError {
    let script = format!("{BID}{tail}");
    let (line, column) = if anchor.is_empty() {
        (1, 1)
    } else {
        let at = tail.find(anchor).expect("anchor in tail");
        let before = &tail[..at];
        let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
        (7 + before.matches('\n').count() as u32, (at - line_start + 1) as u32)
    };
    let err = explain(&script, &vars(), config()).expect_err(tail);
    let text = err.to_string();
    assert_eq!((err.line(), err.column()), (line, column), "{tail}\n=> {text}");
    for n in needles {
        assert!(text.contains(n), "{tail}\n=> {text}\nmissing {n:?}");
    }
    err
}

#[test]
fn statements_and_settings() {
    rejects("INSERT INTO out_rows SELECT auction, price FROM bid ORDER BY price;", "ORDER", &["ORDER BY"]);
    rejects("SET 'table.local-time-zone' = 'Europe/Berlin';", "SET", &["Europe/Berlin", "UTC"]);
    rejects("SET 'parallelism.default' = 'many';", "SET", &["parallelism.default"]);
    rejects("SET 'state.backend' = 'disk';", "SET", &["state.backend", "rocksdb"]);
    rejects("CREATE FUNCTION f AS 'x';", "FUNCTION", &["not supported", "CREATE TABLE"]);
    rejects("SELECT auction FROM bid;", "SELECT", &["no sink", "INSERT INTO"]);
    rejects("", "", &["no INSERT INTO"]);
    rejects(
        "INSERT INTO nowhere SELECT auction, price FROM bid;",
        "nowhere",
        &["unknown sink table `nowhere`"],
    );
    rejects(
        "EXECUTE STATEMENT SET\nBEGIN\nINSERT INTO out_rows SELECT auction, price FROM bid;\nSELECT price FROM bid;\nEND;",
        "SELECT price",
        &["INSERT INTO ... or END in the statement set"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, price FROM bid WHERE url = '${NOPE}';",
        "'${NOPE}'",
        &["unknown variable ${NOPE}"],
    );
}

#[test]
fn tables() {
    rejects(
        "CREATE TABLE k (a BIGINT) WITH ('connector' = 'hbase-2.2', 'table-name' = 't');",
        "'connector'",
        &[
            "connector 'hbase-2.2'",
            "filesystem, kafka, kinesis, pulsar, nexmark, print, blackhole, gateway, mqtt, jdbc, elasticsearch-7",
        ],
    );
    rejects(
        "CREATE TABLE k (a BIGINT) WITH ('connector' = 'gateway', 'http.address' = '127.0.0.1:0');",
        "k (a",
        &["needs a 'log.dir' option", "kept across restarts"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT) WITH ('connector' = 'jdbc', 'url' = 'jdbc:postgresql://127.0.0.1:5432/db');",
        "k (a",
        &["needs a 'table-name' option"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', 'format' = 'json');",
        "k (a",
        &["properties.bootstrap.servers"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT) WITH ('connector' = 'kafka', 'topic' = 't', 'format' = 'json', 'properties.bootstrap.servers' = 'x', 'scan.startup.mode' = 'soon');",
        "'scan.startup.mode'",
        &["scan.startup.mode 'soon'", "earliest-offset"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT, t TIMESTAMP_LTZ(3) METADATA FROM 'timestamp') WITH ('connector' = 'filesystem', 'path' = '/x', 'format' = 'csv');",
        "t TIMESTAMP",
        &["only on 'kafka', 'kinesis' and 'pulsar' tables"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT) WITH ('connector' = 'filesystem', 'path' = '/x', 'format' = 'avro');",
        "'format'",
        &["'avro'", "'csv' or 'json'"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT, ts TIMESTAMP(3), WATERMARK FOR ts AS ts - a) WITH ('connector' = 'print');",
        "ts - a",
        &["watermark expression", "INTERVAL"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT, WATERMARK FOR a AS a) WITH ('connector' = 'print');",
        "a AS",
        &["time attribute `a` is BIGINT", "TIMESTAMP"],
    );
    rejects(
        "CREATE TABLE k (a GEOMETRY) WITH ('connector' = 'print');",
        "GEOMETRY",
        &["type GEOMETRY", "supported types"],
    );
    rejects(
        "CREATE TABLE k (a BIGINT, PRIMARY KEY (a) NOT ENFORCED) WITH ('connector' = 'print');",
        "PRIMARY",
        &["PRIMARY KEY"],
    );
    rejects("CREATE TABLE bid (a BIGINT) WITH ('connector' = 'print');", "bid", &["already exists"]);
}

#[test]
fn names_and_types() {
    rejects(
        "INSERT INTO out_rows SELECT auction, pricee FROM bid;",
        "pricee",
        &["unknown column `pricee`", "available columns", "price"],
    );
    // A type error names the expression and the types.
    rejects(
        "INSERT INTO out_rows SELECT auction, channel + 1 FROM bid;",
        "channel",
        &["channel + 1", "STRING", "INT"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, price FROM bid WHERE price;",
        "price;",
        &["WHERE `price` is BIGINT", "BOOLEAN"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, channel FROM bid;",
        "channel",
        &["`channel` of the query is STRING", "BIGINT", "CAST"],
    );
    rejects("INSERT INTO out_rows SELECT auction FROM bid;", "SELECT", &["produces 1 columns", "has 2"]);
    rejects(
        "INSERT INTO out_rows SELECT auction, FOO(price) FROM bid;",
        "FOO",
        &["unknown function FOO", "supported"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, CAST(date_time AS BOOLEAN) FROM bid;",
        "CAST",
        &["cannot cast TIMESTAMP_LTZ(3) to BOOLEAN"],
    );
    rejects("INSERT INTO out_rows SELECT auction, MOD(price) FROM bid;", "MOD", &["MOD takes 2"]);
}

#[test]
fn streaming_constructs() {
    rejects(
        "INSERT INTO out_rows SELECT auction, COUNT(*) FROM bid GROUP BY auction;",
        "SELECT",
        &["window TVF", "GROUP BY window_start, window_end"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction;",
        "auction;",
        &["must GROUP BY window_start and window_end"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, bidder FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
        "bidder",
        &["`bidder` is neither grouped nor aggregated", "GROUP BY"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ms), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
        "ms)",
        &["DESCRIPTOR(ms)", "time attribute is `date_time`"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND, INTERVAL '1' SECOND)) GROUP BY auction, window_start, window_end;",
        "TUMBLE",
        &["offsets are not supported"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(SLIDE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
        "SLIDE",
        &["SLIDE", "TUMBLE, HOP, CUMULATE, SESSION"],
    );
    rejects(
        "INSERT INTO out_rows SELECT a.auction, b.price FROM bid a JOIN bid b ON a.auction = b.auction;",
        "JOIN",
        &["only window joins", "window_start"],
    );
    rejects("INSERT INTO out_rows SELECT auction, price FROM bid, bid;", ", bid", &["cross joins"]);
    rejects(
        "INSERT INTO out_rows SELECT auction, SUM(price) OVER (PARTITION BY auction) FROM bid;",
        "OVER",
        &["must ORDER BY the time attribute", "ORDER BY date_time"],
    );
    rejects("INSERT INTO out_rows SELECT DISTINCT auction, price FROM bid;", "SELECT", &["SELECT DISTINCT"]);
    rejects("INSERT INTO out_rows SELECT auction, (SELECT 1) FROM bid;", "SELECT 1", &["subqueries"]);
}

/// OVER aggregations: the forms weir does not run are named with their position and the
/// supported form; so are processing-time forms without support.
#[test]
fn over_windows_and_processing_time() {
    let over = |w: &str| format!("INSERT INTO out_rows SELECT auction, SUM(price) OVER ({w}) FROM bid;");
    rejects(
        &over("PARTITION BY auction ORDER BY price ROWS BETWEEN 2 PRECEDING AND CURRENT ROW"),
        "price ROWS",
        &["ordered by the event-time attribute", "ORDER BY date_time"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time DESC ROWS 2 PRECEDING"),
        "date_time DESC",
        &["ascending"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time, price ROWS 2 PRECEDING"),
        "price ROWS",
        &["time attribute alone"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"),
        "UNBOUNDED",
        &["UNBOUNDED PRECEDING frames are not supported", "ROWS BETWEEN n PRECEDING AND CURRENT ROW"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time"),
        "OVER",
        &["without a frame is unbounded", "RANGE BETWEEN INTERVAL '10' SECOND PRECEDING"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time ROWS BETWEEN 2 PRECEDING AND 1 FOLLOWING"),
        "1 FOLLOWING",
        &["1 FOLLOWING", "CURRENT ROW"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time RANGE BETWEEN 5 PRECEDING AND CURRENT ROW"),
        "5 PRECEDING",
        &["needs an interval", "INTERVAL '10' SECOND"],
    );
    rejects(
        &over("PARTITION BY auction ORDER BY date_time ROWS BETWEEN INTERVAL '1' SECOND PRECEDING AND CURRENT ROW"),
        "INTERVAL '1'",
        &["row count"],
    );
    rejects(
        "INSERT INTO out_rows SELECT SUM(price) OVER (PARTITION BY auction ORDER BY date_time ROWS 2 PRECEDING), \
         COUNT(*) OVER (PARTITION BY auction ORDER BY date_time ROWS 3 PRECEDING) FROM bid;",
        "OVER (PARTITION BY auction ORDER BY date_time ROWS 3",
        &["same window", "WINDOW w AS"],
    );
    rejects(
        "INSERT INTO out_rows SELECT COUNT(DISTINCT price) OVER (PARTITION BY auction ORDER BY date_time ROWS 2 PRECEDING), auction FROM bid;",
        "COUNT(DISTINCT",
        &["COUNT(DISTINCT ...) OVER is not supported"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, LAG(price) OVER (PARTITION BY auction ORDER BY date_time ROWS 2 PRECEDING) FROM bid;",
        "LAG",
        &["LAG(...) OVER is not supported", "COUNT, SUM, MIN, MAX and AVG"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, SUM(price) OVER w2 FROM bid WINDOW w AS (PARTITION BY auction ORDER BY date_time ROWS 2 PRECEDING);",
        "OVER w2",
        &["unknown window `w2`", "windows of this query: w"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, SUM(price) OVER (PARTITION BY auction ORDER BY date_time ROWS 2 PRECEDING) FROM \
         TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;",
        "SUM(price) OVER",
        &["cannot be mixed with GROUP BY", "subquery"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, price FROM bid WHERE SUM(price) OVER (PARTITION BY auction ORDER BY date_time ROWS 2 PRECEDING) > 3;",
        "OVER (",
        &["only as select items"],
    );
    // Processing time.
    let proc = "(SELECT auction, price, PROCTIME() AS pt FROM bid)";
    rejects(
        &format!("INSERT INTO out_rows SELECT auction, SUM(price) OVER (PARTITION BY auction ORDER BY pt ROWS 2 PRECEDING) FROM {proc};"),
        "pt ROWS",
        &["processing time are not supported", "event-time attribute"],
    );
    rejects(
        &format!("INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(SESSION({proc}, DESCRIPTOR(pt), INTERVAL '5' SECOND)) GROUP BY auction, window_start, window_end;"),
        "pt), INTERVAL",
        &["SESSION windows on processing time", "TUMBLE, HOP or CUMULATE"],
    );
    rejects(
        &format!(
            "INSERT INTO out_rows SELECT auction, COUNT(*) FROM (SELECT auction, COUNT(*) AS n, window_start, window_end FROM \
             TABLE(TUMBLE({proc}, DESCRIPTOR(pt), INTERVAL '5' SECOND)) GROUP BY auction, window_start, window_end) GROUP BY auction, window_start, window_end;"
        ),
        "SELECT auction, COUNT(*) FROM (",
        &["only over a window TVF"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, PROCTIME(price) FROM bid;",
        "PROCTIME",
        &["PROCTIME takes 0 argument"],
    );
}

#[test]
fn bad_records_fail_with_file_line_and_field_or_are_skipped() {
    let dir = std::env::temp_dir().join(format!("weir-sql-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bid.csv"), "1,2,3,web,1000\n1,2,x3,web,2000\n1,2,5,web,3000\n").unwrap();
    let mut v = vars();
    v.insert("DATA".into(), dir.display().to_string());
    let script = format!("{BID}INSERT INTO out_rows SELECT auction, price FROM bid;");
    let err = run_script(&script, &v, config()).unwrap_err().to_string();
    assert!(err.contains("bid.csv line 2 field `price`") && err.contains("'x3'"), "{err}");
    let skip = EngineConfig {
        on_bad_record: ErrorPolicy::Skip,
        ..config()
    };
    let report = run_script(&script, &v, skip).unwrap();
    assert_eq!(report.operators_named("sink:blackhole").records_in, 2);
    assert_eq!(report.operators_named("source:bid").bad_records, 1);
    // Read as byte ranges of 20 bytes (every line but the first starts in a later range): the
    // same rows, the bad line named by its line in the file.
    let mut lines: Vec<String> = (0..40).map(|i| format!("{i},2,{i},web,{}", 1000 * i)).collect();
    lines[33] = "33,2,x33,web,33000".into();
    std::fs::write(dir.join("bid.csv"), lines.join("\n")).unwrap();
    for cores in [1, 3] {
        let ranged = EngineConfig {
            cores,
            file_split_bytes: 20,
            ..config()
        };
        let err = run_script(&script, &v, ranged.clone()).unwrap_err().to_string();
        assert!(err.contains("bid.csv line 34 field `price`") && err.contains("'x33'"), "{err}");
        let report = run_script(
            &script,
            &v,
            EngineConfig {
                on_bad_record: ErrorPolicy::Skip,
                ..ranged
            },
        )
        .unwrap();
        assert_eq!(report.operators_named("sink:blackhole").records_in, 39);
        assert_eq!(report.operators_named("source:bid").bad_records, 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Seeded mangling of valid scripts: the planner returns an error or a plan, never panics.
#[test]
fn mangled_scripts_never_panic() {
    let good = [
        format!("{BID}INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;"),
        format!("{BID}INSERT INTO out_rows SELECT auction, CASE WHEN price > 10 THEN MOD(price, 7) ELSE -price END FROM bid WHERE channel LIKE 'a%' AND price BETWEEN 1 AND 5;"),
        format!(
            "{BID}INSERT INTO out_rows SELECT L.auction, L.price FROM (SELECT auction, price, window_start, window_end FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))) L \
             JOIN (SELECT MAX(price) AS m, window_start, window_end FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY window_start, window_end) R \
             ON L.window_start = R.window_start AND L.window_end = R.window_end AND L.price = R.m;"
        ),
        format!(
            "{BID}INSERT INTO out_rows SELECT auction, AVG(price) OVER w FROM bid WHERE price > 3 \
             WINDOW w AS (PARTITION BY auction ORDER BY date_time RANGE BETWEEN INTERVAL '10' SECOND PRECEDING AND CURRENT ROW);"
        ),
        format!(
            "{BID}INSERT INTO out_rows SELECT auction, COUNT(*) FROM TABLE(HOP((SELECT auction, PROCTIME() AS pt FROM bid), DESCRIPTOR(pt), \
             INTERVAL '2' SECOND, INTERVAL '10' SECOND)) GROUP BY auction, window_start, window_end;"
        ),
    ];
    for g in &good {
        explain(g, &vars(), config()).unwrap_or_else(|e| panic!("{e}"));
    }
    let pieces = [
        "(",
        ")",
        ",",
        "'",
        "SELECT",
        "FROM",
        "TABLE",
        "GROUP BY",
        "*",
        "-",
        "9999999999999999999999",
        "0.5",
        "NULL",
        "AND",
        "CAST(",
        "AS",
        "INTERVAL",
        ";",
        "\n",
        "DESCRIPTOR",
        "window_start",
        "OVER",
        "ROWS",
        "PRECEDING",
        "WINDOW",
    ];
    let mut state: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let base = good[round % good.len()].as_bytes();
        let mut text: Vec<u8> = base.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % (text.len() + 1);
            match next() % 3 {
                0 if at < text.len() => {
                    let len = 1 + (next() as usize) % 12;
                    text.drain(at..(at + len).min(text.len()));
                }
                1 => {
                    let p = pieces[(next() as usize) % pieces.len()];
                    text.splice(at..at, format!(" {p} ").bytes());
                }
                _ if at < text.len() => text[at] = b"x(),'*;0 -"[(next() as usize) % 10],
                _ => {}
            }
        }
        let s = String::from_utf8_lossy(&text).to_string();
        let r = std::panic::catch_unwind(|| explain(&s, &vars(), config()));
        assert!(r.is_ok(), "panicked on:\n{s}");
        if let Ok(Err(e)) = r {
            assert!(e.pos.is_some(), "error without a position: {e}\n{s}");
        }
    }
}

#[test]
fn ranks_interval_joins_functions_and_nexmark() {
    rejects(
        "INSERT INTO out_rows SELECT auction, rn FROM (SELECT auction, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price) AS rn FROM bid) WHERE rn <= 3;",
        "ROW_NUMBER",
        &["windowed relation", "window_start, window_end"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, rn FROM (SELECT auction, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY price) AS rn \
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))) WHERE rn <= 3;",
        "ROW_NUMBER",
        &["PARTITION BY window_start, window_end"],
    );
    rejects(
        "INSERT INTO out_rows SELECT L.auction, R.price FROM bid L LEFT JOIN bid R ON L.auction = R.auction \
         AND R.date_time BETWEEN L.date_time AND L.date_time + INTERVAL '1' SECOND;",
        "LEFT",
        &["outer interval joins"],
    );
    rejects(
        "INSERT INTO out_rows SELECT L.auction, R.price FROM bid L JOIN bid R ON L.auction = R.auction;",
        "JOIN",
        &["window joins and interval joins", "BETWEEN"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, price FROM bid WHERE REGEXP(channel, channel);",
        "channel)",
        &["pattern of REGEXP must be a string literal"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, price FROM bid WHERE REGEXP(channel, '(');",
        "'('",
        &["bad regular expression"],
    );
    rejects(
        "INSERT INTO out_rows SELECT auction, price FROM bid WHERE DATE_FORMAT(date_time, 'yyyy-QQ') = 'x';",
        "'yyyy-QQ'",
        &["pattern letter 'Q'"],
    );
    rejects(
        "CREATE TABLE nx (auction BIGINT, colour STRING) WITH ('connector' = 'nexmark', 'nexmark.table' = 'bid');",
        "nx",
        &["`colour` is not a Nexmark field"],
    );
    rejects(
        "CREATE TABLE nx (auction BIGINT) WITH ('connector' = 'nexmark', 'nexmark.table' = 'bid', 'rate.limited' = 'true');",
        "'rate.limited'",
        &["not supported by weir's nexmark connector"],
    );
    rejects(
        "CREATE TABLE nx (auction BIGINT, price STRING) WITH ('connector' = 'nexmark', 'nexmark.table' = 'bid');",
        "nx",
        &["`price` is STRING, expected BIGINT"],
    );
}
