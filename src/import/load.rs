//! Reading a template: YAML (with CloudFormation's short intrinsic tags) or JSON,
//! both into one JSON tree in which every intrinsic has its long form
//! (`!Sub x` → `{"Fn::Sub": x}`, `!Ref x` → `{"Ref": x}`,
//! `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`), so the rest of the import sees
//! one shape whatever the file's syntax.

use serde_json::{Map, Number, Value};

/// Parses `text` as JSON when it starts with `{`, else as YAML. Errors name the
/// problem and, where the parser knows it, the line.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"));
    }
    let yaml: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| format!("malformed YAML: {e}"))?;
    from_yaml(yaml)
}

/// The long form of a short tag's name (`Sub` → `Fn::Sub`; `Ref` and `Condition`
/// keep theirs).
fn long_name(tag: &str) -> String {
    match tag {
        "Ref" | "Condition" => tag.to_string(),
        t => format!("Fn::{t}"),
    }
}

fn from_yaml(v: serde_norway::Value) -> Result<Value, String> {
    use serde_norway::Value as Y;
    Ok(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => number(&n),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(from_yaml)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s,
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => return Err(format!("a mapping key must be a scalar, not {other:?}")),
                };
                out.insert(key, from_yaml(v)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            let tag = t.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let inner = from_yaml(t.value)?;
            let inner = match (tag, inner) {
                // `!GetAtt Resource.Attribute` (the attribute may itself hold dots).
                ("GetAtt", Value::String(s)) => match s.split_once('.') {
                    Some((r, a)) => Value::Array(vec![r.into(), a.into()]),
                    None => {
                        return Err(format!(
                            "!GetAtt {s}: expected Resource.Attribute (e.g. MyFunction.Arn)"
                        ))
                    }
                },
                (_, inner) => inner,
            };
            let mut m = Map::new();
            m.insert(long_name(tag), inner);
            Value::Object(m)
        }
    })
}

fn number(n: &serde_norway::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Number(i.into())
    } else if let Some(u) = n.as_u64() {
        Value::Number(u.into())
    } else {
        n.as_f64()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(n.to_string()))
    }
}
