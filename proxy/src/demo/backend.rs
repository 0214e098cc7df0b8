//! A backend shaped like a SkyPilot API server (0.14.1), for the demo and
//! the black-box tests: health, short POSTs returning a request id that only
//! this server knows, `/api/get` and `/api/stream` by id (404 for ids it did
//! not accept), websocket echo, counters a test can read back, and the
//! server's own shutdown sequence (normal service for a grace period, then
//! `503 Server is shutting down` for non-`/api/` paths while `/api/*` keeps
//! serving ongoing requests, then exit once idle).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;

/// What the backend is and may do.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Name reported in every response (`X-Demo-Backend`).
    pub name: String,
    /// `POST /crash` ends the process (tests of mid-request backend death).
    pub allow_crash: bool,
    /// Normal service after shutdown begins (skypilot: 5 s).
    pub shutdown_grace: Duration,
    /// Longest wait for ongoing requests before exiting (skypilot: 60 s).
    pub shutdown_wait: Duration,
}

impl BackendOptions {
    /// A backend with skypilot's shutdown timings.
    pub fn named(name: &str) -> BackendOptions {
        BackendOptions {
            name: name.to_string(),
            allow_crash: false,
            shutdown_grace: Duration::from_secs(5),
            shutdown_wait: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
struct BackendState {
    options: BackendOptions,
    counts: Mutex<BTreeMap<String, u64>>,
    next_id: AtomicU64,
    ids: Mutex<BTreeSet<String>>,
    latest: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    refusing: AtomicBool,
}

/// Counts a request (or a streaming body) as ongoing until dropped.
struct Ongoing(Shared);

impl Ongoing {
    fn new(state: &Shared) -> Ongoing {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Ongoing(state.clone())
    }
}

impl Drop for Ongoing {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

type Shared = Arc<BackendState>;

/// Serves the demo backend on `listener`. When `shutdown` resolves, plays
/// the SkyPilot server's shutdown sequence and returns once it has finished.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: BackendOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state: Shared = Arc::new(BackendState {
        options,
        counts: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
        ids: Mutex::new(BTreeSet::new()),
        latest: Mutex::new(None),
        in_flight: AtomicUsize::new(0),
        refusing: AtomicBool::new(false),
    });
    let ws_paths = ["/kubernetes-pod-ssh-proxy", "/slurm-job-ssh-proxy", "/ssh-interactive-auth", "/ws"];
    let mut router = Router::new()
        .route("/api/health", get(health))
        .route("/api/stream", get(stream))
        .route("/api/get", get(api_get))
        .route("/debug/counts", get(counts))
        .route("/debug/request", any(echo_request));
    for path in ws_paths {
        router = router.route(path, get(websocket));
    }
    let router = router
        .fallback(any(other))
        .layer(middleware::from_fn_with_state(state.clone(), shutdown_gate))
        .with_state(state.clone());
    let sequence = shutdown_sequence(state, shutdown);
    axum::serve(listener, router).with_graceful_shutdown(sequence).await
}

/// skypilot 0.14.1 on SIGTERM: serve normally for the grace period, then
/// refuse new non-`/api/` work with 503 while `/api/*` still serves ongoing
/// requests; leave once nothing is ongoing, or after the wait.
async fn shutdown_sequence(state: Shared, trigger: impl std::future::Future<Output = ()>) {
    trigger.await;
    tracing::info!(backend = %state.options.name, "demo backend shutting down");
    tokio::time::sleep(state.options.shutdown_grace).await;
    state.refusing.store(true, Ordering::SeqCst);
    // A real server is still finishing the commands it accepted for a while;
    // stay in the refusing phase at least a second (or the whole wait).
    tokio::time::sleep(state.options.shutdown_wait.min(Duration::from_secs(1))).await;
    let deadline = Instant::now() + state.options.shutdown_wait;
    while state.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn shutdown_gate(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if state.refusing.load(Ordering::SeqCst) && !path.starts_with("/api/") && !path.starts_with("/debug/") {
        count(&state, request.method(), &format!("refused {path}"));
        let body = Json(json!({"detail": "Server is shutting down, please try again later."}));
        return named(&state, (StatusCode::SERVICE_UNAVAILABLE, body).into_response());
    }
    let _ongoing = Ongoing::new(&state);
    next.run(request).await
}

/// The full id this server issued that `id` is a unique prefix of.
fn known_id(state: &Shared, id: &str) -> Option<String> {
    let ids = state.ids.lock().ok()?;
    let mut matches = ids.range(id.to_string()..).take_while(|k| k.starts_with(id));
    let first = matches.next()?.clone();
    matches.next().is_none().then_some(first)
}

fn not_found(state: &Shared, id: &str) -> Response {
    named(state, (StatusCode::NOT_FOUND, Json(json!({"detail": format!("Request '{id}' not found")}))).into_response())
}

fn named(state: &Shared, mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&state.options.name) {
        response.headers_mut().insert("x-demo-backend", v);
    }
    response
}

fn count(state: &Shared, method: &Method, path: &str) {
    if let Ok(mut counts) = state.counts.lock() {
        *counts.entry(format!("{method} {path}")).or_default() += 1;
    }
}

async fn health(State(state): State<Shared>) -> Response {
    count(&state, &Method::GET, "/api/health");
    named(&state, Json(json!({"status": "healthy", "backend": state.options.name, "api_version": "1"})).into_response())
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    lines: Option<u64>,
    interval_ms: Option<u64>,
    request_id: Option<String>,
}

async fn stream(State(state): State<Shared>, Query(params): Query<StreamParams>) -> Response {
    count(&state, &Method::GET, "/api/stream");
    let id = match params.request_id {
        Some(id) => match known_id(&state, &id) {
            Some(full) => full,
            None => return not_found(&state, &id),
        },
        None => state.latest.lock().ok().and_then(|l| l.clone()).unwrap_or_else(|| "latest".into()),
    };
    let lines = params.lines.unwrap_or(10).min(100_000);
    let interval = Duration::from_millis(params.interval_ms.unwrap_or(1000).min(60_000));
    let name = state.options.name.clone();
    let ongoing = Ongoing::new(&state);
    let line_id = id.clone();
    let body = futures::stream::iter(0..lines).then(move |i| {
        let line = format!("backend={name} request={line_id} line={i}\n");
        // The stream counts as ongoing work until its last line is sent.
        let _keep = &ongoing;
        async move {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            Ok::<_, Infallible>(Bytes::from(line))
        }
    });
    let mut response = (StatusCode::OK, [("content-type", "text/plain")], Body::from_stream(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-skypilot-stream-request-id", v);
    }
    named(&state, response)
}

async fn api_get(State(state): State<Shared>, Query(params): Query<StreamParams>) -> Response {
    count(&state, &Method::GET, "/api/get");
    let Some(id) = params.request_id else {
        return named(
            &state,
            (StatusCode::BAD_REQUEST, Json(json!({"detail": "request_id is required"}))).into_response(),
        );
    };
    match known_id(&state, &id) {
        Some(full) => named(
            &state,
            Json(json!({"backend": state.options.name, "request_id": full, "status": "SUCCEEDED"})).into_response(),
        ),
        None => not_found(&state, &id),
    }
}

async fn counts(State(state): State<Shared>) -> Response {
    let counts = state.counts.lock().map(|c| c.clone()).unwrap_or_default();
    named(&state, Json(json!({"backend": state.options.name, "counts": counts})).into_response())
}

async fn echo_request(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    count(&state, &method, "/debug/request");
    let headers: BTreeMap<String, String> =
        headers.iter().map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
    named(&state, Json(json!({"backend": state.options.name, "method": method.as_str(), "uri": uri.to_string(), "headers": headers})).into_response())
}

async fn websocket(State(state): State<Shared>, uri: Uri, upgrade: WebSocketUpgrade) -> Response {
    count(&state, &Method::GET, uri.path());
    let name = state.options.name.clone();
    named(&state, upgrade.on_upgrade(move |socket| echo(socket, name)))
}

async fn echo(mut socket: WebSocket, name: String) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => Message::Text(format!("{name}: {}", text.as_str()).into()),
            Message::Binary(data) => Message::Binary(data),
            Message::Ping(data) => Message::Pong(data),
            Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn other(State(state): State<Shared>, method: Method, uri: Uri, body: Body) -> Response {
    let path = uri.path().to_string();
    count(&state, &method, &path);
    if method != Method::POST {
        return named(
            &state,
            (StatusCode::NOT_FOUND, Json(json!({"detail": format!("Not Found: {path}")}))).into_response(),
        );
    }
    // Read the whole body (uploads) before answering, counting bytes.
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => bytes += c.len() as u64,
            Err(_) => return named(&state, StatusCode::BAD_REQUEST.into_response()),
        }
    }
    if path == "/crash" && state.options.allow_crash {
        // A backend dying after the request reached it: the proxy must not replay it.
        std::process::exit(3);
    }
    // Request ids are uuids in skypilot; unique across backends here too.
    let id = format!(
        "{:08x}-{}-{:04x}",
        rand::random::<u32>(),
        state.options.name,
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    if let Ok(mut ids) = state.ids.lock() {
        ids.insert(id.clone());
    }
    if let Ok(mut latest) = state.latest.lock() {
        *latest = Some(id.clone());
    }
    let mut response = Json(json!({"backend": state.options.name, "request_id": id, "bytes": bytes})).into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-skypilot-request-id", v);
    }
    named(&state, response)
}
