#![no_main]
//! Pipelined backend replies (SPEC §16) fed whole, at chosen cuts and byte by byte:
//! the same replies to the same calls and the same end of the connection, no panic.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| wsgate::upstream::response::check_pipelined_splits(input));
