use k8s_openapi::api::core::v1::Pod;
use pinroute_config::{KubernetesSource, LabelRequirement, PortRef};

use super::pod_to_backend;
use crate::backend::Lifecycle;

fn source(port: PortRef) -> KubernetesSource {
    KubernetesSource {
        namespace: "skypilot".into(),
        selector: "app=skypilot-api".into(),
        requirements: vec![LabelRequirement::Equals("app".into(), "skypilot-api".into())],
        ready_key: "skypilot.co/ready".into(),
        ready_value: "true".into(),
        port,
    }
}

fn pod(labels: serde_json::Value, ready: &str, ip: Option<&str>, deleting: bool) -> Pod {
    let mut meta = serde_json::json!({"name": "api-0", "namespace": "skypilot", "uid": "uid-0", "labels": labels});
    if deleting {
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
    }
    let mut status = serde_json::json!({"phase": "Running", "conditions": [{"type": "Ready", "status": ready}]});
    if let Some(ip) = ip {
        status["podIP"] = ip.into();
    }
    serde_json::from_value(serde_json::json!({
        "metadata": meta,
        "spec": {"containers": [{"name": "api", "ports": [{"name": "http", "containerPort": 46580}]}]},
        "status": status,
    }))
    .unwrap()
}

fn ready_labels() -> serde_json::Value {
    serde_json::json!({"app": "skypilot-api", "skypilot.co/ready": "true"})
}

#[test]
fn ready_pod_is_ready_with_uid_identity() {
    let b =
        pod_to_backend(&pod(ready_labels(), "True", Some("10.0.0.5"), false), &source(PortRef::Number(46580))).unwrap();
    assert_eq!(b.lifecycle, Lifecycle::Ready);
    assert_eq!(&*b.identity, "uid-0");
    assert_eq!(&*b.id, "skypilot/api-0");
    assert_eq!(b.addr, "10.0.0.5:46580".parse().unwrap());
}

#[test]
fn cordoned_or_terminating_pod_drains() {
    let cordoned = serde_json::json!({"app": "skypilot-api"});
    let s = source(PortRef::Number(1));
    assert_eq!(
        pod_to_backend(&pod(cordoned, "True", Some("10.0.0.5"), false), &s).unwrap().lifecycle,
        Lifecycle::Draining
    );
    assert_eq!(
        pod_to_backend(&pod(ready_labels(), "True", Some("10.0.0.5"), true), &s).unwrap().lifecycle,
        Lifecycle::Draining
    );
    let wrong_value = serde_json::json!({"app": "skypilot-api", "skypilot.co/ready": "false"});
    assert_eq!(
        pod_to_backend(&pod(wrong_value, "True", Some("10.0.0.5"), false), &s).unwrap().lifecycle,
        Lifecycle::Draining
    );
}

#[test]
fn unready_pod_is_down_and_ipless_pod_is_unroutable() {
    let s = source(PortRef::Number(1));
    assert_eq!(
        pod_to_backend(&pod(ready_labels(), "False", Some("10.0.0.5"), false), &s).unwrap().lifecycle,
        Lifecycle::NotReady
    );
    assert!(pod_to_backend(&pod(ready_labels(), "True", None, false), &s).is_none());
}

#[test]
fn named_port_is_resolved_from_the_container() {
    let b =
        pod_to_backend(&pod(ready_labels(), "True", Some("10.0.0.5"), false), &source(PortRef::Name("http".into())))
            .unwrap();
    assert_eq!(b.addr.port(), 46580);
    assert!(pod_to_backend(
        &pod(ready_labels(), "True", Some("10.0.0.5"), false),
        &source(PortRef::Name("grpc".into()))
    )
    .is_none());
}
