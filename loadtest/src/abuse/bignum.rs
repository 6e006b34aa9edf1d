//! Big-number messages: a few WebSocket clients send `{"action":[0,0,0,…]}` of about
//! 128 KB, fragmented into 32 KiB frames (the default limits), wait for the answer,
//! and send the next. Route selection that rescans the message for every number takes
//! seconds per message and stalls every other client of that worker meanwhile; linear
//! route selection answers in about a millisecond.

use crate::net;
use crate::stats::{Latency, LatencySummary};
use crate::ws::{self, Handshake, Msg, Step, Target, WsConn};
use mio::{Events, Interest, Poll};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RETRY: Duration = Duration::from_millis(50);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct BignumOpts {
    pub target: Target,
    pub clients: usize,
    /// Message size in bytes (the JSON text).
    pub bytes: usize,
    /// Fragment size in bytes.
    pub frame: usize,
}

#[derive(Clone, Debug, Default)]
pub struct BignumResult {
    pub connections: u64,
    pub connect_failures: u64,
    pub closed_by_server: u64,
    pub sent: u64,
    /// Answers as long as the message (the echo).
    pub answered: u64,
    /// Gateway error frames (`{"message": ...}`).
    pub error_frames: u64,
    /// Any other answer.
    pub other_answers: u64,
    /// Sent but not answered when the abuse ended.
    pub unanswered: u64,
    /// Send-to-answer time.
    pub latency: LatencySummary,
}

/// `{"action":[0,0,…,0]}`, `bytes` long (or the shortest such message, 14 bytes).
pub fn message(bytes: usize) -> Vec<u8> {
    let zeros = bytes.saturating_sub(13).max(2) / 2;
    let mut m = Vec::with_capacity(13 + 2 * zeros);
    m.extend_from_slice(b"{\"action\":[");
    for i in 0..zeros {
        if i > 0 {
            m.push(b',');
        }
        m.push(b'0');
    }
    m.extend_from_slice(b"]}");
    m
}

/// The message as masked client frames of at most `frame` payload bytes: a text frame,
/// continuations, the last one with FIN.
pub fn fragments(msg: &[u8], frame: usize, rng: &mut net::Rng) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + msg.len() / frame.max(1) * 14 + 14);
    let chunks: Vec<&[u8]> = msg.chunks(frame.max(1)).collect();
    for (k, c) in chunks.iter().enumerate() {
        let op = if k == 0 { ws::OP_TEXT } else { ws::OP_CONT };
        ws::encode_frame(
            &mut out,
            k + 1 == chunks.len(),
            op,
            c,
            rng.next_u64() as u32,
        );
    }
    out
}

enum Conn {
    Idle(Instant),
    /// Connected or upgrading; `sent_at` is set while a message awaits its answer.
    Open {
        ws: WsConn,
        started: Instant,
        sent_at: Option<Instant>,
    },
}

/// Runs the big-number clients until `until` or `stop`.
pub fn run(o: &BignumOpts, until: Instant, stop: &AtomicBool) -> crate::Result<BignumResult> {
    net::check_loopback(&o.target.addr)?;
    let mut poll = Poll::new().map_err(|e| format!("poll: {e}"))?;
    let mut events = Events::with_capacity(64);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut rng = net::Rng::new(0xB16);
    let hs = Handshake::new(&o.target, &mut rng);
    let msg = message(o.bytes);
    let wire = fragments(&msg, o.frame, &mut rng);
    let mut r = BignumResult::default();
    let mut hist = Latency::default();
    let now = Instant::now();
    let mut slots: Vec<(Conn, u32)> = (0..o.clients).map(|_| (Conn::Idle(now), 0)).collect();
    loop {
        let now = Instant::now();
        if now >= until || stop.load(Ordering::Relaxed) {
            break;
        }
        for (i, (conn, gen)) in slots.iter_mut().enumerate() {
            match conn {
                Conn::Idle(at) if now >= *at => {
                    *gen = gen.wrapping_add(1);
                    *conn = match net::connect(o.target.addr, None, false) {
                        Ok(mut s) => {
                            let interest = Interest::READABLE | Interest::WRITABLE;
                            if poll
                                .registry()
                                .register(&mut s, net::token(i, *gen), interest)
                                .is_ok()
                            {
                                Conn::Open {
                                    ws: WsConn::new(s, &hs),
                                    started: now,
                                    sent_at: None,
                                }
                            } else {
                                r.connect_failures += 1;
                                Conn::Idle(now + RETRY)
                            }
                        }
                        Err(_) => {
                            r.connect_failures += 1;
                            Conn::Idle(now + RETRY)
                        }
                    };
                }
                Conn::Open { ws, started, .. }
                    if !ws.is_open() && now.duration_since(*started) > HANDSHAKE_TIMEOUT =>
                {
                    r.connect_failures += 1;
                    *conn = Conn::Idle(now + RETRY);
                }
                _ => {}
            }
        }
        let wait = Duration::from_millis(10).min(until.saturating_duration_since(now));
        poll.poll(&mut events, Some(wait))
            .map_err(|e| format!("poll: {e}"))?;
        let now = Instant::now();
        for ev in events.iter() {
            let (i, g) = net::token_parts(ev.token());
            let Some((conn, gen)) = slots.get_mut(i) else {
                continue;
            };
            if *gen != g {
                continue;
            }
            let Conn::Open { ws, sent_at, .. } = conn else {
                continue;
            };
            let was_open = ws.is_open();
            let mask = rng.next_u64() as u32;
            let (mut answered, mut errors, mut other) = (0u64, 0u64, 0u64);
            let step = ws.handle(
                ev.is_readable(),
                ev.is_writable(),
                &mut scratch,
                &hs,
                mask,
                &mut |_, m| {
                    if let Msg::Data { payload, .. } = m {
                        if payload.len() == msg.len() {
                            answered += 1;
                        } else if payload.starts_with(b"{\"message\"") {
                            errors += 1;
                        } else {
                            other += 1;
                        }
                    }
                },
            );
            r.answered += answered;
            r.error_frames += errors;
            r.other_answers += other;
            if answered + errors + other > 0 {
                if let Some(t) = sent_at.take() {
                    hist.record(now.duration_since(t).as_nanos() as u64);
                }
            }
            match step {
                Step::Closed(_) => {
                    if was_open {
                        r.closed_by_server += 1;
                    } else {
                        r.connect_failures += 1;
                    }
                    if sent_at.is_some() {
                        r.unanswered += 1;
                    }
                    *conn = Conn::Idle(now + RETRY);
                    continue;
                }
                Step::Opened => r.connections += 1,
                Step::Nothing => {}
            }
            if ws.is_open() && sent_at.is_none() {
                ws.out.buf.extend_from_slice(&wire);
                *sent_at = Some(now);
                r.sent += 1;
                if ws.flush().is_err() {
                    r.closed_by_server += 1;
                    r.unanswered += 1;
                    *conn = Conn::Idle(now + RETRY);
                }
            }
        }
    }
    for (conn, _) in &slots {
        if let Conn::Open {
            sent_at: Some(_), ..
        } = conn
        {
            r.unanswered += 1;
        }
    }
    r.latency = hist.summary();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_json_of_the_asked_size() {
        let m = message(128_000);
        assert!((127_998..=128_000).contains(&m.len()), "{}", m.len());
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["action"].as_array().unwrap().len(), (128_000 - 13) / 2);
        assert!(serde_json::from_slice::<serde_json::Value>(&message(0)).is_ok());
    }

    #[test]
    fn fragments_reassemble_to_the_message() {
        let m = message(100_000);
        let mut rng = net::Rng::new(1);
        let wire = fragments(&m, 32_768, &mut rng);
        let (mut pos, mut got, mut frames) = (0, Vec::new(), Vec::new());
        while pos < wire.len() {
            let h = ws::decode_header(&wire[pos..]).unwrap().unwrap();
            let mut p = wire[pos + h.header_len..pos + h.header_len + h.payload_len].to_vec();
            ws::apply_mask(&mut p, h.mask.unwrap());
            got.extend_from_slice(&p);
            frames.push((h.opcode, h.fin, h.payload_len));
            pos += h.header_len + h.payload_len;
        }
        assert_eq!(got, m);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], (ws::OP_TEXT, false, 32_768));
        assert_eq!(frames[3].0, ws::OP_CONT);
        assert!(frames[3].1);
        assert!(frames.iter().all(|f| f.2 <= 32_768));
    }
}
