#![no_main]
//! Bytes from a NATS server, fed whole, byte by byte and at chosen cuts: the same
//! operations and the same error, no panic (`wsgate::cluster::proto::check_splits`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| wsgate::cluster::proto::check_splits(input));
