//! The session driven bytes-in / bytes-out, with no socket and no clock: what the
//! worker would read goes into `process`, what it would write comes out of
//! `Scratch::wbuf`, backend calls out of `Scratch::outbox`.

use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::{self, Overrides};
use crate::mask;

const HEAD: &[u8] = b"GET /prod HTTP/1.1\r\nHost: gw\r\nUser-Agent: unit/1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn scratch(extra: &str) -> Scratch {
    let text = format!(
        "[api]\nname = \"unit\"\nstage = \"prod\"\n\
         [integrations.echo]\ntype = \"mock\"\nresponse_template = \"$input.body\"\n\
         [routes.\"$default\"]\nintegration = \"echo\"\nroute_response = true\n{extra}"
    );
    let cfg = config::parse(Path::new("unit.toml"), &text, &Overrides::default()).unwrap();
    let mut sx = Scratch::new(Arc::new(cfg), 0, crate::id::Codec::random(), 8);
    sx.now_ms = 1_795_508_107_456;
    sx
}

fn session() -> Session {
    Session::new(*b"AAAAAAAAAAAAAAA=", "127.0.0.1".parse().unwrap())
}

fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | op];
    assert!(payload.len() < 126);
    f.push(0x80 | payload.len() as u8);
    f.extend_from_slice(&key);
    let mut p = payload.to_vec();
    mask::apply(&mut p, key, 0);
    f.extend_from_slice(&p);
    f
}

/// Feeds `bytes` as the worker does: after the stash, then takes what was written.
fn feed(s: &mut Session, sx: &mut Scratch, bytes: &[u8]) -> Vec<u8> {
    let mut input = s.take_stash().unwrap_or_default();
    input.extend_from_slice(bytes);
    s.process(&mut input, sx);
    std::mem::take(&mut sx.wbuf)
}

fn open(s: &mut Session, sx: &mut Scratch) {
    let out = feed(s, sx, HEAD);
    assert!(
        out.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(s.state(), State::Open);
}

#[test]
fn upgrade_then_echo_byte_for_byte() {
    let (mut s, mut sx) = (session(), scratch(""));
    open(&mut s, &mut sx);
    assert_eq!(s.identity().unwrap().connected_at_ms, sx.now_ms);
    assert!(!sx.active, "the upgrade itself is no activity");
    let out = feed(&mut s, &mut sx, &masked(true, 1, b"hello"));
    assert_eq!(out, b"\x81\x05hello");
    assert!(sx.active, "a data frame is activity (lastActiveAt)");
}

#[test]
fn a_head_split_anywhere_is_stashed_and_completed() {
    for cut in 1..HEAD.len() {
        let (mut s, mut sx) = (session(), scratch(""));
        assert!(feed(&mut s, &mut sx, &HEAD[..cut]).is_empty());
        assert_eq!(s.state(), State::Handshaking);
        let out = feed(&mut s, &mut sx, &HEAD[cut..]);
        assert!(out.starts_with(b"HTTP/1.1 101 "), "cut at {cut}");
    }
}

#[test]
fn a_partial_frame_is_no_activity_until_it_completes() {
    let (mut s, mut sx) = (session(), scratch(""));
    open(&mut s, &mut sx);
    let f = masked(true, 1, b"0123456789");
    assert!(feed(&mut s, &mut sx, &f[..8]).is_empty());
    assert!(!sx.active);
    assert_eq!(feed(&mut s, &mut sx, &f[8..]), b"\x81\x0a0123456789");
    assert!(sx.active);
}

#[test]
fn pings_are_answered_and_pongs_recorded() {
    let (mut s, mut sx) = (session(), scratch(""));
    open(&mut s, &mut sx);
    assert_eq!(feed(&mut s, &mut sx, &masked(true, 9, b"p")), b"\x8a\x01p");
    s.ping_sent();
    assert!(!s.pong_seen());
    assert!(feed(&mut s, &mut sx, &masked(true, 10, b"")).is_empty());
    assert!(s.pong_seen());
}

#[test]
fn a_client_close_is_echoed_and_recorded_for_disconnect() {
    let (mut s, mut sx) = (session(), scratch(""));
    open(&mut s, &mut sx);
    let out = feed(&mut s, &mut sx, &masked(true, 8, b"\x0f\xa0bye"));
    assert_eq!(out, b"\x88\x05\x0f\xa0bye");
    assert_eq!(s.state(), State::Done);
    assert_eq!(s.close_status(), (4000, "bye"));
}

#[test]
fn a_protocol_violation_closes_with_1002() {
    let (mut s, mut sx) = (session(), scratch(""));
    open(&mut s, &mut sx);
    let out = feed(&mut s, &mut sx, b"\x81\x05hello"); // unmasked
    assert_eq!(out[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 1002);
    assert_eq!(s.state(), State::Closing);
    assert_eq!(s.close_status().0, 1002);
}

#[test]
fn lost_connection_is_1006() {
    let s = session();
    assert_eq!(s.close_status(), (close::ABNORMAL, ""));
}

const HTTP_CONNECT: &str =
    "[integrations.be]\ntype = \"aws_proxy\"\nuri = \"http://127.0.0.1:9/ws\"\n\
     [routes.\"$connect\"]\nintegration = \"be\"\n[routes.\"$disconnect\"]\nintegration = \"be\"\n";

#[test]
fn connect_holds_the_upgrade_and_keeps_early_frames() {
    let (mut s, mut sx) = (session(), scratch(HTTP_CONNECT));
    let mut bytes = HEAD.to_vec();
    bytes.extend(masked(true, 1, b"early"));
    assert!(
        feed(&mut s, &mut sx, &bytes).is_empty(),
        "no 101 before $connect"
    );
    assert_eq!(s.state(), State::Connecting);
    let call = sx.outbox.pop().expect("the $connect call");
    assert_eq!(call.kind, CallKind::Connect);
    assert!(call.request.starts_with(b"POST /ws HTTP/1.1\r\n"));
    s.keep_early(&masked(true, 1, b"later"), &mut sx);
    assert_eq!(s.early_bytes(), 2 * (6 + 5));
    let ok = Outcome::Reply {
        status: 200,
        body: b"",
        content_type: None,
        protocol: None,
    };
    assert!(s.on_connect_outcome(ok, &mut sx));
    s.resume(&mut sx);
    let out = std::mem::take(&mut sx.wbuf);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(
        out.ends_with(b"\r\n\r\n\x81\x05early\x81\x05later"),
        "{text:?}"
    );
}

#[test]
fn a_refused_connect_owes_no_disconnect() {
    let (mut s, mut sx) = (session(), scratch(HTTP_CONNECT));
    feed(&mut s, &mut sx, HEAD);
    sx.outbox.clear();
    let no = Outcome::Reply {
        status: 403,
        body: b"nope",
        content_type: None,
        protocol: None,
    };
    assert!(!s.on_connect_outcome(no, &mut sx));
    assert!(sx.wbuf.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
    assert_eq!(s.state(), State::Done);
    assert!(s.disconnect_call(&mut sx).is_none());
}

#[test]
fn an_abandoned_connect_that_succeeds_owes_a_1006_disconnect() {
    let (mut s, mut sx) = (session(), scratch(HTTP_CONNECT));
    feed(&mut s, &mut sx, HEAD);
    sx.outbox.clear();
    s.abandon();
    assert!(s.is_abandoned());
    s.on_abandoned_connect(true);
    assert_eq!(s.state(), State::Done);
    let call = s.disconnect_call(&mut sx).expect("$disconnect is owed");
    assert_eq!(call.kind, CallKind::Disconnect);
    let body = String::from_utf8_lossy(&call.request).into_owned();
    assert!(body.contains("\"disconnectStatusCode\":1006"), "{body}");
    assert!(s.disconnect_call(&mut sx).is_none(), "only once");
}

#[test]
fn events_carry_the_time_the_worker_passed_in() {
    let (mut s, mut sx) = (session(), scratch(HTTP_CONNECT));
    sx.now_ms = 1_000_000_000_123;
    feed(&mut s, &mut sx, HEAD);
    let call = sx.outbox.pop().unwrap();
    let body = String::from_utf8_lossy(&call.request).into_owned();
    assert!(
        body.contains("\"requestTimeEpoch\":1000000000123"),
        "{body}"
    );
    assert!(body.contains("\"connectedAt\":1000000000123"), "{body}");
}

/// HEAD with an `X-Forwarded-For` line.
fn head_with_xff(xff: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(HEAD).replace(
        "Host: gw\r\n",
        &format!("Host: gw\r\nX-Forwarded-For: {xff}\r\n"),
    );
    text.into_bytes()
}

#[test]
fn a_trusted_peers_forwarded_for_names_the_client() {
    let trusted = "[server]\ntrusted_proxies = [\"127.0.0.0/8\"]\n";
    for (extra, want) in [(trusted, "198.51.100.7"), ("", "127.0.0.1")] {
        let (mut s, mut sx) = (session(), scratch(extra));
        let out = feed(
            &mut s,
            &mut sx,
            &head_with_xff("6.6.6.6, 198.51.100.7, 127.0.0.2"),
        );
        assert!(out.starts_with(b"HTTP/1.1 101 "));
        let id = s.identity().unwrap();
        assert_eq!(&*id.source_ip_text, want, "config {extra:?}");
        assert_eq!(id.source_ip, want.parse::<IpAddr>().unwrap());
    }
}

#[test]
fn a_proxy_protocol_client_replaces_the_peer_and_forwarded_for() {
    let (mut s, mut sx) = (
        session(),
        scratch("[server]\ntrusted_proxies = [\"0.0.0.0/0\"]\n"),
    );
    s.set_proxied_client("2001:db8::7".parse().unwrap());
    feed(&mut s, &mut sx, &head_with_xff("6.6.6.6"));
    assert_eq!(&*s.identity().unwrap().source_ip_text, "2001:db8::7");
}
