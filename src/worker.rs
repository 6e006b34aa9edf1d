//! One worker: a `mio::Poll` loop on its own core with its own `SO_REUSEPORT`
//! listeners, a slab of connections, and every scratch buffer the message path needs.
//! Nothing here is shared with other workers; nothing on the message path locks.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::buf::Pool;
use crate::config::Config;
use crate::conn::{Conn, Flushed, State};
use crate::handshake;
use crate::id::{ConnectionId, Sequence};
use crate::management;
use crate::message::{self, Event, Kind, Payload};
use crate::route::Selector;
use crate::timer::{self, Wheel};
use crate::token::{self, Kind as TokenKind};

/// Room before the read area of the read buffer, so a stashed partial input (at most a
/// request head) can be put back in front of newly read bytes without moving them.
const STASH_BYTES: usize = handshake::MAX_HEADER_BYTES + 1024;
/// Bytes read per `read` call.
const READ_BYTES: usize = 64 * 1024;
/// How long we wait for the client's close frame after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Idle buffers a worker keeps for reuse.
const POOL_KEEP: usize = 1024;

const TIMER_HANDSHAKE: u8 = 0;
const TIMER_LINGER: u8 = 1;

/// What a worker needs to start: its index, its listeners and the shared (read-only)
/// configuration.
pub struct Setup {
    pub index: u8,
    pub workers: usize,
    pub epoch: u32,
    pub config: Arc<Config>,
    pub listener: std::net::TcpListener,
    pub management: std::net::TcpListener,
    pub poll: Poll,
    pub shutdown: Arc<AtomicBool>,
}

/// Everything the message path touches besides the connection itself.
struct Shared {
    config: Arc<Config>,
    pool: Pool,
    /// Output for the connection being served, written in one go at the end.
    wbuf: Vec<u8>,
    /// A rendered reply too large for one frame, before fragmentation.
    scratch: Vec<u8>,
    selector: Selector,
    seq: Sequence,
    timers: Wheel,
    limits: message::Limits,
}

pub struct Worker {
    index: u8,
    workers: usize,
    epoch: u32,
    poll: Poll,
    listener: TcpListener,
    management: TcpListener,
    conns: Slab<Conn>,
    admin: Slab<management::Conn>,
    rbuf: Vec<u8>,
    next_generation: u32,
    shutdown: Arc<AtomicBool>,
    shared: Shared,
}

/// Handle another thread uses to wake a worker (shutdown, later cross-worker mail).
pub fn waker(poll: &Poll) -> io::Result<Arc<Waker>> {
    Ok(Arc::new(Waker::new(poll.registry(), token::WAKER)?))
}

impl Worker {
    pub fn new(s: Setup) -> io::Result<Worker> {
        let mut listener = TcpListener::from_std(s.listener);
        let mut management = TcpListener::from_std(s.management);
        s.poll.registry().register(&mut listener, token::LISTENER, Interest::READABLE)?;
        s.poll.registry().register(&mut management, token::MANAGEMENT_LISTENER, Interest::READABLE)?;
        let l = &s.config.limits;
        let limits = message::Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_message_bytes: l.max_message_bytes,
            allow_binary: l.allow_binary,
        };
        Ok(Worker {
            index: s.index,
            workers: s.workers,
            epoch: s.epoch,
            poll: s.poll,
            listener,
            management,
            conns: Slab::with_capacity(1024),
            admin: Slab::new(),
            rbuf: vec![0; STASH_BYTES + READ_BYTES],
            next_generation: 0,
            shutdown: s.shutdown,
            shared: Shared {
                config: s.config,
                pool: Pool::new(POOL_KEEP),
                wbuf: Vec::with_capacity(READ_BYTES),
                scratch: Vec::new(),
                selector: Selector::new(),
                seq: Sequence::new(s.index, s.epoch),
                timers: Wheel::new(Instant::now()),
                limits,
            },
        })
    }

    /// Runs until shutdown is requested.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut expired = Vec::new();
        while !self.shutdown.load(Ordering::Acquire) {
            let timeout = self.shared.timers.poll_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match token::decode(ev.token()) {
                    TokenKind::Listener => self.accept_clients(),
                    TokenKind::ManagementListener => self.accept_admin(),
                    TokenKind::Waker => {}
                    TokenKind::Client(key) => {
                        if ev.is_writable() {
                            self.on_writable(key);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key);
                        }
                    }
                    TokenKind::Management(key) => {
                        let workers = self.workers;
                        if let Some(c) = self.admin.get_mut(key) {
                            if c.on_event(workers) {
                                let mut c = self.admin.remove(key);
                                let _ = self.poll.registry().deregister(&mut c.stream);
                            }
                        }
                    }
                }
            }
            if !self.shared.timers.is_empty() {
                self.shared.timers.expire(Instant::now(), &mut expired);
                for e in expired.drain(..) {
                    self.on_timer(e);
                }
            }
        }
        Ok(())
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if let Err(e) = self.add_client(stream, peer) {
                        log::warn!("worker {}: cannot register a connection from {peer}: {e}", self.index);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log and let the next readiness retry.
                    log::warn!("worker {}: accept failed: {e}", self.index);
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, mut stream: TcpStream, peer: SocketAddr) -> io::Result<()> {
        stream.set_nodelay(true)?;
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= 1 << 24 {
            return Err(io::Error::other("slab slot does not fit a connection id"));
        }
        self.next_generation = (self.next_generation + 1) & 0xff_ffff;
        let generation = self.next_generation;
        let id = ConnectionId { worker: self.index, slot: key as u32, generation, epoch: self.epoch }.encode();
        self.poll.registry().register(&mut stream, token::client(key), Interest::READABLE)?;
        entry.insert(Conn::new(stream, peer, generation, id));
        let at = Instant::now() + self.shared.config.server.handshake_timeout;
        self.shared.timers.arm(at, key, generation, TIMER_HANDSHAKE);
        Ok(())
    }

    fn accept_admin(&mut self) {
        loop {
            match self.management.accept() {
                Ok((mut stream, _)) => {
                    let entry = self.admin.vacant_entry();
                    let tok = token::management(entry.key());
                    if self.poll.registry().register(&mut stream, tok, Interest::READABLE).is_ok() {
                        entry.insert(management::Conn::new(stream));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::warn!("worker {}: management accept failed: {e}", self.index);
                    return;
                }
            }
        }
    }

    /// Reads until the socket is drained (a short read means it was), processing
    /// every complete frame in place, then writes all replies in one go.
    fn on_readable(&mut self, key: usize) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let mut gone = false;
        while let Some(conn) = self.conns.get_mut(key) {
            if conn.state == State::Done {
                break;
            }
            let read = match conn.stream.read(&mut rbuf[STASH_BYTES..]) {
                Ok(0) => {
                    gone = true;
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    gone = true;
                    break;
                }
            };
            let mut start = STASH_BYTES;
            if let Some(stash) = conn.inbuf.take() {
                start -= stash.len();
                rbuf[start..STASH_BYTES].copy_from_slice(&stash);
                self.shared.pool.give(stash);
            }
            process(conn, &mut rbuf[start..STASH_BYTES + read], &mut self.shared);
            if read < READ_BYTES {
                break;
            }
        }
        self.rbuf = rbuf;
        if gone {
            // EOF or reset: whatever was pending cannot be delivered.
            self.close(key);
            return;
        }
        self.finish_output(key);
    }

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        match conn.flush(&mut self.shared.pool) {
            Ok(Flushed::All) => {
                if conn.state == State::Done {
                    self.close(key);
                } else if conn.wants_write {
                    conn.wants_write = false;
                    let _ = self.poll.registry().reregister(&mut conn.stream, token::client(key), Interest::READABLE);
                }
            }
            Ok(Flushed::Pending) => {}
            Err(_) => self.close(key),
        }
    }

    /// Sends what the message path wrote into `wbuf`, and keeps write interest and the
    /// connection's life in step with what is still pending.
    fn finish_output(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let res = conn.send(&self.shared.wbuf, &mut self.shared.pool);
        self.shared.wbuf.clear();
        match res {
            Ok(Flushed::All) if conn.state == State::Done => self.close(key),
            Ok(Flushed::All) => {}
            Ok(Flushed::Pending) => {
                if !conn.wants_write {
                    conn.wants_write = true;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().reregister(&mut conn.stream, token::client(key), interest).is_err() {
                        self.close(key);
                    }
                }
            }
            Err(_) => self.close(key),
        }
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.state == State::Closing {
                let generation = conn.generation;
                self.shared.timers.arm(Instant::now() + CLOSE_LINGER, key, generation, TIMER_LINGER);
            }
        }
    }

    fn on_timer(&mut self, e: timer::Entry) {
        let Some(conn) = self.conns.get(e.key) else { return };
        if conn.generation != e.generation {
            return;
        }
        let expired = match e.kind {
            TIMER_HANDSHAKE => conn.state == State::Handshaking,
            TIMER_LINGER => conn.state == State::Closing || conn.state == State::Done,
            _ => false,
        };
        if expired {
            log::debug!("worker {}: {} timed out in state {:?}", self.index, conn.peer, conn.state);
            self.close(e.key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            conn.release(&mut self.shared.pool);
        }
    }
}

/// Processes newly received bytes of one connection. Replies go to `sh.wbuf`; bytes
/// that cannot be used yet are stashed in `conn.inbuf`.
fn process(conn: &mut Conn, input: &mut [u8], sh: &mut Shared) {
    let mut pos = 0;
    if conn.state == State::Handshaking {
        match handshake::parse(input, &sh.config.api.stage) {
            Ok(None) => {
                stash(conn, input, &mut sh.pool);
                return;
            }
            Err(rejection) => {
                log::debug!("{}: handshake rejected with {}", conn.peer, rejection.status());
                rejection.write_response(&mut sh.wbuf);
                conn.state = State::Done;
                return;
            }
            Ok(Some(up)) => {
                handshake::write_accept(&mut sh.wbuf, &up.accept, None);
                pos = up.head_len;
                conn.state = State::Open;
            }
        }
    }
    while pos < input.len() && matches!(conn.state, State::Open | State::Closing) {
        let res = conn.reader.read(&mut input[pos..], &mut conn.asm, &mut sh.pool, &sh.limits);
        let base = pos;
        match res {
            Ok((n, None)) => {
                pos += n;
                stash(conn, &input[pos..], &mut sh.pool);
                return;
            }
            Ok((n, Some(ev))) => {
                pos += n;
                if conn.state == State::Closing {
                    // Waiting for the client's close: everything else is dropped.
                    if matches!(ev, Event::Close { .. }) {
                        conn.state = State::Done;
                    }
                    release_message(conn, &ev, &mut sh.pool);
                    continue;
                }
                on_event(conn, &input[base..pos], ev, sh);
            }
            Err(e) => {
                if conn.state == State::Open {
                    log::debug!("{}: closing with {}: {}", conn.peer, e.close_code(), e.reason());
                    crate::frame::write_close(&mut sh.wbuf, Some(e.close_code()), e.reason());
                    conn.state = State::Closing;
                } else {
                    conn.state = State::Done;
                }
                return;
            }
        }
    }
}

fn release_message(conn: &mut Conn, ev: &Event, pool: &mut Pool) {
    if let Event::Message { payload: Payload::Assembled, .. } = ev {
        if let Some(b) = conn.asm.take() {
            pool.give(b);
        }
    }
}

fn stash(conn: &mut Conn, rest: &[u8], pool: &mut Pool) {
    if !rest.is_empty() {
        let mut b = pool.take();
        b.extend_from_slice(rest);
        conn.inbuf = Some(b);
    }
}

/// One event of an open connection; `frame` is the input the event's ranges index.
fn on_event(conn: &mut Conn, frame: &[u8], ev: Event, sh: &mut Shared) {
    match ev {
        Event::Message { kind, payload: Payload::Input(r) } => on_message(conn, kind, &frame[r], sh),
        Event::Message { kind, payload: Payload::Assembled } => {
            let msg = conn.asm.take().unwrap_or_default();
            on_message(conn, kind, &msg, sh);
            sh.pool.give(msg);
        }
        Event::Ping(r) => crate::frame::write_message(&mut sh.wbuf, crate::frame::OpCode::Pong, &frame[r], 125),
        Event::Pong(_) => {}
        Event::Close { code, reason } => {
            let reason = std::str::from_utf8(&frame[reason]).unwrap_or("");
            crate::frame::write_close(&mut sh.wbuf, code, reason);
            conn.state = State::Done;
        }
    }
}

/// Routes one data message and answers it.
fn on_message(conn: &mut Conn, kind: Kind, body: &[u8], sh: &mut Shared) {
    let config = &sh.config;
    let route = match kind {
        Kind::Text => sh.selector.select(&config.table, body),
        Kind::Binary => config.default_route,
    };
    let request_id = sh.seq.next_id();
    let Some(route) = route else {
        crate::reply::error_frame(&mut sh.wbuf, "Forbidden", &conn.id, &request_id);
        return;
    };
    let message_id = sh.seq.next_id();
    crate::reply::mock_route(
        &mut sh.wbuf,
        &mut sh.scratch,
        config,
        route,
        kind,
        body,
        &crate::reply::Ids { connection: &conn.id, request: &request_id, message: &message_id },
    );
}
