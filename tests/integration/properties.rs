//! Properties over the real binary (proptest, fixed case counts, no persistence):
//! any fragmentation and any TCP split of a valid message echoes the same message;
//! arbitrary bytes never take the gateway down.

use std::io::Write;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::*;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Client frames for `text` cut at `cuts` (byte offsets, possibly inside a character).
fn fragments(text: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
    points.sort();
    points.push(text.len());
    let mut out = Vec::new();
    let mut start = 0;
    for (i, &end) in points.iter().enumerate() {
        let last = i == points.len() - 1;
        let opcode = if i == 0 { OP_TEXT } else { OP_CONT };
        out.extend(masked(last, opcode, &text[start..end]));
        start = end;
    }
    out
}

#[test]
fn any_fragmentation_and_tcp_split_of_a_text_message_echoes_it() {
    let gw = Gateway::start_with(&echo_config(""), &["--workers", "1"]);
    // One connection across all cases: each case must leave it clean for the next.
    let raw = std::cell::RefCell::new(gw.raw());
    runner(40)
        .run(
            &(
                "\\PC{1,200}",
                proptest::collection::vec(0usize..1000, 0..6),
                proptest::collection::vec(1usize..64, 1..8),
            ),
            |(text, cuts, writes)| {
                let mut raw = raw.borrow_mut();
                let bytes = fragments(text.as_bytes(), &cuts);
                let mut rest = &bytes[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = writes[i % writes.len()].min(rest.len());
                    raw.stream.write_all(&rest[..n]).unwrap();
                    raw.stream.flush().unwrap();
                    rest = &rest[n..];
                    i += 1;
                }
                prop_assert_eq!(raw.recv_text(), text);
                Ok(())
            },
        )
        .unwrap();
}

/// A fresh connection still echoes: the gateway survived whatever came before.
fn still_serves(gw: &Gateway) {
    let mut raw = gw.raw();
    raw.send_text("alive?");
    assert_eq!(raw.recv_text(), "alive?");
}

#[test]
fn arbitrary_bytes_after_the_handshake_never_take_the_gateway_down() {
    let gw = Gateway::start_with(&echo_config("binary = \"allow\""), &["--workers", "1"]);
    runner(48)
        .run(&proptest::collection::vec(any::<u8>(), 0..300), |garbage| {
            let mut raw = gw.raw();
            raw.write_lossy(&garbage);
            // Give the worker a moment to chew on it, then check it is alive.
            std::thread::sleep(Duration::from_millis(5));
            drop(raw);
            still_serves(&gw);
            Ok(())
        })
        .unwrap();
}

#[test]
fn arbitrary_bytes_as_a_request_never_take_the_gateway_down() {
    let gw = Gateway::start_with(&echo_config(""), &["--workers", "1"]);
    let request_like = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        "GET /prod HTTP/1\\.1\r\n([A-Za-z-]{1,20}: [ -~]{0,40}\r\n){0,8}\r\n"
            .prop_map(|s| s.into_bytes()),
    ];
    runner(48)
        .run(&request_like, |bytes| {
            let mut s = gw.tcp();
            let _ = s.write_all(&bytes);
            std::thread::sleep(Duration::from_millis(5));
            drop(s);
            still_serves(&gw);
            Ok(())
        })
        .unwrap();
}
