//! Prometheus metrics. Counters are bumped by the request path; per-backend
//! gauges are read from the live runtimes at scrape time, so the hot path
//! never touches a gauge (the one gauge kept live, open client
//! connections, moves once per connection).

use std::time::Instant;

use pinroute_discovery::BackendState;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::snapshot::Snapshot;

/// Every metric pinroute exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// `pinroute_requests_total{route,backend,code}`.
    pub requests: IntCounterVec,
    /// `pinroute_request_duration_seconds{route}`.
    pub duration: HistogramVec,
    /// `pinroute_cookies_issued_total{reason}`: new | repin.
    pub cookies_issued: IntCounterVec,
    /// Its `reason="new"` series, resolved once (the request path bumps it).
    pub cookies_new: IntCounter,
    /// Its `reason="repin"` series.
    pub cookies_repin: IntCounter,
    /// `pinroute_upstream_retries_total`.
    pub retries: IntCounter,
    /// `pinroute_discovery_errors_total`.
    pub discovery_errors: IntCounter,
    /// `pinroute_request_replays_total{reason}`: draining_503 | request_id_404.
    pub replays: IntCounterVec,
    /// `pinroute_request_id_routed_total`: requests sent to the owner of their request id.
    pub request_id_routed: IntCounter,
    /// `pinroute_client_connections`: client connections open (HTTP/1 and
    /// HTTP/2, TLS included). A shutting-down proxy exits when it is 0.
    pub client_connections: IntGauge,
    inflight: IntGaugeVec,
    streams: IntGaugeVec,
    state: IntGaugeVec,
    pinned: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("pinroute_requests_total", "Requests answered, by route, backend and status code"),
            &["route", "backend", "code"],
        )?;
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
            3600.0,
        ];
        let duration = HistogramVec::new(
            HistogramOpts::new("pinroute_request_duration_seconds", "Time from request to the end of the response")
                .buckets(buckets),
            &["route"],
        )?;
        let cookies_issued = IntCounterVec::new(
            Opts::new("pinroute_cookies_issued_total", "Sticky cookies set, by reason (new client or re-pin)"),
            &["reason"],
        )?;
        let retries = IntCounter::new(
            "pinroute_upstream_retries_total",
            "Requests retried on another backend after a connect failure",
        )?;
        let discovery_errors = IntCounter::new(
            "pinroute_discovery_errors_total",
            "Errors of the discovery sources (API server unreachable, watch errors)",
        )?;
        let replays = IntCounterVec::new(
            Opts::new("pinroute_request_replays_total", "Requests sent again after a backend refused them (draining 503) or did not know their request id (404)"),
            &["reason"],
        )?;
        let request_id_routed = IntCounter::new(
            "pinroute_request_id_routed_total",
            "Requests routed to the backend that accepted their request id",
        )?;
        let client_connections =
            IntGauge::new("pinroute_client_connections", "Client connections open (HTTP/1 and HTTP/2)")?;
        let inflight = IntGaugeVec::new(
            Opts::new("pinroute_inflight_requests", "Requests under way per backend, streams included"),
            &["route", "backend"],
        )?;
        let streams = IntGaugeVec::new(
            Opts::new("pinroute_open_streams", "Long-lived responses (chunked, websocket) open per backend"),
            &["route", "backend"],
        )?;
        let state = IntGaugeVec::new(
            Opts::new("pinroute_backend_state", "1 for the state each backend is in"),
            &["route", "backend", "state"],
        )?;
        let pinned = IntGaugeVec::new(
            Opts::new("pinroute_pinned_clients", "Distinct clients routed by cookie in the last 5 minutes"),
            &["route", "backend"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(cookies_issued.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(discovery_errors.clone()))?;
        registry.register(Box::new(replays.clone()))?;
        registry.register(Box::new(request_id_routed.clone()))?;
        registry.register(Box::new(client_connections.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(streams.clone()))?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(pinned.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            cookies_new: cookies_issued.with_label_values(&["new"]),
            cookies_repin: cookies_issued.with_label_values(&["repin"]),
            cookies_issued,
            retries,
            discovery_errors,
            replays,
            request_id_routed,
            client_connections,
            inflight,
            streams,
            state,
            pinned,
        })
    }

    /// Prometheus text exposition, gauges refreshed from `snapshot`.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let now = Instant::now();
        self.inflight.reset();
        self.streams.reset();
        self.state.reset();
        self.pinned.reset();
        for (route_config, route) in snapshot.config.routes.iter().zip(&snapshot.table.routes) {
            for entry in &route.backends {
                let labels = [route_config.prefix.as_str(), &entry.discovered.id];
                self.inflight.with_label_values(&labels).set(entry.runtime.in_flight() as i64);
                self.streams.with_label_values(&labels).set(entry.runtime.streams() as i64);
                self.pinned.with_label_values(&labels).set(entry.runtime.pinned_clients(now) as i64);
                let current = entry.state(now);
                for s in BackendState::ALL {
                    self.state.with_label_values(&[labels[0], labels[1], s.as_str()]).set(i64::from(s == current));
                }
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}
