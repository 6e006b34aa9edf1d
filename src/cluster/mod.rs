//! Several nodes on core NATS (SPEC §15): any node's management API reaches a
//! connection on any node.
//!
//! - [`proto`]: the sans-IO NATS text-protocol codec.
//! - [`client`]: one NATS connection per worker, inside the worker's mio loop.
//! - here: the `[cluster]` settings, the node-wide NATS state ([`Shared`], read for
//!   isolation and `/health`), each worker's cluster state ([`Cluster`]: heartbeats
//!   heard, isolation) and the wire formats of remote calls and heartbeats.
//!
//! # Subjects and what crosses NATS
//!
//! - `wsg.{name}.n.{node}.{worker}`: management calls for that worker's connections
//!   (one request per `POST`/`GET`/`DELETE /@connections/{id}` whose id names another
//!   node; the owning worker answers on the caller's inbox). Local ids never touch
//!   NATS.
//! - `wsg.{name}.hb`: one heartbeat per node per second ([`Heartbeat`]: node, epoch,
//!   worker count), published by the node's lowest-numbered worker that is connected.
//!   Every worker subscribes and keeps a table of when each node was last heard.
//! - `_INBOX.<random>.*`: each worker's one reply subscription.
//!
//! # Remote call wire format
//!
//! Request payload: one header line, then the body:
//! `P <id>\n<body>` (POST), `G <id>\n` (GET), `D <id> <code>\n<reason>` (DELETE).
//! Reply payload: `<status> <x-amzn-ErrorType or ->\n<body>`, §8's response as the
//! owner made it; the caller returns it as is.
//!
//! # Statuses of a remote call
//!
//! Owner's answer → as is. No answer within `request_timeout` → 503. NATS "no
//! responders" → 503 when the owner node was heard within `isolation_timeout` (plus
//! [`GONE_MARGIN`]), else 410 ("heard" counts from this worker's own connection time, so a caller that was
//! itself reconnecting never concludes a node is gone). A heartbeat that shows the
//! node restarted (another epoch) or has fewer workers → 410 without asking. This
//! worker not connected, or its output or in-flight requests at their bound → 503.
//!
//! # Isolation (per node)
//!
//! A node whose workers have ALL been without NATS for `isolation_timeout` closes
//! every client with 1001 "Going away" (each gets its `$disconnect`) and refuses new
//! upgrades with 503 until one worker is connected again. Per node, not per worker:
//! liveness is per node (one heartbeat per node), so the node counts as reachable
//! while any of its workers is; a worker that alone lost NATS keeps its clients (its
//! ids answer 503 meanwhile, never a false 410). The state is one atomic per worker,
//! written only when that worker's connection goes up or down (never on the message
//! path) and read by the others once per tick.

pub mod client;
pub mod metrics;
pub mod proto;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::mailbox::Op;
use crate::management::Response;

/// How often a node publishes its heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// How often a worker's cluster tick runs (reconnects, pings, heartbeats, isolation).
pub const TICK: Duration = Duration::from_millis(100);
/// What a caller adds to `isolation_timeout` before it calls a silent node gone
/// (410). A cut-off node isolates `isolation_timeout` after its LAST worker lost
/// NATS, and its last heartbeat may have left up to one interval (plus a tick)
/// before that: without the margin a caller could answer 410 while the node still
/// serves the connection. With it, a 410 is never early.
pub const GONE_MARGIN: Duration = Duration::from_millis(1500);
/// Bytes of NATS output a worker may have unsent; beyond it remote calls get 503.
pub const OUT_LIMIT: usize = 8 * 1024 * 1024;
/// Management calls one worker may have waiting on NATS at once.
pub const MAX_REMOTE_CALLS: usize = 4096;

/// `[cluster]` as written (SPEC §15; `node` is this node's number, 0-255, the
/// routing field of its connection ids, SPEC §6).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub nats: Vec<String>,
    pub name: String,
    pub node: Option<i64>,
    pub secret_file: Option<String>,
    pub request_timeout: Option<String>,
    pub isolation_timeout: Option<String>,
}

/// `[cluster]`, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The NATS servers as written, and resolved (once, at start: a worker never
    /// resolves a name).
    pub nats: Vec<String>,
    pub servers: Vec<SocketAddr>,
    pub name: String,
    pub node: u8,
    /// The shared secret that keys the connection ids (SPEC §6).
    pub secret: Vec<u8>,
    pub request_timeout: Duration,
    pub isolation_timeout: Duration,
}

/// Why `[cluster]` is invalid: the key and the problem.
pub type Invalid = (&'static str, String);

/// Validates what `config.rs` does not (durations are parsed there).
pub fn validate(raw: &RawCluster) -> Result<(Vec<SocketAddr>, u8, Vec<u8>), Invalid> {
    if raw.nats.is_empty() {
        return Err(("cluster.nats", "list at least one NATS server".into()));
    }
    let mut servers = Vec::new();
    for url in &raw.nats {
        servers.push(resolve(url).map_err(|p| ("cluster.nats", p))?);
    }
    if raw.name.is_empty()
        || raw.name.len() > 64
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err((
            "cluster.name",
            format!(
                "\"{}\" must be 1-64 characters of A-Z, a-z, 0-9, - and _ (it is a NATS subject token)",
                raw.name
            ),
        ));
    }
    let node = match raw.node {
        None => {
            return Err((
                "cluster.node",
                "missing: give each node its own number, 0-255".into(),
            ))
        }
        Some(n) => u8::try_from(n)
            .map_err(|_| ("cluster.node", format!("{n} is not a node number (0-255)")))?,
    };
    let Some(path) = &raw.secret_file else {
        return Err((
            "cluster.secret_file",
            "missing: every node needs the same secret (it keys the connection ids)".into(),
        ));
    };
    let secret = std::fs::read(path)
        .map_err(|e| ("cluster.secret_file", format!("cannot read {path}: {e}")))?;
    let secret = secret.trim_ascii().to_vec();
    if secret.len() < 16 {
        return Err((
            "cluster.secret_file",
            format!(
                "{path} holds {} bytes; use at least 16 random bytes",
                secret.len()
            ),
        ));
    }
    Ok((servers, node, secret))
}

/// `nats://host:port`, `host:port` or `host` (port 4222).
fn resolve(url: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let rest = match url.split_once("://") {
        Some(("nats", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "\"{url}\": {scheme}:// is not supported (plain nats:// only)"
            ))
        }
        None => url,
    };
    if rest.contains('@') || rest.contains('/') {
        return Err(format!(
            "\"{url}\": give host:port only (no credentials or path)"
        ));
    }
    let with_port = if rest
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !rest.ends_with(']')
    {
        rest.to_string()
    } else {
        format!("{rest}:4222")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("\"{url}\" does not resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("\"{url}\" resolves to no address"))
}

/// Node-wide NATS state: per worker, since when it is without NATS (ms after
/// `base`, plus one; 0 = connected). Written by each worker for itself when its
/// connection goes up or down; read by all once per tick and by `/health`.
#[derive(Debug)]
pub struct Shared {
    base: Instant,
    down_since: Vec<AtomicU64>,
}

impl Shared {
    /// Every worker starts without NATS, as of now.
    pub fn new(workers: usize) -> Shared {
        Shared {
            base: Instant::now(),
            down_since: (0..workers).map(|_| AtomicU64::new(1)).collect(),
        }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    pub fn set_up(&self, worker: u8) {
        if let Some(a) = self.down_since.get(worker as usize) {
            a.store(0, Ordering::Release);
        }
    }

    pub fn set_down(&self, worker: u8, now: Instant) {
        if let Some(a) = self.down_since.get(worker as usize) {
            a.store(self.ms(now), Ordering::Release);
        }
    }

    pub fn is_up(&self, worker: u8) -> bool {
        self.down_since
            .get(worker as usize)
            .is_some_and(|a| a.load(Ordering::Acquire) == 0)
    }

    /// Workers connected to NATS now.
    pub fn connected(&self) -> usize {
        self.down_since
            .iter()
            .filter(|a| a.load(Ordering::Acquire) == 0)
            .count()
    }

    /// Whether every worker has been without NATS for at least `timeout`.
    pub fn isolated(&self, now: Instant, timeout: Duration) -> bool {
        let mut latest = 0;
        for a in &self.down_since {
            match a.load(Ordering::Acquire) {
                0 => return false,
                t => latest = latest.max(t),
            }
        }
        self.ms(now).saturating_sub(latest) >= timeout.as_millis() as u64
    }

    /// Whether `worker` is the one that publishes the heartbeat: the lowest-numbered
    /// connected worker.
    pub fn publishes_heartbeat(&self, worker: u8) -> bool {
        self.down_since
            .iter()
            .take(worker as usize)
            .all(|a| a.load(Ordering::Acquire) != 0)
    }
}

/// One heartbeat: `<node> <epoch> <workers>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub node: u8,
    pub epoch: u16,
    pub workers: u16,
}

impl Heartbeat {
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {}", self.node, self.epoch, self.workers).into_bytes()
    }

    pub fn decode(b: &[u8]) -> Option<Heartbeat> {
        if b.len() > 32 {
            return None;
        }
        let s = std::str::from_utf8(b).ok()?;
        let mut it = s.split(' ');
        let h = Heartbeat {
            node: it.next()?.parse().ok()?,
            epoch: it.next()?.parse().ok()?,
            workers: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(h)
    }
}

/// When a node was last heard, and what it said.
#[derive(Debug, Clone, Copy)]
pub struct Heard {
    pub at: Instant,
    pub epoch: u16,
    pub workers: u16,
}

/// One worker's cluster state.
#[derive(Debug)]
pub struct Cluster {
    pub client: client::Client,
    pub settings: Settings,
    pub shared: std::sync::Arc<Shared>,
    pub worker: u8,
    /// `wsg.{name}.n.{node}.{worker}` of this worker, and `wsg.{name}.hb`.
    pub calls_subject: Vec<u8>,
    pub hb_subject: Vec<u8>,
    /// Per node number: its last heartbeat.
    pub heard: Vec<Option<Heard>>,
    pub next_heartbeat: Instant,
    /// This worker acted on the node's isolation (closed its clients).
    pub isolated: bool,
    /// Management calls waiting on NATS.
    pub remote_calls: usize,
    /// A node-number conflict was logged.
    conflict_logged: bool,
}

/// What the caller does with a remote id before asking NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precheck {
    Ask,
    /// The node's heartbeat shows the id cannot be live (another epoch, no such
    /// worker): 410.
    Gone,
}

impl Cluster {
    pub fn new(settings: Settings, shared: std::sync::Arc<Shared>, worker: u8) -> Cluster {
        let client = client::Client::new(
            settings.servers.clone(),
            &format!("wsgate-{}-{}-{}", settings.name, settings.node, worker),
            crate::token::NATS,
            OUT_LIMIT,
        );
        let calls_subject = call_subject(&settings.name, settings.node, worker);
        let hb_subject = format!("wsg.{}.hb", settings.name).into_bytes();
        let mut c = Cluster {
            client,
            shared,
            worker,
            calls_subject,
            hb_subject,
            heard: vec![None; 256],
            next_heartbeat: Instant::now(),
            isolated: false,
            remote_calls: 0,
            conflict_logged: false,
            settings,
        };
        let (calls, hb) = (c.calls_subject.clone(), c.hb_subject.clone());
        c.client.subscribe(&calls, client::Tag::Calls);
        c.client.subscribe(&hb, client::Tag::Heartbeat);
        c
    }

    /// Notes a heartbeat. One that names this node with another epoch means two
    /// running nodes share a node number (a configuration error that makes their
    /// answers unreliable): logged once.
    pub fn on_heartbeat(&mut self, payload: &[u8], now: Instant, own_epoch: u16) {
        if let Some(h) = Heartbeat::decode(payload) {
            if h.node == self.settings.node && h.epoch != own_epoch && !self.conflict_logged {
                self.conflict_logged = true;
                log::error!(
                    "another running node of cluster {} uses node number {}: give every node its own cluster.node",
                    self.settings.name,
                    h.node
                );
            }
            self.heard[h.node as usize] = Some(Heard {
                at: now,
                epoch: h.epoch,
                workers: h.workers,
            });
        }
    }

    /// Whether a remote id can be live as far as its node's last heartbeat tells.
    pub fn precheck(&self, id: &crate::id::ConnectionId) -> Precheck {
        match self.heard[id.node as usize] {
            Some(h) if h.epoch != id.epoch || u16::from(id.worker) >= h.workers => Precheck::Gone,
            _ => Precheck::Ask,
        }
    }

    /// Whether `node` was heard within `isolation_timeout` plus [`GONE_MARGIN`],
    /// counted from when this worker's own connection came up (so our own outage
    /// proves nothing).
    pub fn heard_recently(&self, node: u8, now: Instant) -> bool {
        let listening = self.client.connected_since().unwrap_or(now);
        let last = self.heard[node as usize].map_or(listening, |h| h.at.max(listening));
        now.saturating_duration_since(last) < self.settings.isolation_timeout + GONE_MARGIN
    }
}

/// `wsg.{name}.n.{node}.{worker}`.
pub fn call_subject(name: &str, node: u8, worker: u8) -> Vec<u8> {
    format!("wsg.{name}.n.{node}.{worker}").into_bytes()
}

/// A remote call's request payload (see the module documentation).
pub fn encode_call(id: &crate::id::Text, op: &Op) -> Vec<u8> {
    let mut out = Vec::new();
    let (letter, body): (u8, &[u8]) = match op {
        Op::Post(body) => (b'P', body),
        Op::Get | Op::Ping => (b'G', b""),
        Op::Delete { reason, .. } => (b'D', reason.as_bytes()),
        Op::Join(group) => (b'J', group),
        Op::Leave(group) => (b'L', group),
        // A group send is published to the group subject, never sent as a call;
        // the owner refuses an empty `S` as malformed (400).
        Op::Send(_) => (b'S', b""),
    };
    out.reserve(24 + body.len());
    out.push(letter);
    out.push(b' ');
    out.extend_from_slice(id);
    if let Op::Delete { code, .. } = op {
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(*code).as_bytes());
    }
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// Decodes [`encode_call`]'s payload: the id's text and the operation. `None` for
/// anything else (the caller answers 400). The body is bounded by the caller.
pub fn decode_call(p: &[u8]) -> Option<(&[u8], Op)> {
    let nl = p.iter().position(|b| *b == b'\n')?;
    let (head, body) = (&p[..nl], &p[nl + 1..]);
    let mut it = head.split(|b| *b == b' ');
    let letter = it.next()?;
    let id = it.next()?;
    let op = match letter {
        b"P" => Op::Post(body.to_vec()),
        b"G" if body.is_empty() => Op::Get,
        b"J" if crate::groups::valid_name(body) => Op::Join(body.into()),
        b"L" if crate::groups::valid_name(body) => Op::Leave(body.into()),
        b"D" => {
            let code: u16 = std::str::from_utf8(it.next()?).ok()?.parse().ok()?;
            if !(code == 1000 || (4000..=4999).contains(&code)) || body.len() > 123 {
                return None;
            }
            Op::Delete {
                code,
                reason: String::from_utf8(body.to_vec()).ok()?,
            }
        }
        _ => return None,
    };
    if it.next().is_some() {
        return None;
    }
    Some((id, op))
}

/// A reply payload: the owner's response.
pub fn encode_reply(r: &Response) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + r.body.len());
    out.extend_from_slice(itoa::Buffer::new().format(r.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(r.error_type.unwrap_or("-").as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&r.body);
    out
}

/// The error types a reply may carry (anything else from NATS is refused).
const ERROR_TYPES: [&str; 5] = [
    "GoneException",
    "LimitExceededException",
    "BadRequestException",
    "PayloadTooLargeException",
    "ServiceUnavailableException",
];

/// Decodes a reply payload into the response to return; `None` for garbage.
pub fn decode_reply(p: &[u8]) -> Option<Response> {
    let nl = p.iter().position(|b| *b == b'\n')?;
    let head = std::str::from_utf8(&p[..nl]).ok()?;
    let (status, kind) = head.split_once(' ')?;
    let status: u16 = status.parse().ok()?;
    if !(200..=599).contains(&status) {
        return None;
    }
    let error_type = match kind {
        "-" => None,
        k => Some(*ERROR_TYPES.iter().find(|t| **t == k)?),
    };
    Some(Response {
        status,
        error_type,
        content_type: "application/json",
        body: p[nl + 1..].to_vec(),
    })
}

/// SPEC §15's 503 for a remote call that got no answer.
pub fn unavailable(message: &str) -> Response {
    Response::error(503, "ServiceUnavailableException", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_round_trip() {
        let id = *b"abcdefghijklmno=";
        for op in [
            Op::Post(b"hi\nthere".to_vec()),
            Op::Get,
            Op::Delete {
                code: 4001,
                reason: "bye now".into(),
            },
        ] {
            let p = encode_call(&id, &op);
            let (got_id, got) = decode_call(&p).expect("decodes");
            assert_eq!(got_id, id);
            assert_eq!(format!("{got:?}"), format!("{op:?}"));
        }
        assert!(decode_call(b"X abc\n").is_none());
        assert!(decode_call(b"D abc 999\n").is_none());
        assert!(decode_call(b"G abc").is_none());
        assert!(decode_call(b"G abc extra\n").is_none());
    }

    #[test]
    fn replies_round_trip_and_garbage_is_refused() {
        let r = Response::error(410, "GoneException", "gone");
        let back = decode_reply(&encode_reply(&r)).unwrap();
        assert_eq!(
            (back.status, back.error_type, back.body),
            (410, r.error_type, r.body)
        );
        let ok = decode_reply(b"200 -\n").unwrap();
        assert_eq!((ok.status, ok.error_type), (200, None));
        assert!(decode_reply(b"200 EvilException\n").is_none());
        assert!(decode_reply(b"99 -\n").is_none());
        assert!(decode_reply(b"garbage").is_none());
    }

    #[test]
    fn heartbeats_round_trip() {
        let h = Heartbeat {
            node: 7,
            epoch: 1023,
            workers: 2,
        };
        assert_eq!(Heartbeat::decode(&h.encode()), Some(h));
        assert_eq!(Heartbeat::decode(b"300 1 1"), None);
        assert_eq!(Heartbeat::decode(b"1 1 1 1"), None);
        assert_eq!(Heartbeat::decode(&[b'1'; 100]), None);
    }

    #[test]
    fn isolation_needs_every_worker_down_for_the_timeout() {
        let s = Shared::new(2);
        let t0 = Instant::now();
        let iso = Duration::from_millis(200);
        assert!(!s.isolated(t0, iso));
        assert!(s.isolated(t0 + Duration::from_millis(300), iso));
        s.set_up(1);
        assert!(!s.isolated(t0 + Duration::from_millis(300), iso));
        assert!(s.publishes_heartbeat(0) && s.publishes_heartbeat(1));
        s.set_up(0);
        assert!(!s.publishes_heartbeat(1));
        s.set_down(0, t0 + Duration::from_millis(300));
        s.set_down(1, t0 + Duration::from_millis(400));
        assert!(!s.isolated(t0 + Duration::from_millis(500), iso));
        assert!(s.isolated(t0 + Duration::from_millis(650), iso));
        assert_eq!(s.connected(), 0);
    }

    #[test]
    fn server_addresses() {
        assert_eq!(resolve("nats://127.0.0.1:4333").unwrap().port(), 4333);
        assert_eq!(resolve("127.0.0.1").unwrap().port(), 4222);
        assert!(resolve("tls://127.0.0.1:4222").is_err());
        assert!(resolve("nats://u:p@127.0.0.1:4222").is_err());
    }
}
