//! Ingress-controller mode: the SkyPilot chart's Ingress objects (as it
//! renders them), their Services and auth Secrets, served by a real pinroute
//! watching the fake API server, with pods backed by real demo backends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use base64::Engine;
use pinroute_tests::client::{routeid, served_by};
use pinroute_tests::fake_kube::{FakeKube, FakePod, Kind};
use pinroute_tests::{free_port, http_client, wait_until, BackendProcess, ProxyProcess};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
const NS: &str = "skypilot";
const READY: (&str, &str) = ("skypilot.co/ready", "true");
/// `htpasswd -nbm alice secret` and `htpasswd -nbs carol sha-pass`.
const ALICE: &str = "alice:$apr1$crrw5U.r$FGo0KfhZk0htYPbIHBPyS.";
const CAROL: &str = "carol:{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI=";

static NEXT_IP: AtomicU8 = AtomicU8::new(160);

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

/// `templates/ingress.yaml` of the chart for release `release` at `path`.
fn chart_ingress(release: &str, path: &str, extra: &[(&str, &str)]) -> serde_json::Value {
    let mut annotations = serde_json::Map::new();
    let mut set = |k: &str, v: &str| {
        annotations.insert(format!("nginx.ingress.kubernetes.io/{k}"), json!(v));
    };
    set("auth-type", "basic");
    set("auth-realm", "SkyPilot API Server");
    set("auth-secret", &format!("{release}-basic-auth"));
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

/// Kept so the release's backend processes live as long as the cluster.
struct Release {
    _backends: Vec<BackendProcess>,
}

struct Cluster {
    kube: FakeKube,
    port: u16,
    releases: Vec<Release>,
}

impl Cluster {
    async fn new() -> Cluster {
        Cluster { kube: FakeKube::start().await.unwrap(), port: free_port(), releases: Vec::new() }
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
        let mut backends = Vec::new();
        for i in 0..pods {
            let ip = format!("127.0.0.{}", NEXT_IP.fetch_add(1, Ordering::Relaxed));
            let pod = format!("{name}-api-{i}");
            backends.push(BackendProcess::spawn(Path::new(BIN), &pod, &format!("{ip}:{}", self.port), false).unwrap());
            let app = format!("{name}-api");
            self.kube.add_pod(FakePod::new(NS, &pod, &[("app", app.as_str()), READY], &ip));
        }
        self.releases.push(Release { _backends: backends });
    }

    async fn proxy(&self) -> ProxyProcess {
        let kubeconfig = self.kube.kubeconfig_path().to_string_lossy().into_owned();
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("PINROUTE_COOKIE_KEY", "ingress-test-key-0123456")];
        let ingress = "[ingress]\nclass = \"pinroute\"\nstatus_address = \"203.0.113.10\"\n";
        ProxyProcess::start_with_env(Path::new(BIN), "", ingress, &env).await.unwrap()
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
