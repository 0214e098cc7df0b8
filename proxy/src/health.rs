//! Active health checks: a GET of each backend's health path on an interval.
//! A pass re-admits a backend that passive failures ejected; a failure
//! ejects it until the next pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::future::join_all;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pinroute_discovery::Lifecycle;

use crate::state::Shared;

/// Granularity of the check schedule.
const TICK: Duration = Duration::from_millis(100);

/// The background service running every route's checks.
#[derive(Debug)]
pub struct HealthChecker {
    shared: Arc<Shared>,
}

impl HealthChecker {
    /// Checks over the shared state.
    pub fn new(shared: Arc<Shared>) -> HealthChecker {
        HealthChecker { shared }
    }

    async fn check_route(&self, client: &reqwest::Client, route: usize) -> Duration {
        let snapshot = self.shared.snapshot();
        let Some(config) = snapshot.config.routes.get(route) else {
            return Duration::from_secs(5);
        };
        let (Some(path), Some(table)) = (config.health.path.as_deref(), snapshot.table.routes.get(route)) else {
            return config.health.interval;
        };
        let probes = table.backends.iter().filter(|e| e.discovered.lifecycle != Lifecycle::Gone).map(|entry| {
            let url = format!("http://{}{}", entry.discovered.addr, path);
            let timeout = config.health.timeout;
            async move {
                let passed = match client.get(&url).timeout(timeout).send().await {
                    Ok(response) => response.status().is_success(),
                    // The proxy's own fd or port exhaustion says nothing about the backend.
                    Err(e) if crate::local_limits::chain_has_local_limit(&e) => {
                        tracing::debug!(backend = %entry.discovered.id, error = %e, "health check skipped: out of sockets");
                        return;
                    }
                    Err(_) => false,
                };
                let was_down = entry.runtime.is_down(std::time::Instant::now());
                entry.runtime.record_health_check(passed);
                if was_down == passed {
                    tracing::info!(backend = %entry.discovered.id, passed, "health check changed state");
                }
            }
        });
        join_all(probes).await;
        config.health.interval
    }
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let client = match reqwest::Client::builder().no_proxy().pool_max_idle_per_host(1).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "health checks disabled: cannot build HTTP client");
                return;
            }
        };
        // One loop over the routes of the current config (reloads may add or
        // remove routes), each checked when its own interval has passed.
        let mut due: HashMap<String, Instant> = HashMap::new();
        loop {
            let config = self.shared.config();
            let now = Instant::now();
            let mut checks = Vec::new();
            for (i, r) in config.routes.iter().enumerate() {
                if due.get(&r.prefix).is_none_or(|at| *at <= now) {
                    due.insert(r.prefix.clone(), now + r.health.interval);
                    checks.push(self.check_route(&client, i));
                }
            }
            due.retain(|prefix, _| config.routes.iter().any(|r| r.prefix == *prefix));
            tokio::select! {
                _ = join_all(checks) => {}
                _ = shutdown.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
