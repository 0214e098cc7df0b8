//! Admission: everything decided about a request before a backend is chosen —
//! framing, path normalisation, HTTPS redirect, route match, authentication,
//! body limit — as one function returning either what the request may do or
//! the local reply it gets instead.

use std::net::IpAddr;
use std::time::Instant;

use http::request::Parts;
use pinroute_config::TlsSettings;

use crate::affinity::request_id_of;
use crate::auth::oauth2::{AuthRequest, OAuth2Gate, Verdict};
use crate::cookie::find_cookie;
use crate::gateway::BasicOutcome;
use crate::normalize::{normalize_path, strip_prefix};
use crate::route::match_route;
use crate::snapshot::Snapshot;

/// A reply the proxy gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Status code.
    pub status: u16,
    /// `{"detail": ...}`.
    pub detail: String,
    /// Extra headers (`WWW-Authenticate`, `Location`, `Retry-After`).
    pub headers: Vec<(String, String)>,
}

impl LocalReply {
    fn new(status: u16, detail: impl Into<String>) -> LocalReply {
        LocalReply { status, detail: detail.into(), headers: Vec::new() }
    }

    fn with_header(mut self, name: &str, value: impl Into<String>) -> LocalReply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

/// What an admitted request carries on to routing.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Route index.
    pub route: usize,
    /// The path the backend sees (normalised, prefix stripped if configured).
    pub rel_path: String,
    /// Upstream request-target when it differs from the client's.
    pub upstream_uri: Option<String>,
    /// The route's sticky cookie value, if sent.
    pub cookie: Option<String>,
    /// SkyPilot request id of an `/api/get|stream|status|cancel` call.
    pub request_id: Option<String>,
    /// Headers authentication adds upstream.
    pub auth_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Client headers removed before forwarding (those the auth service sets).
    pub strip_headers: Vec<http::HeaderName>,
}

/// The request's host, lower-case, without port.
pub fn request_host(header: &Parts) -> Option<String> {
    let raw = header
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| header.uri.authority().map(|a| a.as_str()))?;
    let host = match raw.find(']') {
        Some(end) if raw.starts_with('[') => &raw[..=end],
        _ if raw.starts_with('[') => raw,
        _ => raw.split(':').next().unwrap_or(""),
    };
    Some(host.to_ascii_lowercase())
}

/// Asks the auth service (ingress-nginx's `auth-url` contract) and turns
/// its verdict into the headers to add upstream or the reply to give.
async fn oauth2_verdict(
    header: &Parts,
    tls: bool,
    gate: &OAuth2Gate,
    host: Option<&str>,
    client: Option<IpAddr>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, LocalReply> {
    let raw_host = header.headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).or(host).unwrap_or("");
    let cookies: Vec<&[u8]> = header.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()).collect();
    let joined = cookies.join(&b"; "[..]);
    let request = AuthRequest {
        method: header.method.as_str(),
        uri: header.uri.path_and_query().map_or("/", |p| p.as_str()),
        host: raw_host,
        scheme: if tls { "https" } else { "http" },
        client_ip: client,
        cookie: (!cookies.is_empty()).then_some(&joined[..]),
        authorization: header.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes()),
        accept: header.headers.get(http::header::ACCEPT).map(|v| v.as_bytes()),
    };
    match gate.check(&request, Instant::now()).await {
        Verdict::Allow { headers } => Ok(headers),
        Verdict::TokenBypass => {
            Ok(vec![(http::HeaderName::from_static("x-skypilot-auth-mode"), http::HeaderValue::from_static("token"))])
        }
        Verdict::Redirect { location } => Err(LocalReply::new(302, "Sign in first.").with_header("location", location)),
        Verdict::Unauthorized => Err(LocalReply::new(401, "Authentication required.")),
        Verdict::Forbidden => Err(LocalReply::new(403, "Forbidden.")),
        Verdict::Unavailable { reason } => {
            tracing::error!(%reason, "auth service unavailable; failing closed");
            Err(LocalReply::new(503, "The authentication service is unavailable.").with_header("retry-after", "5"))
        }
    }
}

/// Decides whether and how a request enters; see the module doc.
pub async fn admit(
    header: &Parts,
    tls: bool,
    snapshot: &Snapshot,
    client: Option<IpAddr>,
) -> Result<Admission, LocalReply> {
    let path = normalize_path(header.uri.path()).map_err(|e| LocalReply::new(400, format!("Bad request: {e}.")))?;
    let host = request_host(header);
    let route = match_route(&snapshot.config, host.as_deref(), &path);
    let redirect = |settings: &&TlsSettings| {
        !tls && (settings.redirect_http || route.is_some_and(|r| snapshot.config.routes[r].https_redirect))
    };
    if let Some(tls) = snapshot.config.server.tls.as_ref().filter(redirect) {
        let port = tls.listen.first().map_or(443, |a| a.port());
        let authority = match (&host, port) {
            (Some(h), 443) => h.clone(),
            (Some(h), p) => format!("{h}:{p}"),
            (None, _) => return Err(LocalReply::new(400, "Bad request: no Host header.")),
        };
        let target = header.uri.path_and_query().map_or("/", |p| p.as_str());
        return Err(LocalReply::new(308, "Use HTTPS.").with_header("location", format!("https://{authority}{target}")));
    }
    let route = route.ok_or_else(|| LocalReply::new(404, "No route serves this path."))?;
    let config = &snapshot.config.routes[route];
    let mut admission = Admission { route, ..Admission::default() };

    // Authentication before anything else about the request is revealed.
    if let Some(gate) = snapshot.gates.get(route) {
        let authorization = header.headers.get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
        match gate.basic(authorization, Instant::now()) {
            BasicOutcome::NotConfigured | BasicOutcome::User(_) => {}
            BasicOutcome::Denied(challenge) => {
                return Err(LocalReply::new(401, "Authentication required.")
                    .with_header("www-authenticate", challenge.www_authenticate()));
            }
        }
        if let Some(oauth2) = &gate.oauth2 {
            admission.strip_headers = oauth2.response_headers().to_vec();
            admission.auth_headers = oauth2_verdict(header, tls, oauth2, host.as_deref(), client).await?;
        }
    }

    let declared = header
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > config.max_body) {
        return Err(LocalReply::new(413, format!("Request body larger than the limit of {} bytes.", config.max_body)));
    }

    admission.rel_path = if config.strip_prefix { strip_prefix(&path, &config.prefix) } else { path.clone() };
    if admission.rel_path != header.uri.path() {
        admission.upstream_uri = Some(match header.uri.query() {
            Some(q) => format!("{}?{q}", admission.rel_path),
            None => admission.rel_path.clone(),
        });
    }
    admission.request_id = request_id_of(&admission.rel_path, header.uri.query());
    admission.cookie =
        find_cookie(header.headers.get_all(http::header::COOKIE).iter().map(|v| v.as_bytes()), &config.cookie_name)
            .map(str::to_string);
    Ok(admission)
}
