//! `pinroute demo`: three embedded SkyPilot-shaped backends behind the proxy,
//! and a few commands to try.

pub mod backend;
pub mod load;
pub mod rolling;

use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pinroute_config::{Config, RawConfig};
use pinroute_discovery::{DiscoveredBackend, Lifecycle};
use tokio::sync::oneshot;

/// First port of the embedded backends, which take it and the next ones
/// (46580 is the SkyPilot API server's).
pub const DEMO_PORT: u16 = 46580;

/// Starts the demo backends on their own runtime thread, then the proxy.
/// With `rolling`, two "v1" servers serve first and a rolling upgrade to two
/// "v2" servers is played under load, with a live status line. The backends
/// listen on `backend_port` and the ports after it; 0 lets the system pick
/// each (the tests: fixed ports inside the ephemeral range can be taken by
/// any client socket of the machine).
pub fn run(listen: SocketAddr, admin: SocketAddr, rolling: bool, backend_port: u16) -> anyhow::Result<()> {
    let names: &[&str] = if rolling {
        &["api-v1-a", "api-v1-b", "api-v2-a", "api-v2-b"]
    } else {
        &["api-server-1", "api-server-2", "api-server-3"]
    };
    // First, before any status line: the page that shows the rest best.
    println!("pinroute dashboard: http://{admin}/");
    let mut listeners = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let port = match backend_port {
            0 => 0,
            first => u16::try_from(i).ok().and_then(|i| first.checked_add(i)).context("--backend-port: too high")?,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let listener = std::net::TcpListener::bind(addr)
            .with_context(|| format!("demo backend {name} cannot listen on {addr} (is another demo running?)"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        listeners.push((name.to_string(), addr, listener));
    }
    let ports: Vec<u16> = listeners.iter().map(|(_, a, _)| a.port()).collect();
    let first_served = if rolling { 2 } else { names.len() };
    let raw = RawConfig {
        server: pinroute_config::raw_server(vec![listen.to_string()], Some(admin.to_string())),
        routes: vec![pinroute_config::raw_static_route(
            "/",
            listeners[..first_served].iter().map(|(_, a, _)| a.to_string()).collect(),
        )],
        ..RawConfig::default()
    };
    let config = Arc::new(Config::from_raw(Path::new("<demo>"), raw, std::env::var("PINROUTE_COOKIE_KEY").ok())?);
    let shared = crate::server::build_state(config.clone())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("demo-backends")
        .build()?;
    let demo_shared = shared.clone();
    std::thread::spawn(move || {
        runtime.block_on(async move {
            let mut handles = Vec::new();
            let mut tasks = Vec::new();
            for (name, addr, listener) in listeners {
                let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
                let (stopped_tx, stopped_rx) = oneshot::channel::<()>();
                let options = backend::BackendOptions {
                    shutdown_grace: Duration::from_secs(2),
                    shutdown_wait: Duration::from_secs(30),
                    ..backend::BackendOptions::named(&name)
                };
                tasks.push(tokio::spawn(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => {
                            if let Err(e) = backend::serve(l, options, async move {
                                let _ = shutdown_rx.await;
                            })
                            .await
                            {
                                tracing::error!(error = %e, "demo backend stopped");
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "demo backend listener"),
                    }
                    let _ = stopped_tx.send(());
                }));
                let backend = DiscoveredBackend {
                    identity: addr.to_string().into(),
                    id: addr.to_string().into(),
                    addr,
                    lifecycle: Lifecycle::Ready,
                };
                handles.push(rolling::RollingBackend {
                    backend,
                    shutdown: Some(shutdown_tx),
                    stopped: Some(stopped_rx),
                });
            }
            if rolling {
                // Let the proxy start listening first.
                while tokio::net::TcpStream::connect(listen).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let new = handles.split_off(2);
                // Kept until the demo ends: a dropped trigger would shut v2 down.
                handles = rolling::play(demo_shared, listen, handles, new).await;
            }
            futures::future::join_all(tasks).await;
            drop(handles);
        });
    });

    println!("{}", instructions(listen, admin, rolling, &ports));
    crate::server::run_with_state(config, shared, crate::server::RunOptions::default())
}

/// `ports`: the backends', in order (four with `rolling`, else three).
fn instructions(listen: SocketAddr, admin: SocketAddr, rolling: bool, ports: &[u16]) -> String {
    let port = |i: usize| ports.get(i).copied().unwrap_or_default();
    if rolling {
        return format!("\npinroute demo --rolling: proxy on http://{listen}, admin on http://{admin}\ntwo v1 API servers (127.0.0.1:{}, :{}) are upgraded to two v2 servers (:{}, :{}) under load;\nwatch the status lines: pinned clients and open streams stay on v1 until it is done, and nothing fails.\n", port(0), port(1), port(2), port(3));
    }
    format!(
        r#"
pinroute demo: proxy on http://{listen}, admin on http://{admin}
three SkyPilot-shaped API servers on 127.0.0.1:{p0}, :{p1}, :{p2}
(`pinroute demo --rolling` plays a rolling upgrade under load instead)

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
        p0 = port(0),
        p1 = port(1),
        p2 = port(2),
    )
}
