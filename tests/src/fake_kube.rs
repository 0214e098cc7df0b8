//! A fake Kubernetes API server for black-box tests.
//!
//! It speaks just enough of the list/watch protocol (plain HTTP, JSON,
//! chunked watch streams, resourceVersions, bookmarks, 410 Expired) for
//! core/v1 Pods, Services and Secrets and networking.k8s.io/v1 Ingresses that
//! an unmodified `kube::runtime::watcher` driven by a kubeconfig file works
//! against it. Tests mutate objects through [`FakeKube`] and every open watch
//! sees the same events a real API server would send, including the
//! label-selector rewriting of MODIFIED into ADDED/DELETED. The only writes
//! it accepts from clients are an ingress controller's: Ingress status
//! (PUT/PATCH `.../ingresses/NAME/status`) and Events (core/v1 and
//! events.k8s.io/v1).

mod api;
mod net;
mod selector;
mod store;
mod watch;
mod writes;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use net::GatedListener;
use store::{lock, ChangeKind, Msg, Shared, Store, Stored};

pub use store::Kind;

/// Makes uids and kubeconfig directory names unique within the process.
static COUNTER: AtomicU64 = AtomicU64::new(1);

/// `metadata.creationTimestamp` of objects that do not bring their own.
const CREATED: &str = "2026-01-01T00:00:00Z";

fn new_uid() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:08x}-0000-4000-8000-{n:012x}", std::process::id())
}

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
        FakePod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: new_uid(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ip: Some(ip.to_string()),
            ready: true,
            container_ports: vec![("http".to_string(), 46580)],
        }
    }

    /// The core/v1 Pod, without a resourceVersion.
    fn to_json(&self) -> Value {
        let ports: Vec<Value> = self
            .container_ports
            .iter()
            .map(|(name, port)| json!({"name": name, "containerPort": port, "protocol": "TCP"}))
            .collect();
        let mut pod = json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid,
                         "labels": labels_json(&self.labels), "creationTimestamp": CREATED},
            "spec": {"containers": [{"name": "api", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]},
        });
        set_ready(&mut pod, self.ready);
        set_pod_ip(&mut pod, self.ip.as_deref());
        pod
    }
}

/// Labels as a JSON object; on duplicate keys the last entry wins.
fn labels_json<K: AsRef<str>, V: AsRef<str>>(labels: &[(K, V)]) -> Value {
    let map: BTreeMap<&str, &str> = labels.iter().map(|(k, v)| (k.as_ref(), v.as_ref())).collect();
    json!(map)
}

fn set_ready(pod: &mut Value, ready: bool) {
    let status = if ready { "True" } else { "False" };
    match pod["status"]["conditions"].as_array_mut() {
        Some(conditions) => match conditions.iter_mut().find(|c| c["type"] == "Ready") {
            Some(condition) => condition["status"] = json!(status),
            None => conditions.push(json!({"type": "Ready", "status": status})),
        },
        None => pod["status"]["conditions"] = json!([{"type": "Ready", "status": status}]),
    }
}

fn set_pod_ip(pod: &mut Value, ip: Option<&str>) {
    let status = &mut pod["status"];
    match ip {
        Some(ip) => {
            status["podIP"] = json!(ip);
            status["podIPs"] = json!([{ "ip": ip }]);
        }
        None => {
            if let Some(status) = status.as_object_mut() {
                status.remove("podIP");
                status.remove("podIPs");
            }
        }
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
        let app = Router::new().fallback(api::handle).with_state(shared.clone());
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
        self.add_object(Kind::Pod, pod.to_json());
    }

    /// Replaces all labels of a pod (emits MODIFIED).
    pub fn set_labels(&self, ns: &str, name: &str, labels: &[(&str, &str)]) {
        self.modify(Kind::Pod, ns, name, |p| p["metadata"]["labels"] = labels_json(labels));
    }

    /// Removes one label, e.g. to cordon a pod out of a selector (emits MODIFIED).
    pub fn remove_label(&self, ns: &str, name: &str, key: &str) {
        self.modify(Kind::Pod, ns, name, |p| {
            if let Some(labels) = p["metadata"]["labels"].as_object_mut() {
                labels.remove(key);
            }
        });
    }

    /// Sets the `Ready` condition to `True`/`False` (emits MODIFIED).
    pub fn set_ready(&self, ns: &str, name: &str, ready: bool) {
        self.modify(Kind::Pod, ns, name, |p| set_ready(p, ready));
    }

    /// Sets or clears `status.podIP` (emits MODIFIED).
    pub fn set_pod_ip(&self, ns: &str, name: &str, ip: Option<&str>) {
        self.modify(Kind::Pod, ns, name, |p| set_pod_ip(p, ip));
    }

    /// Sets `metadata.deletionTimestamp` and `deletionGracePeriodSeconds: 30`,
    /// as a graceful delete does (emits MODIFIED).
    pub fn mark_terminating(&self, ns: &str, name: &str) {
        self.modify(Kind::Pod, ns, name, |p| {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:10:00Z");
            p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        });
    }

    /// Removes a pod (emits DELETED carrying its last state with a new rv).
    pub fn delete_pod(&self, ns: &str, name: &str) {
        self.delete_object(Kind::Pod, ns, name);
    }

    /// Creates an object from its JSON (emits ADDED). `metadata.namespace`
    /// and `metadata.name` are required; `kind`, `apiVersion`,
    /// `metadata.uid` and `metadata.creationTimestamp` are filled in when
    /// missing, and `metadata.resourceVersion` is the server's. Panics if the
    /// object exists or has no name: that is a bug in the calling test.
    pub fn add_object(&self, kind: Kind, mut object: Value) {
        let (ns, name) = identity(kind, &object);
        object["kind"] = json!(kind.name());
        object["apiVersion"] = json!(kind.api_version());
        let metadata = &mut object["metadata"];
        if metadata["uid"].as_str().is_none() {
            metadata["uid"] = json!(new_uid());
        }
        if metadata["creationTimestamp"].as_str().is_none() {
            metadata["creationTimestamp"] = json!(CREATED);
        }
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.remove("resourceVersion");
        }
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        let key = (kind, ns, name);
        assert!(!store.objects.contains_key(&key), "FakeKube::add_object: {} {}/{} exists", kind.name(), key.1, key.2);
        store.rv += 1;
        let new = Stored { kind, object, rv: store.rv };
        store.objects.insert(key, new.clone());
        shared.commit(&mut store, ChangeKind::Added, None, new);
    }

    /// Replaces an object with `object` (emits MODIFIED). The server keeps
    /// `uid` and `creationTimestamp`, and the stored `status` when `object`
    /// has none (status is a subresource). Panics on an unknown object.
    pub fn update_object(&self, kind: Kind, mut object: Value) {
        let (ns, name) = identity(kind, &object);
        self.modify(kind, &ns, &name, move |stored| {
            object["kind"] = json!(kind.name());
            object["apiVersion"] = json!(kind.api_version());
            for field in ["uid", "creationTimestamp"] {
                object["metadata"][field] = stored["metadata"][field].clone();
            }
            if object.get("status").is_none() {
                if let Some(status) = stored.get("status") {
                    object["status"] = status.clone();
                }
            }
            if let Some(metadata) = object["metadata"].as_object_mut() {
                metadata.remove("resourceVersion");
            }
            *stored = object;
        });
    }

    /// Removes an object (emits DELETED carrying its last state with a new
    /// rv). Panics on an unknown object.
    pub fn delete_object(&self, kind: Kind, ns: &str, name: &str) {
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        let key = (kind, ns.to_string(), name.to_string());
        let Some(old) = store.objects.remove(&key) else {
            panic!("FakeKube::delete_object: no {} {ns}/{name}", kind.name());
        };
        store.rv += 1;
        let new = Stored { rv: store.rv, ..old.clone() };
        shared.commit(&mut store, ChangeKind::Deleted, Some(old), new);
    }

    /// Every object of `kind` as the server would return it, by namespace and name.
    pub fn objects(&self, kind: Kind) -> Vec<Value> {
        let store = lock(&self.inner.shared.store);
        store.objects.values().filter(|s| s.kind == kind).map(|s| s.render(s.rv)).collect()
    }

    /// Events clients created (core/v1 and events.k8s.io/v1), in arrival
    /// order, with later PATCHes applied.
    pub fn events(&self) -> Vec<Value> {
        lock(&self.inner.shared.store).events.clone()
    }

    /// The `status` of an Ingress (as written through its status
    /// subresource), `None` when there is no such Ingress.
    pub fn ingress_status(&self, ns: &str, name: &str) -> Option<Value> {
        let store = lock(&self.inner.shared.store);
        let stored = store.objects.get(&(Kind::Ingress, ns.to_string(), name.to_string()))?;
        Some(stored.object.get("status").cloned().unwrap_or_else(|| json!({})))
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

    /// Applies `f` to an existing object's JSON and emits MODIFIED. Panics
    /// on an unknown object: that is a bug in the calling test.
    fn modify(&self, kind: Kind, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let shared = &self.inner.shared;
        let mut store = lock(&shared.store);
        let Some(old) = store.objects.get(&(kind, ns.to_string(), name.to_string())).cloned() else {
            panic!("FakeKube: no {} {ns}/{name}", kind.name());
        };
        let mut object = old.object.clone();
        f(&mut object);
        shared.replace(&mut store, old, object);
    }
}

/// `(namespace, name)` of an object a test hands in.
fn identity(kind: Kind, object: &Value) -> (String, String) {
    let field = |f: &str| object["metadata"][f].as_str().filter(|s| !s.is_empty()).map(str::to_string);
    match (field("namespace"), field("name")) {
        (Some(ns), Some(name)) => (ns, name),
        _ => panic!("FakeKube: a {} needs metadata.namespace and metadata.name: {object}", kind.name()),
    }
}

fn kubeconfig_yaml(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
         current-context: fake\nusers:\n- name: fake\n  user:\n    token: fake-token\npreferences: {{}}\n"
    )
}
