//! Walking simd-json's tape: following a path to a value (last duplicate key wins)
//! and stringifying what is found (SPEC §4), numbers as their text as sent.

use std::io::Write as _;

use simd_json::{Node, StaticNode};

use super::expression::{Part, Path, Step};
use super::numbers::{is_number, Numbers};

/// Containers nested deeper than this are stringified as `[...]` / `{...}` instead of
/// being walked, so a hostile message cannot overflow the stack.
pub const MAX_STRINGIFY_DEPTH: usize = 64;

/// Appends the template's result for the message whose tape is `src.tape`.
pub(super) fn render(parts: &[Part], src: &mut Source<'_, '_>, out: &mut Vec<u8>) {
    for part in parts {
        match part {
            Part::Literal(text) => out.extend_from_slice(text),
            Part::Var(path) => {
                if let Some(value) = resolve(src.tape, path) {
                    stringify(value, src, out, 0);
                }
            }
        }
    }
}

/// The tape from the value at `path` onwards, or `None` when the path is not there.
pub(super) fn resolve<'t, 'i>(root: &'t [Node<'i>], path: &Path) -> Option<&'t [Node<'i>]> {
    path.0.iter().try_fold(root, |value, step| match step {
        Step::Key(name) => member(value, name),
        Step::Index(index) => elements(value).nth(*index),
    })
}

/// The value of the last `name` member of the object at `value[0]` (last key wins).
pub(super) fn member<'t, 'i>(value: &'t [Node<'i>], name: &[u8]) -> Option<&'t [Node<'i>]> {
    members(value)
        .filter(|&(key, _)| key.as_bytes() == name)
        .last()
        .map(|(_, v)| v)
}

/// How many tape nodes the value starting with `node` occupies.
pub(super) fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// The members of the object at `value[0]` as (key, tape from the value on); nothing if
/// it is not an object.
pub(super) fn members<'t, 'i>(
    value: &'t [Node<'i>],
) -> impl Iterator<Item = (&'i str, &'t [Node<'i>])> + 't {
    member_offsets(value).map_while(move |offset| {
        match (value.get(offset), value.get(offset + 1..)) {
            (Some(Node::String(key)), Some(tail)) => Some((*key, tail)),
            _ => None,
        }
    })
}

/// The offsets (from `value[0]`) of the key nodes of the object at `value[0]`; each
/// member's value starts right after its key.
pub(super) fn member_offsets<'t>(value: &'t [Node<'_>]) -> impl Iterator<Item = usize> + 't {
    let len = match value.first() {
        Some(Node::Object { len, .. }) => *len,
        _ => 0,
    };
    let mut next = 1;
    (0..len).map_while(move |_| {
        super::work::add(1);
        let key = next;
        next = key + 1 + span(value.get(key + 1)?);
        Some(key)
    })
}

/// The elements of the array at `value[0]`, each as the tape from it on; nothing if it is
/// not an array.
pub(super) fn elements<'t, 'i>(value: &'t [Node<'i>]) -> impl Iterator<Item = &'t [Node<'i>]> + 't {
    let len = match value.first() {
        Some(Node::Array { len, .. }) => *len,
        _ => 0,
    };
    let mut rest = value.get(1..).unwrap_or_default();
    (0..len).map_while(move |_| {
        super::work::add(1);
        let element = rest;
        rest = rest.get(span(rest.first()?)..)?;
        Some(element)
    })
}

/// The parsed message and the reused state of one evaluation: its whole tape, its
/// original text (a number is written as it was sent; the tape keeps only its value),
/// the index of its numbers' text, and the stack of object entries being stringified.
pub(super) struct Source<'t, 'i> {
    pub(super) tape: &'t [Node<'i>],
    pub(super) text: &'t [u8],
    pub(super) numbers: &'t mut Numbers,
    pub(super) entries: &'t mut Vec<Entry>,
}

impl Source<'_, '_> {
    /// The source text of the number whose tape node starts `value`.
    fn number_text(&mut self, value: &[Node<'_>]) -> Option<&[u8]> {
        let index = (value.as_ptr() as usize).checked_sub(self.tape.as_ptr() as usize)?
            / std::mem::size_of::<Node<'_>>();
        self.numbers.text(self.tape, self.text, index)
    }
}

/// Appends the stringified value at `value[0]` (see [`Selector::evaluate`]).
pub(super) fn stringify(
    value: &[Node<'_>],
    src: &mut Source<'_, '_>,
    out: &mut Vec<u8>,
    depth: usize,
) {
    super::work::add(1);
    match value.first() {
        Some(Node::String(s)) => out.extend_from_slice(s.as_bytes()),
        Some(node) if is_number(node) => match src.number_text(value) {
            Some(text) => out.extend_from_slice(text),
            None => {
                if let Node::Static(scalar) = node {
                    write_scalar(scalar, out);
                }
            }
        },
        Some(Node::Static(scalar)) => write_scalar(scalar, out),
        Some(Node::Array { .. }) if depth >= MAX_STRINGIFY_DEPTH => out.extend_from_slice(b"[...]"),
        Some(Node::Object { .. }) if depth >= MAX_STRINGIFY_DEPTH => {
            out.extend_from_slice(b"{...}")
        }
        Some(Node::Array { .. }) => {
            out.push(b'[');
            for (i, element) in elements(value).enumerate() {
                if i > 0 {
                    out.extend_from_slice(b", ");
                }
                stringify(element, src, out, depth + 1);
            }
            out.push(b']');
        }
        Some(Node::Object { .. }) => stringify_object(value, src, out, depth),
        None => {}
    }
}

/// One member of an object being stringified: tape offsets (from the object's node) of
/// its first key, where it is printed, and of its last key, whose value is printed.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    first: usize,
    last: usize,
}

/// Appends `{k=v, k2=v2}` for the object at `value[0]`, with repeated keys merged.
pub(super) fn stringify_object(
    value: &[Node<'_>],
    src: &mut Source<'_, '_>,
    out: &mut Vec<u8>,
    depth: usize,
) {
    let base = src.entries.len();
    surviving_entries(value, src.entries);
    let end = src.entries.len();
    out.push(b'{');
    for i in base..end {
        let Entry { first, last } = src.entries[i];
        if i > base {
            out.extend_from_slice(b", ");
        }
        if let Some(Node::String(key)) = value.get(first) {
            out.extend_from_slice(key.as_bytes());
        }
        out.push(b'=');
        let member_value = value.get(last + 1..).unwrap_or_default();
        stringify(member_value, src, out, depth + 1); // pushes above `end`, pops back
    }
    out.push(b'}');
    src.entries.truncate(base);
}

/// Pushes one [`Entry`] per distinct key of the object at `value[0]`, in order of first
/// appearance. Sorting (in place, on a reused stack) keeps this O(n log n) for objects
/// with many keys, rather than comparing every key with every other.
pub(super) fn surviving_entries(value: &[Node<'_>], entries: &mut Vec<Entry>) {
    let base = entries.len();
    entries.extend(member_offsets(value).map(|key| Entry {
        first: key,
        last: key,
    }));
    let key_at = |offset: usize| match value.get(offset) {
        Some(Node::String(key)) => key.as_bytes(),
        _ => &[],
    };
    let group = &mut entries[base..];
    group.sort_unstable_by(|a, b| {
        key_at(a.first)
            .cmp(key_at(b.first))
            .then(a.first.cmp(&b.first))
    });
    let mut kept = base;
    for i in base..entries.len() {
        let entry = entries[i];
        if kept > base && key_at(entries[kept - 1].first) == key_at(entry.first) {
            entries[kept - 1].last = entry.last;
        } else {
            entries[kept] = entry;
            kept += 1;
        }
    }
    entries.truncate(kept);
    entries[base..].sort_unstable_by_key(|e| e.first);
}

/// Appends a number, boolean, or nothing for `null`.
pub(super) fn write_scalar(scalar: &StaticNode, out: &mut Vec<u8>) {
    match *scalar {
        StaticNode::Null => {}
        StaticNode::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        StaticNode::I64(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        StaticNode::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
        StaticNode::F64(x) => write_float(x, out),
        // Variants behind simd-json features this crate does not enable (128-bit ints).
        #[allow(unreachable_patterns)]
        ref other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// Appends the shortest text that parses back to `x` (see [`Selector::evaluate`]).
pub(super) fn write_float(x: f64, out: &mut Vec<u8>) {
    let magnitude = x.abs();
    // Writing into a Vec cannot fail.
    let _ = if magnitude == 0.0 || (1e-6..1e21).contains(&magnitude) {
        write!(out, "{x}")
    } else {
        write!(out, "{x:e}")
    };
}
