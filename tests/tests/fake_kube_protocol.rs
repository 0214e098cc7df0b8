//! Protocol tests for the fake Kubernetes API server, driven with plain
//! `reqwest` the way kube-rs's watcher drives it: list, then watch from the
//! list's resourceVersion with bookmarks and a server-side timeout.

use std::time::Duration;

use anyhow::ensure;
use pinroute_tests::fake_kube::{FakeKube, FakePod};
use pinroute_tests::watch_reader::{get_json, rv_of, url, WatchReader as Watch, WAIT};
use serde_json::Value;

/// Names of the items of a PodList, in server order.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            let names = items.iter().filter_map(|p| p["metadata"]["name"].as_str());
            names.map(str::to_string).collect()
        })
        .unwrap_or_default()
}

/// a (app=api, pool=blue), b (app=api), c (app=other) in default; d (app=api) in other.
async fn fixture() -> anyhow::Result<FakeKube> {
    let fk = FakeKube::start().await?;
    fk.add_pod(FakePod::new("default", "a", &[("app", "api"), ("pool", "blue")], "127.0.0.2"));
    fk.add_pod(FakePod::new("default", "b", &[("app", "api")], "127.0.0.3"));
    fk.add_pod(FakePod::new("default", "c", &[("app", "other")], "127.0.0.4"));
    fk.add_pod(FakePod::new("other", "d", &[("app", "api")], "127.0.0.5"));
    Ok(fk)
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test]
async fn list_filters_by_label_selector_and_reports_rv() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let (code, list) = get_json(&fk, &format!("{PODS}?labelSelector=app%3Dapi&limit=500")).await?;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(names(&list), ["a", "b"]);
    assert_eq!(rv_of(&list)?, 4, "one rv bump per add");

    let a = &list["items"][0];
    assert_eq!(a["metadata"]["labels"]["pool"], "blue");
    assert_eq!(a["status"]["podIP"], "127.0.0.2");
    assert_eq!(a["status"]["conditions"][0]["status"], "True");
    assert_eq!(a["spec"]["containers"][0]["ports"][0]["containerPort"], 46580);
    assert_eq!(rv_of(a)?, 1);

    let cases = [
        ("app%20in%20(api,other),!pool", vec!["b", "c"]),
        ("app!=api", vec!["c"]),
        ("app%3D%3Dapi,pool", vec!["a"]),
        ("pool%20notin%20(blue)", vec!["b", "c"]),
    ];
    for (sel, want) in cases {
        let (_, list) = get_json(&fk, &format!("{PODS}?labelSelector={sel}")).await?;
        assert_eq!(names(&list), want, "selector {sel}");
    }
    let (_, all) = get_json(&fk, "/api/v1/pods?labelSelector=app%3Dapi").await?;
    assert_eq!(names(&all), ["a", "b", "d"]);
    let (_, by_name) = get_json(&fk, &format!("{PODS}?fieldSelector=metadata.name%3Dc")).await?;
    assert_eq!(names(&by_name), ["c"]);

    let (code, bad) = get_json(&fk, &format!("{PODS}?labelSelector=app%20in%20api")).await?;
    assert_eq!((code, bad["kind"].as_str()), (400, Some("Status")));
    Ok(())
}

#[tokio::test]
async fn watch_from_list_rv_sees_modified_and_selector_deleted() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let (_, list) = get_json(&fk, &format!("{PODS}?labelSelector=app%3Dapi")).await?;
    let rv = rv_of(&list)?;
    let q = "watch=true&timeoutSeconds=290&allowWatchBookmarks=true";
    let mut narrow =
        Watch::open(&fk, &format!("{PODS}?{q}&labelSelector=app%3Dapi,pool%3Dblue&resourceVersion={rv}")).await?;
    let mut wide = Watch::open(&fk, &format!("{PODS}?{q}&labelSelector=app%3Dapi&resourceVersion={rv}")).await?;
    assert_eq!(fk.open_watches(), 2);

    fk.remove_label("default", "a", "pool");
    let m = wide.expect("MODIFIED").await?;
    assert_eq!(m["metadata"]["name"], "a");
    assert!(m["metadata"]["labels"].get("pool").is_none());
    assert_eq!(rv_of(&m)?, rv + 1);
    // It left the narrow selector: DELETED, carrying the new rv.
    let d = narrow.expect("DELETED").await?;
    assert_eq!((d["metadata"]["name"].as_str(), rv_of(&d)?), (Some("a"), rv + 1));

    fk.set_labels("default", "a", &[("app", "api"), ("pool", "blue")]);
    assert_eq!(narrow.expect("ADDED").await?["metadata"]["name"], "a");
    wide.expect("MODIFIED").await?;

    fk.set_ready("default", "b", false);
    let b = wide.expect("MODIFIED").await?;
    assert_eq!(b["status"]["conditions"][0]["status"], "False");
    fk.set_pod_ip("default", "b", None);
    assert!(wide.expect("MODIFIED").await?["status"].get("podIP").is_none());
    fk.mark_terminating("default", "b");
    let t = wide.expect("MODIFIED").await?;
    assert!(t["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(t["metadata"]["deletionGracePeriodSeconds"], 30);
    fk.delete_pod("default", "b");
    let gone = wide.expect("DELETED").await?;
    assert_eq!((gone["metadata"]["name"].as_str(), rv_of(&gone)?), (Some("b"), rv + 6));
    // Changes outside its selector never reach the narrow watch.
    narrow.expect_quiet().await?;
    Ok(())
}

#[tokio::test]
async fn watch_replays_history_after_rv() -> anyhow::Result<()> {
    let fk = fixture().await?;
    fk.remove_label("default", "c", "app"); // rv 5
    fk.delete_pod("default", "a"); // rv 6
    let mut w = Watch::open(&fk, &format!("{PODS}?watch=1&resourceVersion=4")).await?;
    assert_eq!(rv_of(&w.expect("MODIFIED").await?)?, 5);
    assert_eq!(rv_of(&w.expect("DELETED").await?)?, 6);
    w.expect_quiet().await?;

    // rv 0 / absent: synthetic ADDED for the current state, then live events.
    let mut w0 = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=0")).await?;
    assert_eq!(w0.expect("ADDED").await?["metadata"]["name"], "b");
    assert_eq!(w0.expect("ADDED").await?["metadata"]["name"], "c");
    w0.expect_quiet().await?;
    fk.add_pod(FakePod::new("default", "e", &[], "127.0.0.9"));
    assert_eq!(w0.expect("ADDED").await?["metadata"]["name"], "e");
    Ok(())
}

#[tokio::test]
async fn expired_history_yields_410_error_event() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let mut open = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4")).await?;
    fk.set_ready("default", "a", false);
    open.expect("MODIFIED").await?;
    fk.expire_history();
    ensure!(open.next().await?.is_none(), "expire_history must end open watches");

    let mut old = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4")).await?;
    let status = old.expect("ERROR").await?;
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["message"], "too old resource version: 4 (6)");
    ensure!(old.next().await?.is_none(), "stream must end after the 410");

    // Even a client that saw every change (rv 5) must re-list...
    let mut seen_all = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=5")).await?;
    assert_eq!(seen_all.expect("ERROR").await?["code"], 410);
    // ...and re-listing gives an rv that is watchable again.
    let (_, list) = get_json(&fk, PODS).await?;
    assert_eq!(rv_of(&list)?, 6);
    let mut fresh = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion={}", rv_of(&list)?)).await?;
    fk.set_ready("default", "a", true);
    assert_eq!(rv_of(&fresh.expect("MODIFIED").await?)?, 7);
    Ok(())
}

#[tokio::test]
async fn bookmarks_only_when_allowed() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let mut with = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4&allowWatchBookmarks=true")).await?;
    let mut without = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4")).await?;
    fk.send_bookmark();
    let bm = with.expect("BOOKMARK").await?;
    assert_eq!((bm["kind"].as_str(), rv_of(&bm)?), (Some("Pod"), 4));
    without.expect_quiet().await?;

    // Streaming list: ADDED per object, then the initial-events-end bookmark.
    let q = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let mut stream = Watch::open(&fk, &format!("{PODS}?{q}&resourceVersion=0&labelSelector=app%3Dapi")).await?;
    assert_eq!(stream.expect("ADDED").await?["metadata"]["name"], "a");
    assert_eq!(stream.expect("ADDED").await?["metadata"]["name"], "b");
    let end = stream.expect("BOOKMARK").await?;
    assert_eq!(end["metadata"]["annotations"]["k8s.io/initial-events-end"], "true");
    assert_eq!(rv_of(&end)?, 4);
    Ok(())
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let mut w = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4&timeoutSeconds=1")).await?;
    ensure!(w.next().await?.is_none(), "stream must end after timeoutSeconds");
    // The server notices the ended stream and forgets it.
    tokio::time::timeout(WAIT, async {
        while fk.open_watches() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn down_fails_requests_and_cuts_watches() -> anyhow::Result<()> {
    let fk = fixture().await?;
    // A pooled keep-alive connection must die with the outage too.
    let client = reqwest::Client::new();
    let ok = tokio::time::timeout(WAIT, client.get(url(&fk, PODS)).send()).await??;
    assert_eq!(ok.status(), 200);
    ok.bytes().await?;
    let mut w = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4")).await?;
    assert_eq!(fk.open_watches(), 1);

    fk.set_down(true);
    ensure!(w.next().await?.is_none(), "set_down must end open watches");
    let logged = fk.request_log().len();
    let pooled = tokio::time::timeout(WAIT, client.get(url(&fk, PODS)).send()).await?;
    ensure!(pooled.is_err(), "pooled connection answered while down: {pooled:?}");
    let fresh = tokio::time::timeout(WAIT, reqwest::get(url(&fk, &format!("{PODS}?watch=true")))).await?;
    ensure!(fresh.is_err(), "new connection answered while down: {fresh:?}");
    assert_eq!(fk.request_log().len(), logged, "no request may get through");

    fk.set_down(false);
    let back = tokio::time::timeout(WAIT, client.get(url(&fk, PODS)).send()).await??;
    assert_eq!(back.status(), 200);
    let (code, list) = get_json(&fk, PODS).await?;
    assert_eq!((code, names(&list)), (200, vec!["a".to_string(), "b".into(), "c".into()]));
    let mut again = Watch::open(&fk, &format!("{PODS}?watch=true&resourceVersion=4")).await?;
    fk.delete_pod("default", "c");
    assert_eq!(again.expect("DELETED").await?["metadata"]["name"], "c");
    Ok(())
}

#[tokio::test]
async fn misc_endpoints_log_and_kubeconfig() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let (code, nf) = get_json(&fk, "/api/v1/namespaces/default/configmaps").await?;
    assert_eq!((code, nf["kind"].as_str(), nf["code"].as_u64()), (404, Some("Status"), Some(404)));
    let (code, version) = get_json(&fk, "/version").await?;
    assert_eq!((code, version["major"].as_str()), (200, Some("1")));
    let (code, pod) = get_json(&fk, &format!("{PODS}/b")).await?;
    assert_eq!((code, pod["metadata"]["uid"].is_string()), (200, true));

    let log = fk.request_log();
    assert_eq!(
        log,
        ["GET /api/v1/namespaces/default/configmaps", "GET /version", "GET /api/v1/namespaces/default/pods/b"]
    );

    let kubeconfig = std::fs::read_to_string(fk.kubeconfig_path())?;
    assert!(kubeconfig.contains(&format!("server: http://127.0.0.1:{}", fk.addr().port())));
    assert!(kubeconfig.contains("current-context: fake"));
    assert!(kubeconfig.contains("namespace: default"));
    let (a, b) = (FakePod::new("x", "p", &[], "1.1.1.1"), FakePod::new("x", "p", &[], "1.1.1.1"));
    assert_ne!(a.uid, b.uid, "uids must be unique");
    Ok(())
}
