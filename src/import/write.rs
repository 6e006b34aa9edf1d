//! The [`Gateway`] as commented wsgate TOML (SPEC §2): each section says which
//! template resource it came from; strings and keys are escaped by the `toml`
//! crate, always on one line; template text in a comment goes through [`comment`];
//! the order is fixed (tables by name), so the same template always gives the same text.
//!
//! Every byte of the template is hostile: a logical id or name holding a newline
//! must not start a line of its own, or it would add TOML (say a `[limits]` table)
//! that `--template` then reads.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::convert::{Gateway, IntegrationKind, Throttle};

const V2: &str = "AWS::ApiGatewayV2::";

/// A TOML string value, on one line (a newline is written `\n`): a key's
/// quoting, which the toml crate never spreads over lines, is also a valid
/// string (its bare form, only letters, digits, `-` and `_`, gets quotes).
pub fn string(s: &str) -> String {
    let k = key(s);
    if k.starts_with('"') || k.starts_with('\'') {
        k
    } else {
        format!("\"{k}\"")
    }
}

/// A TOML key, as the toml crate writes it: bare when it may be, else quoted
/// and escaped on one line.
pub fn key(s: &str) -> String {
    let mut t = toml::Table::new();
    t.insert(s.to_string(), toml::Value::Integer(0));
    let line = t.to_string();
    match line.strip_suffix(" = 0\n") {
        Some(k) => k.to_string(),
        // Not the crate's shape: a basic string the crate escapes itself.
        None => toml::Value::String(s.to_string()).to_string(),
    }
}

/// Text from the template or the command line for a `#` comment line: a line
/// break (`\n`, `\r`, U+0085, U+2028, U+2029) or any other control character
/// would end the comment and start a TOML line of the template's making (or
/// make the file unreadable), so each is written as an escape (`\n`, `\u{1b}`),
/// and `\` as `\\` to keep the escapes unambiguous.
pub fn comment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn float(f: f64) -> String {
    toml::Value::Float(f).to_string()
}

fn inline(m: &BTreeMap<String, String>) -> String {
    let items: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{} = {}", key(k), string(v)))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn limit(t: &Throttle) -> String {
    format!(
        "{{ rate = {}, burst = {} }}",
        float(t.rate.unwrap_or(0.0)),
        float(t.burst.unwrap_or(0.0))
    )
}

/// Writes the config; `source` names the template in the header comment.
pub fn toml(g: &Gateway, source: &str, pseudo: &[(&str, &str)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# wsgate configuration converted by `wsgate import` from {}.",
        comment(source)
    );
    let _ = writeln!(
        o,
        "# Values only a deployment knows are placeholders: {}.",
        pseudo
            .iter()
            .map(|(k, v)| comment(&format!("{k} = {v}")))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(o, "# [server] and [management] keep their defaults; set them here or with --listen / --management-listen.");
    let _ = writeln!(
        o,
        "# Handlers that post to https://{{domainName}}/{{stage}}/@connections need [management]"
    );
    let _ = writeln!(
        o,
        "# on_api_listener = true with auth = \"sigv4\" and their credentials (SPEC §13)."
    );
    o.push('\n');
    match &g.stage {
        Some((id, _)) if !id.is_empty() => {
            let _ = writeln!(
                o,
                "# {V2}Api {}, {V2}Stage {}",
                comment(&g.api),
                comment(id)
            );
        }
        _ => {
            let _ = writeln!(o, "# {V2}Api {}", comment(&g.api));
        }
    }
    o.push_str("[api]\n");
    let _ = writeln!(o, "name = {}", string(&g.name));
    if let Some(e) = &g.route_selection_expression {
        let _ = writeln!(o, "route_selection_expression = {}", string(e));
    }
    let _ = writeln!(
        o,
        "stage = {}",
        string(g.stage.as_ref().map(|s| s.1.as_str()).unwrap_or(""))
    );
    if !g.stage_variables.is_empty() {
        let _ = writeln!(o, "stage_variables = {}", inline(&g.stage_variables));
    }
    if g.disable_schema_validation {
        o.push_str("disable_schema_validation = true\n");
    }

    o.push_str(
        "\n# Lambda functions (integrations and authorizers) are called through the Lambda\n",
    );
    o.push_str(
        "# Invoke API, signed with the credentials of wsgate's environment (SPEC §12).\n[aws]\n",
    );
    let _ = writeln!(o, "region = {}", string(&g.region));
    let _ = writeln!(o, "account_id = {}", string(&g.account_id));
    match &g.lambda_endpoint {
        Some(e) => {
            let _ = writeln!(o, "lambda_endpoint = {}", string(e));
        }
        None => o.push_str("# lambda_endpoint = \"http://127.0.0.1:3001\"   # e.g. `sam local start-lambda`; unset: Lambda in `region`\n"),
    }

    let stage_id = comment(g.stage.as_ref().map(|s| s.0.as_str()).unwrap_or(""));
    let t = &g.throttling;
    let ct = &g.connect_throttling;
    if t.rate.is_some() || ct.rate.is_some() {
        let _ = writeln!(
            o,
            "\n# {V2}Stage {stage_id}: DefaultRouteSettings and RouteSettings.$connect throttling"
        );
        o.push_str("[throttling]\n");
        if let Some(r) = ct.rate {
            let _ = writeln!(o, "connect_rate = {}", float(r));
            let _ = writeln!(o, "connect_burst = {}", float(ct.burst.unwrap_or(0.0)));
        }
        if let Some(r) = t.rate {
            let _ = writeln!(o, "rate = {}", float(r));
            let _ = writeln!(o, "burst = {}", float(t.burst.unwrap_or(0.0)));
        }
    }
    if let Some(f) = &g.access_log_format {
        let _ = writeln!(o, "\n# {V2}Stage {stage_id}: AccessLogSettings");
        o.push_str("[access_log]\npath = \"-\"\n");
        let _ = writeln!(o, "format = {}", string(f));
    }
    for (name, (id, schema)) in &g.models {
        let _ = writeln!(o, "\n# {V2}Model {}", comment(id));
        let _ = writeln!(o, "[models.{}]", key(name));
        let _ = writeln!(o, "schema = {}", string(schema));
    }
    for (name, a) in &g.authorizers {
        let _ = write!(o, "\n# {V2}Authorizer {}", comment(name));
        if let Some(f) = &a.function {
            let _ = write!(o, " (function {})", comment(f));
        }
        let _ = writeln!(o, "\n[authorizers.{}]", key(name));
        o.push_str("type = \"request\"\n");
        let _ = writeln!(o, "uri = {}", string(&a.uri));
        let sources: Vec<String> = a.identity_sources.iter().map(|s| string(s)).collect();
        let _ = writeln!(o, "identity_sources = [{}]", sources.join(", "));
        if let Some(ttl) = a.cache_ttl {
            let _ = writeln!(o, "cache_ttl = \"{ttl}s\"");
        }
    }
    for (name, i) in &g.integrations {
        let _ = write!(o, "\n# {V2}Integration {}", comment(name));
        if let Some(f) = &i.function {
            let _ = write!(o, " (function {})", comment(f));
        }
        let _ = writeln!(o, "\n[integrations.{}]", key(name));
        match &i.kind {
            IntegrationKind::AwsProxy => o.push_str("type = \"aws_proxy\"\n"),
            IntegrationKind::HttpProxy => o.push_str("type = \"http_proxy\"\n"),
            IntegrationKind::Mock { status, template } => {
                o.push_str("type = \"mock\"\n");
                let _ = writeln!(o, "status = {}", status.unwrap_or(200));
                if let Some(t) = template {
                    let _ = writeln!(o, "response_template = {}", string(t));
                }
            }
        }
        if let Some(u) = &i.uri {
            let _ = writeln!(o, "uri = {}", string(u));
        }
        if let Some(ms) = i.timeout_ms {
            let _ = writeln!(o, "timeout = \"{ms}ms\"");
        }
        if !i.request_parameters.is_empty() {
            let _ = writeln!(o, "request_parameters = {}", inline(&i.request_parameters));
        }
    }
    for (k, r) in &g.routes {
        let _ = writeln!(o, "\n# {V2}Route {}", comment(&r.id));
        let _ = writeln!(o, "[routes.{}]", key(k));
        let _ = writeln!(o, "integration = {}", string(&r.integration));
        if let Some(a) = &r.authorizer {
            let _ = writeln!(o, "authorizer = {}", string(a));
        }
        if r.route_response {
            o.push_str("route_response = true\n");
        }
        if let Some(t) = &r.throttling {
            let _ = writeln!(o, "throttling = {}", limit(t));
        }
        if let Some(m) = &r.request_model {
            let _ = writeln!(o, "request_model = {}", string(m));
        }
        if !r.request_models.is_empty() {
            let _ = writeln!(o, "request_models = {}", inline(&r.request_models));
        }
        if let Some(e) = &r.model_selection_expression {
            let _ = writeln!(o, "model_selection_expression = {}", string(e));
        }
    }
    o
}
