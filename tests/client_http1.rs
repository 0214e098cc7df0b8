//! Black-box tests of the engine's own HTTP/1 codec on the client side:
//! raw bytes in, raw bytes out, against a real proxy and demo backend,
//! for what an HTTP library would smooth over (framing per client
//! version, heads that are too large or ambiguous, targets with bytes
//! HTTP does not allow, keep-alive after a body the proxy did not need).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use pinroute_tests::raw_backend::{KeepAlive, RawBackend};
use pinroute_tests::{BackendProcess, ProxyProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");

async fn setup() -> (BackendProcess, ProxyProcess) {
    setup_with("").await
}

/// A demo backend and a proxy in front; `route_keys` go into the route.
async fn setup_with(route_keys: &str) -> (BackendProcess, ProxyProcess) {
    let backend = BackendProcess::spawn(Path::new(BIN), "a", "127.0.0.1:0", false).expect("backend starts");
    let route = format!(
        "[[route]]\nprefix = \"/\"\nbackends = [\"{}\"]\n{route_keys}[route.health_check]\nenabled = false\n",
        backend.addr
    );
    let proxy = ProxyProcess::start_with_env(
        Path::new(BIN),
        "",
        &route,
        &[("PINROUTE_COOKIE_KEY", "test-key-0123456789abcdef")],
    )
    .await
    .expect("proxy starts");
    (backend, proxy)
}

/// Sends `request` on a new connection and reads until the proxy closes
/// it or `enough` says the bytes so far are complete.
async fn exchange(proxy: &ProxyProcess, request: &[u8], enough: impl Fn(&str) -> bool) -> (String, bool) {
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let closed = loop {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await.expect("an answer in time") {
            Ok(0) | Err(_) => break true,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
        if enough(&String::from_utf8_lossy(&out)) {
            break false;
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

fn never(_: &str) -> bool {
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_client_gets_a_stream_delimited_by_close_and_an_http11_client_gets_chunks() {
    let (_b, p) = setup().await;
    let path = "/api/stream?lines=3&interval_ms=10";
    let (text, closed) = exchange(&p, format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes(), never).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(!head.contains("transfer-encoding"), "HTTP/1.0 has no chunked coding: {head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed);
    assert_eq!(text.matches("line=").count(), 3, "{text}");
    assert!(!text.contains("\r\n0\r\n"), "no chunk framing in the body: {text}");

    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (text, closed) = exchange(&p, request.as_bytes(), |t| t.ends_with("\r\n0\r\n\r\n")).await;
    let head = text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    assert!(!closed, "the connection stays open after a chunked body");
    assert_eq!(text.matches("line=").count(), 3, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_that_are_too_large_malformed_or_ambiguous_are_refused_and_closed() {
    let (_b, p) = setup().await;
    let huge = format!("GET /api/health HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n", "a".repeat(70_000));
    let (text, closed) = exchange(&p, huge.as_bytes(), never).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{}", &text[..text.len().min(200)]);
    assert!(closed);

    let (text, closed) = exchange(&p, b"GET /api/health HTTP/1.1\r\nHost x\r\n\r\n", never).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("\"detail\""), "a JSON error the sky CLI can print: {text}");
    assert!(closed);

    let conflicting = b"POST /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    let (text, closed) = exchange(&p, conflicting, never).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(closed);

    let gzip_te = b"POST /api/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n";
    let (text, closed) = exchange(&p, gzip_te, never).await;
    assert!(text.starts_with("HTTP/1.1 400"), "a body whose end cannot be found: {text}");
    assert!(closed);

    let te_in_10 = b"POST /api/health HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let (text, _) = exchange(&p, te_in_10, never).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_bytes_http_forbids_is_escaped_and_forwarded() {
    let raw = RawBackend::start("r", KeepAlive::Keep).await.unwrap();
    let route =
        format!("[[route]]\nprefix = \"/\"\nbackends = [\"{}\"]\n[route.health_check]\nenabled = false\n", raw.addr);
    let p = ProxyProcess::start(Path::new(BIN), "", &route).await.expect("proxy starts");
    let request = "GET /api/x?q=<a\\b>\u{e9}|{} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (text, _) = exchange(&p, request.as_bytes(), never).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("GET /api/x?q=%3Ca%5Cb%3E%C3%A9%7C%7B%7D"), "the backend saw the escaped target: {text}");
    let (text, _) = exchange(&p, b"GET /api/x\x01 HTTP/1.1\r\nHost: x\r\n\r\n", never).await;
    assert!(text.starts_with("HTTP/1.1 400"), "control bytes are refused: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_survives_a_local_reply_before_a_small_body_and_http10_keep_alive_is_said() {
    let (_b, p) = setup().await;
    // An unknown route prefix would be a 404 from the proxy; here a GET
    // with a body the backend ignores, then a second request on the same
    // connection: the body is consumed, the second request parses.
    let two = b"GET /api/health HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n";
    let (text, closed) = exchange(&p, two, |t| t.matches("HTTP/1.1 200").count() == 2 && t.ends_with('}')).await;
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(!closed);

    let ten = b"GET /api/health HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n";
    let (text, closed) = exchange(&p, ten, |t| t.ends_with('}')).await;
    assert!(text.to_ascii_lowercase().contains("connection: keep-alive"), "{text}");
    assert!(!closed, "an HTTP/1.0 client that asked for keep-alive keeps its connection");

    let (text, closed) = exchange(&p, b"GET /api/health HTTP/1.0\r\nHost: x\r\n\r\n", never).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "HTTP/1.0 without keep-alive closes after the response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_mid_body_gets_a_408_after_the_write_timeout() {
    let (_b, p) = setup_with("write_timeout = \"1s\"\n").await;
    // A small body (held before a backend is chosen) and a large one
    // (streamed to the backend as it comes): both stop after 10 bytes.
    for declared in [100, 1_000_000] {
        let request = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n0123456789");
        let (text, closed) = exchange(&p, request.as_bytes(), never).await;
        assert!(text.starts_with("HTTP/1.1 408"), "declared {declared}: {text}");
        assert!(text.contains("\"detail\""), "{text}");
        assert!(closed, "the connection closes: the rest of the body never came");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_a_refused_body_is_not_reset_and_reads_its_413() {
    let (_b, p) = setup_with("max_body = \"1KiB\"\n").await;
    const BODY: usize = 16 * 1024 * 1024;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The whole body goes out although the proxy answers at once: more than
    // the sockets' buffers hold, so it only goes if the proxy keeps reading
    // (a close with unread bytes would reset the connection instead).
    let chunk = vec![b'x'; 64 * 1024];
    let send = async {
        for _ in 0..BODY / chunk.len() {
            s.write_all(&chunk).await?;
        }
        s.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(10), send).await.expect("sent in time").expect("no reset while sending");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the proxy closes in time")
        .expect("no reset while reading");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("\"detail\""), "{text}");

    // A client that waits for 100 Continue gets the 413 instead.
    let ask = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {BODY}\r\nExpect: 100-continue\r\n\r\n");
    let (text, closed) = exchange(&p, ask.as_bytes(), never).await;
    assert!(text.starts_with("HTTP/1.1 413"), "no 100 Continue for a body that will be refused: {text}");
    assert!(closed);
}
