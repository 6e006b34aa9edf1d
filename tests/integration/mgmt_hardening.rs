//! SPEC §1 "Failure containment" and §8 "Bounds" / SigV4 / status lines, for the
//! management listener (issue 8): non-ASCII input does not kill a worker, a signed
//! request's body and its `host` / `x-amz-date` are covered by the signature, a
//! never-reading or misbehaving caller cannot grow memory or the log without bound, a
//! partial request head is closed, auth comes before every path, and status lines
//! carry their standard reason phrases.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::backend::assert_silent;
use crate::mgmt::*;
use crate::support::*;

const AKID: &str = "AKIDWSGATEHARDEN01";
const SECRET: &str = "hardening/Secret+Key=0123456789";
const REGION: &str = "us-east-1";

fn sigv4_gateway() -> Gateway {
    let m =
        format!("auth = \"sigv4\"\naccess_key_id = \"{AKID}\"\nsecret_access_key = \"{SECRET}\"");
    Gateway::start_with(&whoami_config(&m, ""), &["--workers", "2"])
}

fn token_gateway(extra: &str) -> Gateway {
    let m = format!("auth = \"token\"\ntoken = \"right-token\"\n{extra}");
    Gateway::start_with(&whoami_config(&m, ""), &["--workers", "2"])
}

// ---------------------------------------------------------------------------
// A SigV4 signer (AWS's algorithm, written out independently of the gateway's).

/// `YYYYMMDDTHHMMSSZ` for Unix seconds `t`.
fn amz_date(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Civil from days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn now_amz_date() -> String {
    amz_date(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// AWS URI encoding of a path as sent (`/` kept).
fn encode_path(p: &str) -> String {
    p.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~/".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// The `Authorization` value for a query-less `target` signed with `headers` (name,
/// value; every one of them signed) and the payload hash `payload`.
fn authorization(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    payload: &str,
    date: &str,
) -> String {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    hs.sort();
    let signed = hs
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut canonical = format!("{method}\n{}\n\n", encode_path(target));
    for (k, v) in &hs {
        canonical.push_str(&format!("{k}:{v}\n"));
    }
    canonical.push_str(&format!("\n{signed}\n{payload}"));
    let day = &date[..8];
    let scope = format!("{day}/{REGION}/execute-api/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(format!("AWS4{SECRET}").as_bytes(), day.as_bytes());
    for part in [REGION, "execute-api", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    format!(
        "AWS4-HMAC-SHA256 Credential={AKID}/{scope}, SignedHeaders={signed}, Signature={}",
        hex(&hmac(&key, to_sign.as_bytes()))
    )
}

/// A request signed over `host` and `x-amz-date` (the payload hash is computed, not
/// sent), as boto3 signs for `execute-api`.
fn signed_call(m: &mut Mgmt, method: &str, target: &str, body: &[u8]) -> HttpReply {
    let date = now_amz_date();
    let payload = hex(&Sha256::digest(body));
    let auth = authorization(
        method,
        target,
        &[("host", "127.0.0.1"), ("x-amz-date", &date)],
        &payload,
        &date,
    );
    m.call(
        method,
        target,
        &[("X-Amz-Date", &date), ("Authorization", &auth)],
        body,
    )
}

// ---------------------------------------------------------------------------
// Defect 1: non-ASCII input must not panic a worker.

/// Sends `raw` on a fresh connection and returns the status the gateway answered.
fn status_of(gw: &Gateway, raw: &[u8]) -> u16 {
    let mut s = tcp(gw.management);
    let _ = s.write_all(raw);
    read_response(&mut s).status
}

#[test]
fn non_ascii_in_a_sigv4_query_or_date_is_refused_and_every_worker_survives() {
    let gw = sigv4_gateway();
    let date = now_amz_date();
    let auth = |day: &str| {
        format!(
            "AWS4-HMAC-SHA256 Credential={AKID}/{day}/{REGION}/execute-api/aws4_request, SignedHeaders=host;x-amz-date, Signature=00"
        )
    };
    let query = format!(
        "GET /@connections/X?a=%1\u{e9} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Date: {date}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        auth(&date[..8])
    );
    let bad_date = "1234567\u{e9}000000Z";
    let date_req = format!(
        "GET /@connections/X HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Amz-Date: {bad_date}\r\nAuthorization: {}\r\nConnection: close\r\n\r\n",
        auth("12345670")
    );
    // Several of each on fresh connections, so both workers' listeners receive some.
    for _ in 0..6 {
        for req in [&query, &date_req] {
            let status = status_of(&gw, req.as_bytes());
            assert!(
                status == 403 || status == 400,
                "expected 403 or 400, got {status}"
            );
        }
    }
    // Both workers still answer: a signed request on fresh connections, and a push to
    // a client of each worker.
    let mut clients: Vec<(Raw, String)> = Vec::new();
    for _ in 0..40 {
        let mut raw = gw.raw();
        let id = id_of(&mut raw);
        if !clients
            .iter()
            .any(|(_, i)| worker_of(&gw, i) == worker_of(&gw, &id))
        {
            clients.push((raw, id));
        }
        if clients.len() == 2 {
            break;
        }
    }
    assert_eq!(clients.len(), 2, "clients on both workers");
    for _ in 0..3 {
        for (raw, id) in &mut clients {
            let mut m = Mgmt::connect(gw.management);
            let target = format!("/prod/@connections/{id}");
            signed_call(&mut m, "POST", &target, b"still here").expect(200);
            assert_eq!(raw.recv_text(), "still here");
        }
    }
}

// ---------------------------------------------------------------------------
// Defect 6: SigV4 protects the body, `host` and `x-amz-date`.

#[test]
fn sigv4_refuses_a_swapped_body_and_unsigned_host_or_date() {
    let gw = sigv4_gateway();
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let target = format!("/prod/@connections/{id}");
    let mut m = Mgmt::connect(gw.management);
    let date = now_amz_date();
    let original = b"original";
    let hash = hex(&Sha256::digest(original));
    let headers = [
        ("host", "127.0.0.1"),
        ("x-amz-content-sha256", hash.as_str()),
        ("x-amz-date", date.as_str()),
    ];
    let auth = authorization("POST", &target, &headers, &hash, &date);
    let sent = [
        ("X-Amz-Date", date.as_str()),
        ("X-Amz-Content-Sha256", hash.as_str()),
        ("Authorization", auth.as_str()),
    ];
    // The signature is valid for the original body; a different body of the same
    // length must be refused and not delivered.
    m.call("POST", &target, &sent, b"tampered")
        .expect_error(403, "ForbiddenException");
    assert_silent(&mut raw, Duration::from_millis(300));
    // Without `host` or without `x-amz-date` among the signed headers: refused too,
    // although the signature matches what was signed.
    for signed in [
        vec![("x-amz-date", date.as_str())],
        vec![("host", "127.0.0.1")],
    ] {
        let payload = hex(&Sha256::digest(b"unsigned"));
        let auth = authorization("POST", &target, &signed, &payload, &date);
        m.call(
            "POST",
            &target,
            &[("X-Amz-Date", &date), ("Authorization", &auth)],
            b"unsigned",
        )
        .expect_error(403, "ForbiddenException");
    }
    assert_silent(&mut raw, Duration::from_millis(300));
    // The same signed request with its own body goes through.
    m.call("POST", &target, &sent, original).expect(200);
    assert_eq!(raw.recv_text(), "original");
    signed_call(&mut m, "POST", &target, b"boto3 style").expect(200);
    assert_eq!(raw.recv_text(), "boto3 style");
}

// ---------------------------------------------------------------------------
// Defect 5: bounds.

/// Writes `request` over and over on `s` (which is never read) until `total` bytes are
/// sent or the gateway stops reading (no progress for a second). Returns bytes sent.
fn flood(s: &mut TcpStream, request: &[u8], total: usize) -> usize {
    let batch: Vec<u8> = request.repeat((64 * 1024 / request.len()).max(1));
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (mut sent, mut stalled) = (0, 0);
    while sent < total && stalled < 10 {
        match s.write(&batch) {
            Ok(n) => {
                sent += n;
                stalled = 0;
                // Keep request boundaries: finish the batch before the next one.
                if n < batch.len() {
                    let rest = &batch[n..];
                    if s.write_all(rest).is_err() {
                        break;
                    }
                    sent += rest.len();
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                stalled += 1
            }
            Err(_) => break,
        }
    }
    sent
}

/// `GET path` with a padding header of about `pad` bytes and `extra` header lines.
fn padded_get(path: &str, extra: &str, pad: usize) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}X-Pad: {}\r\n\r\n",
        "p".repeat(pad)
    )
    .into_bytes()
}

#[test]
fn pipelined_metrics_to_a_caller_that_never_reads_keep_memory_bounded() {
    let gw = Gateway::start_with(&whoami_config("", ""), &["--workers", "2"]);
    let mut s = tcp(gw.management);
    let sent = flood(&mut s, &padded_get("/metrics", "", 1000), 50 << 20);
    thread::sleep(Duration::from_millis(300));
    let rss = gw.rss_kib();
    assert!(
        rss < 64 * 1024,
        "VmRSS {rss} KiB after {sent} bytes of pipelined GET /metrics never read"
    );
    // It stopped reading: the kernel's buffers filled and the writes stalled.
    assert!(sent < 50 << 20, "the gateway read all {sent} bytes");
    // The gateway still serves another caller.
    Mgmt::connect(gw.management)
        .call("GET", "/health", &[], b"")
        .expect(200);
    drop(s);
}

#[test]
fn a_wrong_token_flood_is_refused_with_bounded_memory_and_rate_limited_logs() {
    let started = Instant::now();
    let gw = token_gateway("");
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let wrong = "Authorization: Bearer wrong-token\r\n";
    // One caller floods without reading.
    let mut a = tcp(gw.management);
    let target = format!("/@connections/{id}");
    flood(&mut a, &padded_get(&target, wrong, 500), 20 << 20);
    // Another sends 2000 refused requests and reads every answer.
    let mut b = Mgmt::connect(gw.management);
    let mut w = b.stream.try_clone().unwrap();
    let one = padded_get(&target, wrong, 10);
    let writer = thread::spawn(move || {
        for _ in 0..2000 {
            w.write_all(&one).unwrap();
        }
    });
    for _ in 0..2000 {
        b.read_reply().expect_error(403, "ForbiddenException");
    }
    writer.join().unwrap();
    let rss = gw.rss_kib();
    assert!(rss < 64 * 1024, "VmRSS {rss} KiB after a wrong-token flood");
    // At most one refusal line per second per worker (plus slack).
    let secs = started.elapsed().as_secs() + 2;
    let lines = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("refused"))
        .count() as u64;
    assert!(
        lines <= 2 * gw.workers as u64 * secs,
        "{lines} refusal log lines in {secs} s"
    );
    // Auth comes before every path: /metrics and /health without the token are 403.
    let mut m = Mgmt::connect(gw.management);
    m.call("GET", "/metrics", &[], b"")
        .expect_error(403, "ForbiddenException");
    m.call("GET", "/health", &[], b"")
        .expect_error(403, "ForbiddenException");
    let ok = [("Authorization", "Bearer right-token")];
    let metrics = m.call("GET", "/metrics", &ok, b"").expect(200).text();
    let refused = metric_sum(&metrics, "wsgate_management_refused_total", &[]);
    assert!(refused >= 2002.0, "refusals counted: {refused}");
    // Nothing was delivered.
    assert_silent(&mut raw, Duration::from_millis(100));
    drop(a);
}

#[test]
fn public_paths_serve_health_and_metrics_without_auth() {
    let gw = token_gateway("public_paths = [\"/health\", \"/metrics\"]");
    let mut m = Mgmt::connect(gw.management);
    m.call("GET", "/health", &[], b"").expect(200);
    let text = m.call("GET", "/metrics", &[], b"").expect(200).text();
    assert!(text.contains("wsgate_management_refused_total"), "{text}");
    m.call("GET", "/@connections/AAAAAAAAAAAAAAA=", &[], b"")
        .expect_error(403, "ForbiddenException");
    m.call("GET", "/nope", &[], b"")
        .expect_error(403, "ForbiddenException");
    let exit = run_to_exit(
        &whoami_config(
            "auth = \"token\"\ntoken = \"t\"\npublic_paths = [\"/@connections\"]",
            "",
        ),
        &[],
    );
    assert_eq!(exit.status.code(), Some(1), "{}", exit.stderr);
    assert!(
        exit.stderr.contains("management.public_paths"),
        "{}",
        exit.stderr
    );
}

#[test]
fn a_request_head_sent_byte_by_byte_is_closed_by_the_header_timeout() {
    let gw = Gateway::start(&whoami_config("", ""));
    let mut s = tcp(gw.management);
    s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    // One byte every 200 ms keeps an idle timer from firing; the head never ends.
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "a partial head is still open after 15 s"
        );
        if s.write_all(b"x").is_err() {
            break;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {} // a 408 or similar before the close is fine
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

// ---------------------------------------------------------------------------
// Defect 12 (management part): standard reason phrases; a 204 has no Content-Length.

/// Sends `req` on `s` and reads one response head and its body (none for 204).
fn exchange(s: &mut TcpStream, req: &[u8]) -> Response {
    s.write_all(req).unwrap();
    let head = read_response(s);
    if let Some(n) = head.header("Content-Length") {
        let mut body = vec![0u8; n.parse().unwrap()];
        s.read_exact(&mut body).unwrap();
    }
    head
}

#[test]
fn status_lines_carry_standard_reason_phrases_and_204_has_no_length() {
    let gw = Gateway::start(&whoami_config("", ""));
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    let mut s = tcp(gw.management);
    let conn = format!("/@connections/{id}");
    let r = exchange(&mut s, &request_bytes("POST", &conn, &[], b"hi", false));
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let r = exchange(&mut s, &request_bytes("GET", &conn, &[], b"", false));
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let r = exchange(&mut s, &request_bytes("DELETE", &conn, &[], b"", false));
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert_eq!(r.header("Content-Length"), None, "{r:?}");
    // The connection stays in step after the 204.
    let r = exchange(&mut s, &request_bytes("GET", &conn, &[], b"", false));
    assert_eq!(r.status_line, "HTTP/1.1 410 Gone");
    let r = exchange(&mut s, &request_bytes("GET", "/nope", &[], b"", false));
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");
    let r = exchange(&mut s, &request_bytes("PUT", &conn, &[], b"", false));
    assert_eq!(r.status_line, "HTTP/1.1 405 Method Not Allowed");
    let r = exchange(
        &mut s,
        &request_bytes("GET", "/@connections/bad", &[], b"", false),
    );
    assert_eq!(r.status_line, "HTTP/1.1 400 Bad Request");
    let r = exchange(&mut s, &request_bytes("GET", "/health", &[], b"", false));
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    let gw = token_gateway("");
    let r = http(
        gw.management,
        &request_bytes("GET", "/@connections/AAAAAAAAAAAAAAA=", &[], b"", true),
    );
    assert_eq!(r.status_line, "HTTP/1.1 403 Forbidden");
}
