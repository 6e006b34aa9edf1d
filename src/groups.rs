//! Groups and broadcast \[ext\] (SPEC §15): `PUT /@groups/{group}/{id}` adds a
//! connection to a group, `DELETE /@groups/{group}/{id}` removes it (leaving also
//! happens on disconnect), `POST /@groups/{group}` sends the body to every member,
//! `POST /@broadcast` to every open connection. Sends answer `202 {"nodes": n}`.
//!
//! # Where members live
//! The worker that owns a connection holds its memberships, in a [`Groups`] table of
//! its own (no lock, nothing shared): group name → members of this worker, and per
//! connection (keyed by its slab key) the groups it is in, so a disconnect drops them
//! in time linear in that connection's memberships. A connection in no group costs
//! nothing: it has no entry anywhere. Join and leave travel to the owning worker
//! like any `@connections` call (the id names it); a send goes to every worker once.
//!
//! Bytes per membership (see `bytes_per_membership_with_one_group_per_connection`):
//! a 16-byte link, a 4-byte member slot in the group's list (amortized up to 8 with
//! the list's growth) and, for a connection's first membership, one entry of the
//! connection → first-link map (8 bytes + 1 control byte at ≤ 7/8 load): about
//! 30-45 bytes for a connection in one group, ~24 for each further group.
//!
//! # Bounds (each answered with a clear body, never a panic)
//! - a group name is 1 to [`MAX_NAME_BYTES`] bytes of `A-Z a-z 0-9 - _ . : ~`
//!   (after percent-decoding), else 400 BadRequestException: it is then also safe as
//!   a NATS header value and in a log line;
//! - a connection is in at most [`MAX_GROUPS_PER_CONNECTION`] groups, else 429;
//! - a worker holds at most [`MAX_MEMBERSHIPS_PER_WORKER`] memberships and
//!   [`MAX_GROUPS_PER_WORKER`] distinct groups, else 429; so the table of one worker
//!   is bounded (≈ 45 MB for memberships, ≈ 30 MB for names at the caps);
//! - a send's body is at most `max_message_bytes` (413, as `POST /@connections`);
//!   it is framed once per worker and copied into each member's output; a member
//!   whose outbound buffer would pass `max_pending_outbound_bytes` is skipped (as
//!   `POST /@connections` answers 429 and sends nothing to it), never waited for.
//!
//! # One node
//! A send (`POST /@groups/{g}`, `POST /@broadcast`) is served by the worker that
//! read it: it puts ONE mailbox request on each other worker's queue (the payload
//! shared as an `Arc<[u8]>`, not copied per worker or member), delivers to its own
//! members ([`crate::worker::Worker::deliver_group`] /
//! [`crate::worker::Worker::deliver_broadcast`]) and answers 202 `{"nodes": 1}` once
//! every worker has acknowledged (so the caller is held back while a worker is
//! behind, and a full queue answers 429 instead of piling up memory).
//!
//! # Several nodes (NATS, SPEC §15; built in `src/worker/cluster_groups.rs`)
//! - A send is ONE NATS publish to `wsg.{name}.g` (group send; payload
//!   `{group}\n{body}`) or `wsg.{name}.b` (broadcast; `\n{body}`), with a reply
//!   subject (text or binary is the body's own: binary when it is not UTF-8).
//!   Every worker of every node subscribes to both subjects and, on a message, calls `deliver_group` /
//!   `deliver_broadcast` for its own members: there is no membership in NATS, and no
//!   message per member or per node crosses the network beyond NATS's own fan-out.
//! - In cluster mode the local mailbox fan-out is NOT used for sends (the node's own
//!   workers receive the publish like every other node's): the entry point
//!   `Worker::start_send` (src/worker/groups.rs) hands a send to
//!   `start_cluster_send`: "publish, then count acks" instead of "queue to each
//!   worker, then count acks".
//! - The node's lowest connected worker (its heartbeat publisher) answers the reply
//!   subject with the node's number once it has delivered (one ack per node; acks
//!   count once per node number). The caller counts acks until `request_timeout`,
//!   or until every node heard by heartbeat within `isolation_timeout` acked, and
//!   answers 202 `{"nodes": acks}`.
//! - Join/leave are `@connections`-like calls routed by id (a NATS request to the
//!   owner's subject `wsg.{name}.n.{node}.{worker}` when the id is remote), so they
//!   need no new subject.
//! - At 100 nodes: a push is 1 request + 1 reply; a group send or broadcast is 1
//!   publish (NATS delivers 100 × workers copies) + 100 acks; a node joining or
//!   leaving costs nothing beyond its own subscriptions and heartbeat.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::Config;
use crate::id;
use crate::mailbox::{Answer, Op};
use crate::management::{Decision, Response};

/// Longest group name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Groups one connection may be in.
pub const MAX_GROUPS_PER_CONNECTION: usize = 64;
/// Memberships one worker holds, over all its connections and groups.
pub const MAX_MEMBERSHIPS_PER_WORKER: usize = 1 << 21;
/// Distinct groups (with at least one member) one worker holds.
pub const MAX_GROUPS_PER_WORKER: usize = 1 << 17;

/// No link.
const NONE: u32 = u32::MAX;

/// Whether `name` is a valid group name (see the module docs).
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~'))
}

/// What a management path under `/@groups` or `/@broadcast` names (`path` is
/// percent-decoded and may start with `/{stage}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/@groups/{group}/{id}`
    Member { group: &'a [u8], id: &'a [u8] },
    /// `/@groups/{group}`
    Group(&'a [u8]),
    /// `/@broadcast`
    Broadcast,
}

/// The group path `path` names, if it is one (with or without `/{stage}`).
pub fn target<'a>(path: &'a [u8], stage: &str) -> Option<Target<'a>> {
    let rest = path
        .strip_prefix(b"/")
        .and_then(|p| p.strip_prefix(stage.as_bytes()))
        .filter(|r| r.starts_with(b"/@groups/") || *r == b"/@broadcast")
        .unwrap_or(path);
    if rest == b"/@broadcast" {
        return Some(Target::Broadcast);
    }
    let rest = rest.strip_prefix(b"/@groups/")?;
    Some(match rest.iter().position(|&b| b == b'/') {
        Some(i) => Target::Member {
            group: &rest[..i],
            id: &rest[i + 1..],
        },
        None => Target::Group(rest),
    })
}

/// A group send (`group: Some`) or broadcast (`None`): one per worker, the bytes
/// shared, not copied.
#[derive(Debug, Clone)]
pub struct Send {
    pub group: Option<Arc<[u8]>>,
    pub payload: Arc<[u8]>,
    /// A binary frame (the body is not UTF-8 and `allow_binary` is on), else text.
    pub binary: bool,
}

/// What a request for a group path needs (`None`: the path is no group path). Auth
/// was checked by the caller (`management::decide`).
pub fn decide(
    method: &str,
    path: &[u8],
    body: &[u8],
    config: &Config,
    workers: usize,
    ids: &id::Codec,
) -> Option<Decision> {
    let target = target(path, &config.api.stage)?;
    let respond = |status, kind, message: &str| {
        Some(Decision::Respond(Response::error(status, kind, message)))
    };
    let bad_name = || {
        respond(
            400,
            "BadRequestException",
            "a group name is 1 to 128 bytes of A-Z a-z 0-9 - _ . : ~",
        )
    };
    let group = match target {
        Target::Member { group, id } => {
            if !matches!(method, "PUT" | "DELETE") {
                return respond(405, "MethodNotAllowedException", "use PUT or DELETE");
            }
            if !valid_name(group) {
                return bad_name();
            }
            let id = match ids.decode(id) {
                Ok(id) if ids.is_local(&id) && (id.worker as usize) < workers => id,
                // SPEC §15: another node's id goes to its owner over NATS, as for
                // `@connections` (`management::decide`; the call carries J/L).
                Ok(id) if config.cluster.is_some() && id.node != ids.node() => id,
                Ok(_) | Err(id::ParseError::NotIssued) => {
                    return Some(Decision::Respond(Response::from_answer(Answer::Gone)))
                }
                Err(id::ParseError::Malformed) => {
                    return respond(400, "BadRequestException", "Invalid connectionId")
                }
            };
            let op = if method == "PUT" {
                Op::Join(group.into())
            } else {
                Op::Leave(group.into())
            };
            return Some(Decision::Connection { id, op });
        }
        Target::Group(group) if valid_name(group) => Some(Arc::from(group)),
        Target::Group(_) => return bad_name(),
        Target::Broadcast => None,
    };
    if method != "POST" {
        return respond(405, "MethodNotAllowedException", "use POST");
    }
    let binary = std::str::from_utf8(body).is_err();
    if binary && !config.limits.allow_binary {
        return Some(Decision::Respond(Response::from_answer(Answer::NotText)));
    }
    Some(Decision::Send(Send {
        group,
        payload: Arc::from(body),
        binary,
    }))
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The connection is in [`MAX_GROUPS_PER_CONNECTION`] groups already.
    ConnectionCap,
    /// The worker holds [`MAX_MEMBERSHIPS_PER_WORKER`] memberships or
    /// [`MAX_GROUPS_PER_WORKER`] groups already.
    WorkerCap,
}

/// The answer to a group send or broadcast: 202 `{"nodes": n}`, `n` the nodes that
/// acknowledged (1 on one node; with NATS, the acks counted before the timeout).
pub fn accepted(nodes: usize) -> Response {
    Response::json(202, format!("{{\"nodes\":{nodes}}}").into_bytes())
}

/// The answer to a join a cap refused: 429 LimitExceededException, naming the cap.
pub fn refusal(why: Refused) -> Response {
    let message = match why {
        Refused::ConnectionCap => {
            format!("the connection is in {MAX_GROUPS_PER_CONNECTION} groups already (the limit)")
        }
        Refused::WorkerCap => format!(
            "the worker holds {MAX_MEMBERSHIPS_PER_WORKER} memberships or \
             {MAX_GROUPS_PER_WORKER} groups already (the limit)"
        ),
    };
    Response::error(429, "LimitExceededException", &message)
}

/// One membership: a connection in a group.
#[derive(Debug, Clone, Copy)]
struct Link {
    group: u32,
    conn: u32,
    /// Its index in the group's member list.
    pos: u32,
    /// The connection's next membership (or, for a free link, the next free one).
    next: u32,
}

#[derive(Debug)]
struct Group {
    name: Box<[u8]>,
    /// Links of the members, in no particular order.
    members: Vec<u32>,
}

/// One worker's memberships (see the module docs).
#[derive(Debug)]
pub struct Groups {
    by_name: HashMap<Box<[u8]>, u32>,
    groups: Vec<Group>,
    free_groups: Vec<u32>,
    links: Vec<Link>,
    free_link: u32,
    /// Connection (slab key) → its first link; only connections in a group.
    heads: HashMap<u32, u32>,
    memberships: usize,
    live_groups: usize,
    max_memberships: usize,
    max_groups: usize,
    max_per_connection: usize,
}

impl Default for Groups {
    fn default() -> Groups {
        Groups::with_caps(
            MAX_MEMBERSHIPS_PER_WORKER,
            MAX_GROUPS_PER_WORKER,
            MAX_GROUPS_PER_CONNECTION,
        )
    }
}

impl Groups {
    /// A table with other caps than the defaults (tests).
    pub fn with_caps(memberships: usize, groups: usize, per_connection: usize) -> Groups {
        Groups {
            by_name: HashMap::new(),
            groups: Vec::new(),
            free_groups: Vec::new(),
            links: Vec::new(),
            free_link: NONE,
            heads: HashMap::new(),
            memberships: 0,
            live_groups: 0,
            max_memberships: memberships,
            max_groups: groups,
            max_per_connection: per_connection,
        }
    }

    /// Memberships held.
    pub fn memberships(&self) -> usize {
        self.memberships
    }

    /// Groups with at least one member here.
    pub fn groups(&self) -> usize {
        self.live_groups
    }

    /// Adds connection `conn` to `group` (`Ok(false)`: it was a member already).
    /// The name must be valid ([`valid_name`]).
    pub fn join(&mut self, group: &[u8], conn: u32) -> Result<bool, Refused> {
        let existing = self.by_name.get(group).copied();
        let head = self.heads.get(&conn).copied().unwrap_or(NONE);
        let mut n = 0;
        let mut l = head;
        while l != NONE {
            if Some(self.links[l as usize].group) == existing {
                return Ok(false);
            }
            n += 1;
            l = self.links[l as usize].next;
        }
        if n >= self.max_per_connection {
            return Err(Refused::ConnectionCap);
        }
        if self.memberships >= self.max_memberships
            || (existing.is_none() && self.live_groups >= self.max_groups)
        {
            return Err(Refused::WorkerCap);
        }
        let g = match existing {
            Some(g) => g,
            None => {
                let g = match self.free_groups.pop() {
                    Some(g) => {
                        self.groups[g as usize].name = group.into();
                        g
                    }
                    None => {
                        self.groups.push(Group {
                            name: group.into(),
                            members: Vec::new(),
                        });
                        (self.groups.len() - 1) as u32
                    }
                };
                self.by_name.insert(group.into(), g);
                self.live_groups += 1;
                g
            }
        };
        let members = &mut self.groups[g as usize].members;
        let link = Link {
            group: g,
            conn,
            pos: members.len() as u32,
            next: head,
        };
        let l = if self.free_link != NONE {
            let l = self.free_link;
            self.free_link = self.links[l as usize].next;
            self.links[l as usize] = link;
            l
        } else {
            self.links.push(link);
            (self.links.len() - 1) as u32
        };
        members.push(l);
        self.heads.insert(conn, l);
        self.memberships += 1;
        Ok(true)
    }

    /// Removes `conn` from `group`; whether it was a member.
    pub fn leave(&mut self, group: &[u8], conn: u32) -> bool {
        let Some(&g) = self.by_name.get(group) else {
            return false;
        };
        let mut prev = NONE;
        let mut l = self.heads.get(&conn).copied().unwrap_or(NONE);
        while l != NONE {
            let link = self.links[l as usize];
            if link.group == g {
                if prev == NONE {
                    if link.next == NONE {
                        self.heads.remove(&conn);
                    } else {
                        self.heads.insert(conn, link.next);
                    }
                } else {
                    self.links[prev as usize].next = link.next;
                }
                self.unlink(l);
                return true;
            }
            prev = l;
            l = link.next;
        }
        false
    }

    /// Drops every membership of `conn` (it is gone).
    pub fn drop_conn(&mut self, conn: u32) {
        if self.heads.is_empty() {
            return;
        }
        let Some(mut l) = self.heads.remove(&conn) else {
            return;
        };
        while l != NONE {
            let next = self.links[l as usize].next;
            self.unlink(l);
            l = next;
        }
    }

    /// Takes link `l` out of its group's list and frees it (and the group once it
    /// has no member left); the connection's chain is the caller's.
    fn unlink(&mut self, l: u32) {
        let Link { group, pos, .. } = self.links[l as usize];
        let g = &mut self.groups[group as usize];
        g.members.swap_remove(pos as usize);
        if let Some(&moved) = g.members.get(pos as usize) {
            self.links[moved as usize].pos = pos;
        }
        if g.members.is_empty() {
            let name = std::mem::take(&mut g.name);
            g.members = Vec::new();
            self.by_name.remove(&name);
            self.free_groups.push(group);
            self.live_groups -= 1;
        }
        self.links[l as usize].next = self.free_link;
        self.links[l as usize].group = NONE;
        self.free_link = l;
        self.memberships -= 1;
    }

    /// Appends the members of `group` (slab keys) to `out`.
    pub fn members_into(&self, group: &[u8], out: &mut Vec<u32>) {
        if let Some(&g) = self.by_name.get(group) {
            let links = &self.links;
            out.extend(
                self.groups[g as usize]
                    .members
                    .iter()
                    .map(|&l| links[l as usize].conn),
            );
        }
    }

    #[cfg(test)]
    /// Whether `conn` is in `group`.
    pub fn is_member(&self, group: &[u8], conn: u32) -> bool {
        let Some(&g) = self.by_name.get(group) else {
            return false;
        };
        let mut l = self.heads.get(&conn).copied().unwrap_or(NONE);
        while l != NONE {
            if self.links[l as usize].group == g {
                return true;
            }
            l = self.links[l as usize].next;
        }
        false
    }

    #[cfg(test)]
    /// Heap bytes the table holds (capacities, not lengths): for measurements.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        // hashbrown: one slot and one control byte per bucket; buckets are the
        // capacity rounded up to 8/7 and a power of two.
        fn map_bytes<K, V>(cap: usize) -> usize {
            if cap == 0 {
                return 0;
            }
            let buckets = (cap * 8 / 7).next_power_of_two();
            buckets * (size_of::<(K, V)>() + 1)
        }
        map_bytes::<u32, u32>(self.heads.capacity())
            + map_bytes::<Box<[u8]>, u32>(self.by_name.capacity())
            + self.links.capacity() * size_of::<Link>()
            + self.groups.capacity() * size_of::<Group>()
            + self.free_groups.capacity() * 4
            + self
                .groups
                .iter()
                .map(|g| g.members.capacity() * 4 + 2 * g.name.len())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(g: &Groups, name: &[u8]) -> Vec<u32> {
        let mut v = Vec::new();
        g.members_into(name, &mut v);
        v.sort_unstable();
        v
    }

    #[test]
    fn join_leave_and_disconnect() {
        let mut g = Groups::default();
        assert_eq!(g.join(b"a", 1), Ok(true));
        assert_eq!(g.join(b"a", 1), Ok(false), "a second join is a no-op");
        assert_eq!(g.join(b"a", 2), Ok(true));
        assert_eq!(g.join(b"b", 1), Ok(true));
        assert_eq!(g.join(b"a", 3), Ok(true));
        assert_eq!(members(&g, b"a"), [1, 2, 3]);
        assert_eq!(members(&g, b"b"), [1]);
        assert_eq!((g.memberships(), g.groups()), (4, 2));
        assert!(g.leave(b"a", 2));
        assert!(!g.leave(b"a", 2));
        assert!(!g.leave(b"zzz", 2));
        assert_eq!(members(&g, b"a"), [1, 3]);
        g.drop_conn(1);
        assert_eq!(members(&g, b"a"), [3]);
        assert!(members(&g, b"b").is_empty());
        assert_eq!((g.memberships(), g.groups()), (1, 1));
        assert!(!g.is_member(b"a", 1));
        assert!(g.is_member(b"a", 3));
        g.drop_conn(3);
        g.drop_conn(99);
        assert_eq!((g.memberships(), g.groups()), (0, 0));
        // Freed links and groups are reused.
        let links = g.links.len();
        assert_eq!(g.join(b"c", 7), Ok(true));
        assert_eq!(g.links.len(), links);
        assert_eq!(members(&g, b"c"), [7]);
    }

    #[test]
    fn caps_refuse_and_leave_the_table_as_it_was() {
        let mut g = Groups::with_caps(5, 2, 3);
        for name in [&b"a"[..], b"b"] {
            assert_eq!(g.join(name, 1), Ok(true));
        }
        assert_eq!(g.join(b"c", 1), Err(Refused::WorkerCap), "a third group");
        assert_eq!(g.join(b"a", 2), Ok(true));
        assert_eq!(g.join(b"b", 2), Ok(true));
        assert_eq!(g.join(b"a", 3), Ok(true));
        assert_eq!(
            g.join(b"b", 3),
            Err(Refused::WorkerCap),
            "a sixth membership"
        );
        assert_eq!(g.join(b"a", 3), Ok(false), "a member already is no new one");
        g.drop_conn(3);
        let mut p = Groups::with_caps(100, 100, 3);
        for name in [&b"a"[..], b"b", b"c"] {
            assert_eq!(p.join(name, 1), Ok(true));
        }
        assert_eq!(p.join(b"d", 1), Err(Refused::ConnectionCap));
        assert!(p.leave(b"b", 1));
        assert_eq!(p.join(b"d", 1), Ok(true));
        assert_eq!(members(&p, b"d"), [1]);
    }

    /// Swap-removal keeps every link's position right: random joins, leaves and
    /// disconnects against a naive model.
    #[test]
    fn matches_a_naive_model() {
        use std::collections::BTreeSet;
        let mut g = Groups::with_caps(10_000, 10_000, 4);
        let mut model: BTreeSet<(u32, u32)> = BTreeSet::new();
        let names = [&b"g0"[..], b"g1", b"g2", b"g3", b"g4", b"g5"];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let conn = (x % 40) as u32;
            let gi = ((x >> 8) % names.len() as u64) as u32;
            match (x >> 16) % 5 {
                0 | 1 => {
                    let in_groups = model.iter().filter(|(c, _)| *c == conn).count();
                    let r = g.join(names[gi as usize], conn);
                    if model.contains(&(conn, gi)) {
                        assert_eq!(r, Ok(false));
                    } else if in_groups >= 4 {
                        assert_eq!(r, Err(Refused::ConnectionCap));
                    } else {
                        assert_eq!(r, Ok(true));
                        model.insert((conn, gi));
                    }
                }
                2 | 3 => {
                    let was = model.remove(&(conn, gi));
                    assert_eq!(g.leave(names[gi as usize], conn), was);
                }
                _ => {
                    g.drop_conn(conn);
                    model.retain(|(c, _)| *c != conn);
                }
            }
            assert_eq!(g.memberships(), model.len());
        }
        for (gi, name) in names.iter().enumerate() {
            let want: Vec<u32> = model
                .iter()
                .filter(|(_, m)| *m == gi as u32)
                .map(|(c, _)| *c)
                .collect();
            assert_eq!(members(&g, name), want);
        }
    }

    #[test]
    fn names_and_paths() {
        assert!(valid_name(b"room-1_a.b:c~"));
        assert!(valid_name(&[b'x'; MAX_NAME_BYTES]));
        for bad in [&b""[..], b"a b", b"a/b", b"caf\xc3\xa9", b"a*", b"a>"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(!valid_name(&[b'x'; MAX_NAME_BYTES + 1]));
        assert_eq!(target(b"/@broadcast", "prod"), Some(Target::Broadcast));
        assert_eq!(target(b"/prod/@broadcast", "prod"), Some(Target::Broadcast));
        assert_eq!(
            target(b"/prod/@groups/g", "prod"),
            Some(Target::Group(b"g"))
        );
        assert_eq!(
            target(b"/@groups/g/abc=", "prod"),
            Some(Target::Member {
                group: b"g",
                id: b"abc="
            })
        );
        assert_eq!(target(b"/@connections/x", "prod"), None);
        assert_eq!(target(b"/other/@groups/g", "prod"), None);
        assert_eq!(target(b"/@broadcast/x", "prod"), None);
    }

    fn config(extra: &str) -> Config {
        let text = format!(
            "[api]\nstage = \"prod\"\n[management]\nlisten = \"127.0.0.1:0\"\n[limits]\n{extra}\n[integrations.m]\ntype = \"mock\"\n[routes.\"$default\"]\nintegration = \"m\"\n"
        );
        crate::config::parse(std::path::Path::new("t.toml"), &text, &Default::default()).unwrap()
    }

    fn status(d: Option<Decision>) -> u16 {
        match d {
            Some(Decision::Respond(r)) => r.status,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decisions() {
        let c = config("binary = \"allow\"");
        let ids = id::Codec::new(id::Key::from_secret(b"test"), 0, 7);
        let id = ids.connection(1, 5, 9);
        let id = std::str::from_utf8(&id).unwrap();
        let d = |m: &str, p: &str, body: &[u8]| decide(m, p.as_bytes(), body, &c, 2, &ids);
        match d("PUT", &format!("/prod/@groups/room/{id}"), b"") {
            Some(Decision::Connection {
                id,
                op: Op::Join(g),
            }) => assert_eq!((id.worker, id.slot, &*g), (1, 5, &b"room"[..])),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            d("DELETE", &format!("/@groups/room/{id}"), b""),
            Some(Decision::Connection {
                op: Op::Leave(_),
                ..
            })
        ));
        match d("POST", "/@groups/room", b"hi") {
            Some(Decision::Send(s)) => {
                assert_eq!(s.group.as_deref(), Some(&b"room"[..]));
                assert_eq!((&*s.payload, s.binary), (&b"hi"[..], false));
            }
            other => panic!("{other:?}"),
        }
        match d("POST", "/prod/@broadcast", b"\xff") {
            Some(Decision::Send(s)) => assert!(s.group.is_none() && s.binary),
            other => panic!("{other:?}"),
        }
        assert!(d("GET", "/@connections/x", b"").is_none());
        assert_eq!(status(d("GET", "/@groups/room", b"")), 405);
        assert_eq!(status(d("GET", "/@broadcast", b"")), 405);
        assert_eq!(status(d("POST", &format!("/@groups/room/{id}"), b"")), 405);
        assert_eq!(status(d("POST", "/@groups/a%20b", b"")), 400);
        assert_eq!(status(d("POST", "/@groups/", b"")), 400);
        assert_eq!(status(d("PUT", &format!("/@groups/a*/{id}"), b"")), 400);
        assert_eq!(status(d("PUT", "/@groups/room/nope", b"")), 400);
        let other = id::Codec::new(id::Key::from_secret(b"test"), 0, 8).connection(1, 5, 9);
        let other = std::str::from_utf8(&other).unwrap();
        assert_eq!(
            status(d("PUT", &format!("/@groups/room/{other}"), b"")),
            410
        );
        let text_only = config("");
        assert_eq!(
            status(decide("POST", b"/@broadcast", b"\xff", &text_only, 2, &ids)),
            400
        );
    }

    /// The measurement the module docs quote: 100,000 connections, each in one group
    /// (all in the same one), then each also in a second group.
    #[test]
    fn bytes_per_membership_with_one_group_per_connection() {
        let n = 100_000u32;
        let mut g = Groups::default();
        for c in 0..n {
            g.join(b"everyone", c).unwrap();
        }
        let one = g.heap_bytes() as f64 / f64::from(n);
        for c in 0..n {
            g.join(b"second", c).unwrap();
        }
        let two = g.heap_bytes() as f64 / f64::from(n);
        eprintln!("groups: {one:.1} bytes per connection in one group, {two:.1} in two");
        assert!(one < 64.0, "{one}");
        assert!(two - one < 48.0, "{two}");
    }
}
