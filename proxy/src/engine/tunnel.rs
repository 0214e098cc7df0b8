//! The upgrade tunnel: after a `101 Switching Protocols` (websockets: SSH
//! tunnels, interactive auth), bytes are copied both ways as they arrive
//! until either side closes. No idle timeout: an SSH session may sit idle
//! for hours (TCP keep-alive still finds a peer that vanished).

use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::ServerSession;

/// How the tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed (or its side failed).
    Client,
    /// The backend closed (or its side failed).
    Backend,
}

/// Copies both ways until one side ends. Both sessions already hold the
/// upgrade (the 101 was read from the backend and written to the client),
/// so their body readers pass raw bytes, those that came with the heads included.
pub async fn run(down: &mut ServerSession, up: &mut UpstreamSession) -> TunnelEnd {
    down.set_read_timeout(None);
    up.read_timeout = None;
    up.maybe_upgrade_body_writer();
    loop {
        tokio::select! {
            from_client = down.read_request_body() => match from_client {
                Ok(Some(bytes)) => {
                    if up.write_body(&bytes).await.is_err() {
                        return TunnelEnd::Backend;
                    }
                }
                Ok(None) | Err(_) => {
                    // Pass the close on so the backend ends its side too.
                    let _ = up.finish_body().await;
                    return TunnelEnd::Client;
                }
            },
            from_backend = up.read_body_bytes() => match from_backend {
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
