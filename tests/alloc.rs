//! After warm-up, a message through the codec, route selection and a mock route
//! response allocates nothing, and neither does one routed to an `aws_proxy` or
//! `http_proxy` integration (the backend request written, the reply framed back),
//! nor one that throttling buckets pass or refuse: a counting global allocator
//! proves it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use wsgate::config::{self, Overrides};
use wsgate::integration::Outcome;
use wsgate::mask;
use wsgate::session::{Scratch, Session, State};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the measuring thread counts: the test harness's own threads allocate at
    /// times of their choosing.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if COUNTING.with(|c| c.get()) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` unchanged; the counter has no effect on
// the memory handed out.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `alloc`; `ptr` came from `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CONFIG: &str = r#"
[api]
name = "alloc"
stage = "prod"
[limits]
binary = "allow"
[integrations.echo]
type = "mock"
response_template = "$input.body"
[integrations.who]
type = "mock"
response_template = "route=$context.routeKey id=$context.connectionId req=$context.requestId"
[routes."$default"]
integration = "echo"
route_response = true
[routes.join]
integration = "who"
route_response = true
[routes.leave]
integration = "who"
# A model on a route the test never selects: the other routes stay allocation-free.
[models.m]
schema = '{"type": "object", "required": ["action"]}'
[routes.validated]
integration = "who"
request_model = "m"
"#;

const NO_DEFAULT: &str = r#"
[api]
name = "alloc"
stage = "prod"
[integrations.who]
type = "mock"
response_template = "$context.routeKey"
[routes.join]
integration = "who"
route_response = true
"#;

const HTTP: &str = r#"
[api]
name = "alloc"
stage = "prod"
stage_variables = { color = "blue" }
[integrations.aws]
type = "aws_proxy"
uri = "http://127.0.0.1:9/ws"
[integrations.http]
type = "http_proxy"
uri = "http://127.0.0.1:9/msg"
request_parameters = { "integration.request.header.x-conn" = "context.connectionId", "integration.request.header.x-ua" = "route.request.header.User-Agent", "integration.request.querystring.room" = "route.request.body.data.room", "integration.request.header.x-color" = "stageVariables.color", "integration.request.header.x-static" = "'v1'", "integration.request.header.x-ip" = "context.identity.sourceIp" }
[routes."$default"]
integration = "aws"
route_response = true
[routes.join]
integration = "http"
route_response = true
"#;

/// A Lambda function (SPEC §12): every call is signed with SigV4 (credentials from
/// the environment, set by the test).
const LAMBDA: &str = r#"
[aws]
region = "us-east-1"
lambda_endpoint = "http://127.0.0.1:9"
[api]
name = "alloc"
stage = "prod"
[integrations.fn]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:chat"
[routes."$default"]
integration = "fn"
route_response = true
"#;

fn masked(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | op];
    if payload.len() < 126 {
        f.push(0x80 | payload.len() as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    f.extend_from_slice(&key);
    let mut p = payload.to_vec();
    mask::apply(&mut p, key, 0);
    f.extend_from_slice(&p);
    f
}

/// Opens a session, then returns the allocations made while `rounds` times feeding
/// each stream (in reads of `chunk` bytes) after `warmup` unmeasured rounds.
fn allocations(config: &str, streams: &[Vec<u8>], chunk: usize) -> usize {
    let cfg = config::parse(Path::new("alloc.toml"), config, &Overrides::default()).unwrap();
    let mut sx = Scratch::new(Arc::new(cfg), 0, wsgate::id::Codec::random(), 64);
    if let Some(settings) = &sx.config.access_log {
        sx.access_log = Some(wsgate::access_log::Writer::open(settings).unwrap());
    }
    let mut s = Session::new(*b"AAAAAAAAAAAAAAA=", "127.0.0.1".parse().unwrap());
    let mut head = b"GET /prod HTTP/1.1\r\nHost: x\r\nUser-Agent: alloc/1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
    s.process(&mut head, &mut sx);
    assert_eq!(s.state(), State::Open);
    let mut input = Vec::with_capacity(64 * 1024);
    let mut replies = 0;
    let mut round = |sx: &mut Scratch, s: &mut Session| {
        for stream in streams {
            for piece in stream.chunks(chunk) {
                input.clear();
                if let Some(stash) = s.take_stash() {
                    input.extend_from_slice(&stash);
                    sx.pool.give(stash);
                }
                input.extend_from_slice(piece);
                s.process(&mut input, sx);
                // Backend calls: answer each as its backend would, then give its
                // request buffer back as the worker does.
                while let Some(out) = sx.outbox.pop() {
                    let reply = Outcome::Reply {
                        status: 200,
                        body: b"{\"ok\":true}",
                        content_type: None,
                        protocol: None,
                    };
                    assert!(out.request.starts_with(b"POST "));
                    let call = wsgate::access_log::Call {
                        request_id: &out.request_id,
                        message_id: out.message_id.as_ref().map_or(&[], |m| &m[..]),
                        requested_ms: sx.now_ms,
                        latency_ms: 1,
                    };
                    s.on_message_outcome(out.route, &call, reply, usize::MAX, sx);
                    sx.pool.give(out.request);
                }
            }
            assert_eq!(s.state(), State::Open);
            replies += usize::from(!sx.wbuf.is_empty());
            sx.wbuf.clear();
            if let Some(log) = sx.access_log.as_mut() {
                // As the worker does once per loop turn.
                log.flush();
            }
        }
    };
    for _ in 0..50 {
        round(&mut sx, &mut s);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    for _ in 0..500 {
        round(&mut sx, &mut s);
    }
    COUNTING.with(|c| c.set(false));
    let n = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert!(replies > 0, "the path under test must answer");
    n
}

// One test function: the allocation counter is global to the process, so these
// measurements must not run beside each other.
#[test]
fn steady_state_message_path_allocates_nothing() {
    let json = br#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;
    let streams = vec![
        masked(true, 1, json),                     // custom route, in place
        masked(true, 1, b"not json at all"),       // $default echo
        masked(true, 1, br#"{"action":"leave"}"#), // one-way route
        masked(true, 2, &[1, 2, 3, 4]),            // binary echo
        [
            masked(false, 1, b"{\"act"),
            masked(true, 9, b"p"),
            masked(true, 0, b"ion\":\"join\"}"),
        ]
        .concat(), // fragmented + ping
        masked(true, 1, &vec![b'x'; 3000]),        // larger echo
    ];
    assert_eq!(allocations(CONFIG, &streams, usize::MAX), 0, "whole frames");
    assert_eq!(
        allocations(CONFIG, &streams, 7),
        0,
        "frames split across reads"
    );
    assert_eq!(
        allocations(NO_DEFAULT, &[masked(true, 1, b"hi")], usize::MAX),
        0,
        "Forbidden frame"
    );
    // Throttling: buckets that pass everything, and ones that refuse all but the
    // first message (the clock does not move here).
    for (throttling, what) in [
        (
            "rate = 1e9\nburst = 1e9\nper_connection = { rate = 1e9, burst = 1e9 }",
            "passing buckets",
        ),
        (
            "rate = 1\nburst = 1\nper_connection = { rate = 1, burst = 1 }",
            "Too Many Requests",
        ),
    ] {
        let config = format!("{CONFIG}\n[throttling]\n{throttling}\n");
        assert_eq!(allocations(&config, &streams, usize::MAX), 0, "{what}");
    }
    let http = vec![
        masked(true, 1, json),                           // http_proxy with mappings
        masked(true, 1, br#"{"action":"other","n":1}"#), // aws_proxy event
        masked(true, 1, &vec![b'y'; 3000]),              // larger aws_proxy event
    ];
    assert_eq!(
        allocations(HTTP, &http[1..], usize::MAX),
        0,
        "aws_proxy routes"
    );
    assert_eq!(
        allocations(HTTP, &http[..1], usize::MAX),
        0,
        "http_proxy routes"
    );
    assert_eq!(allocations(HTTP, &http, 5), 0, "HTTP routes, split reads");
    // This test binary has this one test: setting the environment races nothing.
    std::env::set_var("AWS_ACCESS_KEY_ID", "AKIDALLOC");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "alloc-secret");
    std::env::set_var("AWS_SESSION_TOKEN", "alloc-token");
    assert_eq!(
        allocations(LAMBDA, &http[1..], usize::MAX),
        0,
        "Lambda routes: signed Invoke API calls"
    );
    // A JSON access log with every variable, written to a file: rendering and
    // writing reuse the worker's buffers.
    let log = std::env::temp_dir().join(format!("wsgate-alloc-{}.log", std::process::id()));
    let with_log = |config: &str| {
        format!(
            "{config}[access_log]\npath = {:?}\nformat = '{}'\n",
            log.display(),
            ALL_VARIABLES
        )
    };
    assert_eq!(
        allocations(&with_log(CONFIG), &streams, usize::MAX),
        0,
        "mock routes with an access log"
    );
    assert_eq!(
        allocations(&with_log(HTTP), &http, usize::MAX),
        0,
        "HTTP routes with an access log"
    );
    assert_eq!(
        allocations(&with_log(NO_DEFAULT), &[masked(true, 1, b"hi")], usize::MAX),
        0,
        "Forbidden frame with an access log"
    );
    let _ = std::fs::remove_file(&log);
    assert_eq!(
        pipelined_backend_allocations(),
        0,
        "pipelined backend calls: pool decisions, request queueing, reply parsing"
    );
}

/// The backend side as the worker drives it, sans-IO (SPEC §16): a pool with
/// `pipeline = 8` on one connection, each turn's requests appended to its output
/// buffer, the replies read in pieces that split them anywhere, parsed in order and
/// reported to the pool (which sends the waiting calls). Allocations after warm-up.
fn pipelined_backend_allocations() -> usize {
    use std::collections::VecDeque;
    use wsgate::upstream::pool::{Decision, Pool, ReplyEnd};
    use wsgate::upstream::response;
    const CONN: usize = 10;
    const KEEP: ReplyEnd = ReplyEnd {
        keep_alive: true,
        leftover: false,
        request_written: true,
    };
    let request = b"POST /ws HTTP/1.1\r\nHost: b\r\nContent-Length: 2\r\n\r\n{}";
    let replies: [&[u8]; 2] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n{\"ok\":true}\r\n0\r\n\r\n",
    ];
    let mut pool = Pool::new("127.0.0.1:9".parse().unwrap(), 1, 64);
    pool.pipeline = 8;
    let (mut fifo, mut out, mut wire) = (VecDeque::new(), Vec::new(), Vec::new());
    let mut inbuf: Vec<u8> = Vec::new();
    let mut parser = response::Parser::default();
    let mut next_call = 0usize;
    // Carries out the pool's decisions: the backend will answer each request sent.
    let run =
        |pool: &mut Pool, fifo: &mut VecDeque<usize>, out: &mut Vec<u8>, wire: &mut Vec<u8>| {
            assert!(pool.claim());
            while let Some(d) = pool.next_decision() {
                match d {
                    Decision::Open { call } | Decision::Send { call, .. } => {
                        fifo.push_back(call);
                        out.extend_from_slice(request);
                        wire.extend_from_slice(replies[call % 2]);
                    }
                    d => panic!("{d:?}"),
                }
            }
        };
    let mut round = |pool: &mut Pool| {
        for _ in 0..12 {
            pool.call(next_call);
            next_call += 1;
        }
        run(pool, &mut fifo, &mut out, &mut wire);
        if next_call == 12 {
            pool.connected(CONN);
            run(pool, &mut fifo, &mut out, &mut wire);
        }
        out.clear(); // one write per turn
        pool.end_turn();
        let mut answered = 0;
        while !wire.is_empty() {
            let n = wire.len().min(37);
            inbuf.extend(wire.drain(..n));
            let (parsed, res) =
                response::replies(&mut parser, &mut inbuf, 0, false, 1 << 20, |buf, r| {
                    assert_eq!(&buf[r.body], b"{\"ok\":true}");
                    fifo.pop_front().expect("a call in flight");
                    answered += 1;
                    pool.replied(CONN, KEEP, fifo.len());
                    run(pool, &mut fifo, &mut out, &mut wire);
                    !fifo.is_empty()
                });
            assert_eq!(res, Ok(()));
            inbuf.drain(..parsed);
        }
        assert_eq!((answered, pool.idle()), (12, 1));
    };
    for _ in 0..50 {
        round(&mut pool);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    for _ in 0..500 {
        round(&mut pool);
    }
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// An access-log format naming every variable.
const ALL_VARIABLES: &str = r#"{"requestId":"$context.requestId","extendedRequestId":"$context.extendedRequestId","apiId":"$context.apiId","stage":"$context.stage","domainName":"$context.domainName","routeKey":"$context.routeKey","eventType":"$context.eventType","messageId":"$context.messageId","messageDirection":"$context.messageDirection","connectionId":"$context.connectionId","connectedAt":"$context.connectedAt","requestTime":"$context.requestTime","requestTimeEpoch":"$context.requestTimeEpoch","ip":"$context.identity.sourceIp","ua":"$context.identity.userAgent","status":"$context.status","error":"$context.error.message","errorType":"$context.error.responseType","integrationStatus":"$context.integrationStatus","integrationLatency":"$context.integrationLatency","integration.error":"$context.integration.error","principal":"$context.authorizer.principalId","disconnectStatusCode":"$context.disconnectStatusCode","disconnectReason":"$context.disconnectReason"}"#;
