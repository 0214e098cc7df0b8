//! Property of the discovery fold (issue #14): any interleaving of the same
//! pods' events, with relists at any points, ends in the table a fresh list
//! of the final state gives.
//!
//! "The same events": each pod has its own history of states (created,
//! relabelled, cordoned, losing its IP, deleted, ...) ending in its final
//! state; the watch delivers every pod's events in that pod's order (as the
//! API server does), but the pods' histories are interleaved arbitrarily,
//! and a relist (a `Replace` of what exists at that moment, as kube-runtime
//! sends after a 410 or a reconnect) may come at any point. The end table is
//! compared with `apply(empty, Replace(final pods))` on what a fresh list
//! determines: the set of live backends and, for each, its name, address,
//! lifecycle and whether it is draining. Gone entries may linger (they are
//! only kept for the admin view) but only for pods that are not live.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use pinroute_config::{KubernetesSource, LabelRequirement, PortRef};
use pinroute_discovery::{apply, pod_to_backend, DiscoveredBackend, DiscoveryEvent, Lifecycle, RoutingTable};
use proptest::prelude::*;

/// One pod at one moment.
#[derive(Debug, Clone, PartialEq)]
enum PodState {
    /// Does not exist (never created, or deleted).
    Absent,
    /// Exists.
    Exists { ip: Option<u8>, labelled_ready: bool, condition_ready: bool, deleting: bool, phase: &'static str },
}

fn pod_state() -> impl Strategy<Value = PodState> {
    prop_oneof![
        1 => Just(PodState::Absent),
        4 => (
            prop::option::weighted(0.85, 1..4u8),
            prop::bool::weighted(0.7),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.15),
            prop::sample::select(vec!["Running", "Running", "Running", "Pending", "Succeeded", "Failed"]),
        )
            .prop_map(|(ip, labelled_ready, condition_ready, deleting, phase)| PodState::Exists {
                ip,
                labelled_ready,
                condition_ready,
                deleting,
                phase,
            }),
    ]
}

fn source() -> KubernetesSource {
    KubernetesSource {
        namespace: "skypilot".into(),
        selector: "app=skypilot-api".into(),
        requirements: vec![LabelRequirement::Equals("app".into(), "skypilot-api".into())],
        ready_key: "skypilot.co/ready".into(),
        ready_value: "true".into(),
        port: PortRef::Name("http".into()),
    }
}

fn pod(index: usize, state: &PodState) -> Option<Pod> {
    let PodState::Exists { ip, labelled_ready, condition_ready, deleting, phase } = state else { return None };
    let mut labels = serde_json::json!({"app": "skypilot-api"});
    if *labelled_ready {
        labels["skypilot.co/ready"] = "true".into();
    }
    let mut meta = serde_json::json!({"name": format!("api-{index}"), "namespace": "skypilot", "uid": format!("uid-{index}"), "labels": labels});
    if *deleting {
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    }
    let ready = if *condition_ready { "True" } else { "False" };
    let mut status = serde_json::json!({"phase": phase, "conditions": [{"type": "Ready", "status": ready}]});
    if let Some(ip) = ip {
        status["podIP"] = format!("10.0.0.{ip}").into();
    }
    Some(
        serde_json::from_value(serde_json::json!({
            "metadata": meta,
            "spec": {"containers": [{"name": "api", "ports": [{"name": "http", "containerPort": 46580 + index}]}]},
            "status": status,
        }))
        .unwrap(),
    )
}

/// The event the watch sends when pod `index` reaches `state`, as
/// `KubeSource` turns it into one.
fn event(index: usize, state: &PodState) -> DiscoveryEvent {
    let uid = format!("uid-{index}");
    match pod(index, state).and_then(|p| pod_to_backend(&p, &source())) {
        Some(backend) => DiscoveryEvent::Upsert { route: 0, backend },
        None => DiscoveryEvent::Remove { route: 0, identity: uid.into() },
    }
}

/// What a list of the world returns.
fn listing(world: &[PodState]) -> Vec<DiscoveredBackend> {
    world.iter().enumerate().filter_map(|(i, s)| pod(i, s)).filter_map(|p| pod_to_backend(&p, &source())).collect()
}

/// What a fresh list determines about each live backend.
type Live = BTreeMap<String, (String, std::net::SocketAddr, Lifecycle, bool)>;

fn live(table: &RoutingTable) -> Live {
    table.routes[0]
        .backends
        .iter()
        .filter(|e| e.discovered.lifecycle != Lifecycle::Gone)
        .map(|e| {
            let d = &e.discovered;
            (d.identity.to_string(), (d.id.to_string(), d.addr, d.lifecycle, e.draining_since.is_some()))
        })
        .collect()
}

/// A world of up to 6 pods: initial and final states, and each pod's
/// states in between.
#[derive(Debug, Clone)]
struct History {
    initial: Vec<PodState>,
    /// Per pod: the states it goes through, the last being its final state.
    steps: Vec<Vec<PodState>>,
    /// Which pod's next step comes next: consumed in order, pods with no
    /// step left are skipped (an arbitrary interleaving).
    order: Vec<usize>,
    /// After how many delivered events a relist comes (any number of times).
    relists: Vec<usize>,
    /// Seconds between consecutive events.
    gaps: Vec<u64>,
}

fn history() -> impl Strategy<Value = History> {
    (1..7usize).prop_flat_map(|pods| {
        (
            prop::collection::vec(pod_state(), pods),
            prop::collection::vec(prop::collection::vec(pod_state(), 0..5), pods),
            prop::collection::vec(0..pods, 0..40),
            prop::collection::vec(0..30usize, 0..4),
            prop::collection::vec(prop_oneof![4 => 0..3u64, 1 => 20..90u64], 40),
        )
            .prop_map(|(initial, steps, order, relists, gaps)| History {
                initial,
                steps,
                order,
                relists,
                gaps,
            })
    })
}

/// Folds the history: the initial list, then the interleaved events and relists.
fn fold(h: &History, t0: Instant) -> (RoutingTable, Vec<PodState>) {
    let mut world = h.initial.clone();
    let mut now = t0;
    let mut table =
        apply(&RoutingTable::empty(1), DiscoveryEvent::Replace { route: 0, backends: listing(&world) }, now);
    let mut next = vec![0usize; world.len()];
    let mut queue: Vec<usize> = h.order.clone();
    // Whatever the order left out is delivered at the end, pod by pod.
    for (pod, steps) in h.steps.iter().enumerate() {
        queue.extend(std::iter::repeat_n(pod, steps.len()));
    }
    let mut delivered = 0;
    for pod in queue {
        let Some(state) = h.steps[pod].get(next[pod]) else { continue };
        next[pod] += 1;
        world[pod] = state.clone();
        now += Duration::from_secs(h.gaps[delivered % h.gaps.len()]);
        table = apply(&table, event(pod, state), now);
        delivered += 1;
        for _ in h.relists.iter().filter(|&&at| at == delivered) {
            table = apply(&table, DiscoveryEvent::Replace { route: 0, backends: listing(&world) }, now);
        }
    }
    (table, world)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_with_relists_ends_in_the_fresh_list(h in history()) {
        let t0 = Instant::now();
        let (table, world) = fold(&h, t0);
        let fresh = apply(&RoutingTable::empty(1), DiscoveryEvent::Replace { route: 0, backends: listing(&world) }, t0);
        prop_assert_eq!(live(&table), live(&fresh), "world {:?}", world);
        prop_assert!(table.routes[0].loaded);
        // Lingering entries are Gone ones of pods that are not live, once each.
        let mut seen = std::collections::BTreeSet::new();
        for entry in &table.routes[0].backends {
            prop_assert!(seen.insert(entry.discovered.identity.to_string()), "listed twice: {}", entry.discovered.identity);
        }
        for gone in table.routes[0].backends.iter().filter(|e| e.discovered.lifecycle == Lifecycle::Gone) {
            prop_assert!(!live(&fresh).contains_key(&*gone.discovered.identity));
        }
    }

    #[test]
    fn two_interleavings_of_the_same_events_agree(h in history(), other in prop::collection::vec(0..6usize, 0..40)) {
        let t0 = Instant::now();
        let (a, world_a) = fold(&h, t0);
        let pods = h.initial.len();
        let reordered = History { order: other.into_iter().map(|p| p % pods).collect(), relists: vec![], ..h.clone() };
        let (b, world_b) = fold(&reordered, t0);
        prop_assert_eq!(&world_a, &world_b);
        prop_assert_eq!(live(&a), live(&b));
    }
}
