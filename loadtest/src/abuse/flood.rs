//! Floods that never read: the same unit (a WebSocket message or an HTTP request)
//! written back to back on connections that never read what comes back.
//!
//! Two abusers use it: slow readers (WebSocket clients sending 1 KB messages to an echo
//! route, so the gateway's replies pile up) and never-reading management clients
//! (pipelined `GET /metrics`, with a wrong-token variant). A gateway that bounds what it
//! queues per connection stops reading such a client, after which our writes block and
//! the flood costs nothing; one that does not keeps reading and buffering.
//!
//! When the gateway closes a flooding connection (a write fails), it is counted and
//! reopened 50 ms later, so the pressure stays on for the whole duration.

use crate::net;
use crate::ws::{Handshake, Step, WsConn};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Writes per connection per loop turn, so one connection cannot starve the others.
const MAX_WRITES: usize = 16;
/// Pause before reopening a connection that failed or was closed.
const RETRY: Duration = Duration::from_millis(50);
/// A WebSocket handshake that takes longer than this is abandoned and retried.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// One kind of unit: `bytes` holds whole units back to back, each `unit` bytes long
/// and holding `per_unit` messages or requests.
#[derive(Clone, Debug)]
pub struct Batch {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub unit: usize,
    pub per_unit: u64,
}

impl Batch {
    /// `count` copies of `one`, which holds `per_unit` messages or requests.
    pub fn repeat(name: &'static str, one: &[u8], per_unit: u64, count: usize) -> Batch {
        Batch {
            name,
            bytes: one.repeat(count.max(1)),
            unit: one.len().max(1),
            per_unit,
        }
    }
}

#[derive(Clone, Debug)]
pub struct FloodOpts {
    pub addr: SocketAddr,
    pub clients: usize,
    /// Some: a WebSocket upgrade first (its 101 is the only thing ever read).
    pub handshake: Option<Handshake>,
    /// Client i sends `batches[i % batches.len()]`.
    pub batches: Vec<Batch>,
    /// Units per second per client; None = as fast as the socket takes them.
    pub rate: Option<f64>,
}

#[derive(Clone, Debug, Default)]
pub struct FloodResult {
    /// Connections opened (upgraded, for WebSocket), reopenings included.
    pub connections: u64,
    pub connect_failures: u64,
    /// Flooding connections the gateway closed or reset.
    pub closed_by_server: u64,
    /// Whole messages or requests written, per batch (same order as `FloodOpts::batches`).
    pub sent: Vec<u64>,
    pub bytes: u64,
}

/// A never-ending stream of a batch: writes from where it stopped, wrapping around.
struct Hose {
    off: usize,
    written: u64,
    since: Instant,
    /// The last write would block: wait for a writable event.
    blocked: bool,
}

impl Hose {
    fn new(now: Instant) -> Hose {
        Hose {
            off: 0,
            written: 0,
            since: now,
            blocked: false,
        }
    }

    /// Writes until the socket is full, the rate budget is spent or `MAX_WRITES` writes
    /// are done. Err when the connection is gone.
    fn pump(
        &mut self,
        w: &mut impl Write,
        b: &Batch,
        rate: Option<f64>,
        now: Instant,
    ) -> io::Result<()> {
        for _ in 0..MAX_WRITES {
            let mut end = b.bytes.len();
            if let Some(r) = rate {
                let secs = now.duration_since(self.since).as_secs_f64();
                let allowed = (r * secs * b.unit as f64) as u64;
                let budget = allowed.saturating_sub(self.written);
                if budget == 0 {
                    return Ok(());
                }
                end = end.min(
                    self.off
                        .saturating_add(budget.min(usize::MAX as u64) as usize),
                );
            }
            match w.write(&b.bytes[self.off..end]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.off += n;
                    self.written += n as u64;
                    if self.off >= b.bytes.len() {
                        self.off = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.blocked = true;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

enum Conn {
    /// Waiting to reopen at this instant.
    Idle(Instant),
    /// WebSocket connect and upgrade in progress, started at this instant.
    Upgrading(WsConn, Instant),
    /// Plain TCP connect in progress (management clients).
    Connecting(TcpStream),
    Flooding(TcpStream, Hose),
}

struct Slot {
    conn: Conn,
    gen: u32,
    /// Bytes written on earlier connections of this slot.
    written_before: u64,
}

impl Slot {
    fn written(&self) -> u64 {
        self.written_before
            + match &self.conn {
                Conn::Flooding(_, h) => h.written,
                _ => 0,
            }
    }
}

/// Runs the flood until `until` or until `stop` is set; then drops every connection.
pub fn run(o: &FloodOpts, until: Instant, stop: &AtomicBool) -> crate::Result<FloodResult> {
    net::check_loopback(&o.addr)?;
    if o.batches.is_empty() || o.batches.iter().any(|b| b.bytes.is_empty()) {
        return Err("flood: empty batch".into());
    }
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(256);
    let mut scratch = vec![0u8; 16 * 1024];
    let mut rng = net::Rng::new(0xF100D);
    let mut r = FloodResult {
        sent: vec![0; o.batches.len()],
        ..FloodResult::default()
    };
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..o.clients)
        .map(|_| Slot {
            conn: Conn::Idle(now),
            gen: 0,
            written_before: 0,
        })
        .collect();
    loop {
        let now = Instant::now();
        if now >= until || stop.load(Ordering::Relaxed) {
            break;
        }
        // Reopen, time out handshakes, and pump every connection that can take more.
        let mut hot = false;
        for (i, slot) in slots.iter_mut().enumerate() {
            let b = &o.batches[i % o.batches.len()];
            match &mut slot.conn {
                Conn::Idle(at) if now >= *at => open(o, i, slot, &poll, &mut r, now),
                Conn::Upgrading(_, started) if now.duration_since(*started) > HANDSHAKE_TIMEOUT => {
                    r.connect_failures += 1;
                    retire(slot, now);
                }
                Conn::Flooding(s, h) if !h.blocked => {
                    if h.pump(s, b, o.rate, now).is_err() {
                        r.closed_by_server += 1;
                        retire(slot, now);
                    } else if !h.blocked && o.rate.is_none() {
                        hot = true;
                    }
                }
                _ => {}
            }
        }
        let wait = if hot {
            Duration::ZERO
        } else {
            Duration::from_millis(5)
        };
        poll.poll(
            &mut events,
            Some(wait.min(until.saturating_duration_since(now))),
        )
        .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        for ev in events.iter() {
            let (i, gen) = net::token_parts(ev.token());
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            if slot.gen != gen {
                continue;
            }
            let b = &o.batches[i % o.batches.len()];
            let conn = std::mem::replace(&mut slot.conn, Conn::Idle(now + RETRY));
            slot.conn = match conn {
                Conn::Upgrading(mut ws, started) => {
                    let hs = o.handshake.as_ref().expect("upgrading needs a handshake");
                    let mask = rng.next_u64() as u32;
                    let step = ws.handle(
                        ev.is_readable(),
                        ev.is_writable(),
                        &mut scratch,
                        hs,
                        mask,
                        &mut |_, _| {},
                    );
                    match step {
                        Step::Nothing => Conn::Upgrading(ws, started),
                        Step::Closed(_) => {
                            r.connect_failures += 1;
                            Conn::Idle(now + RETRY)
                        }
                        Step::Opened => {
                            // From here on only write: never read the replies.
                            let mut s = ws.into_stream();
                            match poll.registry().reregister(
                                &mut s,
                                net::token(i, slot.gen),
                                Interest::WRITABLE,
                            ) {
                                Ok(()) => {
                                    r.connections += 1;
                                    Conn::Flooding(s, Hose::new(now))
                                }
                                Err(_) => {
                                    r.connect_failures += 1;
                                    Conn::Idle(now + RETRY)
                                }
                            }
                        }
                    }
                }
                Conn::Connecting(s) => match net::connected(&s) {
                    Ok(true) => {
                        r.connections += 1;
                        Conn::Flooding(s, Hose::new(now))
                    }
                    Ok(false) => Conn::Connecting(s),
                    Err(_) => {
                        r.connect_failures += 1;
                        Conn::Idle(now + RETRY)
                    }
                },
                Conn::Flooding(mut s, mut h) => {
                    h.blocked = false;
                    if h.pump(&mut s, b, o.rate, now).is_err() || ev.is_error() {
                        r.closed_by_server += 1;
                        slot.written_before += h.written;
                        Conn::Idle(now + RETRY)
                    } else {
                        Conn::Flooding(s, h)
                    }
                }
                idle @ Conn::Idle(_) => idle,
            };
        }
    }
    for (i, slot) in slots.iter().enumerate() {
        let w = slot.written();
        r.bytes += w;
        let k = i % o.batches.len();
        r.sent[k] += w / o.batches[k].unit as u64 * o.batches[k].per_unit;
    }
    Ok(r)
}

/// Starts a connection in an idle slot (a new token generation, so stale events for the
/// previous socket are ignored).
fn open(o: &FloodOpts, i: usize, slot: &mut Slot, poll: &Poll, r: &mut FloodResult, now: Instant) {
    slot.gen = slot.gen.wrapping_add(1);
    let token = net::token(i, slot.gen);
    let mut s = match net::connect(o.addr, None, false) {
        Ok(s) => s,
        Err(_) => {
            r.connect_failures += 1;
            slot.conn = Conn::Idle(now + RETRY);
            return;
        }
    };
    let interest = if o.handshake.is_some() {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::WRITABLE
    };
    if poll.registry().register(&mut s, token, interest).is_err() {
        r.connect_failures += 1;
        slot.conn = Conn::Idle(now + RETRY);
        return;
    }
    slot.conn = match &o.handshake {
        Some(hs) => Conn::Upgrading(WsConn::new(s, hs), now),
        None => Conn::Connecting(s),
    };
}

/// Drops a slot's connection (keeping its byte count) and schedules a reopening.
fn retire(slot: &mut Slot, now: Instant) {
    slot.written_before = slot.written();
    slot.conn = Conn::Idle(now + RETRY);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes `cap` bytes, then would block.
    struct Sink {
        got: Vec<u8>,
        cap: usize,
    }

    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.cap - self.got.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hose_wraps_around_the_batch_and_stops_when_blocked() {
        let b = Batch::repeat("x", b"abc", 1, 2);
        let now = Instant::now();
        let mut h = Hose::new(now);
        let mut w = Sink {
            got: Vec::new(),
            cap: 10,
        };
        h.pump(&mut w, &b, None, now).unwrap();
        assert_eq!(w.got, b"abcabcabca");
        assert!(h.blocked);
        assert_eq!(h.written, 10);
        assert_eq!(h.off, 4);
    }

    #[test]
    fn hose_keeps_to_its_rate() {
        let b = Batch::repeat("x", b"0123456789", 1, 4);
        let t0 = Instant::now();
        let mut h = Hose::new(t0);
        let mut w = Sink {
            got: Vec::new(),
            cap: 1 << 20,
        };
        // 100 units/s for 50 ms: 5 units of 10 bytes.
        h.pump(&mut w, &b, Some(100.0), t0 + Duration::from_millis(50))
            .unwrap();
        assert_eq!(w.got.len(), 50);
        assert!(!h.blocked);
        h.pump(&mut w, &b, Some(100.0), t0 + Duration::from_millis(50))
            .unwrap();
        assert_eq!(w.got.len(), 50, "no budget left");
    }
}
