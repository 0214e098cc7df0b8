//! The `nginx.ingress.kubernetes.io/*` annotations of one Ingress, read into
//! what a pinroute route can express. Values that do not parse refuse the
//! Ingress (ingress-nginx would fall back to a default silently); annotations
//! that would narrow who may reach a backend refuse it too, since ignoring
//! them would widen access.

use std::collections::BTreeMap;

use super::snippet;

/// The annotation namespace ingress-nginx reads.
pub(super) const PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Understood and mapped, or accepted because pinroute already behaves so.
const KNOWN: &[&str] = &[
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-change-on-failure",
    "session-cookie-max-age",
    "session-cookie-expires",
    "session-cookie-path",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-connect-timeout",
    "proxy-body-size",
    "proxy-next-upstream",
    "proxy-next-upstream-tries",
    "proxy-next-upstream-timeout",
    "proxy-buffering",
    "proxy-request-buffering",
    "proxy-http-version",
    "rewrite-target",
    "use-regex",
    "ssl-redirect",
    "force-ssl-redirect",
    "backend-protocol",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "auth-url",
    "auth-signin",
    "auth-response-headers",
];

/// Annotations that restrict access or send requests elsewhere; pinroute has
/// no equivalent, and serving the Ingress without them would be a different,
/// usually more open, service.
const REFUSED: &[&str] = &[
    "whitelist-source-range",
    "allowlist-source-range",
    "denylist-source-range",
    "auth-tls-secret",
    "auth-tls-verify-client",
    "canary",
    "permanent-redirect",
    "temporal-redirect",
    "app-root",
];

/// Where htpasswd lines come from in the auth Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretType {
    /// Key `auth` holds htpasswd lines (`auth-secret-type: auth-file`, the default).
    AuthFile,
    /// Every key is a user, its value the hash (`auth-secret-type: auth-map`).
    AuthMap,
}

/// `auth-type: basic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BasicAuth {
    /// Secret name, in the Ingress's namespace.
    pub secret: String,
    /// How the Secret is laid out.
    pub secret_type: SecretType,
    /// `auth-realm`.
    pub realm: Option<String>,
}

/// `auth-url` and friends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ExternalAuth {
    /// As written; may contain `$host`.
    pub url: String,
    /// `auth-signin`; `$host` and `$escaped_request_uri` are expanded by the proxy.
    pub signin: Option<String>,
    /// `auth-response-headers`.
    pub response_headers: Vec<String>,
    /// The chart's token-bypass `auth-snippet` was present.
    pub token_bypass: bool,
}

/// What the annotations of one Ingress ask for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Annotations {
    /// `session-cookie-name`.
    pub cookie_name: Option<String>,
    /// `proxy-connect-timeout`, seconds.
    pub connect_timeout: Option<u64>,
    /// `proxy-read-timeout`, seconds.
    pub read_timeout: Option<u64>,
    /// `proxy-send-timeout`, seconds.
    pub write_timeout: Option<u64>,
    /// `proxy-body-size` in bytes (`0`, unlimited, is `u64::MAX`).
    pub max_body: Option<u64>,
    /// `proxy-next-upstream-tries`, clamped to pinroute's 1..=16.
    pub connect_tries: Option<usize>,
    /// `rewrite-target`.
    pub rewrite_target: Option<String>,
    /// `use-regex: "true"`.
    pub use_regex: bool,
    /// `ssl-redirect`, when given.
    pub ssl_redirect: Option<bool>,
    /// `force-ssl-redirect: "true"`.
    pub force_ssl_redirect: bool,
    /// `auth-type: basic`.
    pub basic: Option<BasicAuth>,
    /// `auth-url`.
    pub external: Option<ExternalAuth>,
    /// `session-cookie-path`, checked against each route's prefix.
    pub cookie_path: Option<String>,
    /// Accepted but not honoured exactly.
    pub warnings: Vec<String>,
}

/// Annotations under [`PREFIX`] that ingress-nginx may know but pinroute
/// does not (the caller logs them once).
pub(super) fn unknown(all: &BTreeMap<String, String>) -> Vec<String> {
    all.keys()
        .filter(|key| {
            key.strip_prefix(PREFIX)
                .is_some_and(|name| !KNOWN.contains(&name) && !is_refused(name) && !is_snippet(name))
        })
        .cloned()
        .collect()
}

fn is_refused(name: &str) -> bool {
    REFUSED.contains(&name) || name.starts_with("auth-tls-")
}

/// `*-snippet`: raw nginx configuration. (`server-snippets`, plural, which
/// older charts rendered, is no ingress-nginx annotation and is ignored there
/// as here.)
fn is_snippet(name: &str) -> bool {
    name.ends_with("-snippet")
}

/// Reads the annotations of one Ingress.
pub(super) fn parse(all: &BTreeMap<String, String>) -> Result<Annotations, String> {
    let get = |name: &str| all.get(&format!("{PREFIX}{name}")).map(|v| v.trim());
    let mut out = Annotations::default();
    for name in all.keys().filter_map(|k| k.strip_prefix(PREFIX)) {
        if is_refused(name) {
            return Err(format!(
                "{PREFIX}{name} is not supported: serving without it would change who may reach the backends \
                 or where requests go"
            ));
        }
        if is_snippet(name) && name != "auth-snippet" && name != "configuration-snippet" {
            return Err(snippet_refused(name));
        }
    }

    if let Some(affinity) = get("affinity").filter(|v| !v.is_empty() && *v != "cookie") {
        out.warnings.push(format!("affinity {affinity:?}: pinroute always pins clients with a cookie"));
    }
    if get("session-cookie-change-on-failure") == Some("false") {
        out.warnings.push(
            "session-cookie-change-on-failure \"false\": pinroute always re-pins a client whose backend failed"
                .to_string(),
        );
    }
    for name in ["session-cookie-max-age", "session-cookie-expires"] {
        if get(name).is_some() {
            out.warnings
                .push(format!("{name}: the cookie's Max-Age is pinroute's [cookie] max_age, shared by all routes"));
        }
    }
    out.cookie_name = get("session-cookie-name").map(str::to_string);
    out.cookie_path = get("session-cookie-path").map(str::to_string);

    out.connect_timeout = get("proxy-connect-timeout").map(|v| seconds("proxy-connect-timeout", v)).transpose()?;
    out.read_timeout = get("proxy-read-timeout").map(|v| seconds("proxy-read-timeout", v)).transpose()?;
    out.write_timeout = get("proxy-send-timeout").map(|v| seconds("proxy-send-timeout", v)).transpose()?;
    out.max_body = get("proxy-body-size").map(nginx_size).transpose()?;
    if let Some(text) = get("proxy-next-upstream-tries") {
        let tries: usize = text
            .parse()
            .map_err(|_| format!("{PREFIX}proxy-next-upstream-tries: expected a whole number, got {text:?}"))?;
        // nginx: 0 is "no limit"; pinroute tries at most 16 backends.
        out.connect_tries = Some(if tries == 0 { 16 } else { tries.min(16) });
    }
    if let Some(protocol) = get("backend-protocol").filter(|p| !p.eq_ignore_ascii_case("HTTP")) {
        return Err(format!(
            "{PREFIX}backend-protocol {protocol:?} is not supported: pinroute speaks plain HTTP/1.1 to backends"
        ));
    }

    out.rewrite_target = get("rewrite-target").map(str::to_string);
    out.use_regex = flag("use-regex", get("use-regex"))?.unwrap_or(false);
    out.ssl_redirect = flag("ssl-redirect", get("ssl-redirect"))?;
    out.force_ssl_redirect = flag("force-ssl-redirect", get("force-ssl-redirect"))?.unwrap_or(false);

    out.basic = basic_auth(&get)?;
    out.external = external_auth(&get)?;
    Ok(out)
}

fn snippet_refused(name: &str) -> String {
    format!(
        "{PREFIX}{name}: nginx snippets are never executed by pinroute; only the SkyPilot chart's token-bypass \
         auth-snippet and its configuration-snippet are recognised"
    )
}

fn basic_auth<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<BasicAuth>, String> {
    let Some(kind) = get("auth-type") else {
        return Ok(None);
    };
    if kind != "basic" {
        return Err(format!("{PREFIX}auth-type {kind:?} is not supported (only \"basic\")"));
    }
    let secret = get("auth-secret")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{PREFIX}auth-type basic needs {PREFIX}auth-secret"))?;
    let secret_type = match get("auth-secret-type") {
        None | Some("auth-file") => SecretType::AuthFile,
        Some("auth-map") => SecretType::AuthMap,
        Some(other) => {
            return Err(format!("{PREFIX}auth-secret-type {other:?}: expected \"auth-file\" or \"auth-map\""))
        }
    };
    Ok(Some(BasicAuth { secret: secret.to_string(), secret_type, realm: get("auth-realm").map(str::to_string) }))
}

fn external_auth<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Option<ExternalAuth>, String> {
    let token_bypass = match get("auth-snippet") {
        None => false,
        Some(text) if snippet::is_token_bypass(text) => true,
        Some(_) => return Err(snippet_refused("auth-snippet")),
    };
    if let Some(text) = get("configuration-snippet") {
        // The chart's configuration-snippet only forwards what its
        // auth-snippet set; alone it is some other snippet.
        if !(token_bypass && snippet::is_auth_mode_header(text)) {
            return Err(snippet_refused("configuration-snippet"));
        }
    }
    let Some(url) = get("auth-url").filter(|u| !u.is_empty()) else {
        if token_bypass {
            return Err(format!("{PREFIX}auth-snippet (token bypass) needs {PREFIX}auth-url"));
        }
        if get("auth-signin").is_some() || get("auth-response-headers").is_some() {
            return Err(format!("{PREFIX}auth-signin and auth-response-headers need {PREFIX}auth-url"));
        }
        return Ok(None);
    };
    let response_headers = get("auth-response-headers")
        .map(|list| list.split(',').map(str::trim).filter(|h| !h.is_empty()).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Some(ExternalAuth {
        url: url.to_string(),
        signin: get("auth-signin").filter(|s| !s.is_empty()).map(str::to_string),
        response_headers,
        token_bypass,
    }))
}

fn flag(name: &str, value: Option<&str>) -> Result<Option<bool>, String> {
    match value {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!("{PREFIX}{name}: expected \"true\" or \"false\", got {other:?}")),
    }
}

/// ingress-nginx timeouts are whole seconds (`"3600"`); `"3600s"` is accepted too.
fn seconds(name: &str, text: &str) -> Result<u64, String> {
    text.strip_suffix('s')
        .unwrap_or(text)
        .parse()
        .map_err(|_| format!("{PREFIX}{name}: expected whole seconds such as \"3600\", got {text:?}"))
}

/// nginx `client_max_body_size` syntax: bytes, or `k`/`m`/`g` (binary,
/// either case); `0` turns the limit off.
pub(super) fn nginx_size(text: &str) -> Result<u64, String> {
    let bad = || format!("{PREFIX}proxy-body-size: expected a size such as \"1000m\" or \"0\", got {text:?}");
    let (digits, multiplier) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let number: u64 = digits.parse().map_err(|_| bad())?;
    if number == 0 {
        return Ok(u64::MAX);
    }
    number.checked_mul(multiplier).ok_or_else(bad)
}
