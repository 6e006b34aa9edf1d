//! The fuzz seed corpora (`tests/fuzz/corpus/<target>/`) as ordinary unit tests. Each
//! test runs the same logic as its fuzz target (`tests/fuzz/fuzz_targets/<target>.rs`)
//! on every seed, so `cargo test` catches a seed that panics without a fuzzer. A few
//! known seeds also have their expected outcome asserted.

use std::path::PathBuf;

use crate::buf::Pool;
use crate::frame::Error;
use crate::handshake::{self, Rejection};
use crate::message::{Event, Limits, Payload, Reader, MAX_PARTIAL_BYTES};
use crate::route::{Expression, Selector};

/// Every seed of `target` as (file name, bytes), sorted by name. A missing directory
/// gives no seeds.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&p).expect("read seed"))
        })
        .collect();
    out.sort();
    out
}

fn seed(all: &[(String, Vec<u8>)], name: &str) -> Vec<u8> {
    all.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("seed {name} is missing"))
        .1
        .clone()
}

/// The `frame` fuzz target's limits.
const FRAME_LIMITS: Limits = Limits {
    max_frame_bytes: 4096,
    max_message_bytes: 16384,
    allow_binary: true,
};

/// The `frame` fuzz target: read `data` as the worker does until an error or until no
/// complete event is left. Returns each event with its payload bytes, then the error if
/// reading stopped on one.
fn frame_target(data: &[u8]) -> (Vec<(String, Vec<u8>)>, Option<Error>) {
    let (mut input, mut pos) = (data.to_vec(), 0);
    let (mut r, mut asm, mut pool) = (Reader::default(), None, Pool::new(2));
    let mut events = Vec::new();
    loop {
        let (n, ev) = match r.read(&mut input[pos..], &mut asm, &mut pool, &FRAME_LIMITS) {
            Ok(read) => read,
            Err(e) => return (events, Some(e)),
        };
        let base = pos;
        pos += n;
        let Some(ev) = ev else {
            assert!(input.len() - pos <= MAX_PARTIAL_BYTES);
            return (events, None);
        };
        let at = |p: std::ops::Range<usize>| input[base + p.start..base + p.end].to_vec();
        events.push(match ev {
            Event::Message {
                kind,
                payload: Payload::Input(p),
            } => (format!("{kind:?}"), at(p)),
            Event::Message {
                kind,
                payload: Payload::Assembled,
            } => {
                let b = asm.take().expect("an assembled message has a buffer");
                let v = b.clone();
                pool.give(b);
                (format!("{kind:?}"), v)
            }
            Event::Ping(p) => ("Ping".into(), at(p)),
            Event::Pong(p) => ("Pong".into(), at(p)),
            Event::Close { code, reason } => (format!("Close({code:?})"), at(reason)),
        });
    }
}

/// The `route_expression` fuzz target: expression, NUL, message.
fn route_expression_target(data: &[u8]) -> Option<Vec<u8>> {
    let (src, message) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let expr = Expression::parse(&String::from_utf8_lossy(src)).ok()?;
    Selector::new().evaluate(&expr, message).map(<[u8]>::to_vec)
}

fn owned(events: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    events
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect()
}

#[test]
fn frame_seeds_do_not_panic() {
    let all = seeds("frame");
    assert!(
        all.len() >= 5,
        "frame seed corpus missing: {} seeds",
        all.len()
    );
    for (name, data) in &all {
        let result = std::panic::catch_unwind(|| frame_target(data));
        assert!(result.is_ok(), "frame seed {name} panicked");
    }
    assert_eq!(
        frame_target(&seed(&all, "text_hello")),
        (owned(&[("Text", b"Hello")]), None)
    );
    assert_eq!(
        frame_target(&seed(&all, "fragmented_text_with_ping")),
        (owned(&[("Ping", b"p"), ("Text", b"Hello")]), None)
    );
    assert_eq!(
        frame_target(&seed(&all, "fragmented_utf8_split")),
        (owned(&[("Text", "κόσμε".as_bytes())]), None)
    );
    assert_eq!(
        frame_target(&seed(&all, "close_1000_bye")),
        (owned(&[("Close(Some(1000))", b"bye")]), None)
    );
    let (events, err) = frame_target(&seed(&all, "binary_pong_close_empty"));
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!((kinds, err), (vec!["Binary", "Pong", "Close(None)"], None));
}

#[test]
fn handshake_seeds_do_not_panic() {
    let all = seeds("handshake");
    assert!(
        all.len() >= 5,
        "handshake seed corpus missing: {} seeds",
        all.len()
    );
    for (name, data) in &all {
        let result = std::panic::catch_unwind(|| {
            if let Err(r) = handshake::parse(data, "prod") {
                r.write_response(&mut Vec::new());
            }
        });
        assert!(result.is_ok(), "handshake seed {name} panicked");
    }
    let good = seed(&all, "good_browser_upgrade");
    let u = handshake::parse(&good, "prod")
        .expect("accepted")
        .expect("complete");
    assert_eq!((u.head_len, u.path), (good.len(), "/prod"));
    assert_eq!(&u.accept, b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    assert_eq!(u.protocols, Some(&b"chat, superchat"[..]));

    let early = seed(&all, "good_rfc6455_with_early_frame");
    let u = handshake::parse(&early, "prod")
        .expect("accepted")
        .expect("complete");
    assert_eq!(
        &early[u.head_len..],
        &[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
    );

    let long = seed(&all, "long_url_4000");
    let u = handshake::parse(&long, "prod")
        .expect("4000-byte target is allowed")
        .expect("complete");
    assert_eq!(u.query.map(str::len), Some(4000 - "/prod?".len()));
    assert_eq!(
        handshake::parse(&seed(&all, "long_url_414"), "prod"),
        Err(Rejection::UriTooLong)
    );
    assert_eq!(
        handshake::parse(&seed(&all, "post"), "prod"),
        Err(Rejection::MethodNotAllowed)
    );
    assert_eq!(
        handshake::parse(&seed(&all, "partial_head"), "prod"),
        Ok(None)
    );
    assert_eq!(
        handshake::parse(&seed(&all, "version_8"), "prod"),
        Err(Rejection::UnsupportedVersion)
    );
}

#[test]
fn route_expression_seeds_do_not_panic() {
    // That corpus belongs to the route_expression target; none yet means nothing to run.
    for (name, data) in seeds("route_expression") {
        let result = std::panic::catch_unwind(|| route_expression_target(&data));
        assert!(result.is_ok(), "route_expression seed {name} panicked");
    }
    assert_eq!(
        route_expression_target(b"$request.body.action\0{\"action\":\"join\"}"),
        Some(b"join".to_vec())
    );
}

/// The `management` fuzz target's config: SigV4 with the seeds' key pair, 2 workers,
/// epoch 7, the clock at the seeds' `X-Amz-Date` (2026-11-25T12:00:00Z).
fn management_config() -> crate::config::Config {
    const CONFIG: &str = "[api]\nstage = \"prod\"\n\
        [management]\nlisten = \"127.0.0.1:0\"\nauth = \"sigv4\"\n\
        access_key_id = \"AKIDFUZZ\"\nsecret_access_key = \"fuzz/Secret+Key\"\n\
        [limits]\nmax_message_bytes = 4096\n\
        [integrations.m]\ntype = \"mock\"\n[routes.\"$default\"]\nintegration = \"m\"\n";
    crate::config::parse(
        std::path::Path::new("fuzz.toml"),
        CONFIG,
        &Default::default(),
    )
    .expect("the fuzz config is valid")
}

/// The `management` fuzz target: parse pipelined requests and decide each, as the
/// worker does. Returns each decision (`Debug`) and the closing error status, if any.
fn management_target(config: &crate::config::Config, data: &[u8]) -> (Vec<String>, Option<u16>) {
    use crate::management::{parse_next, Decision, Next};
    let (mut pos, mut out, mut decisions) = (0, Vec::new(), Vec::new());
    let ids = crate::id::Codec::new(crate::id::Key::from_secret(b"fuzz"), 0, 7);
    while pos < data.len() {
        match parse_next(&data[pos..], config, 2, &ids, 1_795_608_000) {
            Ok(Next::Request(p)) => {
                assert!(p.consumed > 0 && p.consumed <= data.len() - pos);
                if let Decision::Respond(r) = &p.decision {
                    r.write(&mut out, p.close);
                }
                decisions.push(format!("{:?}", p.decision));
                pos += p.consumed;
            }
            Ok(Next::NeedHead | Next::NeedBody { .. }) => break,
            Err(r) => {
                r.write(&mut out, true);
                return (decisions, Some(r.status));
            }
        }
    }
    (decisions, None)
}

#[test]
fn management_seeds_do_not_panic() {
    let config = management_config();
    let all = seeds("management");
    for (name, data) in &all {
        // The config holds TLS client configs (trait objects): not `RefUnwindSafe`,
        // and nothing here is observed after a panic.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            management_target(&config, data)
        }));
        assert!(result.is_ok(), "management seed {name} panicked");
    }
    let run = |name: &str| management_target(&config, &seed(&all, name));
    // Signed by an independent signer (Python's hmac): accepted. The seeds' ids were
    // issued under another key, so past auth they name no connection here (410).
    let passed = |d: &str| d.starts_with("Respond(Response { status: 410");
    let (d, _) = run("signed_post");
    assert!(d.len() == 1 && passed(&d[0]), "{d:?}");
    let (d, _) = run("signed_get_then_delete");
    assert!(d.len() == 2 && d.iter().all(|d| passed(d)), "{d:?}");
    // The same signature with another body, and the two inputs that used to panic.
    for name in [
        "signed_post_body_swapped",
        "panic_query_percent_non_ascii",
        "panic_amz_date_non_ascii",
    ] {
        let (d, _) = run(name);
        assert!(d.len() == 1 && d[0].starts_with("Refused"), "{name}: {d:?}");
    }
    // Auth comes before /health and /metrics.
    let (d, _) = run("health_metrics_unsigned");
    assert!(
        d.len() == 2 && d.iter().all(|d| d.starts_with("Refused")),
        "{d:?}"
    );
    assert_eq!(run("partial_head"), (vec![], None));
    assert_eq!(run("content_length_conflict"), (vec![], Some(400)));
}

#[test]
fn route_select_seeds_pass_the_target() {
    let all = seeds("route_select");
    assert!(!all.is_empty(), "route_select has seeds");
    for (name, data) in all {
        let result = std::panic::catch_unwind(|| crate::route::fuzz_select(&data));
        assert!(result.is_ok(), "route_select seed {name} failed");
    }
}

#[test]
fn mapping_seeds_pass_the_target() {
    let all = seeds("mapping");
    assert!(!all.is_empty(), "mapping has seeds");
    for (name, data) in all {
        let result = std::panic::catch_unwind(|| crate::mapping::fuzz_http_proxy_request(&data));
        assert!(result.is_ok(), "mapping seed {name} failed");
    }
}

#[test]
fn proxy_protocol_seeds_pass_the_target() {
    use crate::proxy_protocol::{parse, Mode, Status};
    let all = seeds("proxy_protocol");
    assert!(all.len() >= 5, "proxy_protocol has seeds");
    for (name, data) in &all {
        let result = std::panic::catch_unwind(|| crate::proxy_protocol::fuzz_parse(data));
        assert!(result.is_ok(), "proxy_protocol seed {name} failed");
    }
    let source = |name: &str, mode| match parse(&seed(&all, name)[1..], mode) {
        Ok(Status::Done(h)) => h.addresses.map(|a| a.source.to_string()),
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(
        source("v1_tcp4_then_get", Mode::V1).as_deref(),
        Some("192.0.2.7:51000")
    );
    assert_eq!(
        source("v2_inet6_tlv", Mode::Any).as_deref(),
        Some("[2001:db8::7]:51000")
    );
    assert_eq!(source("v2_local", Mode::V2), None);
    assert!(parse(&seed(&all, "plain_get")[1..], Mode::Any).is_err());
    assert!(parse(&seed(&all, "v2_huge_length")[1..], Mode::V2).is_err());
}

#[test]
fn authorizer_seeds_pass_the_target() {
    let all = seeds("authorizer");
    assert!(!all.is_empty(), "authorizer has seeds");
    let arn = "arn:aws:execute-api:local:000000000000:chat/prod/$connect";
    for (name, data) in &all {
        let result = std::panic::catch_unwind(|| crate::authorizer::evaluate(data, arn));
        assert!(result.is_ok(), "authorizer seed {name} panicked");
    }
    assert!(matches!(
        crate::authorizer::evaluate(&seed(&all, "allow"), arn),
        crate::authorizer::Decision::Allow(_)
    ));
    assert!(matches!(
        crate::authorizer::evaluate(&seed(&all, "unauthorized"), arn),
        crate::authorizer::Decision::Unauthorized
    ));
}

#[test]
fn nats_proto_seeds_pass_the_target() {
    let all = seeds("nats_proto");
    assert!(all.len() >= 3, "nats_proto has seeds");
    for (name, data) in &all {
        let result = std::panic::catch_unwind(|| crate::cluster::proto::check_splits(data));
        assert!(result.is_ok(), "nats_proto seed {name} panicked");
    }
    // The stream seed parses to every operation; the oversized MSG is refused.
    let stream = seed(&all, "stream");
    let (ops, err) = crate::cluster::proto::parse_in_pieces(&stream[1..], &[], 1 << 20);
    assert_eq!((ops.len(), err), (9, None), "{ops:?}");
    let (_, err) = crate::cluster::proto::parse_in_pieces(b"MSG a 1 99999\r\n", &[], 1);
    assert_eq!(
        err,
        Some(crate::cluster::proto::Error::PayloadTooLarge(99999))
    );
}

#[test]
fn import_template_seeds_pass_the_target() {
    let all = seeds("import_template");
    assert!(all.len() >= 4, "import_template has seeds");
    for (name, data) in &all {
        let text = std::str::from_utf8(data).expect("seed is text");
        let result = std::panic::catch_unwind(|| {
            crate::import::convert_text("t.yaml", text, &Default::default()).is_ok()
        });
        assert!(result.is_ok(), "import_template seed {name} panicked");
    }
    // The SAM simple chat converts; text that is no template does not.
    let chat = seed(&all, "simple-chat.yaml");
    let chat = std::str::from_utf8(&chat).unwrap();
    assert!(crate::import::convert_text("t.yaml", chat, &Default::default()).is_ok());
    assert!(crate::import::convert_text("t.yaml", "[", &Default::default()).is_err());
}
