//! Groups and broadcast [ext] (SPEC §15) on one node with `--workers 2`: members live
//! on both workers, so every send crosses the worker mailboxes. Join, send (each
//! member exactly once and in order, non-members nothing), leave, membership gone on
//! disconnect, broadcast, the error answers, the caps, auth, the API listener.

use std::thread;
use std::time::Duration;

use crate::backend::assert_silent;
use crate::mgmt::*;
use crate::support::*;

const QUIET: Duration = Duration::from_millis(50);

/// At least `n` clients, and more (up to 64 extra) until both workers own some.
fn open_clients(gw: &Gateway, n: usize) -> Vec<(Raw, String)> {
    let mut clients = Vec::new();
    let mut owners = [0usize; 2];
    while clients.len() < n || (owners[0] == 0 || owners[1] == 0) && clients.len() < n + 64 {
        let mut r = gw.raw();
        let id = id_of(&mut r);
        owners[worker_of(gw, &id) as usize] += 1;
        clients.push((r, id));
    }
    assert!(
        owners[0] > 0 && owners[1] > 0,
        "clients must be spread over both workers: {owners:?}"
    );
    clients
}

fn two_workers(management: &str, limits: &str) -> Gateway {
    Gateway::start_with(&whoami_config(management, limits), &["--workers", "2"])
}

fn join(m: &mut Mgmt, group: &str, id: &str) -> HttpReply {
    m.call("PUT", &format!("/@groups/{group}/{id}"), &[], b"")
}

fn leave(m: &mut Mgmt, group: &str, id: &str) -> HttpReply {
    m.call("DELETE", &format!("/@groups/{group}/{id}"), &[], b"")
}

/// Posts `body` to `group` and checks the `202 {"nodes": 1}` answer.
fn send(m: &mut Mgmt, group: &str, body: &str) {
    let r = m.call("POST", &format!("/@groups/{group}"), &[], body.as_bytes());
    r.expect(202);
    assert_eq!(r.json(), serde_json::json!({"nodes": 1}), "{r:?}");
}

#[test]
fn members_on_both_workers_get_each_send_once_in_order_and_others_nothing() {
    let gw = two_workers("", "");
    let mut clients = open_clients(&gw, 12);
    let mut m = Mgmt::connect(gw.management);
    // Members: every other client of each worker, so both workers hold members.
    let mut seen = [0usize; 2];
    let member: Vec<bool> = clients
        .iter()
        .map(|(_, id)| {
            let w = worker_of(&gw, id) as usize;
            seen[w] += 1;
            seen[w] % 2 == 1
        })
        .collect();
    for (i, (_, id)) in clients.iter().enumerate() {
        if member[i] {
            join(&mut m, "room-1", id).expect(204);
            // Joining again changes nothing.
            join(&mut m, "room-1", id).expect(204);
        }
    }
    let is_member = |i: usize, _: &str| member[i];
    // The send lands on whichever worker accepted `m`; from several management
    // connections, both workers serve sends.
    let mut ms: Vec<Mgmt> = (0..4).map(|_| Mgmt::connect(gw.management)).collect();
    for n in 0..8 {
        send(&mut ms[n % 4], "room-1", &format!("m{n}"));
    }
    for (i, (raw, id)) in clients.iter_mut().enumerate() {
        if is_member(i, id) {
            for n in 0..8 {
                assert_eq!(raw.recv_text(), format!("m{n}"), "client {i} ({id})");
            }
        }
        assert_silent(raw, QUIET);
    }
    // A member leaves (twice: the second is a no-op); it gets no later send.
    let first = member.iter().position(|&b| b).expect("a member");
    let leaver = clients[first].1.clone();
    leave(&mut m, "room-1", &leaver).expect(204);
    leave(&mut m, "room-1", &leaver).expect(204);
    send(&mut m, "room-1", "after");
    for (i, (raw, id)) in clients.iter_mut().enumerate() {
        if i != first && is_member(i, id) {
            assert_eq!(raw.recv_text(), "after", "client {i}");
        }
        assert_silent(raw, QUIET);
    }
    // A group nobody is in: 202, nothing sent.
    send(&mut m, "empty", "nobody");
    for (raw, _) in clients.iter_mut() {
        assert_silent(raw, QUIET);
    }
}

#[test]
fn membership_is_gone_on_disconnect_and_a_new_connection_is_no_member() {
    let gw = two_workers("", "");
    let mut m = Mgmt::connect(gw.management);
    let mut stay = gw.raw();
    let stay_id = id_of(&mut stay);
    join(&mut m, "g", &stay_id).expect(204);
    // Connections that join and go, replaced by new ones (which take the freed
    // slots of the worker's table): the new ones are not members.
    for round in 0..6 {
        let mut gone = gw.raw();
        let gone_id = id_of(&mut gone);
        join(&mut m, "g", &gone_id).expect(204);
        gone.send(true, OP_CLOSE, &close_payload(1000, b""));
        assert_eq!(gone.frame().close_code(), Some(1000));
        wait_closed(&mut gone.stream, READ_TIMEOUT);
        eventually("the closed id to be gone", Duration::from_secs(5), || {
            (m.get(&gone_id).status == 410).then_some(())
        });
        join(&mut m, "g", &gone_id).expect_error(410, "GoneException");
        leave(&mut m, "g", &gone_id).expect_error(410, "GoneException");
        let mut fresh = gw.raw();
        let _fresh_id = id_of(&mut fresh);
        send(&mut m, "g", &format!("r{round}"));
        assert_eq!(stay.recv_text(), format!("r{round}"));
        assert_silent(&mut fresh, QUIET);
    }
    assert_silent(&mut stay, QUIET);
}

#[test]
fn broadcast_reaches_every_open_connection_once() {
    let gw = two_workers("", "binary = \"allow\"");
    let mut clients = open_clients(&gw, 10);
    let mut ms: Vec<Mgmt> = (0..3).map(|_| Mgmt::connect(gw.management)).collect();
    for n in 0..6 {
        let r = ms[n % 3].call("POST", "/@broadcast", &[], format!("b{n}").as_bytes());
        r.expect(202);
        assert_eq!(r.json(), serde_json::json!({"nodes": 1}));
    }
    // With the stage prefix, and a binary body.
    ms[0]
        .call("POST", "/prod/@broadcast", &[], &[0xff, 0x00, 0x01])
        .expect(202);
    for (i, (raw, _)) in clients.iter_mut().enumerate() {
        for n in 0..6 {
            assert_eq!(raw.recv_text(), format!("b{n}"), "client {i}");
        }
        let (opcode, payload, _) = raw.message_frames();
        assert_eq!((opcode, payload), (OP_BINARY, vec![0xff, 0x00, 0x01]));
        assert_silent(raw, QUIET);
    }
}

#[test]
fn errors_and_caps() {
    let gw = two_workers("", "max_message_bytes = 1000");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut m = Mgmt::connect(gw.management);
    // Unknown (never issued) and malformed ids.
    let unknown = tweak_id(&id, |b| b[0] ^= 0x55);
    join(&mut m, "g", &unknown).expect_error(410, "GoneException");
    join(&mut m, "g", "not-an-id").expect_error(400, "BadRequestException");
    // Bad group names, in every position.
    let long = "x".repeat(129);
    for bad in ["a%20b", "a*b", long.as_str(), "caf%C3%A9"] {
        join(&mut m, bad, &id).expect_error(400, "BadRequestException");
        m.call("POST", &format!("/@groups/{bad}"), &[], b"x")
            .expect_error(400, "BadRequestException");
    }
    m.call("POST", "/@groups/", &[], b"x")
        .expect_error(400, "BadRequestException");
    // Wrong methods.
    m.call("GET", "/@groups/g", &[], b"").expect_some_error(405);
    m.call("GET", "/@broadcast", &[], b"")
        .expect_some_error(405);
    m.call("POST", &format!("/@groups/g/{id}"), &[], b"")
        .expect_some_error(405);
    // Too large, and binary while binary is rejected.
    m.call("POST", "/@groups/g", &[], &[b'a'; 1001])
        .expect_error(413, "PayloadTooLargeException");
    let mut m = Mgmt::connect(gw.management);
    m.call("POST", "/@broadcast", &[], &[0xff])
        .expect_error(400, "BadRequestException");
    // The per-connection cap: 64 groups, then 429; leaving one makes room.
    for g in 0..64 {
        join(&mut m, &format!("g{g}"), &id).expect(204);
    }
    let r = join(&mut m, "one-more", &id);
    r.expect_error(429, "LimitExceededException");
    assert!(r.text().contains("64 groups"), "{}", r.text());
    join(&mut m, "g5", &id).expect(204); // already a member: no new membership
    leave(&mut m, "g5", &id).expect(204);
    join(&mut m, "one-more", &id).expect(204);
    send(&mut m, "one-more", "capped");
    assert_eq!(raw.recv_text(), "capped");
    assert_silent(&mut raw, QUIET);
}

#[test]
fn a_member_over_its_outbound_limit_is_skipped_whole_and_the_others_get_every_send() {
    const SENDS: usize = 1500;
    const BYTES: usize = 16_000;
    let gw = Gateway::start_with(
        &whoami_config("", "max_pending_outbound_bytes = 65536"),
        &["--workers", "1"],
    );
    let mut slow = gw.raw();
    let slow_id = id_of(&mut slow);
    let mut fast = gw.raw();
    let fast_id = id_of(&mut fast);
    let mut m = Mgmt::connect(gw.management);
    join(&mut m, "g", &slow_id).expect(204);
    join(&mut m, "g", &fast_id).expect(204);
    let body = |n: usize| {
        let mut b = format!("{n:06}").into_bytes();
        b.resize(BYTES, b'.');
        String::from_utf8(b).unwrap()
    };
    let reader = thread::spawn(move || {
        for n in 0..SENDS {
            let t = fast.recv_text();
            assert_eq!(&t[..6], format!("{n:06}"), "the reading member lost a send");
            assert_eq!(t.len(), BYTES);
        }
        fast
    });
    for n in 0..SENDS {
        send(&mut m, "g", &body(n));
    }
    let mut fast = reader.join().expect("the reading member");
    assert_silent(&mut fast, QUIET);
    // The member that never read got a prefix of the sends, each one whole and in
    // order, and then nothing: the sends past its limit skipped it.
    slow.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut got = 0;
    loop {
        let mut b = [0u8; 1];
        match slow.stream.peek(&mut b) {
            Ok(1) => {}
            _ => break,
        }
        let t = slow.recv_text();
        assert_eq!(&t[..6], format!("{got:06}"), "not a prefix");
        assert_eq!(t.len(), BYTES);
        got += 1;
        assert!(got <= SENDS);
    }
    assert!(
        got > 0 && got < SENDS,
        "the stalled member got {got} of {SENDS} sends of {BYTES} bytes"
    );
    let text = m.call("GET", "/metrics", &[], b"").expect(200).text();
    let skipped = metric_sum(&text, "wsgate_group_skipped_total", &[]);
    assert_eq!(skipped as usize, SENDS - got, "{text}");
    assert_eq!(metric_sum(&text, "wsgate_group_memberships", &[]), 2.0);
    drop(slow);
    eventually(
        "the closed member's membership to go",
        Duration::from_secs(5),
        || {
            let text = m.call("GET", "/metrics", &[], b"").expect(200).text();
            (metric_sum(&text, "wsgate_group_memberships", &[]) == 1.0).then_some(())
        },
    );
}

#[test]
fn token_auth_guards_every_group_call_and_the_api_listener_serves_them() {
    let config = "auth = \"token\"\ntoken = \"s3cret\"\non_api_listener = true";
    let ok: &[(&str, &str)] = &[("Authorization", "Bearer s3cret")];
    let bad: &[(&str, &str)] = &[("Authorization", "Bearer wrong")];
    let gw = two_workers(config, "");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let member = format!("/@groups/g/{id}");
    for (method, path) in [
        ("PUT", member.as_str()),
        ("DELETE", member.as_str()),
        ("POST", "/@groups/g"),
        ("POST", "/@broadcast"),
    ] {
        for headers in [bad, &[][..]] {
            call(gw.management, method, path, headers, b"x")
                .expect_error(403, "ForbiddenException");
            call(gw.listen, method, path, headers, b"x").expect_error(403, "ForbiddenException");
        }
    }
    assert_silent(&mut raw, QUIET);
    // On the client port (SPEC §13), with the stage: join, send, broadcast.
    let mut m = Mgmt::connect(gw.listen);
    m.call("PUT", &format!("/prod/@groups/g/{id}"), ok, b"")
        .expect(204);
    m.call("POST", "/prod/@groups/g", ok, b"to g").expect(202);
    assert_eq!(raw.recv_text(), "to g");
    call(gw.listen, "POST", "/prod/@broadcast", ok, b"to all").expect(202);
    assert_eq!(raw.recv_text(), "to all");
    call(gw.management, "DELETE", &member, ok, b"").expect(204);
    call(gw.management, "POST", "/@groups/g", ok, b"gone").expect(202);
    assert_silent(&mut raw, QUIET);
}
