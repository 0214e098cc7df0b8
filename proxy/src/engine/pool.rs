//! The idle upstream connections of one worker thread: a connection a
//! request is done with waits here for the next request to the same backend.
//!
//! Per thread, so taking and returning one takes no lock and no atomic, and
//! no task watches an idle connection (pingora's pool spawns one per
//! release). A connection the backend closed while it waited is found when
//! it is taken: by the liveness check for requests that cannot be resent,
//! and by the resend rule ([`super::retry`]) for the others. What a closed
//! connection costs until then is one descriptor in CLOSE_WAIT, bounded by
//! [`PER_BACKEND`] and [`TOTAL`], and by a sweep every [`MAX_IDLE`] that
//! closes what expired: a backend that went away (a pod replaced in a
//! rolling update has a new address) is never asked for again, and its
//! idle connections would otherwise stay open for good.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::upstream::{looks_alive, Kept};

/// Most idle connections kept per backend and thread; the oldest goes first.
pub const PER_BACKEND: usize = 128;

/// Most idle connections kept per thread over all backends: past it a
/// released connection is closed, so a thousand backends cannot hold a
/// hundred thousand descriptors (`ulimit -n` is often 65,536 or less).
pub const TOTAL: usize = 4096;

/// An idle connection older than this is closed instead of used: servers
/// close idle keep-alive connections themselves after a few seconds
/// (uvicorn: 5 s), and one left longer is more likely dead than not.
pub const MAX_IDLE: Duration = Duration::from_secs(30);

/// One thread's idle connections.
#[derive(Default)]
struct Idle {
    by_backend: HashMap<SocketAddr, Vec<Kept>>,
    /// Connections in all lists.
    total: usize,
    /// When expired connections were last closed.
    swept: Option<Instant>,
}

impl Idle {
    /// Closes every expired connection and forgets empty lists.
    fn sweep(&mut self, now: Instant) {
        self.by_backend.retain(|_, list| {
            list.retain(|kept| now.saturating_duration_since(kept.since) < MAX_IDLE);
            !list.is_empty()
        });
        self.total = self.by_backend.values().map(Vec::len).sum();
        self.swept = Some(now);
    }
}

thread_local! {
    static IDLE: RefCell<Idle> = RefCell::new(Idle::default());
}

/// A kept connection to `addr`, newest first. With `check`, one the backend
/// already closed is skipped (and closed).
pub fn take(addr: SocketAddr, check: bool, now: Instant) -> Option<Kept> {
    IDLE.with(|idle| {
        let idle = &mut *idle.borrow_mut();
        let list = idle.by_backend.get_mut(&addr)?;
        while let Some(mut kept) = list.pop() {
            idle.total -= 1;
            if now.saturating_duration_since(kept.since) >= MAX_IDLE {
                // Everything below is older still.
                idle.total -= list.len();
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

/// Keeps `kept` for the next request to its backend (`kept.since` is now).
pub fn put(kept: Kept) {
    IDLE.with(|idle| {
        let idle = &mut *idle.borrow_mut();
        let now = kept.since;
        if idle.swept.is_none_or(|at| now.saturating_duration_since(at) >= MAX_IDLE) {
            idle.sweep(now);
        }
        if idle.total >= TOTAL {
            // Dropped: closed.
            return;
        }
        let list = idle.by_backend.entry(kept.addr).or_default();
        if list.len() >= PER_BACKEND {
            list.remove(0);
        } else {
            idle.total += 1;
        }
        list.push(kept);
    });
}

/// Idle connections of this thread: to `addr`, and in all.
#[cfg(test)]
fn counts(addr: SocketAddr) -> (usize, usize) {
    IDLE.with(|idle| {
        let idle = idle.borrow();
        (idle.by_backend.get(&addr).map_or(0, Vec::len), idle.total)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real loopback connection, its far end held by `ends`.
    async fn connection(listener: &tokio::net::TcpListener, ends: &mut Vec<tokio::net::TcpStream>) -> Kept {
        let addr = listener.local_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        ends.push(listener.accept().await.unwrap().0);
        let stream: pingora::protocols::Stream = Box::new(pingora::protocols::l4::stream::Stream::from(tcp));
        Kept { stream, addr, since: Instant::now() }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn expired_connections_of_a_backend_never_asked_again_are_swept() {
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (gone_addr, live_addr) = (gone.local_addr().unwrap(), live.local_addr().unwrap());
        let mut ends = Vec::new();
        let start = Instant::now();
        for _ in 0..3 {
            put(connection(&gone, &mut ends).await);
        }
        assert_eq!(counts(gone_addr), (3, 3));
        // Later than MAX_IDLE: the next release sweeps the expired three.
        let mut later = connection(&live, &mut ends).await;
        later.since = start + MAX_IDLE + Duration::from_secs(1);
        put(later);
        assert_eq!(counts(gone_addr), (0, 1), "the gone backend's connections are closed");
        assert_eq!(counts(live_addr), (1, 1));
        let taken = take(live_addr, false, start + MAX_IDLE + Duration::from_secs(2));
        assert!(taken.is_some());
        assert_eq!(counts(live_addr), (0, 0));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_backend_keeps_at_most_its_share_and_the_oldest_goes() {
        let backend = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = backend.local_addr().unwrap();
        let mut ends = Vec::new();
        let mut sinces = Vec::new();
        for _ in 0..PER_BACKEND + 2 {
            let kept = connection(&backend, &mut ends).await;
            sinces.push(kept.since);
            put(kept);
        }
        assert_eq!(counts(addr), (PER_BACKEND, PER_BACKEND));
        let oldest = IDLE.with(|idle| idle.borrow().by_backend[&addr][0].since);
        assert_eq!(oldest, sinces[2], "the first two released were closed");
        let newest = take(addr, false, Instant::now()).unwrap();
        assert_eq!(Some(&newest.since), sinces.last(), "newest first");
        assert_eq!(counts(addr), (PER_BACKEND - 1, PER_BACKEND - 1));
    }
}
