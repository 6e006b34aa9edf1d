//! `idle`: open N WebSocket connections from several loopback source addresses
//! (127.0.0.1, 127.0.0.2, ...; bound before connect so each has its own port space),
//! hold them idle for the duration, and report the gateway's memory growth per
//! connection (`--gateway-pid`: VmRSS and RssAnon from `/proc/<pid>/status`).
//!
//! A process can hold at most its open-file limit (raised here from soft to hard; the
//! hard limit on the benchmark machine is 20,000). For more connections run several
//! processes with different `--source-offset`s, e.g. two of 8,000 each.

use crate::cpu;
use crate::net;
use crate::stats::{r2, r3, Latency, LatencySummary, Report};
use crate::ws::{Handshake, Step, Target, WsConn};
use mio::{Events, Interest, Poll};
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct IdleOpts {
    pub target: Target,
    pub count: usize,
    pub sources: usize,
    /// First source address index (0 = 127.0.0.1), so several processes use different ones.
    pub source_offset: usize,
    /// Handshakes in flight at once while connecting.
    pub concurrency: usize,
    /// How long to hold the connections once all are open.
    pub duration: Duration,
    pub connect_timeout: Duration,
    pub gateway_pid: Option<u32>,
    /// Print a line `held N` on stdout when everything is open (for scripts).
    pub announce: bool,
}

#[derive(Clone, Debug, Default)]
pub struct IdleResult {
    pub requested: usize,
    pub opened: u64,
    pub failed: u64,
    /// Connections the server closed while held.
    pub dropped: u64,
    pub connect_time: Duration,
    pub connect_latency: LatencySummary,
    pub rss_before: Option<u64>,
    pub rss_open: Option<u64>,
    pub rss_end: Option<u64>,
    pub anon_before: Option<u64>,
    pub anon_open: Option<u64>,
    pub loadgen_cpu: cpu::CpuTimes,
    pub loadgen_rss: Option<u64>,
}

impl IdleResult {
    pub fn rss_per_conn(&self) -> Option<f64> {
        Some((self.rss_open? as f64 - self.rss_before? as f64) / (self.opened.max(1) as f64))
    }
    pub fn anon_per_conn(&self) -> Option<f64> {
        Some((self.anon_open? as f64 - self.anon_before? as f64) / (self.opened.max(1) as f64))
    }
    pub fn report(&self, o: &IdleOpts) -> Report {
        let mut r = Report::new("idle");
        let kib = |v: Option<u64>| {
            v.map(|b| serde_json::Value::from(r2(b as f64 / 1024.0)))
                .unwrap_or(serde_json::Value::Null)
        };
        let f = |v: Option<f64>| {
            v.map(|b| serde_json::Value::from(r2(b)))
                .unwrap_or(serde_json::Value::Null)
        };
        r.add("url", o.target.url())
            .add("requested", self.requested as u64)
            .add("opened", self.opened)
            .add("failed", self.failed)
            .add("dropped_while_held", self.dropped)
            .add("sources", o.sources as u64)
            .add("connect_time_s", r3(self.connect_time.as_secs_f64()))
            .latency("connect_latency", &self.connect_latency)
            .add("hold_s", r3(o.duration.as_secs_f64()))
            .add("gateway_rss_before_kib", kib(self.rss_before))
            .add("gateway_rss_open_kib", kib(self.rss_open))
            .add("gateway_rss_end_kib", kib(self.rss_end))
            .add("gateway_rss_bytes_per_conn", f(self.rss_per_conn()))
            .add("gateway_anon_bytes_per_conn", f(self.anon_per_conn()))
            .add("loadgen_rss_kib", kib(self.loadgen_rss))
            .add(
                "loadgen_cpu_user_s",
                r3(self.loadgen_cpu.user.as_secs_f64()),
            )
            .add("loadgen_cpu_sys_s", r3(self.loadgen_cpu.sys.as_secs_f64()));
        r
    }
}

pub fn run(o: &IdleOpts) -> crate::Result<IdleResult> {
    o.target.check()?;
    let limit = cpu::raise_nofile();
    if o.count as u64 + 64 > limit {
        return Err(format!(
            "{} connections need more than this process's open-file limit ({limit}); \
             run several processes with different --source-offset values, each with --count <= {}",
            o.count,
            limit.saturating_sub(64)
        ));
    }
    let cpu0 = cpu::own();
    let pid = o.gateway_pid;
    let mut r = IdleResult {
        requested: o.count,
        ..Default::default()
    };
    r.rss_before = pid.and_then(cpu::rss);
    r.anon_before = pid.and_then(|p| cpu::status_kb(p, "RssAnon"));
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 16 * 1024];
    let mut rng = net::Rng::new(o.source_offset as u64 + 5);
    let hs = Handshake::new(&o.target, &mut rng);
    let mut conns: Vec<Option<(WsConn, Instant)>> = Vec::with_capacity(o.count);
    let mut hist = Latency::default();
    let sources = o.sources.max(1);
    let t0 = Instant::now();
    let connect_deadline = t0 + o.connect_timeout + Duration::from_millis(o.count as u64 / 2);
    let mut next = 0usize;
    let mut in_flight = 0usize;
    // Connect phase: at most `concurrency` handshakes at once.
    while (next < o.count || in_flight > 0) && Instant::now() < connect_deadline {
        while next < o.count && in_flight < o.concurrency.max(1) {
            let src = net::loopback_source(o.source_offset + next % sources);
            match net::connect(o.target.addr, Some(src), false) {
                Ok(mut s) => {
                    if poll
                        .registry()
                        .register(
                            &mut s,
                            net::token(next, 0),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_ok()
                    {
                        conns.push(Some((WsConn::new(s, &hs), Instant::now())));
                        in_flight += 1;
                    } else {
                        conns.push(None);
                        r.failed += 1;
                    }
                }
                Err(_) => {
                    conns.push(None);
                    r.failed += 1;
                }
            }
            next += 1;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        for ev in events.iter() {
            let (i, _) = net::token_parts(ev.token());
            let Some(Some((c, started))) = conns.get_mut(i) else {
                continue;
            };
            let was_open = c.is_open();
            let mask = rng.next_u64() as u32;
            match c.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, _| {},
            ) {
                Step::Opened => {
                    r.opened += 1;
                    in_flight -= 1;
                    hist.record(now.duration_since(*started).as_nanos() as u64);
                }
                Step::Closed(_) => {
                    if was_open {
                        r.dropped += 1;
                        r.opened -= 1;
                    } else {
                        in_flight -= 1;
                        r.failed += 1;
                    }
                    conns[i] = None;
                }
                Step::Nothing => {}
            }
        }
    }
    for c in conns.iter_mut() {
        if matches!(c, Some((w, _)) if !w.is_open()) {
            *c = None;
            r.failed += 1;
        }
    }
    r.failed += (o.count - conns.len()) as u64;
    r.connect_time = t0.elapsed();
    r.connect_latency = hist.summary();
    if o.announce {
        println!("held {}", r.opened);
        let _ = std::io::stdout().flush();
    }
    // Hold. Measure the gateway once it has settled (1 s, or the hold if shorter).
    let hold_start = Instant::now();
    let settle = Duration::from_secs(1).min(o.duration);
    let mut measured = false;
    let end = hold_start + o.duration;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measured && now >= hold_start + settle {
            measured = true;
            r.rss_open = pid.and_then(cpu::rss);
            r.anon_open = pid.and_then(|p| cpu::status_kb(p, "RssAnon"));
        }
        poll.poll(
            &mut events,
            Some((end - now).min(Duration::from_millis(100))),
        )
        .map_err(|e| e.to_string())?;
        for ev in events.iter() {
            let (i, _) = net::token_parts(ev.token());
            let Some(Some((c, _))) = conns.get_mut(i) else {
                continue;
            };
            let mask = rng.next_u64() as u32;
            if let Step::Closed(_) = c.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, _| {},
            ) {
                r.dropped += 1;
                conns[i] = None;
            }
        }
    }
    if !measured {
        r.rss_open = pid.and_then(cpu::rss);
        r.anon_open = pid.and_then(|p| cpu::status_kb(p, "RssAnon"));
    }
    r.rss_end = pid.and_then(cpu::rss);
    r.loadgen_rss = cpu::rss(std::process::id());
    r.loadgen_cpu = cpu::own().since(&cpu0);
    // Close politely, without waiting.
    for (c, _) in conns.iter_mut().flatten() {
        c.start_close(rng.next_u64() as u32);
        let _ = c.flush();
    }
    Ok(r)
}
