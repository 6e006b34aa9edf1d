//! The one percent codec (RFC 3986 §2.1): decoding of query strings and paths as
//! received, and the URI encoding AWS specifies for SigV4 canonical requests and that
//! backend query strings use. Works on bytes, so input that is not ASCII (or not
//! UTF-8) can never split a character.

use std::borrow::Cow;

/// Upper-case hex digits, as AWS's canonical form wants.
const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The value of one hex digit.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes every `%XX` in `s`. A `%` not followed by two hex digits is kept as is
/// (as browsers and AWS do). Borrows when there is nothing to decode.
pub fn decode(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex_value),
                s.get(i + 2).copied().and_then(hex_value),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Cow::Owned(out)
}

/// [`decode`], as text (invalid UTF-8 replaced), for query parameters.
pub fn decode_lossy(s: &str) -> String {
    String::from_utf8_lossy(&decode(s.as_bytes())).into_owned()
}

/// Appends `s` URI-encoded the AWS way: the unreserved characters
/// (`A-Z a-z 0-9 - _ . ~`) stay, every other byte becomes `%XX` (upper case); `/`
/// stays too when `keep_slash` (paths).
pub fn encode_into(out: &mut Vec<u8>, s: &[u8], keep_slash: bool) {
    for &c in s {
        if c.is_ascii_alphanumeric()
            || matches!(c, b'-' | b'_' | b'.' | b'~')
            || (c == b'/' && keep_slash)
        {
            out.push(c);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(c >> 4)], HEX[usize::from(c & 15)]]);
        }
    }
}

/// [`encode_into`] as a new string.
pub fn encode(s: &[u8], keep_slash: bool) -> String {
    let mut out = Vec::with_capacity(s.len());
    encode_into(&mut out, s, keep_slash);
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_keeps_malformed_ones() {
        assert_eq!(&*decode(b"a%20b%3d%3D"), b"a b==");
        assert_eq!(&*decode(b"%"), b"%");
        assert_eq!(&*decode(b"%2"), b"%2");
        assert_eq!(&*decode(b"%zz%4"), b"%zz%4");
        assert!(matches!(decode(b"plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn non_ascii_never_splits() {
        // The inputs that panicked the old `&s[i + 1..i + 3]` slicing.
        assert_eq!(&*decode("%1é".as_bytes()), "%1é".as_bytes());
        assert_eq!(&*decode("%é".as_bytes()), "%é".as_bytes());
        assert_eq!(decode_lossy("x=%C3%A9"), "x=é");
        assert_eq!(decode_lossy("%FF"), "\u{fffd}");
    }

    #[test]
    fn encodes_the_aws_way() {
        assert_eq!(encode(b"a b/c~d=", true), "a%20b/c~d%3D");
        assert_eq!(encode(b"a b/c", false), "a%20b%2Fc");
        assert_eq!(encode("é".as_bytes(), false), "%C3%A9");
        // Every byte round-trips.
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(&*decode(encode(&all, false).as_bytes()), &all[..]);
    }
}
