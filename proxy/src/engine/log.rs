//! The last step of a request: one access-log line and the request metrics.

use super::downstream::Downstream;
use super::memo::ConnectionMemo;
use super::request::RequestCtx;
use crate::state::Shared;

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The status the client got (0: none was sent).
    pub status: u16,
    /// The client connection may carry another request.
    reusable: bool,
    /// What went wrong, for the log.
    pub error: Option<String>,
}

impl Outcome {
    /// A response forwarded whole.
    pub fn proxied(status: u16) -> Outcome {
        Outcome { status, reusable: true, error: None }
    }

    /// A reply of the proxy's own after which the connection stays open.
    pub fn local(status: u16) -> Outcome {
        Outcome { status, reusable: true, error: None }
    }

    /// The client connection closes after this (an error, an upgrade).
    pub fn closed(status: u16, error: &str) -> Outcome {
        Outcome { status, reusable: false, error: (!error.is_empty()).then(|| error.to_string()) }
    }

    /// The same, with `error` for the log.
    pub fn with_error(mut self, error: String) -> Outcome {
        if !error.is_empty() {
            self.error = Some(error);
        }
        self
    }

    /// Whether the client connection may carry another request.
    pub fn reusable(&self) -> bool {
        self.reusable
    }
}

/// Counts the request and writes its access-log line.
pub fn record(shared: &Shared, ctx: &RequestCtx, down: &Downstream<'_>, outcome: &Outcome, memo: &mut ConnectionMemo) {
    let route = ctx.route_label();
    let elapsed = ctx.start.elapsed();
    // StatusCode's own text: no allocation per request (0: nothing was sent).
    let code = http::StatusCode::from_u16(outcome.status).ok();
    let code = code.as_ref().map_or("0", http::StatusCode::as_str);
    memo.count_request(&shared.metrics, route, ctx.backend_id.as_ref(), (outcome.status, code), elapsed);
    let backend = ctx.backend_id.as_deref().unwrap_or("-");
    if !tracing::enabled!(target: "pinroute::access", tracing::Level::INFO) {
        return;
    }
    let decision = ctx.current.map_or("local", |f| f.pin.as_str());
    let header = down.req_header();
    tracing::info!(
        target: "pinroute::access",
        method = %header.method,
        path = %header.uri.path(),
        status = outcome.status,
        backend,
        decision,
        tries = ctx.tried.len() + 1,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        error = outcome.error.as_deref(),
        "request"
    );
}
