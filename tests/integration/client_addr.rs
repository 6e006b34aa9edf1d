//! SPEC §10.2, the client's real address: PROXY protocol v1 and v2 headers on the raw
//! socket, `X-Forwarded-For` believed only from a trusted peer, and the
//! `X-Forwarded-*` headers of CONNECT events. The address is checked where it shows:
//! `identity.sourceIp` of CONNECT and MESSAGE events, GET @connections, the connect
//! log line.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, TcpStream};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::backend::*;
use crate::mgmt::*;
use crate::support::*;

/// `$connect`, `$disconnect` and `$default` on an echoing `aws_proxy` backend, with
/// `server` as more lines of the `[server]` table.
fn gateway(backend: &Backend, server: &str) -> Gateway {
    let c = all_routes_config(&backend.url("/events"), "", "").replacen(
        "handshake_timeout = \"1s\"\n",
        &format!("handshake_timeout = \"1s\"\n{server}\n"),
        1,
    );
    Gateway::start(&c)
}

fn v1(source: &str, source_port: u16) -> Vec<u8> {
    format!("PROXY TCP4 {source} 10.0.0.1 {source_port} 443\r\n").into_bytes()
}

/// A v2 PROXY header for an IPv6 client, with one TLV (authority) to skip.
fn v2_inet6(source: &str, source_port: u16) -> Vec<u8> {
    let src: Ipv6Addr = source.parse().unwrap();
    let mut block = src.octets().to_vec();
    block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
    block.extend_from_slice(&source_port.to_be_bytes());
    block.extend_from_slice(&443u16.to_be_bytes());
    block.extend_from_slice(&[0x02, 0x00, 12]);
    block.extend_from_slice(b"example.test");
    let mut h = b"\r\n\r\n\0\r\nQUIT\n\x21\x21".to_vec();
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(&block);
    h
}

/// Opens a WebSocket after writing `prefix` (a PROXY header, or nothing) with
/// `extra` upgrade headers; the prefix goes out in `pieces` writes.
fn open(gw: &Gateway, prefix: &[u8], pieces: usize, extra: &[(&str, &str)]) -> Raw {
    let mut s = tcp(gw.listen);
    let step = prefix.len().div_ceil(pieces.max(1)).max(1);
    for chunk in prefix.chunks(step) {
        s.write_all(chunk).unwrap();
        s.flush().unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    let mut headers = ws_headers(&gw.listen.to_string());
    headers.push(("User-Agent".into(), "addr-test/1".into()));
    for (k, v) in extra {
        headers.push((k.to_string(), v.to_string()));
    }
    s.write_all(&upgrade_bytes("/prod", &headers)).unwrap();
    let resp = read_response(&mut s);
    assert_eq!(resp.status, 101, "handshake: {resp:?}");
    Raw { stream: s }
}

/// The CONNECT event of the `n`th connection (1-based), in arrival order.
fn nth_connect(backend: &Backend, n: usize) -> Value {
    let reqs = backend.wait_until(&format!("{n} CONNECT events"), READ_TIMEOUT, |r| {
        r.iter()
            .filter(|r| r.event_type() == Some("CONNECT"))
            .count()
            >= n
    });
    let connects: Vec<_> = reqs
        .into_iter()
        .filter(|r| r.event_type() == Some("CONNECT"))
        .collect();
    connects[n - 1].event().clone()
}

fn source_ip(ev: &Value) -> &str {
    ev["requestContext"]["identity"]["sourceIp"]
        .as_str()
        .unwrap_or_else(|| panic!("no sourceIp: {ev:#}"))
}

fn connection_id(ev: &Value) -> String {
    ev["requestContext"]["connectionId"]
        .as_str()
        .expect("connectionId")
        .to_string()
}

/// GET @connections/{id}'s `identity.sourceIp`.
fn get_source_ip(gw: &Gateway, id: &str) -> String {
    let r = Mgmt::connect(gw.management).get(id);
    r.expect(200);
    r.json()["identity"]["sourceIp"]
        .as_str()
        .expect("identity.sourceIp")
        .to_string()
}

/// The MESSAGE event after `raw` sends one message (echoed back).
fn message_source_ip(backend: &Backend, raw: &mut Raw, id: &str) -> String {
    raw.send_text("hi");
    assert_eq!(raw.recv_text(), "hi");
    let m = backend.wait_event_of("MESSAGE", id);
    source_ip(m.event()).to_string()
}

/// Reads until EOF; the number of bytes the gateway sent (a reset counts as an end).
fn bytes_until_closed(s: &mut TcpStream) -> usize {
    let (mut total, mut buf) = (0, [0u8; 1024]);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return total,
            Err(e) => panic!("the gateway did not close the connection: {e}"),
        }
    }
}

#[test]
fn proxy_v1_header_names_the_client_in_events_get_and_logs() {
    let backend = Backend::echo_message();
    let log = temp_dir().join("access.log");
    let c = all_routes_config(&backend.url("/events"), "", "").replacen(
        "handshake_timeout = \"1s\"\n",
        "handshake_timeout = \"1s\"\nproxy_protocol = \"v1\"\n",
        1,
    ) + &format!(
        "[access_log]\npath = {}\nformat = '$context.eventType $context.identity.sourceIp'\n",
        toml_str(&log.to_string_lossy())
    );
    let gw = Gateway::start(&c);
    let mut raw = open(&gw, &v1("198.51.100.7", 51000), 1, &[]);
    let ev = nth_connect(&backend, 1);
    assert_eq!(source_ip(&ev), "198.51.100.7", "{ev:#}");
    assert_eq!(ev["headers"]["X-Forwarded-For"], "198.51.100.7");
    let id = connection_id(&ev);
    assert_eq!(message_source_ip(&backend, &mut raw, &id), "198.51.100.7");
    assert_eq!(get_source_ip(&gw, &id), "198.51.100.7");
    let needle = format!("connectionId={id} sourceIp=198.51.100.7 ");
    eventually("the connect log line", Duration::from_secs(5), || {
        gw.stderr().contains(&needle).then_some(())
    });
    // The access log's `$context.identity.sourceIp` is the header's address too.
    eventually(
        "CONNECT and MESSAGE access-log lines",
        Duration::from_secs(5),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            (text.contains("CONNECT 198.51.100.7\n") && text.contains("MESSAGE 198.51.100.7\n"))
                .then_some(())
        },
    );
}

#[test]
fn proxy_v2_header_split_over_writes_names_an_ipv6_client() {
    let backend = Backend::echo_message();
    let gw = gateway(&backend, "proxy_protocol = \"v2\"");
    let mut raw = open(&gw, &v2_inet6("2001:db8::7", 40000), 3, &[]);
    let ev = nth_connect(&backend, 1);
    assert_eq!(source_ip(&ev), "2001:db8::7", "{ev:#}");
    let id = connection_id(&ev);
    assert_eq!(message_source_ip(&backend, &mut raw, &id), "2001:db8::7");
    assert_eq!(get_source_ip(&gw, &id), "2001:db8::7");
}

#[test]
fn without_a_valid_header_the_connection_is_closed_unanswered() {
    let backend = Backend::echo_message();
    let gw = gateway(&backend, "proxy_protocol = \"v2\"");
    let upgrade = upgrade_bytes("/prod", &ws_headers("gw"));
    for (what, bytes) in [
        ("a plain upgrade", upgrade.clone()),
        (
            "a v1 header where v2 is asked",
            [v1("198.51.100.7", 1), upgrade].concat(),
        ),
        (
            "a damaged v2 signature",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\0\0".to_vec(),
        ),
    ] {
        let mut s = tcp(gw.listen);
        s.write_all(&bytes).unwrap();
        assert_eq!(
            bytes_until_closed(&mut s),
            0,
            "{what}: closed without a byte"
        );
    }
    // An incomplete header is closed at the handshake timeout (1 s), unanswered.
    let mut s = tcp(gw.listen);
    s.write_all(&v2_inet6("2001:db8::7", 1)[..20]).unwrap();
    assert_eq!(
        bytes_until_closed(&mut s),
        0,
        "a header that never completes"
    );
    backend.assert_no_event("CONNECT", Duration::from_millis(100));
    // The listener still serves proper clients.
    open(&gw, &v2_inet6("2001:db8::9", 1), 1, &[]);
    assert_eq!(source_ip(&nth_connect(&backend, 1)), "2001:db8::9");
}

#[test]
fn any_accepts_both_versions_and_local() {
    let backend = Backend::echo_message();
    let gw = gateway(&backend, "proxy_protocol = \"any\"");
    let _a = open(&gw, &v1("198.51.100.1", 1000), 2, &[]);
    assert_eq!(source_ip(&nth_connect(&backend, 1)), "198.51.100.1");
    let _b = open(&gw, &v2_inet6("2001:db8::2", 2000), 1, &[]);
    assert_eq!(source_ip(&nth_connect(&backend, 2)), "2001:db8::2");
    // v2 LOCAL (a load balancer's health check) and v1 UNKNOWN: the peer itself.
    let _c = open(&gw, b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00", 1, &[]);
    assert_eq!(source_ip(&nth_connect(&backend, 3)), "127.0.0.1");
    let _d = open(&gw, b"PROXY UNKNOWN\r\n", 1, &[]);
    assert_eq!(source_ip(&nth_connect(&backend, 4)), "127.0.0.1");
    // Without a header: closed unanswered here too.
    let mut s = tcp(gw.listen);
    s.write_all(&upgrade_bytes("/prod", &ws_headers("gw")))
        .unwrap();
    assert_eq!(bytes_until_closed(&mut s), 0);
}

#[test]
fn forwarded_for_is_believed_only_from_a_trusted_peer() {
    let chain = "6.6.6.6, 198.51.100.7, 10.1.2.3";
    let sent = [
        ("X-Forwarded-For", chain),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "443"),
    ];
    // Trusted: the rightmost untrusted address; the chain ends with it; the peer's
    // port and scheme are kept.
    let backend = Backend::echo_message();
    let gw = gateway(
        &backend,
        "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]",
    );
    let mut raw = open(&gw, b"", 1, &sent);
    let ev = nth_connect(&backend, 1);
    assert_eq!(source_ip(&ev), "198.51.100.7", "{ev:#}");
    assert_eq!(ev["headers"]["X-Forwarded-For"], "6.6.6.6, 198.51.100.7");
    assert_eq!(ev["headers"]["X-Forwarded-Proto"], "https");
    assert_eq!(ev["headers"]["X-Forwarded-Port"], "443");
    let id = connection_id(&ev);
    assert_eq!(message_source_ip(&backend, &mut raw, &id), "198.51.100.7");
    assert_eq!(get_source_ip(&gw, &id), "198.51.100.7");

    // Untrusted (only 10.0.0.0/8 is): the peer, and its claims are replaced.
    let backend = Backend::echo_message();
    let gw = gateway(&backend, "trusted_proxies = [\"10.0.0.0/8\"]");
    let mut raw = open(&gw, b"", 1, &sent);
    let ev = nth_connect(&backend, 1);
    assert_eq!(source_ip(&ev), "127.0.0.1", "{ev:#}");
    assert_eq!(ev["headers"]["X-Forwarded-For"], "127.0.0.1");
    assert_eq!(
        ev["multiValueHeaders"]["X-Forwarded-For"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(ev["headers"]["X-Forwarded-Proto"], "http");
    assert_eq!(
        ev["headers"]["X-Forwarded-Port"],
        gw.listen.port().to_string()
    );
    let id = connection_id(&ev);
    assert_eq!(message_source_ip(&backend, &mut raw, &id), "127.0.0.1");
    assert_eq!(get_source_ip(&gw, &id), "127.0.0.1");
}

#[test]
fn connect_carries_the_three_forwarded_headers() {
    let backend = Backend::echo_message();
    let gw = gateway(&backend, "");
    // A client's own lower-case claims go, whatever their spelling.
    let _raw = open(
        &gw,
        b"",
        1,
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
        ],
    );
    let ev = nth_connect(&backend, 1);
    let port = gw.listen.port().to_string();
    for (name, want) in [
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Port", port.as_str()),
        ("X-Forwarded-Proto", "http"),
    ] {
        assert_eq!(ev["headers"][name], want, "{name}: {ev:#}");
        assert_eq!(ev["multiValueHeaders"][name], serde_json::json!([want]));
    }
    let names: Vec<String> = ev["headers"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.to_ascii_lowercase())
        .collect();
    assert_eq!(
        names
            .iter()
            .filter(|k| k.starts_with("x-forwarded-"))
            .count(),
        3,
        "one of each: {names:?}"
    );
}

#[test]
fn http_proxy_mappings_see_the_client_address_and_forwarded_for() {
    let backend = Backend::start(|_| Reply::ok("ok"));
    let mut c = api_config("$request.body.action", None, "").replacen(
        "handshake_timeout = \"1s\"\n",
        "handshake_timeout = \"1s\"\nproxy_protocol = \"v1\"\n",
        1,
    );
    c.push_str(&http_integration(
        "proxy",
        "http_proxy",
        &backend.url("/proxy"),
        "request_parameters = { \"integration.request.header.x-ip\" = \"context.identity.sourceIp\", \
         \"integration.request.header.x-xff\" = \"route.request.header.X-Forwarded-For\" }",
    ));
    c.push_str(&route("$default", "proxy"));
    let gw = Gateway::start(&c);
    let mut raw = open(
        &gw,
        &v1("203.0.113.5", 1234),
        1,
        &[("X-Forwarded-For", "6.6.6.6")],
    );
    raw.send_text("hello");
    assert_eq!(raw.recv_text(), "ok");
    let r = &backend.wait_requests(1)[0];
    assert_eq!(r.header("x-ip"), Some("203.0.113.5"), "{r:?}");
    assert_eq!(
        r.header("x-xff"),
        Some("203.0.113.5"),
        "the client's claim is replaced: {r:?}"
    );
}
