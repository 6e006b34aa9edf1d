//! SPEC §1 and §6: a port another process holds is refused at start, a dead worker
//! ends the process, and connection ids are unpredictable yet still route.

use std::io::Write;
use std::time::Duration;

use crate::mgmt::*;
use crate::support::*;

// ---------------------------------------------------------------------------
// Ports (SPEC §1).

fn assert_refused_port(exit: &Exit, addr: std::net::SocketAddr) {
    assert_eq!(exit.status.code(), Some(1), "{exit:?}");
    assert!(
        exit.stderr.contains(&addr.to_string()) && exit.stderr.contains("in use"),
        "the message names the address and says it is in use: {:?}",
        exit.stderr
    );
    assert!(exit.stdout.is_empty(), "no ready line: {:?}", exit.stdout);
}

#[test]
fn a_second_gateway_on_the_same_listen_port_exits_1() {
    let a = Gateway::start(&echo_config(""));
    let listen = a.listen.to_string();
    let b = run_to_exit(&echo_config(""), &["--listen", &listen]);
    assert_refused_port(&b, a.listen);
    // A still serves, and every connection reaches it.
    for i in 0..4 {
        let mut c = a.client();
        assert_eq!(c.ask(&format!("still A {i}")), format!("still A {i}"));
    }
}

#[test]
fn a_second_gateway_on_the_same_management_port_exits_1() {
    let a = Gateway::start(&whoami_config("", ""));
    let management = a.management.to_string();
    let b = run_to_exit(
        &whoami_config("", ""),
        &["--management-listen", &management],
    );
    assert_refused_port(&b, a.management);
    let mut raw = a.raw();
    let id = id_of(&mut raw);
    Mgmt::connect(a.management).get(&id).expect(200);
}

// ---------------------------------------------------------------------------
// Failure containment (SPEC §1).

/// A SigV4 request whose `X-Amz-Date` holds a multi-byte character where the
/// verifier once sliced the text: it panicked the worker that parsed it.
fn sigv4_request_that_once_panicked() -> Vec<u8> {
    b"GET /@connections/AAAAAAAAAAAAAAA= HTTP/1.1\r\nHost: 127.0.0.1\r\n\
      X-Amz-Date: 1234567\xc3\xa9000000Z\r\n\
      Authorization: AWS4-HMAC-SHA256 Credential=AKIDTEST/20260101/us-east-1/execute-api/aws4_request, \
      SignedHeaders=host;x-amz-date, Signature=00\r\n\r\n"
        .to_vec()
}

#[test]
fn a_worker_never_dies_silently_the_process_serves_or_exits_non_zero() {
    let management = "auth = \"sigv4\"\naccess_key_id = \"AKIDTEST\"\nsecret_access_key = \"s\"";
    let mut gw = Gateway::start_with(&whoami_config(management, ""), &["--workers", "1"]);
    let mut s = tcp(gw.management);
    let _ = s.write_all(&sigv4_request_that_once_panicked());
    // Whatever the answer (or none), the gateway either still serves a client, or
    // it has ended with a non-zero status: never a process with a dead worker.
    let mut buf = [0u8; 512];
    let _ = std::io::Read::read(&mut s, &mut buf);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = gw.try_exit() {
            assert!(!status.success(), "a dead worker must exit non-zero");
            assert!(gw.stderr().contains("worker 0 died"), "{}", gw.stderr());
            return;
        }
        // A dead worker's listener refuses connections or accepts and never answers.
        if let Ok(mut c) = std::net::TcpStream::connect(gw.listen) {
            c.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = c.write_all(upgrade_request("/prod").as_bytes());
            let mut b = [0u8; 12];
            if std::io::Read::read_exact(&mut c, &mut b).is_ok() && &b == b"HTTP/1.1 101" {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway neither serves nor exited: {}",
            gw.stderr()
        );
    }
}

// ---------------------------------------------------------------------------
// Ids (SPEC §6).

/// Hamming distance of two ids' 11 bytes, and how many byte positions they share.
fn compare(a: &[u8; 11], b: &[u8; 11]) -> (u32, usize) {
    let bits = a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum();
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    (bits, same)
}

#[test]
fn consecutive_connection_ids_are_unrelated_and_still_route() {
    let gw = Gateway::start_with(&whoami_config("", ""), &["--workers", "1"]);
    let mut clients: Vec<(Raw, String)> = (0..8)
        .map(|_| {
            let mut r = gw.raw();
            let id = id_of(&mut r);
            (r, id)
        })
        .collect();
    let mut shared_positions = 0;
    for w in clients.windows(2) {
        let (a, b) = (assert_id(&w[0].1), assert_id(&w[1].1));
        let (bits, same) = compare(&a, &b);
        // Random 88-bit blocks differ in 44 bits on average; a counter in a few.
        assert!(bits >= 20, "{} then {}: {bits} bits differ", w[0].1, w[1].1);
        shared_positions += same;
    }
    // 7 pairs of random ids share about 0.3 byte positions in all.
    assert!(
        shared_positions <= 6,
        "consecutive ids share {shared_positions} byte positions: {:?}",
        clients.iter().map(|c| &c.1).collect::<Vec<_>>()
    );
    let mut m = Mgmt::connect(gw.management);
    for (raw, id) in &mut clients {
        m.get(id).expect(200);
        m.post(id, b"routed").expect(200);
        assert_eq!(raw.recv_text(), "routed");
    }
    // Neighbours of a live id (one bit flipped anywhere) name no connection.
    let id = clients[0].1.clone();
    for byte in 0..11 {
        for bit in [0, 3, 7] {
            let forged = tweak_id(&id, |b| b[byte] ^= 1 << bit);
            m.get(&forged).expect_error(410, "GoneException");
        }
    }
}

#[test]
fn ids_of_another_gateway_are_gone_here() {
    let a = Gateway::start_with(&whoami_config("", ""), &["--workers", "1"]);
    let b = Gateway::start_with(&whoami_config("", ""), &["--workers", "1"]);
    let (mut ra, mut rb) = (a.raw(), b.raw());
    let (ia, ib) = (id_of(&mut ra), id_of(&mut rb));
    assert_ne!(ia, ib);
    Mgmt::connect(a.management).get(&ia).expect(200);
    Mgmt::connect(a.management)
        .get(&ib)
        .expect_error(410, "GoneException");
    Mgmt::connect(b.management)
        .get(&ia)
        .expect_error(410, "GoneException");
}
