//! `examples/aws-chat` end to end (issue 10, SPEC §11–§13): AWS's "simple WebSocket
//! chat" handlers, unmodified but for `WSGATE_PLAIN=1` (http:// instead of https://),
//! run by the example's Node.js Lambda Invoke API emulator as a child process. The
//! gateway runs the example's own `wsgate.toml` with ephemeral ports; the handlers'
//! `@aws-sdk/client-apigatewaymanagementapi` calls come back to the API listener
//! (`on_api_listener`, SigV4). Needs `node` and `npm` (the npm registry, once, for
//! `setup.sh`); without them these tests fail and say so.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::Duration;

use crate::mgmt::eventually;
use crate::support::*;

const KEY: &str = "AKIAWSGATEEXAMPLE001";
const SECRET: &str = "wsgate/example/secret/key/0123456789ab";

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/aws-chat")
}

/// The emulator (`node emulator.js 0`), ended by its PID when dropped.
struct Emulator {
    child: Child,
    port: u16,
    output: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Emulator {
    fn start(store: &Path) -> Emulator {
        let dir = example_dir();
        // One `npm install` per test process: two at once in one folder would race.
        static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
        let setup = SETUP.get_or_init(|| {
            let out = Command::new("sh")
                .arg(example_dir().join("setup.sh"))
                .output()
                .map_err(|e| format!("cannot run sh: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        });
        if let Err(e) = setup {
            panic!("examples/aws-chat/setup.sh (npm install; needs node and npm) failed: {e}");
        }
        let mut child = Command::new("node")
            .arg(dir.join("emulator.js"))
            .arg("0")
            .current_dir(&dir)
            .env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_REGION", "us-east-1")
            .env("WSGATE_PLAIN", "1")
            .env("CONNECTIONS_FILE", store)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start node (examples/aws-chat needs node on PATH)");
        let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            let tx = tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    output.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let port = loop {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("emulator listening on 127.0.0.1:") {
                        break addr.trim().parse().expect("emulator port");
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the emulator did not start: {:?}", output.lock().unwrap());
                }
            }
        };
        Emulator {
            child,
            port,
            output,
        }
    }

    fn log(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        // Only the child this test started, by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The example's `wsgate.toml` with ephemeral listeners and the emulator's port;
/// `with_authorizer = false` drops the `[authorizers.*]` table and `authorizer` key.
fn example_config(emulator_port: u16, with_authorizer: bool) -> String {
    let text = std::fs::read_to_string(example_dir().join("wsgate.toml")).unwrap();
    let mut out = String::new();
    let mut in_authorizers = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_authorizers = line.starts_with("[authorizers");
        }
        if !with_authorizer && (in_authorizers || line.starts_with("authorizer =")) {
            continue;
        }
        let line = match line {
            "listen = \"127.0.0.1:8080\"" | "listen = \"127.0.0.1:9001\"" => {
                "listen = \"127.0.0.1:0\"".to_string()
            }
            l if l.starts_with("lambda_endpoint =") => {
                format!("lambda_endpoint = \"http://127.0.0.1:{emulator_port}\"")
            }
            l => l.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert!(out.contains(&format!("127.0.0.1:{emulator_port}")), "{out}");
    out
}

/// The upgrade request a browser or wscat sends: `Host` with the port, so the
/// handlers' `domainName` points back at this listener.
fn join(addr: SocketAddr, query: &str) -> (Response, std::net::TcpStream) {
    let mut stream = tcp(addr);
    let req = format!(
        "GET /prod{query} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        addr.port()
    );
    stream.write_all(req.as_bytes()).unwrap();
    (read_response(&mut stream), stream)
}

fn joined(addr: SocketAddr, query: &str) -> Raw {
    let (resp, stream) = join(addr, query);
    assert_eq!(resp.status, 101, "join {query}: {resp:?}");
    Raw { stream }
}

fn stored(store: &Path) -> Vec<String> {
    match std::fs::read_to_string(store) {
        Ok(s) => serde_json::from_str(&s).expect("connections.json"),
        Err(_) => Vec::new(),
    }
}

/// The id the last join added to the store.
fn new_id(store: &Path, before: &[String]) -> String {
    let now = stored(store);
    let added: Vec<&String> = now.iter().filter(|id| !before.contains(id)).collect();
    assert_eq!(
        added.len(),
        1,
        "one new id after a join: {before:?} -> {now:?}"
    );
    assert_id(added[0]);
    added[0].clone()
}

fn send(raw: &mut Raw, data: &str) {
    raw.send_text(&serde_json::json!({"action": "sendmessage", "data": data}).to_string());
}

/// The chat itself: `users` joined in order (their ids from the store), a message
/// fans out to all, a client leaves and `ondisconnect` drops it, its id put back (a
/// `$disconnect` that AWS delivers late or never) gets 410 from `@connections` and
/// `sendmessage` deletes it.
fn chat(gw: &Gateway, emu: &Emulator, store: &Path, mut users: Vec<(Raw, String)>) {
    assert_eq!(stored(store).len(), users.len(), "{:?}", stored(store));
    send(&mut users[0].0, "hello from the first");
    for (raw, _) in users.iter_mut() {
        assert_eq!(raw.recv_text(), "hello from the first");
    }
    // The last one leaves; its $disconnect removes it from the store.
    let (mut leaving, gone) = users.pop().unwrap();
    leaving.send(true, OP_CLOSE, &close_payload(1000, b"bye"));
    leaving.expect_close(1000);
    eventually(
        "ondisconnect removes the id",
        Duration::from_secs(10),
        || (!stored(store).contains(&gone)).then_some(()),
    );
    // A stale id, as when $disconnect was missed: the handler gets 410 and deletes it.
    let mut ids = stored(store);
    ids.push(gone.clone());
    std::fs::write(store, serde_json::to_string(&ids).unwrap()).unwrap();
    send(&mut users[0].0, "second");
    for (raw, _) in users.iter_mut() {
        assert_eq!(raw.recv_text(), "second");
    }
    eventually(
        "sendmessage deletes the stale id",
        Duration::from_secs(10),
        || (!stored(store).contains(&gone)).then_some(()),
    );
    assert!(
        emu.log()
            .contains(&format!("Found stale connection, deleting {gone}")),
        "emulator log: {}\ngateway: {}",
        emu.log(),
        gw.stderr()
    );
    let left: Vec<String> = users.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(stored(store), left);
    // The second client talks back: fan-out is not tied to the first.
    send(&mut users[1].0, "reply");
    for (raw, _) in users.iter_mut() {
        assert_eq!(raw.recv_text(), "reply");
    }
}

fn env() -> [(&'static str, &'static str); 2] {
    [
        ("AWS_ACCESS_KEY_ID", KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
    ]
}

/// The chat's Lambda routes and `@connections` on the API listener, with the
/// example's config less its authorizer: three clients join, messages fan out
/// through the unmodified handlers' SDK calls, a stale id gets 410 and is deleted.
#[test]
fn aws_chat_handlers_fan_out_through_connections_on_the_api_listener() {
    let store = temp_dir().join("connections.json");
    let emu = Emulator::start(&store);
    let gw = Gateway::start_with_env(&example_config(emu.port, false), &env());
    let mut users = Vec::new();
    for _ in 0..3 {
        let before = stored(&store);
        let raw = joined(gw.listen, "");
        users.push((raw, new_id(&store, &before)));
    }
    chat(&gw, &emu, &store, users);
    // The emulator takes only SigV4-shaped calls (the gateway's passed above).
    let emulator: SocketAddr = ([127, 0, 0, 1], emu.port).into();
    let unsigned = http(
        emulator,
        b"POST /2015-03-31/functions/onconnect/invocations HTTP/1.1\r\nHost: x\r\n\
          Content-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(unsigned.status, 403, "{unsigned:?}");
}

/// The example exactly as written, `$connect` behind `authorizer.js` (SPEC §11):
/// two clients with `token=allow` join, one with `token=deny` is refused with 403
/// and never reaches `onconnect`; then the chat as above. Fails (it never skips)
/// while the gateway does not accept `[authorizers]`.
#[test]
fn aws_chat_end_to_end_with_the_request_authorizer() {
    let store = temp_dir().join("connections.json");
    let emu = Emulator::start(&store);
    let config = example_config(emu.port, true);
    let check = run_to_exit_with_env(&config, &["--check"], &env());
    assert!(
        check.status.success(),
        "this gateway does not accept examples/aws-chat/wsgate.toml with its \
         [authorizers.tokens] (SPEC §11 REQUEST authorizers not built yet?): {}",
        check.stderr
    );
    let gw = Gateway::start_with_env(&config, &env());
    let mut users = Vec::new();
    let before = stored(&store);
    let first = joined(gw.listen, "?token=allow");
    users.push((first, new_id(&store, &before)));
    // Refused by the authorizer's Deny: 403, and onconnect never ran.
    let before = stored(&store);
    let (resp, _s) = join(gw.listen, "?token=deny");
    assert_eq!(resp.status, 403, "{resp:?}");
    // No token at all: 401 without calling the authorizer.
    let (resp, _s) = join(gw.listen, "");
    assert_eq!(resp.status, 401, "{resp:?}");
    assert_eq!(stored(&store), before);
    let second = joined(gw.listen, "?token=allow");
    users.push((second, new_id(&store, &before)));
    let third = joined(gw.listen, "?token=allow");
    let before: Vec<String> = users.iter().map(|(_, id)| id.clone()).collect();
    users.push((third, new_id(&store, &before)));
    chat(&gw, &emu, &store, users);
}
