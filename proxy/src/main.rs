//! The `pinroute` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use pinroute::server::RunOptions;
use pinroute_config::{raw_server, raw_static_route, Config, RawConfig};

// A proxy allocates and frees small buffers on every request; mimalloc's
// thread-local free lists cost a fraction of glibc malloc's (see benches/).
// `--features system-allocator` builds with glibc malloc instead, which heap
// profilers (heaptrack, valgrind's dhat and massif) can see into.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "pinroute", version, about = "Sticky-session reverse proxy for SkyPilot API servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy from a config file, or in quick mode from flags.
    Run {
        /// TOML config file.
        #[arg(long, short, conflicts_with_all = ["backend", "listen"])]
        config: Option<PathBuf>,
        /// Quick mode: client listener (repeatable).
        #[arg(long)]
        listen: Vec<String>,
        /// Quick mode: admin listener, or "off".
        #[arg(long)]
        admin: Option<String>,
        /// Quick mode: a backend "host:port" of the single route `/` (repeatable).
        #[arg(long)]
        backend: Vec<String>,
        /// Take the listeners over from a running pinroute (zero-downtime upgrade).
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file; exits non-zero naming the file, key and fix.
    Check {
        /// TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Three embedded SkyPilot-shaped backends behind the proxy, with things to try.
    Demo {
        /// Client listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Play a rolling upgrade (v1 → v2) under load, with a live status line.
        #[arg(long)]
        rolling: bool,
        /// First port of the demo backends (they take it and the next ones);
        /// 0: a free port for each.
        #[arg(long, default_value_t = pinroute::demo::DEMO_PORT)]
        backend_port: u16,
    },
    /// Print the backend table of a running pinroute.
    Backends {
        /// Admin base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
    },
    /// Serve one demo backend (used by the tests and benchmarks).
    #[command(hide = true)]
    DemoBackend {
        /// Listen address; port 0 picks one, printed on stdout.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Name reported in responses.
        #[arg(long, default_value = "backend")]
        name: String,
        /// Let `POST /crash` end the process.
        #[arg(long)]
        allow_crash: bool,
        /// After SIGTERM, normal service for this long (skypilot: 5000).
        #[arg(long, default_value_t = 5000)]
        shutdown_grace_ms: u64,
        /// Then wait at most this long for ongoing requests (skypilot: 60000).
        #[arg(long, default_value_t = 60000)]
        shutdown_wait_ms: u64,
    },
}

fn main() {
    init_logging();
    if let Err(e) = dispatch(Cli::parse()) {
        eprintln!("pinroute: {e:#}");
        std::process::exit(2);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn env_key() -> Option<String> {
    std::env::var("PINROUTE_COOKIE_KEY").ok().filter(|k| !k.is_empty())
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config: Some(path), upgrade, .. } => {
            let config = Config::load(&path, env_key())?;
            pinroute::server::run(config, RunOptions { upgrade, config_path: Some(path), env_key: env_key() })
        }
        Command::Run { config: None, listen, admin, backend, upgrade } => {
            if backend.is_empty() {
                anyhow::bail!("give --config FILE, or quick mode: --listen ADDR --backend HOST:PORT [--backend ...]");
            }
            let listen = if listen.is_empty() { vec!["0.0.0.0:8080".to_string()] } else { listen };
            let raw = RawConfig {
                server: raw_server(listen, admin),
                routes: vec![raw_static_route("/", backend)],
                ..RawConfig::default()
            };
            let config = Config::from_raw(Path::new("<command line>"), raw, env_key())?;
            pinroute::server::run(config, RunOptions { upgrade, ..RunOptions::default() })
        }
        Command::Check { config } => {
            let parsed = Config::load(&config, env_key())?;
            println!(
                "{}: ok ({} route(s), listening on {:?})",
                config.display(),
                parsed.routes.len(),
                parsed.server.listen
            );
            Ok(())
        }
        Command::Demo { listen, admin, rolling, backend_port } => {
            pinroute::demo::run(listen, admin, rolling, backend_port)
        }
        Command::Backends { admin } => print_backends(&admin),
        Command::DemoBackend { listen, name, allow_crash, shutdown_grace_ms, shutdown_wait_ms } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
                let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                // The tests read this line to learn the port.
                println!("listening on {}", listener.local_addr()?);
                let options = pinroute::demo::backend::BackendOptions {
                    name,
                    allow_crash,
                    shutdown_grace: std::time::Duration::from_millis(shutdown_grace_ms),
                    shutdown_wait: std::time::Duration::from_millis(shutdown_wait_ms),
                };
                pinroute::demo::backend::serve(listener, options, async move {
                    sigterm.recv().await;
                })
                .await?;
                Ok(())
            })
        }
    }
}

fn print_backends(admin: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let url = format!("{}/admin/backends", admin.trim_end_matches('/'));
    let rows: Vec<pinroute::admin::BackendRow> = runtime.block_on(async {
        reqwest::get(&url)
            .await
            .with_context(|| format!("GET {url}"))?
            .error_for_status()?
            .json()
            .await
            .context("decoding the backend table")
    })?;
    println!(
        "{:<16} {:<32} {:<22} {:<9} {:>9} {:>8} {:>7}",
        "ROUTE", "BACKEND", "ADDRESS", "STATE", "IN-FLIGHT", "STREAMS", "PINNED"
    );
    for r in rows {
        println!(
            "{:<16} {:<32} {:<22} {:<9} {:>9} {:>8} {:>7}",
            r.route, r.id, r.address, r.state, r.in_flight, r.streams, r.pinned_clients
        );
    }
    Ok(())
}
