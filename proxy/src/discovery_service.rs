//! Runs the Kubernetes pod watches as a pingora background service, so the
//! kube client (and its tokio resources) is created after the server started.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pinroute_config::BackendSource;
use pinroute_discovery::{infer_client, ErrorHook, KubeSource};

use crate::state::Shared;

/// Longest wait between two attempts to build a client.
const CREDENTIALS_RETRY_MAX: Duration = Duration::from_secs(30);

/// The pod watches of every Kubernetes route.
#[derive(Debug)]
pub struct KubeDiscovery {
    shared: Arc<Shared>,
    sources: Vec<KubeSource>,
}

impl KubeDiscovery {
    /// `None` when no route uses Kubernetes.
    pub fn for_config(shared: Arc<Shared>) -> Option<KubeDiscovery> {
        let snapshot = shared.snapshot();
        let sources: Vec<KubeSource> = snapshot
            .config
            .routes
            .iter()
            .enumerate()
            .filter_map(|(route, rc)| match &rc.source {
                BackendSource::Kubernetes(source) => Some(KubeSource {
                    route,
                    source: source.clone(),
                }),
                BackendSource::Static(_) => None,
            })
            .collect();
        (!sources.is_empty()).then_some(KubeDiscovery { shared, sources })
    }

    async fn watch_all(&self) {
        let metrics = self.shared.metrics.clone();
        let on_error: ErrorHook = Arc::new(move |_| metrics.discovery_errors.inc());
        let mut delay = Duration::from_secs(1);
        let client = loop {
            match infer_client().await {
                Ok(client) => break client,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "no Kubernetes client; /readyz stays false");
                    on_error(&e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(CREDENTIALS_RETRY_MAX);
                }
            }
        };
        let Some(publisher) = self.shared.publisher().cloned() else {
            return;
        };
        let watches = self
            .sources
            .iter()
            .cloned()
            .map(|source| source.run(client.clone(), publisher.clone(), on_error.clone()));
        join_all(watches).await;
    }
}

#[async_trait]
impl BackgroundService for KubeDiscovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.watch_all() => {}
            _ = shutdown.changed() => {}
        }
    }
}
