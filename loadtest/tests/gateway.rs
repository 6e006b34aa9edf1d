//! One short run of each measuring tool against the real wsgate binary: zero faults.
//!
//! The binary is built with `cargo build -p wsgate --bin wsgate` (a no-op when fresh; under
//! `cargo test --workspace` it is already built) in the workspace's target directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wsgate_load::{backend, connect, push, rr, ws};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn wsgate_binary() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("wsgate");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "wsgate", "--bin", "wsgate"])
        .current_dir(&root)
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => assert!(
            bin.exists(),
            "cannot build wsgate ({other:?}) and {} is missing",
            bin.display()
        ),
    }
    bin
}

struct Gateway {
    child: Child,
    ws: SocketAddr,
    mgmt: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_gateway(config_text: &str, name: &str) -> Gateway {
    let dir = std::env::temp_dir().join(format!("wsgate-load-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gw.toml");
    std::fs::write(&cfg, config_text).unwrap();
    let mut child = Command::new(wsgate_binary())
        .arg("--config")
        .arg(&cfg)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--log-level",
            "warn",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wsgate");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let field = |k: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in ready line {line:?}"))
            .parse()
            .unwrap()
    };
    assert!(line.starts_with("wsgate ready"), "{line:?}");
    let (ws, mgmt) = (field("listen="), field("management="));
    Gateway { child, ws, mgmt }
}

fn config(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("configs")
            .join(name),
    )
    .unwrap()
}

#[test]
fn real_gateway_mock_routes_have_no_faults() {
    let gw = start_gateway(&config("mock.toml"), "mock");
    let target = ws::parse_url(&format!("ws://{}/", gw.ws)).unwrap();

    let mut o = rr::RrOpts::new(target.clone());
    o.connections = 8;
    o.duration = Duration::from_millis(1000);
    o.progress = false;
    let r = rr::run(&o).unwrap();
    assert!(r.completed > 100, "{r:?}");
    assert_eq!(r.faults(), 0, "rr over the mock echo route: {r:?}");

    let mut p = push::PushOpts::new(target.clone(), gw.mgmt);
    p.clients = 20;
    p.mgmt_conns = 2;
    p.duration = Duration::from_millis(800);
    p.progress = false;
    let r = push::run(&p).unwrap();
    assert!(r.delivered > 50, "{r:?}");
    assert_eq!(r.faults(), 0, "push: {r:?}");

    let c = connect::ConnectOpts {
        target,
        concurrency: 8,
        threads: 1,
        duration: Duration::from_millis(500),
        sources: 2,
        close: connect::CloseMode::Clean,
        timeout: Duration::from_secs(5),
        progress: false,
    };
    let r = connect::run(&c).unwrap();
    assert!(r.handshakes > 10, "{r:?}");
    assert_eq!(r.faults(), 0, "connect: {r:?}");
}

#[test]
fn real_gateway_aws_proxy_with_the_benchmark_backend_has_no_faults() {
    let b = backend::Backend::start(&backend::BackendOpts {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        mode: backend::Mode::EventBody,
        status: 200,
        delay: Duration::ZERO,
        chunked: true,
        duration: Duration::from_secs(60),
    })
    .unwrap();
    let cfg = config("proxy.toml").replace("127.0.0.1:3000", &b.addr.to_string());
    let gw = start_gateway(&cfg, "proxy");
    let mut o = rr::RrOpts::new(ws::parse_url(&format!("ws://{}/", gw.ws)).unwrap());
    o.connections = 8;
    o.duration = Duration::from_millis(1000);
    o.progress = false;
    let r = rr::run(&o).unwrap();
    drop(gw);
    let br = b.stop();
    assert!(r.completed > 100, "{r:?}");
    assert_eq!(r.faults(), 0, "rr over aws_proxy: {r:?}");
    assert!(br.requests >= r.completed, "{br:?}");
}
