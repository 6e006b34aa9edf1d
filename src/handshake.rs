//! The opening handshake (RFC 6455 §4.2), sans-IO over `httparse`: feed it the bytes
//! received so far and it says "need more", "reject with this status", or "upgrade".
//! Rejections are checked in SPEC §3's order.

use crate::buf::find;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha1::{Digest, Sha1};

/// Longest request target we accept (AWS: 4096-character URLs).
pub const MAX_URL_BYTES: usize = 4096;
/// Largest request head we accept.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header lines in one request (a limit of its own, apart from the block's size).
pub const MAX_HEADERS: usize = 128;
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid upgrade request, borrowing the received bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade<'b> {
    /// Bytes of the request head, so what follows (early frames) can be kept.
    pub head_len: usize,
    pub path: &'b str,
    pub query: Option<&'b str>,
    /// `Sec-WebSocket-Accept` value.
    pub accept: [u8; 28],
    pub host: Option<&'b [u8]>,
    pub user_agent: Option<&'b [u8]>,
    /// `Sec-WebSocket-Protocol` offers, comma-separated as sent (only the backend picks).
    pub protocols: Option<&'b [u8]>,
}

/// Why an upgrade request was refused; each maps to one HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    UriTooLong,
    HeadersTooLarge,
    TooManyHeaders,
    MethodNotAllowed,
    NotFound,
    NotUpgrade,
    BadRequest(&'static str),
    UnsupportedVersion,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::UriTooLong => 414,
            Rejection::HeadersTooLarge | Rejection::TooManyHeaders => 431,
            Rejection::MethodNotAllowed => 405,
            Rejection::NotFound => 404,
            Rejection::NotUpgrade | Rejection::UnsupportedVersion => 426,
            Rejection::BadRequest(_) => 400,
        }
    }

    fn text(self) -> (&'static str, &'static str) {
        match self {
            Rejection::UriTooLong => ("URI Too Long", "URL longer than 4096 bytes"),
            Rejection::HeadersTooLarge => (
                "Request Header Fields Too Large",
                "request head larger than 16 KiB",
            ),
            Rejection::TooManyHeaders => (
                "Request Header Fields Too Large",
                "too many headers: at most 128",
            ),
            Rejection::MethodNotAllowed => {
                ("Method Not Allowed", "a WebSocket upgrade must be a GET")
            }
            Rejection::NotFound => ("Not Found", "no API stage at this path"),
            Rejection::NotUpgrade => ("Upgrade Required", "this endpoint speaks WebSocket only"),
            Rejection::BadRequest(why) => ("Bad Request", why),
            Rejection::UnsupportedVersion => {
                ("Upgrade Required", "only WebSocket version 13 is supported")
            }
        }
    }

    /// Appends the complete HTTP response (the connection closes after it).
    pub fn write_response(self, out: &mut Vec<u8>) {
        let (_, body) = self.text();
        let extra: Option<(&str, &[u8])> = match self {
            Rejection::NotUpgrade => Some(("Upgrade", b"websocket")),
            Rejection::UnsupportedVersion => Some(("Sec-WebSocket-Version", b"13")),
            Rejection::MethodNotAllowed => Some(("Allow", b"GET")),
            _ => None,
        };
        write_status(out, self.status(), extra, "text/plain", body.as_bytes());
    }
}

/// Appends a whole `Connection: close` HTTP/1.1 response (through the one writer,
/// `http1.rs`: standard reason phrase, no length on a bodiless status).
pub fn write_status(
    out: &mut Vec<u8>,
    status: u16,
    extra_header: Option<(&str, &[u8])>,
    content_type: &str,
    body: &[u8],
) {
    let mut headers: [(&str, &[u8]); 2] = [("", b""); 2];
    let mut n = 0;
    if let Some(h) = extra_header {
        headers[n] = h;
        n += 1;
    }
    if !body.is_empty() {
        headers[n] = ("Content-Type", content_type.as_bytes());
        n += 1;
    }
    crate::http1::write_response(out, status, &headers[..n], body, true);
}

/// Appends the `101 Switching Protocols` response.
pub fn write_accept(out: &mut Vec<u8>, accept: &[u8; 28], protocol: Option<&[u8]>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept);
    if let Some(p) = protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 §4.2.2).
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    let mut out = [0u8; 28];
    STANDARD
        .encode_slice(h.finalize(), &mut out)
        .expect("20 bytes encode to 28");
    out
}

/// Checks the bytes received so far. `Ok(None)`: the head is not complete yet.
/// `stage` is the API stage without slashes ("" serves "/").
pub fn parse<'b>(buf: &'b [u8], stage: &str) -> Result<Option<Upgrade<'b>>, Rejection> {
    parse_resumed(buf, stage, 0)
}

/// `management.on_api_listener` (SPEC §13): whether `buf` starts with a complete
/// request head that is a `@connections` call rather than an upgrade: its path
/// (percent-decoded) is `/{stage}/@connections/...` or `/@connections/...` and it
/// does not ask for `Upgrade: websocket`. Such a connection is handed to the
/// management API; every other one keeps the handshake's answers. An incomplete or
/// malformed head is `false` (the handshake stashes or refuses it as usual).
pub fn is_connections_request(buf: &[u8], stage: &str) -> bool {
    // Upgrades pay one scan of the request line: no `connections/` in it, no call.
    let first = &buf[..buf.len().min(MAX_URL_BYTES + 64)];
    let line = &first[..find(first, b"\r\n").unwrap_or(first.len())];
    if find(line, b"connections/").is_none()
        && find(line, b"groups/").is_none()
        && find(line, b"broadcast").is_none()
    {
        return false;
    }
    let Some(end) = find(&buf[..buf.len().min(MAX_HEADER_BYTES)], b"\r\n\r\n") else {
        return false;
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(
        req.parse(&buf[..end + 4]),
        Ok(httparse::Status::Complete(_))
    ) {
        return false;
    }
    let target = req.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let path = crate::percent::decode(path.as_bytes());
    let rest = path
        .strip_prefix(b"/")
        .and_then(|p| p.strip_prefix(stage.as_bytes()))
        .filter(|r| r.starts_with(b"/@connections/"))
        .unwrap_or(&path);
    // Groups and broadcast [ext] (SPEC §15) are management calls too.
    if !rest.starts_with(b"/@connections/") && crate::groups::target(&path, stage).is_none() {
        return false;
    }
    !req.headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("upgrade") && has_token(h.value, b"websocket"))
}

/// [`parse`] of a head whose first `seen` bytes were already looked at (and held no
/// complete head): the search for its end resumes there, so a head that arrives a
/// byte at a time costs linear, not quadratic, work.
pub fn parse_resumed<'b>(
    buf: &'b [u8],
    stage: &str,
    seen: usize,
) -> Result<Option<Upgrade<'b>>, Rejection> {
    // 414 is decided by the request line alone, before the rest of the head arrives.
    let line_end = find(buf, b"\r\n");
    let line = &buf[..line_end.unwrap_or(buf.len())];
    let target_len = line.split(|&c| c == b' ').nth(1).map_or(0, |t| t.len());
    if target_len > MAX_URL_BYTES || (line_end.is_none() && buf.len() > MAX_URL_BYTES + 64) {
        return Err(Rejection::UriTooLong);
    }
    let from = seen.saturating_sub(3).min(buf.len());
    let Some(end) = find(&buf[from..], b"\r\n\r\n").map(|e| e + from) else {
        return if buf.len() > MAX_HEADER_BYTES {
            Err(Rejection::HeadersTooLarge)
        } else {
            Ok(None)
        };
    };
    let head_len = end + 4;
    if head_len > MAX_HEADER_BYTES {
        return Err(Rejection::HeadersTooLarge);
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(&buf[..head_len]) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(Rejection::BadRequest("malformed request head"))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Rejection::TooManyHeaders),
        Err(_) => return Err(Rejection::BadRequest("malformed request head")),
    }
    if req.method != Some("GET") {
        return Err(Rejection::MethodNotAllowed);
    }
    let Some((path, query)) = split_target(req.path.unwrap_or("")) else {
        return Err(Rejection::NotFound);
    };
    if !stage_matches(path, stage) {
        return Err(Rejection::NotFound);
    }
    let mut upgrade = false;
    let mut connection_upgrade = false;
    let (mut key, mut version, mut host, mut user_agent, mut protocols) =
        (None, None, None, None, None);
    let mut keys = 0;
    for h in req.headers.iter() {
        let v = h.value;
        match h.name.len() {
            4 if h.name.eq_ignore_ascii_case("host") => host = Some(v),
            7 if h.name.eq_ignore_ascii_case("upgrade") => upgrade |= has_token(v, b"websocket"),
            10 if h.name.eq_ignore_ascii_case("connection") => {
                connection_upgrade |= has_token(v, b"upgrade")
            }
            10 if h.name.eq_ignore_ascii_case("user-agent") => user_agent = Some(v),
            17 if h.name.eq_ignore_ascii_case("sec-websocket-key") => {
                keys += 1;
                key = Some(v)
            }
            21 if h.name.eq_ignore_ascii_case("sec-websocket-version") => version = Some(v),
            22 if h.name.eq_ignore_ascii_case("sec-websocket-protocol") => protocols = Some(v),
            _ => {}
        }
    }
    if !upgrade || !connection_upgrade {
        return Err(Rejection::NotUpgrade);
    }
    if req.version != Some(1) {
        return Err(Rejection::BadRequest("a WebSocket upgrade needs HTTP/1.1"));
    }
    if keys > 1 {
        return Err(Rejection::BadRequest("more than one Sec-WebSocket-Key"));
    }
    let key = key
        .map(<[u8]>::trim_ascii)
        .ok_or(Rejection::BadRequest("missing Sec-WebSocket-Key"))?;
    let mut decoded = [0u8; 18];
    if STANDARD.decode_slice(key, &mut decoded) != Ok(16) {
        return Err(Rejection::BadRequest(
            "Sec-WebSocket-Key is not 16 bytes of base64",
        ));
    }
    if version.map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(Rejection::UnsupportedVersion);
    }
    Ok(Some(Upgrade {
        head_len,
        path,
        query,
        accept: accept_key(key),
        host,
        user_agent,
        protocols,
    }))
}

/// Splits a request target into its path and query. The origin form (`/prod?x`) is
/// what clients send; the absolute form (`http://host/prod?x`, RFC 9112 §3.2.2) is
/// accepted too, its authority ignored (`Host` names the host). `None`: neither.
fn split_target(target: &str) -> Option<(&str, Option<&str>)> {
    let origin = if target.starts_with('/') {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        if !["http", "https", "ws", "wss"]
            .iter()
            .any(|s| scheme.eq_ignore_ascii_case(s))
        {
            return None;
        }
        // The authority runs to the path or the query (ASCII delimiters: a char boundary).
        &rest[rest.find(['/', '?']).unwrap_or(rest.len())..]
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    };
    // An absolute form without a path means "/".
    Some((if path.is_empty() { "/" } else { path }, query))
}

fn stage_matches(path: &str, stage: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest == stage
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&c| c == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /prod HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: t\r\n\r\n";

    fn req(s: &str) -> Result<Option<Upgrade<'_>>, Rejection> {
        parse(s.as_bytes(), "prod")
    }

    #[test]
    fn rfc6455_accept_key() {
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn good_request_upgrades_at_every_split() {
        for n in 0..GOOD.len() {
            assert_eq!(req(&GOOD[..n]), Ok(None), "{n}");
        }
        let u = req(GOOD).unwrap().unwrap();
        assert_eq!(u.head_len, GOOD.len());
        assert_eq!(&u.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(u.host, Some(&b"example.com"[..]));
        assert!(
            req(&GOOD.replace("/prod", "/prod/?a=1"))
                .unwrap()
                .unwrap()
                .query
                == Some("a=1")
        );
    }

    macro_rules! rejects {
        ($($name:ident: $from:expr, $to:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let r = GOOD.replacen($from, $to, 1);
                assert_eq!(req(&r), Err($want));
            }
        )*};
    }

    rejects! {
        post_is_405: "GET", "POST" => Rejection::MethodNotAllowed;
        wrong_path_is_404: "/prod", "/dev" => Rejection::NotFound;
        post_to_wrong_path_is_405_first: "GET /prod", "PUT /dev" => Rejection::MethodNotAllowed;
        no_upgrade_is_426: "Upgrade: websocket", "Upgrade: h2c" => Rejection::NotUpgrade;
        no_connection_upgrade_is_426: "keep-alive, Upgrade", "keep-alive" => Rejection::NotUpgrade;
        http10_is_400: "HTTP/1.1", "HTTP/1.0" => Rejection::BadRequest("a WebSocket upgrade needs HTTP/1.1");
        short_key_is_400: "dGhlIHNhbXBsZSBub25jZQ==", "dGhl" => Rejection::BadRequest("Sec-WebSocket-Key is not 16 bytes of base64");
        missing_key_is_400: "Sec-WebSocket-Key", "X-Key" => Rejection::BadRequest("missing Sec-WebSocket-Key");
        version_8_is_426: "Version: 13", "Version: 8" => Rejection::UnsupportedVersion;
        duplicate_key_is_400: "Sec-WebSocket-Version", "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nSec-WebSocket-Version"
            => Rejection::BadRequest("more than one Sec-WebSocket-Key");
        absolute_form_elsewhere_is_404: "/prod", "http://h/dev" => Rejection::NotFound;
        other_scheme_is_404: "/prod", "ftp://h/prod" => Rejection::NotFound;
        relative_target_is_404: "/prod", "prod" => Rejection::NotFound;
    }

    #[test]
    fn absolute_form_targets_are_split_into_path_and_query() {
        for (target, path, query) in [
            ("http://h/prod", "/prod", None),
            ("HTTP://h:80/prod/?a=1", "/prod/", Some("a=1")),
            ("wss://h?x", "/", Some("x")),
            ("https://h", "/", None),
            ("/prod?", "/prod", Some("")),
        ] {
            assert_eq!(split_target(target), Some((path, query)), "{target}");
        }
        let r = GOOD.replacen("/prod", "http://example.com/prod?t=1", 1);
        let u = req(&r).unwrap().unwrap();
        assert_eq!((u.path, u.query), ("/prod", Some("t=1")));
    }

    #[test]
    fn many_small_headers_are_431_too_many_not_too_large() {
        let extra: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let r = GOOD.replacen("\r\n\r\n", &format!("\r\n{extra}\r\n"), 1);
        assert!(r.len() < MAX_HEADER_BYTES);
        assert_eq!(req(&r), Err(Rejection::TooManyHeaders));
        let mut out = Vec::new();
        Rejection::TooManyHeaders.write_response(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 431 "), "{s}");
        assert!(s.ends_with("too many headers: at most 128"), "{s}");
    }

    #[test]
    fn long_url_is_414_even_before_the_head_ends() {
        let r = format!("GET /prod?{} HTTP/1.1\r\n", "a".repeat(5000));
        assert_eq!(req(&r), Err(Rejection::UriTooLong));
    }

    #[test]
    fn huge_head_is_431() {
        let r = format!("GET /prod HTTP/1.1\r\nX: {}\r\n", "a".repeat(17000));
        assert_eq!(req(&r), Err(Rejection::HeadersTooLarge));
    }

    #[test]
    fn empty_stage_serves_root() {
        let r = GOOD.replace("/prod", "/");
        assert!(parse(r.as_bytes(), "").unwrap().is_some());
    }

    #[test]
    fn rejection_responses_carry_their_headers() {
        let mut out = Vec::new();
        Rejection::UnsupportedVersion.write_response(&mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(s.contains("Sec-WebSocket-Version: 13\r\n"));
    }

    #[test]
    fn connections_requests_are_told_from_upgrades() {
        let yes = |r: &str| is_connections_request(r.as_bytes(), "prod");
        assert!(yes(
            "POST /prod/@connections/abc HTTP/1.1\r\nHost: x\r\n\r\nbody"
        ));
        assert!(yes("GET /@connections/abc HTTP/1.1\r\n\r\n"));
        assert!(yes("POST /prod/@groups/room HTTP/1.1\r\n\r\n"));
        assert!(yes("PUT /@groups/room/abc HTTP/1.1\r\n\r\n"));
        assert!(yes("POST /prod/%40broadcast HTTP/1.1\r\n\r\n"));
        assert!(!yes("GET /prod/broadcast HTTP/1.1\r\n\r\n"));
        assert!(yes("DELETE /prod/%40connections/abc%3D HTTP/1.1\r\n\r\n"));
        assert!(!yes("POST /prod/@connections/abc HTTP/1.1\r\nHost: x\r\n"));
        assert!(!yes("POST /other/@connections/abc HTTP/1.1\r\n\r\n"));
        assert!(!yes("GET /prod HTTP/1.1\r\n\r\n"));
        assert!(!yes(
            "GET /prod/@connections/a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
    }
}
