//! `connect`: a handshake storm. `--connections` slots per run each connect, upgrade,
//! then close (a clean close handshake by default, so the server closes TCP first and
//! TIME_WAIT stays on its side; `--close rst` aborts with RST instead) and start over.
//! Reports handshakes/s and the latency from `connect()` to the 101. For `wss://` the
//! TLS handshake is part of each round (full, or resumed with `--tls-resume`; the report
//! counts which).

use crate::cpu;
use crate::net;
use crate::stats::{r2, r3, Latency, LatencySummary, Progress, Report};
use crate::ws::{Fail, Handshake, Step, Target, WsConn};
use mio::{Events, Interest, Poll};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseMode {
    Clean,
    Rst,
}

#[derive(Clone, Debug)]
pub struct ConnectOpts {
    pub target: Target,
    /// Handshakes in progress at once.
    pub concurrency: usize,
    pub threads: usize,
    pub duration: Duration,
    /// Number of loopback source addresses to rotate through (127.0.0.1..); 1 = none bound.
    pub sources: usize,
    pub close: CloseMode,
    pub timeout: Duration,
    pub progress: bool,
    /// Ends the run early when set (used by `abuse`).
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Clone, Debug, Default)]
pub struct ConnectResult {
    pub handshakes: u64,
    pub elapsed: Duration,
    pub per_s: f64,
    pub latency: LatencySummary,
    pub connect_errors: u64,
    pub rejected: BTreeMap<u16, u64>,
    pub bad_handshakes: u64,
    pub timeouts: u64,
    pub other_errors: u64,
    /// `wss://`: handshakes whose TLS session was resumed (the rest were full).
    pub tls_resumed: u64,
    pub loadgen_cpu: cpu::CpuTimes,
}

impl ConnectResult {
    pub fn faults(&self) -> u64 {
        self.connect_errors
            + self.rejected.values().sum::<u64>()
            + self.bad_handshakes
            + self.timeouts
            + self.other_errors
    }
    pub fn report(&self, o: &ConnectOpts) -> Report {
        let mut r = Report::new("connect");
        let rej: serde_json::Map<String, serde_json::Value> = self
            .rejected
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        r.add("url", o.target.url())
            .add("concurrency", o.concurrency as u64)
            .add("sources", o.sources as u64)
            .add(
                "close",
                if o.close == CloseMode::Clean {
                    "clean"
                } else {
                    "rst"
                },
            )
            .add("duration_s", r3(self.elapsed.as_secs_f64()))
            .add("handshakes", self.handshakes)
            .add("handshakes_per_s", r2(self.per_s))
            .latency("latency", &self.latency)
            .add("connect_errors", self.connect_errors)
            .add("rejected_by_status", serde_json::Value::Object(rej))
            .add("bad_handshakes", self.bad_handshakes)
            .add("timeouts", self.timeouts)
            .add("other_errors", self.other_errors)
            .add("faults", self.faults());
        if o.target.secure {
            r.add("tls_resumed", self.tls_resumed).add(
                "tls_full",
                self.handshakes - self.tls_resumed.min(self.handshakes),
            );
        }
        r.cpu(&self.loadgen_cpu, None, "handshake", self.handshakes);
        r
    }
}

#[derive(PartialEq, Eq)]
enum Phase {
    Handshake,
    Closing,
}

struct Slot {
    ws: WsConn,
    gen: u32,
    started: Instant,
    phase: Phase,
}

pub fn run(o: &ConnectOpts) -> crate::Result<ConnectResult> {
    o.target.check()?;
    if o.concurrency == 0 || o.threads == 0 {
        return Err("connections and threads must be at least 1".into());
    }
    cpu::raise_nofile();
    let cpu0 = cpu::own();
    let threads = o.threads.min(o.concurrency);
    let progress = Progress::new(&["handshakes", "errors"]);
    let printer = progress.spawn_printer(o.progress, o.duration + Duration::from_secs(5));
    let outs: Vec<crate::Result<(ConnectResult, Latency)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let n = o.concurrency / threads + usize::from(t < o.concurrency % threads);
                let progress = &progress;
                s.spawn(move || thread_main(o, t, n, progress))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    progress.finish(printer);
    let mut r = ConnectResult::default();
    let mut hist = Latency::default();
    for x in outs {
        let (t, h) = x?;
        r.handshakes += t.handshakes;
        r.elapsed = r.elapsed.max(t.elapsed);
        r.connect_errors += t.connect_errors;
        r.bad_handshakes += t.bad_handshakes;
        r.timeouts += t.timeouts;
        r.other_errors += t.other_errors;
        r.tls_resumed += t.tls_resumed;
        for (k, v) in t.rejected {
            *r.rejected.entry(k).or_default() += v;
        }
        hist.add(&h);
    }
    r.per_s = r.handshakes as f64 / r.elapsed.as_secs_f64().max(1e-9);
    r.latency = hist.summary();
    r.loadgen_cpu = cpu::own().since(&cpu0);
    Ok(r)
}

#[allow(clippy::needless_range_loop)]
fn thread_main(
    o: &ConnectOpts,
    t: usize,
    n: usize,
    progress: &Progress,
) -> crate::Result<(ConnectResult, Latency)> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; 16 * 1024];
    let mut rng = net::Rng::new(t as u64 + 77);
    let hs = Handshake::new(&o.target, &mut rng);
    let mut r = ConnectResult::default();
    let mut hist = Latency::default();
    let mut slots: Vec<Option<Slot>> = (0..n).map(|_| None).collect();
    let mut gens = vec![0u32; n];
    let mut src_i = t;
    let t0 = Instant::now();
    let deadline = t0 + o.duration;
    let close_grace = Duration::from_secs(1);
    let linger0 = o.close == CloseMode::Rst;

    let start = |i: usize,
                 gens: &mut Vec<u32>,
                 src_i: &mut usize,
                 r: &mut ConnectResult,
                 poll: &Poll|
     -> Option<Slot> {
        // Bounded retries when connect() itself fails at once (e.g. ports exhausted).
        for _ in 0..4 {
            let src = if o.sources > 1 {
                *src_i += 1;
                Some(net::loopback_source(*src_i % o.sources))
            } else {
                None
            };
            gens[i] = gens[i].wrapping_add(1);
            match net::connect(o.target.addr, src, linger0) {
                Ok(mut s) => {
                    if poll
                        .registry()
                        .register(
                            &mut s,
                            net::token(i, gens[i]),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        r.other_errors += 1;
                        continue;
                    }
                    return Some(Slot {
                        ws: WsConn::new(s, &hs),
                        gen: gens[i],
                        started: Instant::now(),
                        phase: Phase::Handshake,
                    });
                }
                Err(_) => r.connect_errors += 1,
            }
        }
        None
    };
    for i in 0..n {
        slots[i] = start(i, &mut gens, &mut src_i, &mut r, &poll);
    }
    let mut last_tick = t0;
    let mut reported = (0u64, 0u64);
    loop {
        let now = Instant::now();
        let stopped = o.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        if now >= deadline || stopped {
            break;
        }
        poll.poll(
            &mut events,
            Some((deadline - now).min(Duration::from_millis(10))),
        )
        .map_err(|e| e.to_string())?;
        let now = Instant::now();
        for ev in events.iter() {
            let (i, gen) = net::token_parts(ev.token());
            let Some(Some(slot)) = slots.get_mut(i) else {
                continue;
            };
            if slot.gen != gen {
                continue;
            }
            let mask = rng.next_u64() as u32;
            let step = slot.ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, _| {},
            );
            let mut done = false;
            match step {
                Step::Opened => {
                    r.handshakes += 1;
                    if slot.ws.stream.tls_conn().and_then(|c| c.handshake_kind())
                        == Some(rustls::HandshakeKind::Resumed)
                    {
                        r.tls_resumed += 1;
                    }
                    hist.record(now.duration_since(slot.started).as_nanos() as u64);
                    match o.close {
                        CloseMode::Rst => done = true,
                        CloseMode::Clean => {
                            slot.ws.start_close(rng.next_u64() as u32);
                            slot.phase = Phase::Closing;
                            slot.started = now;
                            if slot.ws.flush().is_err() {
                                done = true;
                            }
                        }
                    }
                }
                Step::Closed(why) => {
                    done = true;
                    if slot.phase == Phase::Handshake {
                        match why {
                            Some(Fail::Connect) => r.connect_errors += 1,
                            Some(Fail::Rejected(code)) => *r.rejected.entry(code).or_default() += 1,
                            Some(Fail::BadHandshake) | Some(Fail::Tls) => r.bad_handshakes += 1,
                            _ => r.other_errors += 1,
                        }
                    }
                }
                Step::Nothing => {}
            }
            if done {
                slots[i] = None; // drop closes the socket (and leaves epoll)
                if now < deadline {
                    slots[i] = start(i, &mut gens, &mut src_i, &mut r, &poll);
                }
            }
        }
        if now.duration_since(last_tick) >= Duration::from_millis(10) {
            last_tick = now;
            for i in 0..n {
                let expired = match &slots[i] {
                    None => true,
                    Some(s) => match s.phase {
                        Phase::Handshake if now.duration_since(s.started) > o.timeout => {
                            r.timeouts += 1;
                            true
                        }
                        Phase::Closing => now.duration_since(s.started) > close_grace,
                        _ => false,
                    },
                };
                if expired && now < deadline {
                    slots[i] = None;
                    slots[i] = start(i, &mut gens, &mut src_i, &mut r, &poll);
                }
            }
            let errs = r.faults();
            progress.add(0, r.handshakes - reported.0);
            progress.add(1, errs - reported.1);
            reported = (r.handshakes, errs);
        }
    }
    r.elapsed = t0.elapsed();
    Ok((r, hist))
}
