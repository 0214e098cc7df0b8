//! `pinroute demo`: three embedded SkyPilot-shaped backends behind the proxy,
//! and a few commands to try.

pub mod backend;

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use pinroute_config::{Config, RawConfig};

/// Ports of the embedded backends (46580 is the SkyPilot API server's).
pub const DEMO_PORTS: [u16; 3] = [46580, 46581, 46582];

/// Starts the demo backends on their own runtime thread, then the proxy.
pub fn run(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for (i, port) in DEMO_PORTS.iter().enumerate() {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("demo backend {} cannot listen on {addr} (is another demo running?)", i + 1))?;
        listener.set_nonblocking(true)?;
        listeners.push((format!("api-server-{}", i + 1), listener));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("demo-backends")
        .build()?;
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let tasks = listeners.into_iter().map(|(name, listener)| async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) =
                            backend::serve(l, backend::BackendOptions::named(&name), std::future::pending()).await
                        {
                            tracing::error!(error = %e, "demo backend stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "demo backend listener"),
                }
            });
            futures::future::join_all(tasks).await;
        });
    });

    let raw = RawConfig {
        server: pinroute_config::raw_server(vec![listen.to_string()], Some(admin.to_string())),
        routes: vec![pinroute_config::raw_static_route(
            "/",
            DEMO_PORTS.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        )],
        ..RawConfig::default()
    };
    let config = Config::from_raw(Path::new("<demo>"), raw, std::env::var("PINROUTE_COOKIE_KEY").ok())?;
    println!("{}", instructions(listen, admin));
    crate::server::run(config, crate::server::RunOptions::default())
}

fn instructions(listen: SocketAddr, admin: SocketAddr) -> String {
    format!(
        r#"
pinroute demo: proxy on http://{listen}, admin on http://{admin}
three SkyPilot-shaped API servers on 127.0.0.1:{p0}, :{p1}, :{p2}

Try, in another terminal:

  # a new client gets pinned: note the Set-Cookie SKYPILOT_ROUTEID
  curl -si http://{listen}/api/health

  # keep the cookie: every request lands on the same API server
  curl -s -c /tmp/jar -b /tmp/jar http://{listen}/api/health; echo
  for i in 1 2 3 4 5; do curl -s -c /tmp/jar -b /tmp/jar -X POST http://{listen}/launch; echo; done

  # a log stream, one line a second, forwarded as it arrives
  curl -sN -b /tmp/jar 'http://{listen}/api/stream?lines=5'

  # the backend table, and draining the server you are pinned to
  curl -s http://{admin}/admin/backends
  curl -s -X POST 'http://{admin}/admin/drain?backend=127.0.0.1:{p0}'
  curl -s 'http://{admin}/admin/drain-wait?backend=127.0.0.1:{p0}&timeout=10s'
  curl -s http://{admin}/metrics | grep pinroute_

Ctrl-C stops the demo.
"#,
        p0 = DEMO_PORTS[0],
        p1 = DEMO_PORTS[1],
        p2 = DEMO_PORTS[2],
    )
}
