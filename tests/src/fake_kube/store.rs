//! The fake server's objects, by kind, with one resourceVersion counter and
//! one event history for all kinds (as etcd has), and what a list or watch
//! request sees of them.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::selector::{parse_selector, Requirement};

/// The resource kinds the fake server stores, lists and watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// core/v1 Pods.
    Pod,
    /// core/v1 Services.
    Service,
    /// core/v1 Secrets.
    Secret,
    /// networking.k8s.io/v1 Ingresses.
    Ingress,
}

impl Kind {
    /// `kind` of an object.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::Ingress => "Ingress",
        }
    }

    /// `apiVersion` of an object.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Service | Kind::Secret => "v1",
            Kind::Ingress => "networking.k8s.io/v1",
        }
    }

    /// The resource name in URL paths.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Secret => "secrets",
            Kind::Ingress => "ingresses",
        }
    }

    /// The kind served at `/api/v1/<plural>` (`group` `None`) or
    /// `/apis/<group>/v1/<plural>`.
    pub(super) fn from_path(group: Option<&str>, plural: &str) -> Option<Kind> {
        match (group, plural) {
            (None, "pods") => Some(Kind::Pod),
            (None, "services") => Some(Kind::Service),
            (None, "secrets") => Some(Kind::Secret),
            (Some("networking.k8s.io"), "ingresses") => Some(Kind::Ingress),
            _ => None,
        }
    }

    /// The fields the real server allows in field selectors (a subset).
    pub(super) fn fields(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &["metadata.name", "metadata.namespace", "status.phase", "status.podIP"],
            Kind::Secret => &["metadata.name", "metadata.namespace", "type"],
            Kind::Service | Kind::Ingress => &["metadata.name", "metadata.namespace"],
        }
    }
}

/// An object as stored: its JSON without `metadata.resourceVersion`, which
/// is rendered from `rv`.
#[derive(Debug, Clone)]
pub(super) struct Stored {
    pub kind: Kind,
    pub object: Value,
    pub rv: u64,
}

impl Stored {
    pub fn namespace(&self) -> &str {
        self.object["metadata"]["namespace"].as_str().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.object["metadata"]["labels"][key].as_str()
    }

    /// A dotted field's value; a missing field reads as `""`, as the real
    /// server's field selectors treat it.
    fn field(&self, path: &str) -> String {
        let value = path.split('.').fold(&self.object, |v, part| &v[part]);
        value.as_str().unwrap_or("").to_string()
    }

    /// The object as the API server returns it, with `rv` as its resourceVersion.
    pub fn render(&self, rv: u64) -> Value {
        let mut object = self.object.clone();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the event history; `old` lets a watch with a label selector
/// decide whether the object entered or left its view.
#[derive(Debug)]
pub(super) struct Change {
    pub kind: ChangeKind,
    pub old: Option<Stored>,
    pub new: Stored,
}

/// What live watch streams receive.
#[derive(Debug, Clone)]
pub(super) enum Msg {
    Change(Arc<Change>),
    Bookmark(u64),
    /// End the stream; `abrupt` drops the connection instead of a clean end.
    Close {
        abrupt: bool,
    },
}

#[derive(Debug, Default)]
pub(super) struct Store {
    pub rv: u64,
    pub objects: BTreeMap<(Kind, String, String), Stored>,
    pub history: Vec<Arc<Change>>,
    /// Watches starting from an rv below this get 410 Expired.
    pub oldest_rv: u64,
    /// Events created through the API, in arrival order (patches applied).
    pub events: Vec<Value>,
}

/// State shared between the handle and the server's request handlers.
pub(super) struct Shared {
    pub store: Mutex<Store>,
    pub events: broadcast::Sender<Msg>,
    pub open_watches: AtomicUsize,
    pub down: AtomicBool,
    /// Bumped by every outage; connections from an older epoch are dead.
    pub epoch: AtomicU64,
    /// Wakers of connections waiting in a read, so an outage closes idle
    /// keep-alive connections at once instead of at the client's next request.
    pub parked: Mutex<HashMap<u64, Waker>>,
    pub log: Mutex<Vec<String>>,
}

/// Locks ignoring poisoning: a panicking test thread must not cascade.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Records a change and fans it out. Sending under the store lock keeps
    /// history and live events in one order, which watch start relies on.
    pub fn commit(&self, store: &mut Store, kind: ChangeKind, old: Option<Stored>, new: Stored) {
        let change = Arc::new(Change { kind, old, new });
        store.history.push(change.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(Msg::Change(change));
    }

    /// Stores `object` as a new version of an existing object (emits MODIFIED).
    pub fn replace(&self, store: &mut Store, old: Stored, object: Value) -> Stored {
        store.rv += 1;
        let new = Stored { kind: old.kind, object, rv: store.rv };
        let key = (new.kind, new.namespace().to_string(), new.name().to_string());
        store.objects.insert(key, new.clone());
        self.commit(store, ChangeKind::Modified, Some(old), new.clone());
        new
    }

    /// Kills every open connection (parked ones are woken to notice) and
    /// cuts open watch streams mid-body.
    pub fn cut_connections(&self) {
        // Bump before draining: see `GatedStream::poll_read`.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        for (_, waker) in lock(&self.parked).drain() {
            waker.wake();
        }
        let _ = self.events.send(Msg::Close { abrupt: true });
    }
}

/// RFC 7386 JSON merge patch (also how the fake applies strategic-merge and
/// apply patches: close enough for status writes).
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Which objects a request sees: kind and namespace from the path plus both selectors.
pub(super) struct Filter {
    pub kind: Kind,
    namespace: Option<String>,
    labels: Vec<Requirement>,
    fields: Vec<Requirement>,
}

impl Filter {
    pub fn from_query(kind: Kind, namespace: Option<String>, q: &HashMap<String, String>) -> Result<Filter, String> {
        let labels = parse_selector(q.get("labelSelector").map_or("", String::as_str))?;
        let fields = parse_selector(q.get("fieldSelector").map_or("", String::as_str))?;
        for r in &fields {
            if !matches!(r, Requirement::Eq(..) | Requirement::NotEq(..)) {
                return Err("field selectors support only =, == and !=".to_string());
            }
            if !kind.fields().contains(&r.key()) {
                return Err(format!("field label not supported: {}", r.key()));
            }
        }
        Ok(Filter { kind, namespace, labels, fields })
    }

    pub fn matches(&self, s: &Stored) -> bool {
        s.kind == self.kind
            && self.namespace.as_deref().is_none_or(|ns| ns == s.namespace())
            && self.labels.iter().all(|r| r.matches(s.label(r.key())))
            && self.fields.iter().all(|r| r.matches(Some(&s.field(r.key()))))
    }

    /// What a watch with this filter sees of a change, as the real server
    /// does it: entering the selector is ADDED, leaving it is DELETED (with
    /// the previous object at the new rv).
    pub fn view(&self, c: &Change) -> Option<Bytes> {
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
        Some(event_line(kind, obj.render(c.new.rv)))
    }
}

pub(super) fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}
