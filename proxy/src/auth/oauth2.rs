//! OAuth2 auth-request: the ingress-nginx `auth-url` / `auth-signin`
//! contract as oauth2-proxy serves it. Each request is decided by a `GET`
//! sub-request to the auth service: 2xx allows (copying the configured
//! answer headers upstream), 401 sends browsers to the sign-in page and
//! others a 401, 403 forbids, anything else fails closed.
//!
//! This module owns the sub-request, the sign-in URL and the decision cache.
//! It must not know routes, backends or pingora: the request filter maps a
//! [`Verdict`] to a local answer.

use std::collections::{HashMap, VecDeque};
use std::error::Error as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pinroute_config::OAuth2Settings;
use sha2::{Digest, Sha256};

/// How many credential pairs the decision cache remembers at most.
pub const CACHE_CAPACITY: usize = 10_000;

/// The auth answer's body is read (so the connection can be reused) up to
/// this much; oauth2-proxy's bodies are a few bytes.
const MAX_DRAINED_BODY: usize = 64 * 1024;

/// nginx's `$escaped_request_uri` (ngx_escape_uri, ARGS): everything but
/// RFC 3986 unreserved characters, so the URI survives as one query value.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The client's Host goes into the sign-in URL. nginx rejects odd hosts
/// before this point and pingora does not, so anything that could end the
/// authority or the `rd` value (`/ ? # @ &`) is escaped; normal hosts stay
/// literal, as nginx writes them.
const HOST: &AsciiSet = &URI_COMPONENT.remove(b':').remove(b'[').remove(b']');

/// Why an OAuth2 gate could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OAuth2Error {
    /// `auth_url` is not an absolute http(s) URL.
    #[error("oauth2 auth_url {url:?}: {reason}")]
    AuthUrl {
        /// The configured value.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `signin_url` uses a variable that is not expanded here.
    #[error(
        "oauth2 signin_url {url:?}: unknown variable ${name} \
         (known: $host, $http_host, $scheme, $escaped_request_uri)"
    )]
    SigninVariable {
        /// The configured template.
        url: String,
        /// The unknown variable, without `$`.
        name: String,
    },
    /// A `response_headers` entry is not a header name.
    #[error("oauth2 response header {name:?} is not a header name")]
    ResponseHeader {
        /// The configured value.
        name: String,
    },
    /// A zero timeout would fail every sub-request.
    #[error("oauth2 timeout must be greater than zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (e.g. TLS roots).
    #[error("oauth2: cannot build the HTTP client for the auth service: {0}")]
    Client(#[source] reqwest::Error),
}

/// The parts of a client request the auth service gets to see.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The original method.
    pub method: &'a str,
    /// The original request-target (`path?query`) as the client sent it.
    pub uri: &'a str,
    /// The `Host` header (may include a port).
    pub host: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The `Cookie` header, verbatim (HTTP/2 crumbs joined with `; `).
    pub cookie: Option<&'a [u8]>,
    /// The `Authorization` header, verbatim.
    pub authorization: Option<&'a [u8]>,
    /// The `Accept` header.
    pub accept: Option<&'a [u8]>,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: proxy it, setting these headers (the configured
    /// `response_headers` present in the auth answer) upstream.
    Allow {
        /// Headers to set on the upstream request.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
    /// `Authorization` starts with the bypass prefix; no sub-request was
    /// made. The caller marks the request `X-Skypilot-Auth-Mode: token`.
    TokenBypass,
    /// 401 for a browser with a sign-in URL configured: answer 302 here.
    Redirect {
        /// The expanded sign-in URL, a valid header value.
        location: String,
    },
    /// 401: answer 401.
    Unauthorized,
    /// 403: answer 403.
    Forbidden,
    /// The auth service is unreachable, timed out or answered anything
    /// else: answer 503 (fail closed).
    Unavailable {
        /// For logs; not for the client.
        reason: String,
    },
}

/// One route's OAuth2 gate. Build once per config: the HTTP client's
/// connection pool and the decision cache live inside.
pub struct OAuth2Gate {
    auth_url: reqwest::Url,
    signin: Option<SigninTemplate>,
    response_headers: Vec<HeaderName>,
    token_bypass_prefix: Option<Vec<u8>>,
    timeout: Duration,
    client: reqwest::Client,
    cache: Option<DecisionCache>,
}

impl std::fmt::Debug for OAuth2Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2Gate")
            .field("auth_url", &self.auth_url.as_str())
            .field("signin", &self.signin.is_some())
            .field("response_headers", &self.response_headers)
            .field("cache", &self.cache.as_ref().map(|c| c.ttl))
            .finish_non_exhaustive()
    }
}

impl OAuth2Gate {
    /// A gate for `settings`; fails on a URL or template it cannot use.
    pub fn new(settings: &OAuth2Settings) -> Result<OAuth2Gate, OAuth2Error> {
        let url_error = |reason: String| OAuth2Error::AuthUrl { url: settings.auth_url.clone(), reason };
        let auth_url = reqwest::Url::parse(&settings.auth_url).map_err(|e| url_error(e.to_string()))?;
        if !matches!(auth_url.scheme(), "http" | "https") || auth_url.host().is_none() {
            return Err(url_error("expected an http:// or https:// URL with a host".to_owned()));
        }
        if settings.timeout.is_zero() {
            return Err(OAuth2Error::ZeroTimeout);
        }
        let signin = settings.signin_url.as_deref().map(SigninTemplate::parse).transpose()?;
        let response_headers = settings
            .response_headers
            .iter()
            .map(|name| {
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| OAuth2Error::ResponseHeader { name: name.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The auth service is a cluster-internal hop: an HTTP(S)_PROXY meant
        // for egress must not see users' cookies, and a redirect from it is an
        // answer to judge, not one to follow.
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(OAuth2Error::Client)?;
        let cache = (!settings.cache.is_zero()).then(|| DecisionCache::new(settings.cache, CACHE_CAPACITY));
        Ok(OAuth2Gate {
            auth_url,
            signin,
            response_headers,
            token_bypass_prefix: settings.token_bypass_prefix.as_ref().map(|p| p.as_bytes().to_vec()),
            timeout: settings.timeout,
            client,
            cache,
        })
    }

    /// The headers an allow copies upstream. The caller must strip these
    /// from every client request first, whatever the verdict, or a client
    /// could claim `X-Auth-Request-Email` itself.
    pub fn response_headers(&self) -> &[HeaderName] {
        &self.response_headers
    }

    /// Decides `request`; `now` only dates the decision cache.
    pub async fn check(&self, request: &AuthRequest<'_>, now: Instant) -> Verdict {
        if let (Some(prefix), Some(authorization)) = (&self.token_bypass_prefix, request.authorization) {
            if authorization.starts_with(prefix) {
                return Verdict::TokenBypass;
            }
        }
        let cached = self.cache.as_ref().map(|cache| (cache, cache.key(request.cookie, request.authorization)));
        if let Some((cache, key)) = &cached {
            if let Some(headers) = cache.get(key, now) {
                return Verdict::Allow { headers: headers.to_vec() };
            }
        }
        let verdict = self.ask(request).await;
        if let (Some((cache, key)), Verdict::Allow { headers }) = (&cached, &verdict) {
            cache.insert(*key, headers, now);
        }
        verdict
    }

    async fn ask(&self, request: &AuthRequest<'_>) -> Verdict {
        let sent = self.client.get(self.auth_url.clone()).headers(sub_request_headers(request)).send().await;
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Verdict::Unavailable { reason: self.describe(&e) },
        };
        let status = response.status();
        let verdict = match status.as_u16() {
            200..=299 => Verdict::Allow { headers: self.copied_headers(response.headers()) },
            401 => self.unauthorized(request),
            403 => Verdict::Forbidden,
            _ => Verdict::Unavailable { reason: format!("auth service {} answered {status}", self.auth_url) },
        };
        // An unread body makes hyper close the connection; reading the few
        // bytes keeps it pooled. A failure here does not change the verdict.
        let mut drained = 0;
        while let Ok(Some(chunk)) = response.chunk().await {
            drained += chunk.len();
            if drained > MAX_DRAINED_BODY {
                break;
            }
        }
        verdict
    }

    fn copied_headers(&self, answer: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
        let mut headers = Vec::new();
        for name in &self.response_headers {
            headers.extend(answer.get_all(name).iter().map(|value| (name.clone(), value.clone())));
        }
        headers
    }

    fn unauthorized(&self, request: &AuthRequest<'_>) -> Verdict {
        let wants_html =
            request.accept.is_some_and(|accept| accept.to_ascii_lowercase().windows(9).any(|w| w == b"text/html"));
        match &self.signin {
            Some(template) if wants_html => {
                let location = template.expand(request);
                // The host comes from the client; never hand the caller a
                // Location it cannot send.
                if HeaderValue::from_str(&location).is_ok() {
                    Verdict::Redirect { location }
                } else {
                    Verdict::Unauthorized
                }
            }
            _ => Verdict::Unauthorized,
        }
    }

    /// reqwest's own message hides the cause ("error sending request");
    /// operators need "connection refused" or the timeout.
    fn describe(&self, error: &reqwest::Error) -> String {
        if error.is_timeout() {
            return format!("auth service {} did not answer within {:?}", self.auth_url, self.timeout);
        }
        let mut reason = format!("auth service {} unreachable", self.auth_url);
        let mut source = error.source();
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        reason
    }
}

/// What ingress-nginx's auth location sends: the credentials (only if
/// present) and where the request was going, never its body.
fn sub_request_headers(request: &AuthRequest<'_>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // A value that is not a valid header is dropped: the service then sees
    // no credentials and refuses, which fails closed.
    let mut set = |name: &'static str, value: &[u8]| {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(HeaderName::from_static(name), value);
        }
    };
    if let Some(cookie) = request.cookie {
        set("cookie", cookie);
    }
    if let Some(authorization) = request.authorization {
        set("authorization", authorization);
    }
    let url = format!("{}://{}{}", request.scheme, request.host, request.uri);
    set("x-original-url", url.as_bytes());
    set("x-original-uri", request.uri.as_bytes());
    set("x-original-method", request.method.as_bytes());
    set("x-auth-request-redirect", request.uri.as_bytes());
    set("x-forwarded-proto", request.scheme.as_bytes());
    set("x-forwarded-host", request.host.as_bytes());
    set("x-forwarded-uri", request.uri.as_bytes());
    if let Some(ip) = request.client_ip {
        let ip = ip.to_string();
        set("x-forwarded-for", ip.as_bytes());
        set("x-real-ip", ip.as_bytes());
    }
    headers
}

/// A parsed `signin_url`, so an unknown variable fails the config load and
/// expansion is one pass (a host containing `$scheme` stays literal).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SigninTemplate {
    pieces: Vec<Piece>,
    /// ingress-nginx appends `rd=$pass_access_scheme://$http_host$escaped_request_uri`
    /// when the template has no non-empty `rd`; this is the separator to use.
    append_rd: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    /// nginx `$host`: the Host header without its port, lower-cased.
    Host,
    /// nginx `$http_host`: the Host header as sent.
    HttpHost,
    Scheme,
    EscapedRequestUri,
}

impl SigninTemplate {
    fn parse(template: &str) -> Result<SigninTemplate, OAuth2Error> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(dollar) = rest.find('$') {
            literal.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            // nginx accepts `$name` and `${name}`.
            let (name, consumed) = match after.strip_prefix('{').and_then(|a| a.find('}').map(|end| (a, end))) {
                Some((inner, end)) => (&inner[..end], end + 2),
                None => {
                    let len = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
                    (&after[..len], len)
                }
            };
            let piece = match name {
                "" => None,
                "host" => Some(Piece::Host),
                "http_host" => Some(Piece::HttpHost),
                "scheme" => Some(Piece::Scheme),
                "escaped_request_uri" => Some(Piece::EscapedRequestUri),
                _ => {
                    return Err(OAuth2Error::SigninVariable { url: template.to_owned(), name: name.to_owned() });
                }
            };
            match piece {
                Some(piece) => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(piece);
                }
                None => literal.push('$'),
            }
            rest = &after[consumed..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(SigninTemplate { pieces, append_rd: rd_separator(template) })
    }

    fn expand(&self, request: &AuthRequest<'_>) -> String {
        let http_host = || utf8_percent_encode(request.host, HOST).to_string();
        let escaped_uri = || utf8_percent_encode(request.uri, URI_COMPONENT).to_string();
        let mut url = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => url.push_str(text),
                Piece::Host => url.push_str(&utf8_percent_encode(&http_host_to_host(request.host), HOST).to_string()),
                Piece::HttpHost => url.push_str(&http_host()),
                Piece::Scheme => url.push_str(request.scheme),
                Piece::EscapedRequestUri => url.push_str(&escaped_uri()),
            }
        }
        if let Some(separator) = self.append_rd {
            url.push_str(separator);
            url.push_str("rd=");
            url.push_str(request.scheme);
            url.push_str("://");
            url.push_str(&http_host());
            url.push_str(&escaped_uri());
        }
        url
    }
}

/// `None` when the template already carries a non-empty `rd`, else the
/// separator that starts or continues its query.
fn rd_separator(template: &str) -> Option<&'static str> {
    let Some((_, query)) = template.split_once('?') else { return Some("?") };
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    if form_urlencoded::parse(query.as_bytes()).any(|(k, v)| k == "rd" && !v.is_empty()) {
        return None;
    }
    Some(if query.is_empty() || query.ends_with('&') { "" } else { "&" })
}

/// nginx's `$host`: no port, lower case; `[v6]` keeps its brackets.
fn http_host_to_host(http_host: &str) -> String {
    let host = match http_host.strip_prefix('[') {
        Some(v6) => v6.find(']').map_or(http_host, |end| &http_host[..end + 2]),
        None => http_host.split(':').next().unwrap_or(http_host),
    };
    host.to_ascii_lowercase()
}

/// Allow verdicts per credentials, for `ttl`. Keys are SHA-256 over a
/// per-process salt and both credentials, so no cookie is kept in memory.
/// Only allows are stored: a refusal must be re-asked as soon as the user
/// signs in.
struct DecisionCache {
    salt: [u8; 32],
    ttl: Duration,
    capacity: usize,
    inner: Mutex<CacheInner>,
}

type Headers = Arc<[(HeaderName, HeaderValue)]>;

#[derive(Default)]
struct CacheInner {
    entries: HashMap<[u8; 32], (Headers, Instant)>,
    /// Insertion order with each record's expiry. One TTL for all makes the
    /// front the first to expire; an older record of a re-inserted key is
    /// told apart by its expiry.
    order: VecDeque<([u8; 32], Instant)>,
}

impl DecisionCache {
    fn new(ttl: Duration, capacity: usize) -> DecisionCache {
        DecisionCache { salt: rand::random(), ttl, capacity, inner: Mutex::new(CacheInner::default()) }
    }

    /// Each credential is tagged and length-prefixed, so neither moving
    /// bytes between them nor dropping one can collide with another pair.
    fn key(&self, cookie: Option<&[u8]>, authorization: Option<&[u8]>) -> [u8; 32] {
        let mut hasher = Sha256::new().chain_update(self.salt);
        for part in [cookie, authorization] {
            match part {
                None => hasher.update([0]),
                Some(bytes) => {
                    hasher.update([1]);
                    hasher.update((bytes.len() as u64).to_be_bytes());
                    hasher.update(bytes);
                }
            }
        }
        hasher.finalize().into()
    }

    /// Each step is one insert or remove, so a poisoned lock still holds
    /// consistent maps.
    fn lock(&self) -> MutexGuard<'_, CacheInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Headers> {
        let mut inner = self.lock();
        let (headers, expires) = inner.entries.get(key)?;
        if now < *expires {
            return Some(Arc::clone(headers));
        }
        inner.entries.remove(key);
        None
    }

    fn insert(&self, key: [u8; 32], headers: &[(HeaderName, HeaderValue)], now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let expires = now + self.ttl;
        let mut inner = self.lock();
        // Concurrent misses of one key all insert; the first stands, so a
        // key never holds two live records against the bound.
        if inner.entries.get(&key).is_some_and(|(_, e)| now < *e) {
            return;
        }
        inner.entries.insert(key, (Arc::from(headers), expires));
        inner.order.push_back((key, expires));
        while let Some(&(old_key, old_expires)) = inner.order.front() {
            if inner.order.len() <= self.capacity && now < old_expires {
                break;
            }
            inner.order.pop_front();
            if inner.entries.get(&old_key).is_some_and(|(_, e)| *e == old_expires) {
                inner.entries.remove(&old_key);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::State;
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;
    use http::StatusCode;

    /// The headers of every sub-request the stub received.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<HeaderMap>>>);

    impl Seen {
        fn count(&self) -> usize {
            self.0.lock().unwrap().len()
        }
        fn last(&self) -> HeaderMap {
            self.0.lock().unwrap().last().cloned().unwrap()
        }
    }

    /// oauth2-proxy's `/oauth2/auth`: 202 plus identity headers for a good
    /// session, 403 for a banned one, 401 without.
    async fn oauth2_proxy(State(seen): State<Seen>, headers: HeaderMap) -> Response {
        let session = headers
            .get_all("cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix("_oauth2_proxy="))
            .map(str::to_owned);
        seen.0.lock().unwrap().push(headers);
        match session.as_deref() {
            Some("good") => {
                let identity = [
                    ("x-auth-request-email", "alice@example.com"),
                    ("x-auth-request-user", "alice"),
                    ("x-auth-request-access-token", "not-for-upstream"),
                ];
                (StatusCode::ACCEPTED, identity, "").into_response()
            }
            Some("banned") => StatusCode::FORBIDDEN.into_response(),
            _ => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
        }
    }

    async fn stub() -> (String, Seen) {
        let seen = Seen::default();
        let app = Router::new()
            .route("/oauth2/auth", get(oauth2_proxy))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::ACCEPTED
                }),
            )
            .route("/broken", get(|| async { StatusCode::BAD_GATEWAY }))
            .route("/moved", get(|| async { (StatusCode::FOUND, [("location", "/oauth2/auth")]) }))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, seen)
    }

    fn settings(auth_url: String) -> OAuth2Settings {
        OAuth2Settings {
            auth_url,
            signin_url: Some("https://$host/oauth2/start".to_owned()),
            response_headers: vec!["x-auth-request-email".to_owned(), "x-auth-request-user".to_owned()],
            token_bypass_prefix: Some("Bearer sky_".to_owned()),
            timeout: Duration::from_secs(5),
            cache: Duration::ZERO,
        }
    }

    const URI: &str = "/dashboard/clusters?tab=1&q=a%20b";
    const ESCAPED_URI: &str = "%2Fdashboard%2Fclusters%3Ftab%3D1%26q%3Da%2520b";

    fn request<'a>(cookie: Option<&'a str>, accept: Option<&'a str>) -> AuthRequest<'a> {
        AuthRequest {
            method: "POST",
            uri: URI,
            host: "Sky.Example.com:8443",
            scheme: "https",
            client_ip: Some("10.1.2.3".parse().unwrap()),
            cookie: cookie.map(str::as_bytes),
            authorization: None,
            accept: accept.map(str::as_bytes),
        }
    }

    fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
        headers.get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn allow_copies_only_the_configured_headers() {
        let (base, _) = stub().await;
        let gate = OAuth2Gate::new(&settings(format!("{base}/oauth2/auth"))).unwrap();
        let verdict = gate.check(&request(Some("theme=dark; _oauth2_proxy=good"), None), Instant::now()).await;
        let expected = vec![
            (HeaderName::from_static("x-auth-request-email"), HeaderValue::from_static("alice@example.com")),
            (HeaderName::from_static("x-auth-request-user"), HeaderValue::from_static("alice")),
        ];
        assert_eq!(verdict, Verdict::Allow { headers: expected });
        assert_eq!(
            gate.response_headers(),
            [HeaderName::from_static("x-auth-request-email"), "x-auth-request-user".parse().unwrap()]
        );
    }

    #[tokio::test]
    async fn sub_request_carries_what_ingress_nginx_sends() {
        let (base, seen) = stub().await;
        let gate = OAuth2Gate::new(&settings(format!("{base}/oauth2/auth"))).unwrap();
        let mut with_token = request(Some("_oauth2_proxy=good"), Some("text/html"));
        with_token.authorization = Some(b"Bearer eyJhbGciOi");
        gate.check(&with_token, Instant::now()).await;
        let sent = seen.last();
        let expectations = [
            ("cookie", "_oauth2_proxy=good"),
            ("authorization", "Bearer eyJhbGciOi"),
            ("x-original-uri", URI),
            ("x-original-method", "POST"),
            ("x-original-url", "https://Sky.Example.com:8443/dashboard/clusters?tab=1&q=a%20b"),
            ("x-forwarded-for", "10.1.2.3"),
            ("x-real-ip", "10.1.2.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "Sky.Example.com:8443"),
            ("x-forwarded-uri", URI),
            ("x-auth-request-redirect", URI),
        ];
        for (name, value) in expectations {
            assert_eq!(header(&sent, name), Some(value), "{name}");
        }
        assert_eq!(header(&sent, "host"), Some(base.trim_start_matches("http://")), "Host names the auth service");
        assert_eq!(header(&sent, "accept"), Some("*/*"), "the client's Accept is not forwarded");

        let anonymous = AuthRequest { client_ip: None, ..request(None, None) };
        gate.check(&anonymous, Instant::now()).await;
        let sent = seen.last();
        for absent in ["cookie", "authorization", "x-forwarded-for", "x-real-ip"] {
            assert_eq!(header(&sent, absent), None, "{absent}");
        }
    }

    #[tokio::test]
    async fn browser_without_session_is_sent_to_sign_in_with_rd() {
        let (base, _) = stub().await;
        let gate = OAuth2Gate::new(&settings(format!("{base}/oauth2/auth"))).unwrap();
        let browser = request(None, Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"));
        let location = format!("https://sky.example.com/oauth2/start?rd=https://Sky.Example.com:8443{ESCAPED_URI}");
        assert_eq!(gate.check(&browser, Instant::now()).await, Verdict::Redirect { location });
    }

    #[tokio::test]
    async fn api_client_without_session_gets_401() {
        let (base, _) = stub().await;
        let gate = OAuth2Gate::new(&settings(format!("{base}/oauth2/auth"))).unwrap();
        for accept in [None, Some("application/json"), Some("*/*")] {
            assert_eq!(gate.check(&request(None, accept), Instant::now()).await, Verdict::Unauthorized, "{accept:?}");
        }
        let no_signin =
            OAuth2Gate::new(&OAuth2Settings { signin_url: None, ..settings(format!("{base}/oauth2/auth")) });
        let browser = request(None, Some("text/html"));
        assert_eq!(no_signin.unwrap().check(&browser, Instant::now()).await, Verdict::Unauthorized);
    }

    #[tokio::test]
    async fn banned_session_is_forbidden() {
        let (base, _) = stub().await;
        let gate = OAuth2Gate::new(&settings(format!("{base}/oauth2/auth"))).unwrap();
        let banned = request(Some("_oauth2_proxy=banned"), Some("text/html"));
        assert_eq!(gate.check(&banned, Instant::now()).await, Verdict::Forbidden);
    }

    #[tokio::test]
    async fn closed_port_is_unavailable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let gate = OAuth2Gate::new(&settings(format!("http://{closed}/oauth2/auth"))).unwrap();
        let verdict = gate.check(&request(Some("_oauth2_proxy=good"), None), Instant::now()).await;
        let Verdict::Unavailable { reason } = verdict else { panic!("{verdict:?}") };
        assert!(reason.contains("unreachable") && reason.contains(&closed.to_string()), "{reason}");
    }

    #[tokio::test]
    async fn slow_auth_service_is_unavailable() {
        let (base, seen) = stub().await;
        let slow = OAuth2Settings { timeout: Duration::from_millis(200), ..settings(format!("{base}/slow")) };
        let verdict = OAuth2Gate::new(&slow).unwrap().check(&request(None, None), Instant::now()).await;
        let Verdict::Unavailable { reason } = verdict else { panic!("{verdict:?}") };
        assert!(reason.contains("did not answer within 200ms"), "{reason}");
        assert_eq!(seen.count(), 0);
    }

    #[tokio::test]
    async fn other_statuses_fail_closed_and_redirects_are_not_followed() {
        let (base, seen) = stub().await;
        for path in ["/broken", "/moved"] {
            let gate = OAuth2Gate::new(&settings(format!("{base}{path}"))).unwrap();
            let verdict = gate.check(&request(Some("_oauth2_proxy=good"), None), Instant::now()).await;
            assert!(matches!(verdict, Verdict::Unavailable { .. }), "{path}: {verdict:?}");
        }
        assert_eq!(seen.count(), 0, "the 302 to /oauth2/auth was not followed");
    }

    #[tokio::test]
    async fn token_bypass_makes_no_sub_request() {
        let (base, seen) = stub().await;
        let gate = OAuth2Gate::new(&settings(format!("{base}/oauth2/auth"))).unwrap();
        let mut token = request(None, None);
        token.authorization = Some(b"Bearer sky_0123456789abcdef");
        assert_eq!(gate.check(&token, Instant::now()).await, Verdict::TokenBypass);
        assert_eq!(seen.count(), 0);
        token.authorization = Some(b"Bearer other");
        assert_eq!(gate.check(&token, Instant::now()).await, Verdict::Unauthorized);
        assert_eq!(seen.count(), 1);

        let no_bypass =
            OAuth2Gate::new(&OAuth2Settings { token_bypass_prefix: None, ..settings(format!("{base}/oauth2/auth")) });
        token.authorization = Some(b"Bearer sky_0123456789abcdef");
        assert_eq!(no_bypass.unwrap().check(&token, Instant::now()).await, Verdict::Unauthorized);
        assert_eq!(seen.count(), 2);
    }

    #[tokio::test]
    async fn cached_allow_skips_the_sub_request_until_it_expires() {
        let (base, seen) = stub().await;
        let cached = OAuth2Settings { cache: Duration::from_secs(60), ..settings(format!("{base}/oauth2/auth")) };
        let gate = OAuth2Gate::new(&cached).unwrap();
        let good = request(Some("_oauth2_proxy=good"), None);
        let t0 = Instant::now();
        let first = gate.check(&good, t0).await;
        assert!(matches!(&first, Verdict::Allow { headers } if headers.len() == 2), "{first:?}");
        assert_eq!(gate.check(&good, t0 + Duration::from_secs(59)).await, first);
        assert_eq!(seen.count(), 1, "the hit made no sub-request");

        let banned = request(Some("_oauth2_proxy=banned"), None);
        for _ in 0..2 {
            assert_eq!(gate.check(&banned, t0).await, Verdict::Forbidden);
        }
        assert_eq!(seen.count(), 3, "refusals are not cached");

        assert_eq!(gate.check(&good, t0 + Duration::from_secs(60)).await, first);
        assert_eq!(seen.count(), 4, "expired after the TTL");
    }

    #[test]
    fn signin_template_expands_like_ingress_nginx() {
        let expand = |template: &str, host: &str| {
            let request = AuthRequest { host, ..request(None, None) };
            SigninTemplate::parse(template).unwrap().expand(&request)
        };
        let rd = format!("rd=https://sky:8443{ESCAPED_URI}");
        assert_eq!(expand("https://auth/start", "sky:8443"), format!("https://auth/start?{rd}"));
        assert_eq!(expand("https://auth/start?x=1", "sky:8443"), format!("https://auth/start?x=1&{rd}"));
        assert_eq!(expand("https://auth/start?", "sky:8443"), format!("https://auth/start?{rd}"));
        assert_eq!(expand("https://auth/start?rd=", "sky:8443"), format!("https://auth/start?rd=&{rd}"));
        assert_eq!(
            expand("$scheme://${host}/start?rd=$escaped_request_uri&h=$http_host&p=$&q=$", "Sky:8443"),
            format!("https://sky/start?rd={ESCAPED_URI}&h=Sky:8443&p=$&q=$"),
        );
        assert_eq!(expand("https://$host/start?rd=/", "[::1]:8443"), "https://[::1]/start?rd=/");
        // A hostile Host cannot leave the authority or smuggle parameters,
        // and a `$` in it is not expanded again.
        assert_eq!(
            expand("https://$host/start?rd=/", "evil.com/x?a=1&rd=//evil#$scheme"),
            "https://evil.com%2Fx%3Fa%3D1%26rd%3D%2F%2Fevil%23%24scheme/start?rd=/",
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let base = settings("http://oauth2-proxy:4180/oauth2/auth".to_owned());
        assert!(OAuth2Gate::new(&base).is_ok());
        for url in ["ftp://oauth2-proxy/auth", "/oauth2/auth", "http://"] {
            let err = OAuth2Gate::new(&OAuth2Settings { auth_url: url.to_owned(), ..base.clone() }).unwrap_err();
            assert!(matches!(err, OAuth2Error::AuthUrl { .. }), "{url}: {err}");
        }
        let err = OAuth2Gate::new(&OAuth2Settings { signin_url: Some("https://$hostname/".into()), ..base.clone() });
        assert!(err.unwrap_err().to_string().contains("unknown variable $hostname"));
        let err = OAuth2Gate::new(&OAuth2Settings { timeout: Duration::ZERO, ..base.clone() }).unwrap_err();
        assert!(matches!(err, OAuth2Error::ZeroTimeout));
        let err = OAuth2Gate::new(&OAuth2Settings { response_headers: vec!["bad header".into()], ..base }).unwrap_err();
        assert!(matches!(err, OAuth2Error::ResponseHeader { .. }));
    }

    #[test]
    fn cache_keys_separate_the_two_credentials() {
        let cache = DecisionCache::new(Duration::from_secs(1), 1);
        let keys = [
            cache.key(Some(b"ab"), Some(b"c")),
            cache.key(Some(b"a"), Some(b"bc")),
            cache.key(Some(b"abc"), None),
            cache.key(None, Some(b"abc")),
            cache.key(None, None),
            cache.key(Some(b""), None),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert!(keys[i + 1..].iter().all(|b| a != b), "key {i} collides");
        }
    }

    #[test]
    fn cache_is_bounded_and_evicts_expired_then_oldest() {
        let cache = DecisionCache::new(Duration::from_secs(10), 3);
        let key = |i: u8| cache.key(Some(&[i]), None);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for i in 0..4u8 {
            cache.insert(key(i), &[], at(u64::from(i) * 1000));
        }
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(0), at(3000)).is_none(), "oldest evicted");
        assert!(cache.get(&key(1), at(3000)).is_some());
        // At 11.5 s keys 0 and 1 have expired; the insert drops them first.
        cache.insert(key(4), &[], at(11_500));
        assert_eq!(cache.len(), 3);
        assert!(cache.get(&key(3), at(11_500)).is_some() && cache.get(&key(4), at(11_500)).is_some());
        for i in 0..100 {
            cache.insert(key(4), &[], at(11_500 + i));
        }
        assert_eq!(cache.lock().order.len(), 3, "re-inserting a live key adds no record");
        // Expired, then re-inserted: the stale record must not evict the fresh entry.
        cache.insert(key(3), &[], at(13_000));
        cache.insert(key(5), &[], at(21_600));
        assert!(cache.get(&key(3), at(21_600)).is_some(), "fresh entry of key 3 kept");
    }
}
