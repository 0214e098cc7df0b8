//! One request's walk, in order: admit (framing, path, auth) → route (the
//! pure `route()`) → upstream (the bound connection, the pool, or a new
//! one) → forward the head and pump the bodies → response filters (request
//! ids, cookie) → log and metrics. Every step reads the request's one
//! snapshot; retries go back to the upstream step only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::ErrorType;
use pinroute_config::RouteConfig;
use pinroute_discovery::BackendEntry;

use super::body::{pump_response_body, read_small, send_request_body, PumpError, RequestBody};
use super::downstream::Downstream;
use super::filters::{client_head, elsewhere, learn_request_ids};
use super::log::{record, Outcome};
use super::memo::ConnectionMemo;
use super::reply::{self, UNAVAILABLE};
use super::request::RequestCtx;
use super::request_head::{is_upgrade, write_upstream_head, HeadFacts};
use super::retry::{after_failure, AfterFailure, AttemptError, AttemptFacts, Elsewhere};
use super::tunnel;
use super::upstream::{connect, BoundSlot};
use super::upstream_http::{Connection, Framing, Response};
use crate::admit::admit;
use crate::route::{next_owner_candidate, owner_of, Decision, Forward, PinOutcome};
use crate::state::Shared;

/// Largest `/api/cancel` body read for its ids (it only lists ids).
const CANCEL_BODY_MAX: usize = 16 * 1024;

/// Serves one request on `down`; `true` when the client connection may
/// carry another one.
pub async fn serve(
    shared: &Arc<Shared>,
    down: &mut Downstream<'_>,
    slot: &mut BoundSlot,
    memo: &mut ConnectionMemo,
) -> bool {
    let start = Instant::now();
    let snapshot = shared.snapshot();
    let client = down.client_ip();
    let mut ctx = RequestCtx::new(snapshot, client, start);
    let outcome = walk(shared, down, slot, memo, &mut ctx).await;
    record(shared, &ctx, down, &outcome, memo);
    ctx.guard = None;
    outcome.reusable()
}

async fn walk(
    shared: &Arc<Shared>,
    down: &mut Downstream<'_>,
    slot: &mut BoundSlot,
    memo: &mut ConnectionMemo,
    ctx: &mut RequestCtx,
) -> Outcome {
    if let Some(problem) = framing_problem(down) {
        return local(down, 400, problem, &[], false).await;
    }
    let tls = down.is_tls();
    let admission = match admit(down.req_header(), tls, &ctx.snapshot, ctx.client).await {
        Ok(admission) => admission,
        Err(reply) => return local(down, reply.status, &reply.detail, &reply.headers, true).await,
    };
    let route_index = admission.route;
    ctx.route = Some(route_index);
    ctx.rel_path = admission.rel_path;
    ctx.upstream_uri = admission.upstream_uri;
    ctx.cookie = admission.cookie;
    ctx.request_id = admission.request_id;
    ctx.auth_headers = admission.auth_headers;
    ctx.strip_headers = admission.strip_headers;
    let route = &ctx.snapshot.config.routes[route_index];
    let (max_body, body_timeout) = (route.max_body, route.timeouts.write);

    // The proxy answers `Expect: 100-continue` itself, as nginx does: the
    // body is read (and, when small, held) before a backend is chosen.
    let expects = down
        .req_header()
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let answered_continue = expects && !down.is_body_empty();
    if answered_continue && down.write_continue().await.is_err() {
        return Outcome::closed(0, "client went away");
    }
    let declared = declared_length(down);
    let body = match read_small(down, declared, max_body, body_timeout).await {
        Ok(body) => body,
        Err(PumpError::TooLarge) => return too_large(down, max_body).await,
        Err(e) => return pump_failed(down, e).await,
    };
    if ctx.request_id.is_none() && ctx.rel_path == "/api/cancel" {
        if let RequestBody::Held(bytes) = &body {
            ctx.request_id = (bytes.len() <= CANCEL_BODY_MAX).then(|| cancel_request_id(bytes)).flatten();
        }
    }

    if !choose_first(shared, ctx, route_index).await {
        let retry_after = [("retry-after".to_string(), "5".to_string())];
        return local(down, 503, UNAVAILABLE, &retry_after, true).await;
    }
    let options = HeadOptions { tls, answered_continue, max_body, declared };
    proxy(shared, down, slot, memo, ctx, &body, options).await
}

/// Picks the first backend: the owner of a known request id, else the
/// routing decision, else a held wait for a Ready one.
async fn choose_first(shared: &Shared, ctx: &mut RequestCtx, route_index: usize) -> bool {
    let now = Instant::now();
    if let Some(owner) = ctx.request_id.as_deref().and_then(|id| shared.request_ids.lookup(id, now)) {
        ctx.id_known = true;
        if let Some(backend) = owner_of(&ctx.snapshot, route_index, &owner, now) {
            shared.metrics.request_id_routed.inc();
            ctx.commit(Forward { route: route_index, backend, pin: PinOutcome::RequestId });
            return true;
        }
    }
    let snapshot = ctx.snapshot.clone();
    match ctx.decide(&snapshot, route_index) {
        Decision::Forward(forward) => ctx.commit(forward),
        Decision::Unavailable => match ctx.hold(shared, route_index).await {
            Some(forward) => ctx.commit(forward),
            None => return false,
        },
    }
    true
}

/// What the upstream head needs from the admission.
#[derive(Debug, Clone, Copy)]
struct HeadOptions {
    tls: bool,
    answered_continue: bool,
    max_body: u64,
    /// The client's `Content-Length`.
    declared: Option<u64>,
}

/// What one step of an attempt came to.
enum Step<T> {
    /// Go on with this.
    Go(T),
    /// Send the request again: to the backend `ctx` now names, or (with
    /// `Plan::resent` set) to the same one on a fresh connection.
    Again,
    /// The request is answered, or the client left.
    Done(Outcome),
}

/// What every attempt of one request shares.
struct Plan<'b> {
    body: &'b RequestBody,
    options: HeadOptions,
    method: http::Method,
    upgrade: bool,
    /// A body without a declared length goes chunked.
    chunked: bool,
    /// Sent once already on a fresh connection after a kept one was dead.
    resent: bool,
}

impl<'b> Plan<'b> {
    fn new(down: &Downstream<'_>, body: &'b RequestBody, options: HeadOptions) -> Plan<'b> {
        Plan {
            body,
            options,
            method: down.req_header().method.clone(),
            upgrade: is_upgrade(down.req_header()),
            chunked: body.present() && options.declared.is_none(),
            resent: false,
        }
    }

    /// A request that cannot be sent twice only goes on a kept connection
    /// that still looks open; the others go at once, and are resent on a
    /// fresh connection if the kept one turns out dead.
    fn check_kept(&self) -> bool {
        !(self.method.is_idempotent() && self.body.is_held())
    }

    fn facts(&self, ctx: &RequestCtx, reused: bool, connect_tries: usize) -> AttemptFacts {
        AttemptFacts {
            idempotent: self.method.is_idempotent(),
            body_held: self.body.is_held(),
            reused,
            connect_failures: ctx.connect_failures,
            connect_tries,
            resent: self.resent,
        }
    }
}

/// The backend one attempt goes to, read from the request's snapshot.
struct Target<'s> {
    forward: Forward,
    entry: &'s BackendEntry,
    config: &'s RouteConfig,
}

impl Target<'_> {
    /// Streams and tunnels wait as long as they like between reads.
    fn read_timeout(&self, plan: &Plan<'_>) -> Option<Duration> {
        (!plan.upgrade).then_some(self.config.timeouts.read)
    }
}

/// The upstream step and everything after it; retries loop back here.
async fn proxy(
    shared: &Arc<Shared>,
    down: &mut Downstream<'_>,
    slot: &mut BoundSlot,
    memo: &mut ConnectionMemo,
    ctx: &mut RequestCtx,
    body: &RequestBody,
    options: HeadOptions,
) -> Outcome {
    let mut plan = Plan::new(down, body, options);
    loop {
        // The attempt reads the request's snapshot (one reference count, no copy of the entry).
        let snapshot = ctx.snapshot.clone();
        let Some(target) = ctx.current.and_then(|forward| {
            let entry = snapshot.table.routes.get(forward.route)?.backends.get(forward.backend)?;
            Some(Target { forward, entry, config: &snapshot.config.routes[forward.route] })
        }) else {
            return local(down, 503, UNAVAILABLE, &[], true).await;
        };
        if let (PinOutcome::Pinned, Some(ip)) = (target.forward.pin, ctx.client) {
            memo.note_pinned(target.entry, ip, Instant::now());
        }
        let (mut up, reused) = match open(shared, down, slot, ctx, &plan, &target).await {
            Step::Go(opened) => opened,
            Step::Again => continue,
            Step::Done(outcome) => return outcome,
        };
        let mut response = match send(down, memo, ctx, &mut plan, &target, &mut up, reused).await {
            Step::Go(response) => response,
            Step::Again => continue,
            Step::Done(outcome) => return outcome,
        };
        let now = Instant::now();
        target.entry.runtime.record_success();
        learn_request_ids(shared, ctx, &response.head, now);
        if let Some((why, fallback)) = redirect(ctx, &plan, &target, response.head.status.as_u16(), now) {
            shared.metrics.replays.with_label_values(&[why.as_str()]).inc();
            ctx.leave_current();
            plan.resent = false;
            if choose_next(ctx, fallback) {
                continue;
            }
            return local(down, 503, UNAVAILABLE, &[], true).await;
        }
        client_head(shared, ctx, &mut response.head, &response.framing);
        return deliver(down, slot, up, response, &plan, &target).await;
    }
}

/// A connection to the target: the kept one, or a new one. A failed
/// connect ejects the backend and moves on to the next one, if any.
async fn open(
    shared: &Shared,
    down: &mut Downstream<'_>,
    slot: &mut BoundSlot,
    ctx: &mut RequestCtx,
    plan: &Plan<'_>,
    target: &Target<'_>,
) -> Step<(Connection, bool)> {
    let addr = target.entry.discovered.addr;
    let now = Instant::now();
    if !plan.resent {
        if let Some(kept) = slot.checkout(addr, plan.check_kept(), now).await {
            return Step::Go((Connection::new(kept.stream), true));
        }
    }
    let error = match connect(addr, target.config.timeouts.connect).await {
        Ok(stream) => return Step::Go((Connection::new(stream), false)),
        Err(AttemptError::LocalLimit) => {
            // Not the backend's fault: it stays as it is (see `local_limits`).
            let retry_after = [("retry-after".to_string(), "1".to_string())];
            return Step::Done(local(down, 503, UNAVAILABLE, &retry_after, false).await);
        }
        Err(error) => error,
    };
    target.entry.runtime.record_connect_failure(now);
    tracing::warn!(backend = %target.entry.discovered.id, ?error, "connect failed; backend ejected");
    ctx.connect_failures += 1;
    ctx.leave_current();
    let status = match after_failure(error, plan.facts(ctx, false, target.config.connect_tries)) {
        AfterFailure::NextBackend if choose_next(ctx, None) => {
            shared.metrics.retries.inc();
            return Step::Again;
        }
        AfterFailure::Fail(status) => status,
        // No backend left to try.
        AfterFailure::NextBackend | AfterFailure::FreshConnection => 503,
    };
    // Nothing reached any backend: the JSON 503 the client retries.
    let detail = if status == 503 { UNAVAILABLE } else { "Bad gateway: no API server could be reached." };
    Step::Done(local(down, status, detail, &[], status == 503).await)
}

/// Writes the request head and body and reads the response head. A kept
/// connection found dead before it answered may send the request again.
async fn send(
    down: &mut Downstream<'_>,
    memo: &mut ConnectionMemo,
    ctx: &RequestCtx,
    plan: &mut Plan<'_>,
    target: &Target<'_>,
    up: &mut Connection,
    reused: bool,
) -> Step<Response> {
    let timeouts = target.config.timeouts;
    let mut wire = BytesMut::with_capacity(512);
    let facts = HeadFacts {
        client: ctx.client.map(|ip| memo.client_text(ip)),
        proto: if plan.options.tls { "https" } else { "http" },
        strip: &ctx.strip_headers,
        add: &ctx.auth_headers,
        target: ctx.upstream_uri.as_deref(),
        chunked: plan.chunked,
        answered_continue: plan.options.answered_continue,
    };
    if write_upstream_head(down.req_header(), &facts, &mut wire).is_err() {
        return Step::Done(local(down, 400, "Bad request: invalid request-target.", &[], false).await);
    }
    let head_request = plan.method == http::Method::HEAD;
    let exchange = async {
        up.write(&wire, timeouts.write).await.map_err(PumpError::Upstream)?;
        // Not kept for the rest of the exchange (a stream may last hours).
        drop(wire);
        send_request_body(down, up, plan.body, plan.chunked, plan.options.max_body, timeouts.write).await?;
        up.read_head(head_request, plan.upgrade, target.read_timeout(plan)).await.map_err(PumpError::Upstream)
    };
    let e = match exchange.await {
        Ok(response) => return Step::Go(response),
        Err(PumpError::TooLarge) => return Step::Done(too_large(down, plan.options.max_body).await),
        Err(PumpError::Downstream(e)) => return Step::Done(pump_failed(down, PumpError::Downstream(e)).await),
        Err(PumpError::Upstream(e)) => e,
    };
    // Only a kept connection that died before answering was most likely stale.
    let facts = plan.facts(ctx, reused && !e.answered, target.config.connect_tries);
    match after_failure(AttemptError::Exchange { timed_out: e.timed_out }, facts) {
        AfterFailure::FreshConnection => {
            tracing::debug!(backend = %target.entry.discovered.id, error = %e, "kept connection was closed; resending on a new one");
            plan.resent = true;
            Step::Again
        }
        AfterFailure::Fail(504) => Step::Done(local_failed(down, 504, "Upstream timed out.", e.to_string()).await),
        _ => {
            let detail = "Bad gateway: the API server failed (the connection broke).";
            Step::Done(local_failed(down, 502, detail, e.to_string()).await)
        }
    }
}

/// Whether another backend should answer instead, and which one.
fn redirect(
    ctx: &mut RequestCtx,
    plan: &Plan<'_>,
    target: &Target<'_>,
    status: u16,
    now: Instant,
) -> Option<(Elsewhere, Option<usize>)> {
    match elsewhere(ctx, status, plan.method == http::Method::GET, plan.body.is_held(), now)? {
        Elsewhere::UnknownRequestId => {
            let mut tried = ctx.tried.clone();
            tried.push(target.forward.backend);
            // No backend left to ask: the 404 is the answer.
            next_owner_candidate(&ctx.snapshot, target.forward.route, &tried, now)
                .map(|next| (Elsewhere::UnknownRequestId, Some(next)))
        }
        Elsewhere::DrainingRefusal => {
            tracing::info!(backend = %target.entry.discovered.id, path = %ctx.rel_path, "draining backend refused the request; replaying on a ready one");
            ctx.replayed = true;
            Some((Elsewhere::DrainingRefusal, None))
        }
    }
}

/// Hands the response to the client: the head, then the body as it comes,
/// or a two-way copy after an upgrade. A clean end keeps the upstream
/// connection bound to the client connection.
async fn deliver(
    down: &mut Downstream<'_>,
    slot: &mut BoundSlot,
    mut up: Connection,
    response: Response,
    plan: &Plan<'_>,
    target: &Target<'_>,
) -> Outcome {
    let status = response.head.status.as_u16();
    let Response { head, mut framing, keep_alive } = response;
    // The head waits for the body only when all of it is here already
    // (one write); otherwise the client gets it at once.
    let whole = up.holds_whole_body(&framing);
    if down.write_head(head).await.is_err() || (!whole && down.flush().await.is_err()) {
        return Outcome::closed(status, "client went away");
    }
    if matches!(framing, Framing::Upgraded) {
        if let Downstream::H1(client) = down {
            let end = tunnel::run(client, &mut up, target.config.timeouts.write).await;
            tracing::debug!(?end, "upgraded connection ended");
        }
        return Outcome::closed(status, "");
    }
    match pump_response_body(down, &mut up, &mut framing, target.read_timeout(plan)).await {
        Ok(()) => {
            if let Some(stream) = up.into_reusable(&framing, keep_alive) {
                slot.bind(stream, target.entry.discovered.addr, Instant::now());
            }
            Outcome::proxied(status)
        }
        Err(PumpError::Upstream(e)) => Outcome::closed(status, &e.to_string()),
        Err(PumpError::Downstream(e)) => Outcome::closed(status, &e.to_string()),
        Err(PumpError::TooLarge) => Outcome::closed(status, "too large"),
    }
}

/// Another backend for a retry: `fallback` (the next candidate owner of an
/// unknown request id), else a fresh decision on the request's snapshot.
fn choose_next(ctx: &mut RequestCtx, fallback: Option<usize>) -> bool {
    let Some(route) = ctx.route else { return false };
    let decision = match fallback {
        Some(backend) => Decision::Forward(Forward { route, backend, pin: PinOutcome::RequestId }),
        None => {
            let snapshot = ctx.snapshot.clone();
            ctx.decide(&snapshot, route)
        }
    };
    match decision {
        Decision::Forward(forward) => {
            ctx.commit(forward);
            true
        }
        Decision::Unavailable => false,
    }
}

/// The client's `Content-Length` (the HTTP/1 codec refused a bad one
/// already; HTTP/2's checks it against the body).
fn declared_length(down: &Downstream<'_>) -> Option<u64> {
    super::client_http1::declared_length(down.req_header()).ok().flatten()
}

/// The first id in a cancel body, `{"request_ids": ["..."]}`.
fn cancel_request_id(body: &Bytes) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("request_ids")?.as_array()?.first()?.as_str()?;
    (id.len() >= crate::affinity::MIN_PREFIX).then(|| id.to_string())
}

/// Requests whose body framing two parsers could read differently (the
/// classic smuggling vector) are refused outright, where RFC 9112 would let
/// Transfer-Encoding win: a backend or a proxy in front may not agree.
fn framing_problem(down: &Downstream<'_>) -> Option<&'static str> {
    let header = down.req_header();
    (header.headers.contains_key(header::TRANSFER_ENCODING) && header.headers.contains_key(header::CONTENT_LENGTH))
        .then_some("Bad request: both Content-Length and Transfer-Encoding.")
}

async fn local(
    down: &mut Downstream<'_>,
    status: u16,
    detail: &str,
    headers: &[(String, String)],
    keep: bool,
) -> Outcome {
    match reply::json(down, status, detail, headers, keep).await {
        Ok(()) if keep => Outcome::local(status),
        Ok(()) => Outcome::closed(status, ""),
        Err(e) => Outcome::closed(0, &e.to_string()),
    }
}

async fn local_failed(down: &mut Downstream<'_>, status: u16, detail: &str, error: String) -> Outcome {
    let outcome = local(down, status, detail, &[], false).await;
    outcome.with_error(error)
}

async fn too_large(down: &mut Downstream<'_>, max_body: u64) -> Outcome {
    let detail = format!("Request body larger than the limit of {max_body} bytes.");
    local(down, 413, &detail, &[], false).await
}

/// The client's side failed while its body was read: a broken body gets a
/// 400 if nothing was answered yet; a client that left gets nothing.
async fn pump_failed(down: &mut Downstream<'_>, error: PumpError) -> Outcome {
    let PumpError::Downstream(e) = error else { return Outcome::closed(0, "") };
    match e.etype() {
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed | ErrorType::H2Error => {
            Outcome::closed(0, &e.to_string())
        }
        ErrorType::ReadTimedout => local_failed(down, 408, "Request timed out.", e.to_string()).await,
        _ => local_failed(down, 400, "Bad request.", e.to_string()).await,
    }
}
