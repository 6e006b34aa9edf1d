//! Issue 8's defects on the client side of a worker: the outbound limit holds for a
//! client that never reads (7), closed connections leave no timers behind (8), a
//! client that sends a lot while `$connect` is pending still gets its `$disconnect`
//! (9), and `lastActiveAt` / `route.request.header.*` mean what SPEC §5 and §8 say (12).

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::*;
use crate::mgmt::*;
use crate::support::*;

/// `n` masked 1 KiB text messages, back to back.
fn kib_messages(n: usize) -> Vec<u8> {
    let one = masked(true, OP_TEXT, &[b'x'; 1024]);
    one.repeat(n)
}

#[test]
fn a_client_that_never_reads_cannot_queue_past_the_outbound_limit() {
    // Defect 7: on 8d536df a client sending 1 KB echoes flat out without reading got
    // 143 MB queued against a 1 MiB limit, and the worker kept the peak afterwards.
    let gw = Gateway::start_with(&echo_config(""), &["--workers", "1"]);
    let start_rss = gw.rss_kib();
    let mut slow = gw.raw();
    slow.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let batch = kib_messages(64);
    let (sent, peak) = flood_until_stalled(&gw, batch.len(), 256 << 20, || {
        slow.stream.write_all(&batch)
    });
    // The limit (1 MiB) plus socket buffers on both sides; far below what one
    // unbounded loop turn queued before.
    assert!(
        sent < 64 << 20,
        "the gateway kept reading a client that never reads: {} MiB accepted",
        sent >> 20
    );
    assert!(
        peak < start_rss + 64 * 1024,
        "RSS grew from {start_rss} KiB to {peak} KiB"
    );
    // Another client of the same worker is served meanwhile.
    let mut other = gw.raw();
    other.send_text("still here");
    assert_eq!(other.recv_text(), "still here");
    // When the slow one goes, what it held is given back.
    drop(slow);
    let after = eventually("RSS back near the start", Duration::from_secs(10), || {
        let r = gw.rss_kib();
        (r < start_rss + 16 * 1024).then_some(r)
    });
    assert!(after < start_rss + 16 * 1024);
}

#[test]
fn closed_connections_leave_no_timer_entries() {
    // Defect 8: every closed connection left its idle and maximum-duration entries in
    // the wheel for up to 2 h (3.8 -> 47 MB after 550k connect/close cycles).
    let gw = Gateway::start_with(&echo_config(""), &["--workers", "1"]);
    for i in 0..1500 {
        let mut raw = gw.raw();
        if i % 2 == 0 {
            raw.send_text("hi");
            assert_eq!(raw.recv_text(), "hi");
        }
        drop(raw);
    }
    let entries = eventually("the closes to be seen", Duration::from_secs(10), || {
        let text = call(gw.management, "GET", "/metrics", &[], b"").text();
        let open = metric_sum(&text, "wsgate_open_connections", &[]);
        let entries = metric_sum(&text, "wsgate_timer_entries", &[]);
        (open == 0.0).then_some(entries)
    });
    assert!(
        entries <= 4.0,
        "{entries} timer entries with no open connection after 1500 closed ones"
    );
}

#[test]
fn a_client_that_sends_a_lot_during_connect_keeps_its_messages_and_disconnect() {
    // Defect 9: more than 1 MiB sent while `$connect` was pending dropped the session,
    // so the 2xx that came later owed a `$disconnect` nobody sent.
    let backend = slow_connect_backend(1500);
    let gw = Gateway::start(&slow_connect_echo_config(&backend));

    const N: usize = 2048; // 2 MiB of messages
    let mut stream = tcp(gw.listen);
    stream
        .write_all(&upgrade_bytes("/prod", &ws_headers("127.0.0.1")))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let sender = thread::spawn(move || writer.write_all(&kib_messages(N)));
    let resp = read_response(&mut stream);
    assert_eq!(resp.status, 101, "{resp:?}");
    let id = backend
        .wait_event("CONNECT")
        .connection_id()
        .unwrap()
        .to_string();
    let mut raw = Raw { stream };
    for i in 0..N {
        let got = raw.recv_text();
        assert_eq!(got.len(), 1024, "echo {i} of {N}");
    }
    sender.join().unwrap().expect("all early messages written");
    raw.send(true, 0x8, &close_payload(1000, b"bye"));
    raw.expect_close(1000);
    let d = backend.wait_event_of("DISCONNECT", &id);
    assert_eq!(d.event()["requestContext"]["disconnectStatusCode"], 1000);
    let _ = raw.stream.shutdown(Shutdown::Both);
}

/// A backend that answers `$connect` after `ms` and everything else at once.
pub fn slow_connect_backend(ms: u64) -> Backend {
    Backend::start(move |r| match r.event_type() {
        Some("CONNECT") => Reply::empty().delay_ms(ms),
        _ => Reply::empty(),
    })
}

/// `$connect` and `$disconnect` on `backend` (`aws_proxy`), `$default` a mock echo.
pub fn slow_connect_echo_config(backend: &Backend) -> String {
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/ws"), ""));
    c.push_str(&mock_integration("echo", "$input.body"));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "echo"));
    c
}

fn last_active(m: &mut Mgmt, id: &str) -> (u64, u64) {
    let r = m.get(id);
    r.expect(200);
    let v = r.json();
    (
        parse_iso8601_ms(v["connectedAt"].as_str().unwrap()),
        parse_iso8601_ms(v["lastActiveAt"].as_str().unwrap()),
    )
}

#[test]
fn last_active_at_counts_from_the_open_not_from_the_connect_request() {
    // Defect 12: `lastActiveAt` was early by the `$connect` latency.
    let backend = slow_connect_backend(1200);
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/ws"), ""));
    c.push_str(&one_way_route("$connect", "backend"));
    let gw = Gateway::start(&c);
    let _raw = raw_with(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    let id = backend
        .wait_event("CONNECT")
        .connection_id()
        .unwrap()
        .to_string();
    let (connected, active) = last_active(&mut Mgmt::connect(gw.management), &id);
    assert!(
        active >= connected + 1000,
        "lastActiveAt {active} is before the 101 (connectedAt {connected}, $connect took 1.2 s)"
    );
}

#[test]
fn server_pings_and_partial_frames_do_not_move_last_active_at() {
    // Defect 12 / SPEC §8: data frames either way and control frames from the client
    // move `lastActiveAt`; our own pings and a frame still arriving do not.
    let gw = Gateway::start(&whoami_config("", "ping_interval = \"1s\""));
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    let (_, before) = last_active(&mut m, &id);
    // Half a frame: header and two payload bytes of ten.
    let frame = masked(true, OP_TEXT, b"0123456789");
    raw.write(&frame[..8]);
    thread::sleep(Duration::from_millis(2300)); // two server pings go out meanwhile
    let (_, after) = last_active(&mut m, &id);
    assert_eq!(after, before, "lastActiveAt moved without a complete frame");
    // The rest of the frame completes a message: now it moves.
    let t = Instant::now();
    raw.write(&frame[8..]);
    loop {
        let f = raw.frame();
        if f.opcode == OP_TEXT {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "no reply");
    }
    let (_, moved) = last_active(&mut m, &id);
    assert!(moved >= before + 2000, "{moved} vs {before}");
}

#[test]
fn header_mappings_work_on_message_routes_without_an_http_connect() {
    // Defect 12: `route.request.header.*` was empty unless `$connect` was an HTTP route.
    let backend = Backend::ok();
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&http_integration(
        "msg",
        "http_proxy",
        &backend.url("/msg"),
        "request_parameters = { \"integration.request.header.x-ua\" = \"route.request.header.User-Agent\" }",
    ));
    c.push_str(&mock_integration("ok", ""));
    c.push_str(&one_way_route("$connect", "ok"));
    c.push_str(&one_way_route("$default", "msg"));
    let gw = Gateway::start(&c);
    let mut h = ws_headers("127.0.0.1");
    h.push(("User-Agent".into(), "probe/1".into()));
    let mut raw = raw_with(gw.listen, "/prod", &h);
    raw.send_text("hello");
    let r = backend.wait_requests(1).remove(0);
    assert_eq!(r.header("x-ua"), Some("probe/1"), "{:?}", r.headers);
}
