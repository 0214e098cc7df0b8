//! The upgrade tunnel: after a `101 Switching Protocols` (websockets: SSH
//! tunnels, interactive auth), bytes are copied both ways as they arrive
//! until either side closes. No idle timeout: an SSH session may sit idle
//! for hours (TCP keep-alive still finds a peer that vanished).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client_http1::Http1Client;
use super::upstream_http::Connection;

/// Room made for each read from the client.
const READ_SIZE: usize = 4096;

/// How the tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelEnd {
    /// The client closed (or its side failed).
    Client,
    /// The backend closed (or its side failed).
    Backend,
}

/// Copies both ways until one side ends. The 101 was written to the
/// client; what either side sent past its head goes first.
pub async fn run(down: &mut Http1Client, up: &mut Connection, write_timeout: Duration) -> TunnelEnd {
    let (client, pending) = down.raw();
    // What the client sent with its head belongs to the new protocol.
    let mut from_client: BytesMut = pending.split();
    loop {
        if !from_client.is_empty() {
            if up.write(&from_client, write_timeout).await.is_err() {
                return TunnelEnd::Backend;
            }
            from_client.clear();
        }
        from_client.reserve(READ_SIZE);
        tokio::select! {
            read = client.read_buf(&mut from_client) => match read {
                Ok(n) if n > 0 => {}
                _ => return TunnelEnd::Client,
            },
            from_backend = up.raw_chunk() => match from_backend {
                Ok(Some(bytes)) => {
                    let written = async {
                        client.write_all(&bytes).await?;
                        client.flush().await
                    };
                    if written.await.is_err() {
                        return TunnelEnd::Client;
                    }
                }
                Ok(None) | Err(_) => {
                    let _ = client.shutdown().await;
                    return TunnelEnd::Backend;
                }
            },
        }
    }
}
