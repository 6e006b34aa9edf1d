//! SPEC §1 and §6: several workers share the listener, and connection ids carry the
//! worker (byte 0), slot (1..4), generation (4..7) and a per-process epoch (7..11).

use crate::support::*;

fn whoami_config() -> String {
    let mut c = base_config("$request.body.action", "");
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&route("$default", "who"));
    c
}

/// Opens `n` connections at once and returns each one's id (decoded), keeping the
/// connections open until all ids are known.
fn ids_of_open_connections(gw: &Gateway, n: usize) -> Vec<(String, [u8; 11])> {
    let mut clients: Vec<Client> = (0..n).map(|_| gw.client()).collect();
    clients
        .iter_mut()
        .map(|c| {
            let id = c.ask("who am i");
            let bytes = assert_id(&id);
            (id, bytes)
        })
        .collect()
}

#[test]
fn two_workers_both_accept_connections() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "2"]);
    assert_eq!(gw.workers, 2);
    assert!(gw.ready_line.ends_with("workers=2"), "{:?}", gw.ready_line);
    let ids = ids_of_open_connections(&gw, 24);
    let mut seen = [0usize; 2];
    for (id, bytes) in &ids {
        assert!(bytes[0] < 2, "id {id} names worker {} of 2", bytes[0]);
        seen[bytes[0] as usize] += 1;
    }
    assert!(
        seen[0] > 0 && seen[1] > 0,
        "both workers must serve: {seen:?}"
    );
}

#[test]
fn one_worker_ids_name_worker_0() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    for (id, bytes) in ids_of_open_connections(&gw, 4) {
        assert_eq!(bytes[0], 0, "id {id}");
    }
}

#[test]
fn open_connections_have_distinct_ids_sharing_one_epoch() {
    let gw = Gateway::start_with(&whoami_config(), &["--workers", "2"]);
    let ids = ids_of_open_connections(&gw, 16);
    let mut names: Vec<&String> = ids.iter().map(|(id, _)| id).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), ids.len(), "ids repeat among open connections");
    // (worker, slot) is unique among open connections.
    let mut slots: Vec<[u8; 4]> = ids.iter().map(|(_, b)| [b[0], b[1], b[2], b[3]]).collect();
    slots.sort();
    slots.dedup();
    assert_eq!(
        slots.len(),
        ids.len(),
        "two open connections share a worker slot"
    );
    let epoch = &ids[0].1[7..11];
    for (id, bytes) in &ids {
        assert_eq!(&bytes[7..11], epoch, "id {id} has another epoch");
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
fn a_restarted_gateway_has_a_new_epoch() {
    let a = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    let b = Gateway::start_with(&whoami_config(), &["--workers", "1"]);
    let (ia, ba) = ids_of_open_connections(&a, 1).remove(0);
    let (ib, bb) = ids_of_open_connections(&b, 1).remove(0);
    assert_ne!(ia, ib);
    assert_ne!(
        &ba[7..11],
        &bb[7..11],
        "two processes share the epoch: {ia} {ib}"
    );
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
