//! The import's unit tests: the test templates of `tests/templates/` converted to
//! exact text, each intrinsic, the errors, and YAML (short tags) and JSON (long
//! forms) of the same generated template converting identically.

use super::*;
use proptest::prelude::*;

fn template(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/templates")
        .join(name);
    std::fs::read_to_string(path).expect("test template")
}

fn convert(text: &str, opts: &Options) -> Result<Output, String> {
    convert_text("t.yaml", text, opts)
}

fn ok(text: &str) -> Output {
    convert(text, &Options::default()).expect("converts")
}

fn with(params: &[(&str, &str)]) -> Options {
    Options {
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// The config's sections without comments or blank lines.
fn body(out: &Output) -> String {
    out.toml
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn simple_chat_becomes_three_lambda_routes_on_its_stage() {
    let out = ok(&template("simple-chat.yaml"));
    assert_eq!(out.warnings, Vec::<String>::new());
    assert_eq!(
        body(&out),
        r#"[api]
name = "SimpleChatWebSocket"
route_selection_expression = "$request.body.action"
stage = "Prod"
[aws]
region = "us-east-1"
account_id = "123456789012"
[integrations.ConnectInteg]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:OnConnectFunction"
[integrations.DisconnectInteg]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:OnDisconnectFunction"
[integrations.SendInteg]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:SendMessageFunction"
[routes."$connect"]
integration = "ConnectInteg"
[routes."$disconnect"]
integration = "DisconnectInteg"
[routes.sendmessage]
integration = "SendInteg""#
    );
    assert!(out
        .toml
        .contains("# AWS::ApiGatewayV2::Route SendRoute\n[routes.sendmessage]"));
    assert!(out
        .toml
        .contains("# AWS::ApiGatewayV2::Integration SendInteg (function SendMessageFunction)"));
}

#[test]
fn lambda_endpoint_and_pseudo_parameters_come_from_the_command_line() {
    let opts = Options {
        lambda_endpoint: Some("http://127.0.0.1:3001".into()),
        parameters: vec![
            ("AWS::Region".into(), "eu-west-1".into()),
            ("AWS::AccountId".into(), "111122223333".into()),
        ],
        ..Default::default()
    };
    let out = convert(&template("simple-chat.yaml"), &opts).unwrap();
    assert!(out.toml.contains("region = \"eu-west-1\"\naccount_id = \"111122223333\"\nlambda_endpoint = \"http://127.0.0.1:3001\"\n"));
    assert!(out
        .toml
        .contains("uri = \"arn:aws:lambda:eu-west-1:111122223333:function:OnConnectFunction\""));
    assert!(out.toml.contains("AWS::Region = eu-west-1"));
}

#[test]
fn cdk_json_resolves_join_uris_generated_ids_and_stage_throttling() {
    let out = ok(&template("cdk-chat.json"));
    assert_eq!(out.warnings, Vec::<String>::new());
    let b = body(&out);
    assert!(
        b.contains("[throttling]\nrate = 100.0\nburst = 50.0\n"),
        "{b}"
    );
    assert!(b.contains("[integrations.ChatApidefaultRouteDefaultIntegration3F1E2D5C]\ntype = \"aws_proxy\"\nuri = \"arn:aws:lambda:us-east-1:123456789012:function:wsgate-message\"\ntimeout = \"10000ms\""), "{b}");
    assert!(b.contains("[routes.sendmessage]\nintegration = \"ChatApisendmessageRouteSendIntegration6B8D2A1E\"\nroute_response = true\nthrottling = { rate = 10.0, burst = 5.0 }"), "{b}");
    assert!(b.contains("[routes.\"$default\"]\nintegration = \"ChatApidefaultRouteDefaultIntegration3F1E2D5C\"\nroute_response = true"), "{b}");
    assert!(out
        .toml
        .contains("# AWS::ApiGatewayV2::Route ChatApiConnectRoute5E2A1F3B\n"));
}

#[test]
fn authorizer_and_models_become_the_models_keys() {
    let out = ok(&template("authorizer-models.yaml"));
    assert_eq!(out.warnings, Vec::<String>::new());
    let b = body(&out);
    for part in [
        "[api]\nname = \"wsgate-game\"\nroute_selection_expression = \"$request.body.action\"\nstage = \"prod\"\nstage_variables = { table = \"prod-games\" }",
        "[access_log]\npath = \"-\"\nformat = '{\"requestId\":\"$context.requestId\",\"routeKey\":\"$context.routeKey\",\"status\":\"$context.status\"}'",
        "[models.join]\nschema = '{\"$schema\":\"http://json-schema.org/draft-04/schema#\",\"properties\":{\"action\":{\"type\":\"string\"},\"room\":{\"pattern\":\"^[a-z]+$\",\"type\":\"string\"}},\"required\":[\"action\",\"room\"],\"type\":\"object\"}'",
        "[models.move]\nschema = '{\"type\": \"object\", \"required\": [\"x\", \"y\"], \"properties\": {\"x\": {\"type\": \"integer\"}, \"y\": {\"type\": \"integer\"}}}'",
        "[authorizers.Auth]\ntype = \"request\"\nuri = \"arn:aws:lambda:us-east-1:123456789012:function:game-authorizer\"\nidentity_sources = [\"route.request.querystring.token\"]",
        "[integrations.GameInteg]\ntype = \"aws_proxy\"\nuri = \"arn:aws:lambda:us-east-1:123456789012:function:GameFunction\"\ntimeout = \"5000ms\"",
        "[routes.\"$connect\"]\nintegration = \"GameInteg\"\nauthorizer = \"Auth\"",
        "[routes.\"$default\"]\nintegration = \"GameInteg\"\nroute_response = true\nrequest_models = { \"$default\" = \"join\", move = \"move\" }\nmodel_selection_expression = \"$request.body.kind\"",
        "[routes.join]\nintegration = \"GameInteg\"\nroute_response = true\nrequest_model = \"join\"",
    ] {
        assert!(b.contains(part), "missing:\n{part}\nin:\n{b}");
    }
    // Every schema is JSON text the models' compiler reads.
    for line in b.lines().filter(|l| l.starts_with("schema = ")) {
        let v: toml::Value = toml::from_str(line).unwrap();
        let s = v["schema"].as_str().unwrap();
        serde_json::from_str::<serde_json::Value>(s).unwrap();
    }
}

#[test]
fn conditions_leave_models_out_and_pick_the_dev_timeout() {
    let out = convert(
        &template("authorizer-models.yaml"),
        &with(&[("Validation", "off"), ("Environment", "dev")]),
    )
    .unwrap();
    let b = body(&out);
    assert!(!b.contains("models"), "{b}");
    assert!(
        b.contains("stage = \"dev\"\nstage_variables = { table = \"dev-games\" }"),
        "{b}"
    );
    assert!(b.contains("timeout = \"29000ms\""), "{b}");
    // Validation on, but not in prod: only `join`'s $default model stays.
    let b = body(
        &convert(
            &template("authorizer-models.yaml"),
            &with(&[("Environment", "dev")]),
        )
        .unwrap(),
    );
    assert!(b.contains("[routes.join]\nintegration = \"GameInteg\"\nroute_response = true\nrequest_model = \"join\""), "{b}");
    assert!(!b.contains("model_selection_expression"), "{b}");
    let e = convert(
        &template("authorizer-models.yaml"),
        &with(&[("Environment", "test")]),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "parameter Environment: \"test\" is not one of its AllowedValues"
    );
}

#[test]
fn unsupported_parts_are_one_warning_each() {
    let out = ok(&template("unsupported.yaml"));
    assert_eq!(
        out.warnings,
        [
            "warning: Api Api: ApiKeySelectionExpression is not supported; API keys are not checked",
            "warning: Stage Stage: AccessLogSettings.DestinationArn is not supported; access log lines go to wsgate's access_log.path (stdout)",
            "warning: Integration PrivateInteg: ConnectionType VPC_LINK is not supported; IntegrationUri is called directly",
            "warning: Integration VtlInteg: IntegrationType HTTP (non-proxy, VTL mappings) is not supported; converted as HTTP_PROXY (the backend gets the message as is)",
            "warning: Integration VtlInteg: RequestTemplates (VTL) are not supported; requests carry the proxy event",
            "warning: Route IamRoute: AuthorizationType AWS_IAM is not supported; the route is served without authorization",
            "warning: Route SendRoute: ApiKeyRequired is not supported; API keys are not checked",
            "warning: AWS::ApiGatewayV2::VpcLink Link: this resource type is not supported; ignored",
        ]
    );
    let b = body(&out);
    assert!(b.contains("[integrations.EchoInteg]\ntype = \"mock\"\nstatus = 200\nresponse_template = \"$input.body\""), "{b}");
}

const MINI: &str = "Resources:
  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, Name: NAME}}
  I: {Type: AWS::ApiGatewayV2::Integration, Properties: {ApiId: !Ref Api, IntegrationType: HTTP_PROXY, IntegrationUri: URI}}
  R: {Type: AWS::ApiGatewayV2::Route, Properties: {ApiId: !Ref Api, RouteKey: $default, Target: integrations/I}}
";

fn mini(name: &str, uri: &str, extra: &str) -> Result<Output, String> {
    convert(
        &format!("{}{extra}", MINI.replace("NAME", name).replace("URI", uri)),
        &Options::default(),
    )
}

fn name_of(out: &Output) -> String {
    out.toml
        .lines()
        .find_map(|l| l.strip_prefix("name = "))
        .unwrap()
        .to_string()
}

#[test]
fn intrinsics_evaluate_as_cloudformation_does() {
    let params = "Parameters:\n  Env: {Type: String, Default: qa}\n  Hosts: {Type: CommaDelimitedList, Default: 'a,b,c'}\n\
Conditions:\n  Qa: !Equals [!Ref Env, qa]\n  NotQa: !Not [!Condition Qa]\n  Any: !Or [!Condition NotQa, !Equals [1, '1']]\n\
Mappings:\n  Ports: {qa: {http: 8081}}\n";
    let cases = [
        ("!Sub '${AWS::StackName}-${Env}-${!Literal}'", "\"wsgate-qa-${Literal}\""),
        ("!Sub ['${A}.${B}', {A: x, B: !Ref Env}]", "\"x.qa\""),
        ("!Join ['+', [a, !Ref Env, !Select [2, !Ref Hosts]]]", "\"a+qa+c\""),
        ("!Select [1, !Split [',', 'p,q,r']]", "\"q\""),
        ("!If [Qa, yes, no]", "\"yes\""),
        ("!If [NotQa, yes, no]", "\"no\""),
        ("!If [Any, yes, no]", "\"yes\""),
        ("!Join ['', [!Ref AWS::Region, '/', !Ref AWS::AccountId, '/', !Ref AWS::Partition, '/', !Ref AWS::URLSuffix]]", "\"us-east-1/123456789012/aws/amazonaws.com\""),
        ("!Sub 'p${Port}'", "ERR"),
        ("!Join ['', [port, !FindInMap [Ports, !Ref Env, http]]]", "\"port8081\""),
        ("!GetAtt Api.ApiEndpoint", "\"wss://Api.execute-api.us-east-1.amazonaws.com\""),
    ];
    for (expr, want) in cases {
        let got = mini(expr, "http://127.0.0.1:1/", params);
        match want {
            "ERR" => assert!(got.is_err(), "{expr}: {got:?}"),
            w => assert_eq!(name_of(&got.unwrap()), w, "{expr}"),
        }
    }
    // The same in JSON's long forms.
    let json = r#"{"Parameters": {"Env": {"Type": "String", "Default": "qa"}},
      "Resources": {
        "Api": {"Type": "AWS::ApiGatewayV2::Api", "Properties": {"ProtocolType": "WEBSOCKET",
          "Name": {"Fn::Join": ["-", [{"Fn::Sub": "${Env}"}, {"Ref": "AWS::StackName"}, {"Fn::Select": ["0", {"Fn::Split": ["/", "x/y"]}]}]]}}},
        "R": {"Type": "AWS::ApiGatewayV2::Route", "Properties": {"ApiId": {"Ref": "Api"}, "RouteKey": "$default", "Target": "integrations/I"}},
        "I": {"Type": "AWS::ApiGatewayV2::Integration", "Properties": {"ApiId": {"Fn::GetAtt": ["Api", "ApiId"]}, "IntegrationType": "MOCK"}}}}"#;
    let out = convert(json, &Options::default()).unwrap();
    assert_eq!(name_of(&out), "\"qa-wsgate-x\"");
}

#[test]
fn errors_name_the_problem() {
    let e = mini("!Ref Nowhere", "http://127.0.0.1:1/", "").unwrap_err();
    assert_eq!(
        e,
        "Api Api: Ref to Nowhere: the template has no parameter or resource named Nowhere"
    );
    let e = mini("!Sub '${Missing.Arn}'", "http://127.0.0.1:1/", "").unwrap_err();
    assert_eq!(
        e,
        "Api Api: Fn::GetAtt Missing.Arn: the template has no resource named Missing"
    );
    let e = convert(
        "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api\n  X: [",
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        e.starts_with("malformed YAML: ") && e.contains("line 2"),
        "{e}"
    );
    let e = convert("{\"Resources\": }", &Options::default()).unwrap_err();
    assert!(e.starts_with("malformed JSON: "), "{e}");
    let e = convert(
        "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: HTTP}}\n",
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        e,
        "the template has no WebSocket API (an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET)"
    );
    let e = convert(
        "Parameters:\n  P: {Type: String}\nResources: {}\n",
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e, "parameter P has no Default: pass --parameter P=VALUE");
    let e = mini(
        "!If [Loop, a, b]",
        "http://127.0.0.1:1/",
        "Conditions:\n  Loop: !Not [!Condition Loop]\n",
    )
    .unwrap_err();
    assert_eq!(e, "condition Loop refers to itself");
    assert_eq!(parameter("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert!(parameter("=x").is_err());
}

#[test]
fn strings_are_escaped_and_keys_quoted() {
    let out = mini(r#""a \"quoted\" \\ name\x01""#, "http://127.0.0.1:1/", "").unwrap();
    let v: toml::Value = toml::from_str(&out.toml).unwrap();
    assert_eq!(v["api"]["name"].as_str(), Some("a \"quoted\" \\ name\u{1}"));
    assert_eq!(write::key("a.b"), "\"a.b\"");
    assert_eq!(write::key("ok-_1"), "ok-_1");
}

/// One generated template: routes (key, function) and a stage.
#[derive(Debug, Clone)]
struct Gen {
    stage: String,
    rate: u32,
    routes: Vec<(String, String, bool)>,
}

fn id(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

fn yaml_of(g: &Gen) -> String {
    let mut y = format!(
        "Parameters:\n  StageName: {{Type: String, Default: {}}}\nResources:\n  Api:\n    Type: AWS::ApiGatewayV2::Api\n    Properties:\n      Name: !Sub '${{AWS::StackName}}-api'\n      ProtocolType: WEBSOCKET\n      RouteSelectionExpression: $request.body.action\n  Stage:\n    Type: AWS::ApiGatewayV2::Stage\n    Properties:\n      ApiId: !Ref Api\n      StageName: !Ref StageName\n      DefaultRouteSettings: {{ThrottlingRateLimit: {}, ThrottlingBurstLimit: {}}}\n",
        g.stage, g.rate, g.rate / 2
    );
    for (key, f, two_way) in &g.routes {
        let k = id(key);
        // Both YAML spellings of the URI: a `!Sub` and a `!Join` with a `!GetAtt`.
        let uri = if key.len() % 2 == 0 {
            format!("!Sub arn:aws:apigateway:${{AWS::Region}}:lambda:path/2015-03-31/functions/${{{k}Fn.Arn}}/invocations")
        } else {
            format!("!Join ['', ['arn:aws:apigateway:', !Ref 'AWS::Region', ':lambda:path/2015-03-31/functions/', !GetAtt {k}Fn.Arn, /invocations]]")
        };
        y.push_str(&format!(
            "  {k}Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      FunctionName: !Join ['-', [!Ref AWS::StackName, {f}]]\n  {k}Integ:\n    Type: AWS::ApiGatewayV2::Integration\n    Properties:\n      ApiId: !Ref Api\n      IntegrationType: AWS_PROXY\n      IntegrationUri: {uri}\n  {k}Route:\n    Type: AWS::ApiGatewayV2::Route\n    Properties:\n      ApiId: !Ref Api\n      RouteKey: {key}\n      Target: !Join [/, [integrations, !Ref {k}Integ]]\n"
        ));
        if *two_way {
            y.push_str(&format!("  {k}Response:\n    Type: AWS::ApiGatewayV2::RouteResponse\n    Properties:\n      ApiId: !Ref Api\n      RouteId: !Ref {k}Route\n      RouteResponseKey: $default\n"));
        }
    }
    y
}

fn json_of(g: &Gen) -> String {
    use serde_json::json;
    let mut res = serde_json::Map::new();
    res.insert(
        "Api".into(),
        json!({"Type": "AWS::ApiGatewayV2::Api", "Properties": {
        "Name": {"Fn::Sub": "${AWS::StackName}-api"}, "ProtocolType": "WEBSOCKET",
        "RouteSelectionExpression": "$request.body.action"}}),
    );
    res.insert("Stage".into(), json!({"Type": "AWS::ApiGatewayV2::Stage", "Properties": {
        "ApiId": {"Ref": "Api"}, "StageName": {"Ref": "StageName"},
        "DefaultRouteSettings": {"ThrottlingRateLimit": g.rate, "ThrottlingBurstLimit": g.rate / 2}}}));
    for (key, f, two_way) in &g.routes {
        let k = id(key);
        res.insert(
            format!("{k}Fn"),
            json!({"Type": "AWS::Serverless::Function", "Properties": {
            "FunctionName": {"Fn::Join": ["-", [{"Ref": "AWS::StackName"}, f]]}}}),
        );
        res.insert(format!("{k}Integ"), json!({"Type": "AWS::ApiGatewayV2::Integration", "Properties": {
            "ApiId": {"Ref": "Api"}, "IntegrationType": "AWS_PROXY",
            "IntegrationUri": {"Fn::Join": ["", ["arn:aws:apigateway:", {"Ref": "AWS::Region"},
                ":lambda:path/2015-03-31/functions/", {"Fn::GetAtt": [format!("{k}Fn"), "Arn"]}, "/invocations"]]}}}));
        res.insert(
            format!("{k}Route"),
            json!({"Type": "AWS::ApiGatewayV2::Route", "Properties": {
            "ApiId": {"Ref": "Api"}, "RouteKey": key,
            "Target": {"Fn::Join": ["/", ["integrations", {"Ref": format!("{k}Integ")}]]}}}),
        );
        if *two_way {
            res.insert(format!("{k}Response"), json!({"Type": "AWS::ApiGatewayV2::RouteResponse", "Properties": {
                "ApiId": {"Ref": "Api"}, "RouteId": {"Ref": format!("{k}Route")}, "RouteResponseKey": "$default"}}));
        }
    }
    json!({"Parameters": {"StageName": {"Type": "String", "Default": g.stage}}, "Resources": res})
        .to_string()
}

fn gen() -> impl Strategy<Value = Gen> {
    (
        "[a-z][a-z0-9]{0,7}",
        1u32..100_000,
        proptest::collection::btree_map(
            "[a-z][a-z0-9]{0,9}",
            ("[a-z][a-z0-9]{0,9}", any::<bool>()),
            1..6,
        ),
    )
        .prop_map(|(stage, rate, routes)| Gen {
            stage,
            rate,
            routes: routes.into_iter().map(|(k, (f, t))| (k, f, t)).collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn yaml_and_json_forms_convert_identically(g in gen()) {
        let y = convert_text("t", &yaml_of(&g), &Options::default()).unwrap();
        let j = convert_text("t", &json_of(&g), &Options::default()).unwrap();
        prop_assert_eq!(&y, &j);
        for (key, f, two_way) in &g.routes {
            let section = format!("[routes.{key}]\nintegration = \"{}Integ\"\n{}", id(key), if *two_way { "route_response = true\n" } else { "" });
            prop_assert!(y.toml.contains(&section), "{}", y.toml);
            let fn_uri = format!("uri = \"arn:aws:lambda:us-east-1:123456789012:function:wsgate-{f}\"");
            prop_assert!(y.toml.contains(&fn_uri), "{}", y.toml);
        }
    }
}

#[test]
fn settings_that_need_adjusting_are_adjusted_with_a_warning() {
    let extra = "  S:
    Type: AWS::ApiGatewayV2::Stage
    Properties:
      ApiId: !Ref Api
      StageName: s
      DefaultRouteSettings: {ThrottlingRateLimit: 10, ThrottlingBurstLimit: 4, LoggingLevel: INFO}
      RouteSettings:
        $default: {ThrottlingRateLimit: 50}
        $connect: {ThrottlingRateLimit: 5, ThrottlingBurstLimit: 2}
        gone: {ThrottlingRateLimit: 1}
      AccessLogSettings: {Format: \"\"}
  C:
    Type: AWS::ApiGatewayV2::Route
    Properties: {ApiId: !Ref Api, RouteKey: $connect, Target: integrations/I}
  M:
    Type: AWS::ApiGatewayV2::Model
    Properties: {ApiId: !Ref Api, Name: m, Schema: 'not json'}
  RR:
    Type: AWS::ApiGatewayV2::RouteResponse
    Properties: {ApiId: !Ref Api, RouteId: Elsewhere, RouteResponseKey: $default}
  Self:
    Type: AWS::Lambda::Function
    Properties: {FunctionName: x, Unknown: 1}
";
    let extra = format!(
        "{extra}  Http: {{Type: AWS::ApiGatewayV2::Api, Properties: {{ProtocolType: HTTP}}}}\n"
    );
    let out = mini("n", "http://127.0.0.1:1/", &extra).unwrap();
    assert_eq!(
        out.warnings,
        [
            "warning: Api Http: ProtocolType HTTP is not served (WebSocket APIs only); ignored",
            "warning: Stage S: DefaultRouteSettings.LoggingLevel is not supported; execution logs are wsgate's own (--log-level)",
            "warning: Stage S: AccessLogSettings.Format: the format is empty; access logging left off",
            "warning: Model M: Schema is not a JSON object; model skipped",
            "warning: Route R: RouteSettings.$default.ThrottlingRateLimit 50 is above the stage's 10; lowered to it (a route may only lower the stage's limits)",
            "warning: RouteResponse RR: RouteId Elsewhere names no converted route; ignored",
            "warning: Stage S: RouteSettings.gone: no route with this key; ignored",
        ]
    );
    let b = body(&out);
    assert!(
        b.contains(
            "[throttling]\nconnect_rate = 5.0\nconnect_burst = 2.0\nrate = 10.0\nburst = 4.0\n"
        ),
        "{b}"
    );
    assert!(
        b.contains("throttling = { rate = 10.0, burst = 4.0 }"),
        "{b}"
    );
    assert!(!b.contains("[access_log]") && !b.contains("[models"), "{b}");
}

#[test]
fn hostile_templates_end_in_errors_not_hangs() {
    // A function named after itself, a Sub inside a Join inside ... 70 deep.
    let e = mini(
        "!Ref F",
        "http://127.0.0.1:1/",
        "  F: {Type: AWS::Lambda::Function, Properties: {FunctionName: !Ref F}}\n",
    )
    .unwrap_err();
    assert!(e.contains("nested too deeply"), "{e}");
    let deep = "[".repeat(70) + &"]".repeat(70);
    let e = mini(&format!("!Join ['', {deep}]"), "http://127.0.0.1:1/", "").unwrap_err();
    assert!(
        e.contains("nested too deeply") || e.contains("recursion"),
        "{e}"
    );
    // YAML aliases that would expand a billion times.
    let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for (i, c) in "bcdefghij".chars().enumerate() {
        let prev = (b'a' + i as u8) as char;
        laughs.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    laughs.push_str("Resources: {}\n");
    assert!(convert(&laughs, &Options::default()).is_err());
}

#[test]
fn stage_is_picked_by_name_when_there_are_several() {
    let stages = "  A: {Type: AWS::ApiGatewayV2::Stage, Properties: {ApiId: !Ref Api, StageName: alpha, StageVariables: {v: a}}}
  B: {Type: AWS::ApiGatewayV2::Stage, Properties: {ApiId: !Ref Api, StageName: beta, StageVariables: {v: b}}}
  D: {Type: AWS::ApiGatewayV2::Deployment, Properties: {ApiId: !Ref Api, StageName: alpha}}
";
    let e = mini("n", "http://127.0.0.1:1/", stages).unwrap_err();
    assert_eq!(
        e,
        "the API Api has several stages (alpha, beta): pick one with --stage NAME"
    );
    let text = format!(
        "{}{stages}",
        MINI.replace("NAME", "n")
            .replace("URI", "http://127.0.0.1:1/")
    );
    let pick = |s: &str| Options {
        stage: Some(s.into()),
        ..Default::default()
    };
    let b = body(&convert(&text, &pick("beta")).unwrap());
    assert!(
        b.contains("stage = \"beta\"\nstage_variables = { v = \"b\" }"),
        "{b}"
    );
    let e = convert(&text, &pick("gamma")).unwrap_err();
    assert_eq!(
        e,
        "--stage gamma: the API Api has no such stage (stages: alpha, beta)"
    );
    // No Stage resource: --stage names the path, else "/" with a warning.
    let plain = mini("n", "http://127.0.0.1:1/", "").unwrap();
    assert_eq!(plain.warnings, ["warning: Api Api: no AWS::ApiGatewayV2::Stage; clients connect to / (pick a path with --stage NAME)"]);
    assert!(body(&plain).contains("stage = \"\""));
    let named = convert(
        &MINI
            .replace("NAME", "n")
            .replace("URI", "http://127.0.0.1:1/"),
        &pick("v1"),
    )
    .unwrap();
    assert!(named.warnings.is_empty() && body(&named).contains("stage = \"v1\""));
}
