//! The pool's decisions, event by event, with no sockets.

use super::*;
use Decision::*;

fn pool(size: usize, max_queued: usize) -> Pool {
    Pool::new("127.0.0.1:9".parse().unwrap(), size, max_queued)
}

/// Every decision queued so far.
fn take(p: &mut Pool) -> Vec<Decision> {
    assert!(p.claim());
    std::iter::from_fn(|| p.next_decision()).collect()
}

const KEEP: ReplyEnd = ReplyEnd {
    keep_alive: true,
    leftover: false,
    request_written: true,
};

fn failure(call: Option<usize>, reused: bool, started: bool, retried: bool) -> Failure {
    Failure {
        call,
        reused,
        reply_started: started,
        retried,
    }
}

#[test]
fn calls_open_up_to_size_then_queue_then_fail() {
    let mut p = pool(2, 1);
    for call in 0..4 {
        p.call(call);
    }
    assert_eq!(
        take(&mut p),
        [
            Open { call: 0 },
            Open { call: 1 },
            Fail {
                call: 3,
                why: Why::QueueFull
            }
        ]
    );
    assert_eq!((p.open(), p.queued()), (2, 1));
}

#[test]
fn a_reusable_reply_hands_the_connection_to_the_oldest_waiting_call_else_idles_it() {
    let mut p = pool(1, 4);
    p.call(0);
    p.call(1);
    p.call(2);
    assert_eq!(take(&mut p), [Open { call: 0 }]);
    p.reply(7, KEEP);
    assert_eq!(take(&mut p), [Send { call: 1, conn: 7 }]);
    p.reply(7, KEEP);
    p.reply(7, KEEP);
    assert_eq!(take(&mut p), [Send { call: 2, conn: 7 }]);
    assert_eq!((p.open(), p.idle(), p.queued()), (1, 1, 0));
    p.call(3);
    assert_eq!(take(&mut p), [Send { call: 3, conn: 7 }]);
}

#[test]
fn leftover_bytes_close_or_an_early_reply_closes_and_the_next_call_opens_fresh() {
    for end in [
        ReplyEnd {
            leftover: true,
            ..KEEP
        },
        ReplyEnd {
            keep_alive: false,
            ..KEEP
        },
        ReplyEnd {
            request_written: false,
            ..KEEP
        },
    ] {
        assert!(!end.reusable());
        let mut p = pool(1, 4);
        p.call(0);
        p.call(1);
        take(&mut p);
        p.reply(7, end);
        assert_eq!(
            take(&mut p),
            [Close { conn: 7 }, Open { call: 1 }],
            "{end:?}"
        );
        assert_eq!((p.open(), p.idle()), (1, 0));
    }
}

#[test]
fn only_a_reused_connection_that_failed_before_any_reply_byte_retries_once() {
    let cases = [
        // reused, started, retried → retry
        (true, false, false, true),
        (true, true, false, false),
        (false, false, false, false),
        (true, false, true, false),
    ];
    for (reused, started, retried, want) in cases {
        let mut p = pool(1, 4);
        p.call(0);
        p.call(1);
        take(&mut p);
        p.failed(7, failure(Some(0), reused, started, retried));
        let then = if want {
            Retry { call: 0 }
        } else {
            Fail {
                call: 0,
                why: Why::Backend,
            }
        };
        let mut want_d = vec![Close { conn: 7 }, then];
        if !want {
            want_d.push(Open { call: 1 });
        }
        assert_eq!(take(&mut p), want_d, "{reused} {started} {retried}");
        assert_eq!(p.open(), 1);
    }
}

#[test]
fn an_idle_connection_that_closes_leaves_the_idle_list() {
    let mut p = pool(2, 4);
    p.call(0);
    take(&mut p);
    p.reply(7, KEEP);
    assert_eq!(p.idle(), 1);
    p.failed(7, failure(None, true, false, false));
    assert_eq!(take(&mut p), [Close { conn: 7 }]);
    assert_eq!((p.open(), p.idle()), (0, 0));
    p.call(1);
    assert_eq!(take(&mut p), [Open { call: 1 }]);
}

#[test]
fn a_timed_out_call_leaves_the_queue_or_closes_its_connection() {
    let mut p = pool(1, 4);
    p.call(0);
    p.call(1);
    p.call(2);
    take(&mut p);
    p.cancel(1, None);
    assert_eq!(p.queued(), 1);
    assert!(take(&mut p).is_empty());
    p.cancel(0, Some(7));
    assert_eq!(take(&mut p), [Close { conn: 7 }, Open { call: 2 }]);
}

#[test]
fn a_socket_that_cannot_be_made_fails_its_call_and_frees_the_slot() {
    let mut p = pool(1, 4);
    p.call(0);
    p.call(1);
    assert_eq!(take(&mut p), [Open { call: 0 }]);
    p.open_failed(0);
    assert_eq!(
        take(&mut p),
        [
            Fail {
                call: 0,
                why: Why::NoSocket
            },
            Open { call: 1 }
        ]
    );
    p.unused(None);
    assert_eq!(p.open(), 0);
}

#[test]
fn decisions_queued_during_a_run_join_it() {
    let mut p = pool(1, 4);
    p.call(0);
    assert!(p.claim());
    assert_eq!(p.next_decision(), Some(Open { call: 0 }));
    // Carrying it out reports an event; a nested claim defers to this loop.
    p.open_failed(0);
    assert!(!p.claim());
    assert_eq!(
        p.next_decision(),
        Some(Fail {
            call: 0,
            why: Why::NoSocket
        })
    );
    assert_eq!(p.next_decision(), None);
    assert!(p.claim(), "the run ended");
}

#[test]
fn a_long_queue_whose_sockets_all_fail_drains_in_one_flat_loop() {
    let mut p = pool(1, 10_000);
    for call in 0..10_000 {
        p.call(call);
    }
    assert!(p.claim());
    let mut failed = 0;
    while let Some(d) = p.next_decision() {
        match d {
            Open { call } => p.open_failed(call),
            Fail { .. } => failed += 1,
            d => panic!("{d:?}"),
        }
    }
    assert_eq!((failed, p.open(), p.queued()), (10_000, 0, 0));
}

/// A model worker: live connections and the call each carries.
struct Model {
    conns: std::collections::BTreeMap<usize, Option<usize>>,
    next_conn: usize,
    ended: std::collections::BTreeSet<usize>,
}

impl Model {
    /// Carries out every decision, checking each makes sense.
    fn run(&mut self, p: &mut Pool, rng: &mut u64) {
        assert!(p.claim());
        while let Some(d) = p.next_decision() {
            match d {
                Send { call, conn } => {
                    assert_eq!(self.conns.get(&conn), Some(&None), "{d:?} on a busy conn");
                    assert!(!self.ended.contains(&call));
                    self.conns.insert(conn, Some(call));
                }
                Open { call } | Retry { call } if next(rng) % 8 == 0 => p.open_failed(call),
                Open { call } | Retry { call } => {
                    self.next_conn += 1;
                    self.conns.insert(self.next_conn, Some(call));
                }
                Fail { call, .. } => assert!(self.ended.insert(call), "{call} ended twice"),
                Close { conn } => {
                    assert!(self.conns.remove(&conn).is_some(), "{conn} closed twice");
                }
            }
        }
    }
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[test]
fn random_events_keep_the_pool_consistent_with_its_connections() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let (size, max_queued) = (3, 5);
    let mut p = pool(size, max_queued);
    let mut m = Model {
        conns: Default::default(),
        next_conn: 100,
        ended: Default::default(),
    };
    let mut calls = 0;
    let mut queued: Vec<usize> = Vec::new();
    for _ in 0..20_000 {
        let busy: Vec<(usize, usize)> = m
            .conns
            .iter()
            .filter_map(|(&k, &c)| c.map(|c| (k, c)))
            .collect();
        let idle: Vec<usize> = m
            .conns
            .iter()
            .filter(|(_, c)| c.is_none())
            .map(|(&k, _)| k)
            .collect();
        let r = next(&mut rng);
        match r % 5 {
            0 | 1 => {
                calls += 1;
                queued.push(calls);
                p.call(calls);
            }
            2 if !busy.is_empty() => {
                let (conn, call) = busy[(r >> 8) as usize % busy.len()];
                m.ended.insert(call);
                m.conns.insert(conn, None);
                let end = ReplyEnd {
                    keep_alive: r & 1 << 20 != 0,
                    leftover: r & 1 << 21 != 0,
                    request_written: r & 1 << 22 != 0,
                };
                p.reply(conn, end);
            }
            3 if !busy.is_empty() => {
                let (conn, call) = busy[(r >> 8) as usize % busy.len()];
                m.conns.insert(conn, None);
                p.failed(
                    conn,
                    failure(
                        Some(call),
                        r & 1 << 20 != 0,
                        r & 1 << 21 != 0,
                        r & 1 << 22 != 0,
                    ),
                );
            }
            4 if !idle.is_empty() => {
                p.failed(
                    idle[(r >> 8) as usize % idle.len()],
                    failure(None, true, false, false),
                );
            }
            _ => {
                // A timeout: a call still waiting, or one on a connection.
                if let Some(&call) = queued
                    .iter()
                    .find(|c| !m.ended.contains(c) && !busy.iter().any(|b| b.1 == **c))
                {
                    m.ended.insert(call);
                    p.cancel(call, None);
                } else if let Some(&(conn, call)) = busy.first() {
                    m.ended.insert(call);
                    m.conns.insert(conn, None);
                    p.cancel(call, Some(conn));
                }
            }
        }
        queued.retain(|c| !m.ended.contains(c));
        m.run(&mut p, &mut rng);
        let idle = m.conns.values().filter(|c| c.is_none()).count();
        assert_eq!(p.open(), m.conns.len());
        assert!(p.open() <= size && p.queued() <= max_queued);
        assert_eq!(p.idle(), idle);
        if p.queued() > 0 {
            assert_eq!(
                (p.idle(), p.open()),
                (0, size),
                "a call waits while a slot is free"
            );
        }
    }
    assert!(calls > 5_000);
}
