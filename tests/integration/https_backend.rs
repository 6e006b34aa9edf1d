//! SPEC §10.1 `https://` backends: the gateway's rustls client in the upstream pool.
//!
//! The TLS backend is a [`TlsBackend`]: a std `TcpListener`, a thread per accepted
//! connection running a `rustls::ServerConnection` in a `StreamOwned`, whose
//! decrypted bytes go over one plain TCP connection to a [`Backend`] (so requests
//! are parsed, recorded and answered by the same fixture as the plain tests: one TLS
//! connection is one backend connection). Certificates come from a test CA made
//! with rcgen at test time.
//!
//! Proven here: an `aws_proxy` route and `$connect` work over https with `tls_ca`,
//! keep-alive connections are reused (several messages, one TLS connection), SNI
//! carries a DNS host, an untrusted certificate and a certificate for another name
//! fail the call ("Internal server error", 502 for `$connect`) with a log line naming
//! the backend and rustls's reason, no `tls_ca` means the system's roots (which do
//! not trust the test CA), leftover bytes and endless replies are handled on the
//! decrypted stream as on plain ones, and `tls_ca` is validated.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::backend::*;
use crate::support::*;

// ---------------------------------------------------------------------------
// Certificates.

/// A test certificate authority.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key.
    fn server_cert(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().clone(), key.into())
    }

    /// The CA certificate as a PEM file in a fresh directory.
    fn pem_file(&self) -> PathBuf {
        let path = temp_dir().join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path
    }
}

// ---------------------------------------------------------------------------
// The TLS backend.

/// A TLS front for a plain [`Backend`]; its threads end when it is dropped.
struct TlsBackend {
    addr: SocketAddr,
    inner: Backend,
    accepted: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    failed_handshakes: Arc<AtomicUsize>,
    /// The SNI names clients sent (`None`: no SNI, as for an IP address).
    sni: Arc<Mutex<Vec<Option<String>>>>,
    stop: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl TlsBackend {
    /// Serves `inner` over TLS on `bind` (e.g. `127.0.0.1:0`) with a certificate for
    /// `names` signed by `ca`.
    /// An echo backend on 127.0.0.1 with a certificate for 127.0.0.1 signed by `ca`.
    fn echo(ca: &Ca) -> TlsBackend {
        TlsBackend::start(ca, &["127.0.0.1"], "127.0.0.1:0", Backend::echo_message())
    }

    fn start(ca: &Ca, names: &[&str], bind: &str, inner: Backend) -> TlsBackend {
        let (cert, key) = ca.server_cert(names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind(bind).expect("bind TLS backend");
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let sni = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let inner_addr = inner.addr;
        let accept_thread = {
            let (accepted, handshakes, failed, sni, stop) = (
                accepted.clone(),
                handshakes.clone(),
                failed_handshakes.clone(),
                sni.clone(),
                stop.clone(),
            );
            thread::spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(tcp) = tcp else { continue };
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let (config, handshakes, failed, sni, stop) = (
                        config.clone(),
                        handshakes.clone(),
                        failed.clone(),
                        sni.clone(),
                        stop.clone(),
                    );
                    thread::spawn(move || {
                        let conn = rustls::ServerConnection::new(config).unwrap();
                        let mut tls = rustls::StreamOwned::new(conn, tcp);
                        if handshake(&mut tls, &stop).is_err() {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        handshakes.fetch_add(1, Ordering::SeqCst);
                        let name = tls.conn.server_name().map(str::to_string);
                        sni.lock().unwrap().push(name);
                        relay(tls, inner_addr, &stop);
                    });
                }
            })
        };
        TlsBackend {
            addr,
            inner,
            accepted,
            handshakes,
            failed_handshakes,
            sni,
            stop,
            accept_thread: Some(accept_thread),
        }
    }

    /// `https://HOST:PORT{path}` with this backend's port.
    fn url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.addr.port())
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }

    fn failed_handshakes(&self) -> usize {
        self.failed_handshakes.load(Ordering::SeqCst)
    }

    /// Waits until `n` handshakes failed on the backend's side.
    fn wait_failed_handshakes(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.failed_handshakes() < n {
            assert!(
                Instant::now() < deadline,
                "{} failed handshakes, expected {n}",
                self.failed_handshakes()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Unblock accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn timed_out(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Completes the server side of a handshake within [`WAIT`].
fn handshake(
    tls: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    stop: &AtomicBool,
) -> io::Result<()> {
    tls.sock
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    tls.sock
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while tls.conn.is_handshaking() {
        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        match tls.conn.complete_io(&mut tls.sock) {
            Ok((0, 0)) if tls.conn.wants_read() => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => return Err(e),
        }
    }
    // The last flight (and TLS 1.3 session tickets) out before relaying.
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut tls.sock)?;
    }
    Ok(())
}

/// Relays decrypted bytes between `tls` and a fresh connection to the plain backend
/// at `inner`, both ways, until either side closes or the fixture stops.
fn relay(
    mut tls: rustls::StreamOwned<rustls::ServerConnection, TcpStream>,
    inner: SocketAddr,
    stop: &AtomicBool,
) {
    let Ok(mut plain) = TcpStream::connect(inner) else {
        return;
    };
    let _ = plain.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = plain.set_nodelay(true);
    let _ = tls.sock.set_read_timeout(Some(Duration::from_millis(10)));
    let _ = tls.sock.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
        match plain.read(&mut buf) {
            Ok(0) => {
                // The backend closed: say so over TLS too.
                tls.conn.send_close_notify();
                let _ = tls.flush();
                break;
            }
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|_| tls.flush()).is_err() {
                    break;
                }
            }
            Err(e) if timed_out(&e) => {}
            Err(_) => break,
        }
    }
    let _ = plain.shutdown(Shutdown::Both);
    let _ = tls.sock.shutdown(Shutdown::Both);
}

// ---------------------------------------------------------------------------
// Configs.

/// `$default` (two-way) on an `aws_proxy` integration at `uri` with `extra`, one
/// worker (so the pool is one).
fn default_gateway(uri: &str, extra: &str) -> Gateway {
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", uri, extra));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    assert_eq!(gw.workers, 1);
    gw
}

fn tls_ca(path: &std::path::Path) -> String {
    format!("tls_ca = {}", toml_str(&path.display().to_string()))
}

/// Waits until the gateway's stderr holds every one of `needles` on one line.
fn wait_log_line(gw: &Gateway, needles: &[&str]) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let err = gw.stderr();
        if let Some(line) = err.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} in:\n{err}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// Working backends.

#[test]
fn an_aws_proxy_route_to_an_https_backend_with_tls_ca_echoes_on_one_kept_alive_connection() {
    let ca = Ca::new("wsgate test CA");
    let backend = TlsBackend::echo(&ca);
    let gw = default_gateway(&backend.url("127.0.0.1", "/up"), &tls_ca(&ca.pem_file()));
    let mut raw = gw.raw();
    for i in 0..5 {
        let m = format!("hello {i}");
        raw.send_text(&m);
        assert_eq!(raw.recv_text(), m);
    }
    let reqs = backend.inner.wait_requests(5);
    assert!(reqs.iter().all(|r| r.conn == 0), "one connection: {reqs:?}");
    assert_eq!(backend.accepted(), 1, "one TLS connection for five calls");
    assert_eq!(backend.handshakes(), 1);
    // The Host header is the authority as written; no SNI for an IP address.
    assert_eq!(
        reqs[0].header("Host"),
        Some(format!("127.0.0.1:{}", backend.addr.port()).as_str())
    );
    assert_eq!(*backend.sni.lock().unwrap(), vec![None]);
    assert_eq!(reqs[0].event_type(), Some("MESSAGE"));
}

/// SPEC §16 over TLS: `pipeline = 8` on one connection; the calls started behind a
/// slow one go out on it through the TLS session, and each reply reaches its own
/// client.
#[test]
fn pipelined_calls_share_one_tls_connection_and_each_gets_its_own_reply() {
    let ca = Ca::new("wsgate test CA");
    let inner = Backend::start(|r| {
        let m = r.message().unwrap_or_default();
        let reply = Reply::ok(m.clone());
        if m == "slow" {
            reply.delay_ms(300)
        } else {
            reply
        }
    });
    let backend = TlsBackend::start(&ca, &["127.0.0.1"], "127.0.0.1:0", inner);
    let extra = format!("{}\npool_size = 1\npipeline = 8", tls_ca(&ca.pem_file()));
    let gw = default_gateway(&backend.url("127.0.0.1", "/up"), &extra);
    let mut slow = gw.raw();
    slow.send_text("slow");
    backend
        .inner
        .wait_for("the slow call", |r| r.message().as_deref() == Some("slow"));
    let mut others: Vec<Raw> = (0..4).map(|_| gw.raw()).collect();
    for (i, c) in others.iter_mut().enumerate() {
        c.send_text(&format!("m{i}"));
    }
    assert_eq!(slow.recv_text(), "slow");
    for (i, c) in others.iter_mut().enumerate() {
        assert_eq!(c.recv_text(), format!("m{i}"));
    }
    let reqs = backend.inner.wait_requests(5);
    assert!(reqs.iter().all(|r| r.conn == 0), "one connection: {reqs:?}");
    assert_eq!(backend.accepted(), 1);
}

#[test]
fn a_dns_host_is_sent_as_sni_and_checked_against_the_certificate() {
    let ca = Ca::new("wsgate test CA");
    // Bound as the gateway will resolve the name (the first address of localhost).
    let backend = TlsBackend::start(&ca, &["localhost"], "localhost:0", Backend::echo_message());
    let gw = default_gateway(&backend.url("localhost", "/up"), &tls_ca(&ca.pem_file()));
    let mut raw = gw.raw();
    raw.send_text("by name");
    assert_eq!(raw.recv_text(), "by name");
    assert_eq!(
        *backend.sni.lock().unwrap(),
        vec![Some("localhost".to_string())]
    );
}

#[test]
fn connect_message_and_disconnect_go_over_https() {
    let ca = Ca::new("wsgate test CA");
    let backend = TlsBackend::echo(&ca);
    let cfg = all_routes_config(
        &backend.url("127.0.0.1", "/ws"),
        &tls_ca(&ca.pem_file()),
        "",
    );
    let gw = Gateway::start_with(&cfg, &["--workers", "1"]);
    let mut raw = raw_with(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    let connect = backend.inner.wait_event("CONNECT");
    let id = connect.connection_id().unwrap().to_string();
    raw.send_text("over tls");
    assert_eq!(raw.recv_text(), "over tls");
    drop(raw);
    backend.inner.wait_event_of("DISCONNECT", &id);
    let reqs = backend.inner.requests();
    assert!(reqs.iter().all(|r| r.conn == 0), "{reqs:?}");
    assert_eq!(
        backend.accepted(),
        1,
        "$connect, message and $disconnect share it"
    );
}

// ---------------------------------------------------------------------------
// Verification failures.

#[test]
fn a_certificate_from_another_ca_fails_the_call_and_logs_why() {
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("other CA");
    let backend = TlsBackend::echo(&other);
    let gw = default_gateway(
        &backend.url("127.0.0.1", "/up"),
        &tls_ca(&trusted.pem_file()),
    );
    let mut raw = gw.raw();
    raw.send_text("secret");
    parse_error_frame(&raw.recv_text(), "Internal server error");
    let line = wait_log_line(
        &gw,
        &["invalid peer certificate", &backend.addr.to_string()],
    );
    assert!(line.contains("UnknownIssuer"), "{line}");
    backend.wait_failed_handshakes(1);
    assert!(
        backend.inner.requests().is_empty(),
        "nothing reached the backend"
    );
    // The gateway carries on: the next call fails the same way, on a new connection.
    raw.send_text("again");
    parse_error_frame(&raw.recv_text(), "Internal server error");
    backend.wait_failed_handshakes(2);
    assert_eq!(backend.handshakes(), 0);
}

#[test]
fn a_certificate_for_another_name_fails_the_call() {
    let ca = Ca::new("wsgate test CA");
    let backend = TlsBackend::start(
        &ca,
        &["backend.example", "10.9.9.9"],
        "127.0.0.1:0",
        Backend::echo_message(),
    );
    let gw = default_gateway(&backend.url("127.0.0.1", "/up"), &tls_ca(&ca.pem_file()));
    let mut raw = gw.raw();
    raw.send_text("wrong name");
    parse_error_frame(&raw.recv_text(), "Internal server error");
    let line = wait_log_line(
        &gw,
        &["invalid peer certificate", &backend.addr.to_string()],
    );
    assert!(line.contains("not valid for name"), "{line}");
    assert!(backend.inner.requests().is_empty());
}

#[test]
fn an_untrusted_certificate_refuses_the_connect_with_502() {
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("other CA");
    let backend = TlsBackend::echo(&other);
    let cfg = all_routes_config(
        &backend.url("127.0.0.1", "/ws"),
        &tls_ca(&trusted.pem_file()),
        "",
    );
    let gw = Gateway::start_with(&cfg, &["--workers", "1"]);
    let (_s, resp) = upgrade(gw.listen, "/prod", &ws_headers("127.0.0.1"));
    assert_eq!(resp.status, 502, "{resp:?}");
    wait_log_line(&gw, &["invalid peer certificate"]);
}

#[test]
fn without_tls_ca_the_system_roots_are_used_and_do_not_trust_the_test_ca() {
    let ca = Ca::new("wsgate test CA");
    let backend = TlsBackend::echo(&ca);
    let gw = default_gateway(&backend.url("127.0.0.1", "/up"), "");
    let mut raw = gw.raw();
    raw.send_text("hi");
    parse_error_frame(&raw.recv_text(), "Internal server error");
    let line = wait_log_line(&gw, &["invalid peer certificate"]);
    assert!(line.contains("UnknownIssuer"), "{line}");
}

#[test]
fn a_backend_that_does_not_speak_tls_fails_the_call() {
    // A plain HTTP server on the https port: its answer is no TLS record.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for tcp in listener.incoming().take(2) {
            let Ok(mut tcp) = tcp else { continue };
            let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            thread::sleep(Duration::from_millis(200));
        }
    });
    let ca = Ca::new("wsgate test CA");
    let gw = default_gateway(&format!("https://{addr}/up"), &tls_ca(&ca.pem_file()));
    let mut raw = gw.raw();
    raw.send_text("hi");
    parse_error_frame(&raw.recv_text(), "Internal server error");
    wait_log_line(&gw, &["TLS", &addr.to_string()]);
}

#[test]
fn integrations_with_other_trust_anchors_never_share_a_verified_connection() {
    let trusted = Ca::new("trusted CA");
    let other = Ca::new("other CA");
    let backend = TlsBackend::echo(&trusted);
    let uri = backend.url("127.0.0.1", "/up");
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("good", &uri, &tls_ca(&trusted.pem_file())));
    c.push_str(&aws_integration("bad", &uri, &tls_ca(&other.pem_file())));
    c.push_str(&route("good", "good"));
    c.push_str(&route("bad", "bad"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let mut raw = gw.raw();
    let good = r#"{"action":"good"}"#;
    raw.send_text(good);
    assert_eq!(raw.recv_text(), good);
    // Same address, a kept-alive verified connection open: the other CA's pool still
    // verifies for itself, and fails.
    raw.send_text(r#"{"action":"bad"}"#);
    parse_error_frame(&raw.recv_text(), "Internal server error");
    backend.wait_failed_handshakes(1);
    raw.send_text(good);
    assert_eq!(raw.recv_text(), good);
    assert_eq!(
        backend.handshakes(),
        1,
        "the good pool kept its one connection"
    );
}

#[test]
fn the_connect_timeout_covers_a_stalled_tls_handshake() {
    // Accepts TCP, then never answers the ClientHello.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for tcp in listener.incoming().take(2) {
            held.push(tcp);
        }
        thread::sleep(Duration::from_secs(10));
    });
    let ca = Ca::new("wsgate test CA");
    let extra = format!(
        "connect_timeout = \"200ms\"\ntimeout = \"10s\"\n{}",
        tls_ca(&ca.pem_file())
    );
    let gw = default_gateway(&format!("https://{addr}/up"), &extra);
    let mut raw = gw.raw();
    raw.send_text("hi");
    // Not the call's own timeout ("Endpoint request timed out" after 10s): the
    // connect timeout ends the handshake and fails the call.
    parse_error_frame(&raw.recv_text(), "Internal server error");
    wait_log_line(&gw, &["timed out", &addr.to_string()]);
}

#[test]
fn a_backend_closing_after_each_reply_is_served_on_fresh_tls_connections() {
    let ca = Ca::new("wsgate test CA");
    let inner = Backend::start(|r| Reply::ok(r.message().unwrap_or_default()).drop_after());
    let backend = TlsBackend::start(&ca, &["127.0.0.1"], "127.0.0.1:0", inner);
    let gw = default_gateway(&backend.url("127.0.0.1", "/up"), &tls_ca(&ca.pem_file()));
    let mut raw = gw.raw();
    for i in 0..4 {
        let m = format!("m{i}");
        raw.send_text(&m);
        assert_eq!(raw.recv_text(), m);
    }
    let reqs = backend.inner.wait_requests(4);
    let conns: std::collections::BTreeSet<usize> = reqs.iter().map(|r| r.conn).collect();
    assert_eq!(
        conns.len(),
        4,
        "each closed connection was replaced: {reqs:?}"
    );
}

// ---------------------------------------------------------------------------
// Issue 8's rules on the decrypted stream.

/// `$default` over https with `pool_size = 1`, A's call answered by `a_reply` (late,
/// so B's call waits behind it), everything else by "B's reply".
fn two_clients(a_reply: Reply) -> (TlsBackend, Gateway, Raw, Raw, Ca) {
    let ca = Ca::new("wsgate test CA");
    let inner = Backend::start(move |r| match r.message().as_deref() {
        Some("a") => a_reply.clone().delay_ms(300),
        _ => Reply::ok("B's reply"),
    });
    let backend = TlsBackend::start(&ca, &["127.0.0.1"], "127.0.0.1:0", inner);
    let extra = format!(
        "pool_size = 1\ntimeout = \"29s\"\n{}",
        tls_ca(&ca.pem_file())
    );
    let gw = default_gateway(&backend.url("127.0.0.1", "/up"), &extra);
    let mut a = gw.raw();
    let b = gw.raw();
    a.send_text("a");
    backend
        .inner
        .wait_for("A's call", |r| r.message().as_deref() == Some("a"));
    (backend, gw, a, b, ca)
}

#[test]
fn bytes_left_after_a_reply_close_the_tls_connection() {
    let (backend, _gw, mut a, mut b, _ca) = two_clients(Reply::raw_parts(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nA's reply\
          HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nA-LEAKED"
            .to_vec(),
    ]));
    b.send_text("b");
    assert_eq!(a.recv_text(), "A's reply");
    assert_eq!(
        b.recv_text(),
        "B's reply",
        "B never sees the leftover bytes"
    );
    let reqs = backend.inner.wait_requests(2);
    assert_ne!(reqs[0].conn, reqs[1].conn, "{reqs:?}");
    assert_eq!(backend.accepted(), 2);
}

#[test]
fn an_endless_reply_over_tls_is_cut_at_the_reply_limit() {
    let head = &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..];
    let chunk = [&b"4000\r\n"[..], &[b'c'; 0x4000], b"\r\n"].concat();
    let (_backend, gw, mut a, mut b, _ca) = two_clients(Reply::endless(head, chunk, 1 << 30));
    let start_kib = gw.rss_kib();
    // A's reply passes 10 MiB of decrypted bytes: the call fails, memory stays bounded.
    a.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    parse_error_frame(&a.recv_text(), "Internal server error");
    let rss = gw.rss_kib();
    assert!(
        rss <= start_kib + 100 * 1024,
        "RSS {rss} KiB, start {start_kib} KiB"
    );
    // The pool's one connection was closed; B is served on a new one.
    b.send_text("b");
    assert_eq!(
        recv_text_within(&mut b, Duration::from_secs(10)),
        "B's reply"
    );
}

// ---------------------------------------------------------------------------
// Configuration.

fn config_with(uri: &str, extra: &str) -> String {
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&aws_integration("backend", uri, extra));
    c.push_str(&route("$default", "backend"));
    c
}

fn assert_config_error(exit: &Exit, key: &str) {
    assert_eq!(exit.status.code(), Some(1), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains(key),
        "the error names {key}:\n{}",
        exit.stderr
    );
}

#[test]
fn https_without_tls_ca_is_accepted_with_the_system_roots() {
    let exit = run_to_exit(&config_with("https://127.0.0.1/up", ""), &["--check"]);
    assert_eq!(exit.status.code(), Some(0), "stderr:\n{}", exit.stderr);
}

#[test]
fn an_unreadable_or_empty_tls_ca_is_a_config_error() {
    let missing = temp_dir().join("missing.pem");
    let exit = run_to_exit(
        &config_with("https://127.0.0.1:8443/up", &tls_ca(&missing)),
        &["--check"],
    );
    assert_config_error(&exit, "integrations.backend.tls_ca");
    assert!(exit.stderr.contains("missing.pem"), "{}", exit.stderr);

    let empty = temp_dir().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let exit = run_to_exit(
        &config_with("https://127.0.0.1:8443/up", &tls_ca(&empty)),
        &["--check"],
    );
    assert_config_error(&exit, "integrations.backend.tls_ca");

    let garbage = temp_dir().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let exit = run_to_exit(
        &config_with("https://127.0.0.1:8443/up", &tls_ca(&garbage)),
        &["--check"],
    );
    assert_config_error(&exit, "integrations.backend.tls_ca");
}

#[test]
fn tls_ca_on_an_http_uri_or_a_mock_is_a_config_error() {
    let ca = Ca::new("wsgate test CA").pem_file();
    let exit = run_to_exit(
        &config_with("http://127.0.0.1:8080/up", &tls_ca(&ca)),
        &["--check"],
    );
    assert_config_error(&exit, "integrations.backend.tls_ca");
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&format!(
        "[integrations.m]\ntype = \"mock\"\n{}\n\n",
        tls_ca(&ca)
    ));
    c.push_str(&route("$default", "m"));
    assert_config_error(&run_to_exit(&c, &["--check"]), "integrations.m.tls_ca");
}

/// SPEC §12: an `https://` Lambda endpoint (`[aws] lambda_endpoint`, trusted through
/// the integration's `tls_ca`) carries the signed Invoke API calls; botocore's
/// `SigV4Auth` agrees with each signature.
#[test]
fn a_lambda_function_is_invoked_over_an_https_endpoint() {
    use crate::lambda::*;
    let ca = Ca::new("wsgate lambda CA");
    let backend = TlsBackend::start(&ca, &["127.0.0.1"], "127.0.0.1:0", invoke_fixture());
    let config = lambda_config(
        &backend.url("127.0.0.1", ""),
        "region = \"us-east-1\"",
        ARN,
        &tls_ca(&ca.pem_file()),
    );
    let gw = Gateway::start_with_env(&config, &ENV);
    let mut client = Client::connect(gw.listen, "/prod");
    assert_eq!(client.ask("over tls"), "pong:over tls");
    let message = backend.inner.wait_event("MESSAGE");
    assert_invoke(&message, KEY, "us-east-1");
    assert_eq!(
        message.header("Host"),
        Some(format!("127.0.0.1:{}", backend.addr.port()).as_str())
    );
    botocore_verifies(&[message], KEY, SECRET, Some(TOKEN), "us-east-1");
}
