//! `rr`: request/reply through a route. C WebSocket connections send JSON text
//! messages of a fixed size, each carrying an id (slot and sequence number); a reply
//! must be byte-for-byte the message sent (a mock `$input.body` route, or an
//! `aws_proxy` route whose backend returns the event's `body`).
//!
//! Closed loop (default): each connection keeps `--pipeline` messages in flight.
//! Open loop (`--rate R`): message j of a thread is due at j/R_thread seconds and goes to
//! connection j mod n; a connection with no free slot owes it, and its latency is
//! measured from when it was due (coordinated-omission correction as wrk2 does).
//!
//! Phases (`RrOpts::phases`, used by `abuse`): a driver advances a shared phase counter;
//! replies, faults and latency are then also kept per phase, and sending stops when the
//! counter reaches the number of phases (or at `duration`, whichever comes first).

use crate::cpu::{self, CpuTimes};
use crate::net::{self, OutBuf};
use crate::stats::{r2, r3, Latency, LatencySummary, Progress, Report};
use crate::ws::{self, Handshake, Msg, Step, Target, WsConn};
use mio::{Events, Interest, Poll};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// An outside clock for a run: the driver moves `current` from 0 up to `count`; the
/// run keeps replies, faults and latency per phase and stops sending at `count`.
#[derive(Clone, Debug)]
pub struct Phases {
    pub current: Arc<AtomicUsize>,
    pub count: usize,
    /// Set by the run once every connection is open and the clock started.
    pub running: Arc<AtomicBool>,
}

impl Phases {
    pub fn new(count: usize) -> Phases {
        Phases {
            current: Arc::new(AtomicUsize::new(0)),
            count: count.max(1),
            running: Arc::new(AtomicBool::new(false)),
        }
    }
    /// Moves to phase `p` (`count` ends the run).
    pub fn set(&self, p: usize) {
        self.current.store(p, Ordering::Relaxed);
    }
    fn get(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }
}

/// What one phase of a phased run saw (all threads together).
#[derive(Clone, Debug, Default)]
pub struct PhaseResult {
    pub completed: u64,
    /// Error frames, wrong replies, timeouts, server closes and unanswered messages.
    pub faults: u64,
    /// How long the phase lasted (the longest of the threads' views).
    pub window: Duration,
    pub latency: LatencySummary,
}

impl PhaseResult {
    pub fn msgs_per_s(&self) -> f64 {
        if self.window.is_zero() {
            0.0
        } else {
            self.completed as f64 / self.window.as_secs_f64()
        }
    }
}

#[derive(Clone, Debug)]
pub struct RrOpts {
    pub target: Target,
    pub connections: usize,
    pub threads: usize,
    pub duration: Duration,
    /// Message size in bytes (at least the size of the message skeleton).
    pub payload: usize,
    pub action: String,
    /// Total messages per second (open loop); None = closed loop.
    pub rate: Option<f64>,
    /// Messages in flight per connection.
    pub pipeline: usize,
    /// A reply later than this counts as a timeout (its slot is freed).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// How long to wait for outstanding replies after the duration.
    pub drain: Duration,
    pub progress: bool,
    /// Driven by an outside phase counter (see [`Phases`]); None = one plain run.
    pub phases: Option<Phases>,
}

impl RrOpts {
    pub fn new(target: Target) -> RrOpts {
        RrOpts {
            target,
            connections: 16,
            threads: 1,
            duration: Duration::from_secs(10),
            payload: 64,
            action: "echo".into(),
            rate: None,
            pipeline: 1,
            timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(1),
            progress: true,
            phases: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RrResult {
    pub connections: usize,
    pub connect_failures: u64,
    pub send_window: Duration,
    pub sent: u64,
    /// Replies that matched a message in flight.
    pub completed: u64,
    /// Gateway error frames (`{"message": ...}`) instead of a reply.
    pub error_frames: u64,
    /// Replies that match no message in flight.
    pub mismatched: u64,
    /// Replies later than the timeout.
    pub timeouts: u64,
    /// Messages still unanswered at the end (after the drain) or on a connection the
    /// server closed.
    pub unanswered: u64,
    /// Connections the server closed during the run.
    pub closed_by_server: u64,
    pub latency: LatencySummary,
    pub msgs_per_s: f64,
    /// CPU of the load generator's threads during the measured window.
    pub loadgen_window_cpu: Duration,
    pub loadgen_cpu: CpuTimes,
    /// Per phase when the run was driven by [`Phases`] (empty otherwise).
    pub phases: Vec<PhaseResult>,
}

impl RrResult {
    pub fn faults(&self) -> u64 {
        self.connect_failures
            + self.error_frames
            + self.mismatched
            + self.timeouts
            + self.unanswered
            + self.closed_by_server
    }

    pub fn report(&self, opts: &RrOpts) -> Report {
        let mut r = Report::new("rr");
        r.add("url", opts.target.url())
            .add("connections", self.connections as u64)
            .add("threads", opts.threads as u64)
            .add("payload_bytes", opts.payload as u64)
            .add(
                "mode",
                match opts.rate {
                    Some(x) => format!("open loop, {x} msg/s (latency from intended send time)"),
                    None => format!("closed loop, {} in flight per connection", opts.pipeline),
                },
            )
            .add("duration_s", r3(self.send_window.as_secs_f64()))
            .add("sent", self.sent)
            .add("replies", self.completed)
            .add("msgs_per_s", r2(self.msgs_per_s))
            .latency("latency", &self.latency)
            .add("connect_failures", self.connect_failures)
            .add("error_frames", self.error_frames)
            .add("mismatched", self.mismatched)
            .add("timeouts", self.timeouts)
            .add("unanswered", self.unanswered)
            .add("closed_by_server", self.closed_by_server)
            .add("faults", self.faults());
        r.cpu(
            &self.loadgen_cpu,
            Some(self.loadgen_window_cpu),
            "msg",
            self.completed,
        );
        r
    }
}

/// The message skeleton: `{"action":"A","id":"<16 hex>","p":"xxx…"}` padded to size.
#[derive(Clone)]
pub struct Template {
    pub bytes: Vec<u8>,
    pub id_pos: usize,
}

impl Template {
    pub fn new(action: &str, payload: usize) -> Template {
        let action_json = serde_json::to_string(action).unwrap_or_else(|_| "\"echo\"".into());
        let mut v = format!("{{\"action\":{action_json},\"id\":\"").into_bytes();
        let id_pos = v.len();
        v.extend_from_slice(b"0000000000000000\",\"p\":\"");
        let pad = payload.saturating_sub(v.len() + 2);
        v.resize(v.len() + pad, b'x');
        v.extend_from_slice(b"\"}");
        Template { bytes: v, id_pos }
    }
}

struct Slot {
    msg: Vec<u8>,
    busy: bool,
    intended_ns: u64,
    sent_ns: u64,
}

/// Per-connection message state (apart from the socket, so closures can borrow both).
struct Load {
    slots: Vec<Slot>,
    busy: usize,
    seq: u64,
    /// Open loop: messages due but not sent, the oldest being number `owed_j`.
    owed: u64,
    owed_j: u64,
}

struct Ctx {
    hist: Latency,
    rng: net::Rng,
    id_pos: usize,
    msg_len: usize,
    sending: bool,
    open_loop: bool,
    iv_ns: f64,
    n_open: u64,
    sent: u64,
    completed: u64,
    error_frames: u64,
    mismatched: u64,
    timeouts: u64,
    outstanding: u64,
}

impl Load {
    fn fill(&mut self, out: &mut OutBuf, c: &mut Ctx, now_ns: u64) {
        while self.busy < self.slots.len() {
            let intended = if c.open_loop {
                if self.owed == 0 {
                    break;
                }
                let t = (self.owed_j as f64 * c.iv_ns) as u64;
                self.owed_j += c.n_open;
                self.owed -= 1;
                t
            } else {
                if !c.sending {
                    break;
                }
                now_ns
            };
            let k = match self.slots.iter().position(|s| !s.busy) {
                Some(k) => k,
                None => break,
            };
            let s = &mut self.slots[k];
            s.busy = true;
            s.intended_ns = intended;
            s.sent_ns = now_ns;
            let id = ((k as u64) << 48) | (self.seq & 0xffff_ffff_ffff);
            self.seq += 1;
            net::put_hex16(&mut s.msg[c.id_pos..], id);
            ws::encode_frame(
                &mut out.buf,
                true,
                ws::OP_TEXT,
                &s.msg,
                c.rng.next_u64() as u32,
            );
            self.busy += 1;
            c.sent += 1;
            c.outstanding += 1;
        }
    }

    fn free(&mut self, k: usize, c: &mut Ctx) {
        self.slots[k].busy = false;
        self.busy -= 1;
        c.outstanding -= 1;
    }

    fn free_oldest(&mut self, c: &mut Ctx) {
        let oldest = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.busy)
            .min_by_key(|(_, s)| s.sent_ns)
            .map(|(k, _)| k);
        if let Some(k) = oldest {
            self.free(k, c);
        }
    }

    fn on_data(&mut self, payload: &[u8], out: &mut OutBuf, c: &mut Ctx, now_ns: u64) {
        if payload.len() == c.msg_len {
            if let Some(id) = net::get_hex16(&payload[c.id_pos..]) {
                let k = (id >> 48) as usize;
                if k < self.slots.len()
                    && self.slots[k].busy
                    && self.slots[k].msg[..] == payload[..]
                {
                    c.hist
                        .record(now_ns.saturating_sub(self.slots[k].intended_ns));
                    c.completed += 1;
                    self.free(k, c);
                    self.fill(out, c, now_ns);
                    return;
                }
            }
        }
        if payload.starts_with(b"{\"message\"") {
            c.error_frames += 1;
        } else {
            c.mismatched += 1;
        }
        self.free_oldest(c);
        self.fill(out, c, now_ns);
    }
}

struct Conn {
    ws: WsConn,
    load: Load,
    alive: bool,
}

struct ThreadOut {
    connections: usize,
    connect_failures: u64,
    closed_by_server: u64,
    unanswered: u64,
    window: Duration,
    cpu: Duration,
    hist: Latency,
    sent: u64,
    completed: u64,
    error_frames: u64,
    mismatched: u64,
    timeouts: u64,
    phases: Vec<ThreadPhase>,
}

/// One thread's view of one phase.
struct ThreadPhase {
    completed: u64,
    faults: u64,
    window: Duration,
    hist: Latency,
}

/// A thread's bookkeeping of a phased run: where the current phase started and the
/// counters then. Closing a phase moves its latency histogram into the list.
struct PhaseBook {
    phase: usize,
    started: Instant,
    completed0: u64,
    faults0: u64,
    done: Vec<ThreadPhase>,
    total: Latency,
}

impl PhaseBook {
    fn new(started: Instant) -> PhaseBook {
        PhaseBook {
            phase: 0,
            started,
            completed0: 0,
            faults0: 0,
            done: Vec::new(),
            total: Latency::default(),
        }
    }

    /// Ends the current phase at `end` with the counters as they are now.
    fn close(&mut self, c: &mut Ctx, faults_now: u64, end: Instant) {
        let hist = std::mem::take(&mut c.hist);
        self.total.add(&hist);
        self.done.push(ThreadPhase {
            completed: c.completed - self.completed0,
            faults: faults_now.saturating_sub(self.faults0),
            window: end.saturating_duration_since(self.started),
            hist,
        });
        self.completed0 = c.completed;
        self.faults0 = faults_now;
        self.started = end;
        self.phase += 1;
    }
}

pub fn run(opts: &RrOpts) -> crate::Result<RrResult> {
    opts.target.check()?;
    if opts.connections == 0 || opts.threads == 0 || opts.pipeline == 0 {
        return Err("connections, threads and pipeline must be at least 1".into());
    }
    let threads = opts.threads.min(opts.connections);
    let limit = cpu::raise_nofile();
    if opts.connections as u64 + 64 > limit {
        return Err(format!(
            "{} connections exceed the open-file limit {limit}; use fewer or several processes",
            opts.connections
        ));
    }
    let cpu0 = cpu::own();
    let progress = Progress::new(&["replies", "faults"]);
    let barrier = Barrier::new(threads + 1);
    let outs: Vec<crate::Result<ThreadOut>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let n = opts.connections / threads + usize::from(t < opts.connections % threads);
                let rate = opts.rate.map(|r| r * n as f64 / opts.connections as f64);
                let (barrier, progress) = (&barrier, &progress);
                s.spawn(move || thread_main(opts, t, n, rate, barrier, progress))
            })
            .collect();
        barrier.wait();
        let printer = progress.spawn_printer(opts.progress, opts.duration + Duration::from_secs(5));
        let outs = hs
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect();
        progress.finish(printer);
        outs
    });
    let mut r = RrResult::default();
    let mut hist = Latency::default();
    let mut window = Duration::ZERO;
    let mut wcpu = Duration::ZERO;
    let n_phases = opts.phases.as_ref().map_or(0, |p| p.count);
    let mut phase_hists: Vec<Latency> = (0..n_phases).map(|_| Latency::default()).collect();
    r.phases = vec![PhaseResult::default(); n_phases];
    for o in outs {
        let o = o?;
        for ((p, h), tp) in r.phases.iter_mut().zip(&mut phase_hists).zip(&o.phases) {
            p.completed += tp.completed;
            p.faults += tp.faults;
            p.window = p.window.max(tp.window);
            h.add(&tp.hist);
        }
        r.connections += o.connections;
        r.connect_failures += o.connect_failures;
        r.closed_by_server += o.closed_by_server;
        r.unanswered += o.unanswered;
        r.sent += o.sent;
        r.completed += o.completed;
        r.error_frames += o.error_frames;
        r.mismatched += o.mismatched;
        r.timeouts += o.timeouts;
        hist.add(&o.hist);
        window = window.max(o.window);
        wcpu += o.cpu;
    }
    r.send_window = window;
    r.msgs_per_s = if window.is_zero() {
        0.0
    } else {
        r.completed as f64 / window.as_secs_f64()
    };
    r.latency = hist.summary();
    for (p, h) in r.phases.iter_mut().zip(&phase_hists) {
        p.latency = h.summary();
    }
    r.loadgen_window_cpu = wcpu;
    r.loadgen_cpu = cpu::own().since(&cpu0);
    Ok(r)
}

fn thread_main(
    opts: &RrOpts,
    t: usize,
    n: usize,
    rate: Option<f64>,
    barrier: &Barrier,
    progress: &Progress,
) -> crate::Result<ThreadOut> {
    // Whatever happens, meet the others at the barrier exactly once.
    let mut met = false;
    let r = thread_body(opts, t, n, rate, barrier, progress, &mut met);
    if !met {
        barrier.wait();
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn thread_body(
    opts: &RrOpts,
    t: usize,
    n: usize,
    rate: Option<f64>,
    barrier: &Barrier,
    progress: &Progress,
    met: &mut bool,
) -> crate::Result<ThreadOut> {
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut rng = net::Rng::new(t as u64 + 1);
    let hs = Handshake::new(&opts.target, &mut rng);
    let tpl = Template::new(&opts.action, opts.payload);
    let mut out = ThreadOut {
        connections: 0,
        connect_failures: 0,
        closed_by_server: 0,
        unanswered: 0,
        window: Duration::ZERO,
        cpu: Duration::ZERO,
        hist: Latency::default(),
        sent: 0,
        completed: 0,
        error_frames: 0,
        mismatched: 0,
        timeouts: 0,
        phases: Vec::new(),
    };
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    for i in 0..n {
        match net::connect(opts.target.addr, None, false) {
            Ok(mut stream) => {
                poll.registry()
                    .register(
                        &mut stream,
                        net::token(i, 0),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .map_err(|e| format!("register: {e}"))?;
                let slots = (0..opts.pipeline)
                    .map(|_| Slot {
                        msg: tpl.bytes.clone(),
                        busy: false,
                        intended_ns: 0,
                        sent_ns: 0,
                    })
                    .collect();
                conns.push(Conn {
                    ws: WsConn::new(stream, &hs),
                    load: Load {
                        slots,
                        busy: 0,
                        seq: 0,
                        owed: 0,
                        owed_j: 0,
                    },
                    alive: true,
                });
            }
            Err(_) => out.connect_failures += 1,
        }
    }
    // Setup: every connection opens (or fails) before the clock starts.
    let setup_deadline = Instant::now() + opts.connect_timeout;
    let mut pending = conns.len();
    while pending > 0 && Instant::now() < setup_deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| format!("poll: {e}"))?;
        for ev in events.iter() {
            let (i, _) = net::token_parts(ev.token());
            let Some(c) = conns.get_mut(i) else { continue };
            if !c.alive || c.ws.is_open() {
                continue;
            }
            let mask = rng.next_u64() as u32;
            match c.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, _| {},
            ) {
                Step::Opened => pending -= 1,
                Step::Closed(_) => {
                    c.alive = false;
                    out.connect_failures += 1;
                    pending -= 1;
                }
                Step::Nothing => {}
            }
        }
    }
    for c in conns.iter_mut() {
        if c.alive && !c.ws.is_open() {
            c.alive = false;
            out.connect_failures += 1;
        }
    }
    let open: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].alive).collect();
    out.connections = open.len();
    *met = true;
    barrier.wait();

    let t0 = Instant::now();
    if let Some(ph) = &opts.phases {
        ph.running.store(true, Ordering::Relaxed);
    }
    let mut book = PhaseBook::new(t0);
    let cpu0 = cpu::thread();
    let deadline = t0 + opts.duration;
    let mut c = Ctx {
        hist: Latency::default(),
        rng,
        id_pos: tpl.id_pos,
        msg_len: tpl.bytes.len(),
        sending: true,
        open_loop: rate.is_some(),
        iv_ns: rate.map(|r| 1e9 / r.max(1e-9)).unwrap_or(0.0),
        n_open: open.len() as u64,
        sent: 0,
        completed: 0,
        error_frames: 0,
        mismatched: 0,
        timeouts: 0,
        outstanding: 0,
    };
    if open.is_empty() {
        return Ok(out);
    }
    if !c.open_loop {
        for &i in &open {
            let conn = &mut conns[i];
            conn.load.fill(&mut conn.ws.out, &mut c, 0);
            if conn.ws.flush().is_err() {
                conn.alive = false;
            }
        }
    }
    let mut next_j: u64 = 0;
    let mut end_ns = 0u64;
    let mut drain_until = deadline;
    let mut last_tick = t0;
    let mut reported = (0u64, 0u64);
    let tick = Duration::from_millis(10);
    let timeout_ns = opts.timeout.as_nanos() as u64;
    // Bounded: the loop ends at deadline + drain at the latest.
    loop {
        let now = Instant::now();
        let now_ns = (now - t0).as_nanos() as u64;
        let mut phase_end = false;
        if let Some(ph) = &opts.phases {
            // The last phase stays open through the drain; it is closed after the loop.
            let p = ph.get();
            while book.phase < p && book.phase + 1 < ph.count {
                let f = thread_faults(&c, &out);
                book.close(&mut c, f, now);
            }
            phase_end = p >= ph.count;
        }
        if c.sending && (now >= deadline || phase_end) {
            c.sending = false;
            end_ns = now_ns;
            drain_until = now + opts.drain;
        }
        if !c.sending && (c.outstanding == 0 || now >= drain_until) {
            break;
        }
        let mut wait = tick;
        if c.open_loop && c.sending {
            // Release every message due by now.
            let mut released = 0;
            while (next_j as f64 * c.iv_ns) as u64 <= now_ns && released < 100_000 {
                let i = open[(next_j % c.n_open) as usize];
                let conn = &mut conns[i];
                if conn.alive {
                    if conn.load.owed == 0 {
                        conn.load.owed_j = next_j;
                    }
                    conn.load.owed += 1;
                    conn.load.fill(&mut conn.ws.out, &mut c, now_ns);
                    if conn.ws.flush().is_err() {
                        conn.alive = false;
                    }
                }
                next_j += 1;
                released += 1;
            }
            let due = (next_j as f64 * c.iv_ns) as u64;
            wait = wait.min(Duration::from_nanos(due.saturating_sub(now_ns)));
        }
        if now.duration_since(t0) < opts.duration {
            wait = wait.min(deadline - now);
        } else {
            wait = wait.min(drain_until.saturating_duration_since(now));
        }
        poll.poll(&mut events, Some(wait))
            .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        let now_ns = (now - t0).as_nanos() as u64;
        for ev in events.iter() {
            let (i, _) = net::token_parts(ev.token());
            let Some(conn) = conns.get_mut(i) else {
                continue;
            };
            if !conn.alive {
                continue;
            }
            let mask = c.rng.next_u64() as u32;
            let load = &mut conn.load;
            let cx = &mut c;
            let step = conn.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |o, m| {
                    if let Msg::Data { payload, .. } = m {
                        load.on_data(payload, o, cx, now_ns);
                    }
                },
            );
            if let Step::Closed(_) = step {
                conn.alive = false;
                out.closed_by_server += 1;
                out.unanswered += conn.load.busy as u64;
                c.outstanding -= conn.load.busy as u64;
                conn.load.busy = 0;
                let _ = poll.registry().deregister(&mut conn.ws.stream);
            }
        }
        if now.duration_since(last_tick) >= tick {
            last_tick = now;
            for &i in &open {
                let conn = &mut conns[i];
                if !conn.alive || conn.load.busy == 0 {
                    continue;
                }
                for k in 0..conn.load.slots.len() {
                    let s = &conn.load.slots[k];
                    if s.busy && now_ns.saturating_sub(s.sent_ns) > timeout_ns {
                        c.timeouts += 1;
                        conn.load.free(k, &mut c);
                    }
                }
                if c.sending && !c.open_loop {
                    conn.load.fill(&mut conn.ws.out, &mut c, now_ns);
                    if conn.ws.flush().is_err() {
                        conn.alive = false;
                    }
                }
            }
            let faults = c.error_frames + c.mismatched + c.timeouts + out.closed_by_server;
            progress.add(0, c.completed - reported.0);
            progress.add(1, faults - reported.1);
            reported = (c.completed, faults);
        }
    }
    if end_ns == 0 {
        end_ns = (Instant::now() - t0).as_nanos() as u64;
    }
    out.cpu = cpu::thread().saturating_sub(cpu0);
    out.window = Duration::from_nanos(end_ns);
    out.unanswered += c.outstanding;
    if let Some(ph) = &opts.phases {
        let end = t0 + Duration::from_nanos(end_ns);
        while book.phase < ph.count {
            let f = thread_faults(&c, &out);
            book.close(&mut c, f, end.max(book.started));
        }
        c.hist = std::mem::take(&mut book.total);
        out.phases = book.done;
    }
    // Close politely; do not wait for the answers.
    for conn in conns.iter_mut().filter(|c| c.alive) {
        conn.ws.start_close(c.rng.next_u64() as u32);
        let _ = conn.ws.flush();
    }
    out.hist = c.hist;
    out.sent = c.sent;
    out.completed = c.completed;
    out.error_frames = c.error_frames;
    out.mismatched = c.mismatched;
    out.timeouts = c.timeouts;
    Ok(out)
}

/// Faults a thread has seen so far (connect failures excepted: they precede the clock).
fn thread_faults(c: &Ctx, out: &ThreadOut) -> u64 {
    c.error_frames + c.mismatched + c.timeouts + out.closed_by_server + out.unanswered
}
