//! The operator dashboard: one page served from the binary (no external
//! script, font or CDN, so it works in a cluster without internet access and
//! through `kubectl port-forward`), its script and style as separate files
//! (the Content-Security-Policy forbids inline script), and
//! `/dashboard.json`, which the page polls once a second.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use pinroute_config::BackendSource;
use serde::Serialize;

use crate::admin::drain::{drain_progress, DrainProgress};
use crate::admin::history::Second;
use crate::events::Event;
use crate::state::Shared;

/// The page.
pub const HTML: &str = include_str!("dashboard.html");
/// Its script (served as `/dashboard.js`).
pub const SCRIPT: &str = include_str!("dashboard.js");
/// Its style (served as `/dashboard.css`).
pub const STYLE: &str = include_str!("dashboard.css");

/// Seconds shown in each sparkline.
pub const SPARK_SECONDS: usize = 180;
/// Seconds over which "requests/s now" is averaged.
const RATE_SECONDS: usize = 10;

/// `GET /dashboard.json`.
#[derive(Debug, Serialize)]
pub struct DashboardView {
    /// Wall clock of this view, ms since the Unix epoch.
    pub generated_at_ms: u64,
    /// Seconds since the proxy started.
    pub uptime_s: u64,
    /// Whether POSTs are refused (the page hides its buttons).
    pub read_only: bool,
    /// Length of each sparkline, in seconds.
    pub spark_seconds: usize,
    /// Every route, in config order (file routes, then Ingress routes).
    pub routes: Vec<RouteView>,
    /// Newest first.
    pub events: Vec<Event>,
}

/// One route.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// Path prefix.
    pub prefix: String,
    /// Host it is served for, if any (Ingress rules have one).
    pub host: Option<String>,
    /// `static` or `kubernetes`.
    pub source: &'static str,
    /// Whether the source listed its backends at least once.
    pub loaded: bool,
    /// Its backends, in arrival order.
    pub backends: Vec<BackendView>,
}

/// One backend of a route.
#[derive(Debug, Serialize)]
pub struct BackendView {
    /// `namespace/name` or the static `host:port`.
    pub id: String,
    /// Address connected to.
    pub address: String,
    /// ready | draining | down | gone.
    pub state: &'static str,
    /// Drained through the admin API (undrain lifts it).
    pub operator_drained: bool,
    /// The dashboard offers drain/undrain (static backends only: a pod is
    /// cordoned with kubectl).
    pub drainable: bool,
    /// What it still holds, and whether that is nothing (shared with drain-wait).
    pub drain: DrainProgress,
    /// Request ids it accepted that pinroute remembers.
    pub request_ids: usize,
    /// Seconds since it started draining, if it is.
    pub draining_for_s: Option<u64>,
    /// Average of the last ten seconds.
    pub requests_per_s: f64,
    /// Errors / requests over the sparkline window (0 when idle).
    pub error_rate: f64,
    /// Responses per second, oldest first, `SPARK_SECONDS` (180) long.
    pub requests: Vec<u32>,
    /// Error responses per second, aligned with `requests`.
    pub errors: Vec<u32>,
}

/// The view of `shared` now; `read_only` as the admin listener was started.
pub fn view(shared: &Shared, read_only: bool) -> DashboardView {
    let snapshot = shared.snapshot();
    let now = Instant::now();
    let routes = snapshot
        .config
        .routes
        .iter()
        .zip(&snapshot.table.routes)
        .map(|(config, route)| {
            let drainable = matches!(config.source, BackendSource::Static(_));
            let backends = route
                .backends
                .iter()
                .map(|entry| {
                    let id = entry.discovered.id.to_string();
                    let series = shared.history.series(&config.prefix, &id, SPARK_SECONDS);
                    let (requests, errors): (Vec<u32>, Vec<u32>) =
                        series.iter().map(|s: &Second| (s.requests, s.errors)).unzip();
                    let recent: u64 = requests.iter().rev().take(RATE_SECONDS).map(|&n| u64::from(n)).sum();
                    let total: u64 = requests.iter().map(|&n| u64::from(n)).sum();
                    let failed: u64 = errors.iter().map(|&n| u64::from(n)).sum();
                    BackendView {
                        address: entry.discovered.addr.to_string(),
                        state: entry.state(now).as_str(),
                        operator_drained: entry.runtime.operator_drained(),
                        drainable,
                        drain: drain_progress(entry, now),
                        request_ids: shared.history.request_ids(&entry.discovered.identity),
                        draining_for_s: entry.draining_for(now).map(|d| d.as_secs()),
                        requests_per_s: recent as f64 / RATE_SECONDS as f64,
                        error_rate: if total == 0 { 0.0 } else { failed as f64 / total as f64 },
                        requests,
                        errors,
                        id,
                    }
                })
                .collect();
            RouteView {
                prefix: config.prefix.clone(),
                host: config.host.clone(),
                source: if drainable { "static" } else { "kubernetes" },
                loaded: route.loaded,
                backends,
            }
        })
        .collect();
    DashboardView {
        generated_at_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        uptime_s: shared.started.elapsed().as_secs(),
        read_only,
        spark_seconds: SPARK_SECONDS,
        routes,
        events: shared.events.recent(),
    }
}
