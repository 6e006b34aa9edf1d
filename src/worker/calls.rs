//! Backend calls inside the worker's event loop: a call waits for a pooled keep-alive
//! connection (or opens one, up to `pool_size`), writes its request, reads the reply,
//! and hands the outcome to its client's session. Timeouts ride the worker's timer
//! wheel; a reused connection that dies before the first reply byte is retried once
//! on a fresh one (SPEC §5).

use std::time::Instant;

use mio::event::Event as MioEvent;
use mio::Interest;

use super::Worker;
use crate::config::IntegrationKind;
use crate::id;
use crate::integration::{self, CallKind, Outcome, Outgoing};
use crate::timer::{self, Kind as TimerKind};
use crate::token;
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
        let integration = config.routes[out.route].integration;
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
        self.dispatch(key, false);
    }

    /// Gives a call a connection: an idle one (unless `fresh`), a new one while the
    /// pool has room, or a place in the wait queue.
    fn dispatch(&mut self, ck: usize, fresh: bool) {
        let p = self.calls[ck].pool;
        if !fresh {
            if let Some(uk) = self.pools[p].idle.pop() {
                return self.assign(uk, ck);
            }
        }
        let pool = &mut self.pools[p];
        if pool.open < pool.size {
            self.upstream_generation = self.upstream_generation.wrapping_add(1);
            let generation = self.upstream_generation;
            let entry = self.upstreams.vacant_entry();
            let uk = entry.key();
            let opened = upstream::Conn::connect(pool.addr, p, generation).and_then(|mut c| {
                let interest = Interest::READABLE | Interest::WRITABLE;
                self.poll
                    .registry()
                    .register(&mut c.stream, token::upstream(uk), interest)?;
                entry.insert(c);
                Ok(())
            });
            match opened {
                Ok(()) => {
                    pool.open += 1;
                    crate::metrics::add(&self.metrics.worker(self.index).upstream_connections, 1);
                    self.timers.arm(
                        self.now + self.connect_timeout[p],
                        uk,
                        generation,
                        TimerKind::UpstreamConnect,
                    );
                    self.assign(uk, ck);
                }
                Err(e) => {
                    log::warn!(
                        "worker {}: cannot connect to {}: {e}",
                        self.index,
                        pool.addr
                    );
                    self.execution_error();
                    self.finish_call(ck, Outcome::Failed);
                }
            }
        } else if pool.queue.len() < pool.max_queued {
            pool.queue.push_back(ck);
        } else {
            log::warn!(
                "worker {}: backend {} queue full ({} waiting)",
                self.index,
                pool.addr,
                pool.queue.len()
            );
            self.execution_error();
            self.finish_call(ck, Outcome::Failed);
        }
    }

    /// The gateway itself could not run the call (no socket, no room in the queue).
    fn execution_error(&self) {
        crate::metrics::add(&self.metrics.worker(self.index).execution_errors, 1);
    }

    fn assign(&mut self, uk: usize, ck: usize) {
        self.calls[ck].upstream = Some(uk);
        let up = &mut self.upstreams[uk];
        up.call = Some(ck);
        up.written = 0;
        if up.state == upstream::State::Idle {
            up.state = upstream::State::Busy;
            self.upstream_write(uk);
        }
    }

    fn upstream_write(&mut self, uk: usize) {
        let up = &mut self.upstreams[uk];
        let Some(ck) = up.call else { return };
        if let Err(e) = up.write_request(&self.calls[ck].request) {
            log::debug!("worker {}: backend write failed: {e}", self.index);
            self.upstream_failed(uk);
        }
    }

    pub(super) fn on_upstream_event(&mut self, uk: usize, ev: &MioEvent) {
        let Some(up) = self.upstreams.get_mut(uk) else {
            return;
        };
        if up.state == upstream::State::Connecting {
            if !(ev.is_writable() || ev.is_error() || ev.is_read_closed() || ev.is_write_closed()) {
                return;
            }
            match up.finish_connect() {
                Ok(true) => {
                    up.state = if up.call.is_some() {
                        upstream::State::Busy
                    } else {
                        upstream::State::Idle
                    };
                    self.upstream_write(uk);
                }
                Ok(false) => return,
                Err(e) => {
                    log::warn!("worker {}: backend connect failed: {e}", self.index);
                    return self.upstream_failed(uk);
                }
            }
        } else if ev.is_writable() && up.state == upstream::State::Busy {
            self.upstream_write(uk);
        }
        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
            self.upstream_read(uk, ev.is_read_closed());
        }
    }

    fn upstream_read(&mut self, uk: usize, read_closed: bool) {
        let Some(up) = self.upstreams.get_mut(uk) else {
            return;
        };
        // A read error ends the reply like EOF does.
        let eof = up
            .read_available(&mut self.rbuf, read_closed)
            .unwrap_or(true);
        match up.state {
            upstream::State::Busy => {}
            upstream::State::Idle if eof || !up.inbuf.is_empty() => {
                // The backend closed (or spoke on) an idle keep-alive connection.
                return self.close_upstream(uk);
            }
            _ => return,
        }
        let mut buf = std::mem::take(&mut up.inbuf);
        let res = up.parser.feed(&mut buf, eof, MAX_REPLY_BYTES);
        match res {
            Ok(None) => self.upstreams[uk].inbuf = buf,
            Ok(Some(resp)) => self.complete(uk, buf, resp),
            Err(e) => {
                let started = !buf.is_empty();
                self.upstreams[uk].inbuf = buf;
                if started {
                    log::warn!("worker {}: bad backend reply: {e:?}", self.index);
                }
                self.upstream_failed(uk);
            }
        }
    }

    /// A whole reply arrived on `uk`: deliver it, then reuse or close the connection.
    fn complete(&mut self, uk: usize, mut buf: Vec<u8>, resp: response::Response) {
        let Some(ck) = self.upstreams[uk].call else {
            return;
        };
        let route = self.calls[ck].route;
        let integration = self.shared.config.routes[route].integration;
        let lambda = matches!(&self.shared.config.integrations[integration].kind, IntegrationKind::Http(h) if h.lambda);
        let range = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &buf[r]);
        if lambda {
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
        buf.clear();
        let Some(up) = self.upstreams.get_mut(uk) else {
            return;
        };
        up.inbuf = buf;
        if !resp.keep_alive {
            return self.close_upstream(uk);
        }
        up.reset();
        let p = up.pool;
        match self.pools[p].queue.pop_front() {
            Some(next) => self.assign(uk, next),
            None => self.pools[p].idle.push(uk),
        }
    }

    /// The connection failed: retry its call once if the connection was reused and
    /// nothing of the reply arrived, else fail the call. The connection is closed.
    fn upstream_failed(&mut self, uk: usize) {
        let Some(up) = self.upstreams.get(uk) else {
            return;
        };
        let retry = up.reused && !up.parser.started(&up.inbuf);
        let call = up.call;
        let p = self.close_upstream_only(uk);
        if let Some(ck) = call {
            let c = &mut self.calls[ck];
            c.upstream = None;
            if retry && !c.retried {
                c.retried = true;
                self.dispatch(ck, true);
            } else {
                self.finish_call(ck, Outcome::Failed);
            }
        }
        self.serve_queue(p);
    }

    /// Closes an upstream connection and lets a waiting call open a new one.
    pub(super) fn close_upstream(&mut self, uk: usize) {
        let p = self.close_upstream_only(uk);
        self.serve_queue(p);
    }

    /// Closes the connection; returns its pool.
    fn close_upstream_only(&mut self, uk: usize) -> usize {
        let mut up = self.upstreams.remove(uk);
        let _ = self.poll.registry().deregister(&mut up.stream);
        crate::metrics::sub(&self.metrics.worker(self.index).upstream_connections, 1);
        let pool = &mut self.pools[up.pool];
        pool.open -= 1;
        pool.idle.retain(|&k| k != uk);
        up.pool
    }

    /// A connection slot freed up: the first waiting call may open one.
    fn serve_queue(&mut self, p: usize) {
        if let Some(next) = self.pools[p].queue.pop_front() {
            self.dispatch(next, false);
        }
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
        self.metrics
            .worker(self.index)
            .integration(route, elapsed, ok);
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
        let Some((key, generation)) = client else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.generation != generation {
            return;
        }
        match kind {
            CallKind::Connect if conn.session.is_abandoned() => {
                let accepted = matches!(outcome, Outcome::Reply { status, .. } if (200..300).contains(&status));
                conn.session.on_abandoned_connect(accepted);
                return self.close(key);
            }
            CallKind::Connect => {
                if conn.session.on_connect_outcome(outcome, &mut self.shared) {
                    self.sync_timer(key);
                    let conn = &mut self.conns[key];
                    conn.session.resume(&mut self.shared);
                    self.start_calls(Some((key, generation)));
                    // Reading stopped at the early-input bound; bytes that waited
                    // meanwhile raise no new event.
                    self.finish_output(key);
                    self.resume_reading(key);
                    return self.drain_progress();
                }
            }
            CallKind::Message => {
                conn.session
                    .on_message_outcome(route, &request_id, outcome, &mut self.shared);
            }
            CallKind::Disconnect => {}
        }
        self.finish_output(key);
        self.drain_progress();
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
        match call.upstream {
            // The connection is mid-request: it cannot be reused.
            Some(uk) => {
                self.upstreams[uk].call = None;
                self.close_upstream(uk);
            }
            None => {
                let p = call.pool;
                self.pools[p].queue.retain(|&k| k != ck);
            }
        }
        self.finish_call(ck, Outcome::TimedOut);
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
                self.pools[up.pool].addr
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
