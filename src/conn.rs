//! One client connection: its socket, its [`Session`] and the output buffer it borrows
//! from the worker only while the socket has not taken everything yet.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::Instant;

use mio::net::TcpStream;

use crate::buf::Pool;
use crate::id;
use crate::session::{Session, State};
use crate::timer;
use crate::tls;

#[derive(Debug)]
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
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
    /// (accepted, opened, closing).
    pub timed_state: State,
    pub phase_since: Instant,
    /// Last data frame in either direction or control frame from the client (SPEC §8).
    pub last_active: Instant,
    /// When the upgrade completed (the maximum duration counts from it).
    pub opened_at: Instant,
    /// Server pings (`ping_interval`): when the next is due, and the deadline of the
    /// pong owed for the last one.
    pub ping_at: Option<Instant>,
    pub pong_due: Option<Instant>,
    /// Counted in the open-connections gauge.
    pub counted_open: bool,
    /// Reading stopped while output is backed up (or shutdown drains).
    pub read_paused: bool,
    /// The peer's FIN was reported: read to EOF once reading goes on.
    pub read_closed: bool,
    /// TLS (`[server.tls]`): boxed, so a plain connection's slab entry stays small.
    /// `None`: bytes go to and from the socket as they are.
    pub tls: Option<Box<tls::Session>>,
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
        let now = Instant::now();
        Conn {
            stream,
            peer,
            generation: generation as u32,
            id_generation: generation,
            session: Session::new(id, peer.ip()),
            out: None,
            wants_write: false,
            timer: None,
            timed_state: State::Handshaking,
            phase_since: now,
            last_active: now,
            opened_at: now,
            ping_at: None,
            pong_due: None,
            counted_open: false,
            read_paused: false,
            read_closed: false,
            tls: None,
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
