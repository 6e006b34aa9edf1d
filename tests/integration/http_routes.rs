//! SPEC §5 results and §7 frames for message routes on HTTP integrations: route
//! responses on and off, every row of the result rules byte for byte, `response =
//! "lambda"`, chunked replies, backends that close keep-alive connections, the
//! single retry rule, `http_proxy` with request parameters, in-flight limits.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::backend::*;
use crate::support::*;

/// A backend scripted by the message itself (a JSON object; for `aws_proxy` the
/// event's `body`): `status` (200), `body` (""), `delay` (ms), `chunk` (size),
/// `end` ("close" | "drop"), `hang`, `raw` (bytes verbatim, then close), `lambda`
/// (a Lambda result object sent as the body), `nobody` (close without a reply),
/// `bytes` (body as a byte array), `repeat` (the body repeated n times).
fn scripted() -> Backend {
    Backend::start(script)
}

fn script(r: &Request) -> Reply {
    let Some(msg) = r.message() else {
        return Reply::empty();
    };
    let Ok(v) = serde_json::from_str::<Value>(&msg) else {
        return Reply::ok(msg);
    };
    if !v.is_object() {
        return Reply::ok(msg);
    }
    if v["hang"] == json!(true) {
        return Reply::hang();
    }
    if v["nobody"] == json!(true) {
        return Reply::close_without_reply();
    }
    if let Some(raw) = v["raw"].as_str() {
        return Reply::raw(raw.as_bytes().to_vec());
    }
    let status = v["status"].as_u64().unwrap_or(200) as u16;
    let body: Vec<u8> = if let Some(l) = v.get("lambda") {
        l.to_string().into_bytes()
    } else if let Some(b) = v["bytes"].as_array() {
        b.iter().map(|x| x.as_u64().unwrap() as u8).collect()
    } else {
        v["body"].as_str().unwrap_or("").as_bytes().to_vec()
    };
    let body = match v["repeat"].as_u64() {
        Some(n) => body.repeat(n as usize),
        None => body,
    };
    let mut reply = Reply::new(status, body);
    if let Some(d) = v["delay"].as_u64() {
        reply = reply.delay_ms(d);
    }
    if let Some(c) = v["chunk"].as_u64() {
        reply = reply.chunked(c as usize);
    }
    match v["end"].as_str() {
        Some("close") => reply = reply.close_after(),
        Some("drop") => reply = reply.drop_after(),
        _ => {}
    }
    reply
}

/// Routes `two` (two-way) and `one` (one-way) on an `aws_proxy` integration at the
/// backend with `extra`; `probe` (mock, two-way) answers `$context.connectionId`.
fn routes_gateway(backend: &Backend, extra: &str, limits: &str) -> Gateway {
    routes_gateway_uri(&backend.url("/msg"), extra, limits)
}

fn routes_gateway_uri(uri: &str, extra: &str, limits: &str) -> Gateway {
    let mut c = api_config("$request.body.action", None, limits);
    c.push_str(&aws_integration("backend", uri, extra));
    c.push_str(&mock_integration("probe", "$context.connectionId"));
    c.push_str(&route("two", "backend"));
    c.push_str(&one_way_route("one", "backend"));
    c.push_str(&route("probe", "probe"));
    Gateway::start_with(&c, &["--workers", "1"])
}

fn msg(route: &str, fields: Value) -> String {
    let mut v = fields;
    v["action"] = json!(route);
    v.to_string()
}

/// The connection's id, via the mock probe route.
fn probe(raw: &mut Raw) -> String {
    raw.send_text("{\"action\":\"probe\"}");
    let id = raw.recv_text();
    assert_id(&id);
    id
}

/// Asserts the message sent as the `n`-th request (1-based) produced no frame:
/// waits until the backend answered it, lets the gateway act on the reply, then
/// checks the next frame is a probe's answer.
fn assert_nothing_after(backend: &Backend, raw: &mut Raw, n: usize) {
    backend.wait_requests(n);
    std::thread::sleep(Duration::from_millis(200));
    raw.send_text("{\"action\":\"probe\"}");
    let next = raw.recv_text();
    assert!(
        next.len() == 16 && next.ends_with('='),
        "expected nothing before the probe's answer, got {next:?}"
    );
}

#[test]
fn two_way_2xx_bodies_come_back_as_text() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    for (status, body) in [
        (200, "pong"),
        (201, "created"),
        (202, "{\"json\":\"reply\"}"),
        (299, "odd but 2xx"),
    ] {
        raw.send_text(&msg("two", json!({"status": status, "body": body})));
        assert_eq!(raw.recv_text(), body, "status {status}");
    }
    // Content-Length bodies written in two pieces, and a large one.
    let big = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(1700);
    raw.send_text(&msg(
        "two",
        json!({"body": "abcdefghijklmnopqrstuvwxyz0123456789", "repeat": 1700}),
    ));
    let (op, got, _) = raw.message_frames();
    assert_eq!(op, OP_TEXT);
    assert_eq!(got.len(), big.len());
    assert!(got == big.as_bytes(), "the large reply differs");
}

#[test]
fn two_way_2xx_with_an_empty_body_sends_nothing() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    raw.send_text(&msg("two", json!({"status": 200, "body": ""})));
    assert_nothing_after(&backend, &mut raw, 1);
    raw.send_text(&msg("two", json!({"status": 204})));
    assert_nothing_after(&backend, &mut raw, 2);
}

#[test]
fn two_way_non_2xx_is_internal_server_error_byte_for_byte() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    let id = probe(&mut raw);
    let statuses = [400, 401, 403, 404, 429, 500, 502, 503, 301, 302];
    for (i, status) in statuses.iter().enumerate() {
        raw.send_text(&msg(
            "two",
            json!({"status": status, "body": "backend said no"}),
        ));
        let frame = raw.recv_text();
        let (conn, req) = parse_error_frame(&frame, "Internal server error");
        assert_eq!(conn, id, "status {status}");
        let reqs = backend.wait_requests(i + 1);
        let ev = reqs[i].event();
        assert_eq!(
            ev["requestContext"]["requestId"],
            json!(req),
            "the frame's requestId is the event's (status {status})"
        );
        assert_eq!(
            frame,
            format!("{{\"message\": \"Internal server error\", \"connectionId\":\"{id}\", \"requestId\":\"{req}\"}}")
        );
    }
}

#[test]
fn one_way_results_send_nothing_whatever_the_status() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    for (i, (status, body)) in [
        (200, "not sent"),
        (500, "not sent either"),
        (404, ""),
        (201, "x"),
    ]
    .iter()
    .enumerate()
    {
        raw.send_text(&msg("one", json!({"status": status, "body": body})));
        assert_nothing_after(&backend, &mut raw, i + 1);
    }
}

#[test]
fn backend_down_is_internal_server_error_with_and_without_route_response() {
    let uri = format!("http://127.0.0.1:{}/msg", closed_port());
    let gw = routes_gateway_uri(&uri, "", "");
    let mut raw = gw.raw();
    let id = probe(&mut raw);
    let mut reqs = Vec::new();
    for route in ["two", "one", "two"] {
        let start = Instant::now();
        raw.send_text(&msg(route, json!({})));
        let (conn, req) = parse_error_frame(&raw.recv_text(), "Internal server error");
        assert_eq!(conn, id);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{route}: {:?}",
            start.elapsed()
        );
        reqs.push(req);
    }
    reqs.sort();
    reqs.dedup();
    assert_eq!(reqs.len(), 3, "each frame has its own requestId");
}

#[test]
fn timeout_is_endpoint_request_timed_out_with_and_without_route_response() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "timeout = \"300ms\"", "");
    let mut raw = gw.raw();
    let id = probe(&mut raw);
    let start = Instant::now();
    raw.send_text(&msg("two", json!({"hang": true})));
    raw.send_text(&msg("one", json!({"hang": true})));
    let a = raw.recv_text();
    let b = raw.recv_text();
    let took = start.elapsed();
    let (ca, ra) = parse_error_frame(&a, "Endpoint request timed out");
    let (cb, rb) = parse_error_frame(&b, "Endpoint request timed out");
    assert_eq!((ca.as_str(), cb.as_str()), (id.as_str(), id.as_str()));
    assert_ne!(ra, rb);
    assert!(
        took >= Duration::from_millis(250),
        "timed out too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "timed out too late: {took:?}"
    );
    let reqs = backend.wait_requests(2);
    let mut event_ids: Vec<String> = reqs
        .iter()
        .map(|r| {
            r.event()["requestContext"]["requestId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut frame_ids = vec![ra, rb];
    event_ids.sort();
    frame_ids.sort();
    assert_eq!(
        event_ids, frame_ids,
        "the frames' requestIds are the events'"
    );
}

#[test]
fn a_late_reply_after_the_timeout_is_dropped_and_the_route_keeps_working() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "timeout = \"300ms\"", "");
    let mut raw = gw.raw();
    raw.send_text(&msg("two", json!({"delay": 700, "body": "too late"})));
    parse_error_frame(&raw.recv_text(), "Endpoint request timed out");
    // Past the late reply: nothing more for that message.
    std::thread::sleep(Duration::from_millis(600));
    let id = probe(&mut raw);
    assert_id(&id);
    for i in 0..5 {
        let body = format!("fresh {i}");
        raw.send_text(&msg("two", json!({"body": body})));
        assert_eq!(raw.recv_text(), body);
    }
}

#[test]
fn malformed_replies_are_internal_server_error_with_and_without_route_response() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    let id = probe(&mut raw);
    let bad = [
        "this is not HTTP\r\n\r\n",
        "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    ];
    for raw_reply in bad {
        for route in ["two", "one"] {
            raw.send_text(&msg(route, json!({"raw": raw_reply})));
            let (conn, _) = parse_error_frame(&raw.recv_text(), "Internal server error");
            assert_eq!(conn, id, "{route} {raw_reply:?}");
        }
    }
    // Still healthy.
    raw.send_text(&msg("two", json!({"body": "ok"})));
    assert_eq!(raw.recv_text(), "ok");
}

#[test]
fn a_reply_cut_short_is_internal_server_error_and_not_retried() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    raw.send_text(&msg(
        "two",
        json!({"raw": "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"}),
    ));
    parse_error_frame(&raw.recv_text(), "Internal server error");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        backend.requests().len(),
        1,
        "a reply that had begun is never retried"
    );
}

#[test]
fn a_fresh_connection_closed_without_a_reply_is_not_retried() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    raw.send_text(&msg("two", json!({"nobody": true})));
    parse_error_frame(&raw.recv_text(), "Internal server error");
    std::thread::sleep(Duration::from_millis(200));
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1, "only a reused connection is retried");
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn a_reused_connection_closed_before_the_reply_is_retried_once_on_a_fresh_one() {
    // Message "flaky": closed when it arrives on a reused connection, answered on a
    // fresh one. Message "dead": always closed.
    let backend = Backend::start(|r| {
        let m = r.message().unwrap_or_default();
        if (m.contains("flaky") && r.seq_on_conn > 0) || m.contains("dead") {
            Reply::close_without_reply()
        } else {
            Reply::ok(format!("ok {}", r.conn))
        }
    });
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    raw.send_text("{\"action\":\"two\",\"n\":\"warm\"}");
    assert_eq!(raw.recv_text(), "ok 0");
    raw.send_text("{\"action\":\"two\",\"n\":\"flaky\"}");
    assert_eq!(raw.recv_text(), "ok 1", "retried on a fresh connection");
    let reqs = backend.requests();
    let flaky: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.message().unwrap().contains("flaky"))
        .collect();
    assert_eq!(
        flaky.len(),
        2,
        "one try on the reused connection, one retry"
    );
    assert_eq!((flaky[0].conn, flaky[0].seq_on_conn), (0, 1));
    assert_eq!((flaky[1].conn, flaky[1].seq_on_conn), (1, 0));

    // "dead" goes on the idle connection 1 (reused): one retry on a fresh connection
    // that fails too, then the frame; never a third try.
    raw.send_text("{\"action\":\"two\",\"n\":\"dead\"}");
    parse_error_frame(&raw.recv_text(), "Internal server error");
    std::thread::sleep(Duration::from_millis(200));
    let reqs = backend.requests();
    let dead: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.message().unwrap().contains("dead"))
        .collect();
    assert_eq!(
        dead.len(),
        2,
        "reused connection, then exactly one retry: {dead:#?}"
    );
    assert!(
        dead[0].seq_on_conn > 0,
        "the first try was on a reused connection"
    );
    assert_eq!(
        dead[1].seq_on_conn, 0,
        "the retry was on a fresh connection"
    );
    // And the route still works.
    raw.send_text("{\"action\":\"two\",\"n\":\"after\"}");
    assert!(raw.recv_text().starts_with("ok "));
}

#[test]
fn a_backend_that_closes_keep_alive_connections_between_requests_is_invisible() {
    for end in ["close", "drop"] {
        let backend = scripted();
        let gw = routes_gateway(&backend, "", "");
        let mut raw = gw.raw();
        for i in 0..20 {
            let body = format!("{end} {i}");
            raw.send_text(&msg("two", json!({"body": body, "end": end})));
            assert_eq!(raw.recv_text(), body, "no error reaches the client ({end})");
            if i % 2 == 1 {
                // Give the close time to be seen before the next request, sometimes.
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        let reqs = backend.requests();
        assert_eq!(
            reqs.len(),
            20,
            "{end}: each message reached the backend once"
        );
        assert!(
            reqs.iter().all(|r| r.seq_on_conn == 0),
            "{end}: a connection the backend closed was reused"
        );
    }
}

#[test]
fn chunked_replies_are_reassembled() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    raw.send_text(&msg(
        "two",
        json!({"body": "hello chunked world", "chunk": 4}),
    ));
    assert_eq!(raw.recv_text(), "hello chunked world");
    let text: String = "héllo wörld ✓ ".repeat(2000);
    raw.send_text(&msg(
        "two",
        json!({"body": "héllo wörld ✓ ", "repeat": 2000, "chunk": 997}),
    ));
    let (op, got, _) = raw.message_frames();
    assert_eq!(op, OP_TEXT);
    assert!(
        got == text.as_bytes(),
        "chunked body of {} bytes differs",
        text.len()
    );
    // Chunk extensions and trailers.
    raw.send_text(&msg(
        "two",
        json!({"raw": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\n"}),
    ));
    assert_eq!(raw.recv_text(), "hello world");
    // An empty chunked body sends nothing; non-2xx chunked is an error frame.
    raw.send_text(&msg("two", json!({"body": "", "chunk": 4})));
    assert_nothing_after(&backend, &mut raw, 4);
    raw.send_text(&msg(
        "two",
        json!({"status": 500, "body": "chunked failure", "chunk": 3}),
    ));
    parse_error_frame(&raw.recv_text(), "Internal server error");
    // Keep-alive survives chunked replies.
    raw.send_text(&msg("two", json!({"body": "after"})));
    assert_eq!(raw.recv_text(), "after");
    assert_eq!(
        backend.accepted(),
        2,
        "the raw reply closed one connection; the rest reuse"
    );
}

#[test]
fn lambda_results_give_their_status_and_body() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "response = \"lambda\"", "");
    let mut raw = gw.raw();
    let id = probe(&mut raw);
    let lambda = |code: u16, body: &str| json!({"statusCode": code, "body": body, "headers": {}, "isBase64Encoded": false});
    raw.send_text(&msg("two", json!({"lambda": lambda(200, "hi")})));
    assert_eq!(raw.recv_text(), "hi");
    raw.send_text(&msg("two", json!({"lambda": lambda(201, "{\"a\":1}")})));
    assert_eq!(raw.recv_text(), "{\"a\":1}");
    raw.send_text(&msg("two", json!({"lambda": lambda(500, "boom")})));
    let (conn, _) = parse_error_frame(&raw.recv_text(), "Internal server error");
    assert_eq!(conn, id);
    raw.send_text(&msg("two", json!({"lambda": lambda(403, "no")})));
    parse_error_frame(&raw.recv_text(), "Internal server error");
    // One-way: nothing for 200 nor for 500.
    raw.send_text(&msg("one", json!({"lambda": lambda(200, "not sent")})));
    assert_nothing_after(&backend, &mut raw, 5);
    raw.send_text(&msg("one", json!({"lambda": lambda(500, "not sent")})));
    assert_nothing_after(&backend, &mut raw, 6);
    // Empty body: nothing.
    raw.send_text(&msg("two", json!({"lambda": lambda(200, "")})));
    assert_nothing_after(&backend, &mut raw, 7);
    // A body that is not a Lambda result is a malformed reply.
    raw.send_text(&msg("two", json!({"body": "not a lambda result"})));
    parse_error_frame(&raw.recv_text(), "Internal server error");
    // The HTTP status of the invocation is not the result: the statusCode is.
    raw.send_text(&msg(
        "two",
        json!({"lambda": lambda(200, "still hi"), "status": 200}),
    ));
    assert_eq!(raw.recv_text(), "still hi");
}

#[test]
fn a_reply_that_is_not_utf8_is_internal_server_error_when_binary_is_rejected() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "");
    let mut raw = gw.raw();
    raw.send_text(&msg("two", json!({"bytes": [0xff, 0xfe, 0x41]})));
    parse_error_frame(&raw.recv_text(), "Internal server error");
    raw.send_text(&msg("two", json!({"body": "fine"})));
    assert_eq!(raw.recv_text(), "fine");
}

#[test]
fn http_proxy_sends_the_raw_message_with_mapped_parameters() {
    let backend = Backend::start(|r| {
        let m = r.body_str().to_string();
        if m.contains("fail") {
            Reply::new(500, "nope")
        } else {
            Reply::ok(format!(
                "proxied {}",
                r.query_param("room").unwrap_or_default()
            ))
        }
    });
    let mut c = api_config("$request.body.action", Some("{ color = \"blue\" }"), "");
    c.push_str(&http_integration(
        "proxy",
        "http_proxy",
        &backend.url("/proxy"),
        "request_parameters = { \"integration.request.header.connectionId\" = \"context.connectionId\", \
         \"integration.request.querystring.room\" = \"route.request.body.room\", \
         \"integration.request.header.x-static\" = \"'v1'\", \
         \"integration.request.header.x-route\" = \"context.routeKey\", \
         \"integration.request.querystring.sv\" = \"stageVariables.color\" }",
    ));
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&route("send", "proxy"));
    c.push_str(&route("who", "who"));
    let gw = Gateway::start(&c);
    let mut h = ws_headers("127.0.0.1");
    h.push(("User-Agent".into(), "it-client/2".into()));
    let mut raw = raw_with(gw.listen, "/prod", &h);
    raw.send_text("{\"action\":\"who\"}");
    let id = raw.recv_text();
    assert_id(&id);

    let m1 = "{\"action\":\"send\",\"room\":\"lobby\",\"text\":\"hi \\\"there\\\"\"}";
    raw.send_text(m1);
    assert_eq!(raw.recv_text(), "proxied lobby");
    let m2 = "{\"action\":\"send\",\"room\":42}";
    raw.send_text(m2);
    assert_eq!(raw.recv_text(), "proxied 42");
    let reqs = backend.wait_requests(2);
    for (r, m, room) in [(&reqs[0], m1, "lobby"), (&reqs[1], m2, "42")] {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path(), "/proxy");
        assert_eq!(r.body_str(), m, "http_proxy body is the raw message");
        assert_eq!(r.header("connectionId"), Some(id.as_str()), "{r:?}");
        assert_eq!(r.header("x-static"), Some("v1"), "{r:?}");
        assert_eq!(r.header("x-route"), Some("send"), "{r:?}");
        let mut q = r.query();
        q.sort();
        assert_eq!(
            q,
            vec![
                ("room".to_string(), room.to_string()),
                ("sv".to_string(), "blue".to_string())
            ],
            "{r:?}"
        );
    }
    raw.send_text("{\"action\":\"send\",\"room\":\"x\",\"fail\":1}");
    parse_error_frame(&raw.recv_text(), "Internal server error");
}

#[test]
fn more_calls_than_max_inflight_per_connection_wait_for_one_to_finish() {
    let backend = scripted();
    let gw = routes_gateway(&backend, "", "max_inflight_per_connection = 2");
    let mut raw = gw.raw();
    probe(&mut raw);
    for i in 0..3 {
        raw.send_text(&msg("two", json!({"delay": 300, "body": format!("r{i}")})));
    }
    // The third is not refused: it is read (and called) once a call finished
    // (SPEC §10.3, TCP backpressure instead of Too Many Requests).
    let mut got = vec![raw.recv_text(), raw.recv_text()];
    got.sort();
    assert_eq!(got, ["r0", "r1"]);
    assert_eq!(raw.recv_text(), "r2");
    assert_eq!(backend.requests().len(), 3);
    assert!(backend.max_inflight() <= 2, "{}", backend.max_inflight());
}
