//! The one immutable view a request reads: config + routing table + the
//! cookie index of every route. Built once per table publish, loaded once per
//! request with `ArcSwap::load`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pinroute_config::Config;
use pinroute_discovery::RoutingTable;

use crate::cookie::{set_cookie_header, PinKey};
use crate::gateway::Gates;

/// Per-route cookie index.
#[derive(Debug, Default)]
pub struct RouteView {
    /// Cookie value → backend index in the route.
    pub by_pin: HashMap<Arc<str>, usize>,
    /// Backend index → its cookie value.
    pub pins: Vec<Arc<str>>,
    /// Backend index → a 64-bit hash of its cookie value, for rendezvous.
    pub pin_hashes: Vec<u64>,
    /// Backend identity → index (request-id affinity).
    pub by_identity: HashMap<Arc<str>, usize>,
    /// Backend index → the `Set-Cookie` that pins a client to it, built
    /// once per publish instead of once per new client.
    pub set_cookies: Vec<Option<http::HeaderValue>>,
}

/// A stable 64-bit hash (FNV-1a then a splitmix finaliser): the same on every
/// replica and every release, unlike `std`'s `DefaultHasher`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

/// splitmix64's finaliser: spreads every input bit over the output.
pub fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Everything a routing decision reads.
#[derive(Debug)]
pub struct Snapshot {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Backends and states.
    pub table: Arc<RoutingTable>,
    /// Cookie indexes, one per route.
    pub views: Vec<RouteView>,
    /// The key the cookie values were made with (checks received cookies).
    pub key: PinKey,
    /// Authentication gates of the config's routes.
    pub gates: Gates,
}

/// Remembers cookie values by identity so a republish does not rehash every
/// backend (HMAC costs ~1 µs; a 1,000-pod table republishes on every event).
#[derive(Debug)]
pub struct PinCache {
    key: PinKey,
    values: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

impl PinCache {
    /// A cache over `key`.
    pub fn new(key: PinKey) -> PinCache {
        PinCache { key, values: Mutex::new(HashMap::new()) }
    }

    /// The key, for checking received cookies.
    pub fn key(&self) -> &PinKey {
        &self.key
    }

    fn pin(&self, cache: &mut HashMap<Arc<str>, Arc<str>>, identity: &Arc<str>) -> Arc<str> {
        cache.entry(identity.clone()).or_insert_with(|| self.key.pin(identity).into()).clone()
    }
}

impl Snapshot {
    /// Indexes `table` for `config`.
    pub fn build(config: Arc<Config>, table: Arc<RoutingTable>, pins: &PinCache, gates: Gates) -> Snapshot {
        let mut cache = pins.values.lock().unwrap_or_else(|p| p.into_inner());
        let views = table
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| {
                let values: Vec<Arc<str>> =
                    route.backends.iter().map(|b| pins.pin(&mut cache, &b.discovered.identity)).collect();
                let by_pin = values.iter().enumerate().map(|(i, v)| (v.clone(), i)).collect();
                let pin_hashes = values.iter().map(|v| stable_hash(v.as_bytes())).collect();
                let by_identity =
                    route.backends.iter().enumerate().map(|(i, b)| (b.discovered.identity.clone(), i)).collect();
                // A header value the config cannot make (it validates names
                // and prefixes) just sets no cookie.
                let set_cookies = match config.routes.get(index) {
                    Some(r) => values
                        .iter()
                        .map(|v| {
                            let header = set_cookie_header(&config.cookie, &r.cookie_name, &r.prefix, v);
                            http::HeaderValue::try_from(header).ok()
                        })
                        .collect(),
                    None => Vec::new(),
                };
                RouteView { by_pin, pins: values, pin_hashes, by_identity, set_cookies }
            })
            .collect();
        // Forget identities no longer in the table so the cache stays bounded.
        if cache.len() > 2 * table.routes.iter().map(|r| r.backends.len()).sum::<usize>() + 64 {
            let live: std::collections::HashSet<&Arc<str>> =
                table.routes.iter().flat_map(|r| r.backends.iter().map(|b| &b.discovered.identity)).collect();
            cache.retain(|k, _| live.contains(k));
        }
        drop(cache);
        Snapshot { config, table, views, key: pins.key.clone(), gates }
    }
}
