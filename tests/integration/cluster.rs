//! SPEC §15: several nodes on NATS. Three gateways (separate processes on
//! 127.0.0.2, .3 and .4, two workers each) share a NATS server or a three-server NATS
//! cluster started by `nats_fixture`; management calls through one node reach
//! connections on the others, a killed node's ids answer 503 and then 410, a node cut
//! off from NATS answers 503 for remote ids while its local ones work, then closes its
//! clients with 1001 and refuses new ones until NATS is back, and pushes go on when
//! one of three NATS servers dies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::assert_silent;
use crate::mgmt::*;
use crate::nats_fixture::{NatsCluster, NatsServer};
use crate::support::*;

const ISOLATION: Duration = Duration::from_secs(2);

/// A secret file every node of a test shares.
pub(crate) fn secret() -> PathBuf {
    let p = temp_dir().join("cluster.key");
    std::fs::write(&p, "test-cluster-secret-0123456789abcdef\n").unwrap();
    p
}

/// A [`whoami_config`]-like gateway on `ip` with two workers, in cluster `name` as
/// node `node`, on the NATS servers `nats` (a TOML list).
pub(crate) fn node_config(ip: &str, node: u8, nats: &str, secret: &Path) -> String {
    node_config_with(ip, node, nats, secret, "")
}

/// As [`node_config`], with extra `[management]` lines.
fn node_config_with(ip: &str, node: u8, nats: &str, secret: &Path, management: &str) -> String {
    let mut c = format!(
        "[api]\nname = \"test\"\nroute_selection_expression = \"$request.body.action\"\nstage = \"prod\"\n\n\
         [server]\nlisten = \"{ip}:0\"\nhandshake_timeout = \"1s\"\nworkers = 2\n\n\
         [management]\nlisten = \"{ip}:0\"\n{management}\n\n[limits]\n\n"
    );
    c.push_str(&mock_integration("who", "$context.connectionId"));
    c.push_str(&route("$default", "who"));
    c.push_str(&format!(
        "[cluster]\nnats = {nats}\nname = \"t\"\nnode = {node}\nsecret_file = {}\n\
         request_timeout = \"1s\"\nisolation_timeout = \"2s\"\n",
        toml_str(&secret.display().to_string())
    ));
    c
}

/// Starts nodes 1, 2, 3 on 127.0.0.2, .3, .4 and waits until every worker of each
/// is connected to NATS.
pub(crate) fn three_nodes(nats: &str) -> Vec<Gateway> {
    let key = secret();
    let nodes: Vec<Gateway> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .enumerate()
        .map(|(i, ip)| Gateway::start(&node_config(ip, i as u8 + 1, nats, &key)))
        .collect();
    for n in &nodes {
        wait_connected(n);
    }
    nodes
}

/// Waits until `/health` says every worker of `gw` is connected to NATS.
pub(crate) fn wait_connected(gw: &Gateway) {
    wait_connected_with(gw, &[]);
}

fn wait_connected_with(gw: &Gateway, headers: &[(&str, &str)]) {
    eventually(
        "every worker connected to NATS",
        Duration::from_secs(10),
        || {
            let r = Mgmt::connect(gw.management).call("GET", "/health", headers, b"");
            let v = r.json();
            (r.status == 200 && v["nats"]["connected"] == gw.workers as u64).then_some(())
        },
    );
}

/// POSTs until the answer is not 503 (a node just started may not have been heard
/// yet), returning it.
fn post_settled(m: &mut Mgmt, id: &str, body: &[u8]) -> HttpReply {
    eventually("a settled answer", Duration::from_secs(10), || {
        let r = m.post(id, body);
        (r.status != 503).then_some(r)
    })
}

#[test]
fn posts_gets_and_deletes_reach_connections_on_other_nodes() {
    let nats = NatsServer::start();
    let nodes = three_nodes(&format!("[\"{}\"]", nats.url()));
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    let mut on_b = Raw::connect(b.listen, "/prod");
    let mut on_c = Raw::connect(c.listen, "/prod");
    let id_b = id_of(&mut on_b);
    let id_c = id_of(&mut on_c);
    let mut m = Mgmt::connect(a.management);
    post_settled(&mut m, &id_b, b"first").expect(200);
    post_settled(&mut m, &id_c, b"first").expect(200);
    assert_eq!(on_b.recv_text(), "first");
    assert_eq!(on_c.recv_text(), "first");
    // Delivered once, in order per connection, interleaved across two nodes.
    for i in 0..40 {
        m.post(&id_b, format!("b{i}").as_bytes()).expect(200);
        m.post(&id_c, format!("c{i}").as_bytes()).expect(200);
    }
    for i in 0..40 {
        assert_eq!(on_b.recv_text(), format!("b{i}"));
        assert_eq!(on_c.recv_text(), format!("c{i}"));
    }
    assert_silent(&mut on_b, Duration::from_millis(300));
    assert_silent(&mut on_c, Duration::from_millis(300));
    // The §13-style stage path and a large body (fragmented by the owner).
    let big = vec![b'x'; 100_000];
    m.call("POST", &format!("/prod/@connections/{id_c}"), &[], &big)
        .expect(200);
    let (_, payload, _) = on_c.message_frames();
    assert_eq!(payload.len(), big.len());
    // GET across nodes: the owner's fields.
    let info = m.get(&id_b);
    info.expect(200);
    let v = info.json();
    assert!(v["connectedAt"].as_str().unwrap().ends_with('Z'), "{v}");
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    // DELETE across nodes: 204, the client sees 1000, then the id is gone.
    m.delete(&id_c).expect(204);
    on_c.expect_close(1000);
    let gone = m.post(&id_c, b"late");
    gone.expect_error(410, "GoneException");
    // Through another node (C) to B, and B to its own client (local).
    let mut mc = Mgmt::connect(c.management);
    post_settled(&mut mc, &id_b, b"via c").expect(200);
    assert_eq!(on_b.recv_text(), "via c");
    Mgmt::connect(b.management)
        .post(&id_b, b"local")
        .expect(200);
    assert_eq!(on_b.recv_text(), "local");
    // A well-formed id no node issued: 410, never a hang.
    let forged = tweak_id(&id_b, |b| b[3] ^= 0x40);
    let r = m.post(&forged, b"x");
    assert!(
        r.status == 410 || r.status == 503,
        "forged id: {}",
        r.status
    );
    let metrics = Mgmt::connect(a.management)
        .call("GET", "/metrics", &[], b"")
        .text();
    assert!(
        metric_sum(
            &metrics,
            "wsgate_cluster_remote_calls_total",
            &["status=\"200\""]
        ) >= 80.0,
        "{metrics}"
    );
    assert!(
        metric_sum(&metrics, "wsgate_cluster_remote_call_seconds_count", &[]) >= 80.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "wsgate_cluster_nats_connected", &[]),
        a.workers as f64
    );
}

/// SPEC §13 with §15: an AWS handler posting to `https://{domainName}/{stage}/@connections/{id}`
/// reaches a connection on another node through the node it talks to.
#[test]
fn connections_calls_on_the_api_listener_reach_other_nodes() {
    let nats = NatsServer::start();
    let nats_list = format!("[\"{}\"]", nats.url());
    let key = secret();
    let auth = "auth = \"token\"\ntoken = \"s3cret\"\non_api_listener = true";
    let a = Gateway::start(&node_config_with("127.0.0.2", 1, &nats_list, &key, auth));
    let b = Gateway::start(&node_config_with("127.0.0.3", 2, &nats_list, &key, auth));
    wait_connected_with(&a, &[("Authorization", "Bearer s3cret")]);
    wait_connected_with(&b, &[("Authorization", "Bearer s3cret")]);
    let mut on_b = Raw::connect(b.listen, "/prod");
    let id_b = id_of(&mut on_b);
    let mut m = Mgmt::connect(a.listen);
    let path = format!("/prod/@connections/{id_b}");
    let ok = [("Authorization", "Bearer s3cret")];
    let r = eventually("a settled answer", Duration::from_secs(10), || {
        let r = m.call("POST", &path, &ok, b"through a's api port");
        (r.status != 503).then_some(r)
    });
    r.expect(200);
    assert_eq!(on_b.recv_text(), "through a's api port");
    m.call("GET", &path, &ok, b"").expect(200);
    m.call("DELETE", &path, &ok, b"").expect(204);
    on_b.expect_close(1000);
    m.call("POST", &path, &ok, b"late")
        .expect_error(410, "GoneException");
}

#[test]
fn a_killed_nodes_ids_are_503_then_410_never_another_status() {
    let nats = NatsServer::start();
    let mut nodes = three_nodes(&format!("[\"{}\"]", nats.url()));
    let mut on_b = Raw::connect(nodes[1].listen, "/prod");
    let id_b = id_of(&mut on_b);
    let mut m = Mgmt::connect(nodes[0].management);
    post_settled(&mut m, &id_b, b"alive").expect(200);
    assert_eq!(on_b.recv_text(), "alive");
    nodes[1].kill();
    let killed = Instant::now();
    let mut statuses = Vec::new();
    loop {
        let r = m.post(&id_b, b"anyone?");
        statuses.push((killed.elapsed(), r.status));
        assert!(
            r.status == 503 || r.status == 410,
            "only 503 or 410 for a killed node's id: {statuses:?}"
        );
        if r.status == 503 {
            r.expect_error(503, "ServiceUnavailableException");
        }
        if r.status == 410 && statuses.iter().filter(|s| s.1 == 410).count() >= 3 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no 410 within 10 s: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(statuses[0].1, 503, "right after the kill: {statuses:?}");
    let first_410 = statuses.iter().position(|s| s.1 == 410).unwrap();
    assert!(
        statuses[first_410..].iter().all(|s| s.1 == 410),
        "410 is final: {statuses:?}"
    );
    assert!(
        statuses[first_410].0 >= ISOLATION + Duration::from_millis(300),
        "410 only once the node was unheard for isolation_timeout + the margin: {statuses:?}"
    );
    // GET and DELETE agree.
    m.get(&id_b).expect_error(410, "GoneException");
    m.delete(&id_b).expect_error(410, "GoneException");
}

#[test]
fn nats_loss_isolates_a_node_until_nats_is_back() {
    let mut nats = NatsServer::start();
    let nodes = three_nodes(&format!("[\"{}\"]", nats.url()));
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut on_a = Raw::connect(a.listen, "/prod");
    let mut on_b = Raw::connect(b.listen, "/prod");
    let id_a = id_of(&mut on_a);
    let id_b = id_of(&mut on_b);
    let mut m = Mgmt::connect(a.management);
    post_settled(&mut m, &id_b, b"before").expect(200);
    assert_eq!(on_b.recv_text(), "before");
    nats.kill();
    let lost = Instant::now();
    // During the window: remote ids 503, local ones work.
    let r = eventually("a 503 once NATS is gone", Duration::from_secs(3), || {
        let r = m.post(&id_b, b"remote");
        (r.status != 200).then_some(r)
    });
    r.expect_error(503, "ServiceUnavailableException");
    if lost.elapsed() < ISOLATION - Duration::from_millis(500) {
        m.post(&id_a, b"local").expect(200);
        assert_eq!(on_a.recv_text(), "local");
    }
    // After isolation_timeout: clients closed with 1001 "Going away", new ones refused.
    on_a.stream
        .set_read_timeout(Some(ISOLATION + Duration::from_secs(3)))
        .unwrap();
    on_a.expect_close_with(1001, "Going away");
    on_b.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    on_b.expect_close_with(1001, "Going away");
    assert!(lost.elapsed() >= ISOLATION - Duration::from_millis(200));
    let mut s = TcpStream::connect(a.listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(upgrade_request("/prod").as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.starts_with("HTTP/1.1 101"),
        "an isolated node accepts no client: {text}"
    );
    let health = Mgmt::connect(a.management).call("GET", "/health", &[], b"");
    health.expect(503);
    assert_eq!(health.json()["nats"]["isolated"], true);
    // NATS back: clients are accepted again and remote calls work.
    nats.restart();
    for n in &nodes {
        wait_connected(n);
    }
    let mut on_b = Raw::connect(b.listen, "/prod");
    let id_b = id_of(&mut on_b);
    let mut m = Mgmt::connect(a.management);
    post_settled(&mut m, &id_b, b"after").expect(200);
    assert_eq!(on_b.recv_text(), "after");
    let logs = a.stderr();
    assert!(logs.contains("nats connection to"), "{logs}");
    assert!(logs.contains("nats connected to"), "{logs}");
    let metrics = Mgmt::connect(a.management)
        .call("GET", "/metrics", &[], b"")
        .text();
    assert!(metric_sum(&metrics, "wsgate_cluster_reconnects_total", &[]) >= 1.0);
}

#[test]
fn pushes_continue_when_one_of_three_nats_servers_dies() {
    let mut cluster = NatsCluster::start();
    let nodes = three_nodes(&cluster.urls_toml());
    let (a, b) = (&nodes[0], &nodes[1]);
    let mut on_b = Raw::connect(b.listen, "/prod");
    let id_b = id_of(&mut on_b);
    let mut m = Mgmt::connect(a.management);
    post_settled(&mut m, &id_b, b"warm").expect(200);
    assert_eq!(on_b.recv_text(), "warm");
    // Every push: (body, status). A 503 is "unknown outcome, retry" (its reply may
    // have been lost with the NATS server while the owner had delivered it).
    let mut sent: Vec<(String, u16)> = Vec::new();
    for round in 0..3 {
        if round == 1 {
            // The server most gateway workers use (6 workers over 3 servers).
            let busiest = (0..3)
                .max_by_key(|i| {
                    cluster.servers[*i]
                        .monitor_number("/connz", "num_connections")
                        .unwrap_or(0)
                })
                .unwrap();
            let n = cluster.servers[busiest].monitor_number("/connz", "num_connections");
            assert!(n.unwrap_or(0) >= 2, "connections: {n:?}");
            cluster.servers[busiest].kill();
        }
        let until = Instant::now() + Duration::from_millis(1500);
        let mut i = 0;
        while Instant::now() < until {
            let body = format!("r{round}-{i}");
            let r = m.post(&id_b, body.as_bytes());
            assert!(
                r.status == 200 || r.status == 503,
                "a push answers 200 or 503 (retry), got {} ({sent:?})",
                r.status
            );
            sent.push((body, r.status));
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Pushes went on after the kill: the last ones are all 200.
    let tail = &sent[sent.len() - 10..];
    assert!(tail.iter().all(|s| s.1 == 200), "{sent:?}");
    // The client (never isolated) saw every accepted push once, in order, and
    // nothing that was not sent.
    let last = sent.iter().rposition(|s| s.1 == 200).unwrap();
    let mut next = 0;
    loop {
        let got = on_b.recv_text();
        let at = sent[next..]
            .iter()
            .position(|s| s.0 == got)
            .unwrap_or_else(|| panic!("{got} out of order or duplicated; sent {sent:?}"))
            + next;
        assert!(
            sent[next..at].iter().all(|s| s.1 == 503),
            "an accepted push before {got} is missing: {sent:?}"
        );
        next = at + 1;
        if at == last {
            break;
        }
    }
    assert_silent(&mut on_b, Duration::from_millis(300));
    let reconnects: f64 = nodes
        .iter()
        .map(|n| {
            let text = Mgmt::connect(n.management)
                .call("GET", "/metrics", &[], b"")
                .text();
            metric_sum(&text, "wsgate_cluster_reconnects_total", &[])
        })
        .sum();
    assert!(
        reconnects >= 2.0,
        "workers moved to another server: {reconnects}"
    );
}

#[test]
fn cluster_config_is_validated() {
    let key = secret();
    let ok = node_config("127.0.0.1", 1, "[\"nats://127.0.0.1:4222\"]", &key);
    let cases: [(String, &[&str]); 5] = [
        (
            ok.replace("node = 1", "node = 256"),
            &["cluster.node", "0-255"],
        ),
        (ok.replace("node = 1\n", ""), &["cluster.node", "missing"]),
        (
            ok.replace("name = \"t\"\nnode", "name = \"a.b\"\nnode"),
            &["cluster.name"],
        ),
        (
            ok.replace("nats://127.0.0.1:4222", "tls://127.0.0.1:4222"),
            &["cluster.nats"],
        ),
        (
            ok.replace("isolation_timeout = \"2s\"", "isolation_timeout = \"1s\""),
            &["cluster.isolation_timeout"],
        ),
    ];
    for (config, mentions) in cases {
        let exit = run_to_exit(&config, &["--check"]);
        assert_eq!(exit.status.code(), Some(1), "{config}\n{}", exit.stderr);
        for m in mentions {
            assert!(exit.stderr.contains(m), "{m}: {}", exit.stderr);
        }
    }
    let short = temp_dir().join("short.key");
    std::fs::write(&short, "tiny").unwrap();
    let exit = run_to_exit(
        &node_config("127.0.0.1", 1, "[\"127.0.0.1\"]", &short),
        &["--check"],
    );
    assert_eq!(exit.status.code(), Some(1));
    assert!(
        exit.stderr.contains("cluster.secret_file"),
        "{}",
        exit.stderr
    );
    let exit = run_to_exit(&ok, &["--check"]);
    assert_eq!(exit.status.code(), Some(0), "{}", exit.stderr);
}

/// SPEC §15 with §7: the clients an isolated node closes get their `$disconnect`
/// (1001 "Going away"), so the application learns they are gone.
#[test]
fn isolation_sends_each_closed_client_its_disconnect() {
    let mut nats = NatsServer::start();
    let backend = crate::backend::Backend::ok();
    let mut config = node_config("127.0.0.2", 1, &format!("[\"{}\"]", nats.url()), &secret());
    config.push_str(&crate::backend::aws_integration(
        "backend",
        &backend.url("/life"),
        "",
    ));
    config.push_str(&crate::backend::one_way_route("$disconnect", "backend"));
    let gw = Gateway::start(&config);
    wait_connected(&gw);
    let mut raw = Raw::connect(gw.listen, "/prod");
    let id = id_of(&mut raw);
    nats.kill();
    raw.stream
        .set_read_timeout(Some(ISOLATION + Duration::from_secs(3)))
        .unwrap();
    raw.expect_close_with(1001, "Going away");
    let d = backend.wait_event_of("DISCONNECT", &id);
    let ctx = &d.event()["requestContext"];
    assert_eq!(ctx["disconnectStatusCode"], 1001, "{ctx}");
    assert_eq!(ctx["disconnectReason"], "Going away", "{ctx}");
    assert!(gw.stderr().contains("cut off from NATS"), "{}", gw.stderr());
}

/// A node that never reaches NATS serves its clients only until `isolation_timeout`
/// (it cannot prove to other nodes that they are alive), and says why in its log.
#[test]
fn a_node_that_never_reaches_nats_isolates_itself() {
    let port = crate::nats_fixture::free_port("127.0.0.1");
    let nats = format!("[\"nats://127.0.0.1:{port}\"]");
    let gw = Gateway::start(&node_config("127.0.0.2", 1, &nats, &secret()));
    let started = Instant::now();
    let mut raw = Raw::connect(gw.listen, "/prod");
    let id = id_of(&mut raw);
    Mgmt::connect(gw.management).post(&id, b"local").expect(200);
    assert_eq!(raw.recv_text(), "local");
    raw.stream
        .set_read_timeout(Some(ISOLATION + Duration::from_secs(3)))
        .unwrap();
    raw.expect_close_with(1001, "Going away");
    assert!(started.elapsed() >= ISOLATION - Duration::from_millis(300));
    let log = gw.stderr();
    assert!(log.contains("nats: cannot connect to"), "{log}");
    let health = Mgmt::connect(gw.management).call("GET", "/health", &[], b"");
    health.expect(503);
    assert_eq!(health.json()["nats"]["connected"], 0);
}

/// SPEC §15 "a 410 is never false": node B alone loses its NATS server (each node
/// uses a different server of a NATS cluster). Node A answers 503 for B's id while B
/// still serves the connection, and 410 only after B has closed it.
#[test]
fn a_410_comes_only_after_the_cut_off_node_closed_the_connection() {
    let mut cluster = NatsCluster::start();
    let key = secret();
    let one = |i: usize| format!("[\"{}\"]", cluster.servers[i].url());
    let a = Gateway::start(&node_config("127.0.0.2", 1, &one(0), &key));
    let b = Gateway::start(&node_config("127.0.0.3", 2, &one(1), &key));
    wait_connected(&a);
    wait_connected(&b);
    let mut on_b = Raw::connect(b.listen, "/prod");
    let id_b = id_of(&mut on_b);
    let mut m = Mgmt::connect(a.management);
    post_settled(&mut m, &id_b, b"hello").expect(200);
    assert_eq!(on_b.recv_text(), "hello");
    on_b.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let closed_at = std::thread::spawn(move || loop {
        let f = on_b.frame();
        if f.opcode == 8 {
            assert_eq!(f.close_code(), Some(1001), "{f:?}");
            return Instant::now();
        }
    });
    cluster.servers[1].kill();
    let mut answers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = m.post(&id_b, b"still there?");
        answers.push((Instant::now(), r.status));
        assert!(
            r.status == 503 || r.status == 410,
            "{:?}",
            answers.iter().map(|a| a.1).collect::<Vec<_>>()
        );
        if r.status == 410 {
            break;
        }
        assert!(Instant::now() < deadline, "no 410 within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    let closed_at = closed_at.join().expect("B closed its client with 1001");
    let first_410 = answers.last().unwrap().0;
    assert!(
        first_410 > closed_at,
        "410 {:?} before the close",
        closed_at - first_410
    );
}

/// SPEC §15 "a 410 is never false" with a `$connect` still pending when the node is
/// cut off: its answer (200, after the isolation) must not open the client on the
/// isolated node; the client is dropped as isolation drops a handshaking one (no
/// 101), and since `$connect` accepted, the backend still gets its `$disconnect`.
#[test]
fn a_connect_pending_at_isolation_does_not_open_the_client() {
    let mut nats = NatsServer::start();
    let slow = Duration::from_secs(4);
    let backend = crate::backend::Backend::start(move |r| {
        let reply = crate::backend::Reply::ok("");
        if r.event_type() == Some("CONNECT") {
            reply.delay(slow)
        } else {
            reply
        }
    });
    let mut config = node_config("127.0.0.2", 1, &format!("[\"{}\"]", nats.url()), &secret());
    config.push_str(&crate::backend::aws_integration(
        "backend",
        &backend.url("/life"),
        "timeout = \"10s\"",
    ));
    config.push_str(&crate::backend::one_way_route("$connect", "backend"));
    config.push_str(&crate::backend::one_way_route("$disconnect", "backend"));
    let gw = Gateway::start(&config);
    wait_connected(&gw);
    let mut s = TcpStream::connect(gw.listen).unwrap();
    s.write_all(upgrade_request("/prod").as_bytes()).unwrap();
    let id = backend
        .wait_event("CONNECT")
        .connection_id()
        .unwrap()
        .to_string();
    nats.kill();
    let lost = Instant::now();
    // Read until the gateway closes the socket (or the deadline, past `$connect`'s
    // answer: an open client is then silent and the read times out).
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut got = Vec::new();
    let mut closed = false;
    let mut b = [0u8; 4096];
    while lost.elapsed() < slow + Duration::from_secs(3) {
        match s.read(&mut b) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        closed && !text.starts_with("HTTP/1.1 101"),
        "the client of a `$connect` pending at isolation must not be opened \
         (closed: {closed}, got: {text:?})"
    );
    assert!(lost.elapsed() >= ISOLATION - Duration::from_millis(300));
    let d = backend.wait_event_of("DISCONNECT", &id);
    assert!(d.event()["requestContext"]["disconnectStatusCode"].is_number());
}
