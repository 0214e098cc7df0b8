//! Request-id affinity: which backend accepted which SkyPilot request id.
//!
//! A request's logs and result live on the pod that accepted it; another
//! server answers `404 Request '<id>' not found`. The proxy learns
//! id → backend identity from `X-Skypilot-Request-ID` (and
//! `X-SkyPilot-Stream-Request-ID`) response headers, and routes
//! `/api/get`, `/api/stream`, `/api/status`, `/api/cancel` carrying a known
//! id (or a unique prefix of ≥ 8 characters) to its owner, whatever cookie
//! the client has.
//!
//! Bounded: at most `capacity` ids, each for at most `ttl`, least recently
//! used evicted first. Memory per entry is about 200 bytes (the id twice —
//! map key and LRU queue — ~2×60 B, an `Arc` to the owner's identity, the
//! expiry and sequence number, and B-tree/deque overhead), so the default
//! 100,000 ids cost about 20 MB at most.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Shortest id prefix that is looked up (the CLI shows 8+ characters).
pub const MIN_PREFIX: usize = 8;
/// Default bound on remembered ids.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Default lifetime of a learned id (streams can run for hours).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct Entry {
    owner: Arc<str>,
    expires: Instant,
    seq: u64,
}

#[derive(Debug, Default)]
struct Inner {
    map: BTreeMap<Box<str>, Entry>,
    // LRU order with lazy deletion: (seq, id); stale when the entry's seq moved on.
    order: VecDeque<(u64, Box<str>)>,
    seq: u64,
    // Entries per owner, kept with the map: the dashboard asks every second,
    // and a walk of a million ids under the lock stalled every request.
    owners: HashMap<Arc<str>, usize>,
}

impl Inner {
    fn counted(&mut self, owner: &Arc<str>) {
        *self.owners.entry(owner.clone()).or_default() += 1;
    }

    fn uncounted(&mut self, owner: &Arc<str>) {
        if let Some(n) = self.owners.get_mut(owner) {
            *n -= 1;
            if *n == 0 {
                self.owners.remove(owner);
            }
        }
    }
}

/// The id → owner table.
#[derive(Debug)]
pub struct RequestIdTable {
    inner: Mutex<Inner>,
    capacity: std::sync::atomic::AtomicUsize,
    ttl: Duration,
}

impl Default for RequestIdTable {
    fn default() -> Self {
        RequestIdTable::new(DEFAULT_CAPACITY, DEFAULT_TTL)
    }
}

impl RequestIdTable {
    /// A new bound (`[server] request_id_capacity` reloaded): applied as ids
    /// are learned, the least recently used going first.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.store(capacity.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// A table of at most `capacity` ids kept `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> RequestIdTable {
        RequestIdTable { inner: Mutex::new(Inner::default()), capacity: capacity.max(1).into(), ttl }
    }

    /// Remembers that `owner` (a backend identity) accepted `id`.
    pub fn learn(&self, id: &str, owner: &Arc<str>, now: Instant) {
        if id.len() < MIN_PREFIX || id.len() > 128 {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.seq += 1;
        let seq = inner.seq;
        let entry = Entry { owner: owner.clone(), expires: now + self.ttl, seq };
        if let Some(old) = inner.map.insert(id.into(), entry) {
            inner.uncounted(&old.owner);
        }
        inner.counted(owner);
        inner.order.push_back((seq, id.into()));
        self.evict(&mut inner, now);
    }

    /// The owner of `id`, or of the single id it is a prefix of.
    pub fn lookup(&self, id: &str, now: Instant) -> Option<Arc<str>> {
        if id.len() < MIN_PREFIX {
            return None;
        }
        let Ok(mut inner) = self.inner.lock() else { return None };
        let mut matches = inner
            .map
            .range::<str, _>((Bound::Included(id), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(id))
            .filter(|(_, e)| e.expires > now);
        let (key, entry) = matches.next()?;
        if matches.next().is_some() {
            return None; // ambiguous prefix: let the server say so
        }
        let (key, owner) = (key.clone(), entry.owner.clone());
        inner.seq += 1;
        let seq = inner.seq;
        if let Some(e) = inner.map.get_mut(&key) {
            e.seq = seq;
            e.expires = now + self.ttl;
        }
        inner.order.push_back((seq, key));
        self.evict(&mut inner, now);
        Some(owner)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.map.len()).unwrap_or(0)
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many live ids each backend owns (the dashboard, once a second):
    /// expired ids are evicted first (they are the oldest in the LRU
    /// order), then the counts kept with the map are copied, one per owner.
    pub fn count_by_owner(&self, now: Instant) -> HashMap<Arc<str>, usize> {
        let Ok(mut inner) = self.inner.lock() else { return HashMap::new() };
        self.evict(&mut inner, now);
        inner.owners.clone()
    }

    fn evict(&self, inner: &mut Inner, now: Instant) {
        // Drop stale queue heads, expired entries and, past capacity, the
        // least recently used; the queue is compacted when touches bloat it.
        while let Some((seq, key)) = inner.order.front() {
            let live = inner.map.get(key).filter(|e| e.seq == *seq);
            let drop_it = match live {
                None => true,
                Some(e) => {
                    e.expires <= now || inner.map.len() > self.capacity.load(std::sync::atomic::Ordering::Relaxed)
                }
            };
            if !drop_it {
                break;
            }
            let (seq, key) = inner.order.pop_front().unwrap_or((0, "".into()));
            if inner.map.get(&key).is_some_and(|e| e.seq == seq) {
                if let Some(gone) = inner.map.remove(&key) {
                    inner.uncounted(&gone.owner);
                }
            }
        }
        if inner.order.len() > 2 * self.capacity.load(std::sync::atomic::Ordering::Relaxed) + 64 {
            let map = &inner.map;
            inner.order.retain(|(seq, key)| map.get(key).is_some_and(|e| e.seq == *seq));
        }
    }
}

/// The request id a SkyPilot API call carries in its query string, for the
/// paths whose answer lives on the pod that accepted the request.
pub fn request_id_of(path: &str, query: Option<&str>) -> Option<String> {
    if !matches!(path, "/api/get" | "/api/stream" | "/api/status" | "/api/cancel") {
        return None;
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "request_id" || k == "request_ids")
        .map(|(_, v)| v.into_owned())
        .filter(|v| v.len() >= MIN_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(s: &str) -> Arc<str> {
        s.into()
    }

    #[test]
    fn counts_by_owner_follow_learning_moves_eviction_and_expiry() {
        let table = RequestIdTable::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let (a, b) = (owner("pod-a"), owner("pod-b"));
        table.learn("id-0000001", &a, t0);
        table.learn("id-0000002", &a, t0);
        table.learn("id-0000003", &b, t0);
        let counts = table.count_by_owner(t0);
        assert_eq!((counts[&a], counts[&b]), (2, 1));
        // Learned again elsewhere: moves, not doubles.
        table.learn("id-0000001", &b, t0 + Duration::from_secs(1));
        let counts = table.count_by_owner(t0 + Duration::from_secs(1));
        assert_eq!((counts[&a], counts[&b]), (1, 2));
        // Past capacity the least recently used goes, and its count with it.
        table.learn("id-0000004", &b, t0 + Duration::from_secs(2));
        let counts = table.count_by_owner(t0 + Duration::from_secs(2));
        assert_eq!((counts.get(&a).copied(), counts[&b]), (None, 3), "{counts:?}");
        // Expired ids are not counted; owners without ids are not listed.
        let counts = table.count_by_owner(t0 + Duration::from_secs(11));
        assert_eq!(counts.values().sum::<usize>(), 1, "{counts:?}");
        assert!(table.count_by_owner(t0 + Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn exact_and_unique_prefix_lookups() {
        let t = RequestIdTable::default();
        let now = Instant::now();
        t.learn("abcdef12-3456-7890-aaaa-000000000001", &owner("pod-a"), now);
        t.learn("abcdef99-3456-7890-aaaa-000000000002", &owner("pod-b"), now);
        assert_eq!(t.lookup("abcdef12-3456-7890-aaaa-000000000001", now).as_deref(), Some("pod-a"));
        assert_eq!(t.lookup("abcdef12", now).as_deref(), Some("pod-a"));
        assert_eq!(t.lookup("abcdef99-3", now).as_deref(), Some("pod-b"));
        assert_eq!(t.lookup("abcdef", now), None, "too short");
        assert_eq!(t.lookup("abcdef1", now), None, "too short");
        t.learn("abcdef12-ffff-0000-0000-000000000003", &owner("pod-c"), now);
        assert_eq!(t.lookup("abcdef12", now), None, "ambiguous prefix");
        assert_eq!(t.lookup("zzzzzzzz", now), None);
    }

    #[test]
    fn entries_expire() {
        let t = RequestIdTable::new(10, Duration::from_secs(60));
        let now = Instant::now();
        t.learn("request-0001", &owner("a"), now);
        assert!(t.lookup("request-0001", now + Duration::from_secs(59)).is_some());
        // The lookup refreshed it: 59 + 60 s later it is still there.
        assert!(t.lookup("request-0001", now + Duration::from_secs(118)).is_some());
        assert!(t.lookup("request-0001", now + Duration::from_secs(500)).is_none());
    }

    #[test]
    fn least_recently_used_is_evicted_at_capacity() {
        let t = RequestIdTable::new(3, Duration::from_secs(600));
        let now = Instant::now();
        for i in 0..3 {
            t.learn(&format!("request-{i:04}"), &owner("a"), now);
        }
        assert!(t.lookup("request-0000", now).is_some()); // touch the oldest
        t.learn("request-0003", &owner("a"), now);
        assert_eq!(t.len(), 3);
        assert!(t.lookup("request-0000", now).is_some(), "recently used survives");
        assert!(t.lookup("request-0001", now).is_none(), "least recently used evicted");
        for i in 0..1000 {
            t.lookup("request-0000", now);
            t.learn(&format!("other-{i:06}"), &owner("b"), now);
        }
        assert_eq!(t.len(), 3);
        assert!(t.inner.lock().unwrap().order.len() <= 2 * 3 + 64);
    }

    #[test]
    fn request_id_only_on_affinity_paths() {
        assert_eq!(request_id_of("/api/get", Some("request_id=abcdef1234")).as_deref(), Some("abcdef1234"));
        assert_eq!(
            request_id_of("/api/stream", Some("follow=true&request_id=abcdef1234")).as_deref(),
            Some("abcdef1234")
        );
        assert_eq!(request_id_of("/api/cancel", Some("request_ids=abcdef1234")).as_deref(), Some("abcdef1234"));
        assert_eq!(request_id_of("/launch", Some("request_id=abcdef1234")), None);
        assert_eq!(request_id_of("/api/get", Some("request_id=abc")), None);
        assert_eq!(request_id_of("/api/get", None), None);
    }
}
