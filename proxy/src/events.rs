//! What an operator wants to see happen during a rollout, as a short,
//! timestamped list: cordons seen, pods gone, ejections, re-pins, rejected
//! Ingresses, reloads. A bounded ring in shared state; the dashboard serves
//! it. Recording never blocks a request for long (one short lock) and never
//! grows memory past [`CAPACITY`] events.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use pinroute_discovery::{BackendState, Lifecycle, RouteBackends};
use serde::Serialize;

use crate::snapshot::Snapshot;

/// Most events kept; older ones drop off.
pub const CAPACITY: usize = 200;
/// How many of the newest events a repeat is folded into.
const COALESCE_WINDOW: usize = 8;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A backend appeared (pod listed, static backend added).
    Added,
    /// A backend started draining (cordon, pod terminating, retired by a reload).
    Draining,
    /// A draining or down backend takes new clients again (uncordon).
    Ready,
    /// The pod or address is gone.
    Gone,
    /// Health checks or connect failures took it out of rotation.
    Ejected,
    /// It passed again and is back in rotation.
    Readmitted,
    /// An operator drained it through the admin API.
    OperatorDrain,
    /// An operator undrained it.
    OperatorUndrain,
    /// Clients got a new cookie because their backend left.
    Repinned,
    /// Requests a draining backend refused were replayed elsewhere.
    Replayed,
    /// An Ingress was not served, and why.
    IngressRejected,
    /// The config file was reloaded.
    ReloadApplied,
    /// A reload was refused; the running config stays.
    ReloadRefused,
}

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Increases by one per event; the page uses it to spot new ones.
    pub seq: u64,
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// Route prefix, when it concerns one.
    pub route: Option<String>,
    /// Backend id, when it concerns one.
    pub backend: Option<String>,
    /// Human-readable detail (reason, counts).
    pub detail: String,
    /// How many times in a row the same event was seen (an Ingress rejected
    /// on every change would otherwise push everything else out).
    pub repeats: u32,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Event>,
    next_seq: u64,
}

/// The bounded event list.
#[derive(Debug, Default)]
pub struct EventLog {
    ring: Mutex<Ring>,
}

impl EventLog {
    /// An empty list.
    pub fn new() -> EventLog {
        EventLog::default()
    }

    /// Appends one event. The same event as one of the newest few (an
    /// Ingress rejected again at every translation, alternating with
    /// another) moves to the front with its count bumped instead.
    pub fn record(&self, kind: EventKind, route: Option<&str>, backend: Option<&str>, detail: impl Into<String>) {
        let detail = detail.into();
        let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let Ok(mut ring) = self.ring.lock() else { return };
        ring.next_seq += 1;
        let seq = ring.next_seq;
        let len = ring.events.len();
        let same = ring.events.iter().skip(len.saturating_sub(COALESCE_WINDOW)).position(|e| {
            e.kind == kind && e.route.as_deref() == route && e.backend.as_deref() == backend && e.detail == detail
        });
        let repeats = match same.and_then(|i| ring.events.remove(len.saturating_sub(COALESCE_WINDOW) + i)) {
            Some(previous) => previous.repeats.saturating_add(1),
            None => 1,
        };
        if ring.events.len() >= CAPACITY {
            ring.events.pop_front();
        }
        ring.events.push_back(Event {
            seq,
            at_ms,
            kind,
            route: route.map(str::to_string),
            backend: backend.map(str::to_string),
            detail,
            repeats,
        });
    }

    /// Every kept event, newest first.
    pub fn recent(&self) -> Vec<Event> {
        self.ring.lock().map(|r| r.events.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// Records what a table publish changed: backends added, draining,
    /// ready again, gone. Runtime-only changes (ejections) do not publish a
    /// table; the dashboard's sampler reports those.
    pub fn table_published(&self, old: &Snapshot, new: &Snapshot) {
        for change in table_changes(&by_prefix(old), &by_prefix(new)) {
            self.record(change.kind, Some(&change.route), Some(&change.backend), change.detail);
        }
    }
}

fn by_prefix(s: &Snapshot) -> Vec<(&str, &RouteBackends)> {
    s.config.routes.iter().map(|r| r.prefix.as_str()).zip(&s.table.routes).collect()
}

/// One backend's lifecycle change between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct TableChange {
    /// What happened.
    pub kind: EventKind,
    /// Route prefix.
    pub route: String,
    /// Backend id.
    pub backend: String,
    /// Why, in words.
    pub detail: String,
}

/// The lifecycle changes from `old` to `new` (each a list of route prefix
/// and backends), matched by prefix and backend identity. Pure, so it is
/// tested without a running proxy.
pub fn table_changes(old: &[(&str, &RouteBackends)], new: &[(&str, &RouteBackends)]) -> Vec<TableChange> {
    let mut before: HashMap<(&str, &str), Lifecycle> = HashMap::new();
    for (prefix, route) in old {
        for entry in &route.backends {
            before.insert((*prefix, &*entry.discovered.identity), entry.discovered.lifecycle);
        }
    }
    let mut changes = Vec::new();
    for (prefix, route) in new {
        for entry in &route.backends {
            let now = entry.discovered.lifecycle;
            let was = before.get(&(*prefix, &*entry.discovered.identity)).copied();
            let change = match (was, now) {
                (None, Lifecycle::Gone) => None,
                (None, _) => Some((EventKind::Added, format!("listed as {}", lifecycle_word(now)))),
                (Some(a), b) if a == b => None,
                (Some(_), Lifecycle::Draining) => {
                    Some((EventKind::Draining, "cordon or termination seen: no new clients".to_string()))
                }
                (Some(_), Lifecycle::Retiring) => {
                    Some((EventKind::Draining, "removed by a reload: finishing its requests".to_string()))
                }
                (Some(_), Lifecycle::Gone) => Some((EventKind::Gone, "pod deleted or address gone".to_string())),
                (Some(_), Lifecycle::Ready) => Some((EventKind::Ready, "takes new clients again".to_string())),
                (Some(_), Lifecycle::NotReady) => {
                    Some((EventKind::Ejected, "pod not Ready: out of rotation".to_string()))
                }
            };
            if let Some((kind, detail)) = change {
                changes.push(TableChange {
                    kind,
                    route: prefix.to_string(),
                    backend: entry.discovered.id.to_string(),
                    detail,
                });
            }
        }
    }
    changes
}

fn lifecycle_word(l: Lifecycle) -> &'static str {
    match l {
        Lifecycle::Ready => "ready",
        Lifecycle::NotReady => "not ready",
        Lifecycle::Draining | Lifecycle::Retiring => "draining",
        Lifecycle::Gone => "gone",
    }
}

/// The event for a runtime-only state change seen by a sampler (the
/// lifecycle stayed the same, so no table was published).
pub fn runtime_change(was: BackendState, now: BackendState) -> Option<(EventKind, &'static str)> {
    match (was, now) {
        (a, b) if a == b => None,
        (_, BackendState::Down) => Some((EventKind::Ejected, "connect failures or health checks: out of rotation")),
        (BackendState::Down, _) => Some((EventKind::Readmitted, "answering again: back in rotation")),
        _ => None,
    }
}

#[cfg(test)]
#[path = "events/tests.rs"]
mod tests;
