//! The idle upstream connections of one worker thread: a connection a
//! request is done with waits here for the next request to the same backend.
//!
//! Per thread, so taking and returning one takes no lock and no atomic, and
//! no task watches an idle connection (pingora's pool spawns one per
//! release). A connection the backend closed while it waited is found when
//! it is taken: by the liveness check for requests that cannot be resent,
//! and by the resend rule ([`super::retry`]) for the others. What a closed
//! connection costs until then is one descriptor in CLOSE_WAIT, bounded by
//! [`PER_BACKEND`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::upstream::{looks_alive, Kept};

/// Most idle connections kept per backend and thread; the oldest goes first.
pub const PER_BACKEND: usize = 128;

/// An idle connection older than this is closed instead of used: servers
/// close idle keep-alive connections themselves after a few seconds
/// (uvicorn: 5 s), and one left longer is more likely dead than not.
pub const MAX_IDLE: Duration = Duration::from_secs(30);

thread_local! {
    static IDLE: RefCell<HashMap<SocketAddr, Vec<Kept>>> = RefCell::new(HashMap::new());
}

/// A kept connection to `addr`, newest first. With `check`, one the backend
/// already closed is skipped (and closed).
pub fn take(addr: SocketAddr, check: bool, now: Instant) -> Option<Kept> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(mut kept) = list.pop() {
            if now.saturating_duration_since(kept.since) >= MAX_IDLE {
                // Everything below is older still.
                list.clear();
                return None;
            }
            if !check || looks_alive(&mut kept.stream) {
                return Some(kept);
            }
        }
        None
    })
}

/// Keeps `kept` for the next request to its backend.
pub fn put(kept: Kept) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(kept.addr).or_default();
        if list.len() >= PER_BACKEND {
            list.remove(0);
        }
        list.push(kept);
    });
}
