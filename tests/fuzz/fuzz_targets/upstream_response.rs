#![no_main]
//! A backend reply fed whole, at chosen cuts and byte by byte: the same outcome, no panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| wsgate::upstream::response::check_splits(input));
