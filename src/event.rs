//! The AWS proxy events (SPEC §5, `reference/events/`) written straight into a reused
//! buffer: CONNECT, MESSAGE and DISCONNECT, field for field.

use std::net::IpAddr;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::config::Api;
use crate::percent;
use crate::time;

/// What every event of one connection repeats, captured at the handshake: 16 bytes
/// per connection. The [`Client`] part (address, `User-Agent`, `Host`) is shared by
/// every connection that sent the same values (the session interns it, see
/// `session::intern`), so an idle connection holds no string of its own; fields read
/// through to it (`identity.host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    client: Arc<Client>,
    pub connected_at_ms: u64,
}

/// The shared part of an [`Identity`]: immutable once made.
#[derive(Debug, PartialEq, Eq)]
pub struct Client {
    pub source_ip: IpAddr,
    /// `source_ip` as text, formatted once per distinct client.
    pub source_ip_text: Box<str>,
    pub user_agent: Option<Arc<str>>,
    /// The Host header (`domainName`).
    pub host: Arc<str>,
}

impl Identity {
    /// An identity over a (possibly shared) client.
    pub fn with_client(client: Arc<Client>, connected_at_ms: u64) -> Identity {
        Identity {
            client,
            connected_at_ms,
        }
    }

    /// An identity with a client of its own (tests, benches, one-off callers).
    pub fn new(
        source_ip: IpAddr,
        user_agent: Option<&str>,
        host: &str,
        connected_at_ms: u64,
    ) -> Identity {
        let client = Client {
            source_ip,
            source_ip_text: source_ip.to_string().into_boxed_str(),
            user_agent: user_agent.map(Arc::from),
            host: Arc::from(host),
        };
        Identity::with_client(Arc::new(client), connected_at_ms)
    }

    /// The shared client part.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }
}

impl std::ops::Deref for Identity {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The fields that differ per event.
pub struct Common<'a> {
    pub api: &'a Api,
    pub route_key: &'a str,
    pub connection_id: &'a [u8],
    pub request_id: &'a [u8],
    pub identity: &'a Identity,
    pub now_ms: u64,
    /// What the `$connect` authorizer allowed with (`requestContext.authorizer`).
    pub authorizer: Option<&'a crate::authorizer::Context>,
}

/// Writes `s` as a JSON string, quotes included (the one escaper, [`crate::json`]).
pub use crate::json::write_str;

fn write_num(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn key(out: &mut Vec<u8>, k: &str) {
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// What kind of event, with its kind-specific context fields.
enum Kind<'a> {
    Connect,
    Message { message_id: &'a [u8] },
    Disconnect { code: u16, reason: &'a [u8] },
}

fn write_context(out: &mut Vec<u8>, c: &Common<'_>, kind: &Kind<'_>) {
    out.extend_from_slice(b"\"requestContext\":{");
    key(out, "routeKey");
    write_str(out, c.route_key.as_bytes());
    let event_type: &[u8] = match kind {
        Kind::Connect => b"CONNECT",
        Kind::Message { .. } => b"MESSAGE",
        Kind::Disconnect { .. } => b"DISCONNECT",
    };
    out.extend_from_slice(b",\"eventType\":\"");
    out.extend_from_slice(event_type);
    out.push(b'"');
    match kind {
        Kind::Connect => out.extend_from_slice(
            b",\"messageId\":null,\"disconnectStatusCode\":null,\"disconnectReason\":null",
        ),
        Kind::Message { message_id } => {
            out.extend_from_slice(b",\"messageId\":");
            write_str(out, message_id);
        }
        Kind::Disconnect { code, reason } => {
            out.extend_from_slice(b",\"disconnectStatusCode\":");
            write_num(out, u64::from(*code));
            out.extend_from_slice(b",\"disconnectReason\":");
            write_str(out, reason);
        }
    }
    out.extend_from_slice(b",\"extendedRequestId\":");
    write_str(out, c.request_id);
    out.extend_from_slice(b",\"requestTime\":\"");
    time::write_request_time(out, c.now_ms);
    out.extend_from_slice(b"\",\"messageDirection\":\"IN\",\"stage\":");
    write_str(out, c.api.stage.as_bytes());
    out.extend_from_slice(b",\"connectedAt\":");
    write_num(out, c.identity.connected_at_ms);
    out.extend_from_slice(b",\"requestTimeEpoch\":");
    write_num(out, c.now_ms);
    out.extend_from_slice(b",\"identity\":{\"sourceIp\":\"");
    out.extend_from_slice(c.identity.source_ip_text.as_bytes());
    out.extend_from_slice(b"\",\"userAgent\":");
    match &c.identity.user_agent {
        Some(ua) => write_str(out, ua.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"},\"requestId\":");
    write_str(out, c.request_id);
    out.extend_from_slice(b",\"domainName\":");
    write_str(out, c.identity.host.as_bytes());
    out.extend_from_slice(b",\"connectionId\":");
    write_str(out, c.connection_id);
    out.extend_from_slice(b",\"apiId\":");
    write_str(out, c.api.name.as_bytes());
    if let Some(a) = c.authorizer {
        out.push(b',');
        a.write_json(out);
    }
    out.push(b'}');
}

/// `,"stageVariables":{...}`, left out when there are none unless `always` (the
/// authorizer's event carries `{}`).
fn write_stage_variables(out: &mut Vec<u8>, api: &Api, always: bool) {
    if api.stage_variables.is_empty() && !always {
        return;
    }
    out.extend_from_slice(b",\"stageVariables\":{");
    for (i, (k, v)) in api.stage_variables.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k.as_bytes());
        out.push(b':');
        write_str(out, v.as_bytes());
    }
    out.push(b'}');
}

/// The MESSAGE event: a text body as is, a binary one in base64.
pub fn write_message(
    out: &mut Vec<u8>,
    c: &Common<'_>,
    message_id: &[u8],
    body: &[u8],
    binary: bool,
) {
    out.push(b'{');
    write_context(out, c, &Kind::Message { message_id });
    out.extend_from_slice(b",\"body\":");
    if binary {
        out.push(b'"');
        let start = out.len();
        out.resize(start + body.len().div_ceil(3) * 4, 0);
        let n = STANDARD
            .encode_slice(body, &mut out[start..])
            .expect("sized for base64");
        out.truncate(start + n);
        out.push(b'"');
    } else {
        write_str(out, body);
    }
    out.extend_from_slice(if binary {
        b",\"isBase64Encoded\":true"
    } else {
        b",\"isBase64Encoded\":false"
    });
    write_stage_variables(out, c.api, false);
    out.push(b'}');
}

/// Writes a `{"Name":"last",..}` map and a `{"Name":["a","b"],..}` map of `pairs`,
/// grouping names case-insensitively under their first spelling, in order of first
/// appearance. Sorting indices keeps this O(n log n) for a query of thousands of
/// names, rather than comparing every name with every other.
fn write_maps(out: &mut Vec<u8>, single: &str, multi: &str, pairs: &[(String, String)]) {
    let folded = |i: usize| pairs[i].0.bytes().map(|b| b.to_ascii_lowercase());
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by(|&a, &b| folded(a).cmp(folded(b)).then(a.cmp(&b)));
    // One run of `order` per name: its first index is the first spelling.
    let mut groups: Vec<&[usize]> = order.chunk_by(|&a, &b| folded(a).eq(folded(b))).collect();
    groups.sort_by_key(|g| g[0]);
    out.push(b'"');
    out.extend_from_slice(single.as_bytes());
    out.extend_from_slice(b"\":{");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, pairs[group[0]].0.as_bytes());
        out.push(b':');
        let last = group.last().map_or("", |&j| &pairs[j].1);
        write_str(out, last.as_bytes());
    }
    out.extend_from_slice(b"},\"");
    out.extend_from_slice(multi.as_bytes());
    out.extend_from_slice(b"\":{");
    for (i, group) in groups.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, pairs[group[0]].0.as_bytes());
        out.extend_from_slice(b":[");
        for (j, &k) in group.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            write_str(out, pairs[k].1.as_bytes());
        }
        out.push(b']');
    }
    out.push(b'}');
}

/// The handshake's headers, in order, as text.
pub fn request_headers(head: &[u8]) -> Vec<(String, String)> {
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return Vec::new();
    }
    req.headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}

/// A query string split into decoded pairs.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent::decode_lossy(k), percent::decode_lossy(v))
        })
        .collect()
}

/// The decoded value of the last `name` parameter of `query` in `out` (cleared
/// first); `None` when the query has no such parameter.
pub fn query_value(query: &str, name: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let mut last = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent::decode(k.as_bytes()).as_ref() == name {
            last = Some(v);
        }
    }
    out.clear();
    out.extend_from_slice(&percent::decode(last?.as_bytes()));
    Some(())
}

/// The CONNECT event from the handshake's headers and query.
pub fn write_connect(
    out: &mut Vec<u8>,
    c: &Common<'_>,
    headers: &[(String, String)],
    query: Option<&str>,
) {
    out.push(b'{');
    write_maps(out, "headers", "multiValueHeaders", headers);
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        out.push(b',');
        write_maps(
            out,
            "queryStringParameters",
            "multiValueQueryStringParameters",
            &query_pairs(q),
        );
    }
    write_stage_variables(out, c.api, false);
    out.push(b',');
    write_context(out, c, &Kind::Connect);
    out.extend_from_slice(b",\"isBase64Encoded\":false}");
}

/// The REQUEST authorizer event (SPEC §11): CONNECT's maps and `requestContext`,
/// with `type` and `methodArn`, and empty maps when there is no query.
pub fn write_authorizer(
    out: &mut Vec<u8>,
    c: &Common<'_>,
    method_arn: &str,
    headers: &[(String, String)],
    query: Option<&str>,
) {
    out.extend_from_slice(b"{\"type\":\"REQUEST\",\"methodArn\":");
    write_str(out, method_arn.as_bytes());
    out.push(b',');
    write_maps(out, "headers", "multiValueHeaders", headers);
    out.push(b',');
    let pairs = query.map(query_pairs).unwrap_or_default();
    write_maps(
        out,
        "queryStringParameters",
        "multiValueQueryStringParameters",
        &pairs,
    );
    write_stage_variables(out, c.api, true);
    out.push(b',');
    write_context(out, c, &Kind::Connect);
    out.push(b'}');
}

/// The DISCONNECT event (SPEC §5: the headers AWS sends, with empty values).
pub fn write_disconnect(out: &mut Vec<u8>, c: &Common<'_>, code: u16, reason: &[u8]) {
    let headers = [
        ("Host".to_string(), c.identity.host.to_string()),
        ("x-api-key".to_string(), String::new()),
        ("X-Forwarded-For".to_string(), String::new()),
        ("x-restapi".to_string(), String::new()),
    ];
    out.push(b'{');
    write_maps(out, "headers", "multiValueHeaders", &headers);
    write_stage_variables(out, c.api, false);
    out.push(b',');
    write_context(out, c, &Kind::Disconnect { code, reason });
    out.extend_from_slice(b",\"isBase64Encoded\":false}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> Api {
        Api {
            name: "chat".into(),
            route_selection_expression: "$request.body.action".into(),
            stage: "prod".into(),
            stage_variables: vec![("backend".into(), "127.0.0.1:3000".into())],
        }
    }

    fn ident() -> Identity {
        Identity::new(
            "127.0.0.1".parse().unwrap(),
            Some("ua/1"),
            "h:1",
            1_795_508_102_123,
        )
    }

    fn common<'a>(api: &'a Api, id: &'a Identity, route: &'a str) -> Common<'a> {
        Common {
            api,
            route_key: route,
            connection_id: b"CONN",
            request_id: b"REQ",
            identity: id,
            now_ms: 1_795_508_107_456,
            authorizer: None,
        }
    }

    fn json(out: &[u8]) -> serde_json::Value {
        serde_json::from_slice(out)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(out)))
    }

    #[test]
    fn message_event_escapes_the_body() {
        let (api, id) = (api(), ident());
        let mut out = Vec::new();
        write_message(
            &mut out,
            &common(&api, &id, "sendmessage"),
            b"MSG",
            b"{\"a\":\"x\\\"y\"}\n\x01",
            false,
        );
        let v = json(&out);
        assert_eq!(v["body"], "{\"a\":\"x\\\"y\"}\n\u{1}");
        assert_eq!(v["isBase64Encoded"], false);
        assert_eq!(v["requestContext"]["messageId"], "MSG");
        assert_eq!(
            v["requestContext"]["requestTime"],
            "24/Nov/2026:08:15:07 +0000"
        );
        assert_eq!(v["requestContext"]["identity"]["sourceIp"], "127.0.0.1");
        assert_eq!(v["stageVariables"]["backend"], "127.0.0.1:3000");
        assert!(v.get("headers").is_none());
    }

    #[test]
    fn binary_message_is_base64() {
        let (api, id) = (api(), ident());
        let mut out = Vec::new();
        write_message(
            &mut out,
            &common(&api, &id, "$default"),
            b"M",
            &[0, 255, 1, 2],
            true,
        );
        let v = json(&out);
        assert_eq!(v["body"], "AP8BAg==");
        assert_eq!(v["isBase64Encoded"], true);
    }

    #[test]
    fn connect_event_keeps_last_single_and_all_multi_values() {
        let (api, id) = (api(), ident());
        let head = b"GET /prod?room=1&room=2&t=a%20b HTTP/1.1\r\nHost: h:1\r\nX-Custom: a\r\nx-custom: b\r\n\r\n";
        let mut out = Vec::new();
        write_connect(
            &mut out,
            &common(&api, &id, "$connect"),
            &request_headers(head),
            Some("room=1&room=2&t=a%20b"),
        );
        let v = json(&out);
        assert_eq!(v["headers"]["X-Custom"], "b");
        assert_eq!(
            v["multiValueHeaders"]["X-Custom"],
            serde_json::json!(["a", "b"])
        );
        assert_eq!(v["queryStringParameters"]["room"], "2");
        assert_eq!(v["queryStringParameters"]["t"], "a b");
        assert_eq!(
            v["multiValueQueryStringParameters"]["room"],
            serde_json::json!(["1", "2"])
        );
        assert_eq!(v["requestContext"]["messageId"], serde_json::Value::Null);
        assert_eq!(
            v["requestContext"]["disconnectStatusCode"],
            serde_json::Value::Null
        );
        assert_eq!(v["requestContext"]["eventType"], "CONNECT");
    }

    #[test]
    fn many_query_names_keep_first_spelling_order_and_last_value() {
        let (api, id) = (api(), ident());
        let mut query: Vec<String> = (0..3000).map(|i| format!("n{i}={i}")).collect();
        query.push("N7=last&b=1&B=2".into());
        let mut out = Vec::new();
        write_connect(
            &mut out,
            &common(&api, &id, "$connect"),
            &[],
            Some(&query.join("&")),
        );
        let v = json(&out);
        let single = v["queryStringParameters"].as_object().unwrap();
        assert_eq!(single.len(), 3001);
        assert_eq!(v["queryStringParameters"]["n7"], "last");
        assert_eq!(v["queryStringParameters"]["b"], "2");
        assert_eq!(
            v["multiValueQueryStringParameters"]["n7"],
            serde_json::json!(["7", "last"])
        );
        let text = String::from_utf8(out).unwrap();
        let at = |needle: &str| text.find(needle).unwrap();
        assert!(at("\"n0\":") < at("\"n1\":") && at("\"n2999\":") < at("\"b\":"));
        assert!(!text.contains("\"B\":"), "first spelling only");
    }

    #[test]
    fn connect_without_query_has_no_query_maps() {
        let (api, id) = (api(), ident());
        let mut out = Vec::new();
        write_connect(&mut out, &common(&api, &id, "$connect"), &[], None);
        assert!(json(&out).get("queryStringParameters").is_none());
    }

    #[test]
    fn disconnect_event_has_code_reason_and_no_message_id() {
        let (api, id) = (api(), ident());
        let mut out = Vec::new();
        write_disconnect(
            &mut out,
            &common(&api, &id, "$disconnect"),
            1001,
            b"Idle timeout",
        );
        let v = json(&out);
        assert_eq!(v["requestContext"]["disconnectStatusCode"], 1001);
        assert_eq!(v["requestContext"]["disconnectReason"], "Idle timeout");
        assert!(v["requestContext"].get("messageId").is_none());
        assert_eq!(v["headers"]["Host"], "h:1");
        assert_eq!(v["headers"]["x-restapi"], "");
    }
}
