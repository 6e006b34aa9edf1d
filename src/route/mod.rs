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

mod expression;
mod numbers;
mod tape;
mod work;

use std::collections::hash_map::{self, HashMap};
use std::fmt;

use simd_json::{Buffers, ErrorType, Node, Tape};

use expression::Path;
pub use expression::{ExprError, Expression};
use numbers::Numbers;
pub use tape::MAX_STRINGIFY_DEPTH;
use tape::{render, resolve, stringify, Entry, Source};
/// Route-selection work steps on this thread since the last call (tests and fuzzing).
#[cfg(any(test, fuzzing))]
pub use work::take as take_work_steps;

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
    /// Where the message's numbers are in its text, indexed once per message.
    numbers: Numbers,
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

    /// Frees the scratch a message larger than `keep` bytes made grow, so one big
    /// message does not stay resident (simd-json's buffers grow with the input).
    pub fn trim(&mut self, keep: usize) {
        if self.json.input.capacity() > keep {
            *self = Selector::default();
        }
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
    /// Numbers are their JSON text as sent, whatever their size (SPEC §4: `1.50` stays
    /// `1.50`, `1e3` stays `1e3`, `5.0` is not `5`, `1e400` is `1e400`). simd-json's
    /// tape keeps only the value, so the text is found again in the message, by one
    /// linear pass on the first number stringified (see `numbers.rs`).
    pub fn evaluate(&mut self, expr: &Expression, message: &[u8]) -> Option<&[u8]> {
        let Selector {
            json,
            key,
            entries,
            numbers,
        } = self;
        key.clear();
        numbers.reset();
        json.with_object(message, |root| {
            let mut src = Source {
                tape: root,
                text: message,
                numbers,
                entries,
            };
            render(&expr.parts, &mut src, key);
        })?;
        Some(&self.key)
    }

    /// `select` for a one-variable expression: a string value is looked up straight from
    /// the tape, anything else is stringified first.
    fn select_single_var(&mut self, table: &Table, path: &Path, message: &[u8]) -> Option<usize> {
        let Selector {
            json,
            key,
            entries,
            numbers,
        } = self;
        numbers.reset();
        let found = json.with_object(message, |root| match resolve(root, path) {
            Some([Node::String(s), ..]) => table.route(s.as_bytes()),
            Some(value) => {
                key.clear();
                let mut src = Source {
                    tape: root,
                    text: message,
                    numbers,
                    entries,
                };
                stringify(value, &mut src, key, 0);
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
        work::add(message.len());
        let mut f = Some(f);
        // A number beyond simd-json's range (`1e400`, a 30-digit integer) is still JSON:
        // on that error, parse again a copy whose numbers are all `0` (their text is read
        // from `message` anyway). simd-json may have rewritten the first copy.
        for neutral in [false, true] {
            self.input.clear();
            self.input.extend_from_slice(message);
            if neutral {
                numbers::neutralize(&mut self.input);
            }
            self.input.extend_from_slice(&PADDING);
            // The tape's allocation is kept; only its lifetime is re-bound to this borrow.
            let mut tape = std::mem::replace(&mut self.tape, Tape(Vec::new())).reset();
            let parsed = simd_json::fill_tape_padded(
                &mut self.input,
                message.len(),
                &mut self.buffers,
                &mut tape,
            );
            if !neutral
                && matches!(&parsed, Err(e) if matches!(e.error(), ErrorType::InvalidNumber))
            {
                self.tape = tape.reset();
                continue;
            }
            let result = match (parsed, tape.0.first(), f.take()) {
                (Ok(()), Some(Node::Object { .. }), Some(f)) => Some(f(&tape.0)),
                _ => None,
            };
            self.tape = tape.reset();
            return result;
        }
        None
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

#[cfg(test)]
mod tests;

/// Work steps allowed per message byte (plus [`FUZZ_WORK_FIXED`]) in [`fuzz_select`]:
/// a few linear passes per variable; a quadratic path exceeds it on inputs of a few
/// hundred numbers.
#[cfg(any(test, fuzzing))]
pub const FUZZ_WORK_PER_BYTE: u64 = 32;
#[cfg(any(test, fuzzing))]
pub const FUZZ_WORK_FIXED: u64 = 256;

/// The `route_select` fuzz target (and its seed test): the first byte picks one of a
/// few expressions, the rest is a message. Selection and evaluation must not panic,
/// must fall back to `$default`, and must stay within a work budget linear in the
/// message size.
#[cfg(any(test, fuzzing))]
pub fn fuzz_select(data: &[u8]) {
    const EXPRESSIONS: [&str; 4] = [
        "$request.body.action",
        "$request.body",
        "${request.body.a}-${request.body.a[0].b}/$request.body.n",
        r"\$default",
    ];
    let (pick, message) = data.split_first().unwrap_or((&0, &[]));
    let source = EXPRESSIONS[usize::from(*pick) % EXPRESSIONS.len()];
    let expr = Expression::parse(source).expect("fixed expressions parse");
    let table = Table::new(
        expr.clone(),
        vec![("join".into(), 1), ("0".into(), 2), ("$default".into(), 3)],
        Some(0),
    );
    let mut selector = Selector::new();
    work::take();
    let route = selector.select(&table, message);
    assert!(matches!(route, Some(0..=2)), "{source}: route {route:?}");
    let _ = selector.evaluate(&expr, message);
    let steps = work::take();
    let len = message.len() as u64;
    let budget = FUZZ_WORK_PER_BYTE * len + FUZZ_WORK_FIXED;
    assert!(
        steps <= budget,
        "{source} on {len} bytes: {steps} work steps > budget {budget}"
    );
}
