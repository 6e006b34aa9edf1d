//! SPEC §3 with an HTTP `$connect` integration: the upgrade waits for the backend;
//! 2xx → 101, another status passed through with its body and Content-Type, 502 for
//! an unreachable or malformed backend, 504 on timeout, the backend-selected
//! subprotocol, and frames sent before the 101.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::*;
use crate::support::*;

/// `$connect` (one-way) and `$default` (two-way) on an `aws_proxy` integration at
/// `uri` with `extra` lines.
fn connect_gateway(uri: &str, extra: &str) -> Gateway {
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", uri, extra));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&route("$default", "backend"));
    Gateway::start(&c)
}

/// CONNECT → `on_connect`, messages echoed.
fn backend_with_connect(on_connect: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Backend {
    Backend::start(move |r| match r.event_type() {
        Some("CONNECT") => on_connect(r),
        Some("MESSAGE") => Reply::ok(r.message().unwrap()),
        _ => Reply::empty(),
    })
}

fn offer(host: &str, protocols: &str) -> Vec<(String, String)> {
    let mut h = ws_headers(host);
    h.push(("Sec-WebSocket-Protocol".into(), protocols.into()));
    h
}

#[test]
fn connect_2xx_upgrades_and_copies_no_backend_headers() {
    let backend = backend_with_connect(|_| {
        Reply::new(200, "{\"ignored\":true}")
            .header("Content-Type", "application/json")
            .header("X-Backend", "yes")
            .header("Set-Cookie", "a=b")
    });
    let gw = connect_gateway(&backend.url("/ws"), "");
    let (mut s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    for h in [
        "Content-Type",
        "Content-Length",
        "Transfer-Encoding",
        "Keep-Alive",
        "Sec-WebSocket-Protocol",
    ] {
        assert_eq!(resp.header(h), None, "{h} must not be in the 101: {resp:?}");
    }
    s.write_all(&masked(true, OP_TEXT, b"after connect"))
        .unwrap();
    let mut raw = Raw { stream: s };
    assert_eq!(raw.recv_text(), "after connect");
    // 201 and 204 are 2xx too.
    for status in [201, 204] {
        let backend = backend_with_connect(move |_| Reply::new(status, ""));
        let gw = connect_gateway(&backend.url("/ws"), "");
        let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
        assert_eq!(resp.status, 101, "$connect {status}: {resp:?}");
    }
}

#[test]
fn connect_401_403_500_are_passed_through_with_body_and_content_type() {
    let backend = backend_with_connect(|r| {
        let want = r.event()["queryStringParameters"]["want"]
            .as_str()
            .unwrap_or("200")
            .to_string();
        match want.as_str() {
            "401" => Reply::new(401, "{\"message\":\"Unauthorized\"}")
                .header("Content-Type", "application/json"),
            "403" => {
                Reply::new(403, "go away\n").header("Content-Type", "text/plain; charset=utf-8")
            }
            "500" => Reply::new(500, "<h1>oops</h1>").header("Content-Type", "text/html"),
            _ => Reply::empty(),
        }
    });
    let gw = connect_gateway(&backend.url("/ws"), "");
    let cases = [
        (401, "application/json", "{\"message\":\"Unauthorized\"}"),
        (403, "text/plain; charset=utf-8", "go away\n"),
        (500, "text/html", "<h1>oops</h1>"),
    ];
    for (status, ct, body) in cases {
        let (mut s, resp) = upgrade(
            gw.listen,
            &format!("/prod?want={status}"),
            &ws_headers("127.0.0.1"),
        );
        assert_eq!(resp.status, status, "{resp:?}");
        assert_eq!(resp.header("Content-Type"), Some(ct), "{resp:?}");
        assert_eq!(resp.header("Sec-WebSocket-Accept"), None, "{resp:?}");
        let got = read_body(&mut s, &resp);
        assert_eq!(String::from_utf8_lossy(&got), body, "body of the {status}");
    }
    // And a connection the backend lets in still works.
    let mut raw = raw_with(gw.listen, "/prod?want=200", &ws_headers("127.0.0.1"));
    raw.send_text("in");
    assert_eq!(raw.recv_text(), "in");
}

#[test]
fn connect_with_the_backend_down_is_502() {
    let uri = format!("http://127.0.0.1:{}/ws", closed_port());
    let gw = connect_gateway(&uri, "");
    let start = Instant::now();
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 502, "{resp:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    // The gateway stays up and answers the next one the same way.
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 502, "{resp:?}");
}

#[test]
fn connect_slower_than_the_timeout_is_504() {
    let backend = backend_with_connect(|_| Reply::empty().delay_ms(2000));
    let gw = connect_gateway(&backend.url("/ws"), "timeout = \"300ms\"");
    let start = Instant::now();
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    let took = start.elapsed();
    assert_eq!(resp.status, 504, "{resp:?}");
    assert!(
        took >= Duration::from_millis(250),
        "504 before the timeout: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "504 long after the 300ms timeout: {took:?}"
    );
}

#[test]
fn connect_to_a_hanging_backend_is_504() {
    let backend = backend_with_connect(|_| Reply::hang());
    let gw = connect_gateway(&backend.url("/ws"), "timeout = \"200ms\"");
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 504, "{resp:?}");
}

#[test]
fn connect_with_a_malformed_reply_is_502() {
    for bytes in [
        &b"this is not HTTP\r\n\r\n"[..],
        &b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"[..],
        &b""[..],
    ] {
        let b = bytes.to_vec();
        let backend = backend_with_connect(move |_| Reply::raw(b.clone()));
        let gw = connect_gateway(&backend.url("/ws"), "");
        let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
        assert_eq!(
            resp.status,
            502,
            "backend reply {:?}: {resp:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn subprotocol_is_the_one_the_backend_selects() {
    let backend = backend_with_connect(|r| {
        assert_eq!(
            r.event()["headers"]["Sec-WebSocket-Protocol"],
            json!("chat.v1, chat.v2")
        );
        Reply::empty().header("Sec-WebSocket-Protocol", "chat.v2")
    });
    let gw = connect_gateway(&backend.url("/ws"), "");
    let (s, resp) = upgrade(gw.listen, "/prod", &offer("127.0.0.1", "chat.v1, chat.v2"));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(
        resp.header("Sec-WebSocket-Protocol"),
        Some("chat.v2"),
        "{resp:?}"
    );
    let mut raw = Raw { stream: s };
    raw.send_text("v2");
    assert_eq!(raw.recv_text(), "v2");
}

#[test]
fn no_subprotocol_selected_means_none_in_the_101() {
    let backend = backend_with_connect(|_| Reply::empty());
    let gw = connect_gateway(&backend.url("/ws"), "");
    let (_s, resp) = upgrade(gw.listen, "/prod", &offer("127.0.0.1", "chat.v1, chat.v2"));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Protocol"), None, "{resp:?}");
}

#[test]
fn a_subprotocol_the_client_did_not_offer_is_502() {
    let backend =
        backend_with_connect(|_| Reply::empty().header("Sec-WebSocket-Protocol", "chat.v3"));
    let gw = connect_gateway(&backend.url("/ws"), "");
    let (_s, resp) = upgrade(gw.listen, "/prod", &offer("127.0.0.1", "chat.v1, chat.v2"));
    assert_eq!(resp.status, 502, "{resp:?}");
    // Nor when the client offered none at all.
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 502, "{resp:?}");
}

#[test]
fn lambda_connect_result_selects_the_subprotocol_and_refuses_with_its_status() {
    let backend = backend_with_connect(|r| {
        let q = &r.event()["queryStringParameters"];
        if q["deny"] == json!("1") {
            Reply::json(
                200,
                &json!({"statusCode": 403, "headers": {"Content-Type": "text/plain"}, "body": "denied", "isBase64Encoded": false}),
            )
        } else {
            Reply::json(
                200,
                &json!({"statusCode": 200, "headers": {"Sec-WebSocket-Protocol": "chat.v1"}, "body": "", "isBase64Encoded": false}),
            )
        }
    });
    let gw = connect_gateway(&backend.url("/ws"), "response = \"lambda\"");
    let (s, resp) = upgrade(gw.listen, "/prod", &offer("127.0.0.1", "chat.v1, chat.v2"));
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(
        resp.header("Sec-WebSocket-Protocol"),
        Some("chat.v1"),
        "{resp:?}"
    );
    drop(s);

    let (mut s, resp) = upgrade(gw.listen, "/prod?deny=1", &offer("127.0.0.1", "chat.v1"));
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(String::from_utf8_lossy(&read_body(&mut s, &resp)), "denied");
}

#[test]
fn frames_sent_before_the_101_are_processed_after_it() {
    let backend = backend_with_connect(|_| Reply::empty().delay_ms(300));
    let gw = connect_gateway(&backend.url("/ws"), "");
    let mut s = tcp(gw.listen);
    let mut bytes = upgrade_bytes("/prod", &ws_headers("127.0.0.1"));
    bytes.extend_from_slice(&masked(true, OP_TEXT, b"early one"));
    bytes.extend_from_slice(&masked(true, OP_TEXT, b"early two"));
    s.write_all(&bytes).unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101, "{resp:?}");
    let mut raw = Raw { stream: s };
    let mut got = vec![raw.recv_text(), raw.recv_text()];
    got.sort();
    assert_eq!(got, ["early one", "early two"]);
    let reqs = backend.requests();
    let connect = reqs
        .iter()
        .find(|r| r.event_type() == Some("CONNECT"))
        .unwrap();
    let id = connect.connection_id().unwrap();
    for m in reqs.iter().filter(|r| r.event_type() == Some("MESSAGE")) {
        assert!(
            m.at >= connect.at + Duration::from_millis(290),
            "a message reached the backend before $connect was answered"
        );
        assert_eq!(m.connection_id(), Some(id));
    }
    assert_eq!(reqs.len(), 3);
}

#[test]
fn http_proxy_connect_maps_request_parameters_and_sends_no_body() {
    let backend = Backend::start(|r| {
        if r.path() == "/connect" {
            Reply::empty()
        } else {
            Reply::ok(r.body.clone())
        }
    });
    let mut c = api_config("$request.body.action", Some("{ color = \"blue\" }"), "");
    c.push_str(&http_integration(
        "conn",
        "http_proxy",
        &backend.url("/connect"),
        "request_parameters = { \"integration.request.header.x-conn\" = \"context.connectionId\", \
         \"integration.request.querystring.token\" = \"route.request.querystring.token\", \
         \"integration.request.header.x-ua\" = \"route.request.header.User-Agent\", \
         \"integration.request.header.x-static\" = \"'v1'\", \
         \"integration.request.header.x-route\" = \"context.routeKey\", \
         \"integration.request.header.x-event\" = \"context.eventType\", \
         \"integration.request.querystring.color\" = \"stageVariables.color\" }",
    ));
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&one_way_route("$connect", "conn"));
    c.push_str(&route("$default", "who"));
    let gw = Gateway::start(&c);
    let mut h = ws_headers("127.0.0.1");
    h.push(("User-Agent".into(), "it-client/2".into()));
    let mut raw = raw_with(gw.listen, "/prod?token=s3cr3t&other=x", &h);
    raw.send_text("who am i");
    let id = raw.recv_text();
    assert_id(&id);
    let reqs = backend.wait_requests(1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path(), "/connect");
    assert!(
        r.body.is_empty(),
        "http_proxy $connect has no body: {:?}",
        r.body_str()
    );
    assert_eq!(r.header("x-conn"), Some(id.as_str()), "{r:?}");
    assert_eq!(r.header("x-ua"), Some("it-client/2"), "{r:?}");
    assert_eq!(r.header("x-static"), Some("v1"), "{r:?}");
    assert_eq!(r.header("x-route"), Some("$connect"), "{r:?}");
    assert_eq!(r.header("x-event"), Some("CONNECT"), "{r:?}");
    let mut q = r.query();
    q.sort();
    assert_eq!(
        q,
        vec![
            ("color".to_string(), "blue".to_string()),
            ("token".to_string(), "s3cr3t".to_string())
        ],
        "only the mapped query parameters: {r:?}"
    );
    assert_eq!(reqs.len(), 1);
}

#[test]
fn a_client_that_leaves_during_a_pending_connect_does_not_hurt_the_gateway() {
    let backend = backend_with_connect(|_| Reply::empty().delay_ms(300));
    let gw = connect_gateway(&backend.url("/ws"), "");
    for _ in 0..5 {
        let mut s = tcp(gw.listen);
        s.write_all(&upgrade_bytes("/prod", &ws_headers("127.0.0.1")))
            .unwrap();
        drop(s);
    }
    backend.wait_until("5 CONNECT events", WAIT, |r| {
        r.iter()
            .filter(|r| r.event_type() == Some("CONNECT"))
            .count()
            == 5
    });
    std::thread::sleep(Duration::from_millis(400));
    let mut raw = raw_with(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    raw.send_text("fine");
    assert_eq!(raw.recv_text(), "fine");
}
