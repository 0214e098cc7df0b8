//! Assembles the pingora server from a [`Config`]: the proxy listeners, the
//! admin listener, background services, and a shutdown that ends as soon as
//! in-flight work does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use pingora::listeners::{L4BufferSettings, ListenerConfig, TcpSocketOptions};
use pingora::protocols::TcpKeepalive;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pinroute_config::Config;

use crate::admin::AdminApp;
use crate::cookie::PinKey;
use crate::discovery_service::{IngressDiscovery, KubeDiscovery};
use crate::engine::Engine;
use crate::gateway::build_gates;
use crate::health::HealthChecker;
use crate::metrics::Metrics;
use crate::reload::Reloader;
use crate::state::Shared;
use crate::tls::{listener_settings, CertResolver, ReloadingCert};

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Take the listeners over from a running instance (SIGQUIT hand-off).
    pub upgrade: bool,
    /// The config file, for reloads (SIGHUP or file change); `None` in quick mode.
    pub config_path: Option<std::path::PathBuf>,
    /// `PINROUTE_COOKIE_KEY`, for reloads.
    pub env_key: Option<String>,
}

/// Builds the shared state for `config` and publishes its static routes.
pub fn build_state(config: Arc<Config>) -> anyhow::Result<Arc<Shared>> {
    let key = match &config.cookie.key {
        Some(key) => PinKey::new(&key.bytes),
        None => {
            tracing::warn!("no cookie key configured (cookie.key_file or PINROUTE_COOKIE_KEY): generated one; proxy replicas will not agree on cookie values");
            PinKey::random()
        }
    };
    let gates = build_gates(&config).map_err(anyhow::Error::msg)?;
    let shared = Shared::new(config.clone(), key, Metrics::new().context("registering metrics")?, gates);
    Ok(shared)
}

/// Runs the proxy until a signal stops it. Does not return on success.
pub fn run(config: Config, options: RunOptions) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let shared = build_state(config.clone())?;
    run_with_state(config, shared, options)
}

/// Runs the proxy over state built by [`build_state`] (the demo drives that
/// state from its own thread). Does not return on success.
pub fn run_with_state(config: Arc<Config>, shared: Arc<Shared>, options: RunOptions) -> anyhow::Result<()> {
    let conf = ServerConf {
        threads: config.server.threads,
        // One current-thread runtime per worker thread: no cross-thread task
        // wakeups (futex + IPI) on every socket event, which a perf profile
        // of keep-alive GETs showed as the largest single kernel cost.
        work_stealing: config.server.work_stealing,
        grace_period_seconds: Some(config.server.grace_period.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(5),
        upgrade_sock: config.server.upgrade_sock.to_string_lossy().into_owned(),
        pid_file: config.server.pid_file.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt { upgrade: options.upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    // An HTTP/2 connection without streams is closed like an idle HTTP/1.1 one.
    let engine = Engine::new(shared.clone(), config.server.h2c, config.server.keepalive_timeout);
    let mut proxy = Service::new("pinroute proxy".to_string(), engine);
    for addr in &config.server.listen {
        // pingora's default 64 KiB read buffer per connection would be
        // copied out of again by the engine's parser, and its 1,460-byte
        // write buffer again by the engine's writes, which send whole
        // responses: both left out. (HTTPS listeners keep them: TLS reads
        // and writes in records.)
        let unbuffered = L4BufferSettings { read: Some(0), write: Some(0) };
        proxy.add_listener(
            ListenerConfig::tcp(addr.to_string()).l4_buffer(unbuffered).tcp_socket_options(client_socket()),
        );
    }
    let certs = match &config.server.tls {
        None => None,
        Some(tls) => {
            let file = match &tls.default_cert {
                None => None,
                Some(files) => Some(ReloadingCert::load(&files.cert_file, &files.key_file).context("[server.tls]")?),
            };
            let certs = CertResolver::new(file);
            for addr in &tls.listen {
                proxy.add_tls_with_settings(
                    &addr.to_string(),
                    Some(client_socket()),
                    listener_settings(certs.clone())?,
                );
            }
            Some(certs)
        }
    };
    server.add_service(proxy);
    if let Some(admin) = config.server.admin {
        let mut service = Service::new("pinroute admin".to_string(), AdminApp::new(shared.clone()));
        service.add_tcp(&admin.to_string());
        server.add_service(service);
        server.add_service(background_service("dashboard sampler", crate::admin::Sampler::new(shared.clone())));
    }
    if let Some(path) = options.config_path.clone() {
        server.add_service(background_service(
            "config reload",
            Reloader::new(
                shared.clone(),
                path,
                options.env_key.clone(),
                certs.as_ref().and_then(|c| c.file().cloned()),
            ),
        ));
    }
    server.add_service(background_service("kubernetes discovery", KubeDiscovery::new(shared.clone())));
    if let Some(ingress) = IngressDiscovery::for_config(shared.clone(), certs) {
        server.add_service(background_service("ingress discovery", ingress));
    }
    server.add_service(background_service("health checks", HealthChecker::new(shared.clone())));

    exit_when_drained(&server, shared, config.server.grace_period);
    tracing::info!(listen = ?config.server.listen, admin = ?config.server.admin, routes = config.routes.len(), "pinroute starting");
    server.run_forever()
}

/// TCP keep-alive on client and upstream sockets: a peer that vanished
/// without a FIN (a laptop closed on an open log stream or SSH tunnel) is
/// found within about two minutes, and what it held is released. Probes
/// cover idle sockets; `TCP_USER_TIMEOUT` covers sockets with data sent and
/// never acknowledged (a stream writing to a gone client), which would
/// otherwise retransmit for ~15 minutes.
pub fn tcp_keepalive() -> TcpKeepalive {
    TcpKeepalive {
        idle: Duration::from_secs(60),
        interval: Duration::from_secs(10),
        count: 6,
        user_timeout: Duration::from_secs(120),
    }
}

/// Options of accepted client sockets: TCP keep-alive.
fn client_socket() -> TcpSocketOptions {
    let mut options = TcpSocketOptions::default();
    options.tcp_keepalive = Some(tcp_keepalive());
    options
}

/// pingora sleeps the whole grace period after SIGTERM; end the process as
/// soon as no request or stream is in flight (listeners are closed by then).
fn exit_when_drained(server: &Server, shared: Arc<Shared>, grace: Duration) {
    let mut phases = server.watch_execution_phase();
    std::thread::spawn(move || {
        loop {
            match phases.blocking_recv() {
                Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
        let deadline = Instant::now() + grace;
        // Let connections accepted just before the listeners closed be read.
        std::thread::sleep(Duration::from_millis(200));
        while Instant::now() < deadline {
            // Open connections, not only requests in flight: exiting closes
            // every connection left, and a client may be writing its next
            // request on one that is idle. Each closes by itself: after its
            // next response, or once idle for [`crate::engine::DRAIN_IDLE`].
            // Requests in flight still count: pingora runs each HTTP/2 stream
            // in a task of its own, which can outlive its connection's task.
            let open = shared.metrics.client_connections.get();
            let snapshot = shared.snapshot();
            let busy: usize =
                snapshot.table.routes.iter().flat_map(|r| &r.backends).map(|b| b.runtime.in_flight()).sum();
            if open <= 0 && busy == 0 {
                tracing::info!("no client connection open; exiting");
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::info!("grace period over; exiting with connections open");
    });
}
