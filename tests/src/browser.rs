//! A real headless Chromium driven over WebDriver (chromedriver as a child
//! process, fantoccini as the client), for tests that assert on what a page
//! renders. Missing Chromium is an error that says how to install it, never
//! a skipped test.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
pub use fantoccini::Locator;
use fantoccini::{Client, ClientBuilder};

use crate::free_port;

const INSTALL: &str = "headless Chromium is needed for the dashboard's browser test: \
                       apt-get install -y chromium chromium-driver (.ci/run installs them when missing)";

fn find(names: &[&str], env: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// chromedriver and one browser session; both end on drop.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    /// The browser's own profile directory: it names the browser's
    /// processes, so they can be found and ended even when chromedriver
    /// dies first (a panicking test) and leaves them behind.
    profile: PathBuf,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("driver", &self.driver.id()).finish()
    }
}

impl Browser {
    /// Starts chromedriver (`$CHROMEDRIVER` or on `PATH`) and a headless
    /// Chromium (`$CHROMIUM` or `chromium` on `PATH`).
    pub async fn start() -> anyhow::Result<Browser> {
        let driver_bin = find(&["chromedriver"], "CHROMEDRIVER").context(INSTALL)?;
        let chromium = find(&["chromium", "chromium-browser", "google-chrome"], "CHROMIUM").context(INSTALL)?;
        let port = free_port();
        let profile = std::env::temp_dir().join(format!("pinroute-tests/chromium-{}-{port}", std::process::id()));
        let mut driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}; {INSTALL}", driver_bin.display()))?;
        let end = Instant::now() + Duration::from_secs(15);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > end {
                let _ = driver.kill();
                bail!("chromedriver did not listen on {port} within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_string(),
            serde_json::json!({
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1600,1000", "--no-proxy-server",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let client = match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = driver.kill();
                let _ = driver.wait();
                end_browser_processes(&profile);
                bail!("no browser session ({e}); {INSTALL}");
            }
        };
        Ok(Browser { client, driver, profile })
    }

    /// The text of the first element matching `css`, if there is one.
    pub async fn text(&self, css: &str) -> Option<String> {
        self.client.find(Locator::Css(css)).await.ok()?.text().await.ok()
    }

    /// Waits up to `deadline` until the element matching `css` has a text
    /// for which `ok` holds; returns that text, or what it last saw.
    pub async fn wait_text(&self, css: &str, deadline: Duration, ok: impl Fn(&str) -> bool) -> Result<String, String> {
        let end = Instant::now() + deadline;
        let mut last = None;
        while Instant::now() < end {
            last = self.text(css).await;
            if last.as_deref().is_some_and(&ok) {
                return Ok(last.unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("{css}: last seen {last:?}"))
    }

    /// Ends the session, chromedriver and the browser (on drop too).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        end_browser_processes(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Kills every process whose command line names `profile` (the browser
/// and its helpers), found in `/proc`.
fn end_browser_processes(profile: &std::path::Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(entries) = std::fs::read_dir("/proc") else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if cmdline.split(|b| *b == 0).any(|arg| arg == needle.as_bytes()) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
}
