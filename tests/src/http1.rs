//! A raw HTTP/1.1 client on one TCP connection: the test chooses when a
//! connection is opened, reused or closed (an HTTP library pools them out of
//! sight), knows the connection's local address (which an L4 balancer maps
//! to a replica), and sees a chunked body that ends early as cut rather than
//! as an error that hides how much arrived.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Why no response head arrived.
#[derive(Debug)]
pub enum Http1Error {
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// The peer closed before a whole response head arrived.
    Closed,
    /// No response head before the deadline.
    TimedOut,
    /// The response head could not be parsed.
    Malformed(String),
}

impl fmt::Display for Http1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Http1Error::Io(e) => write!(f, "i/o: {e}"),
            Http1Error::Closed => write!(f, "closed before a response head"),
            Http1Error::TimedOut => write!(f, "no response head before the deadline"),
            Http1Error::Malformed(what) => write!(f, "malformed response: {what}"),
        }
    }
}

impl std::error::Error for Http1Error {}

impl From<std::io::Error> for Http1Error {
    fn from(e: std::io::Error) -> Self {
        Http1Error::Io(e)
    }
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// All of it arrived as framed (length, last chunk, or close-delimited).
    Complete,
    /// The connection closed or broke before the framing said it was done.
    Cut,
    /// The deadline passed first.
    TimedOut,
}

/// One response.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body as far as it arrived (chunked framing removed).
    pub body: Vec<u8>,
    /// How the body ended.
    pub end: BodyEnd,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Who answered (`x-demo-backend`), or `"?"` (the proxy itself).
    pub fn served_by(&self) -> &str {
        self.header("x-demo-backend").unwrap_or("?")
    }

    /// The `SKYPILOT_ROUTEID` value this response sets, if any.
    pub fn routeid(&self) -> Option<String> {
        self.headers.iter().filter(|(k, _)| k == "set-cookie").find_map(|(_, v)| {
            v.strip_prefix("SKYPILOT_ROUTEID=").map(|rest| rest.split(';').next().unwrap_or("").to_string())
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection.
#[derive(Debug)]
pub struct Http1Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Http1Connection {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Http1Connection> {
        Ok(Http1Connection { stream: TcpStream::connect(addr).await?, buf: Vec::new() })
    }

    /// The connection's local address (the balancer's view of the client).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// Sends `method path` with `headers` and `body` (a `content-length` is
    /// added) and reads the response, all within `deadline`.
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        deadline: Duration,
    ) -> Result<Answer, Http1Error> {
        let mut head = format!("{method} {path} HTTP/1.1\r\nhost: pinroute-test\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
        let mut wire = head.into_bytes();
        wire.extend_from_slice(body);
        self.write_raw(&wire).await?;
        self.read_answer(method == "HEAD", deadline).await
    }

    /// Writes bytes as they are (a request in pieces, a partial body).
    pub async fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response; `head_request` says it has no body.
    pub async fn read_answer(&mut self, head_request: bool, deadline: Duration) -> Result<Answer, Http1Error> {
        let until = Instant::now() + deadline;
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed | Fill::Broken => return Err(Http1Error::Closed),
                Fill::TimedOut => return Err(Http1Error::TimedOut),
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Http1Error::Malformed(status_line.to_string()))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut answer = Answer { status, headers, body: Vec::new(), end: BodyEnd::Complete };
        if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(answer);
        }
        let chunked = answer.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = answer.header("content-length").and_then(|v| v.parse::<usize>().ok());
        answer.end = if chunked {
            self.read_chunked(&mut answer.body, until).await
        } else if let Some(length) = length {
            self.read_length(&mut answer.body, length, until).await
        } else {
            self.read_to_close(&mut answer.body, until).await
        };
        Ok(answer)
    }

    async fn read_length(&mut self, body: &mut Vec<u8>, length: usize, until: Instant) -> BodyEnd {
        while self.buf.len() < length {
            if let Some(end) = self.fill_or_end(until).await {
                body.append(&mut self.buf);
                return end;
            }
        }
        body.extend(self.buf.drain(..length));
        BodyEnd::Complete
    }

    async fn read_to_close(&mut self, body: &mut Vec<u8>, until: Instant) -> BodyEnd {
        let end = loop {
            match self.fill(until).await {
                Fill::Data => {}
                Fill::Closed => break BodyEnd::Complete,
                Fill::Broken => break BodyEnd::Cut,
                Fill::TimedOut => break BodyEnd::TimedOut,
            }
        };
        body.append(&mut self.buf);
        end
    }

    async fn read_chunked(&mut self, body: &mut Vec<u8>, until: Instant) -> BodyEnd {
        loop {
            let Some(line_end) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                if let Some(end) = self.fill_or_end(until).await {
                    return end;
                }
                continue;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            let size_text = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return BodyEnd::Cut;
            };
            if size == 0 {
                // The last chunk: skip trailers up to the empty line.
                loop {
                    if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        self.buf.drain(..end + 4);
                        return BodyEnd::Complete;
                    }
                    if let Some(end) = self.fill_or_end(until).await {
                        return end;
                    }
                }
            }
            let need = line_end + 2 + size + 2;
            while self.buf.len() < need {
                if let Some(end) = self.fill_or_end(until).await {
                    return end;
                }
            }
            body.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            self.buf.drain(..need);
        }
    }

    /// `None` when more data arrived, else how the body ended.
    async fn fill_or_end(&mut self, until: Instant) -> Option<BodyEnd> {
        match self.fill(until).await {
            Fill::Data => None,
            Fill::Closed | Fill::Broken => Some(BodyEnd::Cut),
            Fill::TimedOut => Some(BodyEnd::TimedOut),
        }
    }

    async fn fill(&mut self, until: Instant) -> Fill {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(until, self.stream.read(&mut chunk)).await {
            Err(_) => Fill::TimedOut,
            Ok(Err(_)) => Fill::Broken,
            Ok(Ok(0)) => Fill::Closed,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
        }
    }
}

enum Fill {
    Data,
    Closed,
    Broken,
    TimedOut,
}
