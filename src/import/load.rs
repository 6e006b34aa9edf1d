//! Reading a template: YAML (with CloudFormation's short intrinsic tags) or JSON,
//! both into one JSON tree in which every intrinsic has its long form
//! (`!Sub x` → `{"Fn::Sub": x}`, `!Ref x` → `{"Ref": x}`,
//! `!GetAtt A.B` → `{"Fn::GetAtt": ["A", "B"]}`), so the rest of the import sees
//! one shape whatever the file's syntax.

use std::cell::Cell;
use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor,
};
use serde_json::{Map, Number, Value};

/// Parses `text` as JSON when it starts with `{`, else as YAML. Errors name the
/// problem and, where the parser knows it, the line.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text).map_err(|e| format!("malformed JSON: {e}"));
    }
    let budget = Cell::new(MAX_EXPANDED_BYTES);
    let de = serde_norway::Deserializer::from_str(text);
    Node(&budget)
        .deserialize(de)
        .map_err(|e| format!("malformed YAML: {e}"))
}

/// What a YAML template may expand to. An alias replays its anchor's whole subtree,
/// and the YAML reader bounds how many events are replayed, not their bytes: one
/// anchored 1 MiB string named 100,000 times is a 1.4 MB file and 100 GiB of tree.
/// Each string counts its bytes, every node 16 more.
pub const MAX_EXPANDED_BYTES: usize = 64 << 20;

/// The long form of a short tag's name (`Sub` → `Fn::Sub`; `Ref` and `Condition`
/// keep theirs).
fn long_name(tag: &str) -> String {
    match tag {
        "Ref" | "Condition" => tag.to_string(),
        t => format!("Fn::{t}"),
    }
}

/// A short tag's node in its long form: `{"Fn::Sub": inner}`.
fn tagged(tag: &str, inner: Value) -> Result<Value, String> {
    let tag = tag.trim_start_matches('!');
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
    Ok(Value::Object(m))
}

/// Builds the JSON tree straight from the YAML reader's events, charging every node
/// to the budget (so aliases cannot expand past [`MAX_EXPANDED_BYTES`]). A tagged
/// node arrives as an enum whose variant is the tag.
#[derive(Clone, Copy)]
struct Node<'b>(&'b Cell<usize>);

impl Node<'_> {
    fn charge<E: de::Error>(self, bytes: usize) -> Result<(), E> {
        let left = self.0.get().checked_sub(bytes.saturating_add(16));
        let left = left.ok_or_else(|| {
            E::custom(format!(
                "the template expands to more than {} MiB (YAML aliases?)",
                MAX_EXPANDED_BYTES >> 20
            ))
        })?;
        self.0.set(left);
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML node")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(i.into()))
    }

    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(u.into()))
    }

    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Value, E> {
        self.charge(0)?;
        let n = serde_norway::Number::from(f);
        Ok(Number::from_f64(f).map_or_else(|| Value::String(n.to_string()), Value::Number))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.charge(s.len())?;
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        self.charge(s.len())?;
        Ok(Value::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(self)? {
            let key = match k {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    let e = format!("a mapping key must be a scalar, not {other}");
                    return Err(de::Error::custom(e));
                }
            };
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate mapping key {key:?}")));
            }
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        let (tag, variant): (String, _) = data.variant()?;
        self.charge(tag.len())?;
        let inner = variant.newtype_variant_seed(self)?;
        tagged(&tag, inner).map_err(de::Error::custom)
    }
}
