#![no_main]
//! One buffer, read as the worker reads: advance, recycle assembled buffers, stop when stuck.
use libfuzzer_sys::fuzz_target;
use wsgate::message::{Event::Message, Limits, Payload::Assembled, Reader, MAX_PARTIAL_BYTES};
#[rustfmt::skip] // Small limits, so short inputs reach every limit check.
const LIMITS: Limits =
    Limits { max_frame_bytes: 4096, max_message_bytes: 16384, allow_binary: true };

fuzz_target!(|data: &[u8]| {
    let (mut input, mut pos) = (data.to_vec(), 0);
    let (mut r, mut asm, mut pool) = (Reader::default(), None, wsgate::buf::Pool::new(2));
    while let Ok((n, ev)) = r.read(&mut input[pos..], &mut asm, &mut pool, &LIMITS) {
        pos += n;
        match ev {
            None => return assert!(input.len() - pos <= MAX_PARTIAL_BYTES),
            Some(Message { payload, .. }) if payload == Assembled => pool.give(asm.take().unwrap()),
            Some(_) => {}
        }
    }
});
