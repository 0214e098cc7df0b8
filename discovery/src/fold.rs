//! The pure fold: `apply(table, event) -> table`. Sources emit events; the
//! fold turns them into a new immutable [`RoutingTable`], carrying every
//! surviving backend's live [`BackendRuntime`] over unchanged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{BackendState, DiscoveredBackend, Lifecycle};
use crate::runtime::BackendRuntime;

/// How long a Gone backend stays listed (admin view) before it is pruned.
const GONE_RETENTION: Duration = Duration::from_secs(60);

/// A change reported by a source, for one route (by index in the config).
#[derive(Debug, Clone)]
pub enum DiscoveryEvent {
    /// A backend appeared or changed.
    Upsert {
        /// Route index.
        route: usize,
        /// Its new description.
        backend: DiscoveredBackend,
    },
    /// A backend is gone (pod deleted).
    Remove {
        /// Route index.
        route: usize,
        /// Its identity.
        identity: Arc<str>,
    },
    /// The complete set (static list, or a full Kubernetes relist). Backends
    /// missing from it become Gone; the route is marked loaded.
    Replace {
        /// Route index.
        route: usize,
        /// Every backend of the route.
        backends: Vec<DiscoveredBackend>,
    },
    /// The config's routes changed (reload): route `i` of the new table is
    /// route `from[i]` of the old one, or a new, empty, unloaded route.
    Reshape {
        /// Old index of each new route.
        from: Vec<Option<usize>>,
    },
}

/// One backend in a table: what the source says plus its live runtime.
#[derive(Debug, Clone)]
pub struct BackendEntry {
    /// Source's view.
    pub discovered: DiscoveredBackend,
    /// Live counters, shared across tables.
    pub runtime: Arc<BackendRuntime>,
    /// When it became Gone.
    pub gone_at: Option<Instant>,
    /// When the source started calling it Draining (cordon, terminating).
    pub draining_since: Option<Instant>,
}

impl BackendEntry {
    /// How long it has been draining (source or operator), if it is.
    pub fn draining_for(&self, now: Instant) -> Option<Duration> {
        let since = match (self.draining_since, self.runtime.operator_drained_since()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        since.map(|at| now.saturating_duration_since(at))
    }

    /// The state the router acts on at `now`.
    pub fn state(&self, now: Instant) -> BackendState {
        match self.discovered.lifecycle {
            Lifecycle::Gone => BackendState::Gone,
            Lifecycle::NotReady => BackendState::Down,
            _ if self.runtime.is_down(now) => BackendState::Down,
            Lifecycle::Draining | Lifecycle::Retiring => BackendState::Draining,
            Lifecycle::Ready if self.runtime.operator_drained() => BackendState::Draining,
            Lifecycle::Ready => BackendState::Ready,
        }
    }
}

/// The backends of one route.
#[derive(Debug, Clone, Default)]
pub struct RouteBackends {
    /// In arrival order; Gone ones linger briefly.
    pub backends: Vec<BackendEntry>,
    /// Whether the source delivered a complete set at least once.
    pub loaded: bool,
}

/// An immutable snapshot of every route's backends.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    /// Bumped by every fold.
    pub generation: u64,
    /// Indexed like the config's routes.
    pub routes: Vec<RouteBackends>,
}

impl RoutingTable {
    /// An empty, unloaded table for `routes` routes.
    pub fn empty(routes: usize) -> RoutingTable {
        RoutingTable { generation: 0, routes: vec![RouteBackends::default(); routes] }
    }

    /// Whether every route has been fully listed once (`/readyz`).
    pub fn loaded(&self) -> bool {
        self.routes.iter().all(|r| r.loaded)
    }
}

/// Folds one event into a new table. Pure but for reading `now`'s effect on
/// pruning: the same inputs give the same table.
pub fn apply(table: &RoutingTable, event: DiscoveryEvent, now: Instant) -> RoutingTable {
    let mut next = table.clone();
    next.generation = table.generation.wrapping_add(1);
    let route_index = match &event {
        DiscoveryEvent::Upsert { route, .. }
        | DiscoveryEvent::Remove { route, .. }
        | DiscoveryEvent::Replace { route, .. } => *route,
        DiscoveryEvent::Reshape { from } => {
            next.routes =
                from.iter().map(|old| old.and_then(|i| table.routes.get(i).cloned()).unwrap_or_default()).collect();
            return next;
        }
    };
    if next.routes.len() <= route_index {
        next.routes.resize(route_index + 1, RouteBackends::default());
    }
    let route = &mut next.routes[route_index];
    match event {
        DiscoveryEvent::Upsert { backend, .. } => upsert(route, backend, now),
        DiscoveryEvent::Remove { identity, .. } => mark_gone(route, |e| e.discovered.identity == identity, now),
        DiscoveryEvent::Replace { backends, .. } => {
            mark_gone(route, |e| !backends.iter().any(|b| b.identity == e.discovered.identity), now);
            for backend in backends {
                upsert(route, backend, now);
            }
            route.loaded = true;
        }
        DiscoveryEvent::Reshape { .. } => {} // handled above
    }
    route.backends.retain(|e| e.gone_at.is_none_or(|at| now.duration_since(at) < GONE_RETENTION));
    next
}

fn upsert(route: &mut RouteBackends, backend: DiscoveredBackend, now: Instant) {
    let gone = backend.lifecycle == Lifecycle::Gone;
    let draining = matches!(backend.lifecycle, Lifecycle::Draining | Lifecycle::Retiring);
    match route.backends.iter_mut().find(|e| e.discovered.identity == backend.identity) {
        Some(entry) => {
            entry.gone_at = if gone { entry.gone_at.or(Some(now)) } else { None };
            entry.draining_since = if draining { entry.draining_since.or(Some(now)) } else { None };
            entry.discovered = backend;
        }
        None => route.backends.push(BackendEntry {
            discovered: backend,
            runtime: Arc::new(BackendRuntime::default()),
            gone_at: gone.then_some(now),
            draining_since: draining.then_some(now),
        }),
    }
}

fn mark_gone(route: &mut RouteBackends, matches: impl Fn(&BackendEntry) -> bool, now: Instant) {
    for entry in route.backends.iter_mut().filter(|e| matches(e)) {
        if entry.discovered.lifecycle != Lifecycle::Gone {
            entry.discovered.lifecycle = Lifecycle::Gone;
            entry.gone_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(identity: &str, lifecycle: Lifecycle) -> DiscoveredBackend {
        DiscoveredBackend {
            identity: identity.into(),
            id: format!("ns/{identity}").into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            lifecycle,
        }
    }

    #[test]
    fn runtime_survives_relabel_and_relist() {
        let now = Instant::now();
        let t0 = RoutingTable::empty(1);
        let t1 = apply(&t0, DiscoveryEvent::Upsert { route: 0, backend: backend("a", Lifecycle::Ready) }, now);
        let runtime = t1.routes[0].backends[0].runtime.clone();
        let _guard = runtime.begin();
        let t2 = apply(&t1, DiscoveryEvent::Upsert { route: 0, backend: backend("a", Lifecycle::Draining) }, now);
        let t3 =
            apply(&t2, DiscoveryEvent::Replace { route: 0, backends: vec![backend("a", Lifecycle::Draining)] }, now);
        let entry = &t3.routes[0].backends[0];
        assert!(Arc::ptr_eq(&entry.runtime, &runtime));
        assert_eq!(entry.runtime.in_flight(), 1);
        assert_eq!(entry.state(now), BackendState::Draining);
        assert!(!t1.loaded() && t3.loaded());
        assert_eq!(t3.generation, 3);
    }

    #[test]
    fn replace_marks_missing_gone_then_prunes() {
        let now = Instant::now();
        let t = apply(
            &RoutingTable::empty(1),
            DiscoveryEvent::Replace {
                route: 0,
                backends: vec![backend("a", Lifecycle::Ready), backend("b", Lifecycle::Ready)],
            },
            now,
        );
        let t = apply(&t, DiscoveryEvent::Replace { route: 0, backends: vec![backend("b", Lifecycle::Ready)] }, now);
        let states: Vec<_> = t.routes[0].backends.iter().map(|e| e.state(now)).collect();
        assert_eq!(states, vec![BackendState::Gone, BackendState::Ready]);
        let later = now + GONE_RETENTION + Duration::from_secs(1);
        let t = apply(&t, DiscoveryEvent::Upsert { route: 0, backend: backend("c", Lifecycle::Ready) }, later);
        let ids: Vec<_> = t.routes[0].backends.iter().map(|e| e.discovered.identity.to_string()).collect();
        assert_eq!(ids, vec!["b", "c"]);
    }

    #[test]
    fn draining_since_is_kept_across_updates_and_reset_by_uncordon() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(5);
        let t = apply(
            &RoutingTable::empty(1),
            DiscoveryEvent::Upsert { route: 0, backend: backend("a", Lifecycle::Draining) },
            t0,
        );
        let t = apply(&t, DiscoveryEvent::Upsert { route: 0, backend: backend("a", Lifecycle::Draining) }, later);
        assert_eq!(t.routes[0].backends[0].draining_for(later), Some(Duration::from_secs(5)));
        let t = apply(&t, DiscoveryEvent::Upsert { route: 0, backend: backend("a", Lifecycle::Ready) }, later);
        assert_eq!(t.routes[0].backends[0].draining_for(later), None);
    }

    #[test]
    fn reshape_keeps_surviving_routes_and_their_runtimes() {
        let now = Instant::now();
        let t = apply(
            &RoutingTable::empty(2),
            DiscoveryEvent::Replace { route: 1, backends: vec![backend("b", Lifecycle::Ready)] },
            now,
        );
        let runtime = t.routes[1].backends[0].runtime.clone();
        let t = apply(&t, DiscoveryEvent::Reshape { from: vec![Some(1), None] }, now);
        assert_eq!(t.routes.len(), 2);
        assert!(Arc::ptr_eq(&t.routes[0].backends[0].runtime, &runtime));
        assert!(t.routes[0].loaded);
        assert!(t.routes[1].backends.is_empty() && !t.routes[1].loaded);
    }

    #[test]
    fn state_combines_source_and_runtime() {
        let now = Instant::now();
        let t = apply(
            &RoutingTable::empty(1),
            DiscoveryEvent::Upsert { route: 0, backend: backend("a", Lifecycle::Ready) },
            now,
        );
        let entry = &t.routes[0].backends[0];
        assert_eq!(entry.state(now), BackendState::Ready);
        entry.runtime.set_operator_drain(true);
        assert_eq!(entry.state(now), BackendState::Draining);
        entry.runtime.record_connect_failure(now);
        assert_eq!(entry.state(now), BackendState::Down, "a failing draining backend is down");
        let t = apply(&t, DiscoveryEvent::Remove { route: 0, identity: "a".into() }, now);
        assert_eq!(t.routes[0].backends[0].state(now), BackendState::Gone);
    }
}
