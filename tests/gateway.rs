//! The gateway: several API servers on path prefixes with their own basic
//! auth, path-normalisation bypass attempts, spoofed identity headers,
//! htpasswd reload, HTTP/2 (h2c) stickiness.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use pinroute_tests::certs::{make_cert, tls_client, LOCALHOST};
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

/// A stub speaking the oauth2-proxy auth-request contract.
async fn oauth2_stub() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    async fn auth(headers: HeaderMap) -> axum::response::Response {
        let cookie = headers.get("cookie").and_then(|v| v.to_str().ok()).unwrap_or("");
        if cookie.contains("_oauth2_proxy=good") {
            (StatusCode::ACCEPTED, [("x-auth-request-email", "alice@example.com"), ("x-auth-request-groups", "admins")])
                .into_response()
        } else if cookie.contains("_oauth2_proxy=banned") {
            StatusCode::FORBIDDEN.into_response()
        } else {
            StatusCode::UNAUTHORIZED.into_response()
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/oauth2/auth", axum::routing::get(auth));
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_auth_request_allows_denies_redirects_and_fails_closed() {
    let (stub, stub_task) = oauth2_stub().await;
    let backend = BackendProcess::spawn(bin(), "api", "127.0.0.1:0", false).unwrap();
    let routes = format!(
        r#"
[[route]]
prefix = "/"
backends = ["{}"]
[route.health_check]
enabled = false
[route.auth.oauth2]
auth_url = "http://{stub}/oauth2/auth"
signin_url = "https://$host/oauth2/start?rd=$escaped_request_uri"
response_headers = ["X-Auth-Request-Email"]
token_bypass_prefix = "Bearer sky_"
timeout = "1s"
"#,
        backend.addr
    );
    let p = ProxyProcess::start(bin(), "", &routes).await.unwrap();
    let echo = |cookie: Option<&'static str>, extra: Vec<(&'static str, &'static str)>| {
        let mut req = http_client().get(p.url("/debug/request?a=1")).header("host", "sky.example.com");
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        for (k, v) in extra {
            req = req.header(k, v);
        }
        req.send()
    };
    // Signed in: the auth service's identity reaches the server, a spoofed one never does.
    let r = echo(
        Some("_oauth2_proxy=good"),
        vec![("x-auth-request-email", "mallory@example.com"), ("x-skypilot-auth-mode", "token")],
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-auth-request-email"], "alice@example.com");
    assert!(v["headers"].get("x-auth-request-groups").is_none(), "only configured headers are copied");
    assert!(v["headers"].get("x-skypilot-auth-mode").is_none());
    // Not signed in: browsers go to sign in, API clients get 401.
    let browser = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = browser
        .get(p.url("/dashboard?x=1"))
        .header("host", "sky.example.com")
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    assert_eq!(location, "https://sky.example.com/oauth2/start?rd=%2Fdashboard%3Fx%3D1");
    assert_eq!(echo(None, vec![]).await.unwrap().status(), 401);
    assert_eq!(echo(Some("_oauth2_proxy=banned"), vec![]).await.unwrap().status(), 403);
    // Service-account tokens skip the sub-request; the server validates them.
    let r = echo(None, vec![("authorization", "Bearer sky_abc123")]).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["headers"]["x-skypilot-auth-mode"], "token");
    assert_eq!(v["headers"]["authorization"], "Bearer sky_abc123");
    // The auth service is down: fail closed.
    stub_task.abort();
    let _ = stub_task.await;
    let r = echo(Some("_oauth2_proxy=good"), vec![]).await.unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        backend.count("GET /debug/request").await.unwrap(),
        2,
        "only the allowed and the token requests reached the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_h2_stickiness_websockets_and_certificate_reload() {
    let dir = std::env::temp_dir().join(format!("pinroute-tls-{}-{}", std::process::id(), pinroute_tests::free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = make_cert(&dir, "live", LOCALHOST);
    let tls_port = pinroute_tests::free_port();
    let a = BackendProcess::spawn(bin(), "a", "127.0.0.1:0", false).unwrap();
    let b = BackendProcess::spawn(bin(), "b", "127.0.0.1:0", false).unwrap();
    let server = format!(
        "[server.tls]\nlisten = [\"127.0.0.1:{tls_port}\"]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let routes = format!("[[route]]\nprefix = \"/\"\nbackends = [\"{}\", \"{}\"]\n", a.addr, b.addr);
    let p = ProxyProcess::start(bin(), &server, &routes).await.unwrap();
    let base = format!("https://localhost:{tls_port}");

    // HTTP/2 over TLS (ALPN), sticky like HTTP/1.1, forwarded as https.
    let client = tls_client(&ca);
    let r = client.get(format!("{base}/api/health")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let cookie = routeid(&r).unwrap();
    let home = served_by(&r);
    for _ in 0..10 {
        let r = client
            .get(format!("{base}/debug/request"))
            .header("cookie", format!("SKYPILOT_ROUTEID={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(served_by(&r), home);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }

    // A websocket (SSH tunnel) through TLS: HTTP/1.1 stays in ALPN.
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let upgrade = h1
        .get(format!("{base}/kubernetes-pod-ssh-proxy"))
        .header("cookie", format!("SKYPILOT_ROUTEID={cookie}"))
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(upgrade.status(), 101);
    let io = upgrade.upgrade().await.unwrap();
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        io,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    use futures::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::Text("ping over tls".into())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), format!("{home}: ping over tls"));

    // Certificate renewed on disk: new connections get it, no restart.
    let (next_ca, next_cert, next_key) = make_cert(&dir, "next", LOCALHOST);
    std::fs::copy(&next_key, &key).unwrap();
    std::fs::copy(&next_cert, &cert).unwrap();
    let renewed = tls_client(&next_ca);
    let url = format!("{base}/api/health");
    let ok = wait_until(Duration::from_secs(10), || async {
        renewed.get(&url).send().await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ok, "the renewed certificate is served; log:\n{}", p.log());
    assert!(tls_client(&ca).get(&url).send().await.is_err(), "the old certificate is no longer served");
    let _ = std::fs::remove_dir_all(&dir);
}
