#![no_main]
//! The opening-handshake parser on arbitrary bytes, for the stage "prod".
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match wsgate::handshake::parse(data, "prod") {
        Ok(Some(u)) => assert!(u.head_len <= data.len()),
        Ok(None) => {}
        Err(r) => r.write_response(&mut Vec::new()),
    }
});
