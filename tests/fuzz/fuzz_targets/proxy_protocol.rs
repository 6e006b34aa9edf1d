//! The PROXY protocol parser on arbitrary bytes: the first byte picks the mode (off,
//! v1, v2, any); every split of a header must agree with the whole (see
//! `wsgate::proxy_protocol::fuzz_parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsgate::proxy_protocol::fuzz_parse(data));
