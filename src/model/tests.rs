use super::*;

/// Five fields with draft 4's nested features (`required`, `type`, `enum`, `pattern`,
/// `minLength`, `properties`, `items`, a `$ref` into `#/definitions`); the
/// integration tests use the same file.
const JOIN: &str = include_str!("../../tests/models/join.json");

fn models(schemas: &[(&str, &str)], routes: Vec<(&str, RawRoute)>) -> Result<Models, BuildError> {
    let raw = schemas
        .iter()
        .map(|(n, s)| {
            (
                n.to_string(),
                RawModel {
                    schema: s.to_string(),
                },
            )
        })
        .collect();
    Models::build(Path::new("."), raw, routes, false)
}

fn fixed(name: &str) -> RawRoute {
    RawRoute {
        request_model: Some(name.into()),
        ..RawRoute::default()
    }
}

fn check(m: &Models, route: usize, body: &str) -> Result<(), Invalid> {
    m.check(route, body.as_bytes(), &mut Selector::new())
}

#[test]
fn draft4_features_accept_and_refuse() {
    let m = models(&[("join", JOIN)], vec![("join", fixed("join"))]).unwrap();
    let ok = r#"{"action":"join","room":"r-1","user":{"id":"abc"},"tags":["aa"],"count":3}"#;
    assert_eq!(check(&m, 0, ok), Ok(()));
    assert_eq!(
        check(&m, 0, r#"{"action":"join","room":"r","user":{"id":"abc"}}"#),
        Ok(())
    );
    let refused = [
        ("required", r#"{"action":"join","room":"r"}"#),
        ("type", r#"{"action":"join","room":5,"user":{"id":"abc"}}"#),
        (
            "enum",
            r#"{"action":"leave","room":"r","user":{"id":"abc"}}"#,
        ),
        (
            "pattern",
            r#"{"action":"join","room":"R!","user":{"id":"abc"}}"#,
        ),
        (
            "minLength",
            r#"{"action":"join","room":"","user":{"id":"abc"}}"#,
        ),
        ("$ref", r#"{"action":"join","room":"r","user":{"id":"ab"}}"#),
        ("$ref required", r#"{"action":"join","room":"r","user":{}}"#),
        (
            "items",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"tags":["a"]}"#,
        ),
        (
            "integer",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"count":1.5}"#,
        ),
        (
            "minimum",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"count":-1}"#,
        ),
        ("not an object", r#"["join"]"#),
    ];
    for (what, body) in refused {
        let e = check(&m, 0, body).expect_err(what);
        assert!(e.reason.starts_with("model \"join\": "), "{what}: {e}");
    }
}

#[test]
fn a_message_that_is_not_json_is_refused() {
    let m = models(&[("join", JOIN)], vec![("join", fixed("join"))]).unwrap();
    for body in ["", "hello", "{\"action\":", "{} x", "\u{feff}{}"] {
        let e = check(&m, 0, body).expect_err(body);
        assert!(e.reason.contains("not JSON"), "{body:?}: {e}");
    }
    // Deep nesting is refused by the parser, not by a stack overflow.
    let deep = "[".repeat(100_000);
    assert!(check(&m, 0, &deep).is_err());
}

#[test]
fn the_reason_is_short_and_names_no_value() {
    let m = models(&[("join", JOIN)], vec![("join", fixed("join"))]).unwrap();
    let secret = "s3cr3t-value-".repeat(50);
    let body = format!(r#"{{"action":"join","room":"{secret}!","user":{{"id":"abc"}}}}"#);
    let e = check(&m, 0, &body).unwrap_err();
    assert!(!e.reason.contains("s3cr3t"), "{e}");
    assert!(e.reason.contains("/room"), "{e}");
    assert!(e.reason.len() <= MAX_REASON_BYTES + 3, "{e}");
}

#[test]
fn routes_without_a_model_are_not_checked() {
    let m = models(
        &[("join", JOIN)],
        vec![("a", RawRoute::default()), ("join", fixed("join"))],
    )
    .unwrap();
    assert!(m.is_active());
    assert_eq!(check(&m, 0, "not json"), Ok(()));
    assert_eq!(check(&m, 7, "not json"), Ok(()));
    assert!(check(&m, 1, "not json").is_err());
    assert_eq!(m.describe(0), None);
    assert_eq!(m.describe(1).as_deref(), Some("join"));
    // Models that no route uses make nothing active.
    let m = models(&[("join", JOIN)], vec![("a", RawRoute::default())]).unwrap();
    assert!(!m.is_active());
}

#[test]
fn the_selection_expression_picks_the_model_and_falls_back_to_default() {
    let a = r#"{"type":"object","required":["a"]}"#;
    let b = r#"{"type":"object","required":["b"]}"#;
    let route = |default: bool| RawRoute {
        request_models: Some(
            [("a", "ma"), ("$default", "mb")]
                .into_iter()
                .filter(|(k, _)| default || *k != "$default")
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        model_selection_expression: Some("$request.body.type".into()),
        ..RawRoute::default()
    };
    let m = models(
        &[("ma", a), ("mb", b)],
        vec![("x", route(true)), ("y", route(false))],
    )
    .unwrap();
    assert_eq!(
        m.describe(0).as_deref(),
        Some("by $request.body.type {a=ma, $default=mb}")
    );
    assert_eq!(check(&m, 0, r#"{"type":"a","a":1}"#), Ok(()));
    assert!(check(&m, 0, r#"{"type":"a","b":1}"#)
        .unwrap_err()
        .reason
        .contains("\"ma\""));
    // No key matches: "$default".
    assert_eq!(check(&m, 0, r#"{"type":"zzz","b":1}"#), Ok(()));
    assert!(check(&m, 0, r#"{"type":"zzz","a":1}"#)
        .unwrap_err()
        .reason
        .contains("\"mb\""));
    assert!(check(&m, 0, r#"{"a":1}"#).is_err());
    // Not JSON: "$default", which refuses it.
    assert!(check(&m, 0, "nope")
        .unwrap_err()
        .reason
        .contains("not JSON"));
    // No "$default" and no match: not validated, as AWS.
    assert_eq!(check(&m, 1, r#"{"type":"zzz"}"#), Ok(()));
    assert_eq!(check(&m, 1, "nope"), Ok(()));
    assert!(check(&m, 1, r#"{"type":"a"}"#).is_err());
}

#[test]
fn request_models_with_only_default_needs_no_expression() {
    let route = RawRoute {
        request_models: Some([("$default".to_string(), "join".to_string())].into()),
        ..RawRoute::default()
    };
    let m = models(&[("join", JOIN)], vec![("join", route)]).unwrap();
    assert_eq!(m.describe(0).as_deref(), Some("join"));
    assert!(check(&m, 0, "{}").is_err());
}

#[test]
fn the_disabled_switch_keeps_checking_the_config_but_validates_nothing() {
    let raw = [(
        "join".to_string(),
        RawModel {
            schema: JOIN.into(),
        },
    )]
    .into();
    let m = Models::build(Path::new("."), raw, vec![("join", fixed("join"))], true).unwrap();
    assert!(!m.is_active());
    assert_eq!(check(&m, 0, "not json"), Ok(()));
    let raw = [(
        "join".to_string(),
        RawModel {
            schema: "{\"type\": 5}".into(),
        },
    )]
    .into();
    assert!(Models::build(Path::new("."), raw, vec![], true).is_err());
}

#[test]
fn config_errors_name_the_key_and_the_problem() {
    let err = |schemas: &[(&str, &str)], route: RawRoute| {
        models(schemas, vec![("r", route)]).unwrap_err()
    };
    let e = err(&[("bad", r#"{"type": "nope"}"#)], RawRoute::default());
    assert_eq!(e.key, "models.bad.schema");
    assert!(
        e.problem.contains("not a valid JSON Schema draft 4"),
        "{}",
        e.problem
    );
    let e = err(&[("bad", r#"{"type": "#)], RawRoute::default());
    assert!(e.problem.contains("not JSON"), "{}", e.problem);
    let e = err(&[("bad", r#"{"pattern": "("}"#)], RawRoute::default());
    assert_eq!(e.key, "models.bad.schema");
    // Look-around needs a backtracking engine: refused, so matching stays linear.
    let e = err(
        &[("bad", r#"{"properties": {"a": {"pattern": "^(?=x)x+$"}}}"#)],
        RawRoute::default(),
    );
    assert_eq!(e.key, "models.bad.schema", "{}", e.problem);
    assert!(e.problem.contains("look-around"), "{}", e.problem);
    let e = err(
        &[("bad", r#"{"patternProperties": {"(a)\\1": {}}}"#)],
        RawRoute::default(),
    );
    assert_eq!(e.key, "models.bad.schema", "{}", e.problem);
    let e = err(
        &[("bad", r##"{"$ref": "#/definitions/missing"}"##)],
        RawRoute::default(),
    );
    assert_eq!(e.key, "models.bad.schema", "{}", e.problem);
    let e = err(
        &[("bad", r#"{"$ref": "http://example.com/s.json"}"#)],
        RawRoute::default(),
    );
    assert_eq!(e.key, "models.bad.schema", "{}", e.problem);
    let e = err(&[("bad", "missing-file.json")], RawRoute::default());
    assert!(e.problem.contains("cannot read"), "{}", e.problem);
    let e = err(&[("bad", "")], RawRoute::default());
    assert!(e.problem.contains("needs a JSON Schema"), "{}", e.problem);

    let e = err(&[], fixed("nope"));
    assert_eq!(e.key, "routes.\"r\".request_model");
    assert!(
        e.problem.contains("no model named \"nope\""),
        "{}",
        e.problem
    );
    let both = RawRoute {
        request_model: Some("m".into()),
        request_models: Some(BTreeMap::new()),
        ..RawRoute::default()
    };
    let e = err(&[("m", "{}")], both);
    assert_eq!(e.key, "routes.\"r\".request_models");
    assert!(e.problem.contains("not both"), "{}", e.problem);
    let no_expr = RawRoute {
        request_models: Some([("a".to_string(), "m".to_string())].into()),
        ..RawRoute::default()
    };
    let e = err(&[("m", "{}")], no_expr);
    assert_eq!(e.key, "routes.\"r\".model_selection_expression");
    let lone_expr = RawRoute {
        model_selection_expression: Some("$request.body.t".into()),
        ..RawRoute::default()
    };
    assert!(err(&[], lone_expr).problem.contains("request_models"));
    let e = models(&[("m", "{}")], vec![("$connect", fixed("m"))]).unwrap_err();
    assert!(e.problem.contains("$connect"), "{}", e.problem);
}

#[test]
fn schema_files_are_read_relative_to_the_folder() {
    let dir = std::env::temp_dir().join(format!("wsgate-model-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(dir.join("models/join.json"), JOIN).unwrap();
    let raw = [(
        "join".to_string(),
        RawModel {
            schema: "models/join.json".into(),
        },
    )]
    .into();
    let m = Models::build(&dir, raw, vec![("join", fixed("join"))], false).unwrap();
    assert!(check(&m, 0, "{}").is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_request_frame_is_byte_exact() {
    let mut out = Vec::new();
    bad_request_frame(&mut out, b"AAAAAAAAAAAAAAA=", b"BBBBBBBBBBBBBBB=");
    let want = br#"{"message" : "Bad request body", "connectionId": "AAAAAAAAAAAAAAA=", "messageId": "BBBBBBBBBBBBBBB="}"#;
    assert_eq!(out[0], 0x81);
    assert_eq!(out[1] as usize, want.len());
    assert_eq!(&out[2..], &want[..]);
}
