//! The chat example end to end: examples/chat/chat.toml with its Rust backend, three
//! clients, joins and a broadcast through the management API.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;

/// The example backend process, killed on drop.
struct ChatBackend(Child);

impl Drop for ChatBackend {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo test` builds examples next to the test binaries' `deps` folder.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join("chat-backend");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds examples",
        bin.display()
    );
    bin
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn chat_example_joins_and_broadcasts_through_the_management_api() {
    let management = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(example_binary())
        .args(["--listen", "127.0.0.1:0", "--management", &management])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let backend = ChatBackend(child);
    let port = line.trim().rsplit(':').next().unwrap().to_string();
    let config = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/chat/chat.toml"
    ))
    .unwrap()
    .replace("127.0.0.1:3000", &format!("127.0.0.1:{port}"));
    let gw = Gateway::start_with(
        &config,
        &[
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            &management,
        ],
    );

    let mut clients: Vec<Raw> = (0..3).map(|_| Raw::connect(gw.listen, "/prod")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("{{\"action\":\"join\",\"name\":\"user{i}\"}}"));
        let reply: serde_json::Value = serde_json::from_str(&c.recv_text()).unwrap();
        assert_eq!(reply["joined"], format!("user{i}"));
    }
    clients[1].send_text("{\"action\":\"sendmessage\",\"data\":\"hello all\"}");
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(), "user1: hello all");
    }
    // A member who left is dropped from the broadcast ($disconnect), the rest still get it.
    drop(clients.remove(0));
    std::thread::sleep(Duration::from_millis(200));
    clients[0].send_text("{\"action\":\"sendmessage\",\"data\":\"still here\"}");
    for c in clients.iter_mut() {
        assert_eq!(c.recv_text(), "user1: still here");
    }
    drop(backend);
}
