//! `backend`: a fast HTTP/1.1 keep-alive server on mio for benchmarks and as wsgate's
//! `aws_proxy` / `http_proxy` backend. Replies with a fixed body, the request body
//! (`echo`), or the `body` field of an API Gateway event (`event-body`, what `rr`
//! needs through an `aws_proxy` route); optionally after a delay and/or chunked.
//! Pipelined requests are answered in order; all replies of a read go out in one write.
//!
//! With `event-body` it also stands in for the two other things wsgate calls:
//! - the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`, what a
//!   Lambda `uri` with `[aws] lambda_endpoint` pointing here sends): the reply is a
//!   Lambda proxy result `{"statusCode":200,"body":"<the event's body>"}` (just
//!   `{"statusCode":200}` for events without a body). Signatures are not verified
//!   (the gateway's tests do that), but an Invoke without an
//!   `Authorization: AWS4-HMAC-SHA256 ...` header counts as a fault;
//! - a REQUEST authorizer (a body with `"type":"REQUEST"` and a `methodArn`, over plain
//!   HTTP or Invoke): the reply is a policy allowing `execute-api:Invoke` on that
//!   methodArn.

use crate::cpu;
use crate::http::{self, Parsed};
use crate::net::{self, OutBuf, ReadOutcome};
use crate::stats::{r3, Report};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Fixed(Vec<u8>),
    Echo,
    EventBody,
}

#[derive(Clone, Debug)]
pub struct BackendOpts {
    pub listen: SocketAddr,
    pub threads: usize,
    pub mode: Mode,
    pub status: u16,
    pub delay: Duration,
    pub chunked: bool,
    pub duration: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct BackendResult {
    pub requests: u64,
    pub connections: u64,
    pub bad_requests: u64,
    /// Lambda Invoke requests without a SigV4 `Authorization` header.
    pub faults: u64,
    /// Of `requests`: Lambda Invoke calls and authorizer calls.
    pub invokes: u64,
    pub authorizations: u64,
    pub elapsed: Duration,
    pub cpu: cpu::CpuTimes,
}

impl BackendResult {
    pub fn report(&self) -> Report {
        let mut r = Report::new("backend");
        let per = if self.requests > 0 {
            self.cpu.total().as_secs_f64() * 1e6 / self.requests as f64
        } else {
            0.0
        };
        r.add("duration_s", r3(self.elapsed.as_secs_f64()))
            .add("requests", self.requests)
            .add("connections", self.connections)
            .add("bad_requests", self.bad_requests)
            .add("invokes", self.invokes)
            .add("authorizations", self.authorizations)
            .add("faults", self.faults)
            .add("backend_cpu_user_s", r3(self.cpu.user.as_secs_f64()))
            .add("backend_cpu_sys_s", r3(self.cpu.sys.as_secs_f64()))
            .add("backend_cpu_us_per_request", r3(per));
        r
    }
}

/// A running backend: its address, a stop switch and its threads.
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<ThreadStats>>,
    started: Instant,
    cpu0: cpu::CpuTimes,
}

#[derive(Default)]
struct ThreadStats {
    requests: u64,
    connections: u64,
    bad: u64,
    faults: u64,
    invokes: u64,
    authorizations: u64,
}

impl Backend {
    /// Binds and starts the threads; they stop at `stop()` or after `opts.duration`.
    pub fn start(opts: &BackendOpts) -> crate::Result<Backend> {
        net::check_loopback(&opts.listen)?;
        cpu::raise_nofile();
        let std_l = std::net::TcpListener::bind(opts.listen)
            .map_err(|e| format!("bind {}: {e}", opts.listen))?;
        std_l.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = std_l.local_addr().map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for _ in 0..opts.threads.max(1) {
            // Every thread polls its own duplicate of the listening socket.
            let l = TcpListener::from_std(std_l.try_clone().map_err(|e| e.to_string())?);
            let (o, s) = (opts.clone(), stop.clone());
            handles.push(std::thread::spawn(move || serve(l, &o, &s)));
        }
        Ok(Backend {
            addr,
            stop,
            handles,
            started: Instant::now(),
            cpu0: cpu::own(),
        })
    }

    pub fn stop(self) -> BackendResult {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits for the threads to finish (after the duration).
    pub fn join(self) -> BackendResult {
        let mut r = BackendResult::default();
        for h in self.handles {
            if let Ok(s) = h.join() {
                r.requests += s.requests;
                r.connections += s.connections;
                r.bad_requests += s.bad;
                r.faults += s.faults;
                r.invokes += s.invokes;
                r.authorizations += s.authorizations;
            }
        }
        r.elapsed = self.started.elapsed();
        r.cpu = cpu::own().since(&self.cpu0);
        r
    }
}

struct Conn {
    stream: mio::net::TcpStream,
    gen: u32,
    stash: Vec<u8>,
    out: OutBuf,
    /// Delayed replies: rendered bytes and when each may go out.
    held: Vec<u8>,
    held_marks: VecDeque<(Instant, usize)>,
    close_after: bool,
}

const LISTENER: Token = Token(usize::MAX);

fn serve(mut listener: TcpListener, o: &BackendOpts, stop: &AtomicBool) -> ThreadStats {
    let mut st = ThreadStats::default();
    let Ok(mut poll) = Poll::new() else { return st };
    if poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .is_err()
    {
        return st;
    }
    let mut events = Events::with_capacity(1024);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut gens: Vec<u32> = Vec::new();
    let mut scratch = vec![0u8; 256 * 1024];
    let mut body_buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut timers: VecDeque<(Instant, usize, u32)> = VecDeque::new();
    let deadline = Instant::now() + o.duration;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut wait = Duration::from_millis(100).min(deadline - now);
        if let Some(&(due, _, _)) = timers.front() {
            wait = wait.min(due.saturating_duration_since(now));
        }
        if poll.poll(&mut events, Some(wait)).is_err() {
            break;
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                for _ in 0..256 {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let _ = s.set_nodelay(true);
                            let i = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                gens.push(0);
                                conns.len() - 1
                            });
                            gens[i] = gens[i].wrapping_add(1);
                            if poll
                                .registry()
                                .register(
                                    &mut s,
                                    net::token(i, gens[i]),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_err()
                            {
                                free.push(i);
                                continue;
                            }
                            st.connections += 1;
                            conns[i] = Some(Conn {
                                stream: s,
                                gen: gens[i],
                                stash: Vec::new(),
                                out: OutBuf::default(),
                                held: Vec::new(),
                                held_marks: VecDeque::new(),
                                close_after: false,
                            });
                        }
                        Err(_) => break,
                    }
                }
                continue;
            }
            let (i, gen) = net::token_parts(ev.token());
            let Some(Some(c)) = conns.get_mut(i) else {
                continue;
            };
            if c.gen != gen {
                continue;
            }
            let mut dead = false;
            if ev.is_readable() {
                for _ in 0..64 {
                    match net::read_once(&mut c.stream, &mut scratch) {
                        ReadOutcome::Data { n, more } => {
                            if !handle_input(
                                c,
                                &scratch[..n],
                                o,
                                &mut body_buf,
                                &mut st,
                                &mut timers,
                                i,
                            ) {
                                dead = true;
                                break;
                            }
                            if !more {
                                break;
                            }
                        }
                        ReadOutcome::WouldBlock => break,
                        ReadOutcome::Eof | ReadOutcome::Err(_) => {
                            dead = true;
                            break;
                        }
                    }
                }
            }
            if !dead {
                match c.out.flush(&mut c.stream) {
                    Ok(true) if c.close_after && c.held_marks.is_empty() => dead = true,
                    Ok(_) => {}
                    Err(_) => dead = true,
                }
            }
            if dead {
                let _ = poll.registry().deregister(&mut c.stream);
                conns[i] = None;
                free.push(i);
            }
        }
        // Delayed replies whose time has come.
        let now = Instant::now();
        while let Some(&(due, i, gen)) = timers.front() {
            if due > now {
                break;
            }
            timers.pop_front();
            let Some(Some(c)) = conns.get_mut(i) else {
                continue;
            };
            if c.gen != gen {
                continue;
            }
            let mut upto = 0;
            while let Some(&(d, end)) = c.held_marks.front() {
                if d > now {
                    break;
                }
                upto = end;
                c.held_marks.pop_front();
            }
            if upto > 0 {
                c.out.buf.extend_from_slice(&c.held[..upto]);
                c.held.drain(..upto);
                for m in c.held_marks.iter_mut() {
                    m.1 -= upto;
                }
                if c.out.flush(&mut c.stream).is_err() {
                    let _ = poll.registry().deregister(&mut c.stream);
                    conns[i] = None;
                    free.push(i);
                }
            }
        }
    }
    st
}

/// Parses the requests in `data` and renders their replies; false to drop the connection.
fn handle_input(
    c: &mut Conn,
    data: &[u8],
    o: &BackendOpts,
    body_buf: &mut Vec<u8>,
    st: &mut ThreadStats,
    timers: &mut VecDeque<(Instant, usize, u32)>,
    idx: usize,
) -> bool {
    let delayed = !o.delay.is_zero();
    let (out, held, marks) = (&mut c.out.buf, &mut c.held, &mut c.held_marks);
    let mut close = false;
    let r = net::with_stash(&mut c.stash, data, |buf| {
        let mut pos = 0;
        while pos < buf.len() {
            match http::parse_request(&buf[pos..]) {
                Parsed::Incomplete => break,
                Parsed::Bad(_) => {
                    st.bad += 1;
                    return Err(());
                }
                Parsed::Done(h) => {
                    let req_body = &buf[pos + h.body_start..pos + h.total_len];
                    let body: &[u8] = match &o.mode {
                        Mode::Fixed(b) => b,
                        Mode::Echo => req_body,
                        Mode::EventBody => {
                            body_buf.clear();
                            event_reply(req_body, h.lambda_invoke, body_buf, st);
                            if h.lambda_invoke && !h.sigv4 {
                                st.faults += 1;
                                // 1st, 10th, 100th, ...: visible while the backend runs.
                                if is_power_of_ten(st.faults) {
                                    eprintln!(
                                        "wsgate-load backend: fault: Invoke request without a \
                                         SigV4 Authorization header ({} on this thread)",
                                        st.faults
                                    );
                                }
                            }
                            body_buf
                        }
                    };
                    let dst = if delayed { &mut *held } else { &mut *out };
                    render(dst, o.status, body, o.chunked, h.close);
                    if delayed {
                        let due = Instant::now() + o.delay;
                        marks.push_back((due, held.len()));
                        timers.push_back((due, idx, c.gen));
                    }
                    st.requests += 1;
                    pos += h.total_len;
                    if h.close {
                        close = true;
                        break;
                    }
                }
            }
        }
        Ok(pos)
    });
    if close {
        c.close_after = true;
    }
    r.is_ok()
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n % 10 == 0 {
        n /= 10;
    }
    n == 1
}

/// The `event-body` reply to `req` in `out`: an authorizer's Allow policy, else the
/// event's body, wrapped as a Lambda proxy result when the call is a Lambda Invoke.
fn event_reply(req: &[u8], lambda_invoke: bool, out: &mut Vec<u8>, st: &mut ThreadStats) {
    if lambda_invoke {
        st.invokes += 1;
    }
    if authorizer_policy(req, out) {
        st.authorizations += 1;
        return;
    }
    if !lambda_invoke {
        http::event_body(req, out);
        return;
    }
    out.extend_from_slice(b"{\"statusCode\":200");
    let mark = out.len();
    if http::event_body(req, out) {
        let body = out.split_off(mark);
        out.extend_from_slice(b",\"body\":");
        http::push_json_string(out, &body);
    }
    out.push(b'}');
}

/// An Allow policy for a REQUEST authorizer event's methodArn in `out`; false (and `out`
/// untouched) when `req` is not such an event.
pub fn authorizer_policy(req: &[u8], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    if !http::authorizer_method_arn(req, out) {
        return false;
    }
    let arn = out.split_off(start);
    out.extend_from_slice(
        b"{\"principalId\":\"u\",\"policyDocument\":{\"Version\":\"2012-10-17\",\
          \"Statement\":[{\"Action\":\"execute-api:Invoke\",\"Effect\":\"Allow\",\"Resource\":",
    );
    http::push_json_string(out, &arn);
    out.extend_from_slice(b"}]}}");
    true
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Appends one response.
pub fn render(out: &mut Vec<u8>, status: u16, body: &[u8], chunked: bool, close: bool) {
    out.extend_from_slice(b"HTTP/1.1 ");
    net::push_u64(out, status as u64);
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        // Two chunks when there is enough body, to exercise the client's reassembly.
        let split = if body.len() >= 2 {
            body.len() / 2
        } else {
            body.len()
        };
        for part in [&body[..split], &body[split..]] {
            if part.is_empty() {
                continue;
            }
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(b"Content-Length: ");
        net::push_u64(out, body.len() as u64);
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn roundtrip(mode: Mode, chunked: bool, delay: Duration, req_body: &str) -> Vec<u8> {
        let b = Backend::start(&BackendOpts {
            listen: "127.0.0.1:0".parse().unwrap(),
            threads: 2,
            mode,
            status: 200,
            delay,
            chunked,
            duration: Duration::from_secs(5),
        })
        .unwrap();
        let mut s = std::net::TcpStream::connect(b.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let req = format!(
            "POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{}",
            req_body.len(),
            req_body
        );
        // Two pipelined requests.
        s.write_all(format!("{req}{req}").as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let mut responses = 0;
        while responses < 2 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
            responses = 0;
            let mut pos = 0;
            while let Parsed::Done(h) = http::parse_response(&got[pos..]) {
                assert_eq!(h.status, 200);
                pos += h.total_len;
                responses += 1;
            }
        }
        let r = b.stop();
        assert_eq!(r.requests, 2);
        got
    }

    #[test]
    fn echo_and_fixed_and_event_body() {
        let got = roundtrip(Mode::Echo, false, Duration::ZERO, "hello");
        assert!(got.ends_with(b"\r\n\r\nhello"));
        let got = roundtrip(Mode::Fixed(b"{}".to_vec()), true, Duration::ZERO, "x");
        assert!(got.ends_with(b"\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"));
        let t0 = Instant::now();
        let got = roundtrip(
            Mode::EventBody,
            false,
            Duration::from_millis(50),
            r#"{"requestContext":{},"body":"{\"a\":1}"}"#,
        );
        assert!(t0.elapsed() >= Duration::from_millis(50));
        assert!(got.ends_with(b"\r\n\r\n{\"a\":1}"));
    }
}
