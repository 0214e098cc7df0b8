//! Criterion benches of the pure core: the route decision and the cookie at
//! 1,000 backends, and the discovery fold + publish.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use pinroute::cookie::PinKey;
use pinroute::route::{route, ClientPin, RequestFacts};
use pinroute::snapshot::{PinCache, Snapshot};
use pinroute_config::Config;
use pinroute_discovery::{apply, DiscoveredBackend, DiscoveryEvent, Lifecycle, Publisher, RoutingTable};

const BACKENDS: usize = 1000;

fn backend(i: usize, lifecycle: Lifecycle) -> DiscoveredBackend {
    DiscoveredBackend {
        identity: format!("8a4c1f9e-0000-4000-8000-{i:012}").into(),
        id: format!("skypilot/api-{i}").into(),
        addr: format!("10.{}.{}.{}:46580", i / 65536, (i / 256) % 256, i % 256).parse().unwrap(),
        lifecycle,
    }
}

fn snapshot() -> (Snapshot, PinCache) {
    let config =
        Arc::new(Config::parse(Path::new("bench.toml"), "[[route]]\nbackends = [\"127.0.0.1:1\"]\n", None).unwrap());
    let backends =
        (0..BACKENDS).map(|i| backend(i, if i % 10 == 0 { Lifecycle::Draining } else { Lifecycle::Ready })).collect();
    let table = apply(&RoutingTable::empty(1), DiscoveryEvent::Replace { route: 0, backends }, Instant::now());
    let pins = PinCache::new(PinKey::new(b"bench-key-0123456789"));
    (Snapshot::build(config, Arc::new(table), &pins, Arc::default()), pins)
}

fn route_decision(c: &mut Criterion) {
    let (snap, pins) = snapshot();
    let pinned = snap.views[0].pins[BACKENDS / 2].to_string();
    let stale = pins.key().pin("deleted-pod");
    let key = pins.key().clone();
    let now = Instant::now();
    let mut group = c.benchmark_group("route_1000_backends");
    group.bench_function("pinned_cookie_incl_verify", |b| {
        b.iter(|| {
            let pin = match key.check(black_box(&pinned)) {
                pinroute::cookie::CookieCheck::Authentic => ClientPin::Authentic(&pinned),
                pinroute::cookie::CookieCheck::Forged => ClientPin::Forged,
            };
            route(&RequestFacts { route: 0, pin, exclude: &[], random: 7 }, &snap, now)
        })
    });
    let mut random = 0u64;
    group.bench_function("new_client_two_choices", |b| {
        b.iter(|| {
            random = random.wrapping_add(0x9E37_79B9_7F4A_7C15);
            route(&RequestFacts { route: 0, pin: ClientPin::None, exclude: &[], random }, &snap, now)
        })
    });
    group.bench_function("stale_cookie_rendezvous", |b| {
        b.iter(|| {
            route(
                &RequestFacts { route: 0, pin: ClientPin::Authentic(black_box(&stale)), exclude: &[], random: 1 },
                &snap,
                now,
            )
        })
    });
    group.finish();

    let mut cookie = c.benchmark_group("cookie");
    cookie.bench_function("pin_encode", |b| b.iter(|| key.pin(black_box("8a4c1f9e-0000-4000-8000-000000000001"))));
    cookie.bench_function("verify", |b| b.iter(|| key.check(black_box(&pinned))));
    cookie.finish();
}

fn discovery_fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("discovery");
    group.sample_size(20);
    // 1,000 pod events, each folded and published (with the proxy's snapshot
    // rebuild as the listener, as in production).
    group.bench_function("fold_and_publish_1000_events", |b| {
        b.iter_batched(
            || {
                let config = Arc::new(
                    Config::parse(Path::new("bench.toml"), "[[route]]\nbackends = [\"127.0.0.1:1\"]\n", None).unwrap(),
                );
                let pins = Arc::new(PinCache::new(PinKey::new(b"bench-key-0123456789")));
                let listener_pins = pins.clone();
                Publisher::new(
                    1,
                    Box::new(move |table| {
                        black_box(Snapshot::build(config.clone(), table.clone(), &listener_pins, Arc::default()));
                    }),
                )
            },
            |publisher| {
                for i in 0..BACKENDS {
                    publisher.publish(DiscoveryEvent::Upsert { route: 0, backend: backend(i, Lifecycle::Ready) });
                }
                publisher
            },
            BatchSize::LargeInput,
        )
    });
    let (snap, _) = snapshot();
    let table = snap.table.clone();
    group.bench_function("one_cordon_event_on_1000_pod_table", |b| {
        b.iter(|| {
            apply(
                &table,
                DiscoveryEvent::Upsert { route: 0, backend: backend(500, Lifecycle::Draining) },
                Instant::now(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, route_decision, discovery_fold);
criterion_main!(benches);
