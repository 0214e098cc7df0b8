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

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::{Opt, ServerConf};

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

fn parse_args() -> Result<(SocketAddr, SocketAddr), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, upstream] = args.as_slice() else {
        return Err(USAGE.to_string());
    };
    let parse = |what: &str, v: &str| v.parse::<SocketAddr>().map_err(|e| format!("{what} {v:?}: {e}\n{USAGE}"));
    Ok((parse("listen address", listen)?, parse("upstream address", upstream)?))
}

fn main() {
    let (listen, upstream) = match parse_args() {
        Ok(addrs) => addrs,
        Err(e) => {
            eprintln!("pingora_proxy_min: {e}");
            std::process::exit(2);
        }
    };
    let conf = ServerConf {
        // pinroute as the harness runs it: one worker, one current-thread runtime.
        threads: 1,
        work_stealing: false,
        // pingora sleeps the grace period after SIGTERM (5 min by default);
        // the harness stops contenders with SIGTERM and waits 6 s.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut service =
        http_proxy_service(&server.configuration, ProxyMin { peer: HttpPeer::new(upstream, false, String::new()) });
    if std::env::var_os("FLOOR_BUFFERED").is_some() {
        service.add_tcp(&listen.to_string());
    } else {
        // pinroute's client listeners read unbuffered (proxy/src/server.rs):
        // the parser reads straight into its own buffer.
        let unbuffered_reads = L4BufferSettings { read: Some(0), write: None };
        service.add_listener(ListenerConfig::tcp(listen.to_string()).l4_buffer(unbuffered_reads));
    }
    server.add_service(service);
    server.run_forever();
}
