//! HTTP client helpers shared by the black-box tests.

use std::net::SocketAddr;

use crate::process::http_client;

/// The `SKYPILOT_ROUTEID` value a response sets, if any.
pub fn routeid(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("SKYPILOT_ROUTEID=").map(|rest| rest.split(';').next().unwrap_or("").to_string()))
}

/// Which demo backend answered (`X-Demo-Backend`), or `"?"`.
pub fn served_by(response: &reqwest::Response) -> String {
    response.headers().get("x-demo-backend").and_then(|v| v.to_str().ok()).unwrap_or("?").to_string()
}

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
