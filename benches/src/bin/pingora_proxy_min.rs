//! pingora-proxy's floor for the load harness: the smallest `ProxyHttp`
//! that does pinroute's job's minimum — one fixed upstream (the harness's
//! backend 1) and an `X-Forwarded-For` header — so the harness can show how
//! much of pinroute's cost per request is pingora-proxy's own.
//!
//! Not a design to copy: no routing, cookies, health checks or error
//! handling beyond what pingora does by itself.
//!
//! Ported from `/work/shared/pingora-floor`, with what the comparison needs
//! to be fair: the same allocator, listener and build profile as pinroute.

use async_trait::async_trait;
use pingora::prelude::*;

// pinroute's allocator (proxy/src/main.rs), built with the same lazy arena
// commit (.cargo/config.toml): allocator differences must not show up as
// framework cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "usage: pingora_proxy_min LISTEN_ADDR UPSTREAM_ADDR   (e.g. 127.0.0.1:8080 127.0.0.1:9001)\n\
  FLOOR_BUFFERED=1: pingora's default 64 KiB read buffer per client connection instead of unbuffered reads";

struct ProxyMin {
    // Built once: the floor should not pay an address parse per request.
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for ProxyMin {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        // The client's IP only, as the other contenders send it.
        if let Some(ip) = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip().to_string()) {
            request.insert_header("X-Forwarded-For", ip)?;
        }
        Ok(())
    }
}

fn main() {
    let (listen, upstream) = pinroute_benches::floor::addresses("pingora_proxy_min", USAGE);
    let server = pinroute_benches::floor::server();
    let service =
        http_proxy_service(&server.configuration, ProxyMin { peer: HttpPeer::new(upstream, false, String::new()) });
    pinroute_benches::floor::run(server, service, listen);
}
