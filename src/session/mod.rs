//! The sans-IO heart of a client connection: bytes in, replies and backend calls out.
//! A [`Session`] owns a connection's protocol state; [`Scratch`] is the worker's
//! reusable state for the message path (buffers, route selector, id sequence, the
//! outbox of backend calls). The worker does the socket I/O around them; tests and
//! benches drive them directly.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::access_log::{self, EventType, Integration, Record};
use crate::buf::Pool;
use crate::close;
use crate::config::{Config, IdentitySource, IntegrationKind};
use crate::event::{self, Identity};
use crate::forwarded;
use crate::frame;
use crate::handshake;
use crate::id::{self, Sequence};
use crate::integration::{self, Body, CallKind, Handshake, Input, Outcome, Outgoing};
use crate::mapping::Source;
use crate::message::{self, Event, Kind, Payload, Reader};
use crate::metrics::{self, Metrics};
use crate::reply;
use crate::route::Selector;
use crate::throttle::{self, Bucket};
use crate::time;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP open, upgrade request not complete yet.
    Handshaking,
    /// Upgrade request accepted, waiting for the `$connect` integration.
    Connecting,
    /// Upgraded: messages flow.
    Open,
    /// We sent a close frame and wait for the client's, or for EOF.
    Closing,
    /// Nothing more is read; the socket closes once pending output is written.
    Done,
}

/// Bytes a client may send while its `$connect` is pending before the worker stops
/// reading it (until the answer comes).
pub const MAX_EARLY_BYTES: usize = 1024 * 1024;
/// The body of the `429` that refuses an upgrade over the connect bucket.
const TOO_MANY_REQUESTS: &[u8] = b"{\"message\":\"Too Many Requests\"}";
/// Scratch buffers grown past this by one big message are shrunk back after it.
const SCRATCH_KEEP_BYTES: usize = 256 * 1024;

/// What a pending upgrade needs once `$connect` answers.
#[derive(Debug)]
struct Pending {
    accept: [u8; 28],
    protocols: Option<Vec<u8>>,
    /// While the authorizer runs: what `$connect` needs once it allows.
    replay: Option<Box<Replay>>,
}

/// The handshake data `$connect` needs after its authorizer answered (SPEC §11).
#[derive(Debug)]
struct Replay {
    headers: Vec<(String, String)>,
    query: Option<String>,
    /// The identity-source values, the authorizer cache's key.
    cache_key: Vec<u8>,
}

/// What a connection holds only while a message is under way: the frame reader's
/// state, bytes not usable yet, a message being assembled. Boxed, and handed back to
/// the worker's [`Scratch`] (which reuses it for the next connection that needs one)
/// as soon as the reader is between messages with nothing stashed, so an idle
/// connection pays one pointer for it, and the message path allocates nothing.
#[derive(Debug, Default)]
struct Partial {
    reader: Reader,
    /// Bytes received but not yet usable (a partial request head or frame header, or
    /// everything sent while `$connect` is pending).
    inbuf: Option<Vec<u8>>,
    /// Where `inbuf`'s unprocessed bytes start: frames held back by
    /// `max_inflight_per_connection` stay in place while each resume takes a few
    /// (copying the rest every time would cost the square of the input).
    inbuf_at: usize,
    /// A message being assembled from several frames or reads.
    asm: Option<Vec<u8>>,
}

/// Why [`Session::frames`] stopped.
enum Stop {
    /// The input is used up (a partial frame at its end stashed).
    Done,
    /// `max_inflight_per_connection` calls are in flight: the frames from here wait.
    Held(usize),
}

impl Partial {
    fn is_idle(&self) -> bool {
        self.reader.is_idle() && self.inbuf.is_none() && self.asm.is_none()
    }
}

/// [`Partial`]s a worker keeps for reuse.
const PARTIALS_KEPT: usize = 1024;

/// What few connections need, or only for a while: boxed, `None` while empty.
#[derive(Debug, Default)]
struct Rare {
    /// Handshake headers, kept only when an `http_proxy` mapping reads them.
    headers: Option<Box<[(String, String)]>>,
    pending: Option<Box<Pending>>,
    /// Why the connection ended, for `$disconnect` (default: 1006, no close frame).
    close_status: Option<(u16, String)>,
    /// What the `$connect` authorizer allowed with (SPEC §11); only with one.
    authorizer: Option<Box<crate::authorizer::Context>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.headers.is_none()
            && self.pending.is_none()
            && self.close_status.is_none()
            && self.authorizer.is_none()
    }
}

/// One connection's protocol state. Holds buffers only while it needs them; what an
/// idle connection does not need lives in boxes that exist only while needed
/// ([`Partial`], [`Rare`]), so the session of an idle connection is a few dozen bytes.
///
/// The worker moves bytes and events into it and reads what it decided (replies in
/// [`Scratch::wbuf`], calls in [`Scratch::outbox`], its [`State`]); everything else is
/// private, so every change of state goes through a method below.
#[derive(Debug)]
pub struct Session {
    state: State,
    id: id::Text,
    /// The client's address until the upgrade request, then its identity.
    who: Who,
    /// Reader state and buffers while a message is under way.
    partial: Option<Box<Partial>>,
    /// A pong arrived since the last server ping.
    pong_seen: bool,
    /// Handshake headers, the pending upgrade, the close status, the authorizer's
    /// context: only while there is any.
    rare: Option<Box<Rare>>,
    /// Backend calls of this connection not answered yet.
    inflight: u32,
    /// `$connect` succeeded (or there is none): `$disconnect` is owed.
    registered: bool,
    /// The client left while `$connect` was pending.
    abandoned: bool,
    /// Bytes of a partial request head already searched for its end.
    head_seen: u16,
    /// `inbuf` holds frames not processed because `max_inflight_per_connection`
    /// calls were in flight: the worker reads no more until they are (SPEC §10.3).
    held: bool,
    /// This connection's message bucket, only when `throttling.per_connection` is set
    /// (made at its first message).
    bucket: Option<Box<Bucket>>,
}

/// Who the client is: what the handshake needs of it until the upgrade request, then
/// what every event repeats. One field, since the first is not needed once the second
/// exists.
#[derive(Debug)]
enum Who {
    Peer {
        /// The TCP peer, or the client a PROXY protocol header named.
        ip: IpAddr,
        /// `ip` came from a PROXY protocol header: no `X-Forwarded-For` is believed.
        proxied: bool,
    },
    /// Set at the upgrade request (its client part shared, see [`intern`]).
    Known(Identity),
}

/// The identity, once the upgrade request set it.
fn known(who: &Who) -> Option<&Identity> {
    match who {
        Who::Known(i) => Some(i),
        Who::Peer { .. } => None,
    }
}

/// Per-worker state of the message path, reused for every message.
pub struct Scratch {
    pub config: Arc<Config>,
    pub pool: Pool,
    /// Output for the connection being served, written to its socket in one go.
    pub wbuf: Vec<u8>,
    /// A rendered reply or event body before it is framed.
    pub render: Vec<u8>,
    pub selector: Selector,
    pub seq: Sequence,
    pub limits: message::Limits,
    /// Backend calls requested by the session being served; the worker starts them.
    pub outbox: Vec<Outgoing>,
    /// Whether some `http_proxy` mapping reads handshake headers.
    keep_headers: bool,
    /// Wall-clock time of the current loop turn, ms since the Unix epoch: the worker
    /// sets it, events and `connectedAt` read it (the session reads no clock).
    pub now_ms: u64,
    /// Signs Lambda integrations' Invoke API calls (SPEC §12); keeps its key and
    /// buffers between calls.
    pub signer: crate::aws::sigv4::Signer,
    /// Authorizer answers kept for `cache_ttl` (SPEC §11).
    pub auth_cache: crate::authorizer::Cache,
    /// This worker's access log (SPEC §10.4), when `[access_log]` is configured; the
    /// worker opens it and writes it out once per loop turn.
    pub access_log: Option<access_log::Writer>,
    /// The metrics and the index of the worker this scratch belongs to.
    pub metrics: Arc<Metrics>,
    pub worker: u8,
    /// Shared client identities (see [`intern`]).
    pub clients: intern::Clients,
    /// Free [`Partial`] boxes, reused by connections with a message under way (boxes,
    /// not values: they move to and from sessions without allocating).
    #[allow(clippy::vec_box)]
    partials: Vec<Box<Partial>>,
    /// A data frame went either way or a control frame came from the client since
    /// the worker last looked (it moves `lastActiveAt` and the idle deadline, SPEC §8).
    pub active: bool,
    /// Monotonic time of the current loop turn, µs since this scratch was made: the
    /// worker sets it (see [`Scratch::tick`]), token buckets refill from it.
    pub mono_us: u64,
    clock_base: Instant,
    /// This worker's share of the throttling buckets; `None` when nothing is
    /// throttled (SPEC §10.3).
    pub throttle: Option<Box<throttle::Buckets>>,
    /// The client listener's port and scheme, for CONNECT's `X-Forwarded-Port` and
    /// `X-Forwarded-Proto` (SPEC §10.2); the worker sets the real port (`:0` asks
    /// for any).
    pub listen_port: u16,
    pub forwarded_proto: &'static str,
}

impl Scratch {
    pub fn new(config: Arc<Config>, worker: u8, ids: id::Codec, pool_keep: usize) -> Scratch {
        let routes = config.routes.len();
        let l = &config.limits;
        let limits = message::Limits {
            max_frame_bytes: l.max_frame_bytes,
            max_message_bytes: l.max_message_bytes,
            allow_binary: l.allow_binary,
        };
        let keep_headers = config.integrations.iter().any(|i| match &i.kind {
            IntegrationKind::Http(h) => h
                .request_parameters
                .iter()
                .any(|m| matches!(m.source, Source::Header(_))),
            IntegrationKind::Mock { .. } => false,
        });
        let t = &config.throttling;
        let throttle = throttle::Buckets::new(
            t.connect,
            t.stage,
            config.routes.iter().map(|r| r.throttling),
            t.per_connection,
            config.server.workers,
            0,
        );
        Scratch {
            throttle,
            mono_us: 0,
            clock_base: Instant::now(),
            pool: Pool::new(pool_keep),
            wbuf: Vec::with_capacity(64 * 1024),
            render: Vec::new(),
            selector: Selector::new(),
            seq: Sequence::new(ids, worker),
            limits,
            outbox: Vec::new(),
            keep_headers,
            metrics: Arc::new(Metrics::new(worker as usize + 1, routes)),
            worker,
            clients: intern::Clients::default(),
            partials: Vec::new(),
            active: false,
            now_ms: time::now_ms(),
            signer: Default::default(),
            auth_cache: Default::default(),
            access_log: None,
            listen_port: config.server.listen.port(),
            forwarded_proto: if config.server.tls.is_some() {
                "https"
            } else {
                "http"
            },
            config,
        }
    }

    /// Sets the monotonic time of this loop turn (`now`: the worker's one clock read).
    pub fn tick(&mut self, now: Instant) {
        self.mono_us = now.saturating_duration_since(self.clock_base).as_micros() as u64;
    }

    /// Gives back what one big message made the per-worker buffers grow to, so a peak
    /// does not stay resident (issue 8, defect 7).
    pub fn trim(&mut self) {
        for b in [&mut self.wbuf, &mut self.render] {
            if b.capacity() > SCRATCH_KEEP_BYTES && b.is_empty() {
                b.shrink_to(64 * 1024);
            }
        }
        self.selector.trim(SCRATCH_KEEP_BYTES);
    }
}

impl Session {
    pub fn new(id: id::Text, peer_ip: IpAddr) -> Session {
        Session {
            state: State::Handshaking,
            id,
            who: Who::Peer {
                ip: peer_ip,
                proxied: false,
            },
            partial: None,
            pong_seen: false,
            rare: None,
            inflight: 0,
            registered: false,
            abandoned: false,
            head_seen: 0,
            held: false,
            bucket: None,
        }
    }

    /// A PROXY protocol header named the client (SPEC §10.2): it replaces the TCP
    /// peer as the connection's source address.
    pub fn set_proxied_client(&mut self, ip: IpAddr) {
        self.who = Who::Peer { ip, proxied: true };
    }

    /// Where the connection is in its life.
    pub fn state(&self) -> State {
        self.state
    }

    /// The connection id.
    pub fn id(&self) -> &id::Text {
        &self.id
    }

    /// What the upgrade request said (`None` before it).
    pub fn identity(&self) -> Option<&Identity> {
        known(&self.who)
    }

    /// Why the connection ended, for logs and `$disconnect` (1006 when no close frame
    /// was seen or sent).
    pub fn close_status(&self) -> (u16, &str) {
        match self.rare.as_deref().and_then(|r| r.close_status.as_ref()) {
            Some((c, r)) => (*c, r.as_str()),
            None => (close::ABNORMAL, ""),
        }
    }

    /// Bytes received but not processed yet (a partial head or frame), handed to the
    /// worker to be put in front of the next read.
    pub fn take_stash(&mut self) -> Option<Vec<u8>> {
        let p = self.partial.as_mut()?;
        let mut b = p.inbuf.take()?;
        b.drain(..std::mem::take(&mut p.inbuf_at));
        Some(b)
    }

    /// The client left while `$connect` is pending: the session waits for the answer
    /// without its client (a 2xx then still owes `$disconnect`, SPEC §5).
    pub fn abandon(&mut self) {
        self.abandoned = true;
    }

    /// Whether the upgrade was accepted (and `$disconnect` is still owed).
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// Whether the client left while `$connect` was pending.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// The client left while the authorizer ran: nothing was registered, nothing is
    /// owed.
    pub fn on_abandoned_authorize(&mut self) {
        self.take_pending();
        self.state = State::Done;
    }

    /// The `$connect` answer of an abandoned session: `$disconnect` is owed when it
    /// accepted; either way nothing more happens on this connection.
    pub fn on_abandoned_connect(
        &mut self,
        outcome: &Outcome<'_>,
        call: &access_log::Call<'_>,
        sx: &mut Scratch,
    ) {
        let accepted =
            matches!(outcome, Outcome::Reply { status, .. } if (200..300).contains(status));
        self.registered = accepted;
        self.state = State::Done;
        let (status, error) = match outcome {
            _ if accepted => (200, None),
            Outcome::Reply { status, .. } => (*status, None),
            Outcome::Failed => (502, Some(access_log::INTEGRATION_FAILURE)),
            Outcome::TimedOut => (504, Some(access_log::INTEGRATION_TIMEOUT)),
        };
        self.log_connect(
            sx,
            call,
            status,
            error,
            Integration::of(outcome, call.latency_ms),
        );
    }

    /// Ends the session at once (shutdown's last step): nothing more is read or
    /// waited for; a pending `$connect` no longer matters.
    pub fn end(&mut self) {
        self.abandoned = true;
        self.state = State::Done;
    }

    /// A server ping went out: a pong is owed.
    pub fn ping_sent(&mut self) {
        self.pong_seen = false;
    }

    /// Whether a pong arrived since the last server ping.
    pub fn pong_seen(&self) -> bool {
        self.pong_seen
    }

    /// Processes newly received bytes (after any stashed ones). Replies are appended
    /// to `sx.wbuf`, backend calls to `sx.outbox`; bytes that cannot be used yet are
    /// stashed in `self.inbuf`.
    pub fn process(&mut self, input: &mut [u8], sx: &mut Scratch) {
        self.process_input(input, sx);
        self.settle(sx);
    }

    fn process_input(&mut self, input: &mut [u8], sx: &mut Scratch) {
        let mut pos = 0;
        match self.state {
            State::Handshaking => {
                match handshake::parse_resumed(input, &sx.config.api.stage, self.head_seen as usize)
                {
                    Ok(None) => {
                        // At most a head's worth (16 KiB) is ever stashed here.
                        self.head_seen = u16::try_from(input.len()).unwrap_or(u16::MAX);
                        self.stash(input, sx);
                        return;
                    }
                    Err(rejection) => {
                        log::debug!("handshake rejected with {}", rejection.status());
                        rejection.write_response(&mut sx.wbuf);
                        self.state = State::Done;
                        return;
                    }
                    Ok(Some(up)) => {
                        pos = up.head_len;
                        if !self.on_upgrade(&up, &input[..up.head_len], sx) {
                            if self.state == State::Connecting {
                                self.stash(&input[pos..], sx);
                            }
                            return;
                        }
                    }
                }
            }
            State::Connecting => return self.keep_early(input, sx),
            _ => {}
        }
        if let Stop::Held(pos) = self.frames(input, pos, sx) {
            self.stash(&input[pos..], sx);
        }
    }

    /// Keeps bytes that arrive while `$connect` is pending (they are processed after
    /// the 101). The worker bounds them by not reading past [`MAX_EARLY_BYTES`].
    pub fn keep_early(&mut self, input: &[u8], sx: &mut Scratch) {
        self.stash(input, sx);
    }

    /// Backend calls of this connection not answered yet.
    pub fn inflight(&self) -> usize {
        self.inflight as usize
    }

    /// Whether frames wait, unprocessed, for in-flight calls to finish (see
    /// [`Session::resume`]); the worker must not read more until they are processed.
    pub fn is_holding(&self) -> bool {
        self.held
    }

    /// Bytes held while `$connect` is pending.
    pub fn early_bytes(&self) -> usize {
        let p = self.partial.as_ref();
        p.and_then(|p| Some(p.inbuf.as_ref()?.len() - p.inbuf_at))
            .unwrap_or(0)
    }

    /// Resumes processing of what arrived while `$connect` was pending, or of the
    /// frames held back while `max_inflight_per_connection` calls were in flight
    /// (they may be held again, from where the limit is reached anew).
    pub fn resume(&mut self, sx: &mut Scratch) {
        self.held = false;
        let stash = self.partial.as_mut().and_then(|p| {
            let at = std::mem::take(&mut p.inbuf_at);
            Some((p.inbuf.take()?, at))
        });
        if let Some((mut early, at)) = stash {
            match self.frames(&mut early, at, sx) {
                Stop::Held(pos) => self.hold(early, pos, sx),
                Stop::Done => sx.pool.give(early),
            }
        }
        self.settle(sx);
    }

    /// Keeps `buf[pos..]`, the frames held back again, where they are.
    fn hold(&mut self, buf: Vec<u8>, pos: usize, sx: &mut Scratch) {
        let p = self
            .partial
            .get_or_insert_with(|| sx.partials.pop().unwrap_or_default());
        if p.inbuf.is_none() {
            p.inbuf = Some(buf);
            p.inbuf_at = pos;
        } else {
            // Not reached: nothing is stashed before frames are held.
            self.stash(&buf[pos..], sx);
            sx.pool.give(buf);
        }
    }

    /// Processes the frames of `input` from `pos` until it ends or
    /// `max_inflight_per_connection` holds the rest back ([`Stop::Held`]: the caller
    /// keeps `input[pos..]`).
    fn frames(&mut self, input: &mut [u8], mut pos: usize, sx: &mut Scratch) -> Stop {
        while pos < input.len() && matches!(self.state, State::Open | State::Closing) {
            if self.state == State::Open
                && self.inflight as usize >= sx.config.limits.max_inflight_per_connection
            {
                // TCP backpressure, not dropped messages: the rest waits here, and
                // the worker reads no more, until a call finishes (SPEC §10.3).
                self.held = true;
                return Stop::Held(pos);
            }
            let p = self
                .partial
                .get_or_insert_with(|| sx.partials.pop().unwrap_or_default());
            let res = p
                .reader
                .read(&mut input[pos..], &mut p.asm, &mut sx.pool, &sx.limits);
            let base = pos;
            match res {
                Ok((n, None)) => {
                    pos += n;
                    self.stash(&input[pos..], sx);
                    return Stop::Done;
                }
                Ok((n, Some(ev))) => {
                    pos += n;
                    if self.state == State::Closing {
                        // Waiting for the client's close: everything else is dropped.
                        if matches!(ev, Event::Close { .. }) {
                            self.state = State::Done;
                        }
                        self.release_message(&ev, &mut sx.pool);
                        continue;
                    }
                    self.on_event(&input[base..pos], ev, sx);
                }
                Err(e) => {
                    if self.state == State::Open {
                        log::debug!("closing with {}: {}", e.close_code(), e.reason());
                        metrics::add(&sx.metrics.worker(sx.worker).client_errors, 1);
                        self.start_close(e.close_code(), e.reason(), sx);
                    } else {
                        self.state = State::Done;
                    }
                    return Stop::Done;
                }
            }
        }
        Stop::Done
    }

    /// A valid upgrade request: accept it now, or ask `$connect` first. `true` when
    /// the connection is open and frames may follow.
    fn on_upgrade(&mut self, up: &handshake::Upgrade<'_>, head: &[u8], sx: &mut Scratch) -> bool {
        // The client's address (SPEC §10.2); the header is only read for a trusted peer.
        let trusted = &sx.config.server.trusted_proxies;
        let (peer_ip, proxied) = match &self.who {
            Who::Peer { ip, proxied } => (*ip, *proxied),
            // Not reached: one upgrade request per connection.
            Who::Known(i) => (i.source_ip, true),
        };
        let xff = if !proxied && trusted.contains(peer_ip) {
            forwarded::xff_values(head)
        } else {
            Vec::new()
        };
        let client = forwarded::client(peer_ip, proxied, xff.into_iter(), trusted);
        let with_forwarded = |mut h: Vec<(String, String)>| {
            forwarded::set_headers(&mut h, &client, sx.listen_port, sx.forwarded_proto);
            h
        };
        let shared = sx.clients.client(client.ip, up.user_agent, up.host);
        self.who = Who::Known(Identity::with_client(shared, sx.now_ms));
        if let Some(t) = sx.throttle.as_deref_mut() {
            if !t.connect(sx.mono_us) {
                // Over the connect bucket: refused before `$connect` runs (SPEC §10.3).
                let counters = sx.metrics.worker(sx.worker);
                metrics::add(&counters.client_errors, 1);
                metrics::add(&counters.connects_throttled, 1);
                handshake::write_status(
                    &mut sx.wbuf,
                    429,
                    None,
                    "application/json",
                    TOO_MANY_REQUESTS,
                );
                if sx.access_log.is_some() {
                    let request_id = sx.seq.next_id();
                    let mut r = connect_record(&request_id, sx.now_ms, 429);
                    r.error = Some(access_log::THROTTLED);
                    self.access(sx, r);
                }
                self.state = State::Done;
                return false;
            }
        }
        if sx.keep_headers {
            // `route.request.header.*` mappings read them on every later event, whatever
            // integration `$connect` has (or none).
            self.rare_mut().headers =
                Some(with_forwarded(event::request_headers(head)).into_boxed_slice());
        }
        let Some(route) = sx.config.connect_route else {
            self.accept(&up.accept, None, sx);
            if sx.access_log.is_some() {
                let request_id = sx.seq.next_id();
                self.access(sx, connect_record(&request_id, sx.now_ms, 200));
            }
            return true;
        };
        let config = sx.config.clone();
        if let Some(a) = config.routes[route].authorizer {
            let headers = match self.rare.as_deref().and_then(|r| r.headers.as_deref()) {
                Some(h) => h.to_vec(),
                None => with_forwarded(event::request_headers(head)),
            };
            return self.authorize(up, route, a, headers, sx);
        }
        let parsed;
        let kept = self.rare.as_deref().and_then(|r| r.headers.as_deref());
        let headers: &[(String, String)] = match kept {
            Some(h) => h,
            None => {
                parsed = with_forwarded(event::request_headers(head));
                &parsed
            }
        };
        // The headers are parsed before they are needed; only HTTP `$connect` reads
        // them, and an upgrade is not the message path.
        let pending = Pending {
            accept: up.accept,
            protocols: up.protocols.map(<[u8]>::to_vec),
            replay: None,
        };
        let headers = headers.to_vec();
        self.run_connect(route, pending, &headers, up.query, sx)
    }

    /// Runs `$connect`'s integration (after its authorizer, if any): a mock answers
    /// now, an HTTP backend is called. `true` when the connection is open.
    fn run_connect(
        &mut self,
        route: usize,
        p: Pending,
        headers: &[(String, String)],
        query: Option<&str>,
        sx: &mut Scratch,
    ) -> bool {
        let request_id = sx.seq.next_id();
        let config = sx.config.clone();
        match &config.integrations[config.routes[route].integration].kind {
            IntegrationKind::Mock { .. } => {
                let authorizer = self.rare.as_deref().and_then(|r| r.authorizer.as_deref());
                let ids = reply::Ids {
                    authorizer,
                    connection: &self.id,
                    request: &request_id,
                    message: b"",
                };
                let accepted = reply::mock_connect(&mut sx.wbuf, &config, route, &ids);
                if sx.access_log.is_some() {
                    let status = match &config.integrations[config.routes[route].integration].kind {
                        IntegrationKind::Mock { status, .. } if !accepted => *status,
                        _ => 200,
                    };
                    self.access(sx, connect_record(&request_id, sx.now_ms, status));
                }
                if !accepted {
                    self.state = State::Done;
                    return false;
                }
                self.accept(&p.accept, None, sx);
                true
            }
            IntegrationKind::Http(_) => {
                let hs = Handshake { headers, query };
                let call = self.call(
                    sx,
                    route,
                    CallKind::Connect,
                    request_id,
                    b"",
                    Body::Connect(&hs),
                );
                sx.outbox.push(call);
                self.rare_mut().pending = Some(Box::new(p));
                self.state = State::Connecting;
                false
            }
        }
    }

    /// `$connect` has an authorizer (SPEC §11): refuse at once when an identity source
    /// is missing, answer from the cache, or call the authorizer.
    fn authorize(
        &mut self,
        up: &handshake::Upgrade<'_>,
        route: usize,
        a: usize,
        headers: Vec<(String, String)>,
        sx: &mut Scratch,
    ) -> bool {
        let config = sx.config.clone();
        let authorizer = &config.authorizers[a];
        let mut cache_key = Vec::new();
        let mut value = Vec::new();
        for source in &authorizer.identity_sources {
            let found = match source {
                IdentitySource::Header(name) => headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| {
                        value.clear();
                        value.extend_from_slice(v.as_bytes());
                    }),
                IdentitySource::Query(name) => up
                    .query
                    .and_then(|q| event::query_value(q, name.as_bytes(), &mut value)),
            };
            if found.is_none() || value.is_empty() {
                return self.refuse_authorizer(401, None, sx);
            }
            cache_key.extend_from_slice(&(value.len() as u32).to_le_bytes());
            cache_key.extend_from_slice(&value);
        }
        let pending = Pending {
            accept: up.accept,
            protocols: up.protocols.map(<[u8]>::to_vec),
            replay: None,
        };
        if !authorizer.cache_ttl.is_zero() {
            if let Some(d) = sx.auth_cache.get(a, &cache_key, sx.now_ms).cloned() {
                return self.apply_decision(route, pending, d, &headers, up.query, sx);
            }
        }
        let request_id = sx.seq.next_id();
        let hs = Handshake {
            headers: &headers,
            query: up.query,
        };
        let call = self.call(
            sx,
            route,
            CallKind::Authorize,
            request_id,
            b"",
            Body::Authorize(&hs, &authorizer.method_arn),
        );
        sx.outbox.push(call);
        self.rare_mut().pending = Some(Box::new(Pending {
            replay: Some(Box::new(Replay {
                headers,
                query: up.query.map(str::to_string),
                cache_key,
            })),
            ..pending
        }));
        self.state = State::Connecting;
        false
    }

    /// The authorizer answered: go on with `$connect`, or refuse the upgrade.
    /// `true` when the connection opened.
    pub fn on_authorize_outcome(
        &mut self,
        outcome: Outcome<'_>,
        call: &access_log::Call<'_>,
        sx: &mut Scratch,
    ) -> bool {
        use crate::authorizer::{evaluate, Decision};
        if self.state != State::Connecting {
            return false;
        }
        let Some(mut p) = self.take_pending() else {
            return false;
        };
        let Some(replay) = p.replay.take() else {
            return false;
        };
        let config = sx.config.clone();
        let Some(route) = config.connect_route else {
            return false;
        };
        let Some(a) = config.routes[route].authorizer else {
            return false;
        };
        let authorizer = &config.authorizers[a];
        let decision = match outcome {
            Outcome::Reply { status, body, .. } => match evaluate(body, &authorizer.method_arn) {
                Decision::Unauthorized => Decision::Unauthorized,
                _ if !(200..300).contains(&status) => {
                    Decision::Error("the authorizer answered a non-2xx status")
                }
                d => d,
            },
            Outcome::Failed => Decision::Error("the authorizer is unreachable or failed"),
            Outcome::TimedOut => Decision::Error("the authorizer timed out"),
        };
        let decision = match decision {
            Decision::Allow(mut c) => {
                c.set_latency(call.latency_ms);
                Decision::Allow(c)
            }
            Decision::Error(why) => {
                log::error!("authorizer {}: {why}", authorizer.name);
                Decision::Error(why)
            }
            d => d,
        };
        if !authorizer.cache_ttl.is_zero() && !matches!(decision, Decision::Error(_)) {
            let ttl = authorizer.cache_ttl.as_millis() as u64;
            sx.auth_cache.put(
                a,
                replay.cache_key,
                sx.now_ms.saturating_add(ttl),
                decision.clone(),
            );
        }
        self.apply_decision(
            route,
            *p,
            decision,
            &replay.headers,
            replay.query.as_deref(),
            sx,
        );
        self.state == State::Open
    }

    /// Carries out an authorizer's decision: `$connect` runs on Allow.
    fn apply_decision(
        &mut self,
        route: usize,
        p: Pending,
        decision: crate::authorizer::Decision,
        headers: &[(String, String)],
        query: Option<&str>,
        sx: &mut Scratch,
    ) -> bool {
        use crate::authorizer::Decision;
        match decision {
            Decision::Allow(c) => {
                self.rare_mut().authorizer = Some(Box::new(c));
                self.run_connect(route, p, headers, query, sx)
            }
            Decision::Deny => self.refuse_authorizer(403, None, sx),
            Decision::Unauthorized => self.refuse_authorizer(401, None, sx),
            Decision::Error(_) => {
                self.refuse_authorizer(500, Some(access_log::INTEGRATION_FAILURE), sx)
            }
        }
    }

    /// Refuses the upgrade with the authorizer's JSON answer for `status`.
    fn refuse_authorizer(
        &mut self,
        status: u16,
        error: Option<access_log::ErrorInfo>,
        sx: &mut Scratch,
    ) -> bool {
        use crate::authorizer::{FAILED, FORBIDDEN, UNAUTHORIZED};
        let body = match status {
            401 => UNAUTHORIZED,
            403 => FORBIDDEN,
            _ => FAILED,
        };
        handshake::write_status(&mut sx.wbuf, status, None, "application/json", body);
        self.state = State::Done;
        if sx.access_log.is_some() {
            let request_id = sx.seq.next_id();
            let mut r = connect_record(&request_id, sx.now_ms, status);
            r.error = error;
            self.access(sx, r);
        }
        if status < 500 {
            metrics::add(&sx.metrics.worker(sx.worker).client_errors, 1);
        }
        false
    }

    fn accept(&mut self, accept: &[u8; 28], protocol: Option<&[u8]>, sx: &mut Scratch) {
        handshake::write_accept(&mut sx.wbuf, accept, protocol);
        self.state = State::Open;
        self.registered = true;
    }

    fn input<'a>(
        &'a self,
        config: &'a Config,
        route: usize,
        request_id: &'a [u8],
        message_id: &'a [u8],
        now_ms: u64,
    ) -> Input<'a> {
        Input {
            api: &config.api,
            route_key: &config.routes[route].key,
            connection_id: &self.id,
            request_id,
            message_id,
            identity: known(&self.who).expect("set at the upgrade"),
            now_ms,
            authorizer: self.rare.as_deref().and_then(|r| r.authorizer.as_deref()),
        }
    }

    /// The `$connect` integration answered: open (101) or refuse the upgrade.
    /// `true` when the connection opened (stashed frames may now be resumed).
    pub fn on_connect_outcome(
        &mut self,
        outcome: Outcome<'_>,
        call: &access_log::Call<'_>,
        sx: &mut Scratch,
    ) -> bool {
        let Some(p) = self.take_pending() else {
            return false;
        };
        if self.state != State::Connecting {
            return false;
        }
        let integration = Integration::of(&outcome, call.latency_ms);
        let (status, error) = self.answer_connect(&p, outcome, sx);
        self.log_connect(sx, call, status, error, integration);
        self.state == State::Open
    }

    /// Opens or refuses the upgrade as `$connect`'s outcome says; returns the status
    /// the client got (200 for the 101, as AWS logs it) and the gateway's error.
    fn answer_connect(
        &mut self,
        p: &Pending,
        outcome: Outcome<'_>,
        sx: &mut Scratch,
    ) -> (u16, Option<access_log::ErrorInfo>) {
        match outcome {
            Outcome::Reply {
                status, protocol, ..
            } if (200..300).contains(&status) => {
                if let Some(chosen) = protocol {
                    let offered = p.protocols.as_deref().unwrap_or(b"");
                    let ok = offered
                        .split(|&c| c == b',')
                        .any(|o| o.trim_ascii() == chosen.trim_ascii());
                    if !ok {
                        log::warn!("$connect backend chose subprotocol {:?}, which the client did not offer", String::from_utf8_lossy(chosen));
                        self.refuse(502, b"", None, sx);
                        return (502, Some(access_log::INTEGRATION_FAILURE));
                    }
                }
                self.accept(&p.accept, protocol.map(<[u8]>::trim_ascii), sx);
                (200, None)
            }
            Outcome::Reply {
                status,
                body,
                content_type,
                ..
            } => {
                let body = &body[..body.len().min(64 * 1024)];
                self.refuse(status, body, content_type, sx);
                (status, None)
            }
            Outcome::Failed => {
                self.refuse(502, b"", None, sx);
                (502, Some(access_log::INTEGRATION_FAILURE))
            }
            Outcome::TimedOut => {
                self.refuse(504, b"", None, sx);
                (504, Some(access_log::INTEGRATION_TIMEOUT))
            }
        }
    }

    /// The CONNECT line of a `$connect` that called a backend.
    fn log_connect(
        &self,
        sx: &mut Scratch,
        call: &access_log::Call<'_>,
        status: u16,
        error: Option<access_log::ErrorInfo>,
        integration: Integration,
    ) {
        if sx.access_log.is_some() {
            let mut r = connect_record(call.request_id, call.requested_ms, status);
            r.error = error;
            r.integration = Some(integration);
            self.access(sx, r);
        }
    }

    fn refuse(
        &mut self,
        status: u16,
        body: &[u8],
        content_type: Option<&[u8]>,
        sx: &mut Scratch,
    ) -> bool {
        let ct = content_type
            .and_then(|c| std::str::from_utf8(c).ok())
            .unwrap_or("text/plain");
        let body: &[u8] = if body.is_empty() && status >= 500 {
            reply::reason_phrase(status).as_bytes()
        } else {
            body
        };
        handshake::write_status(&mut sx.wbuf, status, None, ct, body);
        self.state = State::Done;
        false
    }

    /// A message route's integration answered (SPEC §5's result rules). `room`: how
    /// many more bytes the connection's queue may take; a reply that does not fit
    /// closes the connection with 1008 (its client does not read, and the reply may
    /// not be dropped silently).
    pub fn on_message_outcome(
        &mut self,
        route: usize,
        call: &access_log::Call<'_>,
        outcome: Outcome<'_>,
        room: usize,
        sx: &mut Scratch,
    ) {
        self.inflight = self.inflight.saturating_sub(1);
        let integration = Integration::of(&outcome, call.latency_ms);
        let (status, error) = if self.state == State::Open {
            self.answer_message(route, call.request_id, outcome, room, sx)
        } else {
            (200, None)
        };
        if sx.access_log.is_some() {
            let r = Record {
                route: Some(route),
                request_id: call.request_id,
                message_id: Some(call.message_id),
                requested_ms: call.requested_ms,
                status,
                error,
                integration: Some(integration),
                ..Record::default()
            };
            self.access(sx, r);
        }
    }

    /// Answers the client as a message's outcome says; returns the status it got
    /// (200 when nothing went wrong) and the gateway's error, for the access log.
    fn answer_message(
        &mut self,
        route: usize,
        request_id: &[u8],
        outcome: Outcome<'_>,
        room: usize,
        sx: &mut Scratch,
    ) -> (u16, Option<access_log::ErrorInfo>) {
        use access_log::{INTEGRATION_FAILURE, INTEGRATION_TIMEOUT, OUTBOUND_FULL, SERVER_ERROR};
        let route_response = sx.config.routes[route].route_response;
        let error = |sx: &mut Scratch, e: access_log::ErrorInfo, status| {
            reply::error_frame(&mut sx.wbuf, e.message, &self.id, request_id);
            (status, Some(e))
        };
        match outcome {
            Outcome::Reply { status, body, .. } if (200..300).contains(&status) => {
                if !route_response || body.is_empty() {
                    return (200, None);
                }
                let op = if std::str::from_utf8(body).is_ok() {
                    frame::OpCode::Text
                } else if sx.limits.allow_binary {
                    frame::OpCode::Binary
                } else {
                    return error(sx, SERVER_ERROR, 500);
                };
                let frames = body.len().div_ceil(sx.limits.max_frame_bytes.max(1)).max(1);
                if body.len() + frames * 10 > room {
                    log::info!(
                        "connectionId={} closed: a {}-byte route response does not fit its unread output",
                        String::from_utf8_lossy(&self.id),
                        body.len()
                    );
                    metrics::add(&sx.metrics.worker(sx.worker).client_errors, 1);
                    self.start_close(close::POLICY, OUTBOUND_FULL.message, sx);
                    return (400, Some(OUTBOUND_FULL));
                }
                frame::write_message(&mut sx.wbuf, op, body, sx.limits.max_frame_bytes);
                sx.metrics.worker(sx.worker).message_out(body.len());
                sx.active = true;
                (200, None)
            }
            Outcome::Reply { .. } if route_response => error(sx, SERVER_ERROR, 500),
            Outcome::Reply { .. } => (200, None),
            Outcome::Failed => error(sx, INTEGRATION_FAILURE, 502),
            Outcome::TimedOut => error(sx, INTEGRATION_TIMEOUT, 504),
        }
    }

    /// The `$disconnect` call owed for this connection, if any (one try, SPEC §5).
    pub fn disconnect_call(&mut self, sx: &mut Scratch) -> Option<Outgoing> {
        if !self.registered {
            return None;
        }
        self.registered = false;
        let request_id = sx.seq.next_id();
        let (code, reason) = self.close_status();
        if sx.access_log.is_some() {
            let r = Record {
                event: EventType::Disconnect,
                request_id: &request_id,
                requested_ms: sx.now_ms,
                status: 200,
                disconnect: Some((code, reason)),
                ..Record::default()
            };
            self.access(sx, r);
        }
        let config = &*sx.config;
        let route = config.disconnect_route?;
        if !matches!(
            config.integrations[config.routes[route].integration].kind,
            IntegrationKind::Http(_)
        ) {
            return None;
        }
        let body = Body::Disconnect {
            code,
            reason: reason.as_bytes(),
        };
        Some(self.call(sx, route, CallKind::Disconnect, request_id, b"", body))
    }

    /// Writes one backend call's whole HTTP request into a pooled buffer.
    fn call(
        &self,
        sx: &mut Scratch,
        route: usize,
        kind: CallKind,
        request_id: id::Text,
        message_id: &[u8],
        body: Body<'_>,
    ) -> Outgoing {
        // Disjoint borrows of the scratch's fields; no Arc clone on the message path.
        let Scratch {
            config,
            pool,
            render,
            selector,
            now_ms,
            signer,
            ..
        } = sx;
        let config = &**config;
        let integration = match kind {
            CallKind::Authorize => {
                let a = config.routes[route].authorizer.expect("an authorizer call");
                config.authorizers[a].integration
            }
            _ => config.routes[route].integration,
        };
        let IntegrationKind::Http(http) = &config.integrations[integration].kind else {
            unreachable!("only HTTP integrations make calls");
        };
        let mut request = pool.take();
        let input = self.input(config, route, &request_id, message_id, *now_ms);
        let kept = self.rare.as_deref().and_then(|r| r.headers.as_deref());
        let hs = kept.map(|h| Handshake {
            headers: h,
            query: None,
        });
        integration::write_request(
            &mut request,
            render,
            selector,
            signer,
            http,
            &input,
            body,
            hs.as_ref(),
        );
        Outgoing {
            route,
            kind,
            request,
            request_id,
            message_id: message_id.try_into().ok(),
        }
    }

    /// Sends a close frame and records why, for `$disconnect`.
    pub fn start_close(&mut self, code: u16, reason: &str, sx: &mut Scratch) {
        frame::write_close(&mut sx.wbuf, Some(code), reason);
        self.set_close_status(code, reason);
        self.state = State::Closing;
    }

    /// The [`Rare`] box, made when first needed.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    /// Takes the pending upgrade; the [`Rare`] box goes when nothing else is in it.
    fn take_pending(&mut self) -> Option<Box<Pending>> {
        let p = self.rare.as_mut().and_then(|r| r.pending.take());
        if self.rare.as_deref().is_some_and(Rare::is_empty) {
            self.rare = None;
        }
        p
    }

    /// Hands the [`Partial`] box back to the worker once the reader is between
    /// messages with nothing stashed (called where processing of an input ends).
    fn settle(&mut self, sx: &mut Scratch) {
        if self.partial.as_deref().is_some_and(Partial::is_idle) {
            let p = self.partial.take().expect("present");
            if sx.partials.len() < PARTIALS_KEPT {
                sx.partials.push(p);
            }
        }
    }

    fn set_close_status(&mut self, code: u16, reason: &str) {
        if self
            .rare
            .as_deref()
            .is_none_or(|r| r.close_status.is_none())
        {
            self.rare_mut().close_status = Some((code, reason.to_string()));
        }
    }

    fn release_message(&mut self, ev: &Event, pool: &mut Pool) {
        if let Event::Message {
            payload: Payload::Assembled,
            ..
        } = ev
        {
            if let Some(b) = self.partial.as_mut().and_then(|p| p.asm.take()) {
                pool.give(b);
            }
        }
    }

    fn stash(&mut self, rest: &[u8], sx: &mut Scratch) {
        if !rest.is_empty() {
            let p = self
                .partial
                .get_or_insert_with(|| sx.partials.pop().unwrap_or_default());
            let mut b = p.inbuf.take().unwrap_or_else(|| {
                p.inbuf_at = 0;
                sx.pool.take()
            });
            b.extend_from_slice(rest);
            p.inbuf = Some(b);
        }
    }

    /// One event of an open connection; `input` is what the event's ranges index.
    fn on_event(&mut self, input: &[u8], ev: Event, sx: &mut Scratch) {
        sx.active = true;
        match ev {
            Event::Message {
                kind,
                payload: Payload::Input(r),
            } => self.on_message(kind, &input[r], sx),
            Event::Message {
                kind,
                payload: Payload::Assembled,
            } => {
                let asm = self.partial.as_mut().and_then(|p| p.asm.take());
                let msg = asm.unwrap_or_default();
                self.on_message(kind, &msg, sx);
                sx.pool.give(msg);
            }
            Event::Ping(r) => {
                frame::write_message(&mut sx.wbuf, frame::OpCode::Pong, &input[r], 125)
            }
            Event::Pong(_) => self.pong_seen = true,
            Event::Close { code, reason } => {
                let reason = std::str::from_utf8(&input[reason]).unwrap_or("");
                frame::write_close(&mut sx.wbuf, code, reason);
                self.set_close_status(code.unwrap_or(close::NO_STATUS), reason);
                self.state = State::Done;
            }
        }
    }

    /// Routes one data message and answers it or asks its backend.
    fn on_message(&mut self, kind: Kind, body: &[u8], sx: &mut Scratch) {
        // A borrow of the field, not an Arc clone: no shared counter on the hot path.
        let config = &*sx.config;
        let counters = sx.metrics.worker(sx.worker);
        let route = match kind {
            Kind::Text => sx.selector.select(&config.table, body),
            Kind::Binary => config.default_route,
        };
        counters.message_in(route, body.len());
        let request_id = sx.seq.next_id();
        let Some(route) = route else {
            metrics::add(&counters.client_errors, 1);
            let e = access_log::FORBIDDEN;
            reply::error_frame(&mut sx.wbuf, e.message, &self.id, &request_id);
            if sx.access_log.is_some() {
                self.access(
                    sx,
                    message_record(&request_id, None, None, sx.now_ms, 403, Some(e)),
                );
            }
            return;
        };
        if let Some(t) = sx.throttle.as_deref_mut() {
            if t.per_connection.is_limited() && self.bucket.is_none() {
                self.bucket = Some(Box::new(Bucket::full(&t.per_connection, sx.mono_us)));
            }
            if !t.message(route, self.bucket.as_deref_mut(), sx.mono_us) {
                // Over a bucket: not integrated; the connection stays open (SPEC §10.3).
                metrics::add(&counters.client_errors, 1);
                counters.throttled(route);
                let e = access_log::THROTTLED;
                reply::error_frame(&mut sx.wbuf, e.message, &self.id, &request_id);
                if sx.access_log.is_some() {
                    let r = message_record(&request_id, Some(route), None, sx.now_ms, 429, Some(e));
                    self.access(sx, r);
                }
                return;
            }
        }
        let message_id = sx.seq.next_id();
        // Request validation (SPEC §14): a route without a model returns at once.
        if let Err(invalid) = config.models.check(route, body, &mut sx.selector) {
            metrics::add(&counters.client_errors, 1);
            crate::model::bad_request_frame(&mut sx.wbuf, &self.id, &message_id);
            log::debug!("message refused, bad request body: {invalid}");
            if sx.access_log.is_some() {
                let e = Some(crate::model::BAD_REQUEST_BODY);
                let r = Record {
                    validation_error: Some(&invalid.reason),
                    ..message_record(
                        &request_id,
                        Some(route),
                        Some(&message_id),
                        sx.now_ms,
                        400,
                        e,
                    )
                };
                self.access(sx, r);
            }
            return;
        }
        match &config.integrations[config.routes[route].integration].kind {
            IntegrationKind::Mock { status, .. } => {
                let failed = config.routes[route].route_response && !(200..300).contains(status);
                let authorizer = self.rare.as_deref().and_then(|r| r.authorizer.as_deref());
                let ids = reply::Ids {
                    authorizer,
                    connection: &self.id,
                    request: &request_id,
                    message: &message_id,
                };
                let sent = reply::mock_route(
                    &mut sx.wbuf,
                    &mut sx.render,
                    config,
                    route,
                    kind,
                    body,
                    &ids,
                );
                if let Some(n) = sent {
                    sx.metrics.worker(sx.worker).message_out(n);
                }
                if sx.access_log.is_some() {
                    let (status, error) = match failed {
                        true => (500, Some(access_log::SERVER_ERROR)),
                        false => (200, None),
                    };
                    let r = message_record(
                        &request_id,
                        Some(route),
                        Some(&message_id),
                        sx.now_ms,
                        status,
                        error,
                    );
                    self.access(sx, r);
                }
            }
            IntegrationKind::Http(_) => {
                let data = Body::Message {
                    data: body,
                    binary: kind == Kind::Binary,
                };
                let call = self.call(sx, route, CallKind::Message, request_id, &message_id, data);
                sx.outbox.push(call);
                self.inflight = self.inflight.saturating_add(1);
            }
        }
    }

    /// Returns every borrowed buffer to the pool.
    pub fn release(&mut self, pool: &mut Pool) {
        if let Some(p) = self.partial.as_mut() {
            p.inbuf_at = 0;
            for b in [p.inbuf.take(), p.asm.take()].into_iter().flatten() {
                pool.give(b);
            }
        }
    }

    /// Writes one access-log line about this connection (SPEC §10.4). Callers check
    /// `sx.access_log.is_some()` first: without `[access_log]` a line costs one branch.
    fn access<'a>(&'a self, sx: &mut Scratch, mut r: Record<'a>) {
        if let Some(w) = sx.access_log.as_mut() {
            r.connection_id = &self.id;
            r.identity = known(&self.who);
            r.authorizer = self.rare.as_deref().and_then(|r| r.authorizer.as_deref());
            w.log(&sx.config, &r);
        }
    }
}

/// A CONNECT line's values (the connection's own are added by `Session::access`).
fn connect_record(request_id: &[u8], requested_ms: u64, status: u16) -> Record<'_> {
    Record {
        event: EventType::Connect,
        request_id,
        requested_ms,
        status,
        ..Record::default()
    }
}

/// A MESSAGE line's values for a message answered without a backend call.
fn message_record<'a>(
    request_id: &'a [u8],
    route: Option<usize>,
    message_id: Option<&'a [u8]>,
    requested_ms: u64,
    status: u16,
    error: Option<access_log::ErrorInfo>,
) -> Record<'a> {
    Record {
        event: EventType::Message,
        route,
        request_id,
        message_id,
        requested_ms,
        status,
        error,
        ..Record::default()
    }
}

pub mod intern;

#[cfg(test)]
mod tests;
