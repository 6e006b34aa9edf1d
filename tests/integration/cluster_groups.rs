//! SPEC §15 [ext]: groups and broadcast across three nodes (separate processes on
//! 127.0.0.2, .3 and .4, two workers each, one NATS server). Joins and leaves
//! through node A for clients on B and C travel to the owner; a send through A is
//! one NATS publish that every node delivers to its own members (each member
//! exactly once and in order, non-members nothing) and answers `{"nodes": 3}`;
//! memberships go with the connection; a broadcast reaches every connection of
//! every node once; a killed node is missing from the count; without NATS a send
//! is 503; malformed sends published straight on NATS are dropped unanswered.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::backend::assert_silent;
use crate::cluster::three_nodes;
use crate::mgmt::*;
use crate::nats_fixture::NatsServer;
use crate::support::*;

const QUIET: Duration = Duration::from_millis(150);

fn join(m: &mut Mgmt, group: &str, id: &str) -> HttpReply {
    m.call("PUT", &format!("/@groups/{group}/{id}"), &[], b"")
}

fn leave(m: &mut Mgmt, group: &str, id: &str) -> HttpReply {
    m.call("DELETE", &format!("/@groups/{group}/{id}"), &[], b"")
}

/// `n` clients on `gw`.
fn clients(gw: &Gateway, n: usize) -> Vec<(Raw, String)> {
    (0..n)
        .map(|_| {
            let mut r = Raw::connect(gw.listen, "/prod");
            let id = id_of(&mut r);
            (r, id)
        })
        .collect()
}

/// POSTs `body` to `path` until every node has been heard (a node just started may
/// not have published its first heartbeat yet): the answer must become
/// `202 {"nodes": 3}`.
fn settle(m: &mut Mgmt, path: &str) {
    eventually(
        "a send acknowledged by 3 nodes",
        Duration::from_secs(10),
        || {
            let r = m.call("POST", path, &[], b"settle");
            r.expect(202);
            (r.json() == serde_json::json!({"nodes": 3})).then_some(())
        },
    );
}

/// Posts `body` to `path` and checks `202 {"nodes": 3}`.
fn send(m: &mut Mgmt, path: &str, body: &str) {
    let r = m.call("POST", path, &[], body.as_bytes());
    r.expect(202);
    assert_eq!(r.json(), serde_json::json!({"nodes": 3}), "{r:?}");
}

#[test]
fn groups_span_nodes_join_send_leave_and_disconnect() {
    let mut nats = NatsServer::start();
    let nodes = three_nodes(&format!("[\"{}\"]", nats.url()));
    let mut m = Mgmt::connect(nodes[0].management);
    // Before any member exists: settle on a group nobody is in.
    settle(&mut m, "/@groups/nobody");
    // Six clients per node (over both workers of each); every other one joins
    // "room" through node A: local ids on A, NATS calls for B and C.
    let mut all: Vec<(Raw, String, bool)> = Vec::new();
    for gw in &nodes {
        for (i, (raw, id)) in clients(gw, 6).into_iter().enumerate() {
            all.push((raw, id, i % 2 == 0));
        }
    }
    for (_, id, member) in &all {
        if *member {
            join(&mut m, "room", id).expect(204);
            join(&mut m, "room", id).expect(204); // a second join is a no-op
        }
    }
    // A client on B joins through node C: neither A nor the owner's node.
    let mut mc = Mgmt::connect(nodes[2].management);
    let extra = all.iter().position(|(_, _, m)| !m).unwrap() + 6; // a non-member on B
    assert!(!all[extra].2);
    join(&mut mc, "room", &all[extra].1).expect(204);
    all[extra].2 = true;
    for n in 0..10 {
        send(&mut m, "/@groups/room", &format!("m{n}"));
    }
    for (i, (raw, id, member)) in all.iter_mut().enumerate() {
        if *member {
            for n in 0..10 {
                assert_eq!(raw.recv_text(), format!("m{n}"), "client {i} ({id})");
            }
        }
        assert_silent(raw, QUIET);
    }
    // A member on C leaves through A (twice: the second is a no-op).
    let on_c = 12;
    assert!(all[on_c].2);
    leave(&mut m, "room", &all[on_c].1).expect(204);
    leave(&mut m, "room", &all[on_c].1).expect(204);
    all[on_c].2 = false;
    // A member on B disconnects: its membership goes with it.
    let on_b = 6;
    assert!(all[on_b].2);
    let (mut gone, gone_id, _) = all.remove(on_b);
    gone.send(true, OP_CLOSE, &close_payload(1000, b""));
    assert_eq!(gone.frame().close_code(), Some(1000));
    eventually("the closed id to be gone", Duration::from_secs(5), || {
        (m.get(&gone_id).status == 410).then_some(())
    });
    join(&mut m, "room", &gone_id).expect_error(410, "GoneException");
    // A new connection on B (it may take the freed slot) is no member.
    let (mut fresh, _) = clients(&nodes[1], 1).pop().unwrap();
    // Through node B this time: the same answer, the same members.
    let mut mb = Mgmt::connect(nodes[1].management);
    send(&mut mb, "/prod/@groups/room", "after");
    for (i, (raw, _, member)) in all.iter_mut().enumerate() {
        if *member {
            assert_eq!(raw.recv_text(), "after", "client {i}");
        }
        assert_silent(raw, QUIET);
    }
    assert_silent(&mut fresh, QUIET);
    // Bad names and methods are refused before anything crosses NATS.
    m.call("POST", "/@groups/a%20b", &[], b"x")
        .expect_error(400, "BadRequestException");
    join(&mut m, "a*b", &all[0].1).expect_error(400, "BadRequestException");
    // Without NATS a send cannot reach the other nodes: 503 (retry), never a 202
    // that claims deliveries; a remote join gets 503 too.
    nats.kill();
    let r = eventually("a 503 once NATS is gone", Duration::from_secs(5), || {
        let r = m.call("POST", "/@groups/room", &[], b"lost");
        (r.status != 202).then_some(r)
    });
    r.expect_error(503, "ServiceUnavailableException");
    join(&mut m, "room", &all[7].1).expect_error(503, "ServiceUnavailableException");
}

#[test]
fn broadcast_reaches_every_connection_of_every_node_once() {
    let nats = NatsServer::start();
    let mut nodes = three_nodes(&format!("[\"{}\"]", nats.url()));
    let mut m = Mgmt::connect(nodes[1].management);
    settle(&mut m, "/@groups/nobody");
    let mut all: Vec<(Raw, String)> = nodes.iter().flat_map(|gw| clients(gw, 5)).collect();
    // Through B, from two management connections in turn (both may land on either
    // worker): in order per connection, once each.
    let mut m2 = Mgmt::connect(nodes[1].management);
    for n in 0..6 {
        let m = if n % 2 == 0 { &mut m } else { &mut m2 };
        send(m, "/@broadcast", &format!("b{n}"));
    }
    for (i, (raw, id)) in all.iter_mut().enumerate() {
        for n in 0..6 {
            assert_eq!(raw.recv_text(), format!("b{n}"), "client {i} ({id})");
        }
        assert_silent(raw, QUIET);
    }
    // A killed node does not acknowledge: {"nodes": 2} once request_timeout has
    // passed; the others still deliver.
    nodes[2].kill();
    let r = m.call("POST", "/@broadcast", &[], b"two left");
    r.expect(202);
    assert_eq!(r.json(), serde_json::json!({"nodes": 2}), "{r:?}");
    for (raw, _) in all.iter_mut().take(10) {
        assert_eq!(raw.recv_text(), "two left");
    }
}

/// What a raw NATS connection receives within `d`.
fn read_for(s: &mut TcpStream, d: Duration) -> String {
    let end = Instant::now() + d;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// Whatever publishes on the group subjects is hostile: malformed sends are dropped
/// (no delivery, no ack), a valid one is delivered and acknowledged once per node.
#[test]
fn hostile_sends_from_nats_are_dropped_and_a_valid_one_is_acked_once_per_node() {
    let nats = NatsServer::start();
    let nodes = three_nodes(&format!("[\"{}\"]", nats.url()));
    let mut m = Mgmt::connect(nodes[0].management);
    settle(&mut m, "/@groups/nobody");
    let (mut member, id) = clients(&nodes[1], 1).pop().unwrap();
    join(&mut m, "room", &id).expect(204);
    let mut n = TcpStream::connect(nats.addr()).unwrap();
    n.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false}\r\nSUB _T.acks 1\r\n")
        .unwrap();
    let long = [vec![b'x'; 200], b"\nx".to_vec()].concat();
    let hostile: [(&str, &[u8]); 8] = [
        ("g", b""),
        ("g", b"room"),
        ("g", b"a b\nx"),
        ("g", b"\nno group"),
        ("g", b"room\n\xff\xfe"), // binary, refused by this config
        ("g", &long),
        ("b", b"room\nnot a broadcast"),
        ("b", b""),
    ];
    for (kind, p) in hostile {
        let mut cmd = format!("PUB wsg.t.{kind} _T.acks {}\r\n", p.len()).into_bytes();
        cmd.extend_from_slice(p);
        cmd.extend_from_slice(b"\r\n");
        n.write_all(&cmd).unwrap();
    }
    n.write_all(b"PING\r\n").unwrap();
    let got = read_for(&mut n, Duration::from_millis(800));
    assert!(got.contains("PONG"), "{got}");
    assert!(
        !got.contains("MSG _T.acks"),
        "no ack for a dropped send: {got}"
    );
    assert_silent(&mut member, QUIET);
    n.write_all(b"PUB wsg.t.g _T.acks 9\r\nroom\nhey!\r\n")
        .unwrap();
    assert_eq!(member.recv_text(), "hey!");
    let got = read_for(&mut n, Duration::from_millis(800));
    let mut acks: Vec<&str> = got
        .split("MSG _T.acks 1 1\r\n")
        .skip(1)
        .map(|rest| &rest[..1])
        .collect();
    acks.sort_unstable();
    assert_eq!(acks, ["1", "2", "3"], "one ack per node: {got}");
    assert_silent(&mut member, QUIET);
    // The nodes are unharmed.
    send(&mut m, "/@groups/room", "after");
    assert_eq!(member.recv_text(), "after");
}
