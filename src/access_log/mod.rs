//! Access logs (SPEC §10.4): AWS's `$context` access-log format, compiled once at
//! start into literal text and variable references, rendered into one line per
//! CONNECT, MESSAGE and DISCONNECT. [`writer`] buffers the lines per worker and
//! writes them without ever blocking the worker.
//!
//! A format is "JSON-shaped" when it starts with `{` (after trimming): every value
//! then goes through the one JSON escaper ([`crate::json`]), so a hostile
//! User-Agent or close reason cannot break the line. Otherwise values are written
//! as they are, except control characters, written `\xHH`, so one record stays one
//! line. A value that is not known renders `-`, as AWS does.

use std::fmt;

use crate::config::Config;
use crate::event::Identity;
use crate::json;
use crate::time;

pub mod writer;

pub use writer::Writer;

/// The format used when `[access_log]` names none: SPEC §10.4's example.
pub const DEFAULT_FORMAT: &str = r#"{"requestId":"$context.requestId","ip":"$context.identity.sourceIp","eventType":"$context.eventType","routeKey":"$context.routeKey","status":"$context.status","connectionId":"$context.connectionId","integrationLatency":"$context.integrationLatency"}"#;

/// One `$context` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Var {
    RequestId,
    ExtendedRequestId,
    ApiId,
    Stage,
    DomainName,
    RouteKey,
    EventType,
    MessageId,
    MessageDirection,
    ConnectionId,
    ConnectedAt,
    RequestTime,
    RequestTimeEpoch,
    SourceIp,
    UserAgent,
    Status,
    ErrorMessage,
    ErrorResponseType,
    /// `error.validationErrorString`: why a model refused the message (SPEC §14).
    ValidationError,
    IntegrationStatus,
    IntegrationLatency,
    IntegrationError,
    DisconnectStatusCode,
    DisconnectReason,
    /// `authorizer.principalId|integrationLatency|latency|<key>` (SPEC §11): the
    /// connection's authorizer context; `-` without one (and for `status`/`error`).
    Authorizer(Box<str>),
    /// Documented by AWS for WebSocket APIs but without a value here (`waf.*`,
    /// `identity.caller`, ...): accepted so an AWS format loads, always `-`.
    Unsupported,
}

/// The names a format may use after `$context.` (reference §1.16), and what they read.
const NAMES: &[(&str, Var)] = &[
    ("requestId", Var::RequestId),
    ("extendedRequestId", Var::ExtendedRequestId),
    ("apiId", Var::ApiId),
    ("stage", Var::Stage),
    ("domainName", Var::DomainName),
    ("routeKey", Var::RouteKey),
    ("eventType", Var::EventType),
    ("messageId", Var::MessageId),
    ("messageDirection", Var::MessageDirection),
    ("connectionId", Var::ConnectionId),
    ("connectedAt", Var::ConnectedAt),
    ("requestTime", Var::RequestTime),
    ("requestTimeEpoch", Var::RequestTimeEpoch),
    ("identity.sourceIp", Var::SourceIp),
    ("identity.userAgent", Var::UserAgent),
    ("status", Var::Status),
    ("error.message", Var::ErrorMessage),
    ("error.responseType", Var::ErrorResponseType),
    ("integrationStatus", Var::IntegrationStatus),
    ("integrationLatency", Var::IntegrationLatency),
    ("integration.status", Var::IntegrationStatus),
    ("integration.integrationStatus", Var::IntegrationStatus),
    ("integration.latency", Var::IntegrationLatency),
    ("integration.error", Var::IntegrationError),
    ("disconnectStatusCode", Var::DisconnectStatusCode),
    ("disconnectReason", Var::DisconnectReason),
    ("error.messageString", Var::Unsupported),
    ("error.validationErrorString", Var::ValidationError),
    ("integration.requestId", Var::Unsupported),
    ("identity.accountId", Var::Unsupported),
    ("identity.apiKey", Var::Unsupported),
    ("identity.apiKeyId", Var::Unsupported),
    ("identity.caller", Var::Unsupported),
    ("identity.cognitoAuthenticationProvider", Var::Unsupported),
    ("identity.cognitoAuthenticationType", Var::Unsupported),
    ("identity.cognitoIdentityId", Var::Unsupported),
    ("identity.cognitoIdentityPoolId", Var::Unsupported),
    ("identity.principalOrgId", Var::Unsupported),
    ("identity.user", Var::Unsupported),
    ("identity.userArn", Var::Unsupported),
];

/// Prefixes whose every name is accepted: AWS features wsgate does not have
/// (`authorizer.<key>`, the authorizer's context, is looked up first).
const PREFIXES: &[(&str, Var)] = &[
    ("authorize.", Var::Unsupported),
    ("authenticate.", Var::Unsupported),
    ("waf.", Var::Unsupported),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(Box<[u8]>),
    Var(Var),
}

/// A compiled access-log format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    segments: Box<[Segment]>,
    json: bool,
}

/// Why a format was refused (the config error's problem text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const PREFIX: &str = "$context.";

impl Format {
    /// Compiles `text`: literal runs and `$context.<name>` references. A name is the
    /// longest run of letters, digits, `_` and `.` (a trailing `.` is literal text).
    pub fn compile(text: &str) -> Result<Format, FormatError> {
        if text.trim().is_empty() {
            return Err(FormatError("the format is empty".into()));
        }
        if text.contains(['\n', '\r']) {
            return Err(FormatError(
                "the format must be one line (each record is one line)".into(),
            ));
        }
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(PREFIX) {
            literal.push_str(&rest[..i]);
            let after = &rest[i + PREFIX.len()..];
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(after.len());
            let name = after[..len].trim_end_matches('.');
            let var = lookup(name).ok_or_else(|| {
                FormatError(format!(
                    "unknown variable `$context.{name}` (SPEC §10.4 lists the variables)"
                ))
            })?;
            if !literal.is_empty() {
                segments.push(Segment::Literal(
                    std::mem::take(&mut literal).into_bytes().into(),
                ));
            }
            segments.push(Segment::Var(var));
            rest = &after[name.len()..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal.into_bytes().into()));
        }
        Ok(Format {
            segments: segments.into(),
            json: text.trim_start().starts_with('{'),
        })
    }

    #[cfg(test)]
    /// Whether values are JSON-escaped.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Appends the line for `r` (without its newline).
    pub fn render(&self, out: &mut Vec<u8>, config: &Config, r: &Record<'_>) {
        for s in self.segments.iter() {
            match s {
                Segment::Literal(l) => out.extend_from_slice(l),
                Segment::Var(v) => self.value(out, config, r, v),
            }
        }
    }

    fn value(&self, out: &mut Vec<u8>, config: &Config, r: &Record<'_>, v: &Var) {
        let api = &config.api;
        let id = r.identity;
        let text = |out: &mut Vec<u8>, t: Option<&[u8]>| match t {
            Some(t) => write_text(out, self.json, t),
            None => out.push(b'-'),
        };
        let num = |out: &mut Vec<u8>, n: Option<u64>| match n {
            Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
            None => out.push(b'-'),
        };
        let integration = r.integration.as_ref();
        match v {
            Var::RequestId | Var::ExtendedRequestId => text(out, Some(r.request_id)),
            Var::ApiId => text(out, Some(api.name.as_bytes())),
            Var::Stage => text(out, Some(api.stage.as_bytes()).filter(|s| !s.is_empty())),
            Var::DomainName => text(out, id.map(|i| i.host.as_bytes())),
            Var::RouteKey => text(out, r.route_key(config).map(str::as_bytes)),
            Var::EventType => out.extend_from_slice(r.event.name().as_bytes()),
            Var::MessageId => text(out, r.message_id),
            Var::MessageDirection => out.extend_from_slice(b"IN"),
            Var::ConnectionId => text(out, Some(r.connection_id)),
            Var::ConnectedAt => num(out, id.map(|i| i.connected_at_ms)),
            Var::RequestTime => time::write_request_time(out, r.requested_ms),
            Var::RequestTimeEpoch => num(out, Some(r.requested_ms)),
            Var::SourceIp => text(out, id.map(|i| i.source_ip_text.as_bytes())),
            Var::UserAgent => text(
                out,
                id.and_then(|i| i.user_agent.as_deref()).map(str::as_bytes),
            ),
            Var::Status => num(out, Some(u64::from(r.status))),
            Var::ErrorMessage => text(out, r.error.map(|e| e.message.as_bytes())),
            Var::ErrorResponseType => text(out, r.error.map(|e| e.response_type.as_bytes())),
            Var::ValidationError => text(out, r.validation_error.map(str::as_bytes)),
            Var::IntegrationStatus => num(out, integration.and_then(|i| i.status).map(u64::from)),
            Var::IntegrationLatency => num(out, integration.map(|i| i.latency_ms)),
            Var::IntegrationError => {
                text(out, integration.and_then(|i| i.error).map(str::as_bytes))
            }
            Var::DisconnectStatusCode => num(out, r.disconnect.map(|(c, _)| u64::from(c))),
            Var::DisconnectReason => text(out, r.disconnect.map(|(_, t)| t.as_bytes())),
            Var::Authorizer(name) => {
                let name = match &**name {
                    "latency" => "integrationLatency",
                    n => n,
                };
                text(
                    out,
                    r.authorizer.and_then(|a| a.get(name)).map(str::as_bytes),
                )
            }
            Var::Unsupported => out.push(b'-'),
        }
    }
}

fn lookup(name: &str) -> Option<Var> {
    if let Some((_, v)) = NAMES.iter().find(|(n, _)| *n == name) {
        return Some(v.clone());
    }
    if let Some(key) = name.strip_prefix("authorizer.").filter(|k| !k.is_empty()) {
        return Some(Var::Authorizer(key.into()));
    }
    PREFIXES
        .iter()
        .find(|(p, _)| name.len() > p.len() && name.starts_with(p))
        .map(|(_, v)| v.clone())
}

/// Writes a value: JSON-escaped (invalid UTF-8 replaced, so the line stays valid
/// JSON), or as is with control characters as `\xHH`.
fn write_text(out: &mut Vec<u8>, json: bool, v: &[u8]) {
    // A value from a client (a 16 KiB User-Agent) is cut, so a line costs bounded
    // work however small the message that makes it.
    let (v, cut) = match v.len() > MAX_VALUE_BYTES {
        true => {
            let mut end = MAX_VALUE_BYTES;
            while end > MAX_VALUE_BYTES - 3 && v[end] & 0xc0 == 0x80 {
                end -= 1; // not inside a UTF-8 character
            }
            (&v[..end], true)
        }
        false => (v, false),
    };
    write_value(out, json, v);
    if cut {
        out.extend_from_slice(b"...");
    }
}

/// Longest value written into a line (bytes of the value, before escaping).
pub const MAX_VALUE_BYTES: usize = 1024;

fn write_value(out: &mut Vec<u8>, json: bool, v: &[u8]) {
    if json {
        match std::str::from_utf8(v) {
            Ok(_) => json::escape_into(out, v),
            Err(_) => json::escape_into(out, String::from_utf8_lossy(v).as_bytes()),
        }
        return;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &c in v {
        if c < 0x20 || c == 0x7f {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 15)],
            ]);
        } else {
            out.push(c);
        }
    }
}

/// Which event a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventType {
    Connect,
    #[default]
    Message,
    Disconnect,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::Connect => "CONNECT",
            EventType::Message => "MESSAGE",
            EventType::Disconnect => "DISCONNECT",
        }
    }
}

/// The error the client was answered with: `error.message` and `error.responseType`
/// (AWS's gateway response types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInfo {
    pub message: &'static str,
    pub response_type: &'static str,
}

/// What a backend call gave (only when one was made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Integration {
    /// The backend's HTTP status (a Lambda result's `statusCode`); `None` when it
    /// gave none (unreachable, malformed, timed out).
    pub status: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<&'static str>,
}

impl Integration {
    /// The access-log view of a call's outcome after `latency_ms`.
    pub fn of(outcome: &crate::integration::Outcome<'_>, latency_ms: u64) -> Integration {
        use crate::integration::Outcome;
        let (status, error) = match outcome {
            Outcome::Reply { status, .. } => (Some(*status), None),
            Outcome::Failed => (None, Some("Integration failure")),
            Outcome::TimedOut => (None, Some("Endpoint request timed out")),
        };
        Integration {
            status,
            latency_ms,
            error,
        }
    }
}

/// A finished backend call as the worker saw it, handed to the session with its
/// outcome: the ids and times its access-log line repeats.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub request_id: &'a [u8],
    /// Empty for `$connect` / `$disconnect`.
    pub message_id: &'a [u8],
    /// Wall-clock ms when the request was made (its event's `requestTimeEpoch`).
    pub requested_ms: u64,
    pub latency_ms: u64,
}

/// One line's values; `None` renders `-`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Record<'a> {
    pub event: EventType,
    /// A message's route (config route id); `None` for CONNECT (`$connect`),
    /// DISCONNECT (`$disconnect`) and a message no route took (`-`).
    pub route: Option<usize>,
    pub request_id: &'a [u8],
    pub message_id: Option<&'a [u8]>,
    pub connection_id: &'a [u8],
    pub identity: Option<&'a Identity>,
    /// `requestTime` / `requestTimeEpoch`, ms since the Unix epoch.
    pub requested_ms: u64,
    /// What the client got: 200 for an accepted upgrade (the client saw 101, AWS
    /// logs 200) and for a handled message; the refusal's or error frame's status
    /// otherwise.
    pub status: u16,
    pub error: Option<ErrorInfo>,
    pub integration: Option<Integration>,
    /// `disconnectStatusCode` / `disconnectReason`.
    pub disconnect: Option<(u16, &'a str)>,
    /// The connection's authorizer context (`authorizer.*`).
    pub authorizer: Option<&'a crate::authorizer::Context>,
    /// Why a model refused the message (`error.validationErrorString`, SPEC §14).
    pub validation_error: Option<&'a str>,
}

impl Record<'_> {
    fn route_key<'c>(&self, config: &'c Config) -> Option<&'c str> {
        match (self.route, self.event) {
            (Some(r), _) => config.routes.get(r).map(|r| r.key.as_str()),
            (None, EventType::Connect) => Some("$connect"),
            (None, EventType::Disconnect) => Some("$disconnect"),
            (None, EventType::Message) => None,
        }
    }
}

/// No route took the message and there is no `$default` (SPEC §4).
pub const FORBIDDEN: ErrorInfo = ErrorInfo {
    message: "Forbidden",
    response_type: "DEFAULT_4XX",
};
/// Too many calls in flight (`max_inflight_per_connection`) or a throttled message.
pub const THROTTLED: ErrorInfo = ErrorInfo {
    message: "Too Many Requests",
    response_type: "THROTTLED",
};
/// The backend answered, but not with something the client can get (a non-2xx
/// status on a two-way route, a body that is neither UTF-8 nor allowed binary).
pub const SERVER_ERROR: ErrorInfo = ErrorInfo {
    message: "Internal server error",
    response_type: "DEFAULT_5XX",
};
/// The backend was unreachable or its reply malformed.
pub const INTEGRATION_FAILURE: ErrorInfo = ErrorInfo {
    message: "Internal server error",
    response_type: "INTEGRATION_FAILURE",
};
/// The backend did not answer within the integration's timeout.
pub const INTEGRATION_TIMEOUT: ErrorInfo = ErrorInfo {
    message: "Endpoint request timed out",
    response_type: "INTEGRATION_TIMEOUT",
};
/// A route response did not fit what the client left unread: closed with 1008.
pub const OUTBOUND_FULL: ErrorInfo = ErrorInfo {
    message: "Outbound buffer full",
    response_type: "DEFAULT_4XX",
};

#[cfg(test)]
mod tests;
