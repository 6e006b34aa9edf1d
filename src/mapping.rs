//! `http_proxy` data mapping (AWS "request parameters", reference §1.6): values from
//! the connection's context, stage variables, the handshake request or the message
//! body, written into integration request headers and query strings.

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
    Context(String),
    /// `stageVariables.NAME`
    StageVariable(String),
    /// `route.request.header.NAME` (the handshake's headers)
    Header(String),
    /// `route.request.querystring.NAME` (the handshake's query; `$connect` only)
    Query(String),
    /// `route.request.body.PATH` (a JSON path into the message)
    Body(String),
}

/// Context variables a mapping may read.
pub const CONTEXT_VARS: [&str; 10] = [
    "connectionId",
    "routeKey",
    "requestId",
    "extendedRequestId",
    "messageId",
    "eventType",
    "stage",
    "apiId",
    "domainName",
    "identity.sourceIp",
];

pub fn parse_target(t: &str) -> Result<Target, String> {
    if let Some(n) = t
        .strip_prefix("integration.request.header.")
        .filter(|n| !n.is_empty())
    {
        Ok(Target::Header(n.to_string()))
    } else if let Some(n) = t
        .strip_prefix("integration.request.querystring.")
        .filter(|n| !n.is_empty())
    {
        Ok(Target::Query(n.to_string()))
    } else {
        Err(format!(
            "\"{t}\" is not a target: use integration.request.header.NAME or integration.request.querystring.NAME"
        ))
    }
}

pub fn parse_source(s: &str) -> Result<Source, String> {
    let named = |p: &str| {
        s.strip_prefix(p)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
    };
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        return Ok(Source::Static(s[1..s.len() - 1].to_string()));
    }
    if let Some(n) = named("context.") {
        return if CONTEXT_VARS.contains(&n.as_str()) {
            Ok(Source::Context(n))
        } else {
            Err(format!(
                "unknown context variable \"{n}\" (known: {})",
                CONTEXT_VARS.join(", ")
            ))
        };
    }
    if let Some(n) = named("stageVariables.") {
        return Ok(Source::StageVariable(n));
    }
    if let Some(n) = named("route.request.header.") {
        return Ok(Source::Header(n));
    }
    if let Some(n) = named("route.request.querystring.") {
        return Ok(Source::Query(n));
    }
    if let Some(n) = named("route.request.body.") {
        return Ok(Source::Body(n));
    }
    Err(format!(
        "\"{s}\" is not a source: use 'static', context.*, stageVariables.*, route.request.header.*, route.request.querystring.* or route.request.body.*"
    ))
}

/// Checks one mapping as written in the config.
pub fn check(target: &str, source: &str) -> Result<(), String> {
    compile(target, source).map(|_| ())
}

/// A mapping ready to apply; a body path is compiled into a route expression.
#[derive(Debug)]
pub struct Mapping {
    pub target: Target,
    pub source: Source,
    pub body_path: Option<crate::route::Expression>,
}

pub fn compile(target: &str, source: &str) -> Result<Mapping, String> {
    let target = parse_target(target)?;
    let source = parse_source(source)?;
    let body_path = match &source {
        Source::Body(p) => Some(
            crate::route::Expression::parse(&format!("${{request.body.{p}}}"))
                .map_err(|e| format!("bad body path \"{p}\": {}", e.message))?,
        ),
        _ => None,
    };
    Ok(Mapping {
        target,
        source,
        body_path,
    })
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
        assert_eq!(
            parse_source("context.connectionId"),
            Ok(Source::Context("connectionId".into()))
        );
        assert_eq!(
            parse_source("route.request.body.data.room"),
            Ok(Source::Body("data.room".into()))
        );
        assert!(parse_source("context.nope").is_err());
        assert!(parse_source("method.request.x").is_err());
    }
}
