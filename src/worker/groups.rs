//! The worker's side of groups and broadcast (SPEC §15, design in `crate::groups`):
//! joins and leaves on its own connections, sends to every worker, and the local
//! delivery the NATS side calls for a publish it received.

use super::Worker;
use crate::frame::{self, OpCode};
use crate::groups::{Groups, Send};
use crate::mailbox::{Answer, Op, ReplyTo, Request};
use crate::management::Response;
use crate::session::State;

/// A worker's memberships and the scratch its deliveries reuse (so a send
/// allocates nothing once they have grown).
#[derive(Debug, Default)]
pub(super) struct Local {
    pub(super) table: Groups,
    /// The slab keys a send goes to, collected first: a member that fails while
    /// being written is closed, which changes the table.
    keys: Vec<u32>,
    /// The message, framed once per send.
    frame: Vec<u8>,
    /// With `[cluster]`: the sends of this worker waiting for node acks.
    pub(super) sends: super::cluster_groups::Sends,
}

impl Worker {
    /// `PUT`/`DELETE /@groups/{group}/{id}` on this worker's open connection `key`
    /// (the caller checked that it is open and the id's generation matches).
    pub(super) fn member_op(&mut self, key: usize, op: Op) -> Answer {
        let conn = key as u32;
        match op {
            Op::Join(group) => match self.group.table.join(&group, conn) {
                Ok(_) => {
                    self.count_memberships();
                    Answer::Member
                }
                Err(why) => Answer::GroupCap(why),
            },
            Op::Leave(group) => {
                self.group.table.leave(&group, conn);
                self.count_memberships();
                Answer::Member
            }
            _ => Answer::Gone,
        }
    }

    /// The connection `key` is gone: its memberships go with it.
    pub(super) fn drop_memberships(&mut self, key: usize) {
        let before = self.group.table.memberships();
        self.group.table.drop_conn(key as u32);
        if self.group.table.memberships() != before {
            self.count_memberships();
        }
    }

    fn count_memberships(&self) {
        let n = self.group.table.memberships() as u64;
        let c = &self.metrics.worker(self.index).group_memberships;
        c.store(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// `POST /@groups/{group}` or `POST /@broadcast` read by management connection
    /// `admin_key`: one mailbox request per other worker (the payload shared), the
    /// local delivery, and 202 once every worker has acknowledged (`on_send_ack`).
    ///
    /// With `[cluster]` none of this: `start_cluster_send` (`cluster_groups.rs`)
    /// publishes once to every node (this one's workers included) and counts node
    /// acks instead.
    pub(super) fn start_send(&mut self, admin_key: usize, admin_generation: u32, send: Send) {
        if self.start_cluster_send(admin_key, admin_generation, &send) {
            return;
        }
        let reply_to = ReplyTo {
            worker: self.index,
            admin_key,
            admin_generation,
        };
        let mut pending = 0;
        let mut partial = false;
        for w in 0..self.workers {
            if w == self.index as usize {
                continue;
            }
            let req = Request {
                slot: 0,
                generation: 0,
                op: Op::Send(send.clone()),
                reply_to,
            };
            match self.mail.send(w, req) {
                Ok(()) => pending += 1,
                Err(_) => partial = true,
            }
        }
        self.deliver_send(&send);
        let Some(c) = self.admin.get_mut(admin_key) else {
            return;
        };
        c.send_partial = partial;
        if pending == 0 {
            let r = send_response(partial);
            self.respond(admin_key, &r);
        } else {
            c.send_pending = pending;
            c.waiting = true;
        }
    }

    /// Another worker delivered a send that management connection `admin_key` of
    /// this worker started: answer once the last one has.
    pub(super) fn on_send_ack(&mut self, admin_key: usize) {
        let Some(c) = self.admin.get_mut(admin_key) else {
            return;
        };
        if c.send_pending == 0 {
            return;
        }
        c.send_pending -= 1;
        if c.send_pending == 0 {
            c.waiting = false;
            let r = send_response(std::mem::take(&mut c.send_partial));
            self.respond(admin_key, &r);
        }
    }

    /// Delivers a send (from a management call or another worker's mail) to this
    /// worker's members; answers the ack.
    pub(super) fn deliver_send(&mut self, send: &Send) -> Answer {
        match &send.group {
            Some(group) => self.deliver_group(group, &send.payload, send.binary),
            None => self.deliver_broadcast(&send.payload, send.binary),
        };
        Answer::Delivered
    }

    /// Sends `payload` as one message (text, or binary when `binary`) to every open
    /// member of `group` on this worker; how many got it. The entry point for a
    /// group publish received from NATS.
    pub fn deliver_group(&mut self, group: &[u8], payload: &[u8], binary: bool) -> usize {
        let mut keys = std::mem::take(&mut self.group.keys);
        self.group.table.members_into(group, &mut keys);
        self.deliver_to(keys, payload, binary)
    }

    /// Sends `payload` to every open connection of this worker; how many got it.
    /// The entry point for a broadcast received from NATS.
    pub fn deliver_broadcast(&mut self, payload: &[u8], binary: bool) -> usize {
        let mut keys = std::mem::take(&mut self.group.keys);
        keys.extend(
            self.conns
                .iter()
                .filter(|(_, c)| c.session.state() == State::Open)
                .map(|(k, _)| k as u32),
        );
        self.deliver_to(keys, payload, binary)
    }

    /// Frames `payload` once and writes it to each connection in `keys` that is still
    /// open, as `POST /@connections` does: a connection whose outbound buffer would
    /// pass `max_pending_outbound_bytes` gets nothing (never a part), and nothing
    /// waits for a socket.
    fn deliver_to(&mut self, mut keys: Vec<u32>, payload: &[u8], binary: bool) -> usize {
        let limits = &self.shared.config.limits;
        let (max_frame, max_pending) = (limits.max_frame_bytes, limits.max_pending_outbound_bytes);
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        let mut framed = std::mem::take(&mut self.group.frame);
        framed.clear();
        frame::write_message(&mut framed, opcode, payload, max_frame);
        let (mut delivered, mut skipped) = (0, 0);
        for &k in &keys {
            let key = k as usize;
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.session.state() != State::Open {
                continue;
            }
            if conn.pending_out() + framed.len() > max_pending {
                skipped += 1;
                continue;
            }
            self.metrics.worker(self.index).message_out(payload.len());
            self.shared.active = true;
            self.send_output(key, &framed);
            delivered += 1;
        }
        if skipped > 0 {
            crate::metrics::add(&self.metrics.worker(self.index).group_skipped, skipped);
        }
        keys.clear();
        self.group.keys = keys;
        if framed.capacity() > crate::buf::KEEP_MAX_CAPACITY {
            framed = Vec::new(); // one big message does not keep its buffer
        }
        self.group.frame = framed;
        delivered
    }
}

/// 202 `{"nodes": 1}` (one node), or 429 when a worker's queue was full.
fn send_response(partial: bool) -> Response {
    if partial {
        Response::error(
            429,
            "LimitExceededException",
            "a worker's queue is full: the message reached the members of only some workers",
        )
    } else {
        Response::from_answer(Answer::Delivered)
    }
}
