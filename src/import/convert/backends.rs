//! Models, authorizers and integrations (with a MOCK's integration responses):
//! what routes refer to.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::*;

pub(super) fn models(
    c: &mut Convert,
    g: &mut Gateway,
    api: &str,
    w: &mut Vec<String>,
) -> Result<(), String> {
    for mut p in c.children("Model", api)? {
        let name = p.text("Name", w).unwrap_or_else(|| p.id.clone());
        if let Some(ct) = p.text("ContentType", w) {
            if ct != "application/json" {
                p.warn(
                    w,
                    &format!("ContentType {ct} is not supported; the schema validates JSON"),
                );
            }
        }
        // JSON text either way, so the config never mistakes it for a file name.
        let schema = match p.take("Schema") {
            Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                Ok(Value::Object(_)) => s.trim().to_string(),
                _ => {
                    p.warn(w, "Schema is not a JSON object; model skipped");
                    continue;
                }
            },
            Some(v @ Value::Object(_)) => v.to_string(),
            _ => {
                p.warn(w, "Schema is missing or not a JSON object; model skipped");
                continue;
            }
        };
        g.models.insert(name, (p.id.clone(), schema));
        p.finish(w, &["Description"]);
    }
    Ok(())
}

pub(super) fn authorizers(
    c: &mut Convert,
    g: &mut Gateway,
    api: &str,
    w: &mut Vec<String>,
) -> Result<(), String> {
    for mut p in c.children("Authorizer", api)? {
        let kind = p.text("AuthorizerType", w).unwrap_or_default();
        if kind != "REQUEST" {
            p.warn(
                w,
                &format!(
                    "AuthorizerType {kind} is not supported (REQUEST only); authorizer skipped"
                ),
            );
            continue;
        }
        let Some(uri) = p.text("AuthorizerUri", w) else {
            p.warn(w, "no AuthorizerUri; authorizer skipped");
            continue;
        };
        let Some((uri, function)) = c.uri(&p, "AuthorizerUri", &uri, w) else {
            continue;
        };
        let mut a = Authorizer {
            uri,
            function,
            ..Default::default()
        };
        let sources = match p.take("IdentitySource") {
            Some(Value::Array(a)) => a,
            Some(v @ Value::String(_)) => vec![v],
            _ => Vec::new(),
        };
        for s in sources {
            let s = s.as_str().unwrap_or("").to_string();
            if s.starts_with("route.request.header.") || s.starts_with("route.request.querystring.")
            {
                a.identity_sources.push(s);
            } else {
                p.warn(w, &format!("IdentitySource {s} is not supported (route.request.header.NAME or route.request.querystring.NAME); not checked"));
            }
        }
        if let Some(ttl) = p
            .take("AuthorizerResultTtlInSeconds")
            .as_ref()
            .and_then(number)
        {
            if ttl > 0.0 {
                a.cache_ttl = Some(ttl as u64);
            }
        }
        if p.take("AuthorizerCredentialsArn").is_some() {
            p.warn(w, "AuthorizerCredentialsArn is not supported; wsgate invokes the function with its own credentials");
        }
        g.authorizers.insert(p.id.clone(), a);
        p.finish(w, &["Name"]);
    }
    Ok(())
}

/// A MOCK integration's status from its request template (`{"statusCode": 200}`).
fn mock_status(templates: &Map<String, Value>) -> Option<u16> {
    let t = templates.values().next()?.as_str()?;
    let v: Value = serde_json::from_str(t).ok()?;
    v.get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
}

pub(super) fn integrations(
    c: &mut Convert,
    g: &mut Gateway,
    api: &str,
    w: &mut Vec<String>,
) -> Result<(), String> {
    // Integration responses, by integration: only a MOCK's can be expressed.
    let mut responses: BTreeMap<String, Vec<Props>> = BTreeMap::new();
    for mut p in c.children("IntegrationResponse", api)? {
        let of = p.text("IntegrationId", w).unwrap_or_default();
        responses.entry(of).or_default().push(p);
    }
    for mut p in c.children("Integration", api)? {
        let kind = p.text("IntegrationType", w).unwrap_or_default();
        let mut resp = responses.remove(&p.id).unwrap_or_default();
        let uri = p.text("IntegrationUri", w);
        let method = p.text("IntegrationMethod", w);
        let mut request_templates = match p.take("RequestTemplates") {
            Some(Value::Object(m)) => Some(m),
            _ => None,
        };
        let kind = match kind.as_str() {
            "AWS_PROXY" => IntegrationKind::AwsProxy,
            "HTTP_PROXY" => IntegrationKind::HttpProxy,
            "AWS" => {
                p.warn(w, "IntegrationType AWS (non-proxy, VTL mappings) is not supported; converted as AWS_PROXY (the function gets the proxy event)");
                IntegrationKind::AwsProxy
            }
            "HTTP" => {
                p.warn(w, "IntegrationType HTTP (non-proxy, VTL mappings) is not supported; converted as HTTP_PROXY (the backend gets the message as is)");
                IntegrationKind::HttpProxy
            }
            "MOCK" => {
                let status = request_templates.as_ref().and_then(mock_status);
                if status.is_some() {
                    request_templates = None;
                }
                let mut template = None;
                for mut r in resp.drain(..) {
                    if let Some(Value::Object(t)) = r.take("ResponseTemplates") {
                        if let Some(text) = t.values().next().and_then(Value::as_str) {
                            match crate::mock::Template::parse(text) {
                                Ok(_) => template = Some(text.to_string()),
                                Err(e) => r.warn(w, &format!("ResponseTemplates: {e} (VTL is not supported); the mock answers with an empty body")),
                            }
                        }
                    }
                    r.take("IntegrationResponseKey");
                    r.take("TemplateSelectionExpression");
                    r.finish(w, &[]);
                }
                IntegrationKind::Mock { status, template }
            }
            other => {
                p.warn(
                    w,
                    &format!("IntegrationType {other} is not supported; integration skipped"),
                );
                continue;
            }
        };
        for r in resp {
            r.warn(
                w,
                "integration responses (VTL) are not supported; the backend's reply is sent as is",
            );
        }
        if request_templates.is_some() {
            p.warn(
                w,
                "RequestTemplates (VTL) are not supported; requests carry the proxy event",
            );
        }
        if p.take("TemplateSelectionExpression").is_some() {
            p.warn(
                w,
                "TemplateSelectionExpression is not supported (no VTL templates)",
            );
        }
        let mut i = Integration {
            kind,
            uri: None,
            function: None,
            timeout_ms: None,
            request_parameters: BTreeMap::new(),
        };
        if !matches!(i.kind, IntegrationKind::Mock { .. }) {
            let Some(u) = uri else {
                p.warn(w, "no IntegrationUri; integration skipped");
                continue;
            };
            let Some((u, function)) = c.uri(&p, "IntegrationUri", &u, w) else {
                continue;
            };
            if function.is_some() || u.starts_with("arn:") {
                i.kind = IntegrationKind::AwsProxy;
            }
            i.uri = Some(u);
            i.function = function;
            if matches!(i.kind, IntegrationKind::HttpProxy) {
                if let Some(m) = method.filter(|m| !m.eq_ignore_ascii_case("POST") && m != "ANY") {
                    p.warn(w, &format!("IntegrationMethod {m} is not supported; wsgate calls HTTP integrations with POST"));
                }
            }
        }
        if let Some(t) = p.take("TimeoutInMillis").as_ref().and_then(number) {
            i.timeout_ms = Some(t as u64);
        }
        if let Some(Value::Object(params)) = p.take("RequestParameters") {
            for (k, v) in params {
                let v = v.as_str().unwrap_or("").to_string();
                if !matches!(i.kind, IntegrationKind::HttpProxy) {
                    p.warn(w, &format!("RequestParameters {k} is not supported on this integration type (HTTP_PROXY only); ignored"));
                } else if let Err(e) =
                    crate::mapping::parse_target(&k).and_then(|_| crate::mapping::parse_source(&v))
                {
                    p.warn(w, &format!("RequestParameters {k}: {e}; ignored"));
                } else {
                    i.request_parameters.insert(k, v);
                }
            }
        }
        match p.text("ConnectionType", w).as_deref() {
            None | Some("INTERNET") => {}
            Some(t) => {
                p.warn(
                    w,
                    &format!(
                        "ConnectionType {t} is not supported; IntegrationUri is called directly"
                    ),
                );
                p.take("ConnectionId");
            }
        }
        for (k, why) in [
            ("CredentialsArn", "wsgate calls with its own credentials"),
            ("ContentHandlingStrategy", "messages are passed as they are"),
            ("PassthroughBehavior", "no VTL templates"),
            (
                "TlsConfig",
                "backends are verified against the system's roots (or tls_ca)",
            ),
            ("IntegrationSubtype", "only Lambda and HTTP integrations"),
            ("ResponseParameters", "responses are passed as they are"),
        ] {
            if p.take(k).is_some() {
                p.warn(w, &format!("{k} is not supported; {why}"));
            }
        }
        g.integrations.insert(p.id.clone(), i);
        p.finish(w, &["Description", "PayloadFormatVersion"]);
    }
    for (of, rs) in responses {
        for r in rs {
            r.warn(
                w,
                &format!("IntegrationId {of} names no converted integration; ignored"),
            );
        }
    }
    Ok(())
}
