//! The body pump: request bodies up to the backend, response bodies down to
//! the client, each chunk forwarded as it arrives (no buffering of streams).
//!
//! A small request body (a declared length up to [`HOLD_LIMIT`]) is read
//! whole before the backend is chosen: routing may need it (`/api/cancel`
//! names its ids in it), and a held body can be sent again when a backend
//! refuses the request unexecuted. Larger bodies stream and are never
//! resent.

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::ServerSession;

/// Largest request body held whole (pingora-proxy's retry buffer was the same).
pub const HOLD_LIMIT: u64 = 64 * 1024;

/// The request body, as far as it was read.
#[derive(Debug)]
pub enum RequestBody {
    /// None at all.
    Empty,
    /// Read whole.
    Held(Bytes),
    /// Not read yet: it streams from the client while it is sent.
    Streamed,
}

impl RequestBody {
    /// Whether the whole body is in hand, so the request can be sent again.
    pub fn is_held(&self) -> bool {
        !matches!(self, RequestBody::Streamed)
    }

    /// Whether there is a body to send.
    pub fn present(&self) -> bool {
        !matches!(self, RequestBody::Empty)
    }
}

/// Why a body could not be moved.
#[derive(Debug)]
pub enum PumpError {
    /// The client's side failed (it went away, or sent a broken body).
    Downstream(Box<pingora::Error>),
    /// The backend's side failed.
    Upstream(Box<pingora::Error>),
    /// The body grew past the route's `max_body`.
    TooLarge,
}

/// Reads a small body whole (see the module doc); a larger one is left to stream.
pub async fn read_small(
    down: &mut ServerSession,
    declared: Option<u64>,
    max_body: u64,
) -> Result<RequestBody, PumpError> {
    if down.is_body_empty() {
        return Ok(RequestBody::Empty);
    }
    let Some(len) = declared.filter(|len| *len <= HOLD_LIMIT) else {
        return Ok(RequestBody::Streamed);
    };
    let mut body = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = down.read_request_body().await.map_err(PumpError::Downstream)? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max_body {
            return Err(PumpError::TooLarge);
        }
    }
    Ok(if body.is_empty() { RequestBody::Empty } else { RequestBody::Held(body.freeze()) })
}

/// Sends the request body upstream (streaming it from the client unless held).
pub async fn send_request_body(
    down: &mut ServerSession,
    up: &mut UpstreamSession,
    body: &RequestBody,
    max_body: u64,
) -> Result<(), PumpError> {
    match body {
        RequestBody::Empty => {}
        RequestBody::Held(bytes) => {
            up.write_body(bytes).await.map_err(PumpError::Upstream)?;
        }
        RequestBody::Streamed => {
            let mut sent: u64 = 0;
            while let Some(chunk) = down.read_request_body().await.map_err(PumpError::Downstream)? {
                sent += chunk.len() as u64;
                if sent > max_body {
                    return Err(PumpError::TooLarge);
                }
                up.write_body(&chunk).await.map_err(PumpError::Upstream)?;
            }
        }
    }
    up.finish_body().await.map_err(PumpError::Upstream)?;
    Ok(())
}

/// Forwards the response body as it arrives, until the backend ends it or
/// the client goes away (watched between chunks, so a client that left an
/// idle log stream releases it at once, not at the next heartbeat).
pub async fn pump_response_body(down: &mut ServerSession, up: &mut UpstreamSession) -> Result<(), PumpError> {
    loop {
        tokio::select! {
            // The backend first: a body already in hand costs no read of the client.
            biased;
            chunk = up.read_body_bytes() => match chunk {
                Ok(Some(bytes)) => down.write_response_body(bytes, false).await.map_err(PumpError::Downstream)?,
                Ok(None) => break,
                Err(e) => return Err(PumpError::Upstream(e)),
            },
            gone = down.read_body_or_idle(true) => {
                // Only an error ends the idle watch (the client closed or reset).
                if let Err(e) = gone {
                    return Err(PumpError::Downstream(e));
                }
            }
        }
    }
    down.write_response_body(Bytes::new(), true).await.map_err(PumpError::Downstream)
}
