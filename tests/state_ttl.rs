//! Keyed state with processing-time TTL, driven by a manual clock, on every backend: expired
//! values are never returned, `OnReadAndWrite` renews on read, and the TTL answers are the same
//! on the memory backend, the LSM backend with a large cache, and the LSM backend with a cache
//! so small that values live in the store (whose TTL clock is the same state clock). Memory
//! backend only: cleanup is incremental and bounded, and the expiry queue does not grow under
//! rewrites.

use weir::prelude::*;
use weir::state::{StateBackendKind, StateClock, StateContext, StateTtl, TtlUpdate};
use weir::testing::{run_local, StateHarness};

/// The backends every test runs on: (name, kind, cache bytes).
const BACKENDS: [(&str, StateBackendKind, usize); 3] = [
    ("memory", StateBackendKind::Memory, 1 << 20),
    ("lsm", StateBackendKind::Lsm, 64 << 20),
    ("lsm, tiny cache", StateBackendKind::Lsm, 4096),
];

/// Run `body` with a context at time `now` on every backend.
fn on_every_backend(now: i64, body: impl Fn(&StateContext<u64>, &StateClock)) {
    for (name, kind, cache) in BACKENDS {
        eprintln!("backend: {name}");
        run_local(async {
            let mut h = StateHarness::<u64>::new(kind, cache, now);
            h.connect().await;
            body(&h.ctx, &h.clock);
        });
    }
}

fn ctx(now: i64) -> (StateContext<u64>, StateClock) {
    let clock = StateClock::new(now);
    (StateContext::new(clock.clone()), clock)
}

#[test]
fn expired_values_are_invisible() {
    on_every_backend(1_000, expired_values_are_invisible_on);
}

fn expired_values_are_invisible_on(ctx: &StateContext<u64>, clock: &StateClock) {
    let mut v = ctx.value::<i64>("v", Some(StateTtl::new(100, TtlUpdate::OnCreateAndWrite)));
    v.update(&1, 10);
    clock.set(1_099);
    assert_eq!(v.value(&1), Some(&10));
    // Reading does not renew under OnCreateAndWrite.
    clock.set(1_100);
    assert_eq!(v.value(&1), None);
    assert_eq!(v.entries(), 0, "a read that meets an expired entry removes it");
    // A write renews.
    v.update(&2, 20);
    clock.set(1_150);
    v.update(&2, 21);
    clock.set(1_249);
    assert_eq!(v.value(&2), Some(&21));
    clock.set(1_250);
    assert_eq!(v.value(&2), None);
    // The clock never goes back.
    clock.set(0);
    assert_eq!(clock.now(), 1_250);
}

#[test]
fn on_read_and_write_extends() {
    on_every_backend(0, |ctx, clock| {
        let mut v = ctx.value::<String>("v", Some(StateTtl::new(100, TtlUpdate::OnReadAndWrite)));
        // Other keys fill a tiny cache, so the renewed value is evicted and read back.
        let mut filler = ctx.value::<u64>("filler", None);
        v.update(&7, "x".to_string());
        for t in (50..1_000).step_by(50) {
            clock.set(t);
            assert_eq!(v.value(&7).map(String::as_str), Some("x"), "read at {t} keeps it alive");
            for k in 0..200 {
                filler.update(&k, t as u64);
            }
        }
        clock.set(1_049);
        assert_eq!(v.value(&7).map(String::as_str), Some("x"));
        clock.set(1_149);
        assert_eq!(v.value(&7), None);
    });
}

/// Memory backend: the expiry queue removes expired entries a few per access.
#[test]
fn cleanup_is_incremental_and_bounded() {
    let (ctx, clock) = ctx(0);
    let ttl = StateTtl::new(10, TtlUpdate::OnCreateAndWrite).cleanup_per_access(2);
    let mut v = ctx.value::<u64>("v", Some(ttl));
    for k in 0..1_000u64 {
        v.update(&k, k);
    }
    assert_eq!(v.entries(), 1_000);
    clock.set(10);
    // One access removes at most `cleanup_per_access` expired entries.
    assert_eq!(v.value(&5_000), None);
    assert_eq!(v.entries(), 998);
    // Writing new keys keeps cleaning: each write removes up to 2 and adds 1.
    for k in 10_000..11_000u64 {
        v.update(&k, k);
    }
    assert_eq!(v.entries(), 1_000, "all old entries cleaned by the writes");
    assert_eq!(ctx.entry_counts(), vec![("v".to_string(), 1_000)]);
    clock.set(20);
    v.expire_all();
    assert_eq!(v.entries(), 0);
    assert_eq!(ctx.total_entries(), 0);
}

#[test]
fn queue_does_not_grow_under_rewrites() {
    on_every_backend(0, queue_does_not_grow_under_rewrites_on);
}

fn queue_does_not_grow_under_rewrites_on(ctx: &StateContext<u64>, clock: &StateClock) {
    let mut v = ctx.value::<u64>("v", Some(StateTtl::new(1_000, TtlUpdate::OnCreateAndWrite)));
    let mut m = ctx.map::<u32, u64>("m", Some(StateTtl::new(1_000, TtlUpdate::OnReadAndWrite)));
    for t in 0..100_000i64 {
        clock.set(t / 10);
        let k = (t % 50) as u64;
        v.update(&k, t as u64);
        m.put(&k, (t % 3) as u32, t as u64);
        if t % 7 == 0 {
            // Delete and re-create: leaves a stale slot each time.
            v.clear(&k);
            v.update(&k, 0);
        }
    }
    assert_eq!(v.entries(), 50);
    assert_eq!(m.entries(), 150);
    assert!(v.expiry_queue_len() <= 2 * 50 + 64 + 1, "value queue {}", v.expiry_queue_len());
    assert!(m.expiry_queue_len() <= 2 * 150 + 64 + 1, "map queue {}", m.expiry_queue_len());
    clock.set(1_000_000);
    v.expire_all();
    m.expire_all();
    assert_eq!((v.entries(), m.entries()), (0, 0));
}

#[test]
fn list_map_and_aggregating_ttl() {
    on_every_backend(0, list_map_and_aggregating_ttl_on);
}

fn list_map_and_aggregating_ttl_on(ctx: &StateContext<u64>, clock: &StateClock) {
    let ttl = StateTtl::new(100, TtlUpdate::OnCreateAndWrite);
    let mut l = ctx.list::<i64>("l", Some(ttl));
    let mut m = ctx.map::<String, i64>("m", Some(ttl));
    let mut a = ctx.aggregating("a", Count, Some(ttl));
    l.add(&1, 1);
    m.put(&1, "a".into(), 1);
    a.add(&1, &"r");
    clock.set(60);
    l.add(&1, 2);
    m.put(&1, "b".into(), 2);
    a.add(&1, &"r");
    assert_eq!(l.get(&1).copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(a.get(&1), Some(2));
    // Per-element TTL: the first element expires, the second lives on.
    clock.set(100);
    assert_eq!(l.get(&1).copied().collect::<Vec<_>>(), vec![2]);
    let mut seen = Vec::new();
    m.for_each(&1, |k, v| seen.push((k.clone(), *v)));
    assert_eq!(seen, vec![("b".to_string(), 2)]);
    assert_eq!(m.get(&1, &"a".to_string()), None);
    assert_eq!(a.get(&1), Some(2), "the accumulator was written at 60");
    clock.set(160);
    assert_eq!(l.get(&1).count(), 0);
    assert!(!m.contains(&1, &"b".to_string()));
    assert_eq!(a.get(&1), None);
    assert_eq!((l.entries(), m.entries(), a.entries()), (0, 0, 0));
}

#[test]
fn states_without_ttl_never_expire() {
    on_every_backend(0, states_without_ttl_never_expire_on);
}

fn states_without_ttl_never_expire_on(ctx: &StateContext<u64>, clock: &StateClock) {
    let mut v = ctx.value::<i64>("v", None);
    v.update(&1, 1);
    clock.set(i64::MAX / 2);
    assert_eq!(v.value(&1), Some(&1));
    assert_eq!(
        v.update_with(
            &1,
            || 0,
            |x| {
                *x += 1;
                *x
            }
        ),
        2
    );
    assert_eq!(v.expiry_queue_len(), 0);
}
