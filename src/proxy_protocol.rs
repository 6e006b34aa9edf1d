//! The HAProxy PROXY protocol (versions 1 and 2), sans-IO: feed it the bytes a new
//! connection sent so far and it says "need more", "done: this many bytes were the
//! header, the client is this address", or "not a valid header" (SPEC §10.2).
//!
//! Like `httparse`, the parser keeps no state: the caller accumulates the bytes and
//! calls [`parse`] again after each read. A header is at most [`MAX_V1_BYTES`] (v1, the
//! protocol's own limit) or [`MAX_V2_BYTES`] (v2, our bound on the TLVs we skip), so
//! the work per call is bounded and a partial header never costs more memory than that.
//! Bytes that cannot start a header are rejected as soon as they arrive, so a plain
//! HTTP request on a PROXY listener is refused at its first byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which versions a listener accepts (`server.proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No PROXY header: the TCP peer is the client.
    Off,
    V1,
    V2,
    /// Either version, told apart by the first byte.
    Any,
}

impl Mode {
    fn accepts_v1(self) -> bool {
        matches!(self, Mode::V1 | Mode::Any)
    }

    fn accepts_v2(self) -> bool {
        matches!(self, Mode::V2 | Mode::Any)
    }
}

/// Longest v1 line, `\r\n` included (the protocol's limit).
pub const MAX_V1_BYTES: usize = 107;
/// Longest v2 header we accept: the 16-byte fixed part plus addresses and TLVs. The
/// length field allows 64 KiB; the TLVs proxies send (ALPN, authority, unique id,
/// SSL facts, cloud endpoint ids) fit easily in this.
pub const MAX_V2_BYTES: usize = 4096;

/// The v1 prefix, its space included.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The 12-byte v2 signature.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Fixed part of a v2 header: signature, version/command, family/protocol, length.
const V2_FIXED_BYTES: usize = 16;

/// The addresses a header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The client as the proxy saw it.
    pub source: SocketAddr,
    /// The address the client connected to on the proxy.
    pub destination: SocketAddr,
}

/// A complete header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the header; what follows belongs to the proxied connection.
    pub consumed: usize,
    /// `None` for v1 `UNKNOWN`, v2 `LOCAL` (a proxy's health check) and v2 `UNSPEC`:
    /// the TCP peer stays the client.
    pub addresses: Option<Addresses>,
}

/// What the bytes so far amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A valid beginning: read more.
    Partial,
    Done(Header),
}

/// Why the bytes are not a header the listener accepts. The consequence is always the
/// same: the connection is closed without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// Neither a v1 prefix nor the v2 signature (or the version is not enabled).
    NotProxy,
    /// A v1 line that breaks the grammar.
    BadLine,
    /// A v1 line without `\r\n` within 107 bytes, or a v2 length above [`MAX_V2_BYTES`].
    TooLong,
    /// A v2 version, command, family or protocol we do not serve, or an address block
    /// shorter than its family needs.
    Unsupported,
}

/// Parses the start of a connection's bytes as a PROXY header of an accepted `mode`.
pub fn parse(buf: &[u8], mode: Mode) -> Result<Status, Error> {
    let Some(&first) = buf.first() else {
        return Ok(Status::Partial);
    };
    if first == V1_PREFIX[0] && mode.accepts_v1() {
        parse_v1(buf)
    } else if first == V2_SIGNATURE[0] && mode.accepts_v2() {
        parse_v2(buf)
    } else {
        Err(Error::NotProxy)
    }
}

/// Whether `buf` and `expected` agree on their common length.
fn prefix_matches(buf: &[u8], expected: &[u8]) -> bool {
    let n = buf.len().min(expected.len());
    buf[..n] == expected[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Status, Error> {
    if !prefix_matches(buf, V1_PREFIX) {
        return Err(Error::NotProxy);
    }
    let window = &buf[..buf.len().min(MAX_V1_BYTES)];
    let Some(cr) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        return if buf.len() >= MAX_V1_BYTES {
            Err(Error::TooLong)
        } else {
            Ok(Status::Partial)
        };
    };
    // A line is text up to `\r\n`, within the limit including them.
    if buf[cr] == b'\n' {
        return Err(Error::BadLine);
    }
    if cr + 2 > MAX_V1_BYTES {
        return Err(Error::TooLong);
    }
    match buf.get(cr + 1) {
        None => return Ok(Status::Partial),
        Some(b'\n') => {}
        Some(_) => return Err(Error::BadLine),
    }
    let line = &buf[V1_PREFIX.len()..cr];
    let addresses = v1_fields(line)?;
    Ok(Status::Done(Header {
        consumed: cr + 2,
        addresses,
    }))
}

/// `TCP4 src dst sport dport`, `TCP6 ...` or `UNKNOWN[ anything]`.
fn v1_fields(line: &[u8]) -> Result<Option<Addresses>, Error> {
    if line == b"UNKNOWN" || line.starts_with(b"UNKNOWN ") {
        return Ok(None);
    }
    let mut fields = line.split(|&b| b == b' ');
    let proto = fields.next().ok_or(Error::BadLine)?;
    let v6 = match proto {
        b"TCP4" => false,
        b"TCP6" => true,
        _ => return Err(Error::BadLine),
    };
    let mut next = || fields.next().ok_or(Error::BadLine);
    let (src, dst, sport, dport) = (next()?, next()?, next()?, next()?);
    if fields.next().is_some() {
        return Err(Error::BadLine);
    }
    let ip = |f: &[u8]| -> Result<IpAddr, Error> {
        let text = std::str::from_utf8(f).map_err(|_| Error::BadLine)?;
        if v6 {
            text.parse::<Ipv6Addr>().map(IpAddr::V6)
        } else {
            text.parse::<Ipv4Addr>().map(IpAddr::V4)
        }
        .map_err(|_| Error::BadLine)
    };
    Ok(Some(Addresses {
        source: SocketAddr::new(ip(src)?, v1_port(sport)?),
        destination: SocketAddr::new(ip(dst)?, v1_port(dport)?),
    }))
}

/// A decimal port, 0..=65535, without a leading zero (as the protocol writes them).
fn v1_port(f: &[u8]) -> Result<u16, Error> {
    if f.is_empty() || f.len() > 5 || (f.len() > 1 && f[0] == b'0') {
        return Err(Error::BadLine);
    }
    let mut n: u32 = 0;
    for &b in f {
        if !b.is_ascii_digit() {
            return Err(Error::BadLine);
        }
        n = n * 10 + u32::from(b - b'0');
    }
    u16::try_from(n).map_err(|_| Error::BadLine)
}

fn parse_v2(buf: &[u8]) -> Result<Status, Error> {
    if !prefix_matches(buf, V2_SIGNATURE) {
        return Err(Error::NotProxy);
    }
    if buf.len() < V2_FIXED_BYTES {
        // The version and command are checked as soon as they are here.
        if let Some(&vc) = buf.get(12) {
            v2_command(vc)?;
        }
        return Ok(Status::Partial);
    }
    let local = v2_command(buf[12])?;
    let (family, protocol) = (buf[13] >> 4, buf[13] & 0x0f);
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = V2_FIXED_BYTES + len;
    if total > MAX_V2_BYTES {
        return Err(Error::TooLong);
    }
    // What the family needs in the address block (before any TLV).
    let needs = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        _ if local => 0,
        _ => return Err(Error::Unsupported),
    };
    if !local && family != 0 && protocol != 1 {
        // Only STREAM (TCP) is proxied to a WebSocket listener.
        return Err(Error::Unsupported);
    }
    if len < needs {
        return Err(Error::Unsupported);
    }
    if buf.len() < total {
        return Ok(Status::Partial);
    }
    let block = &buf[V2_FIXED_BYTES..total];
    let addresses = match (local, family) {
        (true, _) | (false, 0) => None,
        (false, 1) => {
            let ip = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&block[at..at + 4]).unwrap());
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(8)),
                destination: SocketAddr::new(ip(4), port(10)),
            })
        }
        (false, _) => {
            let ip = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&block[at..at + 16]).unwrap());
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            Some(Addresses {
                source: SocketAddr::new(ip(0), port(32)),
                destination: SocketAddr::new(ip(16), port(34)),
            })
        }
    };
    // TLVs (the rest of the block) are skipped unread.
    Ok(Status::Done(Header {
        consumed: total,
        addresses,
    }))
}

/// Version 2 with command LOCAL (`true`) or PROXY (`false`).
fn v2_command(vc: u8) -> Result<bool, Error> {
    match vc {
        0x20 => Ok(true),
        0x21 => Ok(false),
        _ => Err(Error::Unsupported),
    }
}

/// The fuzz target (`tests/fuzz/fuzz_targets/proxy_protocol.rs`): the first byte picks
/// the mode, the rest is parsed whole and split at every byte; every prefix of a
/// header must be `Partial`, every split must agree with the whole, and a header never
/// claims more bytes than it was given or more than the limits.
pub fn fuzz_parse(data: &[u8]) {
    let Some((&m, input)) = data.split_first() else {
        return;
    };
    let mode = [Mode::Off, Mode::V1, Mode::V2, Mode::Any][usize::from(m & 3)];
    let whole = parse(input, mode);
    if let Ok(Status::Done(h)) = whole {
        assert!(h.consumed <= input.len());
        assert!(h.consumed <= MAX_V1_BYTES.max(MAX_V2_BYTES));
        for cut in 0..h.consumed {
            assert_eq!(parse(&input[..cut], mode), Ok(Status::Partial), "cut {cut}");
        }
        assert_eq!(parse(&input[..h.consumed], mode), whole);
    }
    if mode == Mode::Off {
        assert!(input.is_empty() || whole.is_err());
    }
    // A rejected input stays rejected whatever follows it.
    if let Err(e) = whole {
        let mut longer = input.to_vec();
        longer.extend_from_slice(b"\r\n\r\n");
        assert!(parse(&longer, mode).is_err(), "{e:?}");
    }
}

#[cfg(test)]
mod tests;
