//! The one JSON string escaper (RFC 8259 §7): events, management replies, error frames
//! and JSON log lines all write strings through it, so no writer can forget a case.
//!
//! Only `"`, `\` and control characters (below 0x20) are escaped; every other byte,
//! UTF-8 included, is copied as is, in whole runs.

/// Whether byte `c` must be escaped inside a JSON string.
fn needs_escape(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

/// The escape sequence for `c`, written into `buf`; returns its length.
fn escape(c: u8, buf: &mut [u8; 6]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let short = match c {
        b'"' => Some(b'"'),
        b'\\' => Some(b'\\'),
        b'\n' => Some(b'n'),
        b'\r' => Some(b'r'),
        b'\t' => Some(b't'),
        _ => None,
    };
    if let Some(s) = short {
        *buf = [b'\\', s, 0, 0, 0, 0];
        return 2;
    }
    *buf = [
        b'\\',
        b'u',
        b'0',
        b'0',
        HEX[usize::from(c >> 4)],
        HEX[usize::from(c & 15)],
    ];
    6
}

/// Appends the escaped contents of `s`, without quotes.
pub fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut rest = s;
    while let Some(i) = rest.iter().position(|&c| needs_escape(c)) {
        let (plain, tail) = rest.split_at(i);
        out.extend_from_slice(plain);
        let mut buf = [0; 6];
        if let Some((&c, tail)) = tail.split_first() {
            let n = escape(c, &mut buf);
            out.extend_from_slice(&buf[..n]);
            rest = tail;
        }
    }
    out.extend_from_slice(rest);
}

/// Appends `s` as a JSON string, quotes included.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// The length of `s` once escaped (without quotes), for writers that frame the
/// result before writing it.
pub fn escaped_len(s: &[u8]) -> usize {
    s.iter()
        .map(|&c| {
            if needs_escape(c) {
                escape(c, &mut [0; 6])
            } else {
                1
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_quotes_backslashes_and_controls_only() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\n\r\t\u{1}\u{1f}é/".as_bytes());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\n\\r\\t\\u0001\\u001fé/\""
        );
    }

    #[test]
    fn escaped_len_matches_what_is_written_and_serde_reads_it_back() {
        let all: Vec<u8> = (0u8..0x80).collect();
        let mut out = Vec::new();
        escape_into(&mut out, &all);
        assert_eq!(out.len(), escaped_len(&all));
        let mut quoted = Vec::new();
        write_str(&mut quoted, &all);
        let back: String = serde_json::from_slice(&quoted).unwrap();
        assert_eq!(back.as_bytes(), &all[..]);
    }
}
