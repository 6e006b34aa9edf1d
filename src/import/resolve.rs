//! Intrinsic functions and pseudo parameters, evaluated once at import time.
//!
//! Parameters take their `--parameter` override, else their `Default`; pseudo
//! parameters have documented placeholder values ([`PSEUDO`], overridable with
//! `--parameter AWS::Region=eu-west-1` and the like). A `Ref` to a resource is its
//! logical id, except a Lambda function's, which is its name (`FunctionName`, else
//! the logical id, which is what `sam local start-lambda` serves it as);
//! `Fn::GetAtt Function.Arn` is that function's ARN. Anything CloudFormation would
//! only know once deployed (`Fn::ImportValue`, other attributes) becomes a
//! placeholder text with a warning where one is needed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// Pseudo parameters and their placeholder values.
pub const PSEUDO: [(&str, &str); 5] = [
    ("AWS::Region", "us-east-1"),
    ("AWS::AccountId", "123456789012"),
    ("AWS::StackName", "wsgate"),
    ("AWS::Partition", "aws"),
    ("AWS::URLSuffix", "amazonaws.com"),
];

/// The resource types that are Lambda functions.
pub fn is_function(kind: &str) -> bool {
    kind == "AWS::Serverless::Function" || kind == "AWS::Lambda::Function"
}

/// Deeper nesting than this is refused (and ends a `Ref` cycle through names).
const MAX_DEPTH: usize = 64;

pub struct Resolver<'t> {
    params: BTreeMap<String, Value>,
    pseudo: BTreeMap<String, String>,
    resources: &'t Map<String, Value>,
    conditions: &'t Map<String, Value>,
    mappings: &'t Map<String, Value>,
    decided: BTreeMap<String, bool>,
    deciding: Vec<String>,
    depth: usize,
    /// Warning lines (without the `warning: ` prefix).
    pub warnings: Vec<String>,
}

fn section<'t>(template: &'t Value, name: &str) -> Result<&'t Map<String, Value>, String> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match template.get(name) {
        None | Some(Value::Null) => Ok(EMPTY.get_or_init(Map::new)),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(format!("the template's {name} section is not a mapping")),
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl<'t> Resolver<'t> {
    /// Sets up parameters (defaults, then `overrides`) for `template`.
    pub fn new(template: &'t Value, overrides: &[(String, String)]) -> Result<Self, String> {
        let declared = section(template, "Parameters")?;
        let mut pseudo: BTreeMap<String, String> = PSEUDO
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut given = BTreeMap::new();
        for (k, v) in overrides {
            if pseudo.contains_key(k) {
                pseudo.insert(k.clone(), v.clone());
            } else if declared.contains_key(k) {
                given.insert(k.clone(), v.clone());
            } else {
                return Err(format!(
                    "--parameter {k}: the template declares no parameter named {k}"
                ));
            }
        }
        let mut params = BTreeMap::new();
        for (name, decl) in declared {
            let text = match given.get(name) {
                Some(v) => v.clone(),
                None => match decl.get("Default").and_then(scalar_text) {
                    Some(d) => d,
                    None => match decl.get("Default") {
                        Some(Value::Array(items)) => items
                            .iter()
                            .filter_map(scalar_text)
                            .collect::<Vec<_>>()
                            .join(","),
                        _ => {
                            return Err(format!(
                                "parameter {name} has no Default: pass --parameter {name}=VALUE"
                            ))
                        }
                    },
                },
            };
            if let Some(Value::Array(allowed)) = decl.get("AllowedValues") {
                if !allowed.iter().filter_map(scalar_text).any(|a| a == text) {
                    return Err(format!(
                        "parameter {name}: \"{text}\" is not one of its AllowedValues"
                    ));
                }
            }
            let kind = decl.get("Type").and_then(Value::as_str).unwrap_or("String");
            let value = if kind == "CommaDelimitedList" || kind.starts_with("List<") {
                Value::Array(text.split(',').map(|s| s.trim().into()).collect())
            } else {
                Value::String(text)
            };
            params.insert(name.clone(), value);
        }
        Ok(Resolver {
            params,
            pseudo,
            resources: section(template, "Resources")?,
            conditions: section(template, "Conditions")?,
            mappings: section(template, "Mappings")?,
            decided: BTreeMap::new(),
            deciding: Vec::new(),
            depth: 0,
            warnings: Vec::new(),
        })
    }

    pub fn pseudo(&self, name: &str) -> &str {
        self.pseudo.get(name).map(String::as_str).unwrap_or("")
    }

    /// A resource's type (`None`: no such resource).
    pub fn kind(&self, id: &str) -> Option<&'t str> {
        self.resources.get(id)?.get("Type")?.as_str()
    }

    /// Whether resource `id` exists in this conversion (its `Condition`, if any, holds).
    pub fn exists(&mut self, id: &str) -> Result<bool, String> {
        let Some(r) = self.resources.get(id) else {
            return Ok(false);
        };
        match r.get("Condition") {
            None => Ok(true),
            Some(Value::String(c)) => self.condition(c),
            Some(_) => Err(format!("resource {id}: Condition must name a condition")),
        }
    }

    /// The name a Lambda function is invoked by.
    pub fn function_name(&mut self, id: &str) -> Result<String, String> {
        let props = self.resources.get(id).and_then(|r| r.get("Properties"));
        match props.and_then(|p| p.get("FunctionName")) {
            None => Ok(id.to_string()),
            Some(v) => match self.value(v, id)? {
                Some(Value::String(s)) => Ok(s),
                _ => Err(format!("{id}: FunctionName is not a string")),
            },
        }
    }

    /// The ARN of Lambda function `id`.
    pub fn function_arn(&mut self, id: &str) -> Result<String, String> {
        let name = self.function_name(id)?;
        Ok(format!(
            "arn:{}:lambda:{}:{}:function:{name}",
            self.pseudo("AWS::Partition"),
            self.pseudo("AWS::Region"),
            self.pseudo("AWS::AccountId")
        ))
    }

    /// Evaluates condition `name` (cached; a cycle is an error).
    pub fn condition(&mut self, name: &str) -> Result<bool, String> {
        if let Some(b) = self.decided.get(name) {
            return Ok(*b);
        }
        if self.deciding.iter().any(|n| n == name) {
            return Err(format!("condition {name} refers to itself"));
        }
        let Some(def) = self.conditions.get(name) else {
            return Err(format!("no condition named {name} in Conditions"));
        };
        self.deciding.push(name.to_string());
        let r = self.value(def, &format!("condition {name}"));
        self.deciding.pop();
        let b = match r? {
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) if s == "true" || s == "false" => s == "true",
            other => return Err(format!("condition {name} is not a boolean: {other:?}")),
        };
        self.decided.insert(name.to_string(), b);
        Ok(b)
    }

    /// Resolves every intrinsic in `v`; `None` is `AWS::NoValue` (the property is
    /// absent). `at` names where `v` comes from, for errors and warnings.
    pub fn value(&mut self, v: &Value, at: &str) -> Result<Option<Value>, String> {
        if self.depth >= MAX_DEPTH {
            return Err(format!("{at}: intrinsic functions nested too deeply"));
        }
        self.depth += 1;
        let r = self.value_inner(v, at);
        self.depth -= 1;
        r
    }

    fn value_inner(&mut self, v: &Value, at: &str) -> Result<Option<Value>, String> {
        match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    if let Some(x) = self.value(i, at)? {
                        out.push(x);
                    }
                }
                Ok(Some(Value::Array(out)))
            }
            Value::Object(m) if m.len() == 1 => {
                let (k, arg) = m.iter().next().expect("one entry");
                if k == "Ref" || k == "Condition" || k.starts_with("Fn::") {
                    self.intrinsic(k, arg, at)
                } else {
                    self.object(m, at)
                }
            }
            Value::Object(m) => self.object(m, at),
            other => Ok(Some(other.clone())),
        }
    }

    fn object(&mut self, m: &Map<String, Value>, at: &str) -> Result<Option<Value>, String> {
        let mut out = Map::new();
        for (k, v) in m {
            if let Some(x) = self.value(v, at)? {
                out.insert(k.clone(), x);
            }
        }
        Ok(Some(Value::Object(out)))
    }

    /// `arg` resolved to text (numbers and booleans as CloudFormation prints them).
    fn text(&mut self, arg: &Value, at: &str, what: &str) -> Result<String, String> {
        match self.value(arg, at)? {
            Some(v) => scalar_text(&v).ok_or_else(|| format!("{at}: {what} is not a string")),
            None => Ok(String::new()),
        }
    }

    fn list(&mut self, arg: &Value, at: &str, what: &str) -> Result<Vec<Value>, String> {
        match self.value(arg, at)? {
            Some(Value::Array(a)) => Ok(a),
            _ => Err(format!("{at}: {what} is not a list")),
        }
    }

    fn args<'a>(arg: &'a Value, n: usize, at: &str, f: &str) -> Result<&'a [Value], String> {
        match arg {
            Value::Array(a) if a.len() == n => Ok(a),
            _ => Err(format!("{at}: {f} takes a list of {n} items")),
        }
    }

    fn reference(&mut self, name: &str, at: &str) -> Result<Option<Value>, String> {
        if name == "AWS::NoValue" {
            return Ok(None);
        }
        if name == "AWS::NotificationARNs" {
            return Ok(Some(Value::Array(Vec::new())));
        }
        if let Some(p) = self.pseudo.get(name) {
            return Ok(Some(Value::String(p.clone())));
        }
        if let Some(p) = self.params.get(name) {
            return Ok(Some(p.clone()));
        }
        match self.kind(name) {
            Some(k) if is_function(k) => Ok(Some(Value::String(self.function_name(name)?))),
            Some(_) => Ok(Some(Value::String(name.to_string()))),
            None => Err(format!(
                "{at}: Ref to {name}: the template has no parameter or resource named {name}"
            )),
        }
    }

    fn get_att(&mut self, res: &str, attr: &str, at: &str) -> Result<String, String> {
        let Some(kind) = self.kind(res) else {
            return Err(format!(
                "{at}: Fn::GetAtt {res}.{attr}: the template has no resource named {res}"
            ));
        };
        Ok(match (kind, attr) {
            (k, "Arn") if is_function(k) => self.function_arn(res)?,
            ("AWS::ApiGatewayV2::Api", "ApiEndpoint") => format!(
                "wss://{res}.execute-api.{}.{}",
                self.pseudo("AWS::Region"),
                self.pseudo("AWS::URLSuffix")
            ),
            ("AWS::ApiGatewayV2::Api", "ApiId") => res.to_string(),
            _ => format!("{res}.{attr}"),
        })
    }

    fn sub(&mut self, arg: &Value, at: &str) -> Result<String, String> {
        let (template, vars) = match arg {
            Value::String(s) => (s.as_str(), None),
            Value::Array(a) if a.len() == 2 => match (&a[0], &a[1]) {
                (Value::String(s), Value::Object(m)) => (s.as_str(), Some(m)),
                _ => return Err(format!("{at}: Fn::Sub takes a string or [string, map]")),
            },
            _ => return Err(format!("{at}: Fn::Sub takes a string or [string, map]")),
        };
        let mut out = String::new();
        let mut rest = template;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            if let Some(lit) = after.strip_prefix('!') {
                // `${!Literal}` writes `${Literal}`.
                out.push_str("${");
                rest = lit;
                continue;
            }
            let Some(end) = after.find('}') else {
                out.push_str(&rest[i..]);
                rest = "";
                break;
            };
            let name = after[..end].trim();
            let value = match vars.and_then(|m| m.get(name)) {
                Some(v) => self.text(v, at, &format!("Fn::Sub variable {name}"))?,
                None => match name.split_once('.') {
                    Some((r, a)) if !self.pseudo.contains_key(name) => self.get_att(r, a, at)?,
                    _ => match self.reference(name, at)? {
                        Some(v) => scalar_text(&v).ok_or_else(|| {
                            format!("{at}: Fn::Sub: ${{{name}}} is a list, not a string")
                        })?,
                        None => String::new(),
                    },
                },
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn intrinsic(&mut self, f: &str, arg: &Value, at: &str) -> Result<Option<Value>, String> {
        let s = |x: String| Ok(Some(Value::String(x)));
        match f {
            "Ref" => match arg {
                Value::String(name) => self.reference(name, at),
                _ => Err(format!("{at}: Ref takes a name")),
            },
            "Condition" => match arg {
                Value::String(name) => Ok(Some(Value::Bool(self.condition(name)?))),
                _ => Err(format!("{at}: Condition takes a name")),
            },
            "Fn::GetAtt" => {
                let (r, a) = match arg {
                    Value::Array(a) if a.len() == 2 => (
                        self.text(&a[0], at, "Fn::GetAtt's resource")?,
                        self.text(&a[1], at, "Fn::GetAtt's attribute")?,
                    ),
                    Value::String(x) => match x.split_once('.') {
                        Some((r, a)) => (r.to_string(), a.to_string()),
                        None => {
                            return Err(format!(
                                "{at}: Fn::GetAtt {x}: expected Resource.Attribute"
                            ))
                        }
                    },
                    _ => return Err(format!("{at}: Fn::GetAtt takes [resource, attribute]")),
                };
                s(self.get_att(&r, &a, at)?)
            }
            "Fn::Sub" => s(self.sub(arg, at)?),
            "Fn::Join" => {
                let a = Self::args(arg, 2, at, f)?;
                let delim = self.text(&a[0], at, "Fn::Join's delimiter")?;
                let items = self.list(&a[1], at, "Fn::Join's second item")?;
                let texts = items
                    .iter()
                    .map(|v| {
                        scalar_text(v)
                            .ok_or_else(|| format!("{at}: Fn::Join: an item is not a string"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                s(texts.join(&delim))
            }
            "Fn::Select" => {
                let a = Self::args(arg, 2, at, f)?;
                let i = self.text(&a[0], at, "Fn::Select's index")?;
                let items = self.list(&a[1], at, "Fn::Select's list")?;
                let n: usize = i
                    .parse()
                    .map_err(|_| format!("{at}: Fn::Select: index {i} is not a number"))?;
                items.get(n).cloned().map(Some).ok_or_else(|| {
                    format!(
                        "{at}: Fn::Select: index {n} is past the list's {} items",
                        items.len()
                    )
                })
            }
            "Fn::Split" => {
                let a = Self::args(arg, 2, at, f)?;
                let delim = self.text(&a[0], at, "Fn::Split's delimiter")?;
                let text = self.text(&a[1], at, "Fn::Split's text")?;
                if delim.is_empty() {
                    return Err(format!("{at}: Fn::Split: empty delimiter"));
                }
                Ok(Some(Value::Array(
                    text.split(delim.as_str()).map(|x| x.into()).collect(),
                )))
            }
            "Fn::If" => {
                let a = Self::args(arg, 3, at, f)?;
                let name = a[0]
                    .as_str()
                    .ok_or_else(|| format!("{at}: Fn::If's first item must name a condition"))?;
                let branch = if self.condition(name)? { &a[1] } else { &a[2] };
                self.value(branch, at)
            }
            "Fn::Equals" => {
                let a = Self::args(arg, 2, at, f)?;
                let x = self.value(&a[0], at)?;
                let y = self.value(&a[1], at)?;
                let norm =
                    |v: Option<Value>| v.as_ref().and_then(scalar_text).map(Value::String).or(v);
                Ok(Some(Value::Bool(norm(x) == norm(y))))
            }
            "Fn::Not" | "Fn::And" | "Fn::Or" => {
                let items = match arg {
                    Value::Array(a) if !a.is_empty() => a,
                    _ => return Err(format!("{at}: {f} takes a list of conditions")),
                };
                let mut bools = Vec::with_capacity(items.len());
                for i in items {
                    bools.push(match self.value(i, at)? {
                        Some(Value::Bool(b)) => b,
                        Some(Value::String(c)) => self.condition(&c)?,
                        _ => return Err(format!("{at}: {f}: an item is not a condition")),
                    });
                }
                Ok(Some(Value::Bool(match f {
                    "Fn::Not" => !bools[0],
                    "Fn::And" => bools.iter().all(|b| *b),
                    _ => bools.iter().any(|b| *b),
                })))
            }
            "Fn::FindInMap" => {
                let a = Self::args(arg, 3, at, f)?;
                let m = self.text(&a[0], at, "Fn::FindInMap's map")?;
                let k1 = self.text(&a[1], at, "Fn::FindInMap's first key")?;
                let k2 = self.text(&a[2], at, "Fn::FindInMap's second key")?;
                let found = self
                    .mappings
                    .get(&m)
                    .and_then(|x| x.get(&k1))
                    .and_then(|x| x.get(&k2))
                    .cloned()
                    .ok_or_else(|| format!("{at}: Fn::FindInMap: Mappings has no {m}.{k1}.{k2}"))?;
                self.value(&found, at)
            }
            "Fn::GetAZs" => {
                let region = self.pseudo("AWS::Region").to_string();
                self.warnings.push(format!(
                    "{at}: Fn::GetAZs is resolved to placeholder zones {region}a, {region}b, {region}c"
                ));
                Ok(Some(Value::Array(
                    ["a", "b", "c"]
                        .iter()
                        .map(|z| format!("{region}{z}").into())
                        .collect(),
                )))
            }
            "Fn::Length" => Ok(Some(Value::from(
                self.list(arg, at, "Fn::Length's list")?.len(),
            ))),
            "Fn::ToJsonString" => {
                let v = self.value(arg, at)?.unwrap_or(Value::Null);
                s(v.to_string())
            }
            "Fn::Base64" => {
                let t = self.text(arg, at, "Fn::Base64's text")?;
                use base64::Engine;
                s(base64::engine::general_purpose::STANDARD.encode(t))
            }
            other => {
                self.warnings.push(format!(
                    "{at}: {other} cannot be evaluated outside CloudFormation; replaced by the text \"{other}\""
                ));
                s(other.to_string())
            }
        }
    }
}
