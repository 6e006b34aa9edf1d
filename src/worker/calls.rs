//! Backend calls inside the worker's event loop. The pool (`upstream::pool`) decides
//! which keep-alive connection a call goes on, whether a connection is reused after a
//! reply and whether a failed call is retried; this file carries those decisions out
//! on sockets, reads replies, and hands each outcome to its client's session.
//! Timeouts ride the worker's timer wheel.
//!
//! Requests are not written when a call starts: they are appended to their
//! connection's output buffer, and each connection with new requests is written
//! once, at the end of the loop turn ([`Worker::flush_upstreams`]), so the calls a
//! turn starts for one backend leave in one `write` (SPEC §16). Replies that a
//! backend sends together are parsed out of one read, in order
//! ([`response::replies`]).

use std::time::Instant;

use mio::event::Event as MioEvent;
use mio::Interest;

use super::Worker;
use crate::access_log;
use crate::config::IntegrationKind;
use crate::id;
use crate::integration::{self, CallKind, Outcome, Outgoing};
use crate::timer::{self, Kind as TimerKind};
use crate::token;
use crate::upstream::pool::{Decision, Failure, ReplyEnd, Why};
use crate::upstream::{self, response, MAX_REPLY_BYTES};

/// One backend call in flight.
#[derive(Debug)]
pub(super) struct Call {
    /// The client (slab key, generation); `None` for `$disconnect`.
    client: Option<(usize, u32)>,
    route: usize,
    kind: CallKind,
    request: Vec<u8>,
    request_id: id::Text,
    /// A message's id, and when the request was made (wall-clock ms): what its
    /// access-log line repeats from the event.
    message_id: Option<id::Text>,
    requested_ms: u64,
    pool: usize,
    upstream: Option<usize>,
    retried: bool,
    generation: u32,
    started: Instant,
    /// The call's timeout entry, cancelled when it is answered.
    timer: Option<timer::Handle>,
}

impl Worker {
    /// Starts every call the session just served put in the outbox.
    pub(super) fn start_calls(&mut self, client: Option<(usize, u32)>) {
        // In order: calls reach a one-connection pool in arrival order.
        let mut outbox = std::mem::take(&mut self.shared.outbox);
        for out in outbox.drain(..) {
            self.start_call(client, out);
        }
        self.shared.outbox = outbox;
    }

    fn start_call(&mut self, client: Option<(usize, u32)>, out: Outgoing) {
        let config = &self.shared.config;
        let integration = integration_of(config, out.route, out.kind);
        let IntegrationKind::Http(http) = &config.integrations[integration].kind else {
            unreachable!("only HTTP integrations make calls");
        };
        let timeout = http.timeout;
        let pool = self.pool_of[integration].expect("HTTP integrations have a pool");
        self.call_generation = self.call_generation.wrapping_add(1);
        let call = Call {
            client,
            route: out.route,
            kind: out.kind,
            request: out.request,
            request_id: out.request_id,
            message_id: out.message_id,
            requested_ms: self.shared.now_ms,
            pool,
            upstream: None,
            retried: false,
            generation: self.call_generation,
            started: self.now,
            timer: None,
        };
        let key = self.calls.insert(call);
        let h = self.timers.arm(
            self.now + timeout,
            key,
            self.call_generation,
            TimerKind::Call,
        );
        self.calls[key].timer = Some(h);
        self.pools[pool].call(key);
        self.run_pool(pool);
    }

    /// Carries out pool `p`'s decisions, oldest first. One that reports an event
    /// (a socket that cannot be made, a write that fails) adds decisions that this
    /// same loop runs, so the stack stays flat however many calls wait.
    fn run_pool(&mut self, p: usize) {
        if !self.pools[p].claim() {
            return;
        }
        while let Some(d) = self.pools[p].next_decision() {
            match d {
                Decision::Send { call, conn } => self.send_on(p, call, conn),
                Decision::Open { call } => self.open_for(p, call),
                Decision::Retry { call } => {
                    if let Some(c) = self.calls.get_mut(call) {
                        c.retried = true;
                    }
                    self.open_for(p, call);
                }
                Decision::Fail { call, why } => self.fail(p, call, why),
                Decision::Close { conn } => self.drop_upstream(conn),
            }
        }
    }

    /// Queues call `ck`'s request on the connected connection `uk` (idle, or with
    /// room for another request); it is written at the end of the turn.
    fn send_on(&mut self, p: usize, ck: usize, uk: usize) {
        let up = self
            .upstreams
            .get_mut(uk)
            .filter(|up| matches!(up.state, upstream::State::Idle | upstream::State::Busy));
        let (call, up) = match (self.calls.get_mut(ck), up) {
            (Some(call), Some(up)) => (call, up),
            // The call ended while the decision waited: the connection stays usable.
            (None, Some(up)) => {
                let in_flight = up.calls.len();
                return self.pools[p].returned(uk, in_flight);
            }
            // Not expected (the pool hands out connected connections only): start over.
            (Some(_), None) => return self.pools[p].call(ck),
            (None, None) => return,
        };
        call.upstream = Some(uk);
        up.push_request(ck, &call.request);
        up.state = upstream::State::Busy;
        if !up.flush_listed {
            up.flush_listed = true;
            self.upstream_flush.push(uk);
        }
    }

    /// Writes the requests this turn queued, one write per connection (SPEC §16).
    /// A write that fails ends its connection's calls, which may queue requests on
    /// other connections: they are written in the same loop.
    pub(super) fn flush_upstreams(&mut self) {
        while let Some(uk) = self.upstream_flush.pop() {
            let Some(up) = self.upstreams.get_mut(uk) else {
                continue;
            };
            up.flush_listed = false;
            if up.state == upstream::State::Busy {
                self.upstream_write(uk);
            }
        }
        for p in &mut self.pools {
            p.end_turn();
        }
    }

    /// Opens a connection to pool `p`'s backend for call `ck`; the request goes out
    /// once it is connected.
    fn open_for(&mut self, p: usize, ck: usize) {
        if !self.calls.contains(ck) {
            return self.pools[p].unused(None);
        }
        self.upstream_generation = self.upstream_generation.wrapping_add(1);
        let generation = self.upstream_generation;
        let entry = self.upstreams.vacant_entry();
        let uk = entry.key();
        let addr = self.pools[p].addr;
        let tls = self.pools[p].tls.as_ref();
        let opened = upstream::Conn::connect(addr, p, generation, tls).and_then(|mut c| {
            let interest = Interest::READABLE | Interest::WRITABLE;
            self.poll
                .registry()
                .register(&mut c.stream, token::upstream(uk), interest)?;
            entry.insert(c);
            Ok(())
        });
        match opened {
            Ok(()) => {
                crate::metrics::add(&self.metrics.worker(self.index).upstream_connections, 1);
                let h = self.timers.arm(
                    self.now + self.connect_timeout[p],
                    uk,
                    generation,
                    TimerKind::UpstreamConnect,
                );
                self.upstreams[uk].connect_timer = Some(h);
                self.upstreams[uk].push_request(ck, &self.calls[ck].request);
                self.calls[ck].upstream = Some(uk);
            }
            Err(e) => {
                let backend = self.pools[p].name();
                log::warn!("worker {}: cannot connect to {backend}: {e}", self.index);
                self.pools[p].open_failed(ck);
            }
        }
    }

    /// Ends call `ck` with a failure the pool decided.
    fn fail(&mut self, p: usize, ck: usize, why: Why) {
        match why {
            Why::QueueFull => {
                log::warn!(
                    "worker {}: backend {} queue full ({} waiting)",
                    self.index,
                    self.pools[p].addr,
                    self.pools[p].queued()
                );
                self.execution_error();
            }
            // The gateway itself could not run the call; logged where it happened.
            Why::NoSocket => self.execution_error(),
            Why::Backend => {}
        }
        self.finish_call(ck, Outcome::Failed);
    }

    /// The gateway itself could not run the call (no socket, no room in the queue).
    fn execution_error(&self) {
        crate::metrics::add(&self.metrics.worker(self.index).execution_errors, 1);
    }

    fn upstream_write(&mut self, uk: usize) {
        let Some(up) = self.upstreams.get_mut(uk) else {
            return;
        };
        if let Err(e) = up.write_out() {
            log::debug!("worker {}: backend write failed: {e}", self.index);
            self.upstream_failed(uk);
        }
    }

    pub(super) fn on_upstream_event(&mut self, uk: usize, ev: &MioEvent) {
        let Some(up) = self.upstreams.get_mut(uk) else {
            return;
        };
        match up.state {
            upstream::State::Closing => return,
            upstream::State::Connecting => {
                // Readable: the backend's side of a TLS handshake.
                if !(ev.is_writable()
                    || ev.is_readable()
                    || ev.is_error()
                    || ev.is_read_closed()
                    || ev.is_write_closed())
                {
                    return;
                }
                let result = up.finish_connect();
                if !matches!(result, Ok(false)) {
                    if let Some(h) = up.connect_timer.take() {
                        self.timers.cancel(h);
                    }
                }
                match result {
                    // Every connection is opened for a call. With `pipeline > 1` it
                    // takes waiting calls now, and all go out in one write.
                    Ok(true) if !up.calls.is_empty() => {
                        up.state = upstream::State::Busy;
                        let p = up.pool;
                        self.pools[p].connected(uk);
                        self.run_pool(p);
                        self.upstream_write(uk);
                    }
                    Ok(true) => return self.upstream_failed(uk),
                    Ok(false) => return,
                    Err(e) => {
                        let backend = self.pools[up.pool].name();
                        log::warn!(
                            "worker {}: backend {backend}: connect failed: {e}",
                            self.index
                        );
                        return self.upstream_failed(uk);
                    }
                }
            }
            upstream::State::Busy if ev.is_writable() => self.upstream_write(uk),
            _ => {}
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.upstream_read(uk, ev.is_read_closed());
        }
    }

    fn upstream_read(&mut self, uk: usize, read_closed: bool) {
        // A read stops at the reply limit, counted over every reply buffered; once
        // the whole replies are taken out, the rest waiting in the socket is read
        // on here, since no new event comes for it (edge-triggered). Each round
        // takes at least one reply out, so the work stays linear.
        while self.read_replies(uk, read_closed) {}
    }

    /// One read and the replies it completes; whether the read stopped at the
    /// limit with a call still waiting (read again).
    fn read_replies(&mut self, uk: usize, read_closed: bool) -> bool {
        let Some(up) = self.upstreams.get_mut(uk) else {
            return false;
        };
        // A read error ends the reply like EOF does. Reading stops just past the
        // reply limit: the parser then fails the reply, however fast the backend is.
        let eof = up
            .read_available(&mut self.rbuf, read_closed, MAX_REPLY_BYTES + 1)
            .unwrap_or(true);
        let capped = !eof && up.inbuf.len() > MAX_REPLY_BYTES;
        match up.state {
            upstream::State::Busy => {}
            upstream::State::Idle if eof || !up.inbuf.is_empty() => {
                // The backend closed (or spoke on) an idle keep-alive connection.
                self.upstream_failed(uk);
                return false;
            }
            _ => return false,
        }
        // Every reply the read brought, in order, each to the oldest call in flight.
        let generation = up.generation;
        let mut buf = std::mem::take(&mut up.inbuf);
        let mut parser = std::mem::take(&mut up.parser);
        let (parsed, res) =
            response::replies(&mut parser, &mut buf, 0, eof, MAX_REPLY_BYTES, |buf, r| {
                self.complete(uk, buf, r)
            });
        let Some(up) = self
            .upstreams
            .get_mut(uk)
            .filter(|up| up.generation == generation && up.state != upstream::State::Closing)
        else {
            return false;
        };
        up.parser = parser;
        let started = parsed < buf.len();
        up.keep_inbuf(buf, parsed);
        match res {
            // A FIN after the last reply: the idle connection is done.
            Ok(()) if eof && up.state == upstream::State::Idle => self.upstream_failed(uk),
            Ok(()) => return capped && parsed > 0 && up.state == upstream::State::Busy,
            Err(e) => {
                if started {
                    log::warn!("worker {}: bad backend reply: {e:?}", self.index);
                }
                self.upstream_failed(uk);
            }
        }
        false
    }

    /// A whole reply arrived on `uk` for its oldest call: deliver it, then the pool
    /// reuses the connection (which may have more calls in flight); or, when it is
    /// not reusable, close it before delivering, and fail the calls still on it
    /// after. Whether another reply is expected on `uk`.
    fn complete(&mut self, uk: usize, buf: &[u8], resp: response::Response) -> bool {
        let up = &self.upstreams[uk];
        let Some(&(ck, request_end)) = up.calls.front() else {
            return false;
        };
        let generation = up.generation;
        let end = ReplyEnd {
            keep_alive: resp.keep_alive,
            // With more calls in flight, the bytes after are the next reply.
            leftover: resp.end < buf.len() && up.calls.len() == 1,
            request_written: up.request_sent(request_end),
        };
        if end.leftover {
            log::warn!(
                "worker {}: backend {} sent {} bytes after its reply; closing the connection",
                self.index,
                self.pools[up.pool].addr,
                buf.len() - resp.end
            );
        }
        let p = up.pool;
        // A connection that closes after this reply is marked so, and leaves the
        // pool, before the outcome is delivered: delivering can start calls at once
        // (a `$connect` reply lets the frames its client sent early through), and
        // those must go on another connection, not be failed with this one unsent.
        let rest = (!end.reusable()).then(|| {
            let up = &mut self.upstreams[uk];
            let mut rest = std::mem::take(&mut up.calls);
            rest.pop_front();
            up.state = upstream::State::Closing;
            self.pools[p].replied(uk, end, 0);
            rest
        });
        let route = self.calls[ck].route;
        let kind = self.calls[ck].kind;
        let integration = integration_of(&self.shared.config, route, kind);
        let (lambda, invoke) = match &self.shared.config.integrations[integration].kind {
            IntegrationKind::Http(h) => (h.lambda, h.invoke.as_ref()),
            _ => (false, None),
        };
        let range = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &buf[r]);
        let invoke_failed = invoke.filter(|_| resp.function_error || resp.status >= 300);
        if kind == CallKind::Authorize && invoke.is_some() && resp.function_error {
            // A Lambda authorizer that throws "Unauthorized" refuses with 401 (SPEC
            // §11); any other function error is the authorizer failing.
            let body = &buf[resp.body.clone()];
            if crate::authorizer::is_unauthorized_error(body) {
                self.finish_call(
                    ck,
                    Outcome::Reply {
                        status: 200,
                        body: b"\"Unauthorized\"",
                        content_type: None,
                        protocol: None,
                    },
                );
            } else {
                let detail = String::from_utf8_lossy(&body[..body.len().min(200)]);
                log::error!(
                    "worker {}: Lambda authorizer failed: {}",
                    self.index,
                    detail.escape_debug()
                );
                self.finish_call(ck, Outcome::Failed);
            }
        } else if let Some(invoke) = invoke_failed {
            // A function error or an Invoke API error: "Internal server error" (SPEC
            // §12). The log names the function, never credentials: an Invoke API
            // error's body can quote the canonical request (the session token), so
            // only a function error's own message is shown.
            if resp.function_error {
                let body = &buf[resp.body.clone()];
                let detail = String::from_utf8_lossy(&body[..body.len().min(200)]);
                log::error!(
                    "worker {}: Lambda function {} failed: {}",
                    self.index,
                    invoke.function,
                    detail.escape_debug()
                );
            } else {
                log::error!(
                    "worker {}: the Lambda Invoke API refused calling {} (status {})",
                    self.index,
                    invoke.function,
                    resp.status
                );
            }
            self.finish_call(ck, Outcome::Failed);
        } else if lambda {
            match integration::decode_lambda(&buf[resp.body.clone()]) {
                Some(l) => self.finish_call(
                    ck,
                    Outcome::Reply {
                        status: l.status,
                        body: &l.body,
                        content_type: None,
                        protocol: l.protocol.as_deref(),
                    },
                ),
                None => self.finish_call(ck, Outcome::Failed),
            }
        } else {
            let outcome = Outcome::Reply {
                status: resp.status,
                body: &buf[resp.body.clone()],
                content_type: range(&resp.content_type),
                protocol: range(&resp.protocol),
            };
            self.finish_call(ck, outcome);
        }
        // The calls that were in flight behind this reply on a closing connection
        // fail (their requests went out).
        if let Some(rest) = rest {
            self.abandon(p, rest);
            self.run_pool(p);
            return false;
        }
        // Delivering the outcome never ends this connection; if it did, its calls
        // are already taken care of.
        let Some(up) = self
            .upstreams
            .get_mut(uk)
            .filter(|up| up.generation == generation && up.state != upstream::State::Closing)
        else {
            return false;
        };
        up.reply_done();
        let in_flight = up.calls.len();
        self.pools[p].replied(uk, end, in_flight);
        self.run_pool(p);
        self.upstreams
            .get(uk)
            .is_some_and(|up| up.generation == generation && up.state == upstream::State::Busy)
    }

    /// The calls still in flight on a connection that closed fail (SPEC §16: none
    /// is retried, the backend may have run it).
    fn abandon(&mut self, p: usize, calls: std::collections::VecDeque<(usize, u64)>) {
        for (ck, _) in calls {
            if let Some(c) = self.calls.get_mut(ck) {
                c.upstream = None;
            }
            self.pools[p].abandon(ck);
        }
    }

    /// The connection failed (or an idle one closed): the pool closes it and retries
    /// or fails its call.
    fn upstream_failed(&mut self, uk: usize) {
        let Some(up) = self.upstreams.get_mut(uk) else {
            return;
        };
        if up.state == upstream::State::Closing {
            return;
        }
        // One call in flight: it may be retried (SPEC §5). More: all fail (§16).
        let mut rest = std::mem::take(&mut up.calls);
        let call = if rest.len() <= 1 {
            rest.pop_front().map(|(ck, _)| ck)
        } else {
            None
        };
        let retried = call
            .and_then(|ck| self.calls.get(ck))
            .is_some_and(|c| c.retried);
        let failure = Failure {
            call,
            reused: up.reused,
            reply_started: up.parser.started(&up.inbuf),
            retried,
        };
        up.state = upstream::State::Closing;
        let p = up.pool;
        if let Some(c) = call.and_then(|ck| self.calls.get_mut(ck)) {
            c.upstream = None;
        }
        self.pools[p].failed(uk, failure);
        self.abandon(p, rest);
        self.run_pool(p);
    }

    /// Closes an upstream connection the pool gave up (its slot is already free).
    fn drop_upstream(&mut self, uk: usize) {
        let Some(mut up) = self.upstreams.try_remove(uk) else {
            return;
        };
        if let Some(h) = up.connect_timer.take() {
            self.timers.cancel(h);
        }
        up.close_notify();
        let _ = self.poll.registry().deregister(&mut up.stream);
        crate::metrics::sub(&self.metrics.worker(self.index).upstream_connections, 1);
    }

    /// Ends a call: the client's session learns the outcome.
    fn finish_call(&mut self, ck: usize, outcome: Outcome<'_>) {
        let Some(call) = self.calls.try_remove(ck) else {
            return;
        };
        let Call {
            client,
            route,
            kind,
            request,
            request_id,
            message_id,
            requested_ms,
            started,
            timer,
            ..
        } = call;
        if let Some(h) = timer {
            self.timers.cancel(h);
        }
        self.shared.pool.give(request);
        let elapsed = self.now.saturating_duration_since(started);
        let ok = matches!(&outcome, Outcome::Reply { status, .. } if (200..300).contains(status));
        if kind != CallKind::Authorize {
            // The route's integration metrics count its own backend, not its authorizer.
            self.metrics
                .worker(self.index)
                .integration(route, elapsed, ok);
        }
        match (&outcome, kind) {
            (Outcome::Failed, _) | (Outcome::TimedOut, _) => {
                log::info!(
                    "route {} {:?}: backend {:?} after {elapsed:?}",
                    self.shared.config.routes[route].key,
                    kind,
                    outcome
                )
            }
            _ => log::trace!(
                "route {} answered in {elapsed:?}",
                self.shared.config.routes[route].key
            ),
        }
        if let Some(client) = client {
            let call = access_log::Call {
                request_id: &request_id,
                message_id: message_id.as_ref().map_or(&[], |m| &m[..]),
                requested_ms,
                latency_ms: elapsed.as_millis() as u64,
            };
            self.deliver(client, kind, route, &call, outcome);
        }
        // Whatever became of the client, a call fewer may end a shutdown's drain.
        self.drain_progress();
    }

    /// A call (`$connect`'s, or an authorizer's when `$connect` has none) answered
    /// and the upgrade went out: the connection's timers start, the frames it sent
    /// early are processed, and reading goes on (it stopped at the early-input
    /// bound, and bytes that waited meanwhile raise no new event).
    fn upgraded_after_call(&mut self, key: usize, generation: u32) {
        self.sync_timer(key);
        let conn = &mut self.conns[key];
        conn.session.resume(&mut self.shared);
        self.start_calls(Some((key, generation)));
        self.finish_output(key);
        self.resume_reading(key);
    }

    /// Hands a call's outcome to its client's session, if the client is still there.
    fn deliver(
        &mut self,
        (key, generation): (usize, u32),
        kind: CallKind,
        route: usize,
        call: &access_log::Call<'_>,
        outcome: Outcome<'_>,
    ) {
        let limit = self.shared.config.limits.max_pending_outbound_bytes;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation {
            return;
        }
        match kind {
            CallKind::Connect if conn.session.is_abandoned() => {
                conn.session
                    .on_abandoned_connect(&outcome, call, &mut self.shared);
                return self.close(key);
            }
            CallKind::Connect => {
                if conn
                    .session
                    .on_connect_outcome(outcome, call, &mut self.shared)
                {
                    return self.upgraded_after_call(key, generation);
                }
            }
            CallKind::Message => {
                // Replies of calls already in flight when reading paused may take
                // the queue past the limit, up to twice it; beyond, the client that
                // does not read is closed (1008) rather than buffered without bound.
                let queued = conn.pending_out() + self.shared.wbuf.len();
                let room = (2 * limit).saturating_sub(queued);
                conn.session
                    .on_message_outcome(route, call, outcome, room, &mut self.shared);
                if conn.read_paused || conn.session.is_holding() {
                    // A call fewer in flight: reading may go on (at the turn's end).
                    self.resumes.push(key);
                }
            }
            CallKind::Authorize if conn.session.is_abandoned() => {
                conn.session.on_abandoned_authorize();
                return self.close(key);
            }
            CallKind::Authorize => {
                let opened = conn
                    .session
                    .on_authorize_outcome(outcome, call, &mut self.shared);
                // Allowed: `$connect`'s own call, if it has one, goes out now.
                self.start_calls(Some((key, generation)));
                if opened {
                    return self.upgraded_after_call(key, generation);
                }
            }
            CallKind::Disconnect => {}
        }
        self.finish_output(key);
    }

    /// Whether a `$connect` or message call is still waiting for its backend.
    pub(super) fn calls_in_flight(&self) -> bool {
        self.calls
            .iter()
            .any(|(_, c)| c.kind != CallKind::Disconnect)
    }

    /// A call's timeout fired.
    pub(super) fn on_call_timeout(&mut self, ck: usize, generation: u32) {
        let Some(call) = self.calls.get(ck) else {
            return;
        };
        if call.generation != generation {
            return;
        }
        let (p, conn) = (call.pool, call.upstream);
        // A connection mid-request cannot be reused: the calls behind this one on
        // it fail (their replies would follow this one's).
        let mut rest = std::collections::VecDeque::new();
        if let Some(up) = conn.and_then(|uk| self.upstreams.get_mut(uk)) {
            rest = std::mem::take(&mut up.calls);
            rest.retain(|&(c, _)| c != ck);
            up.state = upstream::State::Closing;
        }
        self.pools[p].cancel(ck, conn);
        self.abandon(p, rest);
        self.finish_call(ck, Outcome::TimedOut);
        self.run_pool(p);
    }

    /// An upstream connect timeout fired.
    pub(super) fn on_connect_timeout(&mut self, uk: usize, generation: u32) {
        let Some(up) = self.upstreams.get(uk) else {
            return;
        };
        if up.generation == generation && up.state == upstream::State::Connecting {
            log::warn!(
                "worker {}: connect to {} timed out",
                self.index,
                self.pools[up.pool].name()
            );
            self.upstream_failed(uk);
        }
    }

    /// A client connection went away: its `$disconnect` is owed, if any.
    pub(super) fn send_disconnect(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(out) = conn.session.disconnect_call(&mut self.shared) {
            self.start_call(None, out);
        }
    }
}

/// The integration a call rides: the route's, or its authorizer's.
fn integration_of(config: &crate::config::Config, route: usize, kind: CallKind) -> usize {
    match (kind, config.routes[route].authorizer) {
        (CallKind::Authorize, Some(a)) => config.authorizers[a].integration,
        _ => config.routes[route].integration,
    }
}
