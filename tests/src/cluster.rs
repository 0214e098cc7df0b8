//! A fake cluster: the fake Kubernetes API server plus pods whose servers are
//! real demo backends, each on its own loopback address (127.0.0.N) and the
//! cluster's one container port, as pods have their own IPs. Proxies started
//! from it reach the API server through a kubeconfig.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::Context;

use crate::fake_kube::{FakeKube, FakePod};
use crate::{free_port, BackendProcess, ProxyProcess};

/// The SkyPilot chart's namespace, API-server label and readiness label.
pub const NS: &str = "skypilot";
/// `app: <release>-api` for release `skypilot`.
pub const APP: (&str, &str) = ("app", "skypilot-api");
/// The label whose removal cordons a pod.
pub const READY: (&str, &str) = ("skypilot.co/ready", "true");

/// A loopback address no other pod of this test process has (127.0.0.10 up).
pub fn next_pod_ip() -> String {
    static NEXT: AtomicU8 = AtomicU8::new(10);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    assert!(n < 255, "more than 245 pod addresses in one test binary");
    format!("127.0.0.{n}")
}

/// The API server and the pods' backends; every process stops on drop.
pub struct FakeCluster {
    /// The fake API server.
    pub kube: FakeKube,
    /// The container port every pod's backend listens on.
    pub port: u16,
    bin: PathBuf,
    backends: Vec<BackendProcess>,
}

impl FakeCluster {
    /// An empty cluster; `bin` is the `pinroute` binary (proxy and demo backends).
    pub async fn start(bin: &Path) -> anyhow::Result<FakeCluster> {
        Ok(FakeCluster { kube: FakeKube::start().await?, port: free_port(), bin: bin.to_owned(), backends: Vec::new() })
    }

    /// Pod `ns/name` with `labels`, Ready, served by a demo backend started
    /// with `backend_args`. Returns the pod's IP.
    pub fn add_pod(
        &mut self,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
        backend_args: &[&str],
    ) -> anyhow::Result<String> {
        let ip = next_pod_ip();
        let listen = format!("{ip}:{}", self.port);
        let backend = BackendProcess::spawn_with(&self.bin, name, &listen, backend_args)
            .with_context(|| format!("backend of pod {ns}/{name}"))?;
        self.backends.push(backend);
        self.kube.add_pod(FakePod::new(ns, name, labels, &ip));
        Ok(ip)
    }

    /// An API-server pod of release `skypilot` (namespace, `app` and
    /// readiness labels as the chart sets them).
    pub fn add_api_pod(&mut self, name: &str, backend_args: &[&str]) -> anyhow::Result<String> {
        self.add_pod(NS, name, &[APP, READY], backend_args)
    }

    /// The backend of pod `name`.
    pub fn backend(&mut self, name: &str) -> Option<&mut BackendProcess> {
        self.backends.iter_mut().find(|b| b.name == name)
    }

    /// Kills pod `name`'s backend at once (kill -9), leaving the pod object.
    pub fn kill(&mut self, name: &str) {
        if let Some(i) = self.backends.iter().position(|b| b.name == name) {
            self.backends.remove(i).kill();
        }
    }

    /// A proxy with `body` (routes, `[ingress]`, ...) and `server_extra`
    /// under `[server]`, talking to this cluster's API server.
    pub async fn proxy(&self, server_extra: &str, body: &str, cookie_key: &str) -> anyhow::Result<ProxyProcess> {
        let kubeconfig = self.kube.kubeconfig_path().to_string_lossy().into_owned();
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("PINROUTE_COOKIE_KEY", cookie_key)];
        ProxyProcess::start_with_env(&self.bin, server_extra, body, &env).await
    }

    /// `[[route]]` at `/` over the pods selected by `app=skypilot-api` on
    /// this cluster's port, with `extra` route keys and fast health checks.
    pub fn api_route(&self, extra: &str) -> String {
        format!(
            "[[route]]\nprefix = \"/\"\n{extra}\n[route.kubernetes]\nnamespace = \"{NS}\"\nselector = \"app=skypilot-api\"\n\
             ready_label = \"skypilot.co/ready=true\"\nport = {}\n[route.health_check]\ninterval = \"300ms\"\ntimeout = \"200ms\"\n",
            self.port
        )
    }
}
