//! Test kit for pinroute's black-box tests: real child processes (the
//! `pinroute` binary as proxy and as demo backends) on 127.0.0.1, a fake
//! Kubernetes API server speaking the real list/watch protocol, and HTTP
//! helpers. Every wait has a deadline; every process is killed on drop.

pub mod browser;
pub mod certs;
pub mod client;
pub mod cluster;
pub mod fake_kube;
pub mod http1;
pub mod l4_balancer;
pub mod procfs;
/// The sky-CLI-shaped load driver (shared with `pinroute demo --rolling`).
pub use pinroute::demo::load;
pub mod process;
pub mod raw_backend;
pub mod replica_load;
pub mod watch_reader;

pub use process::{free_port, http_client, wait_until, BackendProcess, ProxyProcess};
