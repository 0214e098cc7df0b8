//! Ingress-controller mode: watches Ingresses, Services and Secrets (kube
//! reflectors, the same watcher machinery as pods), and hands every new
//! [`Translation`] of them to the proxy. The translation itself is the pure
//! [`crate::translate`].

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};

use crate::ingress::{translate, IngressInputs, IngressSettings, Translation};
use crate::kube_source::ErrorHook;
use crate::DiscoveryError;

/// Called with each translation that differs from the previous one.
pub type TranslationHook = Arc<dyn Fn(Translation) + Send + Sync>;

/// What to watch and how to translate it.
#[derive(Debug, Clone)]
pub struct IngressSource {
    /// Translation settings (class, adoption, readiness label).
    pub settings: IngressSettings,
    /// Namespace watched; all when `None`.
    pub namespace: Option<String>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

impl IngressSource {
    /// Watches until dropped; translates after every change (changes within
    /// 100 ms are coalesced) and calls `on_change` when the result differs.
    pub async fn run(self, client: Client, on_change: TranslationHook, on_error: ErrorHook) {
        let ns = self.namespace.as_deref();
        let (ingresses, ingress_writer) = reflector::store::<Ingress>();
        let (services, service_writer) = reflector::store::<Service>();
        let (secrets, secret_writer) = reflector::store::<Secret>();
        let config = watcher::Config::default();
        // The three streams only signal "something changed" (and which kind
        // finished its first list); the stores hold the state.
        fn signal<K>(
            kind: usize,
        ) -> impl Fn(Result<watcher::Event<K>, watcher::Error>) -> Result<Option<usize>, String> {
            move |r| match r {
                Ok(watcher::Event::InitDone) => Ok(Some(kind)),
                Ok(_) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }
        let changes = stream::select_all([
            reflector::reflector(ingress_writer, watcher(api::<Ingress>(&client, ns), config.clone()))
                .map(signal(0))
                .boxed(),
            reflector::reflector(service_writer, watcher(api::<Service>(&client, ns), config.clone()))
                .map(signal(1))
                .boxed(),
            reflector::reflector(secret_writer, watcher(api::<Secret>(&client, ns), config)).map(signal(2)).boxed(),
        ]);
        let mut changes = changes.ready_chunks(64).boxed();
        let mut listed = [false; 3];
        let mut last: Option<String> = None;
        while let Some(batch) = changes.next().await {
            for result in &batch {
                match result {
                    Ok(Some(kind)) => listed[*kind] = true,
                    Ok(None) => {}
                    Err(e) => {
                        let error = DiscoveryError::Api(e.clone());
                        tracing::warn!(error = %error, "ingress watch error; serving the last routes");
                        on_error(&error);
                    }
                }
            }
            if batch.iter().any(|r| r.is_err()) {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !listed.iter().all(|l| *l) {
                continue;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let translation = self.translate(&ingresses, &services, &secrets);
            let fingerprint =
                format!("{:?}|{:?}|{:?}", translation.routes, translation.rejected, translation.ssl_redirect);
            if last.as_deref() != Some(fingerprint.as_str()) {
                last = Some(fingerprint);
                on_change(translation);
            }
        }
    }

    fn translate(&self, ingresses: &Store<Ingress>, services: &Store<Service>, secrets: &Store<Secret>) -> Translation {
        let owned = |v: Vec<Arc<Ingress>>| v.iter().map(|a| (**a).clone()).collect::<Vec<_>>();
        let ingresses = owned(ingresses.state());
        let services: Vec<Service> = services.state().iter().map(|a| (**a).clone()).collect();
        let secrets: Vec<Secret> = secrets.state().iter().map(|a| (**a).clone()).collect();
        translate(&IngressInputs {
            ingresses: &ingresses,
            services: &services,
            secrets: &secrets,
            settings: &self.settings,
        })
    }
}
