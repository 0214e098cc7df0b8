//! The fake server's HTTP surface: one handler that routes by hand (the path
//! space is small and this keeps every error in `Status` form), reads
//! (get, list, watch) for every [`Kind`], and the few writes a controller
//! makes (Ingress status, Events).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::store::{lock, Filter, Kind, Shared};
use super::watch::watch;
use super::writes::{create_event, patch_event, write_status, StatusWrite};

/// What a request path names.
enum Target {
    /// `.../<plural>`: list or watch.
    Collection { kind: Kind, namespace: Option<String> },
    /// `.../namespaces/<ns>/<plural>/<name>`.
    Object { kind: Kind, namespace: String, name: String },
    /// `.../namespaces/<ns>/ingresses/<name>/status`.
    Status { kind: Kind, namespace: String, name: String },
    /// `/api/v1/namespaces/<ns>/events` or `/apis/events.k8s.io/v1/...`, with a name for PATCH.
    Events { namespace: String, name: Option<String> },
}

fn target(segments: &[&str]) -> Option<Target> {
    let (group, rest) = match segments {
        ["api", "v1", rest @ ..] => (None, rest),
        ["apis", group, "v1", rest @ ..] => (Some(*group), rest),
        _ => return None,
    };
    let events_group = matches!(group, None | Some("events.k8s.io"));
    let kind = |plural: &str| Kind::from_path(group, plural);
    Some(match rest {
        ["namespaces", ns, "events"] if events_group => Target::Events { namespace: ns.to_string(), name: None },
        ["namespaces", ns, "events", name] if events_group => {
            Target::Events { namespace: ns.to_string(), name: Some(name.to_string()) }
        }
        [plural] => Target::Collection { kind: kind(plural)?, namespace: None },
        ["namespaces", ns, plural] => Target::Collection { kind: kind(plural)?, namespace: Some(ns.to_string()) },
        ["namespaces", ns, plural, name] => {
            Target::Object { kind: kind(plural)?, namespace: ns.to_string(), name: name.to_string() }
        }
        ["namespaces", ns, plural, name, "status"] if kind(plural) == Some(Kind::Ingress) => {
            Target::Status { kind: Kind::Ingress, namespace: ns.to_string(), name: name.to_string() }
        }
        _ => return None,
    })
}

/// The single entry point: logs, then routes.
pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let logged = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    lock(&shared.log).push(format!("{method} {logged}"));
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
    let Some(target) = target(&segments) else {
        let msg = "the server could not find the requested resource";
        return error_response(StatusCode::NOT_FOUND, "NotFound", msg);
    };
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    match (target, method) {
        (Target::Collection { kind, namespace }, Method::GET) => {
            let filter = match Filter::from_query(kind, namespace, &query) {
                Ok(f) => f,
                Err(msg) => return error_response(StatusCode::BAD_REQUEST, "BadRequest", &msg),
            };
            if matches!(query.get("watch").map(String::as_str), Some("1" | "true")) {
                watch(&shared, filter, &query)
            } else {
                list(&shared, &filter)
            }
        }
        (Target::Object { kind, namespace, name } | Target::Status { kind, namespace, name }, Method::GET) => {
            get(&shared, kind, &namespace, &name)
        }
        (Target::Status { kind, namespace, name }, Method::PUT) => {
            write_status(&shared, kind, &namespace, &name, StatusWrite::Replace, &body)
        }
        (Target::Status { kind, namespace, name }, Method::PATCH) => {
            write_status(&shared, kind, &namespace, &name, StatusWrite::Patch(content_type), &body)
        }
        (Target::Events { namespace, name: None }, Method::POST) => create_event(&shared, &namespace, &body),
        (Target::Events { namespace, name: Some(name) }, Method::PATCH) => {
            patch_event(&shared, &namespace, &name, content_type, &body)
        }
        (Target::Events { namespace, name: None }, Method::GET) => list_events(&shared, &namespace),
        _ => {
            let msg = "fake kube only writes Ingress status and Events";
            error_response(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", msg)
        }
    }
}

fn get(shared: &Shared, kind: Kind, namespace: &str, name: &str) -> Response {
    let store = lock(&shared.store);
    match store.objects.get(&(kind, namespace.to_string(), name.to_string())) {
        Some(s) => json_response(StatusCode::OK, &s.render(s.rv)),
        None => not_found(kind, name),
    }
}

/// Version and discovery documents, in case a client asks (kube's watcher
/// does not; `Client::apiserver_version` reads `/version`).
fn discovery_json(segments: &[&str]) -> Option<Value> {
    let resource = |kind: Kind, verbs: &[&str]| {
        json!({"name": kind.plural(), "singularName": kind.name().to_ascii_lowercase(), "namespaced": true,
               "kind": kind.name(), "verbs": verbs})
    };
    let read = ["get", "list", "watch"];
    let group = |name: &str| {
        json!({"name": name, "versions": [{"groupVersion": format!("{name}/v1"), "version": "v1"}],
                                    "preferredVersion": {"groupVersion": format!("{name}/v1"), "version": "v1"}})
    };
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
        ["apis"] => json!({"kind": "APIGroupList", "apiVersion": "v1",
                           "groups": [group("networking.k8s.io"), group("events.k8s.io")]}),
        ["api", "v1"] => json!({
            "kind": "APIResourceList", "groupVersion": "v1",
            "resources": [resource(Kind::Pod, &read), resource(Kind::Service, &read), resource(Kind::Secret, &read),
                          {"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
                           "verbs": ["create", "list", "patch"]}],
        }),
        ["apis", "networking.k8s.io", "v1"] => json!({
            "kind": "APIResourceList", "groupVersion": "networking.k8s.io/v1",
            "resources": [resource(Kind::Ingress, &read),
                          {"name": "ingresses/status", "singularName": "", "namespaced": true, "kind": "Ingress",
                           "verbs": ["get", "patch", "update"]}],
        }),
        ["apis", "events.k8s.io", "v1"] => json!({
            "kind": "APIResourceList", "groupVersion": "events.k8s.io/v1",
            "resources": [{"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
                           "verbs": ["create", "list", "patch"]}],
        }),
        _ => return None,
    })
}

/// Always the current state in one page: every resourceVersion/limit
/// combination kube-rs uses accepts that answer.
fn list(shared: &Shared, filter: &Filter) -> Response {
    let store = lock(&shared.store);
    let items: Vec<Value> = store.objects.values().filter(|s| filter.matches(s)).map(|s| s.render(s.rv)).collect();
    let kind = filter.kind;
    let body = json!({"kind": format!("{}List", kind.name()), "apiVersion": kind.api_version(),
                      "metadata": {"resourceVersion": store.rv.to_string()}, "items": items});
    json_response(StatusCode::OK, &body)
}

fn list_events(shared: &Shared, namespace: &str) -> Response {
    let store = lock(&shared.store);
    let items: Vec<&Value> =
        store.events.iter().filter(|e| e["metadata"]["namespace"].as_str() == Some(namespace)).collect();
    let body = json!({"kind": "EventList", "apiVersion": "v1",
                      "metadata": {"resourceVersion": store.rv.to_string()}, "items": items});
    json_response(StatusCode::OK, &body)
}

pub(super) fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

pub(super) fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

pub(super) fn error_response(code: StatusCode, reason: &str, message: &str) -> Response {
    json_response(code, &status_json(code.as_u16(), reason, message))
}

pub(super) fn not_found(kind: Kind, name: &str) -> Response {
    error_response(StatusCode::NOT_FOUND, "NotFound", &format!("{} \"{name}\" not found", kind.plural()))
}
