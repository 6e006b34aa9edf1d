//! The client's real address behind proxies (SPEC §10.2): which peers are trusted
//! (`server.trusted_proxies`, CIDRs), who the client is according to a trusted peer's
//! `X-Forwarded-For`, and the `X-Forwarded-*` headers a CONNECT event carries, as AWS
//! adds them.
//!
//! The rules, in order: a PROXY protocol header's source address is the client (the
//! worker hands it to the session); else, when the TCP peer is trusted, the client is
//! the rightmost `X-Forwarded-For` address that is not itself trusted; else the TCP
//! peer is. Only a trusted peer's `X-Forwarded-*` values are believed; everyone else's
//! are replaced.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// Most `X-Forwarded-For` entries looked at (from the right); a longer chain is cut
/// there, its left part never read.
pub const MAX_CHAIN_ENTRIES: usize = 64;

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address (`/32`, `/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR/PREFIX` or a bare address. Host bits set below the prefix are an
    /// error (they usually mean a typo in the prefix).
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{text}\": \"{addr}\" is not an IPv4 or IPv6 address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&n| n <= max && !p.starts_with('+'))
                .ok_or_else(|| format!("\"{text}\": the prefix must be 0..={max}"))?,
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != bits(network) {
            return Err(format!(
                "\"{text}\" has bits set past its /{prefix} prefix (the network is {}/{prefix})",
                cidr.network_of(network)
            ));
        }
        Ok(cidr)
    }

    /// Whether `ip` is inside the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == bits(self.network)
    }

    fn mask(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        if host_bits >= 128 {
            0
        } else {
            !0u128 << host_bits
        }
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        bits(ip) & self.mask(ip)
    }

    fn network_of(&self, ip: IpAddr) -> IpAddr {
        let m = self.masked(ip);
        match ip {
            IpAddr::V4(_) => IpAddr::from((m as u32).to_be_bytes()),
            IpAddr::V6(_) => IpAddr::from(m.to_be_bytes()),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The trusted proxies (`server.trusted_proxies`); empty by default: nobody's
/// `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted(Vec<Cidr>);

impl Trusted {
    pub fn new(blocks: Vec<Cidr>) -> Trusted {
        Trusted(blocks)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

/// One `X-Forwarded-For` entry: an address, with or without a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`, `[2001:db8::1]`). Anything else (`unknown`, obfuscated
/// identifiers, garbage) is `None`.
pub fn parse_entry(entry: &str) -> Option<IpAddr> {
    let e = entry.trim();
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = e.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    let inner = e.strip_prefix('[')?.strip_suffix(']')?;
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Who the client is, and the `X-Forwarded-For` chain to forward (ending with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    /// `X-Forwarded-For` as the CONNECT event carries it.
    pub chain: String,
    /// The TCP peer is trusted: its `X-Forwarded-Port` / `-Proto` are kept.
    pub peer_trusted: bool,
}

/// The client of a connection from `peer`. `proxied`: `peer` came from a PROXY
/// protocol header (then no `X-Forwarded-For` is believed). `xff`: the request's
/// `X-Forwarded-For` values in order (several header lines are one comma list).
///
/// From a trusted peer, the entries are walked from the right: trusted hops are
/// passed, the first untrusted address is the client. An entry that is not an
/// address stops the walk, and the hop that forwarded it (the last trusted address)
/// is taken as the client: nothing left of garbage is believed. When every entry is
/// trusted, the leftmost is the client. The forwarded chain is the received one cut
/// right after the client.
pub fn client<'a>(
    peer: IpAddr,
    proxied: bool,
    xff: impl DoubleEndedIterator<Item = &'a str>,
    trusted: &Trusted,
) -> Client {
    let peer = peer.to_canonical();
    if proxied || !trusted.contains(peer) {
        return Client {
            ip: peer,
            chain: peer.to_string(),
            peer_trusted: false,
        };
    }
    // Right to left.
    let entries: Vec<&str> = xff
        .rev()
        .flat_map(|v| v.rsplit(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .take(MAX_CHAIN_ENTRIES)
        .collect();
    // `taken`: entries from the right up to and including the client's.
    let (mut ip, mut taken) = (peer, 0);
    for (i, e) in entries.iter().enumerate() {
        let Some(hop) = parse_entry(e) else { break };
        (ip, taken) = (hop, i + 1);
        if !trusted.contains(hop) {
            break;
        }
    }
    let chain = if taken == 0 {
        peer.to_string()
    } else {
        let mut kept = entries[taken - 1..].to_vec();
        kept.reverse();
        kept.join(", ")
    };
    Client {
        ip,
        chain,
        peer_trusted: true,
    }
}

/// Sets the `X-Forwarded-*` headers a CONNECT event carries (SPEC §10.2):
/// `X-Forwarded-For` becomes `client.chain`; `X-Forwarded-Port` and
/// `X-Forwarded-Proto` are the listener's, unless a trusted peer sent them. Replaced
/// headers go, whatever their case; the new ones come last, in AWS's spelling.
pub fn set_headers(headers: &mut Vec<(String, String)>, client: &Client, port: u16, proto: &str) {
    let is = |name: &str, h: &(String, String)| h.0.eq_ignore_ascii_case(name);
    let keep_port = client.peer_trusted && headers.iter().any(|h| is("X-Forwarded-Port", h));
    let keep_proto = client.peer_trusted && headers.iter().any(|h| is("X-Forwarded-Proto", h));
    headers.retain(|h| {
        !(is("X-Forwarded-For", h)
            || (!keep_port && is("X-Forwarded-Port", h))
            || (!keep_proto && is("X-Forwarded-Proto", h)))
    });
    headers.push(("X-Forwarded-For".into(), client.chain.clone()));
    if !keep_port {
        headers.push(("X-Forwarded-Port".into(), port.to_string()));
    }
    if !keep_proto {
        headers.push(("X-Forwarded-Proto".into(), proto.into()));
    }
}

/// The `X-Forwarded-For` values of a request head, in order, for [`client`]. Only
/// read for a trusted peer; the head was already accepted by the handshake parser.
pub fn xff_values(head: &[u8]) -> Vec<&str> {
    let mut headers = [httparse::EMPTY_HEADER; crate::handshake::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head).is_err() {
        return Vec::new();
    }
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("X-Forwarded-For"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .collect()
}

#[cfg(test)]
mod tests;
