use std::sync::Arc;

use pinroute_discovery::{BackendEntry, DiscoveredBackend};

use super::*;

fn entry(name: &str, lifecycle: Lifecycle) -> BackendEntry {
    BackendEntry {
        discovered: DiscoveredBackend {
            identity: name.into(),
            id: name.into(),
            addr: "127.0.0.1:1".parse().unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
            lifecycle,
        },
        runtime: Arc::default(),
        gone_at: None,
        draining_since: None,
    }
}

fn table(backends: Vec<BackendEntry>) -> RouteBackends {
    RouteBackends { backends, loaded: true }
}

#[test]
fn lifecycle_changes_become_events() {
    let old = table(vec![entry("a", Lifecycle::Ready), entry("b", Lifecycle::Ready), entry("c", Lifecycle::Draining)]);
    let new = table(vec![
        entry("a", Lifecycle::Draining),
        entry("b", Lifecycle::Gone),
        entry("c", Lifecycle::Ready),
        entry("d", Lifecycle::Ready),
    ]);
    let kinds: Vec<(EventKind, String)> =
        table_changes(&[("/", &old)], &[("/", &new)]).into_iter().map(|c| (c.kind, c.backend)).collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Draining, "a".to_string()),
            (EventKind::Gone, "b".to_string()),
            (EventKind::Ready, "c".to_string()),
            (EventKind::Added, "d".to_string()),
        ]
    );
    assert!(table_changes(&[("/", &new)], &[("/", &new)]).is_empty(), "an unchanged table reports nothing");
}

#[test]
fn same_backend_in_another_route_is_a_new_one() {
    let old = table(vec![entry("a", Lifecycle::Ready)]);
    let new = table(vec![entry("a", Lifecycle::Ready)]);
    let changes = table_changes(&[("/", &old)], &[("/other", &new)]);
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].kind, changes[0].route.as_str()), (EventKind::Added, "/other"));
}

#[test]
fn ring_is_bounded_newest_first_and_coalesces_repeats() {
    let log = EventLog::new();
    for i in 0..CAPACITY + 10 {
        log.record(EventKind::ReloadApplied, None, None, format!("reload {i}"));
    }
    let recent = log.recent();
    assert_eq!(recent.len(), CAPACITY);
    assert_eq!(recent[0].detail, format!("reload {}", CAPACITY + 9));
    assert_eq!(recent[CAPACITY - 1].detail, "reload 10");

    log.record(EventKind::IngressRejected, None, None, "ns/x: bad path");
    log.record(EventKind::IngressRejected, None, None, "ns/y: bad host");
    log.record(EventKind::IngressRejected, None, None, "ns/x: bad path");
    let recent = log.recent();
    assert_eq!(recent.len(), CAPACITY, "a repeat takes no new slot");
    assert_eq!((recent[0].detail.as_str(), recent[0].repeats), ("ns/x: bad path", 2));
    assert_eq!((recent[1].detail.as_str(), recent[1].repeats), ("ns/y: bad host", 1));
    assert!(recent[0].seq > recent[1].seq, "a repeat moves the sequence on so the page sees it");
}

#[test]
fn runtime_changes_report_ejection_and_readmission_only() {
    assert_eq!(runtime_change(BackendState::Ready, BackendState::Down).map(|c| c.0), Some(EventKind::Ejected));
    assert_eq!(runtime_change(BackendState::Down, BackendState::Ready).map(|c| c.0), Some(EventKind::Readmitted));
    assert_eq!(runtime_change(BackendState::Ready, BackendState::Draining), None);
    assert_eq!(runtime_change(BackendState::Ready, BackendState::Ready), None);
}
