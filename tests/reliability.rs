//! Reliability scenarios operators meet beyond one proxy process (issue 14):
//! two replicas behind a plain L4 balancer through a rolling upgrade, and a
//! backend that hangs instead of dying. Counted outcomes, bounded waits.
//! File descriptors running out and upstream keep-alive races are in
//! `reliability_limits.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinroute_tests::client::backend_state;
use pinroute_tests::cluster::{FakeCluster, NS};
use pinroute_tests::http1::{Answer, BodyEnd, Http1Connection};
use pinroute_tests::l4_balancer::L4Balancer;
use pinroute_tests::replica_load::ReplicaLoad;
use pinroute_tests::{http_client, wait_until, BackendProcess, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
const KEY: &str = "replicas-share-this-key-0123456789";
/// skypilot's shutdown sequence, shortened: 300 ms of normal service.
const SHUTDOWN: [&str; 4] = ["--shutdown-grace-ms", "300", "--shutdown-wait-ms", "10000"];

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// One request on its own connection straight to `addr`.
async fn ask(addr: std::net::SocketAddr, method: &str, path: &str, cookie: Option<&str>) -> Answer {
    let mut c = Http1Connection::connect(addr).await.unwrap();
    let cookie = cookie.map(|c| format!("SKYPILOT_ROUTEID={c}"));
    let mut headers = vec![("connection", "close")];
    if let Some(c) = &cookie {
        headers.push(("cookie", c.as_str()));
    }
    c.send(method, path, &headers, b"", Duration::from_secs(10)).await.unwrap()
}

/// A cookie for each of `want` backends, from new clients through `p`.
async fn cookies_of(p: &ProxyProcess, want: usize) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for _ in 0..60 {
        let r = ask(p.addr, "GET", "/api/health", None).await;
        if let Some(c) = r.routeid() {
            if !found.iter().any(|(b, _)| b == r.served_by()) {
                found.push((r.served_by().to_string(), c));
            }
        }
        if found.len() == want {
            break;
        }
    }
    assert_eq!(found.len(), want, "new clients reach every backend: {found:?}");
    found
}

fn replays(metrics: &str, reason: &str) -> u64 {
    let key = format!("pinroute_request_replays_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&key)).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0) as u64
}

async fn metrics(p: &ProxyProcess) -> String {
    http_client().get(p.admin_url("/metrics")).send().await.unwrap().text().await.unwrap()
}

/// v(n) is replaced by its successor while both replicas serve.
async fn roll(pods: &mut FakeCluster, replicas: &[&ProxyProcess], old: &str, new: &str) {
    pods.add_api_pod(new, &SHUTDOWN).unwrap();
    for p in replicas {
        p.wait_backend_state(&format!("{NS}/{new}"), "ready").await.unwrap();
    }
    pods.kube.mark_terminating(NS, old);
    let backend = pods.backend(old).unwrap();
    backend.terminate().unwrap();
    assert!(backend.wait_exit(Duration::from_secs(20)).await, "{old} finished its ongoing requests and exited");
    pods.kube.delete_pod(NS, old);
    for p in replicas {
        p.wait_backend_state(&format!("{NS}/{old}"), "gone").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_behind_an_l4_balancer_roll_without_a_failure() {
    let mut pods = FakeCluster::start(Path::new(BIN)).await.unwrap();
    pods.add_api_pod("api-v1a", &SHUTDOWN).unwrap();
    pods.add_api_pod("api-v1b", &SHUTDOWN).unwrap();
    let one = pods.proxy("", &pods.api_route(""), KEY).await.unwrap();
    let two = pods.proxy("", &pods.api_route(""), KEY).await.unwrap();
    for p in [&one, &two] {
        for pod in ["api-v1a", "api-v1b"] {
            p.wait_backend_state(&format!("{NS}/{pod}"), "ready").await.unwrap();
        }
    }

    // Before any load: a cookie set by one replica is honoured by the other.
    for (backend, cookie) in cookies_of(&one, 2).await {
        for _ in 0..5 {
            let r = ask(two.addr, "GET", "/api/health", Some(&cookie)).await;
            assert_eq!((r.status, r.served_by(), r.routeid()), (200, backend.as_str(), None), "replica two");
        }
    }
    // A request id accepted through one replica: the other finds its pod
    // without a cookie, and with a cookie for the other pod.
    let mut owners = Vec::new();
    for _ in 0..2 {
        let launch = ask(one.addr, "POST", "/launch", None).await;
        let id = launch.header("x-skypilot-request-id").unwrap().to_string();
        owners.push((id, launch.served_by().to_string()));
    }
    let cookies = cookies_of(&two, 2).await;
    let (id, owner) = &owners[0];
    let r = ask(two.addr, "GET", &format!("/api/get?request_id={id}"), None).await;
    assert_eq!((r.status, r.served_by()), (200, owner.as_str()), "cookie-less /api/get on the other replica");
    let (id, owner) = &owners[1];
    let elsewhere = cookies.iter().find(|(b, _)| b != owner).map(|(_, c)| c.as_str());
    let r = ask(two.addr, "GET", &format!("/api/get?request_id={id}"), elsewhere).await;
    assert_eq!((r.status, r.served_by(), r.routeid()), (200, owner.as_str(), None), "wrong cookie, right owner");
    assert!(replays(&metrics(&two).await, "request_id_404") >= 1, "replica two asked the other pod");

    // The load: each request a new TCP connection through the balancer.
    let balancer = Arc::new(L4Balancer::start(&[one.addr, two.addr]).await.unwrap());
    let load = ReplicaLoad::start(balancer.clone(), 8, Duration::from_millis(20));
    tokio::time::sleep(Duration::from_millis(800)).await;
    roll(&mut pods, &[&one, &two], "api-v1a", "api-v2a").await;
    roll(&mut pods, &[&one, &two], "api-v1b", "api-v2b").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let last = load.last_backends();
    let failures = load.stats.failures();
    let report = load.stop().await;
    let (m1, m2) = (metrics(&one).await, metrics(&two).await);
    let replayed: Vec<u64> =
        ["draining_503", "request_id_404"].iter().map(|reason| replays(&m1, reason) + replays(&m2, reason)).collect();
    eprintln!(
        "two replicas: {report:?}, connections per replica {:?}, replayed (draining_503, request_id_404) {replayed:?}",
        balancer.accepted()
    );

    let logs = format!("replica one:\n{}\nreplica two:\n{}", tail(&one.log()), tail(&two.log()));
    assert_eq!(report.failed, 0, "{report:?}\n{failures:#?}\n{logs}");
    assert_eq!(report.streams_cut, 0, "{report:?}");
    assert!(report.streams_opened > 10 && report.streams_opened == report.streams_completed, "{report:?}");
    assert!(balancer.accepted().iter().all(|n| *n > 50), "both replicas served: {:?}", balancer.accepted());
    assert_eq!(balancer.connect_failures(), 0);
    assert!(report.cookie_honoured_elsewhere > 10, "cookies honoured across replicas: {report:?}");
    assert!(report.cookieless_get_elsewhere > 5, "cookie-less /api/get on the other replica: {report:?}");
    assert!(report.repinned > 0, "clients of the old pods were re-pinned: {report:?}");
    assert!(last.iter().all(|b| b.starts_with("api-v2")), "every client ends on v2: {last:?}");
    assert!(replayed[0] > 0, "the old pods refused work that was replayed: {replayed:?}");
}

fn static_route(backends: &[&BackendProcess], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[[route]]\nprefix = \"/\"\nbackends = [{}]\n{extra}\n[route.health_check]\ninterval = \"300ms\"\ntimeout = \"200ms\"\n",
        list.join(", ")
    )
}

/// `kill -STOP` / `kill -CONT` of a process by id.
fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

/// What a client of a hung backend gets: the proxy's JSON 504 after the
/// route's read timeout, or (once the health check ejected it) `b`.
fn timed_out_or_elsewhere(r: &Answer) -> &'static str {
    match (r.status, r.served_by()) {
        (504, "?") => {
            assert!(r.header("content-type").is_some_and(|t| t.contains("json")), "{r:?}");
            assert!(r.text().contains("\"detail\""), "{}", r.text());
            "504"
        }
        (200, "b") => "b",
        _ => panic!("neither the JSON 504 nor the other backend: {} {} {}", r.status, r.served_by(), r.text()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_backend_is_avoided_and_its_requests_end_with_a_504() {
    let bin = Path::new(BIN);
    let a = BackendProcess::spawn(bin, "a", "127.0.0.1:0", false).unwrap();
    let b = BackendProcess::spawn(bin, "b", "127.0.0.1:0", false).unwrap();
    let route = static_route(&[&a, &b], "read_timeout = \"1s\"");
    let p = ProxyProcess::start_with_env(bin, "", &route, &[("PINROUTE_COOKIE_KEY", KEY)]).await.unwrap();
    let cookie_a = cookies_of(&p, 2).await.into_iter().find(|(n, _)| n == "a").map(|(_, c)| c).unwrap();

    // In flight when `a` stops: a log stream, and an upload whose body
    // (over the 64 KiB the proxy holds) is still being sent.
    let stream_task = {
        let (addr, cookie) = (p.addr, format!("SKYPILOT_ROUTEID={cookie_a}"));
        tokio::spawn(async move {
            let mut c = Http1Connection::connect(addr).await.unwrap();
            let headers = [("cookie", cookie.as_str())];
            c.send("GET", "/api/stream?lines=1000&interval_ms=20", &headers, b"", Duration::from_secs(15)).await
        })
    };
    let mut upload = Http1Connection::connect(p.addr).await.unwrap();
    let body = vec![b'x'; 100 * 1024];
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: x\r\ncookie: SKYPILOT_ROUTEID={cookie_a}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    upload.write_raw(head.as_bytes()).await.unwrap();
    upload.write_raw(&body[..80 * 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let stopped = Instant::now();
    signal(a.pid(), "STOP");
    // How long until the admin table shows it down (health checks every 300 ms, 200 ms timeout).
    let ejection = {
        let (admin, id) = (p.admin, a.addr.to_string());
        tokio::spawn(async move {
            let down = wait_until(Duration::from_secs(10), || {
                let id = id.clone();
                async move { backend_state(admin, &id).await.as_deref() == Some("down") }
            })
            .await;
            down.then(|| stopped.elapsed())
        })
    };
    // Requests pinned to `a` right after it stopped, before any health check could notice.
    let pinned: Vec<_> = (0..4)
        .map(|_| {
            let (addr, cookie) = (p.addr, cookie_a.clone());
            tokio::spawn(async move { ask(addr, "GET", "/debug/request", Some(&cookie)).await })
        })
        .collect();
    upload.write_raw(&body[80 * 1024..]).await.unwrap();
    let upload_answer = upload.read_answer(false, Duration::from_secs(10)).await.unwrap();
    let upload_after = stopped.elapsed();
    assert_eq!(timed_out_or_elsewhere(&upload_answer), "504", "the upload was on a when it stopped");

    let ejected = ejection.await.unwrap().expect("the health checks eject the hung backend");
    let mut pinned_outcomes = Vec::new();
    for task in pinned {
        pinned_outcomes.push(timed_out_or_elsewhere(&task.await.unwrap()));
    }
    let stream = tokio::time::timeout(Duration::from_secs(15), stream_task).await.expect("the stream ended").unwrap();
    let stream_after = stopped.elapsed();
    let stream = stream.expect("the stream's head had arrived before the stop");
    let lines = stream.body.iter().filter(|c| **c == b'\n').count();
    assert_eq!((stream.status, stream.served_by()), (200, "a"));
    assert_eq!(stream.end, BodyEnd::Cut, "a stream stalled past the read timeout is cut, not left hanging");
    assert!(lines > 0 && lines < 1000, "{lines} lines");

    // New clients avoid `a`; a client pinned to it is re-pinned to `b`.
    for _ in 0..20 {
        let r = ask(p.addr, "GET", "/api/health", None).await;
        assert_eq!((r.status, r.served_by()), (200, "b"));
    }
    let r = ask(p.addr, "POST", "/launch", Some(&cookie_a)).await;
    assert_eq!((r.status, r.served_by()), (200, "b"), "{}", r.text());
    let new_cookie = r.routeid().expect("re-pinned with a cookie for b");
    assert_ne!(new_cookie, cookie_a);
    eprintln!(
        "hung backend: upload 504 after {upload_after:?}; down {ejected:?} after the stop; pinned GETs {pinned_outcomes:?}; \
         stream cut after {lines} lines, {stream_after:?} after the stop"
    );

    // It resumes: health checks re-admit it, new clients reach it again.
    signal(a.pid(), "CONT");
    p.wait_backend_state(&a.addr.to_string(), "ready").await.unwrap();
    let back = wait_until(Duration::from_secs(10), || async {
        ask(p.addr, "GET", "/api/health", None).await.served_by() == "a"
    })
    .await;
    assert!(back, "new clients reach a again after SIGCONT");
    eprintln!("hung backend: after SIGCONT a counted POST /upload {} time(s)", a.count("POST /upload").await.unwrap());
}
