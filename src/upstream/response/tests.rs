//! The reply parser as a table of raw replies (SPEC §5, §16), each fed whole and at
//! every split point, which must not change the outcome.

use super::*;

const LIMIT: usize = 1 << 20;

/// Parses `raw` whole, then at every cut and every pair of cuts; all must agree.
fn parse(raw: &[u8], limit: usize) -> Parsed {
    let whole = parse_in_pieces(raw, &[], limit);
    for a in 1..raw.len() {
        assert_eq!(parse_in_pieces(raw, &[a], limit), whole, "cut at {a}");
        if raw.len() <= 160 {
            for b in a + 1..raw.len() {
                assert_eq!(parse_in_pieces(raw, &[a, b], limit), whole, "cuts {a} {b}");
            }
        }
    }
    whole
}

fn reply(raw: &[u8]) -> (u16, Vec<u8>, bool, usize) {
    match parse(raw, LIMIT) {
        Parsed::Reply {
            status,
            body,
            keep_alive,
            end,
            ..
        } => (status, body, keep_alive, end),
        Parsed::Failed(e) => panic!("{:?}: {e:?}", String::from_utf8_lossy(raw)),
    }
}

fn failed(raw: &[u8], limit: usize) -> Error {
    match parse(raw, limit) {
        Parsed::Failed(e) => e,
        r => panic!("{:?}: parsed as {r:?}", String::from_utf8_lossy(raw)),
    }
}

#[test]
fn content_length_reply() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    let Parsed::Reply {
        status,
        body,
        content_type,
        keep_alive,
        end,
        ..
    } = parse(raw, LIMIT)
    else {
        panic!()
    };
    assert_eq!((status, &body[..], keep_alive), (200, &b"hello"[..], true));
    assert_eq!(content_type.as_deref(), Some(&b"text/plain"[..]));
    assert_eq!(end, raw.len());
}

#[test]
fn chunked_reply_with_extensions_and_trailers_decodes_in_place() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nhello\r\n1 \r\n \r\n5\r\nworld\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n";
    assert_eq!(reply(raw), (200, b"hello world".to_vec(), true, raw.len()));
}

#[test]
fn interim_replies_are_skipped() {
    let raw = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(reply(raw), (201, b"ok".to_vec(), true, raw.len()));
    // Bare LF line ends, as httparse accepts them.
    let raw = b"HTTP/1.1 103 Early Hints\n\nHTTP/1.1 200 OK\nContent-Length: 1\n\nx";
    assert_eq!(reply(raw), (200, b"x".to_vec(), true, raw.len()));
}

#[test]
fn a_101_from_a_backend_is_malformed() {
    let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    assert_eq!(failed(raw, LIMIT), Error::Malformed);
}

#[test]
fn bytes_after_the_reply_are_left_over() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb";
    let (status, body, _, end) = reply(raw);
    assert_eq!((status, &body[..]), (200, &b"a"[..]));
    assert_eq!(end, raw.len() / 2);
}

#[test]
fn ambiguous_framing_is_malformed() {
    for raw in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
        b"HTTX/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
    ] {
        assert_eq!(
            failed(raw, LIMIT),
            Error::Malformed,
            "{:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // The same length twice is one length.
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length:  2\r\n\r\nhi";
    assert_eq!(reply(raw).1, b"hi");
}

#[test]
fn the_whole_reply_counts_against_the_limit() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    let raw = [&head[..], b"0123456789"].concat();
    assert_eq!(parse(&raw, raw.len()), parse(&raw, LIMIT));
    assert_eq!(failed(&raw, raw.len() - 1), Error::TooLarge);
    // Chunk framing and trailers count too.
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX: 1\r\n\r\n";
    assert_eq!(reply(raw).1, b"ab");
    assert_eq!(failed(raw, raw.len() - 1), Error::TooLarge);
    // A chunk announced beyond the limit fails at once; so does one that overflows.
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffff\r\n";
    assert_eq!(failed(raw, LIMIT), Error::TooLarge);
    // Read to EOF: still bounded.
    let raw = [&b"HTTP/1.1 200 OK\r\n\r\n"[..], &[b'x'; 100]].concat();
    assert_eq!(failed(&raw, 50), Error::TooLarge);
}

#[test]
fn endless_trailers_stop_at_the_trailer_bound() {
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    while raw.len() < 2 * MAX_HEAD_BYTES {
        raw.extend_from_slice(b"X-Trailer: 0123456789\r\n");
    }
    assert_eq!(
        parse_in_pieces(&raw, &[], LIMIT),
        Parsed::Failed(Error::TooLarge)
    );
    let cuts: Vec<usize> = (0..raw.len()).step_by(7).collect();
    assert_eq!(
        parse_in_pieces(&raw, &cuts, LIMIT),
        Parsed::Failed(Error::TooLarge)
    );
    // And at the reply limit, when that is smaller.
    assert_eq!(
        parse_in_pieces(&raw, &cuts, 4096),
        Parsed::Failed(Error::TooLarge)
    );
}

#[test]
fn long_lines_are_bounded() {
    let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
    raw.extend(std::iter::repeat_n(b'e', 2 * MAX_CHUNK_LINE_BYTES));
    raw.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
    let cuts: Vec<usize> = (0..raw.len()).collect();
    assert_eq!(
        parse_in_pieces(&raw, &[], LIMIT),
        Parsed::Failed(Error::Malformed)
    );
    assert_eq!(
        parse_in_pieces(&raw, &cuts, LIMIT),
        Parsed::Failed(Error::Malformed)
    );
    let mut raw = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
    raw.extend(std::iter::repeat_n(b'v', MAX_HEAD_BYTES));
    raw.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        parse_in_pieces(&raw, &[], LIMIT),
        Parsed::Failed(Error::TooLarge)
    );
    assert_eq!(
        parse_in_pieces(&raw, &cuts, LIMIT),
        Parsed::Failed(Error::TooLarge)
    );
}

#[test]
fn replies_without_length_end_at_eof_and_are_not_reusable() {
    let raw = b"HTTP/1.1 500 Oops\r\n\r\nboom";
    assert_eq!(reply(raw), (500, b"boom".to_vec(), false, raw.len()));
}

#[test]
fn short_replies_are_truncated() {
    assert_eq!(
        failed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab", LIMIT),
        Error::Truncated
    );
    assert_eq!(failed(b"HTTP/1.1 200 OK\r\n", LIMIT), Error::Truncated);
    assert_eq!(failed(b"", LIMIT), Error::Truncated);
    assert_eq!(
        failed(b"HTTP/1.1 103 Early Hints\r\n\r\n", LIMIT),
        Error::Truncated
    );
}

#[test]
fn connection_close_and_http10_are_not_reusable() {
    let raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
    assert!(!reply(raw).2);
    assert!(!reply(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").2);
    assert!(reply(b"HTTP/1.0 204 No\r\nConnection: keep-alive\r\n\r\n").2);
}

#[test]
fn fuzz_seeds_parse_alike_at_their_splits() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus/upstream_response");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory") {
        let path = entry.expect("seed").path();
        let seed = std::fs::read(&path).expect("read seed");
        check_splits(&seed);
        // Every byte-by-byte variant too.
        check_splits(&[&[seed[0] | 0x10][..], &seed[1..]].concat());
        n += 1;
    }
    assert!(n >= 4, "seeds in {dir:?}");
}

/// SPEC §16: pipelined replies parse alike however the reads split them (the
/// `upstream_pipeline` fuzz target's seeds, then random streams made of well-formed,
/// truncated and malformed replies).
#[test]
fn pipelined_replies_parse_alike_at_their_splits() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus/upstream_pipeline");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory") {
        let seed = std::fs::read(entry.expect("seed").path()).expect("read seed");
        check_pipelined_splits(&seed);
        check_pipelined_splits(&[&[seed[0] | 0x80][..], &seed[1..]].concat());
        n += 1;
    }
    assert!(n >= 4, "seeds in {dir:?}");
    let parts: [&[u8]; 8] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 C\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX: y\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nz",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nuntil eof",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 40\r\n\r\nshort",
        b"garbage\r\n\r\n",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3000 {
        let r = next();
        let mut input = vec![r as u8];
        for _ in 0..2 * usize::from((r as u8 >> 5) & 3) {
            input.push(next() as u8);
        }
        for _ in 0..1 + next() % 6 {
            // Mostly the first three (well-formed, keep-alive) shapes.
            let k = next() as usize % 16;
            input.extend_from_slice(parts[if k < 8 { k % 3 } else { k - 8 }]);
        }
        check_pipelined_splits(&input);
        let calls = 1 + usize::from(input[0] & 7);
        let data = &input[1 + 2 * usize::from((input[0] >> 5) & 3)..];
        seen.insert(format!(
            "{:?}",
            parse_pipelined_in_pieces(data, &[], calls, 1 << 20).1
        ));
    }
    // Every way a connection ends came up.
    assert!(seen.len() >= 5, "{seen:?}");
}
