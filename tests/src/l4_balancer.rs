//! A plain L4 load balancer in front of proxy replicas, as operators run
//! them (the Helm chart ships two): each accepted TCP connection goes to the
//! next upstream in turn and its bytes are copied both ways untouched. No
//! health checks and no retries, so what a client sees is what the
//! replicas did. HAProxy is not on a fresh CI machine; this is enough.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

#[derive(Debug)]
struct Counters {
    next: AtomicUsize,
    accepted: Vec<AtomicU64>,
    connect_failures: AtomicU64,
    /// Which upstream each client connection went to, by the client's address.
    by_client: Mutex<HashMap<SocketAddr, usize>>,
}

/// A running balancer; it and every connection through it stop on drop.
#[derive(Debug)]
pub struct L4Balancer {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The upstreams, in turn order.
    pub upstreams: Vec<SocketAddr>,
    counters: Arc<Counters>,
    task: JoinHandle<()>,
}

impl Drop for L4Balancer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it
        // drops them all.
        self.task.abort();
    }
}

impl L4Balancer {
    /// Starts one on 127.0.0.1 with a free port over `upstreams`.
    pub async fn start(upstreams: &[SocketAddr]) -> std::io::Result<L4Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters {
            next: AtomicUsize::new(0),
            accepted: upstreams.iter().map(|_| AtomicU64::new(0)).collect(),
            connect_failures: AtomicU64::new(0),
            by_client: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(accept_loop(listener, upstreams.to_vec(), counters.clone()));
        Ok(L4Balancer { addr, upstreams: upstreams.to_vec(), counters, task })
    }

    /// Connections handed to each upstream so far.
    pub fn accepted(&self) -> Vec<u64> {
        self.counters.accepted.iter().map(|a| a.load(Ordering::Relaxed)).collect()
    }

    /// Connections dropped because their upstream refused the connect.
    pub fn connect_failures(&self) -> u64 {
        self.counters.connect_failures.load(Ordering::Relaxed)
    }

    /// The upstream (index) of the client connection from `client` (ask
    /// while that connection's socket is still held, so its port is unique).
    pub fn upstream_of(&self, client: SocketAddr) -> Option<usize> {
        self.counters.by_client.lock().ok()?.get(&client).copied()
    }
}

async fn accept_loop(listener: TcpListener, upstreams: Vec<SocketAddr>, counters: Arc<Counters>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, peer)) = accepted else { continue };
                let turn = counters.next.fetch_add(1, Ordering::Relaxed) % upstreams.len().max(1);
                let Some(upstream) = upstreams.get(turn).copied() else { continue };
                connections.spawn(relay(client, peer, turn, upstream, counters.clone()));
            }
            // Reap finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(mut client: TcpStream, peer: SocketAddr, turn: usize, upstream: SocketAddr, counters: Arc<Counters>) {
    if let Ok(mut map) = counters.by_client.lock() {
        map.insert(peer, turn);
    }
    if let Some(count) = counters.accepted.get(turn) {
        count.fetch_add(1, Ordering::Relaxed);
    }
    match TcpStream::connect(upstream).await {
        Ok(mut server) => {
            let _ = server.set_nodelay(true);
            let _ = client.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(_) => {
            counters.connect_failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    // The entry stays after the close: a client asks once it has read its
    // answer, which may be after the replica closed. Its port is still its
    // own then, and a later connection from the same port overwrites it.
}
