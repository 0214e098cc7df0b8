//! Properties of Ingress translation (issue #14): arbitrary annotation
//! values and object shapes never panic and translate deterministically;
//! no snippet other than the SkyPilot chart's exact pair (in any layout,
//! quoting or comments nginx would read the same) is ever accepted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use pinroute_discovery::{translate, IngressInputs, IngressSettings, CHART_AUTH_SNIPPET, CHART_CONFIGURATION_SNIPPET};
use proptest::prelude::*;
use serde_json::{json, Value};

const NS: &str = "skypilot";
const SNIPPET_REFUSED: &str = "nginx snippets are never executed";

fn settings() -> IngressSettings {
    IngressSettings {
        adopt_classes: vec!["nginx".to_string()],
        adopt_namespaces: vec![NS.to_string()],
        ..IngressSettings::default()
    }
}

// ---- arbitrary shapes ----------------------------------------------------

const ANNOTATIONS: &[&str] = &[
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-change-on-failure",
    "session-cookie-max-age",
    "session-cookie-path",
    "proxy-read-timeout",
    "proxy-send-timeout",
    "proxy-connect-timeout",
    "proxy-body-size",
    "proxy-next-upstream-tries",
    "rewrite-target",
    "use-regex",
    "ssl-redirect",
    "force-ssl-redirect",
    "backend-protocol",
    "auth-type",
    "auth-secret",
    "auth-secret-type",
    "auth-realm",
    "auth-url",
    "auth-signin",
    "auth-response-headers",
    "auth-snippet",
    "configuration-snippet",
    "server-snippet",
    "whitelist-source-range",
    "canary",
    "x-unknown",
];

fn annotation_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "true",
            "false",
            "TRUE",
            "0",
            "1",
            "3600",
            "-1",
            "99999999999999999999",
            "10m",
            "1000m",
            "1g",
            "0.5",
            "cookie",
            "basic",
            "digest",
            "auth-file",
            "auth-map",
            "/$2",
            "/",
            "/$1",
            "$host",
            "http://$host/oauth2/auth",
            "https://$host/oauth2/auth?x=1",
            "http://$remote_addr/x",
            "http://oauth2.skypilot:4180/oauth2/auth",
            "ftp://x",
            "http://",
            "X-Auth-Request-Email, X-Skypilot-Auth",
            "bad header,",
            "HTTP",
            "GRPC",
            "basic-auth",
            "nosuch",
            "SKYPILOT_ROUTEID",
            "a b",
            "/second-server",
        ])
        .prop_map(str::to_string),
        Just(CHART_AUTH_SNIPPET.to_string()),
        Just(CHART_CONFIGURATION_SNIPPET.to_string()),
        ".{0,24}",
    ]
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(
        prop_oneof![
            8 => prop::sample::select(ANNOTATIONS).prop_map(|a| format!("nginx.ingress.kubernetes.io/{a}")),
            1 => Just("kubernetes.io/ingress.class".to_string()),
            1 => "[a-z./-]{1,20}",
        ],
        annotation_value(),
        0..7,
    )
}

fn maybe<T: Strategy>(s: T) -> impl Strategy<Value = Option<T::Value>> {
    prop::option::weighted(0.7, s)
}

fn path_value() -> impl Strategy<Value = Value> {
    let path = prop_oneof![
        prop::sample::select(vec![
            "/",
            "/oauth2",
            "/second-server",
            "/second-server(/|$)(.*)",
            "/a/b/",
            "/x/[0-9]+",
            "//",
            "/a/../b",
            "/%2e",
            "/a%2Fb",
            "relative",
            "",
            "/é",
            "/a b",
            "/a?b",
        ])
        .prop_map(str::to_string),
        ".{0,10}",
    ];
    let port = prop_oneof![
        (0..70000i64).prop_map(|n| json!({"number": n})),
        prop::sample::select(vec!["http", "", "nosuch"]).prop_map(|n| json!({"name": n})),
        Just(json!({})),
    ];
    let backend = prop_oneof![
        4 => (prop::sample::select(vec!["api", "oauth2", "missing", ""]), port)
            .prop_map(|(name, port)| json!({"service": {"name": name, "port": port}})),
        1 => Just(json!({"resource": {"kind": "Bucket", "name": "b"}})),
        1 => Just(json!({})),
    ];
    (maybe(path), prop::sample::select(vec!["Prefix", "Exact", "ImplementationSpecific", "Regex", ""]), backend)
        .prop_map(|(path, path_type, backend)| {
            let mut p = json!({"pathType": path_type, "backend": backend});
            if let Some(path) = path {
                p["path"] = path.into();
            }
            p
        })
}

fn rule() -> impl Strategy<Value = Value> {
    (
        maybe(prop_oneof![
            prop::sample::select(vec!["sky.example.com", "SKY.example.com", "*.example.com", "", " "])
                .prop_map(str::to_string),
            "[a-z.]{1,12}",
        ]),
        maybe(prop::collection::vec(path_value(), 0..3)),
    )
        .prop_map(|(host, paths)| {
            let mut r = json!({});
            if let Some(h) = host {
                r["host"] = h.into();
            }
            if let Some(paths) = paths {
                r["http"] = json!({"paths": paths});
            }
            r
        })
}

fn ingress() -> impl Strategy<Value = Value> {
    let spec = (
        maybe(prop::sample::select(vec!["pinroute", "nginx", "other", ""])),
        maybe(prop::collection::vec(rule(), 0..3)),
        maybe(path_value().prop_map(|p| p["backend"].clone())),
        maybe(prop::collection::vec(
            (
                maybe(prop::collection::vec("[a-z.*]{0,10}", 0..2)),
                maybe(prop::sample::select(vec!["tls", "", "missing"])),
            ),
            0..2,
        )),
    )
        .prop_map(|(class, rules, default_backend, tls)| {
            let mut s = json!({});
            if let Some(c) = class {
                s["ingressClassName"] = c.into();
            }
            if let Some(r) = rules {
                s["rules"] = r.into();
            }
            if let Some(d) = default_backend {
                s["defaultBackend"] = d;
            }
            if let Some(t) = tls {
                s["tls"] = t
                    .into_iter()
                    .map(|(hosts, secret)| {
                        let mut e = json!({});
                        if let Some(h) = hosts {
                            e["hosts"] = h.into();
                        }
                        if let Some(s) = secret {
                            e["secretName"] = s.into();
                        }
                        e
                    })
                    .collect();
            }
            s
        });
    (
        maybe(prop::sample::select(vec!["api-ingress", "oauth2", ""])),
        maybe(prop::sample::select(vec![NS, "other"])),
        annotations(),
        maybe(prop::sample::select(vec!["2026-01-01T00:00:00Z", "2025-06-01T00:00:00Z"])),
        maybe(spec),
    )
        .prop_map(|(name, namespace, annotations, created, spec)| {
            let mut meta = json!({"annotations": annotations});
            if let Some(n) = name {
                meta["name"] = n.into();
            }
            if let Some(n) = namespace {
                meta["namespace"] = n.into();
            }
            if let Some(c) = created {
                meta["creationTimestamp"] = c.into();
            }
            let mut i = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": meta});
            if let Some(s) = spec {
                i["spec"] = s;
            }
            i
        })
}

fn services() -> Vec<Service> {
    [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": NS},
               "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "targetPort": 46580}],
                        "selector": {"app": "api", "skypilot.co/ready": "true"}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "oauth2", "namespace": NS},
               "spec": {"clusterIP": "10.96.0.11", "ports": [{"name": "http", "port": 4180, "targetPort": "http"}],
                        "selector": {"app": "oauth2"}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api", "namespace": "other"},
               "spec": {"ports": [{"port": 80}]}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect()
}

fn secrets() -> Vec<Secret> {
    [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "basic-auth", "namespace": NS},
               "data": {"auth": "c2t5cGlsb3Q6JGFwcjEkYzFoNHJOeHQkMk5uTDdkSURVVjB0V3NudU5NR1NyLw=="}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "tls", "namespace": NS},
               "type": "kubernetes.io/tls", "data": {"tls.crt": "bm90IGEgY2VydA==", "tls.key": "bm90IGEga2V5"}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect()
}

// ---- snippets -------------------------------------------------------------

/// One nginx token: a word (may be quoted when rendered) or one of `{ } ;`
/// (and `( )`, which nginx's `if` reads the same quoted or not).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Punct(char),
}

fn words(ws: &[&str]) -> Vec<Tok> {
    ws.iter()
        .map(|w| match *w {
            "{" | "}" | ";" | "(" | ")" => Tok::Punct(w.chars().next().unwrap()),
            w => Tok::Word(w.to_string()),
        })
        .collect()
}

/// The chart's `auth-snippet`, with the variants pinroute accepts as the
/// same meaning (`~*`, the regex's `.*`/empty tail, `return 204`).
fn chart_auth(op: &str, regex: &str, code: &str) -> Vec<Tok> {
    words(&[
        "if",
        "(",
        "$http_authorization",
        op,
        regex,
        ")",
        "{",
        "set",
        "$x_skypilot_auth_mode",
        "token",
        ";",
        "return",
        code,
        ";",
        "}",
    ])
}

fn chart_configuration(header: &str) -> Vec<Tok> {
    words(&["proxy_set_header", header, "$x_skypilot_auth_mode", ";"])
}

/// Whether tokens are the chart's auth-snippet, by the definition above.
fn is_chart_auth(toks: &[Tok]) -> bool {
    ["~", "~*"].iter().any(|op| {
        ["^Bearer sky_.+", "^Bearer sky_.*", "^Bearer sky_"]
            .iter()
            .any(|re| ["200", "204"].iter().any(|code| same(toks, &chart_auth(op, re, code))))
    })
}

fn is_chart_configuration(toks: &[Tok]) -> bool {
    toks.len() == 4
        && matches!(&toks[1], Tok::Word(h) if h.eq_ignore_ascii_case("X-Skypilot-Auth-Mode"))
        && same(
            toks,
            &chart_configuration(match &toks[1] {
                Tok::Word(h) => h,
                Tok::Punct(_) => "",
            }),
        )
}

/// Token lists equal, where `(` and `)` match a word of the same text.
fn same(a: &[Tok], b: &[Tok]) -> bool {
    let loose = |t: &Tok| match t {
        Tok::Punct(c @ ('(' | ')')) => Tok::Word(c.to_string()),
        t => t.clone(),
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| loose(x) == loose(y))
}

/// How a snippet is laid out: per gap, the whitespace (or comment); per word, its quoting.
#[derive(Debug, Clone)]
struct Layout {
    gaps: Vec<u8>,
    quotes: Vec<u8>,
}

fn layout() -> impl Strategy<Value = Layout> {
    (prop::collection::vec(0..7u8, 24), prop::collection::vec(0..3u8, 24))
        .prop_map(|(gaps, quotes)| Layout { gaps, quotes })
}

fn render(toks: &[Tok], layout: &Layout) -> String {
    let mut out = String::new();
    for (i, tok) in toks.iter().enumerate() {
        let prev_word = i > 0 && matches!(toks[i - 1], Tok::Word(_));
        let gap = layout.gaps[i % layout.gaps.len()];
        let need_space = prev_word && matches!(tok, Tok::Word(_));
        match gap {
            0 if !need_space && i > 0 => {}
            0 | 1 => out.push(' '),
            2 => out.push('\n'),
            3 => out.push_str("\n  "),
            4 => out.push('\t'),
            5 => out.push_str("  # a comment; with { punctuation } \"and quotes\n"),
            _ => out.push_str("\n# Set x_skypilot_auth_mode variable.\n  "),
        }
        match tok {
            Tok::Punct(c) => out.push(*c),
            Tok::Word(w) => {
                let plain_ok = !w.is_empty() && !w.contains(|c: char| c.is_whitespace() || "{}();#\"'".contains(c));
                match layout.quotes[i % layout.quotes.len()] {
                    0 if plain_ok => out.push_str(w),
                    1 if !w.contains('\'') => out.push_str(&format!("'{w}'")),
                    _ if !w.contains('"') => out.push_str(&format!("\"{w}\"")),
                    _ => out.push_str(&format!("'{w}'")),
                }
            }
        }
    }
    out.push('\n');
    out
}

/// A token-level change a hand-edited or hostile snippet might have.
#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Insert(usize, Tok),
    Replace(usize, Tok),
    Swap(usize),
    /// A `{`, `}` or `;` written in quotes: a word to nginx, not structure.
    QuotePunct(usize),
}

fn tok() -> impl Strategy<Value = Tok> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "return", "200", "204", "401", "set", "if", "token", "admin", "$x_skypilot_auth_mode", "$http_authorization",
            "$http_cookie", "~", "~*", "=", "!~", "^Bearer ", "^Bearer sky_.+", "^Bearer sky", ".*", "proxy_pass",
            "http://evil", "proxy_set_header", "X-Skypilot-Auth-Mode", "X-Other", "more_set_headers", "allow", "all",
        ])
        .prop_map(|w| Tok::Word(w.to_string())),
        2 => prop::sample::select(vec!['{', '}', ';', '(', ')']).prop_map(Tok::Punct),
        1 => "[a-z$_~^.+*]{1,8}".prop_map(Tok::Word),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>()).prop_map(Mutation::Delete),
        (any::<usize>(), tok()).prop_map(|(i, t)| Mutation::Insert(i, t)),
        (any::<usize>(), tok()).prop_map(|(i, t)| Mutation::Replace(i, t)),
        (any::<usize>()).prop_map(Mutation::Swap),
        (any::<usize>()).prop_map(Mutation::QuotePunct),
    ]
}

fn mutate(toks: &[Tok], m: &Mutation) -> Vec<Tok> {
    let mut t = toks.to_vec();
    let n = t.len();
    match m {
        Mutation::Delete(i) => {
            t.remove(i % n);
        }
        Mutation::Insert(i, x) => t.insert(i % (n + 1), x.clone()),
        Mutation::Replace(i, x) => t[i % n] = x.clone(),
        Mutation::Swap(i) if n > 1 => t.swap(i % (n - 1), i % (n - 1) + 1),
        Mutation::Swap(_) => {}
        Mutation::QuotePunct(i) => {
            if let Some(j) = (0..n).map(|k| (i + k) % n).find(|&k| matches!(t[k], Tok::Punct('{' | '}' | ';'))) {
                if let Tok::Punct(c) = t[j] {
                    t[j] = Tok::Word(c.to_string());
                }
            }
        }
    }
    t
}

/// The chart's OAuth2 release: its Ingress with the given snippets, and the
/// adopted oauth2-proxy Ingress that serves `/oauth2/auth`.
fn oauth2_release(auth_snippet: Option<&str>, configuration_snippet: Option<&str>) -> Vec<Ingress> {
    let mut annotations = BTreeMap::new();
    let p = "nginx.ingress.kubernetes.io/";
    annotations.insert(format!("{p}auth-url"), "http://$host/oauth2/auth".to_string());
    annotations.insert(format!("{p}auth-signin"), "http://$host/oauth2/start?rd=$escaped_request_uri".to_string());
    if let Some(s) = auth_snippet {
        annotations.insert(format!("{p}auth-snippet"), s.to_string());
    }
    if let Some(s) = configuration_snippet {
        annotations.insert(format!("{p}configuration-snippet"), s.to_string());
    }
    [
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "api-ingress", "namespace": NS, "annotations": annotations},
               "spec": {"ingressClassName": "pinroute", "rules": [{"http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "api", "port": {"number": 80}}}}]}}]}}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
               "metadata": {"name": "oauth2-proxy", "namespace": NS},
               "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [{"path": "/oauth2", "pathType": "Prefix",
                        "backend": {"service": {"name": "oauth2", "port": {"number": 4180}}}}]}}]}}),
    ]
    .into_iter()
    .map(|v| serde_json::from_value(v).unwrap())
    .collect()
}

/// Whether the release's main Ingress is served; panics on a rejection
/// that is not about snippets (the fixture is otherwise valid).
fn served(auth_snippet: Option<&str>, configuration_snippet: Option<&str>) -> bool {
    let ingresses = oauth2_release(auth_snippet, configuration_snippet);
    let (services, settings) = (services(), settings());
    let t = translate(&IngressInputs { ingresses: &ingresses, services: &services, secrets: &[], settings: &settings });
    match t.rejected.iter().find(|r| r.ingress == "skypilot/api-ingress") {
        None => {
            assert!(t.accepted.contains(&"skypilot/api-ingress".to_string()), "{t:?}");
            true
        }
        Some(r) => {
            assert!(r.reason.contains(SNIPPET_REFUSED), "rejected for another reason: {}", r.reason);
            false
        }
    }
}

fn chart_auth_variant() -> impl Strategy<Value = Vec<Tok>> {
    (
        prop::sample::select(vec!["~", "~*"]),
        prop::sample::select(vec!["^Bearer sky_.+", "^Bearer sky_.*", "^Bearer sky_"]),
        prop::sample::select(vec!["200", "204"]),
    )
        .prop_map(|(op, re, code)| chart_auth(op, re, code))
}

fn chart_configuration_variant() -> impl Strategy<Value = Vec<Tok>> {
    prop::sample::select(vec!["X-Skypilot-Auth-Mode", "x-skypilot-auth-mode", "X-SKYPILOT-AUTH-MODE"])
        .prop_map(chart_configuration)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_ingresses_never_panic_and_translate_deterministically(
        shapes in prop::collection::vec(ingress(), 1..4),
        adopt in any::<bool>(),
    ) {
        let ingresses: Vec<Ingress> = shapes.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
        if ingresses.is_empty() {
            return Ok(());
        }
        let settings = if adopt { settings() } else { IngressSettings::default() };
        let (services, secrets) = (services(), secrets());
        let inputs = IngressInputs { ingresses: &ingresses, services: &services, secrets: &secrets, settings: &settings };
        let t = translate(&inputs);
        prop_assert_eq!(&t, &translate(&inputs));
        prop_assert_eq!(t.routes.len(), t.route_ingresses.len());
        for id in &t.route_ingresses {
            prop_assert!(t.accepted.contains(id), "route of {} which is not accepted", id);
        }
        // The API server never holds two Ingresses of one namespace/name;
        // generated ones may, and then one id is both served and refused.
        let mut ids: Vec<String> = ingresses
            .iter()
            .map(|i| format!("{}/{}", i.metadata.namespace.as_deref().unwrap_or("default"), i.metadata.name.as_deref().unwrap_or("")))
            .collect();
        ids.sort();
        let unique = ids.windows(2).all(|w| w[0] != w[1]);
        for r in &t.rejected {
            prop_assert!(!unique || !t.accepted.contains(&r.ingress), "{} both accepted and rejected", r.ingress);
            prop_assert!(!r.reason.is_empty());
        }
        for route in &t.routes {
            prop_assert!(route.prefix.starts_with('/'), "{:?}", route.prefix);
        }
    }

    #[test]
    fn the_chart_pair_is_accepted_in_any_layout(
        auth in chart_auth_variant(),
        configuration in chart_configuration_variant(),
        with_configuration in any::<bool>(),
        a in layout(),
        b in layout(),
    ) {
        let auth_text = render(&auth, &a);
        let configuration_text = render(&configuration, &b);
        let configuration = with_configuration.then_some(configuration_text.as_str());
        prop_assert!(served(Some(&auth_text), configuration), "refused:\n{}\n{:?}", auth_text, configuration);
    }

    #[test]
    fn no_other_snippet_is_accepted(
        auth in chart_auth_variant(),
        configuration in chart_configuration_variant(),
        m in prop::collection::vec(mutation(), 1..3),
        n in prop::collection::vec(mutation(), 0..3),
        which in 0..3u8,
        a in layout(),
        b in layout(),
    ) {
        let auth = if which != 1 { m.iter().fold(auth, |t, m| mutate(&t, m)) } else { auth };
        let configuration = if which != 0 { n.iter().fold(configuration, |t, m| mutate(&t, m)) } else { configuration };
        let (auth_text, configuration_text) = (render(&auth, &a), render(&configuration, &b));
        let expected = is_chart_auth(&auth) && is_chart_configuration(&configuration);
        prop_assert_eq!(
            served(Some(&auth_text), Some(&configuration_text)),
            expected,
            "auth {:?}\n{}\nconfiguration {:?}\n{}", auth, auth_text, configuration, configuration_text
        );
    }

    #[test]
    fn arbitrary_snippet_text_is_refused(text in ".{0,80}", configuration in prop::option::of(".{0,40}")) {
        // Without the marks of the chart's snippets nothing can be the pair.
        prop_assume!(!text.contains("sky_"));
        prop_assert!(!served(Some(&text), configuration.as_deref()));
        if let Some(c) = configuration.as_deref().filter(|c| !c.contains("x_skypilot_auth_mode")) {
            prop_assert!(!served(Some(CHART_AUTH_SNIPPET), Some(c)));
        }
    }
}

/// The minimal input the snippet property found: a `{`, `}` or `;` in
/// quotes is a plain word to nginx (so nginx would refuse the snippet, or
/// read another one), but pinroute's tokens lost the quotes and matched it.
#[test]
fn quoted_braces_and_semicolons_are_not_the_chart_snippet() {
    assert!(!served(
        Some("if ($http_authorization ~ \"^Bearer sky_.+\") \"{\" set $x_skypilot_auth_mode token; return 200; }"),
        None
    ));
    assert!(!served(
        Some("if ($http_authorization ~ \"^Bearer sky_.+\") { set $x_skypilot_auth_mode token; return 200 \";\" }"),
        None
    ));
    assert!(!served(Some(CHART_AUTH_SNIPPET), Some("proxy_set_header X-Skypilot-Auth-Mode $x_skypilot_auth_mode ';'")));
    // Quoted words are the same words to nginx.
    assert!(served(
        Some("'if' ($http_authorization '~' \"^Bearer sky_.+\") { 'set' \"$x_skypilot_auth_mode\" token; return '200'; }"),
        Some(CHART_CONFIGURATION_SNIPPET)
    ));
}
