//! CIDR blocks, the `X-Forwarded-For` rule and the CONNECT headers, as tables.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn trusted(blocks: &[&str]) -> Trusted {
    Trusted::new(blocks.iter().map(|b| Cidr::parse(b).unwrap()).collect())
}

#[test]
fn cidrs_parse_and_match_v4_and_v6() {
    for (block, inside, outside) in [
        ("10.0.0.0/8", "10.255.1.2", "11.0.0.1"),
        ("192.168.1.0/24", "192.168.1.255", "192.168.2.0"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.2"),
        ("0.0.0.0/0", "203.0.113.9", "::1"),
        ("2001:db8::/32", "2001:db8:ffff::1", "2001:db9::1"),
        ("::1", "::1", "::2"),
        ("::/0", "2001:db8::1", "10.0.0.1"),
        ("fe80::/10", "febf::1", "fec0::1"),
    ] {
        let c = Cidr::parse(block).unwrap();
        assert!(c.contains(ip(inside)), "{block} contains {inside}");
        assert!(
            !c.contains(ip(outside)),
            "{block} does not contain {outside}"
        );
    }
    // A dual-stack socket reports IPv4 peers as mapped IPv6 addresses.
    assert!(Cidr::parse("10.0.0.0/8")
        .unwrap()
        .contains(ip("::ffff:10.1.2.3")));
    assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
}

#[test]
fn bad_cidrs_say_what_is_wrong() {
    for (text, problem) in [
        ("10.0.0.0/33", "0..=32"),
        ("2001:db8::/129", "0..=128"),
        ("10.0.0.0/", "0..=32"),
        ("10.0.0.0/+8", "0..=32"),
        ("10.0.0.0/8/8", "0..=32"),
        ("10.0.0/8", "not an IPv4 or IPv6 address"),
        ("localhost", "not an IPv4 or IPv6 address"),
        ("", "not an IPv4 or IPv6 address"),
        ("10.0.0.1/8", "the network is 10.0.0.0/8"),
        ("2001:db8::1/32", "the network is 2001:db8::/32"),
    ] {
        let e = Cidr::parse(text).unwrap_err();
        assert!(e.contains(problem), "{text:?}: {e}");
    }
}

#[test]
fn entries_are_addresses_with_or_without_ports() {
    for (entry, want) in [
        ("203.0.113.7", Some("203.0.113.7")),
        (" 203.0.113.7 ", Some("203.0.113.7")),
        ("203.0.113.7:4711", Some("203.0.113.7")),
        ("2001:db8::7", Some("2001:db8::7")),
        ("[2001:db8::7]", Some("2001:db8::7")),
        ("[2001:db8::7]:443", Some("2001:db8::7")),
        ("::ffff:192.0.2.1", Some("192.0.2.1")),
        ("unknown", None),
        ("_hidden", None),
        ("203.0.113.7.1", None),
        ("[203.0.113.7", None),
        ("", None),
    ] {
        assert_eq!(parse_entry(entry), want.map(ip), "{entry:?}");
    }
}

/// (peer, X-Forwarded-For lines, expected client, expected chain, peer trusted).
type Case<'a> = (&'a str, &'a [&'a str], &'a str, &'a str, bool);

#[test]
fn the_client_is_the_rightmost_untrusted_address() {
    let t = trusted(&["10.0.0.0/8", "127.0.0.1"]);
    let cases: &[Case] = &[
        // Untrusted peers: their header is not believed.
        (
            "203.0.113.9",
            &["1.2.3.4"],
            "203.0.113.9",
            "203.0.113.9",
            false,
        ),
        ("203.0.113.9", &[], "203.0.113.9", "203.0.113.9", false),
        // A trusted peer without a header is itself the client.
        ("127.0.0.1", &[], "127.0.0.1", "127.0.0.1", true),
        ("127.0.0.1", &[" , "], "127.0.0.1", "127.0.0.1", true),
        // One hop.
        (
            "127.0.0.1",
            &["198.51.100.1"],
            "198.51.100.1",
            "198.51.100.1",
            true,
        ),
        // Trusted hops on the right are passed; what the client claimed on the left
        // stays in the chain but is not believed.
        (
            "10.0.0.1",
            &["6.6.6.6, 198.51.100.1, 10.0.0.2"],
            "198.51.100.1",
            "6.6.6.6, 198.51.100.1",
            true,
        ),
        // Several header lines are one list, in order.
        (
            "10.0.0.1",
            &["6.6.6.6, 198.51.100.1", "10.0.0.3", "10.0.0.2"],
            "198.51.100.1",
            "6.6.6.6, 198.51.100.1",
            true,
        ),
        // Every entry trusted: the leftmost.
        (
            "10.0.0.1",
            &["10.0.0.9, 10.0.0.2"],
            "10.0.0.9",
            "10.0.0.9",
            true,
        ),
        // Garbage stops the walk at the hop that forwarded it.
        (
            "10.0.0.1",
            &["198.51.100.1, unknown"],
            "10.0.0.1",
            "10.0.0.1",
            true,
        ),
        (
            "10.0.0.1",
            &["198.51.100.1, garbage, 10.0.0.2"],
            "10.0.0.2",
            "198.51.100.1, garbage, 10.0.0.2",
            true,
        ),
        // Ports and brackets are read; the chain keeps entries as sent.
        (
            "127.0.0.1",
            &["[2001:db8::7]:443"],
            "2001:db8::7",
            "[2001:db8::7]:443",
            true,
        ),
    ];
    for &(peer, xff, want_ip, want_chain, want_trusted) in cases {
        let c = client(ip(peer), false, xff.iter().copied(), &t);
        assert_eq!(
            (c.ip, c.chain.as_str(), c.peer_trusted),
            (ip(want_ip), want_chain, want_trusted),
            "peer {peer}, X-Forwarded-For {xff:?}"
        );
    }
}

#[test]
fn a_proxy_protocol_source_ignores_the_header() {
    let t = trusted(&["0.0.0.0/0"]);
    let c = client(ip("198.51.100.1"), true, ["6.6.6.6"].into_iter(), &t);
    assert_eq!(
        (c.ip, c.chain.as_str(), c.peer_trusted),
        (ip("198.51.100.1"), "198.51.100.1", false)
    );
}

#[test]
fn a_long_chain_is_read_from_the_right_only() {
    let t = trusted(&["10.0.0.0/8"]);
    let mut xff = vec!["1.1.1.1"; 10_000].join(",");
    xff.push_str(&", 10.0.0.2".repeat(MAX_CHAIN_ENTRIES + 10));
    let c = client(ip("10.0.0.1"), false, [xff.as_str()].into_iter(), &t);
    // All looked-at entries are trusted: the leftmost of them is taken.
    assert_eq!((c.ip, c.chain.as_str()), (ip("10.0.0.2"), "10.0.0.2"));
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn untrusted_forwarded_headers_are_replaced() {
    let mut h = pairs(&[
        ("Host", "h"),
        ("x-forwarded-for", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Port", "1"),
        ("X-Custom", "a"),
    ]);
    let c = client(
        ip("203.0.113.9"),
        false,
        [].into_iter(),
        &Trusted::default(),
    );
    set_headers(&mut h, &c, 8080, "http");
    assert_eq!(
        h,
        pairs(&[
            ("Host", "h"),
            ("X-Custom", "a"),
            ("X-Forwarded-For", "203.0.113.9"),
            ("X-Forwarded-Port", "8080"),
            ("X-Forwarded-Proto", "http"),
        ])
    );
}

#[test]
fn a_trusted_peer_keeps_its_port_and_proto() {
    let t = trusted(&["127.0.0.1"]);
    let mut h = pairs(&[
        ("Host", "h"),
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-Proto", "https"),
    ]);
    let c = client(ip("127.0.0.1"), false, ["198.51.100.1"].into_iter(), &t);
    set_headers(&mut h, &c, 8080, "http");
    assert_eq!(
        h,
        pairs(&[
            ("Host", "h"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-Port", "8080"),
        ])
    );
}

#[test]
fn xff_values_are_read_from_the_head() {
    let head = b"GET /prod HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\nx-forwarded-for: 3.3.3.3\r\n\r\n";
    assert_eq!(xff_values(head), vec!["1.1.1.1, 2.2.2.2", "3.3.3.3"]);
    assert!(xff_values(b"GET /prod HTTP/1.1\r\n\r\n").is_empty());
}
