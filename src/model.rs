//! Request validation with models (SPEC §14, AWS `RequestModels`).
//!
//! A model is a JSON Schema (draft 4, as AWS) named in `[models.NAME]`; a route names
//! the model its messages must match with `request_model = "NAME"`, or, as AWS's
//! resource model does, with a `request_models` map whose key is chosen per message by
//! `model_selection_expression` (a key that no entry has falls back to `"$default"`;
//! neither: the message is not validated). Schemas compile once at start into
//! [`Models`], which the configuration owns; a worker asks [`Models::check`] about each
//! routed message before its integration runs, and answers a refused one with
//! [`bad_request_frame`] instead.
//!
//! A route without a model costs one bounds-checked lookup and allocates nothing. A
//! route with one parses the message into a `serde_json::Value` (that allocates, within
//! the message-size limit; serde_json stops nesting at 128 levels) and walks the
//! compiled schema over it, in time linear in the message for a given schema:
//! `pattern` and `patternProperties` run on the `regex` crate's engine, which has no
//! backtracking, so a pattern that needs look-around or back-references (which only a
//! backtracking engine runs, in time a client could make exponential) is a config error.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::access_log::ErrorInfo;
use crate::frame::{self, OpCode};
use crate::json;
use crate::route::{Expression, Selector};

/// A refused message in the access log: `$context.error.message` and
/// `$context.error.responseType` (AWS's gateway response type for it).
pub const BAD_REQUEST_BODY: ErrorInfo = ErrorInfo {
    message: "Bad request body",
    response_type: "BAD_REQUEST_BODY",
};

/// Longest reason [`Invalid`] carries, in bytes (a log line, not a report).
const MAX_REASON_BYTES: usize = 200;

/// `[models.NAME]`, as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The JSON Schema: inline JSON text (it starts with `{`), or the path of a file
    /// holding it, relative to the configuration file's folder.
    pub schema: String,
}

/// A route's model keys, as written in the file.
#[derive(Debug, Default)]
pub struct RawRoute {
    pub request_model: Option<String>,
    pub request_models: Option<BTreeMap<String, String>>,
    pub model_selection_expression: Option<String>,
}

/// A model problem found while loading the configuration: the key and what is wrong
/// (the configuration adds the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub key: String,
    pub problem: String,
}

fn build_error(key: impl Into<String>, problem: impl Into<String>) -> BuildError {
    BuildError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// One compiled model.
struct Model {
    name: String,
    validator: jsonschema::Validator,
}

/// Which model validates a route's messages.
enum RouteModel {
    /// Always this model (`request_model`, or `request_models` with only `$default`).
    Fixed(usize),
    /// The model whose key the expression evaluates to, else `default`; neither: no
    /// validation (as AWS).
    Select {
        expression: Expression,
        /// The expression as written (for `--check`).
        source: String,
        keys: Box<[(Box<[u8]>, usize)]>,
        default: Option<usize>,
    },
}

/// Every model of the API, compiled, and which one each route uses.
#[derive(Default)]
pub struct Models {
    models: Vec<Model>,
    /// Indexed by route id; empty when no route has a model or validation is off.
    routes: Vec<Option<RouteModel>>,
}

impl fmt::Debug for Models {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        f.debug_struct("Models")
            .field("models", &names)
            .field(
                "validated_routes",
                &self.routes.iter().filter(|r| r.is_some()).count(),
            )
            .finish()
    }
}

/// Why a message was refused: it is not JSON, or it does not match its model. The
/// reason is short and names no value of the message (it goes to the debug log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub reason: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl Invalid {
    fn new(model: &str, what: fmt::Arguments<'_>) -> Invalid {
        let mut reason = format!("model \"{model}\": {what}");
        if reason.len() > MAX_REASON_BYTES {
            let mut end = MAX_REASON_BYTES;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
            reason.push_str("...");
        }
        Invalid { reason }
    }
}

impl Models {
    /// Compiles every model and resolves each route's (`routes[i]` is route id `i`:
    /// its key and its model keys). Schema files are read relative to `dir`. With
    /// `disabled` (`api.disable_schema_validation`) everything is still checked, but no
    /// route validates anything.
    pub fn build(
        dir: &Path,
        models: BTreeMap<String, RawModel>,
        routes: Vec<(&str, RawRoute)>,
        disabled: bool,
    ) -> Result<Models, BuildError> {
        let mut compiled = Vec::with_capacity(models.len());
        for (name, raw) in models {
            let validator = compile(dir, &name, &raw.schema)?;
            compiled.push(Model { name, validator });
        }
        let mut per_route = Vec::with_capacity(routes.len());
        for (key, raw) in routes {
            per_route.push(route_model(&compiled, key, raw)?);
        }
        if disabled || per_route.iter().all(Option::is_none) {
            per_route.clear();
        }
        Ok(Models {
            models: compiled,
            routes: per_route,
        })
    }

    #[cfg(test)]
    /// Whether some route validates its messages.
    #[must_use]
    pub fn is_active(&self) -> bool {
        !self.routes.is_empty()
    }

    /// What validates `route`'s messages, for `--check`: the model's name, or
    /// `by EXPRESSION {key=model, ..., $default=model}` when it is chosen per message;
    /// `None`: its messages are not validated.
    #[must_use]
    pub fn describe(&self, route: usize) -> Option<String> {
        match self.routes.get(route)?.as_ref()? {
            RouteModel::Fixed(m) => Some(self.models[*m].name.clone()),
            RouteModel::Select {
                source,
                keys,
                default,
                ..
            } => {
                let mut entries: Vec<String> = keys
                    .iter()
                    .map(|(k, m)| {
                        format!("{}={}", String::from_utf8_lossy(k), self.models[*m].name)
                    })
                    .collect();
                entries.extend(default.map(|m| format!("$default={}", self.models[m].name)));
                Some(format!("by {source} {{{}}}", entries.join(", ")))
            }
        }
    }

    /// Checks one message of `route` against its model; `Ok` when the route has none,
    /// when a selection finds none, or when the message matches. `selector` is the
    /// worker's reused route-selection scratch (for `model_selection_expression`).
    #[inline]
    pub fn check(&self, route: usize, body: &[u8], selector: &mut Selector) -> Result<(), Invalid> {
        match self.routes.get(route) {
            Some(Some(r)) => self.check_model(r, body, selector),
            _ => Ok(()),
        }
    }

    fn check_model(
        &self,
        r: &RouteModel,
        body: &[u8],
        selector: &mut Selector,
    ) -> Result<(), Invalid> {
        let model = match r {
            RouteModel::Fixed(m) => *m,
            RouteModel::Select {
                expression,
                keys,
                default,
                ..
            } => {
                let chosen = selector
                    .evaluate(expression, body)
                    .and_then(|k| keys.iter().find(|(key, _)| **key == *k))
                    .map(|&(_, m)| m);
                match chosen.or(*default) {
                    Some(m) => m,
                    None => return Ok(()),
                }
            }
        };
        self.models[model].validate(body)
    }
}

impl Model {
    fn validate(&self, body: &[u8]) -> Result<(), Invalid> {
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                let why = format_args!(
                    "not JSON ({:?} at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                );
                return Err(Invalid::new(&self.name, why));
            }
        };
        if self.validator.is_valid(&value) {
            return Ok(());
        }
        // Only a refused message pays for the explanation, masked so that the log
        // never carries the client's data.
        Err(match self.validator.validate(&value) {
            Err(e) => {
                let at = e.instance_path().as_str().to_string();
                let at = if at.is_empty() { "/" } else { at.as_str() };
                Invalid::new(&self.name, format_args!("{} at {at}", e.masked()))
            }
            Ok(()) => Invalid::new(&self.name, format_args!("does not match")),
        })
    }
}

/// Compiles the schema of model `name` (inline JSON text or a file under `dir`).
fn compile(dir: &Path, name: &str, schema: &str) -> Result<jsonschema::Validator, BuildError> {
    let key = format!("models.{name}.schema");
    if name.is_empty() {
        return Err(build_error("models.\"\"", "a model name must not be empty"));
    }
    let file_text;
    let (text, origin) = if schema.trim_start().starts_with('{') {
        (schema, String::new())
    } else if schema.trim().is_empty() {
        return Err(build_error(
            key,
            "needs a JSON Schema: inline JSON text or a file path",
        ));
    } else {
        let path = dir.join(schema);
        file_text = std::fs::read_to_string(&path)
            .map_err(|e| build_error(&key, format!("cannot read \"{}\": {e}", path.display())))?;
        (file_text.as_str(), format!("{}: ", path.display()))
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|e| build_error(&key, format!("{origin}not JSON: {e}")))?;
    if !value.is_object() {
        return Err(build_error(
            key,
            format!("{origin}a JSON Schema is a JSON object"),
        ));
    }
    jsonschema::draft4::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(&value)
        .map_err(|e| {
            let at = e.schema_path().as_str().to_string();
            let at = if at.is_empty() {
                String::new()
            } else {
                format!(" (at {at})")
            };
            let e = e.to_string();
            let hint = if e.contains("\"regex\"") {
                "; patterns run without backtracking (linear time), so look-around and back-references are not supported"
            } else {
                ""
            };
            build_error(
                key,
                format!("{origin}not a valid JSON Schema draft 4: {e}{at}{hint}"),
            )
        })
}

/// Resolves one route's model keys into what its messages are checked against.
fn route_model(
    models: &[Model],
    key: &str,
    raw: RawRoute,
) -> Result<Option<RouteModel>, BuildError> {
    let at = |k: &str| format!("routes.\"{key}\".{k}");
    let find = |k: &str, name: &str| {
        models.iter().position(|m| m.name == name).ok_or_else(|| {
            build_error(
                at(k),
                format!("no model named \"{name}\" (define [models.{name}])"),
            )
        })
    };
    let used = raw.request_model.is_some()
        || raw.request_models.is_some()
        || raw.model_selection_expression.is_some();
    if used && (key == "$connect" || key == "$disconnect") {
        return Err(build_error(
            at("request_model"),
            "models validate messages; $connect and $disconnect carry none",
        ));
    }
    match (raw.request_model, raw.request_models) {
        (Some(_), Some(_)) => Err(build_error(
            at("request_models"),
            "use request_model or request_models, not both",
        )),
        (Some(name), None) => {
            if raw.model_selection_expression.is_some() {
                return Err(build_error(
                    at("model_selection_expression"),
                    "selects among request_models; with request_model there is one model",
                ));
            }
            Ok(Some(RouteModel::Fixed(find("request_model", &name)?)))
        }
        (None, Some(map)) => {
            let mut default = None;
            let mut keys = Vec::with_capacity(map.len());
            for (k, name) in map {
                let m = find(&format!("request_models.\"{k}\""), &name)?;
                if k == "$default" {
                    default = Some(m);
                } else {
                    keys.push((k.into_bytes().into_boxed_slice(), m));
                }
            }
            let (expression, source) = match raw.model_selection_expression {
                None if keys.is_empty() => return Ok(default.map(RouteModel::Fixed)),
                None => {
                    return Err(build_error(
                        at("model_selection_expression"),
                        "request_models with keys other than \"$default\" needs a model_selection_expression",
                    ))
                }
                Some(e) => (
                    Expression::parse(&e)
                        .map_err(|err| build_error(at("model_selection_expression"), err.message))?,
                    e,
                ),
            };
            if keys.is_empty() {
                return Ok(default.map(RouteModel::Fixed));
            }
            Ok(Some(RouteModel::Select {
                expression,
                source,
                keys: keys.into(),
                default,
            }))
        }
        (None, None) => match raw.model_selection_expression {
            Some(_) => Err(build_error(
                at("model_selection_expression"),
                "selects among request_models, and the route has none",
            )),
            None => Ok(None),
        },
    }
}

/// Appends the frame a refused message gets, byte for byte as AWS documents it
/// (SPEC §14; note the space before the first colon and the spaces after the others,
/// unlike §7's frames): `{"message" : "Bad request body", "connectionId": "<id>",
/// "messageId": "<id>"}`.
pub fn bad_request_frame(out: &mut Vec<u8>, connection_id: &[u8], message_id: &[u8]) {
    const A: &[u8] = b"{\"message\" : \"Bad request body\", \"connectionId\": \"";
    const B: &[u8] = b"\", \"messageId\": \"";
    const C: &[u8] = b"\"}";
    let len = A.len()
        + B.len()
        + C.len()
        + json::escaped_len(connection_id)
        + json::escaped_len(message_id);
    let mut h = [0u8; 10];
    let hl = frame::encode_header(&mut h, true, OpCode::Text, len);
    out.extend_from_slice(&h[..hl]);
    out.extend_from_slice(A);
    json::escape_into(out, connection_id);
    out.extend_from_slice(B);
    json::escape_into(out, message_id);
    out.extend_from_slice(C);
}

#[cfg(test)]
mod tests;
