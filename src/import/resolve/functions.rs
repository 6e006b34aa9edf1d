//! The intrinsic functions themselves: `Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`,
//! `Fn::Select`, `Fn::Split`, `Fn::If` and the condition functions, `Fn::FindInMap`,
//! and the few others a template may use; each is evaluated with its arguments
//! resolved first.
//!
//! Each function's result counts against the conversion's byte budget
//! ([`super::MAX_BYTES`]), and a text longer than [`MAX_TEXT`] is an error, so
//! no template makes the import's work or memory outgrow it.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{is_function, scalar_text, Resolver, MAX_TEXT};

/// About how many bytes `v` takes (what copying it costs).
fn weight(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(weight).sum::<usize>() + a.len(),
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + weight(v)).sum::<usize>() + m.len(),
        _ => 1,
    }
}

fn too_long(at: &str, f: &str) -> String {
    format!("{at}: {f}: the resolved text is longer than {MAX_TEXT} bytes")
}

/// Appends `s` to a `Fn::Sub`'s text, refusing a text over [`MAX_TEXT`].
fn push_capped(out: &mut String, s: &str, at: &str) -> Result<(), String> {
    if out.len() + s.len() > MAX_TEXT {
        return Err(too_long(at, "Fn::Sub"));
    }
    out.push_str(s);
    Ok(())
}

impl Resolver<'_> {
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

    pub(super) fn reference(&mut self, name: &str, at: &str) -> Result<Option<Value>, String> {
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
        // Scanning the text is work too: counted like the text produced.
        self.spend(template.len(), at)?;
        // Each variable is evaluated once, however often the text names it.
        let mut done: BTreeMap<&str, String> = BTreeMap::new();
        let mut out = String::new();
        let mut rest = template;
        while let Some(i) = rest.find("${") {
            push_capped(&mut out, &rest[..i], at)?;
            let after = &rest[i + 2..];
            if let Some(lit) = after.strip_prefix('!') {
                // `${!Literal}` writes `${Literal}`.
                push_capped(&mut out, "${", at)?;
                rest = lit;
                continue;
            }
            let Some(end) = after.find('}') else {
                push_capped(&mut out, &rest[i..], at)?;
                rest = "";
                break;
            };
            let name = after[..end].trim();
            let value = match vars.and_then(|m| m.get_key_value(name)) {
                Some((k, _)) if done.contains_key(k.as_str()) => done[k.as_str()].clone(),
                Some((k, v)) => {
                    let t = self.text(v, at, &format!("Fn::Sub variable {name}"))?;
                    done.insert(k.as_str(), t.clone());
                    t
                }
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
            push_capped(&mut out, &value, at)?;
            rest = &after[end + 1..];
        }
        push_capped(&mut out, rest, at)?;
        Ok(out)
    }

    /// Evaluates intrinsic function `f`; its result counts against the byte
    /// budget, and a text result may be at most [`MAX_TEXT`] bytes.
    pub(super) fn intrinsic(
        &mut self,
        f: &str,
        arg: &Value,
        at: &str,
    ) -> Result<Option<Value>, String> {
        let r = self.evaluate(f, arg, at)?;
        if let Some(v) = &r {
            if matches!(v, Value::String(t) if t.len() > MAX_TEXT) {
                return Err(too_long(at, f));
            }
            self.spend(weight(v), at)?;
        }
        Ok(r)
    }

    fn evaluate(&mut self, f: &str, arg: &Value, at: &str) -> Result<Option<Value>, String> {
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
                let len = texts.iter().map(String::len).sum::<usize>()
                    + delim.len().saturating_mul(texts.len().saturating_sub(1));
                if len > MAX_TEXT {
                    return Err(too_long(at, f));
                }
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
                self.warn(at, format!(
                    "{at}: Fn::GetAZs is resolved to placeholder zones {region}a, {region}b, {region}c"
                ))?;
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
                if weight(&v) > MAX_TEXT {
                    return Err(too_long(at, f));
                }
                s(v.to_string())
            }
            "Fn::Base64" => {
                let t = self.text(arg, at, "Fn::Base64's text")?;
                use base64::Engine;
                s(base64::engine::general_purpose::STANDARD.encode(t))
            }
            other => {
                self.warn(at, format!(
                    "{at}: {other} cannot be evaluated outside CloudFormation; replaced by the text \"{other}\""
                ))?;
                s(other.to_string())
            }
        }
    }
}
