//! SPEC §6 and §8 with `--workers 2`: a management call that lands on one worker for
//! a connection owned by the other travels there and back. The worker that accepted
//! a management connection is not observable, but a connection's owner is (its
//! connect log line): with clients owned by both workers, every management connection reaches
//! the other worker's clients for some of its calls.

use std::thread;
use std::time::Duration;

use crate::mgmt::*;
use crate::support::*;

const CLIENTS: usize = 20;
const SENDERS: usize = 8;

/// At least `n` clients, and more (up to 64 extra) until both workers own some: the
/// kernel's SO_REUSEPORT hash puts 8 connections on one worker once in 128 runs.
fn open_clients(gw: &Gateway, n: usize) -> Vec<(Raw, String)> {
    let mut clients = Vec::new();
    let mut owners = [0usize; 2];
    while clients.len() < n || (owners[0] == 0 || owners[1] == 0) && clients.len() < n + 64 {
        let mut r = gw.raw();
        let id = id_of(&mut r);
        let w = worker_of(gw, &id);
        assert!(w < 2, "id {id} names worker {w} of 2");
        owners[w as usize] += 1;
        clients.push((r, id));
    }
    assert!(
        owners[0] > 0 && owners[1] > 0,
        "clients must be spread over both workers: {owners:?}"
    );
    clients
}

#[test]
fn pushes_from_every_management_connection_reach_clients_of_both_workers() {
    let gw = Gateway::start_with(&whoami_config("", ""), &["--workers", "2"]);
    let mut clients = open_clients(&gw, CLIENTS);
    let ids: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    // Every sender pushes to every client, from its own thread and keep-alive
    // connection, concurrently with the others.
    let mgmt = gw.management;
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let ids = ids.clone();
            thread::spawn(move || {
                let mut m = Mgmt::connect(mgmt);
                for round in 0..3 {
                    for (c, id) in ids.iter().enumerate() {
                        m.post(id, format!("s{s} r{round} c{c}").as_bytes())
                            .expect(200);
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.join().expect("a sender failed");
    }
    for (c, (raw, _)) in clients.iter_mut().enumerate() {
        let mut next_round = [0usize; SENDERS];
        for _ in 0..SENDERS * 3 {
            let t = raw.recv_text();
            let parts: Vec<&str> = t.split(' ').collect();
            assert_eq!(parts.len(), 3, "{t:?}");
            let s: usize = parts[0][1..].parse().unwrap();
            let round: usize = parts[1][1..].parse().unwrap();
            assert_eq!(parts[2], format!("c{c}"), "client {c} got {t:?}");
            // One sender's pushes arrive in the order it made them.
            assert_eq!(
                round, next_round[s],
                "client {c}: sender {s} out of order: {t:?}"
            );
            next_round[s] += 1;
        }
        assert_eq!(next_round, [3; SENDERS], "client {c}");
    }
    // And nothing else.
    for (raw, _) in clients.iter_mut() {
        crate::backend::assert_silent(raw, Duration::from_millis(20));
    }
}

#[test]
fn get_and_delete_work_for_clients_of_both_workers_from_every_connection() {
    let gw = Gateway::start_with(&whoami_config("", ""), &["--workers", "2"]);
    let clients = open_clients(&gw, 12);
    let mut ms: Vec<Mgmt> = (0..SENDERS).map(|_| Mgmt::connect(gw.management)).collect();
    for m in ms.iter_mut() {
        for (_, id) in &clients {
            let v = m.get(id).expect(200).json();
            assert_eq!(v["identity"]["sourceIp"], "127.0.0.1", "{v}");
            parse_iso8601_ms(v["connectedAt"].as_str().unwrap());
        }
    }
    // Each client deleted through a different management connection.
    for (i, (mut raw, id)) in clients.into_iter().enumerate() {
        let m = &mut ms[i % SENDERS];
        let w = worker_of(&gw, &id);
        m.call(
            "DELETE",
            &format!("/@connections/{id}?code=4{i:03}&reason=w{w}"),
            &[],
            b"",
        )
        .expect(204);
        raw.expect_close_with(4000 + i as u16, &format!("w{w}"));
        for m in ms.iter_mut() {
            m.get(&id).expect_error(410, "GoneException");
        }
    }
}

#[test]
fn a_gone_id_of_either_worker_is_410_from_every_connection() {
    let gw = Gateway::start_with(&whoami_config("", ""), &["--workers", "2"]);
    let clients = open_clients(&gw, 8);
    let ids: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    for (mut raw, _) in clients {
        raw.send(true, OP_CLOSE, &close_payload(1000, b""));
        assert_eq!(raw.frame().close_code(), Some(1000));
        wait_closed(&mut raw.stream, READ_TIMEOUT);
    }
    for _ in 0..SENDERS {
        let mut m = Mgmt::connect(gw.management);
        for id in &ids {
            m.post(id, b"late").expect_error(410, "GoneException");
        }
    }
}
