//! Ingresses as the SkyPilot Helm chart renders them
//! (skypilot-org/skypilot `charts/skypilot/templates/ingress.yaml` at
//! cc77a0f4a50fba340d0292cc6dd3ee28d8ede6e1, `oauth2-proxy-ingress.yaml`,
//! `api-service.yaml`, `oauth2-proxy-service.yaml`, `auth.yaml`), translated.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::ByteString;
use pinroute_config::{AuthSettings, BackendSource, HtpasswdSource, KubernetesSource, PortRef, RouteConfig};
use serde_json::{json, Value};

use super::snippet::{CHART_AUTH_SNIPPET, CHART_CONFIGURATION_SNIPPET};
use super::{translate, IngressInputs, IngressSettings, Translation};

const NS: &str = "skypilot";
const HTPASSWD: &str = "skypilot:$apr1$c1h4rNxt$2NnL7dIDUV0tWsnuNMGSr/";

/// The chart's values that shape its Ingress.
#[derive(Clone)]
struct Values {
    release: &'static str,
    path: &'static str,
    host: Option<&'static str>,
    class: &'static str,
    rolling_update: bool,
    oauth2_proxy: bool,
    created: &'static str,
}

impl Values {
    fn new(release: &'static str) -> Values {
        Values {
            release,
            path: "/",
            host: None,
            class: "pinroute",
            rolling_update: false,
            oauth2_proxy: false,
            created: "2026-01-01T00:00:00Z",
        }
    }
}

/// `templates/ingress.yaml`, branch for branch (Kubernetes >= 1.18, so
/// `spec.ingressClassName`; no extra `ingress.annotations`).
fn chart_ingress(v: &Values) -> Ingress {
    let mut annotations = BTreeMap::new();
    let mut set = |k: &str, val: &str| {
        annotations.insert(format!("nginx.ingress.kubernetes.io/{k}"), val.to_string());
    };
    if v.rolling_update {
        set("affinity", "cookie");
        set("session-cookie-name", "SKYPILOT_ROUTEID");
        set("affinity-mode", "persistent");
        set("session-cookie-change-on-failure", "true");
        set("proxy-next-upstream", "http_502 non_idempotent");
        set("proxy-next-upstream-tries", "3");
    }
    if v.oauth2_proxy {
        set("auth-signin", "http://$host/oauth2/start?rd=$escaped_request_uri");
        set("auth-url", "http://$host/oauth2/auth");
        set("auth-response-headers", "X-Auth-Request-Email, X-Skypilot-Auth");
        set("auth-snippet", CHART_AUTH_SNIPPET);
        set("configuration-snippet", CHART_CONFIGURATION_SNIPPET);
    } else {
        set("auth-type", "basic");
        set("auth-realm", "SkyPilot API Server");
        set("auth-secret", &format!("{}-basic-auth", v.release));
    }
    set("proxy-read-timeout", "3600");
    set("proxy-send-timeout", "3600");
    set("proxy-body-size", "1000m");
    let root = v.path == "/";
    if !root {
        set("rewrite-target", "/$2");
        annotations.insert("skypilot.co/ingress-path".to_string(), v.path.to_string());
    }
    from_json(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": format!("{}-ingress", v.release), "namespace": NS, "annotations": annotations,
                     "creationTimestamp": v.created},
        "spec": {
            "ingressClassName": v.class,
            "rules": [{"host": v.host, "http": {"paths": [{
                "pathType": if root { "Prefix" } else { "ImplementationSpecific" },
                "path": if root { v.path.to_string() } else { format!("{}(/|$)(.*)", v.path) },
                "backend": {"service": {"name": format!("{}-api-service", v.release), "port": {"number": 80}}},
            }]}}],
        },
    }))
}

/// `templates/oauth2-proxy-ingress.yaml`: class hard-coded to `nginx`.
fn chart_oauth2_ingress(v: &Values) -> Ingress {
    from_json(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": format!("{}-oauth2-proxy", v.release), "namespace": NS,
                     "labels": {"app": format!("{}-oauth2-proxy", v.release), "skypilot.co/component": "oauth2-proxy"},
                     "creationTimestamp": v.created},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": v.host, "http": {"paths": [{
            "path": "/oauth2", "pathType": "Prefix",
            "backend": {"service": {"name": format!("{}-oauth2-proxy", v.release), "port": {"number": 4180}}},
        }]}}]},
    }))
}

/// `templates/api-service.yaml`: selects the readiness label.
fn chart_api_service(release: &str) -> Service {
    from_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{release}-api-service"), "namespace": NS},
        "spec": {"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 46580, "protocol": "TCP"}],
                 "selector": {"app": format!("{release}-api"), "skypilot.co/ready": "true"}},
    }))
}

/// `templates/oauth2-proxy-service.yaml`: no readiness label.
fn chart_oauth2_service(release: &str) -> Service {
    from_json(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{release}-oauth2-proxy"), "namespace": NS,
                     "labels": {"app": format!("{release}-oauth2-proxy")}},
        "spec": {"ports": [{"name": "http", "port": 4180, "protocol": "TCP", "targetPort": 4180}],
                 "selector": {"app": format!("{release}-oauth2-proxy")}},
    }))
}

/// `templates/auth.yaml` (`stringData.auth`), as the API server returns it (`data`).
fn chart_basic_auth_secret(release: &str, htpasswd: &str) -> Secret {
    secret(&format!("{release}-basic-auth"), &[("auth", htpasswd)])
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    let mut s: Secret = from_json(json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                         "metadata": {"name": name, "namespace": NS}}));
    s.data = Some(data.iter().map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec()))).collect());
    s
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// Release `skypilot` as `v` renders it, with its Service and basic-auth
/// Secret, translated; every Ingress must be served.
fn translate_served(v: &Values) -> Translation {
    let t = run(
        &[chart_ingress(v)],
        &[chart_api_service("skypilot")],
        &[chart_basic_auth_secret("skypilot", HTPASSWD)],
        &IngressSettings::default(),
    );
    assert!(t.rejected.is_empty(), "{:?}", reasons(&t));
    t
}

fn run(ingresses: &[Ingress], services: &[Service], secrets: &[Secret], settings: &IngressSettings) -> Translation {
    translate(&IngressInputs { ingresses, services, secrets, settings })
}

fn kube(route: &RouteConfig) -> &KubernetesSource {
    match &route.source {
        BackendSource::Kubernetes(k) => k,
        other => panic!("not a kubernetes route: {other:?}"),
    }
}

fn basic_htpasswd(route: &RouteConfig) -> &str {
    match &route.auth.basic.as_ref().unwrap().htpasswd {
        HtpasswdSource::Inline(text) => text,
        other => panic!("{other:?}"),
    }
}

fn reasons(t: &Translation) -> Vec<String> {
    t.rejected.iter().map(|r| format!("{}: {}", r.ingress, r.reason)).collect()
}

#[test]
fn basic_auth_at_the_root() {
    let v = Values::new("skypilot");
    let t = translate_served(&v);
    assert_eq!(t.accepted, ["skypilot/skypilot-ingress"]);
    assert_eq!(t.route_ingresses, ["skypilot/skypilot-ingress"]);
    let [route] = t.routes.as_slice() else { panic!("{t:?}") };
    assert_eq!((route.prefix.as_str(), route.host.as_deref(), route.strip_prefix), ("/", None, false));
    // The readiness label leaves the watch selector: cordoned pods stay visible.
    let k = kube(route);
    assert_eq!((k.namespace.as_str(), k.selector.as_str()), (NS, "app=skypilot-api"));
    assert_eq!((k.ready_key.as_str(), k.ready_value.as_str()), ("skypilot.co/ready", "true"));
    assert_eq!(k.port, PortRef::Number(46580));
    let basic = route.auth.basic.as_ref().unwrap();
    assert_eq!(basic.realm, "SkyPilot API Server");
    assert_eq!(basic_htpasswd(route), HTPASSWD);
    assert!(route.auth.oauth2.is_none());
    // The chart's timeouts and body size.
    assert_eq!(route.timeouts.read, Duration::from_secs(3600));
    assert_eq!(route.timeouts.write, Duration::from_secs(3600));
    assert_eq!(route.timeouts.connect, Duration::from_secs(3), "file default");
    assert_eq!(route.max_body, 1000 << 20);
    // Defaults as in the file, except active checks (pod readiness decides).
    assert_eq!(route.connect_tries, 3);
    assert_eq!(route.cookie_name, "SKYPILOT_ROUTEID");
    assert_eq!(route.health.path, None);
    assert!(route.replay_on_draining_503);
    assert!(t.unknown_annotations.is_empty() && t.warnings.is_empty() && t.tls.is_empty());
    assert!(!route.https_redirect);
}

#[test]
fn two_releases_under_their_own_prefixes() {
    let first = Values { path: "/first-server", ..Values::new("first") };
    let second = Values { path: "/second-server", ..Values::new("second") };
    let t = run(
        &[chart_ingress(&second), chart_ingress(&first)],
        &[chart_api_service("first"), chart_api_service("second")],
        &[chart_basic_auth_secret("first", "alice:{SHA}x"), chart_basic_auth_secret("second", "bob:{SHA}y")],
        &IngressSettings::default(),
    );
    assert!(t.rejected.is_empty(), "{:?}", reasons(&t));
    let got: Vec<_> = t
        .routes
        .iter()
        .map(|r| (r.prefix.as_str(), r.strip_prefix, kube(r).selector.as_str(), basic_htpasswd(r)))
        .collect();
    // Longest prefix first.
    assert_eq!(
        got,
        [
            ("/second-server", true, "app=second-api", "bob:{SHA}y"),
            ("/first-server", true, "app=first-api", "alice:{SHA}x"),
        ]
    );
    assert_eq!(t.route_ingresses, ["skypilot/second-ingress", "skypilot/first-ingress"]);
    // `skypilot.co/ingress-path` is the chart's own, not an nginx annotation.
    assert!(t.unknown_annotations.is_empty());
}

#[test]
fn oauth2_with_token_bypass_and_the_adopted_oauth2_proxy_ingress() {
    let v = Values { oauth2_proxy: true, host: Some("Sky.Example.com"), ..Values::new("skypilot") };
    let settings = IngressSettings {
        adopt_classes: vec!["nginx".to_string()],
        adopt_namespaces: vec![NS.to_string()],
        ..IngressSettings::default()
    };
    let ingresses = [chart_ingress(&v), chart_oauth2_ingress(&v)];
    let services = [chart_api_service("skypilot"), chart_oauth2_service("skypilot")];
    let t = run(&ingresses, &services, &[], &settings);
    assert!(t.rejected.is_empty(), "{:?}", reasons(&t));
    assert_eq!(t.accepted, ["skypilot/skypilot-ingress", "skypilot/skypilot-oauth2-proxy"]);
    let [oauth2_proxy, api] = t.routes.as_slice() else { panic!("{t:?}") };

    assert_eq!((oauth2_proxy.prefix.as_str(), oauth2_proxy.host.as_deref()), ("/oauth2", Some("sky.example.com")));
    assert_eq!(oauth2_proxy.auth, AuthSettings::default());
    // No readiness label on oauth2-proxy pods: every selected, Ready pod serves.
    let k = kube(oauth2_proxy);
    assert_eq!(k.selector, "app=skypilot-oauth2-proxy");
    assert_eq!((k.ready_key.as_str(), k.ready_value.as_str()), ("app", "skypilot-oauth2-proxy"));
    assert_eq!(k.port, PortRef::Number(4180));

    assert_eq!((api.prefix.as_str(), api.host.as_deref()), ("/", Some("sky.example.com")));
    assert!(api.auth.basic.is_none());
    let oauth2 = api.auth.oauth2.as_ref().unwrap();
    // `http://$host/oauth2/auth` looped through ingress-nginx to the oauth2-proxy Ingress.
    // The Service has no ClusterIP here (as rendered): its DNS name.
    assert_eq!(oauth2.auth_url, "http://skypilot-oauth2-proxy.skypilot.svc:4180/oauth2/auth");
    assert_eq!(oauth2.signin_url.as_deref(), Some("http://$host/oauth2/start?rd=$escaped_request_uri"));
    assert_eq!(oauth2.response_headers, ["x-auth-request-email", "x-skypilot-auth"]);
    assert_eq!(oauth2.token_bypass_prefix.as_deref(), Some("Bearer sky_"));
    assert!(t.unknown_annotations.is_empty(), "{:?}", t.unknown_annotations);

    // Without adoption the oauth2-proxy Ingress is not pinroute's, and the
    // sub-request has nowhere to go.
    let t = run(&ingresses, &services, &[], &IngressSettings::default());
    assert!(t.routes.is_empty());
    let [rejection] = t.rejected.as_slice() else { panic!("{t:?}") };
    assert_eq!(rejection.ingress, "skypilot/skypilot-ingress");
    assert!(rejection.reason.contains("auth-url") && rejection.reason.contains("/oauth2/auth"), "{}", rejection.reason);
    // Adoption is per namespace too.
    let elsewhere = IngressSettings { adopt_namespaces: vec!["other".to_string()], ..settings.clone() };
    assert_eq!(run(&ingresses, &services, &[], &elsewhere).accepted, Vec::<String>::new());

    // Once the API server assigned a ClusterIP, the sub-request goes there:
    // no cluster DNS lookup on the request path. Headless keeps the name.
    let with_ip = |ip: &str| {
        let mut oauth2 = chart_oauth2_service("skypilot");
        oauth2.spec.as_mut().unwrap().cluster_ip = Some(ip.to_string());
        let services = [chart_api_service("skypilot"), oauth2];
        let t = run(&ingresses, &services, &[], &settings);
        t.routes[1].auth.oauth2.as_ref().unwrap().auth_url.clone()
    };
    assert_eq!(with_ip("10.96.0.17"), "http://10.96.0.17:4180/oauth2/auth");
    assert_eq!(with_ip("fd00::17"), "http://[fd00::17]:4180/oauth2/auth");
    assert_eq!(with_ip("None"), "http://skypilot-oauth2-proxy.skypilot.svc:4180/oauth2/auth");
}

#[test]
fn rolling_update_annotations() {
    let v = Values { rolling_update: true, ..Values::new("skypilot") };
    let t = translate_served(&v);
    let [route] = t.routes.as_slice() else { panic!("{t:?}") };
    assert_eq!(route.cookie_name, "SKYPILOT_ROUTEID");
    assert_eq!(route.connect_tries, 3);
    assert_eq!(route.timeouts.read, Duration::from_secs(3600));
    assert_eq!(route.timeouts.write, Duration::from_secs(3600));
    assert_eq!(route.max_body, 1000 << 20);
    // affinity cookie / persistent / change-on-failure are pinroute's behaviour anyway.
    assert!(t.warnings.is_empty() && t.unknown_annotations.is_empty(), "{t:?}");
}

fn with_annotation(mut ingress: Ingress, key: &str, value: &str) -> Ingress {
    ingress.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(key.to_string(), value.to_string());
    ingress
}

fn root_fixture() -> (Vec<Service>, Vec<Secret>) {
    (vec![chart_api_service("skypilot")], vec![chart_basic_auth_secret("skypilot", HTPASSWD)])
}

#[test]
fn snippets_other_than_the_charts_are_refused() {
    let (services, secrets) = root_fixture();
    let cases = [
        ("nginx.ingress.kubernetes.io/configuration-snippet", "more_set_headers \"X-Skypilot-Auth-Mode: token\";"),
        ("nginx.ingress.kubernetes.io/server-snippet", "location /admin { return 200; }"),
        ("nginx.ingress.kubernetes.io/auth-snippet", "return 200;"),
        ("nginx.ingress.kubernetes.io/modsecurity-snippet", "SecRuleEngine Off"),
    ];
    for (key, value) in cases {
        let ingress = with_annotation(chart_ingress(&Values::new("skypilot")), key, value);
        let t = run(&[ingress], &services, &secrets, &IngressSettings::default());
        assert!(t.routes.is_empty(), "{key}");
        let [rejection] = t.rejected.as_slice() else { panic!("{t:?}") };
        assert!(rejection.reason.contains(key) && rejection.reason.contains("never executed"), "{}", rejection.reason);
    }
    // The chart's configuration-snippet alone (no token-bypass auth-snippet) is not the chart's pattern.
    let ingress = with_annotation(
        chart_ingress(&Values::new("skypilot")),
        "nginx.ingress.kubernetes.io/configuration-snippet",
        "proxy_set_header X-Skypilot-Auth-Mode $x_skypilot_auth_mode;",
    );
    assert_eq!(run(&[ingress], &services, &secrets, &IngressSettings::default()).rejected.len(), 1);
}

#[test]
fn access_narrowing_annotations_are_refused() {
    let (services, secrets) = root_fixture();
    for key in ["whitelist-source-range", "auth-tls-secret", "canary"] {
        let key = format!("nginx.ingress.kubernetes.io/{key}");
        let ingress = with_annotation(chart_ingress(&Values::new("skypilot")), &key, "10.0.0.0/8");
        let t = run(&[ingress], &services, &secrets, &IngressSettings::default());
        assert!(t.rejected[0].reason.contains(&key), "{:?}", reasons(&t));
    }
}

#[test]
fn missing_service_or_secret_rejects_naming_it() {
    let v = Values::new("skypilot");
    let t =
        run(&[chart_ingress(&v)], &[], &[chart_basic_auth_secret("skypilot", HTPASSWD)], &IngressSettings::default());
    assert!(t.rejected[0].reason.contains("Service skypilot/skypilot-api-service not found"), "{:?}", reasons(&t));
    let t = run(&[chart_ingress(&v)], &[chart_api_service("skypilot")], &[], &IngressSettings::default());
    assert!(t.rejected[0].reason.contains("auth Secret skypilot/skypilot-basic-auth not found"), "{:?}", reasons(&t));
    // Another namespace's Secret is never read.
    let ingress = with_annotation(chart_ingress(&v), "nginx.ingress.kubernetes.io/auth-secret", "kube-system/admin");
    let (services, secrets) = root_fixture();
    let t = run(&[ingress], &services, &secrets, &IngressSettings::default());
    assert!(t.rejected[0].reason.contains("only the Ingress's namespace"), "{:?}", reasons(&t));
}

#[test]
fn auth_map_secrets_become_htpasswd_lines() {
    let ingress = with_annotation(
        chart_ingress(&Values::new("skypilot")),
        "nginx.ingress.kubernetes.io/auth-secret-type",
        "auth-map",
    );
    let secrets = [secret("skypilot-basic-auth", &[("bob", "{SHA}b\n"), ("alice", "$apr1$a")])];
    let t = run(&[ingress], &[chart_api_service("skypilot")], &secrets, &IngressSettings::default());
    assert_eq!(basic_htpasswd(&t.routes[0]), "alice:$apr1$a\nbob:{SHA}b");
}

#[test]
fn service_without_the_ready_label_and_named_ports() {
    let service: Service = from_json(json!({
        "metadata": {"name": "skypilot-api-service", "namespace": NS},
        "spec": {"ports": [{"name": "web", "port": 8080, "targetPort": "http"}],
                 "selector": {"tier": "api", "app": "skypilot-api"}},
    }));
    let mut ingress = chart_ingress(&Values::new("skypilot"));
    let backend =
        &mut ingress.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths[0].backend;
    backend.service.as_mut().unwrap().port = Some(from_json(json!({"name": "web"})));
    let (_, secrets) = root_fixture();
    let t = run(&[ingress], &[service], &secrets, &IngressSettings::default());
    let k = kube(&t.routes[0]);
    assert_eq!(k.selector, "app=skypilot-api,tier=api", "sorted, kept whole");
    assert_eq!((k.ready_key.as_str(), k.ready_value.as_str()), ("app", "skypilot-api"));
    assert_eq!(k.port, PortRef::Name("http".to_string()));
}

#[test]
fn older_ingress_wins_a_conflict() {
    let (mut services, mut secrets) = root_fixture();
    services.push(chart_api_service("zz"));
    secrets.push(chart_basic_auth_secret("zz", HTPASSWD));
    // "zz" sorts after "skypilot" but was created first.
    let old = Values { created: "2025-06-01T00:00:00Z", ..Values::new("zz") };
    let new = Values::new("skypilot");
    let t = run(&[chart_ingress(&new), chart_ingress(&old)], &services, &secrets, &IngressSettings::default());
    assert_eq!(t.accepted, ["skypilot/zz-ingress"]);
    let [rejection] = t.rejected.as_slice() else { panic!("{t:?}") };
    assert_eq!(rejection.ingress, "skypilot/skypilot-ingress");
    assert!(
        rejection.reason.contains("already served by the older Ingress skypilot/zz-ingress"),
        "{}",
        rejection.reason
    );

    // An older Ingress that fails validation frees the prefix.
    let broken = with_annotation(chart_ingress(&old), "nginx.ingress.kubernetes.io/session-cookie-name", "bad name");
    let t = run(&[chart_ingress(&new), broken], &services, &secrets, &IngressSettings::default());
    assert_eq!(t.accepted, ["skypilot/skypilot-ingress"]);
    let [rejection] = t.rejected.as_slice() else { panic!("{t:?}") };
    assert_eq!(rejection.ingress, "skypilot/zz-ingress");
    // The config crate's error, naming the Ingress, the key and the path.
    assert!(
        rejection.reason.contains("Ingress skypilot/zz-ingress")
            && rejection.reason.contains("cookie_name")
            && rejection.reason.contains("path \"/\""),
        "{}",
        rejection.reason
    );
}

#[test]
fn class_selection() {
    let (services, secrets) = root_fixture();
    let settings = IngressSettings::default();
    let nginx = chart_ingress(&Values { class: "nginx", ..Values::new("skypilot") });
    assert!(run(std::slice::from_ref(&nginx), &services, &secrets, &settings).accepted.is_empty());
    // The legacy annotation (Kubernetes < 1.18 rendering) selects too.
    let mut legacy = nginx;
    legacy.spec.as_mut().unwrap().ingress_class_name = None;
    let legacy = with_annotation(legacy, "kubernetes.io/ingress.class", "pinroute");
    assert_eq!(run(&[legacy], &services, &secrets, &settings).accepted, ["skypilot/skypilot-ingress"]);
}

#[test]
fn unknown_annotations_exact_paths_and_sizes() {
    let (services, secrets) = root_fixture();
    let mut ingress = chart_ingress(&Values::new("skypilot"));
    // The older chart's `server-snippets` (plural) is no ingress-nginx annotation.
    ingress = with_annotation(ingress, "nginx.ingress.kubernetes.io/server-snippets", "location / {}");
    ingress = with_annotation(ingress, "nginx.ingress.kubernetes.io/enable-cors", "true");
    ingress = with_annotation(ingress, "nginx.ingress.kubernetes.io/proxy-body-size", "0");
    ingress.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths[0].path_type =
        "Exact".to_string();
    let t = run(&[ingress], &services, &secrets, &IngressSettings::default());
    assert!(t.rejected.is_empty(), "{:?}", reasons(&t));
    let id = "skypilot/skypilot-ingress".to_string();
    assert_eq!(
        t.unknown_annotations,
        [
            (id.clone(), "nginx.ingress.kubernetes.io/enable-cors".to_string()),
            (id.clone(), "nginx.ingress.kubernetes.io/server-snippets".to_string())
        ]
    );
    assert_eq!(t.routes[0].max_body, u64::MAX, "0 is unlimited");
    assert!(t.warnings.iter().any(|(i, w)| *i == id && w.contains("Exact")), "{:?}", t.warnings);

    let bad = with_annotation(
        chart_ingress(&Values::new("skypilot")),
        "nginx.ingress.kubernetes.io/proxy-read-timeout",
        "1h",
    );
    let t = run(&[bad], &services, &secrets, &IngressSettings::default());
    assert!(t.rejected[0].reason.contains("proxy-read-timeout"), "{:?}", reasons(&t));
}

#[test]
fn general_regex_is_refused() {
    let (services, secrets) = root_fixture();
    let mut ingress =
        with_annotation(chart_ingress(&Values::new("skypilot")), "nginx.ingress.kubernetes.io/use-regex", "true");
    let path = &mut ingress.spec.as_mut().unwrap().rules.as_mut().unwrap()[0].http.as_mut().unwrap().paths[0];
    path.path = Some("/api/v[0-9]+".to_string());
    path.path_type = "ImplementationSpecific".to_string();
    let t = run(&[ingress], &services, &secrets, &IngressSettings::default());
    assert!(t.rejected[0].reason.contains("regular expression"), "{:?}", reasons(&t));
}

#[test]
fn tls_secrets_and_redirect() {
    let (services, mut secrets) = root_fixture();
    let mut tls = secret("sky-tls", &[("tls.crt", "CERT"), ("tls.key", "KEY")]);
    tls.type_ = Some("kubernetes.io/tls".to_string());
    secrets.push(tls);
    let mut ingress = chart_ingress(&Values { host: Some("sky.example.com"), ..Values::new("skypilot") });
    ingress.spec.as_mut().unwrap().tls =
        Some(from_json(json!([{"hosts": ["SKY.example.com"], "secretName": "sky-tls"}, {"secretName": "gone"}])));
    let t = run(std::slice::from_ref(&ingress), &services, &secrets, &IngressSettings::default());
    assert!(t.routes[0].https_redirect, "TLS without ssl-redirect false redirects");
    let [gone, sky] = t.tls.as_slice() else { panic!("{t:?}") };
    assert_eq!((sky.secret.as_str(), sky.hosts.as_slice()), ("sky-tls", &["sky.example.com".to_string()][..]));
    assert_eq!((sky.cert_pem.as_deref(), sky.key_pem.as_deref()), (Some(&b"CERT"[..]), Some(&b"KEY"[..])));
    assert_eq!((gone.secret.as_str(), gone.cert_pem.as_deref()), ("gone", None));
    assert!(t.warnings.iter().any(|(_, w)| w.contains("TLS Secret skypilot/gone not found")));
    assert!(!format!("{sky:?}").contains("KEY"), "the key is never printed");

    let off = with_annotation(ingress.clone(), "nginx.ingress.kubernetes.io/ssl-redirect", "false");
    assert!(!run(&[off], &services, &secrets, &IngressSettings::default()).routes[0].https_redirect);
    // Without spec.tls only force-ssl-redirect redirects.
    ingress.spec.as_mut().unwrap().tls = None;
    assert!(
        !run(std::slice::from_ref(&ingress), &services, &secrets, &IngressSettings::default()).routes[0].https_redirect
    );
    let forced = with_annotation(ingress, "nginx.ingress.kubernetes.io/force-ssl-redirect", "true");
    assert!(run(&[forced], &services, &secrets, &IngressSettings::default()).routes[0].https_redirect);
}

#[test]
fn output_does_not_depend_on_input_order() {
    let v1 = Values { path: "/first-server", ..Values::new("first") };
    let v2 = Values { path: "/second-server", host: Some("b.example.com"), ..Values::new("second") };
    let v3 = Values { host: Some("a.example.com"), ..Values::new("third") };
    let services: Vec<Service> = ["first", "second", "third"].iter().map(|r| chart_api_service(r)).collect();
    let secrets: Vec<Secret> =
        ["first", "second", "third"].iter().map(|r| chart_basic_auth_secret(r, HTPASSWD)).collect();
    let mut ingresses = vec![chart_ingress(&v1), chart_ingress(&v2), chart_ingress(&v3)];
    let settings = IngressSettings::default();
    let a = run(&ingresses, &services, &secrets, &settings);
    ingresses.reverse();
    let mut services = services;
    services.reverse();
    let b = run(&ingresses, &services, &secrets, &settings);
    assert_eq!(a, b);
    let order: Vec<_> = a.routes.iter().map(|r| (r.host.clone().unwrap_or_default(), r.prefix.clone())).collect();
    assert_eq!(
        order,
        [
            (String::new(), "/first-server".to_string()),
            ("a.example.com".to_string(), "/".to_string()),
            ("b.example.com".to_string(), "/second-server".to_string()),
        ]
    );
}
