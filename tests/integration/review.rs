//! Defects a review of the hardening work found, each with the sequence that showed
//! it: route responses past the outbound limit, a FIN that arrived while reading was
//! paused, `$disconnect` and the drain at shutdown for a client that left during
//! `$connect`, a small outbound limit that paused a client for good, and the connect
//! count of an upgrade closed in the same read.

use std::io::Write;
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::*;
use crate::limits::{slow_connect_backend, slow_connect_echo_config};
use crate::mgmt::*;
use crate::support::*;

#[test]
fn route_responses_that_pile_up_past_twice_the_limit_close_with_1008() {
    // Slow echoes: every message is read (and its call in flight) before any reply.
    let backend = Backend::start(|r| Reply::ok(r.message().unwrap_or_default()).delay_ms(500));
    let mut c = api_config(
        "$request.body.action",
        None,
        "max_pending_outbound_bytes = 65536\nmax_frame_bytes = 1048576\nmax_message_bytes = 1048576",
    );
    c.push_str(&aws_integration("backend", &backend.url("/ws"), ""));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let mut raw = gw.raw();
    // 24 messages of 1 MB, sent before reading anything: their echoes (24 MB, more
    // than the kernel's socket buffers hold) cannot all wait in a 64 KiB queue.
    // (The gateway may close before all are written: write errors are expected.)
    let body = "x".repeat(1_000_000);
    raw.write_lossy(&masked(true, OP_TEXT, body.as_bytes()).repeat(24));
    // Until the calls are made (generous: 24 MB through the fixture is slow on a busy
    // 2-core machine), or the gateway already closed the client for its queue.
    let t = Instant::now();
    while backend.requests().len() < 24 && t.elapsed() < Duration::from_secs(60) {
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(1500)); // the echoes come back, unread
    let (mut echoes, mut close) = (0, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while close.is_none() && Instant::now() < deadline {
        let f = raw.frame();
        match f.opcode {
            OP_TEXT | 0 => echoes += usize::from(f.fin),
            8 => close = f.close_code(),
            _ => {}
        }
    }
    assert_eq!(close, Some(1008), "after {echoes} echoes");
    assert!(echoes < 24, "{echoes} echoes queued beyond the limit");
}

#[test]
fn a_fin_that_arrives_while_reading_is_paused_still_ends_the_connection() {
    let backend = slow_connect_backend(1000);
    let gw = Gateway::start(&slow_connect_echo_config(&backend));
    let mut stream = tcp(gw.listen);
    stream
        .write_all(&upgrade_bytes("/prod", &ws_headers("127.0.0.1")))
        .unwrap();
    // 1.5 MiB while `$connect` is pending (reading pauses at 1 MiB), then our FIN.
    let msg = masked(true, OP_TEXT, &[b'y'; 1024]);
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&msg.repeat(1536)).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let resp = read_response(&mut stream);
    assert_eq!(resp.status, 101);
    let id = backend
        .wait_event("CONNECT")
        .connection_id()
        .unwrap()
        .to_string();
    let mut raw = Raw { stream };
    for i in 0..1536 {
        assert_eq!(raw.recv_text().len(), 1024, "echo {i}");
    }
    sender.join().unwrap();
    // The FIN is seen: `$disconnect` (1006) now, not at the idle timeout (10 min).
    let d = backend.wait_event_of("DISCONNECT", &id);
    assert_eq!(d.event()["requestContext"]["disconnectStatusCode"], 1006);
}

#[test]
fn shutdown_keeps_disconnect_for_a_client_that_left_during_connect_and_does_not_stall() {
    let backend = slow_connect_backend(1500);
    let mut c = header_config("", "").replace(
        "handshake_timeout = \"1s\"\n",
        "handshake_timeout = \"1s\"\ndrain_timeout = \"30s\"\n",
    );
    c.push_str(&aws_integration(
        "backend",
        &backend.url("/ws"),
        "timeout = \"10s\"",
    ));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    let mut gw = Gateway::start(&c);
    let (stream, _) = {
        let mut s = tcp(gw.listen);
        s.write_all(&upgrade_bytes("/prod", &ws_headers("127.0.0.1")))
            .unwrap();
        (s, ())
    };
    let id = backend
        .wait_event("CONNECT")
        .connection_id()
        .unwrap()
        .to_string();
    drop(stream); // the client leaves while `$connect` is pending
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(25));
    assert!(status.success(), "{status:?}");
    // The 2xx came during the drain: the 1006 `$disconnect` is owed and sent.
    let d = backend.wait_event_of("DISCONNECT", &id);
    assert_eq!(d.event()["requestContext"]["disconnectStatusCode"], 1006);
    // The drain ended with the last call, not at `drain_timeout` (30 s).
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "exit took {:?}",
        t.elapsed()
    );
}

#[test]
fn a_limit_smaller_than_one_read_does_not_pause_a_client_for_good() {
    // One full read of 200-byte messages makes ~6 KB of 16-byte replies: past a 4 KiB
    // limit, so reading pauses, yet all of it leaves at once (no writable event).
    let gw = Gateway::start_with(
        &whoami_config("", "max_pending_outbound_bytes = 4096"),
        &["--workers", "1"],
    );
    let mut raw = gw.raw();
    let one = masked(true, OP_TEXT, &[b'z'; 200]);
    raw.write(&one.repeat(1000));
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..1000 {
        assert_eq!(raw.recv_text().len(), 16, "reply {i} of 1000");
    }
}

#[test]
fn an_upgrade_closed_in_the_same_read_is_counted_and_logged() {
    let gw = Gateway::start_with(&echo_config(""), &["--workers", "1"]);
    let mut s = tcp(gw.listen);
    let mut bytes = upgrade_bytes("/prod", &ws_headers("127.0.0.1"));
    bytes.extend(masked(true, 8, &close_payload(1000, b"")));
    s.write_all(&bytes).unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101);
    wait_closed(&mut s, Duration::from_secs(5));
    let connects = eventually("the connect counted", Duration::from_secs(5), || {
        let text = call(gw.management, "GET", "/metrics", &[], b"").text();
        let n = metric_sum(&text, "wsgate_connect_total", &[]);
        (n >= 1.0).then_some(n)
    });
    assert_eq!(connects, 1.0);
    // Log lines are written once per loop turn and read from a pipe: wait for it.
    eventually("the connect log line", Duration::from_secs(5), || {
        gw.stderr().contains("event=connect ").then_some(())
    });
}

#[test]
fn a_client_held_at_the_in_flight_limit_is_not_closed_for_a_pong_it_sent() {
    // Its pong sits behind frames the gateway holds until a call finishes; the
    // pong deadline must not close it meanwhile.
    let backend = Backend::start(|r| Reply::ok(r.message().unwrap_or_default()).delay_ms(2500));
    let mut c = api_config(
        "$request.body.action",
        None,
        "ping_interval = \"1s\"\npong_timeout = \"1s\"\nmax_inflight_per_connection = 1",
    );
    c.push_str(&aws_integration(
        "backend",
        &backend.url("/ws"),
        "timeout = \"10s\"",
    ));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let mut raw = gw.raw();
    raw.send_text("one");
    raw.send_text("two"); // held: one call is in flight
    let mut texts = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(12);
    while texts.len() < 2 {
        assert!(Instant::now() < deadline, "got {texts:?}");
        let f = raw.frame();
        match f.opcode {
            9 => raw.send(true, 10, &f.payload), // our pong, behind "two"
            OP_TEXT => texts.push(String::from_utf8(f.payload).unwrap()),
            8 => panic!(
                "closed with {:?} {:?} after {texts:?}",
                f.close_code(),
                String::from_utf8_lossy(&f.payload[2..])
            ),
            _ => {}
        }
    }
    assert_eq!(texts, ["one", "two"]);
}

#[test]
fn a_refused_proxy_header_on_a_tls_listener_gets_no_byte() {
    let dir = temp_dir();
    let pki = crate::tls::make_pki(&dir, "refuse");
    let c = echo_config("").replace("[server]\n", "[server]\nproxy_protocol = \"v2\"\n")
        + &format!(
            "[server.tls]\ncert = {}\nkey = {}\n",
            toml_str(&pki.cert.to_string_lossy()),
            toml_str(&pki.key.to_string_lossy())
        );
    let gw = Gateway::start(&c);
    let mut s = tcp(gw.listen);
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut got);
    assert!(got.is_empty(), "a refused connection was sent {got:?}");
}
