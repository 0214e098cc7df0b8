//! The gateway: several API servers on path prefixes with their own basic
//! auth, path-normalisation bypass attempts, spoofed identity headers,
//! htpasswd reload, HTTP/2 (h2c) stickiness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use pinroute_tests::client::{routeid, served_by};
use pinroute_tests::{http_client, wait_until, BackendProcess, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
/// `htpasswd -nbm alice secret` (Apache MD5, what `htpasswd -nb` emits).
const ALICE: &str = "alice:$apr1$crrw5U.r$FGo0KfhZk0htYPbIHBPyS.";
/// `htpasswd -nbB -C 5 bob hunter2` and `htpasswd -nbs carol sha-pass`.
const BOB_AND_CAROL: &str =
    "bob:$2y$05$fX7S8bUsD8fTdQOPO2BgWu.QdiiDsZ77uZihVou3p6CZ1MjHyuFx.\ncarol:{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI=\n";

fn bin() -> &'static Path {
    Path::new(BIN)
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

struct TwoServers {
    first: BackendProcess,
    second: BackendProcess,
    htpasswd_file: std::path::PathBuf,
    proxy: ProxyProcess,
}

async fn two_servers(server_extra: &str) -> TwoServers {
    let first = BackendProcess::spawn(bin(), "first", "127.0.0.1:0", false).unwrap();
    let second = BackendProcess::spawn(bin(), "second", "127.0.0.1:0", false).unwrap();
    let htpasswd_file =
        std::env::temp_dir().join(format!("pinroute-gw-{}-{}.htpasswd", std::process::id(), second.addr.port()));
    std::fs::write(&htpasswd_file, BOB_AND_CAROL).unwrap();
    let routes = format!(
        r#"
[[route]]
prefix = "/first-server"
strip_prefix = true
backends = ["{}"]
[route.health_check]
enabled = false
[route.auth.basic]
htpasswd = "{ALICE}"
[[route]]
prefix = "/second-server"
strip_prefix = true
backends = ["{}"]
[route.health_check]
enabled = false
[route.auth.basic]
htpasswd_file = "{}"
realm = "Second API Server"
"#,
        first.addr,
        second.addr,
        htpasswd_file.display()
    );
    let proxy = ProxyProcess::start_with_env(
        bin(),
        server_extra,
        &routes,
        &[("PINROUTE_COOKIE_KEY", "gateway-key-0123456789")],
    )
    .await
    .unwrap();
    TwoServers { first, second, htpasswd_file, proxy }
}

async fn get_as(p: &ProxyProcess, path: &str, auth: Option<&str>) -> reqwest::Response {
    let mut req = http_client().get(p.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

/// A raw HTTP/1.1 request (reqwest would normalise the path itself); the
/// status code and the whole answer.
async fn raw_get(addr: std::net::SocketAddr, path: &str, auth: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: sky.example.com\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_user_reaches_only_their_api_server() {
    let s = two_servers("").await;
    let p = &s.proxy;
    let alice = basic("alice", "secret");
    let r = get_as(p, "/first-server/api/health", Some(&alice)).await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "first".to_string()));
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("Path=/first-server;"), "each server's cookie is scoped to its prefix: {cookie}");
    // The prefix is stripped on the way (the chart's rewrite-target /$2).
    let echo: serde_json::Value =
        get_as(p, "/first-server/debug/request?x=1", Some(&alice)).await.json().await.unwrap();
    assert_eq!(echo["uri"], "/debug/request?x=1");

    for (user, pass) in [("bob", "hunter2"), ("carol", "sha-pass")] {
        let r = get_as(p, "/second-server/api/health", Some(&basic(user, pass))).await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, "second".to_string()), "{user}");
        assert_eq!(
            get_as(p, "/first-server/api/health", Some(&basic(user, pass))).await.status(),
            401,
            "{user} is not a first-server user"
        );
    }
    let denied = get_as(p, "/second-server/api/health", Some(&alice)).await;
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["www-authenticate"], "Basic realm=\"Second API Server\"");
    let wrong = get_as(p, "/first-server/api/health", Some(&basic("alice", "Secret"))).await;
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Basic realm=\"SkyPilot API Server\"");
    assert_eq!(get_as(p, "/first-server/api/health", None).await.status(), 401);
    // Credentials in the URL (how the sky CLI passes them) become the header.
    let url = format!("http://alice:secret@{}/first-server/api/health", p.addr);
    assert_eq!(http_client().get(url).send().await.unwrap().status(), 200);
    assert_eq!(s.first.count("GET /api/health").await.unwrap(), 2);
    assert_eq!(s.second.count("GET /api/health").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypass_attempts_fail() {
    let s = two_servers("").await;
    let alice = basic("alice", "secret");
    for path in [
        "/first-server/../second-server/api/health",
        "//second-server/api/health",
        "/first-server/%2e%2e/second-server/api/health",
        "/first-server/%2E%2E/second-server/api/health",
        "/./second-server/api/health",
    ] {
        let (status, answer) = raw_get(s.proxy.addr, path, &alice).await;
        assert_eq!(status, 401, "{path} must land on /second-server and its auth: {answer}");
    }
    for path in [
        "/first-server%2Fsecond-server/api/health",
        "/first-server/..%2fsecond-server/api/health",
        "/first-server/%zz",
        "/first-server\\..\\second-server",
    ] {
        let (status, answer) = raw_get(s.proxy.addr, path, &alice).await;
        assert_eq!(status, 400, "{path}: {answer}");
    }
    assert_eq!(s.second.count("GET /api/health").await.unwrap(), 0, "nothing reached the second server");
    // Dot segments inside one server stay inside it.
    let (status, _) = raw_get(s.proxy.addr, "/first-server/x/../api/health", &alice).await;
    assert_eq!(status, 200);
    // Spoofed identity headers never reach a backend.
    let echo: serde_json::Value = http_client()
        .get(s.proxy.url("/first-server/debug/request"))
        .header("authorization", &alice)
        .header("x-auth-request-email", "admin@example.com")
        .header("x-skypilot-auth-mode", "token")
        .header("x-auth-request-user", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for spoofed in ["x-auth-request-email", "x-skypilot-auth-mode", "x-auth-request-user"] {
        assert!(echo["headers"].get(spoofed).is_none(), "{spoofed} was forwarded: {echo}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_file_changes_are_picked_up() {
    let s = two_servers("").await;
    let dave = basic("dave", "secret");
    assert_eq!(get_as(&s.proxy, "/second-server/api/health", Some(&dave)).await.status(), 401);
    std::fs::write(&s.htpasswd_file, format!("{BOB_AND_CAROL}dave:$apr1$crrw5U.r$FGo0KfhZk0htYPbIHBPyS.\n")).unwrap();
    let p = &s.proxy;
    let ok = wait_until(Duration::from_secs(10), || async {
        get_as(p, "/second-server/api/health", Some(&dave)).await.status() == 200
    })
    .await;
    assert!(ok, "dave added to the file authenticates without a restart");
    // A broken file keeps the old credentials.
    std::fs::write(&s.htpasswd_file, "this is not htpasswd\n").unwrap();
    assert!(wait_until(Duration::from_secs(10), || async { p.log().contains("htpasswd reload rejected") }).await);
    assert_eq!(get_as(p, "/second-server/api/health", Some(&dave)).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_is_as_sticky_as_http1() {
    let s = two_servers("h2c = true").await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let alice = basic("alice", "secret");
    let r = h2.get(s.proxy.url("/first-server/api/health")).header("authorization", &alice).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let cookie = routeid(&r).unwrap();
    for _ in 0..20 {
        let r = h2
            .get(s.proxy.url("/first-server/api/health"))
            .header("authorization", &alice)
            .header("cookie", format!("SKYPILOT_ROUTEID={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, "first".to_string()));
        assert_eq!(routeid(&r), None);
    }
    let stream = h2
        .get(s.proxy.url("/first-server/api/stream?lines=3&interval_ms=50"))
        .header("authorization", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.text().await.unwrap().lines().count(), 3);
}
