//! A sans-IO codec for NATS's client text protocol (core NATS only): the server's
//! `INFO`, `MSG`, `HMSG` (with the `NATS/1.0` header block, whose status line carries
//! the `503` of "no responders"), `PING`, `PONG`, `+OK`, `-ERR`, and the client's
//! `CONNECT`, `PUB`, `HPUB`, `SUB`, `UNSUB`, `PING`, `PONG`.
//!
//! [`parse`] takes the bytes received so far and yields one operation and how many
//! bytes it used, or `None` when the operation is not complete yet: the caller keeps
//! the rest and calls again after the next read, so any split of the stream gives the
//! same operations (property-tested below). Everything from the server is hostile: a
//! control line longer than [`MAX_CONTROL_LINE`], a payload larger than the
//! negotiated `max_payload`, an unknown operation or a malformed number is an
//! [`Error`], after which the client drops the connection and reconnects.

use std::fmt;

/// Longest control line accepted (the operation and its arguments, without payload).
/// An `INFO` line of a large cluster (its `connect_urls`) fits.
pub const MAX_CONTROL_LINE: usize = 16 * 1024;
/// `max_payload` before the server's `INFO` says otherwise (NATS's default).
pub const DEFAULT_MAX_PAYLOAD: usize = 1024 * 1024;
/// The "no responders" status of a reply's header block.
pub const NO_RESPONDERS: u16 = 503;

/// Why the server's stream cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// No line end within [`MAX_CONTROL_LINE`] bytes.
    LineTooLong,
    /// A payload larger than `max_payload`.
    PayloadTooLarge(usize),
    /// An operation this client does not know, or bad arguments.
    Malformed(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LineTooLong => write!(f, "control line longer than {MAX_CONTROL_LINE} bytes"),
            Error::PayloadTooLarge(n) => write!(f, "payload of {n} bytes over max_payload"),
            Error::Malformed(what) => write!(f, "malformed {what}"),
        }
    }
}

/// A delivered message (`MSG` or `HMSG`), borrowing the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Msg<'a> {
    pub subject: &'a [u8],
    pub sid: u64,
    pub reply: Option<&'a [u8]>,
    /// The status of an `HMSG`'s `NATS/1.0 <status>` line (`503`: no responders).
    pub status: Option<u16>,
    /// The raw header block of an `HMSG` (empty for `MSG`).
    pub headers: &'a [u8],
    pub payload: &'a [u8],
}

/// One operation from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// `INFO`: what the client needs of its JSON.
    Info {
        max_payload: Option<usize>,
        headers: bool,
    },
    Msg(Msg<'a>),
    Ping,
    Pong,
    Ok,
    Err(&'a [u8]),
}

/// Parses the next operation at the start of `buf`: `Ok(None)` when it is not
/// complete yet, else the operation and the bytes it took.
pub fn parse(buf: &[u8], max_payload: usize) -> Result<Option<(Op<'_>, usize)>, Error> {
    let scan = &buf[..buf.len().min(MAX_CONTROL_LINE + 2)];
    let Some(nl) = scan.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_CONTROL_LINE {
            Err(Error::LineTooLong)
        } else {
            Ok(None)
        };
    };
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let after = nl + 1;
    let (op, rest) = match line.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => (&line[..i], line[i + 1..].trim_ascii()),
        None => (line, &b""[..]),
    };
    let op_is = |name: &[u8]| op.eq_ignore_ascii_case(name);
    if op_is(b"MSG") || op_is(b"HMSG") {
        let headers = op_is(b"HMSG");
        let mut args = [&b""[..]; 5];
        let n = split_args(rest, &mut args).ok_or(Error::Malformed("MSG arguments"))?;
        // MSG subject sid [reply] size; HMSG subject sid [reply] hsize size.
        let fixed = if headers { 4 } else { 3 };
        if n != fixed && n != fixed + 1 {
            return Err(Error::Malformed("MSG arguments"));
        }
        let reply = (n == fixed + 1).then(|| args[2]);
        let total = number(args[n - 1]).ok_or(Error::Malformed("MSG size"))?;
        let hsize = if headers {
            number(args[n - 2]).ok_or(Error::Malformed("HMSG header size"))?
        } else {
            0
        };
        if total > max_payload {
            return Err(Error::PayloadTooLarge(total));
        }
        if hsize > total {
            return Err(Error::Malformed("HMSG header size"));
        }
        let sid = number(args[1]).ok_or(Error::Malformed("MSG sid"))? as u64;
        let end = after + total;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(Error::Malformed("MSG payload end"));
        }
        let block = &buf[after..after + hsize];
        let status = if headers {
            Some(header_status(block).ok_or(Error::Malformed("HMSG header block"))?)
                .filter(|s| *s != 0)
        } else {
            None
        };
        let msg = Msg {
            subject: args[0],
            sid,
            reply,
            status,
            headers: block,
            payload: &buf[after + hsize..end],
        };
        return Ok(Some((Op::Msg(msg), end + 2)));
    }
    let parsed = if op_is(b"PING") {
        Op::Ping
    } else if op_is(b"PONG") {
        Op::Pong
    } else if op_is(b"+OK") {
        Op::Ok
    } else if op_is(b"-ERR") {
        Op::Err(rest)
    } else if op_is(b"INFO") {
        Op::Info {
            max_payload: json_number(rest, b"\"max_payload\""),
            headers: json_true(rest, b"\"headers\""),
        }
    } else {
        return Err(Error::Malformed("operation"));
    };
    Ok(Some((parsed, after)))
}

/// Splits space-separated arguments into `out`; `None` for more than `out` holds.
fn split_args<'a>(s: &'a [u8], out: &mut [&'a [u8]]) -> Option<usize> {
    let mut n = 0;
    for a in s
        .split(|b| *b == b' ' || *b == b'\t')
        .filter(|a| !a.is_empty())
    {
        *out.get_mut(n)? = a;
        n += 1;
    }
    Some(n)
}

/// A decimal of at most 12 digits (sizes and sids).
fn number(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 12 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

/// The status of a `NATS/1.0[ <status>[ description]]` header block (`0`: none).
fn header_status(block: &[u8]) -> Option<u16> {
    let line_end = block.iter().position(|&b| b == b'\n')?;
    let line = block[..line_end].strip_suffix(b"\r")?;
    let rest = line.strip_prefix(b"NATS/1.0")?;
    let rest = rest.trim_ascii_start();
    if rest.is_empty() {
        return Some(0);
    }
    let code = rest.get(..3)?;
    if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
        return None;
    }
    Some(code.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

/// The number after `"key":` in a flat JSON text (the server's `INFO`).
fn json_number(json: &[u8], key: &[u8]) -> Option<usize> {
    let at = crate::buf::find(json, key)? + key.len();
    let rest = json[at..].trim_ascii_start().strip_prefix(b":")?;
    let rest = rest.trim_ascii_start();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    number(&rest[..digits])
}

fn json_true(json: &[u8], key: &[u8]) -> bool {
    crate::buf::find(json, key).is_some_and(|at| {
        let rest = json[at + key.len()..].trim_ascii_start();
        rest.strip_prefix(b":")
            .is_some_and(|r| r.trim_ascii_start().starts_with(b"true"))
    })
}

/// Whether `s` is a subject this client may publish to or subscribe to: 1 to 255
/// bytes of printable ASCII without spaces, no empty token.
pub fn valid_subject(s: &[u8]) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.iter().all(|b| b.is_ascii_graphic())
        && s.split(|b| *b == b'.').all(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------
// Client operations, appended to an output buffer.

/// `CONNECT` with headers and no-responders on (a request to a subject nobody
/// listens on is answered at once with a `503` status, not left to time out),
/// verbose and pedantic off.
pub fn connect(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1,\"lang\":\"rust\",\"version\":\"");
    out.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    out.extend_from_slice(b"\",\"name\":\"");
    // Our own name: subject characters only, no JSON escaping needed.
    out.extend(
        name.bytes()
            .filter(|b| b.is_ascii_alphanumeric() || b"-_.".contains(b)),
    );
    out.extend_from_slice(b"\"}\r\n");
}

/// `PUB subject [reply] size\r\npayload\r\n`.
pub fn publish(out: &mut Vec<u8>, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
    out.extend_from_slice(b"PUB ");
    out.extend_from_slice(subject);
    if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r);
    }
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
/// `HPUB subject [reply] hsize size\r\nheaders payload\r\n`; `headers` is a whole
/// `NATS/1.0\r\n...\r\n\r\n` block.
pub fn hpublish(
    out: &mut Vec<u8>,
    subject: &[u8],
    reply: Option<&[u8]>,
    headers: &[u8],
    payload: &[u8],
) {
    out.extend_from_slice(b"HPUB ");
    out.extend_from_slice(subject);
    if let Some(r) = reply {
        out.push(b' ');
        out.extend_from_slice(r);
    }
    let mut n = itoa::Buffer::new();
    out.push(b' ');
    out.extend_from_slice(n.format(headers.len()).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(headers.len() + payload.len()).as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers);
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// `SUB subject sid`.
pub fn subscribe(out: &mut Vec<u8>, subject: &[u8], sid: u64) {
    out.extend_from_slice(b"SUB ");
    out.extend_from_slice(subject);
    out.push(b' ');
    out.extend_from_slice(itoa::Buffer::new().format(sid).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `UNSUB sid`.
pub fn unsubscribe(out: &mut Vec<u8>, sid: u64) {
    out.extend_from_slice(b"UNSUB ");
    out.extend_from_slice(itoa::Buffer::new().format(sid).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn ping(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PING\r\n");
}

pub fn pong(out: &mut Vec<u8>) {
    out.extend_from_slice(b"PONG\r\n");
}

/// The operations of `stream` (as debug text) when it arrives in pieces cut at
/// `cuts` (offsets taken modulo its length, in any order), parsed as the client
/// does after each read; the first error ends it.
pub fn parse_in_pieces(
    stream: &[u8],
    cuts: &[usize],
    max_payload: usize,
) -> (Vec<String>, Option<Error>) {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(stream.len());
    points.sort_unstable();
    let (mut buf, mut out, mut from) = (Vec::new(), Vec::new(), 0);
    for p in points {
        buf.extend_from_slice(&stream[from..p]);
        from = p;
        let mut at = 0;
        loop {
            match parse(&buf[at..], max_payload) {
                Ok(Some((op, n))) => {
                    out.push(format!("{op:?}"));
                    at += n;
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
        buf.drain(..at);
    }
    (out, None)
}

/// The fuzz target's check (`tests/fuzz/fuzz_targets/nats_proto.rs`): bytes from a
/// NATS server parse to the same operations and the same error whether they come
/// whole, byte by byte or at cuts the input chooses, and nothing panics. A small
/// `max_payload` (from the first byte) makes the size checks reachable.
pub fn check_splits(input: &[u8]) {
    let Some((&first, stream)) = input.split_first() else {
        return;
    };
    let max_payload = 1 + usize::from(first) * 16;
    let whole = parse_in_pieces(stream, &[], max_payload);
    let every: Vec<usize> = (0..stream.len()).collect();
    assert_eq!(
        whole,
        parse_in_pieces(stream, &every, max_payload),
        "byte by byte"
    );
    let chosen: Vec<usize> = stream.iter().map(|b| usize::from(*b) * 7).collect();
    assert_eq!(
        whole,
        parse_in_pieces(stream, &chosen, max_payload),
        "chosen cuts"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every operation in `stream`, parsed whole.
    fn all(stream: &[u8]) -> Result<Vec<String>, Error> {
        split(stream, &[])
    }

    /// The same stream delivered in pieces cut at `cuts`, as a client reads it.
    fn split(stream: &[u8], cuts: &[usize]) -> Result<Vec<String>, Error> {
        match parse_in_pieces(stream, cuts, DEFAULT_MAX_PAYLOAD) {
            (ops, None) => Ok(ops),
            (_, Some(e)) => Err(e),
        }
    }

    const STREAM: &[u8] =
        b"INFO {\"server_id\":\"x\",\"headers\":true,\"max_payload\":1048576}\r\n\
        PING\r\nPONG\r\n+OK\r\n-ERR 'Unknown Subject'\r\n\
        MSG a.b 1 5\r\nhello\r\n\
        msg a.b 12 _INBOX.x.1 0\r\n\r\n\
        HMSG _INBOX.x.2 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n\
        HMSG s 4 r 20 23\r\nNATS/1.0\r\nA: b c\r\n\r\nxyz\r\n";

    #[test]
    fn every_operation_parses() {
        let ops = all(STREAM).unwrap();
        assert_eq!(ops.len(), 9, "{ops:#?}");
        let (op, _) = parse(STREAM, DEFAULT_MAX_PAYLOAD).unwrap().unwrap();
        assert_eq!(
            op,
            Op::Info {
                max_payload: Some(1048576),
                headers: true
            }
        );
        let hmsg = b"HMSG _INBOX.x.2 3 16 16\r\nNATS/1.0 503\r\n\r\n\r\n";
        let Some((Op::Msg(m), n)) = parse(hmsg, 100).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(n, hmsg.len());
        assert_eq!(m.status, Some(NO_RESPONDERS));
        assert_eq!(m.sid, 3);
        assert!(m.payload.is_empty());
        let msg = b"MSG a.b 12 _INBOX.x.1 3\r\nabc\r\n";
        let Some((Op::Msg(m), _)) = parse(msg, 100).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(m.reply, Some(&b"_INBOX.x.1"[..]));
        assert_eq!(m.payload, b"abc");
        assert_eq!(m.status, None);
        let h = b"HMSG s 4 20 23\r\nNATS/1.0\r\nA: b c\r\n\r\nxyz\r\n";
        let Some((Op::Msg(m), _)) = parse(h, 100).unwrap() else {
            panic!("not a message")
        };
        assert_eq!((m.status, m.payload), (None, &b"xyz"[..]));
    }

    #[test]
    fn garbage_and_excess_are_errors() {
        assert!(matches!(parse(b"HELLO\r\n", 10), Err(Error::Malformed(_))));
        assert!(matches!(
            parse(b"MSG a 1 11\r\n", 10),
            Err(Error::PayloadTooLarge(11))
        ));
        assert!(parse(b"MSG a 1 -1\r\n", 10).is_err());
        assert!(parse(b"MSG a\r\n", 10).is_err());
        assert!(parse(b"MSG a 1 2\r\nabXY", 10).is_err());
        assert!(parse(b"HMSG a 1 5 2\r\n", 10).is_err());
        assert!(parse(b"HMSG a 1 2 2\r\nXY\r\n", 10).is_err());
        let long = vec![b'A'; MAX_CONTROL_LINE + 1];
        assert_eq!(parse(&long, 10), Err(Error::LineTooLong));
        // Incomplete is not an error.
        assert_eq!(parse(b"MSG a 1 5\r\nhel", 10), Ok(None));
        assert_eq!(parse(b"PIN", 10), Ok(None));
    }

    #[test]
    fn client_operations_are_what_the_server_expects() {
        let mut out = Vec::new();
        publish(&mut out, b"a.b", Some(b"_INBOX.x.1"), b"hi");
        subscribe(&mut out, b"_INBOX.x.*", 7);
        unsubscribe(&mut out, 7);
        hpublish(&mut out, b"s", None, b"NATS/1.0\r\n\r\n", b"xy");
        assert_eq!(
            out,
            b"PUB a.b _INBOX.x.1 2\r\nhi\r\nSUB _INBOX.x.* 7\r\nUNSUB 7\r\nHPUB s 12 14\r\nNATS/1.0\r\n\r\nxy\r\n"
        );
        let mut c = Vec::new();
        connect(&mut c, "wsgate prod\"x");
        let text = String::from_utf8(c).unwrap();
        assert!(text.contains("\"headers\":true,\"no_responders\":true"));
        assert!(text.contains("\"name\":\"wsgateprodx\""));
        assert!(valid_subject(b"wsg.prod.n.1.0"));
        assert!(!valid_subject(b"wsg..x"));
        assert!(!valid_subject(b"a b"));
        assert!(!valid_subject(b""));
    }

    proptest! {
        /// Any split of a stream into reads gives the operations of the whole.
        #[test]
        fn any_read_split_gives_the_same_operations(cuts in proptest::collection::vec(0usize..400, 0..12)) {
            prop_assert_eq!(split(STREAM, &cuts).unwrap(), all(STREAM).unwrap());
        }

        /// Hostile bytes give operations or an error, never a panic, and never an
        /// operation longer than the input.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Some((_, n))) = parse(&bytes, 64) {
                prop_assert!(n <= bytes.len());
            }
        }

        #[test]
        fn arbitrary_text_never_panics(s in "(MSG|HMSG|INFO|PING|-ERR)[ a-z0-9.\r\n]{0,60}") {
            if let Ok(Some((_, n))) = parse(s.as_bytes(), 64) {
                prop_assert!(n <= s.len());
            }
        }
    }
}
