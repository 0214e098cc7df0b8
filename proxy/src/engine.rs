//! pinroute's proxy engine on pingora-core: the client connection loop,
//! one request's walk (`exchange`), upstream connections kept with the
//! client connection and in a per-thread pool, the body pump, the upgrade
//! tunnel and the retry rules.
//!
//! pingora gives the server, listeners, TLS, the HTTP/2 codec and the
//! SIGQUIT hand-off; the engine owns HTTP/1 on both sides (`client_http1`,
//! `upstream_http`) and what a proxy framework would do between them. It is the only part of pinroute that knows pingora's
//! session types: the pure core (`admit`, `route`, cookie, affinity) sees
//! plain `http` types.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerOptions, ServerApp};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;

use crate::state::Shared;

mod body;
mod chunked;
mod client_http1;
mod connection;
mod downstream;
mod exchange;
mod filters;
mod log;
mod memo;
pub mod pool;
mod reply;
mod request;
mod request_head;
pub mod retry;
mod tunnel;
pub mod upstream;
mod upstream_http;

pub use client_http1::DRAIN_IDLE;
pub use connection::Http2Front;

/// The proxy service's application: every client connection starts here.
pub struct Engine {
    shared: Arc<Shared>,
    h2: Arc<Http2Front>,
    h2c: bool,
}

impl Engine {
    /// An engine over `shared`. `h2c`: HTTP/2 with prior knowledge on plain
    /// listeners; `h2_idle`: an HTTP/2 connection without streams closes
    /// after this.
    pub fn new(shared: Arc<Shared>, h2c: bool, h2_idle: Option<std::time::Duration>) -> Engine {
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        options.h2_idle_timeout = h2_idle;
        let h2 = Arc::new(Http2Front::new(shared.clone(), options));
        Engine { shared, h2, h2c }
    }
}

#[async_trait]
impl ServerApp for Engine {
    /// Moves the connection to a task of its own and returns at once.
    /// pingora's accept task is sized for its largest state (the TLS
    /// handshake): ~9 KiB that an idle keep-alive connection or an open log
    /// stream would otherwise hold for its whole life (dhat, 1,000 idle
    /// streams). The connection's own task holds only what serving it needs.
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let engine = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { engine.serve(stream, &shutdown).await });
        None
    }
}

impl Engine {
    async fn serve(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let _open = Open::count(&self.shared.metrics.client_connections);
        if connection::speaks_h2(&mut stream, self.h2c).await {
            self.h2.process_new(stream, shutdown).await;
        } else {
            connection::serve_http1(&self.shared, stream, shutdown).await;
        }
    }
}

/// One open client connection on
/// [`crate::metrics::Metrics::client_connections`], counted until dropped.
struct Open<'a>(&'a prometheus::IntGauge);

impl<'a> Open<'a> {
    fn count(gauge: &'a prometheus::IntGauge) -> Open<'a> {
        gauge.inc();
        Open(gauge)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
