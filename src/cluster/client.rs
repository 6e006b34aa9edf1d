//! One worker's NATS connection, driven by the worker's own `mio::Poll` (one token,
//! [`crate::token::NATS`]): a non-blocking connect, the `INFO`/`CONNECT`/`PING`
//! handshake, reconnects with exponential backoff and jitter across the listed
//! servers (starting at a random one, so a node's workers spread), subscriptions
//! restored after each reconnect, and request/reply through ONE wildcard inbox
//! subscription (`_INBOX.<random>.*`) whose last token names the waiting request.
//!
//! # API (for every cluster feature: remote calls, groups, broadcast)
//!
//! - [`Client::subscribe`] a subject with a [`Tag`]; messages come back from
//!   [`Client::on_event`] as [`Incoming::Msg`] carrying that tag (the worker
//!   dispatches on it). Subscriptions survive reconnects.
//! - [`Client::publish`] a payload (with an optional reply subject, e.g. to answer a
//!   request).
//! - [`Client::request`] a payload with a [`Waiter`] (what to finish when the answer
//!   comes) and a timeout on the worker's timer wheel (`timer::Kind::ClusterRequest`);
//!   exactly one [`Incoming::Reply`] comes back per accepted request: the reply, "no
//!   responders", or [`Client::expire`]'s time-out.
//!
//! Flow control: output waits in a buffer bounded by `out_limit`; a publish or a
//! request that would pass it, or made while the connection is not up, is refused at
//! once ([`Refused`]) and never queued, so a slow or absent NATS never blocks a worker
//! and never grows its memory. In-flight requests are bounded by [`MAX_REQUESTS`].

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use slab::Slab;

use super::proto::{self, Op};
use crate::timer::{Handle, Kind as TimerKind, Wheel};

/// Requests one worker may have in flight.
pub const MAX_REQUESTS: usize = 4096;
/// A TCP connect plus the NATS handshake must finish within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// First reconnect delay; doubled per failed attempt up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A client `PING` this often; two unanswered ones mean the connection is dead.
const PING_INTERVAL: Duration = Duration::from_secs(2);
/// Reads per readiness event before the socket is re-registered (others get a turn).
const READS_PER_EVENT: usize = 32;
const READ_BYTES: usize = 64 * 1024;

/// What a subscription's messages are for: the worker dispatches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Management calls for this worker's connections (`wsg.{name}.n.{node}.{worker}`).
    Calls,
    /// Node heartbeats (`wsg.{name}.hb`).
    Heartbeat,
    /// Any other feature's subscription (groups, broadcast): its own number.
    Other(u32),
}

/// Who waits for a request's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waiter {
    /// A management connection (slab key and generation) and the owner's node.
    Admin {
        key: usize,
        generation: u32,
        node: u8,
    },
    /// Any other feature's request, by its own number.
    Token(u64),
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// NATS answered that nobody subscribes to the subject.
    NoResponders,
    TimedOut,
}

/// What the connection delivered.
#[derive(Debug)]
pub enum Incoming {
    Msg {
        tag: Tag,
        subject: Vec<u8>,
        reply: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    Reply {
        waiter: Waiter,
        outcome: Outcome,
        /// Since the request was sent.
        elapsed: Duration,
    },
    /// The connection is up (handshake done, subscriptions sent).
    Up,
    /// The connection was lost.
    Down,
}

/// Why a publish or request was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NotConnected,
    /// The output buffer or the in-flight requests are at their bound.
    Full,
    /// Over the server's `max_payload`.
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting to try again.
    Down {
        retry_at: Instant,
    },
    /// TCP connect in progress.
    Connecting {
        since: Instant,
    },
    /// TCP up: waiting for `INFO`, then for the `PONG` after `CONNECT`.
    Handshake {
        since: Instant,
        connect_sent: bool,
    },
    Ready,
}

#[derive(Debug)]
struct Pending {
    waiter: Waiter,
    timer: Handle,
    sent: Instant,
    generation: u32,
    /// Collects every answer until the time-out (see [`Client::request_many`]).
    many: bool,
}

#[derive(Debug)]
struct Sub {
    sid: u64,
    subject: Vec<u8>,
    tag: Tag,
}

/// A worker's NATS connection (see the module documentation).
#[derive(Debug)]
pub struct Client {
    servers: Vec<SocketAddr>,
    next_server: usize,
    name: String,
    token: Token,
    stream: Option<TcpStream>,
    state: State,
    /// Received bytes are `input[..filled]`; the rest is initialized room.
    input: Vec<u8>,
    filled: usize,
    /// Bytes to write are `output[out_at..]`: the written front is dropped only when
    /// all is out or it passes half the buffer, so a slow socket costs no move of
    /// the whole queue per partial write.
    output: Vec<u8>,
    out_at: usize,
    out_limit: usize,
    max_payload: usize,
    subs: Vec<Sub>,
    next_sid: u64,
    /// `_INBOX.<random>.`: a reply subject is this plus `<key>-<generation>`.
    inbox: Vec<u8>,
    requests: Slab<Pending>,
    request_generation: u32,
    /// Slab key of the last request sent (see [`Client::last_request`]).
    last_key: usize,
    backoff: Duration,
    rng: u64,
    pings_out: u32,
    next_ping: Instant,
    connected_since: Option<Instant>,
    ever_connected: bool,
    warned_unreachable: bool,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// Index of the server connected to (or tried last), for log lines.
    current: usize,
    /// Bytes the input and output buffers moved to compact themselves (tests check
    /// that this stays linear in the bytes that went through).
    #[cfg(test)]
    moved: usize,
}

impl Client {
    /// A client for `servers` (at least one), not connected yet: call [`Client::tick`].
    pub fn new(servers: Vec<SocketAddr>, name: &str, token: Token, out_limit: usize) -> Client {
        let mut seed = [0u8; 16];
        let _ = getrandom::fill(&mut seed);
        let rng = u64::from_le_bytes(seed[..8].try_into().expect("8 bytes")) | 1;
        let mut inbox = b"_INBOX.".to_vec();
        for b in &seed[8..] {
            inbox.extend_from_slice(format!("{b:02x}").as_bytes());
        }
        inbox.push(b'.');
        let next_server = (rng as usize >> 7) % servers.len().max(1);
        let mut c = Client {
            servers,
            next_server,
            name: name.to_string(),
            token,
            stream: None,
            state: State::Down {
                retry_at: Instant::now(),
            },
            input: Vec::new(),
            filled: 0,
            output: Vec::new(),
            out_at: 0,
            out_limit,
            max_payload: proto::DEFAULT_MAX_PAYLOAD,
            subs: Vec::new(),
            next_sid: 2,
            inbox,
            requests: Slab::new(),
            request_generation: 0,
            last_key: 0,
            backoff: MIN_BACKOFF,
            rng,
            pings_out: 0,
            next_ping: Instant::now(),
            connected_since: None,
            ever_connected: false,
            warned_unreachable: false,
            reconnects: 0,
            current: 0,
            #[cfg(test)]
            moved: 0,
        };
        let mut wildcard = c.inbox.clone();
        wildcard.push(b'*');
        // sid 1: the inbox (replies are told apart by their subject).
        c.subs.push(Sub {
            sid: 1,
            subject: wildcard,
            tag: Tag::Other(u32::MAX),
        });
        c
    }

    /// Whether the handshake is done and publishing is possible.
    pub fn is_up(&self) -> bool {
        self.state == State::Ready
    }

    /// Since when the current connection is up.
    pub fn connected_since(&self) -> Option<Instant> {
        self.connected_since
    }

    /// The server's `max_payload` (NATS's default until its `INFO` came).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.requests.len()
    }

    /// Subscribes to `subject`; its messages come back with `tag`. Kept across
    /// reconnects. Returns the subscription id for [`Client::unsubscribe`].
    pub fn subscribe(&mut self, subject: &[u8], tag: Tag) -> u64 {
        let sid = self.next_sid;
        self.next_sid += 1;
        if self.handshake_done_or_sent() {
            proto::subscribe(&mut self.output, subject, sid);
        }
        self.subs.push(Sub {
            sid,
            subject: subject.to_vec(),
            tag,
        });
        sid
    }

    pub fn unsubscribe(&mut self, sid: u64) {
        if let Some(i) = self.subs.iter().position(|s| s.sid == sid && sid != 1) {
            self.subs.swap_remove(i);
            if self.handshake_done_or_sent() {
                proto::unsubscribe(&mut self.output, sid);
            }
        }
    }

    fn handshake_done_or_sent(&self) -> bool {
        matches!(
            self.state,
            State::Ready
                | State::Handshake {
                    connect_sent: true,
                    ..
                }
        )
    }

    /// Publishes `payload` on `subject` (with a reply subject, to answer a request or
    /// ask for answers). Refused, never queued, when not connected or full.
    pub fn publish(
        &mut self,
        subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), Refused> {
        self.admit(payload.len())?;
        proto::publish(&mut self.output, subject, reply, payload);
        Ok(())
    }

    fn admit(&self, len: usize) -> Result<(), Refused> {
        if self.state != State::Ready {
            return Err(Refused::NotConnected);
        }
        if len > self.max_payload {
            return Err(Refused::TooLarge);
        }
        if self.output.len() - self.out_at + len > self.out_limit {
            return Err(Refused::Full);
        }
        Ok(())
    }

    /// Sends a request whose one answer (or time-out after `timeout`) comes back as
    /// [`Incoming::Reply`] for `waiter`.
    pub fn request(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        waiter: Waiter,
        timeout: Duration,
        timers: &mut Wheel,
        now: Instant,
    ) -> Result<(), Refused> {
        self.send_request(subject, payload, waiter, timeout, timers, now, false)
    }

    /// Like [`Client::request`], for a subject with several responders (a group
    /// send that every node acknowledges): each answer comes back as an
    /// [`Incoming::Reply`] with [`Outcome::Reply`] as it arrives, and the request ends
    /// with exactly one final [`Outcome::TimedOut`] (or [`Outcome::NoResponders`]
    /// when nobody listens) after `timeout`.
    pub fn request_many(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        waiter: Waiter,
        timeout: Duration,
        timers: &mut Wheel,
        now: Instant,
    ) -> Result<(), Refused> {
        self.send_request(subject, payload, waiter, timeout, timers, now, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn send_request(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        waiter: Waiter,
        timeout: Duration,
        timers: &mut Wheel,
        now: Instant,
        many: bool,
    ) -> Result<(), Refused> {
        self.admit(payload.len())?;
        if self.requests.len() >= MAX_REQUESTS {
            return Err(Refused::Full);
        }
        self.request_generation = self.request_generation.wrapping_add(1);
        let generation = self.request_generation;
        let entry = self.requests.vacant_entry();
        let key = entry.key();
        self.last_key = key;
        let timer = timers.arm(now + timeout, key, generation, TimerKind::ClusterRequest);
        entry.insert(Pending {
            waiter,
            timer,
            sent: now,
            generation,
            many,
        });
        let mut reply = std::mem::take(&mut self.inbox);
        let base = reply.len();
        let mut n = itoa::Buffer::new();
        reply.extend_from_slice(n.format(key).as_bytes());
        reply.push(b'-');
        reply.extend_from_slice(n.format(generation).as_bytes());
        proto::publish(&mut self.output, subject, Some(&reply), payload);
        reply.truncate(base);
        self.inbox = reply;
        Ok(())
    }

    /// The key and generation of the request sent last, for [`Client::cancel`].
    pub fn last_request(&self) -> (usize, u32) {
        (self.last_key, self.request_generation)
    }

    /// Ends a `request_many` before its time-out because its waiter has every answer
    /// it needs: frees its in-flight slot (shared with remote calls), drops later
    /// answers, and no final outcome is delivered. Nothing if it has ended already.
    pub fn cancel(&mut self, key: usize, generation: u32, timers: &mut Wheel) {
        if self
            .requests
            .get(key)
            .is_some_and(|p| p.generation == generation)
        {
            let p = self.requests.remove(key);
            timers.cancel(p.timer);
        }
    }

    /// A request's timer fired: its waiter, if it is still waiting.
    pub fn expire(&mut self, key: usize, generation: u32, now: Instant) -> Option<Incoming> {
        match self.requests.get(key) {
            Some(p) if p.generation == generation => {
                let p = self.requests.remove(key);
                Some(Incoming::Reply {
                    waiter: p.waiter,
                    outcome: Outcome::TimedOut,
                    elapsed: now.saturating_duration_since(p.sent),
                })
            }
            _ => None,
        }
    }

    /// Periodic work (call at least every few hundred ms): connect or reconnect when
    /// due, give up a connect that takes too long, ping a quiet connection and drop
    /// one that stopped answering.
    pub fn tick(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Incoming>) {
        match self.state {
            State::Down { retry_at } if now >= retry_at => self.connect_next(registry, now, out),
            State::Connecting { since } | State::Handshake { since, .. }
                if now.saturating_duration_since(since) >= CONNECT_TIMEOUT =>
            {
                self.fail(registry, now, "connect timed out", out)
            }
            State::Ready if now >= self.next_ping => {
                if self.pings_out >= 2 {
                    return self.fail(registry, now, "no PONG to two PINGs", out);
                }
                self.pings_out += 1;
                proto::ping(&mut self.output);
                self.next_ping = now + PING_INTERVAL;
            }
            _ => {}
        }
    }

    fn connect_next(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Incoming>) {
        if self.servers.is_empty() {
            self.state = State::Down {
                retry_at: now + MAX_BACKOFF,
            };
            return;
        }
        let i = self.next_server % self.servers.len();
        self.next_server = i + 1;
        self.current = i;
        let addr = self.servers[i];
        let res = TcpStream::connect(addr).and_then(|mut s| {
            registry.register(&mut s, self.token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match res {
            Ok(s) => {
                self.stream = Some(s);
                self.state = State::Connecting { since: now };
            }
            Err(e) => {
                log::debug!("nats {addr}: connect failed: {e}");
                self.fail(registry, now, "connect failed", out);
            }
        }
    }

    /// Drops the connection and schedules the next attempt (backoff with jitter).
    fn fail(&mut self, registry: &Registry, now: Instant, why: &str, out: &mut Vec<Incoming>) {
        if let Some(mut s) = self.stream.take() {
            let _ = registry.deregister(&mut s);
        }
        if self.state == State::Ready {
            log::warn!(
                "nats connection to {} lost: {why}",
                self.servers
                    .get(self.current)
                    .map_or(String::new(), |a| a.to_string())
            );
            out.push(Incoming::Down);
        } else if !self.ever_connected && !self.warned_unreachable {
            // Once: a node that never reaches NATS says so (later attempts are quiet).
            self.warned_unreachable = true;
            log::warn!(
                "nats: cannot connect to {}: {why}; retrying across {} server(s)",
                self.servers
                    .get(self.current)
                    .map_or(String::new(), |a| a.to_string()),
                self.servers.len()
            );
        } else {
            log::debug!("nats connect attempt failed: {why}");
        }
        self.connected_since = None;
        self.input = Vec::new();
        self.filled = 0;
        self.output = Vec::new();
        self.out_at = 0;
        self.pings_out = 0;
        // Jitter: 50-100% of the backoff, so workers and nodes do not retry in step.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let ms = self.backoff.as_millis() as u64;
        let delay = Duration::from_millis(ms / 2 + self.rng % (ms / 2 + 1));
        self.state = State::Down {
            retry_at: now + delay,
        };
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// A readiness event on the NATS socket: completes a connect, reads and parses
    /// everything available (answering `PING`s, finishing the handshake, delivering
    /// messages and replies into `out`), and writes what waits.
    pub fn on_event(
        &mut self,
        registry: &Registry,
        timers: &mut Wheel,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) {
        if let State::Connecting { .. } = self.state {
            let Some(s) = self.stream.as_ref() else {
                return;
            };
            match s.take_error() {
                Ok(None) => {}
                Ok(Some(e)) | Err(e) => {
                    log::debug!("nats connect: {e}");
                    return self.fail(registry, now, "connect refused", out);
                }
            }
            match s.peer_addr() {
                Ok(_) => {
                    let _ = s.set_nodelay(true);
                    self.state = State::Handshake {
                        since: now,
                        connect_sent: false,
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => return self.fail(registry, now, "connect failed", out),
            }
        }
        let mut reads = 0;
        loop {
            let Some(s) = self.stream.as_mut() else {
                return;
            };
            if reads == READS_PER_EVENT {
                let _ = registry.reregister(s, self.token, Interest::READABLE | Interest::WRITABLE);
                break;
            }
            reads += 1;
            // Read into initialized spare room: the buffer only grows (to the
            // largest operation plus one read), it is not zeroed per read.
            let filled = self.filled;
            if self.input.len() < filled + READ_BYTES {
                self.input.resize(filled + READ_BYTES, 0);
            }
            match s.read(&mut self.input[filled..]) {
                Ok(0) => return self.fail(registry, now, "closed by the server", out),
                Ok(n) => {
                    self.filled += n;
                    if let Err(e) = self.process(timers, now, out) {
                        return self.fail(registry, now, &e, out);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(registry, now, &e.to_string(), out),
            }
        }
        self.flush(registry, now, out);
    }

    /// Parses every complete operation of the input.
    fn process(
        &mut self,
        timers: &mut Wheel,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) -> Result<(), String> {
        let mut input = std::mem::take(&mut self.input);
        let filled = self.filled;
        let mut at = 0;
        let res = loop {
            match proto::parse(&input[at..filled], self.max_payload) {
                Ok(Some((op, n))) => {
                    at += n;
                    if let Err(e) = self.handle(op, timers, now, out) {
                        break Err(e);
                    }
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        // Only a consumed front is moved away: a message still arriving stays where
        // it is (each byte is moved at most once, not once per read).
        if at > 0 {
            input.copy_within(at..filled, 0);
            self.count_moved(filled - at);
        }
        self.filled = filled - at;
        if self.filled == 0 && input.len() > 4 * READ_BYTES {
            input = Vec::new(); // a large message's room is given back
        }
        self.input = input;
        res
    }

    fn handle(
        &mut self,
        op: Op<'_>,
        timers: &mut Wheel,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) -> Result<(), String> {
        match op {
            Op::Info { max_payload, .. } => {
                if let Some(m) = max_payload {
                    self.max_payload = m.clamp(1024, 64 * 1024 * 1024);
                }
                if let State::Handshake {
                    since,
                    connect_sent: false,
                } = self.state
                {
                    proto::connect(&mut self.output, &self.name);
                    for s in &self.subs {
                        proto::subscribe(&mut self.output, &s.subject, s.sid);
                    }
                    proto::ping(&mut self.output);
                    self.state = State::Handshake {
                        since,
                        connect_sent: true,
                    };
                }
            }
            Op::Ping => proto::pong(&mut self.output),
            Op::Pong => {
                self.pings_out = 0;
                if let State::Handshake {
                    connect_sent: true, ..
                } = self.state
                {
                    self.state = State::Ready;
                    self.connected_since = Some(now);
                    self.next_ping = now + PING_INTERVAL;
                    self.backoff = MIN_BACKOFF;
                    if self.ever_connected {
                        self.reconnects += 1;
                    }
                    self.ever_connected = true;
                    log::info!(
                        "nats connected to {}",
                        self.servers
                            .get(self.current)
                            .map_or(String::new(), |a| a.to_string())
                    );
                    out.push(Incoming::Up);
                }
            }
            Op::Ok => {}
            Op::Err(msg) => {
                let text = String::from_utf8_lossy(&msg[..msg.len().min(200)]).into_owned();
                log::warn!("nats server error: {text}");
                if !matches!(self.state, State::Ready) {
                    return Err(format!("refused: {text}"));
                }
            }
            Op::Msg(m) => {
                if m.sid == 1 {
                    self.on_reply(m, timers, now, out);
                } else if let Some(sub) = self.subs.iter().find(|s| s.sid == m.sid) {
                    out.push(Incoming::Msg {
                        tag: sub.tag,
                        subject: m.subject.to_vec(),
                        reply: m.reply.map(<[u8]>::to_vec),
                        payload: m.payload.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }

    /// A message on the inbox: the answer to the request its subject names.
    fn on_reply(
        &mut self,
        m: proto::Msg<'_>,
        timers: &mut Wheel,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) {
        let Some(name) = m.subject.strip_prefix(&self.inbox[..]) else {
            return;
        };
        let Some((key, generation)) = parse_reply_token(name) else {
            return;
        };
        match self.requests.get(key) {
            Some(p) if p.generation == generation => {
                if p.many && m.status != Some(proto::NO_RESPONDERS) {
                    out.push(Incoming::Reply {
                        waiter: p.waiter,
                        outcome: Outcome::Reply(m.payload.to_vec()),
                        elapsed: now.saturating_duration_since(p.sent),
                    });
                    return;
                }
            }
            _ => return, // late: it timed out already
        }
        let p = self.requests.remove(key);
        timers.cancel(p.timer);
        let outcome = if m.status == Some(proto::NO_RESPONDERS) {
            Outcome::NoResponders
        } else {
            Outcome::Reply(m.payload.to_vec())
        };
        out.push(Incoming::Reply {
            waiter: p.waiter,
            outcome,
            elapsed: now.saturating_duration_since(p.sent),
        });
    }

    /// Whether output waits to be written.
    pub fn wants_flush(&self) -> bool {
        self.output.len() > self.out_at
            && self.stream.is_some()
            && !matches!(self.state, State::Connecting { .. })
    }

    /// Writes what waits until the socket takes no more (a writable event resumes).
    pub fn flush(&mut self, registry: &Registry, now: Instant, out: &mut Vec<Incoming>) {
        if !self.wants_flush() {
            return;
        }
        let Some(mut s) = self.stream.take() else {
            return;
        };
        let res = self.write_output(&mut s);
        self.stream = Some(s);
        if let Err(e) = res {
            self.fail(registry, now, &e, out);
        }
    }

    /// Writes the output to `w` until it takes no more. The written front is
    /// dropped when all is out, or moved away once it passes half the buffer: a
    /// move is then shorter than what was written since the last one (linear).
    fn write_output(&mut self, w: &mut impl Write) -> Result<(), String> {
        let res = loop {
            if self.out_at == self.output.len() {
                break Ok(());
            }
            match w.write(&self.output[self.out_at..]) {
                Ok(0) => break Err("write returned 0".to_string()),
                Ok(n) => self.out_at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e.to_string()),
            }
        };
        if self.out_at == self.output.len() {
            self.output.clear();
            self.out_at = 0;
            if self.output.capacity() > 4 * self.out_limit.max(64 * 1024) {
                self.output = Vec::new();
            }
        } else if self.out_at > self.output.len() / 2 {
            self.count_moved(self.output.len() - self.out_at);
            self.output.drain(..self.out_at);
            self.out_at = 0;
        }
        res
    }

    /// Counts bytes moved by a compaction (tests only).
    #[inline]
    fn count_moved(&mut self, _n: usize) {
        #[cfg(test)]
        {
            self.moved += _n;
        }
    }
}

/// `<key>-<generation>` of a reply subject's last token.
fn parse_reply_token(s: &[u8]) -> Option<(usize, u32)> {
    let dash = s.iter().position(|b| *b == b'-')?;
    let num = |d: &[u8]| -> Option<u64> {
        if d.is_empty() || d.len() > 10 || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0u64, |n, c| n * 10 + u64::from(c - b'0')))
    };
    let key = num(&s[..dash])? as usize;
    let generation = u32::try_from(num(&s[dash + 1..])?).ok()?;
    Some((key, generation))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn reply_tokens_round_trip_and_garbage_is_ignored() {
        assert_eq!(parse_reply_token(b"12-7"), Some((12, 7)));
        assert_eq!(parse_reply_token(b"12-"), None);
        assert_eq!(parse_reply_token(b"x-1"), None);
        assert_eq!(parse_reply_token(b"1-99999999999"), None);
    }

    /// Reads from `s` until the text read contains `needle`; returns all of it.
    fn read_until(s: &mut std::net::TcpStream, needle: &str) -> String {
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !String::from_utf8_lossy(&got).contains(needle) {
            let n = s.read(&mut b).expect("server read");
            assert!(
                n > 0,
                "client closed; got {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// A scripted NATS server: handshake, a message, "no responders" for the
    /// client's request, garbage (the client must reconnect), and a second
    /// handshake in which the subscriptions must come again.
    /// A worker's loop around one client, for the tests with a fake server.
    struct Loop {
        poll: mio::Poll,
        events: mio::Events,
        wheel: Wheel,
    }

    impl Loop {
        fn new() -> Loop {
            Loop {
                poll: mio::Poll::new().unwrap(),
                events: mio::Events::with_capacity(16),
                wheel: Wheel::new(Instant::now()),
            }
        }

        /// One turn as the worker drives the client: wait up to 10 ms, tick, hand
        /// it the events, let `act` send, flush; the turn's time and deliveries.
        fn turn(
            &mut self,
            c: &mut Client,
            act: impl FnOnce(&mut Client, &mut Wheel, Instant),
        ) -> (Instant, Vec<Incoming>) {
            let timeout = Some(Duration::from_millis(10));
            self.poll.poll(&mut self.events, timeout).unwrap();
            let now = Instant::now();
            let mut out = Vec::new();
            c.tick(self.poll.registry(), now, &mut out);
            for _ in self.events.iter() {
                c.on_event(self.poll.registry(), &mut self.wheel, now, &mut out);
            }
            act(c, &mut self.wheel, now);
            c.flush(self.poll.registry(), now, &mut out);
            (now, out)
        }
    }

    fn fake_server(l: std::net::TcpListener, tx: std::sync::mpsc::Sender<String>) {
        let info = "INFO {\"server_id\":\"fake\",\"headers\":true,\"max_payload\":4096}\r\n";
        let (mut s, _) = l.accept().unwrap();
        s.write_all(info.as_bytes()).unwrap();
        tx.send(read_until(&mut s, "PING\r\n")).unwrap();
        s.write_all(b"PONG\r\n").unwrap();
        let text = read_until(&mut s, "\r\nq\r\n");
        let at = text.find("PUB req.x ").unwrap() + "PUB req.x ".len();
        let reply = text[at..].split(' ').next().unwrap().to_string();
        let out = format!(
            "PING\r\nMSG a.b 2 2\r\nhi\r\nHMSG {reply} 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n"
        );
        s.write_all(out.as_bytes()).unwrap();
        read_until(&mut s, "PONG\r\n");
        s.write_all(b"GARBAGE\r\n").unwrap();
        let (mut s2, _) = l.accept().unwrap();
        s2.write_all(info.as_bytes()).unwrap();
        tx.send(read_until(&mut s2, "PING\r\n")).unwrap();
        s2.write_all(b"PONG\r\n").unwrap();
        // Hold the connection until the test is done.
        let _ = read_until(&mut s2, "never");
    }

    #[test]
    fn handshake_messages_no_responders_and_resubscribe_after_garbage() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || fake_server(l, tx));
        let mut lp = Loop::new();
        let mut c = Client::new(vec![addr], "t", Token(9), 1 << 20);
        c.subscribe(b"a.b", Tag::Other(1));
        let mut got: Vec<Incoming> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut requested = false;
        let mut ups = 0;
        while ups < 2 {
            assert!(Instant::now() < deadline, "timed out; got {got:?}");
            let (_, out) = lp.turn(&mut c, |c, wheel, now| {
                if c.is_up() && !requested {
                    requested = true;
                    assert_eq!(c.max_payload(), 4096);
                    let w = Waiter::Token(7);
                    let r = c.request(b"req.x", b"q", w, Duration::from_secs(5), wheel, now);
                    assert_eq!(r, Ok(()));
                    assert_eq!(c.publish(b"x", None, &[0; 5000]), Err(Refused::TooLarge));
                }
            });
            ups += out.iter().filter(|i| matches!(i, Incoming::Up)).count();
            got.extend(out);
        }
        let first = rx.recv().unwrap();
        let second = rx.recv().unwrap();
        for hello in [&first, &second] {
            assert!(hello.contains("\"no_responders\":true"), "{hello}");
            assert!(hello.contains("SUB a.b 2\r\n"), "{hello}");
            assert!(hello.contains("SUB _INBOX."), "{hello}");
        }
        let text = format!("{got:?}");
        assert!(
            matches!(
                &got[..],
                [
                    Incoming::Up,
                    Incoming::Msg {
                        tag: Tag::Other(1),
                        ..
                    },
                    Incoming::Reply {
                        waiter: Waiter::Token(7),
                        outcome: Outcome::NoResponders,
                        ..
                    },
                    Incoming::Down,
                    Incoming::Up
                ]
            ),
            "{text}"
        );
        assert_eq!(c.reconnects, 1);
        assert_eq!(c.in_flight(), 0);
        assert!(
            lp.wheel.is_empty(),
            "the answered request's timer is cancelled"
        );
    }

    /// `request_many`: every answer as it comes, then one final time-out from the
    /// worker's wheel; a late answer after that is dropped.
    #[test]
    fn request_many_delivers_each_answer_then_one_time_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"INFO {\"max_payload\":4096}\r\n").unwrap();
            read_until(&mut s, "PING\r\n");
            s.write_all(b"PONG\r\n").unwrap();
            let text = read_until(&mut s, "\r\ngo\r\n");
            let at = text.find("PUB all ").unwrap() + "PUB all ".len();
            let reply = text[at..].split(' ').next().unwrap().to_string();
            let out = format!("MSG {reply} 1 2\r\nn1\r\nMSG {reply} 1 2\r\nn2\r\n");
            s.write_all(out.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(900));
            s.write_all(format!("MSG {reply} 1 4\r\nlate\r\n").as_bytes())
                .unwrap();
            let _ = read_until(&mut s, "never");
        });
        let mut lp = Loop::new();
        let mut c = Client::new(vec![addr], "t", Token(9), 1 << 20);
        let mut got = Vec::new();
        let mut expired = Vec::new();
        let start = Instant::now();
        let mut requested = false;
        while start.elapsed() < Duration::from_millis(1300) {
            let (now, mut out) = lp.turn(&mut c, |c, wheel, now| {
                if c.is_up() && !requested {
                    requested = true;
                    let t = Duration::from_millis(500);
                    let w = Waiter::Token(3);
                    assert_eq!(c.request_many(b"all", b"go", w, t, wheel, now), Ok(()));
                }
            });
            lp.wheel.expire(now, &mut expired);
            for e in expired.drain(..) {
                assert_eq!(e.kind, TimerKind::ClusterRequest);
                out.extend(c.expire(e.key, e.generation, now));
            }
            got.extend(out.into_iter().filter_map(|i| match i {
                Incoming::Reply {
                    waiter, outcome, ..
                } => Some((waiter, outcome)),
                _ => None,
            }));
        }
        let w = Waiter::Token(3);
        assert_eq!(
            got,
            vec![
                (w, Outcome::Reply(b"n1".to_vec())),
                (w, Outcome::Reply(b"n2".to_vec())),
                (w, Outcome::TimedOut),
            ]
        );
        assert_eq!(c.in_flight(), 0);
    }

    /// `cancel` ends a `request_many` early: its slot and timer are freed, a second
    /// cancel or a stale generation does nothing.
    #[test]
    fn cancel_frees_a_request_many() {
        let mut wheel = Wheel::new(Instant::now());
        let mut c = Client::new(vec!["127.0.0.1:1".parse().unwrap()], "t", Token(1), 1 << 20);
        c.state = State::Ready;
        let (t, now) = (Duration::from_secs(1), Instant::now());
        let w = Waiter::Token(1);
        c.request_many(b"all", b"go", w, t, &mut wheel, now)
            .unwrap();
        let first = c.last_request();
        c.request_many(b"all", b"go", w, t, &mut wheel, now)
            .unwrap();
        let second = c.last_request();
        assert_ne!(first, second);
        assert_eq!(c.in_flight(), 2);
        c.cancel(first.0, first.1 + 7, &mut wheel);
        assert_eq!(c.in_flight(), 2, "a stale generation cancels nothing");
        c.cancel(first.0, first.1, &mut wheel);
        c.cancel(first.0, first.1, &mut wheel);
        assert_eq!(c.in_flight(), 1);
        c.cancel(second.0, second.1, &mut wheel);
        assert_eq!(c.in_flight(), 0);
        assert!(wheel.is_empty(), "the timers are cancelled");
    }

    proptest::proptest! {
        /// Hostile server bytes, in any split, never panic the client and never
        /// leave more than one operation's worth of input held: an operation is
        /// taken, or the bytes are an error (then the connection is dropped).
        #[test]
        fn hostile_server_bytes_are_bounded(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200), 0..8),
            ops in proptest::collection::vec(0usize..6, 0..8),
        ) {
            let mut c = Client::new(vec!["127.0.0.1:1".parse().unwrap()], "t", Token(1), 1024);
            c.state = State::Ready;
            c.max_payload = 1024;
            let mut wheel = Wheel::new(Instant::now());
            let mut out = Vec::new();
            let valid = [
                &b"PING\r\n"[..], b"MSG a 2 3\r\nabc\r\n", b"+OK\r\n",
                b"HMSG _INBOX.x.1-1 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n",
                b"INFO {\"max_payload\":2048}\r\n", b"-ERR 'x'\r\n",
            ];
            let mut stream: Vec<u8> = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                if let Some(o) = ops.get(i) {
                    stream.extend_from_slice(valid[*o]);
                }
                stream.extend_from_slice(chunk);
            }
            for piece in stream.chunks(37) {
                c.input.resize(c.filled + piece.len(), 0);
                c.input[c.filled..c.filled + piece.len()].copy_from_slice(piece);
                c.filled += piece.len();
                if c.process(&mut wheel, Instant::now(), &mut out).is_err() {
                    break;
                }
                proptest::prop_assert!(c.filled <= proto::MAX_CONTROL_LINE + c.max_payload + 2);
            }
        }
    }

    /// A writer that takes at most `piece` bytes per call, then would block until
    /// the next call of the test (a slow NATS server's socket).
    struct Trickle {
        piece: usize,
        budget: usize,
        got: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.budget == 0 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.piece).min(self.budget);
            self.budget -= n;
            self.got += n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A 4 MiB message arriving in 64 KiB reads is parsed without moving the
    /// pending bytes on every read: the bytes moved stay within the bytes received
    /// (they were quadratic: the whole pending message was copied down per read).
    #[test]
    fn a_large_message_read_in_pieces_is_not_copied_per_read() {
        let mut c = Client::new(vec!["127.0.0.1:1".parse().unwrap()], "t", Token(1), 1024);
        c.state = State::Ready;
        c.max_payload = 8 << 20;
        c.subscribe(b"big", Tag::Other(7));
        let sid = c.subs.last().unwrap().sid;
        let size = 4 << 20;
        let mut stream = format!("PING\r\nMSG big {sid} {size}\r\n").into_bytes();
        stream.extend(std::iter::repeat_n(b'x', size));
        stream.extend_from_slice(b"\r\n");
        let mut wheel = Wheel::new(Instant::now());
        let mut out = Vec::new();
        for piece in stream.chunks(READ_BYTES) {
            let filled = c.filled;
            if c.input.len() < filled + piece.len() {
                c.input.resize(filled + piece.len(), 0);
            }
            c.input[filled..filled + piece.len()].copy_from_slice(piece);
            c.filled += piece.len();
            c.process(&mut wheel, Instant::now(), &mut out).unwrap();
        }
        assert_eq!(c.filled, 0);
        assert!(
            matches!(&out[..], [Incoming::Msg { payload, .. }] if payload.len() == size),
            "the message is delivered once, whole"
        );
        assert!(
            c.moved <= stream.len(),
            "bytes moved {} for {} received: not linear",
            c.moved,
            stream.len()
        );
    }

    /// 8 MiB of output written 4 KiB per flush is not moved down after each
    /// partial write (that was quadratic: gigabytes moved for 8 MiB sent).
    #[test]
    fn a_large_output_written_in_pieces_is_not_moved_per_write() {
        let mut c = Client::new(
            vec!["127.0.0.1:1".parse().unwrap()],
            "t",
            Token(1),
            16 << 20,
        );
        let size = 8 << 20;
        c.output = (0..size).map(|i| i as u8).collect();
        let mut w = Trickle {
            piece: 4096,
            budget: 0,
            got: 0,
        };
        let mut flushes = 0;
        while w.got < size {
            flushes += 1;
            assert!(flushes <= size / 4096 + 1, "no progress");
            w.budget = 4096;
            c.write_output(&mut w).unwrap();
            // What is still queued is the rest of the bytes, in order.
            if w.got < size && w.got % (1 << 20) == 0 {
                assert_eq!(c.output[c.out_at], w.got as u8);
            }
        }
        assert!(!c.wants_flush());
        assert!(
            c.moved <= size,
            "bytes moved {} for {size} written: not linear",
            c.moved
        );
    }

    #[test]
    fn nothing_is_queued_while_down() {
        let mut c = Client::new(vec!["127.0.0.1:1".parse().unwrap()], "t", Token(1), 1024);
        assert_eq!(c.publish(b"a", None, b"x"), Err(Refused::NotConnected));
        let mut wheel = Wheel::new(Instant::now());
        let w = Waiter::Token(1);
        let r = c.request(
            b"a",
            b"x",
            w,
            Duration::from_secs(1),
            &mut wheel,
            Instant::now(),
        );
        assert_eq!(r, Err(Refused::NotConnected));
        assert!(wheel.is_empty());
        assert!(c.inbox.starts_with(b"_INBOX.") && c.inbox.ends_with(b"."));
    }
}
