//! The upgrade tunnel: after a `101 Switching Protocols` (websockets: SSH
//! tunnels, interactive auth), bytes are copied both ways as they arrive
//! until either side closes. No idle timeout: an SSH session may sit idle
//! for hours (TCP keep-alive still finds a peer that vanished).

use std::time::Duration;

use pingora::protocols::http::ServerSession;

use super::upstream_http::Connection;

/// How the tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed (or its side failed).
    Client,
    /// The backend closed (or its side failed).
    Backend,
}

/// Copies both ways until one side ends. The client session already holds
/// the upgrade (the 101 was written to it), so its body reader passes raw
/// bytes; the backend's bytes that came with its head go first.
pub async fn run(down: &mut ServerSession, up: &mut Connection, write_timeout: Duration) -> TunnelEnd {
    down.set_read_timeout(None);
    loop {
        tokio::select! {
            from_client = down.read_request_body() => match from_client {
                Ok(Some(bytes)) => {
                    if up.write(&bytes, write_timeout).await.is_err() {
                        return TunnelEnd::Backend;
                    }
                }
                Ok(None) | Err(_) => return TunnelEnd::Client,
            },
            from_backend = up.raw_chunk() => match from_backend {
                Ok(Some(bytes)) => {
                    if down.write_response_body(bytes, false).await.is_err() {
                        return TunnelEnd::Client;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = down.write_response_body(bytes::Bytes::new(), true).await;
                    return TunnelEnd::Backend;
                }
            },
        }
    }
}
