//! The client side of an HTTP/1.x connection, over the engine's own read
//! and write buffers: request heads parsed with `httparse`, request bodies
//! framed by length or chunks, responses written with their head and a
//! small body in one write, pipelined requests served from the buffer.
//!
//! pingora's server codec would do this, at a price paid on every request:
//! a session object, a 4 KiB head buffer and a case map built per request,
//! another 4 KiB buffer per response head, and a `Date` written into every
//! response. Here one read buffer and one write buffer serve the whole
//! connection, and its per-request state is a few words.

use std::net::IpAddr;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::chunked::{ends_chunked, ChunkedDecoder, Step};
use super::reply::detail_body;
use super::request_head::{connection_lists, field};

/// Room made for each read of a head.
const READ_SIZE: usize = 2048;
/// Largest read of a request body (an upload moves in pieces this big).
const BODY_READ: usize = 64 * 1024;
/// The read buffer is given back after a request when it grew past this.
const KEEP_BUF: usize = 16 * 1024;
/// Largest request head accepted (nginx's default allows 32 KiB of fields).
const MAX_HEAD: usize = 64 * 1024;
/// Most request header fields accepted.
const MAX_FIELDS: usize = 128;
/// A response body piece up to this size is copied behind its head (one write).
const COALESCE: usize = 16 * 1024;
/// The write buffer is given back when it grew past this.
const KEEP_OUT: usize = 16 * 1024;
/// Largest unread request body drained so the connection can be kept.
const DRAIN_MAX: u64 = 64 * 1024;
/// Pipelined bytes buffered while a response streams; past this the
/// client's reads are left to wait (TCP flow control holds the client).
const PIPELINE_MAX: usize = 64 * 1024;
/// How long a connection closed on a client that may still be sending
/// reads and drops what comes (nginx's `lingering_time` is 30 s; a client
/// that is still sending after this long is not reading either).
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Once the proxy shuts down, how long a connection may sit idle before it
/// is closed. A client's pool hands out its most recently used connection
/// first, so one left idle this long is the one it is least likely to be
/// writing a request on at the moment it closes (the race no HTTP/1 server
/// can close: RFC 9112 9.3.1 leaves the retry to the client). Busy
/// connections close after their next response instead.
pub const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// Bytes a request-target may carry that HTTP's grammar does not allow:
/// clients send them anyway (unencoded `|`, `{`, UTF-8), so they are
/// percent-encoded, as nginx and pingora do, instead of refused.
/// (Non-ASCII bytes are always encoded; control bytes are refused.)
const TARGET_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::AsciiSet::EMPTY
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Why no request could be read.
#[derive(Debug)]
pub enum ReadHeadError {
    /// The bytes are not an HTTP/1.x request head (400, then close).
    Malformed(String),
    /// The head is larger than [`MAX_HEAD`] (431, then close).
    TooLarge,
}

/// How the request body is delimited.
#[derive(Debug)]
enum BodyIn {
    /// No body, or all of it was read.
    Done,
    /// `Content-Length`: this many bytes to go.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
}

/// How the response body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyOut {
    /// No head written yet.
    Unset,
    /// No body may follow (HEAD, 204, 304).
    None,
    /// A declared length.
    Length,
    /// Chunked: every piece gets its size line.
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients, upgrades).
    Close,
    /// The response is complete.
    Finished,
}

/// One client connection speaking HTTP/1.x.
#[derive(Debug)]
pub struct Http1Client {
    stream: Stream,
    /// Bytes read and not yet consumed: the rest of a head, a body, pipelined requests.
    buf: BytesMut,
    /// Response bytes not yet written.
    out: BytesMut,
    /// The current request's head.
    head: Option<RequestHeader>,
    body_in: BodyIn,
    body_out: BodyOut,
    /// The client connection may carry another request after this one.
    keep_alive: bool,
    /// The request was sent over TLS.
    tls: bool,
    /// The client's address.
    client: Option<IpAddr>,
    /// A `100 Continue` was sent for the current request.
    continued: bool,
}

impl Http1Client {
    /// Wraps an accepted connection (plain listeners give it no write
    /// buffer of pingora's: the engine writes whole responses itself).
    pub fn new(stream: Stream) -> Http1Client {
        let tls = stream.get_ssl_digest().is_some();
        let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().cloned());
        let client = peer.and_then(|a| a.as_inet().map(|a| a.ip()));
        Http1Client {
            stream,
            buf: BytesMut::new(),
            out: BytesMut::new(),
            head: None,
            body_in: BodyIn::Done,
            body_out: BodyOut::Unset,
            keep_alive: false,
            tls,
            client,
            continued: false,
        }
    }

    /// The client's address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client
    }

    /// Whether the connection is TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Reads the next request head. `Ok(false)`: the client closed, or
    /// sent nothing within `idle` (no limit when `None`), before a request
    /// began. Once a request has begun, each read waits up to `idle` too.
    ///
    /// `stop` is the proxy's shutdown. Once it is true, a connection
    /// without a request begun waits at most [`DRAIN_IDLE`] more (a
    /// request already begun is read whole and served, with
    /// `Connection: close`).
    pub async fn read_request(
        &mut self,
        idle: Option<Duration>,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<bool, ReadHeadError> {
        self.head = None;
        self.body_in = BodyIn::Done;
        self.body_out = BodyOut::Unset;
        self.continued = false;
        if !self.buf.is_empty() {
            // A pipelined request: parsing it costs no read, so give the
            // runtime a chance to run others between them.
            tokio::task::consume_budget().await;
        }
        let mut draining = *stop.borrow();
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf)? {
                    Some(head) => return self.begin(head).map(|()| true),
                    None if self.buf.len() >= MAX_HEAD => return Err(ReadHeadError::TooLarge),
                    None => {}
                }
            }
            let began = !self.buf.is_empty();
            let limit = match (began, draining) {
                (false, true) => Some(idle.map_or(DRAIN_IDLE, |idle| idle.min(DRAIN_IDLE))),
                _ => idle,
            };
            self.buf.reserve(READ_SIZE);
            let read = self.stream.read_buf(&mut self.buf);
            let read = async {
                match limit {
                    // A head that does not arrive in time is dropped unanswered, as nginx does.
                    Some(limit) => tokio::time::timeout(limit, read).await.ok(),
                    None => Some(read.await),
                }
            };
            let n = if began || draining {
                read.await
            } else {
                // The read first: the shutdown is only waited on (its
                // waiter registered) when no request is there yet.
                tokio::select! {
                    biased;
                    n = read => n,
                    _ = stop.changed() => {
                        draining = true;
                        continue;
                    }
                }
            };
            match n {
                None => return Ok(false),
                Some(Ok(0) | Err(_)) if !began => return Ok(false),
                Some(Ok(0)) => return Err(ReadHeadError::Malformed("the client closed mid-head".into())),
                Some(Err(e)) => return Err(ReadHeadError::Malformed(format!("reading the request head: {e}"))),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Settles framing and keep-alive for a head just parsed (RFC 9112
    /// 6.1–6.3, 9.3). Both `Content-Length` and `Transfer-Encoding` are
    /// left in the head: the engine refuses that request itself.
    fn begin(&mut self, head: RequestHeader) -> Result<(), ReadHeadError> {
        let bad = |what: &str| Err(ReadHeadError::Malformed(what.to_string()));
        pingora::protocols::http::authority::validate_request_authority(&head).or_else(|e| bad(&e.to_string()))?;
        let says = |token: &[u8]| connection_lists(&head.headers, token);
        self.keep_alive = match head.version {
            Version::HTTP_11 => !says(b"close"),
            Version::HTTP_10 => says(b"keep-alive"),
            _ => false,
        };
        self.body_in = if let Some(te) = head.headers.get(header::TRANSFER_ENCODING) {
            if head.version != Version::HTTP_11 {
                return bad("Transfer-Encoding in an HTTP/1.0 request");
            }
            if !ends_chunked(te) || head.headers.get_all(header::TRANSFER_ENCODING).iter().count() > 1 {
                return bad("a Transfer-Encoding that does not end in chunked");
            }
            BodyIn::Chunked(ChunkedDecoder::default())
        } else {
            match declared_length(&head) {
                Ok(None | Some(0)) => BodyIn::Done,
                Ok(Some(n)) => BodyIn::Length(n),
                Err(what) => return bad(what),
            }
        };
        self.head = Some(head);
        Ok(())
    }

    /// The current request's head (an empty `GET /` before one was read).
    pub fn req_header(&self) -> &RequestHeader {
        static NONE: std::sync::OnceLock<RequestHeader> = std::sync::OnceLock::new();
        self.head.as_ref().unwrap_or_else(|| {
            NONE.get_or_init(|| RequestHeader::build_no_case("GET", b"/", None).unwrap_or_else(|_| unreachable!()))
        })
    }

    /// Whether the request has no body at all.
    pub fn is_body_empty(&self) -> bool {
        matches!(self.body_in, BodyIn::Done)
    }

    /// Closes the connection after this response.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// The next piece of the request body; `None` at its end.
    pub async fn read_body(&mut self) -> pingora::Result<Option<Bytes>> {
        loop {
            match &mut self.body_in {
                BodyIn::Done => return Ok(None),
                BodyIn::Length(left) => {
                    if !self.buf.is_empty() {
                        let take = (self.buf.len() as u64).min(*left) as usize;
                        *left -= take as u64;
                        if *left == 0 {
                            self.body_in = BodyIn::Done;
                        }
                        return Ok(Some(self.buf.split_to(take).freeze()));
                    }
                }
                BodyIn::Chunked(decoder) => match decoder.step(&mut self.buf) {
                    Ok(Step::Data(data)) => return Ok(Some(data)),
                    Ok(Step::Done) => {
                        self.body_in = BodyIn::Done;
                        return Ok(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(_) => return Error::e_explain(ErrorType::InvalidHTTPHeader, "invalid chunked request body"),
                },
            }
            // Room for what is left of a declared body, else for a large piece.
            let room = match self.body_in {
                BodyIn::Length(left) => (left.min(BODY_READ as u64) as usize).max(READ_SIZE),
                _ => BODY_READ / 4,
            };
            self.buf.reserve(room);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Error::e_explain(ErrorType::ConnectionClosed, "the client closed mid-body"),
                Ok(_) => {}
                Err(e) => return Error::e_because(ErrorType::ReadError, "reading the request body", e),
            }
        }
    }

    /// Waits while a response streams; returns only when the client closed
    /// or failed. Bytes it sends meanwhile (pipelined requests) are kept
    /// for later, up to [`PIPELINE_MAX`]. Cancel-safe.
    pub async fn closed(&mut self) -> pingora::Error {
        loop {
            if self.buf.len() >= PIPELINE_MAX || !matches!(self.body_in, BodyIn::Done) {
                // Not watching: an unread body or a full buffer stays in the socket.
                return std::future::pending().await;
            }
            if self.buf.is_empty() {
                // A stream may be watched for hours: its read buffer is not kept meanwhile.
                self.buf = BytesMut::new();
            }
            let mut piece = [0u8; 1024];
            match self.stream.read(&mut piece).await {
                Ok(0) => return *Error::explain(ErrorType::ConnectionClosed, "the client closed"),
                Ok(n) => self.buf.extend_from_slice(&piece[..n]),
                Err(e) => return *Error::because(ErrorType::ReadError, "the client's connection failed", e),
            }
        }
    }

    /// Answers `Expect: 100-continue`.
    pub async fn write_continue(&mut self) -> pingora::Result<()> {
        self.continued = true;
        self.write_now(b"HTTP/1.1 100 Continue\r\n\r\n").await
    }

    /// Whether what is left of the request body will be read to its end
    /// after the response (see [`Self::finish`]), so that the connection
    /// can carry another request: not when it is longer than [`DRAIN_MAX`],
    /// nor when the client waits for a `100 Continue` that a final answer
    /// (a 413, say) replaces: such a client may never send the body.
    fn body_will_drain(&self) -> bool {
        if matches!(self.body_in, BodyIn::Done) {
            return true;
        }
        let waits = !self.continued
            && self
                .req_header()
                .headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        match self.body_in {
            _ if waits => false,
            BodyIn::Length(left) => left <= DRAIN_MAX,
            BodyIn::Done | BodyIn::Chunked(_) => true,
        }
    }

    /// Writes the response head into the write buffer (sent with the first
    /// body piece, or by [`Self::flush`]). Picks the body's framing for
    /// this client; a body delimited by closing ends the connection.
    pub fn write_head(&mut self, head: &ResponseHeader) {
        let status = head.status.as_u16();
        let method = &self.req_header().method;
        let chunked = head.headers.get(header::TRANSFER_ENCODING).is_some_and(ends_chunked);
        let http10 = self.req_header().version != Version::HTTP_11;
        self.body_out = if status == 101 {
            BodyOut::Close
        } else if method == Method::HEAD || status == 204 || status == 304 {
            BodyOut::None
        } else if chunked && !http10 {
            BodyOut::Chunked
        } else if !chunked && head.headers.contains_key(header::CONTENT_LENGTH) {
            BodyOut::Length
        } else {
            BodyOut::Close
        };
        if self.body_out == BodyOut::Close || !self.body_will_drain() {
            self.keep_alive = false;
        }
        let out = &mut self.out;
        out.reserve(256);
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(head.status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(head.status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.put_slice(b"\r\n");
        let mut has_date = false;
        for (name, value) in &head.headers {
            if name == header::CONNECTION || (http10 && name == header::TRANSFER_ENCODING) {
                continue;
            }
            has_date |= name == header::DATE;
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        if !has_date && status >= 200 {
            field(out, b"date", pingora::protocols::http::date::get_cached_date().as_bytes());
        }
        match (status, self.keep_alive) {
            (101, _) => out.put_slice(b"connection: upgrade\r\n"),
            (_, false) => out.put_slice(b"connection: close\r\n"),
            (_, true) if http10 => out.put_slice(b"connection: keep-alive\r\n"),
            (_, true) => {}
        }
        out.put_slice(b"\r\n");
    }

    /// Sends a piece of the response body (framed as the head said); `end`:
    /// it was the last. Everything buffered is written before it returns.
    pub async fn write_body(&mut self, data: &[u8], end: bool) -> pingora::Result<()> {
        match self.body_out {
            BodyOut::None | BodyOut::Finished | BodyOut::Unset => {}
            BodyOut::Length | BodyOut::Close if data.len() <= COALESCE => self.out.put_slice(data),
            BodyOut::Length | BodyOut::Close => {
                self.flush().await?;
                self.write_now(data).await?;
            }
            BodyOut::Chunked => {
                if !data.is_empty() {
                    let size = format!("{:x}\r\n", data.len());
                    self.out.put_slice(size.as_bytes());
                    if data.len() <= COALESCE {
                        self.out.put_slice(data);
                    } else {
                        self.flush().await?;
                        self.write_now(data).await?;
                    }
                    self.out.put_slice(b"\r\n");
                }
                if end {
                    self.out.put_slice(b"0\r\n\r\n");
                }
            }
        }
        if end && self.body_out != BodyOut::Unset {
            self.body_out = BodyOut::Finished;
        }
        self.flush().await
    }

    /// Writes what the write buffer holds.
    pub async fn flush(&mut self) -> pingora::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = write_all(&mut self.stream, &self.out).await;
        self.out.clear();
        if self.out.capacity() > KEEP_OUT {
            self.out = BytesMut::new();
        }
        result
    }

    async fn write_now(&mut self, bytes: &[u8]) -> pingora::Result<()> {
        write_all(&mut self.stream, bytes).await
    }

    /// Ends the request: whether the connection may carry another. An
    /// unread request body is drained first when it is small.
    pub async fn finish(&mut self, idle: Option<Duration>) -> bool {
        if !self.keep_alive || self.body_out != BodyOut::Finished {
            return false;
        }
        let mut drained = 0u64;
        while !matches!(self.body_in, BodyIn::Done) {
            let piece = match idle {
                Some(limit) => tokio::time::timeout(limit, self.read_body()).await.ok(),
                None => Some(self.read_body().await),
            };
            match piece {
                Some(Ok(Some(bytes))) => drained += bytes.len() as u64,
                Some(Ok(None)) => break,
                _ => return false,
            }
            if drained > DRAIN_MAX {
                return false;
            }
        }
        self.head = None;
        if self.buf.is_empty() && self.buf.capacity() > KEEP_BUF {
            // An upload grew it: an idle connection does not keep that.
            self.buf = BytesMut::new();
        }
        true
    }

    /// Answers a request that could not be read, then the connection closes.
    pub async fn refuse(&mut self, status: u16, detail: &str) {
        let body = detail_body(detail);
        let reason = http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
            body.len()
        );
        self.out.clear();
        self.out.put_slice(head.as_bytes());
        self.out.put_slice(&body);
        let _ = self.flush().await;
        // The rest of a head too large or malformed may still be coming.
        self.linger(true).await;
    }

    /// Closes the connection. When the client may still be sending
    /// (`unread`, or a request body not read to its end), the write side
    /// closes first and what still comes is read and dropped until the
    /// client closes, for at most [`LINGER_TIME`]: closing a socket with
    /// unread bytes makes the kernel send a reset, and a reset destroys the
    /// response (a 413, say) waiting in the client's receive buffer before
    /// the client read it (RFC 9112 9.6, "lingering close").
    pub async fn linger(&mut self, unread: bool) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
        if !unread && matches!(self.body_in, BodyIn::Done) {
            return;
        }
        let deadline = tokio::time::Instant::now() + LINGER_TIME;
        loop {
            // The connection's own buffer, not a stack array: the array
            // would grow every connection task's state for a rare path.
            self.buf.clear();
            self.buf.reserve(READ_SIZE);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// The socket for a two-way copy after an upgrade, with what the
    /// client sent past its head.
    pub fn raw(&mut self) -> (&mut Stream, &mut BytesMut) {
        (&mut self.stream, &mut self.buf)
    }
}

/// Parses a complete head from the front of `buf`, consuming it; `None`
/// while it is incomplete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<RequestHeader>, ReadHeadError> {
    match try_parse(buf) {
        Err(httparse::Error::Token | httparse::Error::Version) => {
            // Perhaps bytes a request-target may not carry: escaped, then
            // parsed again (a head that still fails is malformed).
            let Some(escaped) = escape_target(buf) else {
                return Err(ReadHeadError::Malformed("invalid request line".into()));
            };
            *buf = escaped;
            try_parse(buf).map_err(|e| ReadHeadError::Malformed(format!("invalid request head: {e}")))
        }
        other => other.map_err(|e| ReadHeadError::Malformed(format!("invalid request head: {e}"))),
    }
}

fn try_parse(buf: &mut BytesMut) -> Result<Option<RequestHeader>, httparse::Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut parsed = httparse::Request::new(&mut fields);
    let len = match parsed.parse(buf)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    let (Some(method), Some(target), Some(version)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(httparse::Error::Token);
    };
    let mut head = RequestHeader::build_no_case(method, target.as_bytes(), Some(parsed.headers.len()))
        .map_err(|_| httparse::Error::Token)?;
    if version == 0 {
        head.set_version(Version::HTTP_10);
    }
    // The head gets an allocation of its own, sized to it: its values live
    // as long as the request (an open stream: hours), and slices of the
    // read buffer would pin the buffer and make the next read allocate anew.
    let base = buf.as_ptr() as usize;
    let raw = Bytes::copy_from_slice(&buf[..len]);
    for f in parsed.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| httparse::Error::HeaderName)?;
        let start = f.value.as_ptr() as usize - base;
        let value = HeaderValue::from_maybe_shared(raw.slice(start..start + f.value.len()))
            .map_err(|_| httparse::Error::HeaderValue)?;
        head.append_header(name, value).map_err(|_| httparse::Error::HeaderName)?;
    }
    buf.advance(len);
    Ok(Some(head))
}

/// The head with its request-target percent-encoded where it carries bytes
/// HTTP does not allow there; `None` when nothing would change.
fn escape_target(buf: &BytesMut) -> Option<BytesMut> {
    let line_end = buf.iter().position(|b| *b == b'\n')?;
    let line = buf[..line_end].strip_suffix(b"\r").unwrap_or(&buf[..line_end]);
    let first = line.iter().position(|b| *b == b' ')?;
    let last = line.iter().rposition(|b| *b == b' ')?;
    if last <= first + 1 || !line[last + 1..].starts_with(b"HTTP/1.") {
        return None;
    }
    let target = &line[first + 1..last];
    if target.iter().any(|b| b.is_ascii_control() || *b == b' ') {
        return None;
    }
    let escaped: String = percent_encoding::percent_encode(target, TARGET_ESCAPES).collect();
    if escaped.as_bytes() == target {
        return None;
    }
    let mut out = BytesMut::with_capacity(buf.len() + escaped.len());
    out.put_slice(&buf[..=first]);
    out.put_slice(escaped.as_bytes());
    out.put_slice(&buf[last..]);
    Some(out)
}

/// The declared body length: identical repeated values collapse (RFC 9110
/// 8.6); differing or unparseable ones are refused.
pub fn declared_length(head: &RequestHeader) -> Result<Option<u64>, &'static str> {
    let mut length = None;
    for value in &head.headers.get_all(header::CONTENT_LENGTH) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || !token.iter().all(u8::is_ascii_digit) {
                return Err("an invalid Content-Length");
            }
            let n: u64 =
                std::str::from_utf8(token).ok().and_then(|t| t.parse().ok()).ok_or("an invalid Content-Length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting Content-Length values");
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// Writes `bytes` whole, through whatever write buffer the stream has.
async fn write_all(stream: &mut Stream, bytes: &[u8]) -> pingora::Result<()> {
    let write = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    write.await.or_else(|e| Error::e_because(ErrorType::WriteError, "writing the response", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &str) -> Result<Option<RequestHeader>, ReadHeadError> {
        let mut buf = BytesMut::from(wire.as_bytes());
        parse_head(&mut buf)
    }

    #[test]
    fn parses_a_head_and_leaves_what_follows() {
        let mut buf = BytesMut::from(&b"GET /api/health?x=1 HTTP/1.1\r\nHost: a\r\nX-Y: 1\r\n\r\nGET /next"[..]);
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/api/health");
        assert_eq!(head.headers.get("x-y").unwrap(), "1");
        assert_eq!(&buf[..], b"GET /next");
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn escapes_bytes_a_target_may_not_carry() {
        let head = parse("GET /a|b{c}\"d\" HTTP/1.1\r\nHost: a\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.raw_path(), b"/a|b{c}\"d\"", "httparse takes these as they are");
        let head = parse("GET /x?q=<\\^`\u{e9}> HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.raw_path(), b"/x?q=%3C%5C%5E%60%C3%A9%3E");
        assert!(matches!(parse("GET /a\x01b HTTP/1.1\r\n\r\n"), Err(ReadHeadError::Malformed(_))));
        assert!(matches!(parse("NOT HTTP\r\n\r\n"), Err(ReadHeadError::Malformed(_))));
    }

    #[test]
    fn content_length_repeats_must_agree() {
        let head = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5, 5\r\n\r\n").unwrap().unwrap();
        assert_eq!(declared_length(&head), Ok(Some(5)));
        let head = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").unwrap().unwrap();
        assert!(declared_length(&head).is_err());
        let head = parse("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n").unwrap().unwrap();
        assert!(declared_length(&head).is_err());
    }
}
