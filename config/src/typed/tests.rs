use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/pinroute.toml"), text, None)
}

#[test]
fn minimal_file_gets_production_defaults() {
    let config = parse("[[route]]\nbackends = [\"127.0.0.1:46580\"]\n").unwrap();
    assert_eq!(config.server.listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(config.server.admin, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(config.server.keepalive_timeout, Some(Duration::from_secs(75)));
    assert_eq!(config.cookie.name, "SKYPILOT_ROUTEID");
    assert_eq!(config.cookie.max_age, Duration::from_secs(7 * 86400));
    assert!(config.cookie.key.is_none());
    let route = &config.routes[0];
    assert_eq!(route.prefix, "/");
    assert_eq!(route.max_body, 1000 << 20);
    assert_eq!(route.timeouts.read, Duration::from_secs(3600));
    assert_eq!(route.health.path.as_deref(), Some("/api/health"));
}

#[test]
fn full_file_is_typed() {
    let config = parse(
        r#"
[server]
listen = ["127.0.0.1:8080", "[::1]:8080"]
admin = "off"
grace_period = "45s"
[cookie]
name = "ROUTE"
max_age = "1h"
secure = true
same_site = "none"
[[route]]
prefix = "/first-server/"
backends = ["127.0.0.1:1", "localhost:2"]
max_body = "10MiB"
hold_for = "10s"
when_all_cordoned = "serve_draining"
[route.health_check]
interval = "1s"
"#,
    )
    .unwrap();
    assert_eq!(config.server.listen.len(), 2);
    assert_eq!(config.server.admin, None);
    assert_eq!(config.server.grace_period, Duration::from_secs(45));
    assert_eq!(config.cookie.same_site, Some(SameSite::None));
    let route = &config.routes[0];
    assert_eq!(route.prefix, "/first-server");
    assert_eq!(route.max_body, 10 << 20);
    assert_eq!(route.hold_for, Duration::from_secs(10));
    assert_eq!(route.when_all_cordoned, AllCordoned::ServeDraining);
    assert_eq!(route.health.interval, Duration::from_secs(1));
    match &route.source {
        BackendSource::Static(list) => assert_eq!(list[1].name, "localhost:2"),
        other => panic!("expected static, got {other:?}"),
    }
}

#[test]
fn errors_name_file_key_and_fix() {
    let cases = [
        ("[server]\ngrace_period = \"soon\"\n[[route]]\nbackends=[\"127.0.0.1:1\"]", "key `server.grace_period`"),
        ("[[route]]\nbackends = [\"nonsense\"]", "key `route[0].backends[0]`"),
        ("[[route]]\nprefix = \"api\"\nbackends=[\"127.0.0.1:1\"]", "key `route[0].prefix`"),
        ("[[route]]\nprefix = \"/a/../b\"\nbackends=[\"127.0.0.1:1\"]", "dot or percent-encoded"),
        ("[server]\nlisten = [\"8080\"]\n[[route]]\nbackends=[\"127.0.0.1:1\"]", "key `server.listen[0]`"),
        ("[cookie]\nsame_site = \"none\"\n[[route]]\nbackends=[\"127.0.0.1:1\"]", "set cookie.secure = true"),
        ("[cookie]\nmax_age = \"0s\"\n[[route]]\nbackends=[\"127.0.0.1:1\"]", "without an expiry"),
        ("", "at least one [[route]]"),
        ("[[route]]\nprefix=\"/\"", "no backends"),
        ("[[route]]\nbackends=[\"127.0.0.1:1\"]\n[[route]]\nbackends=[\"127.0.0.1:2\"]", "already used by route[0]"),
    ];
    for (text, expected) in cases {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/pinroute.toml:"), "{err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
}

#[test]
fn tls_files_are_optional_only_in_ingress_mode() {
    let route = "[[route]]\nbackends=[\"127.0.0.1:1\"]\n";
    let err = parse(&format!("[server.tls]\nlisten = [\"127.0.0.1:8443\"]\n{route}")).unwrap_err().to_string();
    assert!(err.contains("key `server.tls.cert_file`") && err.contains("give a PEM file path"), "{err}");
    assert!(!err.contains("Ingress"), "no [ingress]: Secrets are no way out here: {err}");

    let ingress = "[ingress]\nclass = \"pinroute\"\n";
    let config = parse(&format!("[server.tls]\nlisten = [\"127.0.0.1:8443\"]\n{ingress}")).unwrap();
    let tls = config.server.tls.unwrap();
    assert_eq!((tls.default_cert, tls.redirect_http), (None, false));
    // One file without the other is a mistake in either mode.
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let err = parse(&format!("[server.tls]\ncert_file = {file:?}\n{ingress}")).unwrap_err().to_string();
    assert!(err.contains("key `server.tls.key_file`") && err.contains("spec.tls Secrets"), "{err}");
}

#[test]
fn keepalive_timeout_rounds_up_to_seconds_and_zero_is_forever() {
    let with = |value: &str| {
        parse(&format!("[server]\nkeepalive_timeout = \"{value}\"\n[[route]]\nbackends=[\"127.0.0.1:1\"]"))
            .map(|c| c.server.keepalive_timeout)
    };
    assert_eq!(with("500ms").unwrap(), Some(Duration::from_secs(1)));
    assert_eq!(with("2m").unwrap(), Some(Duration::from_secs(120)));
    assert_eq!(with("0s").unwrap(), None);
    let err = with("soon").unwrap_err().to_string();
    assert!(err.contains("key `server.keepalive_timeout`"), "{err}");
}

#[test]
fn https_redirect_needs_an_https_listener() {
    let err = parse("[[route]]\nbackends=[\"127.0.0.1:1\"]\nhttps_redirect = true\n").unwrap_err().to_string();
    assert!(err.contains("key `route[0].https_redirect`") && err.contains("add [server.tls]"), "{err}");
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let tls = format!("[server.tls]\ncert_file = {file:?}\nkey_file = {file:?}\n");
    let ok = parse(&format!("{tls}[[route]]\nbackends=[\"127.0.0.1:1\"]\nhttps_redirect = true\n")).unwrap();
    assert!(ok.routes[0].https_redirect);
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let err = parse("[server]\nlisten_on = [\"0.0.0.0:1\"]\n").unwrap_err().to_string();
    assert!(err.contains("listen_on"), "{err}");
    assert!(err.contains("/etc/pinroute.toml"), "{err}");
}

#[test]
fn cookie_key_from_env_must_be_long_enough() {
    let text = "[[route]]\nbackends=[\"127.0.0.1:1\"]";
    let short = Config::parse(Path::new("x.toml"), text, Some("abc".into())).unwrap_err();
    assert!(short.to_string().contains("PINROUTE_COOKIE_KEY"), "{short}");
    let ok = Config::parse(Path::new("x.toml"), text, Some("0123456789abcdef0123".into())).unwrap();
    assert_eq!(ok.cookie.key.unwrap().origin, KeyOrigin::Env);
}

#[test]
fn kubernetes_route_parses_selector_and_port() {
    let config = parse(
        r#"
[[route]]
prefix = "/"
[route.kubernetes]
namespace = "skypilot"
selector = "app=skypilot-api,tier!=test"
ready_label = "skypilot.co/ready=true"
port = "http"
"#,
    )
    .unwrap();
    let BackendSource::Kubernetes(kube) = &config.routes[0].source else { panic!("expected kubernetes") };
    assert_eq!(kube.namespace, "skypilot");
    assert_eq!(kube.requirements.len(), 2);
    assert_eq!(kube.ready_key, "skypilot.co/ready");
    assert_eq!(kube.port, PortRef::Name("http".into()));
    let bad = parse("[[route]]\n[route.kubernetes]\nselector = \"app=x\"\nready_label = \"a,b\"").unwrap_err();
    assert!(bad.to_string().contains("route[0].kubernetes.ready_label"), "{bad}");
}

#[test]
fn request_id_capacity_defaults_and_bounds() {
    let parse_capacity = |extra: &str| parse(&format!("[server]\n{extra}\n[[route]]\nbackends=[\"127.0.0.1:1\"]"));
    assert_eq!(parse_capacity("").unwrap().server.request_id_capacity, 100_000);
    assert_eq!(parse_capacity("request_id_capacity = 1000000").unwrap().server.request_id_capacity, 1_000_000);
    let err = parse_capacity("request_id_capacity = 0").unwrap_err().to_string();
    assert!(err.contains("key `server.request_id_capacity`"), "{err}");
}
