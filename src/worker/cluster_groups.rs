//! Group sends and broadcasts across nodes (SPEC §15, design in `crate::groups`).
//!
//! With `[cluster]` a send is ONE NATS request (`cluster_request_many`) on
//! `wsg.{name}.g` (group send) or `wsg.{name}.b` (broadcast); every worker of every
//! node, this one's included, subscribes to both and delivers to its own members
//! (`deliver_group` / `deliver_broadcast`), and the node's lowest connected worker
//! (the one that publishes its heartbeat) answers one ack carrying its node number.
//! The sender counts distinct nodes' acks until `request_timeout`, or until every
//! node heard by heartbeat within `isolation_timeout` has acked, and answers
//! `202 {"nodes": n}`. No membership lives in NATS; the local mailbox fan-out is
//! not used (this node's workers get the publish like every other node's).
//!
//! Wire format: `<group>\n<body>` on the group subject, `\n<body>` on the broadcast
//! subject; an ack is the node's number in decimal. Whatever NATS delivers is
//! hostile: a malformed message, an invalid group name, a body over
//! `max_message_bytes` or a binary body while binary is not allowed is dropped (and
//! not acknowledged); an ack that is not a node number is ignored; acks count once
//! per node.

use super::Worker;
use crate::cluster::client::{Outcome, Refused};
use crate::cluster::{self, proto};
use crate::groups::{self, Send};
use crate::management::Response;

/// `cluster_subscribe` tags of the two subjects.
pub(super) const TAG_GROUP: u32 = 1;
pub(super) const TAG_BROADCAST: u32 = 2;
/// Sends one worker may have waiting for acks (beyond it: 503, retry).
pub(super) const MAX_WAITING: usize = 4096;

/// A send waiting for node acks.
#[derive(Debug)]
struct Waiting {
    admin_key: usize,
    admin_generation: u32,
    /// Distinguishes a reused slab key (the token carries it).
    generation: u32,
    /// Nodes heard within `isolation_timeout` when the send left (bit per node).
    expected: NodeSet,
    acked: NodeSet,
    /// The NATS request's key and generation in the client, to end it early.
    request: (usize, u32),
}

/// A set of node numbers (0-255).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct NodeSet([u64; 4]);

impl NodeSet {
    pub(super) fn insert(&mut self, node: u8) {
        self.0[usize::from(node >> 6)] |= 1 << (node & 63);
    }

    pub(super) fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Whether every node of `self` is in `other`.
    pub(super) fn subset_of(&self, other: &NodeSet) -> bool {
        self.0.iter().zip(other.0.iter()).all(|(a, b)| a & !b == 0)
    }
}

/// One worker's cluster sends: the subjects, the sends waiting for acks, and the
/// scratch a request's payload is built in (reused, so a send allocates nothing once
/// it has grown).
#[derive(Debug, Default)]
pub(super) struct Sends {
    group_subject: Vec<u8>,
    broadcast_subject: Vec<u8>,
    waiting: slab::Slab<Waiting>,
    generation: u32,
    scratch: Vec<u8>,
}

/// The request payload of a send (see the module docs) into `out`.
pub(super) fn encode_send(out: &mut Vec<u8>, send: &Send) {
    out.clear();
    out.reserve(send.payload.len() + 1 + send.group.as_ref().map_or(0, |g| g.len()));
    if let Some(g) = &send.group {
        out.extend_from_slice(g);
    }
    out.push(b'\n');
    out.extend_from_slice(&send.payload);
}

/// Decodes a send received on the group (`group: true`) or broadcast subject:
/// the group name (for a group send) and the body; `None` when malformed. Looks at
/// no more than a group name's length for the separator.
pub(super) fn decode_send(p: &[u8], group: bool) -> Option<(&[u8], &[u8])> {
    let window = &p[..p.len().min(groups::MAX_NAME_BYTES + 1)];
    let nl = window.iter().position(|&b| b == b'\n')?;
    let (name, body) = (&p[..nl], &p[nl + 1..]);
    let ok = if group {
        groups::valid_name(name)
    } else {
        name.is_empty()
    };
    ok.then_some((name, body))
}

/// An ack's payload: a node number in decimal.
fn decode_ack(p: &[u8]) -> Option<u8> {
    if p.is_empty() || p.len() > 3 || !p.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(p).ok()?.parse().ok()
}

fn token(key: usize, generation: u32) -> u64 {
    (u64::from(generation) << 32) | key as u64
}

impl Worker {
    /// Subscribes this worker to the group and broadcast subjects (with `[cluster]`;
    /// kept across reconnects).
    pub(super) fn start_cluster_groups(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let name = &c.settings.name;
        let g = format!("wsg.{name}.g").into_bytes();
        let b = format!("wsg.{name}.b").into_bytes();
        self.cluster_subscribe(&g, TAG_GROUP);
        self.cluster_subscribe(&b, TAG_BROADCAST);
        self.group.sends.group_subject = g;
        self.group.sends.broadcast_subject = b;
    }

    /// `POST /@groups/{group}` or `POST /@broadcast` with `[cluster]`: one NATS
    /// request that every node's workers deliver; the management connection waits
    /// for the acks (`on_cluster_send_reply`). `false` on one node (the caller
    /// delivers through the mailboxes).
    pub(super) fn start_cluster_send(
        &mut self,
        admin_key: usize,
        admin_generation: u32,
        send: &Send,
    ) -> bool {
        let Some(c) = self.cluster.as_ref() else {
            return false;
        };
        let now = self.now;
        let mut expected = NodeSet::default();
        for (node, h) in c.heard.iter().enumerate() {
            if h.is_some_and(|h| now.saturating_duration_since(h.at) < c.settings.isolation_timeout)
            {
                expected.insert(node as u8);
            }
        }
        let sends = &mut self.group.sends;
        if sends.waiting.len() >= MAX_WAITING {
            let r = cluster::unavailable("too many sends are waiting on other nodes; retry");
            self.respond(admin_key, &r);
            return true;
        }
        sends.generation = sends.generation.wrapping_add(1);
        let generation = sends.generation;
        let key = sends.waiting.vacant_key();
        let mut payload = std::mem::take(&mut sends.scratch);
        encode_send(&mut payload, send);
        let subject = if send.group.is_some() {
            std::mem::take(&mut sends.group_subject)
        } else {
            std::mem::take(&mut sends.broadcast_subject)
        };
        let sent = self.cluster_request_many(&subject, &payload, token(key, generation));
        let sends = &mut self.group.sends;
        if send.group.is_some() {
            sends.group_subject = subject;
        } else {
            sends.broadcast_subject = subject;
        }
        if payload.capacity() > crate::buf::KEEP_MAX_CAPACITY {
            payload = Vec::new(); // one big send does not keep its buffer
        }
        sends.scratch = payload;
        let r = match sent {
            Ok(()) => {
                let request = self
                    .cluster
                    .as_ref()
                    .map_or((0, 0), |c| c.client.last_request());
                let sends = &mut self.group.sends;
                sends.waiting.insert(Waiting {
                    admin_key,
                    admin_generation,
                    generation,
                    expected,
                    acked: NodeSet::default(),
                    request,
                });
                if let Some(a) = self.admin.get_mut(admin_key) {
                    a.waiting = true;
                }
                return true;
            }
            Err(Refused::TooLarge) => Response::error(
                413,
                "PayloadTooLargeException",
                "the body is larger than the cluster's NATS max_payload",
            ),
            Err(Refused::NotConnected) => {
                cluster::unavailable("this node is not connected to the cluster; retry")
            }
            Err(Refused::Full) => {
                cluster::unavailable("the connection to the cluster is congested; retry")
            }
        };
        self.respond(admin_key, &r);
        true
    }

    /// A send another node (or this one) published: delivered to this worker's
    /// members; the node's heartbeat worker acknowledges it on `reply`.
    pub(super) fn on_cluster_send(&mut self, tag: u32, reply: Option<&[u8]>, payload: &[u8]) {
        let Some((group, body)) = decode_send(payload, tag == TAG_GROUP) else {
            return;
        };
        let limits = &self.shared.config.limits;
        if body.len() > limits.max_message_bytes {
            return;
        }
        let binary = std::str::from_utf8(body).is_err();
        if binary && !limits.allow_binary {
            return;
        }
        if tag == TAG_GROUP {
            self.deliver_group(group, body, binary);
        } else {
            self.deliver_broadcast(body, binary);
        }
        let node = self.ids.node();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if let Some(reply) = reply.filter(|r| proto::valid_subject(r)) {
            if c.shared.publishes_heartbeat(self.index) {
                let _ = c
                    .client
                    .publish(reply, None, itoa::Buffer::new().format(node).as_bytes());
            }
        }
    }

    /// A node's ack for a send of this worker, or the send's end (time-out, or no
    /// responders): answers `202 {"nodes": n}` once every node heard has acked or
    /// at the end, whichever comes first.
    pub(super) fn on_cluster_send_reply(&mut self, token: u64, outcome: Outcome) {
        let key = (token & u64::from(u32::MAX)) as usize;
        let generation = (token >> 32) as u32;
        let sends = &mut self.group.sends;
        let Some(w) = sends
            .waiting
            .get_mut(key)
            .filter(|w| w.generation == generation)
        else {
            return; // answered already: a late ack, or the final time-out
        };
        let early = match outcome {
            Outcome::Reply(p) => {
                if let Some(node) = decode_ack(&p) {
                    w.acked.insert(node);
                }
                if w.expected.is_empty() || !w.expected.subset_of(&w.acked) {
                    return;
                }
                true
            }
            Outcome::TimedOut | Outcome::NoResponders => false,
        };
        let w = sends.waiting.remove(key);
        if early {
            if let Some(c) = self.cluster.as_mut() {
                c.client.cancel(w.request.0, w.request.1, &mut self.timers);
            }
        }
        let answer = groups::accepted(w.acked.len());
        self.finish_parked(w.admin_key, w.admin_generation, &answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sends_round_trip_and_garbage_is_refused() {
        let mut out = Vec::new();
        let send = Send {
            group: Some(Arc::from(&b"room-1"[..])),
            payload: Arc::from(&b"hi\nthere"[..]),
            binary: false,
        };
        encode_send(&mut out, &send);
        assert_eq!(
            decode_send(&out, true),
            Some((&b"room-1"[..], &b"hi\nthere"[..]))
        );
        assert_eq!(
            decode_send(&out, false),
            None,
            "a group on the broadcast subject"
        );
        let b = Send {
            group: None,
            ..send
        };
        encode_send(&mut out, &b);
        assert_eq!(
            decode_send(&out, false),
            Some((&b""[..], &b"hi\nthere"[..]))
        );
        assert_eq!(
            decode_send(&out, true),
            None,
            "no group on the group subject"
        );
        assert_eq!(decode_send(b"no newline", true), None);
        assert_eq!(decode_send(b"a b\nx", true), None);
        let long = [vec![b'x'; groups::MAX_NAME_BYTES + 1], b"\nx".to_vec()].concat();
        assert_eq!(decode_send(&long, true), None);
        assert_eq!(decode_send(b"", false), None);
    }

    #[test]
    fn acks_and_node_sets() {
        assert_eq!(decode_ack(b"0"), Some(0));
        assert_eq!(decode_ack(b"255"), Some(255));
        for bad in [&b""[..], b"256", b"1000", b"-1", b"+1", b"1 "] {
            assert_eq!(decode_ack(bad), None, "{bad:?}");
        }
        let (mut e, mut a) = (NodeSet::default(), NodeSet::default());
        assert!(e.is_empty());
        for n in [1, 64, 255] {
            e.insert(n);
        }
        assert_eq!(e.len(), 3);
        a.insert(1);
        a.insert(255);
        assert!(!e.subset_of(&a));
        a.insert(64);
        a.insert(64);
        a.insert(7);
        assert!(e.subset_of(&a));
        assert_eq!(a.len(), 4);
    }

    #[test]
    fn tokens_carry_key_and_generation() {
        let t = token(4095, u32::MAX);
        assert_eq!(
            (t & u64::from(u32::MAX), t >> 32),
            (4095, u64::from(u32::MAX))
        );
    }
}
