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

/// The longest text an intrinsic function may produce (64 KiB): far above any
/// name, URI or schema a WebSocket API holds, and what stops a chain of
/// `!Sub "${Prev}${Prev}"` doubling to gigabytes.
pub const MAX_TEXT: usize = 64 * 1024;

/// The most evaluations ([`Resolver::value`] calls) one conversion may take.
/// Each node of the template is evaluated about once (function names and
/// conditions are memoized, a `Fn::Sub`'s variables are evaluated once per
/// `Fn::Sub`), so a real template takes a few thousand; the budget stops what
/// still fans out (a mapping entry looking up the previous one twice) before
/// the work outgrows the template.
pub const MAX_STEPS: usize = 1 << 20;

/// The most bytes the intrinsic functions of one conversion may produce in all
/// (their results, the `Fn::Sub` texts they scan, warnings): copies a `Ref` or
/// `Fn::FindInMap` makes of a large value are bounded as the steps are.
pub const MAX_BYTES: usize = 64 << 20;

mod functions;

pub struct Resolver<'t> {
    params: BTreeMap<String, Value>,
    pseudo: BTreeMap<String, String>,
    resources: &'t Map<String, Value>,
    conditions: &'t Map<String, Value>,
    mappings: &'t Map<String, Value>,
    decided: BTreeMap<String, bool>,
    deciding: Vec<String>,
    /// Lambda functions' names, by logical id, once evaluated.
    names: BTreeMap<String, String>,
    depth: usize,
    /// Evaluations so far, up to [`MAX_STEPS`].
    steps: usize,
    /// Bytes produced so far, up to [`MAX_BYTES`].
    bytes: usize,
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
            names: BTreeMap::new(),
            depth: 0,
            steps: 0,
            bytes: 0,
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

    /// The name a Lambda function is invoked by, evaluated once per function
    /// (every `Ref` and `Fn::GetAtt .Arn` to it takes the stored name).
    pub fn function_name(&mut self, id: &str) -> Result<String, String> {
        if let Some(name) = self.names.get(id) {
            return Ok(name.clone());
        }
        let props = self.resources.get(id).and_then(|r| r.get("Properties"));
        let name = match props.and_then(|p| p.get("FunctionName")) {
            None => id.to_string(),
            Some(v) => match self.value(v, id)? {
                Some(Value::String(s)) => s,
                _ => return Err(format!("{id}: FunctionName is not a string")),
            },
        };
        self.names.insert(id.to_string(), name.clone());
        Ok(name)
    }

    /// Evaluations ([`Resolver::value`] calls) so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Counts `n` bytes produced at `at` against [`MAX_BYTES`].
    fn spend(&mut self, n: usize, at: &str) -> Result<(), String> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_BYTES {
            return Err(format!(
                "{at}: intrinsic functions produce more than {MAX_BYTES} bytes (a Ref, Fn::Sub or Fn::FindInMap fans out); refused"
            ));
        }
        Ok(())
    }

    /// Adds a warning line, counted against [`MAX_BYTES`] (one per evaluation).
    fn warn(&mut self, at: &str, line: String) -> Result<(), String> {
        self.spend(line.len(), at)?;
        self.warnings.push(line);
        Ok(())
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
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(format!(
                "{at}: intrinsic functions take more than {MAX_STEPS} evaluation steps (a Ref, Fn::Sub or Fn::FindInMap fans out); refused"
            ));
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
}
