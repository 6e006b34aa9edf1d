//! A backend's HTTP/1.1 reply, parsed incrementally over the bytes received so far:
//! `httparse` for the head, then a Content-Length, chunked, or read-to-EOF body.
//! Chunked bodies are decoded in place, so the whole reply needs one buffer.

use std::ops::Range;

/// Largest reply head we accept.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a reply is unusable (the caller answers 502 / "Internal server error").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    Malformed,
    TooLarge,
    /// The connection ended before the reply was complete.
    Truncated,
}

/// A complete reply; ranges index the buffer given to [`Parser::feed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Range<usize>,
    pub content_type: Option<Range<usize>>,
    pub protocol: Option<Range<usize>>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Body {
    Length(usize),
    Chunked,
    UntilEof,
}

/// Parse state for one reply.
#[derive(Debug, Default)]
pub struct Parser {
    head: Option<Head>,
    /// Chunked decoding: decoded body bytes end here (they start at the head's end).
    decoded_end: usize,
    /// Chunked decoding: the next undecoded byte.
    scan: usize,
    /// Chunked decoding: the last chunk was seen; trailers are being skipped.
    last_chunk: bool,
}

#[derive(Debug, Clone)]
struct Head {
    status: u16,
    len: usize,
    body: Body,
    content_type: Option<Range<usize>>,
    protocol: Option<Range<usize>>,
    keep_alive: bool,
}

impl Parser {
    /// Whether any byte of a reply was seen (a reused connection that closes before
    /// that may be retried).
    pub fn started(&self, buf: &[u8]) -> bool {
        !buf.is_empty() || self.head.is_some()
    }

    /// Looks at everything received so far (`buf`, which chunked decoding rewrites).
    /// `eof`: the backend closed its side. `Ok(None)`: more bytes are needed.
    pub fn feed(
        &mut self,
        buf: &mut [u8],
        eof: bool,
        max_body: usize,
    ) -> Result<Option<Response>, Error> {
        if self.head.is_none() {
            match parse_head(buf)? {
                Some(h) => {
                    self.decoded_end = h.len;
                    self.scan = h.len;
                    self.head = Some(h);
                }
                None if eof => return Err(Error::Truncated),
                None if buf.len() > MAX_HEAD_BYTES => return Err(Error::TooLarge),
                None => return Ok(None),
            }
        }
        let h = self.head.clone().expect("parsed");
        let end = match h.body {
            Body::Length(n) => {
                if n > max_body {
                    return Err(Error::TooLarge);
                }
                if buf.len() < h.len + n {
                    return if eof { Err(Error::Truncated) } else { Ok(None) };
                }
                h.len + n
            }
            Body::UntilEof => {
                if buf.len() - h.len > max_body {
                    return Err(Error::TooLarge);
                }
                if !eof {
                    return Ok(None);
                }
                buf.len()
            }
            Body::Chunked => match self.dechunk(buf, max_body)? {
                Some(end) => end,
                None if eof => return Err(Error::Truncated),
                None => return Ok(None),
            },
        };
        Ok(Some(Response {
            status: h.status,
            body: h.len..end,
            content_type: h.content_type,
            protocol: h.protocol,
            keep_alive: h.keep_alive && h.body != Body::UntilEof,
        }))
    }

    /// Decodes whole chunks in place; `Some(end)` once the last chunk and the trailers
    /// are in, with the body at `head_len..end`.
    fn dechunk(&mut self, buf: &mut [u8], max_body: usize) -> Result<Option<usize>, Error> {
        loop {
            let rest = &buf[self.scan..];
            let Some(line_end) = find_crlf(rest) else {
                return if rest.len() > 1024 {
                    Err(Error::Malformed)
                } else {
                    Ok(None)
                };
            };
            if self.last_chunk {
                // Trailer lines until an empty one.
                self.scan += line_end + 2;
                if line_end == 0 {
                    return Ok(Some(self.decoded_end));
                }
                continue;
            }
            let line = &rest[..line_end];
            let hex = line
                .split(|&c| c == b';')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            let size = parse_hex(hex).ok_or(Error::Malformed)?;
            if size == 0 {
                self.last_chunk = true;
                self.scan += line_end + 2;
                continue;
            }
            let head_len = self.head.as_ref().map_or(0, |h| h.len);
            if self.decoded_end - head_len + size > max_body {
                return Err(Error::TooLarge);
            }
            let data = self.scan + line_end + 2;
            if buf.len() < data + size + 2 {
                return Ok(None);
            }
            if &buf[data + size..data + size + 2] != b"\r\n" {
                return Err(Error::Malformed);
            }
            buf.copy_within(data..data + size, self.decoded_end);
            self.decoded_end += size;
            self.scan = data + size + 2;
        }
    }
}

fn parse_head(buf: &[u8]) -> Result<Option<Head>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Error::Malformed),
    };
    let status = r.code.ok_or(Error::Malformed)?;
    let mut keep_alive = r.version == Some(1);
    let (mut length, mut chunked, mut content_type, mut protocol) = (None, false, None, None);
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let v = v.trim_ascii();
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    };
    for h in r.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            let n = n.ok_or(Error::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked |= h
                .value
                .split(|&c| c == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&c| c == b',') {
                let t = t.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(range(h.value));
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            protocol = Some(range(h.value));
        }
    }
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Body::Length(0)
    } else if chunked {
        Body::Chunked
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilEof
    };
    Ok(Some(Head {
        status,
        len,
        body,
        content_type,
        protocol,
        keep_alive,
    }))
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 12 {
        return None;
    }
    let mut n = 0usize;
    for &c in s {
        n = n * 16 + (c as char).to_digit(16)? as usize;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(raw: &[u8], step: usize) -> (Vec<u8>, Response) {
        let mut p = Parser::default();
        let mut buf = Vec::new();
        for (i, c) in raw.chunks(step).enumerate() {
            buf.extend_from_slice(c);
            let last = (i + 1) * step >= raw.len();
            if let Some(r) = p.feed(&mut buf, false, 1 << 20).unwrap() {
                assert!(last, "complete before the last byte");
                return (buf, r);
            }
        }
        let r = p
            .feed(&mut buf, true, 1 << 20)
            .unwrap()
            .expect("complete at EOF");
        (buf, r)
    }

    #[test]
    fn content_length_reply_at_every_split() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
        for step in 1..raw.len() {
            let (buf, r) = feed_all(raw, step);
            assert_eq!(r.status, 200);
            assert_eq!(&buf[r.body.clone()], b"hello");
            assert_eq!(&buf[r.content_type.clone().unwrap()], b"text/plain");
            assert!(r.keep_alive);
        }
    }

    #[test]
    fn chunked_reply_decodes_in_place() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\n\r\n";
        for step in 1..raw.len() {
            let (buf, r) = feed_all(raw, step);
            assert_eq!(&buf[r.body.clone()], b"hello world", "step {step}");
        }
    }

    #[test]
    fn reply_without_length_ends_at_eof_and_is_not_reusable() {
        let raw = b"HTTP/1.1 500 Oops\r\n\r\nboom";
        let (buf, r) = feed_all(raw, 4);
        assert_eq!(r.status, 500);
        assert_eq!(&buf[r.body.clone()], b"boom");
        assert!(!r.keep_alive);
    }

    #[test]
    fn bad_and_short_replies() {
        let mut p = Parser::default();
        assert_eq!(
            p.feed(&mut b"HTTX/1.1 200\r\n\r\n".to_vec(), false, 10),
            Err(Error::Malformed)
        );
        let mut p = Parser::default();
        assert_eq!(
            p.feed(
                &mut b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab".to_vec(),
                true,
                10
            ),
            Err(Error::Truncated)
        );
        let mut p = Parser::default();
        assert_eq!(
            p.feed(
                &mut b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n".to_vec(),
                false,
                10
            ),
            Err(Error::TooLarge)
        );
        let mut p = Parser::default();
        assert_eq!(p.feed(&mut Vec::new(), true, 10), Err(Error::Truncated));
    }

    #[test]
    fn connection_close_and_http10_are_not_reusable() {
        let (_, r) = feed_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            100,
        );
        assert!(!r.keep_alive);
        let (_, r) = feed_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", 100);
        assert!(!r.keep_alive);
    }
}
