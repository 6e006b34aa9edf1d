//! The `wss://` client against a tiny in-test rustls WebSocket echo server (blocking,
//! a thread per connection: test scaffolding, not the generator's design), with a CA
//! and server certificate made by `tls::make_test_pki` at test time: `rr` echoes with no
//! fault, `connect` does full handshakes by default and resumed ones with
//! `--tls-resume`, an untrusted certificate fails every handshake, and `idle` holds
//! TLS connections.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use wsgate_load::tls::{self, TestPki, TlsClient, Trust, Versions};
use wsgate_load::{connect, idle, rr, ws};

fn pki(name: &str) -> TestPki {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("wsgate-load-tls-{}-{name}", std::process::id()));
    tls::make_test_pki(&dir).unwrap()
}

/// Starts the echo server on 127.0.0.1:0 with the given certificate; runs until the
/// test process ends.
fn echo_server(p: &TestPki) -> SocketAddr {
    let certs: Vec<CertificateDer<'static>> = tls::read_certs(&p.cert).unwrap();
    let key = PrivateKeyDer::from_pem_file(&p.key).unwrap();
    let mut cfg = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = serve(s, cfg);
            });
        }
    });
    addr
}

fn serve(s: TcpStream, cfg: Arc<rustls::ServerConfig>) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let conn = rustls::ServerConnection::new(cfg).map_err(std::io::Error::other)?;
    let mut t = rustls::StreamOwned::new(conn, s);
    // The upgrade request.
    let mut req = Vec::new();
    let mut b = [0u8; 1];
    while !req.ends_with(b"\r\n\r\n") {
        if t.read(&mut b)? == 0 || req.len() > 8192 {
            return Ok(());
        }
        req.push(b[0]);
    }
    let text = String::from_utf8_lossy(&req);
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    write!(
        t,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        ws::accept_key(&key)
    )?;
    t.flush()?;
    // Frames: echo data, answer a close with a close and end the connection.
    loop {
        let mut h = [0u8; 2];
        t.read_exact(&mut h)?;
        let op = h[0] & 0x0f;
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut e = [0u8; 2];
            t.read_exact(&mut e)?;
            len = u16::from_be_bytes(e) as usize;
        } else if len == 127 {
            let mut e = [0u8; 8];
            t.read_exact(&mut e)?;
            len = u64::from_be_bytes(e) as usize;
        }
        let mut mask = [0u8; 4];
        t.read_exact(&mut mask)?;
        let mut p = vec![0u8; len];
        t.read_exact(&mut p)?;
        ws::apply_mask(&mut p, mask);
        let mut out = Vec::new();
        ws::encode_server_frame(&mut out, op, &p);
        t.write_all(&out)?;
        t.flush()?;
        if op == ws::OP_CLOSE {
            t.conn.send_close_notify();
            let _ = t.flush();
            return Ok(());
        }
    }
}

fn target(addr: SocketAddr, trust: &Trust, resume: bool) -> ws::Target {
    let t = ws::parse_url(&format!("wss://{addr}/")).unwrap();
    let c = TlsClient::new(t.hostname(), trust, Versions::Tls13, resume).unwrap();
    t.with_tls(c)
}

#[test]
fn rr_over_wss_echoes_without_fault() {
    let p = pki("rr");
    let addr = echo_server(&p);
    let mut o = rr::RrOpts::new(target(
        addr,
        &Trust::CaFile(p.ca.display().to_string()),
        false,
    ));
    o.connections = 4;
    o.duration = Duration::from_millis(800);
    o.payload = 300; // more than one small record's worth, fewer than one read
    o.pipeline = 2;
    o.progress = false;
    let r = rr::run(&o).unwrap();
    assert_eq!(r.connections, 4);
    assert!(r.completed > 50, "only {} replies", r.completed);
    assert_eq!(r.faults(), 0, "{r:?}");
    // Also with a payload bigger than a TLS record (16 KiB) and the read buffer.
    o.payload = 40_000;
    o.connections = 2;
    let r = rr::run(&o).unwrap();
    assert!(r.completed > 5, "only {} replies", r.completed);
    assert_eq!(r.faults(), 0, "{r:?}");
}

fn storm(t: ws::Target) -> connect::ConnectResult {
    let o = connect::ConnectOpts {
        target: t,
        concurrency: 2,
        threads: 1,
        duration: Duration::from_millis(800),
        sources: 1,
        close: connect::CloseMode::Clean,
        timeout: Duration::from_secs(5),
        progress: false,
        stop: None,
    };
    connect::run(&o).unwrap()
}

#[test]
fn connect_full_and_resumed_handshakes() {
    let p = pki("connect");
    let addr = echo_server(&p);
    let trust = Trust::CaFile(p.ca.display().to_string());
    let full = storm(target(addr, &trust, false));
    assert!(full.handshakes > 5, "{full:?}");
    assert_eq!(full.faults(), 0, "{full:?}");
    assert_eq!(full.tls_resumed, 0, "resumption is off by default");
    let resumed = storm(target(addr, &trust, true));
    assert!(resumed.handshakes > 5, "{resumed:?}");
    assert_eq!(resumed.faults(), 0, "{resumed:?}");
    // All but the first few (before a ticket arrived) resume.
    assert!(
        resumed.tls_resumed * 2 > resumed.handshakes,
        "{} of {} resumed",
        resumed.tls_resumed,
        resumed.handshakes
    );
    // --insecure accepts the same server without the CA.
    let insecure = storm(target(addr, &Trust::Insecure, false));
    assert!(
        insecure.handshakes > 5 && insecure.faults() == 0,
        "{insecure:?}"
    );
}

#[test]
fn untrusted_certificate_fails_every_handshake() {
    let server = pki("untrusted-server");
    let other = pki("untrusted-other-ca");
    let addr = echo_server(&server);
    let r = storm(target(
        addr,
        &Trust::CaFile(other.ca.display().to_string()),
        false,
    ));
    assert_eq!(r.handshakes, 0, "{r:?}");
    assert!(r.bad_handshakes > 0, "{r:?}");
}

#[test]
fn idle_holds_tls_connections() {
    let p = pki("idle");
    let addr = echo_server(&p);
    let o = idle::IdleOpts {
        target: target(addr, &Trust::CaFile(p.ca.display().to_string()), false),
        count: 20,
        sources: 2,
        source_offset: 0,
        concurrency: 8,
        duration: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(10),
        gateway_pid: None,
        announce: false,
    };
    let r = idle::run(&o).unwrap();
    assert_eq!((r.opened, r.failed, r.dropped), (20, 0, 0), "{r:?}");
}
