//! Overload: clients offer 10× what the job sustains (a sink that takes 200 µs per event on each
//! of 2 shards, i.e. ~10 000 events/s, against ~100 000 events/s offered). The gateway answers 503 + Retry-After
//! instead of buffering: every request is answered, accepted + rejected = sent, the backlog
//! stays at its bound, request memory stays within its budget, the process' memory does not grow
//! with the offered volume, and after a drain the job has received exactly the accepted events.
//! The sleeps here pace the clients and make the sink slow; no sleep synchronises anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use serde::Deserialize;
use weir::batch::Batch;
use weir::operator::Push;
use weir::prelude::*;
use weir::shard::{BuildCtx, Flusher};
use weir::sink::Sink;
use weir::source::gateway::protocol::HttpClient;
use weir::source::gateway::{Gateway, GatewayConfig, GatewaySource};

#[derive(Clone, Debug, Deserialize)]
struct Ev {
    id: u64,
}

/// A sink that records ids and takes `micros_per_event` per event (in its async flusher).
#[derive(Clone)]
struct SlowSink {
    ids: Arc<Mutex<Vec<u64>>>,
    micros_per_event: u64,
}

struct SlowPush {
    ids: Arc<Mutex<Vec<u64>>>,
    pending: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Push<Ev> for SlowPush {
    fn push(&mut self, batch: &mut Batch<Ev>) {
        self.ids.lock().unwrap().extend(batch.records.iter().map(|e| e.id));
        self.pending.set(self.pending.get() + batch.len() as u64);
        batch.clear();
    }
    fn watermark(&mut self, _wm: Timestamp) {}
    fn processing_time(&mut self, _now_ms: Timestamp) {}
    fn end(&mut self) {}
    fn barrier(&mut self, _epoch: u64, _snapshot: &mut weir::checkpoint::runtime::TaskSnapshot) {}
}

struct SlowFlusher {
    pending: std::rc::Rc<std::cell::Cell<u64>>,
    micros_per_event: u64,
}

impl Flusher for SlowFlusher {
    fn connect(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&mut self) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let n = self.pending.replace(0);
            glommio::timer::sleep(Duration::from_micros(n * self.micros_per_event)).await;
            Ok(())
        })
    }
    fn has_pending(&self) -> bool {
        self.pending.get() > 0
    }
}

impl Sink<Ev> for SlowSink {
    fn name(&self) -> String {
        "slow".into()
    }
    fn build(&self, ctx: &mut BuildCtx<'_>, _operator_name: &str) -> Result<Box<dyn Push<Ev>>> {
        let pending = std::rc::Rc::new(std::cell::Cell::new(0));
        ctx.add_flusher(Box::new(SlowFlusher {
            pending: pending.clone(),
            micros_per_event: self.micros_per_event,
        }));
        Ok(Box::new(SlowPush {
            ids: self.ids.clone(),
            pending,
        }))
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

const EVENTS_PER_REQUEST: u64 = 50;
const MAX_BACKLOG: u64 = 2_000;

#[test]
fn ten_times_the_sustainable_rate_is_refused_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        "overload",
        GatewayConfig {
            http_address: Some("127.0.0.1:0".into()),
            log_dir: dir.path().join("log"),
            partitions: 2,
            max_backlog_events: MAX_BACKLOG,
            max_inflight_bytes: 1 << 20,
            max_body_bytes: 256 << 10,
            ..Default::default()
        },
    )
    .unwrap();
    let http = gateway.http_addr().unwrap();
    let env = StreamEnv::new(EngineConfig {
        cores: 2,
        pin_cores: false,
        batch_size: 256,
        ..Default::default()
    });
    let source = GatewaySource::<Ev>::json(gateway);
    let handle = source.handle();
    let ids = Arc::new(Mutex::new(Vec::new()));
    env.source(source).without_event_time().sink(SlowSink {
        ids: ids.clone(),
        micros_per_event: 200,
    });
    let (graph, config) = (env.graph(), env.config().clone());
    let job = std::thread::spawn(move || weir::shard::runtime::execute(graph, &config));

    let rss_before = rss_bytes();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (handle, done) = (handle.clone(), done.clone());
        std::thread::spawn(move || {
            let (mut max_backlog, mut max_rss) = (0u64, 0u64);
            while !done.load(Ordering::Relaxed) {
                for p in handle.stats().partitions {
                    max_backlog = max_backlog.max(p.durable_next - p.consumed);
                }
                max_rss = max_rss.max(rss_bytes());
                std::thread::sleep(Duration::from_millis(20));
            }
            (max_backlog, max_rss)
        })
    };
    // 4 clients × one 50-event request (~50 KiB) every 2 ms ≈ 100 000 events/s for 3 s.
    let pad = "x".repeat(1000);
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let pad = pad.clone();
            std::thread::spawn(move || {
                let mut client = HttpClient::new(http, Duration::from_secs(10));
                let (mut accepted, mut rejected, mut sent) = (Vec::new(), 0u64, 0u64);
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < Duration::from_secs(3) {
                    let first = (c << 32) | (n * EVENTS_PER_REQUEST);
                    let body: String = (0..EVENTS_PER_REQUEST)
                        .map(|i| format!("{{\"id\":{},\"pad\":\"{pad}\"}}\n", first + i))
                        .collect();
                    let r = client
                        .post_expect_continue("/v1/events", body.as_bytes(), &[])
                        .expect("every request is answered");
                    sent += EVENTS_PER_REQUEST;
                    match r.status {
                        200 => accepted.extend(first..first + EVENTS_PER_REQUEST),
                        503 => {
                            assert_eq!(r.retry_after, Some(1), "{}", r.body);
                            rejected += EVENTS_PER_REQUEST;
                        }
                        other => panic!("unexpected status {other}: {}", r.body),
                    }
                    n += 1;
                    let next = start + Duration::from_millis(2 * n);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                (accepted, rejected, sent)
            })
        })
        .collect();
    let (mut accepted, mut rejected, mut sent) = (Vec::new(), 0, 0);
    for c in clients {
        let (a, r, s) = c.join().unwrap();
        accepted.extend(a);
        rejected += r;
        sent += s;
    }
    done.store(true, Ordering::Relaxed);
    let (max_backlog, max_rss) = sampler.join().unwrap();
    let stats = handle.stats();
    handle.drain();
    job.join().unwrap().unwrap();

    eprintln!(
        "sent {sent}, accepted {}, rejected {rejected}, max backlog {max_backlog}, rss growth {} MiB, {stats:?}",
        accepted.len(),
        (max_rss.saturating_sub(rss_before)) >> 20
    );
    assert_eq!(accepted.len() as u64 + rejected, sent, "every event was either accepted or rejected");
    assert!(
        rejected > accepted.len() as u64 * 5,
        "overloaded: {rejected} rejected vs {} accepted",
        accepted.len()
    );
    assert!(!accepted.is_empty());
    assert!(max_backlog <= MAX_BACKLOG + EVENTS_PER_REQUEST * 4, "backlog {max_backlog}");
    assert!(stats.inflight_bytes_high_water <= 1 << 20, "{stats:?}");
    assert!(
        stats.body_bytes_read < (accepted.len() as u64 + 1000) * 1100,
        "refused bodies were not read: {stats:?}"
    );
    let offered_bytes = sent * 1015;
    let growth = max_rss.saturating_sub(rss_before);
    assert!(
        growth < 96 << 20 && growth < offered_bytes / 2,
        "memory grew {growth} bytes with {offered_bytes} offered"
    );
    let mut got = ids.lock().unwrap().clone();
    got.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(got, accepted, "the job got exactly the accepted events");
}
