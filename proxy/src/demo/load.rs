//! A load driver of cookie-keeping clients shaped like the sky CLI (used by
//! `pinroute demo --rolling` and by the scenario tests): each
//! loops `GET /api/health` (the only response whose cookie it saves, as the
//! CLI does), `POST /launch` (gets a request id), `GET /api/get?request_id=`
//! and a short `GET /api/stream?request_id=`, counting what was sent, what
//! failed, and streams opened / completed / cut.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;

/// Shape of the load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Concurrent clients.
    pub clients: usize,
    /// Lines per stream.
    pub stream_lines: u64,
    /// Milliseconds between stream lines.
    pub stream_interval_ms: u64,
    /// Pause between two iterations of a client.
    pub pause: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { clients: 8, stream_lines: 4, stream_interval_ms: 100, pause: Duration::from_millis(20) }
    }
}

/// Counters of a run.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Requests that failed (transport error or non-2xx).
    pub failed: AtomicU64,
    /// Streams whose headers arrived.
    pub streams_opened: AtomicU64,
    /// Streams that delivered every line.
    pub streams_completed: AtomicU64,
    /// Streams that ended early or errored after opening.
    pub streams_cut: AtomicU64,
    /// Longest short request, in milliseconds.
    pub max_wait_ms: AtomicU64,
    failures: Mutex<Vec<Failure>>,
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it failed.
    pub at: Instant,
    /// What was asked.
    pub what: String,
    /// What came back.
    pub detail: String,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests sent.
    pub sent: u64,
    /// Requests failed.
    pub failed: u64,
    /// Streams opened.
    pub streams_opened: u64,
    /// Streams completed.
    pub streams_completed: u64,
    /// Streams cut.
    pub streams_cut: u64,
    /// Longest short request (ms).
    pub max_wait_ms: u64,
}

impl LoadStats {
    fn fail(&self, what: &str, detail: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < 100 {
                f.push(Failure { at: Instant::now(), what: what.to_string(), detail });
            }
        }
    }

    /// The first failures (at most 100).
    pub fn failures(&self) -> Vec<Failure> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The counters now.
    pub fn report(&self) -> LoadReport {
        LoadReport {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            streams_opened: self.streams_opened.load(Ordering::Relaxed),
            streams_completed: self.streams_completed.load(Ordering::Relaxed),
            streams_cut: self.streams_cut.load(Ordering::Relaxed),
            max_wait_ms: self.max_wait_ms.load(Ordering::Relaxed),
        }
    }
}

/// A running load.
#[derive(Debug)]
pub struct LoadDriver {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Live counters.
    pub stats: Arc<LoadStats>,
    last_backend: Arc<Mutex<Vec<String>>>,
}

impl LoadDriver {
    /// Starts `options.clients` clients against the proxy at `addr`.
    pub fn start(addr: SocketAddr, options: LoadOptions) -> LoadDriver {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(LoadStats::default());
        let last_backend = Arc::new(Mutex::new(vec![String::new(); options.clients]));
        let tasks = (0..options.clients)
            .map(|i| {
                let client = SkyClient {
                    addr,
                    index: i,
                    cookie: None,
                    options: options.clone(),
                    stats: stats.clone(),
                    last_backend: last_backend.clone(),
                };
                let stop = stop.clone();
                tokio::spawn(client.run(stop))
            })
            .collect();
        LoadDriver { stop, tasks, stats, last_backend }
    }

    /// Stops the clients after their current iteration; the final counters.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
        self.stats.report()
    }

    /// The backend each client's last `/api/health` landed on.
    pub fn last_backends(&self) -> Vec<String> {
        self.last_backend.lock().map(|b| b.clone()).unwrap_or_default()
    }
}

struct SkyClient {
    addr: SocketAddr,
    index: usize,
    cookie: Option<String>,
    options: LoadOptions,
    stats: Arc<LoadStats>,
    last_backend: Arc<Mutex<Vec<String>>>,
}

impl SkyClient {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap_or_default();
        while !stop.load(Ordering::Relaxed) {
            self.iteration(&http).await;
            tokio::time::sleep(self.options.pause).await;
        }
    }

    fn request(&self, http: &reqwest::Client, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = http.request(method, format!("http://{}{path}", self.addr));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("SKYPILOT_ROUTEID={c}"));
        }
        req
    }

    async fn short(
        &mut self,
        http: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
    ) -> Option<reqwest::Response> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let body = if method == reqwest::Method::POST { "{\"cluster\": \"demo\"}" } else { "" };
        let result = self.request(http, method.clone(), path).body(body).send().await;
        let waited = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.stats.max_wait_ms.fetch_max(waited, Ordering::Relaxed);
        match result {
            Ok(r) if r.status().is_success() => Some(r),
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                self.stats.fail(&format!("{method} {path}"), format!("{status} {body}"));
                None
            }
            Err(e) => {
                self.stats.fail(&format!("{method} {path}"), e.to_string());
                None
            }
        }
    }

    async fn iteration(&mut self, http: &reqwest::Client) {
        let Some(health) = self.short(http, reqwest::Method::GET, "/api/health").await else { return };
        // The sky CLI saves cookies from /api/health responses only.
        if let Some(c) = routeid(&health) {
            self.cookie = Some(c);
        }
        if let Ok(mut last) = self.last_backend.lock() {
            last[self.index] = served_by(&health);
        }
        let Some(launch) = self.short(http, reqwest::Method::POST, "/launch").await else { return };
        let Some(id) = launch.headers().get("x-skypilot-request-id").and_then(|v| v.to_str().ok()).map(str::to_string)
        else {
            self.stats.fail("POST /launch", "no X-Skypilot-Request-ID".into());
            return;
        };
        if self.short(http, reqwest::Method::GET, &format!("/api/get?request_id={id}")).await.is_none() {
            return;
        }
        self.stream(http, &id).await;
    }

    async fn stream(&mut self, http: &reqwest::Client, id: &str) {
        let path = format!(
            "/api/stream?request_id={id}&lines={}&interval_ms={}",
            self.options.stream_lines, self.options.stream_interval_ms
        );
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let response = match self.request(http, reqwest::Method::GET, &path).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => return self.stats.fail("GET /api/stream", format!("{}", r.status())),
            Err(e) => return self.stats.fail("GET /api/stream", e.to_string()),
        };
        self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        let mut body = response.bytes_stream();
        let mut text = Vec::new();
        let mut error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => text.extend_from_slice(&c),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let lines = text.iter().filter(|b| **b == b'\n').count() as u64;
        if error.is_none() && lines == self.options.stream_lines {
            self.stats.streams_completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.streams_cut.fetch_add(1, Ordering::Relaxed);
            self.stats.fail("GET /api/stream (cut)", format!("{lines} lines, {error:?}"));
        }
    }
}

/// The `SKYPILOT_ROUTEID` value a response sets, if any.
pub fn routeid(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("SKYPILOT_ROUTEID=").map(|rest| rest.split(';').next().unwrap_or("").to_string()))
}

/// Which demo backend answered (`X-Demo-Backend`), or `"?"`.
pub fn served_by(response: &reqwest::Response) -> String {
    response.headers().get("x-demo-backend").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string()
}
