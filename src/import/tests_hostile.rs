//! Hostile templates: text that tries to leave its TOML comment or string
//! (config injection), and intrinsics that fan out (exponential work).

use super::*;

fn convert(text: &str) -> Result<Output, String> {
    convert_text("t.yaml", text, &Options::default())
}

/// Logical ids, a function name, a route key and a stage id that each hold a
/// newline followed by a `[limits]` table.
pub const INJECTION: &str = r#"Resources:
  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, Name: !Ref Named}}
  Named: {Type: AWS::Lambda::Function, Properties: {FunctionName: "f\n[limits]\nmax_message_bytes = 1"}}
  "Fn\n[limits]\nmax_message_bytes = 1 #": {Type: AWS::Lambda::Function, Properties: {FunctionName: ok}}
  "I\n[limits]\nmax_message_bytes = 1 #": {Type: AWS::ApiGatewayV2::Integration, Properties: {ApiId: !Ref Api, IntegrationType: AWS_PROXY, IntegrationUri: "arn:aws:lambda:us-east-1:123456789012:function:ok"}}
  "R\n[limits]\nmax_message_bytes = 1": {Type: AWS::ApiGatewayV2::Route, Properties: {ApiId: !Ref Api, RouteKey: "k\n[limits]\u2028\u0085\u001b", ApiKeyRequired: true, Target: "integrations/I\n[limits]\nmax_message_bytes = 1 #"}}
  "S\r\n[limits]\r\nmax_message_bytes = 1 #": {Type: AWS::ApiGatewayV2::Stage, Properties: {ApiId: !Ref Api, StageName: prod, DefaultRouteSettings: {ThrottlingRateLimit: 5}}}
"#;

#[test]
fn template_text_never_leaves_its_comment_or_string() {
    let out = convert(INJECTION).expect("converts");
    // The config reads back with the template's text where it was, and no
    // `[limits]` (the integration test `--check`s it: Lambda needs credentials).
    let v: toml::Table = toml::from_str(&out.toml).unwrap_or_else(|e| panic!("{e}\n{}", out.toml));
    assert!(!v.contains_key("limits"), "{}", out.toml);
    assert_eq!(
        v["api"]["name"].as_str(),
        Some("f\n[limits]\nmax_message_bytes = 1")
    );
    let route = &v["routes"]["k\n[limits]\u{2028}\u{85}\u{1b}"];
    assert_eq!(
        route["integration"].as_str(),
        Some("I\n[limits]\nmax_message_bytes = 1 #")
    );
    // Every line is a comment, a table header, a key = value or blank: no line
    // begins inside a string, and no comment holds a control character.
    for line in out.toml.lines() {
        assert!(
            line.is_empty()
                || line.starts_with('#')
                || line.starts_with('[')
                || line.contains(" = "),
            "{line:?} in\n{}",
            out.toml
        );
        if line.starts_with('#') {
            assert!(
                !line
                    .chars()
                    .any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'),
                "{line:?}"
            );
        }
    }
    assert!(out
        .toml
        .contains("# AWS::ApiGatewayV2::Route R\\n[limits]\\nmax_message_bytes = 1\n"));
    // Warnings (stderr) are one line each as well.
    assert!(out
        .warnings
        .iter()
        .all(|w| !w.chars().any(char::is_control)));
}

#[test]
fn comments_escape_every_line_break_and_control_character() {
    assert_eq!(
        write::comment("a\nb\r\tc\u{0}\u{7f}\u{85}\u{2028}\u{2029}\\n é"),
        "a\\nb\\r\\tc\\u{0}\\u{7f}\\u{85}\\u{2028}\\u{2029}\\\\n é"
    );
    assert_eq!(write::key("a\nb"), "\"a\\nb\"");
    assert_eq!(write::key(""), "\"\"");
    assert_eq!(write::string("ok"), "\"ok\"");
    assert_eq!(write::string("x\ny"), "\"x\\ny\"");
    assert_eq!(write::string("it's"), "\"it's\"");
}
/// F1 .. F`n`, each named `${Fprev}${Fprev}`: 2^n bytes if evaluated naively.
pub fn doubling_chain(n: usize) -> String {
    let mut t = String::from(
        "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET}}\n  F1: {Type: AWS::Lambda::Function, Properties: {FunctionName: x}}\n",
    );
    for i in 2..=n {
        let p = i - 1;
        t.push_str(&format!(
            "  F{i}: {{Type: AWS::Lambda::Function, Properties: {{FunctionName: !Sub \"${{F{p}}}${{F{p}}}\"}}}}\n"
        ));
    }
    t
}

#[test]
fn a_doubling_chain_of_names_is_refused_in_few_steps() {
    let e = convert(&doubling_chain(40)).unwrap_err();
    assert_eq!(
        e,
        "F18: Fn::Sub: the resolved text is longer than 65536 bytes"
    );
    let template = load::parse(&doubling_chain(40)).unwrap();
    let mut r = resolve::Resolver::new(&template, &[]).unwrap();
    assert!(r.function_name("F40").is_err());
    assert!(r.steps() < 500, "{} steps", r.steps());
    // Below the cap the names are exact, each function evaluated once.
    let template = load::parse(&doubling_chain(10)).unwrap();
    let mut r = resolve::Resolver::new(&template, &[]).unwrap();
    assert_eq!(r.function_name("F10").unwrap(), "x".repeat(512));
    let once = r.steps();
    assert_eq!(r.function_name("F10").unwrap().len(), 512);
    assert_eq!(r.steps(), once);
    assert!(once < 100, "{once} steps");
}

#[test]
fn fan_out_through_mappings_runs_out_of_its_budget() {
    // Each mapping entry is a list of two look-ups of the previous one: 2^25
    // evaluations without a budget, no string ever long.
    let mut t = String::from("Mappings:\n  M:\n    k:\n      l0: [x]\n");
    for i in 1..=25 {
        let p = i - 1;
        t.push_str(&format!(
            "      l{i}: [!FindInMap [M, k, l{p}], !FindInMap [M, k, l{p}]]\n"
        ));
    }
    t.push_str("Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, Name: !Join ['', !FindInMap [M, k, l25]]}}\n");
    let template = load::parse(&t).unwrap();
    let mut r = resolve::Resolver::new(&template, &[]).unwrap();
    let api = &template["Resources"]["Api"]["Properties"];
    let e = r.value(api, "Api Api").unwrap_err();
    assert!(
        e.starts_with("Api Api: ") && e.contains("evaluation steps"),
        "{e}"
    );
    assert!(r.steps() <= resolve::MAX_STEPS + 1, "{} steps", r.steps());
}

#[test]
fn sub_variables_are_evaluated_once_per_sub() {
    let many = "${A}".repeat(1000);
    let text = format!(
        "Resources:\n  Api: {{Type: AWS::ApiGatewayV2::Api, Properties: {{ProtocolType: WEBSOCKET, Name: !Sub ['{many}', {{A: !Join ['', [a, b, c, d, e, f, g, h]]}}]}}}}\n"
    );
    let template = load::parse(&text).unwrap();
    let mut r = resolve::Resolver::new(&template, &[]).unwrap();
    let v = r
        .value(&template["Resources"]["Api"]["Properties"], "Api Api")
        .unwrap()
        .unwrap();
    assert_eq!(v["Name"].as_str().unwrap().len(), 8000);
    assert!(r.steps() < 100, "{} steps", r.steps());
}

#[test]
fn errors_are_one_line_whatever_the_template_holds() {
    let text = "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, Name: !Ref \"No\\nwhere\\u001b[2J\"}}\n";
    let e = convert(text).unwrap_err();
    assert_eq!(
        e,
        "Api Api: Ref to No\\nwhere\\u{1b}[2J: the template has no parameter or resource named No\\nwhere\\u{1b}[2J"
    );
}

#[test]
fn an_alias_of_a_large_string_cannot_expand_past_the_budget() {
    // A 1 MiB string named 80 times: 80 MiB of tree from a 1 MiB file. The YAML
    // reader's own limit counts replayed events (80 here), not bytes.
    let mut text = format!("Big: &big \"{}\"\nMany: [", "x".repeat(1 << 20));
    text.push_str(&vec!["*big"; 80].join(", "));
    text.push_str("]\nResources: {}\n");
    let e = convert(&text).unwrap_err();
    assert!(e.contains("expands to more than 64 MiB"), "{e}");
    // A few copies stay well within it (the error is about the missing API).
    let small = text.replace(&vec!["*big"; 80].join(", "), "*big, *big");
    let e = convert(&small).unwrap_err();
    assert!(!e.contains("expands"), "{e}");
}

#[test]
fn a_template_file_past_the_size_limit_is_refused_unread() {
    let path = std::env::temp_dir().join(format!("wsgate-big-{}.yaml", std::process::id()));
    let mut text = "# padding\n".repeat((MAX_TEMPLATE_BYTES / 10) as usize + 1);
    text.push_str("Resources: {}\n");
    std::fs::write(&path, &text).unwrap();
    let e = convert_file(&path, &Options::default()).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert!(e.contains("larger than 16 MiB"), "{e}");
}
