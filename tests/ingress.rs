//! Ingress-controller mode: the SkyPilot chart's Ingress objects (as it
//! renders them), their Services and auth Secrets, served by a real pinroute
//! watching the fake API server, with pods backed by real demo backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use pinroute_discovery::{CHART_AUTH_SNIPPET, CHART_CONFIGURATION_SNIPPET};
use pinroute_tests::certs::{make_cert, tls_client_builder};
use pinroute_tests::client::{routeid, served_by};
use pinroute_tests::cluster::{next_pod_ip, FakeCluster, NS, READY};
use pinroute_tests::fake_kube::{FakePod, Kind};
use pinroute_tests::{free_port, http_client, wait_until, ProxyProcess};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
/// `htpasswd -nbm alice secret` and `htpasswd -nbs carol sha-pass`.
const ALICE: &str = "alice:$apr1$crrw5U.r$FGo0KfhZk0htYPbIHBPyS.";
const CAROL: &str = "carol:{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI=";

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// How the chart's Ingress authenticates.
#[derive(Clone, Copy, PartialEq)]
enum Auth {
    /// `ingress.authCredentials` (the default).
    Basic,
    /// `ingress.oauth2-proxy.enabled`: auth-url to the oauth2-proxy Ingress, with the token-bypass snippets.
    OAuth2,
}

/// `templates/ingress.yaml` of the chart for release `release` at `path`, basic auth.
fn chart_ingress(release: &str, path: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    chart_ingress_with(release, path, Auth::Basic, extra)
}

/// `templates/ingress.yaml` of the chart, branch for branch.
fn chart_ingress_with(release: &str, path: &str, auth: Auth, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    let mut set = |k: &str, v: &str| {
        annotations.insert(format!("nginx.ingress.kubernetes.io/{k}"), json!(v));
    };
    match auth {
        Auth::Basic => {
            set("auth-type", "basic");
            set("auth-realm", "SkyPilot API Server");
            set("auth-secret", &format!("{release}-basic-auth"));
        }
        Auth::OAuth2 => {
            set("auth-signin", "http://$host/oauth2/start?rd=$escaped_request_uri");
            set("auth-url", "http://$host/oauth2/auth");
            set("auth-response-headers", "X-Auth-Request-Email, X-Skypilot-Auth");
            set("auth-snippet", CHART_AUTH_SNIPPET);
            set("configuration-snippet", CHART_CONFIGURATION_SNIPPET);
        }
    }
    set("proxy-read-timeout", "3600");
    set("proxy-send-timeout", "3600");
    set("proxy-body-size", "1000m");
    let root = path == "/";
    if !root {
        set("rewrite-target", "/$2");
    }
    for (k, v) in extra {
        set(k, v);
    }
    json!({
        "metadata": {"name": format!("{release}-ingress"), "namespace": NS, "annotations": annotations},
        "spec": {"ingressClassName": "pinroute", "rules": [{"http": {"paths": [{
            "pathType": if root { "Prefix" } else { "ImplementationSpecific" },
            "path": if root { path.to_string() } else { format!("{path}(/|$)(.*)") },
            "backend": {"service": {"name": format!("{release}-api-service"), "port": {"number": 80}}},
        }]}}]},
    })
}

/// The fake cluster, with releases deployed as the chart deploys them.
struct Cluster(FakeCluster);

impl std::ops::Deref for Cluster {
    type Target = FakeCluster;
    fn deref(&self) -> &FakeCluster {
        &self.0
    }
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster(FakeCluster::start(Path::new(BIN)).await.unwrap())
    }

    /// A release as the chart deploys it: Service, auth Secret, Ingress, and `pods` API pods.
    fn release(&mut self, name: &'static str, path: &str, htpasswd: &str, pods: usize) {
        self.kube.add_object(
            Kind::Service,
            json!({
                "metadata": {"name": format!("{name}-api-service"), "namespace": NS},
                "spec": {"ports": [{"port": 80, "targetPort": self.port, "protocol": "TCP"}],
                         "selector": {"app": format!("{name}-api"), "skypilot.co/ready": "true"}},
            }),
        );
        let auth = base64::engine::general_purpose::STANDARD.encode(htpasswd);
        self.kube.add_object(Kind::Secret, json!({"metadata": {"name": format!("{name}-basic-auth"), "namespace": NS}, "type": "Opaque", "data": {"auth": auth}}));
        self.kube.add_object(Kind::Ingress, chart_ingress(name, path, &[]));
        let app = format!("{name}-api");
        for i in 0..pods {
            self.0.add_pod(NS, &format!("{name}-api-{i}"), &[("app", app.as_str()), READY], &[]).unwrap();
        }
    }

    async fn proxy(&self) -> ProxyProcess {
        self.proxy_with("", "").await
    }

    /// A proxy with `server_extra` under `[server]` and `ingress_extra` under `[ingress]`.
    async fn proxy_with(&self, server_extra: &str, ingress_extra: &str) -> ProxyProcess {
        let ingress = format!("[ingress]\nclass = \"pinroute\"\nstatus_address = \"203.0.113.10\"\n{ingress_extra}");
        self.0.proxy(server_extra, &ingress, "ingress-test-key-0123456").await.unwrap()
    }
}

async fn get_as(p: &ProxyProcess, path: &str, auth: Option<&str>, cookie: Option<&str>) -> reqwest::Response {
    let mut req = http_client().get(p.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", format!("SKYPILOT_ROUTEID={c}"));
    }
    req.send().await.unwrap()
}

/// Waits until `path` answers `status` for `auth` (routes arrive asynchronously).
async fn wait_for(p: &ProxyProcess, path: &str, auth: &str, status: u16) {
    let ok =
        wait_until(
            Duration::from_secs(15),
            || async move { get_as(p, path, Some(auth), None).await.status() == status },
        )
        .await;
    assert!(ok, "{path} never answered {status}; log:\n{}", p.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_basic_auth_ingress_is_served_and_cordon_drains() {
    let mut c = Cluster::new().await;
    c.release("skypilot", "/", &format!("{ALICE}\n"), 2);
    let p = c.proxy().await;
    let alice = basic("alice", "secret");
    wait_for(&p, "/api/health", &alice, 200).await;

    let denied = get_as(&p, "/api/health", None, None).await;
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Basic realm=\"SkyPilot API Server\"");
    assert_eq!(get_as(&p, "/api/health", Some(&basic("alice", "nope")), None).await.status(), 401);

    let first = get_as(&p, "/api/health", Some(&alice), None).await;
    let (cookie, home) = (routeid(&first).unwrap(), served_by(&first));
    // Cordon the pinned pod: the Service no longer selects it, pinroute drains it.
    c.kube.remove_label(NS, &home, READY.0);
    p.wait_backend_state(&format!("{NS}/{home}"), "draining").await.unwrap();
    assert_eq!(
        served_by(&get_as(&p, "/api/health", Some(&alice), Some(&cookie)).await),
        home,
        "pinned client keeps its pod"
    );
    for _ in 0..10 {
        assert_ne!(
            served_by(&get_as(&p, "/api/health", Some(&alice), None).await),
            home,
            "new clients avoid the cordoned pod"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_releases_on_their_own_paths_with_their_own_auth() {
    let mut c = Cluster::new().await;
    c.release("first", "/first-server", &format!("{ALICE}\n"), 1);
    c.release("second", "/second-server", &format!("{CAROL}\n"), 1);
    let p = c.proxy().await;
    let (alice, carol) = (basic("alice", "secret"), basic("carol", "sha-pass"));
    wait_for(&p, "/first-server/api/health", &alice, 200).await;
    wait_for(&p, "/second-server/api/health", &carol, 200).await;
    assert_eq!(get_as(&p, "/second-server/api/health", Some(&alice), None).await.status(), 401);
    assert_eq!(get_as(&p, "/first-server/api/health", Some(&carol), None).await.status(), 401);
    // rewrite-target /$2: the server sees its own paths.
    let echo: serde_json::Value =
        get_as(&p, "/second-server/debug/request", Some(&carol), None).await.json().await.unwrap();
    assert_eq!(echo["uri"], "/debug/request");
    assert_eq!(echo["backend"], "second-api-0");

    // An annotation pinroute does not know is logged, once per Ingress.
    c.kube.update_object(Kind::Ingress, chart_ingress("first", "/first-server", &[("enable-cors", "true")]));
    let unknown = |p: &ProxyProcess| {
        p.log().lines().filter(|l| l.contains("unknown annotation ignored") && l.contains("enable-cors")).count()
    };
    assert!(wait_until(Duration::from_secs(10), || async { unknown(&p) == 1 }).await, "log:\n{}", p.log());

    // A hostile snippet is never executed: that Ingress is rejected and its
    // old routes keep serving.
    c.kube.update_object(
        Kind::Ingress,
        chart_ingress("second", "/second-server", &[("configuration-snippet", "more_set_headers \"X-Evil: 1\";")]),
    );
    assert!(
        wait_until(Duration::from_secs(10), || async { p.log().contains("Ingress rejected") }).await,
        "log:\n{}",
        p.log()
    );
    let r = get_as(&p, "/second-server/api/health", Some(&carol), None).await;
    assert_eq!(r.status(), 200, "old routes keep serving");
    let kube = &c.kube;
    let evented = wait_until(Duration::from_secs(10), || async {
        kube.events().iter().any(|e| e["involvedObject"]["name"] == "second-ingress" && e["reason"] == "Rejected")
    })
    .await;
    assert!(evented, "a Kubernetes Event reports the rejection: {:?}", kube.events());
    // Served Ingresses carry the proxy's address in their status.
    let status = kube.ingress_status(NS, "first-ingress").unwrap_or_default();
    assert_eq!(status["loadBalancer"]["ingress"][0]["ip"], "203.0.113.10", "{status}");
    assert!(r.headers().get("x-evil").is_none());
    assert_eq!(unknown(&p), 1, "not logged again at the next translation");
    assert_eq!(get_as(&p, "/first-server/api/health", Some(&alice), None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_annotations_keep_the_chart_cookie_sticky() {
    let mut c = Cluster::new().await;
    c.release("skypilot", "/", &format!("{ALICE}\n"), 2);
    // The chart's RollingUpdate annotations (affinity cookie, change on failure, retries).
    c.kube.update_object(
        Kind::Ingress,
        chart_ingress(
            "skypilot",
            "/",
            &[
                ("affinity", "cookie"),
                ("session-cookie-name", "SKYPILOT_ROUTEID"),
                ("affinity-mode", "persistent"),
                ("session-cookie-change-on-failure", "true"),
                ("proxy-next-upstream", "http_502 non_idempotent"),
                ("proxy-next-upstream-tries", "3"),
            ],
        ),
    );
    let p = c.proxy().await;
    let alice = basic("alice", "secret");
    wait_for(&p, "/api/health", &alice, 200).await;
    let first = get_as(&p, "/api/health", Some(&alice), None).await;
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("SKYPILOT_ROUTEID=") && set_cookie.contains("Max-Age="), "{set_cookie}");
    let (cookie, home) = (routeid(&first).unwrap(), served_by(&first));
    for _ in 0..20 {
        let r = get_as(&p, "/api/health", Some(&alice), Some(&cookie)).await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, home.clone()));
    }
    // proxy-read-timeout 3600: a stream runs unbuffered through the Ingress route.
    let r = get_as(&p, "/api/stream?lines=3&interval_ms=50", Some(&alice), Some(&cookie)).await;
    assert_eq!(r.text().await.unwrap().lines().count(), 3);
}

/// The chart's oauth2-proxy, as far as the flow needs it: `/oauth2/auth`
/// allows the `_oauth2_proxy=good` session (naming the user in
/// `X-Auth-Request-Email`), `/oauth2/start` is the sign-in page. Counts auth calls.
async fn fake_oauth2_proxy(addr: &str) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    use axum::extract::{Query, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    async fn auth(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> axum::response::Response {
        calls.fetch_add(1, Ordering::Relaxed);
        let cookie = headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
        if cookie.contains("_oauth2_proxy=good") {
            (StatusCode::ACCEPTED, [("x-auth-request-email", "alice@example.com")]).into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
    async fn start(Query(q): Query<HashMap<String, String>>) -> String {
        format!("oauth2-proxy sign-in page; back to {}", q.get("rd").map_or("", String::as_str))
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route("/oauth2/auth", axum::routing::get(auth))
        .route("/oauth2/start", axum::routing::get(start))
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (calls, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_oauth2_variant_with_token_bypass_end_to_end() {
    let mut c = Cluster::new().await;
    c.release("skypilot", "/", "", 2);
    c.kube.update_object(Kind::Ingress, chart_ingress_with("skypilot", "/", Auth::OAuth2, &[]));
    // templates/oauth2-proxy-*.yaml: Service (its ClusterIP is where the
    // auth sub-request goes), one pod, and the Ingress hard-coded to class nginx.
    let oauth2_ip = next_pod_ip();
    let (auth_calls, _oauth2) = fake_oauth2_proxy(&format!("{oauth2_ip}:4180")).await;
    c.kube.add_object(
        Kind::Service,
        json!({
            "metadata": {"name": "skypilot-oauth2-proxy", "namespace": NS},
            "spec": {"clusterIP": oauth2_ip, "ports": [{"name": "http", "port": 4180, "targetPort": 4180}],
                     "selector": {"app": "skypilot-oauth2-proxy"}},
        }),
    );
    c.kube.add_pod(FakePod::new(NS, "skypilot-oauth2-proxy-0", &[("app", "skypilot-oauth2-proxy")], &oauth2_ip));
    c.kube.add_object(
        Kind::Ingress,
        json!({
            "metadata": {"name": "skypilot-oauth2-proxy", "namespace": NS,
                         "labels": {"app": "skypilot-oauth2-proxy", "skypilot.co/component": "oauth2-proxy"}},
            "spec": {"ingressClassName": "nginx", "rules": [{"http": {"paths": [{
                "path": "/oauth2", "pathType": "Prefix",
                "backend": {"service": {"name": "skypilot-oauth2-proxy", "port": {"number": 4180}}},
            }]}}]},
        }),
    );
    let p = c.proxy_with("", &format!("adopt_classes = [\"nginx\"]\nadopt_namespaces = [\"{NS}\"]\n")).await;
    let no_redirects =
        reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let get = |path: &str, cookies: &str, headers: &[(&str, &str)]| {
        let mut req = no_redirects.get(p.url(path));
        if !cookies.is_empty() {
            req = req.header("cookie", cookies);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send()
    };
    let session = "_oauth2_proxy=good";
    let up = wait_until(Duration::from_secs(15), || async {
        get("/api/health", session, &[]).await.unwrap().status() == 200
    })
    .await;
    assert!(up, "the signed-in session never got through; log:\n{}", p.log());

    // The identity comes from oauth2-proxy only: a forged one is replaced.
    let r = get("/debug/request", session, &[("x-auth-request-email", "mallory@example.com")]).await.unwrap();
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-auth-request-email"], "alice@example.com", "{echo}");
    assert!(echo["headers"].get("x-skypilot-auth-mode").is_none(), "{echo}");

    // No session: browsers are sent to sign in (auth-signin, $host and
    // $escaped_request_uri expanded; nginx's $host has no port), API clients get 401.
    let r = get("/dashboard?x=1", "", &[("accept", "text/html")]).await.unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let path = "/oauth2/start?rd=%2Fdashboard%3Fx%3D1";
    assert_eq!(location, format!("http://127.0.0.1{path}"));
    assert_eq!(get("/api/health", "", &[]).await.unwrap().status(), 401);
    assert_eq!(get("/api/health", "_oauth2_proxy=stale", &[]).await.unwrap().status(), 401);
    // The sign-in page itself is served through the adopted oauth2-proxy Ingress, without auth.
    let page = get(path, "", &[]).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await.unwrap(), "oauth2-proxy sign-in page; back to /dashboard?x=1");

    // The chart's snippet, never executed, maps to the token bypass: a
    // service-account token skips oauth2-proxy and the server is told so.
    let before = auth_calls.load(Ordering::Relaxed);
    let r = get("/debug/request", "", &[("authorization", "Bearer sky_0123456789abcdef")]).await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: serde_json::Value = r.json().await.unwrap();
    assert_eq!(echo["headers"]["x-skypilot-auth-mode"], "token", "{echo}");
    assert_eq!(auth_calls.load(Ordering::Relaxed), before, "no sub-request for a token");
    // Only `sky_` tokens: any other bearer goes through oauth2-proxy.
    assert_eq!(get("/api/health", "", &[("authorization", "Bearer other")]).await.unwrap().status(), 401);
    assert_eq!(get("/debug/request", "", &[("x-skypilot-auth-mode", "token")]).await.unwrap().status(), 401);

    // Cordon the signed-in client's pod: it keeps it, new clients go elsewhere.
    let first = get("/api/health", session, &[]).await.unwrap();
    let (cookie, home) = (routeid(&first).unwrap(), served_by(&first));
    c.kube.remove_label(NS, &home, READY.0);
    p.wait_backend_state(&format!("{NS}/{home}"), "draining").await.unwrap();
    let pinned = format!("{session}; SKYPILOT_ROUTEID={cookie}");
    assert_eq!(served_by(&get("/api/health", &pinned, &[]).await.unwrap()), home, "pinned client keeps its pod");
    for _ in 0..10 {
        assert_ne!(served_by(&get("/api/health", session, &[]).await.unwrap()), home, "new clients avoid it");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_from_the_ingress_secret_with_ssl_redirect_and_rotation() {
    let dir = std::env::temp_dir().join(format!("pinroute-ingress-tls-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let san = "DNS:sky.example.com";
    let (ca, cert, key) = make_cert(&dir, "live", san);
    let tls_secret = |cert: &Path, key: &Path| {
        let b64 = |p: &Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
        json!({"metadata": {"name": "sky-tls", "namespace": NS}, "type": "kubernetes.io/tls",
               "data": {"tls.crt": b64(cert), "tls.key": b64(key)}})
    };
    let mut c = Cluster::new().await;
    c.release("skypilot", "/", &format!("{ALICE}\n"), 1);
    c.kube.add_object(Kind::Secret, tls_secret(&cert, &key));
    // The chart's Ingress with `ingress.host` and a `spec.tls` naming the Secret.
    let tls_ingress = |extra: &[(&str, &str)]| {
        let mut ingress = chart_ingress("skypilot", "/", extra);
        ingress["spec"]["rules"][0]["host"] = json!("sky.example.com");
        ingress["spec"]["tls"] = json!([{"hosts": ["sky.example.com"], "secretName": "sky-tls"}]);
        ingress
    };
    c.kube.update_object(Kind::Ingress, tls_ingress(&[]));
    // An HTTPS listener without certificate files: the Secrets supply them.
    let tls_port = free_port();
    let p = c.proxy_with(&format!("[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\n"), "").await;
    let tls_addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let client = |ca: &Path| tls_client_builder(ca).resolve("sky.example.com", tls_addr).build().unwrap();
    let url = format!("https://sky.example.com:{tls_port}/api/health");
    let alice = basic("alice", "secret");
    let trusted = client(&ca);
    let served = wait_until(Duration::from_secs(15), || async {
        trusted.get(&url).header("authorization", &alice).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(served, "HTTPS with the Secret's certificate never worked; log:\n{}", p.log());
    let r = trusted.get(&url).header("authorization", &alice).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2 as with file certificates");

    // ssl-redirect (default with spec.tls): plain HTTP is sent to the HTTPS listener.
    let plain = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain.get(p.url("/api/health?x=1")).header("host", "sky.example.com").send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], format!("https://sky.example.com:{tls_port}/api/health?x=1"));
    c.kube.update_object(Kind::Ingress, tls_ingress(&[("ssl-redirect", "false")]));
    let unredirected = wait_until(Duration::from_secs(10), || async {
        let r = plain.get(p.url("/api/health")).header("host", "sky.example.com").header("authorization", &alice);
        r.send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(unredirected, "ssl-redirect: \"false\" serves plain HTTP; log:\n{}", p.log());

    // cert-manager renews the Secret: new handshakes get the new certificate.
    let (next_ca, next_cert, next_key) = make_cert(&dir, "next", san);
    c.kube.update_object(Kind::Secret, tls_secret(&next_cert, &next_key));
    let renewed = client(&next_ca);
    let rotated = wait_until(Duration::from_secs(10), || async {
        renewed.get(&url).header("authorization", &alice).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(rotated, "the renewed Secret was never served; log:\n{}", p.log());
    assert!(client(&ca).get(&url).send().await.is_err(), "the old certificate is no longer served");

    // A broken renewal (key of another certificate) keeps the last good one.
    c.kube.update_object(Kind::Secret, tls_secret(&next_cert, &key));
    let reported =
        wait_until(Duration::from_secs(10), || async { p.log().contains("Secret skypilot/sky-tls tls.key") }).await;
    assert!(reported, "the broken Secret is named in the log:\n{}", p.log());
    assert_eq!(renewed.get(&url).header("authorization", &alice).send().await.unwrap().status(), 200);
    let _ = std::fs::remove_dir_all(&dir);
}
