//! The validated configuration. Every field has its final type: durations are
//! [`Duration`], addresses are [`SocketAddr`], prefixes are normalised.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::raw::{RawConfig, RawCookie, RawHealthCheck, RawRoute, RawServer};
use crate::{parse_size, ConfigError};

mod gateway;
mod ingress;
mod kubernetes;
pub use gateway::{AuthSettings, BasicAuthSettings, CertFiles, HtpasswdSource, OAuth2Settings, TlsSettings};
pub use ingress::IngressSettings;
pub use kubernetes::{KubernetesSource, LabelRequirement, PortRef};

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the configuration came from (a file, or `<command line>`).
    pub origin: PathBuf,
    /// Listeners and process settings.
    pub server: ServerSettings,
    /// The sticky cookie.
    pub cookie: CookieSettings,
    /// Routes, in file order (matching picks the longest prefix).
    pub routes: Vec<RouteConfig>,
    /// Ingress-controller mode.
    pub ingress: Option<IngressSettings>,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Client listeners.
    pub listen: Vec<SocketAddr>,
    /// Admin listener; `None` when turned off.
    pub admin: Option<SocketAddr>,
    /// Every admin POST gets 403 (read at start, like the listener itself).
    pub admin_read_only: bool,
    /// Host names, lower case, besides IP addresses and `localhost`, that a
    /// browser may use for the admin listener (DNS-rebinding defence).
    pub admin_hosts: Vec<String>,
    /// How long in-flight requests may run after SIGTERM.
    pub grace_period: Duration,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// Share one work-stealing runtime between the threads (default: one
    /// current-thread runtime per thread, measurably cheaper per request).
    pub work_stealing: bool,
    /// How long an idle client connection (HTTP/1.1 between requests, HTTP/2
    /// without streams) stays open, in whole seconds; `None`: forever.
    pub keepalive_timeout: Option<Duration>,
    /// Unix socket for the SIGQUIT listener hand-off.
    pub upgrade_sock: PathBuf,
    /// PID file.
    pub pid_file: PathBuf,
    /// HTTP/2 without TLS on the plain listeners.
    pub h2c: bool,
    /// Most SkyPilot request ids remembered (least recently used go first).
    pub request_id_capacity: usize,
    /// HTTPS listeners.
    pub tls: Option<TlsSettings>,
}

/// Where the cookie key came from; a generated key is not shared by replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// `cookie.key_file`.
    File,
    /// The `PINROUTE_COOKIE_KEY` environment variable.
    Env,
}

/// The secret that makes cookie values unforgeable and equal on all replicas.
#[derive(Clone, PartialEq, Eq)]
pub struct CookieKey {
    /// Key bytes (at least 16).
    pub bytes: Vec<u8>,
    /// Where it came from.
    pub origin: KeyOrigin,
}

impl std::fmt::Debug for CookieKey {
    // Never print the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CookieKey({:?}, {} bytes)", self.origin, self.bytes.len())
    }
}

/// `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// `SameSite=Lax`.
    Lax,
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=None` (requires `Secure`).
    None,
}

/// `[cookie]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CookieSettings {
    /// Cookie name.
    pub name: String,
    /// `Max-Age`; the sky CLI drops cookies without an expiry.
    pub max_age: Duration,
    /// The shared key; `None` means generate one at start (replicas disagree).
    pub key: Option<CookieKey>,
    /// Add `Secure`.
    pub secure: bool,
    /// `SameSite`, when set.
    pub same_site: Option<SameSite>,
}

/// One static backend: the name as written (its identity) and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticBackend {
    /// As written in the config; hashed into the cookie.
    pub name: String,
    /// Resolved address.
    pub addr: SocketAddr,
}

/// Where a route's backends come from.
#[derive(Debug, Clone, PartialEq)]
pub enum BackendSource {
    /// A fixed list.
    Static(Vec<StaticBackend>),
    /// Pods found by a Kubernetes watch.
    Kubernetes(KubernetesSource),
}

/// Active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheck {
    /// Path probed with GET; `None` turns active checks off.
    pub path: Option<String>,
    /// Time between probes.
    pub interval: Duration,
    /// Probe timeout.
    pub timeout: Duration,
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Between two reads of the response (streams send heartbeats every 30 s).
    pub read: Duration,
    /// Between two writes of the request.
    pub write: Duration,
}

/// What new clients get when no backend of a route is Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllCordoned {
    /// A JSON 503 with `Retry-After` (the upstream upgrade guide's expectation).
    Reject,
    /// Send them to a Draining backend.
    ServeDraining,
}

/// `[[route]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    /// Path prefix, starting and (unless `/`) not ending with `/`.
    pub prefix: String,
    /// Backends.
    pub source: BackendSource,
    /// Active health check.
    pub health: HealthCheck,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Largest request body, in bytes.
    pub max_body: u64,
    /// Backends one request may try when connecting fails.
    pub connect_tries: usize,
    /// Behaviour when no backend is Ready.
    pub when_all_cordoned: AllCordoned,
    /// How long a new request may wait for a Ready backend (zero: off).
    pub hold_for: Duration,
    /// Requests that may wait at once; past it they get the 503 at once.
    pub hold_max: usize,
    /// After this long, pinned clients of a draining backend are re-pinned.
    pub drain_timeout: Option<Duration>,
    /// Only requests for this `Host` (case-insensitive, port ignored).
    pub host: Option<String>,
    /// Forward `<prefix>/x` as `/x`.
    pub strip_prefix: bool,
    /// The sticky cookie's name on this route.
    pub cookie_name: String,
    /// Authentication in front of the backends.
    pub auth: AuthSettings,
    /// Replay once, on a Ready backend, a non-`/api/` request that a
    /// draining backend refused unexecuted with 503 (skypilot's shutdown).
    pub replay_on_draining_503: bool,
    /// Plain-HTTP requests get a 308 to the HTTPS listener (ingress-nginx's
    /// `ssl-redirect`); `[server.tls] redirect_http` does it for every route.
    pub https_redirect: bool,
}

/// Key-path–aware conversion helpers bound to one origin file.
struct Check<'a> {
    file: &'a Path,
}

impl Check<'_> {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::invalid(self.file, key, message)
    }

    fn duration(&self, key: &str, value: Option<&String>, default: Duration) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                self.err(key, format!("expected a duration such as \"30s\" or \"7d\", got {text:?} ({e})"))
            }),
        }
    }

    fn socket(&self, key: &str, text: &str) -> Result<SocketAddr, ConfigError> {
        text.parse().map_err(|_| {
            self.err(key, format!("expected an address \"ip:port\" such as \"0.0.0.0:8080\", got {text:?}"))
        })
    }
}

impl Config {
    /// Reads and validates a TOML file. The cookie key may come from the
    /// `PINROUTE_COOKIE_KEY` environment variable (`env_key`) when the file
    /// names no `key_file`.
    pub fn load(path: &Path, env_key: Option<String>) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_path_buf(), source })?;
        Config::parse(path, &text, env_key)
    }

    /// Validates TOML text that came from `origin`.
    pub fn parse(origin: &Path, text: &str, env_key: Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: origin.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        Config::from_raw(origin, raw, env_key)
    }

    /// Validates an already-deserialised configuration.
    pub fn from_raw(origin: &Path, raw: RawConfig, env_key: Option<String>) -> Result<Config, ConfigError> {
        let check = Check { file: origin };
        let base_dir = origin.parent().unwrap_or(Path::new("."));
        let server = server_settings(&check, &raw.server, base_dir, raw.ingress.is_some())?;
        let cookie = cookie_settings(&check, &raw.cookie, base_dir, env_key)?;
        let ingress = raw.ingress.as_ref().map(|i| ingress::settings(&check, i)).transpose()?;
        if raw.routes.is_empty() && ingress.is_none() {
            return Err(check.err("route", "at least one [[route]] is needed, e.g.\n  [[route]]\n  prefix = \"/\"\n  backends = [\"127.0.0.1:46580\"]"));
        }
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| route_config(&check, i, r, base_dir, &cookie.name))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in routes.iter().enumerate() {
            if a.https_redirect && server.tls.is_none() {
                return Err(check.err(
                    format!("route[{i}].https_redirect"),
                    "there is no HTTPS listener to redirect to: add [server.tls] or drop https_redirect",
                ));
            }
            if let Some(j) = routes[..i].iter().position(|b| b.prefix == a.prefix && b.host == a.host) {
                return Err(check.err(
                    format!("route[{i}].prefix"),
                    format!("prefix {:?} is already used by route[{j}]", a.prefix),
                ));
            }
        }
        Ok(Config { origin: origin.to_path_buf(), server, cookie, routes, ingress })
    }
}

fn server_settings(
    check: &Check<'_>,
    raw: &RawServer,
    base_dir: &Path,
    ingress_mode: bool,
) -> Result<ServerSettings, ConfigError> {
    let listen_text = raw.listen.clone().unwrap_or_else(|| vec!["0.0.0.0:8080".to_string()]);
    if listen_text.is_empty() {
        return Err(check.err("server.listen", "at least one listen address is needed"));
    }
    let listen = listen_text
        .iter()
        .enumerate()
        .map(|(i, t)| check.socket(&format!("server.listen[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    let admin = match raw.admin.as_deref() {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
        Some("off") => None,
        Some(text) => Some(check.socket("server.admin", text)?),
    };
    let admin_hosts = raw
        .admin_hosts
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, name)| {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if plain {
                Ok(name)
            } else {
                Err(check.err(
                    format!("server.admin_hosts[{i}]"),
                    format!("expected a host name such as \"pinroute-admin.internal\" (no scheme, port or path), got {name:?}"),
                ))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let threads = raw.threads.unwrap_or(1);
    if threads == 0 || threads > 256 {
        return Err(check.err("server.threads", format!("expected 1 to 256 worker threads, got {threads}")));
    }
    let request_id_capacity = raw.request_id_capacity.unwrap_or(100_000);
    if request_id_capacity == 0 || request_id_capacity > 10_000_000 {
        return Err(check.err(
            "server.request_id_capacity",
            format!("expected 1 to 10000000 request ids (about 200 bytes each), got {request_id_capacity}"),
        ));
    }
    let tmp = std::env::temp_dir();
    Ok(ServerSettings {
        request_id_capacity,
        listen,
        admin,
        admin_read_only: raw.admin_read_only.unwrap_or(false),
        admin_hosts,
        grace_period: check.duration("server.grace_period", raw.grace_period.as_ref(), Duration::from_secs(30))?,
        threads,
        upgrade_sock: raw.upgrade_sock.as_ref().map(PathBuf::from).unwrap_or_else(|| tmp.join("pinroute_upgrade.sock")),
        pid_file: raw.pid_file.as_ref().map(PathBuf::from).unwrap_or_else(|| tmp.join("pinroute.pid")),
        h2c: raw.h2c.unwrap_or(false),
        work_stealing: raw.work_stealing.unwrap_or(false),
        keepalive_timeout: {
            let d =
                check.duration("server.keepalive_timeout", raw.keepalive_timeout.as_ref(), Duration::from_secs(75))?;
            // pingora counts whole seconds; round up so "500ms" is not "forever".
            (!d.is_zero()).then(|| Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0)))
        },
        tls: raw.tls.as_ref().map(|t| gateway::tls(check, t, base_dir, ingress_mode)).transpose()?,
    })
}

fn cookie_settings(
    check: &Check<'_>,
    raw: &RawCookie,
    base_dir: &Path,
    env_key: Option<String>,
) -> Result<CookieSettings, ConfigError> {
    let name = raw.name.clone().unwrap_or_else(|| "SKYPILOT_ROUTEID".to_string());
    if !valid_cookie_name(&name) {
        return Err(check
            .err("cookie.name", format!("{name:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)")));
    }
    let max_age = check.duration("cookie.max_age", raw.max_age.as_ref(), Duration::from_secs(7 * 24 * 3600))?;
    if max_age.is_zero() {
        return Err(check.err("cookie.max_age", "must be above zero: the sky CLI drops cookies without an expiry"));
    }
    let key = match (&raw.key_file, env_key) {
        (Some(file), _) => {
            let path = base_dir.join(file);
            let bytes = std::fs::read(&path)
                .map_err(|e| check.err("cookie.key_file", format!("cannot read {}: {e}", path.display())))?;
            Some(key_from(check, "cookie.key_file", trim_ascii(&bytes), KeyOrigin::File)?)
        }
        (None, Some(env)) => {
            Some(key_from(check, "PINROUTE_COOKIE_KEY (environment)", env.trim().as_bytes(), KeyOrigin::Env)?)
        }
        (None, None) => None,
    };
    let same_site = match raw.same_site.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => None,
        Some("lax") => Some(SameSite::Lax),
        Some("strict") => Some(SameSite::Strict),
        Some("none") => Some(SameSite::None),
        Some(other) => {
            return Err(
                check.err("cookie.same_site", format!("expected \"lax\", \"strict\" or \"none\", got {other:?}"))
            )
        }
    };
    let secure = raw.secure.unwrap_or(false);
    if same_site == Some(SameSite::None) && !secure {
        return Err(check
            .err("cookie.same_site", "browsers drop SameSite=None cookies without Secure: set cookie.secure = true"));
    }
    Ok(CookieSettings { name, max_age, key, secure, same_site })
}

fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn key_from(check: &Check<'_>, key: &str, bytes: &[u8], origin: KeyOrigin) -> Result<CookieKey, ConfigError> {
    if bytes.len() < 16 {
        return Err(check.err(
            key,
            format!("the cookie key has {} bytes; use at least 16 (e.g. `openssl rand -hex 32`)", bytes.len()),
        ));
    }
    Ok(CookieKey { bytes: bytes.to_vec(), origin })
}

fn route_config(
    check: &Check<'_>,
    index: usize,
    raw: &RawRoute,
    base_dir: &Path,
    default_cookie: &str,
) -> Result<RouteConfig, ConfigError> {
    let key = |k: &str| format!("route[{index}].{k}");
    let prefix = normalise_prefix(raw.prefix.as_deref().unwrap_or("/")).map_err(|m| check.err(key("prefix"), m))?;
    let source = match (&raw.backends, &raw.kubernetes) {
        (Some(_), Some(_)) => {
            return Err(check.err(key("backends"), "give either `backends` or `[route.kubernetes]`, not both"))
        }
        (None, None) => {
            return Err(check.err(
                key("backends"),
                "no backends: give `backends = [\"host:port\", ...]` or a `[route.kubernetes]` table",
            ))
        }
        (Some(list), None) => BackendSource::Static(static_backends(check, index, list)?),
        (None, Some(kube)) => BackendSource::Kubernetes(kubernetes::source(check, &key("kubernetes"), kube)?),
    };
    let health = health_check(check, &key("health_check"), raw.health_check.as_ref())?;
    let timeouts = Timeouts {
        connect: check.duration(&key("connect_timeout"), raw.connect_timeout.as_ref(), Duration::from_secs(3))?,
        read: check.duration(&key("read_timeout"), raw.read_timeout.as_ref(), Duration::from_secs(3600))?,
        write: check.duration(&key("write_timeout"), raw.write_timeout.as_ref(), Duration::from_secs(3600))?,
    };
    let max_body = match &raw.max_body {
        None => 1000 << 20,
        Some(text) => parse_size(text).map_err(|m| check.err(key("max_body"), m))?,
    };
    let connect_tries = raw.connect_tries.unwrap_or(3);
    if !(1..=16).contains(&connect_tries) {
        return Err(check.err(key("connect_tries"), format!("expected 1 to 16, got {connect_tries}")));
    }
    let when_all_cordoned = match raw.when_all_cordoned.as_deref() {
        None | Some("reject") => AllCordoned::Reject,
        Some("serve_draining") => AllCordoned::ServeDraining,
        Some(other) => {
            return Err(check
                .err(key("when_all_cordoned"), format!("expected \"reject\" or \"serve_draining\", got {other:?}")))
        }
    };
    let drain_timeout = match &raw.drain_timeout {
        None => None,
        Some(_) => Some(check.duration(&key("drain_timeout"), raw.drain_timeout.as_ref(), Duration::ZERO)?)
            .filter(|d| !d.is_zero()),
    };
    Ok(RouteConfig {
        prefix,
        source,
        health,
        timeouts,
        max_body,
        connect_tries,
        when_all_cordoned,
        hold_for: check.duration(&key("hold_for"), raw.hold_for.as_ref(), Duration::ZERO)?,
        hold_max: raw.hold_max.unwrap_or(1024),
        drain_timeout,
        replay_on_draining_503: raw.replay_on_draining_503.unwrap_or(true),
        https_redirect: raw.https_redirect.unwrap_or(false),
        host: raw.host.as_ref().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()),
        strip_prefix: raw.strip_prefix.unwrap_or(false),
        cookie_name: match &raw.cookie_name {
            None => default_cookie.to_string(),
            Some(name) if valid_cookie_name(name) => name.clone(),
            Some(name) => return Err(check.err(key("cookie_name"), format!("{name:?} is not a valid cookie name"))),
        },
        auth: gateway::auth(check, &key("auth"), raw.auth.as_ref(), base_dir)?,
    })
}

/// `/a/b/` → `/a/b`; must start with `/`; no dot segments, no `//`.
fn normalise_prefix(text: &str) -> Result<String, String> {
    if !text.starts_with('/') {
        return Err(format!("a prefix starts with '/', got {text:?}"));
    }
    let trimmed = text.trim_end_matches('/');
    if trimmed.split('/').skip(1).any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains('%')) {
        return Err(format!(
            "{text:?} has an empty, dot or percent-encoded segment; write it plainly, e.g. \"/first-server\""
        ));
    }
    Ok(if trimmed.is_empty() { "/".to_string() } else { trimmed.to_string() })
}

fn static_backends(check: &Check<'_>, index: usize, list: &[String]) -> Result<Vec<StaticBackend>, ConfigError> {
    if list.is_empty() {
        return Err(check.err(format!("route[{index}].backends"), "the list is empty; name at least one \"host:port\""));
    }
    let mut out: Vec<StaticBackend> = Vec::with_capacity(list.len());
    for (i, name) in list.iter().enumerate() {
        let key = format!("route[{index}].backends[{i}]");
        let addr = name
            .to_socket_addrs()
            .map_err(|e| check.err(&key, format!("expected \"host:port\", got {name:?} ({e})")))?
            .next()
            .ok_or_else(|| check.err(&key, format!("{name:?} resolves to no address")))?;
        if out.iter().any(|b| b.name == *name) {
            return Err(check.err(&key, format!("{name:?} is listed twice")));
        }
        out.push(StaticBackend { name: name.clone(), addr });
    }
    Ok(out)
}

fn health_check(check: &Check<'_>, key: &str, raw: Option<&RawHealthCheck>) -> Result<HealthCheck, ConfigError> {
    let empty = RawHealthCheck::default();
    let raw = raw.unwrap_or(&empty);
    let path = if raw.enabled == Some(false) {
        None
    } else {
        Some(raw.path.clone().unwrap_or_else(|| "/api/health".to_string()))
    };
    if let Some(p) = &path {
        if !p.starts_with('/') {
            return Err(check.err(format!("{key}.path"), format!("a path starts with '/', got {p:?}")));
        }
    }
    let interval = check.duration(&format!("{key}.interval"), raw.interval.as_ref(), Duration::from_secs(5))?;
    let timeout = check.duration(&format!("{key}.timeout"), raw.timeout.as_ref(), Duration::from_secs(2))?;
    if interval.is_zero() || timeout.is_zero() {
        return Err(check.err(key, "interval and timeout must be above zero"));
    }
    Ok(HealthCheck { path, interval, timeout })
}

#[cfg(test)]
mod tests;
