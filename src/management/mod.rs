//! The management API (SPEC §8) on its own listener, served by every worker:
//! `POST/GET/DELETE /@connections/{id}` (with or without the stage prefix), `/health`,
//! `/metrics`. This module parses a request and decides what it needs; the worker
//! (`worker/admin.rs`) carries connection operations to the owning worker and writes
//! the answers.

pub mod sigv4;

use std::borrow::Cow;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::config::{Auth, Config};
use crate::id::{self, ConnectionId};
use crate::mailbox::{Answer, Op};
use crate::percent;

pub use sigv4::Refusal;

/// Largest request head (SPEC §8); a longer one is answered 431 and closed.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Unsent response bytes beyond which a connection is not read (SPEC §8): a caller
/// that does not read its answers gets no more of them computed.
pub const MAX_UNSENT_BYTES: usize = 64 * 1024;
/// A request head must be complete this long after its first byte arrived.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that moves no byte either way for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Input capacity a connection keeps once its buffer is empty (a large body's is
/// given back).
const KEEP_INPUT_BYTES: usize = 64 * 1024;

/// What one read from the socket gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// Bytes were appended to the input.
    Data,
    /// Nothing more for now.
    Drained,
    /// The peer closed (or the socket failed).
    Eof,
}

/// One management HTTP/1.1 keep-alive connection: its buffers, its place in the
/// request/answer cycle and its deadlines. The worker (`worker/admin.rs`) drives it.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub generation: u32,
    /// Received bytes; `input[consumed..]` is not parsed yet. Consumed requests are
    /// cut off once per read ([`Conn::compact`]), never one at a time.
    input: Vec<u8>,
    consumed: usize,
    pub out: Vec<u8>,
    /// A request is being answered by another worker; later requests wait.
    pub waiting: bool,
    /// Close once `out` is written.
    pub close_after: bool,
    /// The peer closed its side: answer the complete requests, then close.
    pub eof: bool,
    /// Health check in progress: answers still expected.
    pub health_pending: usize,
    /// Bytes of the pending input searched for a head's end (see `incomplete`).
    scanned: usize,
    /// Length of the pending request once its head is parsed (0: not known yet).
    need: usize,
    /// When the first byte of a request head that is still incomplete arrived.
    head_since: Option<Instant>,
    /// When bytes last moved, either way.
    last_progress: Instant,
    /// A head (idle) timer for this connection is in the worker's wheel.
    pub head_timer: Option<crate::timer::Handle>,
    /// The deadline of a `/health` check waiting for the other workers.
    pub health_timer: Option<crate::timer::Handle>,
    pub idle_timer: Option<crate::timer::Handle>,
    /// HTTPS (`[management.tls]`); boxed so plain connections stay small.
    pub tls: Option<Box<crate::tls::Session>>,
    /// When the connection was accepted: a TLS handshake must end within
    /// `HEAD_TIMEOUT` of it, like a request head.
    accepted: Instant,
    /// With TLS: `out[..sealed]` are records the socket has not taken yet, the rest
    /// is plaintext still to encrypt (so `out.len()` counts everything unsent).
    sealed: usize,
    /// Handed over from the client listener (SPEC §13): only `@connections` is
    /// served; `/health` and `/metrics` get §3's 404 there.
    pub api_listener: bool,
    /// A group send or broadcast waits for this many other workers' acks.
    pub send_pending: usize,
    /// A worker's queue was full: the send reached only some workers (429).
    pub send_partial: bool,
}

impl Conn {
    pub fn new(stream: TcpStream, generation: u32, now: Instant) -> Conn {
        Conn {
            stream,
            generation,
            input: Vec::new(),
            consumed: 0,
            out: Vec::new(),
            waiting: false,
            close_after: false,
            eof: false,
            health_pending: 0,
            scanned: 0,
            need: 0,
            head_since: None,
            last_progress: now,
            head_timer: None,
            health_timer: None,
            idle_timer: None,
            tls: None,
            accepted: now,
            sealed: 0,
            api_listener: false,
            send_pending: 0,
            send_partial: false,
        }
    }

    /// A client-listener connection whose first request is a `@connections` call
    /// (SPEC §13): its socket, its TLS session (if any), the plaintext already read
    /// (`input`) and the TLS records it has not written yet (`sealed_out`).
    pub fn handed_over(
        stream: TcpStream,
        generation: u32,
        now: Instant,
        tls: Option<Box<crate::tls::Session>>,
        input: &[u8],
        sealed_out: Vec<u8>,
    ) -> Conn {
        let mut c = Conn::new(stream, generation, now);
        c.input.extend_from_slice(input);
        c.sealed = sealed_out.len();
        c.out = sealed_out;
        c.tls = tls;
        c.api_listener = true;
        c
    }

    /// The received bytes not yet consumed by a request.
    pub fn pending(&self) -> &[u8] {
        &self.input[self.consumed..]
    }

    /// Marks `n` more bytes as consumed (the offset moves; nothing is copied).
    pub fn consume(&mut self, n: usize) {
        self.consumed = (self.consumed + n).min(self.input.len());
        self.scanned = 0;
        self.need = 0;
    }

    /// Drops what is not parsed yet (after an error the stream cannot be trusted).
    pub fn discard_input(&mut self) {
        self.consumed = self.input.len();
        self.scanned = 0;
        self.need = 0;
        self.compact();
    }

    /// Cuts consumed bytes off the input: free when all of it was consumed, else one
    /// move of the incomplete rest, which then stays put until it is consumed (so each
    /// byte moves at most once). Gives back a large buffer once it is empty.
    pub fn compact(&mut self) {
        if self.consumed == self.input.len() {
            self.input.clear();
            if self.input.capacity() > KEEP_INPUT_BYTES {
                self.input = Vec::new();
            }
        } else if self.consumed > 0 {
            self.input.drain(..self.consumed);
        }
        self.consumed = 0;
    }

    /// Whether the connection must not be read now: an answer from another worker
    /// is awaited, it is closing, or too many answers are unsent (SPEC §8).
    pub fn paused(&self) -> bool {
        self.waiting || self.close_after || self.out.len() >= MAX_UNSENT_BYTES
    }

    /// One read through `scratch` (the worker's read buffer) into the input.
    pub fn read_some(&mut self, scratch: &mut [u8], now: Instant) -> ReadOutcome {
        debug_assert!(!scratch.is_empty(), "an empty scratch would read as EOF");
        if let Some(tls) = self.tls.as_mut() {
            return match tls.read(&mut self.stream, scratch) {
                crate::tls::Input::Closed => ReadOutcome::Eof,
                crate::tls::Input::Data { n: 0, .. } if !tls.wants_write() => ReadOutcome::Drained,
                crate::tls::Input::Data { n, .. } => {
                    // (0 bytes: handshake records wait; the caller flushes, reads again.)
                    self.input.extend_from_slice(&scratch[..n]);
                    self.last_progress = now;
                    ReadOutcome::Data
                }
            };
        }
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Eof,
                Ok(n) => {
                    self.input.extend_from_slice(&scratch[..n]);
                    self.last_progress = now;
                    return ReadOutcome::Data;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return ReadOutcome::Eof,
            }
        }
    }

    /// Writes pending output; `Ok(true)` when all of it is written.
    pub fn flush(&mut self, now: Instant) -> io::Result<bool> {
        if let Some(tls) = self.tls.as_mut() {
            if self.out.len() > self.sealed {
                tls.encrypt(&self.out[self.sealed..]);
                self.out.truncate(self.sealed);
            }
        }
        let mut written = 0;
        let result = loop {
            if written == self.out.len() {
                break Ok(true);
            }
            match self.stream.write(&self.out[written..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        if written > 0 {
            self.out.drain(..written);
            self.last_progress = now;
        }
        let Some(tls) = self.tls.as_mut() else {
            return result;
        };
        let all = match result {
            Ok(true) => tls.write_to(&mut self.stream)?,
            other => other?,
        };
        if !all {
            tls.write_to(&mut self.out)?;
        }
        self.sealed = self.out.len();
        Ok(self.out.is_empty())
    }

    /// Notes whether the next request's head is incomplete (`true`) or complete /
    /// absent (`false`), starting the header timeout at its first sight.
    pub fn note_head(&mut self, incomplete: bool, now: Instant) {
        if !incomplete {
            self.head_since = None;
        } else if self.head_since.is_none() {
            self.head_since = Some(now);
        }
    }

    /// Whether the next request cannot be complete yet, so parsing it again would
    /// be wasted work: its head's end was searched for up to what is here (the
    /// search resumes where it stopped), or its head said how long it is. A request
    /// that trickles in a byte at a time then costs linear, not quadratic, work.
    pub fn incomplete(&mut self) -> bool {
        let pending = &self.input[self.consumed..];
        if self.need > 0 {
            return pending.len() < self.need;
        }
        let from = self.scanned.saturating_sub(3).min(pending.len());
        if pending[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return false;
        }
        self.scanned = pending.len();
        // Too long a head still goes to the parser, which answers 431.
        pending.len() <= MAX_HEAD_BYTES
    }

    /// Whether the pending request still lacks its head (not its body).
    pub fn awaiting_head(&self) -> bool {
        self.need == 0
    }

    /// The request now pending is `total` bytes long (its body is arriving).
    pub fn need(&mut self, total: usize) {
        self.need = total;
    }

    /// When an incomplete request head times out, if one is awaited.
    pub fn head_deadline(&self) -> Option<Instant> {
        let handshaking = self.tls.as_ref().is_some_and(|t| t.is_handshaking());
        let since = if handshaking {
            Some(self.accepted)
        } else {
            self.head_since
        };
        since.map(|t| t + HEAD_TIMEOUT)
    }

    /// When the connection is idle too long, unless bytes move before.
    pub fn idle_deadline(&self) -> Instant {
        self.last_progress + IDLE_TIMEOUT
    }
}

/// Logs management refusals at most once a second (per worker, SPEC §8), counting
/// those it leaves out, so a flood of bad requests cannot flood the log.
#[derive(Debug, Default)]
pub struct RefusalLog {
    next: Option<Instant>,
    suppressed: u64,
}

impl RefusalLog {
    /// Whether this refusal is logged; if so, how many were left out since the last
    /// logged one.
    pub fn admit(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|next| now < next) {
            self.suppressed += 1;
            return None;
        }
        self.next = Some(now + Duration::from_secs(1));
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// `x-amzn-ErrorType`, for errors.
    pub error_type: Option<&'static str>,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

impl Response {
    pub fn error(status: u16, error_type: &'static str, message: &str) -> Response {
        let mut body = b"{\"message\": ".to_vec();
        crate::event::write_str(&mut body, message.as_bytes());
        body.push(b'}');
        Response {
            status,
            error_type: Some(error_type),
            content_type: "application/json",
            body,
        }
    }

    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            error_type: None,
            content_type: "application/json",
            body,
        }
    }

    /// Appends the response to `out` (SPEC §8: standard reason phrase; no body and
    /// no `Content-Length` for a 204).
    pub fn write(&self, out: &mut Vec<u8>, close: bool) {
        let mut headers: [(&str, &[u8]); 2] = [("", b""); 2];
        let mut n = 0;
        if let Some(t) = self.error_type {
            headers[n] = ("x-amzn-ErrorType", t.as_bytes());
            n += 1;
        }
        if !self.body.is_empty() || self.error_type.is_some() {
            headers[n] = ("Content-Type", self.content_type.as_bytes());
            n += 1;
        }
        crate::http1::write_response(out, self.status, &headers[..n], &self.body, close);
    }

    /// The answer of the owning worker, as HTTP.
    pub fn from_answer(a: Answer) -> Response {
        match a {
            Answer::Sent => Response::json(200, Vec::new()),
            Answer::Closed => Response::json(204, Vec::new()),
            Answer::Info {
                connected_at_ms,
                last_active_ms,
                source_ip,
                user_agent,
            } => {
                let mut b = b"{\"connectedAt\":\"".to_vec();
                crate::time::write_iso8601(&mut b, connected_at_ms);
                b.extend_from_slice(b"\",\"identity\":{\"sourceIp\":");
                crate::event::write_str(&mut b, source_ip.as_bytes());
                b.extend_from_slice(b",\"userAgent\":");
                match user_agent {
                    Some(ua) => crate::event::write_str(&mut b, ua.as_bytes()),
                    None => b.extend_from_slice(b"null"),
                }
                b.extend_from_slice(b"},\"lastActiveAt\":\"");
                crate::time::write_iso8601(&mut b, last_active_ms);
                b.extend_from_slice(b"\"}");
                Response::json(200, b)
            }
            Answer::Gone => Response::error(410, "GoneException", "the connection is gone"),
            Answer::Full => Response::error(
                429,
                "LimitExceededException",
                "the connection's outbound buffer is full; nothing was sent",
            ),
            Answer::NotText => Response::error(
                400,
                "BadRequestException",
                "the body is not UTF-8 and binary is rejected",
            ),
            Answer::Pong => Response::json(200, Vec::new()),
            Answer::Member => Response::json(204, Vec::new()),
            Answer::GroupCap(why) => crate::groups::refusal(why),
            // One node (SPEC §15: nodes that acknowledged).
            Answer::Delivered => crate::groups::accepted(1),
        }
    }
}

/// What a request needs.
#[derive(Debug)]
pub enum Decision {
    /// Answer now.
    Respond(Response),
    /// Failed auth: 403, counted and logged at most once a second.
    Refused(Refusal),
    /// Act on a connection (possibly on another worker).
    Connection {
        id: ConnectionId,
        op: Op,
    },
    /// A group send or broadcast (SPEC §15): to every worker (`crate::groups`).
    Send(crate::groups::Send),
    /// Ask every worker whether it is alive.
    Health,
    Metrics,
}

/// One parsed request: `consumed` bytes of the buffer and what to do.
pub struct Parsed {
    pub consumed: usize,
    pub decision: Decision,
    /// The client asked to close after this request.
    pub close: bool,
}

/// What the start of a buffer holds.
pub enum Next {
    /// An incomplete request head (the header timeout runs).
    NeedHead,
    /// A complete head whose body is still arriving: the request is `total` bytes.
    NeedBody {
        total: usize,
    },
    Request(Parsed),
}

/// Parses the next request in `buf`. `Err` is a response after which the
/// connection closes (the stream cannot be trusted).
pub fn parse_next(
    buf: &[u8],
    config: &Config,
    workers: usize,
    ids: &id::Codec,
    now_unix: i64,
) -> Result<Next, Response> {
    let too_large = || Response::error(431, "BadRequestException", "request head too large");
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD_BYTES => return Err(too_large()),
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err(too_large()),
        Ok(httparse::Status::Partial) => return Ok(Next::NeedHead),
        Err(e) => {
            return Err(Response::error(
                400,
                "BadRequestException",
                &format!("malformed request: {e}"),
            ))
        }
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let length = content_length(req.headers)?;
    if header("transfer-encoding").is_some() {
        return Err(Response::error(
            411,
            "BadRequestException",
            "send the body with a Content-Length",
        ));
    }
    if length > config.limits.max_message_bytes {
        return Err(Response::error(
            413,
            "PayloadTooLargeException",
            &format!(
                "the body is {length} bytes; the limit is {}",
                config.limits.max_message_bytes
            ),
        ));
    }
    // `length` is at most `max_message_bytes`: no overflow.
    let Some(body) = buf.get(head_len..head_len + length) else {
        return Ok(Next::NeedBody {
            total: head_len + length,
        });
    };
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let close = req.version == Some(0)
        || header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    let hs: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let r = Request {
        method,
        target,
        headers: &hs,
        body,
    };
    Ok(Next::Request(Parsed {
        consumed: head_len + length,
        decision: decide(&r, config, workers, ids, now_unix),
        close,
    }))
}

/// The body length: every `Content-Length` must be the same run of digits (a
/// disagreement, a sign or a space inside is 400: the framing would be ambiguous).
fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize, Response> {
    let bad = || Response::error(400, "BadRequestException", "bad Content-Length");
    let mut length = None;
    for h in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        let v = h.value.trim_ascii();
        if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n = v.iter().fold(0usize, |n, &d| {
            n.saturating_mul(10).saturating_add(usize::from(d - b'0'))
        });
        if length.is_some_and(|l| l != n) {
            return Err(bad());
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// A complete request, as [`decide`] needs it.
pub struct Request<'a> {
    pub method: &'a str,
    /// Path and query as sent.
    pub target: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
}

/// What `req` needs. Auth comes first, for every path but the configured public
/// ones (SPEC §8), so nothing is revealed to, or done for, an unauthorized caller.
pub fn decide(
    req: &Request<'_>,
    config: &Config,
    workers: usize,
    ids: &id::Codec,
    now_unix: i64,
) -> Decision {
    let method = req.method;
    let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let public = &config.management.public_paths;
    let is_public = match path {
        "/health" => public.health,
        "/metrics" => public.metrics,
        _ => false,
    };
    if !is_public {
        if let Err(why) = authorize(req, &config.management.auth, now_unix) {
            return Decision::Refused(why);
        }
    }
    match path {
        "/health" | "/metrics" => {
            if method != "GET" {
                return Decision::Respond(Response::error(
                    405,
                    "MethodNotAllowedException",
                    "use GET",
                ));
            }
            return if path == "/health" {
                Decision::Health
            } else {
                Decision::Metrics
            };
        }
        _ => {}
    }
    // `/{stage}/@connections/{id}` or `/@connections/{id}`, as sent or percent-encoded
    // (`%40` for `@`, `%3D` for `=`).
    let path = percent::decode(path.as_bytes());
    let rest = path
        .strip_prefix(b"/")
        .and_then(|p| p.strip_prefix(config.api.stage.as_bytes()))
        .filter(|r| r.starts_with(b"/@connections/"))
        .unwrap_or(&path);
    let Some(raw_id) = rest.strip_prefix(b"/@connections/") else {
        if let Some(d) = crate::groups::decide(method, &path, req.body, config, workers, ids) {
            return d;
        }
        return Decision::Respond(Response::error(
            404,
            "NotFoundException",
            "no such resource",
        ));
    };
    if !matches!(method, "POST" | "GET" | "DELETE") {
        return Decision::Respond(Response::error(
            405,
            "MethodNotAllowedException",
            "use POST, GET or DELETE",
        ));
    }
    // O(1): the id decodes to its owner's worker and slot; one this node did not
    // issue in this start (another key, epoch or node, a worker it does not have)
    // names no connection.
    let id = match ids.decode(raw_id) {
        Ok(id) if ids.is_local(&id) && (id.worker as usize) < workers => id,
        // SPEC §15: another node's id goes to its owner over NATS (`worker/cluster.rs`).
        Ok(id) if config.cluster.is_some() && id.node != ids.node() => id,
        Ok(_) | Err(id::ParseError::NotIssued) => {
            return Decision::Respond(Response::from_answer(Answer::Gone))
        }
        Err(id::ParseError::Malformed) => {
            return Decision::Respond(Response::error(
                400,
                "BadRequestException",
                "Invalid connectionId",
            ))
        }
    };
    let op = match method {
        "POST" => Op::Post(req.body.to_vec()),
        "GET" => Op::Get,
        _ => match close_params(query) {
            Ok((code, reason)) => Op::Delete { code, reason },
            Err(why) => {
                return Decision::Respond(Response::error(400, "BadRequestException", &why))
            }
        },
    };
    Decision::Connection { id, op }
}

/// `DELETE ?code=&reason=` [ext]: code 1000 or 4000–4999, reason ≤ 123 bytes.
fn close_params(query: &str) -> Result<(u16, String), String> {
    let mut code = crate::close::NORMAL;
    let mut reason = None;
    for (k, v) in crate::event::query_pairs(query) {
        match k.as_str() {
            "code" => {
                code = v
                    .parse::<u16>()
                    .ok()
                    .filter(|c| *c == 1000 || (4000..=4999).contains(c))
                    .ok_or_else(|| format!("code {v} is not 1000 or 4000-4999"))?
            }
            "reason" if v.len() > 123 => return Err("reason is longer than 123 bytes".into()),
            "reason" => reason = Some(v),
            _ => {}
        }
    }
    let reason = reason.unwrap_or_else(|| {
        if code == 1000 {
            "Connection Closed Normally".into()
        } else {
            String::new()
        }
    });
    Ok((code, reason))
}

fn authorize(req: &Request<'_>, auth: &Auth, now_unix: i64) -> Result<(), Refusal> {
    match auth {
        Auth::None => Ok(()),
        Auth::Token(token) => {
            let got = req
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| *v)
                .ok_or("no Authorization header")?;
            let given = got.strip_prefix(b"Bearer ").unwrap_or(b"");
            let matches = given.len() == token.len()
                && given
                    .iter()
                    .zip(token.as_bytes())
                    .fold(0u8, |a, (x, y)| a | (x ^ y))
                    == 0;
            if matches {
                Ok(())
            } else {
                Err(Cow::Borrowed("wrong bearer token"))
            }
        }
        Auth::SigV4 {
            access_key_id,
            secret_access_key,
        } => sigv4::verify(req, access_key_id, secret_access_key, now_unix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[api]\nstage = \"prod\"\n[management]\nlisten = \"127.0.0.1:0\"\n{extra}\n[integrations.m]\ntype = \"mock\"\n[routes.\"$default\"]\nintegration = \"m\"\n"
        );
        crate::config::parse(Path::new("t.toml"), &text, &Default::default()).unwrap()
    }

    fn ids() -> id::Codec {
        id::Codec::new(id::Key::from_secret(b"test"), 0, 7)
    }

    fn decide_raw(raw: &str, c: &Config) -> Decision {
        match parse_next(raw.as_bytes(), c, 2, &ids(), 0) {
            Ok(Next::Request(p)) => p.decision,
            _ => panic!("not a complete request: {raw:?}"),
        }
    }

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Respond(r) => r.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn routes_with_and_without_stage() {
        let c = config("");
        let id = ids().connection(1, 5, 9);
        let id = std::str::from_utf8(&id).unwrap();
        for path in [
            format!("/@connections/{id}"),
            format!("/prod/@connections/{id}"),
        ] {
            match decide_raw(&format!("GET {path} HTTP/1.1\r\n\r\n"), &c) {
                Decision::Connection { id, op: Op::Get } => {
                    assert_eq!((id.worker, id.slot), (1, 5))
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(status(decide_raw("GET /nope HTTP/1.1\r\n\r\n", &c)), 404);
        assert_eq!(
            status(decide_raw(
                &format!("PUT /@connections/{id} HTTP/1.1\r\n\r\n"),
                &c
            )),
            405
        );
        assert_eq!(
            status(decide_raw("GET /@connections/bad HTTP/1.1\r\n\r\n", &c)),
            400
        );
        let other_epoch = id::Codec::new(id::Key::from_secret(b"test"), 0, 8).connection(1, 5, 9);
        let path = format!(
            "GET /@connections/{} HTTP/1.1\r\n\r\n",
            std::str::from_utf8(&other_epoch).unwrap()
        );
        assert_eq!(status(decide_raw(&path, &c)), 410);
    }

    #[test]
    fn oversized_post_is_413() {
        let c = config("[limits]\nmax_message_bytes = 10");
        let raw = "POST /@connections/AAAAAAAAAAAAAAA= HTTP/1.1\r\nContent-Length: 11\r\n\r\n";
        assert_eq!(
            parse_next(raw.as_bytes(), &c, 1, &ids(), 0)
                .err()
                .unwrap()
                .status,
            413
        );
    }

    #[test]
    fn token_auth() {
        let c = config("auth = \"token\"\ntoken = \"s3cret\"");
        let id = ids().connection(1, 2, 3);
        let id = std::str::from_utf8(&id).unwrap();
        let ok = format!("GET /@connections/{id} HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n");
        assert!(matches!(decide_raw(&ok, &c), Decision::Connection { .. }));
        for bad in [
            format!("GET /@connections/{id} HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n"),
            format!("GET /@connections/{id} HTTP/1.1\r\nAuthorization: s3cret\r\n\r\n"),
            format!("GET /@connections/{id} HTTP/1.1\r\n\r\n"),
            // Auth comes before every path unless it is public.
            "GET /metrics HTTP/1.1\r\n\r\n".to_string(),
            "GET /health HTTP/1.1\r\n\r\n".to_string(),
            "GET /nope HTTP/1.1\r\n\r\n".to_string(),
            "PUT /health HTTP/1.1\r\n\r\n".to_string(),
        ] {
            assert!(
                matches!(decide_raw(&bad, &c), Decision::Refused(_)),
                "{bad:?}"
            );
        }
        let c = config("auth = \"token\"\ntoken = \"s3cret\"\npublic_paths = [\"/health\"]");
        assert!(matches!(
            decide_raw("GET /health HTTP/1.1\r\n\r\n", &c),
            Decision::Health
        ));
        assert!(matches!(
            decide_raw("GET /metrics HTTP/1.1\r\n\r\n", &c),
            Decision::Refused(_)
        ));
    }

    #[test]
    fn delete_close_parameters() {
        assert_eq!(
            close_params(""),
            Ok((1000, "Connection Closed Normally".into()))
        );
        assert_eq!(
            close_params("code=4001&reason=bye%20now"),
            Ok((4001, "bye now".into()))
        );
        assert!(close_params("code=1001").is_err());
        assert!(close_params(&format!("reason={}", "x".repeat(124))).is_err());
    }

    #[test]
    fn framing_bounds() {
        let c = config("");
        let ids = ids();
        let next = |raw: &[u8]| parse_next(raw, &c, 1, &ids, 0);
        assert!(matches!(
            next(b"GET /health HTTP/1.1\r\nHost: x"),
            Ok(Next::NeedHead)
        ));
        assert!(matches!(
            next(b"POST /@connections/AAAAAAAAAAAAAAA= HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Ok(Next::NeedBody { .. })
        ));
        // More than 16 KiB of head, complete or not: 431.
        let mut long = b"GET /health HTTP/1.1\r\nX-Pad: ".to_vec();
        long.resize(MAX_HEAD_BYTES + 1, b'p');
        assert_eq!(next(&long).err().map(|r| r.status), Some(431));
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(next(&long).err().map(|r| r.status), Some(431));
        // Content-Length must be one unambiguous run of digits.
        for cl in ["+3", "3 3", "-1", "0x3", "99999999999999999999", ""] {
            let raw = format!("POST /x HTTP/1.1\r\nContent-Length: {cl}\r\n\r\nabc");
            assert_eq!(
                next(raw.as_bytes()).err().map(|r| r.status),
                Some(400),
                "{cl:?}"
            );
        }
        let raw = b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 2\r\n\r\nabc";
        assert_eq!(next(raw).err().map(|r| r.status), Some(400));
    }

    #[test]
    fn percent_encoded_paths_are_decoded_once() {
        let c = config("");
        let id = ids().connection(1, 2, 3);
        let id = std::str::from_utf8(&id[..15]).unwrap();
        for path in [
            format!("/prod/%40connections/{id}%3D"),
            format!("/%40connections/{id}%3d"),
            format!("/pro%64/@connections/{id}="),
        ] {
            let raw = format!("GET {path} HTTP/1.1\r\n\r\n");
            assert!(
                matches!(decide_raw(&raw, &c), Decision::Connection { .. }),
                "{path}"
            );
        }
        let raw = "GET /@connections/%C3%A9%1\u{e9} HTTP/1.1\r\n\r\n";
        assert_eq!(status(decide_raw(raw, &c)), 400);
    }

    #[test]
    fn responses_carry_standard_phrases_and_204_no_length() {
        let mut out = Vec::new();
        Response::from_answer(Answer::Closed).write(&mut out, false);
        assert_eq!(out, b"HTTP/1.1 204 No Content\r\n\r\n");
        out.clear();
        Response::from_answer(Answer::Gone).write(&mut out, true);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 410 Gone\r\nx-amzn-ErrorType: GoneException\r\n"),
            "{text}"
        );
        assert!(text.contains("Connection: close\r\n"), "{text}");
    }

    #[test]
    fn refusals_are_logged_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.admit(t0), Some(0));
        for i in 0..1000 {
            assert_eq!(log.admit(t0 + Duration::from_micros(i)), None);
        }
        assert_eq!(log.admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(log.admit(t0 + Duration::from_secs(1)), Some(1001));
        assert_eq!(log.admit(t0 + Duration::from_millis(1500)), None);
    }

    /// A `Conn` on one end of a loopback pair, and the other end.
    fn conn_pair(now: Instant) -> (Conn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, _) = l.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Conn::new(TcpStream::from_std(ours), 1, now), peer)
    }

    #[test]
    fn deadlines_and_input_offsets() {
        let t0 = Instant::now();
        let (mut c, mut peer) = conn_pair(t0);
        assert_eq!(c.idle_deadline(), t0 + IDLE_TIMEOUT);
        assert_eq!(c.head_deadline(), None);
        // A partial head starts the header timeout; more of it does not move it.
        c.note_head(true, t0);
        c.note_head(true, t0 + Duration::from_secs(3));
        assert_eq!(c.head_deadline(), Some(t0 + HEAD_TIMEOUT));
        c.note_head(false, t0);
        assert_eq!(c.head_deadline(), None);
        // Bytes read move the idle deadline.
        peer.write_all(b"GET /a HTTP/1.1\r\n\r\nGET /b").unwrap();
        let t1 = t0 + Duration::from_secs(10);
        let mut scratch = [0u8; 64];
        let mut got = ReadOutcome::Drained;
        for _ in 0..1000 {
            got = c.read_some(&mut scratch, t1);
            if got == ReadOutcome::Data {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, ReadOutcome::Data);
        assert_eq!(c.idle_deadline(), t1 + IDLE_TIMEOUT);
        // Consuming moves an offset; compacting keeps only the rest.
        c.consume(19);
        assert_eq!(c.pending(), b"GET /b");
        c.compact();
        assert_eq!((c.consumed, c.input.as_slice()), (0, &b"GET /b"[..]));
        c.discard_input();
        assert!(c.pending().is_empty());
        // Unsent answers past the bound pause reading.
        assert!(!c.paused());
        c.out.resize(MAX_UNSENT_BYTES, b'x');
        assert!(c.paused());
    }

    #[test]
    fn a_trickled_request_is_searched_once_and_its_body_awaited_by_length() {
        let (mut c, _peer) = conn_pair(Instant::now());
        let head = b"POST /@connections/x HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        for (i, &b) in head.iter().enumerate() {
            c.input.push(b);
            let whole = i + 1 == head.len();
            assert_eq!(c.incomplete(), !whole, "after {} bytes", i + 1);
            // Each byte is searched once: the search resumes 3 bytes back.
            assert!(whole || c.scanned == i + 1);
        }
        c.need(head.len() + 5);
        assert!(!c.awaiting_head());
        c.input.extend_from_slice(b"hell");
        assert!(c.incomplete(), "a body byte is missing");
        c.input.push(b'o');
        assert!(!c.incomplete());
        c.consume(head.len() + 5);
        assert!(c.awaiting_head());
        // An oversized head goes to the parser (431), not on waiting.
        c.input.resize(c.input.len() + MAX_HEAD_BYTES + 1, b'a');
        assert!(!c.incomplete());
    }
}
