//! The load generator reports each fault a server commits: a wrong reply, a server that
//! stops answering, a dropped push and a duplicated push (fake servers in `fixtures`).

mod fixtures;

use fixtures::{echo_server, push_gateway, Faults, PushFaults};
use std::time::Duration;
use wsgate_load::{push, rr, ws};

fn rr_opts(addr: std::net::SocketAddr) -> rr::RrOpts {
    let mut o = rr::RrOpts::new(ws::parse_url(&format!("ws://{addr}/")).unwrap());
    o.connections = 4;
    o.duration = Duration::from_millis(800);
    o.timeout = Duration::from_millis(200);
    o.drain = Duration::from_millis(300);
    o.progress = false;
    o
}

#[test]
fn rr_clean_fake_has_no_faults() {
    let r = rr::run(&rr_opts(echo_server(Faults::default()))).unwrap();
    assert!(r.completed > 100, "{r:?}");
    assert_eq!(r.faults(), 0, "{r:?}");
}

#[test]
fn rr_reports_a_wrong_reply() {
    let r = rr::run(&rr_opts(echo_server(Faults {
        wrong_reply_at: Some(50),
        ..Default::default()
    })))
    .unwrap();
    assert!(r.completed > 100, "{r:?}");
    assert_eq!(r.mismatched, 1, "{r:?}");
    assert_eq!(r.faults(), 1, "{r:?}");
}

#[test]
fn rr_reports_a_server_that_stops_answering() {
    let r = rr::run(&rr_opts(echo_server(Faults {
        stop_after: Some(100),
        ..Default::default()
    })))
    .unwrap();
    assert_eq!(r.completed, 100, "{r:?}");
    assert!(
        r.timeouts >= 4,
        "every connection's message times out: {r:?}"
    );
    assert!(r.faults() > 0);
}

#[test]
fn rr_pipelined_and_open_loop() {
    let mut o = rr_opts(echo_server(Faults::default()));
    o.pipeline = 4;
    let r = rr::run(&o).unwrap();
    assert_eq!(r.faults(), 0, "{r:?}");
    let mut o = rr_opts(echo_server(Faults::default()));
    o.rate = Some(2000.0);
    let r = rr::run(&o).unwrap();
    assert_eq!(r.faults(), 0, "{r:?}");
    assert!(r.completed > 1000 && r.completed < 2000, "{r:?}");
}

fn push_opts(ws_addr: std::net::SocketAddr, mgmt: std::net::SocketAddr) -> push::PushOpts {
    let mut o = push::PushOpts::new(ws::parse_url(&format!("ws://{ws_addr}/")).unwrap(), mgmt);
    o.clients = 8;
    o.mgmt_conns = 2;
    o.duration = Duration::from_millis(600);
    o.drain = Duration::from_millis(500);
    o.progress = false;
    o
}

#[test]
fn push_clean_fake_is_exactly_once() {
    let (w, m) = push_gateway(PushFaults::default());
    let r = push::run(&push_opts(w, m)).unwrap();
    assert!(r.delivered > 50, "{r:?}");
    assert_eq!(r.faults(), 0, "{r:?}");
}

#[test]
fn push_reports_a_dropped_push() {
    let (w, m) = push_gateway(PushFaults {
        drop_at: Some(20),
        ..Default::default()
    });
    let r = push::run(&push_opts(w, m)).unwrap();
    assert!(r.delivered > 50, "{r:?}");
    assert_eq!(r.lost, 1, "{r:?}");
    assert_eq!(r.duplicates, 0, "{r:?}");
    assert_eq!(r.faults(), 1, "{r:?}");
}

#[test]
fn push_reports_a_duplicated_push() {
    let (w, m) = push_gateway(PushFaults {
        duplicate_at: Some(30),
        ..Default::default()
    });
    let r = push::run(&push_opts(w, m)).unwrap();
    assert_eq!(r.duplicates, 1, "{r:?}");
    assert_eq!(r.lost, 0, "{r:?}");
    assert_eq!(r.faults(), 1, "{r:?}");
}

#[test]
fn push_open_loop_rate() {
    let (w, m) = push_gateway(PushFaults::default());
    let mut o = push_opts(w, m);
    o.rate = Some(500.0);
    let r = push::run(&o).unwrap();
    assert_eq!(r.faults(), 0, "{r:?}");
    assert!(r.delivered >= 250 && r.delivered <= 320, "{r:?}");
}
