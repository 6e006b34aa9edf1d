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
    /// The `$connect` route's authorizer (SPEC §11), before `$connect` itself.
    Authorize,
}

/// A backend call the session asks the worker to make.
#[derive(Debug)]
pub struct Outgoing {
    pub route: usize,
    pub kind: CallKind,
    /// The whole HTTP request (head and body), in a pooled buffer.
    pub request: Vec<u8>,
    pub request_id: crate::id::Text,
    /// A message's id (`None` for `$connect` / `$disconnect`), for its access-log line.
    pub message_id: Option<crate::id::Text>,
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
    pub authorizer: Option<&'a crate::authorizer::Context>,
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
            authorizer: self.authorizer,
        }
    }
}

/// What the request carries besides the ids.
pub enum Body<'a> {
    Connect(&'a Handshake<'a>),
    Message {
        data: &'a [u8],
        binary: bool,
    },
    Disconnect {
        code: u16,
        reason: &'a [u8],
    },
    /// The authorizer event, with the authorizer's `methodArn`.
    Authorize(&'a Handshake<'a>, &'a str),
}

/// Writes the complete HTTP request for one call into `out`; `scratch` is reused for
/// the event body. A Lambda integration's call is signed with `signer` at
/// `input.now_ms` (SPEC §12).
#[allow(clippy::too_many_arguments)]
pub fn write_request(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    selector: &mut Selector,
    signer: &mut crate::aws::sigv4::Signer,
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
                Body::Authorize(h, arn) => {
                    event::write_authorizer(scratch, &c, arn, h.headers, h.query)
                }
            }
            let signed: &[u8] = match &http.invoke {
                Some(invoke) => signer.sign(
                    invoke,
                    &http.uri.authority,
                    &http.uri.path,
                    "application/json",
                    scratch,
                    input.now_ms,
                ),
                None => b"",
            };
            crate::upstream::write_request(
                out,
                &http.uri,
                b"",
                "application/json",
                signed,
                scratch,
            );
        }
        Proxy::Http => {
            let (data, binary): (&[u8], bool) = match body {
                Body::Message { data, binary } => (data, binary),
                _ => (b"", false),
            };
            let handshake = match body {
                Body::Connect(h) | Body::Authorize(h, _) => Some(h),
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
                authorizer: input.authorizer,
            };
            // Mapped headers into `scratch`, then the mapped query after them; a
            // parameter without a value is left out (see `mapping`). `out` (a pooled
            // buffer, empty until the request is written) holds decoded values
            // meanwhile, so no mapping allocates once buffers have grown.
            let mut decoded = std::mem::take(out);
            for m in &http.request_parameters {
                let Target::Header(name) = &m.target else {
                    continue;
                };
                if let Some(value) = m.source.value(&ev, selector, &mut decoded) {
                    scratch.extend_from_slice(name.as_bytes());
                    scratch.extend_from_slice(b": ");
                    mapping::write_header_value(scratch, value);
                    scratch.extend_from_slice(b"\r\n");
                }
            }
            let headers_end = scratch.len();
            for m in &http.request_parameters {
                let Target::Query(name) = &m.target else {
                    continue;
                };
                if let Some(value) = m.source.value(&ev, selector, &mut decoded) {
                    if scratch.len() > headers_end {
                        scratch.push(b'&');
                    }
                    percent_encode(scratch, name.as_bytes());
                    scratch.push(b'=');
                    percent_encode(scratch, value);
                }
            }
            decoded.clear();
            *out = decoded;
            let (headers, query) = scratch.split_at(headers_end);
            let ct = if binary {
                "application/octet-stream"
            } else {
                "application/json"
            };
            crate::upstream::write_request(out, &http.uri, query, ct, headers, data);
        }
    }
}

fn percent_encode(out: &mut Vec<u8>, s: &[u8]) {
    crate::percent::encode_into(out, s, false);
}

/// A Lambda proxy result (`response = "lambda"`): status, body (base64-decoded when
/// flagged) and the `Sec-WebSocket-Protocol` header if it sets one.
pub struct LambdaResult {
    pub status: u16,
    pub body: Vec<u8>,
    pub protocol: Option<Vec<u8>>,
}

/// Decodes a Lambda proxy result; `None` when it is not one (a malformed reply).
/// A `null` or empty result is a 200 with no body (SPEC §12).
pub fn decode_lambda(reply: &[u8]) -> Option<LambdaResult> {
    use simd_json::prelude::*;
    let result = reply.trim_ascii();
    if result.is_empty() || result == b"null" {
        return Some(LambdaResult {
            status: 200,
            body: Vec::new(),
            protocol: None,
        });
    }
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
        for nothing in [&b"null"[..], b" null\r\n", b"", b" \n"] {
            let r = decode_lambda(nothing).unwrap();
            assert_eq!((r.status, r.body.len(), r.protocol), (200, 0, None));
        }
        assert!(decode_lambda(b"nulls").is_none());
        assert!(decode_lambda(br#"{"body":"x"}"#).is_none());
    }

    #[test]
    fn query_values_are_percent_encoded() {
        let mut out = Vec::new();
        percent_encode(&mut out, b"a b&c");
        assert_eq!(out, b"a%20b%26c");
    }
}
