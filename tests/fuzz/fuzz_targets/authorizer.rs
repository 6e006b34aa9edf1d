//! An authorizer's result (a backend's bytes) on arbitrary input: evaluating the
//! policy and the context must not panic, and its work is bounded by the 8 KB limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wsgate::authorizer::evaluate(
        data,
        "arn:aws:execute-api:local:000000000000:chat/prod/$connect",
    );
});
