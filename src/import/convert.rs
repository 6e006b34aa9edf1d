//! From a resolved template to the [`Gateway`] it describes (SPEC §17): the
//! WebSocket API, its stage, models, authorizers, integrations and routes. Each
//! property is either converted, or reported with one warning naming the resource
//! and the property; none is dropped silently.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::resolve::{is_function, Resolver};
use super::Options;

const V2: &str = "AWS::ApiGatewayV2::";

/// A route or stage throttling setting (AWS's rate and burst limits).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Throttle {
    pub rate: Option<f64>,
    pub burst: Option<f64>,
}

#[derive(Debug, Default)]
pub struct Gateway {
    pub api: String,
    pub name: String,
    pub route_selection_expression: Option<String>,
    pub disable_schema_validation: bool,
    /// The Stage resource's logical id and `StageName`.
    pub stage: Option<(String, String)>,
    pub stage_variables: BTreeMap<String, String>,
    pub throttling: Throttle,
    pub connect_throttling: Throttle,
    pub access_log_format: Option<String>,
    pub region: String,
    pub account_id: String,
    pub lambda_endpoint: Option<String>,
    /// By model name: (logical id, schema text).
    pub models: BTreeMap<String, (String, String)>,
    pub authorizers: BTreeMap<String, Authorizer>,
    pub integrations: BTreeMap<String, Integration>,
    /// By route key.
    pub routes: BTreeMap<String, Route>,
}

#[derive(Debug, Default)]
pub struct Authorizer {
    pub uri: String,
    pub function: Option<String>,
    pub identity_sources: Vec<String>,
    pub cache_ttl: Option<u64>,
}

#[derive(Debug)]
pub enum IntegrationKind {
    AwsProxy,
    HttpProxy,
    Mock {
        status: Option<u16>,
        template: Option<String>,
    },
}

#[derive(Debug)]
pub struct Integration {
    pub kind: IntegrationKind,
    pub uri: Option<String>,
    /// The Lambda function's logical id, when the URI names one of the template's.
    pub function: Option<String>,
    pub timeout_ms: Option<u64>,
    pub request_parameters: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Route {
    pub id: String,
    pub integration: String,
    pub authorizer: Option<String>,
    pub route_response: bool,
    pub throttling: Option<Throttle>,
    pub request_model: Option<String>,
    pub request_models: BTreeMap<String, String>,
    pub model_selection_expression: Option<String>,
}

/// One resource's resolved properties, taken one by one; what is left at the end
/// is warned about.
struct Props {
    kind: &'static str,
    id: String,
    map: Map<String, Value>,
}

impl Props {
    fn take(&mut self, k: &str) -> Option<Value> {
        self.map.remove(k)
    }
    fn text(&mut self, k: &str, w: &mut Vec<String>) -> Option<String> {
        match self.take(k)? {
            Value::String(s) => Some(s),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                warn(
                    w,
                    self.kind,
                    &self.id,
                    &format!("{k} is not a string ({other}); ignored"),
                );
                None
            }
        }
    }
    fn flag(&mut self, k: &str) -> bool {
        match self.take(k) {
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        }
    }
    fn warn(&self, w: &mut Vec<String>, msg: &str) {
        warn(w, self.kind, &self.id, msg);
    }
    /// Warns about every property not taken, but for `quiet` ones (documentation).
    fn finish(self, w: &mut Vec<String>, quiet: &[&str]) {
        for k in self.map.keys() {
            if !quiet.contains(&k.as_str()) {
                warn(
                    w,
                    self.kind,
                    &self.id,
                    &format!("{k} is not supported; ignored"),
                );
            }
        }
    }
}

fn warn(w: &mut Vec<String>, kind: &str, id: &str, msg: &str) {
    w.push(format!("warning: {kind} {id}: {msg}"));
}

fn short(kind: &str) -> &'static str {
    match kind.strip_prefix(V2).unwrap_or(kind) {
        "Api" => "Api",
        "Stage" => "Stage",
        "Deployment" => "Deployment",
        "Model" => "Model",
        "Authorizer" => "Authorizer",
        "Integration" => "Integration",
        "IntegrationResponse" => "IntegrationResponse",
        "Route" => "Route",
        "RouteResponse" => "RouteResponse",
        _ => "Resource",
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_map(v: Value) -> BTreeMap<String, String> {
    match v {
        Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| {
                let t = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, t)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

struct Convert<'t> {
    r: Resolver<'t>,
    /// Existing resources: (logical id, type).
    resources: Vec<(String, String)>,
    template: &'t Value,
    /// Lambda functions: (logical id, the name they are invoked by).
    functions: Vec<(String, String)>,
    /// The chosen stage's `RouteSettings`, by route key, until routes take them.
    route_settings: BTreeMap<String, Throttle>,
    w: Vec<String>,
}

impl Convert<'_> {
    fn props(&mut self, id: &str, kind: &str) -> Result<Props, String> {
        let at = format!("{} {id}", short(kind));
        let raw = self.template["Resources"][id].get("Properties");
        let map = match raw {
            None => Map::new(),
            Some(p) => match self.r.value(p, &at)? {
                Some(Value::Object(m)) => m,
                _ => return Err(format!("{at}: Properties is not a mapping")),
            },
        };
        Ok(Props {
            kind: short(kind),
            id: id.to_string(),
            map,
        })
    }

    fn of_type(&self, kind: &str) -> Vec<String> {
        self.resources
            .iter()
            .filter(|(_, k)| k == kind)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// This API's resources of `kind` (`ApiId` naming it), with their properties.
    fn children(&mut self, kind: &str, api: &str) -> Result<Vec<Props>, String> {
        let mut out = Vec::new();
        for id in self.of_type(&format!("{V2}{kind}")) {
            let mut p = self.props(&id, &format!("{V2}{kind}"))?;
            match p.take("ApiId") {
                Some(Value::String(a)) if a == api => out.push(p),
                Some(_) => {}
                None => p.warn(&mut self.w, "no ApiId; ignored"),
            }
        }
        Ok(out)
    }

    /// A Lambda or HTTP URI as the config takes it, and the template's function it
    /// names; `None` (with a warning) when it is neither.
    fn uri(
        &self,
        p: &Props,
        prop: &str,
        uri: &str,
        w: &mut Vec<String>,
    ) -> Option<(String, Option<String>)> {
        if uri.starts_with("http://") || uri.starts_with("https://") {
            return Some((uri.to_string(), None));
        }
        if uri.starts_with("arn:") && uri.contains("${stageVariables.") {
            return Some((uri.to_string(), None));
        }
        match wsgate_function_of(uri) {
            Some(Ok(arn)) => {
                let name = arn.split(':').nth(6).unwrap_or("");
                let function = self
                    .functions
                    .iter()
                    .find(|(_, n)| n == name)
                    .map(|(id, _)| id.clone());
                Some((arn.to_string(), function))
            }
            Some(Err(e)) => {
                p.warn(w, &format!("{prop}: {e}; skipped"));
                None
            }
            None => {
                p.warn(
                    w,
                    &format!(
                        "{prop} \"{uri}\" is neither an http(s) URI nor a Lambda function; skipped"
                    ),
                );
                None
            }
        }
    }
}

fn wsgate_function_of(uri: &str) -> Option<Result<&str, String>> {
    crate::aws::function_of(uri)
}

/// Converts `template` (already parsed) into a [`Gateway`] and warning lines.
pub fn convert(template: &Value, opts: &Options) -> Result<(Gateway, Vec<String>), String> {
    let Some(Value::Object(resources)) = template.get("Resources") else {
        return Err("the template has no Resources section".into());
    };
    let mut r = Resolver::new(template, &opts.parameters)?;
    let mut list = Vec::new();
    for (id, res) in resources {
        let kind = res
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("resource {id} has no Type"))?;
        if r.exists(id)? {
            list.push((id.clone(), kind.to_string()));
        }
    }
    let mut c = Convert {
        r,
        resources: list,
        template,
        functions: Vec::new(),
        route_settings: BTreeMap::new(),
        w: Vec::new(),
    };
    for (id, k) in c.resources.clone() {
        if is_function(&k) {
            let name = c.r.function_name(&id)?;
            c.functions.push((id, name));
        }
    }

    // The WebSocket API.
    let mut apis = Vec::new();
    for id in c.of_type(&format!("{V2}Api")) {
        let p = c.props(&id, &format!("{V2}Api"))?;
        if p.map.get("ProtocolType").and_then(Value::as_str) == Some("WEBSOCKET") {
            apis.push(p);
        }
    }
    if apis.is_empty() {
        return Err(
            "the template has no WebSocket API (an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET)"
                .into(),
        );
    }
    let mut api = apis.remove(0);
    for other in apis {
        other.warn(&mut c.w, &format!("a second WebSocket API is not converted (one config serves one API; this one serves {})", api.id));
    }
    let w = &mut Vec::new();
    let mut g = Gateway {
        api: api.id.clone(),
        region: c.r.pseudo("AWS::Region").to_string(),
        account_id: c.r.pseudo("AWS::AccountId").to_string(),
        lambda_endpoint: opts.lambda_endpoint.clone(),
        ..Default::default()
    };
    api.take("ProtocolType");
    g.name = api.text("Name", w).unwrap_or_else(|| api.id.clone());
    g.route_selection_expression = api.text("RouteSelectionExpression", w);
    g.disable_schema_validation = api.flag("DisableSchemaValidation");
    if api.take("ApiKeySelectionExpression").is_some() {
        api.warn(
            w,
            "ApiKeySelectionExpression is not supported; API keys are not checked",
        );
    }
    api.finish(
        w,
        &[
            "Description",
            "Tags",
            "Version",
            "DisableExecuteApiEndpoint",
        ],
    );
    let api_id = g.api.clone();

    stage(&mut c, &mut g, &api_id, opts, w)?;
    for mut d in c.children("Deployment", &api_id)? {
        d.take("StageName");
        d.finish(w, &["Description"]);
    }
    models(&mut c, &mut g, &api_id, w)?;
    authorizers(&mut c, &mut g, &api_id, w)?;
    integrations(&mut c, &mut g, &api_id, w)?;
    routes(&mut c, &mut g, &api_id, w)?;
    for (id, kind) in c.resources.clone() {
        if let Some(rest) = kind.strip_prefix(V2) {
            if !matches!(
                rest,
                "Api"
                    | "Stage"
                    | "Deployment"
                    | "Model"
                    | "Authorizer"
                    | "Integration"
                    | "IntegrationResponse"
                    | "Route"
                    | "RouteResponse"
            ) {
                warn(
                    w,
                    &kind,
                    &id,
                    "this resource type is not supported; ignored",
                );
            }
        }
    }
    let mut all =
        c.r.warnings
            .iter()
            .map(|l| format!("warning: {l}"))
            .collect::<Vec<_>>();
    all.append(&mut c.w);
    all.append(w);
    Ok((g, all))
}

fn throttle(p: &Props, s: &Map<String, Value>, w: &mut Vec<String>, what: &str) -> Throttle {
    let mut t = Throttle::default();
    for (k, v) in s {
        match k.as_str() {
            "ThrottlingRateLimit" => t.rate = number(v),
            "ThrottlingBurstLimit" => t.burst = number(v),
            "DataTraceEnabled" | "DetailedMetricsEnabled" if v == &Value::Bool(false) => {}
            "LoggingLevel" if v == "OFF" => {}
            "DetailedMetricsEnabled" => p.warn(w, &format!("{what}.DetailedMetricsEnabled is not supported; wsgate's metrics are on the management API's /metrics")),
            "LoggingLevel" | "DataTraceEnabled" => p.warn(w, &format!("{what}.{k} is not supported; execution logs are wsgate's own (--log-level)")),
            _ => p.warn(w, &format!("{what}.{k} is not supported; ignored")),
        }
    }
    t
}

/// A bucket needs both numbers: a burst AWS would take from its account default
/// becomes the rate's (at least 1).
fn complete(mut t: Throttle) -> Throttle {
    if let (Some(r), None) = (t.rate, t.burst) {
        t.burst = Some(r.ceil().max(1.0));
    }
    t
}

fn stage(
    c: &mut Convert,
    g: &mut Gateway,
    api: &str,
    opts: &Options,
    w: &mut Vec<String>,
) -> Result<(), String> {
    let mut stages = c.children("Stage", api)?;
    let names: Vec<String> = stages
        .iter()
        .map(|s| {
            s.map
                .get("StageName")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let pick = match (&opts.stage, stages.len()) {
        (None, 0) => {
            warn(
                w,
                "Api",
                api,
                "no AWS::ApiGatewayV2::Stage; clients connect to / (pick a path with --stage NAME)",
            );
            return Ok(());
        }
        (Some(s), 0) => {
            g.stage = Some((String::new(), s.clone()));
            return Ok(());
        }
        (None, 1) => 0,
        (None, _) => {
            return Err(format!(
                "the API {api} has several stages ({}): pick one with --stage NAME",
                names.join(", ")
            ))
        }
        (Some(s), _) => names.iter().position(|n| n == s).ok_or_else(|| {
            format!(
                "--stage {s}: the API {api} has no such stage (stages: {})",
                names.join(", ")
            )
        })?,
    };
    let mut p = stages.swap_remove(pick);
    let name = p.text("StageName", w).unwrap_or_default();
    g.stage = Some((p.id.clone(), name));
    if let Some(v) = p.take("StageVariables") {
        g.stage_variables = text_map(v);
    }
    if let Some(Value::Object(d)) = p.take("DefaultRouteSettings") {
        g.throttling = complete(throttle(&p, &d, w, "DefaultRouteSettings"));
    }
    if let Some(Value::Object(rs)) = p.take("RouteSettings") {
        for (key, s) in rs {
            if let Value::Object(s) = s {
                let t = throttle(&p, &s, w, &format!("RouteSettings.{key}"));
                c.route_settings.insert(key, t);
            }
        }
    }
    if let Some(Value::Object(mut a)) = p.take("AccessLogSettings") {
        if a.remove("DestinationArn").is_some() {
            p.warn(w, "AccessLogSettings.DestinationArn is not supported; access log lines go to wsgate's access_log.path (stdout)");
        }
        if let Some(Value::String(f)) = a.remove("Format") {
            match crate::access_log::Format::compile(&f) {
                Ok(_) => g.access_log_format = Some(f),
                Err(e) => p.warn(
                    w,
                    &format!("AccessLogSettings.Format: {}; access logging left off", e.0),
                ),
            }
        }
        for k in a.keys() {
            p.warn(
                w,
                &format!("AccessLogSettings.{k} is not supported; ignored"),
            );
        }
    }
    if let Some(v) = p.take("ClientCertificateId") {
        let _ = v;
        p.warn(w, "ClientCertificateId is not supported; wsgate does not present a client certificate to backends");
    }
    p.finish(w, &["AutoDeploy", "DeploymentId", "Description", "Tags"]);
    Ok(())
}

fn models(c: &mut Convert, g: &mut Gateway, api: &str, w: &mut Vec<String>) -> Result<(), String> {
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

fn authorizers(
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

fn integrations(
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

fn routes(c: &mut Convert, g: &mut Gateway, api: &str, w: &mut Vec<String>) -> Result<(), String> {
    let mut two_way = BTreeMap::new();
    for mut p in c.children("RouteResponse", api)? {
        let route = p.text("RouteId", w).unwrap_or_default();
        let key = p.text("RouteResponseKey", w).unwrap_or_default();
        if key != "$default" {
            p.warn(
                w,
                &format!(
                    "RouteResponseKey {key} is not supported ($default only); treated as $default"
                ),
            );
        }
        for k in [
            "ResponseModels",
            "ModelSelectionExpression",
            "ResponseParameters",
        ] {
            if p.take(k).is_some() {
                p.warn(
                    w,
                    &format!("{k} is not supported; route responses are not validated"),
                );
            }
        }
        two_way.insert(route, p.id.clone());
        p.finish(w, &[]);
    }
    for mut p in c.children("Route", api)? {
        let Some(key) = p.text("RouteKey", w) else {
            p.warn(w, "no RouteKey; route skipped");
            continue;
        };
        let target = p.text("Target", w);
        let integration = match target
            .as_deref()
            .and_then(|t| t.strip_prefix("integrations/"))
        {
            Some(i) if g.integrations.contains_key(i) => i.to_string(),
            _ => {
                let t = target.unwrap_or_else(|| "(none)".into());
                p.warn(
                    w,
                    &format!("Target {t} names no converted integration; route {key} skipped"),
                );
                continue;
            }
        };
        let mut r = Route {
            id: p.id.clone(),
            integration,
            ..Default::default()
        };
        let auth = p
            .text("AuthorizationType", w)
            .unwrap_or_else(|| "NONE".into());
        let authorizer = p.text("AuthorizerId", w);
        match auth.as_str() {
            "NONE" => {}
            "CUSTOM" => match authorizer {
                Some(a) if g.authorizers.contains_key(&a) && key == "$connect" => r.authorizer = Some(a),
                Some(a) if g.authorizers.contains_key(&a) => p.warn(w, &format!("AuthorizerId {a}: only $connect is authorized; ignored")),
                a => p.warn(w, &format!("AuthorizerId {} names no converted authorizer; the route is served without authorization", a.unwrap_or_default())),
            },
            other => p.warn(w, &format!("AuthorizationType {other} is not supported; the route is served without authorization")),
        }
        if p.take("AuthorizationScopes").is_some() {
            p.warn(w, "AuthorizationScopes is not supported; ignored");
        }
        if p.flag("ApiKeyRequired") {
            p.warn(
                w,
                "ApiKeyRequired is not supported; API keys are not checked",
            );
        }
        if let Some(Value::Object(m)) = p.take("RequestModels") {
            for (k, v) in text_map(Value::Object(m)) {
                if g.models.contains_key(&v) {
                    r.request_models.insert(k, v);
                } else {
                    p.warn(
                        w,
                        &format!("RequestModels {k}: no converted model named {v}; not validated"),
                    );
                }
            }
        }
        r.model_selection_expression = p.text("ModelSelectionExpression", w);
        if r.model_selection_expression.is_none() && r.request_models.len() == 1 {
            r.request_model = r.request_models.remove("$default");
        }
        let rrse = p.text("RouteResponseSelectionExpression", w);
        r.route_response = two_way.remove(&p.id).is_some();
        if rrse.is_some() && !r.route_response {
            p.warn(w, "RouteResponseSelectionExpression without an AWS::ApiGatewayV2::RouteResponse; the route stays one-way");
        }
        if p.take("RequestParameters").is_some() {
            p.warn(
                w,
                "RequestParameters (required route parameters) are not supported; not checked",
            );
        }
        if let Some(t) = c.route_settings.remove(&key) {
            match key.as_str() {
                "$connect" => g.connect_throttling = complete(t),
                "$disconnect" => p.warn(
                    w,
                    "RouteSettings.$disconnect throttling is not supported; ignored",
                ),
                _ => {
                    // What a route leaves unset, it takes from the stage's defaults.
                    let stage = g.throttling;
                    let mut t = complete(Throttle {
                        rate: t.rate.or(stage.rate),
                        burst: t.burst.or(stage.burst),
                    });
                    for (x, s, what) in [
                        (&mut t.rate, stage.rate, "ThrottlingRateLimit"),
                        (&mut t.burst, stage.burst, "ThrottlingBurstLimit"),
                    ] {
                        if let (Some(v), Some(s)) = (*x, s) {
                            if v > s {
                                p.warn(w, &format!("RouteSettings.{key}.{what} {v} is above the stage's {s}; lowered to it (a route may only lower the stage's limits)"));
                                *x = Some(s);
                            }
                        }
                    }
                    r.throttling = Some(t);
                }
            }
        }
        p.finish(w, &["OperationName"]);
        if let Some(old) = g.routes.insert(key.clone(), r) {
            warn(
                w,
                "Route",
                &old.id,
                &format!("RouteKey {key} is also the key of another route; replaced"),
            );
        }
    }
    for (route, id) in two_way {
        warn(
            w,
            "RouteResponse",
            &id,
            &format!("RouteId {route} names no converted route; ignored"),
        );
    }
    for key in c.route_settings.keys() {
        if let Some((id, _)) = &g.stage {
            warn(
                w,
                "Stage",
                id,
                &format!("RouteSettings.{key}: no route with this key; ignored"),
            );
        }
    }
    Ok(())
}
