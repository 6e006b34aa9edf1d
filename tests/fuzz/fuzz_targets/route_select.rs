//! Route selection on arbitrary messages: the first byte picks one of a few fixed
//! expressions, the rest is the message. Selection must not panic, must fall back to
//! `$default`, and must count work linear in the message size: a quadratic path
//! (issue 8, defect 2) fails the run (see `wsgate::route::fuzz_select`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsgate::route::fuzz_select(data));
