//! SPEC §10.1: TLS termination on the client and management listeners. Certificates
//! are made at test time with rcgen (a CA and a server certificate for `localhost`
//! and 127.0.0.1) and written to a temp dir; clients are rustls + tungstenite over
//! `rustls::StreamOwned`, raw TCP for hand-made ClientHellos.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::{Message, WebSocket};

use crate::support::*;

/// A CA and a server certificate it signed, as PEM files in `dir`.
pub struct Pki {
    pub ca_pem: String,
    pub ca_path: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Makes a CA named `name` and a `localhost`/127.0.0.1 certificate; writes
/// `<name>-ca.pem`, `<name>-cert.pem` (the chain) and `<name>-key.pem` into `dir`.
pub fn make_pki(dir: &Path, name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("wsgate test CA {name}"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let pki = Pki {
        ca_pem: ca.pem(),
        ca_path: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca_path, &pki.ca_pem).unwrap();
    std::fs::write(&pki.cert, cert.pem() + &ca.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// `[server.tls]` (or another table) naming `cert` and `key`.
fn tls_table(table: &str, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[{table}]\ncert = {}\nkey = {}\n{extra}\n",
        toml_str(&cert.to_string_lossy()),
        toml_str(&key.to_string_lossy())
    )
}

/// The echo config (binary allowed) with `[server.tls]`.
fn tls_echo_config(cert: &Path, key: &Path, extra: &str) -> String {
    let mut c = echo_config("binary = \"allow\"");
    c.push_str(&tls_table("server.tls", cert, key, extra));
    c
}

fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

use rustls::pki_types::pem::PemObject;

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection to `addr`, handshake done (an error when it fails).
fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<Tls> {
    let tcp = tcp(addr);
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// A wss:// client on `/prod`.
fn wss(addr: SocketAddr, config: Arc<ClientConfig>) -> WebSocket<Tls> {
    let s = tls_connect(addr, config).expect("TLS handshake");
    let url = format!("wss://localhost:{}/prod", addr.port());
    let (ws, resp) = tungstenite::client(url.as_str(), s).expect("WebSocket upgrade over TLS");
    assert_eq!(resp.status().as_u16(), 101);
    ws
}

fn echo(ws: &mut WebSocket<Tls>, msg: Message) -> Message {
    ws.send(msg).unwrap();
    loop {
        match ws.read().unwrap() {
            Message::Ping(_) | Message::Pong(_) => {}
            m => return m,
        }
    }
}

#[test]
fn wss_client_echoes_text_and_binary() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start(&tls_echo_config(&pki.cert, &pki.key, ""));
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let mut ws = wss(gw.listen, client_config(&pki.ca_pem, all));
    let text = "héllo over TLS ✓".to_string();
    assert_eq!(
        echo(&mut ws, Message::text(text.clone())),
        Message::text(text)
    );
    // Larger than one TLS record (16 KiB), so it spans several.
    let bin: Vec<u8> = (0..30_000u32).map(|i| (i % 251) as u8).collect();
    let back = echo(&mut ws, Message::binary(bin.clone()));
    assert!(back == Message::binary(bin), "binary echo differs");
    // The plain client listener is not there: a plain upgrade gets no 101.
    let mut plain = gw.tcp();
    plain
        .write_all(upgrade_request("/prod").as_bytes())
        .unwrap();
    let mut buf = [0u8; 16];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"HTTP/1.1 101"),
        "plain text upgraded"
    );
}

#[test]
fn tls_1_2_and_1_3_both_handshake_and_alpn_is_http_1_1() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start(&tls_echo_config(
        &pki.cert,
        &pki.key,
        "min_version = \"1.2\"",
    ));
    for (version, want) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let config = client_config(&pki.ca_pem, &[version]);
        let s = tls_connect(gw.listen, config.clone()).expect("handshake");
        assert_eq!(s.conn.protocol_version(), Some(want));
        assert_eq!(s.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        let mut ws = wss(gw.listen, config);
        assert_eq!(echo(&mut ws, Message::text("v")), Message::text("v"));
    }
}

#[test]
fn sessions_resume_with_tickets() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start_with(
        &tls_echo_config(&pki.cert, &pki.key, ""),
        &["--workers", "2"],
    );
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let config = client_config(&pki.ca_pem, &[version]);
        let mut first = tls_connect(gw.listen, config.clone()).unwrap();
        assert_eq!(
            first.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Full)
        );
        // TLS 1.3 tickets arrive after the handshake: read until the client has one.
        first
            .sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let _ = first.read(&mut [0u8; 1]);
        let again = tls_connect(gw.listen, config).unwrap();
        assert_eq!(
            again.conn.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{version:?}"
        );
    }
}

#[test]
fn min_version_1_3_refuses_a_tls_1_2_client() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start(&tls_echo_config(
        &pki.cert,
        &pki.key,
        "min_version = \"1.3\"",
    ));
    let only12 = client_config(&pki.ca_pem, &[&rustls::version::TLS12]);
    assert!(tls_connect(gw.listen, only12).is_err());
    let only13 = client_config(&pki.ca_pem, &[&rustls::version::TLS13]);
    let mut ws = wss(gw.listen, only13);
    assert_eq!(echo(&mut ws, Message::text("ok")), Message::text("ok"));
}

/// A minimal ClientHello that offers TLS 1.0 only (record and hello version
/// 0x0301, one 1.0-era cipher suite, no extensions).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01]; // client_version TLS 1.0
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let mut hs = vec![0x01, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    record.extend_from_slice(&hs);
    record
}

#[test]
fn a_tls_1_0_only_client_is_refused_and_closed() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start(&tls_echo_config(&pki.cert, &pki.key, ""));
    let mut s = gw.tcp();
    s.write_all(&tls10_client_hello()).unwrap();
    // An alert record (content type 21), then the server closes.
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("an alert before the close");
    assert_eq!(first[0], 0x15, "a TLS alert record");
    wait_closed(&mut s, Duration::from_secs(5));
    // The refused connection is not leaked: the gateway still serves.
    let all = &[&rustls::version::TLS13];
    let mut ws = wss(gw.listen, client_config(&pki.ca_pem, all));
    assert_eq!(echo(&mut ws, Message::text("x")), Message::text("x"));
}

#[test]
fn a_client_stalling_mid_handshake_is_closed_after_handshake_timeout() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    // base_config sets handshake_timeout = "1s".
    let gw = Gateway::start(&tls_echo_config(&pki.cert, &pki.key, ""));
    let hello = tls10_client_hello();
    let mut s = gw.tcp();
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    // A client that finished its TLS handshake but stalls in HTTP is closed by the
    // same timer: the two take the same path.
    let all = &[&rustls::version::TLS13];
    let mut t = tls_connect(gw.listen, client_config(&pki.ca_pem, all)).unwrap();
    t.write_all(b"GET /prod HTTP/1.1\r\n").unwrap();
    wait_closed(&mut s, Duration::from_secs(10));
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match t.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        assert!(Instant::now() < deadline, "TLS client not closed");
    }
}

#[test]
fn a_missing_or_mismatched_pair_stops_the_start_naming_the_file() {
    let dir = temp_dir();
    let a = make_pki(&dir, "a");
    let b = make_pki(&dir, "b");
    let missing = dir.join("nope.pem");
    let exit = run_to_exit(&tls_echo_config(&missing, &a.key, ""), &[]);
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(exit.stderr.contains("server.tls.cert"), "{}", exit.stderr);
    assert!(exit.stderr.contains("nope.pem"), "{}", exit.stderr);
    let exit = run_to_exit(&tls_echo_config(&a.cert, &b.key, ""), &[]);
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(exit.stderr.contains("server.tls.key"), "{}", exit.stderr);
    assert!(exit.stderr.contains("b-key.pem"), "{}", exit.stderr);
    let exit = run_to_exit(
        &tls_echo_config(&a.cert, &a.key, "min_version = \"1.0\""),
        &[],
    );
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("server.tls.min_version"),
        "{}",
        exit.stderr
    );
}

fn sighup(gw: &Gateway) {
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(gw.pid().to_string())
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Copies `from`'s pair over the files the gateway was started with.
fn replace_pair(into: &Pki, cert: &Path, key: &Path) {
    std::fs::copy(cert, &into.cert).unwrap();
    std::fs::copy(key, &into.key).unwrap();
}

/// Waits until the gateway's stderr contains `needle`.
fn wait_log(gw: &Gateway, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.stderr().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            gw.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections_only() {
    let dir = temp_dir();
    let a = make_pki(&dir, "a");
    let b = make_pki(&dir, "b");
    let gw = Gateway::start_with(&tls_echo_config(&a.cert, &a.key, ""), &["--workers", "2"]);
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let trust_a = client_config(&a.ca_pem, all);
    let trust_b = client_config(&b.ca_pem, all);
    let mut old = wss(gw.listen, trust_a.clone());
    assert!(tls_connect(gw.listen, trust_b).is_err());
    replace_pair(&a, &b.cert, &b.key);
    sighup(&gw);
    wait_log(&gw, "server.tls: reloaded");
    // Every worker (both take connections) serves the new pair; the open one
    // keeps echoing. (Fresh client configs: a cached session would resume without
    // looking at the certificate.)
    for _ in 0..8 {
        let mut ws = wss(gw.listen, client_config(&b.ca_pem, all));
        assert_eq!(echo(&mut ws, Message::text("new")), Message::text("new"));
        assert!(tls_connect(gw.listen, client_config(&a.ca_pem, all)).is_err());
    }
    assert_eq!(echo(&mut old, Message::text("old")), Message::text("old"));
}

#[test]
fn sighup_with_a_broken_pair_keeps_the_old_one_and_logs_the_file() {
    let dir = temp_dir();
    let a = make_pki(&dir, "a");
    let b = make_pki(&dir, "b");
    let gw = Gateway::start_with(&tls_echo_config(&a.cert, &a.key, ""), &["--workers", "2"]);
    let all = &[&rustls::version::TLS13];
    let trust_a = client_config(&a.ca_pem, all);
    // b's key does not fit a's certificate.
    std::fs::copy(&b.key, &a.key).unwrap();
    sighup(&gw);
    wait_log(&gw, "a-key.pem");
    assert!(gw.stderr().contains("keeping the previous pair"));
    for _ in 0..4 {
        let mut ws = wss(gw.listen, trust_a.clone());
        assert_eq!(
            echo(&mut ws, Message::text("still")),
            Message::text("still")
        );
    }
    // Unreadable: the certificate file is gone.
    std::fs::remove_file(&a.cert).unwrap();
    sighup(&gw);
    wait_log(&gw, "a-cert.pem");
    let mut ws = wss(gw.listen, trust_a);
    assert_eq!(
        echo(&mut ws, Message::text("still")),
        Message::text("still")
    );
}

#[test]
fn management_api_is_served_over_https() {
    let dir = temp_dir();
    let a = make_pki(&dir, "a");
    let mut c = echo_config("");
    c.push_str(&tls_table("management.tls", &a.cert, &a.key, ""));
    let gw = Gateway::start(&c);
    let all = &[&rustls::version::TLS13, &rustls::version::TLS12];
    let mut s = tls_connect(gw.management, client_config(&a.ca_pem, all)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // The client listener stays plain.
    let mut raw = gw.raw();
    raw.send_text("plain");
    assert_eq!(raw.recv_text(), "plain");
}

#[test]
fn python_websockets_echoes_over_wss() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start(&tls_echo_config(&pki.cert, &pki.key, ""));
    let python = crate::sdk::sdk_python();
    let url = format!("wss://localhost:{}/prod", gw.listen.port());
    let ca = pki.ca_path.to_string_lossy().into_owned();
    let args = ["tests/sdk/wss_echo.py", "--url", &url, "--ca", &ca];
    let (ok, out, err) = crate::sdk::run(&python, &args, Duration::from_secs(60));
    assert!(
        ok,
        "wss_echo.py failed:\n{out}\n{err}\ngateway:\n{}",
        gw.stderr()
    );
}

#[test]
fn boto3_drives_the_management_api_over_https() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let mut c = crate::mgmt::whoami_config("auth = \"none\"", "");
    c.push_str(&tls_table("management.tls", &pki.cert, &pki.key, ""));
    let gw = Gateway::start_with(&c, &["--workers", "2"]);
    let since = crate::backend::now_ms();
    let (mut raw, id) = crate::sdk::client(&gw);
    let url = format!("https://localhost:{}/prod", gw.management.port());
    let ca = pki.ca_path.to_string_lossy().into_owned();
    let message = "posted over https";
    crate::sdk::management_sdk(&gw, &url, &id, "ok", message, since, &["--ca", &ca]);
    assert_eq!(raw.recv_text(), message);
    raw.expect_close_with(1000, "Connection Closed Normally");
}

#[test]
fn a_tls_client_that_never_reads_cannot_queue_past_the_outbound_limit() {
    // Issue 8's rule over TLS: records the socket does not take count against
    // `max_pending_outbound_bytes`, so reading pauses instead of queueing.
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let gw = Gateway::start_with(
        &tls_echo_config(&pki.cert, &pki.key, ""),
        &["--workers", "1"],
    );
    let start_rss = gw.rss_kib();
    let all = &[&rustls::version::TLS13];
    let s = tls_connect(gw.listen, client_config(&pki.ca_pem, all)).unwrap();
    let (mut conn, mut sock) = (s.conn, s.sock);
    // Upgrade by hand; the 101 is read, nothing after it ever is.
    conn.writer()
        .write_all(upgrade_request("/prod").as_bytes())
        .unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut sock).unwrap();
    }
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        conn.read_tls(&mut sock).unwrap();
        conn.process_new_packets().unwrap();
        let mut buf = [0u8; 4096];
        if let Ok(n) = conn.reader().read(&mut buf) {
            head.extend_from_slice(&buf[..n]);
        }
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    sock.set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let batch = masked(true, OP_TEXT, &[b'x'; 1024]).repeat(16);
    let (sent, peak) = flood_until_stalled(&gw, batch.len(), 256 << 20, || {
        conn.writer().write_all(&batch)?;
        while conn.wants_write() {
            conn.write_tls(&mut sock)?;
        }
        Ok(())
    });
    assert!(
        sent < 64 << 20,
        "the gateway kept reading a TLS client that never reads: {} MiB accepted",
        sent >> 20
    );
    assert!(
        peak < start_rss + 64 * 1024,
        "RSS grew from {start_rss} KiB to {peak} KiB"
    );
    // Another client of the same worker is served meanwhile.
    let mut other = wss(gw.listen, client_config(&pki.ca_pem, all));
    assert_eq!(
        echo(&mut other, Message::text("still")),
        Message::text("still")
    );
    drop((conn, sock));
}

#[test]
fn a_tls_client_whose_replies_keep_pausing_its_reads_gets_every_echo() {
    // A small outbound limit pauses reading again and again while rustls already
    // holds decrypted input the socket no longer reports: nothing may be stranded.
    const MESSAGES: usize = 20_000;
    const BATCH: usize = 100;
    const PAYLOAD: usize = 200;
    /// A server frame of PAYLOAD bytes: 2 header bytes and a 16-bit length.
    const FRAME: usize = PAYLOAD + 4;
    let dir = temp_dir();
    let pki = make_pki(&dir, "a");
    let mut c = echo_config("max_pending_outbound_bytes = 4096");
    c.push_str(&tls_table("server.tls", &pki.cert, &pki.key, ""));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let all = &[&rustls::version::TLS13];
    let s = tls_connect(gw.listen, client_config(&pki.ca_pem, all)).unwrap();
    let (mut conn, mut sock) = (s.conn, s.sock);
    conn.set_buffer_limit(None);
    conn.writer()
        .write_all(upgrade_request("/prod").as_bytes())
        .unwrap();
    let one = masked(true, OP_TEXT, &[b'e'; PAYLOAD]);
    let batch = one.repeat(BATCH);
    sock.set_write_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut input = Vec::new();
    let mut head_done = false;
    let mut sent = 0;
    let mut echoed = 0usize;
    let mut frames = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while echoed < MESSAGES * FRAME {
        assert!(
            Instant::now() < deadline,
            "{} of {MESSAGES} echoes after 60 s ({sent} sent)",
            echoed / FRAME
        );
        if head_done && sent < MESSAGES && !conn.wants_write() {
            conn.writer().write_all(&batch).unwrap();
            sent += BATCH;
        }
        while conn.wants_write() {
            match conn.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        match conn.read_tls(&mut sock) {
            Ok(0) => panic!("closed after {echoed} echoed bytes"),
            Ok(_) => {
                conn.process_new_packets().unwrap();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
        let mut buf = [0u8; 65536];
        while let Ok(n) = conn.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            if head_done {
                echoed += n;
                frames.extend_from_slice(&buf[..n]);
            } else {
                input.extend_from_slice(&buf[..n]);
                if let Some(end) = input.windows(4).position(|w| w == b"\r\n\r\n") {
                    assert!(input.starts_with(b"HTTP/1.1 101"));
                    echoed += input.len() - end - 4;
                    head_done = true;
                }
            }
        }
    }
    // Every frame is one whole echo.
    for (k, f) in frames.chunks(FRAME).enumerate() {
        assert_eq!(&f[..4], &[0x81, 126, 0, PAYLOAD as u8], "frame {k}");
        assert!(f[4..].iter().all(|&b| b == b'e'), "frame {k}");
    }
    assert_eq!(echoed, MESSAGES * FRAME, "no more bytes than echoes");
}

#[test]
fn a_stalled_https_management_handshake_is_closed_at_the_header_timeout() {
    let dir = temp_dir();
    let a = make_pki(&dir, "a");
    let mut c = echo_config("");
    c.push_str(&tls_table("management.tls", &a.cert, &a.key, ""));
    let gw = Gateway::start(&c);
    let hello = tls10_client_hello();
    let mut s = tcp(gw.management);
    s.write_all(&hello[..hello.len() / 2]).unwrap();
    // The header timeout (5 s), not the idle timeout (60 s).
    let took = wait_closed(&mut s, Duration::from_secs(30));
    assert!(took < Duration::from_secs(30), "{took:?}");
}

/// A PROXY v1 header and the TLS ClientHello in ONE write, so the gateway reads
/// both at once: the bytes past the header must reach rustls (SPEC §10.2: the PROXY
/// header comes before TLS), and the header's address is the client's.
#[test]
fn a_proxy_header_then_tls_in_one_write_names_the_client() {
    let dir = temp_dir();
    let pki = make_pki(&dir, "proxy");
    let mut c = whoami_tls_config(&pki, "proxy_protocol = \"v1\"");
    c.push('\n');
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let config = client_config(&pki.ca_pem, &[&rustls::version::TLS13]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut first = b"PROXY TCP4 198.51.100.7 127.0.0.1 40000 443\r\n".to_vec();
    conn.write_tls(&mut first).unwrap(); // the ClientHello
    let mut tcp = tcp(gw.listen);
    tcp.write_all(&first).unwrap();
    let mut s = StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn
            .complete_io(&mut s.sock)
            .expect("TLS handshake after a PROXY header");
    }
    let url = format!("wss://localhost:{}/prod", gw.listen.port());
    let (mut ws, _) = tungstenite::client(url.as_str(), s).expect("upgrade");
    let id = match echo(&mut ws, Message::text("who")) {
        Message::Text(t) => t.to_string(),
        m => panic!("{m:?}"),
    };
    let r = crate::mgmt::Mgmt::connect(gw.management).get(&id);
    r.expect(200);
    assert_eq!(r.json()["identity"]["sourceIp"], "198.51.100.7");
}

/// The whoami config (`$default` answers with the connection id) with
/// `[server.tls]` and `server_extra` lines in `[server]`.
fn whoami_tls_config(pki: &Pki, server_extra: &str) -> String {
    let c = crate::mgmt::whoami_config("", "").replace(
        "handshake_timeout = \"1s\"\n",
        &format!("handshake_timeout = \"1s\"\n{server_extra}\n"),
    );
    format!("{c}{}", tls_table("server.tls", &pki.cert, &pki.key, ""))
}
