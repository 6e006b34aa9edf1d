//! What a client receives about its message: the AWS error frames (SPEC §7, byte for
//! byte) and route responses, written straight into the worker's output buffer.

use crate::config::{Config, IntegrationKind};
use crate::frame::{self, OpCode};
use crate::json;
use crate::message::Kind;
use crate::mock::Context;

/// The ids an event carries.
pub struct Ids<'a> {
    pub connection: &'a [u8],
    pub request: &'a [u8],
    pub message: &'a [u8],
    /// The `$connect` authorizer's context, for `$context.authorizer.*`.
    pub authorizer: Option<&'a crate::authorizer::Context>,
}

/// Appends `{"message": "<text>", "connectionId":"<id>", "requestId":"<id>"}` as one
/// text frame (note AWS's space after `"message":` and nowhere else); each field goes
/// through the one JSON escaper.
pub fn error_frame(out: &mut Vec<u8>, text: &str, connection_id: &[u8], request_id: &[u8]) {
    const A: &[u8] = b"{\"message\": \"";
    const B: &[u8] = b"\", \"connectionId\":\"";
    const C: &[u8] = b"\", \"requestId\":\"";
    const D: &[u8] = b"\"}";
    let fields = [text.as_bytes(), connection_id, request_id];
    let len =
        A.len() + B.len() + C.len() + D.len() + fields.map(json::escaped_len).iter().sum::<usize>();
    let mut h = [0u8; 10];
    let hl = frame::encode_header(&mut h, true, OpCode::Text, len);
    out.extend_from_slice(&h[..hl]);
    for (literal, field) in [A, B, C].into_iter().zip(fields) {
        out.extend_from_slice(literal);
        json::escape_into(out, field);
    }
    out.extend_from_slice(D);
}

/// Answers a message routed to `route` whose integration is a mock: its rendered
/// template when the route has a route response and the status is 2xx; the
/// "Internal server error" frame for another status with a route response; nothing
/// without one (SPEC §5). An empty rendering sends nothing unless the template
/// echoes the input (`$input.body`), whose empty message is echoed as one. Returns
/// the payload length of the route response sent, if one was.
pub fn mock_route(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    config: &Config,
    route: usize,
    kind: Kind,
    body: &[u8],
    ids: &Ids<'_>,
) -> Option<usize> {
    let r = &config.routes[route];
    let IntegrationKind::Mock { status, template } = &config.integrations[r.integration].kind
    else {
        unreachable!("only mock routes are answered here");
    };
    if !r.route_response {
        return None;
    }
    if !(200..300).contains(status) {
        error_frame(out, "Internal server error", ids.connection, ids.request);
        return None;
    }
    let cx = Context {
        connection_id: ids.connection,
        route_key: &r.key,
        request_id: ids.request,
        message_id: ids.message,
        stage: &config.api.stage,
        event_type: "MESSAGE",
        body,
        authorizer: ids.authorizer,
    };
    let len = template.rendered_len(&cx);
    // An empty result sends nothing (SPEC §5), but an echo of an empty message is
    // still an echo: a template that uses `$input.body` always answers.
    if len == 0 && !template.uses_body() {
        return None;
    }
    let opcode = if template.uses_body() {
        kind.opcode()
    } else {
        OpCode::Text
    };
    let max_frame = config.limits.max_frame_bytes;
    if len <= max_frame {
        let mut h = [0u8; 10];
        let hl = frame::encode_header(&mut h, true, opcode, len);
        out.extend_from_slice(&h[..hl]);
        template.render_into(&cx, out);
    } else {
        scratch.clear();
        template.render_into(&cx, scratch);
        frame::write_message(out, opcode, scratch, max_frame);
    }
    Some(len)
}

/// Runs a mock `$connect` route: a 2xx status accepts the upgrade (`true`); another
/// status is the client's answer, with the rendered template as its body (SPEC §3).
pub fn mock_connect(out: &mut Vec<u8>, config: &Config, route: usize, ids: &Ids<'_>) -> bool {
    let r = &config.routes[route];
    let IntegrationKind::Mock { status, template } = &config.integrations[r.integration].kind
    else {
        unreachable!("only mock routes are answered here");
    };
    if (200..300).contains(status) {
        return true;
    }
    let cx = Context {
        connection_id: ids.connection,
        route_key: &r.key,
        request_id: ids.request,
        message_id: ids.message,
        stage: &config.api.stage,
        event_type: "CONNECT",
        body: b"",
        authorizer: ids.authorizer,
    };
    let mut body = Vec::with_capacity(template.rendered_len(&cx));
    template.render_into(&cx, &mut body);
    crate::handshake::write_status(out, *status, None, "text/plain", &body);
    false
}

/// The reason phrases live with the response writer (`http1`).
pub use crate::http1::reason_phrase;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_frame_is_byte_exact() {
        let mut out = Vec::new();
        error_frame(
            &mut out,
            "Forbidden",
            b"AAAAAAAAAAAAAAA=",
            b"BBBBBBBBBBBBBBB=",
        );
        let want = br#"{"message": "Forbidden", "connectionId":"AAAAAAAAAAAAAAA=", "requestId":"BBBBBBBBBBBBBBB="}"#;
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1] as usize, want.len());
        assert_eq!(&out[2..], &want[..]);
    }
}
