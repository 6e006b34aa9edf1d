//! `http_proxy` data mapping on arbitrary input: mode byte, handshake query, a handshake
//! header value and the message, split at NUL bytes, against fixed mappings. The
//! request must parse as HTTP with only the mapped headers, no control byte in them,
//! the message as body, and linear work (see `wsgate::mapping::fuzz_http_proxy_request`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsgate::mapping::fuzz_http_proxy_request(data));
