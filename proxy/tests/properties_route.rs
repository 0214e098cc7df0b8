//! Properties of the routing decision over generated tables and requests
//! (issue #14): it never picks a Down or Gone backend; an authentic pin to a
//! Ready or Draining backend is honoured (within `drain_timeout`); a new
//! client never lands on a Draining backend (unless the route says
//! `serve_draining` and none is Ready); the re-pin of a stale value is the
//! same on two replicas with the same table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinroute::cookie::{CookieCheck, PinKey};
use pinroute::route::{route, ClientPin, Decision, PinOutcome, RequestFacts};
use pinroute::snapshot::{PinCache, Snapshot};
use pinroute_config::Config;
use pinroute_discovery::{apply, BackendState, DiscoveredBackend, DiscoveryEvent, Lifecycle, RoutingTable};
use proptest::prelude::*;

const KEY: &[u8] = b"0123456789abcdef-properties";

/// One generated backend: what the source says and what the proxy saw.
#[derive(Debug, Clone)]
struct GenBackend {
    lifecycle: Lifecycle,
    health_failed: bool,
    operator_drained: bool,
    in_flight: usize,
}

fn backend() -> impl Strategy<Value = GenBackend> {
    let lifecycle = prop::sample::select(vec![
        Lifecycle::Ready,
        Lifecycle::Ready,
        Lifecycle::Draining,
        Lifecycle::Retiring,
        Lifecycle::NotReady,
        Lifecycle::Gone,
    ]);
    (lifecycle, prop::bool::weighted(0.2), prop::bool::weighted(0.2), 0..4usize).prop_map(
        |(lifecycle, health_failed, operator_drained, in_flight)| GenBackend {
            lifecycle,
            health_failed,
            operator_drained,
            in_flight,
        },
    )
}

/// A route's table and settings, and the request's facts.
#[derive(Debug, Clone)]
struct Case {
    backends: Vec<GenBackend>,
    serve_draining: bool,
    /// `drain_timeout` in seconds (`None`: unlimited).
    drain_timeout: Option<u64>,
    /// How long after the table was built the request comes, seconds.
    elapsed: u64,
    /// Which backend's cookie the client sends: an index, a stale identity, or none.
    pin: PinChoice,
    exclude: Vec<usize>,
    random: u64,
}

#[derive(Debug, Clone)]
enum PinChoice {
    None,
    Backend(usize),
    Stale(String),
    Forged(String),
}

fn case() -> impl Strategy<Value = Case> {
    prop::collection::vec(backend(), 1..9).prop_flat_map(|backends| {
        let n = backends.len();
        let pin = prop_oneof![
            1 => Just(PinChoice::None),
            3 => (0..n).prop_map(PinChoice::Backend),
            2 => "[a-z0-9-]{1,12}".prop_map(PinChoice::Stale),
            1 => "[0-9a-f]{32}|.{0,8}".prop_map(PinChoice::Forged),
        ];
        (
            Just(backends),
            any::<bool>(),
            prop::option::of(1..120u64),
            0..240u64,
            pin,
            prop::collection::vec(0..n, 0..3),
            any::<u64>(),
        )
            .prop_map(|(backends, serve_draining, drain_timeout, elapsed, pin, exclude, random)| Case {
                backends,
                serve_draining,
                drain_timeout,
                elapsed,
                pin,
                exclude,
                random,
            })
    })
}

fn identity(i: usize) -> String {
    format!("pod-uid-{i}")
}

fn config(case: &Case) -> Arc<Config> {
    let mut text = String::from("[[route]]\nprefix = \"/\"\nbackends = [\"127.0.0.1:1\"]\n");
    if case.serve_draining {
        text.push_str("when_all_cordoned = \"serve_draining\"\n");
    }
    if let Some(limit) = case.drain_timeout {
        text.push_str(&format!("drain_timeout = \"{limit}s\"\n"));
    }
    Arc::new(Config::parse(Path::new("properties.toml"), &text, None).unwrap())
}

/// Builds one replica's snapshot of the case's table, as discovery would:
/// one full list at `t0`, then the runtime observations.
fn replica(case: &Case, t0: Instant) -> (Snapshot, Vec<pinroute_discovery::InFlightGuard>) {
    let discovered = case
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| DiscoveredBackend {
            identity: identity(i).into(),
            id: format!("ns/pod-{i}").into(),
            addr: format!("127.0.0.1:{}", 2000 + i).parse().unwrap(),
            lifecycle: b.lifecycle,
        })
        .collect();
    let table = apply(&RoutingTable::empty(1), DiscoveryEvent::Replace { route: 0, backends: discovered }, t0);
    let mut guards = Vec::new();
    for (entry, b) in table.routes[0].backends.iter().zip(&case.backends) {
        if b.health_failed {
            entry.runtime.record_health_check(false);
        }
        if b.operator_drained {
            entry.runtime.set_operator_drain(true);
        }
        for _ in 0..b.in_flight {
            guards.push(entry.runtime.begin());
        }
    }
    let pins = PinCache::new(PinKey::new(KEY));
    (Snapshot::build(config(case), Arc::new(table), &pins, Arc::default()), guards)
}

/// The cookie value the client sends, and what the proxy's check makes of it.
fn client_value(case: &Case) -> Option<String> {
    let key = PinKey::new(KEY);
    match &case.pin {
        PinChoice::None => None,
        PinChoice::Backend(i) => Some(key.pin(&identity(*i))),
        PinChoice::Stale(id) => Some(key.pin(&format!("gone-{id}"))),
        PinChoice::Forged(text) => Some(text.clone()),
    }
}

fn decide(case: &Case, snapshot: &Snapshot, now: Instant, value: Option<&str>) -> Decision {
    let pin = match value {
        None => ClientPin::None,
        Some(v) if snapshot.key.check(v) == CookieCheck::Authentic => ClientPin::Authentic(v),
        Some(_) => ClientPin::Forged,
    };
    route(&RequestFacts { route: 0, pin, exclude: &case.exclude, random: case.random }, snapshot, now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn decisions_respect_states_pins_and_drain(case in case()) {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(case.elapsed);
        let (snapshot, _guards) = replica(&case, t0);
        let entries = &snapshot.table.routes[0].backends;
        let value = client_value(&case);
        let decision = decide(&case, &snapshot, now, value.as_deref());
        let usable = |i: usize| !case.exclude.contains(&i);
        let ready_exists = (0..entries.len()).any(|i| usable(i) && entries[i].state(now) == BackendState::Ready);

        if let Decision::Forward(f) = decision {
            let state = entries[f.backend].state(now);
            prop_assert!(state.serves_pinned(), "picked a {:?} backend: {:?}", state, case);
            prop_assert!(usable(f.backend), "picked an excluded backend: {:?}", case);
            match f.pin {
                PinOutcome::New | PinOutcome::Repinned => {
                    let draining_allowed = case.serve_draining && !ready_exists;
                    prop_assert!(
                        state == BackendState::Ready || (draining_allowed && state == BackendState::Draining),
                        "a new or re-pinned client landed on a {:?} backend: {:?}", state, case
                    );
                }
                PinOutcome::Pinned => {
                    prop_assert!(matches!(case.pin, PinChoice::Backend(i) if i == f.backend), "{:?}", case);
                }
                PinOutcome::RequestId => prop_assert!(false, "route() never routes by request id"),
            }
        } else {
            // Unavailable only when nothing could take the client.
            let draining_exists = (0..entries.len()).any(|i| usable(i) && entries[i].state(now) == BackendState::Draining);
            prop_assert!(!ready_exists, "a Ready backend was free: {:?}", case);
            prop_assert!(!(case.serve_draining && draining_exists), "serve_draining with a Draining backend free: {:?}", case);
        }

        // An authentic pin to a Ready or Draining backend (not retired by a
        // reload, not excluded, within drain_timeout) is honoured.
        if let PinChoice::Backend(i) = case.pin {
            let entry = &entries[i];
            let within = match (case.drain_timeout, entry.draining_for(now)) {
                (Some(limit), Some(elapsed)) => elapsed < Duration::from_secs(limit),
                _ => true,
            };
            let honourable = entry.state(now).serves_pinned()
                && entry.discovered.lifecycle != Lifecycle::Retiring
                && usable(i)
                && (entry.state(now) == BackendState::Ready || within);
            if honourable {
                prop_assert_eq!(
                    decision,
                    Decision::Forward(pinroute::route::Forward { route: 0, backend: i, pin: PinOutcome::Pinned }),
                    "{:?}", case
                );
            } else {
                prop_assert!(!matches!(decision, Decision::Forward(f) if f.pin == PinOutcome::Pinned), "{:?}", case);
            }
        }
    }

    #[test]
    fn a_stale_value_is_repinned_alike_on_two_replicas(case in case(), other_random in any::<u64>()) {
        let PinChoice::Stale(_) = case.pin else { return Ok(()) };
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(case.elapsed);
        let value = client_value(&case);
        let (a, _ga) = replica(&case, t0);
        let (b, _gb) = replica(&case, t0);
        let first = decide(&case, &a, now, value.as_deref());
        // The other replica draws other randomness and may see other loads.
        let mut on_b = case.clone();
        on_b.random = other_random;
        let second = decide(&on_b, &b, now, value.as_deref());
        prop_assert_eq!(first, second, "{:?}", case);
        if let Decision::Forward(f) = first {
            prop_assert_eq!(f.pin, PinOutcome::Repinned);
        }
    }
}
