//! Sockets: loopback-only address checks, non-blocking connects from chosen source
//! addresses, an output buffer that remembers partial writes, one-read-per-event
//! input, and small helpers (a fast PRNG, integer formatting) that keep the message
//! path allocation-free.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::FromRawFd;

/// Refuses anything but loopback: every tool here sends traffic to 127.0.0.0/8 (or ::1).
pub fn check_loopback(addr: &SocketAddr) -> crate::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr}: only loopback addresses (127.0.0.0/8, ::1) are allowed"
        ))
    }
}

/// Parses `IP:PORT`, `localhost:PORT` or `http://IP:PORT[/...]` into a loopback address.
pub fn parse_addr(s: &str) -> crate::Result<SocketAddr> {
    let s = s.strip_prefix("http://").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let addr: SocketAddr = if let Some(port) = s.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| format!("bad port in {s}"))?;
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
    } else {
        s.parse().map_err(|_| format!("{s}: expected IP:PORT"))?
    };
    check_loopback(&addr)?;
    Ok(addr)
}

/// The i-th source address of `count` loopback sources: 127.0.0.1, 127.0.0.2, ...
pub fn loopback_source(i: usize) -> Ipv4Addr {
    let n = (i % 16_000_000) as u32 + 1;
    Ipv4Addr::new(127, (n >> 16) as u8, (n >> 8) as u8, n as u8)
}

/// Starts a non-blocking connect to `dst`, bound first to `src` (port chosen at connect
/// time through `IP_BIND_ADDRESS_NO_PORT`, so each source address has its own port
/// space and loopback TIME_WAIT reuse still applies). `linger0` makes close send RST.
pub fn connect(
    dst: SocketAddr,
    src: Option<Ipv4Addr>,
    linger0: bool,
) -> io::Result<mio::net::TcpStream> {
    if src.is_none() && !linger0 {
        let s = mio::net::TcpStream::connect(dst)?;
        let _ = s.set_nodelay(true);
        return Ok(s);
    }
    let family = if dst.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket syscalls on a descriptor we own; it is closed on error.
    unsafe {
        let fd = libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let std_stream = std::net::TcpStream::from_raw_fd(fd); // owns fd from here on
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            &one as *const _ as *const libc::c_void,
            4,
        );
        if linger0 {
            let l = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                &l as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::linger>() as u32,
            );
        }
        if let (Some(src), true) = (src, dst.is_ipv4()) {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                4,
            );
            let sa = sockaddr_in(SocketAddrV4::new(src, 0));
            if libc::bind(
                fd,
                &sa as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let rc = match dst {
            SocketAddr::V4(v4) => {
                let sa = sockaddr_in(v4);
                libc::connect(
                    fd,
                    &sa as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_in>() as u32,
                )
            }
            SocketAddr::V6(_) => {
                drop(std_stream);
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "IPv6 with a source address",
                ));
            }
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINPROGRESS) {
                return Err(e);
            }
        }
        Ok(mio::net::TcpStream::from_std(std_stream))
    }
}

fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Whether a non-blocking connect has completed (call on a writable event).
pub fn connected(s: &mio::net::TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Output waiting for a socket: `buf[pos..]` is unsent. Reused for the connection's life.
#[derive(Default)]
pub struct OutBuf {
    pub buf: Vec<u8>,
    pub pos: usize,
}

impl OutBuf {
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Writes what it can with one `write` (more only if the first was complete and
    /// more remains, which cannot happen); Ok(true) when everything is out.
    pub fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<bool> {
        let mut rounds = 0;
        while self.pos < self.buf.len() && rounds < 16 {
            rounds += 1;
            match w.write(&self.buf[self.pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

/// What one read produced.
pub enum ReadOutcome {
    /// `n` bytes; `more` is false when the read was short (the socket is drained, so
    /// the edge-triggered readiness will fire again for new data).
    Data {
        n: usize,
        more: bool,
    },
    WouldBlock,
    Eof,
    Err(io::Error),
}

pub fn read_once<R: Read>(r: &mut R, scratch: &mut [u8]) -> ReadOutcome {
    loop {
        match r.read(scratch) {
            Ok(0) => return ReadOutcome::Eof,
            Ok(n) => {
                return ReadOutcome::Data {
                    n,
                    more: n == scratch.len(),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return ReadOutcome::Err(e),
        }
    }
}

/// Calls `parse` on the unconsumed input: `data` alone when nothing is stashed (the
/// common case, no copy), else the stash with `data` appended. `parse` returns how many
/// bytes it consumed; the rest is stashed for the next read.
pub fn with_stash<E>(
    stash: &mut Vec<u8>,
    data: &[u8],
    parse: impl FnOnce(&[u8]) -> Result<usize, E>,
) -> Result<(), E> {
    if stash.is_empty() {
        let used = parse(data)?;
        if used < data.len() {
            stash.extend_from_slice(&data[used..]);
        }
    } else {
        stash.extend_from_slice(data);
        let buf = std::mem::take(stash);
        let r = parse(&buf);
        *stash = buf;
        let used = r?;
        stash.drain(..used.min(stash.len()));
    }
    Ok(())
}

/// xorshift64*: masks and WebSocket keys; not cryptographic, fast and allocation-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Rng((t ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Appends the decimal form of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `n` as 16 lowercase hex digits into `dst[..16]`.
pub fn put_hex16(dst: &mut [u8], n: u64) {
    for (i, d) in dst[..16].iter_mut().enumerate() {
        *d = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Reads 16 hex digits.
pub fn get_hex16(src: &[u8]) -> Option<u64> {
    if src.len() < 16 {
        return None;
    }
    let mut n = 0u64;
    for &c in &src[..16] {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        n = (n << 4) | v as u64;
    }
    Some(n)
}

/// Token layout shared by the tools: low 24 bits index, high bits generation, so a
/// stale event for a closed socket never reaches its successor in the same slot.
pub fn token(index: usize, gen: u32) -> mio::Token {
    mio::Token(index | ((gen as usize & 0xff_ffff) << 24))
}
pub fn token_parts(t: mio::Token) -> (usize, u32) {
    (t.0 & 0xff_ffff, ((t.0 >> 24) & 0xff_ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_roundtrip() {
        let mut b = [0u8; 16];
        put_hex16(&mut b, 0x0123_4567_89ab_cdef);
        assert_eq!(&b, b"0123456789abcdef");
        assert_eq!(get_hex16(&b), Some(0x0123_4567_89ab_cdef));
        assert_eq!(get_hex16(b"01234567zz"), None);
    }

    #[test]
    fn decimal() {
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        v.push(b' ');
        push_u64(&mut v, 18_446_744_073_709_551_615);
        assert_eq!(v, b"0 18446744073709551615");
    }

    #[test]
    fn loopback_only() {
        assert!(parse_addr("127.0.0.1:80").is_ok());
        assert!(parse_addr("http://127.0.0.2:8080/x").is_ok());
        assert!(parse_addr("localhost:9").is_ok());
        assert!(parse_addr("10.0.0.1:80").is_err());
        assert_eq!(loopback_source(0), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(loopback_source(255), Ipv4Addr::new(127, 0, 1, 0));
    }

    #[test]
    fn stash() {
        let mut st = Vec::new();
        with_stash::<()>(&mut st, b"abc", |d| Ok(d.len() - 1)).unwrap();
        assert_eq!(st, b"c");
        with_stash::<()>(&mut st, b"de", |d| {
            assert_eq!(d, b"cde");
            Ok(2)
        })
        .unwrap();
        assert_eq!(st, b"e");
    }
}
