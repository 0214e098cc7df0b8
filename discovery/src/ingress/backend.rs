//! What an Ingress refers to: a Service (read for its selector and target
//! port, so pinroute watches the Pods behind it directly) and Secrets (basic
//! auth credentials, TLS certificates). Everything is looked up in the
//! Ingress's own namespace.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::IngressBackend;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::annotations::{BasicAuth, SecretType};
use super::TlsFromSecret;

/// A container port, by number or by name (the Service's `targetPort`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TargetPort {
    /// `targetPort: 46580`.
    Number(u16),
    /// `targetPort: http`: looked up in each pod's container ports.
    Name(String),
}

/// The Pods behind one Ingress backend, as a `[route.kubernetes]` table
/// would name them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodTarget {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name (for the in-cluster URL of an `auth-url`).
    pub service: String,
    /// The Service port the Ingress named.
    pub service_port: u16,
    /// `spec.clusterIP`, unless the Service is headless (`None`) or has none yet.
    pub cluster_ip: Option<String>,
    /// `k=v,k2=v2`, sorted, without the readiness label.
    pub selector: String,
    /// `key=value` whose absence makes a pod Draining.
    pub ready_label: String,
    /// Where the pods listen.
    pub port: TargetPort,
}

/// Resolves `backend` against the Services of `namespace`.
///
/// When the Service selects on the readiness label (the SkyPilot chart's
/// `skypilot.co/ready: "true"`), the label leaves the watch selector and
/// becomes the route's ready label, so a cordoned pod stays visible as
/// Draining. A Service that does not select on it (the chart's oauth2-proxy)
/// routes to every Ready pod it selects, as its Endpoints would: one of its
/// own selector terms, which every watched pod carries, serves as the ready
/// label.
pub(super) fn pod_target(
    namespace: &str,
    backend: &IngressBackend,
    services: &[Service],
    ready_label: &(String, String),
) -> Result<PodTarget, String> {
    let wanted = backend.service.as_ref().ok_or_else(|| {
        "a backend that is not a Service (spec.rules[].http.paths[].backend.resource) is not supported".to_string()
    })?;
    let service = services
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace) && s.metadata.name.as_deref() == Some(&wanted.name)
        })
        .ok_or_else(|| format!("Service {namespace}/{} not found", wanted.name))?;
    let spec = service.spec.as_ref().ok_or_else(|| format!("Service {namespace}/{} has no spec", wanted.name))?;
    let selector: BTreeMap<String, String> = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Err(format!(
            "Service {namespace}/{} has no selector (ExternalName or manual Endpoints): pinroute needs the \
             pods it selects",
            wanted.name
        ));
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    let wanted_port = wanted.port.as_ref();
    let port = match (wanted_port.and_then(|p| p.number), wanted_port.and_then(|p| p.name.as_deref())) {
        (Some(number), _) => ports.iter().find(|p| p.port == number),
        (None, Some(name)) => ports.iter().find(|p| p.name.as_deref() == Some(name)),
        // No port named: a Service with one port is unambiguous.
        (None, None) if ports.len() == 1 => ports.first(),
        (None, None) => None,
    }
    .ok_or_else(|| {
        let named = wanted_port.map_or("no port".to_string(), |p| match (&p.number, &p.name) {
            (Some(n), _) => format!("port {n}"),
            (None, Some(name)) => format!("port {name:?}"),
            (None, None) => "no port".to_string(),
        });
        format!("Service {namespace}/{} has no {named}", wanted.name)
    })?;
    let service_port = u16::try_from(port.port).map_err(|_| format!("Service port {} is out of range", port.port))?;
    let target = match &port.target_port {
        None => TargetPort::Number(service_port),
        Some(IntOrString::Int(n)) => {
            TargetPort::Number(u16::try_from(*n).map_err(|_| format!("targetPort {n} is out of range"))?)
        }
        Some(IntOrString::String(name)) => match name.parse::<u16>() {
            Ok(n) => TargetPort::Number(n),
            Err(_) => TargetPort::Name(name.clone()),
        },
    };

    let (ready_key, ready_value) = ready_label;
    let selects_ready = selector.get(ready_key) == Some(ready_value);
    let terms: Vec<String> = selector
        .iter()
        .filter(|(k, v)| !(selects_ready && *k == ready_key && *v == ready_value))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let ready_label = if selects_ready {
        format!("{ready_key}={ready_value}")
    } else {
        // Sorted map: the first term, deterministically.
        terms.first().cloned().unwrap_or_default()
    };
    Ok(PodTarget {
        namespace: namespace.to_string(),
        service: wanted.name.clone(),
        service_port,
        cluster_ip: spec.cluster_ip.clone().filter(|ip| !ip.is_empty() && ip != "None"),
        selector: terms.join(","),
        ready_label,
        port: target,
    })
}

fn find_secret<'a>(namespace: &str, name: &str, secrets: &'a [Secret]) -> Option<&'a Secret> {
    secrets
        .iter()
        .find(|s| s.metadata.namespace.as_deref() == Some(namespace) && s.metadata.name.as_deref() == Some(name))
}

/// A Secret's value: `data` as the API server returns it, or `stringData`
/// (only seen in objects that never went through an API server).
fn secret_value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).map(|v| v.as_bytes().to_vec()))
}

fn secret_keys(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret.data.iter().flat_map(|d| d.keys().cloned()).collect();
    keys.extend(secret.string_data.iter().flat_map(|d| d.keys().cloned()));
    keys.sort();
    keys.dedup();
    keys
}

/// htpasswd lines for `auth-type: basic`. `auth-secret` may be written
/// `namespace/name`, but only the Ingress's own namespace is read: an Ingress
/// must not borrow another namespace's credentials.
pub(super) fn htpasswd(namespace: &str, basic: &BasicAuth, secrets: &[Secret]) -> Result<String, String> {
    let name = match basic.secret.split_once('/') {
        None => basic.secret.as_str(),
        Some((ns, name)) if ns == namespace => name,
        Some((ns, _)) => {
            return Err(format!(
                "auth-secret {:?} is in namespace {ns:?}; only the Ingress's namespace {namespace:?} is read",
                basic.secret
            ))
        }
    };
    let secret =
        find_secret(namespace, name, secrets).ok_or_else(|| format!("auth Secret {namespace}/{name} not found"))?;
    let text = match basic.secret_type {
        SecretType::AuthFile => {
            let bytes = secret_value(secret, "auth")
                .ok_or_else(|| format!("auth Secret {namespace}/{name} has no key \"auth\" (htpasswd lines)"))?;
            String::from_utf8(bytes)
                .map_err(|_| format!("auth Secret {namespace}/{name}: key \"auth\" is not UTF-8"))?
        }
        SecretType::AuthMap => {
            let mut lines = Vec::new();
            for user in secret_keys(secret) {
                let hash = secret_value(secret, &user).unwrap_or_default();
                let hash = String::from_utf8(hash)
                    .map_err(|_| format!("auth Secret {namespace}/{name}: the hash of {user:?} is not UTF-8"))?;
                lines.push(format!("{user}:{}", hash.trim()));
            }
            lines.join("\n")
        }
    };
    if text.lines().all(|l| l.trim().is_empty()) {
        return Err(format!("auth Secret {namespace}/{name} holds no credentials"));
    }
    Ok(text)
}

/// What `spec.tls[]` names: the certificate and key of a `kubernetes.io/tls`
/// Secret, `None` where missing (the caller warns when `found` is false).
pub(super) fn tls_from_secret(
    namespace: &str,
    name: &str,
    hosts: Vec<String>,
    secrets: &[Secret],
) -> (TlsFromSecret, bool) {
    let secret = find_secret(namespace, name, secrets);
    let tls = TlsFromSecret {
        namespace: namespace.to_string(),
        secret: name.to_string(),
        hosts,
        cert_pem: secret.and_then(|s| secret_value(s, "tls.crt")),
        key_pem: secret.and_then(|s| secret_value(s, "tls.key")),
    };
    (tls, secret.is_some())
}
