//! Child processes under test: demo backends and the proxy itself.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A port free right now on 127.0.0.1, released at once. Picked below the
/// kernel's ephemeral range (32768+) so that no outgoing connection of a busy
/// test run can be holding it when the proxy binds it a moment later.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 1_000) as u16 * 12;
    for _ in 0..2_000 {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % 12_000;
        let port = 20_000 + (start - 20_000 + offset) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// An HTTP client that never uses a proxy from the environment and keeps no cookies.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap_or_default()
}

/// Polls `check` every 20 ms until it returns true or `deadline` passes.
pub async fn wait_until<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn log_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("pinroute-tests");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{name}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A demo backend running as its own process.
#[derive(Debug)]
pub struct BackendProcess {
    /// Name it reports in `X-Demo-Backend`.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    child: Child,
}

impl BackendProcess {
    /// Starts `pinroute demo-backend` on `listen` (port 0: any) and waits
    /// for the line that tells its address.
    pub fn spawn(bin: &Path, name: &str, listen: &str, allow_crash: bool) -> anyhow::Result<BackendProcess> {
        let crash: &[&str] = if allow_crash { &["--allow-crash"] } else { &[] };
        Self::spawn_with(bin, name, listen, crash)
    }

    /// As [`BackendProcess::spawn`] with extra flags (e.g.
    /// `--shutdown-grace-ms 200 --shutdown-wait-ms 5000`).
    pub fn spawn_with(bin: &Path, name: &str, listen: &str, extra: &[&str]) -> anyhow::Result<BackendProcess> {
        let mut cmd = Command::new(bin);
        cmd.args(["demo-backend", "--listen", listen, "--name", name]).args(extra);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line =
            rx.recv_timeout(Duration::from_secs(10)).context("backend did not report its address within 10 s")?;
        let addr = line.trim().strip_prefix("listening on ").context("unexpected first line")?.parse()?;
        Ok(BackendProcess { name: name.to_string(), addr, child })
    }

    /// `SIGTERM`: the backend plays skypilot's shutdown sequence.
    pub fn terminate(&self) -> anyhow::Result<()> {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        Ok(())
    }

    /// Waits up to `deadline` for the process to exit.
    pub async fn wait_exit(&mut self, deadline: Duration) -> bool {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if self.has_exited() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// `kill -9`, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Process id (for `kill -STOP`: a backend that hangs instead of dying).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (e.g. after `POST /crash`).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// How many requests it saw for `"METHOD /path"`.
    pub async fn count(&self, key: &str) -> anyhow::Result<u64> {
        let v: serde_json::Value =
            http_client().get(format!("http://{}/debug/counts", self.addr)).send().await?.json().await?;
        Ok(v["counts"][key].as_u64().unwrap_or(0))
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The proxy running as its own process, from a config file.
#[derive(Debug)]
pub struct ProxyProcess {
    /// Client listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The config file it was started with.
    pub config_path: PathBuf,
    /// Its log (stderr).
    pub log_path: PathBuf,
    child: Child,
}

impl ProxyProcess {
    /// Starts `pinroute run --config` with `body` (routes, cookie, …) under a
    /// `[server]` section the kit fills in with fresh ports, then waits for
    /// `/readyz`. `server_extra` adds keys to `[server]`.
    pub async fn start(bin: &Path, server_extra: &str, body: &str) -> anyhow::Result<ProxyProcess> {
        Self::start_with_env(bin, server_extra, body, &[]).await
    }

    /// As [`ProxyProcess::start`], with extra environment variables.
    pub async fn start_with_env(
        bin: &Path,
        server_extra: &str,
        body: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<ProxyProcess> {
        let mut proxy = Self::spawn(bin, server_extra, body, env)?;
        if !proxy.wait_ready(Duration::from_secs(15)).await {
            let log = proxy.log();
            proxy.kill();
            bail!("proxy not ready within 15 s; log:\n{log}");
        }
        Ok(proxy)
    }

    /// Starts the proxy without waiting for `/readyz`.
    pub fn spawn(bin: &Path, server_extra: &str, body: &str, env: &[(&str, &str)]) -> anyhow::Result<ProxyProcess> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse()?;
        let id = unique("proxy");
        let dir = log_dir();
        let config_path = dir.join(format!("{id}.toml"));
        let log_path = dir.join(format!("{id}.log"));
        let text = format!(
            "[server]\nlisten = [\"{addr}\"]\nadmin = \"{admin}\"\ngrace_period = \"10s\"\nupgrade_sock = \"{}\"\npid_file = \"{}\"\n{server_extra}\n{body}",
            dir.join(format!("{id}.sock")).display(),
            dir.join(format!("{id}.pid")).display()
        );
        std::fs::write(&config_path, text)?;
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--config"]).arg(&config_path).stdout(Stdio::null()).stderr(log).env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
        Ok(ProxyProcess { addr, admin, config_path, log_path, child })
    }

    /// Starts a second proxy on the same config with `--upgrade`: it takes
    /// the listeners over when this one gets SIGQUIT.
    pub fn spawn_upgrade(&self, bin: &Path, env: &[(&str, &str)]) -> anyhow::Result<ProxyProcess> {
        let log_path = self.log_path.with_extension("upgrade.log");
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--upgrade", "--config"])
            .arg(&self.config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("spawning {}", bin.display()))?;
        Ok(ProxyProcess { addr: self.addr, admin: self.admin, config_path: self.config_path.clone(), log_path, child })
    }

    /// Rewrites the config file's routes (the `[server]` part is kept).
    pub fn rewrite_routes(&self, body: &str) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(&self.config_path)?;
        let server = text.split("\n[[route]]").next().unwrap_or("");
        std::fs::write(&self.config_path, format!("{server}\n{body}"))?;
        Ok(())
    }

    /// Waits up to 10 s until the admin table shows backend `id` in
    /// `state`; how long that took, or an error carrying the proxy's log.
    pub async fn wait_backend_state(&self, id: &str, state: &str) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let admin = self.admin;
        let seen = wait_until(Duration::from_secs(10), || async move {
            crate::client::backend_state(admin, id).await.as_deref() == Some(state)
        })
        .await;
        if !seen {
            bail!("{id} never became {state}; log:\n{}", self.log());
        }
        Ok(started.elapsed())
    }

    /// Whether `/readyz` answers 200 right now.
    pub async fn is_ready(&self) -> bool {
        http_client().get(self.admin_url("/readyz")).send().await.map(|r| r.status().is_success()).unwrap_or(false)
    }

    /// Waits up to `deadline` for `/readyz` to answer 200.
    pub async fn wait_ready(&self, deadline: Duration) -> bool {
        wait_until(deadline, || self.is_ready()).await
    }

    /// `http://addr{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `http://admin{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name (`TERM`, `QUIT`, `HUP`) with the system `kill`.
    pub fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -{name} failed");
        }
        Ok(())
    }

    /// Waits up to `deadline` for the process to exit; its exit code.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Kills and reaps.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
