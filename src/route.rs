//! Route selection (SPEC §4, AWS §1.3): the API's route selection expression is compiled
//! once into an [`Expression`], and every text message is evaluated against it on a
//! simd-json tape to pick a route from the API's [`Table`].
//!
//! The expression is a template: literal text mixed with `$request.body.a.b` or
//! `${request.body.a[0].b}` variables, `\$` for a literal dollar. Variables are
//! substituted once (a result that contains `$` is not evaluated again); a path that is
//! not in the message becomes `""`; a value that is not a string is *stringified*
//! (see [`Selector::evaluate`]). The result must equal a route key exactly
//! (case-sensitive); otherwise, and for anything that is not a JSON object, the message
//! goes to `$default`.
//!
//! Per message, a [`Selector`] (one per worker) copies the message once into a reused,
//! padded scratch buffer (simd-json unescapes strings in place, and the caller's bytes
//! must stay intact for the integration), fills a reused tape, and walks the tape by
//! hand. Nothing allocates once the buffers have grown to the largest message seen.

use std::collections::hash_map::{self, HashMap};
use std::fmt;
use std::io::Write as _;

use simd_json::{Buffers, Node, StaticNode, Tape};

/// The fixed start of every variable's path: only the message body can be addressed.
const BODY_PREFIX: &[u8] = b"request.body";

/// Containers nested deeper than this are stringified as `[...]` / `{...}` instead of
/// being walked, so a hostile message cannot overflow the stack.
pub const MAX_STRINGIFY_DEPTH: usize = 64;

/// Route tables with at most this many custom keys are scanned linearly; larger ones use
/// a hash map. Measured in `benches/route.rs` (group `route/lookup`): a `HashMap` lookup
/// costs a flat ~18 ns; a scan costs ~6 ns for up to 16 keys of mixed lengths (a length
/// mismatch is one compare) but ~4 ns per key when all keys have the same length. Binary
/// search of a sorted slice never wins; an inline first-8-bytes prefilter lost to the
/// plain scan.
const LINEAR_SCAN_MAX: usize = 8;

/// Predefined route keys that a message must never select, whatever it evaluates to.
/// `$connect` / `$disconnect` run on connection events only; `$default` is the fallback.
const RESERVED_KEYS: [&str; 3] = ["$connect", "$disconnect", "$default"];

/// Bytes of padding after the message copy, so simd-json can parse it in place instead of
/// copying it a second time into its own padded buffer.
const PADDING: [u8; simd_json::INPUT_PADDING] = [b' '; simd_json::INPUT_PADDING];

/// A compiled route selection expression (template): `$request.body.a.b`,
/// `${request.body.a[0].b}-x`, literal text, `\$` escape.
///
/// Grammar (SPEC §4): `expr = { literal | var }`, `var = "$" path | "${" path "}"`,
/// `path = "request.body" { "." name | "[" index "]" }`,
/// `name = 1*(ALPHA / DIGIT / "_" / "-")`. An unwrapped variable ends at the first
/// character that cannot continue its path, so `$request.body.action/x` is the variable
/// then `/x`; a `.` or `[` right after a path always continues it, and must be followed
/// by a name or an index (write `${request.body.a}.` for a literal dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    /// The text it was parsed from, for config dumps and error messages.
    source: Box<str>,
    parts: Box<[Part]>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text copied to the result as is (escapes already resolved).
    Literal(Box<[u8]>),
    /// A path into the message body, replaced by its stringified value.
    Var(Path),
}

/// The steps after `request.body`; empty means the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Path(Box<[Step]>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `.name`: a member of an object (ASCII bytes, checked by the parser).
    Key(Box<[u8]>),
    /// `[index]`: an element of an array.
    Index(usize),
}

/// Why an expression did not parse: human text naming the problem and its byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExprError {
    pub message: String,
}

impl ExprError {
    fn at(offset: usize, problem: &str) -> ExprError {
        ExprError {
            message: format!("{problem} at offset {offset}"),
        }
    }
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ExprError {}

impl Expression {
    /// Compiles `src`. Every `$` that is not written `\$` must start a valid variable; a
    /// `\` before anything else is literal.
    ///
    /// # Errors
    ///
    /// [`ExprError`] naming the first problem and its byte offset, e.g.
    /// `unterminated ${ at offset 3`.
    pub fn parse(src: &str) -> Result<Expression, ExprError> {
        let bytes = src.as_bytes();
        let mut parts = Vec::new();
        let mut literal = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            match (bytes[pos], bytes.get(pos + 1)) {
                (b'\\', Some(b'$')) => {
                    literal.push(b'$');
                    pos += 2;
                }
                (b'$', _) => {
                    flush_literal(&mut literal, &mut parts);
                    let (path, end) = parse_var(bytes, pos)?;
                    parts.push(Part::Var(path));
                    pos = end;
                }
                _ => {
                    let end = next_special(bytes, pos + 1);
                    literal.extend_from_slice(&bytes[pos..end]);
                    pos = end;
                }
            }
        }
        flush_literal(&mut literal, &mut parts);
        Ok(Expression {
            source: src.into(),
            parts: parts.into(),
        })
    }

    /// The text the expression was parsed from.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The path when the expression is exactly one variable (the common
    /// `$request.body.action`), which lets selection compare a string value in place.
    fn single_var(&self) -> Option<&Path> {
        match &*self.parts {
            [Part::Var(path)] => Some(path),
            _ => None,
        }
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Expression {
    type Err = ExprError;
    fn from_str(src: &str) -> Result<Expression, ExprError> {
        Expression::parse(src)
    }
}

/// Moves pending literal text into `parts`, if there is any.
fn flush_literal(literal: &mut Vec<u8>, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal).into()));
    }
}

/// The index of the next `$` or `\` at or after `from`, or the end.
fn next_special(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    rest.iter()
        .position(|b| matches!(b, b'$' | b'\\'))
        .map_or(bytes.len(), |i| from + i)
}

/// Parses the variable whose `$` is at `dollar`; returns it and the offset after it.
fn parse_var(bytes: &[u8], dollar: usize) -> Result<(Path, usize), ExprError> {
    if bytes.get(dollar + 1) != Some(&b'{') {
        return parse_path(bytes, dollar + 1, dollar);
    }
    if bytes.get(dollar + 2) == Some(&b'}') {
        return Err(ExprError::at(dollar, "empty ${}"));
    }
    let (path, end) = parse_path(bytes, dollar + 2, dollar)?;
    match bytes.get(end) {
        Some(b'}') => Ok((path, end + 1)),
        None => Err(ExprError::at(dollar, "unterminated ${")),
        Some(_) => Err(ExprError::at(end, "expected '}'")),
    }
}

/// Parses `request.body` and its steps from `start`; returns the path and the offset of
/// the first byte that does not continue it.
fn parse_path(bytes: &[u8], start: usize, dollar: usize) -> Result<(Path, usize), ExprError> {
    let rest = bytes.get(start..).unwrap_or_default();
    let glued = rest
        .get(BODY_PREFIX.len())
        .is_some_and(|&b| is_word_byte(b));
    if !rest.starts_with(BODY_PREFIX) || glued {
        let message = format!(
            "expected request.body after '$' at offset {dollar}; write \\$ for a literal dollar"
        );
        return Err(ExprError { message });
    }
    let mut steps = Vec::new();
    let mut pos = start + BODY_PREFIX.len();
    loop {
        let (step, end) = match bytes.get(pos) {
            Some(b'.') => parse_name(bytes, pos)?,
            Some(b'[') => parse_index(bytes, pos)?,
            _ => return Ok((Path(steps.into()), pos)),
        };
        steps.push(step);
        pos = end;
    }
}

/// Parses `.name` with the dot at `dot`.
fn parse_name(bytes: &[u8], dot: usize) -> Result<(Step, usize), ExprError> {
    let end = run_end(bytes, dot + 1, |b| is_word_byte(b) || b == b'-');
    if end == dot + 1 {
        return Err(ExprError::at(dot, "expected a name after '.'"));
    }
    Ok((Step::Key(bytes[dot + 1..end].into()), end))
}

/// Parses `[index]` with the bracket at `open`.
fn parse_index(bytes: &[u8], open: usize) -> Result<(Step, usize), ExprError> {
    let end = run_end(bytes, open + 1, |b| b.is_ascii_digit());
    if end == open + 1 {
        return Err(ExprError::at(open, "expected an index after '['"));
    }
    let index = bytes[open + 1..end].iter().try_fold(0usize, |n, d| {
        n.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    });
    let Some(index) = index else {
        return Err(ExprError::at(open + 1, "index too large"));
    };
    if bytes.get(end) != Some(&b']') {
        return Err(ExprError::at(end, "expected ']'"));
    }
    Ok((Step::Index(index), end + 1))
}

/// The offset of the first byte at or after `from` that fails `accept`.
fn run_end(bytes: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    from + rest.iter().take_while(|&&b| accept(b)).count()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The route table of one API: route key -> route id (an index the caller owns), plus
/// the optional `$default` route id.
#[derive(Debug, Clone)]
pub struct Table {
    expression: Expression,
    routes: Routes,
    default: Option<usize>,
}

/// The custom route keys (unique, without the predefined `$` keys), stored by count.
#[derive(Debug, Clone)]
enum Routes {
    /// At most [`LINEAR_SCAN_MAX`] keys, scanned in the order the config lists them.
    Few(Box<[(Box<[u8]>, usize)]>),
    /// More keys, hashed with std's hasher: an FxHash-style one measured no faster, and
    /// clients only probe keys, never insert them.
    Many(HashMap<Box<[u8]>, usize>),
}

impl Table {
    /// Builds the table. Predefined keys (`$connect`, `$disconnect`, `$default`) in
    /// `routes` are dropped, so that no message can select them by evaluating to their
    /// name; pass the `$default` route as `default`. If a key is listed twice (config
    /// validation should refuse that), the first id wins.
    pub fn new(
        expression: Expression,
        routes: Vec<(String, usize)>,
        default: Option<usize>,
    ) -> Table {
        let mut unique = HashMap::with_capacity(routes.len());
        let mut listed = Vec::with_capacity(routes.len());
        for (key, id) in routes {
            if RESERVED_KEYS.contains(&key.as_str()) {
                continue;
            }
            if let hash_map::Entry::Vacant(slot) = unique.entry(key.into_bytes().into_boxed_slice())
            {
                listed.push((slot.key().clone(), id));
                slot.insert(id);
            }
        }
        let routes = if listed.len() <= LINEAR_SCAN_MAX {
            Routes::Few(listed.into())
        } else {
            Routes::Many(unique)
        };
        Table {
            expression,
            routes,
            default,
        }
    }

    #[must_use]
    pub fn expression(&self) -> &Expression {
        &self.expression
    }

    /// The `$default` route id, if the API has one.
    #[must_use]
    pub fn default_route(&self) -> Option<usize> {
        self.default
    }

    /// The id of the custom route whose key is exactly `key`; `$default` is not consulted.
    #[must_use]
    pub fn route(&self, key: &[u8]) -> Option<usize> {
        match &self.routes {
            Routes::Few(routes) => routes.iter().find(|(k, _)| **k == *key).map(|&(_, id)| id),
            Routes::Many(routes) => routes.get(key).copied(),
        }
    }
}

/// Per-worker reusable state: a scratch copy of the message (simd-json rewrites its
/// input), simd-json's buffers, a reused tape, and the output key buffer. No allocation
/// per message after warm-up.
#[derive(Default)]
pub struct Selector {
    json: Scratch,
    /// The evaluated key, reused across messages.
    key: Vec<u8>,
    /// A stack of object entries being stringified (see [`surviving_entries`]).
    entries: Vec<Entry>,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Selector")
            .field("scratch_capacity", &self.json.input.capacity())
            .field("key_capacity", &self.key.capacity())
            .finish_non_exhaustive()
    }
}

impl Selector {
    #[must_use]
    pub fn new() -> Selector {
        Selector::default()
    }

    /// Route id for a TEXT message: a custom key that matches exactly (case-sensitive),
    /// else the `$default` route id; `None` = no match and no `$default` (the caller sends
    /// the "Forbidden" frame).
    pub fn select(&mut self, table: &Table, message: &[u8]) -> Option<usize> {
        let custom = match table.expression.single_var() {
            Some(path) => self.select_single_var(table, path, message),
            None => self
                .evaluate(&table.expression, message)
                .and_then(|key| table.route(key)),
        };
        custom.or(table.default)
    }

    /// The evaluated expression for `message` (the stringified result), or `None` when
    /// the message is not JSON or not a JSON object (those go to `$default`).
    ///
    /// Stringification: strings without quotes (unescaped); integers in decimal; `true`
    /// / `false`; `null` and missing paths as nothing; arrays as `[a, b]`; objects as
    /// `{k=v, k2=v2}` where a repeated key keeps its first position and its last value.
    /// Containers deeper than [`MAX_STRINGIFY_DEPTH`] are written `[...]` / `{...}`.
    ///
    /// Numbers are their JSON text as sent (SPEC §4: `1.50` stays `1.50`, `1e3` stays
    /// `1e3`, `5.0` is not `5`). simd-json's tape keeps only the value, so the text is
    /// found again in the message: the n-th number node of the tape is the n-th number
    /// token of the text. Only numbers that are stringified pay for that scan. Integers
    /// outside `i64`/`u64` are rejected by simd-json, so such a message is not JSON here.
    pub fn evaluate(&mut self, expr: &Expression, message: &[u8]) -> Option<&[u8]> {
        let Selector { json, key, entries } = self;
        key.clear();
        json.with_object(message, |root| {
            render(
                &expr.parts,
                Source {
                    tape: root,
                    text: message,
                },
                key,
                entries,
            )
        })?;
        Some(&self.key)
    }

    /// `select` for a one-variable expression: a string value is looked up straight from
    /// the tape, anything else is stringified first.
    fn select_single_var(&mut self, table: &Table, path: &Path, message: &[u8]) -> Option<usize> {
        let Selector { json, key, entries } = self;
        let found = json.with_object(message, |root| match resolve(root, path) {
            Some([Node::String(s), ..]) => table.route(s.as_bytes()),
            Some(value) => {
                key.clear();
                stringify(
                    value,
                    Source {
                        tape: root,
                        text: message,
                    },
                    key,
                    entries,
                    0,
                );
                table.route(key)
            }
            None => table.route(b""),
        });
        found.flatten()
    }
}

/// The message copy and simd-json's reusable parse state.
struct Scratch {
    /// The message followed by [`PADDING`]; simd-json unescapes strings inside it.
    input: Vec<u8>,
    buffers: Buffers,
    /// Empty between messages; it borrows `input` only inside [`Scratch::with_object`].
    tape: Tape<'static>,
}

impl Default for Scratch {
    fn default() -> Scratch {
        Scratch {
            input: Vec::new(),
            buffers: Buffers::default(),
            tape: Tape(Vec::new()),
        }
    }
}

impl Scratch {
    /// Parses `message` and, when it is a JSON object, calls `f` with its tape (the root
    /// object's node first); `None` when it is not JSON or not an object.
    fn with_object<R>(&mut self, message: &[u8], f: impl FnOnce(&[Node<'_>]) -> R) -> Option<R> {
        if !starts_like_object(message) {
            return None; // cheap reject for plain text, empty messages, and non-objects
        }
        self.input.clear();
        self.input.extend_from_slice(message);
        self.input.extend_from_slice(&PADDING);
        // The tape's allocation is kept; only its lifetime is re-bound to this borrow.
        let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
        let parsed = simd_json::fill_tape_padded(
            &mut self.input,
            message.len(),
            &mut self.buffers,
            &mut tape,
        );
        let result = match (parsed, tape.0.first()) {
            (Ok(()), Some(Node::Object { .. })) => Some(f(&tape.0)),
            _ => None,
        };
        self.tape = tape.reset();
        result
    }
}

/// Whether the first byte after JSON whitespace is `{`: every JSON object passes, and
/// most non-JSON text is turned away without a parse.
fn starts_like_object(message: &[u8]) -> bool {
    let first = message
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    first == Some(&b'{')
}

/// Appends the template's result for the message whose tape is `src.tape`.
fn render(parts: &[Part], src: Source<'_, '_>, out: &mut Vec<u8>, entries: &mut Vec<Entry>) {
    for part in parts {
        match part {
            Part::Literal(text) => out.extend_from_slice(text),
            Part::Var(path) => {
                if let Some(value) = resolve(src.tape, path) {
                    stringify(value, src, out, entries, 0);
                }
            }
        }
    }
}

/// The tape from the value at `path` onwards, or `None` when the path is not there.
fn resolve<'t, 'i>(root: &'t [Node<'i>], path: &Path) -> Option<&'t [Node<'i>]> {
    path.0.iter().try_fold(root, |value, step| match step {
        Step::Key(name) => member(value, name),
        Step::Index(index) => elements(value).nth(*index),
    })
}

/// The value of the last `name` member of the object at `value[0]` (last key wins).
fn member<'t, 'i>(value: &'t [Node<'i>], name: &[u8]) -> Option<&'t [Node<'i>]> {
    members(value)
        .filter(|&(key, _)| key.as_bytes() == name)
        .last()
        .map(|(_, v)| v)
}

/// How many tape nodes the value starting with `node` occupies.
fn span(node: &Node<'_>) -> usize {
    match node {
        Node::Object { count, .. } | Node::Array { count, .. } => count + 1,
        _ => 1,
    }
}

/// The members of the object at `value[0]` as (key, tape from the value on); nothing if
/// it is not an object.
fn members<'t, 'i>(value: &'t [Node<'i>]) -> impl Iterator<Item = (&'i str, &'t [Node<'i>])> + 't {
    member_offsets(value).map_while(move |offset| {
        match (value.get(offset), value.get(offset + 1..)) {
            (Some(Node::String(key)), Some(tail)) => Some((*key, tail)),
            _ => None,
        }
    })
}

/// The offsets (from `value[0]`) of the key nodes of the object at `value[0]`; each
/// member's value starts right after its key.
fn member_offsets<'t>(value: &'t [Node<'_>]) -> impl Iterator<Item = usize> + 't {
    let len = match value.first() {
        Some(Node::Object { len, .. }) => *len,
        _ => 0,
    };
    let mut next = 1;
    (0..len).map_while(move |_| {
        let key = next;
        next = key + 1 + span(value.get(key + 1)?);
        Some(key)
    })
}

/// The elements of the array at `value[0]`, each as the tape from it on; nothing if it is
/// not an array.
fn elements<'t, 'i>(value: &'t [Node<'i>]) -> impl Iterator<Item = &'t [Node<'i>]> + 't {
    let len = match value.first() {
        Some(Node::Array { len, .. }) => *len,
        _ => 0,
    };
    let mut rest = value.get(1..).unwrap_or_default();
    (0..len).map_while(move |_| {
        let element = rest;
        rest = rest.get(span(rest.first()?)..)?;
        Some(element)
    })
}

/// The parsed message: its whole tape and its original text, so a number can be
/// written as it was sent (the tape keeps only its value).
#[derive(Clone, Copy)]
struct Source<'t, 'i> {
    tape: &'t [Node<'i>],
    text: &'t [u8],
}

impl Source<'_, '_> {
    /// The source text of the number whose tape node starts `value`: the n-th number
    /// node of the tape is the n-th number token of the text, both in document order.
    fn number_text(&self, value: &[Node<'_>]) -> Option<&[u8]> {
        let index = (value.as_ptr() as usize).checked_sub(self.tape.as_ptr() as usize)?
            / std::mem::size_of::<Node<'_>>();
        let ordinal = self
            .tape
            .get(..index)?
            .iter()
            .filter(|n| is_number(n))
            .count();
        nth_number_token(self.text, ordinal)
    }
}

fn is_number(node: &Node<'_>) -> bool {
    matches!(
        node,
        Node::Static(StaticNode::I64(_) | StaticNode::U64(_) | StaticNode::F64(_))
    )
}

/// The `n`-th number token of valid JSON text (strings skipped, escapes included).
fn nth_number_token(text: &[u8], n: usize) -> Option<&[u8]> {
    let (mut i, mut seen) = (0, 0);
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                if seen == n {
                    return Some(&text[start..i]);
                }
                seen += 1;
            }
            _ => i += 1,
        }
    }
    None
}

/// Appends the stringified value at `value[0]` (see [`Selector::evaluate`]).
fn stringify(
    value: &[Node<'_>],
    src: Source<'_, '_>,
    out: &mut Vec<u8>,
    entries: &mut Vec<Entry>,
    depth: usize,
) {
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
                stringify(element, src, out, entries, depth + 1);
            }
            out.push(b']');
        }
        Some(Node::Object { .. }) => stringify_object(value, src, out, entries, depth),
        None => {}
    }
}

/// One member of an object being stringified: tape offsets (from the object's node) of
/// its first key, where it is printed, and of its last key, whose value is printed.
#[derive(Clone, Copy)]
struct Entry {
    first: usize,
    last: usize,
}

/// Appends `{k=v, k2=v2}` for the object at `value[0]`, with repeated keys merged.
fn stringify_object(
    value: &[Node<'_>],
    src: Source<'_, '_>,
    out: &mut Vec<u8>,
    entries: &mut Vec<Entry>,
    depth: usize,
) {
    let base = entries.len();
    surviving_entries(value, entries);
    let end = entries.len();
    out.push(b'{');
    for i in base..end {
        let Entry { first, last } = entries[i];
        if i > base {
            out.extend_from_slice(b", ");
        }
        if let Some(Node::String(key)) = value.get(first) {
            out.extend_from_slice(key.as_bytes());
        }
        out.push(b'=');
        let member_value = value.get(last + 1..).unwrap_or_default();
        stringify(member_value, src, out, entries, depth + 1); // pushes above `end`, pops back
    }
    out.push(b'}');
    entries.truncate(base);
}

/// Pushes one [`Entry`] per distinct key of the object at `value[0]`, in order of first
/// appearance. Sorting (in place, on a reused stack) keeps this O(n log n) for objects
/// with many keys, rather than comparing every key with every other.
fn surviving_entries(value: &[Node<'_>], entries: &mut Vec<Entry>) {
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
fn write_scalar(scalar: &StaticNode, out: &mut Vec<u8>) {
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
fn write_float(x: f64, out: &mut Vec<u8>) {
    let magnitude = x.abs();
    // Writing into a Vec cannot fail.
    let _ = if magnitude == 0.0 || (1e-6..1e21).contains(&magnitude) {
        write!(out, "{x}")
    } else {
        write!(out, "{x:e}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload of AWS's documented evaluation table (§1.3).
    const AWS: &str = r#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;

    /// Evaluates `expr` on `message` with a fresh selector; `None` = not a JSON object.
    fn eval(expr: &str, message: &str) -> Option<String> {
        let expr = Expression::parse(expr).expect("expression parses");
        let mut selector = Selector::new();
        let key = selector.evaluate(&expr, message.as_bytes())?;
        Some(String::from_utf8(key.to_vec()).expect("utf-8 key"))
    }

    /// One test per row: `name: expression, message => expected evaluation;`.
    macro_rules! eval {
        ($($name:ident: $expr:expr, $message:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let want: Option<&str> = $want;
                assert_eq!(eval($expr, $message).as_deref(), want, "{} on {}", $expr, $message);
            }
        )*};
    }

    eval! {
        aws_unwrapped_variable: "$request.body.action", AWS => Some("join");
        aws_wrapped_variable: "${request.body.action}", AWS => Some("join");
        aws_two_variables_and_text: "${request.body.service}/${request.body.action}", AWS => Some("chat/join");
        aws_missing_path_is_empty: "${request.body.action}-${request.body.invalidPath}", AWS => Some("join-");
        aws_static_value: "action", AWS => Some("action");
        aws_escaped_static_value: r"\$default", AWS => Some("$default");
        aws_nested_path: "$request.body.data.room", AWS => Some("room1234");

        unwrapped_variable_ends_at_non_path_char: "$request.body.action/x", AWS => Some("join/x");
        unwrapped_variable_then_dash_is_literal: "$request.body-x", "{}" => Some("{}-x");
        name_may_contain_dash: "$request.body.detail-type", r#"{"detail-type":"x"}"# => Some("x");
        backslash_before_other_is_literal: r"a\b", "{}" => Some(r"a\b");
        unicode_literal: "é/${request.body.a}", r#"{"a":"ü"}"# => Some("é/ü");
        evaluated_once: "$request.body.a", r#"{"a":"$request.body.b","b":"no"}"# => Some("$request.body.b");
        whole_body: "$request.body", AWS => Some("{service=chat, action=join, data={room=room1234}}");

        index_into_array: "$request.body.items[1].name", r#"{"items":[{"name":"a"},{"name":"b"}]}"# => Some("b");
        index_past_end_is_empty: "$request.body.items[2]", r#"{"items":[1,2]}"# => Some("");
        index_into_object_is_empty: "$request.body.a[0]", r#"{"a":{"0":1}}"# => Some("");
        name_into_array_is_empty: "$request.body.a.b", r#"{"a":[{"b":1}]}"# => Some("");
        name_into_string_is_empty: "$request.body.a.b", r#"{"a":"b"}"# => Some("");
        index_after_nested_containers: "$request.body.a[2]", r#"{"a":[[1,[2]],{"x":[3]},"hit"]}"# => Some("hit");

        integer: "$request.body.n", r#"{"n":42}"# => Some("42");
        negative_integer: "$request.body.n", r#"{"n":-7}"# => Some("-7");
        largest_u64: "$request.body.n", r#"{"n":18446744073709551615}"# => Some("18446744073709551615");
        smallest_i64: "$request.body.n", r#"{"n":-9223372036854775808}"# => Some("-9223372036854775808");
        float: "$request.body.n", r#"{"n":1.5}"# => Some("1.5");
        float_trailing_zero_is_kept: "$request.body.n", r#"{"n":1.50}"# => Some("1.50");
        float_with_zero_fraction_is_kept: "$request.body.n", r#"{"n":1.0}"# => Some("1.0");
        float_exponent_large: "$request.body.n", r#"{"n":1e300}"# => Some("1e300");
        float_exponent_spelled_as_sent: "$request.body.n", r#"{"n":1E2}"# => Some("1E2");
        float_small: "$request.body.n", r#"{"n":0.000001}"# => Some("0.000001");
        float_tiny: "$request.body.n", r#"{"n":1.5e-7}"# => Some("1.5e-7");
        float_negative_zero: "$request.body.n", r#"{"n":-0.0}"# => Some("-0.0");
        number_after_strings_with_digits_and_escapes: "$request.body.n", r#"{"s":"1 \"2\" 3","t":[4.00,"5"],"n":6.50}"# => Some("6.50");
        numbers_inside_arrays_as_sent: "$request.body.a", r#"{"a":[1.0, -2e1, 3]}"# => Some("[1.0, -2e1, 3]");
        numbers_inside_objects_as_sent: "$request.body.o", r#"{"x":0.10,"o":{"k":2.50}}"# => Some("{k=2.50}");
        boolean_true: "$request.body.b", r#"{"b":true}"# => Some("true");
        boolean_false: "$request.body.b", r#"{"b":false}"# => Some("false");
        null_is_empty: "[$request.body.z]", r#"{"z":null}"# => Some("[]");
        array: "$request.body.a", r#"{"a":[1,"x",true,null,2.5]}"# => Some("[1, x, true, , 2.5]");
        empty_array: "$request.body.a", r#"{"a":[]}"# => Some("[]");
        object: "$request.body.o", r#"{"o":{"a":1,"b":"x"}}"# => Some("{a=1, b=x}");
        empty_object: "$request.body.o", r#"{"o":{}}"# => Some("{}");
        nested_containers: "$request.body.a", r#"{"a":[[1,2],{"b":[3,{}]},[]]}"# => Some("[[1, 2], {b=[3, {}]}, []]");

        duplicate_key_last_wins: "$request.body.action", r#"{"action":"a","action":"b"}"# => Some("b");
        duplicate_key_last_wins_on_path: "$request.body.d.y", r#"{"d":{"y":1},"d":{"y":2}}"# => Some("2");
        duplicate_key_earlier_object_is_gone: "$request.body.d.x", r#"{"d":{"x":1},"d":{"y":2}}"# => Some("");
        duplicate_key_in_stringified_object: "$request.body.o", r#"{"o":{"a":1,"b":2,"a":3}}"# => Some("{a=3, b=2}");
        duplicate_keys_nested: "$request.body", r#"{"a":{"x":1,"x":2},"b":[{"y":1,"z":0,"y":2}],"a":{"x":4}}"#
            => Some("{a={x=4}, b=[{y=2, z=0}]}");

        escaped_quote: "$request.body.s", r#"{"s":"a\"b"}"# => Some("a\"b");
        escaped_unicode: "$request.body.s", r#"{"s":"caf\u00e9"}"# => Some("café");
        escaped_surrogate_pair: "$request.body.s", r#"{"s":"\ud83d\ude00"}"# => Some("😀");
        escaped_newline: "$request.body.s", r#"{"s":"a\nb"}"# => Some("a\nb");
        escaped_key: "$request.body.ab", r#"{"a\u0062":"hit"}"# => Some("hit");

        leading_whitespace_object: "$request.body.a", " \r\n\t{\"a\":\"x\"} " => Some("x");
        not_json: "$request.body.action", "hi" => None;
        empty_message: "$request.body.action", "" => None;
        json_string: "$request.body.action", r#""hi""# => None;
        json_number: "$request.body.action", "42" => None;
        json_array: "$request.body.action", "[1]" => None;
        json_null: "$request.body.action", "null" => None;
        truncated_object: "$request.body.action", r#"{"action":"join""# => None;
        trailing_garbage: "$request.body.action", r#"{"action":"join"} x"# => None;
        two_objects: "$request.body.action", r#"{"action":"join"}{}"# => None;
        integer_beyond_u64: "$request.body.n", r#"{"n":18446744073709551616}"# => None;
        literal_only_on_non_json: "action", "hi" => None;
        literal_only_on_array: r"\$default", "[]" => None;
    }

    #[test]
    fn invalid_utf8_is_not_json() {
        let expr = Expression::parse("$request.body.a").unwrap();
        let mut selector = Selector::new();
        assert_eq!(selector.evaluate(&expr, b"{\"a\":\"\xff\"}"), None);
    }

    #[test]
    fn deep_nesting_is_truncated_not_recursed() {
        let depth = 200;
        let message = format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
        let got = eval("$request.body.a", &message).expect("valid JSON");
        let want = format!(
            "{}[...]{}",
            "[".repeat(MAX_STRINGIFY_DEPTH),
            "]".repeat(MAX_STRINGIFY_DEPTH)
        );
        assert_eq!(got, want);
    }

    #[test]
    fn deep_objects_are_truncated_too() {
        let depth = 100;
        let message = format!(
            r#"{{"a":{}1{}}}"#,
            r#"{"k":"#.repeat(depth),
            "}".repeat(depth)
        );
        let got = eval("$request.body.a", &message).expect("valid JSON");
        assert!(got.starts_with(&"{k=".repeat(MAX_STRINGIFY_DEPTH)), "{got}");
        assert!(got.contains("{...}"), "{got}");
    }

    #[test]
    fn nesting_beyond_simd_json_limit_is_not_json() {
        let depth = simd_json::DEFAULT_MAX_DEPTH + 10;
        let message = format!(r#"{{"a":{}{}}}"#, "[".repeat(depth), "]".repeat(depth));
        assert_eq!(eval("$request.body.a", &message), None);
    }

    /// One test per row: `name: expression => error message;`.
    macro_rules! parse_error {
        ($($name:ident: $expr:expr => $message:expr;)*) => {$(
            #[test]
            fn $name() {
                let err = Expression::parse($expr).expect_err($expr);
                assert_eq!(err.message, $message, "{}", $expr);
                assert_eq!(err.to_string(), $message);
            }
        )*};
    }

    parse_error! {
        error_unterminated_brace: "${request.body.a" => "unterminated ${ at offset 0";
        error_unterminated_brace_after_text: "x-${request.body.a" => "unterminated ${ at offset 2";
        error_not_request_body: "$request.foo" => r"expected request.body after '$' at offset 0; write \$ for a literal dollar";
        error_lone_dollar: "$" => r"expected request.body after '$' at offset 0; write \$ for a literal dollar";
        error_unescaped_default: "$default" => r"expected request.body after '$' at offset 0; write \$ for a literal dollar";
        error_dollar_after_text: "a$b" => r"expected request.body after '$' at offset 1; write \$ for a literal dollar";
        error_glued_prefix: "$request.bodyx" => r"expected request.body after '$' at offset 0; write \$ for a literal dollar";
        error_empty_braces: "${}" => "empty ${} at offset 0";
        error_braces_without_request_body: "${action}" => r"expected request.body after '$' at offset 0; write \$ for a literal dollar";
        error_trailing_dot: "$request.body." => "expected a name after '.' at offset 13";
        error_dot_then_dollar: "$request.body.a.$request.body.b" => "expected a name after '.' at offset 15";
        error_open_bracket: "$request.body.a[" => "expected an index after '[' at offset 15";
        error_bracket_not_digit: "$request.body.a[x]" => "expected an index after '[' at offset 15";
        error_bracket_unclosed: "$request.body.a[1" => "expected ']' at offset 17";
        error_index_too_large: "$request.body.a[99999999999999999999999]" => "index too large at offset 16";
        error_space_in_braces: "${request.body.a b}" => "expected '}' at offset 16";
        error_space_in_prefix: "$ request.body" => r"expected request.body after '$' at offset 0; write \$ for a literal dollar";
    }

    #[test]
    fn expression_keeps_its_source() {
        let src = r"${request.body.service}/\$x";
        let expr: Expression = src.parse().unwrap();
        assert_eq!(expr.as_str(), src);
        assert_eq!(expr.to_string(), src);
    }

    #[test]
    fn empty_expression_evaluates_to_empty() {
        assert_eq!(eval("", AWS).as_deref(), Some(""));
    }

    /// A table with join=1, leave=2, a numeric key 42=3, the template key chat/join=4.
    fn table(expr: &str, default: Option<usize>) -> Table {
        let routes = [("join", 1), ("leave", 2), ("42", 3), ("chat/join", 4)];
        let routes = routes.iter().map(|&(k, id)| (k.to_string(), id)).collect();
        Table::new(Expression::parse(expr).unwrap(), routes, default)
    }

    /// One test per row: `name: expression, default, message => route id;`.
    macro_rules! select {
        ($($name:ident: $expr:expr, $default:expr, $message:expr => $want:expr;)*) => {$(
            #[test]
            fn $name() {
                let table = table($expr, $default);
                let mut selector = Selector::new();
                assert_eq!(selector.select(&table, $message.as_bytes()), $want, "{}", $message);
            }
        )*};
    }

    select! {
        select_exact_key: "$request.body.action", Some(0), AWS => Some(1);
        select_is_case_sensitive: "$request.body.action", Some(0), r#"{"action":"JOIN"}"# => Some(0);
        select_missing_key_goes_to_default: "$request.body.action", Some(0), r#"{"x":1}"# => Some(0);
        select_unknown_key_goes_to_default: "$request.body.action", Some(0), r#"{"action":"nope"}"# => Some(0);
        select_not_json_goes_to_default: "$request.body.action", Some(0), "join" => Some(0);
        select_empty_goes_to_default: "$request.body.action", Some(0), "" => Some(0);
        select_array_goes_to_default: "$request.body.action", Some(0), r#"["join"]"# => Some(0);
        select_stringified_number: "$request.body.action", Some(0), r#"{"action":42}"# => Some(3);
        select_escaped_string: "$request.body.action", Some(0), r#"{"action":"jo\u0069n"}"# => Some(1);
        select_duplicate_key_last_wins: "$request.body.action", Some(0), r#"{"action":"join","action":"leave"}"# => Some(2);
        select_template: "${request.body.service}/${request.body.action}", Some(0), AWS => Some(4);
        select_template_no_match: "${request.body.service}/${request.body.action}", Some(0), r#"{"action":"join"}"# => Some(0);
        select_literal_expression: "leave", Some(0), "{}" => Some(2);
        select_literal_expression_not_json: "leave", Some(0), "leave" => Some(0);
        select_without_default_match: "$request.body.action", None, AWS => Some(1);
        select_without_default_no_match: "$request.body.action", None, r#"{"action":"Join"}"# => None;
        select_without_default_not_json: "$request.body.action", None, "hi" => None;
        select_reserved_key_is_not_selectable: "$request.body.action", Some(0), r#"{"action":"$connect"}"# => Some(0);
    }

    #[test]
    fn reserved_keys_are_dropped_from_the_table() {
        let routes = ["$connect", "$disconnect", "$default", "x"]
            .iter()
            .enumerate();
        let routes = routes.map(|(id, k)| (k.to_string(), id)).collect();
        let table = Table::new(Expression::parse("$request.body.a").unwrap(), routes, None);
        let mut selector = Selector::new();
        for key in ["$connect", "$disconnect", "$default"] {
            let message = format!(r#"{{"a":"{key}"}}"#);
            assert_eq!(selector.select(&table, message.as_bytes()), None, "{key}");
            assert_eq!(table.route(key.as_bytes()), None, "{key}");
        }
        assert_eq!(selector.select(&table, br#"{"a":"x"}"#), Some(3));
    }

    #[test]
    fn large_table_finds_every_key() {
        let routes: Vec<(String, usize)> = (0..40).map(|i| (format!("route-{i}"), i)).collect();
        let table = Table::new(
            Expression::parse("$request.body.a").unwrap(),
            routes,
            Some(99),
        );
        let mut selector = Selector::new();
        for i in 0..40 {
            let message = format!(r#"{{"a":"route-{i}"}}"#);
            assert_eq!(selector.select(&table, message.as_bytes()), Some(i));
        }
        assert_eq!(selector.select(&table, br#"{"a":"route-40"}"#), Some(99));
        assert_eq!(table.route(b"route-"), None);
    }

    #[test]
    fn duplicate_route_key_first_wins() {
        let routes = vec![
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("a".to_string(), 3),
        ];
        let table = Table::new(Expression::parse("x").unwrap(), routes, None);
        assert_eq!(table.route(b"a"), Some(1));
        assert_eq!(table.default_route(), None);
    }

    #[test]
    fn empty_route_key_matches_missing_path() {
        let routes = vec![(String::new(), 7)];
        let table = Table::new(
            Expression::parse("$request.body.a").unwrap(),
            routes,
            Some(0),
        );
        let mut selector = Selector::new();
        assert_eq!(selector.select(&table, b"{}"), Some(7));
        assert_eq!(selector.select(&table, b"nope"), Some(0));
    }

    #[test]
    fn steady_state_reuses_buffers() {
        let table = table("${request.body.service}/${request.body.action}", Some(0));
        let mut selector = Selector::new();
        let messages: [&[u8]; 3] = [
            AWS.as_bytes(),
            b"not json",
            br#"{"o":{"a":1,"a":2},"l":[1,[2]]}"#,
        ];
        let warm = |s: &mut Selector| {
            for message in messages {
                s.select(&table, message);
                s.evaluate(&Expression::parse("$request.body").unwrap(), message);
            }
        };
        warm(&mut selector);
        let capacities = |s: &Selector| {
            let json = &s.json;
            (
                json.input.capacity(),
                json.tape.0.capacity(),
                s.key.capacity(),
                s.entries.capacity(),
            )
        };
        let before = (
            capacities(&selector),
            selector.json.input.as_ptr(),
            selector.json.tape.0.as_ptr(),
        );
        for _ in 0..100 {
            warm(&mut selector);
        }
        let after = (
            capacities(&selector),
            selector.json.input.as_ptr(),
            selector.json.tape.0.as_ptr(),
        );
        assert_eq!(before, after);
        assert!(
            selector.json.tape.0.is_empty(),
            "the tape never outlives a message"
        );
    }

    #[test]
    fn float_text_round_trips() {
        for x in [
            0.1,
            1.0 / 3.0,
            1e21,
            1e-7,
            123_456.789,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -2.5e-300,
        ] {
            let mut out = Vec::new();
            write_float(x, &mut out);
            let text = std::str::from_utf8(&out).unwrap();
            assert_eq!(text.parse::<f64>().unwrap(), x, "{text}");
        }
    }

    /// Reference stringification over serde_json's DOM, for the differential property.
    fn model(value: &serde_json::Value, out: &mut Vec<u8>) {
        use serde_json::Value;
        match value {
            Value::Null => {}
            Value::Bool(b) => out.extend_from_slice(b.to_string().as_bytes()),
            // The message is serde_json's text, so "as sent" is serde_json's spelling.
            Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    out.extend_from_slice(if i > 0 { b", " } else { b"" });
                    model(item, out);
                }
                out.push(b']');
            }
            Value::Object(map) => {
                out.push(b'{');
                for (i, (k, v)) in map.iter().enumerate() {
                    out.extend_from_slice(if i > 0 { b", " } else { b"" });
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    model(v, out);
                }
                out.push(b'}');
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        /// JSON values of a few levels with every scalar kind, arbitrary strings and keys.
        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(Value::from),
                ".{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,4}", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn arbitrary_input_never_panics(
                expr in ".{0,40}",
                message in prop::collection::vec(any::<u8>(), 0..200),
            ) {
                if let Ok(expr) = Expression::parse(&expr) {
                    let mut selector = Selector::new();
                    let _ = selector.evaluate(&expr, &message);
                    let table = Table::new(expr, vec![("a".into(), 1)], Some(0));
                    prop_assert!(selector.select(&table, &message).is_some());
                }
            }

            #[test]
            fn expression_like_input_never_panics(
                expr in r"([$\\{}\[\].]|request\.body|[a-z0-9_-]{1,3}|é){0,12}",
                message in r#"[{}\[\]":, a-z0-9.\\-]{0,80}"#,
            ) {
                if let Ok(expr) = Expression::parse(&expr) {
                    let mut selector = Selector::new();
                    let _ = selector.evaluate(&expr, message.as_bytes());
                }
            }

            #[test]
            fn stringify_matches_a_model(body in prop::collection::btree_map("[a-c]", json(), 0..4)) {
                let body = Value::Object(body.into_iter().collect());
                let message = serde_json::to_vec(&body).unwrap();
                let mut selector = Selector::new();
                let mut want = Vec::new();
                model(&body, &mut want);
                let whole = Expression::parse("$request.body").unwrap();
                prop_assert_eq!(selector.evaluate(&whole, &message), Some(&want[..]));
                for key in ["a", "b", "c"] {
                    let expr = Expression::parse(&format!("<${{request.body.{key}}}>")).unwrap();
                    let mut want = b"<".to_vec();
                    if let Some(value) = body.get(key) {
                        model(value, &mut want);
                    }
                    want.push(b'>');
                    prop_assert_eq!(selector.evaluate(&expr, &message), Some(&want[..]));
                }
            }

            #[test]
            fn float_text_parses_back(x in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
                let mut out = Vec::new();
                write_float(x, &mut out);
                let text = std::str::from_utf8(&out).unwrap();
                prop_assert_eq!(text.parse::<f64>().unwrap(), x);
            }
        }
    }
}
