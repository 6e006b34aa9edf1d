//! Fake servers for the fault tests: a minimal blocking WebSocket server (std threads on
//! 127.0.0.1:0) that echoes but can be told to send one wrong reply or to stop
//! answering, and a fake gateway with a management API that drops one push and
//! duplicates another.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wsgate_load::ws;

/// What the fake WebSocket server does wrong.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// The n-th message (0-based, over all connections) gets a reply with one byte changed.
    pub wrong_reply_at: Option<u64>,
    /// After this many messages, no more replies (the connection stays open).
    pub stop_after: Option<u64>,
}

pub type Registry = Arc<Mutex<HashMap<[u8; 16], Arc<Mutex<TcpStream>>>>>;

/// Reads the upgrade request and answers 101. Returns bytes read past the request.
fn accept_ws(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = wsgate_load::http::find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let key = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| v.trim().to_string())
            })?;
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                ws::accept_key(&key)
            );
            s.write_all(resp.as_bytes()).ok()?;
            return Some(buf[end + 4..].to_vec());
        }
    }
}

/// Calls `on_msg(opcode, payload)` for every client frame until EOF; answers close.
fn read_frames(s: &mut TcpStream, mut buf: Vec<u8>, mut on_msg: impl FnMut(u8, &[u8]) -> bool) {
    let mut tmp = [0u8; 16384];
    loop {
        while let Ok(Some(h)) = ws::decode_header(&buf) {
            let end = h.header_len + h.payload_len;
            if buf.len() < end {
                break;
            }
            let mut p = buf[h.header_len..end].to_vec();
            if let Some(m) = h.mask {
                ws::apply_mask(&mut p, m);
            }
            buf.drain(..end);
            if h.opcode == ws::OP_CLOSE {
                let mut out = Vec::new();
                ws::encode_server_frame(&mut out, ws::OP_CLOSE, &p[..p.len().min(2)]);
                let _ = s.write_all(&out);
                return;
            }
            if !on_msg(h.opcode, &p) {
                return;
            }
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
}

/// An echo WebSocket server with deliberate faults.
pub fn echo_server(faults: Faults) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let Some(rest) = accept_ws(&mut s) else {
                    return;
                };
                let mut w = s.try_clone().unwrap();
                read_frames(&mut s, rest, |op, p| {
                    let k = count.fetch_add(1, Ordering::SeqCst);
                    if faults.stop_after.is_some_and(|n| k >= n) {
                        return true;
                    }
                    let mut reply = p.to_vec();
                    if faults.wrong_reply_at == Some(k) {
                        let i = reply.len() - 3;
                        reply[i] ^= 1;
                    }
                    let mut out = Vec::new();
                    ws::encode_server_frame(&mut out, op, &reply);
                    w.write_all(&out).is_ok()
                });
            });
        }
    });
    addr
}

/// What the fake management API does wrong.
#[derive(Clone, Copy, Default)]
pub struct PushFaults {
    /// This push (0-based, in arrival order) is answered 200 but never delivered.
    pub drop_at: Option<u64>,
    /// This push is delivered twice.
    pub duplicate_at: Option<u64>,
}

/// A fake gateway: WebSocket clients learn an id from `{"action":"whoami"}`; the
/// management listener delivers `POST /@connections/{id}` bodies to them.
pub fn push_gateway(faults: PushFaults) -> (SocketAddr, SocketAddr) {
    let reg: Registry = Arc::new(Mutex::new(HashMap::new()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let ws_addr = l.local_addr().unwrap();
    let ids = Arc::new(AtomicU64::new(0));
    {
        let reg = reg.clone();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (reg, ids) = (reg.clone(), ids.clone());
                std::thread::spawn(move || {
                    let _ = s.set_nodelay(true);
                    let Some(rest) = accept_ws(&mut s) else {
                        return;
                    };
                    let w = Arc::new(Mutex::new(s.try_clone().unwrap()));
                    read_frames(&mut s, rest, |_, p| {
                        if p.windows(6).any(|x| x == b"whoami") {
                            let id = format!("fake{:011}=", ids.fetch_add(1, Ordering::SeqCst));
                            let mut id16 = [0u8; 16];
                            id16.copy_from_slice(id.as_bytes());
                            reg.lock().unwrap().insert(id16, w.clone());
                            let mut out = Vec::new();
                            ws::encode_server_frame(&mut out, ws::OP_TEXT, id.as_bytes());
                            return w.lock().unwrap().write_all(&out).is_ok();
                        }
                        true
                    });
                });
            }
        });
    }
    let m = TcpListener::bind("127.0.0.1:0").unwrap();
    let mgmt_addr = m.local_addr().unwrap();
    let pushes = Arc::new(AtomicU64::new(0));
    std::thread::spawn(move || {
        for s in m.incoming() {
            let Ok(mut s) = s else { continue };
            let (reg, pushes) = (reg.clone(), pushes.clone());
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf: Vec<u8> = Vec::new();
                let mut tmp = [0u8; 16384];
                loop {
                    // Serve every complete request in the buffer.
                    loop {
                        let mut headers = [httparse::EMPTY_HEADER; 16];
                        let mut req = httparse::Request::new(&mut headers);
                        let Ok(httparse::Status::Complete(hl)) = req.parse(&buf) else {
                            break;
                        };
                        let len: usize = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                            .unwrap_or(0);
                        if buf.len() < hl + len {
                            break;
                        }
                        let path = req.path.unwrap_or("").to_string();
                        let body = buf[hl..hl + len].to_vec();
                        buf.drain(..hl + len);
                        let id = path.rsplit('/').next().unwrap_or("").as_bytes().to_vec();
                        let target = (id.len() == 16)
                            .then(|| {
                                let mut k = [0u8; 16];
                                k.copy_from_slice(&id);
                                reg.lock().unwrap().get(&k).cloned()
                            })
                            .flatten();
                        let resp: &[u8] = match target {
                            None => b"HTTP/1.1 410 Gone\r\nContent-Length: 2\r\n\r\n{}",
                            Some(w) => {
                                let k = pushes.fetch_add(1, Ordering::SeqCst);
                                let times = if faults.drop_at == Some(k) {
                                    0
                                } else if faults.duplicate_at == Some(k) {
                                    2
                                } else {
                                    1
                                };
                                let mut out = Vec::new();
                                for _ in 0..times {
                                    ws::encode_server_frame(&mut out, ws::OP_TEXT, &body);
                                }
                                let _ = w.lock().unwrap().write_all(&out);
                                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
                            }
                        };
                        if s.write_all(resp).is_err() {
                            return;
                        }
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    (ws_addr, mgmt_addr)
}
