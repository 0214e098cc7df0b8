//! Sky-CLI-shaped clients in front of several proxy replicas behind an
//! [`L4Balancer`]. Each request is its own TCP connection (each CLI
//! invocation is a new process), so consecutive requests of one client land
//! on either replica; the balancer says which. Every answer is checked
//! against what the client holds: a request carrying a cookie is served by
//! that cookie's backend unless the proxy re-pins it (a new cookie), and
//! `/api/get` / `/api/stream` reach the pod that accepted the request id,
//! with or without a cookie, whichever replica they land on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http1::{Answer, BodyEnd, Http1Connection};
use crate::l4_balancer::L4Balancer;

/// Lines per `/api/stream`, 100 ms apart.
pub const STREAM_LINES: usize = 4;
/// Longest wait for one answer (a stream included).
const DEADLINE: Duration = Duration::from_secs(20);

/// Counters of a run; every field counts requests unless it says otherwise.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Requests sent (streams included).
    pub sent: AtomicU64,
    /// Transport errors, non-2xx answers, and answers from the wrong backend.
    pub failed: AtomicU64,
    /// Streams whose head arrived with 200.
    pub streams_opened: AtomicU64,
    /// Streams that delivered every line and ended as framed.
    pub streams_completed: AtomicU64,
    /// Streams that ended early.
    pub streams_cut: AtomicU64,
    /// Answers to a cookie-carrying request, not re-pinned, from the cookie's backend.
    pub cookie_honoured: AtomicU64,
    /// Of those, through a replica other than the one that set the cookie.
    pub cookie_honoured_elsewhere: AtomicU64,
    /// Answers that set a new cookie (a re-pin).
    pub repinned: AtomicU64,
    /// `/api/get` or `/api/stream` answered by the pod that owns the id.
    pub id_reached_owner: AtomicU64,
    /// Cookie-less `/api/get` through the replica that did not take the POST, answered by the owner.
    pub cookieless_get_elsewhere: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaReport {
    /// See [`ReplicaStats::sent`].
    pub sent: u64,
    /// See [`ReplicaStats::failed`].
    pub failed: u64,
    /// See [`ReplicaStats::streams_opened`].
    pub streams_opened: u64,
    /// See [`ReplicaStats::streams_completed`].
    pub streams_completed: u64,
    /// See [`ReplicaStats::streams_cut`].
    pub streams_cut: u64,
    /// See [`ReplicaStats::cookie_honoured`].
    pub cookie_honoured: u64,
    /// See [`ReplicaStats::cookie_honoured_elsewhere`].
    pub cookie_honoured_elsewhere: u64,
    /// See [`ReplicaStats::repinned`].
    pub repinned: u64,
    /// See [`ReplicaStats::id_reached_owner`].
    pub id_reached_owner: u64,
    /// See [`ReplicaStats::cookieless_get_elsewhere`].
    pub cookieless_get_elsewhere: u64,
}

impl ReplicaStats {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock() {
            if f.len() < 50 {
                f.push(what);
            }
        }
    }

    /// The first failures (at most 50).
    pub fn failures(&self) -> Vec<String> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    /// The counters now.
    pub fn report(&self) -> ReplicaReport {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ReplicaReport {
            sent: get(&self.sent),
            failed: get(&self.failed),
            streams_opened: get(&self.streams_opened),
            streams_completed: get(&self.streams_completed),
            streams_cut: get(&self.streams_cut),
            cookie_honoured: get(&self.cookie_honoured),
            cookie_honoured_elsewhere: get(&self.cookie_honoured_elsewhere),
            repinned: get(&self.repinned),
            id_reached_owner: get(&self.id_reached_owner),
            cookieless_get_elsewhere: get(&self.cookieless_get_elsewhere),
        }
    }
}

/// Running clients.
#[derive(Debug)]
pub struct ReplicaLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Live counters.
    pub stats: Arc<ReplicaStats>,
    last_backend: Arc<Mutex<Vec<String>>>,
}

impl ReplicaLoad {
    /// Starts `clients` clients through `balancer`, pausing `pause` between iterations.
    pub fn start(balancer: Arc<L4Balancer>, clients: usize, pause: Duration) -> ReplicaLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ReplicaStats::default());
        let last_backend = Arc::new(Mutex::new(vec![String::new(); clients]));
        let tasks = (0..clients)
            .map(|index| {
                let client = SkyClient {
                    balancer: balancer.clone(),
                    index,
                    cookie: None,
                    iteration: 0,
                    stats: stats.clone(),
                    last_backend: last_backend.clone(),
                };
                tokio::spawn(client.run(stop.clone(), pause))
            })
            .collect();
        ReplicaLoad { stop, tasks, stats, last_backend }
    }

    /// Stops after the current iterations; the final counters.
    pub async fn stop(self) -> ReplicaReport {
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

/// The cookie a client holds: its value, the backend it names and the
/// replica that set it.
#[derive(Debug, Clone)]
struct Pin {
    value: String,
    backend: String,
    replica: usize,
}

struct SkyClient {
    balancer: Arc<L4Balancer>,
    index: usize,
    cookie: Option<Pin>,
    iteration: u64,
    stats: Arc<ReplicaStats>,
    last_backend: Arc<Mutex<Vec<String>>>,
}

/// An answer and the replica it came through.
struct Landed {
    answer: Answer,
    replica: Option<usize>,
}

impl SkyClient {
    async fn run(mut self, stop: Arc<AtomicBool>, pause: Duration) {
        while !stop.load(Ordering::Relaxed) {
            self.iteration().await;
            self.iteration += 1;
            tokio::time::sleep(pause).await;
        }
    }

    /// One request on a new connection; `None` (counted as failed) unless 2xx.
    async fn send(&self, method: &str, path: &str, with_cookie: bool) -> Option<Landed> {
        self.stats.sent.fetch_add(1, Ordering::Relaxed);
        let what = format!("client {} {method} {path}", self.index);
        let mut connection = match Http1Connection::connect(self.balancer.addr).await {
            Ok(c) => c,
            Err(e) => {
                self.stats.fail(format!("{what}: connect: {e}"));
                return None;
            }
        };
        let cookie = self.cookie.as_ref().filter(|_| with_cookie).map(|p| format!("SKYPILOT_ROUTEID={}", p.value));
        let mut headers = vec![("connection", "close")];
        if let Some(c) = &cookie {
            headers.push(("cookie", c.as_str()));
        }
        let body: &[u8] = if method == "POST" { b"{\"cluster\": \"replicas\"}" } else { b"" };
        let answer = match connection.send(method, path, &headers, body, DEADLINE).await {
            Ok(a) => a,
            Err(e) => {
                self.stats.fail(format!("{what}: {e}"));
                return None;
            }
        };
        // Asked while the socket is still ours, so its port names this connection.
        let replica = connection.local_addr().and_then(|a| self.balancer.upstream_of(a));
        if !(200..300).contains(&answer.status) {
            self.stats.fail(format!("{what}: {} {}", answer.status, answer.text()));
            return None;
        }
        Some(Landed { answer, replica })
    }

    /// A request that carried our cookie and was not re-pinned came from the cookie's backend.
    fn check_cookie(&self, what: &str, landed: &Landed) -> bool {
        let Some(pin) = &self.cookie else { return true };
        if landed.answer.routeid().is_some() {
            self.stats.repinned.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        if landed.answer.served_by() != pin.backend {
            self.stats.fail(format!(
                "client {} {what}: cookie of {} (set by replica {}) served by {} through replica {:?}",
                self.index,
                pin.backend,
                pin.replica,
                landed.answer.served_by(),
                landed.replica
            ));
            return false;
        }
        self.stats.cookie_honoured.fetch_add(1, Ordering::Relaxed);
        if landed.replica.is_some_and(|r| r != pin.replica) {
            self.stats.cookie_honoured_elsewhere.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    fn check_owner(&self, what: &str, landed: &Landed, owner: &str) -> bool {
        if landed.answer.served_by() == owner {
            self.stats.id_reached_owner.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.stats.fail(format!(
            "client {} {what}: id owned by {owner} answered by {} through replica {:?}",
            self.index,
            landed.answer.served_by(),
            landed.replica
        ));
        false
    }

    async fn iteration(&mut self) {
        let Some(health) = self.send("GET", "/api/health", true).await else { return };
        if !self.check_cookie("GET /api/health", &health) {
            return;
        }
        // The sky CLI saves cookies from /api/health responses only.
        if let (Some(value), Some(replica)) = (health.answer.routeid(), health.replica) {
            self.cookie = Some(Pin { value, backend: health.answer.served_by().to_string(), replica });
        }
        if let Ok(mut last) = self.last_backend.lock() {
            if let Some(slot) = last.get_mut(self.index) {
                *slot = health.answer.served_by().to_string();
            }
        }
        let Some(launch) = self.send("POST", "/launch", true).await else { return };
        if !self.check_cookie("POST /launch", &launch) {
            return;
        }
        let Some(id) = launch.answer.header("x-skypilot-request-id").map(str::to_string) else {
            self.stats.fail(format!("client {} POST /launch: no X-Skypilot-Request-ID", self.index));
            return;
        };
        let owner = launch.answer.served_by().to_string();
        // Every other iteration the follow-up comes from a new terminal
        // without the cookie: request-id affinity alone must find the owner.
        let cookieless = self.iteration % 2 == 1;
        let path = format!("/api/get?request_id={id}");
        let Some(get) = self.send("GET", &path, !cookieless).await else { return };
        if !self.check_owner("GET /api/get", &get, &owner) {
            return;
        }
        if cookieless && get.replica.is_some() && get.replica != launch.replica {
            self.stats.cookieless_get_elsewhere.fetch_add(1, Ordering::Relaxed);
        }
        self.stream(&id, &owner).await;
    }

    async fn stream(&mut self, id: &str, owner: &str) {
        let path = format!("/api/stream?request_id={id}&lines={STREAM_LINES}&interval_ms=100");
        let Some(stream) = self.send("GET", &path, true).await else { return };
        self.stats.streams_opened.fetch_add(1, Ordering::Relaxed);
        let lines = stream.answer.body.iter().filter(|b| **b == b'\n').count();
        if stream.answer.end == BodyEnd::Complete && lines == STREAM_LINES {
            self.stats.streams_completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.stats.streams_cut.fetch_add(1, Ordering::Relaxed);
            self.stats.fail(format!(
                "client {} GET /api/stream: cut after {lines} lines ({:?})",
                self.index, stream.answer.end
            ));
        }
        self.check_owner("GET /api/stream", &stream, owner);
    }
}
