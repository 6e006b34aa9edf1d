//! Fixtures for the management API tests (SPEC §8): configs with a chosen
//! `[management]` table, an HTTP/1.1 keep-alive management client that reads whole
//! responses (head and body), error-shape checks, connection ids learnt from a mock
//! route answering `$context.connectionId`, id encoding and ISO-8601 parsing.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::backend::read_body;
use crate::support::*;

// ---------------------------------------------------------------------------
// Configs.

/// A config header like `support::base_config` (api `test`, stage `prod`, ports 0,
/// `handshake_timeout = "1s"`), with `management` as extra lines of the
/// `[management]` table (e.g. `auth = "token"`) and `limits` as the `[limits]` body.
pub fn header_config(management: &str, limits: &str) -> String {
    format!(
        "[api]\nname = \"test\"\nroute_selection_expression = \"$request.body.action\"\nstage = \"prod\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout = \"1s\"\n\n\
         [management]\nlisten = \"127.0.0.1:0\"\n{management}\n\n[limits]\n{limits}\n\n"
    )
}

/// A gateway whose `$default` route answers every message with the connection's own
/// id, so a client learns its id by sending anything.
pub fn whoami_config(management: &str, limits: &str) -> String {
    let mut c = header_config(management, limits);
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&route("$default", "who"));
    c
}

/// Asks the gateway (a [`whoami_config`] one) for `raw`'s connection id.
pub fn id_of(raw: &mut Raw) -> String {
    raw.send_text("who am i");
    let id = raw.recv_text();
    assert_id(&id);
    id
}

/// The worker that owns `id`. Ids are a keyed permutation (SPEC §6), so the owner is
/// read from the gateway's `event=connect connectionId=<id> ... worker=<n>` log line.
pub fn worker_of(gw: &Gateway, id: &str) -> u8 {
    let needle = format!("event=connect connectionId={id} ");
    eventually(
        &format!("the connect log line of {id}"),
        Duration::from_secs(5),
        || {
            let log = gw.stderr();
            let line = log.lines().find(|l| l.contains(&needle))?;
            let (_, w) = line.rsplit_once(" worker=")?;
            Some(w.trim().parse::<u8>().expect("worker number"))
        },
    )
}

/// 24 clients of a two-worker gateway with their ids, checked to be spread over
/// both workers (the kernel's hash leaves one worker without any once in 2^23 runs).
pub fn clients_on_both_workers(gw: &Gateway) -> Vec<(Raw, String)> {
    let clients: Vec<(Raw, String)> = (0..24)
        .map(|_| {
            let mut r = gw.raw();
            let id = id_of(&mut r);
            (r, id)
        })
        .collect();
    let ws: Vec<u8> = clients.iter().map(|(_, id)| worker_of(gw, id)).collect();
    assert!(
        ws.contains(&0) && ws.contains(&1),
        "both workers own clients: {ws:?}"
    );
    clients
}

// ---------------------------------------------------------------------------
// HTTP.

/// A whole HTTP response.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (panics when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {self:?} {:?}", self.text()))
    }

    /// Asserts the status, with the whole reply in the message.
    pub fn expect(&self, status: u16) -> &HttpReply {
        assert_eq!(
            self.status,
            status,
            "expected {status}, got {} {:?} body {:?}",
            self.status,
            self.headers,
            self.text()
        );
        self
    }

    /// Asserts SPEC §8's error shape: `status`, `Content-Type: application/json`,
    /// `x-amzn-ErrorType: <error_type>` and a body `{"message": "<non-empty>"}` with
    /// nothing else in it.
    pub fn expect_error(&self, status: u16, error_type: &str) -> &HttpReply {
        self.expect(status);
        assert_eq!(
            self.header("x-amzn-ErrorType"),
            Some(error_type),
            "x-amzn-ErrorType of {self:?}"
        );
        let ct = self.header("Content-Type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "errors are application/json, got {ct:?} in {self:?}"
        );
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("error body must be an object: {v}"));
        assert_eq!(
            obj.keys().collect::<Vec<_>>(),
            vec!["message"],
            "error body must be {{\"message\": ...}}: {v}"
        );
        assert!(
            obj["message"].as_str().is_some_and(|m| !m.is_empty()),
            "message must be a non-empty string: {v}"
        );
        self
    }

    /// Asserts some error shape (any `x-amzn-ErrorType`), for the statuses whose error
    /// name SPEC §8 does not fix (404, 405).
    pub fn expect_some_error(&self, status: u16) -> &HttpReply {
        self.expect(status);
        let t = self.header("x-amzn-ErrorType").unwrap_or("");
        assert!(!t.is_empty(), "errors carry x-amzn-ErrorType: {self:?}");
        self.expect_error(status, t);
        self
    }
}

/// The bytes of one request. `Content-Length` is always sent (0 for no body).
pub fn request_bytes(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    close: bool,
) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        r.push_str("Connection: close\r\n");
    }
    r.push_str("\r\n");
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A keep-alive HTTP/1.1 connection to the management listener.
pub struct Mgmt {
    pub stream: TcpStream,
}

impl Mgmt {
    pub fn connect(addr: SocketAddr) -> Mgmt {
        Mgmt { stream: tcp(addr) }
    }

    /// Sends one request and reads its whole response.
    pub fn call(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpReply {
        let req = request_bytes(method, target, headers, body, false);
        self.stream
            .write_all(&req)
            .expect("write management request");
        self.read_reply()
    }

    /// Reads the next whole response.
    pub fn read_reply(&mut self) -> HttpReply {
        let head = read_response(&mut self.stream);
        let body = reply_body(&mut self.stream, &head);
        HttpReply {
            status: head.status,
            headers: head.headers,
            body,
        }
    }

    pub fn post(&mut self, id: &str, body: &[u8]) -> HttpReply {
        self.call("POST", &format!("/@connections/{id}"), &[], body)
    }

    pub fn get(&mut self, id: &str) -> HttpReply {
        self.call("GET", &format!("/@connections/{id}"), &[], b"")
    }

    pub fn delete(&mut self, id: &str) -> HttpReply {
        self.call("DELETE", &format!("/@connections/{id}"), &[], b"")
    }
}

/// The body of a response whose head is `head`: none for 1xx, 204 and 304 (which
/// carry no `Content-Length`, RFC 9110 §6.4.1), else as `read_body`.
pub fn reply_body(s: &mut TcpStream, head: &Response) -> Vec<u8> {
    match head.status {
        100..=199 | 204 | 304 => Vec::new(),
        _ => read_body(s, head),
    }
}

/// One request on a fresh connection (`Connection: close`); reads the whole response.
pub fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut s = tcp(addr);
    // The server may answer (and close) before reading a refused body.
    let _ = s.write_all(&request_bytes(method, target, headers, body, true));
    let _ = s.flush();
    let head = read_response(&mut s);
    let body = reply_body(&mut s, &head);
    HttpReply {
        status: head.status,
        headers: head.headers,
        body,
    }
}

// ---------------------------------------------------------------------------
// Ids.

/// base64url with padding of `bytes` (11 bytes → 16 characters ending in `=`).
pub fn base64url_encode(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `id` with its 11 bytes changed by `f`.
pub fn tweak_id(id: &str, f: impl FnOnce(&mut [u8; 11])) -> String {
    let mut b = assert_id(id);
    f(&mut b);
    let s = base64url_encode(&b);
    assert_id(&s);
    s
}

// ---------------------------------------------------------------------------
// Times.

/// Parses `YYYY-MM-DDTHH:MM:SS.mmmZ` (exactly that shape) into ms since the epoch.
pub fn parse_iso8601_ms(s: &str) -> u64 {
    let b = s.as_bytes();
    assert_eq!(b.len(), 24, "{s:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    for (i, c) in b.iter().enumerate() {
        let want = match i {
            4 | 7 => Some(b'-'),
            10 => Some(b'T'),
            13 | 16 => Some(b':'),
            19 => Some(b'.'),
            23 => Some(b'Z'),
            _ => None,
        };
        match want {
            Some(w) => assert_eq!(*c, w, "{s:?}: byte {i}"),
            None => assert!(c.is_ascii_digit(), "{s:?}: byte {i} must be a digit"),
        }
    }
    let num = |a: usize, z: usize| s[a..z].parse::<u64>().unwrap();
    let (y, mo, d) = (num(0, 4) as i64, num(5, 7), num(8, 10));
    let (h, mi, sec, ms) = (num(11, 13), num(14, 16), num(17, 19), num(20, 23));
    assert!((1..=12).contains(&mo) && (1..=31).contains(&d), "{s:?}");
    assert!(h < 24 && mi < 60 && sec < 60, "{s:?}");
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    ((days * 86400) as u64 + h * 3600 + mi * 60 + sec) * 1000 + ms
}

// ---------------------------------------------------------------------------
// Metrics.

/// The sum of every sample of metric `name` in Prometheus text whose labels contain
/// all of `labels` (e.g. `direction="in"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    let mut found = false;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (label_text, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((l, v)) = r.split_once('}') else {
                continue;
            };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric whose name starts with `name`
        };
        if labels
            .iter()
            .all(|l| label_text.split(',').any(|x| x.trim() == *l))
        {
            let v: f64 = value
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("bad sample line {line:?}"));
            sum += v;
            found = true;
        }
    }
    assert!(found, "no sample of {name} with {labels:?} in:\n{text}");
    sum
}

// ---------------------------------------------------------------------------
// Waiting.

/// Polls `f` every 10 ms until it returns `Some`, for at most `limit`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
