//! HTTP integrations (SPEC §5): the request a route sends to its backend (`aws_proxy`
//! event or `http_proxy` raw message with data mapping), and what the backend's
//! answer means for the client (route response rules, Lambda proxy results).

use crate::config::{Api, Http, Proxy};
use crate::event::{self, Common, Identity};
use crate::mapping::{self, Target};
use crate::route::Selector;

/// Which event a call carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallKind {
    Connect,
    Message,
    Disconnect,
}

/// A backend call the session asks the worker to make.
#[derive(Debug)]
pub struct Outgoing {
    pub route: usize,
    pub kind: CallKind,
    /// The whole HTTP request (head and body), in a pooled buffer.
    pub request: Vec<u8>,
    pub request_id: crate::id::Text,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// The backend answered (for `response = "lambda"`, the decoded Lambda result).
    Reply {
        status: u16,
        body: &'a [u8],
        content_type: Option<&'a [u8]>,
        protocol: Option<&'a [u8]>,
    },
    /// Unreachable, malformed reply, or no room in the wait queue.
    Failed,
    /// No answer within the integration's timeout.
    TimedOut,
}

/// The handshake data an `http_proxy` mapping or the CONNECT event needs.
pub struct Handshake<'a> {
    pub headers: &'a [(String, String)],
    pub query: Option<&'a str>,
}

/// Everything a request needs besides the integration.
pub struct Input<'a> {
    pub api: &'a Api,
    pub route_key: &'a str,
    pub connection_id: &'a [u8],
    pub request_id: &'a [u8],
    pub message_id: &'a [u8],
    pub identity: &'a Identity,
    pub now_ms: u64,
}

impl Input<'_> {
    fn common(&self) -> Common<'_> {
        Common {
            api: self.api,
            route_key: self.route_key,
            connection_id: self.connection_id,
            request_id: self.request_id,
            identity: self.identity,
            now_ms: self.now_ms,
        }
    }
}

/// What the request carries besides the ids.
pub enum Body<'a> {
    Connect(&'a Handshake<'a>),
    Message { data: &'a [u8], binary: bool },
    Disconnect { code: u16, reason: &'a [u8] },
}

/// Writes the complete HTTP request for one call into `out`; `scratch` is reused for
/// the event body.
pub fn write_request(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    selector: &mut Selector,
    http: &Http,
    input: &Input<'_>,
    body: Body<'_>,
    handshake: Option<&Handshake<'_>>,
) {
    scratch.clear();
    match http.proxy {
        Proxy::Aws => {
            let c = input.common();
            match body {
                Body::Connect(h) => event::write_connect(scratch, &c, h.headers, h.query),
                Body::Message { data, binary } => {
                    event::write_message(scratch, &c, input.message_id, data, binary)
                }
                Body::Disconnect { code, reason } => {
                    event::write_disconnect(scratch, &c, code, reason)
                }
            }
            crate::upstream::write_request(out, &http.uri, b"", "application/json", b"", scratch);
        }
        Proxy::Http => {
            let (data, binary): (&[u8], bool) = match body {
                Body::Message { data, binary } => (data, binary),
                _ => (b"", false),
            };
            let handshake = match body {
                Body::Connect(h) => Some(h),
                _ => handshake,
            };
            let ev = mapping::Event {
                connection_id: input.connection_id,
                route_key: input.route_key,
                request_id: input.request_id,
                message_id: input.message_id,
                stage: &input.api.stage,
                api_id: &input.api.name,
                domain_name: &input.identity.host,
                source_ip: &input.identity.source_ip_text,
                stage_variables: &input.api.stage_variables,
                headers: handshake.map_or(&[], |h| h.headers),
                query: handshake.and_then(|h| h.query),
                body: Some(data).filter(|_| !binary),
            };
            // Mapped headers into `scratch`, mapped query into `query`; a parameter
            // without a value is left out (see `mapping`).
            let mut query = Vec::new();
            let mut decoded = Vec::new();
            for m in &http.request_parameters {
                let Some(value) = m.source.value(&ev, selector, &mut decoded) else {
                    continue;
                };
                match &m.target {
                    Target::Header(name) => {
                        scratch.extend_from_slice(name.as_bytes());
                        scratch.extend_from_slice(b": ");
                        mapping::write_header_value(scratch, value);
                        scratch.extend_from_slice(b"\r\n");
                    }
                    Target::Query(name) => {
                        if !query.is_empty() {
                            query.push(b'&');
                        }
                        percent_encode(&mut query, name.as_bytes());
                        query.push(b'=');
                        percent_encode(&mut query, value);
                    }
                }
            }
            let ct = if binary {
                "application/octet-stream"
            } else {
                "application/json"
            };
            crate::upstream::write_request(out, &http.uri, &query, ct, scratch, data);
        }
    }
}

fn percent_encode(out: &mut Vec<u8>, s: &[u8]) {
    for &c in s {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~') {
            out.push(c);
        } else {
            out.push(b'%');
            out.push(b"0123456789ABCDEF"[(c >> 4) as usize]);
            out.push(b"0123456789ABCDEF"[(c & 15) as usize]);
        }
    }
}

/// A Lambda proxy result (`response = "lambda"`): status, body (base64-decoded when
/// flagged) and the `Sec-WebSocket-Protocol` header if it sets one.
pub struct LambdaResult {
    pub status: u16,
    pub body: Vec<u8>,
    pub protocol: Option<Vec<u8>>,
}

/// Decodes a Lambda proxy result; `None` when it is not one (a malformed reply).
pub fn decode_lambda(reply: &[u8]) -> Option<LambdaResult> {
    use simd_json::prelude::*;
    let mut copy = reply.to_vec();
    let v = simd_json::to_borrowed_value(&mut copy).ok()?;
    let obj = v.as_object()?;
    let status = obj
        .get("statusCode")
        .and_then(|s| s.as_u64())
        .filter(|s| (100..=599).contains(s))? as u16;
    let raw = match obj.get("body") {
        None => Vec::new(),
        Some(b) if b.is_null() => Vec::new(),
        Some(b) => b.as_str()?.as_bytes().to_vec(),
    };
    let b64 = obj
        .get("isBase64Encoded")
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let body = if b64 {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&raw)
            .ok()?
    } else {
        raw
    };
    let protocol = obj
        .get("headers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-protocol"))
                .and_then(|(_, v)| v.as_str())
                .map(|s| s.as_bytes().to_vec())
        });
    Some(LambdaResult {
        status,
        body,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_results_decode() {
        let r = decode_lambda(
            br#"{"statusCode":200,"body":"hi","headers":{"Sec-WebSocket-Protocol":"p2"}}"#,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.protocol.as_deref()),
            (200, &b"hi"[..], Some(&b"p2"[..]))
        );
        let r =
            decode_lambda(br#"{"statusCode":201,"body":"AAE=","isBase64Encoded":true}"#).unwrap();
        assert_eq!(r.body, vec![0, 1]);
        assert!(decode_lambda(b"not json").is_none());
        assert!(decode_lambda(br#"{"body":"x"}"#).is_none());
    }

    #[test]
    fn fuzz_http_proxy_request_holds_on_hostile_values() {
        for data in [
            &b"\0a=1&q=%00%0d%0aX-Evil:%201\0v\r\nX-Evil: 1\0{\"room\":\"a\\u0000\\r\\nb\",\"n\":1e400}"[..],
            b"\x02\0q=1&q=%0D%0A\0\0",
            b"\x01\0\0\0{\"room\":1}",
            b"",
        ] {
            fuzz_http_proxy_request(data);
        }
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let mut out = Vec::new();
        percent_encode(&mut out, b"a b&c");
        assert_eq!(out, b"a%20b%26c");
    }
}

/// The `mapping` fuzz target (and its seed test): an `http_proxy` request written for
/// a fixed set of mappings from arbitrary input, split at NUL bytes into a mode byte,
/// the handshake query, a handshake header value and the message. The request must
/// parse as HTTP with exactly the mapped headers that had a value, carry the message
/// as its body, and cost work linear in the input.
#[cfg(any(test, fuzzing))]
pub fn fuzz_http_proxy_request(data: &[u8]) {
    use crate::config::Uri;
    const MAPPINGS: [(&str, &str); 8] = [
        (
            "integration.request.header.x-ip",
            "context.identity.sourceIp",
        ),
        ("integration.request.header.x-id", "context.connectionId"),
        (
            "integration.request.header.x-in",
            "route.request.header.X-In",
        ),
        (
            "integration.request.header.x-room",
            "route.request.body.room",
        ),
        ("integration.request.header.x-all", "route.request.body.a"),
        (
            "integration.request.querystring.q",
            "route.request.querystring.q",
        ),
        ("integration.request.querystring.n", "route.request.body.n"),
        ("integration.request.querystring.s", "stageVariables.color"),
    ];
    let mut parts = data.splitn(4, |&b| b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (mode, query, header, message) = (next(), next(), next(), next());
    let mode = mode.first().copied().unwrap_or(0) % 3;
    let query = String::from_utf8_lossy(query);
    let headers = vec![(
        "X-In".to_string(),
        String::from_utf8_lossy(header).into_owned(),
    )];
    let http = Http {
        proxy: Proxy::Http,
        uri: Uri {
            addr: ([127, 0, 0, 1], 9).into(),
            authority: "backend:9".into(),
            path: "/p".into(),
        },
        lambda: false,
        timeout: std::time::Duration::from_secs(1),
        connect_timeout: std::time::Duration::from_secs(1),
        pool_size: 1,
        max_queued_requests: 1,
        request_parameters: MAPPINGS
            .iter()
            .map(|(t, s)| mapping::compile(t, s).expect("fixed mappings compile"))
            .collect(),
    };
    let api = Api {
        name: "api".into(),
        route_selection_expression: "$request.body.action".into(),
        stage: "prod".into(),
        stage_variables: vec![("color".into(), "blue".into())],
    };
    let identity = Identity {
        source_ip: [192, 0, 2, 1].into(),
        source_ip_text: "192.0.2.1".into(),
        user_agent: None,
        host: "h".into(),
        connected_at_ms: 0,
    };
    let input = Input {
        api: &api,
        route_key: if mode == 2 { "$connect" } else { "send" },
        connection_id: b"CONN",
        request_id: b"REQ",
        message_id: b"MSG",
        identity: &identity,
        now_ms: 0,
    };
    let handshake = Handshake {
        headers: &headers,
        query: Some(&query).filter(|_| mode == 2).map(|q| &**q),
    };
    let body = match mode {
        0 => Body::Message {
            data: message,
            binary: false,
        },
        1 => Body::Message {
            data: message,
            binary: true,
        },
        _ => Body::Connect(&handshake),
    };
    let (mut out, mut scratch, mut selector) = (Vec::new(), Vec::new(), Selector::new());
    crate::route::take_work_steps();
    write_request(
        &mut out,
        &mut scratch,
        &mut selector,
        &http,
        &input,
        body,
        Some(&handshake),
    );
    let steps = crate::route::take_work_steps();
    let budget = 16 * crate::route::FUZZ_WORK_PER_BYTE * data.len() as u64 + 4096;
    assert!(steps <= budget, "{steps} work steps > budget {budget}");

    let mut parsed = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut parsed);
    let Ok(httparse::Status::Complete(head)) = req.parse(&out) else {
        panic!(
            "not one complete HTTP request: {:?}",
            String::from_utf8_lossy(&out)
        );
    };
    let mapped = req
        .headers
        .iter()
        .filter(|h| h.name.starts_with("x-"))
        .inspect(|h| assert!(h.value.iter().all(|&b| b >= 0x20 && b != 0x7f), "{h:?}"))
        .count();
    assert!(
        mapped <= 5,
        "only mapped headers, each once: {:?}",
        req.headers
    );
    assert!(mapped >= 2, "the context headers always have a value");
    let sent = if mode == 2 { &[][..] } else { message };
    assert_eq!(out.get(head..), Some(sent), "the body is the message");
}
