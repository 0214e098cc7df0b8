//! Client authentication in front of routes: the checks the SkyPilot Helm
//! chart's ingress did before a request could reach an API server.
//!
//! Each submodule is a pure check over header values and caller-supplied
//! time, so the proxy's request filter stays a thin adapter. Nothing here
//! knows routes, backends or pingora.

pub mod htpasswd;
pub mod oauth2;
