//! One request's state on its walk through the engine, and the steps that
//! read the pure core: the routing decision, committing to a backend (the
//! in-flight guard, the cookie to set), and holding a request while no
//! backend is Ready.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinroute_discovery::{BackendEntry, InFlightGuard};

use crate::cookie::CookieCheck;
use crate::route::{route, ClientPin, Decision, Forward, PinOutcome, RequestFacts};
use crate::snapshot::Snapshot;
use crate::state::Shared;

/// How often a held request re-checks for a Ready backend, besides table publishes.
const HOLD_POLL: Duration = Duration::from_millis(100);

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    /// When the request head was read.
    pub start: Instant,
    /// The snapshot every decision of this request reads.
    pub snapshot: Arc<Snapshot>,
    /// Route index, once admitted.
    pub route: Option<usize>,
    /// The route's sticky cookie value, if sent.
    pub cookie: Option<String>,
    /// Backends tried (connect failures, probes, replays), by index.
    pub tried: Vec<usize>,
    /// Connect failures so far.
    pub connect_failures: usize,
    /// The backend the request goes to now.
    pub current: Option<Forward>,
    /// Its id, for the log and metrics.
    pub backend_id: Option<Arc<str>>,
    /// Counts the request in its backend's in-flight total.
    pub guard: Option<InFlightGuard>,
    /// `Set-Cookie` to add to the response.
    pub set_cookie: Option<(http::HeaderValue, PinOutcome)>,
    /// The client's address.
    pub client: Option<IpAddr>,
    /// Path relative to the route prefix: what the SkyPilot server sees.
    pub rel_path: String,
    /// The request id of an `/api/get|stream|status|cancel` call.
    pub request_id: Option<String>,
    /// Whether the proxy knew which backend owns `request_id`.
    pub id_known: bool,
    /// A draining backend's 503 was replayed once already.
    pub replayed: bool,
    /// Upstream request-target when it differs from the client's.
    pub upstream_uri: Option<String>,
    /// Headers authentication adds upstream.
    pub auth_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Client headers removed before forwarding.
    pub strip_headers: Vec<http::HeaderName>,
}

impl RequestCtx {
    /// A request seen at `start` that reads `snapshot`.
    pub fn new(snapshot: Arc<Snapshot>, client: Option<IpAddr>, start: Instant) -> RequestCtx {
        RequestCtx {
            start,
            snapshot,
            route: None,
            cookie: None,
            tried: Vec::new(),
            connect_failures: 0,
            current: None,
            backend_id: None,
            guard: None,
            set_cookie: None,
            client,
            rel_path: String::new(),
            request_id: None,
            id_known: false,
            replayed: false,
            upstream_uri: None,
            auth_headers: Vec::new(),
            strip_headers: Vec::new(),
        }
    }

    /// The routing decision for this request on `snapshot`, backends tried excluded.
    pub fn decide(&self, snapshot: &Snapshot, route_index: usize) -> Decision {
        let pin = match self.cookie.as_deref() {
            None => ClientPin::None,
            // A current backend's own value is authentic by construction: no
            // MAC to compute on the pinned client's every request.
            Some(value) if snapshot.views.get(route_index).is_some_and(|v| v.by_pin.contains_key(value)) => {
                ClientPin::Authentic(value)
            }
            Some(value) => match snapshot.key.check(value) {
                CookieCheck::Authentic => ClientPin::Authentic(value),
                CookieCheck::Forged => ClientPin::Forged,
            },
        };
        let facts = RequestFacts { route: route_index, pin, exclude: &self.tried, random: rand::random() };
        route(&facts, snapshot, Instant::now())
    }

    /// The backend the request goes to now.
    pub fn entry(&self) -> Option<&BackendEntry> {
        let forward = self.current?;
        self.snapshot.table.routes.get(forward.route)?.backends.get(forward.backend)
    }

    /// Goes to `forward`'s backend: counts it in flight there, and decides
    /// the cookie (none when pinned or routed by request id).
    pub fn commit(&mut self, forward: Forward) {
        let snapshot = self.snapshot.clone();
        let Some(entry) = snapshot.table.routes.get(forward.route).and_then(|r| r.backends.get(forward.backend)) else {
            return;
        };
        self.guard = Some(entry.runtime.begin());
        self.backend_id = Some(entry.discovered.id.clone());
        self.set_cookie = None;
        match forward.pin {
            // A pinned client is counted by the attempt (`ConnectionMemo::note_pinned`).
            PinOutcome::RequestId | PinOutcome::Pinned => {}
            PinOutcome::New | PinOutcome::Repinned => {
                if let Some(Some(header)) =
                    snapshot.views.get(forward.route).and_then(|v| v.set_cookies.get(forward.backend))
                {
                    self.set_cookie = Some((header.clone(), forward.pin));
                }
            }
        }
        self.current = Some(forward);
    }

    /// Leaves the current backend (it failed or refused): excluded from
    /// now on, no longer counted in flight there.
    pub fn leave_current(&mut self) {
        if let Some(forward) = self.current.take() {
            self.tried.push(forward.backend);
        }
        self.guard = None;
    }

    /// Waits up to the route's `hold_for` for a Ready backend (Recreate
    /// upgrades: the only pod is being replaced). Bounded by `hold_max`. On
    /// success the request reads the fresh snapshot from then on.
    pub async fn hold(&mut self, shared: &Shared, route_index: usize) -> Option<Forward> {
        let config = self.snapshot.config.routes.get(route_index)?.clone();
        if config.hold_for.is_zero() {
            return None;
        }
        let _permit = shared.try_hold(&config.prefix, config.hold_max)?;
        let deadline = tokio::time::Instant::now() + config.hold_for;
        loop {
            let changed = shared.table_changed.notified();
            let snapshot = shared.snapshot();
            if let Decision::Forward(forward) = self.decide(&snapshot, route_index) {
                // Indices of `tried` belong to the old snapshot: nothing was tried yet.
                self.snapshot = snapshot;
                return Some(forward);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let wake = (tokio::time::Instant::now() + HOLD_POLL).min(deadline);
            let _ = tokio::time::timeout_at(wake, changed).await;
        }
    }

    /// The route's prefix, for metrics labels.
    pub fn route_label(&self) -> &str {
        self.route.and_then(|r| self.snapshot.config.routes.get(r)).map_or("", |c| c.prefix.as_str())
    }
}
