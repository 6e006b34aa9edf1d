//! HTTP/1.1 framing for the management client (`push`) and the benchmark backend:
//! where a request or response ends (Content-Length or chunked), its status, and the
//! `body` field of an API Gateway event found without a full JSON parse.

/// A complete response at the start of `buf`: its status and total length.
#[derive(Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub total_len: usize,
}

pub enum Parsed<T> {
    Incomplete,
    Done(T),
    Bad(&'static str),
}

/// Parses one response (status line, headers, body) at the start of `buf`.
pub fn parse_response(buf: &[u8]) -> Parsed<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let hl = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(_) => return Parsed::Bad("malformed response"),
    };
    let status = r.code.unwrap_or(0);
    match body_framing(r.headers) {
        Framing::Length(n) => {
            if buf.len() < hl + n {
                Parsed::Incomplete
            } else {
                Parsed::Done(ResponseHead {
                    status,
                    total_len: hl + n,
                })
            }
        }
        Framing::Chunked => match chunked_end(&buf[hl..]) {
            Parsed::Done(n) => Parsed::Done(ResponseHead {
                status,
                total_len: hl + n,
            }),
            Parsed::Incomplete => Parsed::Incomplete,
            Parsed::Bad(e) => Parsed::Bad(e),
        },
        Framing::Bad => Parsed::Bad("bad Content-Length"),
    }
}

enum Framing {
    Length(usize),
    Chunked,
    Bad,
}

fn body_framing(headers: &[httparse::Header<'_>]) -> Framing {
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            return match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => Framing::Length(n),
                None => Framing::Bad,
            };
        }
        if h.name.eq_ignore_ascii_case("transfer-encoding")
            && h.value.eq_ignore_ascii_case(b"chunked")
        {
            return Framing::Chunked;
        }
    }
    Framing::Length(0)
}

/// Length of a chunked body (through the final CRLF), trailers not supported.
pub fn chunked_end(buf: &[u8]) -> Parsed<usize> {
    let mut pos = 0;
    loop {
        let line_end = match buf[pos..].windows(2).position(|w| w == b"\r\n") {
            Some(i) => pos + i,
            None => return Parsed::Incomplete,
        };
        let line = &buf[pos..line_end];
        let hex_end = line.iter().position(|&c| c == b';').unwrap_or(line.len());
        let mut size: usize = 0;
        if hex_end == 0 {
            return Parsed::Bad("empty chunk size");
        }
        for &c in &line[..hex_end] {
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                b' ' | b'\t' => continue,
                _ => return Parsed::Bad("bad chunk size"),
            };
            size = match size.checked_mul(16) {
                Some(s) => s + v as usize,
                None => return Parsed::Bad("chunk too large"),
            };
        }
        pos = line_end + 2;
        if size == 0 {
            if buf.len() < pos + 2 {
                return Parsed::Incomplete;
            }
            return if &buf[pos..pos + 2] == b"\r\n" {
                Parsed::Done(pos + 2)
            } else {
                Parsed::Bad("trailers")
            };
        }
        if buf.len() < pos + size + 2 {
            return Parsed::Incomplete;
        }
        pos += size + 2;
    }
}

/// A complete request at the start of `buf`.
pub struct RequestHead {
    pub body_start: usize,
    pub total_len: usize,
    /// `Connection: close` was asked.
    pub close: bool,
    /// The Lambda Invoke API: `POST /2015-03-31/functions/{name}/invocations`.
    pub lambda_invoke: bool,
    /// An `Authorization: AWS4-HMAC-SHA256 ...` header is present (not verified).
    pub sigv4: bool,
}

/// Parses one request with a Content-Length (or no) body.
pub fn parse_request(buf: &[u8]) -> Parsed<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Request::new(&mut headers);
    let hl = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
        Err(_) => return Parsed::Bad("malformed request"),
    };
    let close = r.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close")
    });
    let lambda_invoke = r.method == Some("POST")
        && r.path.is_some_and(|p| {
            p.starts_with("/2015-03-31/functions/") && p.ends_with("/invocations")
        });
    let sigv4 = r.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("authorization") && h.value.starts_with(b"AWS4-HMAC-SHA256 ")
    });
    match body_framing(r.headers) {
        Framing::Length(n) => {
            if buf.len() < hl + n {
                Parsed::Incomplete
            } else {
                Parsed::Done(RequestHead {
                    body_start: hl,
                    total_len: hl + n,
                    close,
                    lambda_invoke,
                    sigv4,
                })
            }
        }
        Framing::Chunked => Parsed::Bad("chunked requests are not supported"),
        Framing::Bad => Parsed::Bad("bad Content-Length"),
    }
}

/// Finds the top-level `"body"` string of an API Gateway event and appends its
/// unescaped bytes to `out` (base64-decoded when `"isBase64Encoded":true`). Returns
/// false when the event has no string body (CONNECT, DISCONNECT). Inside JSON strings
/// every `"` is escaped, so the first raw `"body":` is a key, not text.
pub fn event_body(event: &[u8], out: &mut Vec<u8>) -> bool {
    const KEY: &[u8] = b"\"body\":";
    let Some(i) = find(event, KEY) else {
        return false;
    };
    let mut p = i + KEY.len();
    while p < event.len() && event[p].is_ascii_whitespace() {
        p += 1;
    }
    if p >= event.len() || event[p] != b'"' {
        return false;
    }
    let start = out.len();
    if unescape(&event[p + 1..], out).is_none() {
        out.truncate(start);
        return false;
    }
    if find(event, b"\"isBase64Encoded\":true").is_some()
        || find(event, b"\"isBase64Encoded\": true").is_some()
    {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD.decode(&out[start..]);
        out.truncate(start);
        match decoded {
            Ok(d) => out.extend_from_slice(&d),
            Err(_) => return false,
        }
    }
    true
}

/// The `methodArn` string of a REQUEST authorizer event (`"type":"REQUEST"`), unescaped,
/// appended to `out`; false when `event` is not one.
pub fn authorizer_method_arn(event: &[u8], out: &mut Vec<u8>) -> bool {
    if find(event, b"\"type\":\"REQUEST\"").is_none() {
        return false;
    }
    let Some(i) = find(event, b"\"methodArn\":\"") else {
        return false;
    };
    let start = out.len();
    if unescape(&event[i + 13..], out).is_none() {
        out.truncate(start);
        return false;
    }
    true
}

/// Appends `s` as a JSON string (quotes included).
pub fn push_json_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            c if c < 0x20 => {
                out.extend_from_slice(b"\\u00");
                out.push(b"0123456789abcdef"[(c >> 4) as usize]);
                out.push(b"0123456789abcdef"[(c & 15) as usize]);
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    let last = hay.len() - needle.len();
    while i <= last {
        match hay[i..=last].iter().position(|&c| c == first) {
            None => return None,
            Some(j) => {
                i += j;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Unescapes a JSON string body (after the opening quote) into `out`; returns the
/// index just past the closing quote.
pub fn unescape(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        // Copy the run up to the next quote or backslash in one go.
        let run = s[i..].iter().position(|&c| c == b'"' || c == b'\\')?;
        out.extend_from_slice(&s[i..i + run]);
        i += run;
        if s[i] == b'"' {
            return Some(i + 1);
        }
        let e = *s.get(i + 1)?;
        i += 2;
        match e {
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => {
                let mut cp = hex4(s.get(i..i + 4)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&cp)
                    && s.get(i) == Some(&b'\\')
                    && s.get(i + 1) == Some(&b'u')
                {
                    let lo = hex4(s.get(i + 2..i + 6)?)?;
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                let c = char::from_u32(cp).unwrap_or('\u{FFFD}');
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            _ => return None,
        }
    }
}

fn hex4(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        v = (v << 4) | (c as char).to_digit(16)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1";
        match parse_response(r) {
            Parsed::Done(h) => assert_eq!(
                h,
                ResponseHead {
                    status: 200,
                    total_len: 40
                }
            ),
            _ => panic!(),
        }
        let c = b"HTTP/1.1 410 Gone\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        match parse_response(c) {
            Parsed::Done(h) => assert_eq!(
                h,
                ResponseHead {
                    status: 410,
                    total_len: c.len()
                }
            ),
            _ => panic!(),
        }
        assert!(matches!(
            parse_response(&c[..c.len() - 1]),
            Parsed::Incomplete
        ));
    }

    #[test]
    fn event_body_extraction() {
        let ev = br#"{"requestContext":{"routeKey":"$default","connectionId":"x"},"body":"{\"action\":\"echo\",\"u\":\"\u00e9\ud83d\ude00\"}","isBase64Encoded":false}"#;
        let mut out = Vec::new();
        assert!(event_body(ev, &mut out));
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "{\"action\":\"echo\",\"u\":\"é😀\"}"
        );
        out.clear();
        assert!(event_body(
            br#"{"body":"AP8=","isBase64Encoded":true}"#,
            &mut out
        ));
        assert_eq!(out, [0, 255]);
        assert!(!event_body(
            br#"{"requestContext":{},"isBase64Encoded":false}"#,
            &mut out
        ));
    }

    #[test]
    fn requests() {
        let r = b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET";
        match parse_request(r) {
            Parsed::Done(h) => {
                assert_eq!(&r[h.body_start..h.total_len], b"abc");
                assert!(!h.close);
            }
            _ => panic!(),
        }
    }
}
