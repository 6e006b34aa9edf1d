//! SPEC §13: `management.on_api_listener = true` serves `@connections` on the client
//! port (with the management auth and bounds), while upgrades and every other
//! request keep §3's answers; without it the client port answers as before.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use tungstenite::Message;

use crate::mgmt::*;
use crate::support::*;

const TOKEN: &str = "auth = \"token\"\ntoken = \"s3cret\"\non_api_listener = true";
const OK: &[(&str, &str)] = &[("Authorization", "Bearer s3cret")];

fn two_workers(management: &str) -> Gateway {
    Gateway::start_with(&whoami_config(management, ""), &["--workers", "2"])
}

#[test]
fn connections_calls_on_the_client_port_post_get_and_delete() {
    let gw = two_workers(TOKEN);
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    // Through the CLIENT port, keep-alive, with and without the stage.
    let mut m = Mgmt::connect(gw.listen);
    let path = format!("/prod/@connections/{id}");
    m.call("POST", &path, OK, b"via the api port").expect(200);
    assert_eq!(raw.recv_text(), "via the api port");
    let v = m.call("GET", &path, OK, b"").expect(200).json();
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    m.call("POST", &path, &[("Authorization", "Bearer wrong")], b"no")
        .expect_error(403, "ForbiddenException");
    // Only `@connections` is served there: /health and /metrics are not.
    m.call("GET", "/health", OK, b"").expect_some_error(404);
    m.call("GET", "/metrics", OK, b"").expect_some_error(404);
    // Percent-encoded, without the stage.
    let encoded = format!("/%40connections/{}", id.replace('=', "%3D"));
    m.call("DELETE", &encoded, OK, b"").expect(204);
    raw.expect_close_with(1000, "Connection Closed Normally");
    m.call("GET", &path, OK, b"")
        .expect_error(410, "GoneException");
    // A call that starts a fresh connection with a wrong token is refused too.
    call(gw.listen, "GET", &path, &[], b"").expect_error(403, "ForbiddenException");
}

#[test]
fn ids_owned_by_either_worker_work_from_one_api_port_connection() {
    let gw = two_workers(TOKEN);
    let mut clients = clients_on_both_workers(&gw);
    // Pipelined on one connection: whichever worker accepted it, some ids are the
    // other worker's.
    let mut bytes = Vec::new();
    for (i, (_, id)) in clients.iter().enumerate() {
        let t = format!("/prod/@connections/{id}");
        bytes.extend(request_bytes(
            "POST",
            &t,
            OK,
            format!("to {i}").as_bytes(),
            false,
        ));
    }
    let mut m = Mgmt::connect(gw.listen);
    std::io::Write::write_all(&mut m.stream, &bytes).unwrap();
    for _ in &clients {
        m.read_reply().expect(200);
    }
    for (i, (raw, _)) in clients.iter_mut().enumerate() {
        assert_eq!(raw.recv_text(), format!("to {i}"));
    }
    // They were never clients: no connect counted for the API-port calls.
    let connects = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("event=connect "))
        .count();
    assert_eq!(
        connects,
        clients.len(),
        "only the WebSocket clients connected"
    );
    assert!(
        !gw.stderr().contains("event=disconnect"),
        "nothing disconnected"
    );
}

#[test]
fn upgrades_and_other_requests_keep_their_answers() {
    let gw = two_workers(TOKEN);
    let mut raw = gw.raw();
    id_of(&mut raw);
    let mut s = tcp(gw.listen);
    std::io::Write::write_all(&mut s, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 404);
    let r = http(gw.listen, b"GET /prod HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 426);
    let r = http(
        gw.listen,
        b"POST /prod HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn without_the_setting_connections_paths_on_the_client_port_are_405() {
    let gw = Gateway::start(&whoami_config("auth = \"token\"\ntoken = \"s3cret\"", ""));
    let r = http(
        gw.listen,
        b"POST /prod/@connections/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn the_setting_needs_an_authenticated_management_api() {
    let exit = run_to_exit(&whoami_config("on_api_listener = true", ""), &[]);
    assert!(!exit.status.success());
    assert!(
        exit.stderr.contains("management.on_api_listener"),
        "the error names the key: {}",
        exit.stderr
    );
}

#[test]
fn boto3_drives_connections_on_the_client_port_with_sigv4() {
    let (key, secret) = (
        "AKIAWSGATEAPIPORT001",
        "api/Port+Secret=Key0123456789abcdefXY",
    );
    let gw = two_workers(&format!(
        "auth = \"sigv4\"\naccess_key_id = {}\nsecret_access_key = {}\non_api_listener = true",
        toml_str(key),
        toml_str(secret)
    ));
    let since = crate::backend::now_ms();
    let (mut raw, id) = crate::sdk::client(&gw);
    // The SDK pointed at the API's own address, as an AWS handler builds it.
    let url = format!("http://{}/prod", gw.listen);
    let message = "posted by boto3 to the api port";
    let creds = ["--access-key", key, "--secret-key", secret];
    crate::sdk::management_sdk(&gw, &url, &id, "ok", message, since, &creds);
    assert_eq!(raw.recv_text(), message);
    raw.expect_close_with(1000, "Connection Closed Normally");
}

#[test]
fn over_tls_a_post_on_the_client_port_reaches_a_wss_client() {
    let dir = temp_dir();
    let pki = crate::tls::make_pki(&dir, "api");
    let mut c = whoami_config(TOKEN, "");
    c.push_str(&format!(
        "[server.tls]\ncert = {}\nkey = {}\n",
        toml_str(&pki.cert.to_string_lossy()),
        toml_str(&pki.key.to_string_lossy())
    ));
    let gw = Gateway::start_with(&c, &["--workers", "2"]);
    let config = tls_client(&pki.ca_pem);
    let s = tls_connect(gw.listen, config.clone());
    let url = format!("wss://localhost:{}/prod", gw.listen.port());
    let (mut ws, _) = tungstenite::client(url.as_str(), s).expect("wss upgrade");
    ws.send(Message::text("who am i")).unwrap();
    let id = next_text(&mut ws);
    // A keep-alive HTTPS connection to the same port: two requests.
    let mut s = tls_connect(gw.listen, config);
    let path = format!("/prod/@connections/{id}");
    let mut bytes = request_bytes("POST", &path, OK, b"over https", false);
    bytes.extend(request_bytes("GET", &path, OK, b"", true));
    s.write_all(&bytes).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert!(text.contains("\"connectedAt\""), "{text}");
    assert_eq!(next_text(&mut ws), "over https");
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn tls_client(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let c = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(c)
}

fn tls_connect(addr: SocketAddr, config: Arc<ClientConfig>) -> Tls {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let mut s = StreamOwned::new(conn, tcp(addr));
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("TLS handshake");
    }
    s
}

fn next_text(ws: &mut tungstenite::WebSocket<Tls>) -> String {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            Message::Ping(_) | Message::Pong(_) => {}
            m => panic!("unexpected {m:?}"),
        }
    }
}

#[test]
fn management_bounds_hold_on_the_client_port() {
    let gw = Gateway::start(&whoami_config(TOKEN, "max_message_bytes = 64"));
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let path = format!("/prod/@connections/{id}");
    // A head split across writes (stashed by the handshake first), then handed over.
    let req = request_bytes("POST", &path, OK, b"split", false);
    let mut s = tcp(gw.listen);
    for chunk in req.chunks(7) {
        s.write_all(chunk).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_response(&mut s).status, 200);
    assert_eq!(raw.recv_text(), "split");
    // Over max_message_bytes: 413.
    call(gw.listen, "POST", &path, OK, &[b'x'; 65]).expect_error(413, "PayloadTooLargeException");
    // An incomplete next head on the handed-over connection: closed at the header
    // timeout (5 s), not left open.
    s.write_all(b"GET /prod/@connections/").unwrap();
    wait_closed(&mut s, Duration::from_secs(10));
}
