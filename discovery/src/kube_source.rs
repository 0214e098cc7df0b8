//! Kubernetes Pod discovery. Watches the Pods of a namespace matching a
//! route's *base* selector (not the readiness label), so a cordoned pod stays
//! visible and becomes Draining instead of vanishing, as it does for an
//! Endpoints-based ingress.
//!
//! `pod_to_backend` is the pure mapping (unit-tested); `KubeSource::run` is
//! the thin I/O shell around kube-runtime's watcher (list, watch, bookmarks,
//! relist on 410 Gone, backoff), feeding the same fold as static backends.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use pinroute_config::{KubernetesSource, PortRef};

use crate::backend::{DiscoveredBackend, Lifecycle};
use crate::error::DiscoveryError;
use crate::fold::DiscoveryEvent;
use crate::publisher::Publisher;

/// Called with a description of every discovery error (for a metric).
pub type ErrorHook = Arc<dyn Fn(&DiscoveryError) + Send + Sync>;

/// What a pod means for routing; `None` when it cannot be routed to at all
/// (no IP, no such port, finished): the caller treats that as Gone.
pub fn pod_to_backend(pod: &Pod, source: &KubernetesSource) -> Option<DiscoveredBackend> {
    let meta = &pod.metadata;
    let uid = meta.uid.as_deref()?;
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let port = match &source.port {
        PortRef::Number(n) => *n,
        PortRef::Name(name) => named_port(pod, name)?,
    };
    let labelled_ready =
        meta.labels.as_ref().and_then(|l| l.get(&source.ready_key)).is_some_and(|v| *v == source.ready_value);
    let condition_ready =
        status.conditions.as_ref().is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let lifecycle = if !condition_ready {
        Lifecycle::NotReady
    } else if meta.deletion_timestamp.is_some() || !labelled_ready {
        // Cordoned (label removed) or terminating: keep serving the clients
        // pinned here and every open stream; take no new client.
        Lifecycle::Draining
    } else {
        Lifecycle::Ready
    };
    Some(DiscoveredBackend {
        identity: uid.into(),
        id: format!("{}/{}", meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or("")).into(),
        addr: SocketAddr::new(ip, port),
        lifecycle,
    })
}

fn named_port(pod: &Pod, name: &str) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// Backoff between watch retries: 200 ms doubling to 5 s, reset by any
/// successful event; none after a 410 Gone, which only asks for a relist. kube's default grows to 30 s, which would leave a
/// routing table stale for half a minute after a short API-server outage.
#[derive(Debug, Clone, Copy)]
struct WatchBackoff {
    next: Duration,
}

const WATCH_BACKOFF_FIRST: Duration = Duration::from_millis(200);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        WatchBackoff { next: WATCH_BACKOFF_FIRST }
    }
}

impl WatchBackoff {
    /// The wait before the next retry.
    fn grow(&mut self) -> Duration {
        let current = self.next;
        self.next = (current * 2).min(WATCH_BACKOFF_MAX);
        current
    }
}

/// The watch of one Kubernetes route.
#[derive(Debug, Clone)]
pub struct KubeSource {
    /// Route index in the config.
    pub route: usize,
    /// What to watch.
    pub source: KubernetesSource,
}

impl KubeSource {
    /// Watches until the future is dropped: every change is folded into
    /// `publisher`. Watch errors keep the last table (the watcher retries with
    /// backoff and relists on 410 Gone; a relist replaces the set without
    /// emptying it first) and are reported to `on_error`.
    pub async fn run(self, client: Client, publisher: Arc<Publisher>, on_error: ErrorHook) {
        let api: Api<Pod> = Api::namespaced(client, &self.source.namespace);
        let config = watcher::Config::default().labels(&self.source.selector);
        let mut events = watcher::watcher(api, config).boxed();
        let mut backoff = WatchBackoff::default();
        let mut listing: Vec<DiscoveredBackend> = Vec::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listing.clear(),
                Ok(Event::InitApply(pod)) => listing.extend(pod_to_backend(&pod, &self.source)),
                Ok(Event::InitDone) => {
                    tracing::info!(route = self.route, pods = listing.len(), namespace = %self.source.namespace, selector = %self.source.selector, "pods listed");
                    publisher
                        .publish(DiscoveryEvent::Replace { route: self.route, backends: std::mem::take(&mut listing) });
                }
                Ok(Event::Apply(pod)) => publisher.publish(self.change(&pod)),
                Ok(Event::Delete(pod)) => {
                    if let Some(uid) = pod.metadata.uid.as_deref() {
                        tracing::info!(
                            route = self.route,
                            pod = pod.metadata.name.as_deref().unwrap_or(""),
                            "pod deleted"
                        );
                        publisher.publish(DiscoveryEvent::Remove { route: self.route, identity: uid.into() });
                    }
                }
                Err(e) => {
                    let expired = matches!(&e, watcher::Error::WatchError(status) if status.code == 410);
                    let error = DiscoveryError::Api(e.to_string());
                    tracing::warn!(route = self.route, error = %error, "pod watch error; routing on the last table");
                    on_error(&error);
                    // 410 Gone: the watcher relists at once; anything else
                    // waits, growing, so an unreachable API server is not hammered.
                    if !expired {
                        tokio::time::sleep(backoff.grow()).await;
                    }
                    continue;
                }
            }
            backoff = WatchBackoff::default();
        }
    }

    fn change(&self, pod: &Pod) -> DiscoveryEvent {
        match pod_to_backend(pod, &self.source) {
            Some(backend) => {
                tracing::debug!(route = self.route, pod = %backend.id, lifecycle = ?backend.lifecycle, "pod changed");
                DiscoveryEvent::Upsert { route: self.route, backend }
            }
            None => {
                DiscoveryEvent::Remove { route: self.route, identity: pod.metadata.uid.as_deref().unwrap_or("").into() }
            }
        }
    }
}

/// A client from in-cluster config or `KUBECONFIG` / `~/.kube/config`, as
/// kubectl finds them.
pub async fn infer_client() -> Result<Client, DiscoveryError> {
    let config = kube::Config::infer().await.map_err(|e| DiscoveryError::Credentials(e.to_string()))?;
    Client::try_from(config).map_err(|e| DiscoveryError::Credentials(e.to_string()))
}

#[cfg(test)]
mod tests;
