//! Connections to backends: connect, the liveness check of a kept
//! connection, and the slot that keeps a client connection's upstream
//! connection for its next request.
//!
//! A sticky client's next request goes to the same backend, so its upstream
//! connection stays with the client connection (HAProxy's `http-reuse
//! safe`): no pool round trip per request. When the next request goes
//! elsewhere, the kept connection moves to the thread's idle pool.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pingora::protocols::l4::ext::set_tcp_keepalive;
use pingora::protocols::Stream;
use tokio::io::{AsyncRead, ReadBuf};

use super::pool;
use super::retry::AttemptError;

/// An idle upstream connection.
#[derive(Debug)]
pub struct Kept {
    /// The connection (unbuffered: the HTTP codec has its own buffers).
    pub stream: Stream,
    /// The backend it goes to.
    pub addr: SocketAddr,
    /// When its last response ended.
    pub since: Instant,
}

/// The upstream connection a client connection keeps between its requests.
#[derive(Debug, Default)]
pub struct BoundSlot {
    kept: Option<Kept>,
}

impl BoundSlot {
    /// A kept connection to `addr`: the bound one when it goes there, else
    /// one from the thread's pool. With `check`, only one that still looks
    /// open. The bound connection moves to the pool when the request goes
    /// elsewhere.
    pub async fn checkout(&mut self, addr: SocketAddr, check: bool, now: Instant) -> Option<Kept> {
        if check {
            // Let the runtime read the socket events that came in since it
            // last looked (tokio polls its reactor between task runs): a
            // backend's close that arrived a moment ago is seen below.
            tokio::task::yield_now().await;
        }
        if let Some(mut kept) = self.kept.take() {
            if kept.addr != addr {
                pool::put(kept);
            } else if !check || looks_alive(&mut kept.stream) {
                return Some(kept);
            }
        }
        pool::take(addr, check, now)
    }

    /// Keeps `stream` for the client's next request.
    pub fn bind(&mut self, stream: Stream, addr: SocketAddr, now: Instant) {
        if let Some(old) = self.kept.replace(Kept { stream, addr, since: now }) {
            pool::put(old);
        }
    }

    /// The client connection ends: its upstream connection serves others.
    pub fn release(&mut self) {
        if let Some(kept) = self.kept.take() {
            pool::put(kept);
        }
    }
}

impl Drop for BoundSlot {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a kept connection still looks usable, without waiting: `false`
/// when the backend closed it, reset it, or sent bytes nobody asked for.
/// Costs no syscall while tokio has seen no event on the socket since the
/// last read ran dry, one `recvfrom` otherwise.
pub fn looks_alive(stream: &mut Stream) -> bool {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    matches!(Pin::new(stream).poll_read(&mut cx, &mut buf), Poll::Pending)
}

/// A new connection to `addr` within `timeout`: no Nagle delay, and TCP
/// keep-alive so a backend that vanished is found (`server::tcp_keepalive`).
/// Unbuffered: pingora's connector would add a 64 KiB read buffer per
/// connection, which the HTTP codec then copies out of again.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Stream, AttemptError> {
    let tcp = match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) if crate::local_limits::is_local_limit(&error) => {
            tracing::debug!(%addr, %error, "no socket for a backend connection");
            return Err(AttemptError::LocalLimit);
        }
        Ok(Err(error)) => {
            tracing::debug!(%addr, %error, "connect failed");
            return Err(AttemptError::Connect { timed_out: false });
        }
        Err(_) => return Err(AttemptError::Connect { timed_out: true }),
    };
    // Socket options failing on a connected socket is not worth failing the request.
    let _ = tcp.set_nodelay(true);
    if let Err(error) = set_tcp_keepalive(&tcp, &crate::server::tcp_keepalive()) {
        tracing::debug!(%addr, %error, "setting TCP keep-alive failed");
    }
    Ok(Box::new(pingora::protocols::l4::stream::Stream::from(tcp)))
}
