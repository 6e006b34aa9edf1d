//! SPEC §1's shutdown order under SIGTERM, with `--workers 2` and an `aws_proxy`
//! backend: stop accepting; stop reading new client messages; let in-flight
//! integrations finish and deliver their route responses (up to `drain_timeout`);
//! close every client with 1001 "Server shutting down"; send each `$disconnect`
//! (1001 / "Server shutting down", §7); exit 0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::backend::*;
use crate::mgmt::header_config;
use crate::support::*;

/// MESSAGE "slow" is answered "slow reply" after `slow_ms`; other messages echoed;
/// CONNECT and DISCONNECT 200.
fn slow_backend(slow_ms: u64) -> Backend {
    Backend::start(move |r| match r.event_type() {
        Some("MESSAGE") if r.message().as_deref() == Some("slow") => {
            Reply::ok("slow reply").delay_ms(slow_ms)
        }
        Some("MESSAGE") => Reply::ok(r.message().unwrap()),
        _ => Reply::empty(),
    })
}

fn gateway(backend: &Backend, drain_timeout: &str) -> Gateway {
    let mut c = header_config("", "").replace(
        "handshake_timeout = \"1s\"\n",
        &format!("handshake_timeout = \"1s\"\ndrain_timeout = \"{drain_timeout}\"\n"),
    );
    c.push_str(&aws_integration(
        "backend",
        &backend.url("/ws"),
        "timeout = \"10s\"",
    ));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "backend"));
    Gateway::start_with(&c, &["--workers", "2"])
}

/// Opens `n` clients and returns them with their ids (from the CONNECT events).
fn open_clients(gw: &Gateway, backend: &Backend, n: usize) -> Vec<(Raw, String)> {
    (0..n)
        .map(|i| {
            let raw = raw_with(gw.listen, "/prod", &ws_headers("127.0.0.1"));
            let reqs = backend.wait_until("a CONNECT", WAIT, |r| {
                r.iter()
                    .filter(|r| r.event_type() == Some("CONNECT"))
                    .count()
                    > i
            });
            let id = reqs
                .iter()
                .filter(|r| r.event_type() == Some("CONNECT"))
                .nth(i)
                .unwrap()
                .connection_id()
                .unwrap()
                .to_string();
            // Make sure the connection is open (past $connect) before going on.
            let mut raw = raw;
            raw.send_text(&format!("hello {i}"));
            assert_eq!(raw.recv_text(), format!("hello {i}"));
            (raw, id)
        })
        .collect()
}

/// How a client's connection ended.
#[derive(Debug)]
struct Ending {
    /// Text messages before the end.
    texts: Vec<String>,
    /// When the close frame (or EOF) arrived.
    at: Instant,
    /// The close frame's code and reason; `None`: TCP closed without a close frame.
    close: Option<(u16, String)>,
}

/// Reads one server frame; `None` at EOF or on a read error.
fn try_frame(s: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).ok()?;
    Some(Frame {
        fin: head[0] & 0x80 != 0,
        rsv: (head[0] >> 4) & 7,
        opcode: head[0] & 0x0f,
        payload,
    })
}

/// Reads frames until the close frame (answered, then TCP close awaited) or EOF.
fn read_until_close(mut raw: Raw) -> Ending {
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(8)))
        .unwrap();
    let mut texts = Vec::new();
    loop {
        let Some(f) = try_frame(&mut raw.stream) else {
            return Ending {
                texts,
                at: Instant::now(),
                close: None,
            };
        };
        match f.opcode {
            OP_TEXT => texts.push(String::from_utf8(f.payload).unwrap()),
            OP_CLOSE => {
                let at = Instant::now();
                let code = f.close_code().unwrap_or(0);
                let reason =
                    String::from_utf8_lossy(&f.payload[2.min(f.payload.len())..]).into_owned();
                raw.write_lossy(&masked(true, OP_CLOSE, &[]));
                wait_closed(&mut raw.stream, READ_TIMEOUT);
                return Ending {
                    texts,
                    at,
                    close: Some((code, reason)),
                };
            }
            _ => panic!("unexpected frame {f:?}"),
        }
    }
}

/// Problems found, reported together at the end of a test.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.0.push(what.into());
        }
    }

    fn finish(self, gw: &Gateway) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  - {}\ngateway stderr:\n{}",
            self.0.len(),
            self.0.join("\n  - "),
            gw.stderr()
        );
    }
}

fn is_1001(e: &Ending) -> bool {
    e.close
        .as_ref()
        .is_some_and(|(c, r)| *c == 1001 && r == "Server shutting down")
}

fn check_disconnects(p: &mut Problems, backend: &Backend, ids: &[String]) {
    // Sent before exit; the backend thread may still be parsing the last one.
    let deadline = Instant::now() + Duration::from_secs(2);
    while backend.events("DISCONNECT").len() < ids.len() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(50));
    let d = backend.events("DISCONNECT");
    for id in ids {
        let mine: Vec<_> = d.iter().filter(|r| r.connection_id() == Some(id)).collect();
        p.check(
            mine.len() == 1,
            format!("{} $disconnect for {id} (want 1)", mine.len()),
        );
        for r in mine {
            let ctx = &r.event()["requestContext"];
            p.check(
                (
                    ctx["disconnectStatusCode"].clone(),
                    ctx["disconnectReason"].clone(),
                ) == (json!(1001), json!("Server shutting down")),
                format!(
                    "$disconnect for {id}: {} / {} (want 1001 / \"Server shutting down\")",
                    ctx["disconnectStatusCode"], ctx["disconnectReason"]
                ),
            );
        }
    }
    p.check(
        d.len() == ids.len(),
        format!("{} $disconnect events for {} clients", d.len(), ids.len()),
    );
}

#[test]
fn sigterm_delivers_the_in_flight_reply_then_closes_everyone_with_1001_and_exits_0() {
    let backend = slow_backend(600);
    let mut gw = gateway(&backend, "10s");
    let clients = open_clients(&gw, &backend, 6);
    let ids: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    let mut clients: Vec<Raw> = clients.into_iter().map(|(r, _)| r).collect();

    clients[0].send_text("slow");
    backend.wait_for("the slow MESSAGE", |r| {
        r.message().as_deref() == Some("slow")
    });
    let sigterm = Instant::now();
    gw.terminate();

    // Messages sent during the drain are not read: no MESSAGE, no reply.
    thread::sleep(Duration::from_millis(150));
    clients[0].write_lossy(&masked(true, OP_TEXT, b"late"));
    clients[1].write_lossy(&masked(true, OP_TEXT, b"late"));

    let readers: Vec<_> = clients
        .into_iter()
        .map(|raw| thread::spawn(move || read_until_close(raw)))
        .collect();
    let endings: Vec<Ending> = readers
        .into_iter()
        .map(|h| h.join().expect("client reader"))
        .collect();
    let status = gw.wait_exit(Duration::from_secs(10));

    let mut p = Problems::default();
    p.check(
        status.code() == Some(0),
        format!("exit status {status:?} (want 0)"),
    );
    p.check(
        endings[0].texts == ["slow reply"],
        format!(
            "the in-flight route response was not delivered: client 0 got {:?}",
            endings[0].texts
        ),
    );
    for (i, e) in endings.iter().enumerate() {
        p.check(
            is_1001(e),
            format!(
                "client {i} ended with {:?} (want 1001 \"Server shutting down\")",
                e.close
            ),
        );
        if i > 0 {
            p.check(e.texts.is_empty(), format!("client {i} got {:?}", e.texts));
        }
    }
    // The client with a call in flight is closed only after the call finished (the
    // order across workers is the next test's).
    let after = endings[0].at.duration_since(sigterm);
    p.check(
        after >= Duration::from_millis(400),
        format!("client 0 closed {after:?} after SIGTERM, before its in-flight integration (600 ms) finished"),
    );
    check_disconnects(&mut p, &backend, &ids);
    let late = backend
        .events("MESSAGE")
        .into_iter()
        .filter(|r| r.message().as_deref() == Some("late"))
        .count();
    p.check(
        late == 0,
        "a message sent after SIGTERM reached the backend",
    );
    p.finish(&gw);
}

#[test]
fn no_client_is_closed_before_the_in_flight_integrations_finish() {
    // SPEC §1 in order: "let in-flight integrations finish ...; close every client".
    // Clients of both workers (24, so the kernel's SO_REUSEPORT hash puts all on one
    // worker with odds of 2^-23, not 2^-7); one call in flight on one of them.
    let backend = slow_backend(700);
    let mut gw = gateway(&backend, "10s");
    let clients = open_clients(&gw, &backend, 24);
    let owners: Vec<u8> = clients
        .iter()
        .map(|(_, id)| crate::mgmt::worker_of(&gw, id))
        .collect();
    assert!(
        owners.contains(&0) && owners.contains(&1),
        "clients on both workers: {owners:?}"
    );
    let mut clients: Vec<Raw> = clients.into_iter().map(|(r, _)| r).collect();
    clients[0].send_text("slow");
    backend.wait_for("the slow MESSAGE", |r| {
        r.message().as_deref() == Some("slow")
    });
    let sigterm = Instant::now();
    gw.terminate();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|raw| thread::spawn(move || read_until_close(raw)))
        .collect();
    let endings: Vec<Ending> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let _ = gw.wait_exit(Duration::from_secs(10));
    let mut p = Problems::default();
    for (i, e) in endings.iter().enumerate() {
        let after = e.at.duration_since(sigterm);
        p.check(
            after >= Duration::from_millis(500),
            format!(
                "client {i} (worker {}) closed {after:?} after SIGTERM, before the in-flight integration (700 ms, worker {}) finished",
                owners[i], owners[0]
            ),
        );
        p.check(is_1001(e), format!("client {i} ended with {:?}", e.close));
    }
    p.finish(&gw);
}

#[test]
fn no_new_connections_are_accepted_during_the_drain() {
    let backend = slow_backend(800);
    let mut gw = gateway(&backend, "10s");
    let mut clients = open_clients(&gw, &backend, 1);
    clients[0].0.send_text("slow");
    backend.wait_for("the slow MESSAGE", |r| {
        r.message().as_deref() == Some("slow")
    });
    let connects_before = backend.events("CONNECT").len();
    gw.terminate();
    thread::sleep(Duration::from_millis(150));
    let mut p = Problems::default();
    // Either refused at TCP level, or never upgraded.
    if let Ok(mut s) = TcpStream::connect_timeout(&gw.listen, Duration::from_secs(1)) {
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let _ = s.write_all(upgrade_request("/prod").as_bytes());
        let mut buf = [0u8; 64];
        if let Ok(n) = s.read(&mut buf) {
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            p.check(
                !head.starts_with("HTTP/1.1 101"),
                format!("a connection was upgraded after SIGTERM: {head:?}"),
            );
        }
    }
    let (raw, id) = clients.pop().unwrap();
    let e = read_until_close(raw);
    p.check(
        e.texts == ["slow reply"],
        format!("in-flight reply not delivered: got {:?}", e.texts),
    );
    p.check(is_1001(&e), format!("the client ended with {:?}", e.close));
    let status = gw.wait_exit(Duration::from_secs(10));
    p.check(status.code() == Some(0), format!("exit status {status:?}"));
    p.check(
        backend.events("CONNECT").len() == connects_before,
        "a $connect was sent after SIGTERM",
    );
    check_disconnects(&mut p, &backend, &[id]);
    p.finish(&gw);
}

#[test]
fn drain_timeout_bounds_a_hung_integration() {
    // The integration would answer after 5 s; drain_timeout is 300 ms. The drain ends
    // at the timeout and then every client is still closed with 1001 and gets its
    // $disconnect (SPEC §1: "up to drain_timeout; close every client ...").
    let backend = slow_backend(5000);
    let mut gw = gateway(&backend, "300ms");
    let clients = open_clients(&gw, &backend, 2);
    let ids: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    let mut clients: Vec<Raw> = clients.into_iter().map(|(r, _)| r).collect();
    clients[0].send_text("slow");
    backend.wait_for("the slow MESSAGE", |r| {
        r.message().as_deref() == Some("slow")
    });
    let sigterm = Instant::now();
    gw.terminate();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|raw| thread::spawn(move || read_until_close(raw)))
        .collect();
    let endings: Vec<Ending> = readers.into_iter().map(|h| h.join().unwrap()).collect();
    let status = gw.wait_exit(Duration::from_secs(8));
    let exited = sigterm.elapsed();
    let mut p = Problems::default();
    p.check(status.code() == Some(0), format!("exit status {status:?}"));
    // Every client closed its side at once and the $disconnects were answered at once:
    // nothing but the abandoned call is left after the 300 ms drain.
    p.check(
        exited < Duration::from_secs(3),
        format!("exited {exited:?} after SIGTERM with drain_timeout = 300ms (want < 3 s)"),
    );
    for (i, e) in endings.iter().enumerate() {
        p.check(
            e.texts.is_empty(),
            format!("client {i}: no reply within the drain: {:?}", e.texts),
        );
        p.check(
            is_1001(e),
            format!(
                "client {i} ended with {:?} (want 1001 \"Server shutting down\")",
                e.close
            ),
        );
        let after = e.at.duration_since(sigterm);
        p.check(
            after < Duration::from_secs(3),
            format!("client {i} closed {after:?} after SIGTERM with a 300 ms drain_timeout"),
        );
    }
    check_disconnects(&mut p, &backend, &ids);
    p.finish(&gw);
}
