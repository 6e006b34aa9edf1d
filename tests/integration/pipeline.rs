//! SPEC §16 backend pipelining with `--workers 1`, against a small raw backend that
//! shows what arrived on each connection before it answered: a connection that
//! closes with three requests in flight fails each call once (none is sent twice),
//! `pipeline = 1` and `pipeline = 8` integrations share a worker without sharing
//! connections, a slow first request holds the later ones on its connection
//! (head-of-line, the price of `pipeline > 1`), replies that come in one write go
//! to their calls in request order, interim (1xx) replies between them are skipped,
//! and a reply with two framings fails every call on its connection, none retried.
//! Replies buffered together past the reply limit are all read, and frames a
//! client sent early, let through by a `$connect` reply that closes its
//! connection, go out on a new connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::backend::*;
use crate::support::*;

/// What the raw backend does with the requests it has read on a connection.
#[derive(Clone, Copy)]
enum Script {
    /// Once it has read this many requests (all sent before any reply), it closes
    /// the connection without answering.
    CloseAt(usize),
    /// Answers each request with its own body, in order, all the replies of a batch
    /// (the requests read together) in one write; a body containing `slow` is
    /// answered after 400 ms.
    Echo,
    /// Once it has read this many requests, writes these bytes in one write (and
    /// keeps the connection open).
    Send(usize, &'static [u8]),
    /// `aws_proxy` events: `CONNECT` is answered 200 (empty), `MESSAGE` with the
    /// client's message; but a connection's second `CONNECT` waits until a
    /// `MESSAGE` is in flight behind it, and is answered with `Connection: close`
    /// before the connection closes (the message unanswered).
    SecondConnectCloses,
}

/// A backend on raw sockets: a thread per connection that reads requests (Content-
/// Length bodies), waits 30 ms for more, then acts on the batch.
struct RawBackend {
    addr: SocketAddr,
    /// Requests read, over all connections.
    requests: Arc<AtomicUsize>,
    /// Per batch: the connection's index, the request path, and the batch's size.
    batches: Arc<Mutex<Vec<(usize, String, usize)>>>,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawBackend {
    fn start(script: Script) -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let b = RawBackend {
            addr,
            requests: Arc::default(),
            batches: Arc::default(),
            accepted: Arc::default(),
            stop: Arc::default(),
        };
        let (requests, batches, accepted, stop) = (
            b.requests.clone(),
            b.batches.clone(),
            b.accepted.clone(),
            b.stop.clone(),
        );
        thread::spawn(move || {
            for s in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                let conn = accepted.fetch_add(1, Ordering::SeqCst);
                let (requests, batches) = (requests.clone(), batches.clone());
                thread::spawn(move || serve(s, conn, script, &requests, &batches));
            }
        });
        b
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn batches(&self) -> Vec<(usize, String, usize)> {
        self.batches.lock().unwrap().clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// One complete request at the start of `buf`: (its length, path, body).
fn parse_request(buf: &[u8]) -> Option<(usize, String, Vec<u8>)> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split(' ').nth(1).unwrap_or("").to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    let end = head_end + len;
    (buf.len() >= end).then(|| (end, path, buf[head_end..end].to_vec()))
}

fn serve(
    mut s: TcpStream,
    conn: usize,
    script: Script,
    requests: &AtomicUsize,
    batches: &Mutex<Vec<(usize, String, usize)>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let mut batch: Vec<(String, Vec<u8>)> = Vec::new();
    let mut connects = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        // Blocking while nothing is pending; then a 30 ms window for more.
        let wait = if batch.is_empty() { 1000 } else { 30 };
        s.set_read_timeout(Some(Duration::from_millis(wait)))
            .unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                while let Some((len, path, body)) = parse_request(&buf) {
                    buf.drain(..len);
                    requests.fetch_add(1, Ordering::SeqCst);
                    batch.push((path, body));
                }
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
        if batch.is_empty() {
            continue;
        }
        let path = batch[0].0.clone();
        batches.lock().unwrap().push((conn, path, batch.len()));
        match script {
            Script::CloseAt(n) if batch.len() >= n => {
                let _ = s.shutdown(std::net::Shutdown::Both);
                return;
            }
            Script::CloseAt(_) => continue,
            Script::Send(n, bytes) if batch.len() >= n => {
                if s.write_all(bytes).is_err() {
                    return;
                }
                batch.clear();
            }
            Script::Send(..) => continue,
            Script::SecondConnectCloses => {
                let event = |body: &[u8]| -> serde_json::Value {
                    serde_json::from_slice(body).unwrap_or_default()
                };
                let kind = |body: &[u8]| {
                    event(body)["requestContext"]["eventType"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                };
                let mut second = None;
                let mut seen = connects;
                for (i, (_, body)) in batch.iter().enumerate() {
                    if kind(body) == "CONNECT" {
                        seen += 1;
                        if seen == 2 {
                            second = Some(i);
                        }
                    }
                }
                if let Some(i) = second {
                    if !batch[i + 1..].iter().any(|(_, b)| kind(b) == "MESSAGE") {
                        continue;
                    }
                }
                let mut out = Vec::new();
                for (_, body) in
                    batch.drain(..second.map_or(usize::MAX, |i| i + 1).min(batch.len()))
                {
                    let reply = match kind(&body).as_str() {
                        "CONNECT" => {
                            connects += 1;
                            String::new()
                        }
                        _ => event(&body)["body"].as_str().unwrap_or("").to_string(),
                    };
                    let close = if connects == 2 {
                        "Connection: close\r\n"
                    } else {
                        ""
                    };
                    out.extend_from_slice(
                        format!(
                            "HTTP/1.1 200 OK\r\n{close}Content-Length: {}\r\n\r\n{reply}",
                            reply.len()
                        )
                        .as_bytes(),
                    );
                }
                if s.write_all(&out).is_err() || second.is_some() {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                    return;
                }
            }
            Script::Echo => {
                let mut out = Vec::new();
                let mut later = Vec::new();
                for (_, body) in batch.drain(..) {
                    if String::from_utf8_lossy(&body).contains("slow") {
                        // Slow work; requests that arrive meanwhile are counted (and
                        // answered in the next batch).
                        let until = Instant::now() + Duration::from_millis(400);
                        while let Some(left) = until.checked_duration_since(Instant::now()) {
                            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                                .unwrap();
                            if let Ok(n @ 1..) = s.read(&mut chunk) {
                                buf.extend_from_slice(&chunk[..n]);
                                while let Some((len, path, body)) = parse_request(&buf) {
                                    buf.drain(..len);
                                    requests.fetch_add(1, Ordering::SeqCst);
                                    later.push((path, body));
                                }
                            }
                        }
                    }
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                            .as_bytes(),
                    );
                    out.extend_from_slice(&body);
                }
                if s.write_all(&out).is_err() {
                    return;
                }
                batch = later;
            }
        }
    }
}

/// Routes `one` (`pipeline = 1`) and `eight` (`pipeline = 8`), each an `http_proxy`
/// integration (the message is the body, the reply body is sent back) with one
/// connection, on one worker.
fn gateway(b: &RawBackend) -> Gateway {
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&http_integration(
        "one",
        "http_proxy",
        &b.url("/one"),
        "timeout = \"5s\"\npool_size = 1\npipeline = 1",
    ));
    c.push_str(&http_integration(
        "eight",
        "http_proxy",
        &b.url("/eight"),
        "timeout = \"5s\"\npool_size = 1\npipeline = 8",
    ));
    c.push_str(&route("one", "one"));
    c.push_str(&route("eight", "eight"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    assert_eq!(gw.workers, 1);
    gw
}

fn msg(route: &str, text: &str) -> String {
    format!("{{\"action\":\"{route}\",\"m\":\"{text}\"}}")
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_backend_that_closes_with_three_requests_in_flight_fails_each_call_once() {
    let b = RawBackend::start(Script::CloseAt(3));
    let gw = gateway(&b);
    let mut clients: Vec<Raw> = (0..3).map(|_| gw.raw()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&msg("eight", &i.to_string()));
    }
    for c in &mut clients {
        parse_error_frame(&c.recv_text(), "Internal server error");
    }
    // Nothing is retried: the backend saw each request once, on one connection.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(b.requests.load(Ordering::SeqCst), 3);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
    // The integration carries on, on a fresh connection.
    clients[0].send_text(&msg("eight", "again"));
    wait_until("the request after", || {
        b.requests.load(Ordering::SeqCst) == 4
    });
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn pipeline_1_and_pipeline_8_integrations_share_a_worker_but_not_connections() {
    let b = RawBackend::start(Script::Echo);
    let gw = gateway(&b);
    let mut clients: Vec<(Raw, String)> = Vec::new();
    for i in 0..6 {
        let route = if i % 2 == 0 { "eight" } else { "one" };
        let mut c = gw.raw();
        let m = msg(route, &format!("slow {i}"));
        c.send_text(&m);
        clients.push((c, m));
    }
    for (c, m) in &mut clients {
        assert_eq!(&c.recv_text(), m, "each client gets its own reply");
    }
    let batches = b.batches();
    let conns = |path: &str| -> std::collections::BTreeSet<usize> {
        batches
            .iter()
            .filter(|(_, p, _)| p == path)
            .map(|&(c, _, _)| c)
            .collect()
    };
    let (one, eight) = (conns("/one"), conns("/eight"));
    assert_eq!((one.len(), eight.len()), (1, 1), "{batches:?}");
    assert!(one.is_disjoint(&eight), "{batches:?}");
    // The `pipeline = 1` connection never had two requests out at once; the
    // `pipeline = 8` one had its later requests sent while the first was answered.
    for (_, path, n) in &batches {
        if path == "/one" {
            assert_eq!(*n, 1, "{batches:?}");
        }
    }
    let most = batches
        .iter()
        .filter(|(_, p, _)| p == "/eight")
        .map(|b| b.2)
        .max();
    assert!(most >= Some(2), "no pipelined batch: {batches:?}");
}

#[test]
fn a_slow_first_request_holds_the_later_ones_on_its_connection() {
    let b = RawBackend::start(Script::Echo);
    let gw = gateway(&b);
    let (mut a, mut c) = (gw.raw(), gw.raw());
    let start = Instant::now();
    a.send_text(&msg("eight", "slow"));
    wait_until("the slow request", || {
        b.requests.load(Ordering::SeqCst) == 1
    });
    c.send_text(&msg("eight", "fast"));
    // The fast call went out on the same connection while the slow one was being
    // answered (pipelined, not queued in the gateway)...
    wait_until("the fast request", || {
        b.requests.load(Ordering::SeqCst) == 2
    });
    assert!(
        start.elapsed() < Duration::from_millis(350),
        "the fast request waited in the gateway: {:?}",
        start.elapsed()
    );
    // ...and its reply comes behind the slow reply, about when it does.
    assert_eq!(c.recv_text(), msg("eight", "fast"));
    let fast_at = start.elapsed();
    assert_eq!(a.recv_text(), msg("eight", "slow"));
    assert!(
        fast_at >= Duration::from_millis(350),
        "the fast reply did not wait for the slow one: {fast_at:?}"
    );
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn replies_sent_in_one_write_go_to_their_calls_in_order() {
    let b = RawBackend::start(Script::Echo);
    let gw = gateway(&b);
    // The first call is slow: the others go out on its connection meanwhile, and
    // the backend answers them together, in one write.
    let mut clients: Vec<(Raw, String)> = Vec::new();
    for i in 0..8 {
        let mut c = gw.raw();
        let text = if i == 0 {
            "slow".to_string()
        } else {
            "x".repeat(i * 100)
        };
        let m = msg("eight", &format!("call {i} {text}"));
        c.send_text(&m);
        clients.push((c, m));
    }
    for (c, m) in &mut clients {
        assert_eq!(&c.recv_text(), m);
    }
    let batches = b.batches();
    assert!(
        batches.iter().any(|b| b.2 >= 2),
        "no two requests answered in one write: {batches:?}"
    );
    assert_eq!(b.requests.load(Ordering::SeqCst), 8);
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

/// Sends `msg("eight", "0")` and `msg("eight", "1")` from two clients, the second
/// once the backend has the first, so both are in flight on one connection.
fn two_in_flight(b: &RawBackend, gw: &Gateway) -> (Raw, Raw) {
    let (mut c0, mut c1) = (gw.raw(), gw.raw());
    c0.send_text(&msg("eight", "0"));
    wait_until("the first request", || {
        b.requests.load(Ordering::SeqCst) == 1
    });
    c1.send_text(&msg("eight", "1"));
    (c0, c1)
}

#[test]
fn interim_replies_between_pipelined_replies_are_skipped() {
    const BYTES: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirstHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nsecond\r\n0\r\n\r\n";
    let b = RawBackend::start(Script::Send(2, BYTES));
    let gw = gateway(&b);
    let (mut c0, mut c1) = two_in_flight(&b, &gw);
    assert_eq!(c0.recv_text(), "first");
    assert_eq!(c1.recv_text(), "second");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

#[test]
fn a_reply_with_two_framings_fails_every_call_on_the_connection_once() {
    const BYTES: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond";
    let b = RawBackend::start(Script::Send(2, BYTES));
    let gw = gateway(&b);
    let (mut c0, mut c1) = two_in_flight(&b, &gw);
    parse_error_frame(&c0.recv_text(), "Internal server error");
    parse_error_frame(&c1.recv_text(), "Internal server error");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(b.requests.load(Ordering::SeqCst), 2, "nothing retried");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 1);
}

/// Sends `signal` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, signal: &str) {
    let ok = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{signal} {pid}");
}

#[test]
fn pipelined_replies_buffered_past_the_reply_limit_all_arrive() {
    // Reply 1 is just under the reply limit, reply 2 is 200 KiB. The backend sends
    // all but the last 100 KiB of reply 1 and lets the gateway read it; then, with
    // the gateway stopped, the rest of reply 1 and all of reply 2, so that every
    // byte waits in the socket when the gateway reads again: that read stops at
    // the limit (counted over both replies), in the middle of reply 2, and no new
    // byte comes to wake the gateway for the rest.
    let n1 = upstream_limit() - 1024;
    let n2 = 200 * 1024;
    let mut bytes = Vec::new();
    for (n, fill) in [(n1, b'a'), (n2, b'b')] {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n");
        bytes.extend_from_slice(head.as_bytes());
        bytes.resize(bytes.len() + n, fill);
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut c = api_config(
        "$request.body.action",
        None,
        "max_pending_outbound_bytes = 16777216",
    );
    c.push_str(&http_integration(
        "eight",
        "http_proxy",
        &format!("http://{addr}/eight"),
        "timeout = \"3s\"\npool_size = 1\npipeline = 8",
    ));
    c.push_str(&route("eight", "eight"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let pid = gw.pid();
    let backend = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut buf, mut chunk, mut requests) = (Vec::new(), [0u8; 4096], 0);
        while requests < 2 {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "the gateway closed the backend connection");
            buf.extend_from_slice(&chunk[..n]);
            while let Some((len, _, _)) = parse_request(&buf) {
                buf.drain(..len);
                requests += 1;
            }
        }
        let split = n1 - 100 * 1024;
        s.write_all(&bytes[..split]).unwrap();
        thread::sleep(Duration::from_millis(500));
        signal(pid, "STOP");
        let written = s.write_all(&bytes[split..]);
        thread::sleep(Duration::from_millis(200));
        signal(pid, "CONT");
        written.unwrap();
        // The connection stays open while the replies are read (until the gateway
        // is gone).
        let _ = s.read(&mut chunk);
    });
    let (mut c0, mut c1) = (gw.raw(), gw.raw());
    c0.send_text(&msg("eight", "0"));
    thread::sleep(Duration::from_millis(100));
    c1.send_text(&msg("eight", "1"));
    for (c, n, fill) in [(&mut c0, n1, b'a'), (&mut c1, n2, b'b')] {
        let t = c.recv_text();
        assert!(
            t.len() == n && t.bytes().all(|x| x == fill),
            "expected {n} bytes of {:?}, got {} bytes: {:?}",
            fill as char,
            t.len(),
            &t[..t.len().min(200)]
        );
    }
    drop(c0);
    drop(c1);
    drop(gw);
    let _ = backend.join();
}

/// The largest reply the gateway takes (`upstream::MAX_REPLY_BYTES`).
fn upstream_limit() -> usize {
    10 * 1024 * 1024
}

#[test]
fn messages_sent_early_ride_a_new_connection_when_connect_closes_the_old_one() {
    // One `pipeline = 4` connection carries `$connect` and `$default`.
    let b = RawBackend::start(Script::SecondConnectCloses);
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration(
        "be",
        &b.url("/be"),
        "timeout = \"5s\"\npool_size = 1\npipeline = 4",
    ));
    c.push_str(&one_way_route("$connect", "be"));
    c.push_str(&route("$default", "be"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let mut a = gw.raw();
    // B's `$connect` is held by the backend; B's frames wait for it in the gateway,
    // and A's message goes out behind it on the same connection.
    let mut s = tcp(gw.listen);
    let mut early = upgrade_request("/prod").into_bytes();
    early.extend_from_slice(&masked(true, OP_TEXT, b"b1"));
    early.extend_from_slice(&masked(true, OP_TEXT, b"b2"));
    s.write_all(&early).unwrap();
    wait_until("B's $connect", || b.requests.load(Ordering::SeqCst) == 2);
    a.send_text("a1");
    // `$connect` is answered with `Connection: close`: B is in, and its messages,
    // never sent on the closing connection, go out on a new one.
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101, "{resp:?}");
    let mut bc = Raw { stream: s };
    assert_eq!(bc.recv_text(), "b1");
    assert_eq!(bc.recv_text(), "b2");
    // A's message was sent on the connection that closed: it fails (SPEC §16).
    parse_error_frame(&a.recv_text(), "Internal server error");
    assert_eq!(b.accepted.load(Ordering::SeqCst), 2);
}
