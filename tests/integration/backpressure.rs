//! SPEC §8 outbound backpressure with `--workers 1`: a client that stops reading has
//! its pushes refused with 429 LimitExceededException once `max_pending_outbound_bytes`
//! is reached, nothing half-sent; a second client on the same worker keeps receiving
//! pushes promptly; when the slow client reads again, every accepted push arrives in
//! order and no refused one does, and writing resumes.

use std::time::{Duration, Instant};

use crate::backend::{assert_silent, recv_text_within};
use crate::mgmt::*;
use crate::support::*;

const PUSH_BYTES: usize = 30_000;
const MAX_PUSHES: usize = 2000;

/// A push body of `PUSH_BYTES` that starts with its sequence number.
fn push_body(seq: usize) -> Vec<u8> {
    let mut b = format!("{seq:06} ").into_bytes();
    b.resize(PUSH_BYTES, b'a' + (seq % 26) as u8);
    b
}

#[test]
fn a_stalled_reader_gets_429_while_another_client_keeps_receiving() {
    let gw = Gateway::start_with(
        &whoami_config("", "max_pending_outbound_bytes = 65536"),
        &["--workers", "1"],
    );
    let mut slow = gw.raw();
    let slow_id = id_of(&mut slow);
    let mut fast = gw.raw();
    let fast_id = id_of(&mut fast);
    assert_eq!((worker_of(&gw, &slow_id), worker_of(&gw, &fast_id)), (0, 0));

    let mut to_slow = Mgmt::connect(gw.management);
    let mut to_fast = Mgmt::connect(gw.management);
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    let mut fast_pushes = 0;
    let check_fast = |to_fast: &mut Mgmt, fast: &mut Raw, n: &mut usize| {
        let msg = format!("fast {n}");
        let start = Instant::now();
        to_fast.post(&fast_id, msg.as_bytes()).expect(200);
        assert_eq!(recv_text_within(fast, Duration::from_secs(1)), msg);
        let took = start.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "a push to the reading client took {took:?} while the other is stalled"
        );
        *n += 1;
    };
    // Push until the stalled client's buffer is full.
    let mut seq = 0;
    while refused.is_empty() {
        assert!(
            seq < MAX_PUSHES,
            "no 429 after {MAX_PUSHES} pushes of {PUSH_BYTES} bytes to a client that never reads"
        );
        let r = to_slow.post(&slow_id, &push_body(seq));
        match r.status {
            200 => accepted.push(seq),
            429 => {
                r.expect_error(429, "LimitExceededException");
                refused.push(seq);
            }
            _ => panic!("push {seq}: unexpected {r:?} {:?}", r.text()),
        }
        seq += 1;
        if seq % 10 == 0 {
            check_fast(&mut to_fast, &mut fast, &mut fast_pushes);
        }
    }
    // Full now: more pushes are refused, the other client is still served promptly.
    for _ in 0..10 {
        let r = to_slow.post(&slow_id, &push_body(seq));
        match r.status {
            200 => accepted.push(seq),
            429 => {
                r.expect_error(429, "LimitExceededException");
                refused.push(seq);
            }
            _ => panic!("push {seq}: unexpected {r:?}"),
        }
        seq += 1;
        check_fast(&mut to_fast, &mut fast, &mut fast_pushes);
    }
    assert!(
        refused.len() >= 5,
        "a client that never reads stays full: accepted {} then refused only {:?}",
        accepted.len(),
        refused
    );
    // Small pushes to the full client are refused too (nothing partial is queued).
    let r = to_slow.post(&slow_id, b"tiny");
    assert!(matches!(r.status, 200 | 429), "{r:?}");
    let tiny_accepted = r.status == 200;
    // GET still answers for the stalled connection.
    to_slow.get(&slow_id).expect(200);

    // The slow client reads everything: every accepted push, in order, whole.
    slow.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for &want in &accepted {
        let (op, payload, _) = slow.message_frames();
        assert_eq!(op, OP_TEXT);
        assert_eq!(
            payload,
            push_body(want),
            "expected push {want} whole (accepted: {} pushes, refused {:?})",
            accepted.len(),
            refused
        );
    }
    if tiny_accepted {
        assert_eq!(slow.recv_text(), "tiny");
    }
    // None of the refused ones.
    assert_silent(&mut slow, Duration::from_millis(300));
    // Writing resumed: the drained client gets new pushes again.
    slow.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    to_slow.post(&slow_id, b"after drain").expect(200);
    assert_eq!(slow.recv_text(), "after drain");
    check_fast(&mut to_fast, &mut fast, &mut fast_pushes);
}
