//! HTTP client helpers shared by the black-box tests.

use std::net::SocketAddr;

use crate::process::http_client;

pub use pinroute::demo::load::{routeid, served_by};

/// `GET http://addr{path}` with an optional `SKYPILOT_ROUTEID` cookie.
pub async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> reqwest::Result<reqwest::Response> {
    let mut req = http_client().get(format!("http://{addr}{path}"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("SKYPILOT_ROUTEID={c}"));
    }
    req.send().await
}

/// The `state` of backend `id` in the admin table, if listed.
pub async fn backend_state(admin: SocketAddr, id: &str) -> Option<String> {
    let rows: Vec<serde_json::Value> =
        http_client().get(format!("http://{admin}/admin/backends")).send().await.ok()?.json().await.ok()?;
    rows.iter().find(|r| r["id"] == id).and_then(|r| r["state"].as_str()).map(str::to_string)
}
