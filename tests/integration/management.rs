//! SPEC §6 and §8: the management API on its own listener — `POST`, `GET`, `DELETE
//! /@connections/{id}` with and without the stage prefix, raw and percent-encoded ids,
//! the AWS statuses, `x-amzn-ErrorType` headers and `{"message": ...}` bodies, token
//! auth, 404/405, `/health`, `/metrics`, keep-alive and pipelining.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::*;
use crate::mgmt::*;
use crate::support::*;

fn two_workers(management: &str, limits: &str) -> Gateway {
    Gateway::start_with(&whoami_config(management, limits), &["--workers", "2"])
}

// ---------------------------------------------------------------------------
// GET.

#[test]
fn get_returns_iso8601_times_and_identity() {
    let gw = two_workers("", "");
    let t0 = now_ms();
    let mut headers = ws_headers("127.0.0.1");
    headers.push(("User-Agent".into(), "wsgate-test/1.0 (mgmt)".into()));
    let mut raw = raw_with(gw.listen, "/prod", &headers);
    let t1 = now_ms();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let r = m.get(&id);
    r.expect(200);
    assert!(
        r.header("Content-Type")
            .unwrap_or("")
            .starts_with("application/json"),
        "{r:?}"
    );
    let v = r.json();
    assert_eq!(
        keys(&v),
        sorted(&["connectedAt", "identity", "lastActiveAt"]),
        "{v}"
    );
    assert_eq!(
        v["identity"],
        json!({"sourceIp": "127.0.0.1", "userAgent": "wsgate-test/1.0 (mgmt)"}),
        "{v}"
    );
    let connected = parse_iso8601_ms(v["connectedAt"].as_str().expect("connectedAt string"));
    let active = parse_iso8601_ms(v["lastActiveAt"].as_str().expect("lastActiveAt string"));
    let t2 = now_ms();
    assert!(
        t0 <= connected && connected <= t1,
        "connectedAt {connected} outside the handshake window [{t0}, {t1}]"
    );
    assert!(
        connected <= active && active <= t2,
        "lastActiveAt {active} outside [{connected}, {t2}]"
    );
}

#[test]
fn get_identity_user_agent_is_null_without_the_header() {
    let gw = two_workers("", "");
    let mut raw = gw.raw(); // no User-Agent
    let id = id_of(&mut raw);
    let v = Mgmt::connect(gw.management).get(&id).expect(200).json();
    assert_eq!(
        v["identity"],
        json!({"sourceIp": "127.0.0.1", "userAgent": null}),
        "{v}"
    );
}

#[test]
fn last_active_at_moves_with_traffic_in_either_direction_and_client_pings() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let times = |m: &mut Mgmt| {
        let v = m.get(&id).expect(200).json();
        (
            parse_iso8601_ms(v["connectedAt"].as_str().unwrap()),
            parse_iso8601_ms(v["lastActiveAt"].as_str().unwrap()),
        )
    };
    let (connected, mut last) = times(&mut m);

    // A GET is not traffic: asking again does not move it.
    thread::sleep(Duration::from_millis(30));
    let (c, again) = times(&mut m);
    assert_eq!(
        (c, again),
        (connected, last),
        "GET itself must not count as activity"
    );

    // A message from the client.
    thread::sleep(Duration::from_millis(30));
    let before = now_ms();
    assert_eq!(id_of(&mut raw), id);
    thread::sleep(Duration::from_millis(20));
    let (c, active) = times(&mut m);
    assert_eq!(c, connected, "connectedAt is fixed");
    assert!(
        active > last && active + 1 >= before,
        "lastActiveAt must move after a message: was {last}, now {active} (sent at {before})"
    );
    last = active;

    // A ping from the client.
    thread::sleep(Duration::from_millis(30));
    let before = now_ms();
    raw.send(true, OP_PING, b"p");
    assert_eq!(raw.frame().opcode, OP_PONG);
    thread::sleep(Duration::from_millis(20));
    let (_, active) = times(&mut m);
    assert!(
        active > last && active + 1 >= before,
        "lastActiveAt must move after a client ping: was {last}, now {active}"
    );
    last = active;

    // A push to the client (a data frame out).
    thread::sleep(Duration::from_millis(30));
    let before = now_ms();
    m.post(&id, b"pushed").expect(200);
    assert_eq!(raw.recv_text(), "pushed");
    thread::sleep(Duration::from_millis(20));
    let (_, active) = times(&mut m);
    assert!(
        active > last && active + 1 >= before,
        "lastActiveAt must move after a push: was {last}, now {active}"
    );
    assert!(active <= now_ms());
}

// ---------------------------------------------------------------------------
// POST, ids and paths.

#[test]
fn raw_and_percent_encoded_ids_work_with_and_without_the_stage() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let body = &id[..15];
    let forms = [id.clone(), format!("{body}%3D"), format!("{body}%3d")];
    let mut m = Mgmt::connect(gw.management);
    let mut n = 0;
    for prefix in ["", "/prod"] {
        for form in &forms {
            let target = format!("{prefix}/@connections/{form}");
            n += 1;
            let msg = format!("push {n} via {target}");
            m.call("POST", &target, &[], msg.as_bytes()).expect(200);
            assert_eq!(raw.recv_text(), msg);
            let v = m.call("GET", &target, &[], b"").expect(200).json();
            assert_eq!(v["identity"]["sourceIp"], "127.0.0.1", "GET {target}: {v}");
        }
    }
    // DELETE through the stage prefix and the percent-encoded form.
    m.call("DELETE", &format!("/prod/@connections/{body}%3D"), &[], b"")
        .expect(204);
    raw.expect_close_with(1000, "Connection Closed Normally");
}

#[test]
fn post_answers_200_with_an_empty_body_and_delivers_utf8_as_text() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let text = "héllo ✓ {\"json\": [1, 2]}";
    let r = m.post(&id, text.as_bytes());
    r.expect(200);
    assert!(r.body.is_empty(), "200 for POST is empty: {r:?}");
    let (op, payload, _) = raw.message_frames();
    assert_eq!(op, OP_TEXT);
    assert_eq!(payload, text.as_bytes());
    // An empty body is an empty text message.
    m.post(&id, b"").expect(200);
    let (op, payload, _) = raw.message_frames();
    assert_eq!((op, payload.len()), (OP_TEXT, 0));
}

#[test]
fn post_at_the_limit_is_fragmented_and_over_the_limit_is_413() {
    let gw = two_workers("", "max_frame_bytes = 512\nmax_message_bytes = 2048");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let body: Vec<u8> = (0..2048).map(|i| b'a' + (i % 26) as u8).collect();
    m.post(&id, &body).expect(200);
    let (op, payload, frames) = raw.message_frames();
    assert_eq!(op, OP_TEXT);
    assert_eq!(payload, body);
    assert!(
        frames.iter().all(|f| f.payload.len() <= 512),
        "frames must be ≤ max_frame_bytes: {:?}",
        frames.iter().map(|f| f.payload.len()).collect::<Vec<_>>()
    );
    assert!(frames.len() >= 4, "2048 bytes in ≤ 512-byte frames");

    let big = vec![b'x'; 2049];
    call(
        gw.management,
        "POST",
        &format!("/@connections/{id}"),
        &[],
        &big,
    )
    .expect_error(413, "PayloadTooLargeException");
    call(
        gw.management,
        "POST",
        &format!("/prod/@connections/{id}"),
        &[],
        &big,
    )
    .expect_error(413, "PayloadTooLargeException");
    // Nothing of it reached the client, which still works.
    m = Mgmt::connect(gw.management);
    m.post(&id, b"after").expect(200);
    assert_eq!(raw.recv_text(), "after");
}

// ---------------------------------------------------------------------------
// 410 and 400.

#[test]
fn closed_id_is_410_gone() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    raw.send(true, OP_CLOSE, &close_payload(1000, b"bye"));
    assert_eq!(raw.frame().close_code(), Some(1000));
    wait_closed(&mut raw.stream, READ_TIMEOUT);
    let mut m = Mgmt::connect(gw.management);
    for prefix in ["", "/prod"] {
        let t = format!("{prefix}/@connections/{id}");
        m.call("POST", &t, &[], b"late")
            .expect_error(410, "GoneException");
        m.call("GET", &t, &[], b"")
            .expect_error(410, "GoneException");
        m.call("DELETE", &t, &[], b"")
            .expect_error(410, "GoneException");
    }
}

#[test]
fn deleted_id_is_410_gone_afterwards() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let r = m.delete(&id);
    r.expect(204);
    assert!(r.body.is_empty(), "{r:?}");
    raw.expect_close_with(1000, "Connection Closed Normally");
    m.post(&id, b"late").expect_error(410, "GoneException");
    m.get(&id).expect_error(410, "GoneException");
    m.delete(&id).expect_error(410, "GoneException");
}

#[test]
fn well_formed_unknown_ids_are_410_gone() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut unknown = vec![
        // Ids are a keyed permutation (SPEC §6), so flipping any bits of a live id
        // gives an unrelated one: another node, worker, epoch, slot or generation.
        // Each tweak flips at least one bit, so it never gives the id back.
        tweak_id(&id, |b| b[6] ^= 0x01),
        tweak_id(&id, |b| b[4] ^= 0x80),
        tweak_id(&id, |b| b[3] ^= 0x40),
        tweak_id(&id, |b| b[10] ^= 0x01),
        tweak_id(&id, |b| b[0] ^= 0x07),
        tweak_id(&id, |b| b[0] ^= 0xFF),
        // Random well-formed ids; the last two have non-zero trailing bits, which
        // still match ^[A-Za-z0-9_-]{15}=$.
        "AAAAAAAAAAAAAAA=".to_string(),
        "Zm9vYmFyYmF6cXU=".to_string(),
        "zzzzzzzzzzzzzzz=".to_string(),
        "_-_-_-_-_-_-_-_=".to_string(),
    ];
    unknown.push(tweak_id(&id, |b| b[0] ^= 1));
    let mut m = Mgmt::connect(gw.management);
    for u in &unknown {
        assert_ne!(u, &id);
        m.post(u, b"x").expect_error(410, "GoneException");
        m.get(u).expect_error(410, "GoneException");
        m.delete(u).expect_error(410, "GoneException");
        m.call("GET", &format!("/prod/@connections/{u}"), &[], b"")
            .expect_error(410, "GoneException");
    }
    // The real one is untouched.
    m.post(&id, b"still here").expect(200);
    assert_eq!(raw.recv_text(), "still here");
}

#[test]
fn malformed_ids_are_400_bad_request() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let body = &id[..15];
    let malformed = [
        "abc".to_string(),
        body.to_string(),   // no padding
        format!("{id}A"),   // 17 characters
        format!("{body}A"), // 16 characters, no '='
        format!("A{id}"),
        "AAAAAAAAAAAAAA==".to_string(), // 14 + "=="
        "AAAAAAAAAAAAAA+=".to_string(), // standard base64 alphabet
        "AAAAAAAAAAAAAA/=".to_string(),
        "AAAAAAA.AAAAAAA=".to_string(),
        format!("{body}%3E"), // percent-encoded, but not '='
        format!("{body}%2"),
        "0123456789012345678901234567890123456789".to_string(),
    ];
    let mut m = Mgmt::connect(gw.management);
    for bad in &malformed {
        m.post(bad, b"x").expect_error(400, "BadRequestException");
        m.get(bad).expect_error(400, "BadRequestException");
        m.delete(bad).expect_error(400, "BadRequestException");
        m.call("POST", &format!("/prod/@connections/{bad}"), &[], b"x")
            .expect_error(400, "BadRequestException");
    }
    m.post(&id, b"unharmed").expect(200);
    assert_eq!(raw.recv_text(), "unharmed");
}

#[test]
fn id_still_in_connect_is_410_gone() {
    // $connect answers after 1 s; the id is known from the CONNECT event meanwhile.
    let backend = Backend::start(|r| match r.event_type() {
        Some("CONNECT") => Reply::empty().delay_ms(1000),
        Some("MESSAGE") => Reply::ok(r.connection_id().unwrap().to_string()),
        _ => Reply::empty(),
    });
    let mut c = header_config("", "");
    c.push_str(&aws_integration(
        "backend",
        &backend.url("/ws"),
        "timeout = \"5s\"",
    ));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "2"]);
    let listen = gw.listen;
    let start = Instant::now();
    let client = thread::spawn(move || raw_with(listen, "/prod", &ws_headers("127.0.0.1")));
    let id = backend
        .wait_event("CONNECT")
        .connection_id()
        .expect("CONNECT carries the id")
        .to_string();
    assert_id(&id);
    let mut m = Mgmt::connect(gw.management);
    m.post(&id, b"too early").expect_error(410, "GoneException");
    m.get(&id).expect_error(410, "GoneException");
    m.call(
        "POST",
        &format!("/prod/@connections/{id}"),
        &[],
        b"too early",
    )
    .expect_error(410, "GoneException");
    assert!(
        start.elapsed() < Duration::from_millis(900) && !client.is_finished(),
        "the checks must run while $connect is still pending ({:?})",
        start.elapsed()
    );
    let mut raw = client.join().expect("handshake after $connect");
    assert!(start.elapsed() >= Duration::from_millis(900));
    // Now it is live: the same id works, and the refused push was never delivered.
    m.post(&id, b"now").expect(200);
    assert_eq!(raw.recv_text(), "now");
    raw.send_text("who");
    assert_eq!(raw.recv_text(), id);
}

// ---------------------------------------------------------------------------
// DELETE.

#[test]
fn delete_with_custom_codes_and_reasons() {
    let gw = two_workers("", "");
    let mut m = Mgmt::connect(gw.management);
    let long_ok = "r".repeat(123);
    let cases: [(String, u16, String); 5] = [
        ("?code=4001&reason=bye".into(), 4001, "bye".into()),
        ("?code=4999&reason=bye%20now".into(), 4999, "bye now".into()),
        ("?code=4000".into(), 4000, String::new()),
        ("?code=1000&reason=done".into(), 1000, "done".into()),
        (
            format!("?code=4002&reason={long_ok}"),
            4002,
            long_ok.clone(),
        ),
    ];
    for (query, code, reason) in &cases {
        let mut raw = gw.raw();
        let id = id_of(&mut raw);
        m.call(
            "DELETE",
            &format!("/prod/@connections/{id}{query}"),
            &[],
            b"",
        )
        .expect(204);
        raw.expect_close_with(*code, reason);
    }
}

#[test]
fn delete_with_a_bad_code_or_reason_is_400_and_closes_nothing() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let long = "r".repeat(124);
    let bad = [
        "?code=1001".to_string(),
        "?code=1006".to_string(),
        "?code=3000".to_string(),
        "?code=3999".to_string(),
        "?code=5000".to_string(),
        "?code=999".to_string(),
        "?code=0".to_string(),
        "?code=abc".to_string(),
        "?code=".to_string(),
        "?code=70000".to_string(),
        format!("?code=4001&reason={long}"),
    ];
    for q in &bad {
        m.call("DELETE", &format!("/@connections/{id}{q}"), &[], b"")
            .expect_error(400, "BadRequestException");
    }
    // Still open and reachable.
    m.post(&id, b"still open").expect(200);
    assert_eq!(raw.recv_text(), "still open");
    assert_eq!(id_of(&mut raw), id);
}

// ---------------------------------------------------------------------------
// Auth.

#[test]
fn token_auth_accepts_the_bearer_token_and_refuses_others_with_403() {
    let gw = two_workers("auth = \"token\"\ntoken = \"s3cret-Token\"", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let path = format!("/prod/@connections/{id}");
    let wrong: [&[(&str, &str)]; 6] = [
        &[],
        &[("Authorization", "Bearer wrong")],
        &[("Authorization", "Bearer s3cret-Toke")],
        &[("Authorization", "Bearer s3cret-Token2")],
        &[("Authorization", "Bearer s3cret-token")],
        &[("Authorization", "s3cret-Token")],
    ];
    for h in wrong {
        m.call("POST", &path, h, b"forged")
            .expect_error(403, "ForbiddenException");
        m.call("GET", &path, h, b"")
            .expect_error(403, "ForbiddenException");
        m.call("DELETE", &path, h, b"")
            .expect_error(403, "ForbiddenException");
    }
    let ok: &[(&str, &str)] = &[("Authorization", "Bearer s3cret-Token")];
    m.call("POST", &path, ok, b"authorized").expect(200);
    // The refused pushes were not delivered; the accepted one was.
    assert_eq!(raw.recv_text(), "authorized");
    let v = m.call("GET", &path, ok, b"").expect(200).json();
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    m.call("DELETE", &format!("/@connections/{id}"), ok, b"")
        .expect(204);
    raw.expect_close_with(1000, "Connection Closed Normally");
}

// ---------------------------------------------------------------------------
// 404, 405, /health, /metrics.

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let gw = two_workers("", "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    for path in [
        "/".to_string(),
        "/prod".to_string(),
        "/nope".to_string(),
        format!("/connections/{id}"),
        format!("/prod/connections/{id}"),
        format!("/other/@connections/{id}"),
        format!("/prod/prod/@connections/{id}"),
        format!("/@connection/{id}"),
        "/healthz".to_string(),
    ] {
        m.call("GET", &path, &[], b"").expect_some_error(404);
    }
    let conn = format!("/@connections/{id}");
    for method in ["PUT", "PATCH", "OPTIONS"] {
        m.call(method, &conn, &[], b"").expect_some_error(405);
        m.call(method, &format!("/prod{conn}"), &[], b"")
            .expect_some_error(405);
    }
    m.call("POST", "/health", &[], b"").expect_some_error(405);
    m.call("DELETE", "/metrics", &[], b"")
        .expect_some_error(405);
    // The keep-alive connection survived every error, and nothing was sent.
    m.post(&id, b"only this").expect(200);
    assert_eq!(raw.recv_text(), "only this");
}

#[test]
fn health_reports_every_worker() {
    for workers in ["1", "2", "3"] {
        let gw = Gateway::start_with(&whoami_config("", ""), &["--workers", workers]);
        let mut m = Mgmt::connect(gw.management);
        for _ in 0..4 {
            let r = m.call("GET", "/health", &[], b"");
            r.expect(200);
            assert_eq!(
                r.json(),
                json!({"status": "ok", "workers": workers.parse::<u64>().unwrap()}),
                "{:?}",
                r.text()
            );
        }
    }
}

#[test]
fn metrics_count_connects_and_messages() {
    let gw = two_workers("", "");
    let scrape = || {
        let r = call(gw.management, "GET", "/metrics", &[], b"");
        r.expect(200);
        assert!(
            r.header("Content-Type")
                .unwrap_or("")
                .starts_with("text/plain"),
            "{r:?}"
        );
        r.text()
    };
    let before = scrape();
    let connects0 = metric_sum(&before, "wsgate_connect_total", &[]);
    let in0 = metric_sum(&before, "wsgate_messages_total", &["direction=\"in\""]);
    let out0 = metric_sum(&before, "wsgate_messages_total", &["direction=\"out\""]);
    assert!(
        before.contains("wsgate_integration_latency_seconds"),
        "{before}"
    );

    let mut clients: Vec<Raw> = (0..4).map(|_| gw.raw()).collect();
    let mut sent = 0;
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in 0..=i {
            id_of(c); // one in, one out
            sent += 1;
        }
    }
    let after = scrape();
    assert_eq!(
        metric_sum(&after, "wsgate_connect_total", &[]) - connects0,
        4.0,
        "wsgate_connect_total counts the 4 connections:\n{after}"
    );
    assert_eq!(
        metric_sum(&after, "wsgate_messages_total", &["direction=\"in\""]) - in0,
        sent as f64,
        "wsgate_messages_total{{direction=\"in\"}} counts the {sent} messages sent:\n{after}"
    );
    let _ = out0;
}

#[test]
fn metrics_count_messages_and_bytes_out_for_route_replies_and_pushes() {
    // MessageCount counts messages "from or to the client" (SPEC §9); bytes in/out.
    let gw = two_workers("", "");
    let scrape = || {
        call(gw.management, "GET", "/metrics", &[], b"")
            .expect(200)
            .text()
    };
    let before = scrape();
    let out0 = metric_sum(&before, "wsgate_messages_total", &["direction=\"out\""]);
    let bytes_in0 = metric_sum(&before, "wsgate_bytes_total", &["direction=\"in\""]);
    let bytes_out0 = metric_sum(&before, "wsgate_bytes_total", &["direction=\"out\""]);
    let mut raw = gw.raw();
    let id = id_of(&mut raw); // 8 bytes in, a 16-byte route reply out
    let mut m = Mgmt::connect(gw.management);
    m.post(&id, b"0123456789").expect(200); // a 10-byte push out
    assert_eq!(raw.recv_text(), "0123456789");
    let after = scrape();
    let bytes_in = metric_sum(&after, "wsgate_bytes_total", &["direction=\"in\""]) - bytes_in0;
    assert_eq!(bytes_in, 8.0, "bytes in: the 8-byte message:\n{after}");
    let out = metric_sum(&after, "wsgate_messages_total", &["direction=\"out\""]) - out0;
    let bytes_out = metric_sum(&after, "wsgate_bytes_total", &["direction=\"out\""]) - bytes_out0;
    assert_eq!(
        (out, bytes_out),
        (2.0, 26.0),
        "messages and payload bytes out: the 16-byte route reply and the 10-byte push:\n{after}"
    );
}

// ---------------------------------------------------------------------------
// Keep-alive and pipelining.

#[test]
fn pipelined_requests_are_answered_in_order_across_workers() {
    let gw = two_workers("", "");
    let mut clients = clients_on_both_workers(&gw);
    // One write: for each client a POST, a GET and a malformed GET, then /health.
    let mut bytes = Vec::new();
    for (i, (_, id)) in clients.iter().enumerate() {
        let t = format!("/@connections/{id}");
        bytes.extend(request_bytes(
            "POST",
            &t,
            &[],
            format!("pipelined {i}").as_bytes(),
            false,
        ));
        bytes.extend(request_bytes("GET", &t, &[], b"", false));
        bytes.extend(request_bytes("GET", "/@connections/bad", &[], b"", false));
    }
    bytes.extend(request_bytes("GET", "/health", &[], b"", false));
    let mut m = Mgmt::connect(gw.management);
    std::io::Write::write_all(&mut m.stream, &bytes).unwrap();
    for _ in &clients {
        let r = m.read_reply();
        r.expect(200);
        assert!(r.body.is_empty(), "a POST's 200 comes first: {r:?}");
        let r = m.read_reply();
        r.expect(200);
        assert!(r.json()["connectedAt"].is_string(), "then the GET: {r:?}");
        m.read_reply().expect_error(400, "BadRequestException");
    }
    let r = m.read_reply();
    assert_eq!(r.expect(200).json(), json!({"status": "ok", "workers": 2}));
    for (i, (raw, _)) in clients.iter_mut().enumerate() {
        assert_eq!(raw.recv_text(), format!("pipelined {i}"));
    }
}
