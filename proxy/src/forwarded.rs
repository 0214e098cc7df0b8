//! Which client headers the proxy never forwards as sent. The SkyPilot
//! server trusts loopback callers without forwarding headers, so the engine
//! always sets `X-Forwarded-*` and `X-Real-IP` itself
//! (`engine::request_head`); identity headers are only ever set by
//! pinroute's own auth.

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
