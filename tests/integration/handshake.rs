//! SPEC §3: the upgrade request, its rejections in order, and the handshake timeout.

use std::io::Write;
use std::time::Duration;

use crate::support::*;

fn gateway() -> Gateway {
    Gateway::start(&echo_config(""))
}

/// A request built from a request line and header lines (each without CRLF).
fn request(request_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut r = format!("{request_line}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

const HOST: &str = "Host: 127.0.0.1";
const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
const VERSION: &str = "Sec-WebSocket-Version: 13";
const VALID: [&str; 5] = [HOST, UPGRADE, CONNECTION, KEY, VERSION];

fn status(gw: &Gateway, request_line: &str, headers: &[&str]) -> Response {
    http(gw.listen, &request(request_line, headers))
}

fn long_url(len: usize) -> String {
    let mut url = String::from("/prod?q=");
    while url.len() < len {
        url.push('a');
    }
    url
}

#[test]
fn valid_upgrade_gets_101_with_the_rfc_accept_key() {
    let gw = gateway();
    let resp = status(&gw, "GET /prod HTTP/1.1", &VALID);
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
    assert!(
        resp.header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{resp:?}"
    );
    assert!(
        resp.header("Connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{resp:?}"
    );
    assert_eq!(
        resp.header("Sec-WebSocket-Protocol"),
        None,
        "no subprotocol without a backend"
    );
}

#[test]
fn stage_path_with_trailing_slash_is_accepted() {
    let gw = gateway();
    let resp = status(&gw, "GET /prod/ HTTP/1.1", &VALID);
    assert_eq!(resp.status, 101, "{resp:?}");
}

#[test]
fn stage_path_with_a_query_string_is_accepted() {
    let gw = gateway();
    let resp = status(&gw, "GET /prod?token=abc&x=1 HTTP/1.1", &VALID);
    assert_eq!(resp.status, 101, "{resp:?}");
}

#[test]
fn header_names_and_tokens_are_case_insensitive_and_connection_may_be_a_list() {
    let gw = gateway();
    let resp = status(
        &gw,
        "GET /prod HTTP/1.1",
        &[
            "host: 127.0.0.1",
            "upgrade: WebSocket",
            "connection: keep-alive, upgrade",
            "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==",
            "sec-websocket-version: 13",
        ],
    );
    assert_eq!(resp.status, 101, "{resp:?}");
    assert_eq!(resp.header("Sec-WebSocket-Accept"), Some(SAMPLE_ACCEPT));
}

#[test]
fn url_longer_than_4096_bytes_gets_414() {
    let gw = gateway();
    let line = format!("GET {} HTTP/1.1", long_url(4200));
    assert_eq!(status(&gw, &line, &VALID).status, 414);
}

#[test]
fn url_of_4000_bytes_is_accepted() {
    let gw = gateway();
    let line = format!("GET {} HTTP/1.1", long_url(4000));
    assert_eq!(status(&gw, &line, &VALID).status, 101);
}

#[test]
fn header_block_over_16_kib_gets_431() {
    let gw = gateway();
    let pad = format!("X-Pad: {}", "p".repeat(17 * 1024));
    let mut headers = VALID.to_vec();
    headers.push(&pad);
    assert_eq!(status(&gw, "GET /prod HTTP/1.1", &headers).status, 431);
}

#[test]
fn header_block_of_8_kib_is_accepted() {
    let gw = gateway();
    let pad = format!("X-Pad: {}", "p".repeat(8 * 1024));
    let mut headers = VALID.to_vec();
    headers.push(&pad);
    assert_eq!(status(&gw, "GET /prod HTTP/1.1", &headers).status, 101);
}

#[test]
fn post_gets_405() {
    let gw = gateway();
    assert_eq!(status(&gw, "POST /prod HTTP/1.1", &VALID).status, 405);
}

#[test]
fn put_gets_405() {
    let gw = gateway();
    assert_eq!(status(&gw, "PUT /prod HTTP/1.1", &VALID).status, 405);
}

#[test]
fn wrong_paths_get_404() {
    let gw = gateway();
    for path in ["/", "/dev", "/prodx", "/prod/extra", "/pro", "//prod"] {
        let resp = status(&gw, &format!("GET {path} HTTP/1.1"), &VALID);
        assert_eq!(resp.status, 404, "path {path:?}: {resp:?}");
    }
}

#[test]
fn plain_get_without_upgrade_gets_426_with_upgrade_websocket() {
    let gw = gateway();
    let resp = status(&gw, "GET /prod HTTP/1.1", &[HOST]);
    assert_eq!(resp.status, 426, "{resp:?}");
    assert!(
        resp.header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "426 must carry Upgrade: websocket: {resp:?}"
    );
}

#[test]
fn upgrade_to_another_protocol_gets_426() {
    let gw = gateway();
    let resp = status(
        &gw,
        "GET /prod HTTP/1.1",
        &[HOST, "Upgrade: h2c", CONNECTION, KEY, VERSION],
    );
    assert_eq!(resp.status, 426, "{resp:?}");
}

#[test]
fn upgrade_header_without_connection_upgrade_gets_426() {
    let gw = gateway();
    let resp = status(
        &gw,
        "GET /prod HTTP/1.1",
        &[HOST, UPGRADE, "Connection: keep-alive", KEY, VERSION],
    );
    assert_eq!(resp.status, 426, "{resp:?}");
}

#[test]
fn http_1_0_upgrade_gets_400() {
    let gw = gateway();
    assert_eq!(status(&gw, "GET /prod HTTP/1.0", &VALID).status, 400);
}

#[test]
fn missing_key_gets_400() {
    let gw = gateway();
    assert_eq!(
        status(
            &gw,
            "GET /prod HTTP/1.1",
            &[HOST, UPGRADE, CONNECTION, VERSION]
        )
        .status,
        400
    );
}

#[test]
fn key_that_is_not_base64_of_16_bytes_gets_400() {
    let gw = gateway();
    for key in [
        "Sec-WebSocket-Key: abc",
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA", // 15 bytes
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA", // 18 bytes
        "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!==", // not base64
        "Sec-WebSocket-Key: ",
    ] {
        let resp = status(
            &gw,
            "GET /prod HTTP/1.1",
            &[HOST, UPGRADE, CONNECTION, key, VERSION],
        );
        assert_eq!(resp.status, 400, "{key:?}: {resp:?}");
    }
}

#[test]
fn duplicate_key_gets_400() {
    let gw = gateway();
    let other = "Sec-WebSocket-Key: AQIDBAUGBwgJCgsMDQ4PEA==";
    for keys in [[KEY, other], [KEY, KEY]] {
        let resp = status(
            &gw,
            "GET /prod HTTP/1.1",
            &[HOST, UPGRADE, CONNECTION, keys[0], keys[1], VERSION],
        );
        assert_eq!(resp.status, 400, "{keys:?}: {resp:?}");
    }
}

/// The status and body of the answer to `request` (the gateway closes after it).
fn status_and_body(gw: &Gateway, request: &[u8]) -> (u16, String) {
    let mut s = gw.tcp();
    let _ = s.write_all(request);
    let head = read_response(&mut s);
    let len: usize = head
        .header("Content-Length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    std::io::Read::read_exact(&mut s, &mut body).expect("read the body");
    (head.status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn too_many_headers_get_431_saying_so_not_a_size() {
    let gw = gateway();
    let extra: Vec<String> = (0..200).map(|i| format!("X-H{i}: v")).collect();
    let mut headers = VALID.to_vec();
    headers.extend(extra.iter().map(String::as_str));
    let req = request("GET /prod HTTP/1.1", &headers);
    assert!(req.len() < 4096, "far below the 16 KiB block limit");
    let (status, body) = status_and_body(&gw, &req);
    assert_eq!(status, 431, "{body}");
    assert!(body.contains("too many headers"), "{body:?}");
    assert!(!body.contains("KiB"), "the block is small: {body:?}");
}

#[test]
fn absolute_form_targets_are_routed_by_their_path() {
    let gw = gateway();
    for target in [
        "http://127.0.0.1/prod",
        "http://example.com:8080/prod/",
        "HTTPS://example.com/prod?token=abc",
        "ws://example.com/prod",
    ] {
        let resp = status(&gw, &format!("GET {target} HTTP/1.1"), &VALID);
        assert_eq!(resp.status, 101, "{target}: {resp:?}");
    }
    for target in [
        "http://127.0.0.1/dev",
        "http://127.0.0.1",
        "http:/prod",
        "ftp://example.com/prod",
    ] {
        let resp = status(&gw, &format!("GET {target} HTTP/1.1"), &VALID);
        assert_eq!(resp.status, 404, "{target}: {resp:?}");
    }
}

#[test]
fn version_other_than_13_gets_426_naming_13() {
    let gw = gateway();
    for version in ["Sec-WebSocket-Version: 8", "Sec-WebSocket-Version: 14"] {
        let resp = status(
            &gw,
            "GET /prod HTTP/1.1",
            &[HOST, UPGRADE, CONNECTION, KEY, version],
        );
        assert_eq!(resp.status, 426, "{version:?}: {resp:?}");
        assert_eq!(resp.header("Sec-WebSocket-Version"), Some("13"), "{resp:?}");
    }
}

// ---- the order of the checks ------------------------------------------------

#[test]
fn long_url_is_checked_before_the_method() {
    let gw = gateway();
    let line = format!(
        "POST {} HTTP/1.1",
        long_url(5000).replacen("/prod", "/nope", 1)
    );
    assert_eq!(status(&gw, &line, &[HOST]).status, 414);
}

#[test]
fn large_header_block_is_checked_before_the_method_and_path() {
    let gw = gateway();
    let pad = format!("X-Pad: {}", "p".repeat(17 * 1024));
    assert_eq!(
        status(&gw, "POST /nope HTTP/1.1", &[HOST, &pad]).status,
        431
    );
}

#[test]
fn post_to_a_wrong_path_gets_405_not_404() {
    let gw = gateway();
    assert_eq!(status(&gw, "POST /nope HTTP/1.1", &VALID).status, 405);
}

#[test]
fn wrong_path_is_checked_before_the_upgrade() {
    let gw = gateway();
    assert_eq!(status(&gw, "GET /nope HTTP/1.1", &[HOST]).status, 404);
}

#[test]
fn missing_upgrade_is_checked_before_http_version_and_key() {
    let gw = gateway();
    assert_eq!(status(&gw, "GET /prod HTTP/1.0", &[HOST]).status, 426);
}

#[test]
fn bad_key_is_checked_before_the_version() {
    let gw = gateway();
    let resp = status(
        &gw,
        "GET /prod HTTP/1.1",
        &[
            HOST,
            UPGRADE,
            CONNECTION,
            "Sec-WebSocket-Key: abc",
            "Sec-WebSocket-Version: 8",
        ],
    );
    assert_eq!(resp.status, 400, "{resp:?}");
}

// ---- handshake timeout (configured "1s") ------------------------------------

#[test]
fn silent_connection_is_closed_after_the_handshake_timeout() {
    let gw = gateway();
    let mut s = gw.tcp();
    let waited = wait_closed(&mut s, Duration::from_secs(5));
    assert!(
        waited >= Duration::from_millis(500),
        "closed too early: {waited:?}"
    );
}

#[test]
fn partial_request_is_closed_after_the_handshake_timeout() {
    let gw = gateway();
    let mut s = gw.tcp();
    s.write_all(b"GET /prod HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
        .unwrap();
    let waited = wait_closed(&mut s, Duration::from_secs(5));
    assert!(
        waited >= Duration::from_millis(500),
        "closed too early: {waited:?}"
    );
}

#[test]
fn trickled_request_is_still_closed_after_the_handshake_timeout() {
    // The timeout counts from the accept, not from the last byte received.
    let gw = gateway();
    let mut s = gw.tcp();
    let start = std::time::Instant::now();
    let header = b"GET /prod HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for b in header.iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let waited = start.elapsed() + wait_closed(&mut s, Duration::from_secs(5));
    assert!(
        waited >= Duration::from_millis(500),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(4),
        "slowloris kept the connection for {waited:?}"
    );
}

#[test]
fn completed_handshake_is_not_closed_by_the_handshake_timeout() {
    let gw = gateway();
    let mut raw = gw.raw();
    std::thread::sleep(Duration::from_millis(1500));
    raw.send_text("still here");
    assert_eq!(raw.recv_text(), "still here");
}

#[test]
fn empty_stage_serves_the_root_path() {
    let cfg = echo_config("").replace("stage = \"prod\"", "stage = \"\"");
    assert!(cfg.contains("stage = \"\""));
    let gw = Gateway::start(&cfg);
    assert_eq!(status(&gw, "GET / HTTP/1.1", &VALID).status, 101);
    assert_eq!(status(&gw, "GET /prod HTTP/1.1", &VALID).status, 404);
    let mut raw = Raw::connect(gw.listen, "/");
    raw.send_text("root");
    assert_eq!(raw.recv_text(), "root");
}

// ---- $connect with a mock integration (SPEC §3) ------------------------------

fn connect_gateway(status_code: u16) -> Gateway {
    let mut cfg = echo_config("");
    cfg.push_str(&format!(
        "[integrations.gate]\ntype = \"mock\"\nstatus = {status_code}\nresponse_template = \"no entry\"\n\n\
         [routes.\"$connect\"]\nintegration = \"gate\"\n\n"
    ));
    Gateway::start(&cfg)
}

#[test]
fn connect_route_with_2xx_accepts_the_upgrade() {
    let gw = connect_gateway(200);
    let mut raw = gw.raw();
    raw.send_text("in");
    assert_eq!(raw.recv_text(), "in");
}

#[test]
fn connect_route_with_403_rejects_the_upgrade_with_403() {
    let gw = connect_gateway(403);
    assert_eq!(status(&gw, "GET /prod HTTP/1.1", &VALID).status, 403);
}
