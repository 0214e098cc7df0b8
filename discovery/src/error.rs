//! Errors of the discovery sources.

/// Why a source could not start or keep going.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// No usable Kubernetes credentials (in-cluster or kubeconfig).
    #[error("kubernetes credentials: {0}")]
    Credentials(String),
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Api(String),
}
