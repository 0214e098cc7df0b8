//! Ingress translation: the `networking.k8s.io/v1` Ingresses of pinroute's
//! class (and the ones it adopts), with the Services and Secrets they name,
//! as pinroute routes — what ingress-nginx would have served for the SkyPilot
//! Helm chart.
//!
//! [`translate`] is pure: the caller watches Ingresses, Services and Secrets,
//! calls it on every change and swaps the result in. Each route comes out of
//! the config crate's own validation (`RawRoute` → `RouteConfig`), so an
//! Ingress is held to the same rules as a `[[route]]` in the file. An
//! Ingress that cannot be served exactly enough is rejected as a whole, with
//! a reason; the others are unaffected.
//!
//! Decisions where ingress-nginx and pinroute differ:
//! - Paths are whole-segment prefixes. `Exact` is served as a prefix (with a
//!   warning). The chart's `<prefix>(/|$)(.*)` + `rewrite-target: /$2` is the
//!   prefix, stripped; other regexes and rewrites reject the Ingress.
//! - Backends are the Pods a Service selects (not its Endpoints), so a pod
//!   cordoned by removing the readiness label stays visible as Draining.
//! - Active health checks are off on Ingress routes: pod readiness (the
//!   kubelet's probes) already decides Ready/Down, and backends such as
//!   oauth2-proxy have no `/api/health`. Passive failures still eject.
//! - Cookie attributes other than the name (`session-cookie-max-age`, ...)
//!   are pinroute's `[cookie]` settings, shared by all routes (warning).
//! - `ssl-redirect` (on by default when the Ingress has `spec.tls`) and
//!   `force-ssl-redirect` become the route's `https_redirect`.
//! - `auth-url: http://$host/...` (the chart's, which loops back through
//!   ingress-nginx to the oauth2-proxy Ingress) becomes the in-cluster URL of
//!   the Service that serves that path on the same host.
//! - Snippets never run; the chart's token-bypass snippet maps to
//!   `token_bypass_prefix = "Bearer sky_"` (see `snippet.rs`).

mod annotations;
mod backend;
mod build;
mod paths;
mod plan;
mod snippet;

pub use snippet::{CHART_AUTH_SNIPPET, CHART_CONFIGURATION_SNIPPET};

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use pinroute_config::RouteConfig;

use build::build_routes;
use plan::{plan, Plan, PlannedRoute};

/// The legacy class annotation (before `spec.ingressClassName`).
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Everything a translation reads: one consistent snapshot of the watched objects.
#[derive(Debug, Clone, Copy)]
pub struct IngressInputs<'a> {
    /// All watched Ingresses; the ones not selected by `settings` are ignored.
    pub ingresses: &'a [Ingress],
    /// Services the Ingresses may name (looked up in the Ingress's namespace).
    pub services: &'a [Service],
    /// Secrets: basic-auth credentials and TLS certificates.
    pub secrets: &'a [Secret],
    /// Which Ingresses are pinroute's.
    pub settings: &'a IngressSettings,
}

/// Which Ingresses pinroute serves, and the readiness label of its pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// pinroute's class: `spec.ingressClassName` or `kubernetes.io/ingress.class`.
    pub class: String,
    /// Other classes served too, but only in `adopt_namespaces` (the SkyPilot
    /// chart's oauth2-proxy Ingress is hard-coded to class `nginx`).
    pub adopt_classes: Vec<String>,
    /// Namespaces where `adopt_classes` apply.
    pub adopt_namespaces: Vec<String>,
    /// `(key, value)` whose removal cordons a pod (`skypilot.co/ready`, `true`).
    pub ready_label: (String, String),
}

impl Default for IngressSettings {
    fn default() -> Self {
        IngressSettings {
            class: "pinroute".to_string(),
            adopt_classes: Vec::new(),
            adopt_namespaces: Vec::new(),
            ready_label: ("skypilot.co/ready".to_string(), "true".to_string()),
        }
    }
}

/// An Ingress pinroute selected but does not serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `namespace/name`.
    pub ingress: String,
    /// Why, naming the annotation, Service, Secret or path at fault.
    pub reason: String,
}

/// A certificate named by `spec.tls[].secretName`.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFromSecret {
    /// The Secret's namespace (the Ingress's).
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// `spec.tls[].hosts` of every Ingress naming this Secret, lower-case, sorted.
    pub hosts: Vec<String>,
    /// `tls.crt`; `None` when the Secret or the key is missing.
    pub cert_pem: Option<Vec<u8>>,
    /// `tls.key`; `None` when the Secret or the key is missing.
    pub key_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFromSecret {
    // Never print the private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsFromSecret")
            .field("namespace", &self.namespace)
            .field("secret", &self.secret)
            .field("hosts", &self.hosts)
            .field("cert_pem", &self.cert_pem.as_ref().map(|c| format!("{} bytes", c.len())))
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The routes the selected Ingresses ask for, and what could not be served.
/// Every list is in a deterministic order, so two translations of the same
/// objects are equal and a reload diffs cleanly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// Validated routes, by host, then longest prefix first, then Ingress.
    pub routes: Vec<RouteConfig>,
    /// The Ingress (`namespace/name`) each route came from, index for index.
    pub route_ingresses: Vec<String>,
    /// Ingresses served (for their status), sorted.
    pub accepted: Vec<String>,
    /// Ingresses selected but not served, sorted.
    pub rejected: Vec<Rejection>,
    /// `(ingress, annotation)`: `nginx.ingress.kubernetes.io/*` annotations
    /// pinroute does not know (it ignores them, as the caller should log once).
    pub unknown_annotations: Vec<(String, String)>,
    /// `(ingress, message)`: served, but not exactly as ingress-nginx would.
    pub warnings: Vec<(String, String)>,
    /// Certificates of the served Ingresses, by namespace and Secret.
    pub tls: Vec<TlsFromSecret>,
}

/// Translates the selected Ingresses. Older Ingresses (creationTimestamp,
/// then namespace/name) win host+prefix conflicts.
pub fn translate(inputs: &IngressInputs<'_>) -> Translation {
    // A late rejection (validation, auth-url resolution) can free a host+prefix
    // that a newer Ingress lost to it: translate again without it.
    let mut late: Vec<Rejection> = Vec::new();
    loop {
        let (mut out, new_late) = attempt(inputs, &late);
        if new_late.is_empty() {
            out.rejected.extend(late);
            out.rejected.sort_by(|a, b| a.ingress.cmp(&b.ingress));
            return out;
        }
        late.extend(new_late);
    }
}

fn attempt(inputs: &IngressInputs<'_>, excluded: &[Rejection]) -> (Translation, Vec<Rejection>) {
    let mut selected: Vec<&Ingress> = inputs.ingresses.iter().filter(|i| is_selected(inputs.settings, i)).collect();
    selected.sort_by_cached_key(|i| {
        (i.metadata.creation_timestamp.is_none(), i.metadata.creation_timestamp.clone(), ingress_id(i))
    });

    let mut out = Translation::default();
    let mut plans: Vec<Plan> = Vec::new();
    let mut claims: HashMap<(Option<String>, String), String> = HashMap::new();
    for ingress in selected {
        let id = ingress_id(ingress);
        if let Some(all) = &ingress.metadata.annotations {
            out.unknown_annotations.extend(annotations::unknown(all).into_iter().map(|a| (id.clone(), a)));
        }
        if excluded.iter().any(|r| r.ingress == id) {
            continue;
        }
        let plan = match plan(ingress, &id, inputs) {
            Ok(plan) => plan,
            Err(reason) => {
                out.rejected.push(Rejection { ingress: id, reason });
                continue;
            }
        };
        let taken = plan.routes.iter().find_map(|r| {
            claims.get(&(r.host.clone(), r.prefix.clone())).map(|owner| {
                format!(
                    "{}: prefix {:?} on {} is already served by the older Ingress {owner}",
                    r.written,
                    r.prefix,
                    host_text(&r.host)
                )
            })
        });
        if let Some(reason) = taken {
            out.rejected.push(Rejection { ingress: id, reason });
            continue;
        }
        for r in &plan.routes {
            claims.insert((r.host.clone(), r.prefix.clone()), id.clone());
        }
        plans.push(plan);
    }

    let everywhere: Vec<&PlannedRoute> = plans.iter().flat_map(|p| &p.routes).collect();
    let mut late = Vec::new();
    let mut routes: Vec<(RouteConfig, String)> = Vec::new();
    let mut served: Vec<&Plan> = Vec::new();
    for plan in &plans {
        match build_routes(plan, &everywhere) {
            Ok(built) => {
                routes.extend(built.into_iter().map(|r| (r, plan.id.clone())));
                served.push(plan);
            }
            Err(reason) => late.push(Rejection { ingress: plan.id.clone(), reason }),
        }
    }
    if !late.is_empty() {
        return (out, late);
    }

    routes.sort_by(|(a, a_id), (b, b_id)| {
        let key = |r: &RouteConfig| (r.host.clone().unwrap_or_default(), Reverse(r.prefix.len()), r.prefix.clone());
        key(a).cmp(&key(b)).then_with(|| a_id.cmp(b_id))
    });
    (out.routes, out.route_ingresses) = routes.into_iter().unzip();
    let mut tls: BTreeMap<(String, String), TlsFromSecret> = BTreeMap::new();
    for plan in &served {
        out.accepted.push(plan.id.clone());
        out.warnings.extend(plan.warnings.iter().map(|w| (plan.id.clone(), w.clone())));
        for entry in &plan.tls {
            let merged = tls.entry((entry.namespace.clone(), entry.secret.clone())).or_insert_with(|| entry.clone());
            merged.hosts.extend(entry.hosts.iter().cloned());
            merged.hosts.sort();
            merged.hosts.dedup();
        }
    }
    out.tls = tls.into_values().collect();
    out.accepted.sort();
    out.warnings.sort();
    out.unknown_annotations.sort();
    (out, Vec::new())
}

fn ingress_id(ingress: &Ingress) -> String {
    format!("{}/{}", namespace_of(ingress), ingress.metadata.name.as_deref().unwrap_or(""))
}

fn namespace_of(ingress: &Ingress) -> &str {
    ingress.metadata.namespace.as_deref().unwrap_or("default")
}

fn host_text(host: &Option<String>) -> String {
    host.as_ref().map_or("any host".to_string(), |h| format!("host {h}"))
}

fn is_selected(settings: &IngressSettings, ingress: &Ingress) -> bool {
    let spec_class = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    let legacy_class = ingress.metadata.annotations.as_ref().and_then(|a| a.get(CLASS_ANNOTATION)).map(|c| c.trim());
    let classes: Vec<&str> = [spec_class, legacy_class].into_iter().flatten().collect();
    let ours = classes.contains(&settings.class.as_str());
    let adopted = settings.adopt_namespaces.iter().any(|ns| ns == namespace_of(ingress))
        && classes.iter().any(|c| settings.adopt_classes.iter().any(|a| a == c));
    ours || adopted
}

#[cfg(test)]
mod tests;
