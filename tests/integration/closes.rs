//! SPEC §1 shutdown and the server-initiated closes of §7: idle timeout, maximum
//! duration, ping timeout, shutdown — each with its code and reason.

use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn idle_connection_is_closed_with_1001_idle_timeout() {
    let gw = Gateway::start(&echo_config("idle_timeout = \"1s\""));
    let mut raw = gw.raw();
    let start = Instant::now();
    raw.expect_close_with(1001, "Idle timeout");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "idle close too early: {waited:?}"
    );
}

#[test]
fn client_pings_keep_an_idle_connection_open() {
    let gw = Gateway::start(&echo_config("idle_timeout = \"1s\""));
    let mut raw = gw.raw();
    for _ in 0..8 {
        thread::sleep(Duration::from_millis(300));
        raw.send(true, OP_PING, b"keepalive");
        let f = raw.frame();
        assert_eq!(f.opcode, OP_PONG, "{f:?}");
    }
    // 2.4 s after the handshake, well past the 1 s idle timeout: still open.
    raw.send_text("alive");
    assert_eq!(raw.recv_text(), "alive");
}

#[test]
fn messages_keep_an_idle_connection_open() {
    let gw = Gateway::start(&echo_config("idle_timeout = \"1s\""));
    let mut raw = gw.raw();
    for i in 0..8 {
        thread::sleep(Duration::from_millis(300));
        raw.send_text(&format!("tick {i}"));
        assert_eq!(raw.recv_text(), format!("tick {i}"));
    }
}

#[test]
fn connection_is_closed_at_the_maximum_duration_even_when_busy() {
    let gw = Gateway::start(&echo_config("max_connection_duration = \"1s\""));
    let mut raw = gw.raw();
    let start = Instant::now();
    // Keep it busy; the close frame arrives in place of a reply.
    loop {
        raw.send_text("busy");
        let f = raw.frame();
        if f.opcode == OP_CLOSE {
            assert_eq!(f.close_code(), Some(1001), "{f:?}");
            assert_eq!(&f.payload[2..], b"Maximum connection duration");
            break;
        }
        assert_eq!((f.opcode, f.payload.as_slice()), (OP_TEXT, &b"busy"[..]));
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "not closed at the maximum duration"
        );
        thread::sleep(Duration::from_millis(100));
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "closed too early: {waited:?}"
    );
    raw.write_lossy(&masked(true, OP_CLOSE, &[]));
    wait_closed(&mut raw.stream, READ_TIMEOUT);
}

#[test]
fn server_pings_when_configured_and_a_pong_keeps_the_connection() {
    let gw = Gateway::start(&echo_config(
        "ping_interval = \"200ms\"\npong_timeout = \"500ms\"",
    ));
    let mut raw = gw.raw();
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        let f = raw.frame();
        assert_eq!(f.opcode, OP_PING, "expected a server ping, got {f:?}");
        raw.send(true, OP_PONG, &f.payload);
        pings += 1;
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 1.5 s at a 200 ms interval"
    );
    raw.send_text("still open");
    loop {
        let f = raw.frame();
        if f.opcode == OP_PING {
            raw.send(true, OP_PONG, &f.payload);
            continue;
        }
        assert_eq!(
            (f.opcode, f.payload.as_slice()),
            (OP_TEXT, &b"still open"[..])
        );
        break;
    }
}

#[test]
fn missing_pong_closes_with_1001_ping_timeout() {
    let gw = Gateway::start(&echo_config(
        "ping_interval = \"200ms\"\npong_timeout = \"500ms\"",
    ));
    let mut raw = gw.raw();
    let start = Instant::now();
    loop {
        let f = raw.frame();
        match f.opcode {
            OP_PING => {} // not answered
            OP_CLOSE => {
                assert_eq!(f.close_code(), Some(1001), "{f:?}");
                assert_eq!(&f.payload[2..], b"Ping timeout", "{f:?}");
                break;
            }
            _ => panic!("unexpected frame {f:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(4), "no ping timeout");
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(500),
        "ping timeout too early: {waited:?}"
    );
    raw.write_lossy(&masked(true, OP_CLOSE, &[]));
    wait_closed(&mut raw.stream, READ_TIMEOUT);
}

#[test]
fn no_server_pings_by_default() {
    let gw = Gateway::start(&echo_config(""));
    let mut raw = gw.raw();
    raw.stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut byte = [0u8; 1];
    match std::io::Read::read(&mut raw.stream, &mut byte) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        other => panic!("the server sent something unprompted: {other:?}"),
    }
}

#[test]
fn sigterm_closes_clients_with_1001_and_exits_0() {
    let mut gw = Gateway::start(&echo_config(""));
    let mut a = gw.raw();
    let mut b = gw.raw();
    a.send_text("before");
    assert_eq!(a.recv_text(), "before");
    gw.terminate();
    a.expect_close_with(1001, "Server shutting down");
    b.expect_close_with(1001, "Server shutting down");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "shutdown exits 0; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn sigterm_with_no_clients_exits_0_promptly() {
    let mut gw = Gateway::start(&echo_config(""));
    gw.terminate();
    let status = gw.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "stderr:\n{}", gw.stderr());
}
