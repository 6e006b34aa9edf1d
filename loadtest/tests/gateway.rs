//! One short run of each measuring tool against the real wsgate binary: zero faults;
//! and a short `abuse` soak, which must produce its report with every counter moving
//! (not a passing verdict: that is the gateway's business, not the generator's).
//!
//! The binary is built with `cargo build -p wsgate --bin wsgate` (a no-op when fresh; under
//! `cargo test --workspace` it is already built) in the workspace's target directory.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use wsgate_load::{abuse, backend, cluster_push, connect, group_send, push, rr, ws};

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
        stop: None,
    };
    let r = connect::run(&c).unwrap();
    assert!(r.handshakes > 10, "{r:?}");
    assert_eq!(r.faults(), 0, "connect: {r:?}");
}

/// `group-send` and `cluster-push` (one node: the same-node rows) against the real
/// gateway with two workers: every accepted send reaches every member once, in order.
#[test]
fn real_gateway_group_send_and_one_node_cluster_push_have_no_faults() {
    let gw = start_gateway(&config("mock.toml"), "groups");
    let target = ws::parse_url(&format!("ws://{}/", gw.ws)).unwrap();

    let mut g = group_send::GroupSendOpts::new(target.clone(), gw.mgmt);
    g.members = 40;
    g.senders = 2;
    g.threads = 2;
    g.duration = Duration::from_millis(800);
    g.progress = false;
    let r = group_send::run(&g).unwrap();
    assert_eq!(r.joined, 40, "{r:?}");
    assert!(r.accepted > 10, "{r:?}");
    assert_eq!(r.delivered, r.accepted * 40, "{r:?}");
    assert_eq!(r.nodes, 1, "{r:?}");
    assert_eq!(r.faults(), 0, "group-send: {r:?}");

    // Two "nodes" that are the same gateway: the spreading and the report work.
    let mut c = cluster_push::ClusterPushOpts::new(vec![target.clone(), target], gw.mgmt).unwrap();
    c.gateway_pids = vec![gw.child.id()];
    c.push.clients = 20;
    c.push.mgmt_conns = 2;
    c.push.duration = Duration::from_millis(800);
    c.push.progress = false;
    let r = cluster_push::run(&c).unwrap();
    assert!(r.push.delivered > 50, "{r:?}");
    assert_eq!(r.faults(), 0, "cluster-push: {r:?}");
    assert!(r.gateway_cpu.is_some(), "{r:?}");
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

#[test]
fn abuse_soak_runs_every_abuser_and_reports() {
    let gw = start_gateway(&config("abuse.toml"), "abuse");
    let mut o = abuse::AbuseOpts::new(ws::parse_url(&format!("ws://{}/", gw.ws)).unwrap());
    o.normal.connections = 4;
    o.warmup = Duration::from_millis(500);
    o.duration = Duration::from_millis(2500);
    o.settle = Duration::from_millis(500);
    o.gateway_pid = Some(gw.child.id());
    o.slow_readers = 1;
    o.slow_rate = Some(1000.0);
    o.management = Some(gw.mgmt);
    o.management_token = Some("wsgate-load-abuse".into());
    o.mgmt_clients = 2;
    o.mgmt_rate = Some(200.0);
    o.churn = 2;
    o.bignum_clients = 1;
    o.bignum_bytes = 8_000;
    o.progress = false;
    let r = abuse::run(&o).unwrap();
    let report = r.report(&o).to_json();

    // Normal traffic ran in all three phases' bookkeeping and before the abuse.
    assert_eq!(r.normal.phases.len(), 3, "{r:?}");
    assert!(r.normal.phases[0].completed > 0, "{r:?}");
    assert!(r.normal.completed > 0, "{r:?}");
    // Every abuser did something.
    let slow = r.slow.as_ref().unwrap();
    assert!(slow.connections >= 1 && slow.sent[0] > 100, "{slow:?}");
    let mgmt = r.mgmt.as_ref().unwrap();
    assert!(mgmt.sent[0] > 0 && mgmt.sent[1] > 0, "{mgmt:?}");
    assert!(r.churn.as_ref().unwrap().handshakes > 0, "{r:?}");
    assert!(r.bignum.as_ref().unwrap().sent > 0, "{r:?}");
    // RSS was read at every point.
    let before = r.rss_before.unwrap();
    assert!(before > 0 && r.rss_peak.unwrap() >= before, "{r:?}");
    assert!(r.rss_after.is_some() && !r.rss_timeline.is_empty(), "{r:?}");
    // The report carries the verdict and the per-phase numbers.
    for k in [
        "verdict",
        "during_p99_us",
        "gateway_rss_after_mib",
        "slow_msgs_sent",
    ] {
        assert!(!report[k].is_null(), "{k} missing: {report}");
    }
    assert_eq!(report["mgmt_wrong_token_requests"], mgmt.sent[1]);
    assert_eq!(
        report["verdict"] == "pass",
        r.failures(&o).is_empty(),
        "{report}"
    );
}

/// `wss://` against the real gateway with `configs/tls.toml` and a certificate made
/// here. Until the gateway knows `[server.tls]` (its `--check` says `unknown field
/// `tls``) the test has nothing to run against and says so.
#[test]
fn real_gateway_over_wss() {
    let dir = std::env::temp_dir().join(format!("wsgate-load-test-{}-tls", std::process::id()));
    let pki = wsgate_load::tls::make_test_pki(&dir.join("pki")).unwrap();
    let cfg = config("tls.toml").replace(
        "/tmp/wsgate-tls/",
        &format!("{}/", dir.join("pki").display()),
    );
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("check.toml");
    std::fs::write(&path, &cfg).unwrap();
    let check = Command::new(wsgate_binary())
        .arg("--check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&check.stderr).into_owned()
        + &String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "tls.toml refused: {text}");
    let gw = start_gateway(&cfg, "tls");
    let tls = |resume| {
        let t = ws::parse_url(&format!("wss://{}/", gw.ws)).unwrap();
        let c = wsgate_load::tls::TlsClient::new(
            t.hostname(),
            &wsgate_load::tls::Trust::CaFile(pki.ca.display().to_string()),
            wsgate_load::tls::Versions::Tls13,
            resume,
        )
        .unwrap();
        t.with_tls(c)
    };
    let mut o = rr::RrOpts::new(tls(false));
    o.connections = 8;
    o.duration = Duration::from_millis(1000);
    o.progress = false;
    let r = rr::run(&o).unwrap();
    assert!(r.completed > 100, "{r:?}");
    assert_eq!(r.faults(), 0, "wss rr over the mock echo route: {r:?}");
    for resume in [false, true] {
        let c = connect::ConnectOpts {
            target: tls(resume),
            concurrency: 4,
            threads: 1,
            duration: Duration::from_millis(800),
            sources: 2,
            close: connect::CloseMode::Clean,
            timeout: Duration::from_secs(5),
            progress: false,
            stop: None,
        };
        let r = connect::run(&c).unwrap();
        assert!(r.handshakes > 5, "{r:?}");
        assert_eq!(r.faults(), 0, "wss connect (resume {resume}): {r:?}");
        if resume {
            assert!(
                r.tls_resumed > 0,
                "SPEC §10.1: session resumption on: {r:?}"
            );
        } else {
            assert_eq!(r.tls_resumed, 0, "{r:?}");
        }
    }
}
