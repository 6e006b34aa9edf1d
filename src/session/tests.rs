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

/// A finished backend call as the worker reports it.
const CALL: crate::access_log::Call<'static> = crate::access_log::Call {
    request_id: b"RRRRRRRRRRRRRRR=",
    message_id: b"",
    requested_ms: 1_795_508_107_456,
    latency_ms: 3,
};

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
    assert!(s.on_connect_outcome(ok, &CALL, &mut sx));
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
    assert!(!s.on_connect_outcome(no, &CALL, &mut sx));
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
    let ok = Outcome::Reply {
        status: 200,
        body: b"",
        content_type: None,
        protocol: None,
    };
    s.on_abandoned_connect(&ok, &CALL, &mut sx);
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

const ONE_WORKER: &str = "[server]\nworkers = 1\n";

#[test]
fn over_the_connect_bucket_the_upgrade_gets_429_before_connect_runs() {
    let mut sx = scratch(&format!(
        "{HTTP_CONNECT}{ONE_WORKER}[throttling]\nconnect_rate = 1\nconnect_burst = 2\n"
    ));
    for _ in 0..2 {
        let mut s = session();
        assert!(feed(&mut s, &mut sx, HEAD).is_empty());
        assert_eq!(s.state(), State::Connecting);
        assert_eq!(sx.outbox.pop().unwrap().kind, CallKind::Connect);
    }
    let mut s = session();
    let out = feed(&mut s, &mut sx, HEAD);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: application/json\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n{\"message\":\"Too Many Requests\"}"),
        "{text}"
    );
    assert_eq!(s.state(), State::Done);
    assert!(sx.outbox.is_empty(), "no $connect call");
    assert!(!s.is_registered(), "no $disconnect owed");
    // A second later the bucket has a token again.
    sx.mono_us += 1_000_000;
    let mut s = session();
    feed(&mut s, &mut sx, HEAD);
    assert_eq!(s.state(), State::Connecting);
}

fn echo_frame(s: &mut Session, sx: &mut Scratch, text: &str) -> String {
    let out = feed(s, sx, &masked(true, 1, text.as_bytes()));
    assert!(out.len() > 2 && out[0] == 0x81, "{out:?}");
    String::from_utf8_lossy(&out[2..]).into_owned()
}

#[test]
fn a_message_over_its_route_bucket_gets_too_many_requests_and_the_connection_stays() {
    let mut sx = scratch(&format!(
        "[routes.limited]\nintegration = \"echo\"\nroute_response = true\n\
         throttling = {{ rate = 1, burst = 2 }}\n{ONE_WORKER}"
    ));
    let mut s = session();
    open(&mut s, &mut sx);
    let limited = r#"{"action":"limited"}"#;
    assert_eq!(echo_frame(&mut s, &mut sx, limited), limited);
    assert_eq!(echo_frame(&mut s, &mut sx, limited), limited);
    let refused = echo_frame(&mut s, &mut sx, limited);
    assert!(
        refused.starts_with(
            "{\"message\": \"Too Many Requests\", \"connectionId\":\"AAAAAAAAAAAAAAA=\""
        ),
        "{refused}"
    );
    assert_eq!(s.state(), State::Open);
    assert_eq!(
        echo_frame(&mut s, &mut sx, "other"),
        "other",
        "$default is not limited"
    );
    sx.mono_us += 1_000_000;
    assert_eq!(echo_frame(&mut s, &mut sx, limited), limited);
    let text = String::from_utf8(sx.metrics.render(&sx.config)).unwrap();
    assert!(
        text.contains("wsgate_throttled_total{api=\"unit\",route=\"limited\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("wsgate_client_errors_total{api=\"unit\"} 1"),
        "{text}"
    );
}

#[test]
fn per_connection_buckets_are_per_connection() {
    let mut sx = scratch(&format!(
        "{ONE_WORKER}[throttling]\nper_connection = {{ rate = 1, burst = 1 }}\n"
    ));
    let (mut a, mut b) = (session(), session());
    open(&mut a, &mut sx);
    open(&mut b, &mut sx);
    assert_eq!(echo_frame(&mut a, &mut sx, "a1"), "a1");
    assert!(echo_frame(&mut a, &mut sx, "a2").contains("Too Many Requests"));
    assert_eq!(
        echo_frame(&mut b, &mut sx, "b1"),
        "b1",
        "b has its own bucket"
    );
    assert!(sx.throttle.is_some());
    // Without throttling nothing is kept at all.
    let sx = scratch("");
    assert!(sx.throttle.is_none());
}

#[test]
fn at_the_inflight_limit_frames_are_held_not_refused() {
    let mut sx = scratch(&format!(
        "{HTTP_CONNECT}[routes.call]\nintegration = \"be\"\n\
         [limits]\nmax_inflight_per_connection = 2\n"
    ));
    let mut s = session();
    feed(&mut s, &mut sx, HEAD);
    sx.outbox.clear();
    let ok = || Outcome::Reply {
        status: 200,
        body: b"",
        content_type: None,
        protocol: None,
    };
    assert!(s.on_connect_outcome(ok(), &CALL, &mut sx));
    sx.wbuf.clear();
    let call = masked(true, 1, br#"{"action":"call"}"#);
    let five: Vec<u8> = call.repeat(5);
    // The last frame arrives split: its head is held with the rest.
    assert!(feed(&mut s, &mut sx, &five[..five.len() - 3]).is_empty());
    assert_eq!((sx.outbox.len(), s.inflight()), (2, 2));
    assert!(s.is_holding());
    let mut calls = std::mem::take(&mut sx.outbox);
    let mut answered = 0;
    let mut tail_sent = false;
    while let Some(c) = calls.pop() {
        s.on_message_outcome(c.route, &CALL, ok(), 1 << 20, &mut sx);
        answered += 1;
        if s.is_holding() {
            s.resume(&mut sx);
        } else if !tail_sent {
            tail_sent = true;
            feed(&mut s, &mut sx, &five[five.len() - 3..]);
        }
        calls.append(&mut sx.outbox);
        assert!(s.inflight() <= 2);
    }
    assert_eq!(answered, 5, "every message made its call");
    assert!(sx.wbuf.is_empty(), "no Too Many Requests");
    assert!(!s.is_holding());
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

#[test]
fn an_idle_session_holds_no_partial_state_and_shares_its_client() {
    let mut sx = scratch("");
    let (mut a, mut b) = (session(), session());
    // The handshake split in two: the first half is stashed in the Partial box.
    feed(&mut a, &mut sx, &HEAD[..20]);
    assert!(a.partial.is_some());
    assert_eq!(a.early_bytes(), 20);
    feed(&mut a, &mut sx, &HEAD[20..]);
    assert_eq!(a.state(), State::Open);
    assert!(a.partial.is_none(), "handed back once nothing is pending");
    assert_eq!(sx.partials.len(), 1);
    open(&mut b, &mut sx);
    assert!(b.partial.is_none());
    assert!(a.rare.is_none() && b.rare.is_none());
    // Same address, User-Agent and Host: one shared client.
    let (ia, ib) = (a.identity().unwrap(), b.identity().unwrap());
    assert!(Arc::ptr_eq(ia.client(), ib.client()));
    assert_eq!(&*ia.host, "gw");
    assert_eq!(ia.user_agent.as_deref(), Some("unit/1"));
    // A message split inside its payload keeps the box (reader mid-frame) until the
    // rest arrives; a fragmented message keeps it between its frames.
    let frame = masked(true, 1, b"hello");
    assert!(feed(&mut a, &mut sx, &frame[..8]).is_empty());
    assert!(a.partial.is_some());
    assert_eq!(sx.partials.len(), 0, "the free box was reused");
    assert_eq!(feed(&mut a, &mut sx, &frame[8..]), b"\x81\x05hello");
    assert!(a.partial.is_none());
    assert!(feed(&mut a, &mut sx, &masked(false, 1, b"hel")).is_empty());
    assert!(a.partial.is_some());
    assert_eq!(
        feed(&mut a, &mut sx, &masked(true, 0, b"lo")),
        b"\x81\x05hello"
    );
    assert!(a.partial.is_none());
    assert_eq!(sx.partials.len(), 1);
}

#[test]
fn frames_held_at_the_inflight_limit_stay_in_place_across_resumes() {
    let mut sx = scratch(&format!(
        "{HTTP_CONNECT}[routes.call]\nintegration = \"be\"\n\
         [limits]\nmax_inflight_per_connection = 1\n"
    ));
    let mut s = session();
    feed(&mut s, &mut sx, HEAD);
    let ok = || Outcome::Reply {
        status: 200,
        body: b"",
        content_type: None,
        protocol: None,
    };
    assert!(s.on_connect_outcome(ok(), &CALL, &mut sx));
    sx.outbox.clear();
    sx.wbuf.clear();
    let call = masked(true, 1, br#"{"action":"call"}"#);
    let many: Vec<u8> = call.repeat(200);
    feed(&mut s, &mut sx, &many);
    let held = |s: &Session| {
        let p = s.partial.as_ref().unwrap();
        (p.inbuf.as_ref().map(|b| b.as_ptr()), s.early_bytes())
    };
    let (first, mut left) = held(&s);
    assert!(first.is_some() && left == 199 * call.len());
    let mut answered = 0;
    while let Some(c) = sx.outbox.pop() {
        s.on_message_outcome(c.route, &CALL, ok(), 1 << 20, &mut sx);
        answered += 1;
        s.resume(&mut sx);
        if s.is_holding() {
            // The rest is neither copied nor moved: each resume takes one frame.
            let (ptr, now) = held(&s);
            assert_eq!(ptr, first, "the held frames stay in their buffer");
            assert_eq!(now, left - call.len());
            left = now;
        }
    }
    assert_eq!(answered, 200);
    assert_eq!(s.early_bytes(), 0);
    assert!(!s.is_holding());
}
