//! SPEC §5 events: what an `aws_proxy` backend receives for CONNECT, MESSAGE and
//! DISCONNECT, field for field, with real values checked against what the test sent
//! and saw (ids, times, headers, query, Host, source address).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::backend::*;
use crate::support::*;

/// Events for `$connect`, `$disconnect` and `sendmessage` (two-way), no `$default`,
/// stage variables `backend` (used in the URI) and `color`.
fn events_gateway(backend: &Backend) -> Gateway {
    let sv = format!(
        "{{ backend = \"127.0.0.1:{}\", color = \"blue\" }}",
        backend.port()
    );
    let mut c = api_config("$request.body.action", Some(&sv), "");
    c.push_str(&aws_integration(
        "backend",
        "http://${stageVariables.backend}/events",
        "",
    ));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("sendmessage", "backend"));
    Gateway::start(&c)
}

fn event_backend() -> Backend {
    Backend::start(|r| match r.event_type() {
        Some("MESSAGE") => Reply::ok("ok"),
        _ => Reply::empty(),
    })
}

fn obj(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn assert_event_request(r: &Request, path: &str) {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.path(), path, "{r:?}");
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "Content-Type {ct:?} must be application/json: {r:?}"
    );
}

#[test]
fn connect_message_and_disconnect_events_carry_the_real_values() {
    let backend = event_backend();
    let gw = events_gateway(&backend);
    let host = "chat.example.test:8443";
    let mut headers = ws_headers(host);
    headers.push(("User-Agent".into(), "example-client/1.0".into()));
    headers.push(("X-Custom".into(), "a".into()));
    headers.push(("Sec-WebSocket-Protocol".into(), "chat.v1, chat.v2".into()));
    headers.push(("X-Custom".into(), "b".into()));

    // CONNECT.
    let t0 = now_ms();
    let mut raw = raw_with(gw.listen, "/prod?token=abc&room=1&room=2", &headers);
    let t1 = now_ms();
    let connect = backend.wait_event("CONNECT");
    assert_event_request(&connect, "/events");
    let ev = connect.event();
    assert_eq!(
        keys(ev),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "queryStringParameters",
            "multiValueQueryStringParameters",
            "stageVariables",
            "requestContext",
            "isBase64Encoded"
        ]),
        "CONNECT event keys: {ev:#}"
    );
    let expected_headers = obj(&[
        ("Host", json!(host)),
        ("Upgrade", json!("websocket")),
        ("Connection", json!("Upgrade")),
        ("Sec-WebSocket-Key", json!(SAMPLE_KEY)),
        ("Sec-WebSocket-Version", json!("13")),
        ("User-Agent", json!("example-client/1.0")),
        ("X-Custom", json!("b")),
        ("Sec-WebSocket-Protocol", json!("chat.v1, chat.v2")),
        // Added as AWS adds them (SPEC §10.2).
        ("X-Forwarded-For", json!("127.0.0.1")),
        ("X-Forwarded-Port", json!(gw.listen.port().to_string())),
        ("X-Forwarded-Proto", json!("http")),
    ]);
    assert_eq!(ev["headers"], expected_headers, "CONNECT headers");
    let expected_multi = obj(&[
        ("Host", json!([host])),
        ("Upgrade", json!(["websocket"])),
        ("Connection", json!(["Upgrade"])),
        ("Sec-WebSocket-Key", json!([SAMPLE_KEY])),
        ("Sec-WebSocket-Version", json!(["13"])),
        ("User-Agent", json!(["example-client/1.0"])),
        ("X-Custom", json!(["a", "b"])),
        ("Sec-WebSocket-Protocol", json!(["chat.v1, chat.v2"])),
        ("X-Forwarded-For", json!(["127.0.0.1"])),
        ("X-Forwarded-Port", json!([gw.listen.port().to_string()])),
        ("X-Forwarded-Proto", json!(["http"])),
    ]);
    assert_eq!(
        ev["multiValueHeaders"], expected_multi,
        "CONNECT multiValueHeaders"
    );
    assert_eq!(
        ev["queryStringParameters"],
        json!({"token": "abc", "room": "2"}),
        "the last value of a repeated name"
    );
    assert_eq!(
        ev["multiValueQueryStringParameters"],
        json!({"token": ["abc"], "room": ["1", "2"]})
    );
    let stage_vars = json!({"backend": format!("127.0.0.1:{}", backend.port()), "color": "blue"});
    assert_eq!(ev["stageVariables"], stage_vars);
    assert_eq!(ev["isBase64Encoded"], json!(false));
    let c = check_context(
        ev,
        &Expect {
            route_key: "$connect",
            event_type: "CONNECT",
            connection_id: None,
            connected_at: None,
            domain_name: host,
            user_agent: Some("example-client/1.0"),
            from_ms: t0,
            to_ms: t1,
        },
    );
    assert!(
        c.connected_at + CLOCK_SLACK_MS >= t0 && c.connected_at <= t1 + CLOCK_SLACK_MS,
        "connectedAt {} outside {t0}..{t1}",
        c.connected_at
    );
    let conn_id = c.connection_id.clone();
    let mut request_ids = vec![c.request_id.clone()];

    // MESSAGEs.
    let mut message_ids = Vec::new();
    for i in 0..10 {
        let text =
            format!("{{\"action\":\"sendmessage\",\"n\":{i},\"message\":\"hello \\\"world\\\"\"}}");
        let t0 = now_ms();
        raw.send_text(&text);
        assert_eq!(raw.recv_text(), "ok");
        let t1 = now_ms();
        let all = backend.wait_until("the message", WAIT, |r| {
            r.iter()
                .any(|r| r.message().as_deref() == Some(text.as_str()))
        });
        let m = all
            .iter()
            .find(|r| r.message().as_deref() == Some(text.as_str()))
            .unwrap();
        assert_event_request(m, "/events");
        let ev = m.event();
        assert_eq!(
            keys(ev),
            sorted(&[
                "requestContext",
                "body",
                "isBase64Encoded",
                "stageVariables"
            ]),
            "MESSAGE event keys: {ev:#}"
        );
        assert_eq!(ev["body"], json!(text));
        assert_eq!(ev["isBase64Encoded"], json!(false));
        assert_eq!(ev["stageVariables"], stage_vars);
        let mc = check_context(
            ev,
            &Expect {
                route_key: "sendmessage",
                event_type: "MESSAGE",
                connection_id: Some(&conn_id),
                connected_at: Some(c.connected_at),
                domain_name: host,
                user_agent: Some("example-client/1.0"),
                from_ms: t0,
                to_ms: t1,
            },
        );
        message_ids.push(mc.message_id.unwrap());
        request_ids.push(mc.request_id);
    }

    // The Forbidden frame names the same connection.
    raw.send_text("{\"action\":\"nope\"}");
    let (forbidden_conn, forbidden_req) = parse_error_frame(&raw.recv_text(), "Forbidden");
    assert_eq!(
        forbidden_conn, conn_id,
        "the events' connectionId is the Forbidden frame's"
    );
    request_ids.push(forbidden_req);

    // DISCONNECT after a client close 4000 "bye".
    let t0 = now_ms();
    raw.send(true, OP_CLOSE, &close_payload(4000, b"bye"));
    let f = raw.frame();
    assert_eq!(f.opcode, OP_CLOSE, "{f:?}");
    assert_eq!(f.close_code(), Some(4000), "the close is echoed: {f:?}");
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    let d = backend.wait_event("DISCONNECT");
    let t1 = now_ms();
    assert_event_request(&d, "/events");
    let ev = d.event();
    assert_eq!(
        keys(ev),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "stageVariables",
            "requestContext",
            "isBase64Encoded"
        ]),
        "DISCONNECT event keys: {ev:#}"
    );
    assert_eq!(
        ev["headers"],
        obj(&[
            ("Host", json!(host)),
            ("x-api-key", json!("")),
            ("X-Forwarded-For", json!("")),
            ("x-restapi", json!("")),
        ])
    );
    assert_eq!(
        ev["multiValueHeaders"],
        obj(&[
            ("Host", json!([host])),
            ("x-api-key", json!([""])),
            ("X-Forwarded-For", json!([""])),
            ("x-restapi", json!([""])),
        ])
    );
    assert_eq!(ev["stageVariables"], stage_vars);
    assert_eq!(ev["isBase64Encoded"], json!(false));
    let dc = check_context(
        ev,
        &Expect {
            route_key: "$disconnect",
            event_type: "DISCONNECT",
            connection_id: Some(&conn_id),
            connected_at: Some(c.connected_at),
            domain_name: host,
            user_agent: Some("example-client/1.0"),
            from_ms: t0,
            to_ms: t1,
        },
    );
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], json!(4000));
    assert_eq!(ev["requestContext"]["disconnectReason"], json!("bye"));
    request_ids.push(dc.request_id);

    let unique: BTreeSet<&String> = message_ids.iter().collect();
    assert_eq!(
        unique.len(),
        message_ids.len(),
        "messageIds repeat: {message_ids:?}"
    );
    let unique: BTreeSet<&String> = request_ids.iter().collect();
    assert_eq!(
        unique.len(),
        request_ids.len(),
        "requestIds repeat: {request_ids:?}"
    );
    for m in &message_ids {
        assert!(
            !request_ids.contains(m),
            "a messageId equals a requestId: {m}"
        );
    }
    // One CONNECT, ten MESSAGEs, one DISCONNECT: nothing else, nothing twice.
    assert_eq!(backend.requests().len(), 12);
}

#[test]
fn events_omit_query_stage_variables_and_user_agent_when_absent() {
    let backend = Backend::echo_message();
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/e"), ""));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start(&c);
    let host = gw.listen.to_string();

    let t0 = now_ms();
    let mut raw = raw_with(gw.listen, "/prod", &ws_headers(&host));
    let t1 = now_ms();
    let connect = backend.wait_event("CONNECT");
    let ev = connect.event();
    assert_eq!(
        keys(ev),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "requestContext",
            "isBase64Encoded"
        ]),
        "no query, no stage variables: {ev:#}"
    );
    let ctx = check_context(
        ev,
        &Expect {
            route_key: "$connect",
            event_type: "CONNECT",
            connection_id: None,
            connected_at: None,
            domain_name: &host,
            user_agent: None,
            from_ms: t0,
            to_ms: t1,
        },
    );

    let t0 = now_ms();
    raw.send_text("plain text");
    assert_eq!(raw.recv_text(), "plain text");
    let t1 = now_ms();
    let m = backend.wait_event("MESSAGE");
    let ev = m.event();
    assert_eq!(
        keys(ev),
        sorted(&["requestContext", "body", "isBase64Encoded"]),
        "{ev:#}"
    );
    check_context(
        ev,
        &Expect {
            route_key: "$default",
            event_type: "MESSAGE",
            connection_id: Some(&ctx.connection_id),
            connected_at: Some(ctx.connected_at),
            domain_name: &host,
            user_agent: None,
            from_ms: t0,
            to_ms: t1,
        },
    );

    // A second connection has its own id and connectedAt; the first is unaffected.
    let mut other = raw_with(gw.listen, "/prod?x=1", &ws_headers("other.example.test"));
    let c2 = backend.wait_until("a second CONNECT", WAIT, |r| {
        r.iter()
            .filter(|r| r.event_type() == Some("CONNECT"))
            .count()
            == 2
    });
    let second = c2
        .iter()
        .filter(|r| r.event_type() == Some("CONNECT"))
        .nth(1)
        .unwrap();
    let id2 = second.connection_id().unwrap().to_string();
    assert_ne!(id2, ctx.connection_id);
    assert_eq!(
        second.event()["requestContext"]["domainName"],
        "other.example.test"
    );
    assert_eq!(second.event()["queryStringParameters"], json!({"x": "1"}));

    let t0 = now_ms();
    raw.send(true, OP_CLOSE, &[]);
    let f = raw.frame();
    assert_eq!(f.opcode, OP_CLOSE);
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    let d = backend.wait_event_of("DISCONNECT", &ctx.connection_id);
    let t1 = now_ms();
    let ev = d.event();
    assert_eq!(
        keys(ev),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "requestContext",
            "isBase64Encoded"
        ]),
        "{ev:#}"
    );
    assert_eq!(
        ev["headers"],
        obj(&[
            ("Host", json!(host)),
            ("x-api-key", json!("")),
            ("X-Forwarded-For", json!("")),
            ("x-restapi", json!("")),
        ])
    );
    check_context(
        ev,
        &Expect {
            route_key: "$disconnect",
            event_type: "DISCONNECT",
            connection_id: Some(&ctx.connection_id),
            connected_at: Some(ctx.connected_at),
            domain_name: &host,
            user_agent: None,
            from_ms: t0,
            to_ms: t1,
        },
    );
    assert_eq!(ev["requestContext"]["disconnectStatusCode"], json!(1005));
    assert_eq!(ev["requestContext"]["disconnectReason"], json!(""));

    // The other connection still works and its messages carry its own id.
    other.send_text("still here");
    assert_eq!(other.recv_text(), "still here");
    let m2 = backend.wait_for("the second connection's message", |r| {
        r.message().as_deref() == Some("still here")
    });
    assert_eq!(m2.connection_id(), Some(id2.as_str()));
    assert_eq!(
        m2.event()["requestContext"]["domainName"],
        "other.example.test"
    );
}

#[test]
fn message_body_is_the_exact_text_correctly_escaped() {
    let backend = Backend::start(|r| match r.event_type() {
        Some("MESSAGE") => Reply::ok(format!("<{}>", r.message().unwrap())),
        _ => Reply::empty(),
    });
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/e"), ""));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start(&c);
    let mut raw = gw.raw();
    let texts = [
        "{\"action\":\"sendmessage\",\"message\":\"hello \\\"world\\\"\"}",
        "quotes \" and backslashes \\ and \\\" and \\\\",
        "newline\nreturn\rtab\tnul\u{0}bell\u{7}esc\u{1b}unit\u{1f}del\u{7f}",
        "unicode é ü ß 日本語 😀 \u{2028}\u{2029}",
        "</script><!-- & ' -->",
        "",
        " ",
        "{\"nested\":{\"json\":[1,2,{\"a\":\"b\"}]}}",
    ];
    for (i, t) in texts.iter().enumerate() {
        raw.send_text(t);
        assert_eq!(raw.recv_text(), format!("<{t}>"), "round trip of text #{i}");
        let reqs = backend.wait_requests(i + 1);
        let ev = reqs[i].event();
        assert_eq!(
            ev["body"],
            json!(t),
            "event body of text #{i}: {:?}",
            reqs[i].body_str()
        );
        assert_eq!(ev["isBase64Encoded"], json!(false));
        assert_eq!(ev["requestContext"]["routeKey"], "$default");
    }
    // A long message crosses any buffer boundary intact.
    let long: String = (0..20_000)
        .map(|i| ["a", "\"", "\\", "é", "\n"][i % 5])
        .collect();
    raw.send_text(&long);
    assert_eq!(raw.recv_text(), format!("<{long}>"));
    let reqs = backend.wait_requests(texts.len() + 1);
    assert_eq!(reqs[texts.len()].event()["body"], json!(long));
}

#[test]
fn binary_message_is_base64_in_the_event_and_replies_keep_their_kind() {
    let backend = Backend::start(|r| {
        let ev = r.event();
        if ev["isBase64Encoded"] == json!(true) {
            Reply::ok(vec![0xff, 0x00, 0x80, 0x41])
        } else {
            Reply::ok("text reply")
        }
    });
    let mut c = api_config("$request.body.action", None, "binary = \"allow\"");
    c.push_str(&aws_integration("backend", &backend.url("/bin"), ""));
    c.push_str(&route("$default", "backend"));
    c.push_str(&route("sendmessage", "backend"));
    let gw = Gateway::start(&c);
    let mut raw = gw.raw();
    let data: Vec<u8> = vec![0, 1, 2, 0xfe, 0xff, b'{', b'"', 0x80, 0x7f, 0x10, 0x20];
    // A binary message goes to $default even when it looks like it names a route.
    let mut named = b"{\"action\":\"sendmessage\"}".to_vec();
    named.push(0xff);
    for payload in [data.clone(), named.clone(), vec![0x9f]] {
        raw.send(true, OP_BINARY, &payload);
        let (opcode, got, _) = raw.message_frames();
        assert_eq!(
            opcode, OP_BINARY,
            "a reply that is not UTF-8 comes back binary"
        );
        assert_eq!(got, vec![0xff, 0x00, 0x80, 0x41]);
    }
    let reqs = backend.wait_requests(3);
    for (r, payload) in reqs.iter().zip([&data, &named, &vec![0x9f]]) {
        let ev = r.event();
        assert_eq!(ev["isBase64Encoded"], json!(true), "{ev:#}");
        assert_eq!(ev["body"], json!(base64_std(payload)), "{ev:#}");
        assert_eq!(ev["requestContext"]["routeKey"], "$default");
        assert_eq!(ev["requestContext"]["eventType"], "MESSAGE");
    }
    raw.send_text("{\"action\":\"sendmessage\"}");
    assert_eq!(raw.recv_text(), "text reply");
    let reqs = backend.wait_requests(4);
    assert_eq!(reqs[3].event()["isBase64Encoded"], json!(false));
    assert_eq!(reqs[3].event()["requestContext"]["routeKey"], "sendmessage");
}

#[test]
fn every_event_of_a_connection_shares_connected_at_and_ids_never_repeat() {
    let backend = Backend::echo_message();
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/e"), ""));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start(&c);
    // Three connections, staggered so their connectedAt differ.
    let mut ids = Vec::new();
    for k in 0..3 {
        let mut raw = gw.raw();
        std::thread::sleep(Duration::from_millis(15));
        for i in 0..5 {
            let t = format!("c{k} m{i}");
            raw.send_text(&t);
            assert_eq!(raw.recv_text(), t);
        }
        raw.send(true, OP_CLOSE, &close_payload(1000, b""));
        let f = raw.frame();
        assert_eq!(f.opcode, OP_CLOSE);
        wait_closed(&mut raw.stream, READ_TIMEOUT);
        let n = backend.wait_until("a DISCONNECT", WAIT, |r| {
            r.iter()
                .filter(|r| r.event_type() == Some("DISCONNECT"))
                .count()
                == k + 1
        });
        ids.push(
            n.iter()
                .filter(|r| r.event_type() == Some("CONNECT"))
                .nth(k)
                .unwrap()
                .connection_id()
                .unwrap()
                .to_string(),
        );
    }
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 3 * 7);
    let mut all_request_ids = BTreeSet::new();
    let mut all_message_ids = BTreeSet::new();
    let mut connected = BTreeSet::new();
    for id in &ids {
        let mine: Vec<&Request> = reqs
            .iter()
            .filter(|r| r.connection_id() == Some(id))
            .collect();
        assert_eq!(
            mine.len(),
            7,
            "connection {id}: CONNECT, 5 MESSAGE, DISCONNECT"
        );
        let at: BTreeSet<u64> = mine
            .iter()
            .map(|r| r.event()["requestContext"]["connectedAt"].as_u64().unwrap())
            .collect();
        assert_eq!(
            at.len(),
            1,
            "connectedAt differs across {id}'s events: {at:?}"
        );
        connected.insert(*at.iter().next().unwrap());
        for r in &mine {
            let ctx = &r.event()["requestContext"];
            assert!(
                all_request_ids.insert(ctx["requestId"].as_str().unwrap().to_string()),
                "requestId repeats: {ctx}"
            );
            if r.event_type() == Some("MESSAGE") {
                assert!(
                    all_message_ids.insert(ctx["messageId"].as_str().unwrap().to_string()),
                    "messageId repeats: {ctx}"
                );
            }
        }
    }
    assert_eq!(
        connected.len(),
        3,
        "three connections, three connectedAt values"
    );
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 3);
}
