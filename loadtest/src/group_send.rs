//! `group-send`: M WebSocket clients (spread over one or more gateway nodes) learn
//! their ids (`{"action":"whoami"}`), join one group through the management API
//! (`PUT /@groups/{group}/{id}`), then S sender connections post group sends
//! (`POST /@groups/{group}`, one in flight each) for the duration. Measured:
//! deliveries/s (messages received by all members together), sends/s, send-to-receipt
//! latency per delivery, and exactly-once per member: every send the gateway accepted
//! (202) must reach every member once, and one sender's sends in order.
//!
//! Each payload is `{"g":"<2 hex sender><16 hex seq><16 hex ns>","p":"xxx…"}`; a
//! member keeps the next expected sequence number per sender (O(senders) per member),
//! so a gap is a loss, an earlier number a duplicate.

use crate::http::{self, Parsed};
use crate::net;
use crate::stats::{r2, r3, Latency, LatencySummary, Progress, Report};
use crate::ws::{self, Handshake, Msg, Step, Target, WsConn};
use mio::{Events, Interest, Poll};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct GroupSendOpts {
    /// The first node; clients are spread over it and `more_targets`, round robin.
    pub target: Target,
    pub more_targets: Vec<Target>,
    /// Management API the joins and sends go to.
    pub mgmt: SocketAddr,
    /// Path prefix before `/@groups` (e.g. "/prod").
    pub mgmt_prefix: String,
    pub group: String,
    pub members: usize,
    /// Sender connections (one send in flight each).
    pub senders: usize,
    /// Client threads (event loops).
    pub threads: usize,
    pub duration: Duration,
    pub payload: usize,
    pub id_action: String,
    pub connect_timeout: Duration,
    /// How long members may still receive after the senders stop.
    pub drain: Duration,
    pub progress: bool,
    /// Skip the joins (the members stay in no group: a baseline for `hold`).
    pub no_join: bool,
    /// After the joins, print `held N` on stdout and hold every member idle this
    /// long before sending (for an RSS reading of members in a group).
    pub hold: Duration,
}

impl GroupSendOpts {
    pub fn new(target: Target, mgmt: SocketAddr) -> GroupSendOpts {
        GroupSendOpts {
            target,
            more_targets: Vec::new(),
            mgmt,
            mgmt_prefix: String::new(),
            group: "bench".into(),
            members: 1000,
            senders: 4,
            threads: 1,
            duration: Duration::from_secs(10),
            payload: 64,
            id_action: "whoami".into(),
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            progress: true,
            no_join: false,
            hold: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct GroupSendResult {
    pub members: u64,
    pub joined: u64,
    pub join_failures: u64,
    pub client_failures: u64,
    pub mgmt_failures: u64,
    pub sent: u64,
    pub accepted: u64,
    pub status: BTreeMap<u16, u64>,
    /// `{"nodes": n}` of the last 202.
    pub nodes: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    /// More sends of a sender reached a member than the gateway accepted.
    pub unexpected: u64,
    pub closed_by_server: u64,
    pub window: Duration,
    pub deliveries_per_s: f64,
    pub sends_per_s: f64,
    pub latency: LatencySummary,
}

impl GroupSendResult {
    pub fn delivery_faults(&self) -> u64 {
        self.lost + self.duplicates + self.corrupt + self.unexpected
    }
    pub fn faults(&self) -> u64 {
        self.delivery_faults()
            + self.join_failures
            + self.client_failures
            + self.mgmt_failures
            + self.closed_by_server
            + self
                .status
                .iter()
                .filter(|(k, _)| **k != 202)
                .map(|(_, v)| v)
                .sum::<u64>()
    }
    pub fn report(&self, o: &GroupSendOpts) -> Report {
        let mut r = Report::new("group-send");
        let st: serde_json::Map<String, serde_json::Value> = self
            .status
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        let gateways: Vec<String> = std::iter::once(&o.target)
            .chain(&o.more_targets)
            .map(Target::url)
            .collect();
        r.add("gateways", gateways.join(","))
            .add("management", o.mgmt.to_string())
            .add("group", o.group.clone())
            .add("members", self.members)
            .add("joined", self.joined)
            .add("senders", o.senders as u64)
            .add("payload_bytes", o.payload as u64)
            .add("duration_s", r3(self.window.as_secs_f64()))
            .add("sends", self.sent)
            .add("accepted_202", self.accepted)
            .add("http_status", serde_json::Value::Object(st))
            .add("nodes_acked", self.nodes)
            .add("sends_per_s", r2(self.sends_per_s))
            .add("delivered", self.delivered)
            .add("deliveries_per_s", r2(self.deliveries_per_s))
            .latency("send_to_receipt", &self.latency)
            .add("lost", self.lost)
            .add("duplicates", self.duplicates)
            .add("corrupt", self.corrupt)
            .add("unexpected", self.unexpected)
            .add("exactly_once", self.delivery_faults() == 0)
            .add("join_failures", self.join_failures)
            .add("client_failures", self.client_failures)
            .add("mgmt_failures", self.mgmt_failures)
            .add("closed_by_server", self.closed_by_server)
            .add("faults", self.faults());
        r
    }
}

/// The payload skeleton and where its numbers go.
struct Tpl {
    bytes: Vec<u8>,
    at: usize,
}

const TAG: &[u8] = b"{\"g\":\"";

impl Tpl {
    fn new(size: usize) -> Tpl {
        let mut v = TAG.to_vec();
        let at = v.len();
        v.extend_from_slice(&[b'0'; 34]);
        v.extend_from_slice(b"\",\"p\":\"");
        let pad = size.saturating_sub(v.len() + 2);
        v.resize(v.len() + pad, b'x');
        v.extend_from_slice(b"\"}");
        Tpl { bytes: v, at }
    }
    fn fill(&mut self, sender: u8, seq: u64, ns: u64) {
        let hex = b"0123456789abcdef";
        self.bytes[self.at] = hex[usize::from(sender >> 4)];
        self.bytes[self.at + 1] = hex[usize::from(sender & 15)];
        net::put_hex16(&mut self.bytes[self.at + 2..], seq);
        net::put_hex16(&mut self.bytes[self.at + 18..], ns);
    }
    /// (sender, seq, ns) of a received payload of this shape.
    fn parse(&self, p: &[u8]) -> Option<(usize, u64, u64)> {
        if p.len() != self.bytes.len() || p[..self.at] != self.bytes[..self.at] {
            return None;
        }
        let hexval = |c: u8| (c as char).to_digit(16);
        let sender = hexval(p[self.at])? * 16 + hexval(p[self.at + 1])?;
        let seq = net::get_hex16(&p[self.at + 2..])?;
        let ns = net::get_hex16(&p[self.at + 18..])?;
        Some((sender as usize, seq, ns))
    }
}

/// What one member tracks: the next sequence number expected from each sender.
struct Member {
    ws: WsConn,
    id: [u8; 16],
    has_id: bool,
    alive: bool,
    next: Vec<u64>,
}

/// Counters of one client thread.
#[derive(Default)]
struct Tally {
    r: GroupSendResult,
    hist: Latency,
}

impl Tally {
    fn on_msg(&mut self, tpl: &Tpl, next: &mut [u64], payload: &[u8], now_ns: u64) {
        let Some((s, seq, ns)) = tpl.parse(payload) else {
            self.r.corrupt += 1;
            return;
        };
        let Some(n) = next.get_mut(s) else {
            self.r.corrupt += 1;
            return;
        };
        if seq < *n {
            self.r.duplicates += 1;
            return;
        }
        self.r.lost += seq - *n;
        *n = seq + 1;
        self.r.delivered += 1;
        self.hist.record(now_ns.saturating_sub(ns));
    }
}

/// Shared between threads: where the senders are.
struct Shared {
    base: Instant,
    done: AtomicBool,
    /// Per sender: sends the gateway accepted (final once `done`).
    accepted: Vec<AtomicU64>,
}

pub fn run(o: &GroupSendOpts) -> crate::Result<GroupSendResult> {
    net::check_loopback(&o.target.addr)?;
    for t in &o.more_targets {
        net::check_loopback(&t.addr)?;
    }
    net::check_loopback(&o.mgmt)?;
    if o.members == 0 || o.threads == 0 || o.senders == 0 || o.senders > 255 {
        return Err("members and threads must be at least 1, senders 1 to 255".into());
    }
    if o.group.is_empty()
        || !o
            .group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:~".contains(&b))
    {
        return Err(format!("{}: not a valid group name", o.group));
    }
    let limit = crate::cpu::raise_nofile();
    if (o.members + o.senders) as u64 + 64 > limit {
        return Err(format!(
            "{} members exceed the open-file limit {limit}",
            o.members
        ));
    }
    let threads = o.threads.min(o.members);
    let shared = Shared {
        base: Instant::now(),
        done: AtomicBool::new(false),
        accepted: (0..o.senders).map(|_| AtomicU64::new(0)).collect(),
    };
    // Client threads, the main thread (joins) and the senders meet here.
    let barrier = Barrier::new(threads + o.senders + 1);
    let progress = Progress::new(&["delivered", "faults"]);
    let (ids_tx, ids_rx) = mpsc::channel::<Vec<[u8; 16]>>();
    let mut total = GroupSendResult::default();
    let mut hist = Latency::default();
    let mut window = Duration::ZERO;
    std::thread::scope(|s| -> crate::Result<()> {
        let clients: Vec<_> = (0..threads)
            .map(|t| {
                let n = o.members / threads + usize::from(t < o.members % threads);
                let (barrier, shared, progress, tx) =
                    (&barrier, &shared, &progress, ids_tx.clone());
                s.spawn(move || client_thread(o, t, n, barrier, shared, progress, tx))
            })
            .collect();
        drop(ids_tx);
        // Joins, on one keep-alive connection, 64 pipelined at a time.
        let mut ids = Vec::new();
        for _ in 0..threads {
            ids.extend(ids_rx.recv().unwrap_or_default());
        }
        total.members = ids.len() as u64;
        if !o.no_join {
            match join_all(o, &ids) {
                Ok(n) => total.joined = n,
                Err(e) => {
                    eprintln!("group-send: joins failed: {e}");
                    total.mgmt_failures += 1;
                }
            }
            total.join_failures = total.members - total.joined;
        }
        if !o.hold.is_zero() {
            println!("held {}", ids.len());
            let _ = std::io::stdout().flush();
            std::thread::sleep(o.hold);
        }
        let senders: Vec<_> = (0..o.senders)
            .map(|i| {
                let (barrier, shared) = (&barrier, &shared);
                s.spawn(move || sender_thread(o, i as u8, barrier, shared))
            })
            .collect();
        barrier.wait();
        let printer =
            progress.spawn_printer(o.progress, o.duration + o.drain + Duration::from_secs(5));
        for h in senders {
            let (sent, status, nodes, w, failed) =
                h.join().map_err(|_| "a sender panicked".to_string())?;
            total.sent += sent;
            for (k, v) in status {
                *total.status.entry(k).or_default() += v;
            }
            total.nodes = total.nodes.max(nodes);
            window = window.max(w);
            total.mgmt_failures += u64::from(failed);
        }
        shared.done.store(true, Ordering::Release);
        for h in clients {
            let t = h
                .join()
                .map_err(|_| "a client thread panicked".to_string())??;
            let r = t.r;
            total.client_failures += r.client_failures;
            total.delivered += r.delivered;
            total.lost += r.lost;
            total.duplicates += r.duplicates;
            total.corrupt += r.corrupt;
            total.unexpected += r.unexpected;
            total.closed_by_server += r.closed_by_server;
            hist.add(&t.hist);
        }
        progress.finish(printer);
        Ok(())
    })?;
    total.accepted = shared
        .accepted
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .sum();
    total.window = window;
    let w = window.as_secs_f64().max(1e-9);
    total.deliveries_per_s = total.delivered as f64 / w;
    total.sends_per_s = total.accepted as f64 / w;
    total.latency = hist.summary();
    Ok(total)
}

/// `PUT /@groups/{group}/{id}` for every id; how many answered 204.
fn join_all(o: &GroupSendOpts, ids: &[[u8; 16]]) -> crate::Result<u64> {
    let mut s = std::net::TcpStream::connect(o.mgmt).map_err(|e| e.to_string())?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut ok = 0;
    let mut buf = Vec::new();
    for chunk in ids.chunks(64) {
        let mut req = Vec::new();
        for id in chunk {
            req.extend_from_slice(b"PUT ");
            req.extend_from_slice(o.mgmt_prefix.as_bytes());
            req.extend_from_slice(b"/@groups/");
            req.extend_from_slice(o.group.as_bytes());
            req.push(b'/');
            req.extend_from_slice(id);
            req.extend_from_slice(b" HTTP/1.1\r\nHost: wsgate\r\nContent-Length: 0\r\n\r\n");
        }
        s.write_all(&req).map_err(|e| e.to_string())?;
        for _ in chunk {
            let (status, _) = read_reply(&mut s, &mut buf)?;
            ok += u64::from(status == 204);
        }
    }
    Ok(ok)
}

/// Reads one response from a blocking stream (`buf` keeps what follows it): its
/// status and body.
fn read_reply(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> crate::Result<(u16, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    loop {
        match http::parse_response(buf) {
            Parsed::Done(h) => {
                let start =
                    http::find(&buf[..h.total_len], b"\r\n\r\n").map_or(h.total_len, |i| i + 4);
                let body = buf[start..h.total_len].to_vec();
                buf.drain(..h.total_len);
                return Ok((h.status, body));
            }
            Parsed::Bad(e) => return Err(format!("bad management response: {e}")),
            Parsed::Incomplete => {}
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err("management connection closed".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

type SenderOut = (u64, BTreeMap<u16, u64>, u64, Duration, bool);

/// Posts group sends, one in flight, until the duration is over.
fn sender_thread(o: &GroupSendOpts, me: u8, barrier: &Barrier, shared: &Shared) -> SenderOut {
    let mut status = BTreeMap::new();
    let (mut sent, mut nodes) = (0u64, 0u64);
    let stream = std::net::TcpStream::connect(o.mgmt);
    barrier.wait();
    let t0 = Instant::now();
    let Ok(mut s) = stream else {
        return (0, status, 0, Duration::ZERO, true);
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tpl = Tpl::new(o.payload);
    let mut head = Vec::new();
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(o.mgmt_prefix.as_bytes());
    head.extend_from_slice(b"/@groups/");
    head.extend_from_slice(o.group.as_bytes());
    head.extend_from_slice(
        b" HTTP/1.1\r\nHost: wsgate\r\nContent-Type: application/json\r\nContent-Length: ",
    );
    net::push_u64(&mut head, tpl.bytes.len() as u64);
    head.extend_from_slice(b"\r\n\r\n");
    let mut req = Vec::new();
    let mut buf = Vec::new();
    let mut failed = false;
    let mut accepted = 0u64;
    while t0.elapsed() < o.duration {
        let ns = shared.base.elapsed().as_nanos() as u64;
        tpl.fill(me, accepted, ns);
        req.clear();
        req.extend_from_slice(&head);
        req.extend_from_slice(&tpl.bytes);
        if s.write_all(&req).is_err() {
            failed = true;
            break;
        }
        sent += 1;
        match read_reply(&mut s, &mut buf) {
            Ok((st, body)) => {
                *status.entry(st).or_default() += 1;
                if st == 202 {
                    accepted += 1;
                    shared.accepted[usize::from(me)].store(accepted, Ordering::Release);
                    nodes = nodes.max(nodes_of(&body));
                }
            }
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (sent, status, nodes, t0.elapsed(), failed)
}

/// `n` of a `{"nodes": n}` body (0 when it is not one).
pub fn nodes_of(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("nodes")?.as_u64())
        .unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn client_thread(
    o: &GroupSendOpts,
    t: usize,
    n: usize,
    barrier: &Barrier,
    shared: &Shared,
    progress: &Progress,
    ids_tx: mpsc::Sender<Vec<[u8; 16]>>,
) -> crate::Result<Tally> {
    let mut tally = Tally::default();
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut rng = net::Rng::new(t as u64 + 7);
    let hs = Handshake::new(&o.target, &mut rng);
    let tpl = Tpl::new(o.payload);
    let whoami = format!(
        "{{\"action\":{}}}",
        serde_json::to_string(&o.id_action).unwrap_or_default()
    )
    .into_bytes();
    let nodes = 1 + o.more_targets.len();
    let mut members: Vec<Member> = Vec::with_capacity(n);
    for i in 0..n {
        let addr = match (i + t) % nodes {
            0 => o.target.addr,
            k => o.more_targets[k - 1].addr,
        };
        let Ok(mut s) = net::connect(addr, None, false) else {
            tally.r.client_failures += 1;
            continue;
        };
        let tok = net::token(members.len(), 0);
        poll.registry()
            .register(&mut s, tok, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| e.to_string())?;
        members.push(Member {
            ws: WsConn::new(s, &hs),
            id: [0; 16],
            has_id: false,
            alive: true,
            next: vec![0; o.senders],
        });
    }
    // Setup: open, learn the id.
    let deadline = Instant::now() + o.connect_timeout;
    let mut waiting = members.len();
    while waiting > 0 && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let (i, _) = net::token_parts(ev.token());
            let Some(m) = members.get_mut(i) else {
                continue;
            };
            if !m.alive || m.has_id {
                continue;
            }
            let (id, has_id) = (&mut m.id, &mut m.has_id);
            let step = m.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                rng.next_u64() as u32,
                &mut |_, msg| {
                    if let Msg::Data { payload, .. } = msg {
                        if crate::push::is_conn_id(payload) {
                            id.copy_from_slice(payload);
                            *has_id = true;
                        }
                    }
                },
            );
            match step {
                Step::Opened => {
                    m.ws.send(ws::OP_TEXT, &whoami, rng.next_u64() as u32);
                    if m.ws.flush().is_err() {
                        m.alive = false;
                    }
                }
                Step::Closed(_) => m.alive = false,
                Step::Nothing => {}
            }
            if m.has_id || !m.alive {
                waiting -= 1;
            }
        }
    }
    let mut ids = Vec::new();
    for m in members.iter_mut() {
        if m.has_id {
            ids.push(m.id);
        } else {
            m.alive = false;
            tally.r.client_failures += 1;
        }
    }
    let _ = ids_tx.send(ids);
    barrier.wait();
    // Receive until the senders are done and every accepted send arrived, or the
    // drain ran out.
    let mut drain_until: Option<Instant> = None;
    let mut last_tick = Instant::now();
    let mut reported = (0u64, 0u64);
    loop {
        let now = Instant::now();
        if drain_until.is_none() && shared.done.load(Ordering::Acquire) {
            drain_until = Some(now + o.drain);
        }
        if let Some(until) = drain_until {
            let accepted: Vec<u64> = shared
                .accepted
                .iter()
                .map(|a| a.load(Ordering::Acquire))
                .collect();
            let complete = o.no_join
                || members
                    .iter()
                    .filter(|m| m.alive)
                    .all(|m| m.next.iter().zip(&accepted).all(|(n, a)| n >= a));
            if complete || now >= until {
                break;
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(10)))
            .map_err(|e| e.to_string())?;
        let now_ns = shared.base.elapsed().as_nanos() as u64;
        for ev in events.iter() {
            let (i, _) = net::token_parts(ev.token());
            let Some(m) = members.get_mut(i) else {
                continue;
            };
            if !m.alive {
                continue;
            }
            let (next, tl) = (&mut m.next, &mut tally);
            let step = m.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                rng.next_u64() as u32,
                &mut |_, msg| {
                    if let Msg::Data { payload, .. } = msg {
                        tl.on_msg(&tpl, next, payload, now_ns);
                    }
                },
            );
            if let Step::Closed(_) = step {
                m.alive = false;
                tally.r.closed_by_server += 1;
                let _ = poll.registry().deregister(&mut m.ws.stream);
            }
        }
        if now.duration_since(last_tick) >= Duration::from_millis(10) {
            last_tick = now;
            let f = tally.r.duplicates + tally.r.corrupt + tally.r.closed_by_server;
            progress.add(0, tally.r.delivered - reported.0);
            progress.add(1, f - reported.1);
            reported = (tally.r.delivered, f);
        }
    }
    // What never came is lost; more than was accepted is unexpected.
    let accepted: Vec<u64> = shared
        .accepted
        .iter()
        .map(|a| a.load(Ordering::Acquire))
        .collect();
    for m in members.iter_mut().filter(|m| m.alive && !o.no_join) {
        for (n, a) in m.next.iter().zip(&accepted) {
            tally.r.lost += a.saturating_sub(*n);
            tally.r.unexpected += n.saturating_sub(*a);
        }
        m.ws.start_close(rng.next_u64() as u32);
        let _ = m.ws.flush();
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_gaps_and_duplicates_are_counted() {
        let mut tpl = Tpl::new(80);
        assert_eq!(tpl.bytes.len(), 80);
        tpl.fill(7, 42, 123_456);
        assert_eq!(tpl.parse(&tpl.bytes), Some((7, 42, 123_456)));
        let mut bad = tpl.bytes.clone();
        bad[0] = b'[';
        assert_eq!(tpl.parse(&bad), None);
        assert_eq!(tpl.parse(&tpl.bytes[1..]), None);
        let mut t = Tally::default();
        let mut next = vec![0u64; 8];
        for seq in [0, 1, 1, 3, 4] {
            tpl.fill(7, seq, 0);
            let p = tpl.bytes.clone();
            t.on_msg(&tpl, &mut next, &p, 10);
        }
        assert_eq!((t.r.delivered, t.r.duplicates, t.r.lost), (4, 1, 1));
        assert_eq!(next[7], 5);
        tpl.fill(9, 0, 0); // a sender that does not exist
        let p = tpl.bytes.clone();
        t.on_msg(&tpl, &mut next, &p, 10);
        assert_eq!(t.r.corrupt, 1);
        assert_eq!(t.r.delivery_faults(), 3);
    }

    #[test]
    fn nodes_are_read_from_the_answer() {
        assert_eq!(nodes_of(br#"{"nodes":3}"#), 3);
        assert_eq!(nodes_of(b"{}"), 0);
        assert_eq!(nodes_of(b"nope"), 0);
    }

    #[test]
    fn bad_options_are_refused() {
        let t = ws::parse_url("ws://127.0.0.1:1/").unwrap();
        let mut o = GroupSendOpts::new(t, "127.0.0.1:2".parse().unwrap());
        o.group = "a b".into();
        assert!(run(&o).is_err());
        o.group = "ok".into();
        o.senders = 0;
        assert!(run(&o).is_err());
    }
}
