//! Numbers as sent (SPEC §4): simd-json's tape keeps a number's value, not its text,
//! so the text is found again in the message. The n-th number node of the tape is the
//! n-th number token of the text (both in document order), so one forward pass over
//! both pairs them up: [`Numbers`] does that once per message, on the first number
//! stringified, and answers every later look-up from that index. Work is linear in the
//! message size, whatever the count and order of the numbers looked up.
//!
//! The same scanner lets a message hold numbers beyond `f64`/`u64` (`1e400`,
//! `123456789012345678901234567890`), which simd-json refuses: [`neutralize`] turns
//! every well-formed number of the scratch copy into a `0` padded with spaces, so the
//! copy parses, and the text is still read from the original message.

use simd_json::{Node, StaticNode};

use super::work;

/// The text span of every number node of one message's tape, built on first use.
#[derive(Debug, Default)]
pub(super) struct Numbers {
    built: bool,
    /// (tape index, text start, text end) per number node, ascending in both.
    spans: Vec<(usize, usize, usize)>,
    /// Where the next look-up most likely is: right after the last one found, as
    /// stringification visits numbers in document order.
    next: usize,
}

impl Numbers {
    /// Forgets the previous message (keeps the allocation).
    pub(super) fn reset(&mut self) {
        self.built = false;
        self.spans.clear();
        self.next = 0;
    }

    /// The source text of the number node at `tape[index]`, or `None` when the tape
    /// and the text disagree (they do not for JSON simd-json accepted).
    pub(super) fn text<'t>(
        &mut self,
        tape: &[Node<'_>],
        text: &'t [u8],
        index: usize,
    ) -> Option<&'t [u8]> {
        if !self.built {
            self.build(tape, text);
        }
        let found = match self.spans.get(self.next) {
            Some(&(at, ..)) if at == index => self.next,
            _ => self
                .spans
                .binary_search_by_key(&index, |&(at, ..)| at)
                .ok()?,
        };
        self.next = found + 1;
        let &(_, start, end) = self.spans.get(found)?;
        text.get(start..end)
    }

    /// One pass over the tape and the text together.
    fn build(&mut self, tape: &[Node<'_>], text: &[u8]) {
        self.built = true;
        let mut pos = 0;
        for (index, node) in tape.iter().enumerate() {
            if !is_number(node) {
                continue;
            }
            let Some((start, end)) = next_number_token(text, pos) else {
                break;
            };
            self.spans.push((index, start, end));
            pos = end;
        }
        work::add(tape.len() + pos);
    }
}

pub(super) fn is_number(node: &Node<'_>) -> bool {
    matches!(
        node,
        Node::Static(StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_))
    )
}

/// Whether `b` may continue a number token.
fn is_number_byte(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
}

/// The span of the first number token at or after `from` in JSON text (strings
/// skipped, escapes included), or `None`.
pub(super) fn next_number_token(text: &[u8], from: usize) -> Option<(usize, usize)> {
    let mut i = from;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => i = string_end(text, i),
            b'-' | b'0'..=b'9' => {
                let start = i;
                while text.get(i).is_some_and(|&b| is_number_byte(b)) {
                    i += 1;
                }
                return Some((start, i));
            }
            _ => i += 1,
        }
    }
    None
}

/// The offset after the string whose opening quote is at `quote` (the end of the text
/// when it is not closed).
fn string_end(text: &[u8], quote: usize) -> usize {
    let mut i = quote + 1;
    while let Some(&b) = text.get(i) {
        match b {
            b'"' => return i + 1,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    text.len()
}

/// Whether `token` is a JSON number (RFC 8259 §6), of any size:
/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
pub(super) fn is_json_number(token: &[u8]) -> bool {
    fn digits(t: &[u8], i: &mut usize) -> usize {
        let start = *i;
        while t.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    }
    let mut i = usize::from(token.first() == Some(&b'-'));
    match token.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(token, &mut i);
        }
        _ => return false,
    }
    if token.get(i) == Some(&b'.') {
        i += 1;
        if digits(token, &mut i) == 0 {
            return false;
        }
    }
    if matches!(token.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(token.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(token, &mut i) == 0 {
            return false;
        }
    }
    i == token.len()
}

/// Rewrites every well-formed number token of `json` (outside strings) as `0` and
/// spaces of the same total length, so a parser that rejects numbers beyond its range
/// accepts it; malformed tokens are left for the parser to refuse.
pub(super) fn neutralize(json: &mut [u8]) {
    let mut pos = 0;
    while let Some((start, end)) = next_number_token(json, pos) {
        if let Some(token) = json.get_mut(start..end) {
            if is_json_number(token) {
                token.fill(b' ');
                if let Some(first) = token.first_mut() {
                    *first = b'0';
                }
            }
        }
        pos = end;
    }
    work::add(json.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_number_grammar() {
        for ok in [
            "0",
            "-0",
            "1",
            "10",
            "1.5",
            "1e400",
            "-1E-400",
            "1.0e+3",
            "123456789012345678901234567890",
        ] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1-2", "--1", "1.5.5", "1ee2",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn neutralize_keeps_length_strings_and_malformed_tokens() {
        let mut json =
            br#"{"a":1e400,"s":"12 \"3","b":[-123456789012345678901234567890,01]}"#.to_vec();
        let len = json.len();
        neutralize(&mut json);
        assert_eq!(json.len(), len);
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"a":0    ,"s":"12 \"3","b":[0                              ,01]}"#
        );
    }

    #[test]
    fn number_tokens_skip_strings() {
        let text = br#"{"x":"1\"2","y":-3.5e2}"#;
        let (s, e) = next_number_token(text, 0).unwrap();
        assert_eq!(&text[s..e], b"-3.5e2");
        assert_eq!(next_number_token(text, e), None);
    }
}
