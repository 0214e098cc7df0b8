//! `[route.kubernetes]`: which pods back a route, and which label cordons them.

use super::Check;
use crate::raw::RawKubernetes;
use crate::ConfigError;

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A container port, by number or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    /// `port = 46580`.
    Number(u16),
    /// `port = "http"`: looked up in the pod's container ports.
    Name(String),
}

/// Pods that back a route.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesSource {
    /// Namespace watched.
    pub namespace: String,
    /// Base selector, as sent to the API server.
    pub selector: String,
    /// Parsed base selector.
    pub requirements: Vec<LabelRequirement>,
    /// Label key whose value must equal `ready_value` for the pod to take new clients.
    pub ready_key: String,
    /// Required value of `ready_key`.
    pub ready_value: String,
    /// Backend port.
    pub port: PortRef,
}

pub(super) fn source(check: &Check<'_>, key: &str, raw: &RawKubernetes) -> Result<KubernetesSource, ConfigError> {
    let namespace = raw.namespace.clone().unwrap_or_else(|| "default".to_string());
    if !is_dns_label(&namespace) {
        return Err(check.err(format!("{key}.namespace"), format!("{namespace:?} is not a valid namespace name")));
    }
    let selector = raw.selector.clone().ok_or_else(|| {
        check.err(format!("{key}.selector"), "missing: give the base selector, e.g. \"app=skypilot-api\"")
    })?;
    let requirements = parse_selector(&selector).map_err(|m| check.err(format!("{key}.selector"), m))?;
    if requirements.is_empty() {
        return Err(check.err(format!("{key}.selector"), "an empty selector would match every pod in the namespace; name the API server's pods, e.g. \"app=skypilot-api\""));
    }
    let ready = raw.ready_label.clone().unwrap_or_else(|| "skypilot.co/ready=true".to_string());
    let (ready_key, ready_value) =
        match parse_selector(&ready).map_err(|m| check.err(format!("{key}.ready_label"), m))?.as_slice() {
            [LabelRequirement::Equals(k, v)] => (k.clone(), v.clone()),
            _ => {
                return Err(
                    check.err(format!("{key}.ready_label"), format!("expected one \"key=value\" label, got {ready:?}"))
                )
            }
        };
    let port = match &raw.port {
        None => PortRef::Number(46580),
        Some(toml::Value::Integer(n)) => PortRef::Number(
            u16::try_from(*n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| check.err(format!("{key}.port"), format!("expected 1 to 65535, got {n}")))?,
        ),
        Some(toml::Value::String(name)) if !name.is_empty() => PortRef::Name(name.clone()),
        Some(other) => {
            return Err(check
                .err(format!("{key}.port"), format!("expected a port number or a container port name, got {other}")))
        }
    };
    Ok(KubernetesSource { namespace, selector, requirements, ready_key, ready_value, port })
}

pub(super) fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_label_key(text: &str) -> bool {
    let name = text.rsplit('/').next().unwrap_or(text);
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && text.matches('/').count() <= 1
}

fn is_label_value(text: &str) -> bool {
    text.len() <= 63 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Parses the equality-based selector syntax kubectl accepts.
pub fn parse_selector(text: &str) -> Result<Vec<LabelRequirement>, String> {
    let mut out = Vec::new();
    for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some((k, v)) = term.split_once("!=") {
            LabelRequirement::NotEquals(k.trim().to_string(), v.trim().to_string())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelRequirement::Equals(k.trim().to_string(), v.trim().to_string())
        } else if let Some(k) = term.strip_prefix('!') {
            LabelRequirement::NotExists(k.trim().to_string())
        } else {
            LabelRequirement::Exists(term.to_string())
        };
        let (key, value) = match &requirement {
            LabelRequirement::Equals(k, v) | LabelRequirement::NotEquals(k, v) => (k, Some(v)),
            LabelRequirement::Exists(k) | LabelRequirement::NotExists(k) => (k, None),
        };
        if !is_label_key(key) || !value.is_none_or(|v| is_label_value(v)) {
            return Err(format!("{term:?} is not a valid selector term (key=value, key!=value, key or !key)"));
        }
        out.push(requirement);
    }
    Ok(out)
}
