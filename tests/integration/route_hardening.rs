//! Issue 8 hardening of route selection and data mapping (SPEC §4, §5): a message full
//! of numbers does not stall its worker, numbers of any size are JSON, `http_proxy`
//! mappings send what they validate (and nothing for a missing value), mapped headers
//! carry no control bytes, and an empty route key is a config error.

use crate::backend::*;
use crate::support::*;

/// Sends `text` as a fragmented text message, `frame` payload bytes per frame.
fn send_fragmented(raw: &mut Raw, text: &[u8], frame: usize) {
    let chunks: Vec<&[u8]> = text.chunks(frame).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let opcode = if i == 0 { OP_TEXT } else { OP_CONT };
        raw.send(i + 1 == chunks.len(), opcode, chunk);
    }
}

/// `{"action":[0,0,…]}` of exactly `bytes` bytes (`bytes` ≥ 14).
fn number_array(bytes: usize) -> Vec<u8> {
    let mut m = b"{\"action\":[0".to_vec();
    while m.len() + 4 <= bytes {
        m.extend_from_slice(b",0");
    }
    m.extend_from_slice(b"]}");
    m
}

/// A 1 MiB message of numbers (selection used to rescan the message per number:
/// hours at this size) is answered, and so is a small message another client sends
/// right after on the same worker, within the client's usual read timeout.
#[test]
fn a_message_full_of_numbers_does_not_stall_its_worker() {
    let mut c = routing_config("$request.body.action", &["small"], true);
    c = c.replace("[limits]\n", "[limits]\nmax_message_bytes = 1048576\n");
    let gw = Gateway::start_with(&c, &["--workers", "1"]);
    let mut a = gw.raw();
    let mut b = gw.raw();
    send_fragmented(&mut a, &number_array(1 << 20), 32 * 1024);
    b.send_text(r#"{"action":"small"}"#);
    assert_eq!(b.recv_text(), "small", "the second client is served");
    assert_eq!(a.recv_text(), "$default", "the big message is answered too");
}

/// SPEC §4: numbers keep their JSON text, whatever their size; such a message is JSON.
#[test]
fn numbers_beyond_64_bits_are_json_and_keep_their_text() {
    let key = "123456789012345678901234567890";
    let gw = Gateway::start(&routing_config(
        "$request.body.action",
        &["join", key, "1e400"],
        true,
    ));
    let mut c = gw.raw();
    for (message, want) in [
        (r#"{"action":"join","n":1e400}"#.to_string(), "join"),
        (r#"{"action":"join","n":-1e-400}"#.to_string(), "join"),
        (format!(r#"{{"n":[-{key}],"action":"join"}}"#), "join"),
        (format!(r#"{{"action":{key}}}"#), key),
        (r#"{"action":1e400}"#.to_string(), "1e400"),
        (r#"{"action":"join","n":01}"#.to_string(), "$default"),
    ] {
        c.send_text(&message);
        assert_eq!(c.recv_text(), want, "{message}");
    }
}

/// SPEC §5 `http_proxy` data mapping: `context.identity.sourceIp` sends the client's
/// address; a connect-only `route.request.querystring.*` mapping sends no `?name=` on
/// a message route; a body value's NUL, CR and LF never reach the header.
#[test]
fn http_proxy_mappings_send_real_values_and_safe_headers() {
    let backend = Backend::start(|r| Reply::ok(format!("got {}", r.body_str().len())));
    let mut c = api_config("$request.body.action", None, "");
    c.push_str(&http_integration(
        "proxy",
        "http_proxy",
        &backend.url("/proxy"),
        "request_parameters = { \"integration.request.header.x-ip\" = \"context.identity.sourceIp\", \
         \"integration.request.querystring.token\" = \"route.request.querystring.token\", \
         \"integration.request.querystring.room\" = \"route.request.body.room\", \
         \"integration.request.header.x-text\" = \"route.request.body.text\", \
         \"integration.request.header.x-missing\" = \"route.request.body.nope\" }",
    ));
    c.push_str(&route("send", "proxy"));
    let gw = Gateway::start(&c);
    let mut raw = raw_with(gw.listen, "/prod?token=s3cr3t", &ws_headers("127.0.0.1"));
    let message = r#"{"action":"send","room":"r1","text":"a\u0000b\r\nX-Evil: 1"}"#;
    raw.send_text(message);
    assert_eq!(raw.recv_text(), format!("got {}", message.len()));
    let reqs = backend.wait_requests(1);
    let r = &reqs[0];
    assert_eq!(r.header("x-ip"), Some("127.0.0.1"), "{r:?}");
    assert_eq!(
        r.query(),
        vec![("room".to_string(), "r1".to_string())],
        "no token= on a message route: {r:?}"
    );
    let text = r.header("x-text").expect("x-text is sent");
    assert!(
        !text.bytes().any(|b| b < 0x20),
        "no control bytes in a mapped header: {text:?}"
    );
    assert_eq!(text.trim(), "a b  X-Evil: 1", "{r:?}");
    assert_eq!(r.header("X-Evil"), None, "no header smuggled: {r:?}");
    assert_eq!(
        r.header("x-missing"),
        None,
        "a missing value sends nothing: {r:?}"
    );
}

/// SPEC §1: an empty route key is a config error naming the key.
#[test]
fn empty_route_key_is_a_config_error() {
    let mut c = routing_config("$request.body.action", &[""], true);
    c.push('\n');
    let exit = run_to_exit(&c, &["--check"]);
    assert_eq!(exit.status.code(), Some(1), "stderr:\n{}", exit.stderr);
    assert!(
        exit.stderr.contains("routes.\"\"") && exit.stderr.contains("empty"),
        "the error names the key and the problem:\n{}",
        exit.stderr
    );
}
