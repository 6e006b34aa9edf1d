//! SPEC §5 backend pools with `--workers 1`: a stalled route does not stall the
//! worker, replies overtake each other, K calls in flight use at most `pool_size`
//! keep-alive connections and finish in about one backend delay per batch, sequential
//! calls reuse one connection, and the wait queue is bounded.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::backend::*;
use crate::support::*;

/// `$default` (two-way) on an `aws_proxy` integration with `extra`, no `$connect` or
/// `$disconnect` (so only message traffic reaches the backend), one worker.
fn pool_gateway(backend: &Backend, extra: &str, limits: &str) -> Gateway {
    let mut c = api_config("$request.body.action", None, limits);
    c.push_str(&aws_integration("backend", &backend.url("/pool"), extra));
    c.push_str(&route("$default", "backend"));
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    assert_eq!(gw.workers, 1);
    gw
}

#[test]
fn a_stalled_route_times_out_while_another_client_on_the_worker_gets_replies() {
    let backend = Backend::start(|r| {
        let m = r.message().unwrap_or_default();
        if m.starts_with("stall") {
            Reply::hang()
        } else {
            Reply::ok(format!("fast {m}"))
        }
    });
    let gw = pool_gateway(&backend, "timeout = \"1s\"\npool_size = 4", "");
    let mut a = gw.raw();
    let mut b = gw.raw();
    let start = Instant::now();
    a.send_text("stall");
    backend.wait_for("the stalled call", |r| {
        r.message().as_deref() == Some("stall")
    });
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        b.send_text(&i.to_string());
        assert_eq!(b.recv_text(), format!("fast {i}"));
        slowest = slowest.max(t.elapsed());
    }
    let served_by = start.elapsed();
    assert!(
        served_by < Duration::from_millis(900),
        "the other client was held up by the stalled call: 10 replies took {served_by:?}"
    );
    assert!(
        slowest < Duration::from_millis(400),
        "slowest reply {slowest:?}"
    );
    let frame = a.recv_text();
    let took = start.elapsed();
    parse_error_frame(&frame, "Endpoint request timed out");
    assert!(
        took >= Duration::from_millis(900),
        "timed out early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "timed out late: {took:?}"
    );
    // Both clients carry on.
    a.send_text("after");
    assert_eq!(a.recv_text(), "fast after");
    b.send_text("after");
    assert_eq!(b.recv_text(), "fast after");
}

#[test]
fn a_slow_reply_to_message_1_arrives_after_a_fast_reply_to_message_2() {
    let backend = Backend::start(|r| {
        let m = r.message().unwrap_or_default();
        if m == "slow" {
            Reply::ok("slow reply").delay_ms(800)
        } else {
            Reply::ok(format!("{m} reply"))
        }
    });
    let gw = pool_gateway(&backend, "pool_size = 4", "");
    let mut raw = gw.raw();
    let start = Instant::now();
    raw.send_text("slow");
    raw.send_text("fast");
    assert_eq!(raw.recv_text(), "fast reply", "the fast reply overtakes");
    let fast = start.elapsed();
    assert!(
        fast < Duration::from_millis(600),
        "the fast reply waited for the slow one: {fast:?}"
    );
    assert_eq!(raw.recv_text(), "slow reply");
    assert!(start.elapsed() >= Duration::from_millis(750));
}

/// Sends `k` messages at once on one connection against a backend delaying each
/// reply by `d`; returns (elapsed until all replies, backend).
fn burst(k: usize, d: u64, pool_size: usize) -> (Duration, Backend) {
    let backend = Backend::start(move |r| Reply::ok(r.message().unwrap_or_default()).delay_ms(d));
    let gw = pool_gateway(&backend, &format!("pool_size = {pool_size}"), "");
    let mut raw = gw.raw();
    let start = Instant::now();
    for i in 0..k {
        raw.send_text(&format!("m{i}"));
    }
    let mut got = BTreeSet::new();
    for _ in 0..k {
        got.insert(raw.recv_text());
    }
    let took = start.elapsed();
    let want: BTreeSet<String> = (0..k).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert_eq!(backend.requests().len(), k);
    (took, backend)
}

#[test]
fn k_calls_in_flight_use_at_most_pool_size_connections() {
    const K: usize = 8;
    const D: u64 = 500;
    let (took, backend) = burst(K, D, 4);
    assert!(
        backend.accepted() <= 4,
        "pool_size 4, {} connections accepted",
        backend.accepted()
    );
    assert!(
        backend.max_open() <= 4,
        "{} connections open at once",
        backend.max_open()
    );
    assert!(
        backend.max_inflight() <= 4,
        "{} requests in flight at once",
        backend.max_inflight()
    );
    assert!(
        took >= Duration::from_millis(2 * D - 100),
        "8 calls of {D}ms through 4 connections cannot finish in {took:?}"
    );
    assert!(
        took < Duration::from_millis(3 * D),
        "8 calls of {D}ms through 4 connections took {took:?} (about 2·D expected)"
    );
}

#[test]
fn k_calls_in_flight_finish_in_about_one_delay_when_the_pool_is_large_enough() {
    const K: usize = 8;
    const D: u64 = 500;
    let (took, backend) = burst(K, D, 8);
    assert!(
        backend.accepted() <= K,
        "{} connections for {K} calls",
        backend.accepted()
    );
    assert!(
        took < Duration::from_millis(2 * D),
        "{K} calls of {D}ms with pool_size {K} took {took:?} (about D expected)"
    );
    assert_eq!(
        backend.max_inflight(),
        K,
        "all {K} calls were in flight at once"
    );
}

#[test]
fn a_thousand_sequential_messages_reuse_one_backend_connection() {
    let backend = Backend::start(|r| Reply::ok(r.message().unwrap_or_default()));
    let gw = pool_gateway(&backend, "pool_size = 4", "");
    let mut raw = gw.raw();
    let start = Instant::now();
    for i in 0..1000 {
        let t = i.to_string();
        raw.send_text(&t);
        assert_eq!(raw.recv_text(), t);
    }
    let took = start.elapsed();
    let reqs = backend.requests();
    assert_eq!(reqs.len(), 1000);
    assert_eq!(
        backend.accepted(),
        1,
        "sequential calls must reuse one keep-alive connection"
    );
    assert!(reqs
        .iter()
        .enumerate()
        .all(|(i, r)| r.conn == 0 && r.seq_on_conn == i));
    assert!(
        took < Duration::from_secs(10),
        "1000 round trips took {took:?}"
    );
}

#[test]
fn calls_beyond_the_queue_get_internal_server_error_at_once() {
    let backend = Backend::start(|r| {
        let m = r.message().unwrap_or_default();
        if m == "warm" {
            Reply::ok("warm")
        } else {
            Reply::ok(m).delay_ms(600)
        }
    });
    let gw = pool_gateway(&backend, "pool_size = 1\nmax_queued_requests = 1", "");
    let mut raw = gw.raw();
    // One idle pooled connection.
    raw.send_text("warm");
    assert_eq!(raw.recv_text(), "warm");
    let start = Instant::now();
    for i in 0..4 {
        raw.send_text(&format!("q{i}"));
    }
    // q0 takes the connection, q1 waits, q2 and q3 are refused at once.
    let mut errors = Vec::new();
    let mut replies = Vec::new();
    for _ in 0..4 {
        let t = raw.recv_text();
        if t.starts_with('{') {
            assert!(
                start.elapsed() < Duration::from_millis(400),
                "the refusal waited: {:?}",
                start.elapsed()
            );
            parse_error_frame(&t, "Internal server error");
            errors.push(t);
        } else {
            replies.push(t);
        }
    }
    assert_eq!(errors.len(), 2, "replies {replies:?}");
    assert_eq!(
        replies,
        ["q0", "q1"],
        "one at a time on the single connection, in queue order"
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1100),
        "q1 waited for q0: {took:?}"
    );
    assert_eq!(backend.accepted(), 1);
    assert_eq!(backend.requests().len(), 3);
}

#[test]
fn with_one_pooled_connection_calls_reach_the_backend_in_arrival_order() {
    let backend = Backend::start(|r| Reply::ok(r.message().unwrap_or_default()).delay_ms(20));
    let gw = pool_gateway(&backend, "pool_size = 1", "");
    let mut raw = gw.raw();
    // All five in one write, so the gateway reads them in one go.
    let mut bytes = Vec::new();
    for i in 0..5 {
        bytes.extend_from_slice(&masked(true, OP_TEXT, format!("m{i}").as_bytes()));
    }
    raw.write(&bytes);
    let got: Vec<String> = (0..5).map(|_| raw.recv_text()).collect();
    let seen: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.message().unwrap())
        .collect();
    assert_eq!(
        seen,
        ["m0", "m1", "m2", "m3", "m4"],
        "the wait queue is first come, first served"
    );
    assert_eq!(got, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(backend.accepted(), 1);
}
