//! The admin listener: health, readiness, metrics, the backend table,
//! operator drain and the dashboard. Served by pingora so it takes part in
//! the SIGQUIT hand-off.

mod dashboard;
mod drain;
mod history;
mod write_guard;

pub use dashboard::{view as dashboard_view, BackendView, DashboardView, RouteView};
pub use drain::{drain_progress, DrainProgress};
pub use history::{History, Sampler, Second};
pub use write_guard::{check_host, check_write, Refusal, RequestFacts, ADMIN_HEADER};

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde::Serialize;

use crate::events::EventKind;
use crate::state::Shared;

/// Sent with every admin answer: the page loads only its own script and
/// style, and may not be framed (clickjacking of the drain button).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Longest drain-wait accepted.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(3600);

/// One row of `GET /admin/backends`.
#[derive(Debug, Serialize, serde::Deserialize, Clone, PartialEq)]
pub struct BackendRow {
    /// Route prefix.
    pub route: String,
    /// `namespace/name` or `host:port`.
    pub id: String,
    /// Address connected to.
    pub address: String,
    /// ready | draining | down | gone.
    pub state: String,
    /// Requests under way, streams included.
    pub in_flight: usize,
    /// Long-lived responses open.
    pub streams: usize,
    /// Distinct clients routed here by cookie in the last 5 minutes.
    pub pinned_clients: usize,
}

/// The admin HTTP app.
#[derive(Debug)]
pub struct AdminApp {
    shared: Arc<Shared>,
    /// Like the listener, fixed at start: a reload cannot open writes.
    read_only: bool,
    /// Host names a browser may use, fixed at start too.
    hosts: Vec<String>,
}

impl AdminApp {
    /// An app over the shared state.
    pub fn new(shared: Arc<Shared>) -> AdminApp {
        let config = shared.config();
        let (read_only, hosts) = (config.server.admin_read_only, config.server.admin_hosts.clone());
        AdminApp { shared, read_only, hosts }
    }

    fn rows(&self) -> Vec<BackendRow> {
        let snapshot = self.shared.snapshot();
        let now = Instant::now();
        let mut rows = Vec::new();
        for (config, route) in snapshot.config.routes.iter().zip(&snapshot.table.routes) {
            for entry in &route.backends {
                rows.push(BackendRow {
                    route: config.prefix.clone(),
                    id: entry.discovered.id.to_string(),
                    address: entry.discovered.addr.to_string(),
                    state: entry.state(now).as_str().to_string(),
                    in_flight: entry.runtime.in_flight(),
                    streams: entry.runtime.streams(),
                    pinned_clients: entry.runtime.pinned_clients(now),
                });
            }
        }
        rows
    }

    /// Applies `f` to every backend named `id` (optionally only in `route`);
    /// returns how many matched.
    fn for_backend(&self, id: &str, route: Option<&str>, f: impl Fn(&pinroute_discovery::BackendEntry)) -> usize {
        let snapshot = self.shared.snapshot();
        let mut matched = 0;
        for (config, table) in snapshot.config.routes.iter().zip(&snapshot.table.routes) {
            if route.is_some_and(|r| r != config.prefix) {
                continue;
            }
            for entry in table.backends.iter().filter(|e| &*e.discovered.id == id) {
                f(entry);
                matched += 1;
            }
        }
        matched
    }

    /// pingora may start the admin listener before the client listeners are
    /// bound: ready means a client could connect right now.
    async fn listeners_accept(&self) -> bool {
        let config = self.shared.config();
        for addr in &config.server.listen {
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(if target.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            let connect = tokio::net::TcpStream::connect(target);
            if !matches!(tokio::time::timeout(Duration::from_millis(500), connect).await, Ok(Ok(_))) {
                return false;
            }
        }
        true
    }

    async fn drain_wait(&self, id: &str, route: Option<&str>, timeout: Duration) -> Response<Vec<u8>> {
        let deadline = Instant::now() + timeout.min(DRAIN_WAIT_MAX);
        loop {
            let now = Instant::now();
            let progress = std::sync::Mutex::new(DrainProgress { empty: true, ..DrainProgress::default() });
            let matched = self.for_backend(id, route, |e| {
                if let Ok(mut p) = progress.lock() {
                    *p = p.merge(drain_progress(e, now));
                }
            });
            let progress = progress.into_inner().unwrap_or_default();
            let busy = progress.in_flight;
            if matched == 0 {
                return json(StatusCode::NOT_FOUND, &serde_json::json!({"detail": format!("no backend {id:?}")}));
            }
            if progress.empty {
                return json(StatusCode::OK, &serde_json::json!({"backend": id, "in_flight": 0}));
            }
            if Instant::now() >= deadline {
                return json(
                    StatusCode::REQUEST_TIMEOUT,
                    &serde_json::json!({"backend": id, "in_flight": busy, "detail": "still busy at timeout"}),
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn handle(&self, method: &Method, path: &str, query: &str, facts: &RequestFacts) -> Response<Vec<u8>> {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        if let Err(refusal) = check_host(facts, &self.hosts) {
            tracing::warn!(path, host = ?facts.host, "admin request under an unknown host name refused");
            return json(StatusCode::FORBIDDEN, &serde_json::json!({"detail": refusal.detail()}));
        }
        if *method == Method::POST {
            if let Err(refusal) = check_write(facts, self.read_only) {
                tracing::warn!(path, ?refusal, origin = ?facts.origin, "admin write refused");
                return json(StatusCode::FORBIDDEN, &serde_json::json!({"detail": refusal.detail()}));
            }
        }
        match (method, path) {
            (&Method::GET, "/" | "/dashboard") => {
                respond(StatusCode::OK, "text/html; charset=utf-8", dashboard::HTML.into())
            }
            (&Method::GET, "/dashboard.js") => {
                respond(StatusCode::OK, "text/javascript; charset=utf-8", dashboard::SCRIPT.into())
            }
            (&Method::GET, "/dashboard.css") => {
                respond(StatusCode::OK, "text/css; charset=utf-8", dashboard::STYLE.into())
            }
            (&Method::GET, "/dashboard.json") => json(StatusCode::OK, &dashboard::view(&self.shared, self.read_only)),
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/readyz") => {
                let ingress_ready = self.shared.ingress_ready.load(std::sync::atomic::Ordering::Relaxed);
                if !self.listeners_accept().await {
                    text(StatusCode::SERVICE_UNAVAILABLE, "client listeners not bound yet\n")
                } else if ingress_ready && self.shared.snapshot().table.loaded() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "routing table not loaded yet\n")
                }
            }
            (&Method::GET, "/metrics") => {
                let body = self.shared.metrics.render(&self.shared.snapshot());
                respond(StatusCode::OK, "text/plain; version=0.0.4", body.into_bytes())
            }
            (&Method::GET, "/admin/backends") => json(StatusCode::OK, &self.rows()),
            (&Method::POST, "/admin/drain") | (&Method::POST, "/admin/undrain") => {
                let Some(id) = param("backend") else {
                    return json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({"detail": "missing ?backend=ID (see GET /admin/backends)"}),
                    );
                };
                let drain = path == "/admin/drain";
                let matched = self.for_backend(id, param("route"), |e| e.runtime.set_operator_drain(drain));
                if matched == 0 {
                    return json(StatusCode::NOT_FOUND, &serde_json::json!({"detail": format!("no backend {id:?}")}));
                }
                tracing::info!(backend = id, drain, "operator drain changed");
                let (kind, detail) = if drain {
                    (EventKind::OperatorDrain, "drained through the admin API: no new clients")
                } else {
                    (EventKind::OperatorUndrain, "undrained through the admin API")
                };
                self.shared.events.record(kind, param("route"), Some(id), detail);
                json(StatusCode::OK, &serde_json::json!({"backend": id, "operator_drain": drain}))
            }
            (&Method::GET, "/admin/drain-wait") => {
                let Some(id) = param("backend") else {
                    return json(StatusCode::BAD_REQUEST, &serde_json::json!({"detail": "missing ?backend=ID"}));
                };
                let timeout = match param("timeout").map(humantime::parse_duration) {
                    None => Duration::from_secs(30),
                    Some(Ok(d)) => d,
                    Some(Err(e)) => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({"detail": format!("bad timeout: {e} (e.g. 30s)")}),
                        )
                    }
                };
                self.drain_wait(id, param("route"), timeout).await
            }
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"detail": "unknown admin path; see / (dashboard) /dashboard.json /healthz /readyz /metrics /admin/backends /admin/drain /admin/undrain /admin/drain-wait"}),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let header = session.req_header();
        let method = header.method.clone();
        let path = header.uri.path().to_string();
        let query = header.uri.query().unwrap_or("").to_string();
        let text = |name: &str| header.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let facts = RequestFacts {
            host: text("host").or_else(|| header.uri.authority().map(|a| a.to_string())),
            origin: text("origin"),
            fetch_site: text("sec-fetch-site"),
            admin_header: text(ADMIN_HEADER).is_some_and(|v| v.trim() == "1"),
        };
        self.handle(&method, &path, &query, &facts).await
    }
}

fn respond(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let length = body.len();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(length));
    headers.insert(http::header::CONTENT_SECURITY_POLICY, http::HeaderValue::from_static(CSP));
    headers.insert(http::header::X_CONTENT_TYPE_OPTIONS, http::HeaderValue::from_static("nosniff"));
    headers.insert(http::header::X_FRAME_OPTIONS, http::HeaderValue::from_static("DENY"));
    headers.insert(http::header::REFERRER_POLICY, http::HeaderValue::from_static("no-referrer"));
    // Live state: a cached copy would show a drain that already ended.
    headers.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &str) -> Response<Vec<u8>> {
    respond(status, "text/plain; charset=utf-8", body.as_bytes().to_vec())
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    respond(status, "application/json", body)
}
