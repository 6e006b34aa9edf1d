//! Client-to-server payload masking (RFC 6455 §5.3), applied in place.

/// XORs `buf` with `key`, where `buf[0]` is byte `offset` of the frame's payload (so a
/// payload unmasked in several chunks gives the same result as in one).
///
/// Works a `u64` at a time through safe `chunks_exact_mut` conversions, which the
/// compiler turns into wide loads and stores; `benches/frame.rs` measures it.
pub fn apply(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut k = [0u8; 4];
    for (i, b) in k.iter_mut().enumerate() {
        *b = key[(offset + i) & 3];
    }
    let k8 = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) ^ k8;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// The obvious byte loop, the reference the fast version is tested against.
pub fn apply_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset + i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_bytewise_for_every_length_and_offset() {
        let key = [0x6d, 0xb6, 0xb2, 0x80];
        let data: Vec<u8> = (0..200u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in 0..data.len() {
            for offset in 0..8 {
                let mut a = data[..len].to_vec();
                let mut b = a.clone();
                apply(&mut a, key, offset);
                apply_bytewise(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn chunked_unmask_equals_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..97u8).collect();
        let mut whole = data.clone();
        apply(&mut whole, key, 0);
        let mut parts = data.clone();
        let (a, rest) = parts.split_at_mut(13);
        let (b, c) = rest.split_at_mut(30);
        apply(a, key, 0);
        apply(b, key, 13);
        apply(c, key, 43);
        assert_eq!(parts, whole);
    }

    #[test]
    fn rfc6455_example_hello() {
        // RFC 6455 §5.7: a masked "Hello".
        let mut p = [0x7f, 0x9f, 0x4d, 0x51, 0x58];
        apply(&mut p, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(&p, b"Hello");
    }
}
