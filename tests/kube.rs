//! Kubernetes discovery scenarios: the real `pinroute` process watching a
//! fake API server (real list/watch protocol), pods backed by real demo
//! backends on distinct loopback addresses (127.0.0.N, one port).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use pinroute_tests::client::{routeid, served_by};
use pinroute_tests::cluster::{FakeCluster, APP, NS, READY};
use pinroute_tests::{http_client, wait_until, ProxyProcess};

const BIN: &str = env!("CARGO_BIN_EXE_pinroute");

const KEY: &str = "kube-test-key-0123456789";

async fn cluster() -> FakeCluster {
    FakeCluster::start(Path::new(BIN)).await.unwrap()
}

/// A proxy over the cluster's API pods, `extra` added to the route.
async fn proxy(c: &FakeCluster, extra: &str) -> ProxyProcess {
    c.proxy("", &c.api_route(extra), KEY).await.unwrap()
}

async fn get(p: &ProxyProcess, path: &str, cookie: Option<&str>) -> reqwest::Response {
    pinroute_tests::client::get(p.addr, path, cookie).await.expect("request completes")
}

/// Waits until the admin table shows `state` for `skypilot/name`; returns how long it took.
async fn wait_state(p: &ProxyProcess, name: &str, state: &str) -> Duration {
    p.wait_backend_state(&format!("{NS}/{name}"), state).await.unwrap()
}

/// A client pinned to a pod: its cookie and the pod's name.
async fn pinned_client(p: &ProxyProcess) -> (String, String) {
    let r = get(p, "/api/health", None).await;
    assert_eq!(r.status(), 200);
    (routeid(&r).unwrap(), served_by(&r))
}

fn other(names: &[&str], not: &str) -> String {
    names.iter().find(|n| **n != not).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_keeps_streams_and_pinned_clients_then_uncordon_readmits() {
    let mut c = cluster().await;
    c.add_api_pod("api-1", &[]).unwrap();
    c.add_api_pod("api-2", &[]).unwrap();
    let p = proxy(&c, "").await;
    let (cookie, home) = pinned_client(&p).await;
    let stream = get(&p, "/api/stream?lines=8&interval_ms=250", Some(&cookie)).await;

    let changed = Instant::now();
    c.kube.remove_label(NS, &home, READY.0);
    let lag = wait_state(&p, &home, "draining").await;
    eprintln!(
        "cordon visible in the admin table {lag:?} after the label was removed ({:?} incl. polling)",
        changed.elapsed()
    );

    for _ in 0..10 {
        let r = get(&p, "/debug/request", Some(&cookie)).await;
        assert_eq!((r.status().as_u16(), served_by(&r)), (200, home.clone()), "pinned clients keep their draining pod");
        assert_eq!(routeid(&r), None);
    }
    let away = other(&["api-1", "api-2"], &home);
    for _ in 0..20 {
        let r = get(&p, "/api/health", None).await;
        assert_eq!(served_by(&r), away, "no new client goes to a cordoned pod");
    }
    let body = stream.text().await.unwrap();
    assert_eq!(body.lines().count(), 8, "the stream ran to its natural end: {body}");

    // Uncordon: the pod takes new clients again, and the cookie is unchanged.
    c.kube.set_labels(NS, &home, &[APP, READY]);
    wait_state(&p, &home, "ready").await;
    let mut seen = HashSet::new();
    for _ in 0..40 {
        seen.insert(served_by(&get(&p, "/api/health", None).await));
    }
    assert!(seen.contains(&home), "uncordoned pod takes new clients: {seen:?}");
    let r = get(&p, "/api/health", Some(&cookie)).await;
    assert_eq!(served_by(&r), home);
    assert_eq!(routeid(&r), None, "same cookie value across relabels (identity = pod UID)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_pod_repins_with_a_new_cookie_and_no_failures() {
    let mut c = cluster().await;
    c.add_api_pod("api-1", &[]).unwrap();
    c.add_api_pod("api-2", &[]).unwrap();
    let p = proxy(&c, "").await;
    let (cookie, home) = pinned_client(&p).await;
    c.kube.delete_pod(NS, &home);
    c.kill(&home);
    let mut failed = 0;
    let mut fresh = None;
    for _ in 0..30 {
        let r = get(&p, "/debug/request", Some(&cookie)).await;
        failed += usize::from(r.status() != 200);
        assert_ne!(served_by(&r), home);
        fresh = fresh.or(routeid(&r));
    }
    assert_eq!(failed, 0);
    let fresh = fresh.expect("a new cookie was issued");
    assert_ne!(fresh, cookie);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_cordoned_rejects_new_clients_and_serves_pinned_ones() {
    let mut c = cluster().await;
    c.add_api_pod("api-1", &[]).unwrap();
    c.add_api_pod("api-2", &[]).unwrap();
    let p = proxy(&c, "").await;
    let (cookie, home) = pinned_client(&p).await;
    for pod in ["api-1", "api-2"] {
        c.kube.remove_label(NS, pod, READY.0);
        wait_state(&p, pod, "draining").await;
    }
    let r = get(&p, "/api/health", None).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["detail"].is_string());
    let r = get(&p, "/api/health", Some(&cookie)).await;
    assert_eq!((r.status().as_u16(), served_by(&r)), (200, home));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_outage_and_410_leave_routing_unchanged() {
    let mut c = cluster().await;
    c.add_api_pod("api-1", &[]).unwrap();
    c.add_api_pod("api-2", &[]).unwrap();
    let p = proxy(&c, "").await;
    let (cookie, home) = pinned_client(&p).await;
    c.kube.set_down(true);
    let started = Instant::now();
    let (mut sent, mut failed) = (0, 0);
    while started.elapsed() < Duration::from_secs(3) {
        let pinned = get(&p, "/api/health", Some(&cookie)).await;
        failed += usize::from(pinned.status() != 200 || served_by(&pinned) != home);
        let new = get(&p, "/api/health", None).await;
        failed += usize::from(new.status() != 200);
        sent += 2;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While the API server is away, a pod changes: seen after the relist.
    c.kube.set_down(false);
    c.kube.expire_history();
    c.kube.remove_label(NS, &home, READY.0);
    let recovered = wait_state(&p, &home, "draining").await;
    eprintln!("change made while the API server was away seen {recovered:?} after it came back");
    let r = get(&p, "/api/health", Some(&cookie)).await;
    failed += usize::from(r.status() != 200 || served_by(&r) != home);
    assert!(sent > 20);
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during the outage");
    let metrics = http_client().get(p.admin_url("/metrics")).send().await.unwrap().text().await.unwrap();
    let errors: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("pinroute_discovery_errors_total ")).unwrap().parse().unwrap();
    assert!(errors >= 1.0, "outage counted: {errors}");
    assert!(
        c.kube.request_log().iter().filter(|l| l.contains("watch=true")).count() >= 2,
        "the watch was re-established"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_pod_drains_with_its_stream_open() {
    let mut c = cluster().await;
    c.add_api_pod("api-1", &[]).unwrap();
    c.add_api_pod("api-2", &[]).unwrap();
    let p = proxy(&c, "").await;
    let (cookie, home) = pinned_client(&p).await;
    let stream = get(&p, "/api/stream?lines=6&interval_ms=250", Some(&cookie)).await;
    c.kube.mark_terminating(NS, &home);
    wait_state(&p, &home, "draining").await;
    let away = other(&["api-1", "api-2"], &home);
    for _ in 0..10 {
        assert_eq!(served_by(&get(&p, "/api/health", None).await), away);
    }
    assert_eq!(served_by(&get(&p, "/api/health", Some(&cookie)).await), home);
    assert_eq!(stream.text().await.unwrap().lines().count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_first_list() {
    let mut c = cluster().await;
    c.add_api_pod("api-1", &[]).unwrap();
    c.kube.set_down(true);
    let kubeconfig = c.kube.kubeconfig_path().to_string_lossy().into_owned();
    let p = ProxyProcess::spawn(Path::new(BIN), "", &c.api_route(""), &[("KUBECONFIG", kubeconfig.as_str())]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || async {
            http_client().get(p.admin_url("/healthz")).send().await.is_ok()
        })
        .await
    );
    assert!(!p.is_ready().await, "not ready before the first full list");
    c.kube.set_down(false);
    assert!(p.wait_ready(Duration::from_secs(15)).await, "ready after the list; log:\n{}", p.log());
    assert_eq!(get(&p, "/api/health", None).await.status(), 200);
}

/// Recreate strategy: the only pod is replaced; the new one is Ready 3 s later.
async fn recreate(hold: &str) -> (usize, usize, Vec<u16>) {
    let mut c = cluster().await;
    c.add_api_pod("api-v1", &[]).unwrap();
    let p = proxy(&c, hold).await;
    assert_eq!(get(&p, "/api/health", None).await.status(), 200);
    c.kube.delete_pod(NS, "api-v1");
    c.kill("api-v1");
    wait_state(&p, "api-v1", "gone").await;
    let sender = {
        let addr = p.addr;
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..4 {
                let r = pinroute_tests::client::get(addr, "/api/health", None).await.unwrap();
                statuses.push(r.status().as_u16());
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            statuses
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.add_api_pod("api-v2", &[]).unwrap();
    let statuses = sender.await.unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let unavailable = statuses.iter().filter(|s| **s == 503).count();
    (ok, unavailable, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_with_hold_for_turns_the_gap_into_a_pause() {
    let (ok, _, statuses) = recreate("hold_for = \"10s\"").await;
    assert_eq!(ok, 4, "held requests succeed once the new pod is Ready: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_without_hold_for_answers_503() {
    let (_, unavailable, statuses) = recreate("").await;
    assert!(unavailable >= 1, "without hold_for the gap is a 503: {statuses:?}");
}
