//! SPEC §13: `management.on_api_listener = true` serves `@connections` on the client
//! port (with the management auth and bounds), while upgrades and every other
//! request keep §3's answers; without it the client port answers as before.

use crate::mgmt::*;
use crate::support::*;

const TOKEN: &str = "auth = \"token\"\ntoken = \"s3cret\"\non_api_listener = true";
const OK: &[(&str, &str)] = &[("Authorization", "Bearer s3cret")];

fn two_workers(management: &str) -> Gateway {
    Gateway::start_with(&whoami_config(management, ""), &["--workers", "2"])
}

#[test]
fn connections_calls_on_the_client_port_post_get_and_delete() {
    let gw = two_workers(TOKEN);
    let mut raw = gw.raw();
    let id = id_of(&mut raw);
    // Through the CLIENT port, keep-alive, with and without the stage.
    let mut m = Mgmt::connect(gw.listen);
    let path = format!("/prod/@connections/{id}");
    m.call("POST", &path, OK, b"via the api port").expect(200);
    assert_eq!(raw.recv_text(), "via the api port");
    let v = m.call("GET", &path, OK, b"").expect(200).json();
    assert_eq!(v["identity"]["sourceIp"], "127.0.0.1");
    m.call("POST", &path, &[("Authorization", "Bearer wrong")], b"no")
        .expect_error(403, "ForbiddenException");
    // Only `@connections` is served there: /health and /metrics are not.
    m.call("GET", "/health", OK, b"").expect_some_error(404);
    m.call("GET", "/metrics", OK, b"").expect_some_error(404);
    // Percent-encoded, without the stage.
    let encoded = format!("/%40connections/{}", id.replace('=', "%3D"));
    m.call("DELETE", &encoded, OK, b"").expect(204);
    raw.expect_close_with(1000, "Connection Closed Normally");
    m.call("GET", &path, OK, b"")
        .expect_error(410, "GoneException");
    // A call that starts a fresh connection with a wrong token is refused too.
    call(gw.listen, "GET", &path, &[], b"").expect_error(403, "ForbiddenException");
}

#[test]
fn ids_owned_by_either_worker_work_from_one_api_port_connection() {
    let gw = two_workers(TOKEN);
    // 24 clients: the kernel's hash leaves one worker without any once in 2^23 runs.
    let mut clients: Vec<(Raw, String)> = (0..24)
        .map(|_| {
            let mut r = gw.raw();
            let id = id_of(&mut r);
            (r, id)
        })
        .collect();
    let ws: Vec<u8> = clients.iter().map(|(_, id)| worker_of(&gw, id)).collect();
    assert!(
        ws.contains(&0) && ws.contains(&1),
        "both workers own clients: {ws:?}"
    );
    // Pipelined on one connection: whichever worker accepted it, some ids are the
    // other worker's.
    let mut bytes = Vec::new();
    for (i, (_, id)) in clients.iter().enumerate() {
        let t = format!("/prod/@connections/{id}");
        bytes.extend(request_bytes(
            "POST",
            &t,
            OK,
            format!("to {i}").as_bytes(),
            false,
        ));
    }
    let mut m = Mgmt::connect(gw.listen);
    std::io::Write::write_all(&mut m.stream, &bytes).unwrap();
    for _ in &clients {
        m.read_reply().expect(200);
    }
    for (i, (raw, _)) in clients.iter_mut().enumerate() {
        assert_eq!(raw.recv_text(), format!("to {i}"));
    }
    // They were never clients: no connect counted for the API-port calls.
    let connects = gw
        .stderr()
        .lines()
        .filter(|l| l.contains("event=connect "))
        .count();
    assert_eq!(
        connects,
        clients.len(),
        "only the WebSocket clients connected"
    );
    assert!(
        !gw.stderr().contains("event=disconnect"),
        "nothing disconnected"
    );
}

#[test]
fn upgrades_and_other_requests_keep_their_answers() {
    let gw = two_workers(TOKEN);
    let mut raw = gw.raw();
    id_of(&mut raw);
    let mut s = tcp(gw.listen);
    std::io::Write::write_all(&mut s, b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s).status, 404);
    let r = http(gw.listen, b"GET /prod HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 426);
    let r = http(
        gw.listen,
        b"POST /prod HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn without_the_setting_connections_paths_on_the_client_port_are_405() {
    let gw = Gateway::start(&whoami_config("auth = \"token\"\ntoken = \"s3cret\"", ""));
    let r = http(
        gw.listen,
        b"POST /prod/@connections/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn the_setting_needs_an_authenticated_management_api() {
    let exit = run_to_exit(&whoami_config("on_api_listener = true", ""), &[]);
    assert!(!exit.status.success());
    assert!(
        exit.stderr.contains("management.on_api_listener"),
        "the error names the key: {}",
        exit.stderr
    );
}
