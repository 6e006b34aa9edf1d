//! Fixtures for driving the real `wsgate` binary over loopback.
//!
//! A [`Gateway`] writes a config to a fresh temp directory, starts
//! `CARGO_BIN_EXE_wsgate` on `127.0.0.1:0`, reads the ready line for the real ports,
//! captures stderr, and kills its child on drop. [`Raw`] speaks WebSocket byte by byte
//! (masked frames written by hand, frames read raw) so tests can assert exact bytes and
//! close codes; [`Client`] is a tungstenite client for the plain cases. Every read has
//! a timeout: no test can hang.

#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long any single read may block before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a gateway may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a process that should exit on its own may take.
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The RFC 6455 §1.3 sample key and its accept value.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

// ---------------------------------------------------------------------------
// Config files.

/// A fresh, unique directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "wsgate-it-{}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos
    ));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Writes `config` to `wsgate.toml` in a fresh temp directory and returns its path.
pub fn write_config(config: &str) -> PathBuf {
    let path = temp_dir().join("wsgate.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// A TOML basic string for `s` (quotes, backslashes and control characters escaped).
pub fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The header of a config: api (stage `prod`), server and management on port 0,
/// `handshake_timeout = "1s"`, and the given `[limits]` body.
pub fn base_config(expression: &str, limits: &str) -> String {
    format!(
        "[api]\nname = \"test\"\nroute_selection_expression = {}\nstage = \"prod\"\n\n\
         [server]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout = \"1s\"\n\n\
         [management]\nlisten = \"127.0.0.1:0\"\n\n[limits]\n{}\n",
        toml_str(expression),
        limits
    )
}

/// A mock integration named `name` answering 200 with `template`.
pub fn mock_integration(name: &str, template: &str) -> String {
    format!(
        "[integrations.{}]\ntype = \"mock\"\nstatus = 200\nresponse_template = {}\n\n",
        toml_str(name),
        toml_str(template)
    )
}

/// A two-way route `key` served by integration `integration`.
pub fn route(key: &str, integration: &str) -> String {
    format!(
        "[routes.{}]\nintegration = {}\nroute_response = true\n\n",
        toml_str(key),
        toml_str(integration)
    )
}

/// The minimal echo gateway config with the given `[limits]` body.
pub fn echo_config(limits: &str) -> String {
    let mut c = base_config("$request.body.action", limits);
    c.push_str(&mock_integration("echo", "$input.body"));
    c.push_str(&route("$default", "echo"));
    c
}

/// A config whose every route (`keys`, plus `$default` when `with_default`) answers
/// with `$context.routeKey`, so a reply names the route the message selected.
pub fn routing_config(expression: &str, keys: &[&str], with_default: bool) -> String {
    let mut c = base_config(expression, "");
    c.push_str(&mock_integration("key", "$context.routeKey"));
    for k in keys {
        c.push_str(&route(k, "key"));
    }
    if with_default {
        c.push_str(&route("$default", "key"));
    }
    c
}

// ---------------------------------------------------------------------------
// The gateway process.

/// A running `wsgate`, killed on drop.
pub struct Gateway {
    child: Child,
    pub listen: SocketAddr,
    pub management: SocketAddr,
    pub workers: usize,
    pub ready_line: String,
    pub config_path: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_wsgate")
}

/// Spawns a thread that appends everything `r` yields to `buf`.
fn collect<R: Read + Send + 'static>(mut r: R, buf: Arc<Mutex<Vec<u8>>>) {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    });
}

/// The parsed ready line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub listen: SocketAddr,
    pub management: SocketAddr,
    pub workers: usize,
}

/// Parses `wsgate ready listen=IP:PORT management=IP:PORT workers=N`.
pub fn parse_ready(line: &str) -> Ready {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("wsgate"), "ready line: {line:?}");
    assert_eq!(words.next(), Some("ready"), "ready line: {line:?}");
    let mut listen = None;
    let mut management = None;
    let mut workers = None;
    for w in words {
        let (k, v) = w
            .split_once('=')
            .unwrap_or_else(|| panic!("ready line word {w:?}"));
        match k {
            "listen" => listen = Some(v.parse::<SocketAddr>().expect("listen address")),
            "management" => management = Some(v.parse::<SocketAddr>().expect("management address")),
            "workers" => workers = Some(v.parse::<usize>().expect("workers number")),
            _ => panic!("unexpected word {w:?} in ready line {line:?}"),
        }
    }
    let ready = Ready {
        listen: listen.expect("listen= in ready line"),
        management: management.expect("management= in ready line"),
        workers: workers.expect("workers= in ready line"),
    };
    assert_ne!(
        ready.listen.port(),
        0,
        "ready line must carry the real port: {line:?}"
    );
    assert_ne!(
        ready.management.port(),
        0,
        "ready line must carry the real port: {line:?}"
    );
    ready
}

impl Gateway {
    /// Starts a gateway with `config` and no extra flags.
    pub fn start(config: &str) -> Gateway {
        Gateway::start_with(config, &[])
    }

    /// Starts a gateway with `config` and extra command-line `args`.
    pub fn start_with(config: &str, args: &[&str]) -> Gateway {
        Gateway::spawn(config, args, None, None)
    }

    /// Starts a gateway with `config` and an environment of its own: the test's
    /// `AWS_*` variables are removed, then `env` is set (AWS credentials, SPEC §12).
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        Gateway::spawn(config, &[], None, Some(env))
    }

    /// Starts a gateway whose soft open-file limit starts at `soft` (set by `sh`'s
    /// `ulimit` before `exec`, so the pid is the gateway's).
    pub fn start_with_soft_nofile(config: &str, soft: u32) -> Gateway {
        Gateway::spawn(config, &[], Some(soft), None)
    }

    fn spawn(
        config: &str,
        args: &[&str],
        soft_nofile: Option<u32>,
        env: Option<&[(&str, &str)]>,
    ) -> Gateway {
        let config_path = write_config(config);
        let mut command = match soft_nofile {
            None => Command::new(binary()),
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {n} && exec \"$0\" \"$@\""))
                    .arg(binary());
                c
            }
        };
        if let Some(env) = env {
            for (k, _) in std::env::vars() {
                if k.starts_with("AWS_") {
                    command.env_remove(k);
                }
            }
            command.envs(env.iter().copied());
        }
        let mut child = command
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wsgate");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect(child.stderr.take().unwrap(), stderr.clone());
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let out = BufReader::new(child.stdout.take().unwrap());
            let stdout = stdout.clone();
            thread::spawn(move || {
                for line in out.lines() {
                    let Ok(line) = line else { break };
                    stdout.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let ready_line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                thread::sleep(Duration::from_millis(100));
                let err = String::from_utf8_lossy(&stderr.lock().unwrap()).into_owned();
                panic!(
                    "wsgate printed no ready line (status {status:?}); config:\n{config}\nstderr:\n{err}"
                );
            }
        };
        let ready = parse_ready(&ready_line);
        Gateway {
            child,
            listen: ready.listen,
            management: ready.management,
            workers: ready.workers,
            ready_line,
            config_path,
            stdout,
            stderr,
        }
    }

    /// Everything the gateway wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Sends SIGTERM (through `kill(1)`; no libc in the tests).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the gateway to exit on its own; panics after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                panic!("wsgate still running {limit:?} after being asked to stop");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gateway's exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// The gateway's process id.
    /// The gateway's resident memory in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the gateway's /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the gateway and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A TCP connection to the client listener with read/write timeouts set.
    pub fn tcp(&self) -> TcpStream {
        tcp(self.listen)
    }

    /// A raw WebSocket on `/prod`, handshake done and checked.
    pub fn raw(&self) -> Raw {
        Raw::connect(self.listen, "/prod")
    }

    /// A tungstenite client on `/prod`.
    pub fn client(&self) -> Client {
        Client::connect(self.listen, "/prod")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        if let Some(dir) = self.config_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The outcome of a gateway run that is expected to exit on its own.
#[derive(Debug)]
pub struct Exit {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub config_path: PathBuf,
}

/// Runs `wsgate --config <file> args...` to completion (killed and failed after a
/// timeout).
pub fn run_to_exit(config: &str, args: &[&str]) -> Exit {
    let config_path = write_config(config);
    run_path_to_exit(&config_path, args)
}

/// As [`run_to_exit`], with the environment of [`Gateway::start_with_env`].
pub fn run_to_exit_with_env(config: &str, args: &[&str], env: &[(&str, &str)]) -> Exit {
    run_to_exit_in(&write_config(config), args, Some(env))
}

/// As [`run_to_exit`], with an existing (or missing) config path.
pub fn run_path_to_exit(config_path: &Path, args: &[&str]) -> Exit {
    run_to_exit_in(config_path, args, None)
}

fn run_to_exit_in(config_path: &Path, args: &[&str], env: Option<&[(&str, &str)]>) -> Exit {
    let mut command = Command::new(binary());
    if let Some(env) = env {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                command.env_remove(k);
            }
        }
        command.envs(env.iter().copied());
    }
    let mut child = command
        .arg("--config")
        .arg(config_path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgate");
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    collect(child.stdout.take().unwrap(), out.clone());
    collect(child.stderr.take().unwrap(), err.clone());
    let deadline = Instant::now() + EXIT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wsgate did not exit within {EXIT_TIMEOUT:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.lock().unwrap()),
                String::from_utf8_lossy(&err.lock().unwrap())
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    // Let the reader threads drain the pipes.
    thread::sleep(Duration::from_millis(100));
    let stdout = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    if config_path.file_name() == Some("wsgate.toml".as_ref()) {
        if let Some(dir) = config_path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    Exit {
        status,
        stdout,
        stderr,
        config_path: config_path.to_path_buf(),
    }
}

// ---------------------------------------------------------------------------
// Raw TCP and HTTP.

/// Connects to `addr` with read and write timeouts and Nagle off.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to gateway");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// An HTTP response head.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub status_line: String,
    pub headers: Vec<(String, String)>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A valid upgrade request for `path` (RFC sample key, version 13).
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// Reads one HTTP response head (through the blank line), byte by byte so nothing
/// after it is consumed.
pub fn read_response(s: &mut TcpStream) -> Response {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(0) => panic!(
                "connection closed before a complete response head; got {:?}",
                String::from_utf8_lossy(&head)
            ),
            Ok(_) => head.push(byte[0]),
            Err(e) => panic!(
                "reading response head failed ({e}); got {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    let text = String::from_utf8(head).expect("response head is UTF-8");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap().to_string();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap();
    assert!(
        version.starts_with("HTTP/1."),
        "status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?}"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Response {
        status,
        status_line,
        headers,
    }
}

/// Sends `request` on a fresh connection and reads the response head.
pub fn http(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = tcp(addr);
    // The server may answer and close before reading everything; a failed write is
    // not the test's concern, the response is.
    let _ = s.write_all(request);
    let _ = s.flush();
    read_response(&mut s)
}

/// Waits until the peer closes `s` (EOF or reset), skipping any bytes it sends.
/// Returns how long that took; panics if it is still open after `limit`.
pub fn wait_closed(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return start.elapsed(), // reset: closed too
        }
        if start.elapsed() > limit {
            panic!("connection still open after {limit:?}");
        }
    }
}

// ---------------------------------------------------------------------------
// Frames.

/// One frame as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code at the start of a close payload.
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// The bytes of a client frame: `fin`, reserved bits `rsv` (0..=7), `opcode`,
/// masked with `key` when given, the length encoded minimally.
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    key: Option<[u8; 4]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | ((rsv & 7) << 4) | (opcode & 0x0f));
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match key {
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A masked client frame (the normal case).
pub fn masked(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, 0, opcode, Some([0x37, 0xfa, 0x21, 0x3d]), payload)
}

/// A close payload: code then reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

/// Reads one server frame; server frames must not be masked.
pub fn read_frame(s: &mut TcpStream) -> Frame {
    let mut head = [0u8; 2];
    read_exact(s, &mut head, "frame header");
    let fin = head[0] & 0x80 != 0;
    let rsv = (head[0] >> 4) & 7;
    let opcode = head[0] & 0x0f;
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            read_exact(s, &mut b, "16-bit length");
            u16::from_be_bytes(b) as u64
        }
        127 => {
            let mut b = [0u8; 8];
            read_exact(s, &mut b, "64-bit length");
            u64::from_be_bytes(b)
        }
        n => n as u64,
    };
    assert!(len <= 64 * 1024 * 1024, "absurd frame length {len}");
    let mut payload = vec![0u8; len as usize];
    read_exact(s, &mut payload, "frame payload");
    Frame {
        fin,
        rsv,
        opcode,
        payload,
    }
}

fn read_exact(s: &mut TcpStream, buf: &mut [u8], what: &str) {
    if let Err(e) = s.read_exact(buf) {
        panic!("reading {what} ({} bytes) failed: {e}", buf.len());
    }
}

/// A raw WebSocket connection after a successful handshake.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Opens a connection to `path`, performs the handshake and checks the 101.
    pub fn connect(addr: SocketAddr, path: &str) -> Raw {
        let mut stream = tcp(addr);
        stream.write_all(upgrade_request(path).as_bytes()).unwrap();
        let resp = read_response(&mut stream);
        assert_eq!(resp.status, 101, "handshake: {resp:?}");
        assert_eq!(
            resp.header("Sec-WebSocket-Accept"),
            Some(SAMPLE_ACCEPT),
            "{resp:?}"
        );
        Raw { stream }
    }

    /// Writes bytes as they are.
    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to gateway");
        self.stream.flush().unwrap();
    }

    /// Writes bytes, ignoring failure (the server may already have closed).
    pub fn write_lossy(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
        let _ = self.stream.flush();
    }

    /// Sends a masked frame.
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.write(&masked(fin, opcode, payload));
    }

    /// Sends a whole text message as one masked frame.
    pub fn send_text(&mut self, text: &str) {
        self.send(true, OP_TEXT, text.as_bytes());
    }

    /// Reads the next frame.
    pub fn frame(&mut self) -> Frame {
        read_frame(&mut self.stream)
    }

    /// Reads one whole data message (opcode, payload, frames), reassembling fragments
    /// and failing on any control frame in between.
    pub fn message_frames(&mut self) -> (u8, Vec<u8>, Vec<Frame>) {
        let first = self.frame();
        assert!(
            first.opcode == OP_TEXT || first.opcode == OP_BINARY,
            "expected a data frame, got {first:?}"
        );
        let opcode = first.opcode;
        let mut payload = first.payload.clone();
        let mut frames = vec![first];
        while !frames.last().unwrap().fin {
            let f = self.frame();
            assert_eq!(
                f.opcode, OP_CONT,
                "expected a continuation frame, got {f:?}"
            );
            payload.extend_from_slice(&f.payload);
            frames.push(f);
        }
        (opcode, payload, frames)
    }

    /// Reads one whole text message.
    pub fn recv_text(&mut self) -> String {
        let (opcode, payload, _) = self.message_frames();
        assert_eq!(opcode, OP_TEXT, "expected a text message");
        String::from_utf8(payload).expect("text message is UTF-8")
    }

    /// Reads the next frame, which must be a close with `code`; answers it with an
    /// empty close (ignoring write errors) and waits for the server to close TCP.
    /// Returns the close reason.
    pub fn expect_close(&mut self, code: u16) -> String {
        let f = self.frame();
        assert_eq!(
            f.opcode, OP_CLOSE,
            "expected a close frame with {code}, got {f:?}"
        );
        assert_eq!(f.close_code(), Some(code), "close frame {f:?}");
        let reason = std::str::from_utf8(&f.payload[2..])
            .unwrap_or_else(|_| panic!("close reason must be UTF-8: {f:?}"))
            .to_string();
        self.write_lossy(&masked(true, OP_CLOSE, &[]));
        wait_closed(&mut self.stream, READ_TIMEOUT);
        reason
    }

    /// As [`Raw::expect_close`], also asserting the reason.
    pub fn expect_close_with(&mut self, code: u16, reason: &str) {
        let got = self.expect_close(code);
        assert_eq!(got, reason, "close {code} reason");
    }
}

// ---------------------------------------------------------------------------
// tungstenite client.

/// A tungstenite client over a plain TCP stream with timeouts.
pub struct Client {
    pub ws: tungstenite::WebSocket<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr, path: &str) -> Client {
        let stream = tcp(addr);
        let url = format!("ws://{addr}{path}");
        let (ws, resp) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("handshake with {url} failed: {e}"));
        assert_eq!(resp.status().as_u16(), 101);
        Client { ws }
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(tungstenite::Message::text(text))
            .expect("send text");
    }

    pub fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(tungstenite::Message::binary(data.to_vec()))
            .expect("send binary");
    }

    /// The next data message (pings answered by tungstenite are skipped).
    pub fn recv(&mut self) -> tungstenite::Message {
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Ping(_)) | Ok(tungstenite::Message::Pong(_)) => {}
                Ok(m) => return m,
                Err(e) => panic!("reading a message failed: {e}"),
            }
        }
    }

    /// The next message, which must be text.
    pub fn recv_text(&mut self) -> String {
        match self.recv() {
            tungstenite::Message::Text(t) => t.as_str().to_string(),
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    /// Sends `text` and returns the text reply.
    pub fn ask(&mut self, text: &str) -> String {
        self.send_text(text);
        self.recv_text()
    }
}

// ---------------------------------------------------------------------------
// Ids.

/// Decodes unpadded-or-padded base64url; `None` on any invalid character.
pub fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    // Canonical encoding: the leftover bits are zero.
    if bits != 0 {
        return None;
    }
    Some(out)
}

/// Asserts `id` is an AWS-looking id (`^[A-Za-z0-9_-]{15}=$`, base64url of 11 bytes)
/// and returns the 11 bytes.
pub fn assert_id(id: &str) -> [u8; 11] {
    assert_eq!(id.len(), 16, "id {id:?} must be 16 characters");
    let (body, pad) = id.split_at(15);
    assert_eq!(pad, "=", "id {id:?} must end with '='");
    assert!(
        body.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "id {id:?} must match ^[A-Za-z0-9_-]{{15}}=$"
    );
    let bytes =
        base64url_decode(id).unwrap_or_else(|| panic!("id {id:?} is not canonical base64url"));
    assert_eq!(bytes.len(), 11, "id {id:?} must carry 11 bytes");
    bytes.try_into().unwrap()
}

/// Splits an error frame `{"message": "<text>", "connectionId":"<id>", "requestId":"<id>"}`
/// into (connectionId, requestId), asserting every byte around the ids.
pub fn parse_error_frame(frame: &str, message: &str) -> (String, String) {
    let prefix = format!("{{\"message\": \"{message}\", \"connectionId\":\"");
    let middle = "\", \"requestId\":\"";
    let suffix = "\"}";
    assert!(
        frame.starts_with(&prefix),
        "error frame {frame:?} must start with {prefix:?}"
    );
    assert!(
        frame.ends_with(suffix),
        "error frame {frame:?} must end with {suffix:?}"
    );
    let rest = &frame[prefix.len()..frame.len() - suffix.len()];
    let (conn, req) = rest
        .split_once(middle)
        .unwrap_or_else(|| panic!("error frame {frame:?} must contain {middle:?}"));
    assert_id(conn);
    assert_id(req);
    assert_eq!(
        frame.len(),
        prefix.len() + 16 + middle.len() + 16 + suffix.len(),
        "{frame:?}"
    );
    (conn.to_string(), req.to_string())
}

/// Calls `write` (one batch of `batch` bytes to a client that never reads) until it
/// fails because the gateway stopped reading (would block or timed out) or `cap`
/// bytes went out. Returns the bytes sent and the gateway's RSS peak (KiB) meanwhile.
pub fn flood_until_stalled(
    gw: &Gateway,
    batch: usize,
    cap: usize,
    mut write: impl FnMut() -> io::Result<()>,
) -> (usize, u64) {
    let mut sent = 0usize;
    let mut peak = gw.rss_kib();
    while sent < cap {
        match write() {
            Ok(()) => sent += batch,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write failed after {sent} bytes: {e}"),
        }
        if sent % (8 << 20) < batch {
            peak = peak.max(gw.rss_kib());
        }
    }
    (sent, peak.max(gw.rss_kib()))
}
