//! The routing decision, a pure function of one request's facts and one
//! snapshot: which route, which backend, and whether to (re)issue the cookie.
//! No I/O, no locks: unit-tested without sockets, benched at 1,000 backends.

use std::time::Instant;

use pinroute_config::{AllCordoned, Config};
use pinroute_discovery::{BackendEntry, BackendState, Lifecycle};

use crate::snapshot::{mix, stable_hash, RouteView, Snapshot};

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
    /// Sent to the backend that owns the request's id; the client's cookie
    /// is left as it is.
    RequestId,
}

impl PinOutcome {
    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            PinOutcome::Pinned => "pinned",
            PinOutcome::New => "new",
            PinOutcome::Repinned => "repinned",
            PinOutcome::RequestId => "request_id",
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

/// Longest-prefix match of a normalised path among the routes for `host`
/// (routes without a host serve every host; on equal prefixes a route
/// naming the host wins). `None` when no route serves it.
pub fn match_route(config: &Config, host: Option<&str>, path: &str) -> Option<usize> {
    config
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| r.host.as_deref().is_none_or(|h| Some(h) == host) && prefix_matches(&r.prefix, path))
        .max_by_key(|(_, r)| (r.prefix.len(), r.host.is_some()))
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
    let drain_timeout = snapshot.config.routes.get(facts.route).and_then(|r| r.drain_timeout);

    let stale = match facts.pin {
        ClientPin::Authentic(value) => {
            if let Some(&i) = view.by_pin.get(value) {
                if usable(i) && serves_pinned(&table.backends[i], drain_timeout, now) {
                    return forward(facts.route, i, PinOutcome::Pinned);
                }
            }
            Some(value)
        }
        ClientPin::None | ClientPin::Forged => None,
    };

    let all_cordoned = snapshot.config.routes.get(facts.route).map_or(AllCordoned::Reject, |r| r.when_all_cordoned);
    let mut picked = pick(&table.backends, view, now, BackendState::Ready, &usable, stale, facts.random);
    if picked.is_none() && all_cordoned == AllCordoned::ServeDraining {
        picked = pick(&table.backends, view, now, BackendState::Draining, &usable, stale, facts.random);
    }
    match picked {
        None => Decision::Unavailable,
        Some(i) => forward(facts.route, i, if stale.is_some() { PinOutcome::Repinned } else { PinOutcome::New }),
    }
}

/// The backend owning a request id, when it may still serve it (Ready or
/// Draining: a draining pod serves its own requests to their end).
pub fn owner_of(snapshot: &Snapshot, route: usize, identity: &str, now: Instant) -> Option<usize> {
    let index = *snapshot.views.get(route)?.by_identity.get(identity)?;
    let entry = snapshot.table.routes.get(route)?.backends.get(index)?;
    entry.state(now).serves_pinned().then_some(index)
}

/// Another backend that may know an unknown request id: the first Ready or
/// Draining one not tried yet.
pub fn next_owner_candidate(snapshot: &Snapshot, route: usize, tried: &[usize], now: Instant) -> Option<usize> {
    let table = snapshot.table.routes.get(route)?;
    (0..table.backends.len()).find(|i| !tried.contains(i) && table.backends[*i].state(now).serves_pinned())
}

/// Whether a Ready backend not tried yet exists (somewhere to replay to).
pub fn has_ready_besides(snapshot: &Snapshot, route: usize, tried: &[usize], now: Instant) -> bool {
    snapshot.table.routes.get(route).is_some_and(|t| {
        t.backends.iter().enumerate().any(|(i, b)| !tried.contains(&i) && b.state(now) == BackendState::Ready)
    })
}

/// Ready, or Draining for less than the route's `drain_timeout`: after it,
/// pinned clients move on their next request (open streams still run on).
fn serves_pinned(entry: &BackendEntry, drain_timeout: Option<std::time::Duration>, now: Instant) -> bool {
    if entry.discovered.lifecycle == Lifecycle::Retiring {
        return false;
    }
    match entry.state(now) {
        BackendState::Ready => true,
        BackendState::Draining => match (drain_timeout, entry.draining_for(now)) {
            (Some(limit), Some(elapsed)) => elapsed < limit,
            _ => true,
        },
        BackendState::Down | BackendState::Gone => false,
    }
}

fn forward(route: usize, backend: usize, pin: PinOutcome) -> Decision {
    Decision::Forward(Forward { route, backend, pin })
}

/// Picks a backend in state `want`: by rendezvous hashing of the stale
/// cookie when there is one (deterministic: the sky CLI keeps sending the
/// stale value until its next /api/health, and every request must land
/// together), else by power of two choices.
fn pick(
    backends: &[BackendEntry],
    view: &RouteView,
    now: Instant,
    want: BackendState,
    usable: &impl Fn(usize) -> bool,
    stale: Option<&str>,
    random: u64,
) -> Option<usize> {
    let eligible = |i: usize| usable(i) && backends[i].state(now) == want;
    if let Some(value) = stale {
        let key = stable_hash(value.as_bytes());
        return (0..backends.len()).filter(|&i| eligible(i)).max_by_key(|&i| mix(key ^ view.pin_hashes[i]));
    }
    two_choices(backends, random, &eligible)
}

/// Power of two choices: the less loaded of two random eligible backends.
/// Samples a few random indices first (O(1) when most backends are
/// eligible), and falls back to a full scan when sampling finds fewer than two.
fn two_choices(backends: &[BackendEntry], random: u64, eligible: &impl Fn(usize) -> bool) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let mut found = [usize::MAX; 2];
    let mut count = 0;
    let mut state = random;
    for _ in 0..8 {
        state = mix(state.wrapping_add(0x9E37_79B9_7F4A_7C15));
        let i = (state % n as u64) as usize;
        if eligible(i) && !found[..count].contains(&i) {
            found[count] = i;
            count += 1;
            if count == 2 {
                break;
            }
        }
    }
    if count < 2 {
        let candidates: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
        match candidates.len() {
            0 => return None,
            1 => return Some(candidates[0]),
            len => {
                let first = (random % len as u64) as usize;
                let second = (first + 1 + (mix(random) % (len as u64 - 1)) as usize) % len;
                found = [candidates[first], candidates[second]];
            }
        }
    }
    let [a, b] = found;
    Some(if backends[b].runtime.in_flight() < backends[a].runtime.in_flight() { b } else { a })
}

#[cfg(test)]
mod tests;
