use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pinroute_config::Config;
use pinroute_discovery::{apply, DiscoveredBackend, DiscoveryEvent, Lifecycle, RoutingTable};

use super::*;
use crate::cookie::PinKey;
use crate::snapshot::{PinCache, Snapshot};

fn config(extra: &str) -> Arc<Config> {
    let text = format!("[[route]]\nprefix = \"/\"\nbackends = [\"127.0.0.1:1\"]\n{extra}\n[[route]]\nprefix = \"/second-server\"\nbackends = [\"127.0.0.1:2\"]\n");
    Arc::new(Config::parse(Path::new("test.toml"), &text, None).unwrap())
}

fn backend(identity: &str, lifecycle: Lifecycle) -> DiscoveredBackend {
    DiscoveredBackend {
        identity: identity.into(),
        id: identity.into(),
        addr: "127.0.0.1:9".parse().unwrap(),
        lifecycle,
    }
}

fn snapshot(config: Arc<Config>, backends: Vec<DiscoveredBackend>) -> (Snapshot, PinCache) {
    let table = apply(&RoutingTable::empty(2), DiscoveryEvent::Replace { route: 0, backends }, Instant::now());
    let pins = PinCache::new(PinKey::new(b"0123456789abcdef"));
    (Snapshot::build(config, Arc::new(table), &pins, Arc::default()), pins)
}

fn facts(pin: ClientPin<'_>, random: u64) -> RequestFacts<'_> {
    RequestFacts { route: 0, pin, exclude: &[], random }
}

fn three_ready() -> (Snapshot, PinCache) {
    snapshot(
        config(""),
        vec![backend("a", Lifecycle::Ready), backend("b", Lifecycle::Ready), backend("c", Lifecycle::Ready)],
    )
}

#[test]
fn longest_prefix_wins_and_respects_segments() {
    let c = config("");
    assert_eq!(match_route(&c, None, "/api/health"), Some(0));
    assert_eq!(match_route(&c, None, "/second-server/api/health"), Some(1));
    assert_eq!(match_route(&c, None, "/second-server"), Some(1));
    assert_eq!(match_route(&c, None, "/second-serverX/api"), Some(0), "a prefix matches whole segments only");
}

#[test]
fn new_clients_spread_and_get_a_cookie() {
    let (snap, _) = three_ready();
    let now = Instant::now();
    let mut seen = [0usize; 3];
    for r in 0..300u64 {
        let random = r.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        match route(&facts(ClientPin::None, random), &snap, now) {
            Decision::Forward(f) => {
                assert_eq!(f.pin, PinOutcome::New);
                seen[f.backend] += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(seen.iter().all(|&n| n > 30), "spread {seen:?}");
}

#[test]
fn two_choices_prefers_the_less_loaded() {
    let (snap, _) = snapshot(config(""), vec![backend("a", Lifecycle::Ready), backend("b", Lifecycle::Ready)]);
    let _busy: Vec<_> = (0..5).map(|_| snap.table.routes[0].backends[0].runtime.begin()).collect();
    for random in 0..50u64 {
        let Decision::Forward(f) = route(&facts(ClientPin::None, random << 7), &snap, Instant::now()) else { panic!() };
        assert_eq!(f.backend, 1);
    }
}

#[test]
fn valid_cookie_sticks_to_ready_and_draining() {
    let (snap, _) = snapshot(config(""), vec![backend("a", Lifecycle::Ready), backend("b", Lifecycle::Draining)]);
    let pin_b = snap.views[0].pins[1].clone();
    for random in 0..20 {
        let d = route(&facts(ClientPin::Authentic(&pin_b), random), &snap, Instant::now());
        assert_eq!(d, Decision::Forward(Forward { route: 0, backend: 1, pin: PinOutcome::Pinned }));
    }
    // New clients never go to the draining one.
    for random in 0..20 {
        let Decision::Forward(f) = route(&facts(ClientPin::None, random), &snap, Instant::now()) else { panic!() };
        assert_eq!(f.backend, 0);
    }
}

#[test]
fn stale_cookie_repins_deterministically() {
    let (snap, pins) = three_ready();
    let gone = pins.key().pin("deleted-pod");
    let first = route(&facts(ClientPin::Authentic(&gone), 1), &snap, Instant::now());
    let Decision::Forward(f) = first else { panic!() };
    assert_eq!(f.pin, PinOutcome::Repinned);
    for random in 0..50 {
        assert_eq!(route(&facts(ClientPin::Authentic(&gone), random), &snap, Instant::now()), first);
    }
}

#[test]
fn down_backend_repins_its_clients() {
    let (snap, _) = three_ready();
    let now = Instant::now();
    snap.table.routes[0].backends[2].runtime.record_connect_failure(now);
    let pin_c = snap.views[0].pins[2].clone();
    let Decision::Forward(f) = route(&facts(ClientPin::Authentic(&pin_c), 3), &snap, now) else { panic!() };
    assert_eq!(f.pin, PinOutcome::Repinned);
    assert_ne!(f.backend, 2);
}

#[test]
fn excluded_backends_are_skipped_on_retry() {
    let (snap, _) = three_ready();
    let pin_a = snap.views[0].pins[0].clone();
    let exclude = [0usize, 1];
    let f = RequestFacts { route: 0, pin: ClientPin::Authentic(&pin_a), exclude: &exclude, random: 0 };
    assert_eq!(
        route(&f, &snap, Instant::now()),
        Decision::Forward(Forward { route: 0, backend: 2, pin: PinOutcome::Repinned })
    );
}

#[test]
fn forged_cookie_is_a_new_client() {
    let (snap, _) = three_ready();
    let Decision::Forward(f) = route(&facts(ClientPin::Forged, 5), &snap, Instant::now()) else { panic!() };
    assert_eq!(f.pin, PinOutcome::New);
}

#[test]
fn all_cordoned_rejects_new_but_serves_pinned() {
    let (snap, _) = snapshot(config(""), vec![backend("a", Lifecycle::Draining), backend("b", Lifecycle::NotReady)]);
    assert_eq!(route(&facts(ClientPin::None, 0), &snap, Instant::now()), Decision::Unavailable);
    let pin_a = snap.views[0].pins[0].clone();
    assert!(matches!(
        route(&facts(ClientPin::Authentic(&pin_a), 0), &snap, Instant::now()),
        Decision::Forward(Forward { backend: 0, pin: PinOutcome::Pinned, .. })
    ));

    let (snap, _) = snapshot(config("when_all_cordoned = \"serve_draining\""), vec![backend("a", Lifecycle::Draining)]);
    assert!(matches!(
        route(&facts(ClientPin::None, 0), &snap, Instant::now()),
        Decision::Forward(Forward { backend: 0, pin: PinOutcome::New, .. })
    ));
}

#[test]
fn empty_route_is_unavailable() {
    let (snap, _) = snapshot(config(""), vec![]);
    assert_eq!(route(&facts(ClientPin::None, 0), &snap, Instant::now()), Decision::Unavailable);
}

#[test]
fn drain_timeout_repins_pinned_clients_after_it() {
    let (snap, _) = snapshot(
        config("drain_timeout = \"1s\""),
        vec![backend("a", Lifecycle::Ready), backend("b", Lifecycle::Draining)],
    );
    let pin_b = snap.views[0].pins[1].clone();
    let now = Instant::now();
    assert!(matches!(
        route(&facts(ClientPin::Authentic(&pin_b), 0), &snap, now),
        Decision::Forward(Forward { backend: 1, pin: PinOutcome::Pinned, .. })
    ));
    let later = now + std::time::Duration::from_secs(2);
    assert_eq!(
        route(&facts(ClientPin::Authentic(&pin_b), 0), &snap, later),
        Decision::Forward(Forward { route: 0, backend: 0, pin: PinOutcome::Repinned })
    );
}
