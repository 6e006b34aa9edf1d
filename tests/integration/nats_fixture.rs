//! NATS servers for the cluster tests (SPEC §15): Debian's `nats-server` (installed
//! by `scripts/test.sh`), started on free loopback ports, one alone or three forming
//! a NATS cluster (`-cluster`/`-routes`), each killed by its PID on drop. The test
//! fails, never skips, when `nats-server` is missing.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::mgmt::eventually;

/// A free TCP port on `ip` (bound, read and released).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
}

fn binary() -> String {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    "nats-server".to_string()
}

/// One `nats-server` process.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    /// Its cluster (route) port and the routes it was given, to restart it alike.
    cluster: Option<(u16, Vec<u16>)>,
    monitor: u16,
}

impl NatsServer {
    /// A lone server on a free port of 127.0.0.1.
    pub fn start() -> NatsServer {
        NatsServer::spawn(free_port("127.0.0.1"), None)
    }

    fn spawn(port: u16, cluster: Option<(u16, Vec<u16>)>) -> NatsServer {
        let monitor = free_port("127.0.0.1");
        let mut cmd = Command::new(binary());
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &monitor.to_string()]);
        if let Some((cport, routes)) = &cluster {
            let routes: Vec<String> = routes
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", "wsgtest"])
                .args(["-cluster", &format!("nats://127.0.0.1:{cport}")])
                .args(["-routes", &routes.join(",")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}): run scripts/test.sh, which installs Debian's nats-server, or apt-get install nats-server")
            });
        let s = NatsServer {
            child: Some(child),
            port,
            cluster,
            monitor,
        };
        eventually(
            &format!("nats-server on port {port} accepting"),
            Duration::from_secs(10),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL by PID) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        let again = NatsServer::spawn(self.port, self.cluster.clone());
        *self = again;
    }

    /// GETs a monitoring endpoint (`/routez`, `/connz`, ...): the body.
    pub fn monitor(&self, path: &str) -> String {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.monitor)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
        if s.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// A number field of a monitoring endpoint's JSON (`"num_routes": 2`).
    pub fn monitor_number(&self, path: &str, field: &str) -> Option<u64> {
        let body = self.monitor(path);
        let key = format!("\"{field}\":");
        let at = body.find(&key)? + key.len();
        let digits: String = body[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three `nats-server`s routed into one NATS cluster.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start() -> NatsCluster {
        let ports: Vec<u16> = (0..3).map(|_| free_port("127.0.0.1")).collect();
        let cports: Vec<u16> = (0..3).map(|_| free_port("127.0.0.1")).collect();
        let servers: Vec<NatsServer> = (0..3)
            .map(|i| {
                let routes = cports
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| *p)
                    .collect();
                NatsServer::spawn(ports[i], Some((cports[i], routes)))
            })
            .collect();
        for s in &servers {
            eventually(
                &format!("nats-server {} routed to both others", s.port),
                Duration::from_secs(15),
                || (s.monitor_number("/routez", "num_routes")? >= 2).then_some(()),
            );
        }
        NatsCluster { servers }
    }

    /// The TOML list of every server's URL.
    pub fn urls_toml(&self) -> String {
        let urls: Vec<String> = self
            .servers
            .iter()
            .map(|s| format!("\"{}\"", s.url()))
            .collect();
        format!("[{}]", urls.join(", "))
    }
}
