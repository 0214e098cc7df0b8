//! Reliability at the edges of the machine and the protocol (issue 14): the
//! proxy's file descriptors running out, and backends closing idle
//! keep-alive connections just as the proxy reuses them. Counted outcomes,
//! bounded waits; the figures go to stderr for the README.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinroute_tests::http1::Http1Connection;
use pinroute_tests::procfs::{cpu_share, nofile_launcher, nofile_limit, open_fds, tcp_sockets};
use pinroute_tests::raw_backend::{KeepAlive, RawBackend};
use pinroute_tests::{wait_until, BackendProcess, ProxyProcess};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
const KEY: (&str, &str) = ("PINROUTE_COOKIE_KEY", "limits-key-0123456789abcdef");
/// The proxy's `RLIMIT_NOFILE` in the exhaustion scenario.
const NOFILE: u64 = 256;
/// Client connections opened against it.
const FLOOD: usize = 400;
/// `/proc/net/tcp`'s state number of a listening socket.
const LISTEN: u8 = 0x0A;

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// What one flood connection got for its request within the wait.
#[derive(Debug, Default)]
struct Flood {
    connected: usize,
    connect_failed: usize,
    answered_200: usize,
    /// The proxy's JSON 503 (no backend could be reached).
    answered_503: usize,
    answered_other: usize,
    closed: usize,
    waiting: usize,
}

async fn flood_request(stream: &mut tokio::net::TcpStream, wait: Duration) -> Result<u16, bool> {
    let request = b"GET /api/health HTTP/1.1\r\nhost: x\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return Err(false);
    }
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Err(_) => Err(true),
        Ok(Ok(n)) if n > 12 => Ok(String::from_utf8_lossy(&buf[9..12]).parse().unwrap_or(0)),
        Ok(_) => Err(false),
    }
}

/// Opens [`FLOOD`] connections to `addr` and sends a request on each; what
/// they got within `wait`, and the connections (open until dropped).
async fn flood(addr: SocketAddr, wait: Duration) -> (Flood, Vec<tokio::net::TcpStream>) {
    let connects =
        (0..FLOOD).map(|_| tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)));
    let mut flood = Flood::default();
    let mut streams = Vec::new();
    for c in futures::future::join_all(connects).await {
        match c {
            Ok(Ok(s)) => streams.push(s),
            _ => flood.connect_failed += 1,
        }
    }
    flood.connected = streams.len();
    let answers = futures::future::join_all(streams.iter_mut().map(|s| flood_request(s, wait))).await;
    for a in answers {
        match a {
            Ok(200) => flood.answered_200 += 1,
            Ok(503) => flood.answered_503 += 1,
            Ok(_) => flood.answered_other += 1,
            Err(true) => flood.waiting += 1,
            Err(false) => flood.closed += 1,
        }
    }
    (flood, streams)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_keeps_serving_and_recovers() {
    let backend = BackendProcess::spawn(Path::new(BIN), "a", "127.0.0.1:0", false).unwrap();
    let route = format!(
        "[[route]]\nprefix = \"/\"\nbackends = [\"{}\"]\n[route.health_check]\ninterval = \"300ms\"\ntimeout = \"200ms\"\n",
        backend.addr
    );
    let launcher = nofile_launcher(NOFILE).unwrap();
    let env = [KEY, ("PINROUTE_REAL_BIN", BIN)];
    let p = ProxyProcess::start_with_env(&launcher, "", &route, &env).await.unwrap();
    let pid = p.pid();
    assert_eq!(nofile_limit(pid).unwrap(), NOFILE, "the proxy runs under the lowered limit");
    let fds_idle = open_fds(pid).unwrap();

    // A client connected before the flood, on one keep-alive connection.
    let mut kept = Http1Connection::connect(p.addr).await.unwrap();
    let deadline = Duration::from_secs(5);
    let r = kept.send("GET", "/api/health", &[], b"", deadline).await.unwrap();
    assert_eq!((r.status, r.served_by()), (200, "a"));

    let (flood, streams) = flood(p.addr, Duration::from_secs(2)).await;
    assert_eq!(
        (flood.answered_other, flood.closed),
        (0, 0),
        "served, refused with the JSON 503, or waiting: {flood:?}"
    );
    let fds_exhausted = open_fds(pid).unwrap();
    assert!(fds_exhausted as u64 >= NOFILE - 16, "the flood used up the descriptors: {fds_exhausted} open, {flood:?}");

    // While exhausted: the kept client is still served; the proxy does not spin.
    let log_before = p.log().lines().count();
    let window = Instant::now();
    let cpu = cpu_share(pid, Duration::from_secs(3)).await.unwrap();
    let mut kept_served = 0;
    for _ in 0..10 {
        let r = kept.send("GET", "/api/health", &[], b"", deadline).await.unwrap();
        assert_eq!((r.status, r.served_by()), (200, "a"), "the kept connection is served while exhausted");
        kept_served += 1;
    }
    let log_lines = p.log().lines().count().saturating_sub(log_before);
    let window = window.elapsed().as_secs_f64();
    eprintln!(
        "fd exhaustion: limit {NOFILE}, {fds_idle} fds idle, {fds_exhausted} exhausted; {flood:?}; \
         proxy CPU {:.1}% of one core; {log_lines} log lines in {window:.1} s; kept connection served {kept_served}/10",
        cpu * 100.0
    );
    assert!(cpu < 0.5, "no busy loop while accept fails: {:.1}% of a core\n{}", cpu * 100.0, tail(&p.log()));
    assert!(
        (log_lines as f64) < 50.0 * window,
        "accept errors are logged at a bounded rate: {log_lines} lines in {window:.1} s\n{}",
        tail(&p.log())
    );

    // The flood leaves: service recovers fully.
    drop(streams);
    let recovered = wait_until(Duration::from_secs(10), || async {
        match Http1Connection::connect(p.addr).await {
            Ok(mut c) => {
                c.send("GET", "/api/health", &[], b"", Duration::from_secs(2)).await.is_ok_and(|r| r.status == 200)
            }
            Err(_) => false,
        }
    })
    .await;
    assert!(recovered, "new connections are served once the flood closed\n{}", tail(&p.log()));
    for i in 0..50 {
        let mut c = Http1Connection::connect(p.addr).await.unwrap();
        let r = c.send("GET", "/api/health", &[("connection", "close")], b"", deadline).await.unwrap();
        assert_eq!((r.status, r.served_by()), (200, "a"), "request {i} after recovery");
    }
    let r = kept.send("GET", "/api/health", &[], b"", deadline).await.unwrap();
    assert_eq!(r.status, 200);
    // Every closed client connection's descriptor is released (the kept
    // client's is the one left). Idle upstream connections may stay pooled.
    let (listen, upstream) = (p.addr.port(), backend.addr.port());
    let clients_open = || {
        let sockets = tcp_sockets(pid).unwrap_or_default();
        sockets.iter().filter(|s| s.local_port == listen && s.state != LISTEN).count()
    };
    let released = wait_until(Duration::from_secs(10), || async { clients_open() <= 1 }).await;
    let sockets = tcp_sockets(pid).unwrap();
    let pooled = sockets.iter().filter(|s| s.remote_port == upstream).count();
    eprintln!(
        "fd exhaustion, after: {} fds open ({fds_idle} before the flood): {} client connection(s), {pooled} upstream",
        open_fds(pid).unwrap_or(0),
        clients_open()
    );
    assert!(released, "closed client connections are released: {} still open", clients_open());
}

/// The proxy's own `EMFILE` on an upstream `connect()` is not the backend's
/// fault: a client pinned to a healthy backend, on a connection that needs
/// no new descriptor, keeps its backend and its cookie while the proxy is
/// out of descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_proxy_does_not_eject_healthy_backends() {
    let a = BackendProcess::spawn(Path::new(BIN), "a", "127.0.0.1:0", false).unwrap();
    let b = BackendProcess::spawn(Path::new(BIN), "b", "127.0.0.1:0", false).unwrap();
    let route = format!(
        "[[route]]\nprefix = \"/\"\nbackends = [\"{}\", \"{}\"]\n[route.health_check]\nenabled = false\n",
        a.addr, b.addr
    );
    let launcher = nofile_launcher(NOFILE).unwrap();
    let p = ProxyProcess::start_with_env(&launcher, "", &route, &[KEY, ("PINROUTE_REAL_BIN", BIN)]).await.unwrap();
    let deadline = Duration::from_secs(5);
    // A client pinned to `a` on one keep-alive connection (its upstream connection stays with it).
    let mut kept = Http1Connection::connect(p.addr).await.unwrap();
    let cookie = loop {
        let r = kept.send("GET", "/api/health", &[], b"", deadline).await.unwrap();
        if r.served_by() == "a" {
            break format!("SKYPILOT_ROUTEID={}", r.routeid().unwrap());
        }
    };
    // Asked while the flood's requests are being refused (a passive ejection lasts 1 s).
    let (flood, _streams) = flood(p.addr, Duration::from_millis(300)).await;
    let r = kept.send("GET", "/api/health", &[("cookie", &cookie)], b"", deadline).await.unwrap();
    eprintln!(
        "exhausted: {flood:?}; the pinned client got {} from {} (re-pinned: {})",
        r.status,
        r.served_by(),
        r.routeid().is_some()
    );
    assert_eq!(
        (r.status, r.served_by(), r.routeid()),
        (200, "a", None),
        "still a's, with no new cookie\n{}",
        tail(&p.log())
    );
}

/// How the race runs for one idle timeout.
struct Race {
    idle: Duration,
    clients: usize,
    requests: usize,
    /// Pauses between two requests of a client, drawn uniformly.
    pause: (Duration, Duration),
}

/// What came back.
#[derive(Debug, Default)]
struct Tally {
    gets: u64,
    gets_failed: u64,
    posts: u64,
    posts_ok: u64,
    /// 502 on a kept connection the backend closed: never resent, must not have run.
    posts_refused: u64,
    posts_other: u64,
    /// Client connections reopened after the proxy closed one.
    reconnects: u64,
}

async fn race_client(addr: SocketAddr, index: usize, race: Arc<Race>) -> (Tally, Vec<(String, u16)>, Vec<String>) {
    let mut tally = Tally::default();
    let mut posts = Vec::new();
    let mut failures = Vec::new();
    let mut connection = Http1Connection::connect(addr).await.unwrap();
    for n in 0..race.requests {
        if n > 0 {
            let pause = rand::rng().random_range(race.pause.0..=race.pause.1);
            tokio::time::sleep(pause).await;
        }
        let post = rand::rng().random_bool(0.5);
        let id = format!("c{index}-{n}");
        let answer = if post {
            tally.posts += 1;
            connection.send("POST", "/launch", &[("x-post-id", &id)], id.as_bytes(), Duration::from_secs(10)).await
        } else {
            tally.gets += 1;
            connection.send("GET", &format!("/api/get?request_id={id}"), &[], b"", Duration::from_secs(10)).await
        };
        let status = match &answer {
            Ok(a) => a.status,
            Err(e) => {
                failures.push(format!("{id}: {e}"));
                0
            }
        };
        match (post, status) {
            (false, 200) => {}
            (false, _) => {
                tally.gets_failed += 1;
                failures.push(format!("GET {id}: {status}"));
            }
            (true, 200) => tally.posts_ok += 1,
            (true, 502) => tally.posts_refused += 1,
            (true, _) => {
                tally.posts_other += 1;
                failures.push(format!("POST {id}: {status}"));
            }
        }
        if post {
            posts.push((id, status));
        }
        let closed = answer.as_ref().map_or(true, |a| a.header("connection") == Some("close"));
        if closed {
            tally.reconnects += 1;
            connection = Http1Connection::connect(addr).await.unwrap();
        }
    }
    (tally, posts, failures)
}

async fn keep_alive_race(race: Race) {
    let backend = RawBackend::start("a", KeepAlive::IdleTimeout(race.idle)).await.unwrap();
    // No health checks (their connections would be counted); debug logs of
    // the exchange name every resend on a fresh connection.
    let route = format!(
        "[[route]]\nprefix = \"/\"\nbackends = [\"{}\"]\n[route.health_check]\nenabled = false\n",
        backend.addr
    );
    let env = [KEY, ("RUST_LOG", "info,pinroute::engine::exchange=debug")];
    let p = ProxyProcess::start_with_env(Path::new(BIN), "", &route, &env).await.unwrap();
    let race = Arc::new(race);
    let runs = (0..race.clients).map(|i| tokio::spawn(race_client(p.addr, i, race.clone())));
    let mut tally = Tally::default();
    let mut posts = Vec::new();
    let mut failures = Vec::new();
    for run in futures::future::join_all(runs).await {
        let (t, p, f) = run.unwrap();
        tally.gets += t.gets;
        tally.gets_failed += t.gets_failed;
        tally.posts += t.posts;
        tally.posts_ok += t.posts_ok;
        tally.posts_refused += t.posts_refused;
        tally.posts_other += t.posts_other;
        tally.reconnects += t.reconnects;
        posts.extend(p);
        failures.extend(f);
    }
    let resent = p.log().matches("kept connection was closed; resending").count();
    eprintln!(
        "keep-alive race, backend idle timeout {:?}: {tally:?}; GETs resent on a fresh connection: {resent}; \
         backend connections: {}; POSTs run on the backend: {}",
        race.idle,
        backend.connections(),
        backend.seen.posts_run()
    );
    assert_eq!(tally.gets_failed, 0, "no idempotent request fails: {failures:#?}\n{}", tail(&p.log()));
    assert_eq!(tally.posts_other, 0, "a POST succeeds or is refused unrun: {failures:#?}");
    for (id, status) in &posts {
        let runs = backend.seen.post_runs(id);
        match status {
            200 => assert_eq!(runs, 1, "POST {id} succeeded, so it ran exactly once"),
            _ => assert_eq!(runs, 0, "POST {id} failed ({status}), so it must not have run"),
        }
    }
    assert_eq!(backend.seen.posts_run(), tally.posts_ok, "no POST ran that the client did not see succeed");
    assert!(tally.gets + tally.posts == (race.clients * race.requests) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_idle_connections_after_1ms_fails_nothing() {
    let ms = Duration::from_millis;
    keep_alive_race(Race { idle: ms(1), clients: 6, requests: 60, pause: (ms(0), ms(3)) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_idle_connections_after_100ms_fails_nothing() {
    let ms = Duration::from_millis;
    keep_alive_race(Race { idle: ms(100), clients: 6, requests: 30, pause: (ms(95), ms(105)) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_idle_connections_after_5s_fails_nothing() {
    let ms = Duration::from_millis;
    // A few requests just around the backend's 5 s idle timeout, on several connections.
    keep_alive_race(Race { idle: ms(5000), clients: 6, requests: 3, pause: (ms(4990), ms(5010)) }).await;
}
