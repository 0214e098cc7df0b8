//! "Is this backend empty?", answered once for both the preStop hook
//! (`/admin/drain-wait`) and the dashboard, so the two never disagree.

use std::time::Instant;

use pinroute_discovery::BackendEntry;
use serde::Serialize;

/// What a backend still holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DrainProgress {
    /// Requests under way, streams included.
    pub in_flight: usize,
    /// Of those, long-lived responses.
    pub streams: usize,
    /// Clients routed here by cookie in the last five minutes. They are
    /// re-pinned once it is gone, so they do not keep it from being empty.
    pub pinned_clients: usize,
    /// Nothing under way: deleting it now cuts nothing.
    pub empty: bool,
}

impl DrainProgress {
    /// Adds another entry of the same backend (it may serve several routes).
    pub fn merge(self, other: DrainProgress) -> DrainProgress {
        let in_flight = self.in_flight + other.in_flight;
        DrainProgress {
            in_flight,
            streams: self.streams + other.streams,
            pinned_clients: self.pinned_clients + other.pinned_clients,
            empty: in_flight == 0,
        }
    }
}

/// What `entry` still holds at `now`.
pub fn drain_progress(entry: &BackendEntry, now: Instant) -> DrainProgress {
    let in_flight = entry.runtime.in_flight();
    DrainProgress {
        in_flight,
        streams: entry.runtime.streams(),
        pinned_clients: entry.runtime.pinned_clients(now),
        empty: in_flight == 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use pinroute_discovery::{BackendRuntime, DiscoveredBackend, Lifecycle};

    use super::*;

    #[test]
    fn empty_only_when_nothing_is_under_way() {
        let runtime = Arc::new(BackendRuntime::default());
        let entry = BackendEntry {
            discovered: DiscoveredBackend {
                identity: "a".into(),
                id: "a".into(),
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
                lifecycle: Lifecycle::Draining,
            },
            runtime: runtime.clone(),
            gone_at: None,
            draining_since: None,
        };
        let now = Instant::now();
        runtime.note_pinned_client(std::net::Ipv4Addr::LOCALHOST.into(), now);
        assert!(drain_progress(&entry, now).empty, "a pinned client alone does not hold a backend");
        let mut stream = runtime.begin();
        stream.mark_stream();
        let busy = drain_progress(&entry, now);
        assert_eq!((busy.in_flight, busy.streams, busy.pinned_clients, busy.empty), (1, 1, 1, false));
        assert!(!busy.merge(DrainProgress { empty: true, ..DrainProgress::default() }).empty);
        drop(stream);
        assert!(drain_progress(&entry, now).empty);
    }
}
