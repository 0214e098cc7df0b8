//! State shared by every request, the admin API and background tasks: the
//! config, the published snapshot and the metrics. Readers never wait on
//! writers; a reload swaps config and table together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use pinroute_config::{BackendSource, Config, RouteConfig};
use pinroute_discovery::{static_backends, DiscoveredBackend, DiscoveryEvent, Lifecycle, Publisher, RoutingTable};
use tokio::sync::{watch, Notify};

use crate::admin::History;
use crate::affinity::RequestIdTable;
use crate::cookie::PinKey;
use crate::events::EventLog;
use crate::gateway::{build_gates, Gates, RouteGate};
use crate::metrics::Metrics;
use crate::snapshot::{PinCache, Snapshot};

/// How long a backend removed by a reload must have been idle before it leaves.
const RETIRE_IDLE: Duration = Duration::from_secs(1);

/// The proxy's shared state.
#[derive(Debug)]
pub struct Shared {
    config: ArcSwap<Config>,
    /// The config file's own content (before Ingress routes are added).
    file_config: ArcSwap<Config>,
    ingress_routes: Mutex<Vec<RouteConfig>>,
    /// False in ingress mode until the first translation arrived.
    pub ingress_ready: std::sync::atomic::AtomicBool,
    snapshot: ArcSwap<Snapshot>,
    pins: ArcSwap<PinCache>,
    gates: ArcSwap<Vec<RouteGate>>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Woken on every table publish (held requests wait on it).
    pub table_changed: Notify,
    /// Bumped by every applied reload (the Kubernetes watches restart on it).
    pub config_generation: watch::Sender<u64>,
    publisher: OnceLock<Arc<Publisher>>,
    /// Process start.
    pub started: Instant,
    /// Which backend accepted which request id.
    pub request_ids: RequestIdTable,
    held: Mutex<HashMap<String, usize>>,
    /// Recent operator-visible events (the dashboard's list).
    pub events: EventLog,
    /// The dashboard's last minutes of rates, filled by its sampler.
    pub history: History,
}

/// One request waiting for a Ready backend; released on drop.
#[derive(Debug)]
pub struct HoldPermit<'a> {
    shared: &'a Shared,
    prefix: String,
}

impl Drop for HoldPermit<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.shared.held.lock() {
            if let Some(n) = held.get_mut(&self.prefix) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

impl Shared {
    /// State for `config` with an empty, unloaded table, and its publisher.
    /// Static routes are published at once; Kubernetes routes load later.
    pub fn new(config: Arc<Config>, key: PinKey, metrics: Metrics, gates: Gates) -> Arc<Shared> {
        let pins = Arc::new(PinCache::new(key));
        let table = Arc::new(RoutingTable::empty(config.routes.len()));
        let snapshot = Snapshot::build(config.clone(), table, &pins, gates.clone());
        let shared = Arc::new(Shared {
            config: ArcSwap::new(config.clone()),
            file_config: ArcSwap::new(config.clone()),
            ingress_routes: Mutex::new(Vec::new()),
            ingress_ready: std::sync::atomic::AtomicBool::new(config.ingress.is_none()),
            snapshot: ArcSwap::from_pointee(snapshot),
            pins: ArcSwap::new(pins),
            gates: ArcSwap::new(gates),
            metrics,
            table_changed: Notify::new(),
            config_generation: watch::channel(0).0,
            publisher: OnceLock::new(),
            started: Instant::now(),
            request_ids: RequestIdTable::new(config.server.request_id_capacity, crate::affinity::DEFAULT_TTL),
            held: Mutex::new(HashMap::new()),
            events: EventLog::new(),
            history: History::default(),
        });
        let weak = Arc::downgrade(&shared);
        let publisher = Publisher::new(
            config.routes.len(),
            Box::new(move |table| {
                if let Some(shared) = weak.upgrade() {
                    shared.on_table(table);
                }
            }),
        );
        let _ = shared.publisher.set(publisher);
        shared.publish_static_routes(&config);
        shared
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current config.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The single writer of the routing table.
    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.publisher.get()
    }

    /// Admits one more held request on the route `prefix` unless `max`
    /// already wait; past the bound a request gets the 503 at once.
    pub fn try_hold(&self, prefix: &str, max: usize) -> Option<HoldPermit<'_>> {
        let mut held = self.held.lock().ok()?;
        let n = held.entry(prefix.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(HoldPermit { shared: self, prefix: prefix.to_string() })
    }

    /// The config file's content as last loaded.
    pub fn file_config(&self) -> Arc<Config> {
        self.file_config.load_full()
    }

    /// A reloaded config file: recomposed with the Ingress routes and applied.
    pub fn apply_file_config(self: &Arc<Self>, file: Config) -> Result<(), String> {
        self.file_config.store(Arc::new(file));
        self.recompose()
    }

    /// Puts back the file config after a rejected reload.
    pub fn restore_file_config(&self, file: Arc<Config>) {
        self.file_config.store(file);
    }

    /// A new translation of the Ingress objects: recomposed with the file's
    /// routes and applied.
    pub fn apply_ingress_routes(self: &Arc<Self>, routes: Vec<RouteConfig>) -> Result<(), String> {
        if let Ok(mut current) = self.ingress_routes.lock() {
            *current = routes;
        }
        let result = self.recompose();
        self.ingress_ready.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    }

    /// File routes first; an Ingress route clashing with one (same host and
    /// prefix) is left out with a warning: the operator's file wins.
    fn recompose(self: &Arc<Self>) -> Result<(), String> {
        let file = self.file_config();
        let mut composed = (*file).clone();
        let ingress = self.ingress_routes.lock().map(|r| r.clone()).unwrap_or_default();
        for route in ingress {
            if composed.routes.iter().any(|r| r.prefix == route.prefix && r.host == route.host) {
                tracing::warn!(prefix = %route.prefix, host = ?route.host, "an Ingress route clashes with a route of the config file; the file wins");
                continue;
            }
            composed.routes.push(route);
        }
        let gates = build_gates(&composed)?;
        self.apply_config(Arc::new(composed), gates);
        Ok(())
    }

    /// Applies a reloaded config: routes are matched by prefix (surviving ones
    /// keep their backends, live counters and request ids), static backend
    /// lists are replaced, backends the reload removed retire (they finish the
    /// requests they own, then leave), and the Kubernetes watches restart. The
    /// cookie key changes only when the new config names a different one.
    pub fn apply_config(self: &Arc<Self>, new: Arc<Config>, gates: Gates) {
        let Some(publisher) = self.publisher().cloned() else { return };
        let old = self.config();
        let from = new
            .routes
            .iter()
            .map(|r| {
                old.routes
                    .iter()
                    .position(|o| o.prefix == r.prefix && o.host == r.host && same_kind(&o.source, &r.source))
            })
            .collect();
        let new_key = match (&old.cookie.key, &new.cookie.key) {
            (a, Some(b)) if a.as_ref() != Some(b) => Some(PinKey::new(&b.bytes)),
            _ => None,
        };
        self.request_ids.set_capacity(new.server.request_id_capacity);
        publisher.reshape(from, || {
            self.config.store(new.clone());
            self.gates.store(gates);
            if let Some(key) = new_key {
                self.pins.store(Arc::new(PinCache::new(key)));
            }
        });
        self.publish_static_routes(&new);
        self.config_generation.send_modify(|g| *g += 1);
    }

    fn publish_static_routes(self: &Arc<Self>, config: &Config) {
        let Some(publisher) = self.publisher().cloned() else { return };
        let table = publisher.current();
        for (route, rc) in config.routes.iter().enumerate() {
            let BackendSource::Static(list) = &rc.source else { continue };
            let mut backends = static_backends(list);
            let removed: Vec<DiscoveredBackend> = table
                .routes
                .get(route)
                .map(|r| &r.backends[..])
                .unwrap_or_default()
                .iter()
                .filter(|e| e.discovered.lifecycle != Lifecycle::Gone)
                .filter(|e| !backends.iter().any(|b| b.identity == e.discovered.identity))
                .map(|e| DiscoveredBackend { lifecycle: Lifecycle::Retiring, ..e.discovered.clone() })
                .collect();
            for backend in &removed {
                self.retire_when_idle(rc.prefix.clone(), backend.identity.clone(), config.server.grace_period);
            }
            backends.extend(removed);
            publisher.publish(DiscoveryEvent::Replace { route, backends });
        }
    }

    /// Removes a retiring backend once it has had nothing in flight for a
    /// moment, or when the grace period is over.
    fn retire_when_idle(self: &Arc<Self>, prefix: String, identity: Arc<str>, grace: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let shared = Arc::downgrade(self);
        runtime.spawn(async move {
            let deadline = Instant::now() + grace;
            let mut idle_since: Option<Instant> = None;
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let Some(shared) = shared.upgrade() else { return };
                let snapshot = shared.snapshot();
                let Some(route) = snapshot.config.routes.iter().position(|r| r.prefix == prefix) else { return };
                let Some(entry) = snapshot
                    .table
                    .routes
                    .get(route)
                    .and_then(|r| r.backends.iter().find(|e| e.discovered.identity == identity))
                else {
                    return;
                };
                if entry.discovered.lifecycle != Lifecycle::Retiring {
                    return; // re-added by a later reload
                }
                let now = Instant::now();
                idle_since = if entry.runtime.in_flight() == 0 { idle_since.or(Some(now)) } else { None };
                if idle_since.is_some_and(|at| now.duration_since(at) >= RETIRE_IDLE) || now >= deadline {
                    tracing::info!(backend = %entry.discovered.id, "retired backend removed");
                    if let Some(publisher) = shared.publisher() {
                        publisher.publish(DiscoveryEvent::Remove { route, identity });
                    }
                    return;
                }
            }
        });
    }

    /// Swaps the authentication gates (an htpasswd file changed).
    pub fn replace_gates(&self, gates: Gates) {
        let Some(publisher) = self.publisher().cloned() else { return };
        // Through the writer lock, like a reload, so no snapshot mixes them up.
        publisher.reshape((0..self.config().routes.len()).map(Some).collect(), || self.gates.store(gates));
    }

    /// The current gates.
    pub fn gates(&self) -> Gates {
        self.gates.load_full()
    }

    fn on_table(&self, table: &Arc<RoutingTable>) {
        let config = self.config.load_full();
        let pins = self.pins.load_full();
        let gates = self.gates.load_full();
        let next = Arc::new(Snapshot::build(config, table.clone(), &pins, gates));
        self.events.table_published(&self.snapshot.swap(next.clone()), &next);
        self.table_changed.notify_waiters();
    }
}

fn same_kind(a: &BackendSource, b: &BackendSource) -> bool {
    matches!(
        (a, b),
        (BackendSource::Static(_), BackendSource::Static(_))
            | (BackendSource::Kubernetes(_), BackendSource::Kubernetes(_))
    )
}
