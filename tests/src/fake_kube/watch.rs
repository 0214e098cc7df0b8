//! Watch streams: the initial state or the history replay, then live
//! changes, bookmarks and the in-stream 410 Expired, for any [`Kind`].

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::broadcast;

use super::api::{error_response, status_json};
use super::store::{event_line, lock, Filter, Kind, Msg, Shared};

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
                Msg::Bookmark(rv) if self.bookmarks => return Some(Ok(bookmark_line(self.filter.kind, rv, false))),
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

pub(super) fn watch(shared: &Arc<Shared>, filter: Filter, q: &HashMap<String, String>) -> Response {
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
        for s in store.objects.values().filter(|s| filter.matches(s)) {
            pending.push_back(event_line("ADDED", s.render(s.rv)));
        }
        if initial_events {
            pending.push_back(bookmark_line(filter.kind, store.rv, true));
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

fn bookmark_line(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line("BOOKMARK", json!({"kind": kind.name(), "apiVersion": kind.api_version(), "metadata": metadata}))
}
