//! The worker's side of the management API: it serves management connections that
//! its own listener accepted, acts on its own client connections, and carries
//! operations on other workers' connections through the mailboxes (`mailbox.rs`).

use std::io;

use mio::Interest;

use super::{Worker, TIMER_HEALTH};
use crate::frame::{self, OpCode};
use crate::mailbox::{Answer, Op, ReplyTo, Request};
use crate::management::{self, Decision, Response};
use crate::session::State;
use crate::token;

/// Mail handled per wakeup before the loop looks at sockets again.
const MAIL_BATCH: usize = 256;

impl Worker {
    pub(super) fn accept_admin(&mut self) {
        loop {
            match self.management.accept() {
                Ok((mut stream, _)) => {
                    self.admin_generation = self.admin_generation.wrapping_add(1);
                    let entry = self.admin.vacant_entry();
                    let tok = token::management(entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self
                        .poll
                        .registry()
                        .register(&mut stream, tok, interest)
                        .is_ok()
                    {
                        entry.insert(management::Conn::new(stream, self.admin_generation));
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

    pub(super) fn on_admin_event(&mut self, key: usize, read_closed: bool) {
        let Some(c) = self.admin.get_mut(key) else {
            return;
        };
        let eof = c.read_available(&mut self.rbuf[super::STASH_BYTES..], read_closed);
        self.serve_admin(key);
        if eof {
            if let Some(c) = self.admin.get(key) {
                if !c.waiting && c.out.is_empty() {
                    self.drop_admin(key);
                    return;
                }
                // Answer what is in flight, then close.
                self.admin[key].close_after = true;
            }
        }
        self.flush_admin(key);
    }

    /// Answers every complete request in the buffer, in order, until one has to wait
    /// for another worker.
    fn serve_admin(&mut self, key: usize) {
        let now_unix = crate::time::now_ms() as i64 / 1000;
        loop {
            let Some(c) = self.admin.get_mut(key) else {
                return;
            };
            if c.waiting || c.close_after || c.inbuf.is_empty() {
                return;
            }
            let parsed = management::parse_next(
                &c.inbuf,
                &self.shared.config,
                self.workers,
                &self.ids,
                now_unix,
            );
            let parsed = match parsed {
                Ok(None) => return,
                Ok(Some(p)) => p,
                Err(resp) => {
                    c.inbuf.clear();
                    resp.write(&mut c.out, true);
                    c.close_after = true;
                    return;
                }
            };
            c.inbuf.drain(..parsed.consumed);
            if parsed.close {
                c.close_after = true;
            }
            let generation = c.generation;
            match parsed.decision {
                Decision::Respond(r) => self.respond(key, &r),
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
                Decision::Health => {
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
                        self.respond(key, &health(503, self.workers));
                    } else if pending == 0 {
                        self.respond(key, &health(200, self.workers));
                    } else {
                        c.waiting = true;
                        self.timers.arm(
                            self.now + std::time::Duration::from_secs(1),
                            key,
                            generation,
                            TIMER_HEALTH,
                        );
                    }
                }
                Decision::Connection { id, op } => {
                    if id.worker == self.index {
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

    fn respond(&mut self, key: usize, r: &Response) {
        if let Some(c) = self.admin.get_mut(key) {
            let close = c.close_after;
            r.write(&mut c.out, close);
        }
    }

    pub(super) fn flush_admin(&mut self, key: usize) {
        let Some(c) = self.admin.get_mut(key) else {
            return;
        };
        match c.flush() {
            Ok(true) if c.close_after && !c.waiting => self.drop_admin(key),
            Ok(_) => {}
            Err(_) => self.drop_admin(key),
        }
    }

    fn drop_admin(&mut self, key: usize) {
        if let Some(mut c) = self.admin.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
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
        c.health_pending = 0;
        c.waiting = false;
        self.respond(key, &health(503, self.workers));
        self.serve_admin(key);
        self.flush_admin(key);
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
            if answer == Answer::Pong {
                if c.health_pending > 0 {
                    c.health_pending -= 1;
                    if c.health_pending == 0 {
                        c.waiting = false;
                        self.respond(to.admin_key, &health(200, self.workers));
                    }
                }
            } else {
                c.waiting = false;
                self.respond(to.admin_key, &Response::from_answer(answer));
            }
            self.serve_admin(to.admin_key);
            self.flush_admin(to.admin_key);
        }
    }

    /// Performs a management operation on one of this worker's connections.
    pub(super) fn connection_op(&mut self, slot: u32, generation: u64, op: Op) -> Answer {
        let key = slot as usize;
        let Some(conn) = self.conns.get_mut(key) else {
            return Answer::Gone;
        };
        if conn.id_generation != generation || conn.session.state != State::Open {
            return Answer::Gone;
        }
        match op {
            Op::Get => {
                let ident = conn
                    .session
                    .identity
                    .as_deref()
                    .expect("open connections have one");
                let since_open = conn.last_active.saturating_duration_since(conn.opened_at);
                Answer::Info {
                    connected_at_ms: ident.connected_at_ms,
                    last_active_ms: ident.connected_at_ms + since_open.as_millis() as u64,
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
                self.finish_output(key);
                Answer::Sent
            }
            Op::Delete { code, reason } => {
                self.close_with(key, code, &reason);
                Answer::Closed
            }
            Op::Ping => Answer::Pong,
        }
    }
}

fn health(status: u16, workers: usize) -> Response {
    let body = format!(
        "{{\"status\":\"{}\",\"workers\":{workers}}}",
        if status == 200 { "ok" } else { "unavailable" }
    );
    Response::json(status, body.into_bytes())
}
