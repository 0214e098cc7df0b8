//! `[ingress]`: which Ingresses pinroute serves. Keys that only work together
//! (`adopt_classes` with `adopt_namespaces`, `adopt_namespaces` inside the
//! watched `namespace`) are checked together, so a combination that would
//! silently serve nothing is an error naming both keys and the fix.

use std::net::IpAddr;

use super::kubernetes::is_dns_label;
use super::Check;
use crate::raw::RawIngress;
use crate::ConfigError;

/// `[ingress]`: routes also come from Ingress objects of this class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngressSettings {
    /// IngressClass served.
    pub class: String,
    /// Classes adopted besides it...
    pub adopt_classes: Vec<String>,
    /// ...in these namespaces only.
    pub adopt_namespaces: Vec<String>,
    /// Namespace watched (`None`: all).
    pub namespace: Option<String>,
    /// Readiness label key.
    pub ready_key: String,
    /// Readiness label value.
    pub ready_value: String,
    /// Address written into served Ingresses' `status.loadBalancer`.
    pub status_address: Option<String>,
}

pub(super) fn settings(check: &Check<'_>, raw: &RawIngress) -> Result<IngressSettings, ConfigError> {
    let ready = raw.ready_label.clone().unwrap_or_else(|| "skypilot.co/ready=true".to_string());
    let Some((ready_key, ready_value)) = ready.split_once('=') else {
        return Err(check.err("ingress.ready_label", format!("expected \"key=value\", got {ready:?}")));
    };
    let class = raw.class.clone().unwrap_or_else(|| "pinroute".to_string());
    if class.trim().is_empty() {
        return Err(check
            .err("ingress.class", "empty: no Ingress would be served; give the IngressClass name, e.g. \"pinroute\""));
    }
    let namespace = raw.namespace.clone();
    if let Some(ns) = namespace.as_deref().filter(|ns| !is_dns_label(ns)) {
        return Err(check.err("ingress.namespace", format!("{ns:?} is not a valid namespace name")));
    }
    let adopt_classes = raw.adopt_classes.clone().unwrap_or_default();
    let adopt_namespaces = raw.adopt_namespaces.clone().unwrap_or_default();
    adoption(check, &adopt_classes, &adopt_namespaces, namespace.as_deref())?;
    let status_address = match raw.status_address.as_deref() {
        None => None,
        Some(address) if is_status_address(address) => Some(address.to_string()),
        // The API server refuses anything else in status.loadBalancer, so
        // every status write would fail (only a log line says so).
        Some(address) => {
            return Err(check.err(
                "ingress.status_address",
                format!("expected an IP address or a DNS name such as \"203.0.113.10\" or \"lb.example.com\", got {address:?}; drop the key to write no status"),
            ))
        }
    };
    Ok(IngressSettings {
        class,
        adopt_classes,
        adopt_namespaces,
        namespace,
        ready_key: ready_key.trim().to_string(),
        ready_value: ready_value.trim().to_string(),
        status_address,
    })
}

/// Another controller's class is adopted only in the namespaces named for
/// it (taking every `nginx` Ingress of a cluster would be an outage for
/// their owners), so each of the two keys does nothing without the other.
fn adoption(
    check: &Check<'_>,
    classes: &[String],
    namespaces: &[String],
    watched: Option<&str>,
) -> Result<(), ConfigError> {
    match (classes.is_empty(), namespaces.is_empty()) {
        (false, true) => {
            return Err(check.err(
                "ingress.adopt_classes",
                "adopts nothing without `ingress.adopt_namespaces`: other classes are adopted only in the namespaces \
                 listed there; add e.g. adopt_namespaces = [\"skypilot\"] (the SkyPilot release's namespace), or drop \
                 adopt_classes",
            ))
        }
        (true, false) => {
            return Err(check.err(
                "ingress.adopt_namespaces",
                "adopts nothing without `ingress.adopt_classes`: name the classes to adopt there, e.g. \
                 adopt_classes = [\"nginx\"] (the chart's oauth2-proxy Ingress), or drop adopt_namespaces",
            ))
        }
        _ => {}
    }
    for (i, class) in classes.iter().enumerate() {
        if class.trim().is_empty() {
            return Err(
                check.err(format!("ingress.adopt_classes[{i}]"), "empty: give an IngressClass name, e.g. \"nginx\"")
            );
        }
    }
    for (i, ns) in namespaces.iter().enumerate() {
        let key = format!("ingress.adopt_namespaces[{i}]");
        if !is_dns_label(ns) {
            return Err(check.err(key, format!("{ns:?} is not a valid namespace name")));
        }
        if let Some(watched) = watched.filter(|w| *w != ns) {
            return Err(check.err(
                key,
                format!(
                    "{ns:?} is not watched (`ingress.namespace` = {watched:?}), so nothing is adopted there: \
                     set ingress.namespace to it, drop ingress.namespace to watch all namespaces, or drop it here"
                ),
            ));
        }
    }
    Ok(())
}

/// What `status.loadBalancer.ingress[]` accepts: an IP, or a DNS-1123 name.
fn is_status_address(text: &str) -> bool {
    text.parse::<IpAddr>().is_ok()
        || (text.len() <= 253
            && text.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }))
}
