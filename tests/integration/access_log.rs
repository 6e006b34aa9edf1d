//! Access logs (SPEC §10.4): every `$context` variable against the events the backend
//! received, JSON escaping of hostile values, rotation by SIGHUP, and a destination
//! nobody reads that makes lines drop without slowing any client.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::backend::*;
use crate::mgmt::{call, eventually, metric_sum};
use crate::support::*;

/// Every variable SPEC §10.4 lists, each as a JSON string field named like it.
const VARIABLES: &[&str] = &[
    "requestId",
    "extendedRequestId",
    "apiId",
    "stage",
    "domainName",
    "routeKey",
    "eventType",
    "messageId",
    "messageDirection",
    "connectionId",
    "connectedAt",
    "requestTime",
    "requestTimeEpoch",
    "identity.sourceIp",
    "identity.userAgent",
    "status",
    "error.message",
    "error.responseType",
    "integrationStatus",
    "integrationLatency",
    "integration.status",
    "integration.latency",
    "integration.error",
    "authorizer.principalId",
    "authorizer.tenant",
    "authorizer.status",
    "authorizer.latency",
    "authorizer.error",
    "disconnectStatusCode",
    "disconnectReason",
];

fn all_variables_format() -> String {
    let fields: Vec<String> = VARIABLES
        .iter()
        .map(|v| format!("\"{v}\":\"$context.{v}\""))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// An `[access_log]` table writing `format` to `path`.
fn access_log(path: &Path, format: &str) -> String {
    format!(
        "[access_log]\npath = {}\nformat = {}\n",
        toml_str(&path.display().to_string()),
        toml_str(format)
    )
}

/// Every line of the file so far, parsed as JSON (each must be).
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read(path).unwrap_or_default();
    text.split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!("not a JSON line ({e}): {:?}", String::from_utf8_lossy(l))
            })
        })
        .collect()
}

/// Waits until the file holds a line of `event_type`, and returns it.
fn wait_line(path: &Path, event_type: &str) -> Value {
    eventually(
        &format!("a {event_type} line in {}", path.display()),
        READ_TIMEOUT,
        || {
            json_lines(path)
                .into_iter()
                .find(|l| l["eventType"] == event_type)
        },
    )
}

/// The event's field as the log renders it: strings as they are, numbers as text.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The CONNECT, MESSAGE and DISCONNECT lines repeat what the backend's events said.
fn check_against_event(line: &Value, event: &Value) {
    let ctx = &event["requestContext"];
    for (var, field) in [
        ("requestId", "requestId"),
        ("extendedRequestId", "extendedRequestId"),
        ("apiId", "apiId"),
        ("stage", "stage"),
        ("domainName", "domainName"),
        ("routeKey", "routeKey"),
        ("eventType", "eventType"),
        ("messageDirection", "messageDirection"),
        ("connectionId", "connectionId"),
        ("connectedAt", "connectedAt"),
        ("requestTime", "requestTime"),
        ("requestTimeEpoch", "requestTimeEpoch"),
        ("messageId", "messageId"),
        ("disconnectStatusCode", "disconnectStatusCode"),
        ("disconnectReason", "disconnectReason"),
    ] {
        assert_eq!(
            line[var].as_str().unwrap(),
            as_text(&ctx[field]),
            "{var} in {line} vs {ctx}"
        );
    }
    assert_eq!(line["identity.sourceIp"], ctx["identity"]["sourceIp"]);
    assert_eq!(line["identity.userAgent"], ctx["identity"]["userAgent"]);
    // No authorizer yet (SPEC §11): those render `-`, as do the gateway's errors.
    for var in [
        "authorizer.principalId",
        "authorizer.tenant",
        "authorizer.status",
        "authorizer.latency",
        "authorizer.error",
        "error.message",
        "error.responseType",
        "integration.error",
    ] {
        assert_eq!(line[var], "-", "{var} in {line}");
    }
}

#[test]
fn every_variable_matches_the_events_the_backend_received() {
    let backend = Backend::start(|r| match r.event_type() {
        Some("MESSAGE") => Reply::ok(r.message().unwrap_or_default()),
        _ => Reply::empty(),
    });
    let log = temp_dir().join("access.log");
    let mut config = all_routes_config(&backend.url("/ws"), "", "");
    config.push_str(&access_log(&log, &all_variables_format()));
    let gw = Gateway::start(&config);
    let mut headers = ws_headers("gw.example:9");
    headers.push(("User-Agent".into(), "alog-test/1.0".into()));
    let mut raw = raw_with(gw.listen, "/prod", &headers);
    raw.send_text("hello");
    assert_eq!(raw.recv_text(), "hello");
    raw.send(true, OP_CLOSE, &close_payload(4001, b"bye"));
    assert_eq!(raw.frame().opcode, OP_CLOSE);

    let connect = wait_line(&log, "CONNECT");
    let message = wait_line(&log, "MESSAGE");
    let disconnect = wait_line(&log, "DISCONNECT");
    check_against_event(&connect, backend.wait_event("CONNECT").event());
    check_against_event(&message, backend.wait_event("MESSAGE").event());
    check_against_event(&disconnect, backend.wait_event("DISCONNECT").event());

    assert_eq!(connect["routeKey"], "$connect");
    assert_eq!(connect["messageId"], "-");
    assert_eq!(connect["identity.userAgent"], "alog-test/1.0");
    assert_eq!(connect["domainName"], "gw.example:9");
    assert_eq!(message["routeKey"], "$default");
    assert_eq!(disconnect["disconnectStatusCode"], "4001");
    assert_eq!(disconnect["disconnectReason"], "bye");
    // Connect and message called the backend: its status and latency (ms), twice
    // named; the 101 is logged as AWS logs it, 200.
    for line in [&connect, &message] {
        assert_eq!(line["status"], "200", "{line}");
        assert_eq!(line["integrationStatus"], "200", "{line}");
        assert_eq!(line["integration.status"], "200", "{line}");
        let latency: u64 = line["integrationLatency"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(latency < 5_000, "{line}");
        assert_eq!(line["integration.latency"], line["integrationLatency"]);
    }
    // `$disconnect` is fire-and-forget: its line is written as the connection ends.
    assert_eq!(disconnect["status"], "200");
    assert_eq!(disconnect["integrationStatus"], "-");
    assert_eq!(json_lines(&log).len(), 3, "one line per event");
}

#[test]
fn gateway_errors_are_logged_with_their_status_and_response_type() {
    let backend = Backend::always(500, "nope");
    let log = temp_dir().join("access.log");
    let mut config = api_config("$request.body.action", None, "");
    config.push_str(&aws_integration("failing", &backend.url("/ws"), ""));
    let down = format!("http://127.0.0.1:{}/ws", closed_port());
    config.push_str(&aws_integration("down", &down, ""));
    config.push_str(&route("fail", "failing"));
    config.push_str(&route("down", "down"));
    config.push_str(&access_log(&log, &all_variables_format()));
    let gw = Gateway::start(&config);
    let mut raw = gw.raw();
    raw.send_text(r#"{"action":"fail"}"#);
    parse_error_frame(&raw.recv_text(), "Internal server error");
    raw.send_text(r#"{"action":"down"}"#);
    parse_error_frame(&raw.recv_text(), "Internal server error");
    raw.send_text(r#"{"action":"nowhere"}"#);
    parse_error_frame(&raw.recv_text(), "Forbidden");

    let lines = eventually("four lines", READ_TIMEOUT, || {
        let l = json_lines(&log);
        (l.len() >= 4).then_some(l)
    });
    // No `$connect` route: accepted at once, no integration.
    assert_eq!(lines[0]["eventType"], "CONNECT");
    assert_eq!(lines[0]["status"], "200");
    assert_eq!(lines[0]["integrationLatency"], "-");
    let by_route = |key: &str| {
        lines
            .iter()
            .find(|l| l["eventType"] == "MESSAGE" && l["routeKey"] == key)
            .unwrap_or_else(|| panic!("no MESSAGE line for {key}: {lines:?}"))
    };
    let fail = by_route("fail");
    assert_eq!(fail["status"], "500");
    assert_eq!(fail["error.message"], "Internal server error");
    assert_eq!(fail["error.responseType"], "DEFAULT_5XX");
    assert_eq!(fail["integrationStatus"], "500");
    let down = by_route("down");
    assert_eq!(down["status"], "502");
    assert_eq!(down["error.responseType"], "INTEGRATION_FAILURE");
    assert_eq!(down["integrationStatus"], "-");
    assert_ne!(down["integration.error"], "-");
    let forbidden = by_route("-");
    assert_eq!(forbidden["status"], "403");
    assert_eq!(forbidden["error.message"], "Forbidden");
    assert_eq!(forbidden["integrationLatency"], "-");
}

#[test]
fn hostile_values_are_escaped_into_valid_json_lines() {
    let log = temp_dir().join("access.log");
    let mut config = echo_config("");
    config.push_str(&route("we\"ird\\key", "echo"));
    config.push_str(&access_log(&log, &all_variables_format()));
    let gw = Gateway::start(&config);
    // A User-Agent with quotes, a backslash, a tab, braces and bytes that are not UTF-8.
    let mut s = tcp(gw.listen);
    let mut req = b"GET /prod HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        .to_vec();
    req.extend_from_slice(b"User-Agent: a\"b\\c\t}{\xff\xfe\"\r\n\r\n");
    std::io::Write::write_all(&mut s, &req).unwrap();
    assert_eq!(read_response(&mut s).status, 101);
    let mut raw = Raw { stream: s };
    raw.send_text(r#"{"action":"we\"ird\\key"}"#);
    raw.recv_text();
    // A close reason with a quote, a newline and what would end the JSON object.
    raw.send(true, OP_CLOSE, &close_payload(4000, b"x\"}\n{\"evil\":1"));
    assert_eq!(raw.frame().opcode, OP_CLOSE);

    let disconnect = wait_line(&log, "DISCONNECT");
    let lines = json_lines(&log);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let ua = "a\"b\\c\t}{\u{fffd}\u{fffd}\"";
    for l in &lines {
        assert_eq!(l["identity.userAgent"], ua, "{l}");
    }
    assert_eq!(lines[1]["routeKey"], "we\"ird\\key");
    assert_eq!(disconnect["disconnectReason"], "x\"}\n{\"evil\":1");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 3, "one record per line: {text}");
}

#[test]
fn sighup_reopens_the_file_for_rotation() {
    let dir = temp_dir();
    let log = dir.join("access.log");
    let rotated = dir.join("access.log.1");
    let mut config = echo_config("");
    config.push_str(&access_log(
        &log,
        r#"{"eventType":"$context.eventType","m":"$context.messageId"}"#,
    ));
    let mut gw = Gateway::start(&config);
    let mut c = gw.client();
    assert_eq!(c.ask("before"), "before");
    wait_line(&log, "MESSAGE");
    std::fs::rename(&log, &rotated).unwrap();
    let hup = Command::new("kill")
        .arg("-HUP")
        .arg(gw.pid().to_string())
        .status()
        .unwrap();
    assert!(hup.success());
    // The workers reopen as soon as they are woken; until then lines still go to the
    // renamed file, none is lost.
    let mut sent = 1;
    eventually("a line in the new file", READ_TIMEOUT, || {
        assert_eq!(c.ask("after"), "after");
        sent += 1;
        json_lines(&log).first().cloned()
    });
    let total = |p: &Path| {
        json_lines(p)
            .iter()
            .filter(|l| l["eventType"] == "MESSAGE")
            .count()
    };
    eventually("every message logged once", READ_TIMEOUT, || {
        (total(&rotated) + total(&log) == sent).then_some(())
    });
    assert!(total(&rotated) >= 1);
    assert!(gw.stderr().contains("SIGHUP"), "{}", gw.stderr());
    assert!(gw.try_exit().is_none(), "SIGHUP must not end the gateway");
}

#[test]
fn a_fifo_nobody_reads_drops_lines_without_slowing_clients() {
    let dir = temp_dir();
    let fifo: PathBuf = dir.join("access.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Held open for reading (O_RDWR never blocks on Linux) but never read: the
    // gateway's open succeeds, then the pipe fills.
    let _held = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let padding = "p".repeat(2000);
    let mut config = echo_config("").replacen("[server]\n", "[server]\nworkers = 1\n", 1);
    config.push_str(&access_log(
        &fifo,
        &format!(r#"{{"m":"$context.messageId","pad":"{padding}"}}"#),
    ));
    let gw = Gateway::start(&config);
    // Pipe (64 KiB) and buffer (256 KiB) hold ~160 lines: 1000 messages overflow.
    let mut flood = gw.raw();
    for i in 0..1000 {
        flood.send_text(&format!("m{i}"));
    }
    for i in 0..1000 {
        assert_eq!(flood.recv_text(), format!("m{i}"));
    }
    let mut other = gw.client();
    for i in 0..20 {
        assert_eq!(other.ask(&format!("still {i}")), format!("still {i}"));
    }
    let text = call(gw.management, "GET", "/metrics", &[], b"").text();
    let dropped = metric_sum(&text, "wsgate_access_log_dropped_total", &[]);
    assert!(dropped >= 800.0, "dropped {dropped}:\n{text}");
}

#[test]
fn stdout_is_the_default_and_unknown_variables_are_config_errors() {
    let mut config = echo_config("");
    config.push_str("[access_log]\nformat = \"$context.eventType $context.status\"\n");
    let gw = Gateway::start(&config);
    gw.client().ask("hi");
    eventually("a MESSAGE line on stdout", READ_TIMEOUT, || {
        gw.stdout_lines()
            .iter()
            .any(|l| l == "MESSAGE 200")
            .then_some(())
    });
    assert!(gw.stdout_lines().iter().any(|l| l == "CONNECT 200"));

    let mut bad = echo_config("");
    bad.push_str("[access_log]\nformat = \"$context.requestId $context.sourceIp\"\n");
    let exit = run_to_exit(&bad, &[]);
    assert!(!exit.status.success());
    assert!(
        exit.stderr.contains("access_log.format") && exit.stderr.contains("$context.sourceIp"),
        "{}",
        exit.stderr
    );
}
