//! Config reload on SIGHUP and when the file changes: load, validate, diff,
//! swap. An invalid file keeps the running config and logs exactly what is
//! wrong; open connections are never dropped by a reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pinroute_config::Config;

use crate::events::EventKind;
use crate::gateway::{build_gates, files_changed, gate_mtimes};
use crate::state::Shared;
use crate::tls::ReloadingCert;

/// How often the file's modification time is checked.
const POLL: Duration = Duration::from_secs(1);

/// The reload background service.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    env_key: Option<String>,
    failed_gates: std::sync::Mutex<Option<Vec<Option<SystemTime>>>>,
    cert: Option<Arc<ReloadingCert>>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new config is in force.
    Applied,
    /// Nothing changed.
    Unchanged,
    /// The file is invalid; the old config stays.
    Rejected(String),
}

impl Reloader {
    /// Reloads `path` into `shared`.
    pub fn new(
        shared: Arc<Shared>,
        path: PathBuf,
        env_key: Option<String>,
        cert: Option<Arc<ReloadingCert>>,
    ) -> Reloader {
        Reloader { shared, path, env_key, failed_gates: std::sync::Mutex::new(None), cert }
    }

    /// Loads, validates and applies the file once.
    pub fn reload(&self) -> ReloadOutcome {
        let new = match Config::load(&self.path, self.env_key.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "config reload rejected; keeping the running config");
                self.shared.events.record(EventKind::ReloadRefused, None, None, e.to_string());
                return ReloadOutcome::Rejected(e.to_string());
            }
        };
        let old = self.shared.file_config();
        if *old == new {
            return ReloadOutcome::Unchanged;
        }
        if old.server != new.server {
            tracing::warn!(
                "[server] changes (listeners, admin, threads, …) take effect on restart or SIGQUIT upgrade only"
            );
        }
        let routes: Vec<String> = new.routes.iter().map(|r| r.prefix.clone()).collect();
        if let Err(e) = self.shared.apply_file_config(new) {
            tracing::error!(error = %e, "config reload rejected; keeping the running config");
            self.shared.restore_file_config(old);
            self.shared.events.record(EventKind::ReloadRefused, None, None, e.clone());
            return ReloadOutcome::Rejected(e);
        }
        tracing::info!(?routes, file = %self.path.display(), "config reloaded");
        self.shared.events.record(EventKind::ReloadApplied, None, None, format!("routes {}", routes.join(", ")));
        ReloadOutcome::Applied
    }

    /// Rebuilds the auth gates from the running config (an htpasswd file changed).
    fn reload_gates(&self) {
        match build_gates(&self.shared.config()) {
            Ok(gates) => {
                self.shared.replace_gates(gates);
                tracing::info!("htpasswd reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "htpasswd reload rejected; keeping the old credentials");
                // Remember the broken version so it is not re-read every second.
                if let Ok(mut failed) = self.failed_gates.lock() {
                    *failed = Some(gate_mtimes(&self.shared.gates()));
                }
            }
        }
    }

    /// Picks up a renewed certificate; a broken pair keeps the old one.
    fn reload_cert(&self) {
        let Some(cert) = &self.cert else { return };
        match cert.reload_if_changed() {
            Ok(true) => tracing::info!(cert = %cert.cert_path().display(), "TLS certificate reloaded"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "TLS certificate reload failed; serving the previous one"),
        }
    }

    fn already_failed(&self) -> bool {
        let now = gate_mtimes(&self.shared.gates());
        self.failed_gates.lock().map(|f| f.as_ref() == Some(&now)).unwrap_or(false)
    }

    fn modified(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; reloads only on file change");
                return;
            }
        };
        let mut seen = self.modified();
        loop {
            tokio::select! {
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading config");
                    seen = self.modified();
                    self.reload();
                }
                _ = tokio::time::sleep(POLL) => {
                    let now = self.modified();
                    if now != seen {
                        seen = now;
                        self.reload();
                    } else if files_changed(&self.shared.gates()) && !self.already_failed() {
                        self.reload_gates();
                    }
                    self.reload_cert();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
