//! The management API (SPEC §8) on its own listener, served by every worker:
//! `POST/GET/DELETE /@connections/{id}` (with or without the stage prefix), `/health`,
//! `/metrics`. This module parses a request and decides what it needs; the worker
//! (`worker/admin.rs`) carries connection operations to the owning worker and writes
//! the answers.

pub mod sigv4;

use std::io::{self, Read, Write};

use mio::net::TcpStream;

use crate::config::{Auth, Config};
use crate::id::{self, ConnectionId};
use crate::mailbox::{Answer, Op};

/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// One management HTTP/1.1 keep-alive connection.
#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub generation: u32,
    pub inbuf: Vec<u8>,
    pub out: Vec<u8>,
    /// A request is being answered by another worker; later requests wait.
    pub waiting: bool,
    /// Close once `out` is written.
    pub close_after: bool,
    /// Health check in progress: answers still expected.
    pub health_pending: usize,
}

impl Conn {
    pub fn new(stream: TcpStream, generation: u32) -> Conn {
        Conn {
            stream,
            generation,
            inbuf: Vec::new(),
            out: Vec::new(),
            waiting: false,
            close_after: false,
            health_pending: 0,
        }
    }

    /// Reads what is available through `scratch` (the worker's read buffer); `true` at
    /// EOF or error. A short read means drained, unless a FIN is already reported.
    pub fn read_available(&mut self, scratch: &mut [u8], read_closed: bool) -> bool {
        debug_assert!(!scratch.is_empty(), "an empty scratch would read as EOF");
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return true,
                Ok(n) => {
                    self.inbuf.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() && !read_closed {
                        return false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return true,
            }
        }
    }

    /// Writes pending output; `Ok(true)` when all of it is written.
    pub fn flush(&mut self) -> io::Result<bool> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
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

    /// Appends the response to `out`.
    pub fn write(&self, out: &mut Vec<u8>, close: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(crate::reply::reason_phrase(self.status).as_bytes());
        out.extend_from_slice(b"\r\n");
        if let Some(t) = self.error_type {
            out.extend_from_slice(b"x-amzn-ErrorType: ");
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !self.body.is_empty() || self.error_type.is_some() {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(self.content_type.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"Content-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(&self.body);
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
        }
    }
}

/// What a request needs.
#[derive(Debug)]
pub enum Decision {
    /// Answer now.
    Respond(Response),
    /// Act on a connection (possibly on another worker).
    Connection {
        id: ConnectionId,
        op: Op,
    },
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

/// Parses the next request in `buf`; `Ok(None)` while it is incomplete. `Err` is a
/// response after which the connection closes (the stream cannot be trusted).
pub fn parse_next(
    buf: &[u8],
    config: &Config,
    workers: usize,
    ids: &id::Codec,
    now_unix: i64,
) -> Result<Option<Parsed>, Response> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Response::error(
                431,
                "BadRequestException",
                "request head too large",
            ))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
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
    let length = match header("content-length") {
        None => 0,
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .ok_or_else(|| Response::error(400, "BadRequestException", "bad Content-Length"))?,
    };
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
    if buf.len() < head_len + length {
        return Ok(None);
    }
    let body = &buf[head_len..head_len + length];
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("/");
    let close = req.version == Some(0)
        || header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
    let hs: Vec<(&str, &[u8])> = req.headers.iter().map(|h| (h.name, h.value)).collect();
    let decision = decide(method, target, &hs, body, config, workers, ids, now_unix);
    Ok(Some(Parsed {
        consumed: head_len + length,
        decision,
        close,
    }))
}

#[allow(clippy::too_many_arguments)]
fn decide(
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    config: &Config,
    workers: usize,
    ids: &id::Codec,
    now_unix: i64,
) -> Decision {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
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
    // `/{stage}/@connections/...` or `/@connections/...`; `%40` is `@` encoded.
    let rest = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(config.api.stage.as_str()))
        .filter(|r| r.starts_with("/@connections/") || r.starts_with("/%40connections/"))
        .unwrap_or(path);
    let Some(raw_id) = rest
        .strip_prefix("/@connections/")
        .or_else(|| rest.strip_prefix("/%40connections/"))
    else {
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
    if let Err(why) = authorize(
        method,
        target,
        headers,
        body,
        &config.management.auth,
        now_unix,
    ) {
        log::warn!("management {method} {path}: refused: {why}");
        return Decision::Respond(Response::error(403, "ForbiddenException", "Forbidden"));
    }
    // O(1): the id decodes to its owner's worker and slot; one this node did not
    // issue in this start (another key, epoch or node, a worker it does not have)
    // names no connection.
    let id = match ids.decode(raw_id.as_bytes()) {
        Ok(id) if ids.is_local(&id) && (id.worker as usize) < workers => id,
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
        "POST" => Op::Post(body.to_vec()),
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

fn authorize(
    method: &str,
    target: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
    auth: &Auth,
    now_unix: i64,
) -> Result<(), String> {
    match auth {
        Auth::None => Ok(()),
        Auth::Token(token) => {
            let got = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| *v);
            let want = format!("Bearer {token}");
            match got {
                Some(v)
                    if v.len() == want.len()
                        && v.iter()
                            .zip(want.as_bytes())
                            .fold(0u8, |a, (x, y)| a | (x ^ y))
                            == 0 =>
                {
                    Ok(())
                }
                Some(_) => Err("wrong bearer token".into()),
                None => Err("no Authorization header".into()),
            }
        }
        Auth::SigV4 {
            access_key_id,
            secret_access_key,
        } => {
            let req = sigv4::Signed {
                method,
                target,
                headers,
                body,
            };
            sigv4::verify(&req, access_key_id, secret_access_key, now_unix)
        }
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
        parse_next(raw.as_bytes(), c, 2, &ids(), 0)
            .unwrap()
            .unwrap()
            .decision
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
        assert!(matches!(
            parse_next(ok.as_bytes(), &c, 2, &ids(), 0)
                .unwrap()
                .unwrap()
                .decision,
            Decision::Connection { .. }
        ));
        let bad = format!("GET /@connections/{id} HTTP/1.1\r\nAuthorization: Bearer nope\r\n\r\n");
        assert_eq!(status(decide_raw(&bad, &c)), 403);
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
}
