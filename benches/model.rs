//! Request validation (SPEC §14): what a route with a model adds per message (issue
//! 11's goal: ≤ 1.5 µs for a typical 5-field schema). `valid` is the common case
//! (parse + schema walk); `invalid` also builds the logged reason; `selected` adds
//! `model_selection_expression`; `parse_only` is serde_json's share of the cost.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use wsgate::model::{Models, RawModel, RawRoute};
use wsgate::route::Selector;

/// Five fields, as a chat's `sendmessage` model would have them.
const SCHEMA: &str = r#"{
  "$schema": "http://json-schema.org/draft-04/schema#",
  "type": "object",
  "required": ["action", "room", "user", "text"],
  "properties": {
    "action": { "type": "string", "enum": ["sendmessage"] },
    "room": { "type": "string", "pattern": "^[a-z0-9-]{1,32}$" },
    "user": { "type": "string", "minLength": 3, "maxLength": 64 },
    "text": { "type": "string", "maxLength": 1000 },
    "ts": { "type": "integer", "minimum": 0 }
  }
}"#;

const VALID: &[u8] = br#"{"action":"sendmessage","room":"lobby-1","user":"alice","text":"hello everyone, how are you today?","ts":1795508102123}"#;
const INVALID: &[u8] = br#"{"action":"sendmessage","room":"Lobby 1","user":"al","text":"hello everyone, how are you today?","ts":-1}"#;

fn models() -> Models {
    let raw: BTreeMap<String, RawModel> = [(
        "send".to_string(),
        RawModel {
            schema: SCHEMA.into(),
        },
    )]
    .into();
    let fixed = RawRoute {
        request_model: Some("send".into()),
        ..RawRoute::default()
    };
    let selected = RawRoute {
        request_models: Some([("sendmessage".to_string(), "send".to_string())].into()),
        model_selection_expression: Some("$request.body.action".into()),
        ..RawRoute::default()
    };
    Models::build(
        Path::new("."),
        raw,
        vec![
            ("send", fixed),
            ("$default", selected),
            ("plain", RawRoute::default()),
        ],
        false,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let m = models();
    let mut selector = Selector::new();
    assert!(m.check(0, VALID, &mut selector).is_ok());
    assert!(m.check(0, INVALID, &mut selector).is_err());
    let mut g = c.benchmark_group("model/5_fields");
    g.throughput(Throughput::Elements(1));
    g.bench_function("valid", |b| {
        b.iter(|| black_box(m.check(0, black_box(VALID), &mut selector).is_ok()))
    });
    g.bench_function("invalid", |b| {
        b.iter(|| black_box(m.check(0, black_box(INVALID), &mut selector).is_err()))
    });
    g.bench_function("selected_valid", |b| {
        b.iter(|| black_box(m.check(1, black_box(VALID), &mut selector).is_ok()))
    });
    g.bench_function("route_without_model", |b| {
        b.iter(|| black_box(m.check(2, black_box(VALID), &mut selector).is_ok()))
    });
    g.bench_function("parse_only", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde_json::Value>(black_box(VALID)).is_ok()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
