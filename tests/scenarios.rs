//! Zero-failure scenarios under live load: a rolling upgrade through the
//! fake Kubernetes API, a backend killed, the proxy itself upgraded with
//! SIGQUIT and reloaded, request-id affinity and the draining-503 replay.
//! Each asserts counted outcomes (sent / failed / streams opened / cut).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use pinroute_tests::client::{backend_state, routeid, served_by};
use pinroute_tests::cluster::{FakeCluster, NS, READY};
use pinroute_tests::load::{LoadDriver, LoadOptions, LoadReport};
use pinroute_tests::{http_client, wait_until, BackendProcess, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");
const KEY: (&str, &str) = ("PINROUTE_COOKIE_KEY", "scenario-key-0123456789");
/// skypilot's shutdown sequence, shortened: 300 ms of normal service.
const SHUTDOWN: [&str; 4] = ["--shutdown-grace-ms", "300", "--shutdown-wait-ms", "10000"];

fn bin() -> &'static Path {
    Path::new(BIN)
}

fn static_route(backends: &[&BackendProcess]) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    format!(
        "[[route]]\nprefix = \"/\"\nbackends = [{}]\n[route.health_check]\ninterval = \"300ms\"\ntimeout = \"200ms\"\n",
        list.join(", ")
    )
}

fn assert_clean(report: &LoadReport, driver_failures: &[pinroute_tests::load::Failure], log: &str) {
    assert!(report.sent > 50, "too little load to mean anything: {report:?}");
    assert!(report.streams_opened > 5, "{report:?}");
    assert_eq!(report.failed, 0, "{report:?}\nfailures: {driver_failures:#?}\nproxy log tail:\n{}", tail(log));
    assert_eq!(report.streams_cut, 0, "{report:?}");
    assert_eq!(report.streams_opened, report.streams_completed, "{report:?}");
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

async fn cluster() -> FakeCluster {
    FakeCluster::start(bin()).await.unwrap()
}

/// An API pod whose server plays skypilot's (shortened) shutdown sequence.
fn add_pod(pods: &mut FakeCluster, name: &str) {
    pods.add_api_pod(name, &SHUTDOWN).unwrap();
}

async fn proxy(pods: &FakeCluster) -> ProxyProcess {
    pods.proxy("", &pods.api_route(""), KEY.1).await.unwrap()
}

fn backend<'a>(pods: &'a mut FakeCluster, name: &str) -> &'a mut BackendProcess {
    pods.backend(name).unwrap()
}

async fn wait_state(p: &ProxyProcess, id: &str, state: &str) {
    p.wait_backend_state(id, state).await.unwrap();
}

/// A Deployment's RollingUpdate: v2 added, v1 terminating (its server plays
/// skypilot's shutdown sequence), v1 deleted once it exited.
async fn rolling_upgrade(explicit_cordon: bool) {
    let mut pods = cluster().await;
    add_pod(&mut pods, "api-v1");
    let p = proxy(&pods).await;
    let load = LoadDriver::start(p.addr, LoadOptions::default());
    tokio::time::sleep(Duration::from_millis(800)).await;

    add_pod(&mut pods, "api-v2");
    wait_state(&p, "skypilot/api-v2", "ready").await;
    if explicit_cordon {
        // The upgrade guide's way: cordon, wait for the drain, then delete.
        pods.kube.remove_label(NS, "api-v1", READY.0);
        wait_state(&p, "skypilot/api-v1", "draining").await;
        let drained = http_client()
            .get(p.admin_url("/admin/drain-wait?backend=skypilot/api-v1&timeout=10s"))
            .send()
            .await
            .unwrap();
        // Returns at the first moment nothing is in flight there; pinned
        // clients may still come back until the pod refuses new work.
        let status = drained.status();
        let body = drained.text().await.unwrap_or_default();
        assert_eq!(status, 200, "drain-wait: {body}; proxy log:\n{}", tail(&p.log()));
    }
    pods.kube.mark_terminating(NS, "api-v1");
    backend(&mut pods, "api-v1").terminate().unwrap();
    assert!(
        backend(&mut pods, "api-v1").wait_exit(Duration::from_secs(20)).await,
        "v1 finished its ongoing requests and exited"
    );
    pods.kube.delete_pod(NS, "api-v1");
    wait_state(&p, "skypilot/api-v1", "gone").await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    let last = load.last_backends();
    let failures = load.stats.failures();
    let report = load.stop().await;
    assert_clean(&report, &failures, &p.log());
    assert!(report.max_wait_ms < 1000, "no client waits more than a second: {report:?}");
    assert!(last.iter().all(|b| b == "api-v2"), "every client ends on v2: {last:?}");
    let metrics = http_client().get(p.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("pinroute_request_replays_total{reason=\"draining_503\"}"),
        "v1 refused work that was replayed on v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_fails_nothing() {
    rolling_upgrade(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_upgrade_with_explicit_cordon_fails_nothing() {
    rolling_upgrade(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_fails_only_its_in_flight_requests() {
    let mut b: Vec<BackendProcess> =
        ["a", "b", "c"].iter().map(|n| BackendProcess::spawn(bin(), n, "127.0.0.1:0", false).unwrap()).collect();
    let p =
        ProxyProcess::start_with_env(bin(), "", &static_route(&b.iter().collect::<Vec<_>>()), &[KEY]).await.unwrap();
    let load = LoadDriver::start(p.addr, LoadOptions::default());
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = Instant::now();
    b[0].kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = load.last_backends();
    let failures = load.stats.failures();
    let report = load.stop().await;
    // What was on the dead backend may fail: requests in flight, and the
    // next step of a command whose request id lived there. Nothing after.
    let settle = Duration::from_millis(1000);
    let late: Vec<_> = failures.iter().filter(|f| f.at > killed_at + settle).collect();
    assert!(late.is_empty(), "failures after the backend was gone: {late:#?}");
    assert!(report.failed <= 2 * LoadOptions::default().clients as u64, "{report:?} {failures:#?}");
    assert!(report.sent > 50, "{report:?}");
    assert!(last.iter().all(|n| n != "a"), "clients re-pinned away from the dead backend: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_sigquit_upgrade_fails_nothing() {
    let b: Vec<BackendProcess> =
        ["a", "b"].iter().map(|n| BackendProcess::spawn(bin(), n, "127.0.0.1:0", false).unwrap()).collect();
    let mut old =
        ProxyProcess::start_with_env(bin(), "", &static_route(&b.iter().collect::<Vec<_>>()), &[KEY]).await.unwrap();
    let load = LoadDriver::start(old.addr, LoadOptions { stream_lines: 8, ..LoadOptions::default() });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let new = old.spawn_upgrade(bin(), &[KEY]).unwrap();
    // The new process waits on the upgrade socket for the listeners.
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT").unwrap();
    let exited = old.wait_exit(Duration::from_secs(30)).await;
    assert_eq!(exited, Some(0), "old proxy exits once its requests and streams are done; log:\n{}", tail(&old.log()));
    assert!(new.is_ready().await, "new proxy serves; log:\n{}", tail(&new.log()));
    tokio::time::sleep(Duration::from_millis(800)).await;
    let failures = load.stats.failures();
    let report = load.stop().await;
    assert_clean(&report, &failures, &format!("{}\n--- new ---\n{}", old.log(), new.log()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_adds_and_removes_backends_fails_nothing() {
    let b: Vec<BackendProcess> =
        ["a", "b", "c"].iter().map(|n| BackendProcess::spawn(bin(), n, "127.0.0.1:0", false).unwrap()).collect();
    let p = ProxyProcess::start_with_env(bin(), "", &static_route(&[&b[0], &b[1]]), &[KEY]).await.unwrap();
    let load = LoadDriver::start(p.addr, LoadOptions::default());
    tokio::time::sleep(Duration::from_millis(800)).await;

    // A broken file is rejected and changes nothing.
    p.rewrite_routes("[[route]]\nprefix = \"/\"\nbackends = [\"not an address\"]\n").unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { p.log().contains("config reload rejected") }).await);
    assert_eq!(backend_state(p.admin, &b[0].addr.to_string()).await.as_deref(), Some("ready"));

    p.rewrite_routes(&static_route(&[&b[1], &b[2]])).unwrap();
    p.signal("HUP").unwrap();
    wait_state(&p, &b[2].addr.to_string(), "ready").await;
    let removed = b[0].addr.to_string();
    let gone = wait_until(Duration::from_secs(10), || {
        let removed = removed.clone();
        async move { matches!(backend_state(p.admin, &removed).await.as_deref(), Some("gone") | None) }
    })
    .await;
    assert!(gone, "the removed backend leaves once idle");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let last = load.last_backends();
    let failures = load.stats.failures();
    let report = load.stop().await;
    assert_clean(&report, &failures, &p.log());
    assert!(last.iter().all(|n| n != "a"), "{last:?}");
    assert!(b[2].count("GET /api/health").await.unwrap() > 0, "the added backend took clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_affinity_reaches_the_owning_pod() {
    let mut pods = cluster().await;
    add_pod(&mut pods, "api-1");
    add_pod(&mut pods, "api-2");
    let p = proxy(&pods).await;
    // Client A submits work.
    let health = pinroute_tests::client::get(p.addr, "/api/health", None).await.unwrap();
    let (cookie_a, owner) = (routeid(&health).unwrap(), served_by(&health));
    let other = if owner == "api-1" { "api-2" } else { "api-1" };
    let launch = http_client()
        .post(p.url("/launch"))
        .header("cookie", format!("SKYPILOT_ROUTEID={cookie_a}"))
        .send()
        .await
        .unwrap();
    let id = launch.headers()["x-skypilot-request-id"].to_str().unwrap().to_string();

    // Client B: no cookie, or a cookie for the other pod: still the owner.
    let b_cookie = loop {
        let r = pinroute_tests::client::get(p.addr, "/api/health", None).await.unwrap();
        if served_by(&r) == other {
            break routeid(&r).unwrap();
        }
    };
    for (cookie, path) in [
        (None, format!("/api/stream?request_id={id}&lines=2&interval_ms=10")),
        (Some(b_cookie.as_str()), format!("/api/get?request_id={}", &id[..8])),
    ] {
        let r = pinroute_tests::client::get(p.addr, &path, cookie).await.unwrap();
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, owner.clone()), "{path}");
        assert_eq!(routeid(&r), None, "affinity leaves the client's cookie alone");
    }
    // `POST /api/cancel` names the id in its JSON body: read before routing,
    // forwarded intact.
    let body = format!("{{\"request_ids\": [\"{id}\"]}}");
    let r = http_client()
        .post(p.url("/api/cancel"))
        .header("cookie", format!("SKYPILOT_ROUTEID={b_cookie}"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, owner.clone()), "cancel reaches the owner");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["bytes"].as_u64(), Some(body.len() as u64), "the body was forwarded whole");
    // The owner is cordoned: it still serves its own request ids.
    pods.kube.remove_label(NS, &owner, READY.0);
    wait_state(&p, &format!("skypilot/{owner}"), "draining").await;
    let r = pinroute_tests::client::get(p.addr, &format!("/api/get?request_id={id}"), None).await.unwrap();
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, owner.clone()));

    // A proxy that never saw the id (restart, another replica): the cookie's
    // pod answers 404, the proxy asks the others and learns the owner.
    let fresh = proxy(&pods).await;
    let r =
        pinroute_tests::client::get(fresh.addr, &format!("/api/get?request_id={id}"), Some(&b_cookie)).await.unwrap();
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, owner.clone()));
    let metrics = http_client().get(fresh.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pinroute_request_replays_total{reason=\"request_id_404\"} 1"), "{metrics}");
    let r = pinroute_tests::client::get(fresh.addr, &format!("/api/stream?request_id={id}&lines=1"), Some(&b_cookie))
        .await
        .unwrap();
    assert_eq!(served_by(&r), owner, "learned: no second probe");
    let metrics = http_client().get(fresh.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pinroute_request_replays_total{reason=\"request_id_404\"} 1"));
    // An id nobody has: the 404 comes back after asking everyone once.
    let r = pinroute_tests::client::get(fresh.addr, "/api/get?request_id=deadbeef-nobody", None).await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_backend_refusal_is_replayed_once_on_a_ready_one() {
    let a = BackendProcess::spawn_with(
        bin(),
        "a",
        "127.0.0.1:0",
        &["--shutdown-grace-ms", "0", "--shutdown-wait-ms", "10000"],
    )
    .unwrap();
    let b = BackendProcess::spawn(bin(), "b", "127.0.0.1:0", false).unwrap();
    let p = ProxyProcess::start_with_env(bin(), "", &static_route(&[&a, &b]), &[KEY]).await.unwrap();
    let cookie_a = loop {
        let r = pinroute_tests::client::get(p.addr, "/api/health", None).await.unwrap();
        if served_by(&r) == "a" {
            break routeid(&r).unwrap();
        }
    };
    // Keep `a` busy with a stream so it stays up refusing new work.
    let stream =
        pinroute_tests::client::get(p.addr, "/api/stream?lines=20&interval_ms=100", Some(&cookie_a)).await.unwrap();
    assert_eq!(served_by(&stream), "a");
    http_client().post(p.admin_url(&format!("/admin/drain?backend={}", a.addr))).send().await.unwrap();
    a.terminate().unwrap();
    assert!(wait_until(Duration::from_secs(5), || async { a.count("POST refused /probe").await.is_ok() }).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = "{\"cluster\": \"x\"}";
    let r = http_client()
        .post(p.url("/launch"))
        .header("cookie", format!("SKYPILOT_ROUTEID={cookie_a}"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the user sees no error");
    assert_eq!(served_by(&r), "b");
    let new_cookie = routeid(&r).expect("re-pinned with a new cookie");
    assert_ne!(new_cookie, cookie_a);
    assert_eq!(a.count("POST refused /launch").await.unwrap(), 1, "a refused it, unexecuted");
    assert_eq!(a.count("POST /launch").await.unwrap(), 0);
    assert_eq!(b.count("POST /launch").await.unwrap(), 1, "replayed exactly once");
    // /api/ paths on the draining backend are not replayed: they still work there.
    let r = pinroute_tests::client::get(p.addr, "/api/health", Some(&cookie_a)).await.unwrap();
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, "a".to_string()));
    assert!(stream.text().await.unwrap().lines().count() == 20, "the open stream ran to its end");
}

/// A longer soak, not part of CI: `cargo test --release -p pinroute --test
/// scenarios -- --ignored soak --nocapture`. Several rolling upgrades in a row
/// under more clients; PINROUTE_SOAK_ROUNDS and PINROUTE_SOAK_CLIENTS tune it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes long; run by hand"]
async fn soak_rolling_upgrades() {
    let rounds: usize = std::env::var("PINROUTE_SOAK_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let clients: usize = std::env::var("PINROUTE_SOAK_CLIENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(32);
    let mut pods = cluster().await;
    add_pod(&mut pods, "api-r0");
    let p = proxy(&pods).await;
    let started = Instant::now();
    let load = LoadDriver::start(
        p.addr,
        LoadOptions { clients, stream_lines: 10, stream_interval_ms: 200, ..LoadOptions::default() },
    );
    for round in 1..=rounds {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (old, new) = (format!("api-r{}", round - 1), format!("api-r{round}"));
        add_pod(&mut pods, &new);
        wait_state(&p, &format!("skypilot/{new}"), "ready").await;
        pods.kube.mark_terminating(NS, &old);
        backend(&mut pods, &old).terminate().unwrap();
        assert!(backend(&mut pods, &old).wait_exit(Duration::from_secs(60)).await);
        pods.kube.delete_pod(NS, &old);
        let r = load.stats.report();
        eprintln!("round {round}: {old} -> {new} after {:?}: {r:?}", started.elapsed());
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = load.stats.failures();
    let report = load.stop().await;
    eprintln!("soak: {rounds} rolling upgrades, {clients} clients, {:?}: {report:?}", started.elapsed());
    assert_clean(&report, &failures, &p.log());
}
