//! A planned Ingress through the config crate's validation: `RawRoute`s, as
//! a file's `[[route]]`s would be written, into `RouteConfig`s.

use std::path::Path;

use pinroute_config::{Config, ConfigError, RawAuth, RawBasicAuth, RawConfig, RawOAuth2, RawRoute, RouteConfig};

use super::backend::TargetPort;
use super::host_text;
use super::plan::{Plan, PlannedRoute};
use super::snippet;

/// Runs one Ingress's routes through the config crate's validation, as a
/// file of `[[route]]`s named after the Ingress.
pub(super) fn build_routes(plan: &Plan, everywhere: &[&PlannedRoute]) -> Result<Vec<RouteConfig>, String> {
    let raw = plan.routes.iter().map(|r| raw_route(plan, r, everywhere)).collect::<Result<Vec<_>, _>>()?;
    let origin = format!("Ingress {}", plan.id);
    let config = Config::from_raw(Path::new(&origin), RawConfig { routes: raw, ..RawConfig::default() }, None)
        .map_err(|e| describe(&e, plan))?;
    let mut routes = config.routes;
    // ingress-nginx redirects an Ingress with TLS unless told not to. Set
    // after validation: the file check wants a [server.tls] in this config.
    let a = &plan.annotations;
    let https_redirect = a.force_ssl_redirect || (plan.has_tls && a.ssl_redirect != Some(false));
    for route in &mut routes {
        route.health.path = None;
        route.https_redirect = https_redirect;
    }
    Ok(routes)
}

/// A config error, with `route[i]` told back as the Ingress path it came from.
fn describe(error: &ConfigError, plan: &Plan) -> String {
    let index = match error {
        ConfigError::Invalid { key, .. } => {
            key.strip_prefix("route[").and_then(|rest| rest.split_once(']')).and_then(|(i, _)| i.parse::<usize>().ok())
        }
        _ => None,
    };
    match index.and_then(|i| plan.routes.get(i).map(|route| (i, route))) {
        Some((i, route)) => format!("{error} (route[{i}] is {})", route.written),
        None => error.to_string(),
    }
}

fn raw_route(plan: &Plan, route: &PlannedRoute, everywhere: &[&PlannedRoute]) -> Result<RawRoute, String> {
    let a = &plan.annotations;
    let target = &route.target;
    let port = match &target.port {
        TargetPort::Number(n) => serde_json::Value::from(*n),
        TargetPort::Name(name) => serde_json::Value::from(name.as_str()),
    };
    // `[route.kubernetes]`, deserialised as the file's table would be (the
    // config crate does not export its raw type; `RawRoute::kubernetes` names it).
    let kubernetes = serde_json::from_value(serde_json::json!({
        "namespace": target.namespace, "selector": target.selector, "ready_label": target.ready_label, "port": port,
    }))
    .map_err(|e| format!("internal error building [route.kubernetes]: {e}"))?;
    let basic = plan.htpasswd.as_ref().map(|htpasswd| RawBasicAuth {
        htpasswd: Some(htpasswd.clone()),
        realm: a.basic.as_ref().and_then(|b| b.realm.clone()),
        ..RawBasicAuth::default()
    });
    let oauth2 = match &a.external {
        None => None,
        Some(external) => Some(RawOAuth2 {
            auth_url: Some(resolve_auth_url(&external.url, route, everywhere)?),
            signin_url: external.signin.clone(),
            response_headers: Some(external.response_headers.clone()),
            token_bypass_prefix: external.token_bypass.then(|| snippet::TOKEN_BYPASS_PREFIX.to_string()),
            ..RawOAuth2::default()
        }),
    };
    let seconds = |s: Option<u64>| s.map(|s| format!("{s}s"));
    Ok(RawRoute {
        prefix: Some(route.prefix.clone()),
        kubernetes: Some(kubernetes),
        host: route.host.clone(),
        strip_prefix: Some(route.strip),
        cookie_name: a.cookie_name.clone(),
        auth: (basic.is_some() || oauth2.is_some()).then_some(RawAuth { basic, oauth2 }),
        connect_timeout: seconds(a.connect_timeout),
        read_timeout: seconds(a.read_timeout),
        write_timeout: seconds(a.write_timeout),
        max_body: a.max_body.map(|b| b.to_string()),
        connect_tries: a.connect_tries,
        ..RawRoute::default()
    })
}

/// ingress-nginx makes the auth sub-request from inside the controller;
/// `http://$host/oauth2/auth` (the chart's) goes back through the controller
/// to whatever Ingress serves `/oauth2/auth` on the request's host — the
/// chart's oauth2-proxy Ingress. pinroute asks that Ingress's Service
/// directly, over plain HTTP (the `https` of `use-https` was the
/// controller's own TLS): at its ClusterIP and Service port, so no request
/// waits on cluster DNS, or by its DNS name when the Service is headless.
fn resolve_auth_url(url: &str, route: &PlannedRoute, everywhere: &[&PlannedRoute]) -> Result<String, String> {
    if !url.contains('$') {
        return Ok(url.to_string());
    }
    let unsupported = || {
        format!("auth-url {url:?}: only \"http(s)://$host/...\" is understood; no other nginx variable can be expanded")
    };
    let rest = ["http://$host", "https://$host"]
        .iter()
        .find_map(|scheme_host| url.strip_prefix(scheme_host))
        .filter(|rest| (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?')) && !rest.contains('$'))
        .ok_or_else(unsupported)?;
    let (path, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = if path.is_empty() { "/" } else { path };
    let target = everywhere
        .iter()
        .filter(|r| r.host == route.host && prefix_matches(&r.prefix, path))
        .max_by_key(|r| r.prefix.len())
        .filter(|r| !(r.host == route.host && r.prefix == route.prefix))
        .ok_or_else(|| {
            format!(
                "auth-url {url:?} goes back through the ingress, but no other Ingress serves {path:?} on {}",
                host_text(&route.host)
            )
        })?;
    let forwarded = match (target.strip, path.strip_prefix(target.prefix.as_str())) {
        (true, Some(rest)) if target.prefix != "/" => {
            if rest.is_empty() {
                "/"
            } else {
                rest
            }
        }
        _ => path,
    };
    let t = &target.target;
    let host = match &t.cluster_ip {
        Some(ip) if ip.contains(':') => format!("[{ip}]"),
        Some(ip) => ip.clone(),
        None => format!("{}.{}.svc", t.service, t.namespace),
    };
    Ok(format!("http://{host}:{}{forwarded}{query}", t.service_port))
}

/// Whole-segment prefix match, as the proxy matches routes.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/" || path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}
