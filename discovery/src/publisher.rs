//! Serialises events from every source through the fold and publishes each
//! new table: readers `load()` a snapshot, never waiting on a writer.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::fold::{apply, DiscoveryEvent, RoutingTable};

/// Called with every table published, on the publishing thread; keep it cheap.
pub type TableListener = Box<dyn Fn(&Arc<RoutingTable>) + Send + Sync>;

/// The single writer of the routing table.
pub struct Publisher {
    current: ArcSwap<RoutingTable>,
    // Folds must not interleave (each builds on the previous table); the lock
    // is never held across an await.
    write: Mutex<()>,
    listener: TableListener,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("generation", &self.current.load().generation).finish()
    }
}

impl Publisher {
    /// Starts from an empty, unloaded table of `routes` routes.
    pub fn new(routes: usize, listener: TableListener) -> Arc<Publisher> {
        let table = Arc::new(RoutingTable::empty(routes));
        listener(&table);
        Arc::new(Publisher { current: ArcSwap::new(table), write: Mutex::new(()), listener })
    }

    /// Folds one event and publishes the result.
    pub fn publish(&self, event: DiscoveryEvent) {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let next = Arc::new(apply(&self.current.load(), event, Instant::now()));
        self.current.store(next.clone());
        (self.listener)(&next);
    }

    /// Reshapes the table for a new config (see [`DiscoveryEvent::Reshape`]),
    /// running `switch` under the writer lock first so that whoever builds
    /// views from published tables sees the new config and the reshaped table
    /// together, never one without the other.
    pub fn reshape(&self, from: Vec<Option<usize>>, switch: impl FnOnce()) {
        let _write = self.write.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        switch();
        let next = Arc::new(apply(&self.current.load(), DiscoveryEvent::Reshape { from }, Instant::now()));
        self.current.store(next.clone());
        (self.listener)(&next);
    }

    /// The latest table.
    pub fn current(&self) -> Arc<RoutingTable> {
        self.current.load_full()
    }
}
