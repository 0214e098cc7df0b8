//! What a source says about one backend, and the state the router sees.

use std::net::SocketAddr;
use std::sync::Arc;

/// What the source (static list or Kubernetes) says about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Takes new clients.
    Ready,
    /// Cordoned (readiness label removed) or terminating: serves its pinned
    /// clients and open streams, takes no new client.
    Draining,
    /// Removed from a static config by a reload: finishes the work it owns
    /// (request ids, open streams) but serves neither new nor pinned clients.
    Retiring,
    /// Exists but is not Ready (container not ready): nothing is sent there.
    NotReady,
    /// Deleted or lost its address; kept briefly so the admin view shows it.
    Gone,
}

/// The state the router acts on: the source's [`Lifecycle`] combined with
/// the proxy's own observations (passive failures, health checks, operator drain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// New and pinned clients.
    Ready,
    /// Pinned clients only.
    Draining,
    /// Nothing; pinned clients are re-pinned.
    Down,
    /// Nothing; the backend no longer exists.
    Gone,
}

impl BackendState {
    /// Lower-case name used in the admin API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Ready => "ready",
            BackendState::Draining => "draining",
            BackendState::Down => "down",
            BackendState::Gone => "gone",
        }
    }

    /// Every state, for exporting one gauge per state.
    pub const ALL: [BackendState; 4] =
        [BackendState::Ready, BackendState::Draining, BackendState::Down, BackendState::Gone];

    /// Whether clients pinned here may still be sent here.
    pub fn serves_pinned(self) -> bool {
        matches!(self, BackendState::Ready | BackendState::Draining)
    }
}

/// One backend as a source reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredBackend {
    /// Stable identity hashed into the cookie: the pod UID, or `host:port`
    /// as written for static backends. Survives relabels.
    pub identity: Arc<str>,
    /// Human name for the admin API: `namespace/name` or `host:port`.
    pub id: Arc<str>,
    /// Where to connect.
    pub addr: SocketAddr,
    /// What the source says.
    pub lifecycle: Lifecycle,
}
