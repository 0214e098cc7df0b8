//! Runs the Kubernetes pod watches as a pingora background service, so the
//! kube client (and its tokio resources) is created after the server started.
//! The watches restart when a reload changes the config.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pinroute_config::{BackendSource, Config, RouteConfig};
use pinroute_discovery::{
    infer_client, ErrorHook, IngressSettings, IngressSource, KubeSource, Translation, TranslationHook,
};

use crate::events::EventKind;
use crate::state::Shared;
use crate::tls::CertResolver;

/// Longest wait between two attempts to build a client.
const CREDENTIALS_RETRY_MAX: Duration = Duration::from_secs(30);

/// The pod watches of every Kubernetes route.
#[derive(Debug)]
pub struct KubeDiscovery {
    shared: Arc<Shared>,
}

/// A client from in-cluster config or kubeconfig, retried with backoff.
async fn kube_client(on_error: &ErrorHook) -> pinroute_discovery::KubeClient {
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
                        let c = kube_client(&on_error).await;
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

/// Ingress-controller mode: Ingress objects of the configured class become
/// routes beside the file's own.
#[derive(Debug)]
pub struct IngressDiscovery {
    shared: Arc<Shared>,
    /// What the HTTPS listeners serve; `None` without `[server.tls]`.
    certs: Option<Arc<CertResolver>>,
}

impl IngressDiscovery {
    /// `None` unless the config has an `[ingress]` table.
    pub fn for_config(shared: Arc<Shared>, certs: Option<Arc<CertResolver>>) -> Option<IngressDiscovery> {
        shared.file_config().ingress.is_some().then_some(IngressDiscovery { shared, certs })
    }

    async fn run(&self) {
        let Some(settings) = self.shared.file_config().ingress.clone() else { return };
        let metrics = self.shared.metrics.clone();
        let on_error: ErrorHook = Arc::new(move |_| metrics.discovery_errors.inc());
        let client = kube_client(&on_error).await;
        let shared = self.shared.clone();
        // The last routes each Ingress was served with: a rejected update
        // (a hostile snippet, a missing Secret) keeps serving them.
        let last_good: std::sync::Mutex<HashMap<String, Vec<RouteConfig>>> = std::sync::Mutex::new(HashMap::new());
        let certs = self.certs.clone();
        let told_no_listener = std::sync::atomic::AtomicBool::new(false);
        let unknown_seen: std::sync::Mutex<BTreeSet<(String, String)>> = std::sync::Mutex::new(BTreeSet::new());
        let on_change: TranslationHook = Arc::new(move |translation: Translation| {
            let routes = keep_last_good(&last_good, &translation);
            match &certs {
                Some(certs) => {
                    // Names still routed only for a rejected Ingress keep their certificate.
                    let kept: Vec<String> = routes[translation.routes.len()..]
                        .iter()
                        .filter_map(|r| r.host.clone())
                        .filter(|h| !translation.routes.iter().any(|r| r.host.as_ref() == Some(h)))
                        .collect();
                    for error in certs.set_secrets(&translation.tls, &kept) {
                        tracing::error!(%error, "Ingress TLS certificate unusable; its names keep the previous one");
                    }
                }
                None if (!translation.tls.is_empty() || routes.iter().any(|r| r.https_redirect))
                    && !told_no_listener.swap(true, std::sync::atomic::Ordering::Relaxed) =>
                {
                    tracing::warn!(
                        "Ingresses have spec.tls or ssl-redirect, but pinroute has no HTTPS listener: \
                         add [server.tls] listen = [\"0.0.0.0:8443\"] (their certificates then come from \
                         the Secrets); until then they are served over plain HTTP only"
                    );
                }
                None => {}
            }
            for rejection in &translation.rejected {
                tracing::warn!(ingress = %rejection.ingress, reason = %rejection.reason, "Ingress rejected; its previous routes keep serving where they were valid");
                shared.events.record(
                    EventKind::IngressRejected,
                    None,
                    None,
                    format!("{}: {}", rejection.ingress, rejection.reason),
                );
            }
            // Once per Ingress and annotation, not at every translation.
            if let Ok(mut seen) = unknown_seen.lock() {
                let now: BTreeSet<(String, String)> = translation.unknown_annotations.iter().cloned().collect();
                for (ingress, annotation) in now.difference(&seen) {
                    tracing::info!(%ingress, %annotation, "unknown annotation ignored");
                }
                *seen = now;
            }
            for (ingress, warning) in &translation.warnings {
                tracing::info!(%ingress, %warning, "Ingress served with a difference from ingress-nginx");
            }
            tracing::info!(
                routes = translation.routes.len(),
                accepted = translation.accepted.len(),
                "Ingress routes updated"
            );
            if let Err(e) = shared.apply_ingress_routes(routes) {
                tracing::error!(error = %e, "Ingress routes not applied; keeping the previous ones");
                shared.events.record(EventKind::IngressRejected, None, None, format!("routes not applied: {e}"));
            }
        });
        let source = IngressSource {
            settings: IngressSettings {
                class: settings.class.clone(),
                adopt_classes: settings.adopt_classes.clone(),
                adopt_namespaces: settings.adopt_namespaces.clone(),
                ready_label: (settings.ready_key.clone(), settings.ready_value.clone()),
            },
            namespace: settings.namespace.clone(),
            status_address: settings.status_address.clone(),
        };
        source.run(client, on_change, on_error).await;
    }
}

/// The translation's routes, plus the previous routes of every Ingress it
/// rejected; remembers the routes of the accepted ones.
fn keep_last_good(
    last_good: &std::sync::Mutex<HashMap<String, Vec<RouteConfig>>>,
    translation: &Translation,
) -> Vec<RouteConfig> {
    let Ok(mut last) = last_good.lock() else { return translation.routes.clone() };
    let mut fresh: HashMap<String, Vec<RouteConfig>> = HashMap::new();
    for (route, ingress) in translation.routes.iter().zip(&translation.route_ingresses) {
        fresh.entry(ingress.clone()).or_default().push(route.clone());
    }
    let mut routes = translation.routes.clone();
    for rejection in &translation.rejected {
        if let Some(previous) = last.get(&rejection.ingress) {
            for route in previous {
                if !routes.iter().any(|r| r.prefix == route.prefix && r.host == route.host) {
                    routes.push(route.clone());
                }
            }
            fresh.insert(rejection.ingress.clone(), previous.clone());
        }
    }
    *last = fresh;
    routes
}

#[async_trait]
impl BackgroundService for IngressDiscovery {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        tokio::select! {
            _ = self.run() => {}
            _ = shutdown.changed() => {}
        }
    }
}
