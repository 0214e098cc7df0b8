//! The listener and connections of the fake server: an outage closes new
//! connections before any HTTP response and fails I/O on open ones.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::store::{lock, Shared};
use super::COUNTER;

/// Accepts connections, but while the server is down closes them right away:
/// an outage then looks like a dead server (connection closed, no HTTP
/// response). A 503 would not do: kube's client silently retries 429/503/504
/// with exponential backoff, hiding the outage from the watcher.
pub(super) struct GatedListener {
    pub(super) tcp: TcpListener,
    pub(super) shared: Arc<Shared>,
}

impl axum::serve::Listener for GatedListener {
    type Io = GatedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (GatedStream, SocketAddr) {
        loop {
            match self.tcp.accept().await {
                Ok((tcp, _)) if self.shared.down.load(Ordering::SeqCst) => drop(tcp),
                Ok((tcp, addr)) => {
                    let stream = GatedStream {
                        tcp,
                        shared: self.shared.clone(),
                        epoch: self.shared.epoch.load(Ordering::SeqCst),
                        id: COUNTER.fetch_add(1, Ordering::Relaxed),
                    };
                    return (stream, addr);
                }
                // E.g. out of file descriptors: back off like axum's own listener.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// A server-side connection that fails all I/O once an outage started after
/// it was accepted, so hyper drops it.
pub(super) struct GatedStream {
    tcp: TcpStream,
    shared: Arc<Shared>,
    epoch: u64,
    id: u64,
}

impl GatedStream {
    fn check(&self) -> std::io::Result<()> {
        if self.shared.epoch.load(Ordering::SeqCst) == self.epoch {
            Ok(())
        } else {
            let kind = std::io::ErrorKind::ConnectionReset;
            Err(std::io::Error::new(kind, "fake kube went down"))
        }
    }
}

impl Drop for GatedStream {
    fn drop(&mut self) {
        lock(&self.shared.parked).remove(&self.id);
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        // Park before checking: an outage either sees this waker or bumped
        // the epoch before our check, so no wake-up is lost.
        lock(&self.shared.parked).insert(self.id, cx.waker().clone());
        self.check()?;
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}
