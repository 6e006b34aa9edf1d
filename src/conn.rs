//! One client connection: its socket, its [`Session`] and the output buffer it borrows
//! from the worker only while the socket has not taken everything yet.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::buf::Pool;
use crate::id;
use crate::proxy_protocol::{self, Mode, Status};
use crate::session::{Session, State};
use crate::timer::{self, Stamp};
use crate::tls;

#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    /// Low 32 bits of `id_generation`: what timer entries carry.
    pub generation: u32,
    /// The 40-bit generation in the connection id; management lookups compare it.
    pub id_generation: u64,
    pub session: Session,
    /// Output the socket has not taken yet, in order.
    pub out: Option<Vec<u8>>,
    /// Whether WRITABLE interest is registered.
    pub wants_write: bool,
    /// The connection's one timer entry (see `worker::timers`).
    pub timer: Option<timer::Handle>,
    /// The state the timer logic last saw, and since when the connection is in it
    /// (accepted, opened, closing): while open, when the upgrade completed (the
    /// maximum duration counts from it). Times are 8-byte [`Stamp`]s, not 16-byte
    /// `Instant`s: every open connection keeps them.
    pub timed_state: State,
    pub phase_since: Stamp,
    /// Last data frame in either direction or control frame from the client (SPEC §8).
    pub last_active: Stamp,
    /// Server pings (`ping_interval`): when the next is due, and the deadline of the
    /// pong owed for the last one.
    pub ping_at: Option<Stamp>,
    pub pong_due: Option<Stamp>,
    /// Counted in the open-connections gauge.
    pub counted_open: bool,
    /// Reading stopped while output is backed up (or shutdown drains).
    pub read_paused: bool,
    /// The peer's FIN was reported: read to EOF once reading goes on.
    pub read_closed: bool,
    /// Set while a PROXY protocol header is still expected (`server.proxy_protocol`
    /// on), before any other byte of the connection is looked at; `None` otherwise,
    /// so a connection without the stage pays one pointer for it.
    pub proxy: Option<Box<ProxyStage>>,
    /// TLS (`[server.tls]`): boxed, so a plain connection's slab entry stays small.
    /// `None`: bytes go to and from the socket as they are.
    pub tls: Option<Box<tls::Session>>,
}

/// A PROXY protocol header not complete yet: the bytes of it received so far (at
/// most [`proxy_protocol::MAX_V2_BYTES`]).
#[derive(Debug, Default)]
pub struct ProxyStage {
    got: Vec<u8>,
}

/// What the PROXY stage made of newly read bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyStep {
    /// The header is not complete: read more.
    Wait,
    /// The header is complete (and its client address handed to the session); the
    /// connection's own bytes start at `rest` in the input.
    Done { rest: usize },
    /// Not a valid header: close without an answer.
    Refuse(proxy_protocol::Error),
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Everything is written.
    All,
    /// Some bytes wait for writability.
    Pending,
}

impl Conn {
    pub fn new(stream: TcpStream, peer: SocketAddr, generation: u64, id: id::Text) -> Conn {
        let now = Stamp::from(Instant::now());
        Conn {
            stream,
            generation: generation as u32,
            id_generation: generation,
            session: Session::new(id, peer.ip()),
            out: None,
            wants_write: false,
            timer: None,
            timed_state: State::Handshaking,
            phase_since: now,
            last_active: now,
            ping_at: None,
            pong_due: None,
            counted_open: false,
            read_paused: false,
            read_closed: false,
            proxy: None,
            tls: None,
        }
    }

    /// The TCP peer, for debug logs: asked of the socket, not kept (32 bytes per
    /// connection); the client's address is the session's.
    pub fn peer(&self) -> impl std::fmt::Display {
        match self.stream.peer_addr() {
            Ok(a) => a.to_string(),
            Err(_) => "(gone)".to_string(),
        }
    }

    /// The PROXY protocol stage (SPEC §10.2), on the raw socket bytes before
    /// anything else (TLS included) sees them: `input` is what was just read. A header
    /// that arrives whole in one read is parsed in place; only a split one is copied.
    pub fn proxy_stage(&mut self, input: &[u8], mode: Mode) -> ProxyStep {
        let Some(stage) = self.proxy.as_mut() else {
            return ProxyStep::Done { rest: 0 };
        };
        let before = stage.got.len();
        let parsed = if before == 0 {
            proxy_protocol::parse(input, mode)
        } else {
            let room = proxy_protocol::MAX_V2_BYTES.saturating_sub(before);
            stage.got.extend_from_slice(&input[..input.len().min(room)]);
            proxy_protocol::parse(&stage.got, mode)
        };
        match parsed {
            Ok(Status::Partial) => {
                if before == 0 {
                    // A partial header is shorter than the limit (else it is refused).
                    let n = input.len().min(proxy_protocol::MAX_V2_BYTES);
                    stage.got.extend_from_slice(&input[..n]);
                }
                ProxyStep::Wait
            }
            Ok(Status::Done(header)) => {
                self.proxy = None;
                if let Some(a) = header.addresses {
                    self.session.set_proxied_client(a.source.ip());
                }
                // Bytes held before were all header: the rest is in this input.
                ProxyStep::Done {
                    rest: header.consumed.saturating_sub(before).min(input.len()),
                }
            }
            Err(e) => ProxyStep::Refuse(e),
        }
    }

    /// Bytes waiting to be written.
    pub fn pending_out(&self) -> usize {
        self.out.as_ref().map_or(0, |o| o.len())
    }

    /// Writes `data` after any pending output; what the socket does not take now is
    /// copied into the connection's output buffer (borrowed from `pool`).
    pub fn send(&mut self, data: &[u8], pool: &mut Pool) -> io::Result<Flushed> {
        if data.is_empty() && self.tls.as_ref().is_none_or(|t| !t.wants_write()) {
            return Ok(if self.pending_out() == 0 {
                Flushed::All
            } else {
                Flushed::Pending
            });
        }
        if self.tls.is_some() {
            return self.send_tls(data, pool);
        }
        if let Some(out) = self.out.as_mut() {
            out.extend_from_slice(data);
            return self.flush(pool);
        }
        let n = write_some(&mut self.stream, data)?;
        if n == data.len() {
            return Ok(Flushed::All);
        }
        let mut out = pool.take();
        out.extend_from_slice(&data[n..]);
        self.out = Some(out);
        Ok(Flushed::Pending)
    }

    /// TLS: encrypts `data`, writes the records to the socket, and moves what it does
    /// not take into the output buffer (so `pending_out` counts it). An empty `data`
    /// still sends what the handshake queued.
    fn send_tls(&mut self, data: &[u8], pool: &mut Pool) -> io::Result<Flushed> {
        let tls = self.tls.as_mut().expect("a TLS connection");
        if !data.is_empty() {
            tls.encrypt(data);
        }
        if let Some(out) = self.out.as_mut() {
            tls.write_to(out)?;
            return self.flush(pool);
        }
        if tls.write_to(&mut self.stream)? {
            return Ok(Flushed::All);
        }
        let mut out = pool.take();
        tls.write_to(&mut out)?;
        self.out = Some(out);
        Ok(Flushed::Pending)
    }

    /// Writes pending output until done or the socket is full.
    pub fn flush(&mut self, pool: &mut Pool) -> io::Result<Flushed> {
        let Some(out) = self.out.as_mut() else {
            return Ok(Flushed::All);
        };
        let n = write_some(&mut self.stream, out)?;
        out.drain(..n);
        if out.is_empty() {
            pool.give(self.out.take().expect("present"));
            Ok(Flushed::All)
        } else {
            Ok(Flushed::Pending)
        }
    }

    /// Returns every borrowed buffer to the pool.
    pub fn release(&mut self, pool: &mut Pool) {
        self.session.release(pool);
        if let Some(b) = self.out.take() {
            pool.give(b);
        }
    }
}

/// Writes as much of `data` as the socket takes without blocking.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection over a real loopback socket (never read here).
    fn conn() -> (Conn, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (ours, addr) = l.accept().unwrap();
        let mut c = Conn::new(TcpStream::from_std(ours), addr, 1, *b"AAAAAAAAAAAAAAA=");
        c.proxy = Some(Box::default());
        (c, peer)
    }

    /// What an idle upgraded connection costs the worker is its slab entry (this
    /// `Conn`, niche-packed: the slab adds no tag) plus one timer entry (32 bytes,
    /// pinned in `timer.rs`); its client identity is shared (`session::intern`) and
    /// everything else lives in boxes that exist only while needed. Where things live:
    /// - here: socket, generation, id, state and flags, 4 `Stamp`s (phase/open, last
    ///   activity, ping, pong), the timer handle, the output buffer (borrowed from
    ///   the worker's pool only while the socket is behind), PROXY stage and TLS
    ///   (boxed: `None` on a plain connection past its first bytes);
    /// - `Session` (80 bytes): id, state, who (peer address, then the shared identity),
    ///   counters; `Partial` (reader and buffers, only while a message is under way)
    ///   and `Rare` (headers, pending upgrade, close status, authorizer context) are
    ///   boxes that are `None` while idle.
    ///
    /// Measured: 626 B of RSS per idle connection before (a 400-byte entry, a 48-byte
    /// timer entry, a boxed identity and three strings), ~225 B after (issue 13). A
    /// change that grows the entry must say why; mio's socket carries a selector id
    /// in debug builds only (16 bytes instead of 4), hence two bounds.
    #[test]
    fn the_slab_entry_of_an_idle_connection_stays_small() {
        use std::mem::size_of;
        /// The slab's own entry type, as `slab` declares it.
        #[allow(dead_code)]
        enum Entry<T> {
            Vacant(usize),
            Occupied(T),
        }
        let max = if cfg!(debug_assertions) { 200 } else { 184 };
        assert!(
            size_of::<Entry<Conn>>() <= max,
            "slab entry {} bytes (at most {max})",
            size_of::<Entry<Conn>>()
        );
        assert!(
            size_of::<Session>() <= 80,
            "session {}",
            size_of::<Session>()
        );
    }

    #[test]
    fn proxy_stage_finds_the_rest_after_a_header_split_anywhere() {
        let header = b"PROXY TCP4 198.51.100.7 10.0.0.1 51000 443\r\n";
        let input = [&header[..], b"GET /"].concat();
        for cut in 0..=input.len() {
            let (mut c, _peer) = conn();
            let first = c.proxy_stage(&input[..cut], Mode::V1);
            let (second, offset) = if cut >= header.len() {
                (first, 0)
            } else {
                assert_eq!(first, ProxyStep::Wait, "cut {cut}");
                (c.proxy_stage(&input[cut..], Mode::V1), cut)
            };
            assert_eq!(
                second,
                ProxyStep::Done {
                    rest: header.len() - offset
                },
                "cut {cut}"
            );
            assert!(c.proxy.is_none(), "the stage is over");
            assert!(c.session.state() == State::Handshaking);
        }
    }

    #[test]
    fn proxy_stage_refuses_other_bytes_and_holds_the_longest_header() {
        let (mut c, _peer) = conn();
        assert!(matches!(
            c.proxy_stage(b"GET / HTTP/1.1\r\n", Mode::Any),
            ProxyStep::Refuse(_)
        ));
        let (mut c, _peer) = conn();
        let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x0f\xf0".to_vec();
        assert_eq!(c.proxy_stage(&v2, Mode::V2), ProxyStep::Wait);
        v2 = vec![0; 1000];
        // 4080 bytes of TLVs (the most allowed), 1000 at a time.
        for _ in 0..4 {
            assert_eq!(c.proxy_stage(&v2, Mode::V2), ProxyStep::Wait);
        }
        assert!(matches!(
            c.proxy_stage(&v2, Mode::V2),
            ProxyStep::Done { rest: 80 }
        ));
    }
}
