//! Protocol tests for the fake Kubernetes API server's ingress-controller
//! surface, driven with plain `reqwest` the way kube-rs drives it: Ingresses,
//! Services and Secrets listed and watched like Pods, Ingress status written
//! through its subresource, Events posted and patched.

use anyhow::Context;
use pinroute_tests::fake_kube::{FakeKube, FakePod, Kind};
use pinroute_tests::watch_reader::{get_json, rv_of, url, WatchReader as Watch, WAIT};
use serde_json::{json, Value};

const INGRESSES: &str = "/apis/networking.k8s.io/v1/namespaces/skypilot/ingresses";

/// Sends `body` with `method` and `content_type`; returns the status and JSON answer.
async fn send(
    fk: &FakeKube,
    method: reqwest::Method,
    path: &str,
    content_type: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let request = reqwest::Client::new()
        .request(method, url(fk, path))
        .header("content-type", content_type)
        .body(body.to_string());
    let resp = tokio::time::timeout(WAIT, request.send()).await??;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

fn names(list: &Value) -> Vec<String> {
    let items = list["items"].as_array().cloned().unwrap_or_default();
    items.iter().filter_map(|i| i["metadata"]["name"].as_str()).map(str::to_string).collect()
}

fn ingress(ns: &str, name: &str, class: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": {"ingressClassName": class, "rules": [{"http": {"paths": [{
            "path": "/", "pathType": "Prefix",
            "backend": {"service": {"name": "skypilot-api-service", "port": {"number": 80}}},
        }]}}]},
    })
}

/// Ingresses a (class pinroute) and b (class nginx) in skypilot, c in other;
/// a Service and a Secret in skypilot; one pod, to show kinds stay apart.
async fn fixture() -> anyhow::Result<FakeKube> {
    let fk = FakeKube::start().await?;
    fk.add_object(Kind::Ingress, ingress("skypilot", "a", "pinroute"));
    fk.add_object(Kind::Ingress, ingress("skypilot", "b", "nginx"));
    fk.add_object(Kind::Ingress, ingress("other", "c", "pinroute"));
    fk.add_object(
        Kind::Service,
        json!({"metadata": {"name": "skypilot-api-service", "namespace": "skypilot"},
               "spec": {"ports": [{"port": 80, "targetPort": 46580}],
                        "selector": {"app": "skypilot-api", "skypilot.co/ready": "true"}}}),
    );
    fk.add_object(
        Kind::Secret,
        json!({"metadata": {"name": "skypilot-basic-auth", "namespace": "skypilot"}, "type": "Opaque",
               "data": {"auth": "c2t5cGlsb3Q6eA=="}}),
    );
    fk.add_pod(FakePod::new("skypilot", "api-0", &[("app", "skypilot-api")], "127.0.0.2"));
    Ok(fk)
}

#[tokio::test]
async fn ingresses_services_and_secrets_list_like_pods() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let (code, list) = get_json(&fk, &format!("{INGRESSES}?limit=500")).await?;
    assert_eq!(code, 200);
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("IngressList"), Some("networking.k8s.io/v1"))
    );
    assert_eq!(names(&list), ["a", "b"]);
    assert_eq!(rv_of(&list)?, 6, "one rv counter for all kinds");
    let a = &list["items"][0];
    assert_eq!((a["kind"].as_str(), a["apiVersion"].as_str()), (Some("Ingress"), Some("networking.k8s.io/v1")));
    assert!(a["metadata"]["uid"].is_string() && a["metadata"]["creationTimestamp"].is_string());
    assert_eq!(rv_of(a)?, 1);

    let (_, all) = get_json(&fk, "/apis/networking.k8s.io/v1/ingresses").await?;
    assert_eq!(names(&all), ["c", "a", "b"], "by namespace, then name");
    let (_, by_label) = get_json(&fk, "/apis/networking.k8s.io/v1/ingresses?labelSelector=app%3Da").await?;
    assert_eq!(names(&by_label), ["a"]);
    let (_, by_field) = get_json(&fk, &format!("{INGRESSES}?fieldSelector=metadata.name%3Db")).await?;
    assert_eq!(names(&by_field), ["b"]);

    let (_, services) = get_json(&fk, "/api/v1/namespaces/skypilot/services").await?;
    assert_eq!(
        (services["kind"].as_str(), names(&services)),
        (Some("ServiceList"), vec!["skypilot-api-service".into()])
    );
    let (_, secrets) = get_json(&fk, "/api/v1/secrets").await?;
    assert_eq!(secrets["items"][0]["data"]["auth"], "c2t5cGlsb3Q6eA==");
    let (_, pods) = get_json(&fk, "/api/v1/pods").await?;
    assert_eq!(names(&pods), ["api-0"]);

    let (code, one) = get_json(&fk, &format!("{INGRESSES}/a")).await?;
    assert_eq!((code, one["spec"]["ingressClassName"].as_str()), (200, Some("pinroute")));
    let (code, missing) = get_json(&fk, &format!("{INGRESSES}/zz")).await?;
    assert_eq!((code, missing["reason"].as_str()), (404, Some("NotFound")));
    // Not an ingress field: refused as the real server refuses it.
    let (code, _) = get_json(&fk, &format!("{INGRESSES}?fieldSelector=status.phase%3DRunning")).await?;
    assert_eq!(code, 400);
    Ok(())
}

#[tokio::test]
async fn ingress_watch_sees_only_ingresses() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let (_, list) = get_json(&fk, INGRESSES).await?;
    let rv = rv_of(&list)?;
    let q = format!("watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={rv}");
    let mut w = Watch::open(&fk, &format!("{INGRESSES}?{q}")).await?;
    let mut services = Watch::open(&fk, &format!("/api/v1/services?{q}")).await?;

    fk.set_ready("skypilot", "api-0", false);
    fk.update_object(Kind::Ingress, ingress("skypilot", "a", "nginx"));
    let m = w.expect("MODIFIED").await?;
    assert_eq!((m["spec"]["ingressClassName"].as_str(), rv_of(&m)?), (Some("nginx"), rv + 2));
    fk.add_object(Kind::Ingress, ingress("skypilot", "d", "pinroute"));
    assert_eq!(w.expect("ADDED").await?["metadata"]["name"], "d");
    fk.delete_object(Kind::Ingress, "skypilot", "b");
    assert_eq!(w.expect("DELETED").await?["metadata"]["name"], "b");
    fk.send_bookmark();
    let bm = w.expect("BOOKMARK").await?;
    assert_eq!((bm["kind"].as_str(), bm["apiVersion"].as_str()), (Some("Ingress"), Some("networking.k8s.io/v1")));
    // Other namespaces and kinds never reach it; the Service watch saw none of this.
    fk.add_object(Kind::Ingress, ingress("other", "e", "pinroute"));
    w.expect_quiet().await?;
    services.expect("BOOKMARK").await?;
    services.expect_quiet().await?;

    // History replay and the initial-events stream work per kind too.
    let mut replay = Watch::open(&fk, &format!("{INGRESSES}?watch=true&resourceVersion={rv}")).await?;
    assert_eq!(replay.expect("MODIFIED").await?["metadata"]["name"], "a");
    assert_eq!(replay.expect("ADDED").await?["metadata"]["name"], "d");
    assert_eq!(replay.expect("DELETED").await?["metadata"]["name"], "b");
    let initial = "watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let mut stream = Watch::open(&fk, &format!("/api/v1/namespaces/skypilot/secrets?{initial}")).await?;
    assert_eq!(stream.expect("ADDED").await?["metadata"]["name"], "skypilot-basic-auth");
    let end = stream.expect("BOOKMARK").await?;
    assert_eq!(
        (end["kind"].as_str(), end["metadata"]["annotations"]["k8s.io/initial-events-end"].as_str()),
        (Some("Secret"), Some("true"))
    );

    fk.expire_history();
    let mut old = Watch::open(&fk, &format!("{INGRESSES}?watch=true&resourceVersion={rv}")).await?;
    assert_eq!(old.expect("ERROR").await?["code"], 410);
    Ok(())
}

#[tokio::test]
async fn ingress_status_put_and_patch() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let status_path = format!("{INGRESSES}/a/status");
    let (_, current) = get_json(&fk, &format!("{INGRESSES}/a")).await?;
    let (_, list) = get_json(&fk, INGRESSES).await?;
    let rv = rv_of(&list)?;
    let mut w = Watch::open(&fk, &format!("{INGRESSES}?watch=true&resourceVersion={rv}")).await?;

    // PUT: the whole object, only its status is taken.
    let mut put = current.clone();
    put["status"] = json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}});
    put["spec"]["ingressClassName"] = json!("ignored");
    let (code, answer) = send(&fk, reqwest::Method::PUT, &status_path, "application/json", &put).await?;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.7");
    assert_eq!(answer["spec"]["ingressClassName"], "pinroute", "the status subresource ignores spec");
    assert!(rv_of(&answer)? > rv);
    assert_eq!(fk.ingress_status("skypilot", "a"), Some(json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.7"}]}})));
    assert_eq!(w.expect("MODIFIED").await?["status"]["loadBalancer"]["ingress"][0]["ip"], "10.0.0.7");

    // A stale resourceVersion conflicts, as on a real server.
    let (code, conflict) = send(&fk, reqwest::Method::PUT, &status_path, "application/json", &put).await?;
    assert_eq!((code, conflict["reason"].as_str()), (409, Some("Conflict")));

    // PATCH (merge, as kube-rs's Patch::Merge; apply patches are JSON too).
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"hostname": "sky.example.com"}]}}});
    for content_type in ["application/merge-patch+json", "application/apply-patch+yaml"] {
        let (code, answer) = send(&fk, reqwest::Method::PATCH, &status_path, content_type, &patch).await?;
        assert_eq!(
            (code, answer["status"]["loadBalancer"]["ingress"][0]["hostname"].as_str()),
            (200, Some("sky.example.com"))
        );
        w.expect("MODIFIED").await?;
    }
    let (code, _) = send(&fk, reqwest::Method::PATCH, &status_path, "application/json-patch+json", &json!([])).await?;
    assert_eq!(code, 415);
    let (code, _) =
        send(&fk, reqwest::Method::PATCH, &format!("{INGRESSES}/zz/status"), "application/merge-patch+json", &patch)
            .await?;
    assert_eq!(code, 404);
    assert_eq!(fk.ingress_status("skypilot", "zz"), None);

    // Everything else stays read-only.
    let (code, _) = send(&fk, reqwest::Method::PUT, &format!("{INGRESSES}/a"), "application/json", &current).await?;
    assert_eq!(code, 405);
    // update_object keeps a written status when the new object has none.
    fk.update_object(Kind::Ingress, ingress("skypilot", "a", "pinroute"));
    assert!(fk
        .ingress_status("skypilot", "a")
        .is_some_and(|s| s["loadBalancer"]["ingress"][0]["hostname"] == "sky.example.com"));
    Ok(())
}

#[tokio::test]
async fn events_are_recorded() -> anyhow::Result<()> {
    let fk = fixture().await?;
    let core = json!({
        "metadata": {"generateName": "a."},
        "involvedObject": {"kind": "Ingress", "namespace": "skypilot", "name": "a"},
        "reason": "Rejected", "message": "Service skypilot/x not found", "type": "Warning",
    });
    let (code, created) =
        send(&fk, reqwest::Method::POST, "/api/v1/namespaces/skypilot/events", "application/json", &core).await?;
    assert_eq!(code, 201, "{created}");
    let name = created["metadata"]["name"].as_str().context("generated name")?.to_string();
    assert!(name.starts_with("a."), "{name}");
    assert_eq!(created["metadata"]["namespace"], "skypilot");

    // kube-runtime's Recorder: events.k8s.io/v1 POST, then PATCH for a repeat.
    let path = "/apis/events.k8s.io/v1/namespaces/skypilot/events";
    let recorded = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                          "metadata": {"name": "a.17f0", "namespace": "skypilot"},
                          "regarding": {"kind": "Ingress", "name": "a"}, "reason": "Sync", "note": "served"});
    let (code, _) = send(&fk, reqwest::Method::POST, path, "application/json", &recorded).await?;
    assert_eq!(code, 201);
    let (code, _) = send(&fk, reqwest::Method::POST, path, "application/json", &recorded).await?;
    assert_eq!(code, 409, "names are unique");
    let series = json!({"series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:01.000000Z"}});
    let (code, patched) =
        send(&fk, reqwest::Method::PATCH, &format!("{path}/a.17f0"), "application/merge-patch+json", &series).await?;
    assert_eq!((code, patched["series"]["count"].as_u64(), patched["note"].as_str()), (200, Some(2), Some("served")));

    let events = fk.events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["reason"], "Rejected");
    assert_eq!(events[1]["series"]["count"], 2);
    let (_, list) = get_json(&fk, "/api/v1/namespaces/skypilot/events").await?;
    assert_eq!(names(&list), [name, "a.17f0".to_string()]);
    // Events are not watched objects: the Ingress list is untouched.
    let (_, ingresses) = get_json(&fk, INGRESSES).await?;
    assert_eq!(names(&ingresses), ["a", "b"]);
    assert_eq!(fk.objects(Kind::Ingress).len(), 3);
    Ok(())
}
