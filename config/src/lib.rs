//! pinroute configuration: the TOML file format (`raw`) and the validated,
//! typed [`Config`] every other crate consumes.
//!
//! This crate owns parsing and validation only. It knows nothing of sockets,
//! pingora or Kubernetes clients: a `Config` is plain data, and an invalid one
//! cannot be constructed. Every error names the file, the key and what was
//! expected, so an operator can fix it without reading the source.

#![forbid(unsafe_code)]

mod error;
mod raw;
mod size;
mod typed;

pub use error::ConfigError;
pub use raw::{
    raw_server, raw_static_route, RawAuth, RawBasicAuth, RawConfig, RawCookie, RawIngress, RawOAuth2, RawRoute,
    RawServer, RawTls,
};
pub use size::parse_size;
pub use typed::{
    AllCordoned, AuthSettings, BackendSource, BasicAuthSettings, CertFiles, Config, CookieKey, CookieSettings,
    HealthCheck, HtpasswdSource, IngressSettings as IngressConfig, KeyOrigin, KubernetesSource, LabelRequirement,
    OAuth2Settings, PortRef, RouteConfig, SameSite, ServerSettings, StaticBackend, Timeouts, TlsSettings,
};
