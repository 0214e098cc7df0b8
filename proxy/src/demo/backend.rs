//! A backend shaped like a SkyPilot API server, for the demo and the
//! black-box tests: health, short POSTs returning a request id, chunked
//! log streams, websocket echo, and counters a test can read back.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
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
}

#[derive(Debug)]
struct BackendState {
    options: BackendOptions,
    counts: Mutex<BTreeMap<String, u64>>,
    next_id: AtomicU64,
}

type Shared = Arc<BackendState>;

/// Serves the demo backend on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    options: BackendOptions,
) -> std::io::Result<()> {
    let state: Shared = Arc::new(BackendState {
        options,
        counts: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
    });
    let ws_paths = [
        "/kubernetes-pod-ssh-proxy",
        "/slurm-job-ssh-proxy",
        "/ssh-interactive-auth",
        "/ws",
    ];
    let mut router = Router::new()
        .route("/api/health", get(health))
        .route("/api/stream", get(stream))
        .route("/api/get", get(api_get))
        .route("/debug/counts", get(counts))
        .route("/debug/request", any(echo_request));
    for path in ws_paths {
        router = router.route(path, get(websocket));
    }
    let router = router.fallback(any(other)).with_state(state);
    axum::serve(listener, router).await
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
    named(
        &state,
        Json(json!({"status": "healthy", "backend": state.options.name, "api_version": "1"}))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
struct StreamParams {
    lines: Option<u64>,
    interval_ms: Option<u64>,
    request_id: Option<String>,
}

async fn stream(State(state): State<Shared>, Query(params): Query<StreamParams>) -> Response {
    count(&state, &Method::GET, "/api/stream");
    let lines = params.lines.unwrap_or(10).min(100_000);
    let interval = Duration::from_millis(params.interval_ms.unwrap_or(1000).min(60_000));
    let name = state.options.name.clone();
    let id = params.request_id.unwrap_or_else(|| "latest".into());
    let body = futures::stream::iter(0..lines).then(move |i| {
        let line = format!("backend={name} request={id} line={i}\n");
        async move {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            Ok::<_, Infallible>(Bytes::from(line))
        }
    });
    named(
        &state,
        (
            StatusCode::OK,
            [("content-type", "text/plain")],
            Body::from_stream(body),
        )
            .into_response(),
    )
}

async fn api_get(State(state): State<Shared>, uri: Uri) -> Response {
    count(&state, &Method::GET, "/api/get");
    named(&state, Json(json!({"backend": state.options.name, "query": uri.query().unwrap_or(""), "status": "SUCCEEDED"})).into_response())
}

async fn counts(State(state): State<Shared>) -> Response {
    let counts = state.counts.lock().map(|c| c.clone()).unwrap_or_default();
    named(
        &state,
        Json(json!({"backend": state.options.name, "counts": counts})).into_response(),
    )
}

async fn echo_request(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    count(&state, &method, "/debug/request");
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
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
            (
                StatusCode::NOT_FOUND,
                Json(json!({"detail": format!("Not Found: {path}")})),
            )
                .into_response(),
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
    let id = format!(
        "{}-{:08x}",
        state.options.name,
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let mut response =
        Json(json!({"backend": state.options.name, "request_id": id, "bytes": bytes}))
            .into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-skypilot-request-id", v);
    }
    named(&state, response)
}
