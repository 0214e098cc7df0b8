//! Ingress-controller mode: watches Ingresses, Services and Secrets (kube
//! reflectors, the same watcher machinery as pods), and hands every new
//! [`Translation`] of them to the proxy. The translation itself is the pure
//! [`crate::translate`].

use std::sync::Arc;
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use serde_json::json;

use crate::ingress::{translate, IngressInputs, IngressSettings, TlsFromSecret, Translation};
use crate::kube_source::ErrorHook;
use crate::DiscoveryError;

/// What was already written to the API server.
#[derive(Debug, Default)]
struct Reported {
    status: std::collections::HashSet<String>,
    events: std::collections::HashSet<String>,
}

/// Called with each translation that differs from the previous one.
pub type TranslationHook = Arc<dyn Fn(Translation) + Send + Sync>;

/// What to watch and how to translate it.
#[derive(Debug, Clone)]
pub struct IngressSource {
    /// Translation settings (class, adoption, readiness label).
    pub settings: IngressSettings,
    /// Namespace watched; all when `None`.
    pub namespace: Option<String>,
    /// Address written into `status.loadBalancer` of served Ingresses
    /// (an IP, or a hostname); `None` leaves status alone.
    pub status_address: Option<String>,
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
        // What the proxy was last told: routes, rejections, what to log, and
        // certificates (compared by content, so a renewed Secret is passed on).
        let mut last: Option<(String, Vec<TlsFromSecret>)> = None;
        let mut reported = Reported::default();
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
            let t = &translation;
            let fingerprint = (
                format!("{:?}|{:?}|{:?}|{:?}", t.routes, t.rejected, t.unknown_annotations, t.warnings),
                t.tls.clone(),
            );
            if last.as_ref() != Some(&fingerprint) {
                last = Some(fingerprint);
                self.report(&client, &translation, &mut reported).await;
                on_change(translation);
            }
        }
    }

    /// Writes the proxy's address into served Ingresses' status and an
    /// Event on each newly rejected one. Failures are logged, never fatal.
    async fn report(&self, client: &Client, translation: &Translation, reported: &mut Reported) {
        if let Some(address) = &self.status_address {
            let entry = if address.parse::<std::net::IpAddr>().is_ok() {
                json!({"ip": address})
            } else {
                json!({"hostname": address})
            };
            let status = json!({"status": {"loadBalancer": {"ingress": [entry]}}});
            for ingress in &translation.accepted {
                if reported.status.contains(ingress) {
                    continue;
                }
                let Some((ns, name)) = ingress.split_once('/') else { continue };
                let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
                match api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await {
                    Ok(_) => {
                        reported.status.insert(ingress.clone());
                    }
                    Err(e) => tracing::warn!(%ingress, error = %e, "could not write the Ingress status"),
                }
            }
        }
        let rejected: std::collections::HashSet<String> =
            translation.rejected.iter().map(|r| format!("{}|{}", r.ingress, r.reason)).collect();
        for rejection in &translation.rejected {
            let key = format!("{}|{}", rejection.ingress, rejection.reason);
            if reported.events.contains(&key) {
                continue;
            }
            let Some((ns, name)) = rejection.ingress.split_once('/') else { continue };
            let event: Event = match serde_json::from_value(json!({
                "metadata": {"generateName": format!("{name}."), "namespace": ns},
                "involvedObject": {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "namespace": ns, "name": name},
                "reason": "Rejected",
                "message": rejection.reason,
                "type": "Warning",
                "source": {"component": "pinroute"},
                "reportingComponent": "pinroute",
                "count": 1,
            })) {
                Ok(e) => e,
                Err(_) => continue,
            };
            let api: Api<Event> = Api::namespaced(client.clone(), ns);
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::warn!(ingress = %rejection.ingress, error = %e, "could not record the rejection Event");
            }
        }
        reported.events = rejected;
        reported.status.retain(|i| translation.accepted.contains(i));
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
