//! What a client connection's requests have in common, worked out once per
//! connection instead of once per request: the client's address as header
//! text, the metric handles of its last request, and when it was last
//! counted as a pinned client of its backend. A keep-alive client sends
//! request after request to the same backend with the same outcome, so each
//! of these is a hit nearly always, and a miss costs what it cost before.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pinroute_discovery::BackendEntry;
use prometheus::{Histogram, IntCounter};

use crate::metrics::Metrics;

/// A pinned client is counted again after this long: the admin view counts
/// clients of the last five minutes, so a second of lag changes nothing.
const PIN_NOTE_EVERY: Duration = Duration::from_secs(1);

/// Longest text of an IP address (an IPv6 address with an embedded IPv4).
const IP_TEXT_MAX: usize = 45;

/// Per-connection memo of the facts above.
#[derive(Debug, Default)]
pub struct ConnectionMemo {
    client: Option<(IpAddr, IpText)>,
    metrics: Option<MetricHandles>,
    pin_noted: Option<(Arc<str>, Instant)>,
}

/// An IP address as text, kept inline (no allocation per connection).
#[derive(Debug, Clone, Copy)]
struct IpText {
    bytes: [u8; IP_TEXT_MAX],
    len: u8,
}

impl IpText {
    fn new(ip: IpAddr) -> IpText {
        let mut text = IpText { bytes: [0; IP_TEXT_MAX], len: 0 };
        let _ = write!(text, "{}", ip.to_canonical());
        text
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = usize::from(self.len);
        let end = start + s.len();
        let slot = self.bytes.get_mut(start..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

/// The request metrics of one (route, backend, status) triple.
#[derive(Debug)]
struct MetricHandles {
    route: String,
    backend: Option<Arc<str>>,
    status: u16,
    requests: IntCounter,
    duration: Histogram,
}

impl ConnectionMemo {
    /// `client`'s address as the text of `X-Forwarded-For`.
    pub fn client_text(&mut self, client: IpAddr) -> &[u8] {
        if self.client.is_none_or(|(ip, _)| ip != client) {
            self.client = Some((client, IpText::new(client)));
        }
        match &self.client {
            Some((_, text)) => &text.bytes[..usize::from(text.len)],
            None => b"",
        }
    }

    /// Counts a request of `route` answered by `backend` with `status`
    /// (`code` its text) that took `elapsed`.
    pub fn count_request(
        &mut self,
        metrics: &Metrics,
        route: &str,
        backend: Option<&Arc<str>>,
        (status, code): (u16, &str),
        elapsed: Duration,
    ) {
        let same = self
            .metrics
            .as_ref()
            .is_some_and(|m| m.status == status && m.route == route && m.backend.as_deref() == backend.map(|b| &**b));
        if !same {
            let labels = [route, backend.map_or("-", |b| &**b), code];
            self.metrics = Some(MetricHandles {
                route: route.to_string(),
                backend: backend.cloned(),
                status,
                requests: metrics.requests.with_label_values(&labels),
                duration: metrics.duration.with_label_values(&[route]),
            });
        }
        if let Some(handles) = &self.metrics {
            handles.requests.inc();
            handles.duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Counts `client` as pinned to `entry`, at most once a second per
    /// connection: the count is a set of recent clients behind a lock.
    pub fn note_pinned(&mut self, entry: &BackendEntry, client: IpAddr, now: Instant) {
        let id = &entry.discovered.id;
        if self
            .pin_noted
            .as_ref()
            .is_some_and(|(noted, at)| Arc::ptr_eq(noted, id) && now.duration_since(*at) < PIN_NOTE_EVERY)
        {
            return;
        }
        entry.runtime.note_pinned_client(client, now);
        self.pin_noted = Some((id.clone(), now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_is_the_canonical_address() {
        let mut memo = ConnectionMemo::default();
        assert_eq!(memo.client_text("127.0.0.1".parse().unwrap()), b"127.0.0.1");
        assert_eq!(memo.client_text("::ffff:10.1.2.3".parse().unwrap()), b"10.1.2.3");
        let long: IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe".parse().unwrap();
        assert_eq!(memo.client_text(long), long.to_string().as_bytes());
    }

    #[test]
    fn a_new_label_set_gets_its_own_counter() {
        let metrics = Metrics::new().unwrap();
        let mut memo = ConnectionMemo::default();
        let b1: Arc<str> = Arc::from("b1");
        let b2: Arc<str> = Arc::from("b2");
        for _ in 0..3 {
            memo.count_request(&metrics, "/", Some(&b1), (200, "200"), Duration::from_millis(1));
        }
        memo.count_request(&metrics, "/", Some(&b2), (200, "200"), Duration::from_millis(1));
        memo.count_request(&metrics, "/", Some(&b2), (503, "503"), Duration::from_millis(1));
        memo.count_request(&metrics, "/x", None, (404, "404"), Duration::from_millis(1));
        let get = |labels: &[&str]| metrics.requests.with_label_values(labels).get();
        assert_eq!(get(&["/", "b1", "200"]), 3);
        assert_eq!(get(&["/", "b2", "200"]), 1);
        assert_eq!(get(&["/", "b2", "503"]), 1);
        assert_eq!(get(&["/x", "-", "404"]), 1);
        assert_eq!(metrics.duration.with_label_values(&["/"]).get_sample_count(), 5);
    }
}
