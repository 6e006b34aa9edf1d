//! A real HTTP/1.1 backend for the HTTP-integration tests, on std only: a
//! `TcpListener` on `127.0.0.1:0`, a thread per accepted connection, keep-alive,
//! request heads and bodies (Content-Length or chunked) parsed by hand.
//!
//! A handler sees every [`Request`] and returns a [`Reply`]: status, headers, body,
//! a delay, chunked or Content-Length, what happens to the connection afterwards
//! (keep-alive, `Connection: close`, or a silent close), never answering (`hang`),
//! raw bytes (then close, or in timed pieces on a kept connection), a reply that
//! never ends, or closing without a reply. Every request is recorded with its arrival
//! time and the connection it came on; accepted connections, connections open at
//! once and requests in flight at once are counted. Every wait is bounded, and the
//! threads end when the [`Backend`] is dropped.
//!
//! Also here: config builders for `aws_proxy` / `http_proxy` integrations, a raw
//! handshake with chosen headers, and checks for the event shapes of SPEC §5.

#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::*;

/// How long a test waits for the backend to see something.
pub const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Requests.

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// Index of the TCP connection it came on (0 = first accepted).
    pub conn: usize,
    /// Its position among that connection's requests (0 = first).
    pub seq_on_conn: usize,
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
    /// When the whole request had arrived.
    pub at: Instant,
    /// The same instant, wall clock, ms since the Unix epoch.
    pub wall_ms: u64,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }

    /// The query's (name, value) pairs, percent-decoded (`+` is a space).
    pub fn query(&self) -> Vec<(String, String)> {
        match self.target.split_once('?') {
            None => Vec::new(),
            Some((_, q)) => q
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        }
    }

    /// The last value of query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).expect("request body is UTF-8")
    }

    /// The body as an `aws_proxy` event (panics when it is not JSON).
    pub fn event(&self) -> &Value {
        self.json.as_ref().unwrap_or_else(|| {
            panic!(
                "request body is not JSON: {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `requestContext.eventType` of an `aws_proxy` event.
    pub fn event_type(&self) -> Option<&str> {
        self.json.as_ref()?["requestContext"]["eventType"].as_str()
    }

    /// `requestContext.routeKey` of an `aws_proxy` event.
    pub fn route_key(&self) -> Option<&str> {
        self.json.as_ref()?["requestContext"]["routeKey"].as_str()
    }

    /// `requestContext.connectionId` of an `aws_proxy` event.
    pub fn connection_id(&self) -> Option<&str> {
        self.json.as_ref()?["requestContext"]["connectionId"].as_str()
    }

    /// The client's message: an `aws_proxy` MESSAGE event's `body`, else the raw body.
    pub fn message(&self) -> Option<String> {
        if let Some(v) = &self.json {
            if v.get("requestContext").is_some() {
                return v["body"].as_str().map(str::to_string);
            }
        }
        std::str::from_utf8(&self.body).ok().map(str::to_string)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// Replies.

/// What happens to the connection after a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Keep it open for the next request (unless the request asked to close).
    KeepAlive,
    /// Send `Connection: close`, then close.
    CloseHeader,
    /// Close the socket right after the reply, without saying so.
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Normal,
    /// Never answer; hold the connection until the peer or the backend goes.
    Hang,
    /// Write these bytes verbatim, then close.
    Raw(Vec<u8>),
    /// Close the connection without writing anything.
    CloseWithoutReply,
    /// Write these pieces verbatim, a few ms apart, and keep serving the connection.
    RawParts(Vec<Vec<u8>>),
    /// Write `head`, then `repeat` again and again until the peer goes, the backend
    /// stops, or `cap` bytes were written; then close.
    Endless {
        head: Vec<u8>,
        repeat: Vec<u8>,
        cap: usize,
    },
}

/// How the backend answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delay: Duration,
    /// `Some(n)`: chunked, in chunks of at most `n` bytes, flushed one by one.
    pub chunked: Option<usize>,
    pub ending: Ending,
    /// Write the head and the body in separate writes, a few ms apart.
    pub split_writes: bool,
    kind: Kind,
}

impl Reply {
    /// `status` with `body` (no Content-Type).
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
            chunked: None,
            ending: Ending::KeepAlive,
            split_writes: false,
            kind: Kind::Normal,
        }
    }

    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply::new(200, body)
    }

    /// 200 with an empty body.
    pub fn empty() -> Reply {
        Reply::new(200, Vec::new())
    }

    /// `status` with a JSON body and `Content-Type: application/json`.
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply::new(status, v.to_string()).header("Content-Type", "application/json")
    }

    /// A Lambda proxy result `{"statusCode":..,"headers":{},"body":..,"isBase64Encoded":false}`.
    pub fn lambda(status_code: u16, body: &str) -> Reply {
        Reply::json(
            200,
            &serde_json::json!({
                "statusCode": status_code,
                "headers": {},
                "body": body,
                "isBase64Encoded": false
            }),
        )
    }

    /// Never answers.
    pub fn hang() -> Reply {
        Reply {
            kind: Kind::Hang,
            ..Reply::empty()
        }
    }

    /// Writes `bytes` verbatim, then closes the connection.
    pub fn raw(bytes: impl Into<Vec<u8>>) -> Reply {
        Reply {
            kind: Kind::Raw(bytes.into()),
            ..Reply::empty()
        }
    }

    /// Writes each of `parts` verbatim, 20 ms apart (so they arrive as separate
    /// reads), and keeps the connection open for the next request.
    pub fn raw_parts(parts: Vec<Vec<u8>>) -> Reply {
        Reply {
            kind: Kind::RawParts(parts),
            ..Reply::empty()
        }
    }

    /// Writes `head`, then `repeat` until the peer closes, the backend stops or `cap`
    /// bytes went out (a reply that never ends), then closes.
    pub fn endless(head: impl Into<Vec<u8>>, repeat: impl Into<Vec<u8>>, cap: usize) -> Reply {
        Reply {
            kind: Kind::Endless {
                head: head.into(),
                repeat: repeat.into(),
                cap,
            },
            ..Reply::empty()
        }
    }

    /// Closes the connection without answering.
    pub fn close_without_reply() -> Reply {
        Reply {
            kind: Kind::CloseWithoutReply,
            ..Reply::empty()
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }

    pub fn delay_ms(self, ms: u64) -> Reply {
        self.delay(Duration::from_millis(ms))
    }

    /// Chunked transfer encoding, chunks of at most `size` bytes, flushed separately.
    pub fn chunked(mut self, size: usize) -> Reply {
        assert!(size > 0);
        self.chunked = Some(size);
        self
    }

    /// `Connection: close`, then close after the reply.
    pub fn close_after(mut self) -> Reply {
        self.ending = Ending::CloseHeader;
        self
    }

    /// Close the socket after the reply without saying so.
    pub fn drop_after(mut self) -> Reply {
        self.ending = Ending::Drop;
        self
    }

    pub fn split_writes(mut self) -> Reply {
        self.split_writes = true;
        self
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

// ---------------------------------------------------------------------------
// The backend.

pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

struct State {
    requests: Mutex<Vec<Request>>,
    changed: Condvar,
    stop: AtomicBool,
    accepted: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    streams: Mutex<Vec<TcpStream>>,
}

/// A running backend; its threads end when it is dropped.
pub struct Backend {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept_thread: Option<JoinHandle<()>>,
}

fn bump_max(max: &AtomicUsize, now: usize) {
    max.fetch_max(now, Ordering::SeqCst);
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl Backend {
    /// Starts a backend answering every request with `handler`.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Backend {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            requests: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            max_open: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
            max_inflight: AtomicUsize::new(0),
            streams: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let accept_thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let idx = st.accepted.fetch_add(1, Ordering::SeqCst);
                let open = st.open.fetch_add(1, Ordering::SeqCst) + 1;
                bump_max(&st.max_open, open);
                if let Ok(clone) = stream.try_clone() {
                    st.streams.lock().unwrap().push(clone);
                }
                let st2 = st.clone();
                let h = handler.clone();
                thread::spawn(move || {
                    serve(stream, idx, &st2, &h);
                    st2.open.fetch_sub(1, Ordering::SeqCst);
                    st2.changed.notify_all();
                });
            }
        });
        Backend {
            addr,
            state,
            accept_thread: Some(accept_thread),
        }
    }

    /// 200 with an empty body to everything.
    pub fn ok() -> Backend {
        Backend::start(|_| Reply::empty())
    }

    /// 200 with the request body (for `aws_proxy`: the event itself), as JSON.
    pub fn echo_json() -> Backend {
        Backend::start(|r| {
            Reply::new(200, r.body.clone()).header("Content-Type", "application/json")
        })
    }

    /// 200 with the client's message (the event's `body`, or the raw body) to messages,
    /// 200 empty to `$connect` / `$disconnect`.
    pub fn echo_message() -> Backend {
        Backend::start(|r| match r.event_type() {
            Some("CONNECT") | Some("DISCONNECT") => Reply::empty(),
            _ => Reply::ok(r.message().unwrap_or_default()),
        })
    }

    /// `status` with `body` to everything.
    pub fn always(status: u16, body: &'static str) -> Backend {
        Backend::start(move |_| Reply::new(status, body))
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// The most connections open at once.
    pub fn max_open(&self) -> usize {
        self.state.max_open.load(Ordering::SeqCst)
    }

    /// The most requests received and not yet answered at once.
    pub fn max_inflight(&self) -> usize {
        self.state.max_inflight.load(Ordering::SeqCst)
    }

    /// Waits until `pred` holds for the request list; returns the list.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&[Request]) -> bool,
    ) -> Vec<Request> {
        let deadline = Instant::now() + limit;
        let mut reqs = self.state.requests.lock().unwrap();
        loop {
            if pred(&reqs) {
                return reqs.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                let summary: Vec<String> = reqs.iter().map(summarize).collect();
                panic!("backend: timed out after {limit:?} waiting for {what}; got {summary:#?}");
            }
            reqs = self
                .state
                .changed
                .wait_timeout(reqs, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub fn wait_requests(&self, n: usize) -> Vec<Request> {
        self.wait_until(&format!("{n} requests"), WAIT, |r| r.len() >= n)
    }

    /// Waits for the first request matching `pred`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Request) -> bool) -> Request {
        let reqs = self.wait_until(what, WAIT, |r| r.iter().any(&pred));
        reqs.into_iter().find(|r| pred(r)).unwrap()
    }

    /// Waits for the first `aws_proxy` event of `event_type` (CONNECT, MESSAGE, DISCONNECT).
    pub fn wait_event(&self, event_type: &str) -> Request {
        self.wait_for(&format!("a {event_type} event"), |r| {
            r.event_type() == Some(event_type)
        })
    }

    /// Waits for the `aws_proxy` event of `event_type` for connection `id`.
    pub fn wait_event_of(&self, event_type: &str, id: &str) -> Request {
        self.wait_for(&format!("a {event_type} event for {id}"), |r| {
            r.event_type() == Some(event_type) && r.connection_id() == Some(id)
        })
    }

    /// The `aws_proxy` events of `event_type` so far.
    pub fn events(&self, event_type: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.event_type() == Some(event_type))
            .collect()
    }

    /// Asserts no `event_type` event arrives within `d`.
    pub fn assert_no_event(&self, event_type: &str, d: Duration) {
        thread::sleep(d);
        let got = self.events(event_type);
        assert!(
            got.is_empty(),
            "expected no {event_type} event, got {:#?}",
            got.iter().map(summarize).collect::<Vec<_>>()
        );
    }
}

fn summarize(r: &Request) -> String {
    format!(
        "conn {} #{} {} {} {}",
        r.conn,
        r.seq_on_conn,
        r.method,
        r.target,
        String::from_utf8_lossy(&r.body)
            .chars()
            .take(300)
            .collect::<String>()
    )
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        for s in self.state.streams.lock().unwrap().iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Unblock accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps `d` in small steps; `false` when the backend is stopping.
fn sleep_unless_stopped(st: &State, d: Duration) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if st.stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep((deadline - Instant::now()).min(Duration::from_millis(10)));
    }
    !st.stop.load(Ordering::SeqCst)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; `None` on EOF, error or stop.
fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, st: &State) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if st.stop.load(Ordering::SeqCst) {
            return None;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return None,
        }
    }
}

/// Reads one request from `stream` (leftover bytes stay in `buf`).
fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    st: &State,
    conn: usize,
    seq: usize,
) -> Option<Request> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        assert!(buf.len() < 256 * 1024, "backend: request head too long");
        fill(stream, buf, st)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap_or((l, ""));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let body =
        if get("Transfer-Encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let line_end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    fill(stream, buf, st)?;
                };
                let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                    .unwrap_or_else(|_| panic!("backend: bad chunk size {size_text:?}"));
                buf.drain(..line_end + 2);
                if size == 0 {
                    // Trailers, then the blank line.
                    loop {
                        let end = loop {
                            if let Some(i) = find(buf, b"\r\n") {
                                break i;
                            }
                            fill(stream, buf, st)?;
                        };
                        buf.drain(..end + 2);
                        if end == 0 {
                            break;
                        }
                    }
                    break;
                }
                while buf.len() < size + 2 {
                    fill(stream, buf, st)?;
                }
                body.extend_from_slice(&buf[..size]);
                buf.drain(..size + 2);
            }
            body
        } else {
            let len: usize = get("Content-Length")
                .map(|v| v.parse().expect("backend: bad Content-Length"))
                .unwrap_or(0);
            while buf.len() < len {
                fill(stream, buf, st)?;
            }
            buf.drain(..len).collect()
        };
    let json = serde_json::from_slice(&body).ok();
    Some(Request {
        conn,
        seq_on_conn: seq,
        method,
        target,
        version,
        headers,
        body,
        json,
        at: Instant::now(),
        wall_ms: now_ms(),
    })
}

fn serve(mut stream: TcpStream, conn: usize, st: &State, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut seq = 0;
    while let Some(req) = read_request(&mut stream, &mut buf, st, conn, seq) {
        seq += 1;
        let client_closes = req
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let reply = handler(&req);
        let n = st.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        bump_max(&st.max_inflight, n);
        st.requests.lock().unwrap().push(req);
        st.changed.notify_all();
        let done = |st: &State| {
            st.inflight.fetch_sub(1, Ordering::SeqCst);
        };
        match reply.kind {
            Kind::Hang => {
                // Hold the connection until the peer closes it or the backend stops.
                let mut b = [0u8; 1024];
                loop {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match stream.read(&mut b) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
                        Err(_) => break,
                    }
                }
                done(st);
                return;
            }
            Kind::CloseWithoutReply => {
                let ok = sleep_unless_stopped(st, reply.delay);
                done(st);
                if ok {
                    let _ = stream.shutdown(Shutdown::Both);
                }
                return;
            }
            Kind::Raw(bytes) => {
                let ok = sleep_unless_stopped(st, reply.delay);
                done(st);
                if ok {
                    let _ = stream.write_all(&bytes);
                    let _ = stream.flush();
                    let _ = stream.shutdown(Shutdown::Both);
                }
                return;
            }
            Kind::RawParts(parts) => {
                let ok = sleep_unless_stopped(st, reply.delay);
                done(st);
                if !ok {
                    return;
                }
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 && !sleep_unless_stopped(st, Duration::from_millis(20)) {
                        return;
                    }
                    if stream.write_all(part).and_then(|_| stream.flush()).is_err() {
                        return;
                    }
                }
                continue;
            }
            Kind::Endless { head, repeat, cap } => {
                done(st);
                let mut sent = head.len();
                if stream.write_all(&head).is_ok() {
                    while sent < cap && !st.stop.load(Ordering::SeqCst) {
                        if stream.write_all(&repeat).is_err() {
                            break;
                        }
                        sent += repeat.len();
                    }
                }
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Kind::Normal => {}
        }
        if !sleep_unless_stopped(st, reply.delay) {
            done(st);
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            reply.status,
            reason_phrase(reply.status)
        );
        for (k, v) in &reply.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        match reply.chunked {
            Some(_) => head.push_str("Transfer-Encoding: chunked\r\n"),
            None => head.push_str(&format!("Content-Length: {}\r\n", reply.body.len())),
        }
        if reply.ending == Ending::CloseHeader {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        // Counted as answered before the first byte goes out, so a client that
        // reacts at once never sees an inflated in-flight count.
        done(st);
        let ok = match reply.chunked {
            Some(size) => write_chunked(&mut stream, head.as_bytes(), &reply.body, size),
            None if reply.split_writes => (|| {
                stream.write_all(head.as_bytes())?;
                stream.flush()?;
                thread::sleep(Duration::from_millis(5));
                stream.write_all(&reply.body)?;
                stream.flush()
            })(),
            None => {
                let mut all = head.into_bytes();
                all.extend_from_slice(&reply.body);
                stream.write_all(&all).and_then(|_| stream.flush())
            }
        };
        if ok.is_err() || reply.ending != Ending::KeepAlive || client_closes {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn write_chunked(stream: &mut TcpStream, head: &[u8], body: &[u8], size: usize) -> io::Result<()> {
    stream.write_all(head)?;
    stream.flush()?;
    for chunk in body.chunks(size) {
        thread::sleep(Duration::from_millis(2));
        stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        stream.write_all(chunk)?;
        stream.write_all(b"\r\n")?;
        stream.flush()?;
    }
    thread::sleep(Duration::from_millis(2));
    stream.write_all(b"0\r\n\r\n")?;
    stream.flush()
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

// ---------------------------------------------------------------------------
// Configs.

/// A config header like `support::base_config` (api `test`, stage `prod`, ports 0,
/// `handshake_timeout = "1s"`), with optional `stage_variables` (a TOML inline table).
pub fn api_config(expression: &str, stage_variables: Option<&str>, limits: &str) -> String {
    let sv = stage_variables
        .map(|t| format!("stage_variables = {t}\n"))
        .unwrap_or_default();
    format!(
        "[api]\nname = \"test\"\nroute_selection_expression = {}\nstage = \"prod\"\n{sv}\n\
         [server]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout = \"1s\"\n\n\
         [management]\nlisten = \"127.0.0.1:0\"\n\n[limits]\n{}\n",
        toml_str(expression),
        limits
    )
}

/// An HTTP integration `name` of `kind` (`aws_proxy` / `http_proxy`) at `uri`;
/// `extra` is more TOML lines for the table (e.g. `timeout = "1s"`). Defaults
/// `timeout = "2s"` and `connect_timeout = "1s"` unless `extra` sets them.
pub fn http_integration(name: &str, kind: &str, uri: &str, extra: &str) -> String {
    let mut s = format!(
        "[integrations.{}]\ntype = \"{kind}\"\nuri = {}\n",
        toml_str(name),
        toml_str(uri)
    );
    let sets = |k: &str| {
        extra.lines().any(|l| {
            l.trim_start()
                .strip_prefix(k)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
    };
    if !sets("timeout") {
        s.push_str("timeout = \"2s\"\n");
    }
    if !sets("connect_timeout") {
        s.push_str("connect_timeout = \"1s\"\n");
    }
    s.push_str(extra);
    if !extra.ends_with('\n') {
        s.push('\n');
    }
    s.push('\n');
    s
}

/// An `aws_proxy` integration (see [`http_integration`]).
pub fn aws_integration(name: &str, uri: &str, extra: &str) -> String {
    http_integration(name, "aws_proxy", uri, extra)
}

/// A one-way route `key` (no route response).
pub fn one_way_route(key: &str, integration: &str) -> String {
    format!(
        "[routes.{}]\nintegration = {}\n\n",
        toml_str(key),
        toml_str(integration)
    )
}

/// `$connect`, `$disconnect` (one-way) and `$default` (two-way) all on integration
/// `backend`, an `aws_proxy` at `uri` with `extra` lines, `$request.body.action`.
pub fn all_routes_config(uri: &str, extra: &str, limits: &str) -> String {
    let mut c = api_config("$request.body.action", None, limits);
    c.push_str(&aws_integration("backend", uri, extra));
    c.push_str(&one_way_route("$connect", "backend"));
    c.push_str(&one_way_route("$disconnect", "backend"));
    c.push_str(&route("$default", "backend"));
    c
}

// ---------------------------------------------------------------------------
// Handshakes with chosen headers.

/// The header lines of a valid upgrade with `host` (RFC sample key, version 13).
pub fn ws_headers(host: &str) -> Vec<(String, String)> {
    vec![
        ("Host".into(), host.into()),
        ("Upgrade".into(), "websocket".into()),
        ("Connection".into(), "Upgrade".into()),
        ("Sec-WebSocket-Key".into(), SAMPLE_KEY.into()),
        ("Sec-WebSocket-Version".into(), "13".into()),
    ]
}

/// The bytes of `GET target HTTP/1.1` with `headers` in order.
pub fn upgrade_bytes(target: &str, headers: &[(String, String)]) -> Vec<u8> {
    let mut r = format!("GET {target} HTTP/1.1\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Sends an upgrade for `target` with `headers` and reads the response head.
pub fn upgrade(
    addr: SocketAddr,
    target: &str,
    headers: &[(String, String)],
) -> (TcpStream, Response) {
    let mut s = tcp(addr);
    s.write_all(&upgrade_bytes(target, headers)).unwrap();
    let resp = read_response(&mut s);
    (s, resp)
}

/// A raw WebSocket on `/prod` after a 101 from an upgrade with `headers`.
pub fn raw_with(addr: SocketAddr, target: &str, headers: &[(String, String)]) -> Raw {
    let (stream, resp) = upgrade(addr, target, headers);
    assert_eq!(resp.status, 101, "handshake: {resp:?}");
    assert_eq!(
        resp.header("Sec-WebSocket-Accept"),
        Some(SAMPLE_ACCEPT),
        "{resp:?}"
    );
    Raw { stream }
}

/// Reads a response body after `resp`'s head: Content-Length bytes, or to EOF.
pub fn read_body(s: &mut TcpStream, resp: &Response) -> Vec<u8> {
    let mut body = Vec::new();
    match resp.header("Content-Length") {
        Some(n) => {
            let n: usize = n.parse().expect("Content-Length");
            body.resize(n, 0);
            s.read_exact(&mut body)
                .unwrap_or_else(|e| panic!("reading a {n}-byte body: {e}"));
        }
        None => {
            let _ = s.read_to_end(&mut body);
        }
    }
    body
}

/// Asserts nothing arrives on `raw` for `d` (a read that times out).
pub fn assert_silent(raw: &mut Raw, d: Duration) {
    raw.stream.set_read_timeout(Some(d)).unwrap();
    let mut b = [0u8; 1];
    match raw.stream.read(&mut b) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) => {}
        Ok(0) => panic!("connection closed while expecting silence"),
        Ok(_) => {
            let mut rest = vec![0u8; 4096];
            raw.stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let n = raw.stream.read(&mut rest).unwrap_or(0);
            panic!(
                "expected nothing, got bytes {:?}{:?}",
                b,
                String::from_utf8_lossy(&rest[..n])
            )
        }
        Err(e) => panic!("expected silence, got error {e}"),
    }
    raw.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

// ---------------------------------------------------------------------------
// Events.

pub const CONNECT_CONTEXT_KEYS: [&str; 16] = [
    "routeKey",
    "disconnectStatusCode",
    "messageId",
    "eventType",
    "extendedRequestId",
    "requestTime",
    "messageDirection",
    "disconnectReason",
    "stage",
    "connectedAt",
    "requestTimeEpoch",
    "identity",
    "requestId",
    "domainName",
    "connectionId",
    "apiId",
];

pub const MESSAGE_CONTEXT_KEYS: [&str; 14] = [
    "routeKey",
    "messageId",
    "eventType",
    "extendedRequestId",
    "requestTime",
    "messageDirection",
    "stage",
    "connectedAt",
    "requestTimeEpoch",
    "identity",
    "requestId",
    "domainName",
    "connectionId",
    "apiId",
];

pub const DISCONNECT_CONTEXT_KEYS: [&str; 15] = [
    "routeKey",
    "disconnectStatusCode",
    "eventType",
    "extendedRequestId",
    "requestTime",
    "messageDirection",
    "disconnectReason",
    "stage",
    "connectedAt",
    "requestTimeEpoch",
    "identity",
    "requestId",
    "domainName",
    "connectionId",
    "apiId",
];

/// The keys of a JSON object, sorted.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .unwrap_or_else(|| panic!("expected a JSON object, got {v}"))
        .keys()
        .cloned()
        .collect();
    k.sort();
    k
}

pub fn sorted(k: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = k.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// Parses `dd/Mon/yyyy:HH:mm:ss +0000` into seconds since the epoch, checking the
/// format strictly.
pub fn parse_request_time(s: &str) -> u64 {
    let b = s.as_bytes();
    assert_eq!(
        b.len(),
        26,
        "requestTime {s:?} must be dd/Mon/yyyy:HH:mm:ss +0000"
    );
    assert!(
        b[2] == b'/' && b[6] == b'/' && b[11] == b':' && b[14] == b':' && b[17] == b':',
        "requestTime {s:?}"
    );
    assert_eq!(&s[20..], " +0000", "requestTime {s:?}");
    let num = |r: std::ops::Range<usize>| -> i64 {
        assert!(
            b[r.clone()].iter().all(u8::is_ascii_digit),
            "requestTime {s:?}: digits expected at {r:?}"
        );
        s[r].parse().unwrap()
    };
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months
        .iter()
        .position(|m| *m == &s[3..6])
        .unwrap_or_else(|| panic!("requestTime {s:?}: bad month")) as i64
        + 1;
    let (d, y, hh, mm, ss) = (num(0..2), num(7..11), num(12..14), num(15..17), num(18..20));
    assert!(
        (1..=31).contains(&d) && hh < 24 && mm < 60 && ss < 61,
        "requestTime {s:?}"
    );
    (days_from_civil(y, month, d) * 86400 + hh * 3600 + mm * 60 + ss) as u64
}

/// Slack allowed below/above a time window for a coarse or cached gateway clock.
pub const CLOCK_SLACK_MS: u64 = 20;

/// What a `requestContext` must say.
pub struct Expect<'a> {
    pub route_key: &'a str,
    pub event_type: &'a str,
    /// The connection id, when already known.
    pub connection_id: Option<&'a str>,
    pub connected_at: Option<u64>,
    pub domain_name: &'a str,
    pub user_agent: Option<&'a str>,
    /// The test's time window for the event, ms since the epoch.
    pub from_ms: u64,
    pub to_ms: u64,
}

/// What a checked `requestContext` carried.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub connection_id: String,
    pub request_id: String,
    pub message_id: Option<String>,
    pub connected_at: u64,
    pub request_time_epoch: u64,
}

/// Checks an event's `requestContext` against SPEC §5 and `e`.
pub fn check_context(event: &Value, e: &Expect) -> Ctx {
    let ctx = &event["requestContext"];
    let expected_keys: &[&str] = match e.event_type {
        "CONNECT" => &CONNECT_CONTEXT_KEYS,
        "MESSAGE" => &MESSAGE_CONTEXT_KEYS,
        "DISCONNECT" => &DISCONNECT_CONTEXT_KEYS,
        other => panic!("unknown event type {other}"),
    };
    assert_eq!(
        keys(ctx),
        sorted(expected_keys),
        "requestContext keys of {event:#}"
    );
    assert_eq!(ctx["routeKey"], e.route_key, "routeKey in {event:#}");
    assert_eq!(ctx["eventType"], e.event_type, "eventType in {event:#}");
    assert_eq!(ctx["messageDirection"], "IN", "{event:#}");
    assert_eq!(ctx["stage"], "prod", "{event:#}");
    assert_eq!(ctx["apiId"], "test", "apiId = [api] name, in {event:#}");
    assert_eq!(
        ctx["domainName"], e.domain_name,
        "domainName = Host header, in {event:#}"
    );
    assert_eq!(
        ctx["identity"],
        serde_json::json!({"sourceIp": "127.0.0.1", "userAgent": e.user_agent}),
        "identity in {event:#}"
    );
    let connection_id = ctx["connectionId"]
        .as_str()
        .unwrap_or_else(|| panic!("connectionId must be a string: {event:#}"))
        .to_string();
    assert_id(&connection_id);
    if let Some(id) = e.connection_id {
        assert_eq!(connection_id, id, "connectionId in {event:#}");
    }
    let request_id = ctx["requestId"]
        .as_str()
        .unwrap_or_else(|| panic!("requestId must be a string: {event:#}"))
        .to_string();
    assert_id(&request_id);
    assert_eq!(
        ctx["extendedRequestId"], ctx["requestId"],
        "extendedRequestId = requestId in {event:#}"
    );
    assert_ne!(request_id, connection_id, "{event:#}");
    let message_id = match e.event_type {
        "MESSAGE" => {
            let m = ctx["messageId"]
                .as_str()
                .unwrap_or_else(|| panic!("messageId must be a string: {event:#}"))
                .to_string();
            assert_id(&m);
            Some(m)
        }
        "CONNECT" => {
            assert!(
                ctx["messageId"].is_null(),
                "CONNECT messageId must be null: {event:#}"
            );
            None
        }
        _ => None,
    };
    if e.event_type == "CONNECT" {
        assert!(ctx["disconnectStatusCode"].is_null(), "{event:#}");
        assert!(ctx["disconnectReason"].is_null(), "{event:#}");
    }
    let connected_at = ctx["connectedAt"]
        .as_u64()
        .unwrap_or_else(|| panic!("connectedAt must be an integer (ms): {event:#}"));
    let epoch = ctx["requestTimeEpoch"]
        .as_u64()
        .unwrap_or_else(|| panic!("requestTimeEpoch must be an integer (ms): {event:#}"));
    assert!(
        epoch + CLOCK_SLACK_MS >= e.from_ms && epoch <= e.to_ms + CLOCK_SLACK_MS,
        "requestTimeEpoch {epoch} outside the test's window {}..{} in {event:#}",
        e.from_ms,
        e.to_ms
    );
    let time = ctx["requestTime"]
        .as_str()
        .unwrap_or_else(|| panic!("requestTime must be a string: {event:#}"));
    assert_eq!(
        parse_request_time(time),
        epoch / 1000,
        "requestTime {time:?} and requestTimeEpoch {epoch} must be the same second"
    );
    match e.connected_at {
        Some(at) => assert_eq!(
            connected_at, at,
            "connectedAt is fixed per connection: {event:#}"
        ),
        None => assert!(
            connected_at <= epoch
                && connected_at + CLOCK_SLACK_MS >= e.from_ms.saturating_sub(10_000),
            "connectedAt {connected_at} vs requestTimeEpoch {epoch} in {event:#}"
        ),
    }
    assert!(
        connected_at <= epoch,
        "connectedAt after requestTimeEpoch: {event:#}"
    );
    Ctx {
        connection_id,
        request_id,
        message_id,
        connected_at,
        request_time_epoch: epoch,
    }
}

/// Standard base64 with padding.
pub fn base64_std(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        out.push(A[(n >> 18) as usize & 63] as char);
        out.push(A[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// Reads the next text message with a deadline of `limit`.
pub fn recv_text_within(raw: &mut Raw, limit: Duration) -> String {
    raw.stream.set_read_timeout(Some(limit)).unwrap();
    let t = raw.recv_text();
    raw.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    t
}
