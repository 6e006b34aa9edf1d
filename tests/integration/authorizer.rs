//! SPEC §11: a REQUEST authorizer on `$connect`. One loopback backend answers both
//! the authorizer (`/auth`, by the `token` query parameter) and the route events
//! (`/ws`): missing identity sources (401, no call), Allow, Deny (403),
//! `"Unauthorized"` (401), errors (500: unreachable, timeout, over 8 KB, malformed),
//! wildcard resources, the context on every later event, in a mapping and in a mock
//! template, a Lambda authorizer, and the `cache_ttl` cache.

use std::time::Duration;

use serde_json::{json, Value};

use crate::backend::*;
use crate::lambda;
use crate::support::*;

const ARN: &str = "arn:aws:execute-api:local:000000000000:test/prod/$connect";

/// A policy document with one statement.
fn policy(effect: &str, resource: &str, context: Value) -> Value {
    json!({
        "principalId": "user-1",
        "policyDocument": {"Version": "2012-10-17", "Statement": [
            {"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}
        ]},
        "context": context
    })
}

/// The authorizer's answer for `token`.
fn authorize(token: &str) -> Reply {
    let ctx = json!({"user": "alice", "n": 42, "admin": true});
    match token {
        "allow" => Reply::json(200, &policy("Allow", ARN, ctx)),
        "wild" => Reply::json(
            200,
            &policy("Allow", "arn:aws:execute-api:*:*:test/*/$conn?ct", ctx),
        ),
        "other" => Reply::json(
            200,
            &policy("Allow", "arn:aws:execute-api:*:*:other/*", ctx),
        ),
        "deny" => Reply::json(200, &policy("Deny", ARN, ctx)),
        "unauthorized" => Reply::ok("\"Unauthorized\""),
        "malformed" => Reply::ok("{not json"),
        "nested" => Reply::json(200, &policy("Allow", ARN, json!({"o": {"a": 1}}))),
        "big" => Reply::json(200, &policy("Allow", ARN, json!({"pad": "x".repeat(9000)}))),
        "slow" => Reply::hang(),
        _ => Reply::new(500, "boom"),
    }
}

/// Authorizer on `/auth`, events on `/ws` (MESSAGE echoed).
fn backend() -> Backend {
    Backend::start(|r| {
        if r.path().starts_with("/auth") {
            let ev = r.event();
            let token = ev["queryStringParameters"]["token"].as_str().unwrap_or("");
            return authorize(token);
        }
        match r.event_type() {
            Some("MESSAGE") => Reply::ok(r.message().unwrap()),
            _ => Reply::empty(),
        }
    })
}

/// `$connect`/`$disconnect`/`$default` on `/ws`, authorizer `auth` at `auth_uri`
/// with `extra` lines, one worker (the cache is per worker).
fn config(auth_uri: &str, extra: &str, events: &str) -> String {
    let mut c = api_config("$request.body.action", None, "")
        .replace("[server]\n", "[server]\nworkers = 1\n");
    c.push_str(&format!(
        "[authorizers.auth]\ntype = \"request\"\nuri = {}\n\
         identity_sources = [\"route.request.querystring.token\", \"route.request.header.Host\"]\n\
         timeout = \"500ms\"\n{extra}\n\n",
        toml_str(auth_uri)
    ));
    c.push_str(&aws_integration("backend", events, ""));
    c.push_str("[routes.\"$connect\"]\nintegration = \"backend\"\nauthorizer = \"auth\"\n\n");
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "backend"));
    c
}

fn gateway(b: &Backend, extra: &str) -> Gateway {
    Gateway::start(&config(&b.url("/auth"), extra, &b.url("/ws")))
}

/// Upgrades with `?token=`; the status and body.
fn try_connect(gw: &Gateway, token: Option<&str>) -> (u16, String) {
    let target = match token {
        Some(t) => format!("/prod?token={t}"),
        None => "/prod".to_string(),
    };
    let (mut s, resp) = upgrade(gw.listen, &target, &ws_headers("127.0.0.1"));
    if resp.status == 101 {
        return (101, String::new());
    }
    let body = read_body(&mut s, &resp);
    (resp.status, String::from_utf8(body).unwrap())
}

/// Route events of `kind` (the authorizer's event has a CONNECT context too).
fn route_events(b: &Backend, kind: &str) -> Vec<Request> {
    b.requests()
        .into_iter()
        .filter(|r| r.path().starts_with("/ws") && r.event_type() == Some(kind))
        .collect()
}

fn wait_route_event(b: &Backend, kind: &str) -> Request {
    b.wait_for(kind, |r| {
        r.path().starts_with("/ws") && r.event_type() == Some(kind)
    })
}

fn auth_calls(b: &Backend) -> usize {
    b.requests()
        .iter()
        .filter(|r| r.path().starts_with("/auth"))
        .count()
}

#[test]
fn a_missing_identity_source_is_401_without_a_call() {
    let b = backend();
    let gw = gateway(&b, "");
    assert_eq!(
        try_connect(&gw, None),
        (401, r#"{"message":"Unauthorized"}"#.into())
    );
    assert_eq!(
        try_connect(&gw, Some("")),
        (401, r#"{"message":"Unauthorized"}"#.into())
    );
    // A real call afterwards proves the gateway was reachable all along.
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    assert_eq!(auth_calls(&b), 1);
}

#[test]
fn allow_deny_and_unauthorized() {
    let b = backend();
    let gw = gateway(&b, "");
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    let auth = b.wait_for("authorizer event", |r| r.path().starts_with("/auth"));
    let ev = auth.event();
    assert_eq!(ev["type"], "REQUEST");
    assert_eq!(ev["methodArn"], ARN);
    assert_eq!(ev["queryStringParameters"]["token"], "allow");
    assert_eq!(
        ev["multiValueQueryStringParameters"]["token"],
        json!(["allow"])
    );
    assert_eq!(ev["headers"]["Host"], "127.0.0.1");
    assert_eq!(ev["requestContext"]["eventType"], "CONNECT");
    assert_eq!(ev["requestContext"]["routeKey"], "$connect");
    assert!(ev["stageVariables"].is_object());
    wait_route_event(&b, "CONNECT");

    assert_eq!(
        try_connect(&gw, Some("deny")),
        (403, r#"{"message":"Forbidden"}"#.into())
    );
    assert_eq!(
        try_connect(&gw, Some("other")),
        (403, r#"{"message":"Forbidden"}"#.into())
    );
    assert_eq!(
        try_connect(&gw, Some("unauthorized")),
        (401, r#"{"message":"Unauthorized"}"#.into())
    );
    assert_eq!(try_connect(&gw, Some("wild")).0, 101);
    // Refused connections never reach `$connect`.
    b.wait_until("two CONNECTs", Duration::from_secs(5), |rs| {
        rs.iter()
            .filter(|r| r.path().starts_with("/ws") && r.event_type() == Some("CONNECT"))
            .count()
            >= 2
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(route_events(&b, "CONNECT").len(), 2);
}

#[test]
fn authorizer_errors_are_500() {
    let b = backend();
    let gw = gateway(&b, "");
    for token in ["malformed", "nested", "big", "slow", "status500"] {
        assert_eq!(
            try_connect(&gw, Some(token)),
            (500, r#"{"message":null}"#.into()),
            "{token}"
        );
    }
    assert!(route_events(&b, "CONNECT").is_empty());
    let unreachable = Gateway::start(&config(
        &format!("http://127.0.0.1:{}/auth", closed_port()),
        "",
        &b.url("/ws"),
    ));
    assert_eq!(
        try_connect(&unreachable, Some("allow")),
        (500, r#"{"message":null}"#.into())
    );
    // The error log (written by the logger thread, so polled).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !unreachable.stderr().contains("authorizer auth") {
        assert!(
            std::time::Instant::now() < deadline,
            "no error log: {}",
            unreachable.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_context_is_on_every_later_event_stringified() {
    let b = backend();
    let gw = gateway(&b, "");
    let mut raw = raw_with(gw.listen, "/prod?token=allow", &ws_headers("127.0.0.1"));
    raw.send_text("hello");
    assert_eq!(raw.recv_text(), "hello");
    drop(raw);
    for kind in ["CONNECT", "MESSAGE", "DISCONNECT"] {
        let ev = wait_route_event(&b, kind);
        let a = &ev.event()["requestContext"]["authorizer"];
        assert_eq!(a["principalId"], "user-1", "{kind}: {a}");
        assert_eq!(a["user"], "alice", "{kind}");
        assert_eq!(a["n"], "42", "{kind}");
        assert_eq!(a["admin"], "true", "{kind}");
        assert!(a["integrationLatency"].is_u64(), "{kind}: {a}");
    }
}

#[test]
fn the_context_in_a_mapping_and_a_mock_template() {
    let b = backend();
    let mut c = config(&b.url("/auth"), "", &b.url("/ws"));
    c = c.replace(
        "[routes.\"$default\"]\nintegration = \"backend\"",
        "[routes.\"$default\"]\nintegration = \"mapped\"",
    );
    c.push_str(&http_integration(
        "mapped",
        "http_proxy",
        &b.url("/mapped"),
        "request_parameters = { \"integration.request.header.x-user\" = \"context.authorizer.user\", \"integration.request.querystring.p\" = \"context.authorizer.principalId\" }",
    ));
    c.push_str(&mock_integration(
        "m",
        "[$context.authorizer.principalId|$context.authorizer.admin|${context.authorizer.missing}]",
    ));
    c.push_str(&route("mock", "m"));
    let gw = Gateway::start(&c);
    let mut raw = raw_with(gw.listen, "/prod?token=allow", &ws_headers("127.0.0.1"));
    raw.send_text(r#"{"action":"mock"}"#);
    assert_eq!(raw.recv_text(), "[user-1|true|]");
    raw.send_text(r#"{"action":"other"}"#);
    let r = b.wait_for("mapped call", |r| r.path().starts_with("/mapped"));
    assert_eq!(r.header("x-user"), Some("alice"));
    assert_eq!(r.query_param("p").as_deref(), Some("user-1"));
}

#[test]
fn cache_ttl_reuses_a_decision_for_the_same_identity() {
    let b = backend();
    let gw = gateway(&b, "cache_ttl = \"60s\"");
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    assert_eq!(auth_calls(&b), 1, "second connect: a cache hit");
    assert_eq!(try_connect(&gw, Some("deny")).0, 403);
    assert_eq!(try_connect(&gw, Some("deny")).0, 403);
    assert_eq!(auth_calls(&b), 2, "a miss for a new token, then a hit");
    // A cached Allow still carries the context.
    b.wait_until("two CONNECTs", Duration::from_secs(5), |rs| {
        rs.iter()
            .filter(|r| r.path().starts_with("/ws") && r.event_type() == Some("CONNECT"))
            .count()
            >= 2
    });
    for ev in route_events(&b, "CONNECT") {
        assert_eq!(ev.event()["requestContext"]["authorizer"]["user"], "alice");
    }
    // Without cache_ttl every connect calls.
    let b2 = backend();
    let gw2 = gateway(&b2, "");
    assert_eq!(try_connect(&gw2, Some("allow")).0, 101);
    assert_eq!(try_connect(&gw2, Some("allow")).0, 101);
    assert_eq!(auth_calls(&b2), 2);
}

#[test]
fn cache_entries_expire() {
    let b = backend();
    let gw = gateway(&b, "cache_ttl = \"200ms\"");
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    assert_eq!(auth_calls(&b), 1);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    assert_eq!(auth_calls(&b), 2, "expired: called again");
}

#[test]
fn a_lambda_authorizer() {
    let fixture = Backend::start(|r| {
        let ev = r.event();
        if ev["type"] == "REQUEST" {
            return match ev["queryStringParameters"]["token"].as_str() {
                Some("allow") => Reply::json(200, &policy("Allow", "*", json!({"k": "v"}))),
                Some("unauthorized") => Reply::json(
                    200,
                    &json!({"errorMessage": "Unauthorized", "errorType": "Error"}),
                )
                .header("X-Amz-Function-Error", "Unhandled"),
                _ => Reply::json(200, &json!({"errorMessage": "boom", "errorType": "Error"}))
                    .header("X-Amz-Function-Error", "Unhandled"),
            };
        }
        Reply::ok("null")
    });
    let mut c = format!(
        "[aws]\nregion = \"us-east-1\"\nlambda_endpoint = {}\n\n",
        toml_str(&fixture.url(""))
    );
    c.push_str(&config(lambda::ARN, "", &fixture.url("/ws")));
    let gw = Gateway::start_with_env(&c, &lambda::ENV);
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    let call = fixture.wait_for("authorizer invoke", |r| r.event()["type"] == "REQUEST");
    assert_eq!(call.path(), lambda::PATH);
    assert!(call
        .header("Authorization")
        .is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 ")));
    assert_eq!(
        call.event()["methodArn"],
        "arn:aws:execute-api:us-east-1:000000000000:test/prod/$connect"
    );
    assert_eq!(
        try_connect(&gw, Some("unauthorized")),
        (401, r#"{"message":"Unauthorized"}"#.into())
    );
    assert_eq!(
        try_connect(&gw, Some("fail")),
        (500, r#"{"message":null}"#.into())
    );
}

#[test]
fn config_errors_name_the_key() {
    let b = backend();
    let bad = |from: &str, to: &str, key: &str| {
        let c = config(&b.url("/auth"), "", &b.url("/ws")).replacen(from, to, 1);
        let exit = run_to_exit(&c, &[]);
        assert!(exit.stderr.contains(key), "{key}: {}", exit.stderr);
    };
    bad(
        "authorizer = \"auth\"",
        "authorizer = \"nope\"",
        "routes.\"$connect\".authorizer",
    );
    bad(
        "type = \"request\"",
        "type = \"token\"",
        "authorizers.auth.type",
    );
    bad(
        "route.request.querystring.token",
        "route.request.body.token",
        "authorizers.auth.identity_sources",
    );
    bad(
        "timeout = \"500ms\"",
        "timeout = \"soon\"",
        "authorizers.auth.timeout",
    );
}

#[test]
fn frames_sent_before_the_101_wait_for_authorizer_and_connect() {
    let b = backend();
    let gw = gateway(&b, "");
    let mut s = tcp(gw.listen);
    let mut bytes = upgrade_bytes("/prod?token=allow", &ws_headers("127.0.0.1"));
    bytes.extend_from_slice(&masked(true, OP_TEXT, b"early"));
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101, "{resp:?}");
    let mut raw = Raw { stream: s };
    assert_eq!(raw.recv_text(), "early");
}

#[test]
fn a_client_that_leaves_while_the_authorizer_runs_costs_nothing() {
    let b = backend();
    let gw = gateway(
        &b,
        "timeout = \"300ms\""
            .replace("timeout", "cache_ttl")
            .as_str(),
    );
    let mut s = tcp(gw.listen);
    std::io::Write::write_all(
        &mut s,
        &upgrade_bytes("/prod?token=slow", &ws_headers("127.0.0.1")),
    )
    .unwrap();
    b.wait_for("authorizer call", |r| r.path().starts_with("/auth"));
    drop(s);
    // The gateway goes on serving; the one that left never reached `$connect`.
    assert_eq!(try_connect(&gw, Some("allow")).0, 101);
    let connect = wait_route_event(&b, "CONNECT");
    // Past the authorizer's timeout (500ms): the abandoned call has ended too.
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(route_events(&b, "CONNECT").len(), 1);
    // Only the connection that got in owes a `$disconnect`.
    for d in route_events(&b, "DISCONNECT") {
        assert_eq!(d.connection_id(), connect.connection_id());
    }
}
