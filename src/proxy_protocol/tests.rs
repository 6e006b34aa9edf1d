//! The PROXY protocol parser against the protocol's own examples, every split of
//! every valid header, and hostile lengths.

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn done(consumed: usize, source: &str, destination: &str) -> Result<Status, Error> {
    Ok(Status::Done(Header {
        consumed,
        addresses: Some(Addresses {
            source: addr(source),
            destination: addr(destination),
        }),
    }))
}

fn done_local(consumed: usize) -> Result<Status, Error> {
    Ok(Status::Done(Header {
        consumed,
        addresses: None,
    }))
}

/// A v2 header: version/command byte, family/protocol byte, address block and TLVs.
fn v2(vc: u8, fam: u8, block: &[u8]) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(vc);
    h.push(fam);
    h.extend_from_slice(&(block.len() as u16).to_be_bytes());
    h.extend_from_slice(block);
    h
}

fn inet_block() -> Vec<u8> {
    let mut b = vec![192, 0, 2, 7, 10, 0, 0, 1];
    b.extend_from_slice(&51000u16.to_be_bytes());
    b.extend_from_slice(&443u16.to_be_bytes());
    b
}

fn inet6_block() -> Vec<u8> {
    let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let mut b = src.octets().to_vec();
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(&51000u16.to_be_bytes());
    b.extend_from_slice(&8443u16.to_be_bytes());
    b
}

/// Every strict prefix is `Partial`, the whole gives `expected`, and bytes after the
/// header are not counted.
fn assert_every_split(header: &[u8], mode: Mode, expected: Result<Status, Error>) {
    for cut in 0..header.len() {
        assert_eq!(
            parse(&header[..cut], mode),
            Ok(Status::Partial),
            "prefix of {cut} bytes of {header:?}"
        );
    }
    assert_eq!(parse(header, mode), expected);
    let mut more = header.to_vec();
    more.extend_from_slice(b"GET /prod HTTP/1.1\r\n\r\n");
    assert_eq!(parse(&more, mode), expected, "with the request after it");
}

#[test]
fn v1_tcp4_gives_the_client_address() {
    let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n";
    assert_every_split(
        h,
        Mode::V1,
        done(h.len(), "192.0.2.7:51000", "10.0.0.1:443"),
    );
    assert_every_split(
        h,
        Mode::Any,
        done(h.len(), "192.0.2.7:51000", "10.0.0.1:443"),
    );
}

#[test]
fn v1_tcp6_gives_the_client_address() {
    let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 0 65535\r\n";
    assert_every_split(
        h,
        Mode::V1,
        done(h.len(), "[2001:db8::7]:0", "[2001:db8::1]:65535"),
    );
}

#[test]
fn v1_unknown_keeps_the_peer() {
    for h in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ] {
        assert_every_split(h, Mode::Any, done_local(h.len()));
    }
}

#[test]
fn v1_longest_line_is_107_bytes() {
    let longest = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    assert!(longest.len() <= MAX_V1_BYTES);
    assert!(matches!(parse(longest, Mode::V1), Ok(Status::Done(_))));
    let mut at_limit = b"PROXY UNKNOWN ".to_vec();
    at_limit.resize(MAX_V1_BYTES - 2, b'x');
    at_limit.extend_from_slice(b"\r\n");
    assert_eq!(parse(&at_limit, Mode::V1), done_local(MAX_V1_BYTES));
    let mut over = b"PROXY UNKNOWN ".to_vec();
    over.resize(MAX_V1_BYTES - 1, b'x');
    assert_eq!(parse(&over, Mode::V1), Ok(Status::Partial));
    over.extend_from_slice(b"\r\n");
    assert_eq!(parse(&over, Mode::V1), Err(Error::TooLong));
    // No end of line at all: refused once 107 bytes are here, not buffered further.
    let endless = vec![b'P'; 1];
    let mut endless = [endless, b"ROXY ".to_vec(), vec![b'1'; 200]].concat();
    assert_eq!(parse(&endless, Mode::V1), Err(Error::TooLong));
    endless.truncate(MAX_V1_BYTES - 1);
    assert_eq!(parse(&endless, Mode::V1), Ok(Status::Partial));
}

#[test]
fn v1_grammar_violations_are_refused() {
    for line in [
        &b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\r"[..],
        b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\n",
        b"PROXY TCP4  192.0.2.7 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443 \r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 51000\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443 1\r\n",
        b"PROXY TCP5 192.0.2.7 10.0.0.1 51000 443\r\n",
        b"PROXY tcp4 192.0.2.7 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 2001:db8::7 10.0.0.1 51000 443\r\n",
        b"PROXY TCP6 192.0.2.7 2001:db8::1 51000 443\r\n",
        b"PROXY TCP4 192.0.2.07 10.0.0.1 51000 443\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 443\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 051000 443\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 443\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 99999999999999999999 443\r\n",
        b"PROXY TCP4 192.0.2.7 10.0.0.1 +5 443\r\n",
        b"PROXY TCP4 \xff.0.2.7 10.0.0.1 5 443\r\n",
        b"PROXY \r\n",
        b"PROXY UNKNOWNX\r\n",
    ] {
        let res = parse(line, Mode::Any);
        assert!(
            matches!(res, Err(Error::BadLine)),
            "{:?}: {res:?}",
            String::from_utf8_lossy(line)
        );
    }
    assert_eq!(parse(b"PROXX", Mode::V1), Err(Error::NotProxy));
    assert_eq!(parse(b"proxy ", Mode::V1), Err(Error::NotProxy));
}

#[test]
fn anything_else_is_refused_at_its_first_byte() {
    for mode in [Mode::V1, Mode::V2, Mode::Any] {
        assert_eq!(parse(b"G", mode), Err(Error::NotProxy));
        assert_eq!(
            parse(b"GET /prod HTTP/1.1\r\n\r\n", mode),
            Err(Error::NotProxy)
        );
        assert_eq!(parse(b"\x16\x03\x01", mode), Err(Error::NotProxy));
        assert_eq!(parse(b"", mode), Ok(Status::Partial));
    }
    assert_eq!(parse(b"P", Mode::Off), Err(Error::NotProxy));
}

#[test]
fn each_mode_accepts_only_its_versions() {
    let one = b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\n".to_vec();
    let two = v2(0x21, 0x11, &inet_block());
    assert_eq!(parse(&one, Mode::V2), Err(Error::NotProxy));
    assert_eq!(parse(&two, Mode::V1), Err(Error::NotProxy));
    assert_eq!(parse(&one[..1], Mode::V2), Err(Error::NotProxy));
    assert_eq!(parse(&two[..1], Mode::V1), Err(Error::NotProxy));
    assert!(matches!(parse(&one, Mode::Any), Ok(Status::Done(_))));
    assert!(matches!(parse(&two, Mode::Any), Ok(Status::Done(_))));
}

#[test]
fn v2_inet_and_inet6_give_the_client_address() {
    let h = v2(0x21, 0x11, &inet_block());
    assert_every_split(&h, Mode::V2, done(28, "192.0.2.7:51000", "10.0.0.1:443"));
    let h = v2(0x21, 0x21, &inet6_block());
    assert_every_split(
        &h,
        Mode::Any,
        done(52, "[2001:db8::7]:51000", "[2001:db8::1]:8443"),
    );
}

#[test]
fn v2_tlvs_are_skipped() {
    let mut block = inet_block();
    // PP2_TYPE_AUTHORITY "example.test", then a NOOP with 3 padding bytes.
    block.extend_from_slice(&[0x02, 0x00, 12]);
    block.extend_from_slice(b"example.test");
    block.extend_from_slice(&[0x04, 0x00, 3, 0, 0, 0]);
    let h = v2(0x21, 0x11, &block);
    assert_every_split(
        &h,
        Mode::V2,
        done(h.len(), "192.0.2.7:51000", "10.0.0.1:443"),
    );
}

#[test]
fn v2_local_and_unspec_keep_the_peer() {
    // LOCAL: a proxy's own health check; whatever block it carries is ignored.
    let h = v2(0x20, 0x00, b"");
    assert_every_split(&h, Mode::V2, done_local(16));
    let h = v2(0x20, 0x11, &inet_block());
    assert_every_split(&h, Mode::V2, done_local(28));
    let h = v2(0x20, 0x31, &[0; 216]);
    assert_every_split(&h, Mode::V2, done_local(232));
    let h = v2(0x21, 0x00, b"");
    assert_every_split(&h, Mode::V2, done_local(16));
}

#[test]
fn v2_unsupported_versions_commands_and_families_are_refused() {
    let block = inet_block();
    for (vc, fam, why) in [
        (0x11, 0x11, "version 1 in binary"),
        (0x31, 0x11, "version 3"),
        (0x22, 0x11, "command 2"),
        (0x21, 0x12, "DGRAM"),
        (0x21, 0x10, "INET over UNSPEC protocol"),
        (0x21, 0x31, "AF_UNIX"),
        (0x21, 0x41, "family 4"),
    ] {
        let h = v2(vc, fam, &block);
        assert_eq!(parse(&h, Mode::V2), Err(Error::Unsupported), "{why}");
    }
    // The version and command are judged as soon as their byte is here.
    let h = v2(0x31, 0x11, &block);
    assert_eq!(parse(&h[..13], Mode::V2), Err(Error::Unsupported));
    // An address block shorter than its family's addresses.
    assert_eq!(
        parse(&v2(0x21, 0x11, &block[..11]), Mode::V2),
        Err(Error::Unsupported)
    );
    assert_eq!(
        parse(&v2(0x21, 0x21, &inet6_block()[..35]), Mode::V2),
        Err(Error::Unsupported)
    );
    // A damaged signature.
    let mut h = v2(0x21, 0x11, &block);
    h[11] = b'X';
    assert_eq!(parse(&h, Mode::V2), Err(Error::NotProxy));
    assert_eq!(parse(&h[..11], Mode::V2), Ok(Status::Partial));
}

#[test]
fn v2_hostile_lengths_are_refused_before_their_bytes_arrive() {
    for len in [u16::MAX, (MAX_V2_BYTES - V2_FIXED_BYTES + 1) as u16] {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&len.to_be_bytes());
        assert_eq!(parse(&h, Mode::V2), Err(Error::TooLong), "len {len}");
    }
    // The largest header accepted.
    let mut block = inet_block();
    block.resize(MAX_V2_BYTES - V2_FIXED_BYTES, 0);
    let h = v2(0x21, 0x11, &block);
    assert_eq!(
        parse(&h, Mode::V2),
        done(MAX_V2_BYTES, "192.0.2.7:51000", "10.0.0.1:443")
    );
    assert_eq!(parse(&h[..MAX_V2_BYTES - 1], Mode::V2), Ok(Status::Partial));
}

#[test]
fn fuzz_target_holds_on_the_examples() {
    let mut inputs = vec![
        [
            &[1u8][..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 51000 443\r\nGET",
        ]
        .concat(),
        [&[3u8][..], &v2(0x21, 0x21, &inet6_block())].concat(),
        [&[0u8][..], b"PROXY UNKNOWN\r\n"].concat(),
        vec![2, b'\r', b'\n'],
        vec![],
    ];
    inputs.push([&[3u8][..], b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r"].concat());
    for i in &inputs {
        fuzz_parse(i);
    }
}
