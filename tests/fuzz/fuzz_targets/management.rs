#![no_main]
//! The management request parser, its decision (auth first) and SigV4 verification on
//! arbitrary bytes, read as pipelined requests the way the worker reads them. The
//! config has a SigV4 key pair and a clock at the seeds' `X-Amz-Date`, so signed
//! seeds reach the canonical request and the connection operations.
use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wsgate::config::Config;
use wsgate::management::{parse_next, Decision, Next};

/// 2026-11-25T12:00:00Z, the seeds' `X-Amz-Date`.
const NOW_UNIX: i64 = 1_795_608_000;

const CONFIG: &str = "[api]\nstage = \"prod\"\n\
    [management]\nlisten = \"127.0.0.1:0\"\nauth = \"sigv4\"\n\
    access_key_id = \"AKIDFUZZ\"\nsecret_access_key = \"fuzz/Secret+Key\"\n\
    [limits]\nmax_message_bytes = 4096\n\
    [integrations.m]\ntype = \"mock\"\n[routes.\"$default\"]\nintegration = \"m\"\n";

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        wsgate::config::parse(Path::new("fuzz.toml"), CONFIG, &Default::default())
            .expect("the fuzz config is valid")
    })
}

fn ids() -> &'static wsgate::id::Codec {
    static I: OnceLock<wsgate::id::Codec> = OnceLock::new();
    I.get_or_init(|| wsgate::id::Codec::new(wsgate::id::Key::from_secret(b"fuzz"), 0, 7))
}

fuzz_target!(|data: &[u8]| {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < data.len() {
        match parse_next(&data[pos..], config(), 2, ids(), NOW_UNIX) {
            Ok(Next::Request(p)) => {
                assert!(p.consumed > 0 && p.consumed <= data.len() - pos);
                if let Decision::Respond(r) = p.decision {
                    r.write(&mut out, p.close);
                }
                pos += p.consumed;
            }
            Ok(Next::NeedHead | Next::NeedBody { .. }) => break,
            Err(r) => {
                r.write(&mut out, true);
                break;
            }
        }
    }
});
