use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::*;
use crate::config::{self, Overrides};

fn config() -> Config {
    let text = "[api]\nname = \"unit\"\nstage = \"prod\"\n\
                [integrations.m]\ntype = \"mock\"\n[routes.join]\nintegration = \"m\"\n";
    config::parse(Path::new("unit.toml"), text, &Overrides::default()).unwrap()
}

fn identity(ua: Option<&str>) -> Identity {
    Identity::new(
        "10.0.0.7".parse().unwrap(),
        ua,
        "gw.example",
        1_795_508_100_000,
    )
}

fn render(format: &str, r: &Record<'_>) -> String {
    let mut out = Vec::new();
    Format::compile(format)
        .unwrap()
        .render(&mut out, &config(), r);
    String::from_utf8(out).unwrap()
}

#[test]
fn unknown_variables_and_multi_line_formats_are_refused_by_name() {
    let e = Format::compile("$context.requestId $context.nope.x").unwrap_err();
    assert!(e.0.contains("`$context.nope.x`"), "{e}");
    assert!(Format::compile("a\n$context.status").is_err());
    assert!(Format::compile("  ").is_err());
    assert!(Format::compile("$context.").is_err());
    assert!(Format::compile("$context.authorizer.").is_err());
}

#[test]
fn json_shape_is_decided_by_the_first_character() {
    assert!(Format::compile("  {\"a\":\"$context.status\"}")
        .unwrap()
        .is_json());
    assert!(!Format::compile("$context.status {}").unwrap().is_json());
}

#[test]
fn a_trailing_dot_is_text_and_missing_values_are_dashes() {
    let id = identity(None);
    let r = Record {
        event: EventType::Message,
        request_id: b"REQ",
        connection_id: b"CONN",
        identity: Some(&id),
        status: 403,
        ..Record::default()
    };
    let line = render(
        "$context.status. $context.routeKey $context.identity.userAgent $context.authorizer.claim $context.waf.status $context.messageId",
        &r,
    );
    assert_eq!(line, "403. - - - - -");
}

#[test]
fn every_variable_renders_from_the_record() {
    let id = identity(Some("ua/1"));
    let r = Record {
        event: EventType::Disconnect,
        route: None,
        request_id: b"REQ",
        message_id: Some(b"MSG"),
        connection_id: b"CONN",
        identity: Some(&id),
        requested_ms: 1_795_508_102_123,
        status: 502,
        error: Some(INTEGRATION_FAILURE),
        integration: Some(Integration {
            status: Some(500),
            latency_ms: 12,
            error: Some("boom"),
        }),
        disconnect: Some((4001, "bye")),
        authorizer: None,
        validation_error: Some("model \"m\": required"),
    };
    let vars = [
        ("requestId", "REQ"),
        ("extendedRequestId", "REQ"),
        ("apiId", "unit"),
        ("stage", "prod"),
        ("domainName", "gw.example"),
        ("routeKey", "$disconnect"),
        ("eventType", "DISCONNECT"),
        ("messageId", "MSG"),
        ("messageDirection", "IN"),
        ("connectionId", "CONN"),
        ("connectedAt", "1795508100000"),
        ("requestTime", "24/Nov/2026:08:15:02 +0000"),
        ("requestTimeEpoch", "1795508102123"),
        ("identity.sourceIp", "10.0.0.7"),
        ("identity.userAgent", "ua/1"),
        ("status", "502"),
        ("error.message", "Internal server error"),
        ("error.responseType", "INTEGRATION_FAILURE"),
        ("error.validationErrorString", "model \"m\": required"),
        ("integrationStatus", "500"),
        ("integrationLatency", "12"),
        ("integration.status", "500"),
        ("integration.latency", "12"),
        ("integration.error", "boom"),
        ("authorizer.principalId", "-"),
        ("authorizer.status", "-"),
        ("authorizer.latency", "-"),
        ("authorizer.error", "-"),
        ("authorizer.tenant", "-"),
        ("disconnectStatusCode", "4001"),
        ("disconnectReason", "bye"),
    ];
    let format = format!(
        "{{{}}}",
        vars.iter()
            .map(|(k, _)| format!("\"{k}\":\"$context.{k}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let line = render(&format, &r);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    for (k, want) in vars {
        assert_eq!(v[k], want, "{k} in {line}");
    }
}

#[test]
fn hostile_values_stay_valid_json_and_one_line() {
    let id = identity(Some("a\"b\\c\n\u{1}\u{7f}é\u{fffd}"));
    let r = Record {
        request_id: b"REQ",
        connection_id: b"CONN",
        identity: Some(&id),
        disconnect: Some((1000, "x\"}\n{\"evil\":1")),
        ..Record::default()
    };
    let line = render(
        r#"{"ua":"$context.identity.userAgent","reason":"$context.disconnectReason"}"#,
        &r,
    );
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["ua"], "a\"b\\c\n\u{1}\u{7f}é\u{fffd}");
    assert_eq!(v["reason"], "x\"}\n{\"evil\":1");
    // Not JSON-shaped: values as they are, control characters as \xHH.
    let plain = render("ua=$context.identity.userAgent", &r);
    assert_eq!(plain, "ua=a\"b\\c\\x0a\\x01\\x7fé\u{fffd}");
    // Bytes that are not UTF-8 are replaced, so the line is still JSON.
    let mut out = Vec::new();
    write_text(&mut out, true, b"ok\xff\xfe\"");
    assert_eq!(String::from_utf8(out).unwrap(), "ok\u{fffd}\u{fffd}\\\"");
}

#[test]
fn lines_are_written_in_batches_by_size_or_age() {
    let dir = std::env::temp_dir().join(format!("wsgate-alog-due-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("a.log");
    let settings = writer::Settings {
        path: writer::Destination::File(path.clone()),
        format: std::sync::Arc::new(Format::compile("$context.requestId").unwrap()),
    };
    let mut w = writer::Writer::open(&settings).unwrap();
    assert_eq!(w.due(), None, "nothing waits");
    let r = Record {
        request_id: b"RRRRRRRRRRRRRRR=",
        ..Record::default()
    };
    let before = std::time::Instant::now();
    w.log(&config(), &r);
    let due = w.due().expect("a line waits");
    assert!(
        due >= before + writer::FLUSH_DELAY,
        "a small batch waits its delay"
    );
    while w.buffered() < writer::FLUSH_BYTES {
        w.log(&config(), &r);
    }
    assert!(
        w.due().unwrap() < before + writer::FLUSH_DELAY,
        "a full batch is due now"
    );
    w.flush();
    assert_eq!((w.due(), w.buffered()), (None, 0));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.lines().all(|l| l == "RRRRRRRRRRRRRRR="), "whole lines");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn long_client_values_are_cut_and_stay_valid_json() {
    let ua = String::from_utf8_lossy(&[0xff; 16 * 1024]).into_owned();
    let id = identity(Some(&ua));
    let r = Record {
        request_id: b"RRRRRRRRRRRRRRR=",
        identity: Some(&id),
        ..Record::default()
    };
    let line = render("{\"ua\":\"$context.identity.userAgent\"}", &r);
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    let ua = v["ua"].as_str().unwrap();
    assert!(ua.ends_with("..."), "cut and marked");
    assert!(line.len() < 4 * MAX_VALUE_BYTES, "{} bytes", line.len());
}

#[test]
fn a_full_pipe_is_retried_after_a_delay_not_at_once() {
    use std::os::unix::ffi::OsStrExt;
    let dir = std::env::temp_dir().join(format!("wsgate-alog-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log.fifo");
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path; mkfifo only reads it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo");
    // A reader that never reads, so the writer's open succeeds and the pipe fills.
    let _reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap();
    let settings = writer::Settings {
        path: writer::Destination::File(path.clone()),
        format: std::sync::Arc::new(
            Format::compile("$context.requestId padding-padding-padding").unwrap(),
        ),
    };
    let mut w = writer::Writer::open(&settings).unwrap();
    let r = Record {
        request_id: b"RRRRRRRRRRRRRRR=",
        ..Record::default()
    };
    while w.buffered() < 200 * 1024 {
        w.log(&config(), &r);
    }
    w.flush(); // the pipe takes 64 KiB at most
    assert!(w.buffered() > 0, "a full pipe leaves lines waiting");
    let now = std::time::Instant::now();
    let due = w.due().unwrap();
    assert!(
        due > now + writer::FLUSH_DELAY / 2,
        "the next try waits, else the worker would spin"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn authorizer_variables_render_the_connection_context() {
    let crate::authorizer::Decision::Allow(mut a) = crate::authorizer::evaluate(
        br#"{"principalId":"p1","policyDocument":{"Statement":[{"Action":"*","Effect":"Allow","Resource":"*"}]},"context":{"tenant":"t9","n":3}}"#,
        "arn",
    ) else {
        panic!("allowed")
    };
    a.set_latency(12);
    let r = Record {
        authorizer: Some(&a),
        ..Record::default()
    };
    let line = render(
        "$context.authorizer.principalId $context.authorizer.tenant $context.authorizer.n $context.authorizer.latency $context.authorizer.integrationLatency $context.authorizer.missing $context.authorizer.status",
        &r,
    );
    assert_eq!(line, "p1 t9 3 12 12 - -");
}
