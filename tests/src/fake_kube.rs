//! A fake Kubernetes API server for black-box tests.
//!
//! It speaks just enough of the core/v1 Pods list/watch protocol (plain HTTP,
//! JSON, chunked watch streams, resourceVersions, bookmarks, 410 Expired) that
//! an unmodified `kube::runtime::watcher` driven by a kubeconfig file works
//! against it. Tests mutate pods through [`FakeKube`] and every open watch sees
//! the same events a real API server would send, including the label-selector
//! rewriting of MODIFIED into ADDED/DELETED.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use selector::{parse_selector, Requirement};

/// Makes uids and kubeconfig directory names unique within the process.
static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A pod as the test describes it; [`FakeKube`] renders it as a core/v1 Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePod {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`; on duplicate keys the last entry wins.
    pub labels: Vec<(String, String)>,
    /// `status.podIP` (and `status.podIPs`); `None` = not yet assigned.
    pub ip: Option<String>,
    /// Whether the `Ready` condition is `True`.
    pub ready: bool,
    /// `(name, containerPort)` of the single container `api`.
    pub container_ports: Vec<(String, u16)>,
}

impl FakePod {
    /// A ready pod with a unique uid and the single container port `http: 46580`.
    pub fn new(namespace: &str, name: &str, labels: &[(&str, &str)], ip: &str) -> FakePod {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        FakePod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id()),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ip: Some(ip.to_string()),
            ready: true,
            container_ports: vec![("http".to_string(), 46580)],
        }
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A pod as stored by the server: the test's view plus server-owned metadata.
#[derive(Debug, Clone)]
struct StoredPod {
    pod: FakePod,
    rv: u64,
    terminating: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the event history; `old` lets a watch with a label selector
/// decide whether the pod entered or left its view.
#[derive(Debug)]
struct Change {
    kind: ChangeKind,
    old: Option<StoredPod>,
    new: StoredPod,
}

/// What live watch streams receive.
#[derive(Debug, Clone)]
enum Msg {
    Change(Arc<Change>),
    Bookmark(u64),
    /// End the stream; `abrupt` drops the connection instead of a clean end.
    Close {
        abrupt: bool,
    },
}

#[derive(Debug, Default)]
struct Store {
    rv: u64,
    pods: BTreeMap<(String, String), StoredPod>,
    history: Vec<Arc<Change>>,
    /// Watches starting from an rv below this get 410 Expired.
    oldest_rv: u64,
}

/// State shared between the handle and the server's request handlers.
struct Shared {
    store: Mutex<Store>,
    events: broadcast::Sender<Msg>,
    open_watches: AtomicUsize,
    down: AtomicBool,
    /// Bumped by every outage; connections from an older epoch are dead.
    epoch: AtomicU64,
    /// Wakers of connections waiting in a read, so an outage closes idle
    /// keep-alive connections at once instead of at the client's next request.
    parked: Mutex<HashMap<u64, Waker>>,
    log: Mutex<Vec<String>>,
}

/// Locks ignoring poisoning: a panicking test thread must not cascade.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Records a change and fans it out. Sending under the store lock keeps
    /// history and live events in one order, which watch start relies on.
    fn commit(&self, store: &mut Store, kind: ChangeKind, old: Option<StoredPod>, new: StoredPod) {
        let change = Arc::new(Change { kind, old, new });
        store.history.push(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Msg::Change(change));
    }

    /// Kills every open connection (parked ones are woken to notice) and
    /// cuts open watch streams mid-body.
    fn cut_connections(&self) {
        // Bump before draining: see `GatedStream::poll_read`.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for (_, waker) in lock(&self.parked).drain() {
            waker.wake();
        }
        let _ = self.events.send(Msg::Close { abrupt: true });
    }
}

/// Accepts connections, but while the server is down closes them right away:
/// an outage then looks like a dead server (connection closed, no HTTP
/// response). A 503 would not do: kube's client silently retries 429/503/504
/// with exponential backoff, hiding the outage from the watcher.
struct GatedListener {
    tcp: TcpListener,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for GatedListener {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GatedStream, SocketAddr) {
        loop {
            match self.tcp.accept().await {
                Ok((tcp, _)) if self.shared.down.load(Ordering::SeqCst) => drop(tcp),
                Ok((tcp, addr)) => {
                    let stream = GatedStream {
                        tcp,
                        shared: self.shared.clone(),
                        epoch: self.shared.epoch.load(Ordering::SeqCst),
                        id: COUNTER.fetch_add(1, Ordering::Relaxed),
                    };
                    return (stream, addr);
                }
                // E.g. out of file descriptors: back off like axum's own listener.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A server-side connection that fails all I/O once an outage started after
/// it was accepted, so hyper drops it.
struct GatedStream {
    tcp: TcpStream,
    shared: Arc<Shared>,
    epoch: u64,
    id: u64,
}

impl GatedStream {
    fn check(&self) -> std::io::Result<()> {
        if self.shared.epoch.load(Ordering::SeqCst) == self.epoch {
            Ok(())
        } else {
            let kind = std::io::ErrorKind::ConnectionReset;
            Err(std::io::Error::new(kind, "fake kube went down"))
        }
    }
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        lock(&self.shared.parked).remove(&self.id);
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // Park before checking: an outage either sees this waker or bumped
        // the epoch before our check, so no wake-up is lost.
        lock(&self.shared.parked).insert(self.id, cx.waker().clone());
        self.check()?;
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// Handle to a running fake API server; clones share the same server, which
/// stops (and its kubeconfig is removed) when the last clone is dropped.
#[derive(Clone)]
pub struct FakeKube {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    addr: SocketAddr,
    dir: PathBuf,
    kubeconfig: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.server.abort();
        // Connections run in their own tasks: close them too.
        self.shared.cut_connections();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl FakeKube {
    /// Binds `127.0.0.1:0`, writes the kubeconfig and serves in a tokio task.
    pub async fn start() -> anyhow::Result<FakeKube> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pinroute-fake-kube-{}-{n}-{}", std::process::id(), addr.port()));
        tokio::fs::create_dir_all(&dir).await?;
        let kubeconfig = dir.join("kubeconfig");
        tokio::fs::write(&kubeconfig, kubeconfig_yaml(addr)).await?;

        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::default()),
            events,
            open_watches: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            parked: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let server_shared = shared.clone();
        let server = tokio::spawn(async move {
            let listener = GatedListener { tcp: listener, shared: server_shared };
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake kube server stopped: {e}");
            }
        });
        Ok(FakeKube { inner: Arc::new(Inner { shared, addr, dir, kubeconfig, server }) })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// A kubeconfig (context, cluster and user all named `fake`, namespace
    /// `default`, dummy bearer token) pointing at `http://127.0.0.1:PORT`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.inner.kubeconfig
    }

    /// Creates a pod (emits ADDED). Panics if it already exists: that is a bug
    /// in the calling test.
    pub fn add_pod(&self, pod: FakePod) {
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        let key = (pod.namespace.clone(), pod.name.clone());
        assert!(!store.pods.contains_key(&key), "FakeKube::add_pod: {}/{} exists", key.0, key.1);
        store.rv += 1;
        let new = StoredPod { pod, rv: store.rv, terminating: false };
        store.pods.insert(key, new.clone());
        shared.commit(&mut store, ChangeKind::Added, None, new);
    }

    /// Replaces all labels of a pod (emits MODIFIED).
    pub fn set_labels(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        self.modify(ns, name, |p| {
            p.pod.labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        });
    }

    /// Removes one label, e.g. to cordon a pod out of a selector (emits MODIFIED).
    pub fn remove_label(&self, ns: &str, name: &str, key: &str) {
        self.modify(ns, name, |p| p.pod.labels.retain(|(k, _)| k != key));
    }

    /// Sets the `Ready` condition to `True`/`False` (emits MODIFIED).
    pub fn set_ready(&self, ns: &str, name: &str, ready: bool) {
        self.modify(ns, name, |p| p.pod.ready = ready);
    }

    /// Sets or clears `status.podIP` (emits MODIFIED).
    pub fn set_pod_ip(&self, ns: &str, name: &str, ip: Option<&str>) {
        self.modify(ns, name, |p| p.pod.ip = ip.map(str::to_string));
    }

    /// Sets `metadata.deletionTimestamp` and `deletionGracePeriodSeconds: 30`,
    /// as a graceful delete does (emits MODIFIED).
    pub fn mark_terminating(&self, ns: &str, name: &str) {
        self.modify(ns, name, |p| p.terminating = true);
    }

    /// Removes a pod (emits DELETED carrying its last state with a new rv).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        let key = (ns.to_string(), name.to_string());
        let Some(old) = store.pods.remove(&key) else {
            panic!("FakeKube::delete_pod: no pod {ns}/{name}");
        };
        store.rv += 1;
        let new = StoredPod { rv: store.rv, ..old.clone() };
        shared.commit(&mut store, ChangeKind::Deleted, Some(old), new);
    }

    /// Simulates an API server outage: while down every new connection is
    /// closed before any HTTP response, and all open connections (including
    /// watch streams, mid-body) are dropped. `false` restores service.
    pub fn set_down(&self, down: bool) {
        let shared = &self.inner.shared;
        shared.down.store(down, Ordering::SeqCst);
        if down {
            shared.cut_connections();
        }
    }

    /// Forgets the event history, as etcd compaction does: any later watch
    /// from an rv issued before this call gets the in-stream 410 Expired ERROR,
    /// so every client must re-list. Open watches are ended to make clients
    /// reconnect now. Bumps the global rv (without an event), so even a
    /// client that had seen every change must re-list.
    pub fn expire_history(&self) {
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        store.history.clear();
        store.rv += 1;
        store.oldest_rv = store.rv;
        let _ = shared.events.send(Msg::Close { abrupt: false });
    }

    /// Sends a BOOKMARK at the current rv to open watches that allow bookmarks.
    pub fn send_bookmark(&self) {
        let shared = &self.inner.shared;
        let store = lock(&shared.store);
        let _ = shared.events.send(Msg::Bookmark(store.rv));
    }

    /// `"METHOD path?query"` (or `"METHOD path"`) of every request received,
    /// in arrival order. Connections refused during an outage carry no
    /// request and are not logged.
    pub fn request_log(&self) -> Vec<String> {
        lock(&self.inner.shared.log).clone()
    }

    /// Number of watch streams currently open.
    pub fn open_watches(&self) -> usize {
        self.inner.shared.open_watches.load(Ordering::SeqCst)
    }

    /// Applies `f` to an existing pod and emits MODIFIED. Panics on an unknown
    /// pod: that is a bug in the calling test.
    fn modify(&self, ns: &str, name: &str, f: impl FnOnce(&mut StoredPod)) {
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        let key = (ns.to_string(), name.to_string());
        let Some(old) = store.pods.get(&key).cloned() else {
            panic!("FakeKube: no pod {ns}/{name}");
        };
        store.rv += 1;
        let mut new = old.clone();
        f(&mut new);
        new.rv = store.rv;
        store.pods.insert(key, new.clone());
        shared.commit(&mut store, ChangeKind::Modified, Some(old), new);
    }
}

fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\npreferences: {{}}\n"
    )
}

/// Renders a stored pod as the API server would, with `rv` as its resourceVersion.
fn pod_json(p: &StoredPod, rv: u64) -> Value {
    let labels: BTreeMap<&str, &str> = p.pod.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut metadata = json!({
        "name": p.pod.name, "namespace": p.pod.namespace, "uid": p.pod.uid,
        "resourceVersion": rv.to_string(), "labels": labels,
        "creationTimestamp": "2026-01-01T00:00:00Z",
    });
    if p.terminating {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
        metadata["deletionGracePeriodSeconds"] = json!(30);
    }
    let ports: Vec<Value> = p
        .pod
        .container_ports
        .iter()
        .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
        .collect();
    let mut status = json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": if p.pod.ready { "True" } else { "False" }}],
    });
    if let Some(ip) = &p.pod.ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{ "ip": ip }]);
    }
    json!({
        "kind": "Pod", "apiVersion": "v1", "metadata": metadata,
        "spec": {"containers": [{"name": "api", "image": "x", "ports": ports}]},
        "status": status,
    })
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

fn error_response(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, &status_json(code.as_u16(), reason, message))
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark_line(rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line("BOOKMARK", json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata}))
}

/// Which pods a request sees: namespace from the path plus both selectors.
struct Filter {
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Filter {
    fn from_query(namespace: Option<String>, q: &HashMap<String, String>) -> Result<Filter, String> {
        let labels = parse_selector(q.get("labelSelector").map_or("", String::as_str))?;
        let fields = parse_selector(q.get("fieldSelector").map_or("", String::as_str))?;
        for r in &fields {
            if !matches!(r, Requirement::Eq(..) | Requirement::NotEq(..)) {
                return Err("field selectors support only =, == and !=".to_string());
            }
            if !POD_FIELDS.contains(&r.key()) {
                return Err(format!("field label not supported: {}", r.key()));
            }
        }
        Ok(Filter { namespace, labels, fields })
    }

    fn matches(&self, p: &StoredPod) -> bool {
        self.namespace.as_ref().is_none_or(|ns| *ns == p.pod.namespace)
            && self.labels.iter().all(|r| r.matches(p.pod.label(r.key())))
            && self.fields.iter().all(|r| r.matches(field_value(&p.pod, r.key()).as_deref()))
    }

    /// What a watch with this filter sees of a change, as the real server
    /// does it: entering the selector is ADDED, leaving it is DELETED (with
    /// the previous object at the new rv).
    fn view(&self, c: &Change) -> Option<Bytes> {
        let new_in = self.matches(&c.new);
        let old_in = c.old.as_ref().is_some_and(|o| self.matches(o));
        let (kind, obj) = match (c.kind, old_in, new_in) {
            (ChangeKind::Added, _, true) => ("ADDED", &c.new),
            (ChangeKind::Deleted, _, true) => ("DELETED", &c.new),
            (ChangeKind::Modified, true, true) => ("MODIFIED", &c.new),
            (ChangeKind::Modified, false, true) => ("ADDED", &c.new),
            (ChangeKind::Modified, true, false) => ("DELETED", c.old.as_ref()?),
            _ => return None,
        };
        Some(event_line(kind, pod_json(obj, c.new.rv)))
    }
}

/// The pod fields the real server allows in field selectors (a subset).
const POD_FIELDS: &[&str] = &["metadata.name", "metadata.namespace", "status.phase", "status.podIP"];

/// Value of one of [`POD_FIELDS`].
fn field_value(p: &FakePod, field: &str) -> Option<String> {
    Some(match field {
        "metadata.name" => p.name.clone(),
        "metadata.namespace" => p.namespace.clone(),
        "status.phase" => "Running".to_string(),
        "status.podIP" => p.ip.clone().unwrap_or_default(),
        _ => return None,
    })
}

/// The single entry point: logs, then routes by hand (the path space is tiny
/// and this keeps 404s in Status form).
async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    lock(&shared.log).push(format!("{method} {target}"));
    // Only reachable in a race with `set_down`; the gated connection then
    // fails to write this anyway.
    if shared.down.load(Ordering::SeqCst) {
        let msg = "fake kube is down";
        return error_response(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", msg);
    }
    let Ok(Query(query)) = Query::<HashMap<String, String>>::try_from_uri(&uri) else {
        let msg = "malformed query string";
        return error_response(StatusCode::BAD_REQUEST, "BadRequest", msg);
    };
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    if let Some(doc) = discovery_json(&segments) {
        return json_response(StatusCode::OK, &doc);
    }
    let (namespace, name) = match segments.as_slice() {
        ["api", "v1", "pods"] => (None, None),
        ["api", "v1", "namespaces", ns, "pods"] => (Some(ns.to_string()), None),
        ["api", "v1", "namespaces", ns, "pods", name] => (Some(ns.to_string()), Some(*name)),
        _ => {
            let msg = "the server could not find the requested resource";
            return error_response(StatusCode::NOT_FOUND, "NotFound", msg);
        }
    };
    if method != Method::GET {
        let msg = "fake kube is read-only";
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", msg);
    }
    if let (Some(ns), Some(name)) = (&namespace, name) {
        let store = lock(&shared.store);
        return match store.pods.get(&(ns.clone(), name.to_string())) {
            Some(p) => json_response(StatusCode::OK, &pod_json(p, p.rv)),
            None => {
                let msg = format!("pods \"{name}\" not found");
                error_response(StatusCode::NOT_FOUND, "NotFound", &msg)
            }
        };
    }
    let filter = match Filter::from_query(namespace, &query) {
        Ok(f) => f,
        Err(msg) => return error_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
    };
    if matches!(query.get("watch").map(String::as_str), Some("1" | "true")) {
        watch(&shared, filter, &query)
    } else {
        list(&shared, &filter)
    }
}

/// Version and discovery documents, in case a client asks (kube's watcher
/// does not; `Client::apiserver_version` reads `/version`).
fn discovery_json(segments: &[&str]) -> Option<Value> {
    Some(match segments {
        ["version"] => json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "gitCommit": "0000000",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
            "compiler": "gc", "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
        }),
        ["apis"] => json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        ["api", "v1"] => json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [{"name": "pods", "singularName": "pod", "namespaced": true,
                           "kind": "Pod", "verbs": ["get", "list", "watch"]}],
        }),
        _ => return None,
    })
}

/// Always the current state in one page: every resourceVersion/limit
/// combination kube-rs uses accepts that answer.
fn list(shared: &Shared, filter: &Filter) -> Response {
    let store = lock(&shared.store);
    let items: Vec<Value> = store.pods.values().filter(|p| filter.matches(p)).map(|p| pod_json(p, p.rv)).collect();
    let body = json!({"kind": "PodList", "apiVersion": "v1",
                      "metadata": {"resourceVersion": store.rv.to_string()}, "items": items});
    json_response(StatusCode::OK, &body)
}

/// Per-stream state of a watch response body.
struct WatchStream {
    shared: Arc<Shared>,
    /// Lines computed at watch start (replay / initial events), sent first.
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Msg>,
    filter: Filter,
    bookmarks: bool,
    deadline: Option<tokio::time::Instant>,
    finished: bool,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.open_watches.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WatchStream {
    /// Next body chunk; `None` ends the response cleanly, `Some(Err)` makes
    /// hyper drop the connection mid-stream (used for `set_down`).
    async fn next(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        if self.shared.down.load(Ordering::SeqCst) {
            return Some(Err(std::io::Error::other("fake kube went down")));
        }
        if let Some(line) = self.pending.pop_front() {
            return Some(Ok(line));
        }
        if self.finished {
            return None;
        }
        loop {
            let msg = match self.deadline {
                Some(deadline) => tokio::select! {
                    _ = tokio::time::sleep_until(deadline) => return None,
                    msg = self.rx.recv() => msg,
                },
                None => self.rx.recv().await,
            };
            // A lagging receiver ends the stream; the client resumes from its
            // last rv and the history replay fills the gap.
            match msg.ok()? {
                Msg::Change(c) => {
                    if let Some(line) = self.filter.view(&c) {
                        return Some(Ok(line));
                    }
                }
                Msg::Bookmark(rv) if self.bookmarks => return Some(Ok(bookmark_line(rv, false))),
                Msg::Bookmark(_) => {}
                Msg::Close { abrupt: false } => return None,
                Msg::Close { abrupt: true } => {
                    self.finished = true;
                    return Some(Err(std::io::Error::other("fake kube went down")));
                }
            }
        }
    }
}

fn watch(shared: &Arc<Shared>, filter: Filter, q: &HashMap<String, String>) -> Response {
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true" || v == "1");
    let initial_events = q.get("sendInitialEvents").is_some_and(|v| v == "true" || v == "1");
    if initial_events && !bookmarks {
        let msg = "sendInitialEvents requires allowWatchBookmarks=true";
        return error_response(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", msg);
    }
    let rv = q.get("resourceVersion").map_or("", String::as_str);
    let deadline = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));

    // Snapshot and subscribe under one lock so no change is lost or doubled.
    let store = lock(&shared.store);
    let rx = shared.events.subscribe();
    let mut pending = VecDeque::new();
    let mut finished = false;
    if rv.is_empty() || rv == "0" || initial_events {
        // "Start at most recent/any": synthetic ADDED for the current state.
        for p in store.pods.values().filter(|p| filter.matches(p)) {
            pending.push_back(event_line("ADDED", pod_json(p, p.rv)));
        }
        if initial_events {
            pending.push_back(bookmark_line(store.rv, true));
        }
    } else {
        let Ok(from) = rv.parse::<u64>() else {
            let msg = format!("invalid resourceVersion: {rv:?}");
            return error_response(StatusCode::BAD_REQUEST, "BadRequest", &msg);
        };
        if from < store.oldest_rv {
            // The real server reports this in-stream with HTTP 200.
            let msg = format!("too old resource version: {from} ({})", store.oldest_rv);
            pending.push_back(event_line("ERROR", status_json(410, "Expired", &msg)));
            finished = true;
        } else {
            let newer = store.history.iter().filter(|c| c.new.rv > from);
            pending.extend(newer.filter_map(|c| filter.view(c)));
        }
    }
    drop(store);

    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    let state = WatchStream { shared: shared.clone(), pending, rx, filter, bookmarks, deadline, finished };
    let body = Body::from_stream(futures::stream::unfold(state, |mut s| async move {
        let item = s.next().await?;
        Some((item, s))
    }));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Kubernetes label selector syntax (also used for field selectors).
mod selector {
    /// One comma-separated term of a selector; all terms must hold.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum Requirement {
        Eq(String, String),
        NotEq(String, String),
        Exists(String),
        NotExists(String),
        In(String, Vec<String>),
        NotIn(String, Vec<String>),
    }

    impl Requirement {
        pub(super) fn key(&self) -> &str {
            match self {
                Requirement::Eq(k, _)
                | Requirement::NotEq(k, _)
                | Requirement::Exists(k)
                | Requirement::NotExists(k)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _) => k,
            }
        }

        /// `value` is the object's value for [`Requirement::key`], if any.
        /// As in Kubernetes, `!=` and `notin` also match a missing key.
        pub(super) fn matches(&self, value: Option<&str>) -> bool {
            match self {
                Requirement::Eq(_, v) => value == Some(v.as_str()),
                Requirement::NotEq(_, v) => value != Some(v.as_str()),
                Requirement::Exists(_) => value.is_some(),
                Requirement::NotExists(_) => value.is_none(),
                Requirement::In(_, vs) => value.is_some_and(|x| vs.iter().any(|v| v == x)),
                Requirement::NotIn(_, vs) => value.is_none_or(|x| vs.iter().all(|v| v != x)),
            }
        }
    }

    /// Parses `k=v,k==v,k!=v,k,!k,k in (a,b),k notin (a,b)`; empty = everything.
    pub(super) fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
        split_terms(s).into_iter().filter(|t| !t.is_empty()).map(parse_term).collect()
    }

    /// Splits on commas that are not inside a `(...)` value set.
    fn split_terms(s: &str) -> Vec<&str> {
        let (mut terms, mut depth, mut start) = (Vec::new(), 0i32, 0);
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    terms.push(s[start..i].trim());
                    start = i + 1;
                }
                _ => {}
            }
        }
        terms.push(s[start..].trim());
        terms
    }

    fn parse_term(t: &str) -> Result<Requirement, String> {
        let bad = || format!("unable to parse requirement: {t:?}");
        let key = |k: &str| {
            let k = k.trim();
            let ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            if ok {
                Ok(k.to_string())
            } else {
                Err(bad())
            }
        };
        if let Some((head, rest)) = t.split_once('(') {
            let values = rest.strip_suffix(')').ok_or_else(bad)?;
            let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
            let words: Vec<&str> = head.split_whitespace().collect();
            return match words.as_slice() {
                [k, "in"] => Ok(Requirement::In(key(k)?, values)),
                [k, "notin"] => Ok(Requirement::NotIn(key(k)?, values)),
                _ => Err(bad()),
            };
        }
        if let Some((k, v)) = t.split_once("!=") {
            return Ok(Requirement::NotEq(key(k)?, v.trim().to_string()));
        }
        if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
            return Ok(Requirement::Eq(key(k)?, v.trim().to_string()));
        }
        match t.strip_prefix('!') {
            Some(k) => Ok(Requirement::NotExists(key(k)?)),
            None => Ok(Requirement::Exists(key(t)?)),
        }
    }
}
