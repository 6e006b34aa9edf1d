//! Route selection tests: tables of expressions and messages, and properties.

use super::expression::*;
use super::tape::*;
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
    integer_beyond_u64_as_sent: "$request.body.n", r#"{"n":123456789012345678901234567890}"# => Some("123456789012345678901234567890");
    integer_below_i64_as_sent: "$request.body.n", r#"{"n":-123456789012345678901234567890}"# => Some("-123456789012345678901234567890");
    float_beyond_f64_as_sent: "$request.body.n", r#"{"n":1e400}"# => Some("1e400");
    float_below_f64_as_sent: "$request.body.n", r#"{"n":-1e-400}"# => Some("-1e-400");
    big_number_elsewhere_keeps_the_route: "$request.body.action", r#"{"action":"join","n":1e400}"# => Some("join");
    big_numbers_in_containers_as_sent: "$request.body", r#"{"a":[1e400,2],"b":{"c":-99999999999999999999999}}"# => Some("{a=[1e400, 2], b={c=-99999999999999999999999}}");
    malformed_number_is_not_json: "$request.body.action", r#"{"action":"join","n":01e400}"# => None;
    big_number_then_malformed_json_is_not_json: "$request.body.action", r#"{"action":"join","n":1e400,}"# => None;
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
    integer_just_beyond_u64: "$request.body.n", r#"{"n":18446744073709551616}"# => Some("18446744073709551616");
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

// ---- work is linear in the message size (issue 8, defect 2) ----------------------

/// `{"k":[e,e,…]}` of about `bytes` bytes, each element `element`.
fn array_message(key: &str, element: &str, bytes: usize) -> String {
    let mut m = format!("{{\"{key}\":[{element}");
    while m.len() + element.len() + 2 < bytes {
        m.push(',');
        m.push_str(element);
    }
    m.push_str("]}");
    m
}

/// Work steps to select a route for `message` (and, with a template, to evaluate it
/// the way a `route.request.body.*` mapping does).
fn selection_steps(expr: &str, message: &str) -> u64 {
    let expr = Expression::parse(expr).expect("expression parses");
    let table = Table::new(expr.clone(), vec![("join".into(), 1)], Some(0));
    let mut selector = Selector::new();
    super::take_work_steps();
    selector.select(&table, message.as_bytes());
    selector.evaluate(&expr, message.as_bytes());
    super::take_work_steps()
}

/// 128 KiB against 1 KiB must cost at most twice the size ratio in steps (the base
/// rescanned the tape and text for every number: thousands of times the ratio).
fn assert_linear(expr: &str, key: &str, element: &str) {
    let small = array_message(key, element, 1024);
    let large = array_message(key, element, 128 * 1024);
    let (s, l) = (selection_steps(expr, &small), selection_steps(expr, &large));
    let size_ratio = large.len() as f64 / small.len() as f64;
    let step_ratio = l as f64 / s as f64;
    assert!(
        step_ratio <= 2.0 * size_ratio,
        "{expr} on [{element},…]: {s} steps for {} B, {l} for {} B: ratio {step_ratio:.0} > 2 × {size_ratio:.0}",
        small.len(),
        large.len()
    );
}

#[test]
fn number_array_selection_work_is_linear() {
    assert_linear("$request.body.action", "action", "0");
}

#[test]
fn number_array_template_work_is_linear() {
    assert_linear(
        "x-${request.body.action}-${request.body.action}",
        "action",
        "-1.5e3",
    );
}

#[test]
fn big_number_work_is_linear() {
    assert_linear("$request.body.action", "action", "1e400");
}

#[test]
fn nested_number_work_is_linear() {
    assert_linear("$request.body", "action", "[1,{\"a\":2.0,\"b\":3,\"a\":4}]");
}

#[test]
fn whole_body_numbers_work_is_linear() {
    assert_linear("$request.body", "n", "123456789");
}

#[test]
fn big_number_selects_its_route_key() {
    let expr = Expression::parse("$request.body.action").unwrap();
    let key = "123456789012345678901234567890";
    let table = Table::new(expr, vec![("join".into(), 1), (key.into(), 2)], Some(0));
    let mut selector = Selector::new();
    let pick = |s: &mut Selector, m: &str| s.select(&table, m.as_bytes());
    assert_eq!(
        pick(&mut selector, r#"{"action":"join","n":1e400}"#),
        Some(1)
    );
    assert_eq!(
        pick(&mut selector, &format!(r#"{{"action":{key}}}"#)),
        Some(2)
    );
    assert_eq!(
        pick(&mut selector, r#"{"action":"join","n":1e400"#),
        Some(0)
    );
}

/// Adversarial shapes stay within the fuzz target's work budget.
#[test]
fn fuzz_select_budget_holds_on_hostile_shapes() {
    let mut shapes = vec![
        array_message("action", "0", 4096),
        array_message("n", "1e400", 4096),
        array_message("a", "{\"b\":1,\"b\":2.5}", 4096),
        array_message("a", "[[[[[1]]]]]", 4096),
        format!("{}{}", "{\"a\":[".repeat(300), "]}".repeat(300)),
    ];
    let mut dup = String::from("{");
    for i in 0..400 {
        dup.push_str(&format!("\"k{}\":{i}.5,", i % 7));
    }
    dup.push_str("\"n\":1}");
    shapes.push(dup);
    for shape in &shapes {
        for pick in 0u8..4 {
            let mut data = vec![pick];
            data.extend_from_slice(shape.as_bytes());
            super::fuzz_select(&data);
        }
    }
}
