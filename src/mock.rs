//! The `mock` integration (SPEC §5): no backend, a fixed status and a response
//! template rendered straight into the outgoing frame buffer.

/// One piece of a compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    InputBody,
    Context(Var),
    /// `$context.authorizer.NAME` (SPEC §11); empty without an authorizer.
    Authorizer(Box<str>),
}

/// A `$context.*` variable a template may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    ConnectionId,
    RouteKey,
    RequestId,
    MessageId,
    Stage,
    EventType,
}

const VARS: [(&str, Var); 6] = [
    ("connectionId", Var::ConnectionId),
    ("routeKey", Var::RouteKey),
    ("requestId", Var::RequestId),
    ("messageId", Var::MessageId),
    ("stage", Var::Stage),
    ("eventType", Var::EventType),
];

/// A compiled `response_template`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

/// What a template may refer to while rendering one event.
pub struct Context<'a> {
    pub connection_id: &'a [u8],
    pub route_key: &'a str,
    pub request_id: &'a [u8],
    pub message_id: &'a [u8],
    pub stage: &'a str,
    pub event_type: &'a str,
    pub body: &'a [u8],
    pub authorizer: Option<&'a crate::authorizer::Context>,
}

impl Template {
    /// Compiles `src`: literal text, `$input.body`, `$context.NAME` (also as `${...}`),
    /// and `\$` for a literal dollar.
    pub fn parse(src: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let b = src.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'\\' if b.get(i + 1) == Some(&b'$') => {
                    lit.push(b'$');
                    i += 2;
                }
                b'$' => {
                    let (name, next) = if b.get(i + 1) == Some(&b'{') {
                        let end = src[i + 2..]
                            .find('}')
                            .ok_or_else(|| format!("unterminated ${{ at offset {i}"))?;
                        (&src[i + 2..i + 2 + end], i + 3 + end)
                    } else {
                        let len = src[i + 1..]
                            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_'))
                            .unwrap_or(src.len() - i - 1);
                        let name = src[i + 1..i + 1 + len].trim_end_matches('.');
                        (name, i + 1 + name.len())
                    };
                    let part = if name == "input.body" {
                        Part::InputBody
                    } else if let Some(v) = name
                        .strip_prefix("context.authorizer.")
                        .filter(|v| !v.is_empty())
                    {
                        Part::Authorizer(v.into())
                    } else if let Some(v) = name.strip_prefix("context.") {
                        let var = VARS
                            .iter()
                            .find(|(n, _)| *n == v)
                            .map(|(_, var)| *var)
                            .ok_or_else(|| {
                                format!(
                                "unknown variable ${name} at offset {i} (known: $input.body, {})",
                                VARS.map(|(n, _)| format!("$context.{n}")).join(", ")
                            )
                            })?;
                        Part::Context(var)
                    } else {
                        return Err(format!(
                            "unknown variable \"${name}\" at offset {i} (use $input.body or $context.NAME; \\$ for a dollar)"
                        ));
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut lit).into_boxed_slice()));
                    }
                    parts.push(part);
                    i = next;
                }
                c => {
                    lit.push(c);
                    i += 1;
                }
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit.into_boxed_slice()));
        }
        Ok(Template { parts })
    }

    /// Whether the reply echoes the input; it then keeps the input's opcode.
    pub fn uses_body(&self) -> bool {
        self.parts.contains(&Part::InputBody)
    }

    /// Rendered length in bytes, so a frame header can be written before the payload.
    pub fn rendered_len(&self, cx: &Context<'_>) -> usize {
        self.parts.iter().map(|p| piece(p, cx).len()).sum()
    }

    /// Appends the rendered template to `out`.
    pub fn render_into(&self, cx: &Context<'_>, out: &mut Vec<u8>) {
        for p in &self.parts {
            out.extend_from_slice(piece(p, cx));
        }
    }
}

fn piece<'a>(p: &'a Part, cx: &Context<'a>) -> &'a [u8] {
    match p {
        Part::Literal(l) => l,
        Part::InputBody => cx.body,
        Part::Context(Var::ConnectionId) => cx.connection_id,
        Part::Context(Var::RouteKey) => cx.route_key.as_bytes(),
        Part::Context(Var::RequestId) => cx.request_id,
        Part::Context(Var::MessageId) => cx.message_id,
        Part::Context(Var::Stage) => cx.stage.as_bytes(),
        Part::Context(Var::EventType) => cx.event_type.as_bytes(),
        Part::Authorizer(name) => cx
            .authorizer
            .and_then(|a| a.get(name))
            .map_or(b"", str::as_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, body: &[u8]) -> Vec<u8> {
        let t = Template::parse(t).unwrap();
        let cx = Context {
            connection_id: b"CONN",
            route_key: "$default",
            request_id: b"REQ",
            message_id: b"MSG",
            stage: "prod",
            event_type: "MESSAGE",
            body,
            authorizer: None,
        };
        let mut out = Vec::new();
        t.render_into(&cx, &mut out);
        assert_eq!(out.len(), t.rendered_len(&cx));
        out
    }

    #[test]
    fn renders_every_variable() {
        assert_eq!(render("$input.body", b"hi"), b"hi");
        assert_eq!(
            render("[$context.routeKey|${context.connectionId}|$context.requestId|$context.messageId|$context.stage|$context.eventType]", b""),
            b"[$default|CONN|REQ|MSG|prod|MESSAGE]"
        );
        assert_eq!(render("cost \\$5: $input.body.", b"x"), b"cost $5: x.");
        assert_eq!(render("", b"x"), b"");
    }

    #[test]
    fn unknown_variables_are_errors() {
        assert!(Template::parse("$context.nope")
            .unwrap_err()
            .contains("$context.nope"));
        assert!(Template::parse("$foo").is_err());
        assert!(Template::parse("${context.stage").is_err());
    }

    #[test]
    fn body_use_is_detected() {
        assert!(Template::parse("a $input.body").unwrap().uses_body());
        assert!(!Template::parse("$context.stage").unwrap().uses_body());
    }
}
