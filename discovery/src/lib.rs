//! pinroute discovery: the backend model and its states, the sources that
//! find backends (a static list, a Kubernetes Pod watch), and the pure fold
//! of their events into an immutable [`RoutingTable`].
//!
//! This crate owns *which backends exist and what state they are in*. It
//! knows nothing of HTTP requests, cookies or pingora: the proxy loads one
//! published table per request and decides there. Only this crate knows kube.

#![forbid(unsafe_code)]

mod backend;
mod error;
mod fold;
mod ingress;
mod ingress_source;
mod kube_source;
mod publisher;
mod runtime;
mod static_source;

pub use backend::{BackendState, DiscoveredBackend, Lifecycle};
pub use error::DiscoveryError;
pub use fold::{apply, BackendEntry, DiscoveryEvent, RouteBackends, RoutingTable};
pub use ingress::{
    translate, IngressInputs, IngressSettings, Rejection, TlsFromSecret, Translation, CHART_AUTH_SNIPPET,
    CHART_CONFIGURATION_SNIPPET,
};
pub use ingress_source::{IngressSource, TranslationHook};
pub use kube::Client as KubeClient;
pub use kube_source::{infer_client, pod_to_backend, ErrorHook, KubeSource};
pub use publisher::{Publisher, TableListener};
pub use runtime::{BackendRuntime, InFlightGuard, PassiveHealth};
pub use static_source::static_backends;
