//! Runs the Kubernetes pod watches as a pingora background service, so the
//! kube client (and its tokio resources) is created after the server started.
//! The watches restart when a reload changes the config.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pinroute_config::{BackendSource, Config};
use pinroute_discovery::{infer_client, ErrorHook, KubeSource};

use crate::state::Shared;

/// Longest wait between two attempts to build a client.
const CREDENTIALS_RETRY_MAX: Duration = Duration::from_secs(30);

/// The pod watches of every Kubernetes route.
#[derive(Debug)]
pub struct KubeDiscovery {
    shared: Arc<Shared>,
}

fn sources(config: &Config) -> Vec<KubeSource> {
    config
        .routes
        .iter()
        .enumerate()
        .filter_map(|(route, rc)| match &rc.source {
            BackendSource::Kubernetes(source) => Some(KubeSource { route, source: source.clone() }),
            BackendSource::Static(_) => None,
        })
        .collect()
}

impl KubeDiscovery {
    /// Watches for the Kubernetes routes of the current and future configs.
    pub fn new(shared: Arc<Shared>) -> KubeDiscovery {
        KubeDiscovery { shared }
    }

    async fn client(&self, on_error: &ErrorHook) -> pinroute_discovery::KubeClient {
        let mut delay = Duration::from_secs(1);
        loop {
            match infer_client().await {
                Ok(client) => return client,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "no Kubernetes client; /readyz stays false");
                    on_error(&e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(CREDENTIALS_RETRY_MAX);
                }
            }
        }
    }

    async fn run(&self) {
        let metrics = self.shared.metrics.clone();
        let on_error: ErrorHook = Arc::new(move |_| metrics.discovery_errors.inc());
        let mut generation = self.shared.config_generation.subscribe();
        let mut client: Option<pinroute_discovery::KubeClient> = None;
        loop {
            generation.borrow_and_update();
            let sources = sources(&self.shared.config());
            if !sources.is_empty() {
                let current = match client.clone() {
                    Some(c) => c,
                    None => {
                        let c = self.client(&on_error).await;
                        client = Some(c.clone());
                        c
                    }
                };
                let Some(publisher) = self.shared.publisher().cloned() else { return };
                let watches = sources.into_iter().map(|s| s.run(current.clone(), publisher.clone(), on_error.clone()));
                tokio::select! {
                    _ = join_all(watches) => {}
                    _ = generation.changed() => tracing::info!("config changed: restarting pod watches"),
                }
            } else if generation.changed().await.is_err() {
                return;
            }
        }
    }
}

#[async_trait]
impl BackgroundService for KubeDiscovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}
