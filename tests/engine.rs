//! Black-box tests of the engine's upstream connections: the connection
//! kept with a client connection across its requests, the per-thread pool,
//! backends that close kept connections, and pipelined clients. Backends
//! are raw sockets in this test (`RawBackend`) so connections can be counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use pinroute_tests::client::{routeid, served_by};
use pinroute_tests::raw_backend::{KeepAlive, RawBackend};
use pinroute_tests::ProxyProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");

async fn proxy(backends: &[&RawBackend]) -> ProxyProcess {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    // No health checks: they would open connections of their own.
    let route =
        format!("[[route]]\nprefix = \"/\"\nbackends = [{}]\n[route.health_check]\nenabled = false\n", list.join(", "));
    ProxyProcess::start_with_env(Path::new(BIN), "", &route, &[("PINROUTE_COOKIE_KEY", "test-key-0123456789abcdef")])
        .await
        .expect("proxy starts")
}

/// A client on one keep-alive connection, request after request (an HTTP
/// library may open a second connection while the first is being returned
/// to its pool, which would hide what the proxy does).
struct OneConnection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

/// A response: status, lower-case headers, body.
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl OneConnection {
    async fn open(p: &ProxyProcess) -> OneConnection {
        OneConnection { stream: tokio::net::TcpStream::connect(p.addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, method: &str, path: &str, cookie: Option<&str>, body: &str) -> Answer {
        let cookie = cookie.map(|c| format!("cookie: SKYPILOT_ROUTEID={c}\r\n")).unwrap_or_default();
        let request =
            format!("{method} {path} HTTP/1.1\r\nhost: x\r\n{cookie}content-length: {}\r\n\r\n{body}", body.len());
        self.stream.write_all(request.as_bytes()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(answer) = self.parse() {
                return answer;
            }
            let mut chunk = [0u8; 4096];
            let n =
                tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await.expect("answer in time").unwrap();
            assert!(n > 0, "the proxy closed the connection: {:?}", String::from_utf8_lossy(&self.buf));
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `GET /api/health` pinned by `cookie`: the backend and its connection.
    async fn health(&mut self, cookie: &str) -> (String, String) {
        let r = self.send("GET", "/api/health", Some(cookie), "").await;
        (r.header("x-demo-backend").to_string(), r.header("x-connection").to_string())
    }

    /// One whole response off the front of the buffer.
    fn parse(&mut self) -> Option<Answer> {
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let headers: HashMap<String, String> = head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length: usize = headers.get("content-length")?.parse().ok()?;
        if self.buf.len() < end + length {
            return None;
        }
        let body = String::from_utf8_lossy(&self.buf[end..end + length]).into_owned();
        self.buf.drain(..end + length);
        Some(Answer { status, headers, body })
    }
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("?", String::as_str)
    }
}

/// The cookie of each backend, from new clients' first requests.
async fn cookies(p: &ProxyProcess, want: usize) -> HashMap<String, String> {
    let mut cookies = HashMap::new();
    for _ in 0..60 {
        let r = pinroute_tests::client::get(p.addr, "/api/health", None).await.unwrap();
        if let Some(cookie) = routeid(&r) {
            cookies.insert(served_by(&r), cookie);
        }
        if cookies.len() == want {
            break;
        }
    }
    assert_eq!(cookies.len(), want, "new clients reach every backend: {cookies:?}");
    cookies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_connection_stays_with_the_client_connection() {
    let a = RawBackend::start("a", KeepAlive::Keep).await.unwrap();
    let b = RawBackend::start("b", KeepAlive::Keep).await.unwrap();
    let p = proxy(&[&a, &b]).await;
    let cookies = cookies(&p, 2).await;
    let mut client = OneConnection::open(&p).await;

    let accepted = a.connections();
    let mut on_a = Vec::new();
    for _ in 0..20 {
        let (backend, connection) = client.health(&cookies["a"]).await;
        assert_eq!(backend, "a");
        on_a.push(connection);
    }
    assert!(on_a.iter().all(|c| *c == on_a[0]), "one upstream connection for the client's requests: {on_a:?}");
    assert!(a.connections() <= accepted + 1, "at most one new connection to a");

    // The client moves to b: its connection to a is not used for b.
    let mut on_b = Vec::new();
    for _ in 0..20 {
        let (backend, connection) = client.health(&cookies["b"]).await;
        assert_eq!(backend, "b");
        on_b.push(connection);
    }
    assert!(on_b.iter().all(|c| *c == on_b[0]), "{on_b:?}");

    // Back to a: the connection it left waited in the pool.
    let accepted = a.connections();
    let (_, connection) = client.health(&cookies["a"]).await;
    assert_eq!(connection, on_a[0], "the kept connection to a is used again");
    assert_eq!(a.connections(), accepted, "no new connection to a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_kept_connections_fails_nothing_and_runs_no_post_twice() {
    let a = RawBackend::start("a", KeepAlive::CloseAfterResponse).await.unwrap();
    let p = proxy(&[&a]).await;
    let mut client = OneConnection::open(&p).await;
    for i in 0..50 {
        let get = client.send("GET", &format!("/api/get?request_id=r{i}"), None, "").await;
        assert_eq!(get.status, 200, "GET {i}: a closed kept connection is resent on a new one");
        // A moment of think time: the backend's close has arrived by then
        // (a close racing the request is the next test's case).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let post = client.send("POST", "/launch", None, &format!("job-{i}")).await;
        assert_eq!(post.status, 200, "POST {i}: a kept connection the backend closed is not used");
    }
    for i in 0..50 {
        assert_eq!(a.seen.count(&format!("POST /launch job-{i}")), 1, "job-{i} ran once");
    }
    assert!(a.connections() >= 100, "every request needed a new connection: {}", a.connections());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_that_races_the_request_resends_gets_and_never_posts() {
    let a = RawBackend::start("a", KeepAlive::DropSecondRequest).await.unwrap();
    let p = proxy(&[&a]).await;
    let mut client = OneConnection::open(&p).await;
    for i in 0..20 {
        let r = client.send("GET", &format!("/api/status?n={i}"), None, "").await;
        assert_eq!(r.status, 200, "GET {i} is resent after the close");
    }
    // The kept connection is open when the POST goes out; the backend reads
    // it and closes. It may have run, so it is not sent again.
    let r = client.send("POST", "/launch", None, "job-once").await;
    assert_eq!(r.status, 502);
    assert!(r.body.contains("Bad gateway"), "{}", r.body);
    assert_eq!(a.seen.count("POST /launch job-once"), 1, "sent once, never twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let a = RawBackend::start("a", KeepAlive::Keep).await.unwrap();
    let p = proxy(&[&a]).await;
    let mut s = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let paths = ["/one", "/two", "/three"];
    let pipelined: String = paths.iter().map(|path| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")).collect();
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while String::from_utf8_lossy(&out).matches("a GET /").count() < paths.len() {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await.expect("all answers in time").unwrap();
        assert!(n > 0, "connection closed early: {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
    let order: Vec<usize> = paths.iter().map(|path| text.find(&format!("a GET {path}")).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "answers in request order: {text}");
}
