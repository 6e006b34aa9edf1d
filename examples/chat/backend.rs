//! The chat example's backend: the AWS "simple WebSocket chat app" pattern as a small
//! std-only HTTP server. wsgate POSTs every event to `/ws`; `$connect`/`$disconnect`
//! keep the member list, `join` names a member, and `sendmessage` broadcasts through
//! wsgate's management API (`POST /@connections/{id}`), dropping members it says are
//! gone (410).
//!
//!   cargo run --example chat-backend -- [--listen 127.0.0.1:3000] [--management http://127.0.0.1:9001]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// connectionId -> member name ("" until `join`).
type Members = Arc<Mutex<HashMap<String, String>>>;

fn main() {
    let mut listen = "127.0.0.1:3000".to_string();
    let mut management = "127.0.0.1:9001".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().expect("--listen ADDR"),
            "--management" => {
                management = args
                    .next()
                    .expect("--management URL")
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_string()
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let listener = TcpListener::bind(&listen).expect("bind");
    println!(
        "chat-backend ready listen={}",
        listener.local_addr().unwrap()
    );
    let members: Members = Arc::default();
    for stream in listener.incoming().flatten() {
        let (members, management) = (members.clone(), management.clone());
        std::thread::spawn(move || serve(stream, &members, &management));
    }
}

/// Serves one keep-alive connection from wsgate.
fn serve(stream: TcpStream, members: &Members, management: &str) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (status, reply) = match serde_json::from_slice::<Value>(&body) {
            Ok(event) => handle(&event, members, management),
            Err(_) => (400, String::new()),
        };
        let head = format!(
            "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            reply.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(reply.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// One event: the status and body wsgate gets back.
fn handle(event: &Value, members: &Members, management: &str) -> (u16, String) {
    let ctx = &event["requestContext"];
    let id = ctx["connectionId"].as_str().unwrap_or_default().to_string();
    let body: Value = event["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    match ctx["routeKey"].as_str().unwrap_or_default() {
        "$connect" => {
            members.lock().unwrap().insert(id, String::new());
            (200, String::new())
        }
        "$disconnect" => {
            members.lock().unwrap().remove(&id);
            (200, String::new())
        }
        "join" => {
            let name = body["name"].as_str().unwrap_or("anonymous").to_string();
            let mut m = members.lock().unwrap();
            m.insert(id, name.clone());
            (200, json!({"joined": name, "members": m.len()}).to_string())
        }
        "sendmessage" => {
            let (from, targets): (String, Vec<String>) = {
                let m = members.lock().unwrap();
                (m.get(&id).cloned().unwrap_or_default(), m.keys().cloned().collect())
            };
            let text = format!("{}: {}", if from.is_empty() { "anonymous" } else { &from }, body["data"].as_str().unwrap_or(""));
            for gone in broadcast(management, &targets, text.as_bytes()) {
                members.lock().unwrap().remove(&gone);
            }
            (200, String::new())
        }
        _ => (200, json!({"usage": "send {\"action\":\"join\",\"name\":\"...\"} then {\"action\":\"sendmessage\",\"data\":\"...\"}"}).to_string()),
    }
}

/// Posts `text` to every connection over one keep-alive management connection;
/// returns the ids wsgate says are gone.
fn broadcast(management: &str, ids: &[String], text: &[u8]) -> Vec<String> {
    let mut gone = Vec::new();
    let Ok(stream) = TcpStream::connect(management) else {
        return gone;
    };
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut out = stream;
    for id in ids {
        let head = format!(
            "POST /@connections/{id} HTTP/1.1\r\nHost: {management}\r\nContent-Length: {}\r\n\r\n",
            text.len()
        );
        if out
            .write_all(head.as_bytes())
            .and_then(|_| out.write_all(text))
            .is_err()
        {
            break;
        }
        let mut status = String::new();
        if reader.read_line(&mut status).unwrap_or(0) == 0 {
            break;
        }
        let mut length = 0;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim_end().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut skip = vec![0; length];
        let _ = reader.read_exact(&mut skip);
        if status.split_whitespace().nth(1) == Some("410") {
            gone.push(id.clone());
        }
    }
    gone
}
