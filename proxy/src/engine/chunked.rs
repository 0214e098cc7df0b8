//! An incremental decoder of HTTP/1.1 chunked bodies (RFC 9112 7.1) over
//! the engine's own read buffer: it hands out the data of each chunk as a
//! zero-copy slice of that buffer and says when the body has ended.
//!
//! Written here because the crates that decode chunked bodies own the
//! connection too (hyper) or allocate a body buffer per response
//! (pingora's codec: 64 KiB per response, which an idle log stream would
//! hold for hours). `httparse::parse_chunk_size` does the size line.

use bytes::{Buf, Bytes, BytesMut};

/// Whether a `Transfer-Encoding` value ends in `chunked`, the coding that
/// frames the body (RFC 9112 6.3).
pub fn ends_chunked(transfer_encoding: &http::HeaderValue) -> bool {
    let last = transfer_encoding.as_bytes().rsplit(|b| *b == b',').next().unwrap_or(b"");
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Longest chunk-size line or trailer section accepted.
const MAX_LINE: usize = 16 * 1024;

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data: this many bytes to go.
    Data(u64),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
    /// The body has ended.
    Done,
}

/// What the decoder needs or found.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Body data.
    Data(Bytes),
    /// More bytes must be read into the buffer first.
    NeedMore,
    /// The body ended (the terminating chunk and trailers were consumed).
    Done,
}

/// The body is not valid chunked encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The decoder's state.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: State,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder { state: State::Size }
    }
}

impl ChunkedDecoder {
    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from the front of `buf`, consuming what it decodes.
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match self.state {
                State::Done => return Ok(Step::Done),
                State::Size => match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        buf.advance(used);
                        self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_LINE => return Ok(Step::NeedMore),
                    _ => return Err(Malformed),
                },
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::NeedMore);
                    }
                    let take = (buf.len() as u64).min(left) as usize;
                    let data = buf.split_to(take).freeze();
                    self.state = if take as u64 == left { State::DataEnd } else { State::Data(left - take as u64) };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers => {
                    // Trailer fields are dropped (HTTP/1.1 clients rarely
                    // ask for them; pingora's own codec drops them too).
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        return if buf.len() < MAX_LINE { Ok(Step::NeedMore) } else { Err(Malformed) };
                    };
                    buf.advance(end + 2);
                    if end == 0 {
                        self.state = State::Done;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], split: usize) -> Result<(Vec<u8>, bool), Malformed> {
        let mut decoder = ChunkedDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(split.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.step(&mut buf)? {
                    Step::Data(d) => out.extend_from_slice(&d),
                    Step::NeedMore => break,
                    Step::Done => return Ok((out, true)),
                }
            }
        }
        Ok((out, decoder.is_done()))
    }

    #[test]
    fn decodes_whatever_the_reads_split() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in [1, 2, 3, 7, 64] {
            let (data, done) = decode_all(body, split).unwrap();
            assert_eq!(data, b"hello 0123456789", "split {split}");
            assert!(done);
        }
    }

    #[test]
    fn leaves_what_follows_the_body_in_the_buffer() {
        let mut buf = BytesMut::from(&b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200"[..]);
        let mut decoder = ChunkedDecoder::default();
        assert_eq!(decoder.step(&mut buf), Ok(Step::Data(Bytes::from_static(b"ok"))));
        assert_eq!(decoder.step(&mut buf), Ok(Step::Done));
        assert_eq!(&buf[..], b"HTTP/1.1 200");
    }

    #[test]
    fn refuses_broken_framing() {
        assert_eq!(decode_all(b"zz\r\n", 64), Err(Malformed));
        assert_eq!(decode_all(b"2\r\nokX\r\n", 64), Err(Malformed));
        let long_size = vec![b'1'; 20_000];
        assert_eq!(decode_all(&long_size, 20_000), Err(Malformed));
        let (partial, done) = decode_all(b"5\r\nhel", 64).unwrap();
        assert_eq!((partial.as_slice(), done), (&b"hel"[..], false));
    }
}
