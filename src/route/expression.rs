//! The route selection expression: a template of literal text and
//! `$request.body...` variables, parsed once at startup (SPEC §4's grammar).

use std::fmt;

/// The fixed start of every variable's path: only the message body can be addressed.
const BODY_PREFIX: &[u8] = b"request.body";

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
    pub(super) parts: Box<[Part]>,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Part {
    /// Text copied to the result as is (escapes already resolved).
    Literal(Box<[u8]>),
    /// A path into the message body, replaced by its stringified value.
    Var(Path),
}

/// The steps after `request.body`; empty means the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Path(pub(super) Box<[Step]>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
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
    pub(super) fn single_var(&self) -> Option<&Path> {
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
pub(super) fn flush_literal(literal: &mut Vec<u8>, parts: &mut Vec<Part>) {
    if !literal.is_empty() {
        parts.push(Part::Literal(std::mem::take(literal).into()));
    }
}

/// The index of the next `$` or `\` at or after `from`, or the end.
pub(super) fn next_special(bytes: &[u8], from: usize) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    rest.iter()
        .position(|b| matches!(b, b'$' | b'\\'))
        .map_or(bytes.len(), |i| from + i)
}

/// Parses the variable whose `$` is at `dollar`; returns it and the offset after it.
pub(super) fn parse_var(bytes: &[u8], dollar: usize) -> Result<(Path, usize), ExprError> {
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
pub(super) fn parse_path(
    bytes: &[u8],
    start: usize,
    dollar: usize,
) -> Result<(Path, usize), ExprError> {
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
pub(super) fn parse_name(bytes: &[u8], dot: usize) -> Result<(Step, usize), ExprError> {
    let end = run_end(bytes, dot + 1, |b| is_word_byte(b) || b == b'-');
    if end == dot + 1 {
        return Err(ExprError::at(dot, "expected a name after '.'"));
    }
    Ok((Step::Key(bytes[dot + 1..end].into()), end))
}

/// Parses `[index]` with the bracket at `open`.
pub(super) fn parse_index(bytes: &[u8], open: usize) -> Result<(Step, usize), ExprError> {
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
pub(super) fn run_end(bytes: &[u8], from: usize, accept: impl Fn(u8) -> bool) -> usize {
    let rest = bytes.get(from..).unwrap_or_default();
    from + rest.iter().take_while(|&&b| accept(b)).count()
}

pub(super) fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}
