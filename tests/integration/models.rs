//! Request validation with models (SPEC §14): valid and refused messages per route,
//! draft 4's keywords, `model_selection_expression` with `"$default"`, messages that
//! are not JSON, AWS's "Bad request body" frame byte for byte, nothing integrated when
//! refused (mock and `aws_proxy`), the metric and the access log, the disabled switch,
//! and config errors.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::backend::*;
use crate::mgmt::{call, eventually, id_of, metric_sum};
use crate::support::*;

/// Five fields with draft 4's nested features: `required`, `type`, `enum`, `pattern`,
/// `minLength`, `properties`, `items`, and a `$ref` into `#/definitions` (the unit
/// tests of `src/model` use the same file).
const JOIN: &str = include_str!("../models/join.json");

const VALID_JOIN: &str =
    r#"{"action":"join","room":"r-1","user":{"id":"abc"},"tags":["aa","bb"],"count":2}"#;

/// `[models.NAME]` with `schema` inline, as a TOML literal string.
fn model(name: &str, schema: &str) -> String {
    format!("[models.{name}]\nschema = '''{schema}'''\n\n")
}

/// A two-way mock route `key` on integration `echo` with extra lines (its model keys).
fn model_route(key: &str, extra: &str) -> String {
    format!(
        "[routes.{}]\nintegration = \"echo\"\nroute_response = true\n{extra}\n\n",
        toml_str(key)
    )
}

/// `api` extra lines go in `[api]`; routes: `join` (model `join`), `plain` (no model),
/// `whoami` (the connection id, no model), `$default` (echo, `$default_extra`).
fn config(api_extra: &str, default_extra: &str) -> String {
    let mut c = base_config("$request.body.action", "");
    if !api_extra.is_empty() {
        c = c.replacen(
            "stage = \"prod\"\n",
            &format!("stage = \"prod\"\n{api_extra}\n"),
            1,
        );
    }
    c.push_str(&mock_integration("echo", "$input.body"));
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&model("join", JOIN));
    c.push_str(&model("a", r#"{"type":"object","required":["a"]}"#));
    c.push_str(&model("b", r#"{"type":"object","required":["b"]}"#));
    c.push_str(&model_route("join", "request_model = \"join\""));
    c.push_str(&model_route("plain", ""));
    c.push_str(&route("whoami", "who"));
    c.push_str(&model_route("$default", default_extra));
    c
}

/// The frame SPEC §14 gives, byte for byte, for connection `id`; returns its messageId.
fn expect_bad_request(raw: &mut Raw, id: &str) -> String {
    let frame = raw.recv_text();
    let prefix = format!(
        "{{\"message\" : \"Bad request body\", \"connectionId\": \"{id}\", \"messageId\": \""
    );
    let message_id = frame
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix("\"}"))
        .unwrap_or_else(|| panic!("{frame:?} is not the Bad request body frame of {id}"));
    assert_id(message_id);
    let exact = format!(
        r#"{{"message" : "Bad request body", "connectionId": "{id}", "messageId": "{message_id}"}}"#
    );
    assert_eq!(frame, exact);
    message_id.to_string()
}

fn whoami(raw: &mut Raw) -> String {
    raw.send_text(r#"{"action":"whoami"}"#);
    let id = raw.recv_text();
    assert_id(&id);
    id
}

#[test]
fn a_route_with_a_model_integrates_valid_messages_and_refuses_the_others() {
    let gw = Gateway::start(&config("", ""));
    let mut raw = gw.raw();
    let id = whoami(&mut raw);
    raw.send_text(VALID_JOIN);
    assert_eq!(raw.recv_text(), VALID_JOIN);
    // Optional fields may be absent.
    let minimal = r#"{"action":"join","room":"x","user":{"id":"abc"}}"#;
    raw.send_text(minimal);
    assert_eq!(raw.recv_text(), minimal);
    let refused = [
        ("required", r#"{"action":"join","room":"r"}"#),
        ("type", r#"{"action":"join","room":7,"user":{"id":"abc"}}"#),
        (
            "enum",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"count":"2"}"#,
        ),
        (
            "pattern",
            r#"{"action":"join","room":"Room!","user":{"id":"abc"}}"#,
        ),
        (
            "minLength",
            r#"{"action":"join","room":"","user":{"id":"abc"}}"#,
        ),
        (
            "$ref minLength",
            r#"{"action":"join","room":"r","user":{"id":"ab"}}"#,
        ),
        ("$ref required", r#"{"action":"join","room":"r","user":{}}"#),
        ("$ref type", r#"{"action":"join","room":"r","user":"abc"}"#),
        (
            "items",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"tags":["aa","b"]}"#,
        ),
        (
            "items type",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"tags":[1]}"#,
        ),
        (
            "minimum",
            r#"{"action":"join","room":"r","user":{"id":"abc"},"count":-1}"#,
        ),
    ];
    let mut ids = Vec::new();
    for (what, body) in refused {
        raw.send_text(body);
        let message_id = expect_bad_request(&mut raw, &id);
        assert!(
            !ids.contains(&message_id),
            "{what}: messageId {message_id} repeated"
        );
        ids.push(message_id);
    }
    // The connection stays open and the next valid message goes through.
    raw.send_text(VALID_JOIN);
    assert_eq!(raw.recv_text(), VALID_JOIN);
    // A route without a model takes anything its key selects.
    let loose = r#"{"action":"plain","room":5}"#;
    raw.send_text(loose);
    assert_eq!(raw.recv_text(), loose);
    // The `$default` route here has no model either: not JSON goes through.
    raw.send_text("hello");
    assert_eq!(raw.recv_text(), "hello");
    // Each refusal is a client error.
    let text = call(gw.management, "GET", "/metrics", &[], b"").text();
    assert_eq!(
        metric_sum(&text, "wsgate_client_errors_total", &[]),
        refused.len() as f64
    );
}

#[test]
fn the_selection_expression_picks_a_model_and_falls_back_to_default() {
    let extra = "request_models = { \"$default\" = \"b\", a = \"a\" }\n\
                 model_selection_expression = \"$request.body.type\"";
    let gw = Gateway::start(&config("", extra));
    let mut raw = gw.raw();
    let id = whoami(&mut raw);
    let accepted = [
        r#"{"type":"a","a":1}"#,
        r#"{"type":"other","b":1}"#,
        r#"{"b":1}"#,
        r#"{"type":"a","a":1,"b":1}"#,
    ];
    for body in accepted {
        raw.send_text(body);
        assert_eq!(raw.recv_text(), body);
    }
    let refused = [
        r#"{"type":"a","b":1}"#,
        r#"{"type":"other","a":1}"#,
        r#"{"a":1}"#,
        // Not JSON, and JSON that is not an object: the "$default" model refuses them.
        "hello",
        "{\"b\":",
        "[1,2]",
        "",
    ];
    for body in refused {
        raw.send_text(body);
        expect_bad_request(&mut raw, &id);
    }
}

#[test]
fn without_a_default_model_an_unmatched_selection_is_not_validated() {
    let extra =
        "request_models = { a = \"a\" }\nmodel_selection_expression = \"${request.body.type}\"";
    let gw = Gateway::start(&config("", extra));
    let mut raw = gw.raw();
    let id = whoami(&mut raw);
    for body in [r#"{"type":"b"}"#, "not json", r#"{"type":"a","a":0}"#] {
        raw.send_text(body);
        assert_eq!(raw.recv_text(), body);
    }
    raw.send_text(r#"{"type":"a"}"#);
    expect_bad_request(&mut raw, &id);
}

#[test]
fn a_message_that_is_not_json_gets_the_frame_with_the_connection_id() {
    let gw = Gateway::start(&config("", "request_model = \"join\""));
    let mut raw = gw.raw();
    let id = whoami(&mut raw);
    for body in [
        "hello",
        "{",
        "{\"action\":\"join\"} trailing",
        "nul\u{0}l",
        "\u{feff}{}",
    ] {
        raw.send_text(body);
        expect_bad_request(&mut raw, &id);
    }
    // Nesting deeper than the parser follows is refused, not a crash.
    raw.send_text(&"[".repeat(10_000));
    expect_bad_request(&mut raw, &id);
    raw.send_text(VALID_JOIN);
    assert_eq!(raw.recv_text(), VALID_JOIN);
}

#[test]
fn the_disabled_switch_integrates_every_message() {
    let gw = Gateway::start(&config(
        "disable_schema_validation = true",
        "request_model = \"join\"",
    ));
    let mut raw = gw.raw();
    for body in [r#"{"action":"join","room":""}"#, "not json", VALID_JOIN] {
        raw.send_text(body);
        assert_eq!(raw.recv_text(), body);
    }
}

#[test]
fn a_refused_message_never_reaches_the_backend_and_is_in_the_access_log() {
    let backend = Backend::echo_message();
    let log = temp_dir().join("access.log");
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/ws"), ""));
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&model("join", JOIN));
    c.push_str(&route("$default", "who"));
    c.push_str(
        "[routes.join]\nintegration = \"backend\"\nroute_response = true\nrequest_model = \"join\"\n\n",
    );
    c.push_str(&format!(
        "[access_log]\npath = {}\nformat = {}\n",
        toml_str(&log.display().to_string()),
        toml_str(r#"{"status":"$context.status","error":"$context.error.message","type":"$context.error.responseType","messageId":"$context.messageId","routeKey":"$context.routeKey","why":"$context.error.validationErrorString"}"#)
    ));
    let gw = Gateway::start(&c);
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    raw.send_text(r#"{"action":"join","room":"r"}"#);
    let message_id = expect_bad_request(&mut raw, &id);
    raw.send_text(VALID_JOIN);
    assert_eq!(raw.recv_text(), VALID_JOIN);
    // Only the valid message was integrated.
    let requests = backend.wait_requests(1);
    assert_eq!(requests[0].message().as_deref(), Some(VALID_JOIN));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(backend.requests().len(), 1);
    // The access log names the refusal.
    let line = eventually(
        "the refused message's access-log line",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["status"] == "400")
        },
    );
    assert_eq!(line["error"], "Bad request body");
    assert_eq!(line["type"], "BAD_REQUEST_BODY");
    assert_eq!(line["messageId"], message_id.as_str());
    assert_eq!(line["routeKey"], "join");
    // AWS's validationErrorString: the reason, without the message's values.
    let why = line["why"].as_str().unwrap();
    assert!(
        why.starts_with("model \"join\": ") && why.contains("user"),
        "{why}"
    );
}

#[test]
fn an_invalid_schema_is_a_config_error_naming_the_model() {
    let mut c = config("", "");
    c.push_str(&model("broken", r#"{"type":"objekt"}"#));
    let exit = run_to_exit(&c, &[]);
    assert_eq!(exit.status.code(), Some(1), "{exit:?}");
    assert!(
        exit.stderr.contains("models.broken.schema"),
        "{}",
        exit.stderr
    );
    assert!(exit.stderr.contains("draft 4"), "{}", exit.stderr);
    let exit = run_to_exit(&c, &["--check"]);
    assert_eq!(exit.status.code(), Some(1), "{exit:?}");
    assert!(
        exit.stderr.contains("models.broken.schema"),
        "{}",
        exit.stderr
    );
}

#[test]
fn route_model_mistakes_are_config_errors_naming_the_route() {
    let cases = [
        (
            "request_model = \"nope\"",
            "routes.\"$default\".request_model",
            "no model named \"nope\"",
        ),
        (
            "request_model = \"a\"\nrequest_models = { \"$default\" = \"b\" }",
            "routes.\"$default\".request_models",
            "not both",
        ),
        (
            "request_models = { x = \"a\" }",
            "routes.\"$default\".model_selection_expression",
            "needs a model_selection_expression",
        ),
        ("request_modle = \"a\"", "", "request_modle"),
    ];
    for (extra, key, problem) in cases {
        let exit = run_to_exit(&config("", extra), &["--check"]);
        assert_eq!(exit.status.code(), Some(1), "{extra}: {exit:?}");
        assert!(exit.stderr.contains(key), "{extra}: {}", exit.stderr);
        assert!(exit.stderr.contains(problem), "{extra}: {}", exit.stderr);
    }
}

#[test]
fn a_schema_file_is_read_relative_to_the_config_file() {
    let dir = temp_dir();
    std::fs::create_dir_all(dir.join("models")).unwrap();
    std::fs::write(dir.join("models/join.json"), JOIN).unwrap();
    let c = config("", "").replace(
        &model("join", JOIN),
        "[models.join]\nschema = \"models/join.json\"\n\n",
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, &c).unwrap();
    let exit = run_path_to_exit(&path, &["--check"]);
    assert_eq!(exit.status.code(), Some(0), "{exit:?}");
    // `--check` lists what validates each route.
    assert!(
        exit.stdout.contains("route join             model join\n"),
        "{}",
        exit.stdout
    );
    std::fs::remove_file(dir.join("models/join.json")).unwrap();
    let exit = run_path_to_exit(&path, &["--check"]);
    assert_eq!(exit.status.code(), Some(1), "{exit:?}");
    assert!(
        exit.stderr.contains("models.join.schema"),
        "{}",
        exit.stderr
    );
    assert!(exit
        .stderr
        .contains(&Path::new("models/join.json").display().to_string()));
    let _ = std::fs::remove_dir_all(&dir);
}
