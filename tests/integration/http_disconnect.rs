//! SPEC §5 and §7: `$disconnect` reaches the backend after every ending of a
//! connection whose `$connect` succeeded, with `disconnectStatusCode` and
//! `disconnectReason` per §7's table, and never for a refused `$connect`.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::*;
use crate::support::*;

/// CONNECT: 403 when the query has `deny`, after `delay` ms when it has `delay`;
/// messages echoed; DISCONNECT 200.
fn lifecycle_backend() -> Backend {
    Backend::start(|r| match r.event_type() {
        Some("CONNECT") => {
            let q = &r.event()["queryStringParameters"];
            let delay = q["delay"].as_str().map(|d| d.parse().unwrap()).unwrap_or(0);
            if q["deny"].is_string() {
                Reply::new(403, "denied").delay_ms(delay)
            } else {
                Reply::empty().delay_ms(delay)
            }
        }
        Some("MESSAGE") => Reply::ok(r.message().unwrap()),
        _ => Reply::empty(),
    })
}

fn lifecycle_gateway(backend: &Backend, limits: &str) -> Gateway {
    let mut c = api_config("$request.body.action", None, limits);
    c.push_str(&aws_integration("backend", &backend.url("/life"), ""));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "backend"));
    Gateway::start(&c)
}

/// Opens a connection and returns it with its id and connectedAt (from CONNECT).
fn open(gw: &Gateway, backend: &Backend) -> (Raw, String, u64) {
    let before = backend.events("CONNECT").len();
    let raw = raw_with(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    let reqs = backend.wait_until("a CONNECT", WAIT, |r| {
        r.iter()
            .filter(|r| r.event_type() == Some("CONNECT"))
            .count()
            > before
    });
    let c = reqs
        .iter()
        .filter(|r| r.event_type() == Some("CONNECT"))
        .nth(before)
        .unwrap();
    let id = c.connection_id().unwrap().to_string();
    let at = c.event()["requestContext"]["connectedAt"].as_u64().unwrap();
    (raw, id, at)
}

/// Waits for `id`'s DISCONNECT and checks it: code, reason, the rest of the shape.
fn assert_disconnect(
    backend: &Backend,
    id: &str,
    connected_at: u64,
    from_ms: u64,
    code: u16,
    reason: &str,
) {
    let d = backend.wait_event_of("DISCONNECT", id);
    let to_ms = now_ms();
    let ev = d.event();
    let ctx = &ev["requestContext"];
    assert_eq!(
        (
            ctx["disconnectStatusCode"].clone(),
            ctx["disconnectReason"].clone()
        ),
        (json!(code), json!(reason)),
        "disconnectStatusCode / disconnectReason in {ev:#}"
    );
    check_context(
        ev,
        &Expect {
            route_key: "$disconnect",
            event_type: "DISCONNECT",
            connection_id: Some(id),
            connected_at: Some(connected_at),
            domain_name: "127.0.0.1",
            user_agent: None,
            from_ms,
            to_ms,
        },
    );
    assert_eq!(ev["headers"]["Host"], "127.0.0.1");
    // Exactly one.
    std::thread::sleep(Duration::from_millis(100));
    let n = backend
        .events("DISCONNECT")
        .iter()
        .filter(|r| r.connection_id() == Some(id))
        .count();
    assert_eq!(n, 1, "one $disconnect per connection");
}

#[test]
fn client_close_with_code_and_reason() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    raw.send_text("hello");
    assert_eq!(raw.recv_text(), "hello");
    let t0 = now_ms();
    raw.send(true, OP_CLOSE, &close_payload(4000, b"bye"));
    let f = raw.frame();
    assert_eq!(f.close_code(), Some(4000), "close echoed: {f:?}");
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    assert_disconnect(&backend, &id, at, t0, 4000, "bye");
}

#[test]
fn client_close_with_1000_and_no_reason() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    raw.send(true, OP_CLOSE, &close_payload(1000, b""));
    assert_eq!(raw.frame().close_code(), Some(1000));
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    assert_disconnect(&backend, &id, at, t0, 1000, "");
}

#[test]
fn client_close_without_a_code_is_1005() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    raw.send(true, OP_CLOSE, &[]);
    let f = raw.frame();
    assert_eq!(f.opcode, OP_CLOSE);
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    assert_disconnect(&backend, &id, at, t0, 1005, "");
}

#[test]
fn tcp_lost_without_a_close_frame_is_1006() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    drop(raw);
    assert_disconnect(&backend, &id, at, t0, 1006, "");
}

#[test]
fn tcp_lost_mid_frame_is_1006() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    let frame = masked(true, OP_TEXT, b"half a frame and then nothing");
    raw.write(&frame[..10]);
    let t0 = now_ms();
    let _ = raw.stream.shutdown(std::net::Shutdown::Both);
    drop(raw);
    assert_disconnect(&backend, &id, at, t0, 1006, "");
}

#[test]
fn idle_timeout_is_1001_idle_timeout() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "idle_timeout = \"1s\"");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    raw.expect_close_with(1001, "Idle timeout");
    assert_disconnect(&backend, &id, at, t0, 1001, "Idle timeout");
}

#[test]
fn maximum_duration_is_1001_maximum_connection_duration() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "max_connection_duration = \"1s\"");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    raw.expect_close_with(1001, "Maximum connection duration");
    assert_disconnect(&backend, &id, at, t0, 1001, "Maximum connection duration");
}

/// Sends `bytes`, expects a close with `code`, and checks `$disconnect` carries the
/// same code and the reason the client was sent.
fn server_close_case(limits: &str, bytes: &[u8], code: u16) {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, limits);
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    raw.write_lossy(bytes);
    let reason = raw.expect_close(code);
    assert_disconnect(&backend, &id, at, t0, code, &reason);
}

#[test]
fn a_protocol_violation_is_1002_with_the_reason_sent() {
    // An unmasked client frame.
    server_close_case("", &encode_frame(true, 0, OP_TEXT, None, b"unmasked"), 1002);
}

#[test]
fn a_binary_message_when_rejected_is_1003() {
    server_close_case("", &masked(true, OP_BINARY, &[1, 2, 3]), 1003);
}

#[test]
fn invalid_utf8_is_1007() {
    server_close_case("", &masked(true, OP_TEXT, &[0x66, 0xff, 0x66]), 1007);
}

#[test]
fn a_frame_too_large_is_1009() {
    server_close_case(
        "max_frame_bytes = 1024",
        &masked(true, OP_TEXT, &[b'a'; 2000]),
        1009,
    );
}

#[test]
fn shutdown_is_1001_server_shutting_down_and_disconnect_is_sent_before_exit() {
    let backend = lifecycle_backend();
    let mut gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    gw.terminate();
    raw.expect_close_with(1001, "Server shutting down");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    // Sent before the process exited, so it is already there.
    let d = backend.events("DISCONNECT");
    assert_eq!(d.len(), 1, "the $disconnect was sent before exit");
    assert_disconnect(&backend, &id, at, t0, 1001, "Server shutting down");
}

#[test]
fn no_disconnect_for_a_refused_connect() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut s, resp) = upgrade(gw.listen, "/prod?deny=1", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(String::from_utf8_lossy(&read_body(&mut s, &resp)), "denied");
    drop(s);
    let refused = backend
        .wait_event("CONNECT")
        .connection_id()
        .unwrap()
        .to_string();
    // A connection that was let in, closed afterwards, does get one (so the backend
    // would have seen the refused one's too).
    let (raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    drop(raw);
    assert_disconnect(&backend, &id, at, t0, 1006, "");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        backend
            .events("DISCONNECT")
            .iter()
            .all(|r| r.connection_id() != Some(refused.as_str())),
        "a $disconnect for the refused connection {refused}"
    );
    assert_eq!(backend.events("DISCONNECT").len(), 1);
}

#[test]
fn a_client_gone_between_a_2xx_connect_and_the_101_gets_disconnect_1006() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let mut s = tcp(gw.listen);
    s.write_all(&upgrade_bytes("/prod?delay=400", &ws_headers("127.0.0.1")))
        .unwrap();
    let c = backend.wait_event("CONNECT");
    let id = c.connection_id().unwrap().to_string();
    let at = c.event()["requestContext"]["connectedAt"].as_u64().unwrap();
    let t0 = now_ms();
    drop(s); // before the backend answers
    assert_disconnect(&backend, &id, at, t0, 1006, "");
}

#[test]
fn a_client_gone_during_a_refused_connect_gets_no_disconnect() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let mut s = tcp(gw.listen);
    s.write_all(&upgrade_bytes(
        "/prod?deny=1&delay=300",
        &ws_headers("127.0.0.1"),
    ))
    .unwrap();
    let c = backend.wait_event("CONNECT");
    drop(s);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        backend.events("DISCONNECT").is_empty(),
        "{:?} got a $disconnect after its $connect was refused",
        c.connection_id()
    );
    // The gateway is fine.
    let (mut raw, _, _) = open(&gw, &backend);
    raw.send_text("ok");
    assert_eq!(raw.recv_text(), "ok");
}

#[test]
fn disconnect_is_sent_when_there_is_no_connect_route() {
    let backend = lifecycle_backend();
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/life"), ""));
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "who"));
    let gw = Gateway::start(&c);
    let t0 = now_ms();
    let mut raw = raw_with(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    raw.send_text("who");
    let id = raw.recv_text();
    assert_id(&id);
    raw.send(true, OP_CLOSE, &close_payload(4001, b"done"));
    assert_eq!(raw.frame().close_code(), Some(4001));
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    let d = backend.wait_event_of("DISCONNECT", &id);
    let ctx = &d.event()["requestContext"];
    assert_eq!(ctx["disconnectStatusCode"], json!(4001));
    assert_eq!(ctx["disconnectReason"], json!("done"));
    let at = ctx["connectedAt"].as_u64().unwrap();
    assert!(
        at + CLOCK_SLACK_MS >= t0,
        "connectedAt {at} before the test began {t0}"
    );
    assert_eq!(
        backend.requests().len(),
        1,
        "only the DISCONNECT reached the backend"
    );
}

#[test]
fn a_failing_disconnect_backend_is_tried_once_and_harms_nothing() {
    let backend = Backend::start(|r| match r.event_type() {
        Some("DISCONNECT") => Reply::new(500, "broken"),
        Some("MESSAGE") => Reply::ok(r.message().unwrap()),
        _ => Reply::empty(),
    });
    let gw = lifecycle_gateway(&backend, "");
    let start = Instant::now();
    for i in 0..3 {
        let (mut raw, id, _) = open(&gw, &backend);
        raw.send_text(&format!("m{i}"));
        assert_eq!(raw.recv_text(), format!("m{i}"));
        drop(raw);
        backend.wait_event_of("DISCONNECT", &id);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(backend.events("DISCONNECT").len(), 3, "one try each");
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// `DELETE /@connections/{id}{query}` on the management listener; returns the status.
fn management_delete(gw: &Gateway, id: &str, query: &str) -> u16 {
    let req = format!(
        "DELETE /@connections/{id}{query} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        gw.management
    );
    http(gw.management, req.as_bytes()).status
}

#[test]
fn management_delete_is_1000_connection_closed_normally() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    assert_eq!(management_delete(&gw, &id, ""), 204);
    raw.expect_close_with(1000, "Connection Closed Normally");
    assert_disconnect(&backend, &id, at, t0, 1000, "Connection Closed Normally");
}

#[test]
fn management_delete_with_code_and_reason() {
    let backend = lifecycle_backend();
    let gw = lifecycle_gateway(&backend, "");
    let (mut raw, id, at) = open(&gw, &backend);
    let t0 = now_ms();
    assert_eq!(management_delete(&gw, &id, "?code=4321&reason=kicked"), 204);
    raw.expect_close_with(4321, "kicked");
    assert_disconnect(&backend, &id, at, t0, 4321, "kicked");
}
