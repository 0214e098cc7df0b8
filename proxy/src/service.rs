//! The pingora proxy service: each hook is a thin adapter that reads the
//! request, calls the pure core ([`crate::route`]) and records the outcome.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use pinroute_discovery::{BackendState, InFlightGuard};

use crate::admit::{admit, is_tls, LocalReply};
use crate::cookie::{set_cookie_header, CookieCheck};
use crate::forwarded::apply_forwarding;
use crate::reply;
use crate::route::{
    has_ready_besides, next_owner_candidate, owner_of, route, ClientPin, Decision, Forward, PinOutcome, RequestFacts,
};
use crate::snapshot::Snapshot;
use crate::state::Shared;

/// Largest `/api/cancel` body read before routing (it only lists ids).
const CANCEL_BODY_MAX: usize = 16 * 1024;

/// The first id in a cancel body, `{"request_ids": ["..."]}`.
fn cancel_request_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = value.get("request_ids")?.as_array()?.first()?.as_str()?;
    (id.len() >= crate::affinity::MIN_PREFIX).then(|| id.to_string())
}

/// Most backends asked for an unknown request id.
const MAX_ID_PROBES: usize = 8;

/// How often a held request re-checks for a Ready backend, besides table publishes.
const HOLD_POLL: Duration = Duration::from_millis(100);

/// Per-request state carried across the hooks.
#[derive(Debug)]
pub struct RequestCtx {
    start: Instant,
    snapshot: Option<Arc<Snapshot>>,
    route: Option<usize>,
    cookie: Option<String>,
    tried: Vec<usize>,
    current: Option<Forward>,
    backend_id: Option<Arc<str>>,
    guard: Option<InFlightGuard>,
    set_cookie: Option<(String, PinOutcome)>,
    body_bytes: u64,
    client: Option<IpAddr>,
    local_status: Option<u16>,
    /// Path relative to the route prefix: what the SkyPilot server sees.
    rel_path: String,
    /// The request id of an `/api/get|stream|status|cancel` call.
    request_id: Option<String>,
    /// Whether the proxy knew which backend owns `request_id`.
    id_known: bool,
    /// Next backend to ask for an unknown request id after a 404.
    fallback: Option<usize>,
    /// Set by a response filter that asks for the request to go elsewhere.
    retry_reason: Option<&'static str>,
    /// A draining backend's 503 was replayed once already.
    replayed: bool,
    /// Upstream request-target when it differs from the client's.
    upstream_uri: Option<String>,
    /// Headers authentication adds upstream.
    auth_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Client headers removed before forwarding.
    strip_headers: Vec<http::HeaderName>,
}

/// The proxy.
#[derive(Debug)]
pub struct Pinroute {
    shared: Arc<Shared>,
}

impl Pinroute {
    /// A proxy over the shared state.
    pub fn new(shared: Arc<Shared>) -> Pinroute {
        Pinroute { shared }
    }

    fn decide(&self, ctx: &RequestCtx, snapshot: &Snapshot, route_index: usize) -> Decision {
        let pin = match ctx.cookie.as_deref() {
            None => ClientPin::None,
            Some(value) => match snapshot.key.check(value) {
                CookieCheck::Authentic => ClientPin::Authentic(value),
                CookieCheck::Forged => ClientPin::Forged,
            },
        };
        let facts = RequestFacts { route: route_index, pin, exclude: &ctx.tried, random: rand::random() };
        route(&facts, snapshot, Instant::now())
    }

    /// Waits up to the route's `hold_for` for a Ready backend (Recreate
    /// upgrades: the only pod is being replaced). Bounded by `hold_max`.
    async fn hold(&self, ctx: &RequestCtx, route_index: usize) -> Option<(Arc<Snapshot>, Forward)> {
        let config = ctx.snapshot.as_ref()?.config.routes.get(route_index)?.clone();
        if config.hold_for.is_zero() {
            return None;
        }
        let _permit = self.shared.try_hold(&config.prefix, config.hold_max)?;
        let deadline = tokio::time::Instant::now() + config.hold_for;
        loop {
            let changed = self.shared.table_changed.notified();
            let snapshot = self.shared.snapshot();
            if let Decision::Forward(f) = self.decide(ctx, &snapshot, route_index) {
                return Some((snapshot, f));
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            let wake = (tokio::time::Instant::now() + HOLD_POLL).min(deadline);
            let _ = tokio::time::timeout_at(wake, changed).await;
        }
    }

    fn commit(&self, ctx: &mut RequestCtx, snapshot: &Snapshot, forward: Forward) {
        let Some(entry) = snapshot.table.routes.get(forward.route).and_then(|r| r.backends.get(forward.backend)) else {
            return;
        };
        ctx.guard = Some(entry.runtime.begin());
        ctx.backend_id = Some(entry.discovered.id.clone());
        if forward.pin == PinOutcome::RequestId {
            ctx.set_cookie = None;
        } else if forward.pin == PinOutcome::Pinned {
            if let Some(ip) = ctx.client {
                entry.runtime.note_pinned_client(ip, Instant::now());
            }
            ctx.set_cookie = None;
        } else if let (Some(value), Some(route)) =
            (snapshot.views[forward.route].pins.get(forward.backend), snapshot.config.routes.get(forward.route))
        {
            ctx.set_cookie = Some((
                set_cookie_header(&snapshot.config.cookie, &route.cookie_name, &route.prefix, value),
                forward.pin,
            ));
        }
        ctx.current = Some(forward);
    }

    /// Whether this answer should not reach the client because another
    /// backend can do better: an unknown request id the backend does not have
    /// (404 to an idempotent `/api/get` or `/api/stream`: ask the next one),
    /// or a draining backend refusing new work unexecuted (skypilot's
    /// shutdown 503 on a non-`/api/` path: re-pin and replay once).
    fn retry_elsewhere(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        status: u16,
        now: Instant,
    ) -> Option<&'static str> {
        let (snapshot, forward) = (ctx.snapshot.clone()?, ctx.current?);
        let config = snapshot.config.routes.get(forward.route)?;
        let entry = snapshot.table.routes.get(forward.route)?.backends.get(forward.backend)?;
        let mut tried = ctx.tried.clone();
        tried.push(forward.backend);
        let is_get = session.req_header().method == http::Method::GET;
        let id_path = matches!(ctx.rel_path.as_str(), "/api/get" | "/api/stream");
        if status == 404
            && is_get
            && id_path
            && ctx.request_id.is_some()
            && !ctx.id_known
            && tried.len() < MAX_ID_PROBES
        {
            let next = next_owner_candidate(&snapshot, forward.route, &tried, now)?;
            ctx.tried = tried;
            ctx.fallback = Some(next);
            return Some("request_id_404");
        }
        let refused =
            status == 503 && config.replay_on_draining_503 && !ctx.replayed && !ctx.rel_path.starts_with("/api/");
        if refused
            && entry.state(now) == BackendState::Draining
            && !session.as_ref().retry_buffer_truncated()
            && has_ready_besides(&snapshot, forward.route, &tried, now)
        {
            tracing::info!(backend = %entry.discovered.id, path = %ctx.rel_path, "draining backend refused the request; replaying on a ready one");
            ctx.tried = tried;
            ctx.replayed = true;
            return Some("draining_503");
        }
        None
    }

    /// `POST /api/cancel` names its ids in a small JSON body
    /// (`{"request_ids": [...]}`). The body is read here, before a backend
    /// is chosen, into pingora's retry buffer — which is what pingora sends
    /// upstream when the body was already read — so routing can use the id.
    async fn cancel_body_request_id(&self, session: &mut Session) -> Result<Option<String>> {
        let header = session.req_header();
        let small = header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .is_some_and(|len| len > 0 && len <= CANCEL_BODY_MAX);
        if header.method != http::Method::POST || !small {
            return Ok(None);
        }
        session.as_mut().enable_retry_buffering();
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
        }
        Ok(cancel_request_id(&body))
    }

    async fn reply(&self, session: &mut Session, ctx: &mut RequestCtx, reply: LocalReply) -> Result<bool> {
        ctx.local_status = Some(reply.status);
        let headers: Vec<(&str, &str)> = reply.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        reply::json(session, reply.status, &reply.detail, &headers).await?;
        Ok(true)
    }

    fn route_label(ctx: &RequestCtx) -> &str {
        match (&ctx.snapshot, ctx.route) {
            (Some(s), Some(r)) => s.config.routes.get(r).map_or("", |c| c.prefix.as_str()),
            _ => "",
        }
    }
}

/// Requests whose body framing two parsers could read differently (the
/// classic smuggling vector) are refused outright. pingora itself follows
/// RFC 9112 (Transfer-Encoding wins, Content-Length is dropped, the
/// connection closes), so the raw header is consulted to see what the client
/// really sent.
fn framing_problem(session: &Session) -> Option<&'static str> {
    let header = session.req_header();
    header.headers.get(http::header::TRANSFER_ENCODING)?;
    if header.headers.contains_key(http::header::CONTENT_LENGTH) {
        return Some("Bad request: both Content-Length and Transfer-Encoding.");
    }
    if let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream() {
        let raw = h1.get_headers_raw_bytes();
        let has_length = raw
            .split(|b| *b == b'\n')
            .any(|line| line.len() >= 15 && line[..15].eq_ignore_ascii_case(b"content-length:"));
        if has_length {
            return Some("Bad request: both Content-Length and Transfer-Encoding.");
        }
    }
    None
}

#[async_trait]
impl ProxyHttp for Pinroute {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            snapshot: None,
            route: None,
            cookie: None,
            tried: Vec::new(),
            current: None,
            backend_id: None,
            guard: None,
            set_cookie: None,
            body_bytes: 0,
            client: None,
            local_status: None,
            rel_path: String::new(),
            request_id: None,
            id_known: false,
            fallback: None,
            retry_reason: None,
            replayed: false,
            upstream_uri: None,
            auth_headers: Vec::new(),
            strip_headers: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let snapshot = self.shared.snapshot();
        // pingora keeps an idle HTTP/1.1 connection forever; bound it (only
        // where keep-alive is on: `Connection: close` and HTTP/1.0 stay closed).
        if let (Some(_), Some(idle)) = (session.get_keepalive(), snapshot.config.server.keepalive_timeout) {
            session.set_keepalive(Some(idle.as_secs()));
        }
        ctx.client = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
        ctx.snapshot = Some(snapshot.clone());
        if let Some(problem) = framing_problem(session) {
            return self
                .reply(session, ctx, LocalReply { status: 400, detail: problem.to_string(), headers: Vec::new() })
                .await;
        }
        let admission = match admit(session, &snapshot, ctx.client).await {
            Ok(a) => a,
            Err(reply) => return self.reply(session, ctx, reply).await,
        };
        let route_index = admission.route;
        ctx.route = Some(route_index);
        ctx.rel_path = admission.rel_path;
        ctx.upstream_uri = admission.upstream_uri;
        ctx.cookie = admission.cookie;
        ctx.request_id = admission.request_id;
        if ctx.request_id.is_none() && ctx.rel_path == "/api/cancel" {
            ctx.request_id = self.cancel_body_request_id(session).await?;
        }
        ctx.auth_headers = admission.auth_headers;
        ctx.strip_headers = admission.strip_headers;
        if let Some(owner) = ctx.request_id.as_deref().and_then(|id| self.shared.request_ids.lookup(id, Instant::now()))
        {
            ctx.id_known = true;
            if let Some(backend) = owner_of(&snapshot, route_index, &owner, Instant::now()) {
                self.shared.metrics.request_id_routed.inc();
                self.commit(ctx, &snapshot, Forward { route: route_index, backend, pin: PinOutcome::RequestId });
                return Ok(false);
            }
        }
        match self.decide(ctx, &snapshot, route_index) {
            Decision::Forward(forward) => self.commit(ctx, &snapshot, forward),
            Decision::Unavailable => match self.hold(ctx, route_index).await {
                Some((fresh, forward)) => {
                    self.commit(ctx, &fresh, forward);
                    ctx.snapshot = Some(fresh);
                }
                None => {
                    let detail = "No API server is available right now; please retry shortly.".to_string();
                    let headers = vec![("retry-after".to_string(), "5".to_string())];
                    return self.reply(session, ctx, LocalReply { status: 503, detail, headers }).await;
                }
            },
        }
        Ok(false)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<Box<HttpPeer>> {
        let needs_new = ctx.current.is_none_or(|f| ctx.tried.contains(&f.backend));
        if needs_new {
            // Another attempt (connect failure, refused or unknown-id answer):
            // decided on the request's own snapshot, whose indices `tried` uses.
            let snapshot =
                ctx.snapshot.clone().ok_or_else(|| Error::explain(ErrorType::InternalError, "no snapshot"))?;
            let route_index = ctx.route.ok_or_else(|| Error::explain(ErrorType::InternalError, "no route decided"))?;
            let decision = match ctx.fallback.take() {
                Some(backend) => Decision::Forward(Forward { route: route_index, backend, pin: PinOutcome::RequestId }),
                None => self.decide(ctx, &snapshot, route_index),
            };
            match decision {
                Decision::Forward(forward) => self.commit(ctx, &snapshot, forward),
                Decision::Unavailable => {
                    return Err(Error::explain(ErrorType::HTTPStatus(503), "no backend left to try"));
                }
            }
        }
        let (Some(snapshot), Some(forward)) = (&ctx.snapshot, ctx.current) else {
            return Err(Error::explain(ErrorType::InternalError, "no backend decided"));
        };
        let entry = &snapshot.table.routes[forward.route].backends[forward.backend];
        let timeouts = snapshot.config.routes[forward.route].timeouts;
        let mut peer = HttpPeer::new(entry.discovered.addr, false, String::new());
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.write_timeout = Some(timeouts.write);
        peer.options.tcp_keepalive = Some(crate::server::tcp_keepalive());
        // Upgraded connections (SSH tunnels) may sit idle for hours.
        peer.options.read_timeout = if session.is_upgrade_req() { None } else { Some(timeouts.read) };
        Ok(Box::new(peer))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let Some(forward) = ctx.current else { return e };
        if let Some(entry) =
            ctx.snapshot.as_ref().and_then(|s| s.table.routes.get(forward.route)?.backends.get(forward.backend))
        {
            entry.runtime.record_connect_failure(Instant::now());
            tracing::warn!(backend = %entry.discovered.id, error = %e, "connect failed; backend ejected");
        }
        ctx.tried.push(forward.backend);
        ctx.guard = None;
        let tries =
            ctx.snapshot.as_ref().and_then(|s| s.config.routes.get(forward.route)).map_or(1, |r| r.connect_tries);
        // Nothing reached the backend: any method may go elsewhere.
        let retry = ctx.tried.len() < tries;
        e.set_retry(retry);
        if retry {
            self.shared.metrics.retries.inc();
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if let Some(reason) = ctx.retry_reason.take() {
            // Our own, narrower guard: the backend answered without executing
            // (refused while draining) or without knowing the id (a GET), and
            // the whole body is in the retry buffer.
            self.shared.metrics.replays.with_label_values(&[reason]).inc();
            e.set_retry(true);
        } else if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len() as u64;
            let limit = ctx
                .snapshot
                .as_ref()
                .zip(ctx.route)
                .and_then(|(s, r)| s.config.routes.get(r))
                .map_or(u64::MAX, |r| r.max_body);
            if ctx.body_bytes > limit {
                return Err(Error::explain(ErrorType::HTTPStatus(413), "request body over max_body"));
            }
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let proto = if is_tls(session) { "https" } else { "http" };
        apply_forwarding(upstream, ctx.client, proto)?;
        for name in &ctx.strip_headers {
            upstream.remove_header(name);
        }
        for (name, value) in &ctx.auth_headers {
            upstream.insert_header(name.clone(), value.clone())?;
        }
        if let Some(uri) = &ctx.upstream_uri {
            let uri: http::Uri =
                uri.parse().map_err(|e| Error::because(ErrorType::InternalError, "rewriting the path", e))?;
            upstream.set_uri(uri);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let now = Instant::now();
        if let Some(entry) = ctx
            .snapshot
            .as_ref()
            .zip(ctx.current)
            .and_then(|(s, f)| s.table.routes.get(f.route)?.backends.get(f.backend))
        {
            entry.runtime.record_success();
            let identity = &entry.discovered.identity;
            for name in ["x-skypilot-request-id", "x-skypilot-stream-request-id"] {
                if let Some(id) = response.headers.get(name).and_then(|v| v.to_str().ok()) {
                    self.shared.request_ids.learn(id, identity, now);
                }
            }
            if let (Some(id), false) = (&ctx.request_id, ctx.id_known || response.status == http::StatusCode::NOT_FOUND)
            {
                // An unknown id this backend answered for: it owns it.
                self.shared.request_ids.learn(id, identity, now);
            }
        }
        if let Some(reason) = self.retry_elsewhere(session, ctx, response.status.as_u16(), now) {
            ctx.retry_reason = Some(reason);
            return Err(Error::explain(ErrorType::HTTPStatus(response.status.as_u16()), reason));
        }
        let upgraded = response.status == http::StatusCode::SWITCHING_PROTOCOLS;
        let chunked = response.headers.get(http::header::CONTENT_LENGTH).is_none()
            && response
                .headers
                .get(http::header::TRANSFER_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        if upgraded || chunked {
            if let Some(guard) = ctx.guard.as_mut() {
                guard.mark_stream();
            }
        }
        if let Some((cookie, outcome)) = ctx.set_cookie.take() {
            response.append_header(http::header::SET_COOKIE, cookie)?;
            let reason = if outcome == PinOutcome::New { "new" } else { "repin" };
            self.shared.metrics.cookies_issued.with_label_values(&[reason]).inc();
        }
        Ok(())
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut RequestCtx) -> FailToProxy {
        let (code, detail) = match e.etype() {
            ErrorType::HTTPStatus(413) => (413, "Request body larger than the limit.".to_string()),
            ErrorType::HTTPStatus(503) => {
                (503, "No API server is available right now; please retry shortly.".to_string())
            }
            ErrorType::HTTPStatus(code) => (*code, format!("Request failed ({code}).")),
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                (504, format!("Upstream timed out: {}", e.etype().as_str()))
            }
            _ => match e.esource() {
                ErrorSource::Upstream => (502, format!("Bad gateway: the API server failed ({}).", e.etype().as_str())),
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => (0, String::new()),
                    _ => (400, "Bad request.".to_string()),
                },
                ErrorSource::Internal | ErrorSource::Unset => (500, "Internal proxy error.".to_string()),
            },
        };
        ctx.local_status = Some(code);
        if code > 0 && session.response_written().is_none() {
            let extra: &[(&str, &str)] = if code == 503 { &[("retry-after", "5")] } else { &[] };
            if let Err(write) = reply::json(session, code, &detail, extra).await {
                tracing::debug!(error = %write, "could not write error response");
            }
        }
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    async fn logging(&self, session: &mut Session, error: Option<&pingora::Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map(|r| r.status.as_u16()).or(ctx.local_status).unwrap_or(0);
        let route = Self::route_label(ctx);
        let backend = ctx.backend_id.as_deref().unwrap_or("-");
        let elapsed = ctx.start.elapsed();
        // StatusCode's own text: no allocation per request (0: nothing was sent).
        let code = http::StatusCode::from_u16(status).ok();
        let code = code.as_ref().map_or("0", http::StatusCode::as_str);
        self.shared.metrics.requests.with_label_values(&[route, backend, code]).inc();
        self.shared.metrics.duration.with_label_values(&[route]).observe(elapsed.as_secs_f64());
        let decision = ctx.current.map_or("local", |f| f.pin.as_str());
        let header = session.req_header();
        tracing::info!(
            target: "pinroute::access",
            method = %header.method,
            path = %header.uri.path(),
            status,
            backend,
            decision,
            tries = ctx.tried.len() + 1,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            error = error.map(|e| e.to_string()),
            "request"
        );
        ctx.guard = None;
    }
}
