//! Per-route authentication gates, built once per config (and again when an
//! htpasswd file changes), never per request: bcrypt verifications are
//! cached inside, and a rebuild would forget them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use pinroute_config::{Config, HtpasswdSource, RouteConfig};

use crate::auth::htpasswd::{BasicAuth, Challenge, Htpasswd};
use crate::auth::oauth2::OAuth2Gate;

/// Authentication in front of one route.
#[derive(Default)]
pub struct RouteGate {
    /// Basic auth, when configured.
    pub basic: Option<BasicAuth>,
    /// OAuth2 auth-request, when configured.
    pub oauth2: Option<OAuth2Gate>,
    /// The htpasswd file and its modification time, to notice changes.
    pub htpasswd_file: Option<(PathBuf, Option<SystemTime>)>,
}

impl std::fmt::Debug for RouteGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteGate")
            .field("basic", &self.basic.is_some())
            .field("oauth2", &self.oauth2.is_some())
            .field("htpasswd_file", &self.htpasswd_file)
            .finish()
    }
}

/// The gates of every route of a config, indexed like its routes.
pub type Gates = Arc<Vec<RouteGate>>;

/// What the basic-auth gate says about a request.
#[derive(Debug)]
pub enum BasicOutcome {
    /// No basic auth on this route.
    NotConfigured,
    /// Authenticated as this user.
    User(Arc<str>),
    /// 401 with this challenge.
    Denied(Challenge),
}

impl RouteGate {
    /// Checks the `Authorization` header against the route's htpasswd.
    pub fn basic(&self, authorization: Option<&[u8]>, now: Instant) -> BasicOutcome {
        match &self.basic {
            None => BasicOutcome::NotConfigured,
            Some(auth) => match auth.check(authorization, now) {
                Ok(user) => BasicOutcome::User(user),
                Err(challenge) => BasicOutcome::Denied(challenge),
            },
        }
    }
}

/// Builds every route's gate; the error names the route and what is wrong.
pub fn build_gates(config: &Config) -> Result<Gates, String> {
    config
        .routes
        .iter()
        .enumerate()
        .map(|(i, route)| build_gate(config, i, route))
        .collect::<Result<Vec<_>, _>>()
        .map(Arc::new)
}

fn build_gate(config: &Config, index: usize, route: &RouteConfig) -> Result<RouteGate, String> {
    let mut gate = RouteGate::default();
    if let Some(basic) = &route.auth.basic {
        let where_ = format!("{}: route[{index}].auth.basic", config.origin.display());
        let (text, file) = match &basic.htpasswd {
            HtpasswdSource::Inline(text) => (text.clone(), None),
            HtpasswdSource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{where_}: cannot read {}: {e}", path.display()))?;
                (text, Some((path.clone(), modified(path))))
            }
        };
        let htpasswd = Htpasswd::parse(&text, basic.allow_plaintext).map_err(|e| format!("{where_}: {e}"))?;
        gate.basic = Some(BasicAuth::new(htpasswd).with_realm(&basic.realm));
        gate.htpasswd_file = file;
    }
    if let Some(oauth2) = &route.auth.oauth2 {
        let where_ = format!("{}: route[{index}].auth.oauth2", config.origin.display());
        gate.oauth2 = Some(OAuth2Gate::new(oauth2).map_err(|e| format!("{where_}: {e}"))?);
    }
    Ok(gate)
}

/// A file's modification time, if it can be read.
pub fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The current modification times of the htpasswd files behind `gates`.
pub fn gate_mtimes(gates: &[RouteGate]) -> Vec<Option<SystemTime>> {
    gates.iter().filter_map(|g| g.htpasswd_file.as_ref()).map(|(path, _)| modified(path)).collect()
}

/// Whether any htpasswd file behind `gates` changed since it was read.
pub fn files_changed(gates: &[RouteGate]) -> bool {
    gates.iter().filter_map(|g| g.htpasswd_file.as_ref()).any(|(path, seen)| modified(path) != *seen)
}
