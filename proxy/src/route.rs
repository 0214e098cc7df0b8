//! The routing decision, a pure function of one request's facts and one
//! snapshot: which route, which backend, and whether to (re)issue the cookie.
//! No I/O, no locks: unit-tested without sockets, benched at 1,000 backends.

use std::hash::{Hash, Hasher};
use std::time::Instant;

use pinroute_config::{AllCordoned, Config};
use pinroute_discovery::{BackendEntry, BackendState};

use crate::snapshot::Snapshot;

/// The client's cookie, already checked against the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientPin<'a> {
    /// No cookie.
    None,
    /// A value we did not make: treated as no cookie.
    Forged,
    /// A value we made; its backend may be gone.
    Authentic(&'a str),
}

/// What the decision needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Route index (from [`match_route`]).
    pub route: usize,
    /// The client's pin.
    pub pin: ClientPin<'a>,
    /// Backends this request already failed to connect to.
    pub exclude: &'a [usize],
    /// Randomness for power-of-two choices (the caller draws it).
    pub random: u64,
}

/// Why the client got the backend it got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinOutcome {
    /// Its cookie's backend; no Set-Cookie.
    Pinned,
    /// No (valid) cookie: a fresh pick, cookie issued.
    New,
    /// Its cookie's backend is unusable: re-pinned, cookie reissued.
    Repinned,
}

impl PinOutcome {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PinOutcome::Pinned => "pinned",
            PinOutcome::New => "new",
            PinOutcome::Repinned => "repinned",
        }
    }
}

/// Where to send a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// Route index.
    pub route: usize,
    /// Backend index within the route.
    pub backend: usize,
    /// Cookie handling.
    pub pin: PinOutcome,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Proxy to this backend.
    Forward(Forward),
    /// No backend can take this client now: JSON 503 with `Retry-After`.
    Unavailable,
}

/// Longest-prefix match of a normalised path; `None` when no route serves it.
pub fn match_route(config: &Config, path: &str) -> Option<usize> {
    config
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| prefix_matches(&r.prefix, path))
        .max_by_key(|(_, r)| r.prefix.len())
        .map(|(i, _)| i)
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

/// Decides the backend for one request.
pub fn route(facts: &RequestFacts<'_>, snapshot: &Snapshot, now: Instant) -> Decision {
    let Some(table) = snapshot.table.routes.get(facts.route) else {
        return Decision::Unavailable;
    };
    let Some(view) = snapshot.views.get(facts.route) else {
        return Decision::Unavailable;
    };
    let usable = |i: usize| !facts.exclude.contains(&i);

    let stale = match facts.pin {
        ClientPin::Authentic(value) => {
            if let Some(&i) = view.by_pin.get(value) {
                if usable(i) && table.backends[i].state(now).serves_pinned() {
                    return forward(facts.route, i, PinOutcome::Pinned);
                }
            }
            Some(value)
        }
        ClientPin::None | ClientPin::Forged => None,
    };

    let all_cordoned = snapshot
        .config
        .routes
        .get(facts.route)
        .map_or(AllCordoned::Reject, |r| r.when_all_cordoned);
    let mut candidates: Vec<usize> = Vec::new();
    collect(
        &table.backends,
        now,
        BackendState::Ready,
        &usable,
        &mut candidates,
    );
    if candidates.is_empty() && all_cordoned == AllCordoned::ServeDraining {
        collect(
            &table.backends,
            now,
            BackendState::Draining,
            &usable,
            &mut candidates,
        );
    }
    if candidates.is_empty() {
        return Decision::Unavailable;
    }
    match stale {
        // Deterministic for a given stale value: the sky CLI keeps sending it
        // until its next /api/health, and every request must land together.
        Some(value) => forward(
            facts.route,
            rendezvous(value, &candidates, view),
            PinOutcome::Repinned,
        ),
        None => forward(
            facts.route,
            two_choices(&table.backends, &candidates, facts.random),
            PinOutcome::New,
        ),
    }
}

fn forward(route: usize, backend: usize, pin: PinOutcome) -> Decision {
    Decision::Forward(Forward {
        route,
        backend,
        pin,
    })
}

fn collect(
    backends: &[BackendEntry],
    now: Instant,
    want: BackendState,
    usable: &impl Fn(usize) -> bool,
    out: &mut Vec<usize>,
) {
    out.extend(
        backends
            .iter()
            .enumerate()
            .filter(|(i, b)| usable(*i) && b.state(now) == want)
            .map(|(i, _)| i),
    );
}

/// Power of two choices: the less loaded of two random candidates.
fn two_choices(backends: &[BackendEntry], candidates: &[usize], random: u64) -> usize {
    let n = candidates.len();
    let first = (random % n as u64) as usize;
    if n == 1 {
        return candidates[first];
    }
    // A second index distinct from the first.
    let second = (first + 1 + ((random >> 32) % (n as u64 - 1)) as usize) % n;
    let (a, b) = (candidates[first], candidates[second]);
    if backends[b].runtime.in_flight() < backends[a].runtime.in_flight() {
        b
    } else {
        a
    }
}

/// Highest-random-weight hashing of the stale value over the candidates,
/// keyed by their cookie values (stable across replicas and restarts).
fn rendezvous(stale: &str, candidates: &[usize], view: &crate::snapshot::RouteView) -> usize {
    let score = |i: usize| {
        let mut h = std::hash::DefaultHasher::new();
        stale.hash(&mut h);
        view.pins[i].hash(&mut h);
        h.finish()
    };
    candidates
        .iter()
        .copied()
        .max_by_key(|&i| score(i))
        .unwrap_or(candidates[0])
}

#[cfg(test)]
mod tests;
