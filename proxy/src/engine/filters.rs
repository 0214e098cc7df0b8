//! What the engine does with a backend's response head before the client
//! sees it: learn request ids, ask whether another backend should answer
//! instead, mark long-lived responses as streams, and set the cookie.

use std::time::Instant;

use http::header;
use pingora::http::ResponseHeader;
use pinroute_discovery::BackendState;

use super::request::RequestCtx;
use super::retry::{answer_elsewhere, AnswerFacts, Elsewhere};
use crate::route::{has_ready_besides, PinOutcome};
use crate::state::Shared;

/// Learns the ids this response names, and an unknown id the backend
/// answered for (it owns it).
pub fn learn_request_ids(shared: &Shared, ctx: &RequestCtx, response: &ResponseHeader, now: Instant) {
    let Some(entry) = ctx.entry() else { return };
    let identity = &entry.discovered.identity;
    for name in ["x-skypilot-request-id", "x-skypilot-stream-request-id"] {
        if let Some(id) = response.headers.get(name).and_then(|v| v.to_str().ok()) {
            shared.request_ids.learn(id, identity, now);
        }
    }
    if let (Some(id), false) = (&ctx.request_id, ctx.id_known || response.status == http::StatusCode::NOT_FOUND) {
        shared.request_ids.learn(id, identity, now);
    }
}

/// Whether this answer goes to another backend instead (see [`super::retry`]).
pub fn elsewhere(ctx: &RequestCtx, status: u16, get: bool, body_held: bool, now: Instant) -> Option<Elsewhere> {
    let forward = ctx.current?;
    let config = ctx.snapshot.config.routes.get(forward.route)?;
    let entry = ctx.entry()?;
    let tried = ctx.tried.len() + 1;
    let facts = AnswerFacts {
        status,
        get,
        id_path: matches!(ctx.rel_path.as_str(), "/api/get" | "/api/stream"),
        has_request_id: ctx.request_id.is_some(),
        id_known: ctx.id_known,
        tried,
        api_path: ctx.rel_path.starts_with("/api/"),
        replay_enabled: config.replay_on_draining_503,
        replayed: ctx.replayed,
        backend_draining: entry.state(now) == BackendState::Draining,
        ready_elsewhere: status == 503 && ready_besides(ctx, forward.route, forward.backend, now),
        body_held,
    };
    answer_elsewhere(facts)
}

/// Whether a Ready backend other than those tried (and `current`) exists.
fn ready_besides(ctx: &RequestCtx, route: usize, current: usize, now: Instant) -> bool {
    let mut tried = ctx.tried.clone();
    tried.push(current);
    has_ready_besides(&ctx.snapshot, route, &tried, now)
}

/// Readies the backend's head for the client: hop-by-hop headers dropped,
/// a body without framing made chunked (so the client connection survives
/// an HTTP/1.0-style backend), streams counted, the cookie set.
pub fn client_head(shared: &Shared, ctx: &mut RequestCtx, response: &mut ResponseHeader, head_request: bool) {
    response.remove_header("keep-alive");
    response.remove_header(&header::CONNECTION);
    let upgraded = response.status == http::StatusCode::SWITCHING_PROTOCOLS;
    let no_body = head_request || matches!(response.status.as_u16(), 204 | 304) || upgraded;
    let length = response.headers.contains_key(header::CONTENT_LENGTH);
    let chunked = response
        .headers
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if upgraded {
        response.insert_header(header::CONNECTION, "upgrade").ok();
    } else if !no_body && !length && !chunked {
        response.set_version(http::Version::HTTP_11);
        response.insert_header(header::TRANSFER_ENCODING, "chunked").ok();
    }
    if upgraded || (!length && !no_body) {
        if let Some(guard) = ctx.guard.as_mut() {
            guard.mark_stream();
        }
    }
    if let Some((cookie, outcome)) = ctx.set_cookie.take() {
        if response.append_header(header::SET_COOKIE, cookie).is_ok() {
            let reason = if outcome == PinOutcome::New { "new" } else { "repin" };
            shared.metrics.cookies_issued.with_label_values(&[reason]).inc();
        }
    }
}
