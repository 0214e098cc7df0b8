//! The configuration file exactly as written: strings and options, checked
//! only for shape (unknown keys are errors). [`crate::Config`] gives it meaning.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`: listeners, admin, shutdown.
    #[serde(default)]
    pub server: RawServer,
    /// `[cookie]`: the sticky cookie shared by all routes.
    #[serde(default)]
    pub cookie: RawCookie,
    /// `[[route]]`: one entry per API server.
    #[serde(default, rename = "route")]
    pub routes: Vec<RawRoute>,
    /// `[ingress]`: serve routes from Kubernetes Ingress objects too.
    pub ingress: Option<RawIngress>,
}

/// `[ingress]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngress {
    /// The IngressClass served (`spec.ingressClassName`).
    pub class: Option<String>,
    /// Other classes adopted (e.g. the chart's oauth2-proxy Ingress, class `nginx`)...
    pub adopt_classes: Option<Vec<String>>,
    /// ...only in these namespaces.
    pub adopt_namespaces: Option<Vec<String>>,
    /// Namespace watched; all namespaces when absent.
    pub namespace: Option<String>,
    /// The readiness label (`key=value`) whose removal cordons a pod.
    pub ready_label: Option<String>,
    /// Address written into served Ingresses' `status.loadBalancer`.
    pub status_address: Option<String>,
}

/// `[server]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Client listeners, `"ip:port"`.
    pub listen: Option<Vec<String>>,
    /// Admin listener `"ip:port"`, or `"off"`.
    pub admin: Option<String>,
    /// Refuse every admin POST (drain, undrain); the dashboard hides its buttons.
    pub admin_read_only: Option<bool>,
    /// Host names (besides IP addresses and `localhost`) a browser may reach the admin listener by.
    pub admin_hosts: Option<Vec<String>>,
    /// How long in-flight requests may run after SIGTERM.
    pub grace_period: Option<String>,
    /// Worker threads of the proxy service.
    pub threads: Option<usize>,
    /// One work-stealing runtime for all threads instead of one runtime per thread.
    pub work_stealing: Option<bool>,
    /// How long an idle keep-alive client connection is kept open.
    pub keepalive_timeout: Option<String>,
    /// Unix socket for the SIGQUIT listener hand-off.
    pub upgrade_sock: Option<String>,
    /// PID file.
    pub pid_file: Option<String>,
    /// Accept HTTP/2 without TLS (h2c, prior knowledge) on the plain listeners.
    pub h2c: Option<bool>,
    /// Most SkyPilot request ids remembered for request-id routing.
    pub request_id_capacity: Option<usize>,
    /// `[server.tls]`: HTTPS listeners.
    pub tls: Option<RawTls>,
}

/// `[server.tls]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// HTTPS listeners, `"ip:port"`.
    pub listen: Option<Vec<String>>,
    /// PEM certificate chain; reloaded when it changes.
    pub cert_file: Option<String>,
    /// PEM private key; reloaded when it changes.
    pub key_file: Option<String>,
    /// Answer plain-HTTP requests with a redirect to HTTPS.
    pub redirect_http: Option<bool>,
}

/// `[cookie]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCookie {
    /// Cookie name.
    pub name: Option<String>,
    /// `Max-Age`, as a duration.
    pub max_age: Option<String>,
    /// File holding the shared key.
    pub key_file: Option<String>,
    /// Add `Secure`.
    pub secure: Option<bool>,
    /// `SameSite`: `lax`, `strict` or `none`.
    pub same_site: Option<String>,
}

/// `[[route]]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Path prefix this route serves.
    pub prefix: Option<String>,
    /// Static backends, `"host:port"`.
    pub backends: Option<Vec<String>>,
    /// Kubernetes pod discovery instead of static backends.
    pub kubernetes: Option<RawKubernetes>,
    /// Match only requests for this `Host`.
    pub host: Option<String>,
    /// Remove the prefix before forwarding (`/second-server/api/health` → `/api/health`).
    pub strip_prefix: Option<bool>,
    /// Cookie name for this route (default: `[cookie] name`).
    pub cookie_name: Option<String>,
    /// `[route.auth]`.
    pub auth: Option<RawAuth>,
    /// `[route.health_check]`.
    pub health_check: Option<RawHealthCheck>,
    /// Upstream connect timeout.
    pub connect_timeout: Option<String>,
    /// Upstream read timeout (between two reads of a response).
    pub read_timeout: Option<String>,
    /// Upstream write timeout.
    pub write_timeout: Option<String>,
    /// Largest request body accepted.
    pub max_body: Option<String>,
    /// How many backends one request may try when connecting fails.
    pub connect_tries: Option<usize>,
    /// What new clients get when no backend is Ready: `reject` or `serve_draining`.
    pub when_all_cordoned: Option<String>,
    /// How long a new request may wait for a Ready backend.
    pub hold_for: Option<String>,
    /// How many requests may wait at once.
    pub hold_max: Option<usize>,
    /// After this long, pinned clients of a draining backend are re-pinned.
    pub drain_timeout: Option<String>,
    /// Replay a request a draining backend refused with 503 on a Ready one.
    pub replay_on_draining_503: Option<bool>,
    /// Redirect plain-HTTP requests to HTTPS.
    pub https_redirect: Option<bool>,
}

/// `[route.kubernetes]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKubernetes {
    /// Namespace to watch.
    pub namespace: Option<String>,
    /// Base label selector: which pods belong to the route.
    pub selector: Option<String>,
    /// `key=value` label whose removal cordons a pod.
    pub ready_label: Option<String>,
    /// Container port, a number or a name.
    pub port: Option<toml::Value>,
}

/// `[route.health_check]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// Turn active checks off with `false`.
    pub enabled: Option<bool>,
    /// Path probed with GET.
    pub path: Option<String>,
    /// Time between probes.
    pub interval: Option<String>,
    /// Probe timeout.
    pub timeout: Option<String>,
}

/// `[server]` with listeners and admin set, the rest default (quick mode, demo).
pub fn raw_server(listen: Vec<String>, admin: Option<String>) -> RawServer {
    RawServer { listen: Some(listen), admin, ..RawServer::default() }
}

/// A `[[route]]` over static backends, the rest default (quick mode, demo).
pub fn raw_static_route(prefix: &str, backends: Vec<String>) -> RawRoute {
    RawRoute { prefix: Some(prefix.to_string()), backends: Some(backends), ..RawRoute::default() }
}

/// `[route.auth]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    /// `[route.auth.basic]`.
    pub basic: Option<RawBasicAuth>,
    /// `[route.auth.oauth2]`.
    pub oauth2: Option<RawOAuth2>,
}

/// `[route.auth.basic]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// htpasswd lines inline (the chart's `authCredentials`).
    pub htpasswd: Option<String>,
    /// An htpasswd file, reloaded when it changes.
    pub htpasswd_file: Option<String>,
    /// `WWW-Authenticate` realm.
    pub realm: Option<String>,
    /// Accept plaintext passwords in the htpasswd content.
    pub allow_plaintext: Option<bool>,
}

/// `[route.auth.oauth2]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOAuth2 {
    /// The auth-request endpoint (oauth2-proxy's `/oauth2/auth`).
    pub auth_url: Option<String>,
    /// Where browsers are sent to sign in; `$host` and `$escaped_request_uri` are expanded.
    pub signin_url: Option<String>,
    /// Headers of a 2xx auth answer copied onto the upstream request.
    pub response_headers: Option<Vec<String>>,
    /// `Authorization` values with this prefix skip the sub-request.
    pub token_bypass_prefix: Option<String>,
    /// Sub-request timeout.
    pub timeout: Option<String>,
    /// How long an allow decision is cached per cookie/authorization ("0s": off).
    pub cache: Option<String>,
}
