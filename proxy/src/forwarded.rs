//! Headers the proxy sets or strips on the way upstream. The SkyPilot server
//! trusts loopback callers without forwarding headers, so they are always
//! set; identity headers are only ever set by pinroute's own auth.

use std::net::IpAddr;

use pingora::http::RequestHeader;
use pingora::Result;

/// Identity headers a client must never be able to supply.
pub const IDENTITY_HEADERS: [&str; 7] = [
    "x-auth-request-email",
    "x-auth-request-user",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "x-skypilot-auth",
    "x-skypilot-auth-mode",
];

/// Sets `X-Forwarded-For` (appended), `X-Real-IP`, `X-Forwarded-Proto` and
/// `X-Forwarded-Host`, and strips client-supplied identity headers. `Host`
/// is left as the client sent it.
pub fn apply_forwarding(upstream: &mut RequestHeader, client: Option<IpAddr>, proto: &str) -> Result<()> {
    // One pass over the names the client sent instead of a lookup per
    // identity header: almost every request has none of them.
    if upstream.headers.keys().any(|name| IDENTITY_HEADERS.contains(&name.as_str())) {
        for name in IDENTITY_HEADERS {
            upstream.remove_header(name);
        }
    }
    if let Some(ip) = client {
        let ip = ip.to_canonical().to_string();
        let chain = match upstream.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.trim().is_empty() => format!("{existing}, {ip}"),
            _ => ip.clone(),
        };
        upstream.insert_header("x-forwarded-for", chain)?;
        upstream.insert_header("x-real-ip", ip)?;
    }
    upstream.insert_header("x-forwarded-proto", proto)?;
    let host = upstream
        .headers
        .get(http::header::HOST)
        .cloned()
        .or_else(|| upstream.uri.authority().and_then(|a| http::HeaderValue::from_str(a.as_str()).ok()));
    if let Some(host) = host {
        upstream.insert_header("x-forwarded-host", host)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_forwarding_and_strips_identity() {
        let mut req = RequestHeader::build("GET", b"/api/health", None).unwrap();
        req.insert_header("host", "api.example.com").unwrap();
        req.insert_header("x-forwarded-for", "10.1.1.1").unwrap();
        req.insert_header("x-auth-request-email", "admin@evil").unwrap();
        req.insert_header("X-Skypilot-Auth-Mode", "token").unwrap();
        apply_forwarding(&mut req, Some("127.0.0.9".parse().unwrap()), "http").unwrap();
        let get = |n: &str| req.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(get("x-forwarded-for").as_deref(), Some("10.1.1.1, 127.0.0.9"));
        assert_eq!(get("x-real-ip").as_deref(), Some("127.0.0.9"));
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get("x-forwarded-host").as_deref(), Some("api.example.com"));
        assert_eq!(get("host").as_deref(), Some("api.example.com"));
        assert_eq!(get("x-auth-request-email"), None);
        assert_eq!(get("x-skypilot-auth-mode"), None);
    }
}
