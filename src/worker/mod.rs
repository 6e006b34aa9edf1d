//! One worker: a `mio::Poll` loop on its own core with its own `SO_REUSEPORT`
//! listeners, a slab of connections, and every scratch buffer the message path needs.
//! Nothing here is shared with other workers; nothing on the message path locks.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::close;
use crate::config::Config;
use crate::conn::{Conn, Flushed, ProxyStep};
use crate::handshake;
use crate::id;
use crate::mailbox::Mailboxes;
use crate::management;
use crate::metrics::{self, Metrics};
use crate::session::{self, Scratch, State};
use crate::timer::{self, Kind as TimerKind, Wheel};
use crate::tls;
use crate::token::{self, Kind as TokenKind};
use crate::upstream;

/// Room before the read area of the read buffer, so a stashed partial input (at most a
/// request head) can be put back in front of newly read bytes without moving them.
const STASH_BYTES: usize = handshake::MAX_HEADER_BYTES + 1024;
/// Bytes read per `read` call.
const READ_BYTES: usize = 64 * 1024;
/// At shutdown, how long close handshakes, then `$disconnect` calls, may take.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);
/// Idle buffers a worker keeps for reuse.
const POOL_KEEP: usize = 1024;
/// Replies assembled in one read loop are handed to the connection once they reach
/// this size, so the outbound limit sees them before the next read.
const FLUSH_BYTES: usize = 64 * 1024;
/// Times one readable event may resume a paused client before others get a turn.
const RESUMES_PER_EVENT: usize = 16;

mod admin;
mod calls;
mod cluster;
mod cluster_groups;
mod groups;
mod timers;

/// The steps of a graceful shutdown (SPEC §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainPhase {
    /// In-flight integrations finish (up to `drain_timeout`).
    Calls,
    /// Every client was sent 1001; close handshakes finish (up to the close linger).
    Closes,
    /// The rest were dropped; their `$disconnect` calls finish (up to the linger).
    Disconnects,
}

/// What a worker needs to start: its index, its listeners and the shared (read-only)
/// configuration.
pub struct Setup {
    pub index: u8,
    pub workers: usize,
    /// Encodes this node's connection ids (SPEC §6).
    pub ids: id::Codec,
    pub config: Arc<Config>,
    pub listener: std::net::TcpListener,
    pub management: std::net::TcpListener,
    pub poll: Poll,
    pub shutdown: Arc<AtomicBool>,
    pub mail: Arc<Mailboxes>,
    pub metrics: Arc<Metrics>,
    /// SIGHUPs received so far (the runtime counts them and wakes every worker).
    pub hangups: Arc<AtomicU64>,
    /// What SIGHUP re-reads (the TLS pairs), published by the runtime.
    pub reload: Arc<tls::Reload>,
    /// With `[cluster]`: the node's NATS state, shared by its workers (SPEC §15).
    pub cluster: Option<Arc<crate::cluster::Shared>>,
}

pub struct Worker {
    index: u8,
    workers: usize,
    ids: id::Codec,
    poll: Poll,
    listener: TcpListener,
    management: TcpListener,
    conns: Slab<Conn>,
    admin: Slab<management::Conn>,
    rbuf: Vec<u8>,
    generations: id::Generations,
    shutdown: Arc<AtomicBool>,
    /// Set once shutdown began: when the last connection is gone (or at this instant)
    /// the worker returns.
    drain_deadline: Option<Instant>,
    /// Where the shutdown drain is.
    drain_phase: DrainPhase,
    /// This worker has no call in flight any more (counted in `mail.draining`).
    drained_calls: bool,
    /// The time of the current loop turn (one clock read per wakeup).
    now: Instant,
    /// A monotonic instant and the wall-clock ms it was read with: wall-clock times
    /// (`requestTime`, `lastActiveAt`) are derived from monotonic ones through it, so
    /// they agree with each other to the ms (see `wall_ms`).
    clock_anchor: (Instant, Duration),
    /// Whether accepted sockets inherit the listener's TCP_NODELAY (checked once).
    nodelay_inherited: Option<bool>,
    timers: Wheel,
    shared: Scratch,
    /// Backend calls in flight.
    calls: Slab<calls::Call>,
    call_generation: u32,
    /// Connections to backends, and their pools (one per backend address and TLS
    /// identity, see `build_pools`).
    upstreams: Slab<upstream::Conn>,
    upstream_generation: u32,
    pools: Vec<upstream::Pool>,
    /// Upstream connections with requests queued this turn (written at its end).
    upstream_flush: Vec<usize>,
    /// Per pool: the connect timeout of its integrations.
    connect_timeout: Vec<Duration>,
    /// Per integration: its pool, for HTTP integrations.
    pool_of: Vec<Option<usize>>,
    admin_generation: u32,
    /// Rate-limits the log lines of refused management requests.
    admin_refusals: management::RefusalLog,
    mail: Arc<Mailboxes>,
    metrics: Arc<Metrics>,
    /// Clients whose reading may go on now that a call of theirs finished; resumed at
    /// the end of the loop turn (a call can finish while a client is being read).
    resumes: Vec<usize>,
    /// SIGHUPs received, and how many this worker has acted on (access-log reopen).
    hangups: Arc<AtomicU64>,
    hangups_seen: u64,
    /// TLS configurations new connections get (replaced by `on_reload`).
    tls: tls::Configs,
    reload: Arc<tls::Reload>,
    /// The reload generation this worker has applied.
    reload_seen: u64,
    /// TLS clients whose input waits decrypted inside rustls, not in the socket (so
    /// no readiness event would come): read again at the end of this loop turn.
    read_again: Vec<usize>,
    /// Group memberships of this worker's connections (SPEC §15).
    group: groups::Local,
    /// With `[cluster]`: this worker's NATS connection and cluster state (SPEC §15).
    cluster: Option<Box<crate::cluster::Cluster>>,
    /// What the NATS connection delivered, handled after it (reused).
    nats_incoming: Vec<crate::cluster::client::Incoming>,
}

/// Handle another thread uses to wake a worker (shutdown, later cross-worker mail).
pub fn waker(poll: &Poll) -> io::Result<Arc<Waker>> {
    Ok(Arc::new(Waker::new(poll.registry(), token::WAKER)?))
}

impl Worker {
    pub fn new(s: Setup) -> io::Result<Worker> {
        let mut listener = TcpListener::from_std(s.listener);
        let mut management = TcpListener::from_std(s.management);
        s.poll
            .registry()
            .register(&mut listener, token::LISTENER, Interest::READABLE)?;
        s.poll.registry().register(
            &mut management,
            token::MANAGEMENT_LISTENER,
            Interest::READABLE,
        )?;
        let (pools, connect_timeout, pool_of) = build_pools(&s.config);
        let listen_port = listener.local_addr()?.port();
        let metrics = s.metrics;
        let access_log = match &s.config.access_log {
            Some(settings) => Some(crate::access_log::Writer::open(settings).map_err(|e| {
                let e = crate::config::Error {
                    file: s.config.path.clone(),
                    key: "access_log.path".into(),
                    problem: format!("cannot open {}: {e}", settings.path),
                };
                io::Error::other(e.to_string())
            })?),
            None => None,
        };
        let hangups_seen = s.hangups.load(Ordering::Acquire);
        let reload_seen = s.reload.generation();
        let cluster = match (&s.config.cluster, s.cluster) {
            (Some(settings), Some(shared)) => Some(Box::new(crate::cluster::Cluster::new(
                settings.clone(),
                shared,
                s.index,
            ))),
            _ => None,
        };
        Ok(Worker {
            cluster,
            nats_incoming: Vec::new(),
            hangups: s.hangups,
            hangups_seen,
            tls: s.reload.configs(),
            reload: s.reload,
            reload_seen,
            read_again: Vec::new(),
            group: groups::Local::default(),
            calls: Slab::new(),
            call_generation: 0,
            admin_generation: 0,
            admin_refusals: management::RefusalLog::default(),
            mail: s.mail,
            metrics: metrics.clone(),
            resumes: Vec::new(),
            upstreams: Slab::new(),
            upstream_generation: 0,
            upstream_flush: Vec::new(),
            pools,
            connect_timeout,
            pool_of,
            index: s.index,
            workers: s.workers,
            ids: s.ids,
            poll: s.poll,
            listener,
            management,
            conns: Slab::with_capacity(1024),
            admin: Slab::new(),
            rbuf: vec![0; STASH_BYTES + READ_BYTES],
            generations: id::Generations::random(),
            shutdown: s.shutdown,
            drain_deadline: None,
            drain_phase: DrainPhase::Calls,
            drained_calls: false,
            now: Instant::now(),
            clock_anchor: clock_anchor(),
            nodelay_inherited: None,
            timers: Wheel::new(Instant::now()),
            shared: {
                let mut sx = Scratch::new(s.config, s.index, s.ids, POOL_KEEP);
                sx.metrics = metrics.clone();
                sx.access_log = access_log;
                sx.listen_port = listen_port;
                sx
            },
        })
    }

    /// Runs until shutdown is requested and every connection is closed (or the drain
    /// timeout passed).
    pub fn run(mut self) -> io::Result<()> {
        crate::logger::buffer_thread();
        let res = self.serve();
        self.flush_access_log(true);
        crate::logger::flush_thread();
        res
    }

    fn serve(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut expired = Vec::new();
        self.start_cluster();
        loop {
            crate::logger::flush_thread();
            self.flush_access_log(false);
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() && self.calls.is_empty() {
                    return Ok(());
                }
                if self.now >= deadline {
                    match self.drain_phase {
                        DrainPhase::Calls => self.end_drain(),
                        DrainPhase::Closes => self.force_close_all(),
                        DrainPhase::Disconnects => return Ok(()),
                    }
                }
            } else if self.shutdown.load(Ordering::Acquire) {
                self.begin_shutdown();
                continue;
            }
            let mut timeout = self.timers.poll_timeout(self.now);
            if let Some(deadline) = self.drain_deadline {
                let left = deadline.saturating_duration_since(self.now);
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            if !self.read_again.is_empty()
                || !self.resumes.is_empty()
                || !self.upstream_flush.is_empty()
            {
                timeout = Some(Duration::ZERO);
            }
            if let Some(due) = self.shared.access_log.as_ref().and_then(|l| l.due()) {
                let left = due.saturating_duration_since(self.now);
                timeout = Some(timeout.map_or(left, |t| t.min(left)));
            }
            let res = self.poll.poll(&mut events, timeout);
            self.now = Instant::now();
            self.shared.now_ms = self.wall_ms_now();
            self.shared.tick(self.now);
            if let Err(e) = res {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                match token::decode(ev.token()) {
                    TokenKind::Listener => self.accept_clients(),
                    TokenKind::ManagementListener => self.accept_admin(),
                    TokenKind::Waker => {
                        self.on_hangup();
                        if self.reload.generation() != self.reload_seen {
                            self.on_reload();
                        }
                        self.on_mail();
                        self.drain_progress();
                    }
                    TokenKind::Client(key) => {
                        if ev.is_writable() {
                            self.on_writable(key);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_readable(key, ev.is_read_closed());
                        }
                    }
                    TokenKind::Upstream(key) => self.on_upstream_event(key, ev),
                    TokenKind::Nats => self.on_nats_event(),
                    TokenKind::Management(key) => {
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            self.on_admin_event(key, ev.is_read_closed());
                        } else {
                            self.flush_admin(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.read_again) {
                self.on_readable(key, false);
            }
            if !self.timers.is_empty() {
                self.timers.expire(self.now, &mut expired);
                for e in expired.drain(..) {
                    self.on_timer(e);
                }
            }
            while let Some(key) = self.resumes.pop() {
                self.resume_reading(key);
            }
            // The turn's backend requests, one write per connection (SPEC §16).
            self.flush_upstreams();
            self.flush_nats();
            self.shared.trim();
            let entries = &self.metrics.worker(self.index).timer_entries;
            if entries.load(Ordering::Relaxed) != self.timers.len() as u64 {
                entries.store(self.timers.len() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Writes this turn's access-log lines (without blocking) and counts the ones
    /// dropped (SPEC §10.4). One branch when there is no access log.
    /// Writes the access-log lines when they are due (`all`: whatever waits).
    fn flush_access_log(&mut self, all: bool) {
        if let Some(log) = self.shared.access_log.as_mut() {
            if all || log.due().is_some_and(|due| due <= self.now) {
                log.flush();
            }
            // Drops are counted every turn, written or not.
            let dropped = log.take_dropped();
            if dropped > 0 {
                metrics::add(&self.metrics.worker(self.index).access_log_dropped, dropped);
            }
        }
    }

    /// A SIGHUP arrived since this worker last looked: reopen the access log (log
    /// rotation). The TLS certificate reload hooks in here too (SPEC §10.1).
    fn on_hangup(&mut self) {
        let n = self.hangups.load(Ordering::Acquire);
        if n == self.hangups_seen {
            return;
        }
        self.hangups_seen = n;
        if let Some(log) = self.shared.access_log.as_mut() {
            log.reopen();
        }
    }

    /// Wall-clock ms of this loop turn; the anchor follows the system clock when it
    /// was stepped by more than a second.
    fn wall_ms_now(&mut self) -> u64 {
        let derived = wall_ms(self.clock_anchor, self.now);
        if crate::time::now_ms().abs_diff(derived) > 1000 {
            self.clock_anchor = clock_anchor();
            return wall_ms(self.clock_anchor, self.now);
        }
        derived
    }

    /// SPEC §1: stop accepting, then close every client with 1001 and wait (up to
    /// `drain_timeout`) for the close handshakes to finish.
    fn begin_shutdown(&mut self) {
        let _ = self.poll.registry().deregister(&mut self.listener);
        let _ = self.poll.registry().deregister(&mut self.management);
        self.admin.clear();
        self.drain_deadline = Some(self.now + self.shared.config.server.drain_timeout);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if matches!(
                self.conns[key].session.state(),
                State::Handshaking | State::Connecting
            ) {
                self.close(key);
            }
        }
        self.drain_progress();
    }

    /// While draining: once no integration call is in flight on any worker, everyone
    /// is closed (SPEC §1's order holds across workers, not just within one).
    pub(super) fn drain_progress(&mut self) {
        if self.drain_deadline.is_none() || self.drain_phase != DrainPhase::Calls {
            return;
        }
        if !self.drained_calls && !self.calls_in_flight() {
            self.drained_calls = true;
            if self.mail.draining.fetch_sub(1, Ordering::AcqRel) == 1 {
                for inbox in &self.mail.inboxes {
                    let _ = inbox.waker.wake();
                }
            }
        }
        if self.drained_calls && self.mail.draining.load(Ordering::Acquire) == 0 {
            self.end_drain();
        }
    }

    /// In-flight calls answered (or `drain_timeout` passed): close everyone with 1001
    /// and give the close handshakes and `$disconnect` calls one linger period.
    fn end_drain(&mut self) {
        self.drain_phase = DrainPhase::Closes;
        self.drain_deadline = Some(self.now + SHUTDOWN_LINGER);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close_with(key, close::GOING_AWAY, "Server shutting down");
        }
    }

    /// Close handshakes had their time: drop what is left (sending its `$disconnect`)
    /// and give the `$disconnect` calls a last moment.
    fn force_close_all(&mut self) {
        self.drain_phase = DrainPhase::Disconnects;
        self.drain_deadline = Some(self.now + SHUTDOWN_LINGER);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.session.end();
            }
            self.close(key);
        }
    }

    /// Starts a server-side close: the close frame goes out, then we wait for the
    /// client's (bounded by the close linger).
    fn close_with(&mut self, key: usize, code: u16, reason: &str) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.session.state() != State::Open {
            return;
        }
        log::debug!(
            "worker {}: closing {} with {code} {reason}",
            self.index,
            conn.peer()
        );
        conn.session.start_close(code, reason, &mut self.shared);
        self.finish_output(key);
    }

    /// SIGHUP (SPEC §10.1): picks up what the runtime re-read. New TLS handshakes use
    /// the new pairs; open connections keep theirs. Everything SIGHUP reopens hooks
    /// in here (runs once per reload, on the worker's own thread, never on the
    /// message path).
    pub(crate) fn on_reload(&mut self) {
        self.reload_seen = self.reload.generation();
        self.tls = self.reload.configs();
    }

    /// A connection just opened: count it, log it and start its deadlines.
    fn on_open(&mut self, key: usize) {
        let l = &self.shared.config.limits;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_active = self.now.into();
        conn.counted_open = true;
        if !l.ping_interval.is_zero() {
            conn.ping_at = Some((self.now + l.ping_interval).into());
        }
        let counters = self.metrics.worker(self.index);
        metrics::add(&counters.connects, 1);
        metrics::add(&counters.open_connections, 1);
        log::info!(
            "event=connect connectionId={} sourceIp={} worker={}",
            String::from_utf8_lossy(conn.session.id()),
            conn.session.identity().map_or("", |i| &i.source_ip_text),
            self.index
        );
    }

    fn accept_clients(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.refuse_isolated(&stream) {
                        continue;
                    }
                    if let Err(e) = self.add_client(stream, peer) {
                        log::warn!(
                            "worker {}: cannot register a connection from {peer}: {e}",
                            self.index
                        );
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
        match self.nodelay_inherited {
            Some(true) => {}
            Some(false) => stream.set_nodelay(true)?,
            None => {
                let inherited = stream.nodelay().unwrap_or(false);
                self.nodelay_inherited = Some(inherited);
                if !inherited {
                    stream.set_nodelay(true)?;
                }
            }
        }
        if self.reload.generation() != self.reload_seen {
            // A SIGHUP's pair is taken at the first accept after it (the wake-up
            // that also brings it may come later in this turn).
            self.on_reload();
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if key >= id::MAX_SLOTS {
            return Err(io::Error::other("slab slot does not fit a connection id"));
        }
        let generation = self.generations.issue();
        let id = self.ids.connection(self.index, key as u32, generation);
        self.poll
            .registry()
            .register(&mut stream, token::client(key), Interest::READABLE)?;
        let tls = match &self.tls.client {
            Some(config) => Some(Box::new(tls::Session::new(config.clone())?)),
            None => None,
        };
        let conn = entry.insert(Conn::new(stream, peer, generation, id));
        conn.tls = tls;
        if self.shared.config.server.proxy_protocol != crate::proxy_protocol::Mode::Off {
            conn.proxy = Some(Box::default());
        }
        conn.phase_since = self.now.into();
        self.sync_timer(key);
        Ok(())
    }

    /// Reads until the socket is drained (a short read means it was), processing
    /// every complete frame in place, then writes all replies in one go.
    /// `read_closed`: the event says the peer's FIN is already here, so the socket is
    /// read to EOF even after a short read (remembered while reading is paused).
    ///
    /// Reading stops (and resumes from `on_writable` or the `$connect` answer) while
    /// what is queued for the client, counting the replies this turn is still
    /// assembling, reaches `max_pending_outbound_bytes`, and while `$connect` is
    /// pending with `MAX_EARLY_BYTES` already held: input is bounded by not reading
    /// it, never by dropping a session that is owed its `$disconnect`.
    fn on_readable(&mut self, key: usize, read_closed: bool) {
        match self.conns.get_mut(key) {
            Some(conn) => conn.read_closed |= read_closed,
            None => return,
        }
        for _ in 0..RESUMES_PER_EVENT {
            if self.read_available(key) {
                // EOF or reset: send what can still be sent, then let go.
                if let Some(conn) = self.conns.get_mut(key) {
                    let _ = conn.send(&self.shared.wbuf, &mut self.shared.pool);
                }
                self.shared.wbuf.clear();
                self.shared.active = false;
                return self.close(key);
            }
            self.finish_output(key);
            // A pause whose output then left at once gets no writable event: go on
            // reading here.
            let paused = self.conns.get(key).is_some_and(|c| c.read_paused);
            if !(paused && self.may_read(key)) {
                return;
            }
            self.conns[key].read_paused = false;
        }
        // Other sockets get their turn; re-registering reports what is still
        // readable at the next wait (edge-triggered). Input rustls already holds
        // raises no event: such a client is read again after the others.
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.tls.as_ref().is_some_and(|t| t.holds_input()) {
                return self.read_again.push(key);
            }
            let interest = if conn.wants_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            let _ = self
                .poll
                .registry()
                .reregister(&mut conn.stream, token::client(key), interest);
        }
    }

    /// One round of reads for `key` until the socket is drained, reading is paused,
    /// or the peer is gone (`true`).
    fn read_available(&mut self, key: usize) -> bool {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let mut gone = false;
        let mut handed = None;
        while let Some(conn) = self.conns.get_mut(key) {
            if conn.session.state() == State::Done {
                break;
            }
            if !self.may_read(key) {
                // Shutting down: no new messages. Or the client does not read its
                // replies, or has `max_inflight_per_connection` calls in flight: stop
                // reading its requests until it catches up.
                self.conns[key].read_paused = true;
                break;
            }
            let conn = &mut self.conns[key];
            if conn.session.is_holding() {
                // Frames held at the in-flight limit go first, before any new read
                // (they may be held again).
                conn.session.resume(&mut self.shared);
                self.after_process(key);
                continue;
            }
            // The PROXY protocol header (SPEC §10.2) comes first, on the raw socket
            // bytes, before TLS or HTTP see anything.
            let mut skip = 0;
            let mut leftover: Option<Vec<u8>> = None;
            let mut plain: Option<(usize, bool)> = None;
            if conn.proxy.is_some() {
                let n = match conn.stream.read(&mut rbuf[STASH_BYTES..]) {
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
                let mode = self.shared.config.server.proxy_protocol;
                match conn.proxy_stage(&rbuf[STASH_BYTES..STASH_BYTES + n], mode) {
                    ProxyStep::Done { rest } if rest < n => {
                        if conn.tls.is_some() {
                            // The first TLS bytes, read with the header: rustls
                            // takes them before the socket's next ones.
                            leftover = Some(rbuf[STASH_BYTES + rest..STASH_BYTES + n].to_vec());
                        } else {
                            skip = rest;
                        }
                    }
                    ProxyStep::Wait | ProxyStep::Done { .. } => continue,
                    ProxyStep::Refuse(e) => {
                        // Closed without a byte of answer (SPEC §10.2).
                        log::debug!(
                            "worker {}: {} sent no PROXY header: {e:?}",
                            self.index,
                            conn.peer()
                        );
                        gone = true;
                        break;
                    }
                }
                if leftover.is_none() {
                    // Plain bytes after the header: processed below, from `skip`.
                    plain = Some((n, n < READ_BYTES));
                }
            }
            let (read, drained) = match (plain, conn.tls.as_mut(), leftover) {
                (Some(got), _, _) => got,
                (None, None, _) => match conn.stream.read(&mut rbuf[STASH_BYTES..]) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => (n, n < READ_BYTES),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => {
                        gone = true;
                        break;
                    }
                },
                (None, Some(tls), first) => {
                    let input = match &first {
                        Some(bytes) => tls.read(
                            &mut io::Read::chain(bytes.as_slice(), &mut conn.stream),
                            &mut rbuf[STASH_BYTES..],
                        ),
                        None => tls.read(&mut conn.stream, &mut rbuf[STASH_BYTES..]),
                    };
                    match input {
                        tls::Input::Closed => {
                            gone = true;
                            break;
                        }
                        // Only handshake records (sent by `finish_output`), or nothing.
                        tls::Input::Data { n: 0, .. } => break,
                        tls::Input::Data { n, drained } => (n, drained),
                    }
                }
            };
            let was = conn.session.state();
            if was == State::Connecting {
                // Early frames wait, unprocessed, for the `$connect` answer.
                conn.session
                    .keep_early(&rbuf[STASH_BYTES..STASH_BYTES + read], &mut self.shared);
            } else {
                // After a PROXY header (`skip`) nothing is stashed yet.
                let mut start = STASH_BYTES + skip;
                if let Some(stash) = conn.session.take_stash() {
                    start -= stash.len();
                    rbuf[start..STASH_BYTES].copy_from_slice(&stash);
                    self.shared.pool.give(stash);
                }
                let end = STASH_BYTES + read;
                if was == State::Handshaking
                    && self.shared.config.management.on_api_listener
                    && handshake::is_connections_request(
                        &rbuf[start..end],
                        &self.shared.config.api.stage,
                    )
                {
                    // SPEC §13: a `@connections` call, served by the management API.
                    handed = self.hand_over(key, &rbuf[start..end]);
                    break;
                }
                conn.session
                    .process(&mut rbuf[start..STASH_BYTES + read], &mut self.shared);
            }
            let read_closed = conn.read_closed;
            let holding = conn.session.is_holding();
            if was == State::Handshaking && conn.session.state() != was {
                self.sync_timer(key);
            }
            self.after_process(key);
            if drained && !read_closed && !holding {
                break;
            }
        }
        self.rbuf = rbuf;
        if let Some(admin_key) = handed {
            self.serve_handed_over(admin_key);
        }
        gone
    }

    /// Starts the calls and sends the replies that processing `key`'s input made.
    fn after_process(&mut self, key: usize) {
        if !self.shared.outbox.is_empty() {
            let generation = self.conns[key].generation;
            self.start_calls(Some((key, generation)));
        }
        if self.shared.wbuf.len() >= FLUSH_BYTES {
            // Replies leave (or join the connection's queue, where the limit
            // sees them) before the next read adds more.
            self.finish_output(key);
        }
    }

    /// Whether the client's input may be read now (see `on_readable`).
    fn may_read(&self, key: usize) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        let limit = self.shared.config.limits.max_pending_outbound_bytes;
        match conn.session.state() {
            State::Open => {
                self.drain_deadline.is_none()
                    && conn.pending_out() + self.shared.wbuf.len() < limit
                    && conn.session.inflight()
                        < self.shared.config.limits.max_inflight_per_connection
            }
            State::Connecting => conn.session.early_bytes() < session::MAX_EARLY_BYTES,
            State::Handshaking | State::Closing => true,
            State::Done => false,
        }
    }

    /// Reads again from a client whose reading was paused, if it may be read now
    /// (edge-triggered: bytes that waited meanwhile raise no new event); frames held
    /// at the in-flight limit are processed first, even if no new byte comes.
    pub(super) fn resume_reading(&mut self, key: usize) {
        let paused = self
            .conns
            .get(key)
            .is_some_and(|c| c.read_paused || c.session.is_holding());
        if paused && self.may_read(key) {
            self.conns[key].read_paused = false;
            self.on_readable(key, false);
        }
    }

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.flush(&mut self.shared.pool) {
            Ok(Flushed::All) => {
                if conn.session.state() == State::Done {
                    return self.close(key);
                } else if conn.wants_write {
                    conn.wants_write = false;
                    let _ = self.poll.registry().reregister(
                        &mut conn.stream,
                        token::client(key),
                        Interest::READABLE,
                    );
                }
            }
            Ok(Flushed::Pending) => {}
            Err(_) => return self.close(key),
        }
        self.resume_reading(key);
    }

    /// Sends what the message path wrote into `wbuf`, and keeps write interest and the
    /// connection's life in step with what is still pending.
    fn finish_output(&mut self, key: usize) {
        let mut wbuf = std::mem::take(&mut self.shared.wbuf);
        self.send_output(key, &wbuf);
        wbuf.clear();
        self.shared.wbuf = wbuf;
    }

    /// [`Worker::finish_output`] for bytes held outside `wbuf` (a group send's frame,
    /// written to every member without a copy per member).
    fn send_output(&mut self, key: usize, data: &[u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            self.shared.active = false;
            return;
        };
        if std::mem::take(&mut self.shared.active) {
            conn.last_active = self.now.into();
        }
        let res = conn.send(data, &mut self.shared.pool);
        match res {
            Ok(Flushed::All) if conn.session.state() == State::Done => self.close(key),
            Ok(Flushed::All) => {}
            Ok(Flushed::Pending) => {
                if !conn.wants_write {
                    conn.wants_write = true;
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .reregister(&mut conn.stream, token::client(key), interest)
                        .is_err()
                    {
                        self.close(key);
                    }
                }
            }
            Err(_) => self.close(key),
        }
        self.sync_timer(key);
    }

    fn on_timer(&mut self, e: timer::Entry) {
        match e.kind {
            TimerKind::Client => self.on_client_timer(e.key, e.generation),
            TimerKind::Call => self.on_call_timeout(e.key, e.generation),
            TimerKind::UpstreamConnect => self.on_connect_timeout(e.key, e.generation),
            TimerKind::Health => self.on_health_timeout(e.key, e.generation),
            TimerKind::AdminHead | TimerKind::AdminIdle => {
                self.on_admin_timer(e.key, e.generation, e.kind)
            }
            TimerKind::ClusterRequest => self.on_cluster_timeout(e.key, e.generation),
            TimerKind::ClusterTick => self.on_cluster_tick(),
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.session.state() == State::Connecting {
                // `$connect` is still deciding; if it says yes, `$disconnect` (1006)
                // is owed, so the session waits for the answer without its client
                // (`end()` at shutdown's last step, or the answer, lets it go).
                if !conn.session.is_abandoned() {
                    conn.session.abandon();
                    let _ = self.poll.registry().deregister(&mut conn.stream);
                    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                }
                return;
            }
        }
        self.send_disconnect(key);
        self.cancel_client_timer(key);
        if let Some(mut conn) = self.conns.try_remove(key) {
            self.drop_memberships(key);
            if conn.counted_open {
                metrics::sub(&self.metrics.worker(self.index).open_connections, 1);
                let (code, reason) = conn.session.close_status();
                log::info!(
                    "event=disconnect connectionId={} code={code} reason={reason:?} worker={}",
                    String::from_utf8_lossy(conn.session.id()),
                    self.index
                );
            }
            // close_notify only on an established session whose output is all out:
            // before the handshake (a refused PROXY header, a stalled handshake) a
            // refused client gets no byte (SPEC §10.2), and after half a record the
            // alert would corrupt the stream.
            if let Some(tls) = conn.tls.as_mut() {
                if conn.proxy.is_none() && !tls.is_handshaking() && conn.out.is_none() {
                    tls.goodbye(&mut conn.stream);
                }
            }
            // Closing the socket removes it from the epoll set: no deregister call.
            conn.release(&mut self.shared.pool);
        }
    }
}

/// A monotonic instant and the wall-clock time (since the Unix epoch) read right
/// after it, so times derived from it are never early.
fn clock_anchor() -> (Instant, Duration) {
    let at = Instant::now();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (at, wall)
}

/// Wall-clock ms of the monotonic instant `t`, through a worker's clock anchor.
fn wall_ms((at, wall): (Instant, Duration), t: Instant) -> u64 {
    let w = if t >= at {
        wall + t.duration_since(at)
    } else {
        wall.saturating_sub(at.duration_since(t))
    };
    w.as_millis() as u64
}

/// One pool per distinct backend (address, and for `https://` server name and trust
/// anchors: a plain and a TLS pool never share connections; and `pipeline`: a
/// `pipeline = 1` integration never waits behind another's pipelined calls), sized by the largest
/// `pool_size` and `max_queued_requests` among the integrations that share it.
fn build_pools(config: &Config) -> (Vec<upstream::Pool>, Vec<Duration>, Vec<Option<usize>>) {
    let mut pools: Vec<upstream::Pool> = Vec::new();
    let mut targets: Vec<Option<&upstream::tls::Target>> = Vec::new();
    let mut timeouts: Vec<Duration> = Vec::new();
    let mut pool_of = Vec::with_capacity(config.integrations.len());
    for i in &config.integrations {
        let crate::config::IntegrationKind::Http(h) = &i.kind else {
            pool_of.push(None);
            continue;
        };
        let same_tls = |t: &Option<&upstream::tls::Target>| match (t, &h.tls) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        };
        let shared = pools
            .iter()
            .zip(&targets)
            .position(|(p, t)| p.addr == h.uri.addr && same_tls(t) && p.pipeline == h.pipeline);
        let p = match shared {
            Some(p) => {
                pools[p].size = pools[p].size.max(h.pool_size);
                pools[p].max_queued = pools[p].max_queued.max(h.max_queued_requests);
                timeouts[p] = timeouts[p].max(h.connect_timeout);
                p
            }
            None => {
                let mut pool = upstream::Pool::new(h.uri.addr, h.pool_size, h.max_queued_requests);
                pool.pipeline = h.pipeline;
                // This worker's own TLS client (and session cache) for the pool.
                pool.tls = h.tls.as_ref().map(upstream::tls::Target::connector);
                pools.push(pool);
                targets.push(h.tls.as_ref());
                timeouts.push(h.connect_timeout);
                pools.len() - 1
            }
        };
        pool_of.push(Some(p));
    }
    (pools, timeouts, pool_of)
}
