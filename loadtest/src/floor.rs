//! `floor`: this machine's cost of one `read` plus one `write` on loopback TCP,
//! measured with the same event-loop shape the gateway uses (one mio loop, one read per
//! readable event, one write of what was read) but no WebSocket, no routing.
//!
//! An echo server thread serves C client connections that each keep one message of
//! `--payload` bytes in flight. The server thread's own CPU time (CLOCK_THREAD_CPUTIME_ID)
//! divided by the messages it echoed is the floor: CPU µs per message. A gateway's CPU
//! per message divided by it is the "ratio to the floor".

use crate::cpu;
use crate::net::{self, ReadOutcome};
use crate::stats::{r2, r3, Latency, LatencySummary, Progress, Report};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct FloorOpts {
    pub connections: usize,
    pub threads: usize,
    pub payload: usize,
    pub duration: Duration,
    pub progress: bool,
}

#[derive(Clone, Debug, Default)]
pub struct FloorResult {
    pub messages: u64,
    pub elapsed: Duration,
    pub msgs_per_s: f64,
    /// Echo-server thread CPU per message: the floor.
    pub server_cpu_us_per_msg: f64,
    pub server_cpu: Duration,
    pub client_cpu_us_per_msg: f64,
    pub latency: LatencySummary,
    pub errors: u64,
}

impl FloorResult {
    pub fn report(&self, o: &FloorOpts) -> Report {
        let mut r = Report::new("floor");
        r.add("connections", o.connections as u64)
            .add("payload_bytes", o.payload as u64)
            .add("duration_s", r3(self.elapsed.as_secs_f64()))
            .add("messages", self.messages)
            .add("msgs_per_s", r2(self.msgs_per_s))
            .latency("latency", &self.latency)
            .add("floor_cpu_us_per_msg", r3(self.server_cpu_us_per_msg))
            .add("echo_server_cpu_s", r3(self.server_cpu.as_secs_f64()))
            .add("loadgen_cpu_us_per_msg", r3(self.client_cpu_us_per_msg))
            .add("errors", self.errors);
        r
    }
}

/// A client thread's messages, errors, elapsed time, CPU time and latencies.
type ClientOut = (u64, u64, Duration, Duration, Latency);

pub fn run(o: &FloorOpts) -> crate::Result<FloorResult> {
    if o.connections == 0 || o.payload == 0 {
        return Err("connections and payload must be at least 1".into());
    }
    cpu::raise_nofile();
    let std_l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    std_l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = std_l.local_addr().map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    let echoed = Arc::new(AtomicU64::new(0));
    let server = {
        let (stop, echoed) = (stop.clone(), echoed.clone());
        let l = TcpListener::from_std(std_l);
        std::thread::spawn(move || echo_server(l, &stop, &echoed))
    };
    let threads = o.threads.max(1).min(o.connections);
    let barrier = Barrier::new(threads);
    let progress = Progress::new(&["msgs"]);
    let printer = progress.spawn_printer(o.progress, o.duration + Duration::from_secs(5));
    let results: Vec<crate::Result<ClientOut>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let n = o.connections / threads + usize::from(t < o.connections % threads);
                let (barrier, progress) = (&barrier, &progress);
                s.spawn(move || client(addr, n, o, barrier, progress))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    progress.finish(printer);
    stop.store(true, Ordering::Relaxed);
    let (server_cpu, server_msgs) = server.join().map_err(|_| "server panicked".to_string())?;
    let mut r = FloorResult::default();
    let mut hist = Latency::default();
    let mut ccpu = Duration::ZERO;
    for x in results {
        let (msgs, errors, elapsed, c, h) = x?;
        r.messages += msgs;
        r.errors += errors;
        r.elapsed = r.elapsed.max(elapsed);
        ccpu += c;
        hist.add(&h);
    }
    r.latency = hist.summary();
    r.msgs_per_s = r.messages as f64 / r.elapsed.as_secs_f64().max(1e-9);
    r.server_cpu = server_cpu;
    r.server_cpu_us_per_msg = if server_msgs > 0 {
        server_cpu.as_secs_f64() * 1e6 / server_msgs as f64
    } else {
        0.0
    };
    r.client_cpu_us_per_msg = if r.messages > 0 {
        ccpu.as_secs_f64() * 1e6 / r.messages as f64
    } else {
        0.0
    };
    Ok(r)
}

/// Echoes with one read and one write per readable event; returns (thread CPU, messages).
/// Messages are counted in units of whole reads (each client has one in flight, so one
/// read is one message).
fn echo_server(mut l: TcpListener, stop: &AtomicBool, echoed: &AtomicU64) -> (Duration, u64) {
    let Ok(mut poll) = Poll::new() else {
        return (Duration::ZERO, 0);
    };
    let lt = Token(usize::MAX);
    let _ = poll.registry().register(&mut l, lt, Interest::READABLE);
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<mio::net::TcpStream> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let cpu0 = cpu::thread();
    let mut msgs = 0u64;
    let limit = Instant::now() + Duration::from_secs(3600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            break;
        }
        for ev in events.iter() {
            if ev.token() == lt {
                while let Ok((mut s, _)) = l.accept() {
                    let _ = s.set_nodelay(true);
                    let i = conns.len();
                    if poll
                        .registry()
                        .register(&mut s, Token(i), Interest::READABLE)
                        .is_ok()
                    {
                        conns.push(s);
                    }
                }
                continue;
            }
            let Some(s) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if !ev.is_readable() {
                continue;
            }
            for _ in 0..16 {
                match net::read_once(s, &mut buf) {
                    ReadOutcome::Data { n, more } => {
                        msgs += 1;
                        // Loopback with a small message: the write takes it all.
                        let _ = s.write(&buf[..n]);
                        if !more {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
    }
    echoed.store(msgs, Ordering::Relaxed);
    (cpu::thread().saturating_sub(cpu0), msgs)
}

fn client(
    addr: std::net::SocketAddr,
    n: usize,
    o: &FloorOpts,
    barrier: &Barrier,
    progress: &Progress,
) -> crate::Result<ClientOut> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        // Blocking connect first (setup), then non-blocking use.
        let s = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut s = mio::net::TcpStream::from_std(s);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        conns.push((s, 0usize, 0u64)); // stream, bytes received of the current message, send time
    }
    let msg = vec![b'x'; o.payload];
    let mut buf = vec![0u8; 64 * 1024];
    let mut hist = Latency::default();
    barrier.wait();
    let t0 = Instant::now();
    let cpu0 = cpu::thread();
    let deadline = t0 + o.duration;
    let (mut msgs, mut errors) = (0u64, 0u64);
    for c in conns.iter_mut() {
        if c.0.write(&msg).is_err() {
            errors += 1;
        }
    }
    let mut reported = 0;
    let mut last = t0;
    loop {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if poll
            .poll(
                &mut events,
                Some((deadline - now).min(Duration::from_millis(50))),
            )
            .is_err()
        {
            break;
        }
        let now_ns = (Instant::now() - t0).as_nanos() as u64;
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            match net::read_once(&mut c.0, &mut buf) {
                ReadOutcome::Data { n, .. } => {
                    c.1 += n;
                    if c.1 >= o.payload {
                        c.1 -= o.payload;
                        msgs += 1;
                        hist.record(now_ns - c.2);
                        c.2 = now_ns;
                        if c.0.write(&msg).is_err() {
                            errors += 1;
                        }
                    }
                }
                ReadOutcome::WouldBlock => {}
                _ => errors += 1,
            }
        }
        if now.duration_since(last) >= Duration::from_millis(100) {
            last = now;
            progress.add(0, msgs - reported);
            reported = msgs;
        }
    }
    let elapsed = t0.elapsed();
    let ccpu = cpu::thread().saturating_sub(cpu0);
    Ok((msgs, errors, elapsed, ccpu, hist))
}
