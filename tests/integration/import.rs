//! SPEC §17: `wsgate import TEMPLATE` and `wsgate --template TEMPLATE` on the test
//! templates of `tests/templates/`: each converts, `--check` accepts the result, a
//! gateway serving the template answers through its routes exactly as one serving
//! the hand-written equivalent config does (Lambda functions on the Invoke API
//! fixture of `lambda.rs`), unsupported parts are exact warning lines, and broken
//! templates exit 1 naming the problem.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::json;

use crate::backend::*;
use crate::lambda;
use crate::support::*;

pub fn template(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/templates")
        .join(name)
}

fn wsgate(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    c.envs(lambda::ENV).args(args).stdin(Stdio::null());
    c
}

/// Runs wsgate to its exit (at most 15 s): (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let child = wsgate(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsgate");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(15))
        .unwrap_or_else(|_| panic!("wsgate {args:?} did not exit"))
        .expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A gateway started with `args` (a template or a config), killed on drop.
pub struct Served {
    child: Child,
    pub listen: SocketAddr,
}

impl Served {
    pub fn start(args: &[&str]) -> Served {
        let mut all = vec![
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ];
        all.extend_from_slice(args);
        let mut child = wsgate(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wsgate");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(15))
            .unwrap_or_else(|_| panic!("wsgate {args:?} printed no ready line"));
        Served {
            child,
            listen: parse_ready(&line).listen,
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the Invoke API saw: (function path, event type, route key, body).
fn trace(fixture: &Backend, n: usize) -> Vec<(String, String, String, String)> {
    fixture
        .wait_requests(n)
        .iter()
        .map(|r| {
            let e = r.event();
            (
                r.path().to_string(),
                r.event_type().unwrap_or("").to_string(),
                r.route_key().unwrap_or("").to_string(),
                e["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn function_path(name: &str) -> String {
    format!(
        "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3A{name}/invocations"
    )
}

/// `examples/aws-chat/wsgate.toml`'s shape for the SAM simple chat, written by hand.
const SIMPLE_CHAT: &str = r#"
[api]
name = "SimpleChatWebSocket"
route_selection_expression = "$request.body.action"
stage = "Prod"
[aws]
region = "us-east-1"
account_id = "123456789012"
lambda_endpoint = "ENDPOINT"
[integrations.onconnect]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:OnConnectFunction"
[integrations.ondisconnect]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:OnDisconnectFunction"
[integrations.sendmessage]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:SendMessageFunction"
[routes."$connect"]
integration = "onconnect"
[routes."$disconnect"]
integration = "ondisconnect"
[routes.sendmessage]
integration = "sendmessage"
"#;

/// The CDK chat written by hand.
const CDK_CHAT: &str = r#"
[api]
name = "ChatApi"
stage = "dev"
[aws]
region = "us-east-1"
account_id = "123456789012"
lambda_endpoint = "ENDPOINT"
[throttling]
rate = 100
burst = 50
[integrations.connect]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:ConnectHandler2FFD52D8"
[integrations.message]
type = "aws_proxy"
uri = "arn:aws:lambda:us-east-1:123456789012:function:wsgate-message"
timeout = "10s"
[routes."$connect"]
integration = "connect"
[routes."$default"]
integration = "message"
route_response = true
[routes.sendmessage]
integration = "message"
route_response = true
throttling = { rate = 10, burst = 5 }
"#;

/// Runs `run_chat` on a gateway serving `template` with `--template` and on one
/// serving the hand-written equivalent `config`, each with its own Invoke fixture;
/// asserts both saw and answered the same, and returns what the template gave and
/// the template's fixture.
fn served_as_hand_written<T: PartialEq + std::fmt::Debug>(
    template_name: &str,
    config: &str,
    run_chat: impl Fn(&[&str], &Backend) -> T,
) -> (T, Backend) {
    let f1 = lambda::invoke_fixture();
    let t = template(template_name);
    let args = [
        "--template",
        t.to_str().unwrap(),
        "--lambda-endpoint",
        &f1.url(""),
    ];
    let from_template = run_chat(&args, &f1);
    let f2 = lambda::invoke_fixture();
    let path = hand_written(config, &f2.url(""));
    let from_config = run_chat(&["--config", path.to_str().unwrap()], &f2);
    assert_eq!(from_template, from_config);
    (from_template, f1)
}

fn hand_written(text: &str, endpoint: &str) -> PathBuf {
    write_config(&text.replace("ENDPOINT", endpoint))
}

#[test]
fn each_template_converts_and_check_accepts_the_result() {
    let endpoint = "http://127.0.0.1:9";
    for (name, extra) in [
        ("simple-chat.yaml", vec![]),
        ("cdk-chat.json", vec![]),
        ("unsupported.yaml", vec![]),
        // With its models (the default) it needs `[models]` (SPEC §14) to check.
        (
            "authorizer-models.yaml",
            vec!["--parameter", "Validation=off"],
        ),
    ] {
        let t = template(name);
        let t = t.to_str().unwrap();
        let mut args = vec!["import", t, "--lambda-endpoint", endpoint];
        args.extend_from_slice(&extra);
        let (code, toml, err) = run(&args);
        assert_eq!(code, 0, "{name}: {err}");
        assert!(
            toml.starts_with("# wsgate configuration converted by `wsgate import` from "),
            "{toml}"
        );
        let file = write_config(&toml);
        let (code, from_file, err) = run(&["--config", file.to_str().unwrap(), "--check"]);
        assert_eq!(code, 0, "{name}: {err}\n{toml}");
        // `--template --check` converts in memory to the same route table.
        let mut args = vec!["--template", t, "--check", "--lambda-endpoint", endpoint];
        args.extend_from_slice(&extra);
        let (code, direct, err) = run(&args);
        assert_eq!(code, 0, "{name}: {err}");
        let table = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("config ok"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(table(&direct), table(&from_file), "{name}");
        assert!(direct.ends_with(&format!("config ok: {t}\n")), "{direct}");
    }
}

#[test]
fn the_sam_simple_chat_serves_as_its_hand_written_config() {
    let run_chat = |args: &[&str], fixture: &Backend| {
        let gw = Served::start(args);
        let mut c = Client::connect(gw.listen, "/Prod");
        c.send_text(r#"{"action":"sendmessage","data":"hello"}"#);
        fixture.wait_requests(2);
        drop(c);
        trace(fixture, 3)
    };
    let (from_template, f1) = served_as_hand_written("simple-chat.yaml", SIMPLE_CHAT, run_chat);
    let body = r#"{"action":"sendmessage","data":"hello"}"#;
    assert_eq!(
        from_template,
        [
            (
                function_path("OnConnectFunction"),
                "CONNECT".into(),
                "$connect".into(),
                String::new()
            ),
            (
                function_path("SendMessageFunction"),
                "MESSAGE".into(),
                "sendmessage".into(),
                body.into()
            ),
            (
                function_path("OnDisconnectFunction"),
                "DISCONNECT".into(),
                "$disconnect".into(),
                String::new()
            ),
        ]
    );
    for r in f1.requests() {
        let auth = r.header("Authorization").unwrap_or("");
        assert!(
            auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={}/", lambda::KEY))
                && auth.contains("/us-east-1/lambda/aws4_request"),
            "{auth}"
        );
    }
}

#[test]
fn the_cdk_template_answers_as_its_hand_written_config() {
    let run_chat = |args: &[&str], fixture: &Backend| {
        let gw = Served::start(args);
        let mut c = Client::connect(gw.listen, "/dev");
        let replies = vec![
            c.ask("hello"),
            c.ask(r#"{"action":"sendmessage","text":"hi"}"#),
        ];
        drop(c);
        (replies, trace(fixture, 3))
    };
    let (from_template, _) = served_as_hand_written("cdk-chat.json", CDK_CHAT, run_chat);
    assert_eq!(
        from_template.0,
        ["pong:hello", r#"pong:{"action":"sendmessage","text":"hi"}"#]
    );
    let routes: Vec<(String, String)> = from_template
        .1
        .iter()
        .map(|t| (t.0.clone(), t.2.clone()))
        .collect();
    // No $disconnect route in the template: closing invokes nothing.
    assert_eq!(
        routes,
        [
            (function_path("ConnectHandler2FFD52D8"), "$connect".into()),
            (function_path("wsgate-message"), "$default".into()),
            (function_path("wsgate-message"), "sendmessage".into()),
        ]
    );
}

/// The authorizer function (`game-authorizer`: Allow for `?token=allow`, else
/// Deny) and the game function (`GameFunction`: `pong:` and the message).
pub fn game_fixture() -> Backend {
    Backend::start(|r| {
        if r.path().contains("game-authorizer") {
            let ev = r.event();
            let effect = match ev["queryStringParameters"]["token"].as_str() {
                Some("allow") => "Allow",
                _ => "Deny",
            };
            return Reply::json(
                200,
                &json!({
                    "principalId": "p",
                    "policyDocument": {"Version": "2012-10-17", "Statement": [
                        {"Action": "execute-api:Invoke", "Effect": effect, "Resource": ev["methodArn"]}
                    ]}
                }),
            );
        }
        match r.event_type() {
            Some("MESSAGE") => Reply::lambda(
                200,
                &format!("pong:{}", r.event()["body"].as_str().unwrap_or("")),
            ),
            _ => Reply::ok("null"),
        }
    })
}

#[test]
fn the_authorizer_template_authorizes_connect_and_serves_its_routes() {
    let f = game_fixture();
    let t = template("authorizer-models.yaml");
    let gw = Served::start(&[
        "--template",
        t.to_str().unwrap(),
        "--lambda-endpoint",
        &f.url(""),
        "--parameter",
        "Validation=off",
        "--parameter",
        "Environment=dev",
    ]);
    assert_eq!(
        http(gw.listen, upgrade_request("/dev").as_bytes()).status,
        401
    );
    assert_eq!(
        http(gw.listen, upgrade_request("/dev?token=deny").as_bytes()).status,
        403
    );
    let mut c = Client::connect(gw.listen, "/dev?token=allow");
    assert_eq!(
        c.ask(r#"{"action":"join","room":"a"}"#),
        r#"pong:{"action":"join","room":"a"}"#
    );
    assert_eq!(c.ask("anything"), "pong:anything");
    let auth = f
        .requests()
        .into_iter()
        .find(|r| r.path().contains("game-authorizer"))
        .expect("authorizer called");
    assert_eq!(auth.path(), function_path("game-authorizer"));
    let msg = f.wait_event("MESSAGE");
    assert_eq!(msg.path(), function_path("GameFunction"));
    assert_eq!(msg.event()["stageVariables"]["table"], "dev-games");
}

#[test]
fn unsupported_parts_are_exact_warning_lines() {
    let t = template("unsupported.yaml");
    let t = t.to_str().unwrap();
    let want = "\
warning: Api Api: ApiKeySelectionExpression is not supported; API keys are not checked
warning: Stage Stage: AccessLogSettings.DestinationArn is not supported; access log lines go to wsgate's access_log.path (stdout)
warning: Integration PrivateInteg: ConnectionType VPC_LINK is not supported; IntegrationUri is called directly
warning: Integration VtlInteg: IntegrationType HTTP (non-proxy, VTL mappings) is not supported; converted as HTTP_PROXY (the backend gets the message as is)
warning: Integration VtlInteg: RequestTemplates (VTL) are not supported; requests carry the proxy event
warning: Route IamRoute: AuthorizationType AWS_IAM is not supported; the route is served without authorization
warning: Route SendRoute: ApiKeyRequired is not supported; API keys are not checked
warning: AWS::ApiGatewayV2::VpcLink Link: this resource type is not supported; ignored
";
    let (code, _, err) = run(&["import", t]);
    assert_eq!((code, err.as_str()), (0, want));
    let (code, out, err) = run(&["--template", t, "--check"]);
    assert_eq!((code, err.as_str()), (0, want), "{out}");
    // The MOCK integration serves $connect on the template's stage.
    let gw = Served::start(&["--template", t]);
    let r = http(gw.listen, upgrade_request("/live").as_bytes());
    assert_eq!(r.status, 101);
}

#[test]
fn broken_templates_exit_1_naming_the_problem() {
    let dir = temp_dir();
    let cases = [
        ("bad.yaml", "Resources:\n  Api:\n    Type: [unclosed\n", "malformed YAML: "),
        ("bad.json", "{\"Resources\": {,}}", "malformed JSON: "),
        (
            "ref.yaml",
            "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, Name: !Ref Nowhere}}\n",
            "Api Api: Ref to Nowhere: the template has no parameter or resource named Nowhere",
        ),
        (
            "http.yaml",
            "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: HTTP}}\n",
            "the template has no WebSocket API (an AWS::ApiGatewayV2::Api with ProtocolType WEBSOCKET)",
        ),
    ];
    for (file, text, problem) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let p = path.to_str().unwrap();
        let (code, out, err) = run(&["import", p]);
        assert_eq!(code, 1, "{file}: {err}");
        assert_eq!(out, "");
        assert!(
            err.starts_with(&format!("wsgate import: {p}: {problem}")),
            "{file}: {err}"
        );
        let (code, _, err) = run(&["--template", p, "--check"]);
        assert_eq!(code, 1, "{file}: {err}");
        assert!(
            err.starts_with(&format!("wsgate: template error: {p}: {problem}")),
            "{file}: {err}"
        );
    }
    let (code, _, err) = run(&["import", dir.join("bad.yaml").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("line 3"),
        "the YAML error names its line: {err}"
    );
    let (code, _, err) = run(&["import", dir.join("missing.yaml").to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read the template"), "{err}");
    let (code, _, err) = run(&["--config", "x.toml", "--stage", "prod"]);
    assert_eq!(code, 2);
    assert!(err.contains("need --template"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A template whose logical ids, function name and route key hold newlines and
/// `[limits]` lines (as `tests/templates/` has none, it is written here).
const INJECTION: &str = r#"Resources:
  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET, Name: !Ref Named}}
  Named: {Type: AWS::Lambda::Function, Properties: {FunctionName: "f\n[limits]\nmax_message_bytes = 1"}}
  "Fn\n[limits]\nmax_message_bytes = 1 #": {Type: AWS::Lambda::Function, Properties: {FunctionName: ok}}
  "I\n[limits]\nmax_message_bytes = 1 #": {Type: AWS::ApiGatewayV2::Integration, Properties: {ApiId: !Ref Api, IntegrationType: AWS_PROXY, IntegrationUri: "arn:aws:lambda:us-east-1:123456789012:function:ok"}}
  "R\n[limits]\nmax_message_bytes = 1": {Type: AWS::ApiGatewayV2::Route, Properties: {ApiId: !Ref Api, RouteKey: "k\n[limits]", ApiKeyRequired: true, Target: "integrations/I\n[limits]\nmax_message_bytes = 1 #"}}
"#;

#[test]
fn template_text_cannot_inject_config_lines() {
    let dir = temp_dir();
    let path = dir.join("inject.yaml");
    std::fs::write(&path, INJECTION).unwrap();
    let p = path.to_str().unwrap();
    let (code, toml, err) = run(&["import", p]);
    assert_eq!(code, 0, "{err}");
    let v: toml::Table = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    assert!(!v.contains_key("limits"), "{toml}");
    assert_eq!(
        v["api"]["name"].as_str(),
        Some("f\n[limits]\nmax_message_bytes = 1")
    );
    assert!(
        toml.contains("\n# AWS::ApiGatewayV2::Route R\\n[limits]\\nmax_message_bytes = 1\n"),
        "{toml}"
    );
    // Each warning is one stderr line.
    assert!(err.lines().all(|l| l.starts_with("warning: ")), "{err}");
    // `--template --check` reads the same text: accepted, with its one route.
    let (code, out, err) = run(&[
        "--template",
        p,
        "--check",
        "--lambda-endpoint",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(code, 0, "{err}\n{out}");
    assert!(out.ends_with(&format!("config ok: {p}\n")), "{out}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_doubling_chain_of_function_names_exits_1_naming_the_function() {
    // F1 .. F40, each named `${Fprev}${Fprev}`: 2^40 bytes if evaluated naively.
    let mut text = String::from(
        "Resources:\n  Api: {Type: AWS::ApiGatewayV2::Api, Properties: {ProtocolType: WEBSOCKET}}\n  F1: {Type: AWS::Lambda::Function, Properties: {FunctionName: x}}\n",
    );
    for i in 2..=40 {
        let p = i - 1;
        text.push_str(&format!(
            "  F{i}: {{Type: AWS::Lambda::Function, Properties: {{FunctionName: !Sub \"${{F{p}}}${{F{p}}}\"}}}}\n"
        ));
    }
    let dir = temp_dir();
    let path = dir.join("chain.yaml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let problem = "F18: Fn::Sub: the resolved text is longer than 65536 bytes";
    let (code, out, err) = run(&["import", p]);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert_eq!(err, format!("wsgate import: {p}: {problem}\n"));
    let (code, _, err) = run(&["--template", p, "--check"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err, format!("wsgate: template error: {p}: {problem}\n"));
    let _ = std::fs::remove_dir_all(dir);
}
