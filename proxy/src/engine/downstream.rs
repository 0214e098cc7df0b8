//! The client side of one request, whichever protocol carries it: the
//! engine's own HTTP/1 codec, or an HTTP/2 stream of pingora's. The walk
//! (`exchange`) sees only this.

use std::net::IpAddr;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use pingora::{Error, Result};

use super::client_http1::Http1Client;

/// The client side of the request being served.
pub enum Downstream<'a> {
    /// HTTP/1.x, the engine's codec.
    H1(&'a mut Http1Client),
    /// An HTTP/2 stream (pingora's codec).
    H2(&'a mut ServerSession),
}

impl Downstream<'_> {
    /// The request head.
    pub fn req_header(&self) -> &RequestHeader {
        match self {
            Downstream::H1(c) => c.req_header(),
            Downstream::H2(s) => s.req_header(),
        }
    }

    /// The client's address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        match self {
            Downstream::H1(c) => c.client_ip(),
            Downstream::H2(s) => s.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        }
    }

    /// Whether the request came over TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Downstream::H1(c) => c.is_tls(),
            Downstream::H2(s) => s.digest().and_then(|d| d.ssl_digest.as_ref()).is_some(),
        }
    }

    /// Whether the request has no body.
    pub fn is_body_empty(&mut self) -> bool {
        match self {
            Downstream::H1(c) => c.is_body_empty(),
            Downstream::H2(s) => s.is_body_empty(),
        }
    }

    /// Answers `Expect: 100-continue`.
    pub async fn write_continue(&mut self) -> Result<()> {
        match self {
            Downstream::H1(c) => c.write_continue().await,
            Downstream::H2(s) => s.write_continue_response().await,
        }
    }

    /// The next piece of the request body; `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        match self {
            Downstream::H1(c) => c.read_body().await,
            Downstream::H2(s) => s.read_request_body().await,
        }
    }

    /// Sends the response head (HTTP/1: buffered until the first body
    /// piece or [`Self::flush`], so a small response is one write).
    pub async fn write_head(&mut self, head: Box<ResponseHeader>) -> Result<()> {
        match self {
            Downstream::H1(c) => {
                c.write_head(&head);
                Ok(())
            }
            Downstream::H2(s) => s.write_response_header(head).await,
        }
    }

    /// Writes what is buffered (a head whose body has yet to arrive).
    pub async fn flush(&mut self) -> Result<()> {
        match self {
            Downstream::H1(c) => c.flush().await,
            Downstream::H2(_) => Ok(()),
        }
    }

    /// Sends a piece of the response body; `end`: it was the last.
    pub async fn write_body(&mut self, data: Bytes, end: bool) -> Result<()> {
        match self {
            Downstream::H1(c) => c.write_body(&data, end).await,
            Downstream::H2(s) => s.write_response_body(data, end).await,
        }
    }

    /// Resolves only when the client went away (watched while a response
    /// streams). Cancel-safe.
    pub async fn gone(&mut self) -> Box<Error> {
        match self {
            Downstream::H1(c) => Box::new(c.closed().await),
            Downstream::H2(s) => loop {
                // Only an error ends the idle watch (the client reset the stream).
                if let Err(e) = s.read_body_or_idle(true).await {
                    return e;
                }
            },
        }
    }

    /// The connection closes after this response.
    pub fn close_after(&mut self) {
        match self {
            Downstream::H1(c) => c.close_after(),
            Downstream::H2(s) => s.set_keepalive(None),
        }
    }
}
