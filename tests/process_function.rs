//! A keyed process function end to end: a per-key running count in `ValueState` emitted on
//! every record, plus per-bucket counts in `MapState` summarised by an event-time timer per
//! (key, 100 ms bucket end) when the watermark passes it. Checked against a brute-force
//! reference over the same seeded, out-of-order input (with late records), for 1..=4 cores, on
//! the memory state backend and on the LSM backend with a cache far smaller than the state
//! (so values are evicted to the store and read back), in a temporary or a configured folder.

use std::collections::{BTreeMap, HashMap};

use weir::prelude::*;
use weir::state::StateBackendKind;

const DELAY_MS: i64 = 50;
const KEYS: u64 = 13;

/// (key, event time ms)
type Event = (u64, i64);

fn input(seed: u64, n: usize) -> Vec<Event> {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut base = 1_000i64;
    (0..n)
        .map(|_| {
            base += (next() % 7) as i64;
            let r = next();
            let ts = if r % 20 == 0 {
                base - 200 - (r % 300) as i64 // late
            } else {
                base - (r % DELAY_MS as u64) as i64 // out of order within the bound
            };
            (next() % KEYS, ts.max(0))
        })
        .collect()
}

/// The timer a record registers: the end of its 100 ms bucket.
fn bucket_end(ts: i64) -> i64 {
    (ts + 100).div_euclid(100) * 100
}

/// (key, kind, value): `record` carries the key's running count, `summary` the number of the
/// key's records in the bucket ending at the output timestamp counted since the last summary.
type Out = (u64, &'static str, i64);

#[derive(Clone, Default)]
struct CountWithSummaries {
    count: Option<ValueState<u64, i64>>,
    buckets: Option<MapState<u64, i64, i64>>,
}

impl KeyedProcessFunction<u64, Event> for CountWithSummaries {
    type Out = Out;
    fn open(&mut self, state: &StateContext<u64>) {
        self.count = Some(state.value("count", None));
        self.buckets = Some(state.map("buckets", None));
    }
    fn process(&mut self, key: &u64, _e: Event, ctx: &mut ProcessContext<'_, u64, Out>) {
        let c = self.count.as_mut().expect("opened").update_with(
            key,
            || 0,
            |c| {
                *c += 1;
                *c
            },
        );
        ctx.emit((*key, "record", c));
        let end = bucket_end(ctx.timestamp());
        let buckets = self.buckets.as_mut().expect("opened");
        let n = buckets.get(key, &end).copied().unwrap_or(0);
        buckets.put(key, end, n + 1);
        ctx.register_event_time_timer(end);
    }
    fn on_timer(&mut self, key: &u64, ts: i64, domain: TimeDomain, ctx: &mut ProcessContext<'_, u64, Out>) {
        assert_eq!(domain, TimeDomain::EventTime);
        assert!(ctx.current_watermark() >= ts, "fired early");
        // Timers are deduplicated per (key, ts): a firing always finds records to summarise.
        let n = self.buckets.as_mut().expect("opened").remove(key, &ts).expect("timer fired twice");
        ctx.emit((*key, "summary", n));
    }
}

/// The reference, in input order: running counts per key, and record counts per (key, bucket).
/// Output of the engine's timers may split a bucket's count over several firings (when late
/// records arrive after the bucket fired), so summaries are compared summed per (key, bucket).
/// Bucket `(key, bucket end)` → records.
type Buckets = BTreeMap<(u64, i64), i64>;

fn reference(events: &[Event]) -> (Vec<(Out, i64)>, Buckets) {
    let mut records = Vec::new();
    let mut counts: HashMap<u64, i64> = HashMap::new();
    let mut buckets = Buckets::new();
    for &(k, ts) in events {
        let c = counts.entry(k).or_insert(0);
        *c += 1;
        records.push(((k, "record", *c), ts));
        *buckets.entry((k, bucket_end(ts))).or_insert(0) += 1;
    }
    records.sort();
    (records, buckets)
}

#[test]
fn running_count_and_timers_match_reference_on_1_to_4_cores() {
    let events = input(0x5eed_cafe, 20_000);
    let late = {
        let mut max_ts = i64::MIN;
        events
            .iter()
            .filter(|(_, ts)| {
                let late = max_ts != i64::MIN && *ts <= max_ts - DELAY_MS;
                max_ts = max_ts.max(*ts);
                late
            })
            .count()
    };
    assert!(late > 500, "the input has late records ({late})");
    let (expected_records, expected_buckets) = reference(&events);
    let state_root = tempfile::tempdir().unwrap();
    let backends = [
        (StateBackendKind::Memory, None),
        (StateBackendKind::Lsm, None),
        (StateBackendKind::Lsm, Some(state_root.path().to_path_buf())),
    ];
    for ((backend, state_dir), cores) in backends.iter().flat_map(|b| (1..=4).map(move |c| (b.clone(), c))) {
        let env = StreamEnv::new(EngineConfig {
            cores,
            pin_cores: false,
            batch_size: 97,
            state_backend: backend,
            state_dir: state_dir.clone(),
            state_cache_bytes: 4096,
            state_store_memtable_bytes: 64 << 10,
            state_maintain_step_bytes: 16 << 10,
            ..Default::default()
        });
        let what = format!("cores = {cores}, backend = {backend:?}, state_dir = {state_dir:?}");
        let out = env
            .from_collection(events.clone())
            .assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(DELAY_MS), |e| e.1)
            .key_by(|e: &Event| e.0)
            .process(CountWithSummaries::default())
            .collect();
        let report = env.execute().unwrap();
        let got = out.take_with_timestamps();
        let mut records: Vec<_> = got.iter().filter(|(o, _)| o.1 == "record").cloned().collect();
        records.sort();
        assert_eq!(records, expected_records, "{what}");
        let mut buckets = Buckets::new();
        for &((k, kind, n), ts) in &got {
            if kind == "summary" {
                assert!(n > 0);
                *buckets.entry((k, ts)).or_insert(0) += n;
            }
        }
        assert_eq!(buckets, expected_buckets, "{what}");
        let figures = report.operators_named("process");
        assert_eq!(figures.records_in, events.len() as u64, "{what}");
        assert_eq!(figures.records_out, got.len() as u64, "{what}");
        if let Some(root) = &state_dir {
            // One store per shard, kept after the job: <state_dir>/<operator>/shard-<n>.
            let ops: Vec<_> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
            let stores = ops
                .iter()
                .filter(|op| (0..cores).all(|s| op.join(format!("shard-{s}")).join("LOCK").exists()))
                .count();
            assert!(stores >= 1, "{what}: {ops:?}");
        }
    }
}
