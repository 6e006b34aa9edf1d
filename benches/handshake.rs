//! Opening-handshake benches (STYLE.md "Benches").
//!
//! - `handshake/parse`: [`wsgate::handshake::parse`] of a typical browser upgrade
//!   request (Chrome-style, 626 bytes, 14 headers; the same bytes as the fuzz seed
//!   `tests/fuzz/corpus/handshake/good_browser_upgrade`), which includes computing
//!   `Sec-WebSocket-Accept`. The baseline `httparse_only` is the `httparse::Request::parse`
//!   call inside it, so the gap is the cost of wsgate's checks and the accept key.
//! - `handshake/accept_key`: SHA-1 plus base64 of the RFC 6455 sample key.
//!
//! Measured (2 shared AMD EPYC vCPUs under load, median of two runs): `parse` 975 ns,
//! `httparse_only` 445 ns, `accept_key` 125 ns. The other ~400 ns are wsgate's own work
//! (not profiled): two `windows().position()` scans for CRLF and CRLFCRLF, then the
//! header walk.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use wsgate::handshake;

/// What Chrome sends when a page at example.com opens `wss://api.example.com/prod?...`.
const BROWSER_REQUEST: &[u8] = b"GET /prod?token=eyJhbGciOiJIUzI1NiJ9.e30.abc&room=lobby HTTP/1.1\r\n\
Host: api.example.com\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: https://example.com\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
Cookie: session=4f1c2a9e7b; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
Sec-WebSocket-Protocol: chat, superchat\r\n\
\r\n";

fn parse(c: &mut Criterion) {
    let u = handshake::parse(BROWSER_REQUEST, "prod")
        .expect("valid")
        .expect("complete");
    assert_eq!(u.head_len, BROWSER_REQUEST.len());
    assert_eq!(&u.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    let mut g = c.benchmark_group("handshake/parse");
    g.throughput(Throughput::Bytes(BROWSER_REQUEST.len() as u64));
    g.bench_function("wsgate", |b| {
        b.iter(|| handshake::parse(black_box(BROWSER_REQUEST), "prod"))
    });
    g.bench_function("httparse_only", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            black_box(req.parse(black_box(BROWSER_REQUEST)).is_ok());
        })
    });
    g.finish();
}

fn accept_key(c: &mut Criterion) {
    c.bench_function("handshake/accept_key", |b| {
        b.iter(|| handshake::accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ==")))
    });
}

criterion_group!(benches, parse, accept_key);
criterion_main!(benches);
