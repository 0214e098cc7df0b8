//! The body pump: request bodies up to the backend, response bodies down to
//! the client, each chunk forwarded as it arrives (no buffering of streams).
//!
//! A small request body (a declared length up to [`HOLD_LIMIT`]) is read
//! whole before the backend is chosen: routing may need it (`/api/cancel`
//! names its ids in it), and a held body can be sent again when a backend
//! refuses the request unexecuted. Larger bodies stream and are never
//! resent.

use std::io::Write;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora::{Error, ErrorType};

use super::downstream::Downstream;
use super::upstream_http::{Connection, Framing, UpstreamError};

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
    Upstream(UpstreamError),
    /// The body grew past the route's `max_body`.
    TooLarge,
}

/// Reads a small body whole (see the module doc); a larger one is left to stream.
pub async fn read_small(
    down: &mut Downstream<'_>,
    declared: Option<u64>,
    max_body: u64,
    timeout: Duration,
) -> Result<RequestBody, PumpError> {
    if down.is_body_empty() {
        return Ok(RequestBody::Empty);
    }
    let Some(len) = declared.filter(|len| *len <= HOLD_LIMIT) else {
        return Ok(RequestBody::Streamed);
    };
    let mut body = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = next_piece(down, timeout).await? {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max_body {
            return Err(PumpError::TooLarge);
        }
    }
    Ok(if body.is_empty() { RequestBody::Empty } else { RequestBody::Held(body.freeze()) })
}

/// Sends the request body upstream (streaming it from the client unless
/// held), chunk-encoded when it has no declared length.
pub async fn send_request_body(
    down: &mut Downstream<'_>,
    up: &mut Connection,
    body: &RequestBody,
    chunked: bool,
    max_body: u64,
    timeout: Duration,
) -> Result<(), PumpError> {
    match body {
        RequestBody::Empty => return Ok(()),
        RequestBody::Held(bytes) if !chunked => up.write(bytes, timeout).await.map_err(PumpError::Upstream)?,
        RequestBody::Held(bytes) => up.write(&chunk(bytes), timeout).await.map_err(PumpError::Upstream)?,
        RequestBody::Streamed => {
            let mut sent: u64 = 0;
            while let Some(bytes) = next_piece(down, timeout).await? {
                sent += bytes.len() as u64;
                if sent > max_body {
                    return Err(PumpError::TooLarge);
                }
                if bytes.is_empty() {
                    continue;
                }
                if chunked {
                    up.write(&chunk(&bytes), timeout).await.map_err(PumpError::Upstream)?;
                } else {
                    up.write(&bytes, timeout).await.map_err(PumpError::Upstream)?;
                }
            }
        }
    }
    if chunked {
        up.write(b"0\r\n\r\n", timeout).await.map_err(PumpError::Upstream)?;
    }
    Ok(())
}

/// The next piece of the client's body. A client that stalls mid-body
/// for longer than the route's `write_timeout` (the gap allowed between two
/// writes of the request) is answered 408, as nginx's `client_body_timeout`
/// does: it would hold a backend connection and a request slot forever.
async fn next_piece(down: &mut Downstream<'_>, timeout: Duration) -> Result<Option<Bytes>, PumpError> {
    match tokio::time::timeout(timeout, down.read_body()).await {
        Ok(piece) => piece.map_err(PumpError::Downstream),
        Err(_) => Err(PumpError::Downstream(Error::explain(ErrorType::ReadTimedout, "the client stalled mid-body"))),
    }
}

/// One chunk of a chunked body: size line, data, CRLF, in one buffer (one write).
fn chunk(data: &[u8]) -> BytesMut {
    let mut out = BytesMut::with_capacity(data.len() + 20);
    let _ = write!((&mut out).writer(), "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Forwards the response body as it arrives, until the backend ends it or
/// the client goes away (watched between chunks, so a client that left an
/// idle log stream releases it at once, not at the next heartbeat).
pub async fn pump_response_body(
    down: &mut Downstream<'_>,
    up: &mut Connection,
    framing: &mut Framing,
    timeout: Option<Duration>,
) -> Result<(), PumpError> {
    loop {
        tokio::select! {
            // The backend first: a body already in hand costs no read of the client.
            biased;
            chunk = up.body_chunk(framing, timeout) => match chunk {
                Ok(Some(bytes)) => down.write_body(bytes, false).await.map_err(PumpError::Downstream)?,
                Ok(None) => break,
                Err(e) => return Err(PumpError::Upstream(e)),
            },
            gone = down.gone() => return Err(PumpError::Downstream(gone)),
        }
    }
    down.write_body(Bytes::new(), true).await.map_err(PumpError::Downstream)
}
