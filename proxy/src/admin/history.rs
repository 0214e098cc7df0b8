//! The dashboard's memory of the last few minutes: requests and errors per
//! second for each backend (the sparklines), learned request ids per
//! backend, and the states seen last (so a runtime-only change, such as a
//! passive ejection, becomes an event). Filled once a second by the
//! [`Sampler`] from counters that exist anyway: the request path pays
//! nothing for the dashboard.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pinroute_discovery::{BackendState, Lifecycle};
use prometheus::core::Collector;

use crate::events::{runtime_change, EventKind};
use crate::state::Shared;

/// Seconds of history kept per backend (five minutes).
pub const SECONDS: usize = 300;
/// How often the sampler looks.
const TICK: Duration = Duration::from_secs(1);

/// Route prefix and backend id: the labels of `pinroute_requests_total`.
type Key = (String, String);

/// One second of one backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Responses counted in that second.
    pub requests: u32,
    /// Of those, 5xx answers or nothing sent at all.
    pub errors: u32,
}

#[derive(Debug, Default)]
struct Inner {
    totals: HashMap<Key, (u64, u64)>,
    series: HashMap<Key, VecDeque<Second>>,
    states: HashMap<(String, Arc<str>), (Lifecycle, BackendState)>,
    request_ids: HashMap<Arc<str>, usize>,
    repins: Option<u64>,
    replays: Option<u64>,
}

/// What the sampler remembers; bounded by `SECONDS` (300) × live backends.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

/// `(requests, errors)` totals per `(route, backend)` from the counter.
fn request_totals(shared: &Shared) -> HashMap<Key, (u64, u64)> {
    let mut totals: HashMap<Key, (u64, u64)> = HashMap::new();
    for family in shared.metrics.requests.collect() {
        for metric in family.get_metric() {
            let label =
                |name: &str| metric.get_label().iter().find(|l| l.name() == name).map(|l| l.value().to_string());
            let (Some(route), Some(backend), Some(code)) = (label("route"), label("backend"), label("code")) else {
                continue;
            };
            let count = metric.get_counter().get_value() as u64;
            let slot = totals.entry((route, backend)).or_default();
            slot.0 += count;
            if code.starts_with('5') || code == "0" {
                slot.1 += count;
            }
        }
    }
    totals
}

fn counter_delta(last: &mut Option<u64>, now: u64) -> u64 {
    let delta = last.map_or(0, |l| now.saturating_sub(l));
    *last = Some(now);
    delta
}

impl History {
    /// Takes one sample of `shared`: a second of rates, the request-id
    /// counts, and events for state changes no table publish reported.
    pub fn sample(&self, shared: &Shared) {
        let snapshot = shared.snapshot();
        let now = Instant::now();
        let totals = request_totals(shared);
        let request_ids = shared.request_ids.count_by_owner(now);
        let repins = shared.metrics.cookies_issued.with_label_values(&["repin"]).get();
        let replays = shared.metrics.replays.with_label_values(&["draining_503"]).get();
        let Ok(mut inner) = self.inner.lock() else { return };

        let mut live: HashSet<Key> = HashSet::new();
        let mut states = HashMap::new();
        let mut events = Vec::new();
        for (config, route) in snapshot.config.routes.iter().zip(&snapshot.table.routes) {
            for entry in &route.backends {
                let key = (config.prefix.clone(), entry.discovered.id.to_string());
                let (total, errors) = totals.get(&key).copied().unwrap_or_default();
                // A counter first seen now was created by this second's first request.
                let (last_total, last_errors) = inner.totals.get(&key).copied().unwrap_or_default();
                let second = Second {
                    requests: u32::try_from(total.saturating_sub(last_total)).unwrap_or(u32::MAX),
                    errors: u32::try_from(errors.saturating_sub(last_errors)).unwrap_or(u32::MAX),
                };
                let series = inner.series.entry(key.clone()).or_default();
                if series.len() >= SECONDS {
                    series.pop_front();
                }
                series.push_back(second);
                live.insert(key);

                let state = (entry.discovered.lifecycle, entry.state(now));
                let id = (config.prefix.clone(), entry.discovered.identity.clone());
                if let Some((was_lifecycle, was_state)) = inner.states.get(&id) {
                    // A lifecycle change published a table: that event is already recorded.
                    if *was_lifecycle == state.0 {
                        if let Some((kind, detail)) = runtime_change(*was_state, state.1) {
                            events.push((kind, config.prefix.clone(), entry.discovered.id.to_string(), detail));
                        }
                    }
                }
                states.insert(id, state);
            }
        }
        inner.series.retain(|k, _| live.contains(k));
        inner.totals = totals;
        inner.states = states;
        inner.request_ids = request_ids;
        let repinned = counter_delta(&mut inner.repins, repins);
        let replayed = counter_delta(&mut inner.replays, replays);
        drop(inner);

        for (kind, route, backend, detail) in events {
            shared.events.record(kind, Some(&route), Some(&backend), detail);
        }
        if repinned > 0 {
            let detail = format!("{repinned} client(s) got a new cookie: their backend left or refused them");
            shared.events.record(EventKind::Repinned, None, None, detail);
        }
        if replayed > 0 {
            let detail = format!("{replayed} request(s) a draining backend refused were replayed on a ready one");
            shared.events.record(EventKind::Replayed, None, None, detail);
        }
    }

    /// The last `seconds` of `(route, backend)`, oldest first, padded with
    /// zeros at the front to `seconds` entries.
    pub fn series(&self, route: &str, backend: &str, seconds: usize) -> Vec<Second> {
        let Ok(inner) = self.inner.lock() else { return vec![Second::default(); seconds] };
        let Some(kept) = inner.series.get(&(route.to_string(), backend.to_string())) else {
            return vec![Second::default(); seconds];
        };
        let tail: Vec<Second> = kept.iter().skip(kept.len().saturating_sub(seconds)).copied().collect();
        let mut out = vec![Second::default(); seconds - tail.len()];
        out.extend(tail);
        out
    }

    /// Request ids learned for the backend `identity`, as of the last sample.
    pub fn request_ids(&self, identity: &str) -> usize {
        self.inner.lock().ok().and_then(|i| i.request_ids.get(identity).copied()).unwrap_or(0)
    }
}

/// Samples [`Shared::history`] once a second while the proxy runs.
#[derive(Debug)]
pub struct Sampler {
    shared: Arc<Shared>,
}

impl Sampler {
    /// A sampler of `shared`.
    pub fn new(shared: Arc<Shared>) -> Sampler {
        Sampler { shared }
    }
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.shared.history.sample(&self.shared),
                _ = shutdown.changed() => return,
            }
        }
    }
}
