//! `pipeline = N` (SPEC §16): the pool's decisions with several calls per
//! connection, and the pool and the reply parser together under arbitrary read
//! splits (replies are matched to calls in request order).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::upstream::response;
use Decision::*;

fn pool(size: usize, max_queued: usize, pipeline: usize) -> Pool {
    let mut p = Pool::new("127.0.0.1:9".parse().unwrap(), size, max_queued);
    p.pipeline = pipeline;
    p
}

fn take(p: &mut Pool) -> Vec<Decision> {
    assert!(p.claim());
    std::iter::from_fn(|| p.next_decision()).collect()
}

const KEEP: ReplyEnd = ReplyEnd {
    keep_alive: true,
    leftover: false,
    request_written: true,
};

#[test]
fn a_connecting_connection_takes_one_call_and_waiting_calls_fill_it_once_connected() {
    let mut p = pool(2, 16, 3);
    for call in 0..8 {
        p.call(call);
    }
    assert_eq!(take(&mut p), [Open { call: 0 }, Open { call: 1 }]);
    assert_eq!(p.queued(), 6);
    p.connected(10);
    assert_eq!(
        take(&mut p),
        [Send { call: 2, conn: 10 }, Send { call: 3, conn: 10 }]
    );
    p.connected(11);
    assert_eq!(
        take(&mut p),
        [Send { call: 4, conn: 11 }, Send { call: 5, conn: 11 }]
    );
    // A reply frees one place on 10: the oldest waiting call takes it.
    p.replied(10, KEEP, 2);
    assert_eq!(take(&mut p), [Send { call: 6, conn: 10 }]);
    assert_eq!(p.queued(), 1);
}

#[test]
fn an_idle_connection_is_preferred_then_the_least_loaded_one() {
    let mut p = pool(2, 16, 4);
    p.call(0);
    p.call(1);
    assert_eq!(take(&mut p), [Open { call: 0 }, Open { call: 1 }]);
    p.connected(10);
    p.connected(11);
    // In two turns (see the next test for one).
    p.call(2);
    p.end_turn();
    p.call(3);
    let d = take(&mut p);
    let conns: BTreeSet<usize> = d
        .iter()
        .map(|d| match d {
            Send { conn, .. } => *conn,
            d => panic!("{d:?}"),
        })
        .collect();
    assert_eq!(conns, BTreeSet::from([10, 11]), "spread over both: {d:?}");
    // 11 answers both of its calls: it is idle, and the next call takes it although
    // 10 has room.
    p.replied(11, KEEP, 1);
    p.replied(11, KEEP, 0);
    assert_eq!(take(&mut p), []);
    assert_eq!(p.idle(), 1);
    p.call(4);
    assert_eq!(take(&mut p), [Send { call: 4, conn: 11 }]);
    // Now 10 (2 in flight) and 11 (1): the least loaded is 11.
    p.end_turn();
    p.call(5);
    assert_eq!(take(&mut p), [Send { call: 5, conn: 11 }]);
}

#[test]
fn calls_of_one_turn_join_the_connection_the_turn_writes_while_it_has_room() {
    let mut p = pool(3, 16, 3);
    for call in 0..3 {
        p.call(call);
    }
    assert_eq!(take(&mut p).len(), 3);
    for conn in [10, 11, 12] {
        p.connected(conn);
    }
    // The turn's first call takes the least-loaded connection; the next ones join it
    // until it is full, then the next least-loaded one.
    for call in 3..7 {
        p.call(call);
    }
    let sends: Vec<usize> = take(&mut p)
        .into_iter()
        .map(|d| match d {
            Send { conn, .. } => conn,
            d => panic!("{d:?}"),
        })
        .collect();
    assert_eq!(sends[0], sends[1], "{sends:?}");
    assert_ne!(sends[1], sends[2], "{sends:?}");
    assert_eq!(sends[2], sends[3], "{sends:?}");
    // A new turn spreads again: the one connection with room left.
    p.end_turn();
    p.call(7);
    let left = [10, 11, 12]
        .into_iter()
        .find(|c| !sends.contains(c))
        .unwrap();
    assert_eq!(
        take(&mut p),
        [Send {
            call: 7,
            conn: left
        }]
    );
}

#[test]
fn a_reply_that_closes_the_connection_frees_its_slot_and_its_calls_are_abandoned() {
    let mut p = pool(1, 16, 4);
    for call in 0..6 {
        p.call(call);
    }
    assert_eq!(take(&mut p), [Open { call: 0 }]);
    p.connected(10);
    assert_eq!(take(&mut p).len(), 3);
    let close = ReplyEnd {
        keep_alive: false,
        ..KEEP
    };
    p.replied(10, close, 3);
    for call in 1..4 {
        p.abandon(call);
    }
    assert_eq!(
        take(&mut p),
        [
            Close { conn: 10 },
            Open { call: 4 },
            Fail {
                call: 1,
                why: Why::Backend
            },
            Fail {
                call: 2,
                why: Why::Backend
            },
            Fail {
                call: 3,
                why: Why::Backend
            },
        ]
    );
}

fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A model worker: each connection's FIFO of calls (`None`: still connecting).
#[derive(Default)]
struct Model {
    conns: BTreeMap<usize, (bool, VecDeque<usize>)>,
    next_conn: usize,
    ended: BTreeSet<usize>,
}

impl Model {
    fn run(&mut self, p: &mut Pool, n: usize) {
        assert!(p.claim());
        while let Some(d) = p.next_decision() {
            match d {
                Send { call, conn } => {
                    let (connected, fifo) = self.conns.get_mut(&conn).expect("a live conn");
                    assert!(*connected, "{d:?} on a connecting conn");
                    assert!(fifo.len() < n, "{d:?} on a full conn");
                    assert!(!self.ended.contains(&call));
                    fifo.push_back(call);
                }
                Open { call } | Retry { call } => {
                    self.next_conn += 1;
                    self.conns
                        .insert(self.next_conn, (false, VecDeque::from([call])));
                }
                Fail { call, .. } => assert!(self.ended.insert(call), "{call} ended twice"),
                Close { conn } => {
                    assert!(self.conns.remove(&conn).is_some(), "{conn} closed twice");
                }
            }
        }
    }
}

#[test]
fn random_events_never_put_more_than_n_calls_on_a_connection() {
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for n in [1, 2, 3, 8] {
        let (size, max_queued) = (3, 7);
        let mut p = pool(size, max_queued, n);
        let mut m = Model {
            next_conn: 100,
            ..Model::default()
        };
        let mut calls = 0;
        for _ in 0..20_000 {
            let r = next(&mut rng);
            let keys: Vec<usize> = m.conns.keys().copied().collect();
            let pick = (!keys.is_empty()).then(|| keys[(r >> 8) as usize % keys.len()]);
            match (r % 6, pick) {
                (0..=2, _) => {
                    calls += 1;
                    p.call(calls);
                }
                (3, Some(conn)) if !m.conns[&conn].0 => {
                    m.conns.get_mut(&conn).unwrap().0 = true;
                    p.connected(conn);
                }
                (3, Some(conn)) if !m.conns[&conn].1.is_empty() => {
                    let (_, fifo) = m.conns.get_mut(&conn).unwrap();
                    let call = fifo.pop_front().unwrap();
                    m.ended.insert(call);
                    let end = ReplyEnd {
                        keep_alive: r & 1 << 20 != 0 || r & 1 << 23 != 0,
                        ..KEEP
                    };
                    let left = fifo.len();
                    p.replied(conn, end, left);
                    if !end.reusable() {
                        for c in std::mem::take(fifo) {
                            p.abandon(c);
                        }
                    }
                }
                (4, Some(conn)) => {
                    // The connection fails: every call on it fails, none retried.
                    let (_, fifo) = m.conns.get_mut(&conn).unwrap();
                    let fifo = std::mem::take(fifo);
                    p.failed(
                        conn,
                        Failure {
                            call: None,
                            reused: true,
                            reply_started: false,
                            retried: false,
                        },
                    );
                    for c in fifo {
                        p.abandon(c);
                    }
                }
                _ => {}
            }
            if r & 1 << 30 != 0 {
                p.end_turn();
            }
            m.run(&mut p, n);
            assert_eq!(p.open(), m.conns.len());
            assert!(p.open() <= size && p.queued() <= max_queued);
            let idle = m.conns.values().filter(|(c, f)| *c && f.is_empty()).count();
            assert_eq!(p.idle(), idle);
            if p.queued() > 0 {
                assert_eq!(p.open(), size, "a call waits while a slot is free");
                assert!(
                    m.conns.values().all(|(c, f)| !c || f.len() == n),
                    "a call waits while a connection has room"
                );
            }
        }
        assert!(calls > 5_000);
    }
}

/// A reply of one of four shapes for call `i`, whose body names `i`.
fn reply_for(i: usize) -> (Vec<u8>, u16, Vec<u8>) {
    let body = format!("reply {i}").into_bytes();
    let text = match i % 4 {
        0 => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
        1 => {
            let (a, b) = body.split_at(3);
            let mut t = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for part in [a, b] {
                t.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                t.extend_from_slice(part);
                t.extend_from_slice(b"\r\n");
            }
            t.extend_from_slice(b"0\r\n\r\n");
            return (t, 200, body);
        }
        2 => format!(
            "HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        _ => return (b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(), 204, Vec::new()),
    };
    let mut t = text;
    t.extend_from_slice(&body);
    (t, if i % 4 == 2 { 201 } else { 200 }, body)
}

/// The pool (`pipeline = n`, one connection) and the parser as the worker drives
/// them: the backend answers every request it got, in order, and its bytes arrive
/// in random pieces (several replies in one read, a reply over many reads); each
/// reply goes to the oldest call on the connection, and every call gets its own.
#[test]
fn pipelined_replies_are_matched_in_order_under_arbitrary_read_splits() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..300 {
        let n = [2, 3, 8, 64][round % 4];
        let total = 1 + (next(&mut rng) % 40) as usize;
        let mut p = pool(1, 1000, n);
        for call in 0..total {
            p.call(call);
        }
        // The model connection: its FIFO, and the backend's answers not read yet.
        let mut fifo: VecDeque<usize> = VecDeque::new();
        let mut wire: Vec<u8> = Vec::new();
        let mut answered = 0;
        let drive = |p: &mut Pool, fifo: &mut VecDeque<usize>, wire: &mut Vec<u8>| {
            assert!(p.claim());
            while let Some(d) = p.next_decision() {
                let call = match d {
                    Open { call } => call,
                    Send { call, conn: 1 } => call,
                    d => panic!("{d:?}"),
                };
                fifo.push_back(call);
                assert!(fifo.len() <= n);
                wire.extend_from_slice(&reply_for(call).0);
            }
        };
        drive(&mut p, &mut fifo, &mut wire);
        p.connected(1);
        drive(&mut p, &mut fifo, &mut wire);
        let mut parser = response::Parser::default();
        let mut inbuf: Vec<u8> = Vec::new();
        let mut got = Vec::new();
        while !wire.is_empty() {
            let cut = 1 + (next(&mut rng) as usize % wire.len().min(97));
            inbuf.extend(wire.drain(..cut));
            let mut replies = Vec::new();
            let (parsed, res) =
                response::replies(&mut parser, &mut inbuf, 0, false, 1 << 20, |buf, r| {
                    replies.push((r.status, buf[r.body.clone()].to_vec()));
                    // One call answered: the worker tells the pool, which may send
                    // more (their replies join the wire behind).
                    let call = fifo.pop_front().expect("a reply for a call in flight");
                    got.push(call);
                    answered += 1;
                    let expect = reply_for(call);
                    assert_eq!(
                        (r.status, &buf[r.body.clone()]),
                        (expect.1, &expect.2[..]),
                        "call {call}"
                    );
                    let left = fifo.len();
                    p.replied(1, KEEP, left);
                    drive(&mut p, &mut fifo, &mut wire);
                    !fifo.is_empty()
                });
            assert_eq!(res, Ok(()));
            inbuf.drain(..parsed);
        }
        assert!(inbuf.is_empty(), "all bytes were replies");
        assert_eq!(got, (0..total).collect::<Vec<_>>(), "in request order");
        assert_eq!((answered, p.idle(), p.queued()), (total, 1, 0));
    }
}

/// The connection ends while calls are in flight: the reply being read is
/// truncated, and the caller fails every call still on the connection.
#[test]
fn eof_with_replies_missing_is_an_error_after_the_complete_ones() {
    let mut buf = [
        reply_for(0).0,
        reply_for(1).0,
        b"HTTP/1.1 200 OK\r\nContent-Le".to_vec(),
    ]
    .concat();
    let mut parser = response::Parser::default();
    let mut seen = 0;
    let (parsed, res) = response::replies(&mut parser, &mut buf, 0, true, 1 << 20, |_, _| {
        seen += 1;
        true
    });
    assert_eq!(seen, 2);
    assert_eq!(res, Err(response::Error::Truncated));
    assert_eq!(parsed, reply_for(0).0.len() + reply_for(1).0.len());
}
