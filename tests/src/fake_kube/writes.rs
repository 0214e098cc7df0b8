//! The writes an ingress controller makes: Ingress status (PUT or PATCH on
//! the `status` subresource: a new resourceVersion and a MODIFIED event, as
//! on a real server) and Events (POST, and PATCH for a repeated event, as
//! kube-runtime's `Recorder` does).

use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::api::{error_response, json_response};
use super::store::{lock, merge_patch, Kind, Shared};
use super::COUNTER;

/// How the status is written.
pub(super) enum StatusWrite<'a> {
    /// PUT: the body is the whole object; its `status` replaces the stored one.
    Replace,
    /// PATCH with this content type.
    Patch(&'a str),
}

/// A refused write: status code, `Status.reason`, message.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn into_response(self) -> Response {
        error_response(self.0, self.1, &self.2)
    }
}

/// Runs a write: its answer, or the `Status` of its refusal.
fn answer(result: Result<(StatusCode, Value), Refusal>) -> Response {
    match result {
        Ok((code, body)) => json_response(code, &body),
        Err(refusal) => refusal.into_response(),
    }
}

fn parse_body(body: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(body)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, "BadRequest", format!("body is not JSON: {e}")))
}

/// Merge, strategic-merge and apply patches are applied as JSON merge
/// patches (kube-rs sends apply patches as JSON); JSON patches are not
/// understood.
fn check_patch_type(content_type: &str) -> Result<(), Refusal> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            Ok(())
        }
        other => Err(Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the fake applies merge, strategic-merge and apply patches, not {other:?}"),
        )),
    }
}

pub(super) fn write_status(
    shared: &Shared,
    kind: Kind,
    namespace: &str,
    name: &str,
    how: StatusWrite<'_>,
    body: &[u8],
) -> Response {
    answer(status(shared, kind, namespace, name, how, body))
}

fn status(
    shared: &Shared,
    kind: Kind,
    namespace: &str,
    name: &str,
    how: StatusWrite<'_>,
    body: &[u8],
) -> Result<(StatusCode, Value), Refusal> {
    if let StatusWrite::Patch(content_type) = how {
        check_patch_type(content_type)?;
    }
    let body = parse_body(body)?;
    let mut store = lock(&shared.store);
    let Some(old) = store.objects.get(&(kind, namespace.to_string(), name.to_string())).cloned() else {
        return Err(Refusal(StatusCode::NOT_FOUND, "NotFound", format!("{} \"{name}\" not found", kind.plural())));
    };
    let mut object = old.object.clone();
    match how {
        StatusWrite::Replace => {
            // Optimistic concurrency, as the real server checks it.
            let sent_rv = body["metadata"]["resourceVersion"].as_str();
            if sent_rv.is_some_and(|rv| rv != old.rv.to_string()) {
                let msg = format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply \
                     your changes to the latest version and try again",
                    kind.plural()
                );
                return Err(Refusal(StatusCode::CONFLICT, "Conflict", msg));
            }
            object["status"] = body.get("status").cloned().unwrap_or_else(|| json!({}));
        }
        // The status subresource ignores everything but `status`.
        StatusWrite::Patch(_) => {
            if let Some(status) = body.get("status") {
                merge_patch(&mut object["status"], status);
            }
        }
    }
    let new = shared.replace(&mut store, old, object);
    Ok((StatusCode::OK, new.render(new.rv)))
}

pub(super) fn create_event(shared: &Shared, namespace: &str, body: &[u8]) -> Response {
    answer(create(shared, namespace, body))
}

fn create(shared: &Shared, namespace: &str, body: &[u8]) -> Result<(StatusCode, Value), Refusal> {
    let mut event = parse_body(body)?;
    let mut store = lock(&shared.store);
    if event["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        let base = event["metadata"]["generateName"].as_str().unwrap_or("event.").to_string();
        event["metadata"]["name"] = json!(format!("{base}{:x}", COUNTER.fetch_add(1, Ordering::Relaxed)));
    }
    let name = event["metadata"]["name"].as_str().unwrap_or("").to_string();
    if store.events.iter().any(|e| e["metadata"]["namespace"] == namespace && e["metadata"]["name"] == name.as_str()) {
        return Err(Refusal(StatusCode::CONFLICT, "AlreadyExists", format!("events \"{name}\" already exists")));
    }
    event["metadata"]["namespace"] = json!(namespace);
    store.rv += 1;
    event["metadata"]["resourceVersion"] = json!(store.rv.to_string());
    store.events.push(event.clone());
    Ok((StatusCode::CREATED, event))
}

pub(super) fn patch_event(shared: &Shared, namespace: &str, name: &str, content_type: &str, body: &[u8]) -> Response {
    answer(patch(shared, namespace, name, content_type, body))
}

fn patch(
    shared: &Shared,
    namespace: &str,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), Refusal> {
    check_patch_type(content_type)?;
    let patch = parse_body(body)?;
    let mut store = lock(&shared.store);
    store.rv += 1;
    let rv = store.rv;
    let Some(event) =
        store.events.iter_mut().find(|e| e["metadata"]["namespace"] == namespace && e["metadata"]["name"] == name)
    else {
        return Err(Refusal(StatusCode::NOT_FOUND, "NotFound", format!("events \"{name}\" not found")));
    };
    merge_patch(event, &patch);
    event["metadata"]["resourceVersion"] = json!(rv.to_string());
    Ok((StatusCode::OK, event.clone()))
}
