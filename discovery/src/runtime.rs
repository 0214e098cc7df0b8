//! Live, per-backend counters and observations. They outlive table
//! snapshots: a fold carries each backend's `Arc<BackendRuntime>` over to the
//! next table, so in-flight counts and health survive every republish.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long a client counts as "recently pinned" in the admin view.
const PINNED_WINDOW: Duration = Duration::from_secs(300);
/// Bound on remembered clients per backend (memory: ~48 bytes each).
const PINNED_MAX: usize = 10_000;
/// First passive ejection; doubles per consecutive failure.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest passive ejection.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the process epoch; never 0 (0 means "not ejected").
fn to_nanos(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// Passive health: consecutive connect failures and the ejection they earned.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Failures since the last success.
    pub consecutive_failures: u32,
    /// Ejected until then.
    pub down_until: Option<Instant>,
}

impl PassiveHealth {
    /// The state after one more failure at `now`: ejected for a backoff
    /// that doubles with each consecutive failure.
    pub fn after_failure(self, now: Instant) -> PassiveHealth {
        let consecutive_failures = self.consecutive_failures.saturating_add(1);
        let exponent = consecutive_failures.saturating_sub(1).min(16);
        let backoff = BACKOFF_BASE.saturating_mul(1u32 << exponent).min(BACKOFF_MAX);
        PassiveHealth { consecutive_failures, down_until: Some(now + backoff) }
    }
}

/// Counters and observations of one backend, shared by every request.
#[derive(Debug, Default)]
pub struct BackendRuntime {
    in_flight: AtomicUsize,
    streams: AtomicUsize,
    operator_drain: AtomicBool,
    active_failed: AtomicBool,
    // Passive health is read on every routing decision: kept lock-free.
    failures: AtomicU32,
    down_until: AtomicU64,
    draining_since: Mutex<Option<Instant>>,
    pinned: Mutex<HashMap<IpAddr, Instant>>,
}

/// Decrements `in_flight` when the request ends, however it ends.
#[derive(Debug)]
pub struct InFlightGuard {
    runtime: std::sync::Arc<BackendRuntime>,
    stream: bool,
}

impl InFlightGuard {
    /// Counts this request as an open stream too, until it ends.
    pub fn mark_stream(&mut self) {
        if !self.stream {
            self.stream = true;
            self.runtime.streams.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.runtime.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.stream {
            self.runtime.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl BackendRuntime {
    /// Starts counting one request.
    pub fn begin(self: &std::sync::Arc<Self>) -> InFlightGuard {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard { runtime: self.clone(), stream: false }
    }

    /// Requests under way, streams included.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Long-lived responses (chunked, upgraded) under way.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// Operator drain (admin API).
    pub fn set_operator_drain(&self, drained: bool) {
        self.operator_drain.store(drained, Ordering::Relaxed);
        if let Ok(mut since) = self.draining_since.lock() {
            *since = match (drained, *since) {
                (true, None) => Some(Instant::now()),
                (true, kept) => kept,
                (false, _) => None,
            };
        }
    }

    /// Whether an operator drained it.
    pub fn operator_drained(&self) -> bool {
        self.operator_drain.load(Ordering::Relaxed)
    }

    /// A connection attempt failed: eject with backoff.
    pub fn record_connect_failure(&self, now: Instant) {
        let next = self.passive().after_failure(now);
        self.failures.store(next.consecutive_failures, Ordering::Relaxed);
        self.down_until.store(next.down_until.map_or(0, to_nanos), Ordering::Relaxed);
    }

    /// A request got an answer: passive failures are forgiven.
    pub fn record_success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
            self.down_until.store(0, Ordering::Relaxed);
        }
    }

    /// The active health check's verdict; a pass also lifts passive ejection.
    pub fn record_health_check(&self, passed: bool) {
        self.active_failed.store(!passed, Ordering::Relaxed);
        if passed {
            self.record_success();
        }
    }

    /// Whether passive or active health checks currently eject it.
    pub fn is_down(&self, now: Instant) -> bool {
        if self.active_failed.load(Ordering::Relaxed) {
            return true;
        }
        let until = self.down_until.load(Ordering::Relaxed);
        until != 0 && until > to_nanos(now)
    }

    /// Passive health, for the admin view.
    pub fn passive(&self) -> PassiveHealth {
        let until = self.down_until.load(Ordering::Relaxed);
        PassiveHealth {
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            down_until: (until != 0).then(|| epoch() + std::time::Duration::from_nanos(until)),
        }
    }

    /// When an operator drained it, if drained.
    pub fn operator_drained_since(&self) -> Option<Instant> {
        self.draining_since.lock().ok().and_then(|s| *s)
    }

    /// Remembers that `client` was routed here by its cookie.
    pub fn note_pinned_client(&self, client: IpAddr, now: Instant) {
        let Ok(mut pinned) = self.pinned.lock() else {
            return;
        };
        if pinned.len() >= PINNED_MAX && !pinned.contains_key(&client) {
            pinned.retain(|_, seen| now.duration_since(*seen) < PINNED_WINDOW);
            if pinned.len() >= PINNED_MAX {
                return;
            }
        }
        pinned.insert(client, now);
    }

    /// Distinct clients routed here by cookie in the last five minutes.
    pub fn pinned_clients(&self, now: Instant) -> usize {
        self.pinned
            .lock()
            .map(|p| p.values().filter(|seen| now.duration_since(**seen) < PINNED_WINDOW).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn backoff_doubles_and_caps() {
        let now = Instant::now();
        let mut p = PassiveHealth::default();
        let mut seen = Vec::new();
        for _ in 0..8 {
            p = p.after_failure(now);
            seen.push(p.down_until.map(|u| u - now));
        }
        assert_eq!(seen[0], Some(Duration::from_secs(1)));
        assert_eq!(seen[1], Some(Duration::from_secs(2)));
        assert_eq!(seen[7], Some(BACKOFF_MAX));
    }

    #[test]
    fn guard_counts_requests_and_streams() {
        let rt = Arc::new(BackendRuntime::default());
        let mut a = rt.begin();
        let b = rt.begin();
        a.mark_stream();
        a.mark_stream();
        assert_eq!((rt.in_flight(), rt.streams()), (2, 1));
        drop(a);
        assert_eq!((rt.in_flight(), rt.streams()), (1, 0));
        drop(b);
        assert_eq!(rt.in_flight(), 0);
    }

    #[test]
    fn health_check_pass_lifts_passive_ejection() {
        let rt = BackendRuntime::default();
        let now = Instant::now();
        rt.record_connect_failure(now);
        assert!(rt.is_down(now));
        assert!(!rt.is_down(now + Duration::from_secs(2)));
        rt.record_connect_failure(now);
        rt.record_health_check(true);
        assert!(!rt.is_down(now));
        rt.record_health_check(false);
        assert!(rt.is_down(now + Duration::from_secs(60)));
    }
}
