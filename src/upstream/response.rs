//! A backend's HTTP/1.1 reply, parsed incrementally over the bytes received so far
//! (SPEC §5, §16): interim `1xx` replies are skipped, `httparse` reads the head, then
//! a Content-Length, chunked or read-to-EOF body. Chunked bodies are decoded in place,
//! so the whole reply needs one buffer.
//!
//! Everything the reply takes — interim heads, its head, chunk framing, body and
//! trailers — counts against one limit, every line has its own bound, and each byte
//! is looked at a bounded number of times however the reply is split across reads.
//! The outcome does not depend on that split either (the `upstream_response` fuzz
//! target checks it with [`parse_in_pieces`]).

use std::ops::Range;

/// Largest head (each interim head too), and largest trailer section.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest chunk-size line, extensions included.
const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Why a reply is unusable (the call fails: "Internal server error", and the
/// connection closes).
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
    /// An `X-Amz-Function-Error` header: the Lambda function failed (SPEC §12).
    pub function_error: bool,
    /// Whether the reply lets the connection carry another request.
    pub keep_alive: bool,
    /// Where the reply ended in the buffer; bytes after it are not part of it.
    pub end: usize,
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
    /// Where the head being looked for starts (after any interim replies).
    start: usize,
    /// Where the search for that head's end resumes.
    head_scan: usize,
    head: Option<Head>,
    /// Chunked: decoded body bytes end here (they start at the head's end).
    decoded_end: usize,
    /// Chunked: the next undecoded byte, the start of a chunk-size or trailer line.
    scan: usize,
    /// Chunked: where the search for the end of the line at `scan` resumes.
    line_scan: usize,
    /// Chunked: a chunk whose size line was read (data start, size).
    chunk: Option<(usize, usize)>,
    /// Chunked: the last chunk was seen; its trailer section starts here.
    trailers: Option<usize>,
}

#[derive(Debug, Clone)]
struct Head {
    status: u16,
    /// Where the head ends (and the body starts) in the buffer.
    end: usize,
    body: Body,
    content_type: Option<Range<usize>>,
    protocol: Option<Range<usize>>,
    function_error: bool,
    keep_alive: bool,
}

impl Parser {
    /// Whether any byte of a reply was seen (a reused connection that closes before
    /// that may be retried).
    pub fn started(&self, buf: &[u8]) -> bool {
        !buf.is_empty() || self.head.is_some()
    }

    /// Looks at everything received so far (`buf`, which chunked decoding rewrites
    /// before the point it reached). `eof`: the backend closed its side. `limit`: the
    /// most bytes the whole reply may take. `Ok(None)`: more bytes are needed.
    pub fn feed(
        &mut self,
        buf: &mut [u8],
        eof: bool,
        limit: usize,
    ) -> Result<Option<Response>, Error> {
        // Nothing past the limit is looked at, so where the bytes were split cannot
        // change which error a reply gets.
        let view = buf.len().min(limit);
        match self.advance(&mut buf[..view], limit)? {
            Some(r) => Ok(Some(r)),
            None if buf.len() > limit => Err(Error::TooLarge),
            None if eof => match &self.head {
                Some(h) if h.body == Body::UntilEof => Ok(Some(self.response(h, buf.len()))),
                _ => Err(Error::Truncated),
            },
            None => Ok(None),
        }
    }

    /// Parses as far as `buf` allows; `Some` once the reply is complete in it.
    fn advance(&mut self, buf: &mut [u8], limit: usize) -> Result<Option<Response>, Error> {
        let h = loop {
            if let Some(h) = &self.head {
                break h.clone();
            }
            let Some(h) = self.find_head(buf)? else {
                return Ok(None);
            };
            if (100..200).contains(&h.status) {
                // An interim reply: the real one follows (101 is no upgrade of ours).
                if h.status == 101 {
                    return Err(Error::Malformed);
                }
                self.start = h.end;
                self.head_scan = h.end;
            } else {
                self.decoded_end = h.end;
                self.scan = h.end;
                self.head = Some(h);
            }
        };
        let end = match h.body {
            Body::Length(n) => {
                let end = h.end.checked_add(n).ok_or(Error::TooLarge)?;
                if end > limit {
                    return Err(Error::TooLarge);
                }
                if buf.len() < end {
                    return Ok(None);
                }
                end
            }
            Body::UntilEof => return Ok(None),
            Body::Chunked => match self.dechunk(buf, limit)? {
                Some(end) => end,
                None => return Ok(None),
            },
        };
        let mut r = self.response(&h, end);
        if h.body == Body::Chunked {
            r.body = h.end..self.decoded_end;
        }
        Ok(Some(r))
    }

    fn response(&self, h: &Head, end: usize) -> Response {
        Response {
            status: h.status,
            body: h.end..end,
            content_type: h.content_type.clone(),
            protocol: h.protocol.clone(),
            function_error: h.function_error,
            keep_alive: h.keep_alive && h.body != Body::UntilEof,
            end,
        }
    }

    /// The head starting at `self.start`, once its blank line is in `buf`.
    fn find_head(&mut self, buf: &[u8]) -> Result<Option<Head>, Error> {
        match head_end(buf, self.head_scan) {
            Ok(end) => {
                if end - self.start > MAX_HEAD_BYTES {
                    return Err(Error::TooLarge);
                }
                parse_head(buf, self.start, end).map(Some)
            }
            Err(resume) => {
                self.head_scan = resume.max(self.start);
                if buf.len() - self.start >= MAX_HEAD_BYTES {
                    return Err(Error::TooLarge);
                }
                Ok(None)
            }
        }
    }

    /// Decodes whole chunks in place; `Some(end)` once the last chunk and the trailers
    /// are in, with the decoded body at `head.end..self.decoded_end`.
    fn dechunk(&mut self, buf: &mut [u8], limit: usize) -> Result<Option<usize>, Error> {
        loop {
            if let Some((data, size)) = self.chunk {
                // `data + size + 2` was checked against the limit.
                let data_end = data + size;
                if buf.len() < data_end + 2 {
                    return Ok(None);
                }
                if &buf[data_end..data_end + 2] != b"\r\n" {
                    return Err(Error::Malformed);
                }
                buf.copy_within(data..data_end, self.decoded_end);
                self.decoded_end += size;
                self.scan = data_end + 2;
                self.chunk = None;
            }
            let from = self.line_scan.max(self.scan);
            let Some(at) = find_crlf(&buf[from..]) else {
                // The line ends at `buf.len() - 1` at the earliest.
                self.line_scan = buf.len().saturating_sub(1).max(self.scan);
                let pending = buf.len() - self.scan;
                return match self.trailers {
                    Some(t) if buf.len() + 1 - t > MAX_HEAD_BYTES => Err(Error::TooLarge),
                    None if pending > MAX_CHUNK_LINE_BYTES + 1 => Err(Error::Malformed),
                    _ => Ok(None),
                };
            };
            let line_end = from + at;
            let next = line_end + 2;
            if let Some(t) = self.trailers {
                // Trailer lines (not kept) until an empty one.
                if next - t > MAX_HEAD_BYTES {
                    return Err(Error::TooLarge);
                }
                let empty = line_end == self.scan;
                self.scan = next;
                if empty {
                    return Ok(Some(next));
                }
                continue;
            }
            let line = &buf[self.scan..line_end];
            if line.len() > MAX_CHUNK_LINE_BYTES {
                return Err(Error::Malformed);
            }
            let size = chunk_size(line).ok_or(Error::Malformed)?;
            self.scan = next;
            if size == 0 {
                self.trailers = Some(next);
                continue;
            }
            let end = next.checked_add(size).and_then(|e| e.checked_add(2));
            if end.is_none_or(|e| e > limit) {
                return Err(Error::TooLarge);
            }
            self.chunk = Some((next, size));
        }
    }
}

/// Parses the replies of one connection out of `buf` in order, from `start` on
/// (HTTP/1.1 pipelining: a backend answers requests in the order it got them, so
/// replies cannot come out of order; SPEC §16). Each complete reply goes to
/// `on_reply` with ranges into `buf`, and the parser starts over on the bytes after
/// it; `on_reply` says whether another reply is expected (calls still in flight).
/// Returns where the unparsed bytes start (the caller drops what is before), and
/// the error that ends the connection, if any. Each byte is parsed once however the
/// replies are split across reads, as [`Parser::feed`] ensures for one reply.
pub fn replies(
    parser: &mut Parser,
    buf: &mut [u8],
    mut start: usize,
    eof: bool,
    limit: usize,
    mut on_reply: impl FnMut(&[u8], Response) -> bool,
) -> (usize, Result<(), Error>) {
    loop {
        match parser.feed(&mut buf[start..], eof, limit) {
            Ok(None) => return (start, Ok(())),
            Err(e) => return (start, Err(e)),
            Ok(Some(mut r)) => {
                let shift = |x: &mut std::ops::Range<usize>| *x = x.start + start..x.end + start;
                shift(&mut r.body);
                r.content_type.as_mut().map(shift);
                r.protocol.as_mut().map(shift);
                r.end += start;
                start = r.end;
                *parser = Parser::default();
                if !on_reply(buf, r) || (start == buf.len() && !eof) {
                    return (start, Ok(()));
                }
            }
        }
    }
}

/// Where the head that starts before `from` ends (just after its blank line: `\n\n`
/// or `\n\r\n`, as httparse accepts bare LF); `Err(resume)`: not in `buf` yet, search
/// again from `resume`.
fn head_end(buf: &[u8], from: usize) -> Result<usize, usize> {
    let mut i = from;
    while let Some(at) = buf
        .get(i..)
        .and_then(|b| b.iter().position(|&c| c == b'\n'))
    {
        let nl = i + at;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Ok(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Ok(nl + 3),
            (None, _) | (Some(b'\r'), None) => return Err(nl),
            _ => i = nl + 1,
        }
    }
    Err(buf.len())
}

/// Reads the head at `buf[start..end]` (`end` just after its blank line).
fn parse_head(buf: &[u8], start: usize, end: usize) -> Result<Head, Error> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let len = match r.parse(&buf[start..end]) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) | Err(_) => return Err(Error::Malformed),
    };
    let status = r.code.filter(|&c| c >= 100).ok_or(Error::Malformed)?;
    let mut keep_alive = r.version == Some(1);
    let (mut length, mut encoding, mut content_type, mut protocol) = (None, None, None, None);
    let mut function_error = false;
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let v = v.trim_ascii();
        let start = v.as_ptr() as usize - base;
        start..start + v.len()
    };
    for h in r.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value).ok_or(Error::Malformed)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a lone `chunked` is understood; a second header or another coding
            // would mean a body we cannot frame.
            if encoding.is_some() || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(Error::Malformed);
            }
            encoding = Some(());
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
        } else if name.eq_ignore_ascii_case("x-amz-function-error") {
            function_error = true;
        }
    }
    if length.is_some() && encoding.is_some() {
        // Two framings: the backend and we could disagree on where the reply ends.
        return Err(Error::Malformed);
    }
    let body = if status == 204 || status == 304 || (100..200).contains(&status) {
        Body::Length(0)
    } else if encoding.is_some() {
        Body::Chunked
    } else if let Some(n) = length {
        Body::Length(n)
    } else {
        Body::UntilEof
    };
    Ok(Head {
        status,
        end: start + len,
        body,
        content_type,
        protocol,
        function_error,
        keep_alive,
    })
}

/// A `Content-Length` value: ASCII digits only (no sign, no list), no overflow.
fn content_length(v: &[u8]) -> Option<usize> {
    let v = v.trim_ascii();
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0usize, |n, &c| {
        let d = (c as char).to_digit(10)? as usize;
        n.checked_mul(10)?.checked_add(d)
    })
}

/// A chunk-size line: hex digits, optional whitespace, then `;` extensions (skipped).
fn chunk_size(line: &[u8]) -> Option<usize> {
    let hex = line.split(|&c| c == b';').next()?.trim_ascii();
    if hex.is_empty() {
        return None;
    }
    hex.iter().try_fold(0usize, |n, &c| {
        let d = (c as char).to_digit(16)? as usize;
        n.checked_mul(16)?.checked_add(d)
    })
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    crate::buf::find(b, b"\r\n")
}

/// How a reply parsed, in owned form: the fuzz target and the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Reply {
        status: u16,
        body: Vec<u8>,
        content_type: Option<Vec<u8>>,
        protocol: Option<Vec<u8>>,
        keep_alive: bool,
        /// Where the reply ended in the data; bytes after it are left over.
        end: usize,
    },
    Failed(Error),
}

/// Feeds `data` to a parser as the worker would receive it: in pieces ending at each
/// of `cuts` (offsets, in order; out-of-range ones are ignored), then the rest, then
/// EOF. Stops at the first complete reply or error.
pub fn parse_in_pieces(data: &[u8], cuts: &[usize], limit: usize) -> Parsed {
    let mut p = Parser::default();
    let mut buf = Vec::with_capacity(data.len());
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
    ends.sort_unstable();
    ends.push(data.len());
    let mut done = 0;
    let mut outcome = Ok(None);
    for end in ends {
        buf.extend_from_slice(&data[done..end]);
        done = end;
        outcome = p.feed(&mut buf, false, limit);
        if !matches!(outcome, Ok(None)) {
            break;
        }
    }
    if matches!(outcome, Ok(None)) {
        outcome = p.feed(&mut buf, true, limit);
    }
    let bytes = |r: Option<Range<usize>>| r.map(|r| buf[r].to_vec());
    match outcome {
        Ok(Some(r)) => Parsed::Reply {
            status: r.status,
            body: buf[r.body.clone()].to_vec(),
            content_type: bytes(r.content_type),
            protocol: bytes(r.protocol),
            keep_alive: r.keep_alive,
            end: r.end,
        },
        Ok(None) => unreachable!("a parser at EOF always decides"),
        Err(e) => Parsed::Failed(e),
    }
}

/// The `upstream_response` fuzz target (and its seed test): the first byte picks
/// the number of cuts (low 2 bits), the limit (next 2 bits) and whether to also feed
/// byte by byte (bit 4); then two bytes per cut; the rest is the reply. Panics when
/// a split changes the outcome.
pub fn check_splits(input: &[u8]) {
    let Some((&ctl, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(ctl & 3);
    let limit = [64, 512, 4096, 1 << 20][usize::from((ctl >> 2) & 3)];
    let Some((cuts, data)) = rest.split_at_checked(2 * n) else {
        return;
    };
    let cuts: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    let whole = parse_in_pieces(data, &[], limit);
    assert_eq!(parse_in_pieces(data, &cuts, limit), whole, "cuts {cuts:?}");
    if ctl & 0x10 != 0 {
        let every: Vec<usize> = (1..data.len()).collect();
        assert_eq!(parse_in_pieces(data, &every, limit), whole, "byte by byte");
    }
}

/// How a connection's pipelined replies ended, after those that parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineEnd {
    /// Every call got its reply and nothing followed.
    Clean,
    /// Every call got its reply, and bytes followed (the connection closes).
    Leftover,
    /// A reply ended the connection (`Connection: close`, HTTP/1.0, read to EOF):
    /// the calls after it fail.
    Closed,
    /// The connection failed; the calls still in flight fail.
    Failed(Error),
}

/// Feeds `data` to [`replies`] as the worker does for a connection with `calls`
/// requests in flight: in pieces ending at each of `cuts` (in order; out-of-range
/// ones are ignored), then EOF, each piece's parsed bytes dropped before the next.
/// Every reply in owned form (`end` counts from the start of `data`), and how it
/// ended.
pub fn parse_pipelined_in_pieces(
    data: &[u8],
    cuts: &[usize],
    calls: usize,
    limit: usize,
) -> (Vec<Parsed>, PipelineEnd) {
    let mut parser = Parser::default();
    let mut buf = Vec::with_capacity(data.len());
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < data.len()).collect();
    ends.sort_unstable();
    ends.push(data.len());
    let (mut done, mut consumed, mut left, mut closed) = (0, 0, calls, false);
    let mut got = Vec::new();
    for (i, &end) in ends.iter().enumerate() {
        buf.extend_from_slice(&data[done..end]);
        done = end;
        if left == 0 || closed {
            continue;
        }
        let eof = i + 1 == ends.len();
        let base = consumed;
        let (parsed, res) = replies(&mut parser, &mut buf, 0, eof, limit, |b, r| {
            let bytes = |r: Option<Range<usize>>| r.map(|r| b[r].to_vec());
            got.push(Parsed::Reply {
                status: r.status,
                body: b[r.body.clone()].to_vec(),
                content_type: bytes(r.content_type),
                protocol: bytes(r.protocol),
                keep_alive: r.keep_alive,
                end: base + r.end,
            });
            left -= 1;
            closed = !r.keep_alive;
            left > 0 && !closed
        });
        buf.drain(..parsed);
        consumed += parsed;
        if let Err(e) = res {
            return (got, PipelineEnd::Failed(e));
        }
    }
    let end = if closed {
        PipelineEnd::Closed
    } else if left > 0 {
        unreachable!("at EOF a call still in flight fails")
    } else if consumed < data.len() {
        PipelineEnd::Leftover
    } else {
        PipelineEnd::Clean
    };
    (got, end)
}

/// The `upstream_pipeline` fuzz target (and its seed test): the first byte picks the
/// calls in flight (1 + low 3 bits), the limit (next 2 bits), the number of cuts
/// (next 2 bits) and whether to also feed byte by byte (top bit); then two bytes per
/// cut; the rest is what the backend sent. Panics when a split changes the replies
/// or how the connection ended.
pub fn check_pipelined_splits(input: &[u8]) {
    let Some((&ctl, rest)) = input.split_first() else {
        return;
    };
    let calls = 1 + usize::from(ctl & 7);
    let limit = [64, 512, 4096, 1 << 20][usize::from((ctl >> 3) & 3)];
    let n = usize::from((ctl >> 5) & 3);
    let Some((cuts, data)) = rest.split_at_checked(2 * n) else {
        return;
    };
    let cuts: Vec<usize> = cuts
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    let whole = parse_pipelined_in_pieces(data, &[], calls, limit);
    assert_eq!(
        parse_pipelined_in_pieces(data, &cuts, calls, limit),
        whole,
        "cuts {cuts:?}"
    );
    if ctl & 0x80 != 0 {
        let every: Vec<usize> = (1..data.len()).collect();
        assert_eq!(
            parse_pipelined_in_pieces(data, &every, calls, limit),
            whole,
            "byte by byte"
        );
    }
}

#[cfg(test)]
mod tests;
