//! What the two pingora floor contenders (`src/bin/pingora_*_min.rs`) share:
//! their arguments, a server set up as the harness runs pinroute, and the
//! client listener.

use std::net::SocketAddr;

use pingora::apps::ServerApp;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

/// `LISTEN_ADDR UPSTREAM_ADDR` from the command line; usage and exit 2 otherwise.
pub fn addresses(name: &str, usage: &str) -> (SocketAddr, SocketAddr) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parse = |what: &str, v: &str| v.parse::<SocketAddr>().map_err(|e| format!("{what} {v:?}: {e}\n{usage}"));
    let parsed = match args.as_slice() {
        [listen, upstream] => {
            parse("listen address", listen).and_then(|l| Ok((l, parse("upstream address", upstream)?)))
        }
        _ => Err(usage.to_string()),
    };
    parsed.unwrap_or_else(|e| {
        eprintln!("{name}: {e}");
        std::process::exit(2);
    })
}

/// A pingora server as the harness runs pinroute: one worker, one
/// current-thread runtime, and a prompt exit on SIGTERM.
pub fn server() -> Server {
    let conf = ServerConf {
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
    server
}

/// Listens on `listen` and runs `service` until a signal stops it. Client
/// reads are unbuffered like pinroute's (proxy/src/server.rs), unless
/// `FLOOR_BUFFERED` is set (pingora's default 64 KiB read buffer).
pub fn run<A: ServerApp + Send + Sync + 'static>(mut server: Server, mut service: Service<A>, listen: SocketAddr) {
    if std::env::var_os("FLOOR_BUFFERED").is_some() {
        service.add_tcp(&listen.to_string());
    } else {
        let unbuffered_reads = L4BufferSettings { read: Some(0), write: None };
        service.add_listener(ListenerConfig::tcp(listen.to_string()).l4_buffer(unbuffered_reads));
    }
    server.add_service(service);
    server.run_forever();
}
