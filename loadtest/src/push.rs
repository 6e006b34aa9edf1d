//! `push`: C WebSocket clients learn their connection ids (each sends
//! `{"action":"whoami"}` to a route whose mock template is `$context.connectionId`),
//! then keep-alive management connections `POST /@connections/{id}` pushes to them,
//! flat out or at `--rate` (open loop, latency from the intended send time).
//!
//! Every push payload carries a sequence number, `{"push":"<16 hex>","p":"xxx"}`;
//! a thread pushes only to its own clients, so the bookkeeping is thread-local. At the
//! end every push the gateway accepted (200) must have arrived exactly once, at the
//! client it was addressed to: lost, duplicated, misdelivered and corrupt pushes are
//! reported as faults.

use crate::cpu;
use crate::http::{self, Parsed};
use crate::net::{self, OutBuf, ReadOutcome};
use crate::stats::{r2, r3, Latency, LatencySummary, Progress, Report};
use crate::ws::{self, Handshake, Msg, Step, Target, WsConn};
use mio::{Events, Interest, Poll, Token};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Barrier;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct PushOpts {
    pub target: Target,
    pub mgmt: SocketAddr,
    /// Path prefix before `/@connections` (e.g. "/prod"); "" by default.
    pub mgmt_prefix: String,
    pub clients: usize,
    /// Management connections in total (one request in flight each).
    pub mgmt_conns: usize,
    pub threads: usize,
    pub duration: Duration,
    /// Pushes per second in total; None = flat out.
    pub rate: Option<f64>,
    pub payload: usize,
    /// Route key whose mock template is `$context.connectionId`.
    pub id_action: String,
    pub connect_timeout: Duration,
    pub drain: Duration,
    pub progress: bool,
    /// More gateway nodes (`cluster-push`): clients are spread over `target` and
    /// these, round robin; pushes still go to `mgmt`.
    pub more_targets: Vec<Target>,
}

impl PushOpts {
    pub fn new(target: Target, mgmt: SocketAddr) -> PushOpts {
        PushOpts {
            target,
            mgmt,
            mgmt_prefix: String::new(),
            clients: 100,
            mgmt_conns: 8,
            threads: 1,
            duration: Duration::from_secs(10),
            rate: None,
            payload: 64,
            id_action: "whoami".into(),
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(2),
            progress: true,
            more_targets: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct PushResult {
    pub clients: u64,
    pub client_failures: u64,
    pub id_failures: u64,
    pub mgmt_failures: u64,
    pub sent: u64,
    pub accepted: u64,
    pub status: BTreeMap<u16, u64>,
    pub unanswered: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub misdelivered: u64,
    pub corrupt: u64,
    /// Delivered although the management API did not answer 200.
    pub unexpected: u64,
    pub closed_by_server: u64,
    pub window: Duration,
    pub per_s: f64,
    pub latency: LatencySummary,
    pub loadgen_window_cpu: Duration,
    pub loadgen_cpu: cpu::CpuTimes,
}

impl PushResult {
    /// Exactly-once violations.
    pub fn delivery_faults(&self) -> u64 {
        self.lost + self.duplicates + self.misdelivered + self.corrupt + self.unexpected
    }
    pub fn rejected(&self) -> u64 {
        self.status
            .iter()
            .filter(|(k, _)| **k != 200)
            .map(|(_, v)| v)
            .sum()
    }
    pub fn faults(&self) -> u64 {
        self.delivery_faults()
            + self.rejected()
            + self.unanswered
            + self.client_failures
            + self.id_failures
            + self.mgmt_failures
            + self.closed_by_server
    }
    pub fn report(&self, o: &PushOpts) -> Report {
        let mut r = Report::new("push");
        let st: serde_json::Map<String, serde_json::Value> = self
            .status
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        r.add("url", format!("ws://{}{}", o.target.host, o.target.path))
            .add("management", o.mgmt.to_string())
            .add("clients", self.clients)
            .add("mgmt_connections", o.mgmt_conns as u64)
            .add("payload_bytes", o.payload as u64)
            .add(
                "mode",
                match o.rate {
                    Some(x) => format!("open loop, {x} pushes/s (latency from intended send time)"),
                    None => "flat out".to_string(),
                },
            )
            .add("duration_s", r3(self.window.as_secs_f64()))
            .add("sent", self.sent)
            .add("accepted_200", self.accepted)
            .add("http_status", serde_json::Value::Object(st))
            .add("delivered", self.delivered)
            .add("pushes_per_s", r2(self.per_s))
            .latency("push_to_receipt", &self.latency)
            .add("lost", self.lost)
            .add("duplicates", self.duplicates)
            .add("misdelivered", self.misdelivered)
            .add("corrupt", self.corrupt)
            .add("unexpected", self.unexpected)
            .add("exactly_once", self.delivery_faults() == 0)
            .add("unanswered_posts", self.unanswered)
            .add("client_failures", self.client_failures)
            .add("id_failures", self.id_failures)
            .add("mgmt_failures", self.mgmt_failures)
            .add("closed_by_server", self.closed_by_server)
            .add("faults", self.faults());
        r.cpu(
            &self.loadgen_cpu,
            Some(self.loadgen_window_cpu),
            "push",
            self.delivered,
        );
        r
    }
}

/// Whether `b` looks like a connection id (SPEC §6): `^[A-Za-z0-9_-]{15}=$`.
pub fn is_conn_id(b: &[u8]) -> bool {
    b.len() == 16
        && b[15] == b'='
        && b[..15]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

const ACCEPTED: u8 = 1;
const REJECTED: u8 = 2;
const DELIVERED: u8 = 4;

struct Rec {
    intended_ns: u64,
    client: u32,
    flags: u8,
}

struct Client {
    ws: WsConn,
    id: [u8; 16],
    has_id: bool,
    alive: bool,
}

#[derive(PartialEq, Eq)]
enum MState {
    Connecting,
    Ready,
    Busy(u64),
    Dead,
}

struct Mgmt {
    stream: mio::net::TcpStream,
    state: MState,
    stash: Vec<u8>,
    out: OutBuf,
}

/// Payload skeleton: `{"push":"<16 hex>","p":"xxx…"}`.
struct PayloadTpl {
    bytes: Vec<u8>,
    seq_pos: usize,
}

impl PayloadTpl {
    fn new(size: usize) -> PayloadTpl {
        let mut v = b"{\"push\":\"".to_vec();
        let seq_pos = v.len();
        v.extend_from_slice(b"0000000000000000\",\"p\":\"");
        let pad = size.saturating_sub(v.len() + 2);
        v.resize(v.len() + pad, b'x');
        v.extend_from_slice(b"\"}");
        PayloadTpl { bytes: v, seq_pos }
    }
}

const MGMT_BASE: usize = 1 << 23;

pub fn run(o: &PushOpts) -> crate::Result<PushResult> {
    net::check_loopback(&o.target.addr)?;
    for t in &o.more_targets {
        net::check_loopback(&t.addr)?;
    }
    net::check_loopback(&o.mgmt)?;
    if o.clients == 0 || o.threads == 0 || o.mgmt_conns == 0 {
        return Err("clients, threads and mgmt connections must be at least 1".into());
    }
    let limit = cpu::raise_nofile();
    if (o.clients + o.mgmt_conns) as u64 + 64 > limit {
        return Err(format!(
            "{} clients exceed the open-file limit {limit}",
            o.clients
        ));
    }
    let threads = o.threads.min(o.clients).min(o.mgmt_conns).min(255);
    let cpu0 = cpu::own();
    let barrier = Barrier::new(threads + 1);
    let progress = Progress::new(&["delivered", "faults"]);
    let outs: Vec<crate::Result<(PushResult, Latency)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let share = |n: usize| n / threads + usize::from(t < n % threads);
                let (nc, nm) = (share(o.clients), share(o.mgmt_conns));
                let rate = o.rate.map(|r| r * nc as f64 / o.clients as f64);
                let (barrier, progress) = (&barrier, &progress);
                s.spawn(move || {
                    let mut met = false;
                    let r = thread_main(o, t, nc, nm, rate, barrier, progress, &mut met);
                    if !met {
                        barrier.wait();
                    }
                    r
                })
            })
            .collect();
        barrier.wait();
        let printer = progress.spawn_printer(o.progress, o.duration + Duration::from_secs(5));
        let outs = hs
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect();
        progress.finish(printer);
        outs
    });
    let mut r = PushResult::default();
    let mut hist = Latency::default();
    for x in outs {
        let (t, h) = x?;
        r.clients += t.clients;
        r.client_failures += t.client_failures;
        r.id_failures += t.id_failures;
        r.mgmt_failures += t.mgmt_failures;
        r.sent += t.sent;
        r.accepted += t.accepted;
        for (k, v) in t.status {
            *r.status.entry(k).or_default() += v;
        }
        r.unanswered += t.unanswered;
        r.delivered += t.delivered;
        r.lost += t.lost;
        r.duplicates += t.duplicates;
        r.misdelivered += t.misdelivered;
        r.corrupt += t.corrupt;
        r.unexpected += t.unexpected;
        r.closed_by_server += t.closed_by_server;
        r.window = r.window.max(t.window);
        r.loadgen_window_cpu += t.loadgen_window_cpu;
        hist.add(&h);
    }
    r.per_s = r.delivered as f64 / r.window.as_secs_f64().max(1e-9);
    r.latency = hist.summary();
    r.loadgen_cpu = cpu::own().since(&cpu0);
    Ok(r)
}

struct Ctx<'a> {
    o: &'a PushOpts,
    t: usize,
    recs: Vec<Rec>,
    tpl: PayloadTpl,
    hist: Latency,
    r: PushResult,
    rr_next: usize,
    ready_clients: Vec<u32>,
}

impl Ctx<'_> {
    /// Queues one POST for the next client on `m`, due at `intended_ns`.
    fn issue(&mut self, m: &mut Mgmt, clients: &[Client], intended_ns: u64) -> bool {
        // Next live client with an id, round robin (bounded scan).
        let n = self.ready_clients.len();
        let mut ci = None;
        for _ in 0..n {
            let c = self.ready_clients[self.rr_next % n] as usize;
            self.rr_next += 1;
            if clients[c].alive {
                ci = Some(c);
                break;
            }
        }
        let Some(ci) = ci else { return false };
        let seq = self.recs.len() as u64;
        self.recs.push(Rec {
            intended_ns,
            client: ci as u32,
            flags: 0,
        });
        net::put_hex16(
            &mut self.tpl.bytes[self.tpl.seq_pos..],
            ((self.t as u64) << 56) | seq,
        );
        let b = &mut m.out.buf;
        b.extend_from_slice(b"POST ");
        b.extend_from_slice(self.o.mgmt_prefix.as_bytes());
        b.extend_from_slice(b"/@connections/");
        b.extend_from_slice(&clients[ci].id);
        b.extend_from_slice(
            b" HTTP/1.1\r\nHost: wsgate\r\nContent-Type: application/json\r\nContent-Length: ",
        );
        net::push_u64(b, self.tpl.bytes.len() as u64);
        b.extend_from_slice(b"\r\n\r\n");
        b.extend_from_slice(&self.tpl.bytes);
        m.state = MState::Busy(seq);
        self.r.sent += 1;
        true
    }

    fn on_push(&mut self, client: usize, payload: &[u8], now_ns: u64) {
        let p = &self.tpl;
        let ok_shape = payload.len() == p.bytes.len()
            && payload[..p.seq_pos] == p.bytes[..p.seq_pos]
            && payload[p.seq_pos + 16..] == p.bytes[p.seq_pos + 16..];
        let id = if ok_shape {
            net::get_hex16(&payload[p.seq_pos..])
        } else {
            None
        };
        let Some(id) = id else {
            self.r.corrupt += 1;
            return;
        };
        let seq = (id & ((1 << 56) - 1)) as usize;
        if (id >> 56) as usize != self.t || seq >= self.recs.len() {
            self.r.corrupt += 1;
            return;
        }
        let rec = &mut self.recs[seq];
        if rec.client as usize != client {
            self.r.misdelivered += 1;
            return;
        }
        if rec.flags & DELIVERED != 0 {
            self.r.duplicates += 1;
            return;
        }
        rec.flags |= DELIVERED;
        self.r.delivered += 1;
        self.hist.record(now_ns.saturating_sub(rec.intended_ns));
    }

    fn on_status(&mut self, seq: u64, status: u16) {
        *self.r.status.entry(status).or_default() += 1;
        let rec = &mut self.recs[seq as usize];
        if status == 200 {
            rec.flags |= ACCEPTED;
            self.r.accepted += 1;
        } else {
            rec.flags |= REJECTED;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn thread_main(
    o: &PushOpts,
    t: usize,
    nc: usize,
    nm: usize,
    rate: Option<f64>,
    barrier: &Barrier,
    progress: &Progress,
    met: &mut bool,
) -> crate::Result<(PushResult, Latency)> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut rng = net::Rng::new(t as u64 + 99);
    let hs = Handshake::new(&o.target, &mut rng);
    let whoami = format!(
        "{{\"action\":{}}}",
        serde_json::to_string(&o.id_action).unwrap_or_default()
    )
    .into_bytes();
    let expected = rate
        .map(|r| (r * (o.duration.as_secs_f64() + 1.0)) as usize)
        .unwrap_or(1 << 20);
    let mut c = Ctx {
        o,
        t,
        recs: Vec::with_capacity(expected.min(1 << 24)),
        tpl: PayloadTpl::new(o.payload),
        hist: Latency::default(),
        r: PushResult::default(),
        rr_next: 0,
        ready_clients: Vec::with_capacity(nc),
    };
    let mut clients: Vec<Client> = Vec::with_capacity(nc);
    for i in 0..nc {
        let node = (i + t) % (1 + o.more_targets.len());
        let addr = match node {
            0 => o.target.addr,
            n => o.more_targets[n - 1].addr,
        };
        match net::connect(addr, None, false) {
            Ok(mut s) => {
                poll.registry()
                    .register(
                        &mut s,
                        net::token(i, 0),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| e.to_string())?;
                clients.push(Client {
                    ws: WsConn::new(s, &hs),
                    id: [0; 16],
                    has_id: false,
                    alive: true,
                });
            }
            Err(_) => c.r.client_failures += 1,
        }
    }
    let mut mgmt: Vec<Mgmt> = Vec::with_capacity(nm);
    for i in 0..nm {
        match mio::net::TcpStream::connect(o.mgmt) {
            Ok(mut s) => {
                let _ = s.set_nodelay(true);
                poll.registry()
                    .register(
                        &mut s,
                        Token(MGMT_BASE + i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| e.to_string())?;
                mgmt.push(Mgmt {
                    stream: s,
                    state: MState::Connecting,
                    stash: Vec::new(),
                    out: OutBuf::default(),
                });
            }
            Err(_) => c.r.mgmt_failures += 1,
        }
    }
    // Setup: clients open and learn their ids; management connections connect.
    let setup_deadline = Instant::now() + o.connect_timeout;
    let mut waiting = clients.len() + mgmt.len();
    while waiting > 0 && Instant::now() < setup_deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let tok = ev.token().0;
            if tok >= MGMT_BASE {
                let m = &mut mgmt[tok - MGMT_BASE];
                if m.state == MState::Connecting {
                    match net::connected(&m.stream) {
                        Ok(true) => {
                            m.state = MState::Ready;
                            waiting -= 1;
                        }
                        Ok(false) => {}
                        Err(_) => {
                            m.state = MState::Dead;
                            c.r.mgmt_failures += 1;
                            waiting -= 1;
                        }
                    }
                }
                continue;
            }
            let (i, _) = net::token_parts(ev.token());
            let Some(cl) = clients.get_mut(i) else {
                continue;
            };
            if !cl.alive || cl.has_id {
                continue;
            }
            let mask = rng.next_u64() as u32;
            let (id, has_id) = (&mut cl.id, &mut cl.has_id);
            let mut bad_id = false;
            let step = cl.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, m| {
                    if let Msg::Data { payload, .. } = m {
                        if is_conn_id(payload) {
                            id.copy_from_slice(payload);
                            *has_id = true;
                        } else {
                            bad_id = true;
                        }
                    }
                },
            );
            match step {
                Step::Opened => {
                    let mask = rng.next_u64() as u32;
                    cl.ws.send(ws::OP_TEXT, &whoami, mask);
                    if cl.ws.flush().is_err() {
                        cl.alive = false;
                        c.r.client_failures += 1;
                        waiting -= 1;
                    }
                }
                Step::Closed(_) => {
                    cl.alive = false;
                    c.r.client_failures += 1;
                    waiting -= 1;
                    continue;
                }
                Step::Nothing => {}
            }
            if cl.has_id {
                c.ready_clients.push(i as u32);
                waiting -= 1;
            } else if bad_id {
                cl.alive = false;
                c.r.id_failures += 1;
                waiting -= 1;
            }
        }
    }
    for cl in clients.iter_mut() {
        if cl.alive && !cl.has_id {
            cl.alive = false;
            if cl.ws.is_open() {
                c.r.id_failures += 1;
            } else {
                c.r.client_failures += 1;
            }
        }
    }
    for m in mgmt.iter_mut() {
        if m.state == MState::Connecting {
            m.state = MState::Dead;
            c.r.mgmt_failures += 1;
        }
    }
    c.r.clients = c.ready_clients.len() as u64;
    *met = true;
    barrier.wait();

    let t0 = Instant::now();
    let cpu0 = cpu::thread();
    let deadline = t0 + o.duration;
    let iv_ns = rate.map(|r| 1e9 / r.max(1e-9)).unwrap_or(0.0);
    let mut sending = !c.ready_clients.is_empty();
    let mut next_j: u64 = 0;
    let mut owed: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut end_ns = 0u64;
    let mut drain_until = deadline;
    let mut last_tick = t0;
    let mut reported = (0u64, 0u64);
    if rate.is_none() && sending {
        for m in mgmt.iter_mut().filter(|m| m.state == MState::Ready) {
            c.issue(m, &clients, 0);
            if m.out.flush(&mut m.stream).is_err() {
                m.state = MState::Dead;
            }
        }
    }
    loop {
        let now = Instant::now();
        let now_ns = (now - t0).as_nanos() as u64;
        if sending && now >= deadline {
            sending = false;
            end_ns = now_ns;
            drain_until = now + o.drain;
        }
        if !sending {
            let busy = mgmt.iter().any(|m| matches!(m.state, MState::Busy(_)));
            let undelivered = c.r.accepted > c.r.delivered;
            if (!busy && !undelivered) || now >= drain_until || end_ns == 0 {
                break;
            }
        }
        let mut wait = Duration::from_millis(10);
        if sending {
            if rate.is_some() {
                while (next_j as f64 * iv_ns) as u64 <= now_ns && owed.len() < 1_000_000 {
                    owed.push_back((next_j as f64 * iv_ns) as u64);
                    next_j += 1;
                }
                for m in mgmt.iter_mut() {
                    if owed.is_empty() {
                        break;
                    }
                    if m.state == MState::Ready {
                        let due = owed.pop_front().unwrap_or(now_ns);
                        c.issue(m, &clients, due);
                        if m.out.flush(&mut m.stream).is_err() {
                            m.state = MState::Dead;
                        }
                    }
                }
                let due = (next_j as f64 * iv_ns) as u64;
                wait = wait.min(Duration::from_nanos(due.saturating_sub(now_ns)));
            }
            wait = wait.min(deadline.saturating_duration_since(now));
        } else {
            wait = wait.min(drain_until.saturating_duration_since(now));
        }
        poll.poll(&mut events, Some(wait))
            .map_err(|e| e.to_string())?;
        let now_ns = (Instant::now() - t0).as_nanos() as u64;
        for ev in events.iter() {
            let tok = ev.token().0;
            if tok >= MGMT_BASE {
                let m = &mut mgmt[tok - MGMT_BASE];
                if m.state == MState::Dead {
                    continue;
                }
                if !mgmt_event(m, ev.is_readable(), &mut scratch, &mut c) {
                    if let MState::Busy(_) = m.state {
                        c.r.unanswered += 1;
                    }
                    m.state = MState::Dead;
                    c.r.mgmt_failures += 1;
                    let _ = poll.registry().deregister(&mut m.stream);
                    continue;
                }
                if m.state == MState::Ready && sending {
                    let intended = match rate {
                        None => Some(now_ns),
                        Some(_) => owed.pop_front(),
                    };
                    if let Some(due) = intended {
                        c.issue(m, &clients, due);
                    }
                }
                if m.out.flush(&mut m.stream).is_err() {
                    m.state = MState::Dead;
                    c.r.mgmt_failures += 1;
                }
                continue;
            }
            let (i, _) = net::token_parts(ev.token());
            let Some(cl) = clients.get_mut(i) else {
                continue;
            };
            if !cl.alive {
                continue;
            }
            let mask = rng.next_u64() as u32;
            let cx = &mut c;
            let step = cl.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, m| {
                    if let Msg::Data { payload, .. } = m {
                        cx.on_push(i, payload, now_ns);
                    }
                },
            );
            if let Step::Closed(_) = step {
                cl.alive = false;
                c.r.closed_by_server += 1;
                let _ = poll.registry().deregister(&mut cl.ws.stream);
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_millis(10) {
            last_tick = now;
            let f = c.r.duplicates + c.r.misdelivered + c.r.corrupt + c.r.closed_by_server;
            progress.add(0, c.r.delivered - reported.0);
            progress.add(1, f - reported.1);
            reported = (c.r.delivered, f);
        }
    }
    if end_ns == 0 {
        end_ns = (Instant::now() - t0).as_nanos() as u64;
    }
    c.r.window = Duration::from_nanos(end_ns);
    c.r.loadgen_window_cpu = cpu::thread().saturating_sub(cpu0);
    for m in &mgmt {
        if let MState::Busy(_) = m.state {
            c.r.unanswered += 1;
        }
    }
    for rec in &c.recs {
        let delivered = rec.flags & DELIVERED != 0;
        if rec.flags & ACCEPTED != 0 && !delivered {
            c.r.lost += 1;
        }
        if rec.flags & REJECTED != 0 && delivered {
            c.r.unexpected += 1;
        }
    }
    for cl in clients.iter_mut().filter(|c| c.alive) {
        cl.ws.start_close(rng.next_u64() as u32);
        let _ = cl.ws.flush();
    }
    let hist = std::mem::take(&mut c.hist);
    Ok((c.r, hist))
}

/// Reads management responses; false when the connection is gone or broken.
fn mgmt_event(m: &mut Mgmt, readable: bool, scratch: &mut [u8], c: &mut Ctx) -> bool {
    if !readable {
        return true;
    }
    for _ in 0..16 {
        match net::read_once(&mut m.stream, scratch) {
            ReadOutcome::Data { n, more } => {
                let state = &mut m.state;
                let ok = net::with_stash(&mut m.stash, &scratch[..n], |buf| {
                    let mut pos = 0;
                    while pos < buf.len() {
                        match http::parse_response(&buf[pos..]) {
                            Parsed::Incomplete => break,
                            Parsed::Bad(_) => return Err(()),
                            Parsed::Done(h) => {
                                match *state {
                                    MState::Busy(seq) => c.on_status(seq, h.status),
                                    _ => return Err(()),
                                }
                                *state = MState::Ready;
                                pos += h.total_len;
                            }
                        }
                    }
                    Ok(pos)
                });
                if ok.is_err() {
                    return false;
                }
                if !more {
                    return true;
                }
            }
            ReadOutcome::WouldBlock => return true,
            ReadOutcome::Eof | ReadOutcome::Err(_) => return false,
        }
    }
    true
}
