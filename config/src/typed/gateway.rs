//! Gateway settings: TLS listeners and per-route authentication.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Check;
use crate::raw::{RawAuth, RawTls};
use crate::ConfigError;

/// `[server.tls]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// HTTPS listeners.
    pub listen: Vec<SocketAddr>,
    /// The certificate from files, served for every name that no Ingress
    /// `spec.tls` Secret covers. `None` only in ingress mode.
    pub default_cert: Option<CertFiles>,
    /// Plain-HTTP requests get a 308 to HTTPS.
    pub redirect_http: bool,
}

/// `cert_file` and `key_file` of `[server.tls]`, re-read when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

/// Where htpasswd lines come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtpasswdSource {
    /// Inline, as the chart's `ingress.authCredentials`.
    Inline(String),
    /// A file, reloaded when it changes.
    File(PathBuf),
}

/// `[route.auth.basic]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicAuthSettings {
    /// The credentials.
    pub htpasswd: HtpasswdSource,
    /// `WWW-Authenticate` realm.
    pub realm: String,
    /// Accept plaintext passwords.
    pub allow_plaintext: bool,
}

/// `[route.auth.oauth2]`: the ingress-nginx `auth-url` / `auth-signin` contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuth2Settings {
    /// Sub-request target, `http://` or `https://`.
    pub auth_url: String,
    /// Sign-in redirect for browsers; `$host`, `$escaped_request_uri` expanded.
    pub signin_url: Option<String>,
    /// Headers of the auth answer copied upstream (lower-case).
    pub response_headers: Vec<String>,
    /// `Authorization` prefix that skips the sub-request (service-account tokens).
    pub token_bypass_prefix: Option<String>,
    /// Sub-request timeout.
    pub timeout: Duration,
    /// Allow decisions cached this long per credentials (zero: off).
    pub cache: Duration,
}

/// `[route.auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuthSettings {
    /// Basic auth.
    pub basic: Option<BasicAuthSettings>,
    /// OAuth2 auth-request.
    pub oauth2: Option<OAuth2Settings>,
}

/// `[server.tls]`. `ingress_mode`: Ingress Secrets may supply every
/// certificate, so the files are optional.
pub(super) fn tls(
    check: &Check<'_>,
    raw: &RawTls,
    base_dir: &Path,
    ingress_mode: bool,
) -> Result<TlsSettings, ConfigError> {
    let listen_text = raw.listen.clone().unwrap_or_else(|| vec!["0.0.0.0:8443".to_string()]);
    // No listener would serve the certificates, and `redirect_http` would send
    // clients to port 443, where nothing of ours listens.
    if listen_text.is_empty() {
        return Err(check.err(
            "server.tls.listen",
            "empty: nothing would serve HTTPS (and redirect_http would point at nothing); give an address such as \
             \"0.0.0.0:8443\", or drop [server.tls]",
        ));
    }
    let listen = listen_text
        .iter()
        .enumerate()
        .map(|(i, t)| check.socket(&format!("server.tls.listen[{i}]"), t))
        .collect::<Result<Vec<_>, _>>()?;
    let file = |key: &str, value: &Option<String>| -> Result<PathBuf, ConfigError> {
        let value = value.as_ref().ok_or_else(|| {
            let also =
                if ingress_mode { " (or neither: Ingress spec.tls Secrets then supply every certificate)" } else { "" };
            check.err(format!("server.tls.{key}"), format!("missing: give a PEM file path{also}"))
        })?;
        let path = base_dir.join(value);
        if !path.is_file() {
            return Err(check.err(format!("server.tls.{key}"), format!("{} is not a readable file", path.display())));
        }
        Ok(path)
    };
    let default_cert = if ingress_mode && raw.cert_file.is_none() && raw.key_file.is_none() {
        None
    } else {
        Some(CertFiles { cert_file: file("cert_file", &raw.cert_file)?, key_file: file("key_file", &raw.key_file)? })
    };
    Ok(TlsSettings { listen, default_cert, redirect_http: raw.redirect_http.unwrap_or(false) })
}

pub(super) fn auth(
    check: &Check<'_>,
    key: &str,
    raw: Option<&RawAuth>,
    base_dir: &Path,
) -> Result<AuthSettings, ConfigError> {
    let Some(raw) = raw else { return Ok(AuthSettings::default()) };
    let basic = match &raw.basic {
        None => None,
        Some(b) => {
            let htpasswd = match (&b.htpasswd, &b.htpasswd_file) {
                (Some(_), Some(_)) => return Err(check.err(format!("{key}.basic"), "give `htpasswd` or `htpasswd_file`, not both")),
                (None, None) => return Err(check.err(format!("{key}.basic"), "missing credentials: `htpasswd = \"user:hash\"` (from `htpasswd -nb user pass`) or `htpasswd_file`")),
                (Some(text), None) => HtpasswdSource::Inline(text.clone()),
                (None, Some(file)) => HtpasswdSource::File(base_dir.join(file)),
            };
            Some(BasicAuthSettings {
                htpasswd,
                realm: b.realm.clone().unwrap_or_else(|| "SkyPilot API Server".to_string()),
                allow_plaintext: b.allow_plaintext.unwrap_or(false),
            })
        }
    };
    let oauth2 = match &raw.oauth2 {
        None => None,
        Some(o) => {
            let auth_url = o.auth_url.clone().ok_or_else(|| {
                check.err(format!("{key}.oauth2.auth_url"), "missing: e.g. \"http://oauth2-proxy:4180/oauth2/auth\"")
            })?;
            let parsed: http::Uri =
                auth_url.parse().map_err(|e| check.err(format!("{key}.oauth2.auth_url"), format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme_str(), Some("http") | Some("https")) || parsed.host().is_none() {
                return Err(
                    check.err(format!("{key}.oauth2.auth_url"), "expected an http:// or https:// URL with a host")
                );
            }
            let mut response_headers = Vec::new();
            for (i, name) in o.response_headers.clone().unwrap_or_default().iter().enumerate() {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(check
                        .err(format!("{key}.oauth2.response_headers[{i}]"), format!("{name:?} is not a header name")));
                }
                response_headers.push(name.to_ascii_lowercase());
            }
            Some(OAuth2Settings {
                auth_url,
                signin_url: o.signin_url.clone(),
                response_headers,
                token_bypass_prefix: o.token_bypass_prefix.clone().filter(|p| !p.is_empty()),
                timeout: check.duration(
                    &format!("{key}.oauth2.timeout"),
                    o.timeout.as_ref(),
                    Duration::from_secs(5),
                )?,
                cache: check.duration(&format!("{key}.oauth2.cache"), o.cache.as_ref(), Duration::ZERO)?,
            })
        }
    };
    Ok(AuthSettings { basic, oauth2 })
}
