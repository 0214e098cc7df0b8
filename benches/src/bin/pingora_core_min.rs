//! pingora-core's floor for the load harness: a `ServerApp` that owns the
//! HTTP/1 keep-alive loop itself and keeps one upstream connection bound to
//! each client connection — no connection-pool round trip and no idle-watch
//! task per request, which is what pingora-proxy pays on top. It adds
//! `X-Forwarded-For` and copies request and response bodies chunk by chunk
//! (so it can hold `/api/stream` streams); it does no routing, retries,
//! upgrades (websockets) or error pages: a failure closes the client
//! connection.
//!
//! Ported from `/work/shared/pingora-floor`, with what the comparison needs
//! to be fair: the same allocator, listener and build profile as pinroute.
//!
//! Knobs (environment): `FLOOR_OWN_CONNECT=1` connects upstream with tokio
//! directly (an unbuffered upstream stream) instead of pingora's
//! `TransportConnector`; `FLOOR_BUFFERED=1` reads client connections through
//! pingora's default 64 KiB buffer instead of unbuffered.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::connectors::TransportConnector;
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use pingora::upstreams::peer::HttpPeer;

// pinroute's allocator (proxy/src/main.rs), built with the same lazy arena
// commit (.cargo/config.toml): allocator differences must not show up as
// framework cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: pingora_core_min LISTEN_ADDR UPSTREAM_ADDR   (e.g. 127.0.0.1:8080 127.0.0.1:9001)";

struct CoreMin {
    peer: HttpPeer,
    upstream: SocketAddr,
    connector: TransportConnector,
    // Read once: an environment lookup per connection would be cost the
    // floor does not need.
    own_connect: bool,
}

impl CoreMin {
    async fn connect(&self) -> Option<UpstreamSession> {
        if self.own_connect {
            let tcp = tokio::net::TcpStream::connect(self.upstream).await.ok()?;
            tcp.set_nodelay(true).ok()?;
            return Some(UpstreamSession::new(Box::new(pingora::protocols::l4::stream::Stream::from(tcp))));
        }
        Some(UpstreamSession::new(self.connector.new_stream(&self.peer).await.ok()?))
    }

    /// Proxies one request over `upstream` (connecting when there is none)
    /// and puts the connection back when the backend keeps it alive. `None`:
    /// something failed, the client connection is dropped.
    async fn one(&self, client: &mut ServerSession, upstream: &mut Option<UpstreamSession>) -> Option<()> {
        let mut request = client.req_header().clone();
        if let Some(ip) = client.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string()) {
            request.insert_header("X-Forwarded-For", ip).ok()?;
        }
        let mut up = match upstream.take() {
            Some(up) => up,
            None => self.connect().await?,
        };
        up.write_request_header(Box::new(request)).await.ok()?;
        while let Some(chunk) = client.read_request_body().await.ok()? {
            up.write_body(&chunk).await.ok()?;
        }
        up.finish_body().await.ok()?;
        up.read_response().await.ok()?;
        let response = up.resp_header()?.clone();
        client.write_response_header(Box::new(response)).await.ok()?;
        while let Some(chunk) = up.read_body_bytes().await.ok()? {
            client.write_response_body(chunk, false).await.ok()?;
        }
        up.respect_keepalive();
        *upstream = up.reuse().await.map(UpstreamSession::new);
        Some(())
    }
}

#[async_trait]
impl ServerApp for CoreMin {
    async fn process_new(self: &Arc<Self>, mut io: Stream, _shutdown: &ShutdownWatch) -> Option<Stream> {
        let mut upstream: Option<UpstreamSession> = None;
        loop {
            let mut client = ServerSession::new_http1(io);
            if !client.read_request().await.ok()? {
                return None;
            }
            self.one(&mut client, &mut upstream).await?;
            // Bytes of a pipelined next request are dropped: wrk does not pipeline.
            let (stream, _pipelined) = client.finish().await.ok()??.into_parts();
            io = stream;
        }
    }
}

fn main() {
    let (listen, upstream) = pinroute_benches::floor::addresses("pingora_core_min", USAGE);
    let server = pinroute_benches::floor::server();
    let app = CoreMin {
        peer: HttpPeer::new(upstream, false, String::new()),
        upstream,
        connector: TransportConnector::new(None),
        own_connect: std::env::var_os("FLOOR_OWN_CONNECT").is_some(),
    };
    let service = Service::new("pingora-core-min".to_string(), app);
    pinroute_benches::floor::run(server, service, listen);
}
