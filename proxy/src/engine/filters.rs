//! What the engine does with a backend's response head before the client
//! sees it: learn request ids, ask whether another backend should answer
//! instead, mark long-lived responses as streams, and set the cookie.

use std::time::Instant;

use http::header;
use pingora::http::ResponseHeader;
use pinroute_discovery::BackendState;

use super::request::RequestCtx;
use super::retry::{answer_elsewhere, AnswerFacts, Elsewhere};
use super::upstream_http::Framing;
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
/// a body the backend ends by closing made chunked (so the client
/// connection survives an HTTP/1.0-style backend), streams counted, the
/// cookie set. `framing` is how the backend delimits the body.
pub fn client_head(shared: &Shared, ctx: &mut RequestCtx, response: &mut ResponseHeader, framing: &Framing) {
    response.remove_header("keep-alive");
    response.remove_header(&header::CONNECTION);
    match framing {
        Framing::Upgraded => {
            response.insert_header(header::CONNECTION, "upgrade").ok();
        }
        Framing::UntilClose => {
            response.set_version(http::Version::HTTP_11);
            response.insert_header(header::TRANSFER_ENCODING, "chunked").ok();
        }
        Framing::Empty | Framing::Length(_) | Framing::Chunked(_) => {}
    }
    // Long-lived: a body without a length (log streams) or an upgrade.
    if matches!(framing, Framing::Upgraded | Framing::UntilClose | Framing::Chunked(_)) {
        if let Some(guard) = ctx.guard.as_mut() {
            guard.mark_stream();
        }
    }
    if let Some((cookie, outcome)) = ctx.set_cookie.take() {
        if response.append_header(header::SET_COOKIE, cookie).is_ok() {
            let issued =
                if outcome == PinOutcome::New { &shared.metrics.cookies_new } else { &shared.metrics.cookies_repin };
            issued.inc();
        }
    }
}
