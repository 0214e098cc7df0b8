//! One Ingress read into routes-to-be: its paths matched, its Services and
//! Secrets looked up. Nothing here depends on other Ingresses.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::{Ingress, IngressSpec};

use super::annotations::{self, Annotations};
use super::backend::{self, PodTarget};
use super::paths;
use super::{host_text, namespace_of, IngressInputs, TlsFromSecret};

/// One Ingress's routes before validation.
pub(super) struct Plan {
    /// `namespace/name`.
    pub id: String,
    /// Its `nginx.ingress.kubernetes.io/*` annotations, read.
    pub annotations: Annotations,
    /// One per path, in rule order (`route[i]` of validation errors).
    pub routes: Vec<PlannedRoute>,
    /// `auth-type: basic` credentials, from the auth Secret.
    pub htpasswd: Option<String>,
    /// `spec.tls`, with the Secrets' contents.
    pub tls: Vec<TlsFromSecret>,
    /// `spec.tls` is not empty (ingress-nginx then redirects to HTTPS by default).
    pub has_tls: bool,
    /// Served, but not exactly as ingress-nginx would.
    pub warnings: Vec<String>,
}

/// One path of the Ingress.
pub(super) struct PlannedRoute {
    /// `spec.rules[].host`, lower-case; `None` for any host.
    pub host: Option<String>,
    /// Route prefix.
    pub prefix: String,
    /// Forward without the prefix.
    pub strip: bool,
    /// The pods behind the path's Service.
    pub target: PodTarget,
    /// `host ... path ...` as written, for messages.
    pub written: String,
}

/// Reads one Ingress; `id` is its `namespace/name`.
pub(super) fn plan(ingress: &Ingress, id: &str, inputs: &IngressInputs<'_>) -> Result<Plan, String> {
    let namespace = namespace_of(ingress);
    let no_annotations = BTreeMap::new();
    let annotations = annotations::parse(ingress.metadata.annotations.as_ref().unwrap_or(&no_annotations))?;
    let spec = ingress.spec.as_ref().ok_or("the Ingress has no spec")?;
    let mut warnings = annotations.warnings.clone();
    let mut routes = Vec::new();
    for rule in spec.rules.iter().flatten() {
        let host = rule.host.as_deref().map(str::trim).filter(|h| !h.is_empty()).map(str::to_ascii_lowercase);
        if let Some(h) = host.as_deref().filter(|h| h.contains('*')) {
            return Err(format!("wildcard host {h:?} is not supported"));
        }
        let Some(http) = &rule.http else {
            warnings.push(format!("the rule for {} has no paths; nothing is served for it", host_text(&host)));
            continue;
        };
        for path in &http.paths {
            let written = format!("{} path {:?}", host_text(&host), path.path.as_deref().unwrap_or(""));
            let matched = paths::path_match(
                path.path.as_deref(),
                &path.path_type,
                annotations.rewrite_target.as_deref(),
                annotations.use_regex,
            )
            .map_err(|e| format!("{written}: {e}"))?;
            warnings.extend(matched.warning.map(|w| format!("{written}: {w}")));
            let target = backend::pod_target(namespace, &path.backend, inputs.services, &inputs.settings.ready_label)
                .map_err(|e| format!("{written}: {e}"))?;
            routes.push(PlannedRoute {
                host: host.clone(),
                prefix: matched.prefix,
                strip: matched.strip,
                target,
                written,
            });
        }
    }
    if let Some(default) = &spec.default_backend {
        if !routes.iter().any(|r| r.host.is_none() && r.prefix == "/") {
            let target = backend::pod_target(namespace, default, inputs.services, &inputs.settings.ready_label)
                .map_err(|e| format!("spec.defaultBackend: {e}"))?;
            let written = "spec.defaultBackend".to_string();
            routes.push(PlannedRoute { host: None, prefix: "/".to_string(), strip: false, target, written });
        }
    }
    if routes.is_empty() {
        return Err("the Ingress has no paths to serve".to_string());
    }
    if let Some(cookie_path) = &annotations.cookie_path {
        if routes
            .iter()
            .any(|r| r.prefix != cookie_path.trim_end_matches('/') && !(r.prefix == "/" && cookie_path == "/"))
        {
            warnings.push(format!(
                "session-cookie-path {cookie_path:?} is not honoured: pinroute's cookie Path is each route's prefix"
            ));
        }
    }
    let htpasswd = annotations.basic.as_ref().map(|b| backend::htpasswd(namespace, b, inputs.secrets)).transpose()?;

    let tls = tls_entries(namespace, spec, inputs.secrets, &mut warnings);
    let has_tls = spec.tls.as_ref().is_some_and(|t| !t.is_empty());
    Ok(Plan { id: id.to_string(), annotations, routes, htpasswd, tls, has_tls, warnings })
}

/// `spec.tls`, with each Secret's certificate and key (missing ones warned about).
fn tls_entries(
    namespace: &str,
    spec: &IngressSpec,
    secrets: &[Secret],
    warnings: &mut Vec<String>,
) -> Vec<TlsFromSecret> {
    let mut tls = Vec::new();
    for entry in spec.tls.iter().flatten() {
        let mut hosts: Vec<String> = entry.hosts.iter().flatten().map(|h| h.trim().to_ascii_lowercase()).collect();
        hosts.sort();
        hosts.dedup();
        let Some(secret) = entry.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            warnings.push(format!("spec.tls for {hosts:?} names no secretName; pinroute has no default certificate"));
            continue;
        };
        let (entry, found) = backend::tls_from_secret(namespace, secret, hosts, secrets);
        if !found {
            warnings.push(format!("TLS Secret {namespace}/{secret} not found"));
        } else if entry.cert_pem.is_none() || entry.key_pem.is_none() {
            warnings.push(format!("TLS Secret {namespace}/{secret} lacks tls.crt or tls.key"));
        }
        tls.push(entry);
    }
    tls
}
