//! State shared by every request, the admin API and background tasks: the
//! published snapshot and the metrics. Readers never wait on writers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use arc_swap::ArcSwap;
use pinroute_config::Config;
use pinroute_discovery::{Publisher, RoutingTable};
use tokio::sync::Notify;

use crate::cookie::PinKey;
use crate::metrics::Metrics;
use crate::snapshot::{PinCache, Snapshot};

/// The proxy's shared state.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pins: PinCache,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Woken on every table publish (held requests wait on it).
    pub table_changed: Notify,
    publisher: OnceLock<Arc<Publisher>>,
    /// Process start.
    pub started: Instant,
    held: Vec<AtomicUsize>,
}

/// One request waiting for a Ready backend; released on drop.
#[derive(Debug)]
pub struct HoldPermit<'a> {
    counter: &'a AtomicUsize,
}

impl Drop for HoldPermit<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// State for `config` with an empty, unloaded table, and its publisher.
    pub fn new(config: Arc<Config>, key: PinKey, metrics: Metrics) -> Arc<Shared> {
        let pins = PinCache::new(key);
        let table = Arc::new(RoutingTable::empty(config.routes.len()));
        let snapshot = Snapshot::build(config.clone(), table, &pins);
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            pins,
            metrics,
            table_changed: Notify::new(),
            publisher: OnceLock::new(),
            started: Instant::now(),
            held: (0..config.routes.len())
                .map(|_| AtomicUsize::new(0))
                .collect(),
        });
        let weak = Arc::downgrade(&shared);
        let publisher = Publisher::new(
            config.routes.len(),
            Box::new(move |table| {
                if let Some(shared) = weak.upgrade() {
                    shared.on_table(table);
                }
            }),
        );
        let _ = shared.publisher.set(publisher);
        shared
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The cookie key.
    pub fn key(&self) -> &PinKey {
        self.pins.key()
    }

    /// The single writer of the routing table.
    pub fn publisher(&self) -> Option<&Arc<Publisher>> {
        self.publisher.get()
    }

    /// Admits one more held request on `route` unless `max` already wait;
    /// past the bound a request gets the 503 at once.
    pub fn try_hold(&self, route: usize, max: usize) -> Option<HoldPermit<'_>> {
        let counter = self.held.get(route)?;
        let admitted = counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        admitted.then_some(HoldPermit { counter })
    }

    fn on_table(&self, table: &Arc<RoutingTable>) {
        let config = self.snapshot.load().config.clone();
        self.snapshot
            .store(Arc::new(Snapshot::build(config, table.clone(), &self.pins)));
        self.table_changed.notify_waiters();
    }
}
