//! `pinroute demo --rolling`: a rolling upgrade played on the embedded
//! backends under sky-CLI-shaped load, with a live line per second of who is
//! pinned where, streams open, and requests failed (0).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinroute_discovery::{DiscoveredBackend, DiscoveryEvent, Lifecycle};
use tokio::sync::oneshot;

use crate::demo::load::{LoadDriver, LoadOptions};
use crate::state::Shared;

/// One embedded backend: its discovered form and the trigger of its shutdown.
pub struct RollingBackend {
    /// As published in the table.
    pub backend: DiscoveredBackend,
    /// Starts skypilot's shutdown sequence.
    pub shutdown: Option<oneshot::Sender<()>>,
    /// Resolves when the backend has stopped serving.
    pub stopped: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for RollingBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollingBackend").field("id", &self.backend.id).finish()
    }
}

fn status_line(shared: &Shared, started: Instant, driver: &LoadDriver) -> String {
    let snapshot = shared.snapshot();
    let now = Instant::now();
    let mut parts = Vec::new();
    for entry in snapshot.table.routes.iter().flat_map(|r| &r.backends) {
        let state = entry.state(now).as_str();
        parts.push(format!(
            "{} {state} (in-flight {}, streams {}, pinned {})",
            entry.discovered.id,
            entry.runtime.in_flight(),
            entry.runtime.streams(),
            entry.runtime.pinned_clients(now)
        ));
    }
    let r = driver.stats.report();
    format!(
        "t={:>3}s | {} | sent {} failed {} | streams open {} done {} cut {}",
        started.elapsed().as_secs(),
        parts.join(" | "),
        r.sent,
        r.failed,
        r.streams_opened - r.streams_completed - r.streams_cut,
        r.streams_completed,
        r.streams_cut
    )
}

/// Plays the upgrade: v2 added, v1 drained (and shutting down the way a
/// SkyPilot server does), v1 removed once it stopped; then a summary.
/// Returns the v2 servers: they serve for as long as the caller keeps them
/// (dropping one's shutdown trigger shuts it down).
pub async fn play(
    shared: Arc<Shared>,
    proxy: std::net::SocketAddr,
    old: Vec<RollingBackend>,
    new: Vec<RollingBackend>,
) -> Vec<RollingBackend> {
    let Some(publisher) = shared.publisher().cloned() else { return new };
    let started = Instant::now();
    let driver = LoadDriver::start(
        proxy,
        LoadOptions { clients: 8, stream_lines: 5, stream_interval_ms: 200, ..LoadOptions::default() },
    );
    let tick = |label: &str| println!("{}\n  -> {label}", status_line(&shared, started, &driver));
    let wait = |secs: u64| tokio::time::sleep(Duration::from_secs(secs));

    for _ in 0..3 {
        wait(1).await;
        println!("{}", status_line(&shared, started, &driver));
    }
    tick("v2 pods become Ready");
    let all: Vec<DiscoveredBackend> = old.iter().chain(&new).map(|b| b.backend.clone()).collect();
    publisher.publish(DiscoveryEvent::Replace { route: 0, backends: all });
    for _ in 0..3 {
        wait(1).await;
        println!("{}", status_line(&shared, started, &driver));
    }
    tick("v1 pods terminating: Draining in pinroute; each v1 server starts skypilot's shutdown");
    let mut old = old;
    for b in &mut old {
        publisher.publish(DiscoveryEvent::Upsert {
            route: 0,
            backend: DiscoveredBackend { lifecycle: Lifecycle::Draining, ..b.backend.clone() },
        });
        if let Some(trigger) = b.shutdown.take() {
            let _ = trigger.send(());
        }
    }
    for b in &mut old {
        if let Some(mut stopped) = b.stopped.take() {
            loop {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = wait(1) => println!("{}", status_line(&shared, started, &driver)),
                }
            }
        }
        publisher.publish(DiscoveryEvent::Remove { route: 0, identity: b.backend.identity.clone() });
    }
    tick("v1 pods exited and were deleted");
    for _ in 0..3 {
        wait(1).await;
        println!("{}", status_line(&shared, started, &driver));
    }
    let last = driver.last_backends();
    let report = driver.stop().await;
    let on_new = last.iter().filter(|b| b.contains("v2")).count();
    println!(
        "\nrolling upgrade done: {} requests sent, {} failed; {} streams opened, {} cut; {} of {} clients now on v2.\nThe proxy keeps running: try the commands above. Ctrl-C stops the demo.",
        report.sent,
        report.failed,
        report.streams_opened,
        report.streams_cut,
        on_new,
        last.len()
    );
    new
}
