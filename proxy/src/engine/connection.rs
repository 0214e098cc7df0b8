//! The client connection: the HTTP/1 keep-alive loop, which keeps the
//! connection's upstream connection between its requests, and HTTP/2,
//! whose handshake and stream accept loop stay pingora's.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::server::ShutdownWatch;

use super::client_http1::{Http1Client, ReadHeadError};
use super::downstream::Downstream;
use super::exchange;
use super::memo::ConnectionMemo;
use super::upstream::BoundSlot;
use crate::state::Shared;

/// The client preface of HTTP/2 with prior knowledge (RFC 9113 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client speaks HTTP/2: ALPN on TLS, the preface on h2c listeners.
pub async fn speaks_h2(stream: &mut Stream, h2c: bool) -> bool {
    if stream.get_ssl_digest().is_some() {
        return matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
    }
    if !h2c {
        return false;
    }
    let mut buf = [0u8; H2_PREFACE.len()];
    matches!(stream.try_peek(&mut buf).await, Ok(true)) && buf == H2_PREFACE
}

/// Serves HTTP/1 requests on `stream` until the client or the proxy ends
/// the connection. The upstream connection of one request is kept for the
/// next (see [`BoundSlot`]); pipelined requests are served in order.
pub async fn serve_http1(shared: &Arc<Shared>, stream: Stream, shutdown: &ShutdownWatch) {
    let mut slot = BoundSlot::default();
    let mut memo = ConnectionMemo::default();
    let mut client = Http1Client::new(stream);
    let mut stop = shutdown.clone();
    loop {
        // The wait for a request: `keepalive_timeout` ("0s": no limit).
        let idle = shared.config().server.keepalive_timeout;
        match client.read_request(idle, &mut stop).await {
            Ok(true) => {}
            // The client closed, or the keep-alive wait ran out.
            Ok(false) => return,
            Err(ReadHeadError::TooLarge) => {
                client.refuse(431, "Request header fields too large.").await;
                return;
            }
            Err(ReadHeadError::Malformed(why)) => {
                tracing::debug!(error = %why, "malformed request");
                client.refuse(400, "Bad request: malformed HTTP/1.1 request.").await;
                return;
            }
        }
        if *stop.borrow() {
            // Shutting down: this response is the connection's last.
            client.close_after();
        }
        if !exchange::serve(shared, &mut Downstream::H1(&mut client), &mut slot, &mut memo).await
            || !client.finish(idle).await
        {
            // An answer before the body's end (413, say) must reach the client.
            client.linger(false).await;
            return;
        }
    }
}

/// HTTP/2 connections: pingora's handshake and accept loop (with its
/// graceful GOAWAY and idle timeout), each stream one request through the
/// engine. Streams take upstream connections from the thread's pool.
pub struct Http2Front {
    shared: Arc<Shared>,
    options: HttpServerOptions,
}

impl Http2Front {
    /// HTTP/2 over `shared`; `options` carry `h2c` and the idle timeout.
    pub fn new(shared: Arc<Shared>, options: HttpServerOptions) -> Http2Front {
        Http2Front { shared, options }
    }
}

#[async_trait]
impl HttpServerApp for Http2Front {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let mut slot = BoundSlot::default();
        let mut memo = ConnectionMemo::default();
        if exchange::serve(&self.shared, &mut Downstream::H2(&mut session), &mut slot, &mut memo).await {
            let _ = session.finish().await;
        }
        None
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}
