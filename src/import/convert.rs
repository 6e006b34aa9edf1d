//! From a resolved template to the [`Gateway`] it describes (SPEC §17): the
//! WebSocket API, its stage, models, authorizers, integrations and routes. Each
//! property is either converted, or reported with one warning naming the resource
//! and the property; none is dropped silently.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::resolve::{is_function, Resolver};
use super::Options;

mod backends;
mod routes;
mod stage;

use backends::{authorizers, integrations, models};
use routes::routes;
use stage::stage;

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
        match crate::aws::function_of(uri) {
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
    let (mut apis, mut others) = (Vec::new(), Vec::new());
    for id in c.of_type(&format!("{V2}Api")) {
        let p = c.props(&id, &format!("{V2}Api"))?;
        match p.map.get("ProtocolType").and_then(Value::as_str) {
            Some("WEBSOCKET") => apis.push(p),
            other => {
                let kind = other.unwrap_or("(none)").to_string();
                others.push((p, kind));
            }
        }
    }
    if apis.is_empty() {
        return Err(
            "the template has no WebSocket API (an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET)"
                .into(),
        );
    }
    for (p, kind) in &others {
        p.warn(
            &mut c.w,
            &format!("ProtocolType {kind} is not served (WebSocket APIs only); ignored"),
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
