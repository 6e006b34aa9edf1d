//! `abuse`: a soak. Normal request/reply traffic (`rr`, closed loop, small echo
//! messages) runs for the whole time; after a warm-up, abusers run next to it for
//! `duration`, then stop, and normal traffic goes on for a settle period:
//!
//! - slow readers: WebSocket clients that send 1 KB messages flat out and never read;
//! - never-reading management clients: pipelined `GET /metrics` (and with a token, a
//!   wrong-token variant) on connections that never read;
//! - connection churn: connect, upgrade, close, repeat (`connect`);
//! - big-number messages: `{"action":[0,0,…]}` of ~128 KB in 32 KiB fragments.
//!
//! The gateway's VmRSS is read from `/proc/<pid>/status` before the abuse, every 100 ms
//! during it and the settle (peak), and at the end. The run fails (exit 1) when normal
//! traffic saw any fault, or when RSS after the settle exceeds RSS before by more than
//! the slack: an edge proxy must bound what each client can make it hold, and give it
//! back.

pub mod bignum;
pub mod flood;

use crate::connect::{self, CloseMode, ConnectOpts, ConnectResult};
use crate::cpu::{self, CpuTimes};
use crate::rr::{self, PhaseResult, Phases, RrOpts, RrResult};
use crate::stats::{r2, r3, Report};
use crate::ws::{self, Handshake, Target};
use bignum::{BignumOpts, BignumResult};
use flood::{Batch, FloodOpts, FloodResult};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Phases of the normal traffic.
const PHASE_NAMES: [&str; 3] = ["before", "during", "after"];
const MIB: f64 = 1024.0 * 1024.0;
/// How often the gateway's RSS is read.
const SAMPLE: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct AbuseOpts {
    /// Normal traffic; its duration and phases are set by the run.
    pub normal: RrOpts,
    pub warmup: Duration,
    /// How long the abusers run.
    pub duration: Duration,
    /// Normal traffic alone after the abuse, before RSS is read for the verdict.
    pub settle: Duration,
    pub gateway_pid: Option<u32>,
    /// Allowed RSS growth from before the abuse to after the settle, bytes.
    pub rss_slack: u64,
    /// Stop the abuse early when the gateway's RSS passes this (protects the machine).
    pub rss_abort: Option<u64>,
    pub slow_readers: usize,
    pub slow_bytes: usize,
    /// Messages per second per slow reader; None = flat out.
    pub slow_rate: Option<f64>,
    pub management: Option<SocketAddr>,
    /// With a token, half the management clients send it and half send a wrong one.
    pub management_token: Option<String>,
    pub mgmt_clients: usize,
    /// Requests per second per management client; None = flat out.
    pub mgmt_rate: Option<f64>,
    /// Handshakes in flight for the churn (0 = off).
    pub churn: usize,
    pub bignum_clients: usize,
    pub bignum_bytes: usize,
    pub bignum_frame: usize,
    /// Phase changes and RSS on stderr.
    pub progress: bool,
}

impl AbuseOpts {
    pub fn new(target: Target) -> AbuseOpts {
        let mut normal = RrOpts::new(target);
        normal.connections = 8;
        normal.progress = false;
        AbuseOpts {
            normal,
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(10),
            settle: Duration::from_secs(5),
            gateway_pid: None,
            rss_slack: 16 << 20,
            rss_abort: Some(2048 << 20),
            slow_readers: 2,
            slow_bytes: 1024,
            slow_rate: None,
            management: None,
            management_token: None,
            mgmt_clients: 2,
            mgmt_rate: None,
            churn: 4,
            bignum_clients: 2,
            bignum_bytes: 128_000,
            bignum_frame: 32_768,
            progress: true,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct AbuseResult {
    pub normal: RrResult,
    /// How long the abusers actually ran.
    pub abuse_window: Duration,
    pub rss_before: Option<u64>,
    /// Highest RSS seen during the abuse and the settle.
    pub rss_peak: Option<u64>,
    pub rss_abuse_end: Option<u64>,
    pub rss_after: Option<u64>,
    /// RSS once a second from the start of the abuse (bytes).
    pub rss_timeline: Vec<u64>,
    /// Why the abuse was stopped early, if it was.
    pub aborted: Option<String>,
    pub slow: Option<FloodResult>,
    pub mgmt: Option<FloodResult>,
    pub churn: Option<ConnectResult>,
    pub bignum: Option<BignumResult>,
    pub loadgen_cpu: CpuTimes,
}

/// Why a run fails; empty = pass. Pure, so the rules are tested apart from any run.
pub fn verdict(
    normal_faults: u64,
    pid_given: bool,
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    slack: u64,
    aborted: Option<&str>,
) -> Vec<String> {
    let mut why = Vec::new();
    if normal_faults > 0 {
        why.push(format!(
            "normal traffic saw {normal_faults} faults (closes, error frames, timeouts, wrong or missing replies)"
        ));
    }
    if let Some(a) = aborted {
        why.push(format!("abuse stopped early: {a}"));
    }
    match (rss_before, rss_after) {
        (Some(b), Some(a)) if a > b.saturating_add(slack) => why.push(format!(
            "gateway RSS after the settle {:.1} MiB > before {:.1} MiB + {:.1} MiB slack",
            a as f64 / MIB,
            b as f64 / MIB,
            slack as f64 / MIB
        )),
        (Some(_), Some(_)) => {}
        _ if pid_given => why.push("gateway RSS unreadable (did the gateway exit?)".into()),
        _ => {}
    }
    why
}

impl AbuseResult {
    pub fn failures(&self, o: &AbuseOpts) -> Vec<String> {
        verdict(
            self.normal.faults(),
            o.gateway_pid.is_some(),
            self.rss_before,
            self.rss_after,
            o.rss_slack,
            self.aborted.as_deref(),
        )
    }

    pub fn report(&self, o: &AbuseOpts) -> Report {
        let mib = |v: Option<u64>| v.map_or(Value::Null, |b| r2(b as f64 / MIB).into());
        let n = &self.normal;
        let mut r = Report::new("abuse");
        r.add(
            "url",
            format!("ws://{}{}", o.normal.target.host, o.normal.target.path),
        )
        .add(
            "management",
            o.management.map_or(Value::Null, |a| a.to_string().into()),
        )
        .add("warmup_s", r3(o.warmup.as_secs_f64()))
        .add("abuse_s", r3(self.abuse_window.as_secs_f64()))
        .add("settle_s", r3(o.settle.as_secs_f64()))
        .add("normal_connections", n.connections as u64)
        .add("normal_replies", n.completed)
        .add("normal_msgs_per_s", r2(n.msgs_per_s));
        for (name, p) in PHASE_NAMES.iter().zip(&n.phases) {
            phase_rows(&mut r, name, p);
        }
        r.add("normal_connect_failures", n.connect_failures)
            .add("normal_error_frames", n.error_frames)
            .add("normal_mismatched", n.mismatched)
            .add("normal_timeouts", n.timeouts)
            .add("normal_unanswered", n.unanswered)
            .add("normal_closed_by_server", n.closed_by_server)
            .add("normal_faults", n.faults())
            .add(
                "gateway_pid",
                o.gateway_pid.map_or(Value::Null, Value::from),
            )
            .add("gateway_rss_before_mib", mib(self.rss_before))
            .add("gateway_rss_peak_mib", mib(self.rss_peak))
            .add("gateway_rss_abuse_end_mib", mib(self.rss_abuse_end))
            .add("gateway_rss_after_mib", mib(self.rss_after))
            .add(
                "gateway_rss_growth_mib",
                match (self.rss_before, self.rss_after) {
                    (Some(b), Some(a)) => r2((a as f64 - b as f64) / MIB).into(),
                    _ => Value::Null,
                },
            )
            .add("rss_slack_mib", r2(o.rss_slack as f64 / MIB))
            .add(
                "gateway_rss_timeline_mib",
                Value::Array(
                    self.rss_timeline
                        .iter()
                        .map(|&b| (r2(b as f64 / MIB)).into())
                        .collect(),
                ),
            );
        if let Some(s) = &self.slow {
            r.add("slow_readers", o.slow_readers as u64)
                .add("slow_msgs_sent", s.sent.iter().sum::<u64>())
                .add("slow_mib_sent", r2(s.bytes as f64 / MIB))
                .add("slow_connections", s.connections)
                .add("slow_closed_by_server", s.closed_by_server)
                .add("slow_connect_failures", s.connect_failures);
        }
        if let Some(m) = &self.mgmt {
            r.add("mgmt_clients", o.mgmt_clients as u64);
            for (b, &sent) in mgmt_batches(o).iter().zip(&m.sent) {
                r.add(&format!("mgmt_{}_requests", b.name), sent);
            }
            r.add("mgmt_connections", m.connections)
                .add("mgmt_closed_by_server", m.closed_by_server)
                .add("mgmt_connect_failures", m.connect_failures);
        }
        if let Some(c) = &self.churn {
            r.add("churn_concurrency", o.churn as u64)
                .add("churn_connections", c.handshakes)
                .add("churn_per_s", r2(c.per_s))
                .add("churn_failures", c.faults());
        }
        if let Some(b) = &self.bignum {
            r.add("bignum_clients", o.bignum_clients as u64)
                .add("bignum_bytes", o.bignum_bytes as u64)
                .add("bignum_sent", b.sent)
                .add("bignum_answered", b.answered)
                .add("bignum_error_frames", b.error_frames)
                .add("bignum_other_answers", b.other_answers)
                .add("bignum_unanswered", b.unanswered)
                .add("bignum_closed_by_server", b.closed_by_server)
                .add("bignum_connect_failures", b.connect_failures)
                .add("bignum_answer_p50_ms", r2(b.latency.p50_us / 1000.0))
                .add("bignum_answer_max_ms", r2(b.latency.max_us / 1000.0));
        }
        let why = self.failures(o);
        r.add(
            "rss_check",
            if o.gateway_pid.is_some() {
                "done"
            } else {
                "skipped (no --gateway-pid)"
            },
        )
        .add(
            "aborted",
            self.aborted.clone().map_or(Value::Null, Value::from),
        )
        .add("verdict", if why.is_empty() { "pass" } else { "FAIL" })
        .add(
            "failures",
            Value::Array(why.into_iter().map(Value::from).collect()),
        );
        r.cpu(&self.loadgen_cpu, None, "normal_msg", n.completed);
        r
    }
}

fn phase_rows(r: &mut Report, name: &str, p: &PhaseResult) {
    r.add(&format!("{name}_msgs_per_s"), r2(p.msgs_per_s()))
        .add(&format!("{name}_p50_us"), r2(p.latency.p50_us))
        .add(&format!("{name}_p99_us"), r2(p.latency.p99_us))
        .add(&format!("{name}_max_us"), r2(p.latency.max_us))
        .add(&format!("{name}_faults"), p.faults);
}

/// The management requests: `GET /metrics`, with the token when one is given. With a
/// token, every other client sends a wrong one, alternating `GET /metrics` with
/// `GET /@connections/{id}` (a path every gateway version authenticates).
fn mgmt_batches(o: &AbuseOpts) -> Vec<Batch> {
    let host = o.management.map_or_else(String::new, |a| a.to_string());
    let req = |path: &str, auth: &str| {
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n").into_bytes()
    };
    match &o.management_token {
        None => vec![Batch::repeat("metrics", &req("/metrics", ""), 1, 256)],
        Some(t) => {
            let right = format!("Authorization: Bearer {t}\r\n");
            let wrong = format!("Authorization: Bearer {t}-wrong\r\n");
            let mut pair = req("/metrics", &wrong);
            pair.extend_from_slice(&req("/@connections/wsgateLoadAbuse=", &wrong));
            vec![
                Batch::repeat("metrics", &req("/metrics", &right), 1, 256),
                Batch::repeat("wrong_token", &pair, 2, 128),
            ]
        }
    }
}

/// RSS readings of the gateway: the peak and one per second.
struct RssWatch {
    pid: Option<u32>,
    peak: Option<u64>,
    timeline: Vec<u64>,
    next_mark: Instant,
}

impl RssWatch {
    fn read(&mut self, now: Instant) -> Option<u64> {
        let v = self.pid.and_then(cpu::rss)?;
        self.peak = Some(self.peak.map_or(v, |p| p.max(v)));
        if now >= self.next_mark {
            self.timeline.push(v);
            self.next_mark += Duration::from_secs(1);
        }
        Some(v)
    }
}

fn say(o: &AbuseOpts, t0: Instant, what: &str, rss: Option<u64>) {
    if o.progress {
        let rss = rss.map_or_else(|| "-".into(), |b| format!("{:.1} MiB", b as f64 / MIB));
        eprintln!(
            "[{:>6.1}s] {what}; gateway RSS {rss}",
            t0.elapsed().as_secs_f64()
        );
    }
}

/// The whole soak: warm-up, abuse, settle.
pub fn run(o: &AbuseOpts) -> crate::Result<AbuseResult> {
    let target = o.normal.target.clone();
    if o.mgmt_clients > 0 && o.management.is_none() && o.management_token.is_some() {
        return Err("--management-token needs --management".into());
    }
    let cpu0 = cpu::own();
    let phases = Phases::new(PHASE_NAMES.len());
    let mut normal = o.normal.clone();
    normal.phases = Some(phases.clone());
    normal.progress = false;
    // A cap only: the phases end the run.
    normal.duration =
        o.warmup + o.duration + o.settle + normal.connect_timeout + Duration::from_secs(120);
    let stop = Arc::new(AtomicBool::new(false));
    let mut res = AbuseResult::default();
    let t0 = Instant::now();
    let mut watch = RssWatch {
        pid: o.gateway_pid,
        peak: None,
        timeline: Vec::new(),
        next_mark: t0,
    };

    let normal_result = std::thread::scope(|s| -> crate::Result<RrResult> {
        let rr_thread = s.spawn(|| rr::run(&normal));
        let ready_by = Instant::now() + normal.connect_timeout + Duration::from_secs(2);
        while !phases.running.load(Ordering::Relaxed)
            && !rr_thread.is_finished()
            && Instant::now() < ready_by
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !phases.running.load(Ordering::Relaxed) {
            phases.set(PHASE_NAMES.len());
            let r = rr_thread
                .join()
                .unwrap_or_else(|_| Err("normal traffic panicked".into()));
            return Err(match r {
                Err(e) => format!("normal traffic did not start: {e}"),
                Ok(_) => "normal traffic did not start".into(),
            });
        }
        say(
            o,
            t0,
            "warm-up: normal traffic",
            o.gateway_pid.and_then(cpu::rss),
        );
        std::thread::sleep(o.warmup);

        res.rss_before = o.gateway_pid.and_then(cpu::rss);
        say(o, t0, "abuse starts", res.rss_before);
        phases.set(1);
        let a0 = Instant::now();
        watch.next_mark = a0;
        let until = a0 + o.duration;
        let stop_ref: &AtomicBool = &stop;
        let slow = (o.slow_readers > 0).then(|| {
            let f = FloodOpts {
                addr: target.addr,
                clients: o.slow_readers,
                handshake: Some(Handshake::new(&target, &mut crate::net::Rng::new(5))),
                batches: vec![slow_batch(o.slow_bytes)],
                rate: o.slow_rate,
            };
            s.spawn(move || flood::run(&f, until, stop_ref))
        });
        let mgmt = match o.management {
            Some(addr) if o.mgmt_clients > 0 => {
                let f = FloodOpts {
                    addr,
                    clients: o.mgmt_clients,
                    handshake: None,
                    batches: mgmt_batches(o),
                    rate: o.mgmt_rate,
                };
                Some(s.spawn(move || flood::run(&f, until, stop_ref)))
            }
            _ => None,
        };
        let churn = (o.churn > 0).then(|| {
            let c = ConnectOpts {
                target: target.clone(),
                concurrency: o.churn,
                threads: 1,
                duration: o.duration,
                sources: 1,
                close: CloseMode::Clean,
                timeout: Duration::from_secs(5),
                progress: false,
                stop: Some(stop.clone()),
            };
            s.spawn(move || connect::run(&c))
        });
        let big = (o.bignum_clients > 0).then(|| {
            let b = BignumOpts {
                target: target.clone(),
                clients: o.bignum_clients,
                bytes: o.bignum_bytes,
                frame: o.bignum_frame,
            };
            s.spawn(move || bignum::run(&b, until, stop_ref))
        });

        // Watch the RSS while the abusers run; stop them if it passes the abort line.
        let mut last_say = a0;
        loop {
            let busy = slow.as_ref().is_some_and(|h| !h.is_finished())
                || mgmt.as_ref().is_some_and(|h| !h.is_finished())
                || churn.as_ref().is_some_and(|h| !h.is_finished())
                || big.as_ref().is_some_and(|h| !h.is_finished());
            if !busy {
                break;
            }
            std::thread::sleep(SAMPLE);
            let now = Instant::now();
            let v = watch.read(now);
            if let (Some(v), Some(limit)) = (v, o.rss_abort) {
                if v > limit && res.aborted.is_none() {
                    res.aborted = Some(format!(
                        "gateway RSS {:.1} MiB passed --rss-abort-mb {:.0}",
                        v as f64 / MIB,
                        limit as f64 / MIB
                    ));
                    stop.store(true, Ordering::Relaxed);
                }
            }
            if now.duration_since(last_say) >= Duration::from_secs(1) {
                last_say = now;
                say(o, t0, "abuse", v);
            }
        }
        res.abuse_window = a0.elapsed();
        res.slow = join(slow, "slow readers")?;
        res.mgmt = join(mgmt, "management clients")?;
        res.churn = join(churn, "churn")?;
        res.bignum = join(big, "big numbers")?;

        res.rss_abuse_end = watch.read(Instant::now());
        say(
            o,
            t0,
            "abuse stopped; settle: normal traffic",
            res.rss_abuse_end,
        );
        phases.set(2);
        let settle_end = Instant::now() + o.settle;
        while Instant::now() < settle_end {
            std::thread::sleep(SAMPLE.min(settle_end.saturating_duration_since(Instant::now())));
            watch.read(Instant::now());
        }
        res.rss_after = o.gateway_pid.and_then(cpu::rss);
        say(o, t0, "settled", res.rss_after);
        phases.set(PHASE_NAMES.len());
        rr_thread
            .join()
            .unwrap_or_else(|_| Err("normal traffic panicked".into()))
    })?;
    res.normal = normal_result;
    res.rss_peak = watch.peak.max(res.rss_before);
    res.rss_timeline = watch.timeline;
    res.loadgen_cpu = cpu::own().since(&cpu0);
    Ok(res)
}

fn join<T>(
    h: Option<std::thread::ScopedJoinHandle<'_, crate::Result<T>>>,
    what: &str,
) -> crate::Result<Option<T>> {
    match h {
        None => Ok(None),
        Some(h) => match h.join() {
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!("{what}: thread panicked")),
        },
    }
}

/// A slow reader's unit: one masked text frame of `bytes` to the echo route, 16 per batch.
fn slow_batch(bytes: usize) -> Batch {
    let msg = rr::Template::new("slow", bytes).bytes;
    let mut frame = Vec::with_capacity(msg.len() + 14);
    ws::encode_frame(&mut frame, true, ws::OP_TEXT, &msg, 0x5107_5107);
    Batch::repeat("slow", &frame, 1, 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_rules() {
        let mb = 1 << 20;
        assert!(verdict(0, true, Some(10 * mb), Some(26 * mb), 16 * mb, None).is_empty());
        let why = verdict(0, true, Some(10 * mb), Some(27 * mb), 16 * mb, None);
        assert_eq!(why.len(), 1);
        assert!(why[0].contains("after the settle 27.0 MiB"), "{why:?}");
        assert_eq!(verdict(3, false, None, None, 16 * mb, None).len(), 1);
        assert!(verdict(0, false, None, None, 16 * mb, None).is_empty());
        assert_eq!(verdict(0, true, Some(mb), None, 16 * mb, None).len(), 1);
        assert_eq!(
            verdict(0, true, Some(mb), Some(mb), 0, Some("too big")).len(),
            1
        );
    }

    #[test]
    fn management_requests_with_and_without_a_token() {
        let mut o = AbuseOpts::new(ws::parse_url("ws://127.0.0.1:1/").unwrap());
        o.management = Some("127.0.0.1:9001".parse().unwrap());
        let b = mgmt_batches(&o);
        assert_eq!(b.len(), 1);
        assert!(b[0]
            .bytes
            .starts_with(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9001\r\n\r\nGET"));
        o.management_token = Some("s3".into());
        let b = mgmt_batches(&o);
        assert_eq!(b.len(), 2);
        let wrong = String::from_utf8_lossy(&b[1].bytes[..b[1].unit]).into_owned();
        assert_eq!(
            wrong.matches("Bearer s3-wrong\r\n\r\n").count(),
            2,
            "{wrong}"
        );
        assert!(wrong.contains("GET /@connections/wsgateLoadAbuse= HTTP/1.1\r\n"));
        assert_eq!(b[1].per_unit, 2);
        assert_eq!(b[1].bytes.len(), b[1].unit * 128);
    }

    #[test]
    fn slow_batch_is_whole_frames() {
        let b = slow_batch(1024);
        let h = ws::decode_header(&b.bytes).unwrap().unwrap();
        assert_eq!(h.payload_len, 1024);
        assert_eq!(b.unit, h.header_len + 1024);
        assert_eq!(b.bytes.len(), 16 * b.unit);
    }
}
