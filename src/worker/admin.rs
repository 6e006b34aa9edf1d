//! The worker's side of the management API: it serves management connections that
//! its own listener accepted, acts on its own client connections, and carries
//! operations on other workers' connections through the mailboxes (`mailbox.rs`).
//!
//! Bounds (SPEC §8): a connection is read only while fewer than
//! `MAX_UNSENT_BYTES` of answers wait to be written and no answer from another
//! worker is awaited, so a caller that never reads costs a bounded buffer; a
//! request head must complete within `HEAD_TIMEOUT` and a connection that moves no
//! byte for `IDLE_TIMEOUT` is closed (one timer of each kind per connection in the
//! wheel, re-armed on expiry when the deadline moved).

use std::io;
use std::time::Instant;

use mio::Interest;

use super::Worker;
use crate::frame::{self, OpCode};
use crate::mailbox::{Answer, Op, ReplyTo, Request};
use crate::management::{self, Decision, Next, ReadOutcome, Response};
use crate::metrics;
use crate::session::State;
use crate::timer::Kind as TimerKind;
use crate::token;

/// Mail handled per wakeup before the loop looks at sockets again.
const MAIL_BATCH: usize = 256;

/// Reads from one management connection per readiness event before the loop turns
/// to other sockets (the connection is re-registered so it is polled again).
const READS_PER_EVENT: usize = 16;

/// Why [`Worker::serve_admin`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The next request is not complete.
    Incomplete,
    /// Waiting on another worker, closing, or the unsent answers are at the bound.
    Blocked,
}

impl Worker {
    pub(super) fn accept_admin(&mut self) {
        loop {
            match self.management.accept() {
                Ok((mut stream, _)) => {
                    if self.reload.generation() != self.reload_seen {
                        self.on_reload(); // a SIGHUP's pair, from the first accept on
                    }
                    self.admin_generation = self.admin_generation.wrapping_add(1);
                    let generation = self.admin_generation;
                    let entry = self.admin.vacant_entry();
                    let key = entry.key();
                    let tok = token::management(key);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, tok, interest)
                        .is_ok()
                    {
                        let mut c = management::Conn::new(stream, generation, self.now);
                        if let Some(config) = &self.tls.management {
                            match crate::tls::Session::new(config.clone()) {
                                Ok(t) => c.tls = Some(Box::new(t)),
                                Err(_) => continue,
                            }
                            // The handshake has the header timeout (`head_deadline`).
                            let at = self.now + management::HEAD_TIMEOUT;
                            c.head_timer =
                                Some(self.timers.arm(at, key, generation, TimerKind::AdminHead));
                        }
                        let at = self.now + management::IDLE_TIMEOUT;
                        c.idle_timer =
                            Some(self.timers.arm(at, key, generation, TimerKind::AdminIdle));
                        entry.insert(c);
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

    /// A readiness event on a management connection.
    pub(super) fn on_admin_event(&mut self, key: usize, _read_closed: bool) {
        self.drive_admin(key);
    }

    /// A writable event on a management connection.
    pub(super) fn flush_admin(&mut self, key: usize) {
        self.drive_admin(key);
    }

    /// Answers, writes and reads a management connection until it waits on its peer
    /// or on another worker, or its unsent answers reach the bound (then it is not
    /// read: the kernel's buffers and TCP flow control hold the caller back).
    pub(super) fn drive_admin(&mut self, key: usize) {
        let mut reads = 0;
        loop {
            let stop = self.serve_admin(key);
            let now = self.now;
            let Some(c) = self.admin.get_mut(key) else {
                return;
            };
            c.compact();
            if c.eof && stop == Stop::Incomplete {
                // What is left can never complete.
                c.discard_input();
                c.close_after = true;
            }
            if c.flush(now).is_err() {
                return self.drop_admin(key);
            }
            if c.close_after && !c.waiting && c.out.is_empty() {
                return self.drop_admin(key);
            }
            if c.paused() || c.eof {
                break;
            }
            if reads == READS_PER_EVENT {
                // Come back after the other sockets: re-registering reports the
                // still-readable socket again on the next poll.
                let tok = token::management(key);
                let interest = Interest::READABLE | Interest::WRITABLE;
                if self
                    .poll
                    .registry()
                    .reregister(&mut c.stream, tok, interest)
                    .is_err()
                {
                    return self.drop_admin(key);
                }
                break;
            }
            reads += 1;
            match c.read_some(&mut self.rbuf[super::STASH_BYTES..], now) {
                ReadOutcome::Data => {}
                ReadOutcome::Drained => break,
                ReadOutcome::Eof => c.eof = true,
            }
        }
        self.arm_admin_head_timer(key);
    }

    /// Answers every complete request in the buffer, in order, until one has to wait
    /// for another worker or the unsent answers reach the bound.
    fn serve_admin(&mut self, key: usize) -> Stop {
        let now_unix = crate::time::now_ms() as i64 / 1000;
        loop {
            let Some(c) = self.admin.get_mut(key) else {
                return Stop::Blocked;
            };
            if c.paused() {
                return Stop::Blocked;
            }
            if c.pending().is_empty() {
                c.note_head(false, self.now);
                return Stop::Incomplete;
            }
            if c.incomplete() {
                let head = c.awaiting_head();
                c.note_head(head, self.now);
                return Stop::Incomplete;
            }
            let parsed = management::parse_next(
                c.pending(),
                &self.shared.config,
                self.workers,
                &self.ids,
                now_unix,
            );
            let parsed = match parsed {
                Ok(Next::NeedHead) => {
                    c.note_head(true, self.now);
                    return Stop::Incomplete;
                }
                Ok(Next::NeedBody { total }) => {
                    c.note_head(false, self.now);
                    c.need(total);
                    return Stop::Incomplete;
                }
                Ok(Next::Request(p)) => p,
                Err(resp) => {
                    c.discard_input();
                    c.close_after = true;
                    resp.write(&mut c.out, true);
                    return Stop::Blocked;
                }
            };
            c.note_head(false, self.now);
            c.consume(parsed.consumed);
            if parsed.close {
                c.close_after = true;
            }
            let generation = c.generation;
            let decision = match parsed.decision {
                // On the client listener only `@connections` is served (SPEC §13).
                Decision::Metrics | Decision::Health if c.api_listener => Decision::Respond(
                    Response::error(404, "NotFoundException", "no such resource"),
                ),
                d => d,
            };
            match decision {
                Decision::Respond(r) => self.respond(key, &r),
                Decision::Refused(why) => {
                    metrics::add(&self.metrics.worker(self.index).management_refused, 1);
                    if let Some(left_out) = self.admin_refusals.admit(self.now) {
                        log::warn!(
                            "worker {}: management request refused: {why} ({left_out} more refused since the last such line)",
                            self.index
                        );
                    }
                    let r = Response::error(403, "ForbiddenException", "Forbidden");
                    self.respond(key, &r);
                }
                Decision::Metrics => {
                    let body = self.metrics.render(&self.shared.config);
                    let r = Response {
                        status: 200,
                        error_type: None,
                        content_type: "text/plain; version=0.0.4",
                        body,
                    };
                    self.respond(key, &r);
                }
                Decision::Health => self.start_health(key, generation),
                Decision::Send(send) => self.start_send(key, generation, send),
                Decision::Connection { id, op } => {
                    if id.node != self.ids.node() {
                        self.remote_call(key, generation, id, op);
                    } else if id.worker == self.index {
                        let answer = self.connection_op(id.slot, id.generation, op);
                        self.respond(key, &Response::from_answer(answer));
                    } else {
                        let reply_to = ReplyTo {
                            worker: self.index,
                            admin_key: key,
                            admin_generation: generation,
                        };
                        let req = Request {
                            slot: id.slot,
                            generation: id.generation,
                            op,
                            reply_to,
                        };
                        match self.mail.send(id.worker as usize, req) {
                            Ok(()) => self.admin[key].waiting = true,
                            Err(_) => {
                                let r = Response::error(
                                    429,
                                    "LimitExceededException",
                                    "the owning worker is busy; retry",
                                );
                                self.respond(key, &r);
                            }
                        }
                    }
                }
            }
        }
    }

    /// `GET /health`: asks every other worker for a pong within a second.
    fn start_health(&mut self, key: usize, generation: u32) {
        let reply_to = ReplyTo {
            worker: self.index,
            admin_key: key,
            admin_generation: generation,
        };
        let mut pending = 0;
        for w in 0..self.workers {
            if w != self.index as usize {
                let req = Request {
                    slot: 0,
                    generation: 0,
                    op: Op::Ping,
                    reply_to,
                };
                if self.mail.send(w, req).is_ok() {
                    pending += 1;
                }
            }
        }
        let c = &mut self.admin[key];
        c.health_pending = pending;
        if pending + 1 < self.workers {
            // A worker's queue is full: it is not keeping up.
            c.health_pending = 0;
            self.respond(key, &self.health_answer(503));
        } else if pending == 0 {
            self.respond(key, &self.health_answer(200));
        } else {
            c.waiting = true;
            c.health_timer = Some(self.timers.arm(
                self.now + std::time::Duration::from_secs(1),
                key,
                generation,
                TimerKind::Health,
            ));
        }
    }

    /// `management.on_api_listener` (SPEC §13): the client connection `key`, still
    /// handshaking, sent a `@connections` request (`input`: the plaintext read so far,
    /// its head complete). Its socket, TLS session and input move into the management
    /// slab and it is served from then on as a management connection. It never was a
    /// client: no `$connect`/`$disconnect`, no connect count; its client timer goes.
    pub(super) fn hand_over(&mut self, key: usize, input: &[u8]) -> Option<usize> {
        self.cancel_client_timer(key);
        let mut conn = self.conns.try_remove(key)?;
        let sealed_out = conn.out.take().unwrap_or_default();
        conn.release(&mut self.shared.pool);
        self.admin_generation = self.admin_generation.wrapping_add(1);
        let generation = self.admin_generation;
        let entry = self.admin.vacant_entry();
        let admin_key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        let mut stream = conn.stream;
        if self
            .poll
            .registry()
            .reregister(&mut stream, token::management(admin_key), interest)
            .is_err()
        {
            return None;
        }
        let mut c = management::Conn::handed_over(
            stream,
            generation,
            self.now,
            conn.tls.take(),
            input,
            sealed_out,
        );
        let at = self.now + management::IDLE_TIMEOUT;
        c.idle_timer = Some(
            self.timers
                .arm(at, admin_key, generation, TimerKind::AdminIdle),
        );
        entry.insert(c);
        Some(admin_key)
    }

    /// Serves a connection [`Worker::hand_over`] moved here (its input may already
    /// hold complete requests, so no readiness event is waited for).
    pub(super) fn serve_handed_over(&mut self, admin_key: usize) {
        self.drive_admin(admin_key);
    }

    pub(super) fn respond(&mut self, key: usize, r: &Response) {
        if let Some(c) = self.admin.get_mut(key) {
            let close = c.close_after;
            r.write(&mut c.out, close);
        }
    }

    fn drop_admin(&mut self, key: usize) {
        if let Some(mut c) = self.admin.try_remove(key) {
            if let Some(tls) = c.tls.as_mut() {
                tls.goodbye(&mut c.stream);
            }
            let _ = self.poll.registry().deregister(&mut c.stream);
            for h in [c.head_timer, c.idle_timer, c.health_timer]
                .into_iter()
                .flatten()
            {
                self.timers.cancel(h);
            }
        }
    }

    /// Puts the header timer of `key` in the wheel if a head is awaited and none is.
    fn arm_admin_head_timer(&mut self, key: usize) {
        let Some(c) = self.admin.get_mut(key) else {
            return;
        };
        if let (Some(at), None) = (c.head_deadline(), c.head_timer) {
            c.head_timer = Some(self.timers.arm(at, key, c.generation, TimerKind::AdminHead));
        }
    }

    /// A header or idle timer of a management connection expired: close it if its
    /// deadline has passed, else arm the timer again for the deadline as it is now.
    pub(super) fn on_admin_timer(&mut self, key: usize, generation: u32, kind: TimerKind) {
        let now = self.now;
        let Some(c) = self.admin.get_mut(key) else {
            return;
        };
        if c.generation != generation {
            return;
        }
        let deadline: Option<Instant> = if kind == TimerKind::AdminHead {
            c.head_timer = None;
            c.head_deadline()
        } else {
            c.idle_timer = None;
            Some(c.idle_deadline())
        };
        match deadline {
            None => {}
            Some(at) if at <= now => {
                log::debug!(
                    "worker {}: management connection closed: {} timeout",
                    self.index,
                    if kind == TimerKind::AdminHead {
                        "header"
                    } else {
                        "idle"
                    }
                );
                self.drop_admin(key);
            }
            Some(at) => {
                let h = Some(self.timers.arm(at, key, generation, kind));
                if kind == TimerKind::AdminHead {
                    c.head_timer = h;
                } else {
                    c.idle_timer = h;
                }
            }
        }
    }

    /// A health check's second passed without every worker answering.
    pub(super) fn on_health_timeout(&mut self, key: usize, generation: u32) {
        let Some(c) = self.admin.get_mut(key) else {
            return;
        };
        if c.generation != generation || c.health_pending == 0 {
            return;
        }
        c.health_timer = None;
        c.health_pending = 0;
        c.waiting = false;
        self.respond(key, &self.health_answer(503));
        self.drive_admin(key);
    }

    /// Drains this worker's mailboxes: operations on its connections, then answers
    /// to its own management connections.
    pub(super) fn on_mail(&mut self) {
        let mail = self.mail.clone();
        let inbox = &mail.inboxes[self.index as usize];
        inbox.rearm();
        for _ in 0..MAIL_BATCH {
            let Some(req) = inbox.requests.pop() else {
                break;
            };
            let answer = match req.op {
                Op::Ping => Answer::Pong,
                Op::Send(send) => self.deliver_send(&send),
                op => self.connection_op(req.slot, req.generation, op),
            };
            mail.answer(req.reply_to, answer);
        }
        if !inbox.requests.is_empty() {
            // More than a batch waits: come back after serving sockets.
            let _ = inbox.waker.wake();
        }
        while let Some((to, answer)) = inbox.answers.pop() {
            let Some(c) = self.admin.get_mut(to.admin_key) else {
                continue;
            };
            if c.generation != to.admin_generation {
                continue;
            }
            if answer == Answer::Delivered {
                self.on_send_ack(to.admin_key);
            } else if answer == Answer::Pong {
                if c.health_pending > 0 {
                    c.health_pending -= 1;
                    if c.health_pending == 0 {
                        c.waiting = false;
                        // Answered in time: this check's deadline must not answer a
                        // later check on the same connection.
                        if let Some(h) = c.health_timer.take() {
                            self.timers.cancel(h);
                        }
                        self.respond(to.admin_key, &self.health_answer(200));
                    }
                }
            } else {
                c.waiting = false;
                self.respond(to.admin_key, &Response::from_answer(answer));
            }
            self.drive_admin(to.admin_key);
        }
    }

    /// Answers a management request parked while another node (NATS) works on it,
    /// if that management connection (`key`, `generation`) still waits for it.
    pub(super) fn finish_parked(&mut self, key: usize, generation: u32, r: &Response) {
        let Some(a) = self.admin.get_mut(key) else {
            return;
        };
        if a.generation != generation || !a.waiting {
            return;
        }
        a.waiting = false;
        self.respond(key, r);
        self.drive_admin(key);
    }

    /// Performs a management operation on one of this worker's connections.
    pub(super) fn connection_op(&mut self, slot: u32, generation: u64, op: Op) -> Answer {
        let key = slot as usize;
        let anchor = self.clock_anchor;
        let Some(conn) = self.conns.get_mut(key) else {
            return Answer::Gone;
        };
        if conn.id_generation != generation || conn.session.state() != State::Open {
            return Answer::Gone;
        }
        match op {
            Op::Get => {
                let Some(ident) = conn.session.identity() else {
                    return Answer::Gone;
                };
                // On the worker's clock (`connectedAt` is taken at the upgrade request,
                // before any `$connect` call; the open comes later).
                let last_active_ms =
                    super::wall_ms(anchor, conn.last_active.instant()).max(ident.connected_at_ms);
                Answer::Info {
                    connected_at_ms: ident.connected_at_ms,
                    last_active_ms,
                    source_ip: ident.source_ip_text.to_string(),
                    user_agent: ident.user_agent.as_deref().map(str::to_string),
                }
            }
            Op::Post(body) => {
                let limits = &self.shared.config.limits;
                let opcode = if std::str::from_utf8(&body).is_ok() {
                    OpCode::Text
                } else if limits.allow_binary {
                    OpCode::Binary
                } else {
                    return Answer::NotText;
                };
                let frames = body.len().div_ceil(limits.max_frame_bytes.max(1)).max(1);
                let framed = body.len() + frames * 10;
                if conn.pending_out() + framed > limits.max_pending_outbound_bytes {
                    return Answer::Full;
                }
                frame::write_message(&mut self.shared.wbuf, opcode, &body, limits.max_frame_bytes);
                self.metrics.worker(self.index).message_out(body.len());
                self.shared.active = true;
                self.finish_output(key);
                Answer::Sent
            }
            Op::Delete { code, reason } => {
                self.close_with(key, code, &reason);
                Answer::Closed
            }
            Op::Ping => Answer::Pong,
            op @ (Op::Join(_) | Op::Leave(_)) => self.member_op(key, op),
            // Not for one connection: `on_mail` and `start_send` deliver it.
            Op::Send(_) => Answer::Gone,
        }
    }
}

pub(super) fn health(status: u16, workers: usize) -> Response {
    let body = format!(
        "{{\"status\":\"{}\",\"workers\":{workers}}}",
        if status == 200 { "ok" } else { "unavailable" }
    );
    Response::json(status, body.into_bytes())
}
