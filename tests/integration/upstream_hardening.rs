//! Misbehaving backends (SPEC §16, §5, §12) with `--workers 1`: a `1xx` before the
//! final reply is skipped, bytes left after a reply close the connection instead of
//! reaching the next call, a reply with both `Content-Length` and
//! `Transfer-Encoding` or a signed `Content-Length` is malformed, a reply that never
//! ends (endless chunked trailers) is cut at the reply limit with bounded memory,
//! and a `null` or empty Lambda result is a 200 with no body.

use std::io;
use std::time::{Duration, Instant};

use crate::backend::*;
use crate::support::*;

/// `$default` (two-way) on an `aws_proxy` integration with `extra`, no `$connect` or
/// `$disconnect`, one worker.
fn gateway(backend: &Backend, extra: &str) -> Gateway {
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", &backend.url("/up"), extra));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    assert_eq!(gw.workers, 1);
    gw
}

/// Client A's call is answered by `a_reply` (after a delay, so that B's call is
/// queued behind it on the one pooled connection); everything else gets "B's reply".
fn two_clients(a_reply: Reply) -> (Backend, Gateway, Raw, Raw) {
    let backend = Backend::start(move |r| match r.message().as_deref() {
        Some("a") => a_reply.clone().delay_ms(300),
        _ => Reply::ok("B's reply"),
    });
    let gw = gateway(&backend, "pool_size = 1");
    let mut a = gw.raw();
    let mut b = gw.raw();
    a.send_text("a");
    backend.wait_for("A's call", |r| r.message().as_deref() == Some("a"));
    b.send_text("b");
    (backend, gw, a, b)
}

#[test]
fn an_early_hints_reply_is_skipped_and_the_final_reply_goes_to_its_own_client() {
    let (backend, _gw, mut a, mut b) = two_clients(Reply::raw_parts(vec![
        b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nA's reply".to_vec(),
    ]));
    assert_eq!(
        b.recv_text(),
        "B's reply",
        "B gets its own reply, never A's"
    );
    assert_eq!(a.recv_text(), "A's reply", "A gets the final reply");
    // The connection stayed usable: B's call went on it.
    let reqs = backend.wait_requests(2);
    assert_eq!(reqs[0].conn, reqs[1].conn, "{reqs:?}");
}

#[test]
fn bytes_left_after_a_reply_close_the_connection_instead_of_reaching_the_next_call() {
    let (backend, _gw, mut a, mut b) = two_clients(Reply::raw_parts(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nA's reply\
          HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nA-LEAKED"
            .to_vec(),
    ]));
    assert_eq!(a.recv_text(), "A's reply");
    assert_eq!(
        b.recv_text(),
        "B's reply",
        "B never sees the leftover bytes"
    );
    let reqs = backend.wait_requests(2);
    assert_ne!(
        reqs[0].conn, reqs[1].conn,
        "the connection with leftover bytes went back to the pool"
    );
}

#[test]
fn content_length_with_transfer_encoding_or_a_sign_is_a_malformed_reply() {
    let backend = Backend::start(|r| match r.message().as_deref() {
        Some("both") => Reply::raw_parts(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
            .to_vec()]),
        Some("plus") => Reply::raw_parts(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello".to_vec(),
        ]),
        Some("twice") => Reply::raw_parts(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\
              Content-Length: 6\r\n\r\nhello!"
            .to_vec()]),
        _ => Reply::ok("fine"),
    });
    let gw = gateway(&backend, "pool_size = 1");
    let mut raw = gw.raw();
    for m in ["both", "plus", "twice"] {
        raw.send_text(m);
        let frame = raw.recv_text();
        assert!(
            frame.contains("Internal server error"),
            "{m}: expected the error frame, got {frame:?}"
        );
    }
    raw.send_text("ok");
    assert_eq!(raw.recv_text(), "fine");
    // Each malformed reply closed its connection.
    let reqs = backend.wait_requests(4);
    let conns: std::collections::BTreeSet<usize> = reqs.iter().map(|r| r.conn).collect();
    assert_eq!(conns.len(), 4, "{reqs:?}");
}

/// A backend whose reply to "a" never ends: `0\r\n` then trailer lines forever, or
/// (to "chunks") chunks forever; everything else gets "B's reply".
fn endless_backend() -> Backend {
    let head = &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"[..];
    let trailer = format!("X-Trailer: {}\r\n", "t".repeat(1000)).into_bytes();
    let chunk = [&b"1000\r\n"[..], &[b'c'; 4096], b"\r\n"].concat();
    Backend::start(move |r| match r.message().as_deref() {
        Some("a") => Reply::endless([head, b"0\r\n"].concat(), trailer.clone(), 1 << 30),
        Some("chunks") => Reply::endless(head, chunk.clone(), 1 << 30),
        _ => Reply::ok("B's reply"),
    })
}

#[test]
fn endless_chunked_trailers_fail_the_call_with_bounded_memory_while_others_are_served() {
    let backend = endless_backend();
    let gw = gateway(&backend, "pool_size = 2\ntimeout = \"29s\"");
    let mut a = gw.raw();
    let mut b = gw.raw();
    let start_kib = gw.rss_kib();
    for m in ["a", "chunks"] {
        endless_reply_fails(&gw, &backend, &mut a, &mut b, m, start_kib);
    }
}

/// A sends `m`, whose reply never ends; B is served meanwhile; A gets the error
/// frame while the gateway's RSS stays within 100 MiB of `start_kib`.
fn endless_reply_fails(
    gw: &Gateway,
    backend: &Backend,
    a: &mut Raw,
    b: &mut Raw,
    m: &str,
    start_kib: u64,
) {
    a.send_text(m);
    backend.wait_for("A's call", |r| r.message().as_deref() == Some(m));
    b.send_text("b");
    assert_eq!(
        b.recv_text(),
        "B's reply",
        "the worker serves others meanwhile"
    );
    // The reply limit is 10 MiB; 100 MiB over the start is far beyond any buffer.
    let limit_kib = start_kib + 100 * 1024;
    let mut peak = start_kib;
    let deadline = Instant::now() + Duration::from_secs(20);
    a.stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    loop {
        let rss = gw.rss_kib();
        peak = peak.max(rss);
        assert!(
            rss <= limit_kib,
            "{m}: the gateway buffered the endless reply: RSS {rss} KiB (start {start_kib} KiB)"
        );
        let mut one = [0u8; 1];
        match a.stream.peek(&mut one) {
            Ok(0) => panic!("the gateway closed client A"),
            Ok(_) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("reading client A: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "{m}: no answer to A; RSS peak {peak} KiB"
        );
    }
    a.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    parse_error_frame(&a.recv_text(), "Internal server error");
    // B carries on.
    b.send_text("b");
    assert_eq!(b.recv_text(), "B's reply");
}

#[test]
fn a_null_or_empty_lambda_result_is_a_200_with_no_body() {
    let backend = Backend::start(|r| {
        let m = r.message().unwrap_or_default();
        if m.contains("null") {
            Reply::new(200, " null \n").header("Content-Type", "application/json")
        } else if m.contains("empty") {
            Reply::empty()
        } else {
            Reply::lambda(200, "echo")
        }
    });
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration(
        "backend",
        &backend.url("/fn"),
        "response = \"lambda\"\npool_size = 1",
    ));
    c.push_str(&one_way_route("one", "backend"));
    c.push_str(&route("two", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let mut raw = gw.raw();
    // One pooled connection: the calls finish in the order they were sent, so any
    // frame the first four caused would arrive before the echo.
    for m in [
        r#"{"action":"one","k":"null"}"#,
        r#"{"action":"one","k":"empty"}"#,
        r#"{"action":"two","k":"null"}"#,
        r#"{"action":"two","k":"empty"}"#,
        r#"{"action":"two","k":"echo"}"#,
    ] {
        raw.send_text(m);
    }
    assert_eq!(raw.recv_text(), "echo", "a null result sent a frame");
    assert_eq!(backend.wait_requests(5).len(), 5);
}

#[test]
fn a_null_lambda_result_accepts_the_connect() {
    let backend = Backend::start(|r| match r.event_type() {
        Some("CONNECT") => Reply::new(200, "null").header("Content-Type", "application/json"),
        _ => Reply::lambda(200, "echo"),
    });
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration(
        "backend",
        &backend.url("/fn"),
        "response = \"lambda\"",
    ));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start(&c);
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 101, "{resp:?}");
}
