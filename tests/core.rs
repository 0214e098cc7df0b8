//! Black-box tests of the proxy core: real `pinroute` processes (proxy and
//! demo backends) on 127.0.0.1, real HTTP and websocket clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use pinroute_tests::client::{routeid, served_by};
use pinroute_tests::http1::{Http1Connection, Http1Error};
use pinroute_tests::{http_client, wait_until, BackendProcess, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");

fn bin() -> &'static Path {
    Path::new(BIN)
}

fn backends(names: &[&str]) -> Vec<BackendProcess> {
    names.iter().map(|n| BackendProcess::spawn(bin(), n, "127.0.0.1:0", true).expect("backend starts")).collect()
}

fn route(backends: &[BackendProcess], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!("[[route]]\nprefix = \"/\"\nbackends = [{}]\n{extra}\n[route.health_check]\ninterval = \"500ms\"\ntimeout = \"300ms\"\n", list.join(", "))
}

async fn proxy(backends: &[BackendProcess], extra: &str) -> ProxyProcess {
    proxy_with_server(backends, "", extra).await
}

/// A proxy with `server_extra` under `[server]` and `extra` in its route.
async fn proxy_with_server(backends: &[BackendProcess], server_extra: &str, extra: &str) -> ProxyProcess {
    ProxyProcess::start_with_env(
        bin(),
        server_extra,
        &route(backends, extra),
        &[("PINROUTE_COOKIE_KEY", "test-key-0123456789abcdef")],
    )
    .await
    .expect("proxy starts")
}

async fn get(proxy: &ProxyProcess, path: &str, cookie: Option<&str>) -> reqwest::Response {
    pinroute_tests::client::get(proxy.addr, path, cookie).await.expect("request completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_pins_a_client_for_100_requests() {
    let b = backends(&["a", "b", "c"]);
    let p = proxy(&b, "").await;
    let first = get(&p, "/api/health", None).await;
    assert_eq!(first.status(), 200);
    let cookie = routeid(&first).expect("a new client gets a cookie");
    let set_cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("Max-Age=604800"), "the sky CLI drops cookies without an expiry: {set_cookie}");
    assert!(set_cookie.contains("Path=/") && set_cookie.contains("HttpOnly"), "{set_cookie}");
    let home = served_by(&first);
    for i in 0..100 {
        let r = get(&p, if i % 2 == 0 { "/api/health" } else { "/debug/request" }, Some(&cookie)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(served_by(&r), home, "request {i} left its backend");
        assert_eq!(routeid(&r), None, "no Set-Cookie while the pin holds");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_clients_spread_over_three_backends() {
    let b = backends(&["a", "b", "c"]);
    let p = proxy(&b, "").await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let r = get(&p, "/api/health", None).await;
        assert!(routeid(&r).is_some());
        *seen.entry(served_by(&r)).or_default() += 1;
    }
    assert_eq!(seen.len(), 3, "all three backends take new clients: {seen:?}");
    assert!(seen.values().all(|&n| n >= 5), "spread {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_cookie_gets_a_fresh_valid_cookie() {
    let b = backends(&["a", "b"]);
    let p = proxy(&b, "").await;
    let forged = "0123456789abcdef0123456789abcdef";
    let r = get(&p, "/api/health", Some(forged)).await;
    assert_eq!(r.status(), 200);
    let fresh = routeid(&r).expect("a forged cookie is replaced");
    assert_ne!(fresh, forged);
    let home = served_by(&r);
    let again = get(&p, "/api/health", Some(&fresh)).await;
    assert_eq!(served_by(&again), home);
    assert_eq!(routeid(&again), None, "the fresh cookie is valid");
    // Garbage of any shape is a 200 with a cookie, never an error.
    for junk in ["", "x", "%%%", &"f".repeat(4000)] {
        let r = get(&p, "/api/health", Some(junk)).await;
        assert_eq!(r.status(), 200, "cookie {junk:?}");
        assert!(routeid(&r).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_backend_repins_its_clients_without_failures() {
    let mut b = backends(&["a", "b", "c"]);
    let p = proxy(&b, "").await;
    let first = get(&p, "/api/health", None).await;
    let cookie = routeid(&first).unwrap();
    let home = served_by(&first);
    let index = b.iter().position(|x| x.name == home).unwrap();
    b[index].kill();
    let mut failed = 0;
    let mut new_cookies = Vec::new();
    let mut landed = Vec::new();
    for _ in 0..50 {
        let r = get(&p, "/debug/request", Some(&cookie)).await;
        if r.status() != 200 {
            failed += 1;
        }
        if let Some(c) = routeid(&r) {
            new_cookies.push(c);
        }
        landed.push(served_by(&r));
    }
    assert_eq!(failed, 0, "idempotent GETs never fail when their backend dies");
    assert!(!new_cookies.is_empty() && new_cookies.iter().all(|c| *c != cookie), "re-pinned clients get a new cookie");
    assert!(landed.iter().all(|n| *n != home));
    let unique: std::collections::HashSet<_> = landed.iter().collect();
    assert_eq!(unique.len(), 1, "a stale cookie re-pins deterministically: {unique:?}");
    // With the new cookie the client stays on its new home.
    let r = get(&p, "/api/health", Some(&new_cookies[0])).await;
    assert_eq!(served_by(&r), *landed[0]);
    assert_eq!(routeid(&r), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_replayed_after_it_reached_a_dying_backend() {
    let mut b = backends(&["a", "b"]);
    let p = proxy(&b, "").await;
    let first = get(&p, "/api/health", None).await;
    let cookie = routeid(&first).unwrap();
    let home = served_by(&first);
    let r = http_client()
        .post(p.url("/crash"))
        .header("cookie", format!("SKYPILOT_ROUTEID={cookie}"))
        .body("launch this once")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "the client learns the request failed");
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap_or("").contains("Bad gateway"), "{body}");
    let (mut dead, alive): (Vec<_>, Vec<_>) = b.iter_mut().partition(|x| x.name == home);
    assert!(
        wait_until(Duration::from_secs(5), || {
            let d = dead[0].has_exited();
            async move { d }
        })
        .await
    );
    assert_eq!(alive[0].count("POST /crash").await.unwrap(), 0, "a POST must never run twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_chunks_arrive_as_they_are_sent() {
    let b = backends(&["a"]);
    let p = proxy(&b, "").await;
    let started = Instant::now();
    let r = get(&p, "/api/stream?lines=4&interval_ms=400", None).await;
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("line=0"));
    let mut rest = Vec::new();
    while let Some(chunk) = body.next().await {
        rest.extend_from_slice(&chunk.unwrap());
    }
    let total = started.elapsed();
    assert!(String::from_utf8_lossy(&rest).contains("line=3"));
    // Counted, not timed: the stream takes 3 intervals (1.2 s) to end, and
    // the first line must not have waited for them.
    assert!(total >= Duration::from_millis(1200));
    assert!(first_at + Duration::from_millis(800) < total, "first chunk at {first_at:?}, end at {total:?}: buffered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy_is_sticky() {
    let b = backends(&["a", "b"]);
    let p = proxy(&b, "").await;
    let first = get(&p, "/api/health", None).await;
    let cookie = routeid(&first).unwrap();
    let home = served_by(&first);
    for path in ["/kubernetes-pod-ssh-proxy", "/ssh-interactive-auth"] {
        let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{}{path}",
            p.addr
        ))
        .unwrap();
        request.headers_mut().insert("cookie", format!("SKYPILOT_ROUTEID={cookie}").parse().unwrap());
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.expect("upgrade through the proxy");
        assert_eq!(response.status(), 101);
        for i in 0..3 {
            ws.send(tokio_tungstenite::tungstenite::Message::Text(format!("hello {i}").into())).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(reply.into_text().unwrap().as_str(), format!("{home}: hello {i}"));
        }
        ws.close(None).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_backend_gives_json_503_with_retry_after() {
    // Two addresses nothing listens on.
    let dead: Vec<String> = (0..2).map(|_| format!("\"127.0.0.1:{}\"", pinroute_tests::free_port())).collect();
    let body =
        format!("[[route]]\nprefix = \"/\"\nbackends = [{}]\n[route.health_check]\nenabled = false\n", dead.join(", "));
    let p = ProxyProcess::start(bin(), "", &body).await.unwrap();
    for _ in 0..3 {
        let r = get(&p, "/api/health", None).await;
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(r.headers().get("retry-after").is_some());
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains("No API server"), "{v}");
    }
}

/// Issue 13, defect 1: every backend refuses connections (stopped after
/// they were listed as Ready). No byte reached a backend, so the client
/// gets the JSON 503 with `Retry-After` the SkyPilot client retries, not a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_backend_refusing_connections_gives_the_json_503() {
    let mut b = backends(&["a", "b"]);
    let list: Vec<String> = b.iter().map(|x| format!("\"{}\"", x.addr)).collect();
    // No health checks: the backends stay Ready in the table, so each request tries them.
    let body =
        format!("[[route]]\nprefix = \"/\"\nbackends = [{}]\n[route.health_check]\nenabled = false\n", list.join(", "));
    let p = ProxyProcess::start(bin(), "", &body).await.unwrap();
    assert_eq!(get(&p, "/api/health", None).await.status(), 200);
    for backend in &mut b {
        backend.kill();
    }
    for _ in 0..3 {
        let r = get(&p, "/api/health", None).await;
        assert_eq!(r.status(), 503, "a refused connect is the no-backend case");
        assert!(r.headers().get("retry-after").is_some());
        let v: serde_json::Value = r.json().await.unwrap();
        assert!(v["detail"].as_str().unwrap().contains("No API server"), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_reach_the_backend() {
    let b = backends(&["a"]);
    let p = proxy(&b, "").await;
    let r = http_client()
        .get(p.url("/debug/request"))
        .header("host", "sky.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-auth-request-email", "root@spoofed")
        .header("x-skypilot-auth-mode", "token")
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let h = &v["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "sky.example.com");
    assert_eq!(h["host"], "sky.example.com", "Host is preserved");
    assert!(h.get("x-auth-request-email").is_none(), "identity headers are stripped: {h}");
    assert!(h.get("x-skypilot-auth-mode").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413() {
    let b = backends(&["a"]);
    let p = proxy(&b, "max_body = \"1KiB\"").await;
    let ok = http_client().post(p.url("/upload-small")).body(vec![b'x'; 1000]).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    let declared = http_client().post(p.url("/upload-declared")).body(vec![b'x'; 5000]).send().await.unwrap();
    assert_eq!(declared.status(), 413);
    // Chunked, no Content-Length: counted as it streams.
    let chunks = futures::stream::iter((0..10).map(|_| Ok::<_, std::io::Error>(vec![b'y'; 512])));
    let streamed = http_client().post(p.url("/upload")).body(reqwest::Body::wrap_stream(chunks)).send().await;
    match streamed {
        Ok(r) => assert_eq!(r.status(), 413),
        Err(e) => panic!("expected a 413, got {e}"),
    }
    assert_eq!(b[0].count("POST /upload-small").await.unwrap(), 1);
    assert_eq!(b[0].count("POST /upload-declared").await.unwrap(), 0, "a declared oversize never reaches the backend");
}

/// Sends raw bytes, returns everything read until the peer closes or 3 s pass.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_smuggling_requests_are_rejected() {
    let b = backends(&["a"]);
    let p = proxy(&b, "").await;
    let smuggle = b"POST /launch HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /smuggled HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
    let answer = raw_exchange(p.addr, smuggle).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "CL+TE must be refused: {answer:?}");
    let bad_line = raw_exchange(p.addr, b"GARBAGE\r\n\r\n").await;
    assert!(bad_line.is_empty() || bad_line.starts_with("HTTP/1.1 400"), "{bad_line:?}");
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    let answer = raw_exchange(p.addr, huge.as_bytes()).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "oversized headers: {answer:.80?}");
    assert_eq!(b[0].count("POST /smuggled").await.unwrap(), 0, "nothing smuggled reached the backend");
    // The proxy is still serving.
    assert_eq!(get(&p, "/api/health", None).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive_connections_are_closed_after_keepalive_timeout() {
    let b = backends(&["a"]);
    let p = proxy_with_server(&b, "keepalive_timeout = \"1s\"", "").await;
    let request = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for pause in [Duration::ZERO, Duration::from_millis(400)] {
        // Within the timeout the connection is reused.
        tokio::time::sleep(pause).await;
        s.write_all(request).await.unwrap();
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    }
    let idle = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
    assert!(matches!(closed, Ok(Ok(0))), "the proxy closes the idle connection: {closed:?}");
    let waited = idle.elapsed();
    assert!(waited >= Duration::from_millis(800) && waited < Duration::from_secs(3), "closed after {waited:?}");
}

/// Established IPv4 sockets of this machine: (local port, remote port,
/// timer kind: the `tr` of /proc/net/tcp, 2 for keep-alive).
fn established_sockets() -> Vec<(u16, u16, u8)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |address: &str| address.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let timer = u8::from_str_radix(f.get(5)?.split(':').next()?, 16).ok()?;
            (f.get(3) == Some(&"01")).then_some((port(f.get(1)?)?, port(f.get(2)?)?, timer))
        })
        .collect()
}

/// Timer kinds of the established sockets from `local` (any when `None`) to `remote`.
fn socket_timers(local: Option<u16>, remote: u16) -> Vec<u8> {
    established_sockets()
        .into_iter()
        .filter(|(l, r, _)| local.is_none_or(|want| *l == want) && *r == remote)
        .map(|(_, _, timer)| timer)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_after_keepalive_timeout() {
    let b = backends(&["a"]);
    let p = proxy_with_server(&b, "h2c = true\nkeepalive_timeout = \"1s\"", "").await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let r = h2.get(p.url("/api/health")).send().await.unwrap();
    assert_eq!((r.version(), r.status().as_u16()), (reqwest::Version::HTTP_2, 200));
    let port = p.addr.port();
    let open = || established_sockets().iter().filter(|(local, _, _)| *local == port).count();
    assert_eq!(open(), 1, "the client keeps its HTTP/2 connection");
    let closed = wait_until(Duration::from_secs(4), || async { open() == 0 }).await;
    assert!(closed, "the proxy closes the HTTP/2 connection once it has no streams for 1 s");
    drop(h2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_upstream_sockets_use_tcp_keepalive() {
    let b = backends(&["a"]);
    let p = proxy(&b, "").await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // The proxy's end of this client connection, and its pooled connection to the backend.
    // (Until the last data is acknowledged the retransmission timer shows instead.)
    let client_port = s.local_addr().unwrap().port();
    let proxy_port = p.addr.port();
    let client_side =
        wait_until(Duration::from_secs(3), || async { socket_timers(Some(proxy_port), client_port) == [2] });
    assert!(
        client_side.await,
        "client socket without a keep-alive timer: {:?}",
        socket_timers(Some(proxy_port), client_port)
    );
    let backend_port = b[0].addr.port();
    let upstream = wait_until(Duration::from_secs(3), || async { socket_timers(None, backend_port).contains(&2) });
    assert!(upstream.await, "no upstream socket with a keep-alive timer: {:?}", socket_timers(None, backend_port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_and_metrics_reflect_traffic() {
    let b = backends(&["a", "b"]);
    let p = proxy(&b, "").await;
    for _ in 0..7 {
        let r = get(&p, "/api/health", None).await;
        assert_eq!(r.status(), 200);
    }
    let rows: Vec<serde_json::Value> =
        http_client().get(p.admin_url("/admin/backends")).send().await.unwrap().json().await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row["state"], "ready");
        assert_eq!(row["route"], "/");
        for key in ["id", "address", "in_flight", "streams", "pinned_clients"] {
            assert!(row.get(key).is_some(), "{key} missing in {row}");
        }
    }
    // The logging hook counts a request just after its response went out:
    // give the last one a moment.
    let total_200 = |metrics: &str| -> u64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("pinroute_requests_total{") && l.contains("code=\"200\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    let url = p.admin_url("/metrics");
    let counted = wait_until(Duration::from_secs(5), || {
        let url = url.clone();
        async move { total_200(&http_client().get(url).send().await.unwrap().text().await.unwrap()) >= 7 }
    })
    .await;
    let metrics = http_client().get(p.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(counted, "requests counted: {}\n{metrics}", total_200(&metrics));
    assert!(metrics.contains("pinroute_cookies_issued_total{reason=\"new\"} 7"), "{metrics}");
    for name in [
        "pinroute_request_duration_seconds_bucket",
        "pinroute_inflight_requests",
        "pinroute_open_streams",
        "pinroute_backend_state",
        "pinroute_upstream_retries_total",
    ] {
        assert!(metrics.contains(name), "{name} missing");
    }
    assert_eq!(http_client().get(p.admin_url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(http_client().get(p.admin_url("/nope")).send().await.unwrap().status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_wait_returns_when_the_last_stream_ends() {
    let b = backends(&["a", "b"]);
    let p = proxy(&b, "").await;
    let first = get(&p, "/api/health", None).await;
    let cookie = routeid(&first).unwrap();
    let home = served_by(&first);
    let id = b.iter().find(|x| x.name == home).unwrap().addr.to_string();
    let stream = get(&p, "/api/stream?lines=6&interval_ms=300", Some(&cookie)).await;
    let drain = http_client().post(p.admin_url(&format!("/admin/drain?backend={id}"))).send().await.unwrap();
    assert_eq!(drain.status(), 200);
    // Draining: new clients avoid it, the pinned client still reaches it.
    for _ in 0..10 {
        assert_ne!(served_by(&get(&p, "/api/health", None).await), home);
    }
    assert_eq!(served_by(&get(&p, "/api/health", Some(&cookie)).await), home);
    let short =
        http_client().get(p.admin_url(&format!("/admin/drain-wait?backend={id}&timeout=200ms"))).send().await.unwrap();
    assert_eq!(short.status(), 408, "the stream is still open");
    let waiter = tokio::spawn({
        let url = p.admin_url(&format!("/admin/drain-wait?backend={id}&timeout=20s"));
        async move { http_client().get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let body = stream.text().await.unwrap();
    assert!(body.contains("line=5"), "the stream ran to its end on the draining backend");
    let status = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap().unwrap();
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> =
        http_client().get(p.admin_url("/admin/backends")).send().await.unwrap().json().await.unwrap();
    let row = rows.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(row["state"], "draining");
    assert_eq!(row["in_flight"], 0);
    let undrain = http_client().post(p.admin_url(&format!("/admin/undrain?backend={id}"))).send().await.unwrap();
    assert_eq!(undrain.status(), 200);
    let unknown = http_client().post(p.admin_url("/admin/drain?backend=nope:1")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_stream_finish_then_exits_promptly() {
    let b = backends(&["a"]);
    let mut p = proxy(&b, "").await;
    let stream = get(&p, "/api/stream?lines=5&interval_ms=200", None).await;
    p.signal("TERM").unwrap();
    let body = stream.text().await.unwrap();
    assert!(body.contains("line=4"), "the in-flight stream finished: {body}");
    // grace_period is 10 s in the kit; the proxy exits once idle, well before.
    let code = p.wait_exit(Duration::from_secs(8)).await;
    assert_eq!(code, Some(0), "log:\n{}", p.log());
}

/// A shutdown closes idle keep-alive connections (after
/// `engine::DRAIN_IDLE`), ends busy ones after their next response, and
/// does not exit while a client is partway through a request head: the
/// proxy exits when no client connection is left, not when no request is
/// in flight (a request being written is in neither count until its head
/// is read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_and_serves_begun_requests() {
    let b = backends(&["a"]);
    let mut p = proxy(&b, "").await;
    let wait = Duration::from_secs(5);
    let mut idle = Http1Connection::connect(p.addr).await.unwrap();
    let mut busy = Http1Connection::connect(p.addr).await.unwrap();
    let mut begun = Http1Connection::connect(p.addr).await.unwrap();
    for c in [&mut idle, &mut busy, &mut begun] {
        let a = c.send("GET", "/api/health", &[], b"", wait).await.unwrap();
        assert_eq!((a.status, a.header("connection")), (200, None), "kept alive before the shutdown");
    }
    let metrics = http_client().get(p.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\npinroute_client_connections 3\n"), "the three, admin's own not counted:\n{metrics}");
    p.signal("TERM").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    begun.write_raw(b"GET /api/health HTTP/1.1\r\nhost: pinroute-test\r\n").await.unwrap();
    let a = busy.send("GET", "/api/health", &[], b"", wait).await.unwrap();
    assert_eq!((a.status, a.header("connection")), (200, Some("close")), "the last answer on a busy connection");
    assert!(matches!(busy.read_answer(false, wait).await, Err(Http1Error::Closed)));
    assert!(matches!(idle.read_answer(false, wait).await, Err(Http1Error::Closed)), "the idle connection is closed");
    // Well past DRAIN_IDLE: the begun request still gets its answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    begun.write_raw(b"\r\n").await.unwrap();
    let a = begun.read_answer(false, wait).await.unwrap();
    assert_eq!((a.status, a.header("connection")), (200, Some("close")), "log:\n{}", p.log());
    // grace_period is 10 s in the kit; no connection is left, so well before.
    assert_eq!(p.wait_exit(Duration::from_secs(8)).await, Some(0), "log:\n{}", p.log());
}

#[test]
fn check_names_file_key_and_fix() {
    let dir = std::env::temp_dir().join(format!("pinroute-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[server]\ngrace_period = \"forever\"\n[[route]]\nbackends = [\"127.0.0.1:1\"]\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml") && err.contains("server.grace_period") && err.contains("\"30s\""), "{err}");
    let good = dir.join("good.toml");
    std::fs::write(&good, "[[route]]\nbackends = [\"127.0.0.1:1\"]\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config"]).arg(&good).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "[[route]]\nbackend = [\"127.0.0.1:1\"]\n").unwrap();
    let out = std::process::Command::new(BIN).args(["check", "--config"]).arg(&unknown).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("unknown field `backend`") && err.contains("unknown.toml"), "{err}");
}
