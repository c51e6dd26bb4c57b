//! Processing-time windows in SQL (`PROCTIME()` and TUMBLE / HOP over it) on a test clock that
//! moves one second forward at every read (`EngineConfig::processing_clock`), so processing
//! time advances with the job's own work and nothing sleeps. Which window a bid lands in depends
//! on thread timing, so the rows are not compared; what is deterministic is: every bid is
//! counted exactly once per window it belongs to, windows are aligned to the interval, and a
//! window fires only after the clock passed its end — except a key's last windows, which may
//! still be open when the input ends (weir fires them then).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use weir::config::EngineConfig;
use weir::time::{ProcessingClock, TestClock};

const BIDS: usize = 20_000;
const BIDDERS: i64 = 40;
/// A clock far from the epoch and not aligned to any window.
const START_MS: i64 = 1_700_000_003_217;

/// `BIDS` bids of `BIDDERS` bidders (seeded), as the CSV file `dir/bid.csv`; bids per bidder.
fn write_bids(dir: &Path) -> HashMap<i64, i64> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut text = String::new();
    let mut per_bidder = HashMap::new();
    for i in 0..BIDS {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let bidder = (state % BIDDERS as u64) as i64;
        *per_bidder.entry(bidder).or_default() += 1;
        text.push_str(&format!("{},{bidder},{},{}\n", 1000 + i % 97, state % 1000, 1_600_000_000_000 + i as i64 * 10));
    }
    std::fs::write(dir.join("bid.csv"), text).unwrap();
    per_bidder
}

/// Run `select` (the INSERT's query, into `out_rows (bidder, n, window_start, window_end,
/// fired_at)`) on `cores` shards with a stepping test clock; the output rows as (bidder, n,
/// start, end, fired_at) in epoch ms.
fn run(dir: &Path, cores: usize, select: &str) -> Vec<(i64, i64, i64, i64, i64)> {
    let out = dir.join(format!("out-{cores}"));
    let script = format!(
        "CREATE TABLE bid (auction BIGINT, bidder BIGINT, price BIGINT, ms BIGINT, pt AS PROCTIME(),\n\
           date_time AS TO_TIMESTAMP_LTZ(ms, 3), WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND\n\
         ) WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\n\
         CREATE TABLE out_rows (bidder BIGINT, n BIGINT, window_start TIMESTAMP(3), window_end TIMESTAMP(3), fired_at TIMESTAMP_LTZ(3))\n\
           WITH ('connector' = 'filesystem', 'path' = '{}', 'format' = 'csv');\n\
         INSERT INTO out_rows {select};",
        dir.join("bid.csv").display(),
        out.display()
    );
    let config = EngineConfig {
        cores,
        pin_cores: false,
        batch_size: 64,
        processing_clock: ProcessingClock::Test(TestClock::stepping(START_MS, 1_000)),
        ..Default::default()
    };
    weir::sql::run_script(&script, &HashMap::new(), config).unwrap_or_else(|e| panic!("{cores} cores: {e}"));
    let mut rows = Vec::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let p = f.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with(['.', '_']) {
            continue;
        }
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            let f: Vec<&str> = line.split(',').collect();
            rows.push((f[0].parse().unwrap(), f[1].parse().unwrap(), ts(f[2]), ts(f[3]), ts(f[4])));
        }
    }
    rows
}

/// `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) as epoch ms.
fn ts(s: &str) -> i64 {
    let (date, time) = s.split_once(' ').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    let (y, m) = if d[1] <= 2 { (d[0] - 1, d[1] + 9) } else { (d[0], d[1] - 3) };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let ms: i64 = format!("{frac:0<3}")[..3].parse().unwrap();
    days * 86_400_000 + ((t[0] * 60 + t[1]) * 60 + t[2]) * 1000 + ms
}

/// Windows are `size` long and aligned to `slide`; a window fired before end of input fired
/// after the clock passed its end; only each bidder's last windows (open at end of input) may
/// have fired earlier. Returns how many windows the clock fired.
fn check_windows(rows: &[(i64, i64, i64, i64, i64)], size: i64, slide: i64, what: &str) -> usize {
    let mut last_end: BTreeMap<i64, i64> = BTreeMap::new();
    for &(bidder, _, start, end, _) in rows {
        assert_eq!((start % slide, end - start), (0, size), "{what}: window [{start}, {end})");
        assert!(start >= START_MS - size, "{what}: window [{start}, {end}) before the clock started");
        let e = last_end.entry(bidder).or_insert(end);
        *e = (*e).max(end);
    }
    let mut by_clock = 0;
    for &(bidder, _, start, end, fired_at) in rows {
        if fired_at >= end {
            by_clock += 1;
        } else {
            // Still open when the input ended: among the bidder's last windows (a HOP record
            // opens `size / slide` windows at once).
            assert!(
                end > last_end[&bidder] - size,
                "{what}: window [{start}, {end}) of {bidder} fired at {fired_at}, before its end"
            );
        }
    }
    by_clock
}

#[test]
fn tumbling_processing_time_windows_count_every_bid_once() {
    let dir = tempfile::tempdir().unwrap();
    let bids = write_bids(dir.path());
    for cores in [1, 3] {
        let rows = run(
            dir.path(),
            cores,
            "SELECT bidder, COUNT(*), window_start, window_end, PROCTIME() FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(pt), INTERVAL '10' SECOND)) \
             GROUP BY bidder, window_start, window_end",
        );
        let mut counted: HashMap<i64, i64> = HashMap::new();
        for &(bidder, n, ..) in &rows {
            *counted.entry(bidder).or_default() += n;
        }
        assert_eq!(counted, bids, "every bid counted once on {cores} cores");
        let by_clock = check_windows(&rows, 10_000, 10_000, "TUMBLE");
        assert!(by_clock > 0, "the clock fired windows while the job ran ({} rows)", rows.len());
    }
}

/// HOP over processing time: a bid counts once in each of its windows (size / slide of them),
/// and the event-time attribute of the same table plays no part.
#[test]
fn hop_processing_time_windows_count_every_bid_once_per_window() {
    let dir = tempfile::tempdir().unwrap();
    let bids = write_bids(dir.path());
    let rows = run(
        dir.path(),
        2,
        "SELECT bidder, COUNT(*), window_start, window_end, PROCTIME() FROM \
         TABLE(HOP((SELECT bidder, PROCTIME() AS p FROM bid), DESCRIPTOR(p), INTERVAL '5' SECOND, INTERVAL '10' SECOND)) \
         GROUP BY bidder, window_start, window_end",
    );
    let mut counted: HashMap<i64, i64> = HashMap::new();
    for &(bidder, n, ..) in &rows {
        *counted.entry(bidder).or_default() += n;
    }
    let twice: HashMap<i64, i64> = bids.iter().map(|(k, v)| (*k, 2 * v)).collect();
    assert_eq!(counted, twice, "every bid in both of its windows");
    assert!(check_windows(&rows, 10_000, 5_000, "HOP") > 0);
}
