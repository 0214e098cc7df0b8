//! The backend side of an exchange, HTTP/1.1 over the engine's own read
//! buffer: the response head parsed with `httparse`, the body framed by
//! length, chunks or close, and handed on as zero-copy slices.
//!
//! pingora's client codec would do this, but at a price the engine pays on
//! every request and every idle stream: a copy of the request head it keeps,
//! a 4 KiB head buffer and a 64 KiB body buffer per response, and a copy of
//! every body chunk. Here one buffer serves the whole exchange, starts
//! small and grows only when reads fill it.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use pingora::http::ResponseHeader;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::chunked::{ends_chunked, ChunkedDecoder, Step};
use super::request_head::connection_lists;

/// First read size; doubled while reads fill it, up to [`MAX_READ`].
const FIRST_READ: usize = 2048;
/// Largest read.
const MAX_READ: usize = 64 * 1024;
/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most response header fields accepted.
const MAX_FIELDS: usize = 128;

/// How the backend side failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    /// A read or write timed out.
    pub timed_out: bool,
    /// Some of the response had arrived.
    pub answered: bool,
    /// What happened, for the log.
    pub what: String,
}

impl UpstreamError {
    fn new(what: impl Into<String>, answered: bool) -> UpstreamError {
        UpstreamError { timed_out: false, answered, what: what.into() }
    }

    fn timeout(what: &str, answered: bool) -> UpstreamError {
        UpstreamError { timed_out: true, answered, what: format!("{what} timed out") }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)
    }
}

/// How the response body is delimited.
#[derive(Debug)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length`: this many bytes to go.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// Neither: the body ends when the backend closes.
    UntilClose,
    /// `101 Switching Protocols`: raw bytes both ways from here on.
    Upgraded,
}

/// A response head and how its body is framed.
#[derive(Debug)]
pub struct Response {
    /// The head, as the client will get it (after the engine's filters).
    pub head: Box<ResponseHeader>,
    /// How the body is delimited.
    pub framing: Framing,
    /// The backend allows the connection to be used again.
    pub keep_alive: bool,
}

/// A connection to a backend during one exchange.
#[derive(Debug)]
pub struct Connection {
    /// The socket.
    pub stream: Stream,
    buf: BytesMut,
    read_size: usize,
}

impl Connection {
    /// Wraps a new or kept socket.
    pub fn new(stream: Stream) -> Connection {
        Connection { stream, buf: BytesMut::new(), read_size: FIRST_READ }
    }

    /// Writes `bytes` whole.
    pub async fn write(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), UpstreamError> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(UpstreamError::new(format!("writing to the backend: {e}"), false)),
            Err(_) => Err(UpstreamError::timeout("writing to the backend", false)),
        }
    }

    /// Reads once more into the buffer; `Ok(0)` when the backend closed.
    async fn read_more(&mut self, timeout: Option<Duration>, answered: bool) -> Result<usize, UpstreamError> {
        self.buf.reserve(self.read_size);
        let room = self.buf.capacity() - self.buf.len();
        let read = self.stream.read_buf(&mut self.buf);
        let n = match timeout {
            Some(t) => tokio::time::timeout(t, read)
                .await
                .map_err(|_| UpstreamError::timeout("reading from the backend", answered))?,
            None => read.await,
        }
        .map_err(|e| UpstreamError::new(format!("reading from the backend: {e}"), answered))?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Ok(n)
    }

    /// Reads the response head, past informational ones (the proxy
    /// answered `100-continue` itself).
    pub async fn read_head(
        &mut self,
        head_request: bool,
        upgrade_request: bool,
        timeout: Option<Duration>,
    ) -> Result<Response, UpstreamError> {
        loop {
            if let Some(response) = self.parse_head(head_request, upgrade_request)? {
                if response.head.status.is_informational() && response.head.status != 101 {
                    continue;
                }
                return Ok(response);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(UpstreamError::new("response head too large", true));
            }
            let answered = !self.buf.is_empty();
            if self.read_more(timeout, answered).await? == 0 {
                return Err(UpstreamError::new("the backend closed the connection before answering", answered));
            }
        }
    }

    fn parse_head(&mut self, head_request: bool, upgrade_request: bool) -> Result<Option<Response>, UpstreamError> {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(&self.buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(UpstreamError::new(format!("invalid response head: {e}"), true)),
        };
        let bad = |what: &str| UpstreamError::new(format!("invalid response head: {what}"), true);
        let status = parsed.code.ok_or_else(|| bad("no status"))?;
        let http10 = parsed.version == Some(0);
        // Names now, values as slices of the frozen head below (no copies).
        let base = self.buf.as_ptr() as usize;
        let fields: Vec<(http::HeaderName, usize, usize)> = parsed
            .headers
            .iter()
            .map(|f| {
                let name = http::HeaderName::from_bytes(f.name.as_bytes()).map_err(|_| bad("field name"))?;
                Ok((name, f.value.as_ptr() as usize - base, f.value.len()))
            })
            .collect::<Result<_, UpstreamError>>()?;
        let mut head = ResponseHeader::build_no_case(status, Some(fields.len())).map_err(|_| bad("status"))?;
        if http10 {
            head.set_version(http::Version::HTTP_10);
        }
        // The head gets an allocation of its own: its values live as long as
        // the response (an open stream: hours), and a slice of the read
        // buffer would pin the buffer and make the next read allocate anew.
        let raw = Bytes::copy_from_slice(&self.buf[..len]);
        self.buf.advance(len);
        for (name, start, n) in fields {
            let value =
                http::HeaderValue::from_maybe_shared(raw.slice(start..start + n)).map_err(|_| bad("field value"))?;
            head.append_header(name, value).map_err(|_| bad("field"))?;
        }
        let says = |token: &[u8]| connection_lists(&head.headers, token);
        let keep_alive = if http10 { says(b"keep-alive") } else { !says(b"close") };
        let framing = framing(&head, head_request, upgrade_request).map_err(bad)?;
        Ok(Some(Response { head: Box::new(head), framing, keep_alive }))
    }

    /// The next piece of the body; `None` at its end.
    pub async fn body_chunk(
        &mut self,
        framing: &mut Framing,
        timeout: Option<Duration>,
    ) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            match framing {
                Framing::Empty | Framing::Upgraded => return Ok(None),
                Framing::Length(0) => return Ok(None),
                Framing::Length(left) => {
                    if !self.buf.is_empty() {
                        let take = (self.buf.len() as u64).min(*left) as usize;
                        *left -= take as u64;
                        return Ok(Some(self.buf.split_to(take).freeze()));
                    }
                }
                Framing::UntilClose => {
                    if !self.buf.is_empty() {
                        return Ok(Some(self.buf.split().freeze()));
                    }
                }
                Framing::Chunked(decoder) => match decoder.step(&mut self.buf) {
                    Ok(Step::Data(data)) => return Ok(Some(data)),
                    Ok(Step::Done) => return Ok(None),
                    Ok(Step::NeedMore) => {}
                    Err(_) => return Err(UpstreamError::new("invalid chunked body", true)),
                },
            }
            if self.read_more(timeout, true).await? == 0 {
                if matches!(framing, Framing::UntilClose) {
                    return Ok(None);
                }
                return Err(UpstreamError::new("the backend closed the connection mid-body", true));
            }
        }
    }

    /// Whether all of the body is in the buffer already (so the client
    /// can get the head and the body in one write).
    pub fn holds_whole_body(&self, framing: &Framing) -> bool {
        match framing {
            Framing::Empty => true,
            Framing::Length(left) => self.buf.len() as u64 >= *left,
            Framing::Chunked(_) | Framing::UntilClose | Framing::Upgraded => false,
        }
    }

    /// Raw bytes after an upgrade: what is buffered first, then reads.
    pub async fn raw_chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        if self.buf.is_empty() && self.read_more(None, true).await? == 0 {
            return Ok(None);
        }
        Ok(Some(self.buf.split().freeze()))
    }

    /// The socket, if the exchange left it reusable: the body was read to
    /// its end and nothing follows it.
    pub fn into_reusable(self, framing: &Framing, keep_alive: bool) -> Option<Stream> {
        let ended = matches!(framing, Framing::Empty | Framing::Length(0))
            || matches!(framing, Framing::Chunked(d) if d.is_done());
        (keep_alive && ended && self.buf.is_empty()).then_some(self.stream)
    }
}

/// How a response body is delimited (RFC 9112 6.3).
fn framing(head: &ResponseHeader, head_request: bool, upgrade_request: bool) -> Result<Framing, &'static str> {
    let status = head.status.as_u16();
    if status == 101 && upgrade_request {
        return Ok(Framing::Upgraded);
    }
    if head_request || status == 204 || status == 304 || head.status.is_informational() {
        return Ok(Framing::Empty);
    }
    if let Some(te) = head.headers.get(header::TRANSFER_ENCODING) {
        return Ok(if ends_chunked(te) { Framing::Chunked(ChunkedDecoder::default()) } else { Framing::UntilClose });
    }
    let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
    match lengths.next() {
        None => Ok(Framing::UntilClose),
        Some(first) => {
            let length = std::str::from_utf8(first.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or("content-length")?;
            if lengths.any(|other| other != first) {
                return Err("conflicting content-length");
            }
            Ok(Framing::Length(length))
        }
    }
}
