//! SPEC §1 and §6: several workers share the listener, and connection ids are
//! distinct, owned by one worker each (its connect log line says which), and refused
//! by any other process.

use crate::mgmt::{worker_of, Mgmt};
use crate::support::*;

fn whoami_config() -> String {
    let mut c = base_config("$request.body.action", "");
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&route("$default", "who"));
    c
}

/// Opens `n` connections at once and returns them with each one's id, keeping the
/// connections open until all ids are known.
fn open_connections(gw: &Gateway, n: usize) -> Vec<(Client, String)> {
    let mut clients: Vec<Client> = (0..n).map(|_| gw.client()).collect();
    let ids: Vec<String> = clients
        .iter_mut()
        .map(|c| {
            let id = c.ask("who am i");
            assert_id(&id);
            id
        })
        .collect();
    clients.into_iter().zip(ids).collect()
}

#[test]
fn two_workers_both_accept_connections() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "2"]);
    assert_eq!(gw.workers, 2);
    assert!(gw.ready_line.ends_with("workers=2"), "{:?}", gw.ready_line);
    let conns = open_connections(&gw, 24);
    let mut seen = [0usize; 2];
    for (_, id) in &conns {
        let w = worker_of(&gw, id);
        assert!(w < 2, "id {id} names worker {w} of 2");
        seen[w as usize] += 1;
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both workers must serve: {seen:?}"
    );
}

#[test]
fn one_worker_serves_every_connection() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    for (_, id) in open_connections(&gw, 4) {
        assert_eq!(worker_of(&gw, &id), 0, "id {id}");
    }
}

#[test]
fn open_connections_have_distinct_ids_that_each_route() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "2"]);
    let conns = open_connections(&gw, 16);
    let mut names: Vec<&String> = conns.iter().map(|(_, id)| id).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        conns.len(),
        "ids repeat among open connections"
    );
    let mut m = Mgmt::connect(gw.management);
    for (_, id) in &conns {
        m.get(id).expect(200);
    }
}

#[test]
fn ids_are_never_reused_after_a_close() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    let mut ids = Vec::new();
    for _ in 0..20 {
        let mut c = gw.client();
        let id = c.ask("who");
        assert_id(&id);
        let _ = c.ws.close(None);
        // Drain until the close completes so the slot is really freed.
        while c.ws.read().is_ok() {}
        ids.push(id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a connection id was reused: {ids:?}"
    );
}

#[test]
fn a_restarted_gateway_refuses_the_previous_ids() {
    let a = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    let b = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    let (_ca, ia) = open_connections(&a, 1).remove(0);
    let (_cb, ib) = open_connections(&b, 1).remove(0);
    assert_ne!(ia, ib);
    // Same slot, same worker, a fresh start: the other process's id is gone here.
    Mgmt::connect(b.management)
        .get(&ia)
        .expect_error(410, "GoneException");
    Mgmt::connect(b.management).get(&ib).expect(200);
}

#[test]
fn every_worker_echoes_independently() {
    let mut cfg = base_config("$request.body.action", "");
    cfg.push_str(&mock_integration("echo", "$input.body"));
    cfg.push_str(&route("$default", "echo"));
    let gw = Gateway::start_with(&cfg, &["--workers", "2"]);
    let mut clients: Vec<Client> = (0..12).map(|_| gw.client()).collect();
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            let msg = format!("client {i} round {round}");
            assert_eq!(c.ask(&msg), msg);
        }
    }
}
