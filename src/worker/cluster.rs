//! The worker's side of the cluster (SPEC §15): its NATS connection in the loop,
//! management calls for other nodes' ids (the caller parks the HTTP answer and
//! finishes it when the owner's reply, "no responders" or the time-out comes), calls
//! from other nodes for this worker's connections (executed exactly as local ones),
//! heartbeats, and the node's isolation. See `cluster/mod.rs` for the design.

use std::io::Write;
use std::time::Duration;

use super::Worker;
use crate::close;
use crate::cluster::client::{Incoming, Outcome, Refused, Tag, Waiter};
use crate::cluster::{self, Heartbeat, Precheck};
use crate::id::{self, ConnectionId};
use crate::mailbox::{Answer, Op};
use crate::management::Response;
use crate::metrics;
use crate::session::State;
use crate::timer::Kind as TimerKind;

impl Worker {
    /// Starts connecting to NATS and the periodic cluster tick (no-op on one node).
    pub(super) fn start_cluster(&mut self) {
        if self.cluster.is_some() {
            self.start_cluster_groups();
            self.on_cluster_tick();
        }
    }

    /// The periodic cluster work: the client's reconnects and pings, this node's
    /// heartbeat, and the isolation rule.
    pub(super) fn on_cluster_tick(&mut self) {
        let now = self.now;
        let node = self.ids.node();
        let epoch = self.ids.epoch();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let mut incoming = std::mem::take(&mut self.nats_incoming);
        c.client.tick(self.poll.registry(), now, &mut incoming);
        if c.client.is_up() && now >= c.next_heartbeat {
            c.next_heartbeat = now + cluster::HEARTBEAT_INTERVAL;
            if c.shared.publishes_heartbeat(self.index) {
                let hb = Heartbeat {
                    node,
                    epoch,
                    workers: self.workers as u16,
                };
                let _ = c.client.publish(&c.hb_subject, None, &hb.encode());
            }
        }
        let isolated = c.shared.isolated(now, c.settings.isolation_timeout);
        let changed = isolated != c.isolated;
        c.isolated = isolated;
        self.timers
            .arm(now + cluster::TICK, 0, 0, TimerKind::ClusterTick);
        self.handle_nats(&mut incoming);
        self.nats_incoming = incoming;
        if changed && isolated {
            self.isolate();
        } else if changed {
            log::info!(
                "worker {}: NATS is back: accepting clients again",
                self.index
            );
        }
    }

    /// The node has been cut off from NATS for `isolation_timeout`: every client of
    /// this worker is closed with 1001 "Going away" (its `$disconnect` follows), so a
    /// 410 that other nodes answer for its ids is true. A client whose `$connect` (or
    /// authorizer) is still pending is dropped like a handshaking one: it is never
    /// upgraded (a later 200 would open it on an isolated node, under a false 410),
    /// and the session waits for the answer without it, so a `$connect` that accepts
    /// still gets its `$disconnect` (see `Worker::close`).
    fn isolate(&mut self) {
        log::warn!(
            "worker {}: cut off from NATS for the isolation timeout: closing {} clients with 1001 and refusing new ones",
            self.index,
            self.conns.len()
        );
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key).map(|c| c.session.state()) {
                Some(State::Open) => self.close_with(key, close::GOING_AWAY, "Going away"),
                Some(State::Handshaking | State::Connecting) => self.close(key),
                _ => {}
            }
        }
    }

    /// While the node is isolated an accepted client gets a 503 (best effort: one
    /// non-blocking write into an empty socket buffer; TLS clients are just closed)
    /// and is dropped. `true` when it was refused.
    pub(super) fn refuse_isolated(&mut self, stream: &mio::net::TcpStream) -> bool {
        if !self.cluster.as_ref().is_some_and(|c| c.isolated) {
            return false;
        }
        if self.tls.client.is_none() {
            let mut answer = Vec::new();
            let body = b"cut off from the cluster.\r\n";
            crate::handshake::write_status(&mut answer, 503, None, "text/plain", body);
            let _ = (&*stream).write(&answer);
        }
        true
    }

    /// A readiness event on the NATS socket.
    pub(super) fn on_nats_event(&mut self) {
        let now = self.now;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        let mut incoming = std::mem::take(&mut self.nats_incoming);
        c.client
            .on_event(self.poll.registry(), &mut self.timers, now, &mut incoming);
        self.handle_nats(&mut incoming);
        self.nats_incoming = incoming;
    }

    /// Writes what this loop turn queued for NATS (one write for all of it).
    pub(super) fn flush_nats(&mut self) {
        let now = self.now;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if !c.client.wants_flush() {
            return;
        }
        let mut incoming = std::mem::take(&mut self.nats_incoming);
        c.client.flush(self.poll.registry(), now, &mut incoming);
        self.handle_nats(&mut incoming);
        self.nats_incoming = incoming;
    }

    /// A NATS request's time-out fired.
    pub(super) fn on_cluster_timeout(&mut self, key: usize, generation: u32) {
        let now = self.now;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if let Some(inc) = c.client.expire(key, generation, now) {
            let mut incoming = vec![inc];
            self.handle_nats(&mut incoming);
        }
    }

    /// Acts on what the NATS connection delivered.
    fn handle_nats(&mut self, incoming: &mut Vec<Incoming>) {
        for inc in incoming.drain(..) {
            let counters = &self.metrics.worker(self.index).cluster;
            match inc {
                Incoming::Up => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.shared.set_up(self.index);
                        // The next tick publishes the heartbeat at once if it is ours.
                        c.next_heartbeat = self.now;
                        counters
                            .nats_connected
                            .store(1, std::sync::atomic::Ordering::Relaxed);
                        let r = c.client.reconnects;
                        let seen = counters
                            .reconnects
                            .load(std::sync::atomic::Ordering::Relaxed);
                        metrics::add(&counters.reconnects, r.saturating_sub(seen));
                    }
                }
                Incoming::Down => {
                    if let Some(c) = self.cluster.as_mut() {
                        c.shared.set_down(self.index, self.now);
                        counters
                            .nats_connected
                            .store(0, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                Incoming::Msg {
                    tag: Tag::Heartbeat,
                    payload,
                    ..
                } => {
                    let (now, epoch) = (self.now, self.ids.epoch());
                    if let Some(c) = self.cluster.as_mut() {
                        c.on_heartbeat(&payload, now, epoch);
                    }
                }
                Incoming::Msg {
                    tag: Tag::Calls,
                    reply,
                    payload,
                    ..
                } => self.serve_remote_call(reply.as_deref(), &payload),
                Incoming::Msg {
                    tag: Tag::Other(tag),
                    subject,
                    reply,
                    payload,
                } => self.on_cluster_message(tag, &subject, reply.as_deref(), &payload),
                Incoming::Reply {
                    waiter:
                        Waiter::Admin {
                            key,
                            generation,
                            node,
                        },
                    outcome,
                    elapsed,
                } => self.finish_remote_call(key, generation, node, outcome, elapsed),
                Incoming::Reply {
                    waiter: Waiter::Token(token),
                    outcome,
                    ..
                } => self.on_cluster_reply(token, outcome),
            }
        }
    }

    // -----------------------------------------------------------------------
    // The API other cluster features (groups, broadcast) build on: subscribe with
    // their own tag, publish, and request with their own token; what comes back is
    // dispatched to the two hooks below.

    /// Subscribes this worker to `subject` (kept across reconnects); its messages go
    /// to [`Worker::on_cluster_message`] with `tag`. `None` on a single node or for
    /// an invalid subject.
    pub(super) fn cluster_subscribe(&mut self, subject: &[u8], tag: u32) -> Option<u64> {
        let c = self.cluster.as_mut()?;
        cluster::proto::valid_subject(subject).then(|| c.client.subscribe(subject, Tag::Other(tag)))
    }

    /// Publishes a request that every subscriber of `subject` may answer: each
    /// answer, then one final `TimedOut` after `request_timeout` (or
    /// `NoResponders`), reach [`Worker::on_cluster_reply`] with `token`.
    pub(super) fn cluster_request_many(
        &mut self,
        subject: &[u8],
        payload: &[u8],
        token: u64,
    ) -> Result<(), Refused> {
        let c = self.cluster.as_mut().ok_or(Refused::NotConnected)?;
        let timeout = c.settings.request_timeout;
        c.client.request_many(
            subject,
            payload,
            Waiter::Token(token),
            timeout,
            &mut self.timers,
            self.now,
        )
    }

    /// A message on a subscription of [`Worker::cluster_subscribe`]: group sends
    /// and broadcasts (`cluster_groups.rs`).
    fn on_cluster_message(
        &mut self,
        tag: u32,
        _subject: &[u8],
        reply: Option<&[u8]>,
        payload: &[u8],
    ) {
        use super::cluster_groups::{TAG_BROADCAST, TAG_GROUP};
        if tag == TAG_GROUP || tag == TAG_BROADCAST {
            self.on_cluster_send(tag, reply, payload);
        }
    }

    /// An answer to [`Worker::cluster_request_many`]: a node's ack of a group send
    /// or broadcast, or its end (`cluster_groups.rs`).
    fn on_cluster_reply(&mut self, token: u64, outcome: Outcome) {
        self.on_cluster_send_reply(token, outcome);
    }

    /// A management call for `id`, owned by another node: one NATS request to the
    /// owning worker; the management connection waits for its answer.
    pub(super) fn remote_call(&mut self, key: usize, generation: u32, id: ConnectionId, op: Op) {
        match self.start_remote_call(key, generation, &id, &op) {
            Ok(()) => {
                if let Some(a) = self.admin.get_mut(key) {
                    a.waiting = true;
                }
            }
            Err(r) => {
                let counters = &self.metrics.worker(self.index).cluster;
                counters.remote_call(r.status, None);
                self.respond(key, &r);
            }
        }
    }

    fn start_remote_call(
        &mut self,
        key: usize,
        generation: u32,
        id: &ConnectionId,
        op: &Op,
    ) -> Result<(), Response> {
        let Some(c) = self.cluster.as_mut() else {
            return Err(Response::from_answer(Answer::Gone));
        };
        if c.precheck(id) == Precheck::Gone {
            return Err(Response::from_answer(Answer::Gone));
        }
        if c.remote_calls >= cluster::MAX_REMOTE_CALLS {
            return Err(cluster::unavailable(
                "too many calls are waiting on other nodes; retry",
            ));
        }
        let payload = cluster::encode_call(&self.ids.encode(id), op);
        let subject = cluster::call_subject(&c.settings.name, id.node, id.worker);
        let waiter = Waiter::Admin {
            key,
            generation,
            node: id.node,
        };
        let timeout = c.settings.request_timeout;
        match c.client.request(
            &subject,
            &payload,
            waiter,
            timeout,
            &mut self.timers,
            self.now,
        ) {
            Ok(()) => {
                c.remote_calls += 1;
                Ok(())
            }
            Err(Refused::TooLarge) => Err(Response::error(
                413,
                "PayloadTooLargeException",
                "the body is larger than the cluster's NATS max_payload",
            )),
            Err(Refused::NotConnected) => Err(cluster::unavailable(
                "this node is not connected to the cluster; retry",
            )),
            Err(Refused::Full) => Err(cluster::unavailable(
                "the connection to the cluster is congested; retry",
            )),
        }
    }

    /// The owner's answer (or none) for a parked management call.
    fn finish_remote_call(
        &mut self,
        key: usize,
        generation: u32,
        node: u8,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        let now = self.now;
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.remote_calls = c.remote_calls.saturating_sub(1);
        let (r, rtt) = match outcome {
            Outcome::Reply(p) => match cluster::decode_reply(&p) {
                Some(r) => (r, Some(elapsed)),
                None => (
                    cluster::unavailable("the owning node answered garbage"),
                    None,
                ),
            },
            Outcome::NoResponders if c.heard_recently(node, now) => (
                cluster::unavailable("the owning node is not reachable now; retry"),
                Some(elapsed),
            ),
            Outcome::NoResponders => (Response::from_answer(Answer::Gone), Some(elapsed)),
            Outcome::TimedOut => (
                cluster::unavailable("the owning node did not answer in time; retry"),
                None,
            ),
        };
        self.metrics
            .worker(self.index)
            .cluster
            .remote_call(r.status, rtt);
        self.finish_parked(key, generation, &r);
    }

    /// Another node's management call for one of this worker's connections:
    /// executed exactly as a local one, answered on `reply`.
    fn serve_remote_call(&mut self, reply: Option<&[u8]>, payload: &[u8]) {
        let max = self.shared.config.limits.max_message_bytes;
        let r = match cluster::decode_call(payload) {
            None => Response::error(400, "BadRequestException", "malformed remote call"),
            Some((_, Op::Post(body))) if body.len() > max => Response::error(
                413,
                "PayloadTooLargeException",
                &format!("the body is {} bytes; the limit is {max}", body.len()),
            ),
            Some((text, op)) => match self.ids.decode(text) {
                Ok(id) if self.ids.is_local(&id) && id.worker == self.index => {
                    Response::from_answer(self.connection_op(id.slot, id.generation, op))
                }
                Ok(_) | Err(id::ParseError::NotIssued) => Response::from_answer(Answer::Gone),
                Err(id::ParseError::Malformed) => {
                    Response::error(400, "BadRequestException", "Invalid connectionId")
                }
            },
        };
        let (Some(reply), Some(c)) = (reply, self.cluster.as_mut()) else {
            return;
        };
        if cluster::proto::valid_subject(reply) {
            let _ = c.client.publish(reply, None, &cluster::encode_reply(&r));
        }
    }

    /// `/health`'s answer; with `[cluster]` it carries the NATS state, and an
    /// isolated node is unavailable (a load balancer sends no client there).
    pub(super) fn health_answer(&self, status: u16) -> Response {
        let Some(c) = self.cluster.as_ref() else {
            return super::admin::health(status, self.workers);
        };
        let isolated = c.shared.isolated(self.now, c.settings.isolation_timeout);
        let status = if isolated { 503 } else { status };
        let body = format!(
            "{{\"status\":\"{}\",\"workers\":{},\"nats\":{{\"connected\":{},\"isolated\":{isolated}}}}}",
            if status == 200 { "ok" } else { "unavailable" },
            self.workers,
            c.shared.connected(),
        );
        Response::json(status, body.into_bytes())
    }
}
