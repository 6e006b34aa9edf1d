//! `http_proxy` data mapping (AWS "request parameters", reference §1.6): values from
//! the connection's context, stage variables, the handshake request or the message
//! body, written into integration request headers and query strings.
//!
//! A mapping is parsed once, at config time, into a [`Target`] and a [`Source`]; the
//! same enum is what [`Source::value`] evaluates per call, with an exhaustive match, so
//! every source the config accepts is one the request writer knows how to fill.
//!
//! What is sent (AWS sends no parameter for a value it does not have):
//! - a source with no value, or an empty one, sends nothing: no header, no `?name=`
//!   (e.g. `route.request.querystring.*` on a message route, a header the handshake
//!   did not carry, a body path the message does not hold, a binary message);
//! - a header value never carries control characters: each byte below 0x20 (NUL, CR,
//!   LF, TAB, ...) and DEL becomes a space, so no value can end or split the header;
//! - query values are percent-encoded (RFC 3986 unreserved bytes stay as they are).

use crate::route::{Expression, Selector};

/// Where a mapped value goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Header(String),
    Query(String),
}

/// Where a mapped value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `'text'`
    Static(String),
    /// `context.NAME`
    Context(ContextVar),
    /// `context.authorizer.NAME`: `principalId`, `integrationLatency` or a key of
    /// the `$connect` authorizer's context (SPEC §11).
    Authorizer(String),
    /// `stageVariables.NAME`
    StageVariable(String),
    /// `route.request.header.NAME` (the handshake's headers)
    Header(String),
    /// `route.request.querystring.NAME` (the handshake's query; `$connect` only)
    Query(String),
    /// `route.request.body.PATH`: a JSON path into a text message, compiled as the
    /// route expression `${request.body.PATH}` (stringified as route selection does).
    Body(Expression),
}

/// The context variables a mapping may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextVar {
    ConnectionId,
    RouteKey,
    RequestId,
    ExtendedRequestId,
    MessageId,
    EventType,
    Stage,
    ApiId,
    DomainName,
    SourceIp,
}

/// Every context variable with its name after `context.`.
pub const CONTEXT_VARS: [(&str, ContextVar); 10] = [
    ("connectionId", ContextVar::ConnectionId),
    ("routeKey", ContextVar::RouteKey),
    ("requestId", ContextVar::RequestId),
    ("extendedRequestId", ContextVar::ExtendedRequestId),
    ("messageId", ContextVar::MessageId),
    ("eventType", ContextVar::EventType),
    ("stage", ContextVar::Stage),
    ("apiId", ContextVar::ApiId),
    ("domainName", ContextVar::DomainName),
    ("identity.sourceIp", ContextVar::SourceIp),
];

/// A mapping ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub target: Target,
    pub source: Source,
}

/// What one call's mappings may read.
pub struct Event<'a> {
    pub connection_id: &'a [u8],
    pub route_key: &'a str,
    pub request_id: &'a [u8],
    /// Empty for connection events.
    pub message_id: &'a [u8],
    pub stage: &'a str,
    pub api_id: &'a str,
    pub domain_name: &'a str,
    pub source_ip: &'a str,
    pub stage_variables: &'a [(String, String)],
    /// The handshake's headers, when kept.
    pub headers: &'a [(String, String)],
    /// The handshake's query: `$connect` only.
    pub query: Option<&'a str>,
    /// The text message; `None` for binary messages and connection events.
    pub body: Option<&'a [u8]>,
    /// What the `$connect` authorizer allowed with.
    pub authorizer: Option<&'a crate::authorizer::Context>,
}

/// Whether `name` is a parameter name AWS accepts (`^[a-zA-Z0-9._$-]+$`); every such
/// name is also an HTTP header token.
fn is_param_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'$' | b'-'))
}

/// The name after `prefix` in `text`, checked as a parameter name.
fn param<'t>(text: &'t str, prefix: &str) -> Option<Result<&'t str, String>> {
    let name = text.strip_prefix(prefix)?;
    Some(if is_param_name(name) {
        Ok(name)
    } else {
        Err(format!(
            "\"{text}\": the name after {prefix} must match [a-zA-Z0-9._$-]+"
        ))
    })
}

/// Parses a mapping's key, e.g. `integration.request.header.connectionId`.
///
/// # Errors
///
/// Text naming what is wrong.
pub fn parse_target(t: &str) -> Result<Target, String> {
    if let Some(name) = param(t, "integration.request.header.") {
        return Ok(Target::Header(name?.to_string()));
    }
    if let Some(name) = param(t, "integration.request.querystring.") {
        return Ok(Target::Query(name?.to_string()));
    }
    Err(format!(
        "\"{t}\" is not a target: use integration.request.header.NAME or integration.request.querystring.NAME"
    ))
}

/// Parses a mapping's value, e.g. `context.connectionId` or `'static'`.
///
/// # Errors
///
/// Text naming what is wrong.
pub fn parse_source(s: &str) -> Result<Source, String> {
    if let Some(text) = s.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Ok(Source::Static(text.to_string()));
    }
    if let Some(name) = s
        .strip_prefix("context.authorizer.")
        .filter(|n| !n.is_empty())
    {
        return Ok(Source::Authorizer(name.to_string()));
    }
    if let Some(name) = s.strip_prefix("context.") {
        return CONTEXT_VARS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|&(_, var)| Source::Context(var))
            .ok_or_else(|| {
                let known: Vec<&str> = CONTEXT_VARS.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown context variable \"{name}\" (known: {})",
                    known.join(", ")
                )
            });
    }
    if let Some(name) = s.strip_prefix("stageVariables.").filter(|n| !n.is_empty()) {
        return Ok(Source::StageVariable(name.to_string()));
    }
    if let Some(name) = param(s, "route.request.header.") {
        return Ok(Source::Header(name?.to_string()));
    }
    if let Some(name) = param(s, "route.request.querystring.") {
        return Ok(Source::Query(name?.to_string()));
    }
    if let Some(path) = s
        .strip_prefix("route.request.body.")
        .filter(|p| !p.is_empty())
    {
        return Expression::parse(&format!("${{request.body.{path}}}"))
            .map(Source::Body)
            .map_err(|e| format!("bad body path \"{path}\": {}", e.message));
    }
    Err(format!(
        "\"{s}\" is not a source: use 'static', context.*, stageVariables.*, route.request.header.*, route.request.querystring.* or route.request.body.*"
    ))
}

/// Parses one mapping as written in the config (`target = source`).
///
/// # Errors
///
/// Text naming what is wrong with the target or the source.
pub fn compile(target: &str, source: &str) -> Result<Mapping, String> {
    Ok(Mapping {
        target: parse_target(target)?,
        source: parse_source(source)?,
    })
}

impl ContextVar {
    /// The variable's value in `ev`.
    fn value<'a>(self, ev: &Event<'a>) -> &'a [u8] {
        match self {
            ContextVar::ConnectionId => ev.connection_id,
            ContextVar::RouteKey => ev.route_key.as_bytes(),
            ContextVar::RequestId | ContextVar::ExtendedRequestId => ev.request_id,
            ContextVar::MessageId => ev.message_id,
            ContextVar::EventType => match ev.route_key {
                "$connect" => b"CONNECT",
                "$disconnect" => b"DISCONNECT",
                _ => b"MESSAGE",
            },
            ContextVar::Stage => ev.stage.as_bytes(),
            ContextVar::ApiId => ev.api_id.as_bytes(),
            ContextVar::DomainName => ev.domain_name.as_bytes(),
            ContextVar::SourceIp => ev.source_ip.as_bytes(),
        }
    }
}

impl Source {
    /// The value to send for this source in `ev`, or `None` when there is none (or it
    /// is empty): the parameter is then left out. A body path is evaluated with
    /// `selector` (linear in the message size); a query value is decoded into `scratch`.
    pub fn value<'a>(
        &'a self,
        ev: &Event<'a>,
        selector: &'a mut Selector,
        scratch: &'a mut Vec<u8>,
    ) -> Option<&'a [u8]> {
        let value: &[u8] = match self {
            Source::Static(text) => text.as_bytes(),
            Source::Context(var) => var.value(ev),
            Source::Authorizer(name) => ev.authorizer?.get(name)?.as_bytes(),
            Source::StageVariable(name) => ev
                .stage_variables
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_bytes())?,
            Source::Header(name) => ev
                .headers
                .iter()
                .rev()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())?,
            Source::Query(name) => {
                crate::event::query_value(ev.query?, name.as_bytes(), scratch)?;
                scratch
            }
            Source::Body(expr) => selector.evaluate(expr, ev.body?)?,
        };
        Some(value).filter(|v| !v.is_empty())
    }
}

/// Appends `value` as a header value: every control byte (below 0x20, and DEL)
/// becomes a space, so a value can neither end the header nor smuggle another.
pub fn write_header_value(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(
        value
            .iter()
            .map(|&b| if b < 0x20 || b == 0x7f { b' ' } else { b }),
    );
}

/// The `mapping` fuzz target (and its seed test): an `http_proxy` request written for
/// a fixed set of mappings from arbitrary input, split at NUL bytes into a mode byte,
/// the handshake query, a handshake header value and the message. The request must
/// parse as HTTP with exactly the mapped headers that had a value, carry the message
/// as its body, and cost work linear in the input.
#[cfg(any(test, fuzzing))]
pub fn fuzz_http_proxy_request(data: &[u8]) {
    use crate::config::{Api, Http, Proxy, Uri};
    use crate::event::Identity;
    use crate::integration::{write_request, Body, Handshake, Input};
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
        tls: None,
        lambda: false,
        timeout: std::time::Duration::from_secs(1),
        connect_timeout: std::time::Duration::from_secs(1),
        pool_size: 1,
        max_queued_requests: 1,
        pipeline: 1,
        request_parameters: MAPPINGS
            .iter()
            .map(|(t, s)| compile(t, s).expect("fixed mappings compile"))
            .collect(),
        invoke: None,
    };
    let api = Api {
        name: "api".into(),
        route_selection_expression: "$request.body.action".into(),
        stage: "prod".into(),
        stage_variables: vec![("color".into(), "blue".into())],
    };
    let identity = Identity::new([192, 0, 2, 1].into(), None, "h", 0);
    let input = Input {
        api: &api,
        route_key: if mode == 2 { "$connect" } else { "send" },
        connection_id: b"CONN",
        request_id: b"REQ",
        message_id: b"MSG",
        identity: &identity,
        now_ms: 0,
        authorizer: None,
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
        &mut Default::default(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        assert_eq!(
            parse_target("integration.request.header.connectionId"),
            Ok(Target::Header("connectionId".into()))
        );
        assert_eq!(
            parse_target("integration.request.querystring.q"),
            Ok(Target::Query("q".into()))
        );
        assert!(parse_target("integration.request.path.x").is_err());
        assert_eq!(parse_source("'v1'"), Ok(Source::Static("v1".into())));
        assert_eq!(parse_source("''"), Ok(Source::Static(String::new())));
        assert_eq!(
            parse_source("context.connectionId"),
            Ok(Source::Context(ContextVar::ConnectionId))
        );
        assert_eq!(
            parse_source("route.request.body.data.room"),
            Ok(Source::Body(
                Expression::parse("${request.body.data.room}").unwrap()
            ))
        );
        assert!(parse_source("context.nope").is_err());
        assert!(parse_source("method.request.x").is_err());
        assert!(parse_source("'").is_err());
    }

    #[test]
    fn names_that_could_break_a_request_are_config_errors() {
        for bad in [
            "integration.request.header.",
            "integration.request.header.a b",
            "integration.request.header.a:b",
            "integration.request.header.a\r\nx",
            "integration.request.querystring.a&b",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
        for bad in [
            "route.request.header.a b",
            "route.request.querystring.",
            "route.request.body.a b",
        ] {
            assert!(parse_source(bad).is_err(), "{bad:?}");
        }
        assert!(parse_target("integration.request.header.X-My_h.$1").is_ok());
    }

    fn sample<'a>(
        headers: &'a [(String, String)],
        stage_variables: &'a [(String, String)],
    ) -> Event<'a> {
        Event {
            connection_id: b"CONN",
            route_key: "send",
            request_id: b"REQ",
            message_id: b"MSG",
            stage: "prod",
            api_id: "chat",
            domain_name: "h:1",
            source_ip: "192.0.2.7",
            stage_variables,
            headers,
            query: Some("a=1&q=x%20y&q=last"),
            body: Some(br#"{"action":"send","room":{"id":7}}"#),
            authorizer: None,
        }
    }

    /// Every source the config accepts produces a value in a sample event: a source
    /// that validates but is never filled (as `identity.sourceIp` was) fails here.
    #[test]
    fn every_accepted_source_has_a_value() {
        let headers = vec![("X-Key".to_string(), "k".to_string())];
        let vars = vec![("color".to_string(), "blue".to_string())];
        let ev = sample(&headers, &vars);
        let mut sources: Vec<String> = CONTEXT_VARS
            .iter()
            .map(|(n, _)| format!("context.{n}"))
            .collect();
        sources.extend(
            [
                "'static'",
                "stageVariables.color",
                "route.request.header.x-key",
                "route.request.querystring.q",
                "route.request.body.room",
            ]
            .map(String::from),
        );
        let (mut selector, mut scratch) = (Selector::new(), Vec::new());
        for text in &sources {
            let source = parse_source(text).unwrap();
            let value = source.value(&ev, &mut selector, &mut scratch);
            assert!(value.is_some_and(|v| !v.is_empty()), "{text}: {value:?}");
        }
        let ip = parse_source("context.identity.sourceIp").unwrap();
        assert_eq!(
            ip.value(&ev, &mut selector, &mut scratch),
            Some(&b"192.0.2.7"[..])
        );
        let q = parse_source("route.request.querystring.q").unwrap();
        assert_eq!(
            q.value(&ev, &mut selector, &mut scratch),
            Some(&b"last"[..])
        );
        let room = parse_source("route.request.body.room").unwrap();
        assert_eq!(
            room.value(&ev, &mut selector, &mut scratch),
            Some(&b"{id=7}"[..])
        );
    }

    #[test]
    fn missing_and_empty_values_are_none() {
        let ev = Event {
            query: None,
            body: None,
            ..sample(&[], &[])
        };
        let (mut selector, mut scratch) = (Selector::new(), Vec::new());
        for text in [
            "''",
            "stageVariables.color",
            "route.request.header.x-key",
            "route.request.querystring.q",
            "route.request.body.room",
        ] {
            let source = parse_source(text).unwrap();
            assert_eq!(
                source.value(&ev, &mut selector, &mut scratch),
                None,
                "{text}"
            );
        }
        let missing_path = parse_source("route.request.body.nope").unwrap();
        let ev = sample(&[], &[]);
        assert_eq!(missing_path.value(&ev, &mut selector, &mut scratch), None);
    }

    #[test]
    fn header_values_lose_every_control_byte() {
        let mut out = Vec::new();
        write_header_value(&mut out, b"a\0b\r\nX-Evil: 1\tc\x7fd\x01");
        assert_eq!(out, b"a b  X-Evil: 1 c d ");
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
}
