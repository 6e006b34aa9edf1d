//! SPEC §12: a Lambda function ARN as an `aws_proxy` integration's `uri`. A Lambda
//! Invoke API fixture on loopback (`[aws] lambda_endpoint`) records each call: the
//! Invoke path, the SigV4 signature for `lambda` (checked with botocore's
//! `SigV4Auth`, an implementation independent of wsgate's), the event body field for
//! field; function errors, Invoke API errors, null results and timeouts; credentials
//! from the environment and from a shared credentials file profile.

use std::time::Duration;

use serde_json::json;

use crate::backend::*;
use crate::sdk;
use crate::support::*;

pub const ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:chat";
pub const PATH: &str =
    "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Achat/invocations";
pub const KEY: &str = "AKIALAMBDATEST000001";
pub const SECRET: &str = "lambda/Test+Secret=Key0123456789abcdefXY";
pub const TOKEN: &str = "FwoGZXIvYXdzEBYaDLambdaTestSessionToken==";

/// `$connect`, `$disconnect` (one-way) and `$default` (two-way) on a Lambda ARN
/// (`uri`, with `extra` lines), `[aws]` with `aws` lines and the Lambda `endpoint`.
pub fn lambda_config(endpoint: &str, aws: &str, uri: &str, extra: &str) -> String {
    let mut c = format!(
        "[aws]\n{aws}\naccount_id = \"123456789012\"\nlambda_endpoint = {}\n\n",
        toml_str(endpoint)
    );
    c.push_str(&api_config("$request.body.action", None, ""));
    c.push_str(&aws_integration("fn", uri, extra));
    c.push_str(&one_way_route("$connect", "fn"));
    c.push_str(&one_way_route("$disconnect", "fn"));
    c.push_str(&route("$default", "fn"));
    c
}

pub const ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", KEY),
    ("AWS_SECRET_ACCESS_KEY", SECRET),
    ("AWS_SESSION_TOKEN", TOKEN),
];

/// The Invoke API as a function that answers by event and message: `null` for
/// CONNECT/DISCONNECT (unless the client sent `X-Fail`), and for MESSAGE: `fail` →
/// a function error, `deny` → an Invoke API 403, `null`, `slow` (never answers),
/// else a proxy result `pong:{message}`.
pub fn invoke_fixture() -> Backend {
    Backend::start(|r| {
        let ev = r.event();
        match r.event_type() {
            Some("MESSAGE") => match ev["body"].as_str().unwrap_or("") {
                "fail" => Reply::json(200, &json!({"errorMessage": "boom", "errorType": "Error"}))
                    .header("X-Amz-Function-Error", "Unhandled"),
                "deny" => Reply::json(
                    403,
                    &json!({"message": "The security token included in the request is invalid."}),
                )
                .header("x-amzn-ErrorType", "UnrecognizedClientException"),
                "null" => Reply::ok("null"),
                "slow" => Reply::hang(),
                m => Reply::lambda(200, &format!("pong:{m}")),
            },
            _ if ev["headers"]["X-Fail"].is_string() => {
                Reply::json(200, &json!({"errorMessage": "no"}))
                    .header("X-Amz-Function-Error", "Unhandled")
            }
            _ => Reply::ok("null"),
        }
    })
}

/// Checks with botocore that each request carries the signature `lambda` calls
/// with these credentials must have.
pub fn botocore_verifies(
    requests: &[Request],
    key: &str,
    secret: &str,
    token: Option<&str>,
    region: &str,
) {
    let cases: Vec<_> = requests
        .iter()
        .map(|r| {
            json!({
                "method": r.method,
                "host": r.header("Host").unwrap(),
                "target": r.target,
                "headers": r.headers,
                "body": r.body_str(),
                "key": key,
                "secret": secret,
                "token": token,
                "region": region,
            })
        })
        .collect();
    let file = temp_dir().join("lambda-sigv4-cases.json");
    std::fs::write(&file, serde_json::to_vec(&cases).unwrap()).unwrap();
    let python = sdk::sdk_python();
    let (ok, out, err) = sdk::run(
        &python,
        &["tests/sdk/lambda_sigv4.py", file.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(ok, "botocore disagrees:\n{out}\n{err}");
    assert_eq!(out.trim(), format!("ok {}", requests.len()));
}

pub fn assert_invoke(r: &Request, key: &str, region: &str) {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.target, PATH, "the Invoke API path: {r:?}");
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let auth = r.header("Authorization").unwrap_or("");
    assert!(
        auth.starts_with(&format!("AWS4-HMAC-SHA256 Credential={key}/"))
            && auth.contains(&format!("/{region}/lambda/aws4_request, SignedHeaders=")),
        "{auth}"
    );
    assert_eq!(r.header("X-Amz-Date").map(str::len), Some(16), "{r:?}");
}

#[test]
fn invoke_calls_are_signed_and_carry_the_events() {
    let fixture = invoke_fixture();
    let gw = Gateway::start_with_env(
        &lambda_config(&fixture.url(""), "region = \"us-east-1\"", ARN, ""),
        &ENV,
    );
    let host = format!("127.0.0.1:{}", gw.listen.port());
    let t0 = now_ms();
    let mut client = Client::connect(gw.listen, "/prod");
    assert_eq!(client.ask("hello"), "pong:hello");
    drop(client);
    let requests = fixture.wait_requests(3);
    let t1 = now_ms();
    let connect = fixture.wait_event("CONNECT");
    let message = fixture.wait_event("MESSAGE");
    let disconnect = fixture.wait_event("DISCONNECT");
    let mut ids = Vec::new();
    for (r, kind, route_key) in [
        (&connect, "CONNECT", "$connect"),
        (&message, "MESSAGE", "$default"),
        (&disconnect, "DISCONNECT", "$disconnect"),
    ] {
        assert_invoke(r, KEY, "us-east-1");
        assert_eq!(r.header("X-Amz-Security-Token"), Some(TOKEN));
        let ctx = check_context(
            r.event(),
            &Expect {
                route_key,
                event_type: kind,
                connection_id: ids.first().map(String::as_str),
                connected_at: None,
                domain_name: &host,
                user_agent: None,
                from_ms: t0,
                to_ms: t1,
            },
        );
        ids.push(ctx.connection_id);
    }
    assert_eq!(message.event()["body"], "hello");
    assert_eq!(message.event()["isBase64Encoded"], false);
    assert_eq!(
        keys(connect.event()),
        sorted(&[
            "headers",
            "multiValueHeaders",
            "requestContext",
            "isBase64Encoded"
        ]),
        "no query and no stage variables: AWS leaves their keys out"
    );
    assert_eq!(connect.event()["headers"]["Host"], host.as_str());
    botocore_verifies(&requests, KEY, SECRET, Some(TOKEN), "us-east-1");
    let err = gw.stderr();
    assert!(!err.contains(SECRET) && !err.contains(TOKEN), "{err}");
}

#[test]
fn function_and_invoke_api_errors_are_internal_server_errors() {
    let fixture = invoke_fixture();
    // The API Gateway form of the URI names the same function.
    let uri =
        format!("arn:aws:apigateway:us-east-1:lambda:path/2015-03-31/functions/{ARN}/invocations");
    let gw = Gateway::start_with_env(
        &lambda_config(&fixture.url(""), "region = \"us-east-1\"", &uri, ""),
        &ENV,
    );
    let mut client = Client::connect(gw.listen, "/prod");
    parse_error_frame(&client.ask("fail"), "Internal server error");
    parse_error_frame(&client.ask("deny"), "Internal server error");
    assert_eq!(
        client.ask("after"),
        "pong:after",
        "the connection stays usable"
    );
    // `$connect`'s function error refuses the upgrade.
    let mut headers = ws_headers("example.test");
    headers.push(("X-Fail".into(), "1".into()));
    let (_s, resp) = upgrade(gw.listen, "/prod", &headers);
    assert_eq!(resp.status, 502, "{resp:?}");
    for r in fixture.requests() {
        assert_eq!(r.target, PATH);
    }
    let err = gw.stderr();
    assert!(
        err.contains(&format!("Lambda function {ARN} failed")),
        "{err}"
    );
    assert!(err.contains("refused calling"), "{err}");
    assert!(!err.contains(SECRET) && !err.contains(TOKEN), "{err}");
}

#[test]
fn null_results_send_nothing_and_slow_functions_time_out() {
    let fixture = invoke_fixture();
    let gw = Gateway::start_with_env(
        &lambda_config(
            &fixture.url(""),
            "region = \"us-east-1\"",
            ARN,
            "timeout = \"300ms\"",
        ),
        &ENV,
    );
    let mut client = Client::connect(gw.listen, "/prod");
    client.send_text("null");
    fixture.wait_for("the null call", |r| r.event()["body"] == "null");
    // The null result sent nothing: the next frame answers the next message.
    assert_eq!(client.ask("next"), "pong:next");
    parse_error_frame(&client.ask("slow"), "Endpoint request timed out");
}

#[test]
fn credentials_come_from_a_shared_file_profile() {
    let fixture = invoke_fixture();
    let dir = temp_dir();
    let file = dir.join("lambda-credentials");
    std::fs::write(
        &file,
        "[default]\naws_access_key_id = AKIADEFAULT000000000\naws_secret_access_key = not-this-one\n\n\
         # the profile AWS_PROFILE names\n[dev]\naws_access_key_id = AKIADEVPROFILE000001\n\
         aws_secret_access_key = dev/Secret+Key0123456789abcdefghijkl\n",
    )
    .unwrap();
    // No `[aws] region`: AWS_REGION.
    let gw = Gateway::start_with_env(
        &lambda_config(&fixture.url(""), "", ARN, ""),
        &[
            ("AWS_SHARED_CREDENTIALS_FILE", file.to_str().unwrap()),
            ("AWS_PROFILE", "dev"),
            ("AWS_REGION", "eu-west-1"),
        ],
    );
    let mut client = Client::connect(gw.listen, "/prod");
    assert_eq!(client.ask("hi"), "pong:hi");
    let message = fixture.wait_event("MESSAGE");
    assert_invoke(&message, "AKIADEVPROFILE000001", "eu-west-1");
    assert_eq!(message.header("X-Amz-Security-Token"), None);
    botocore_verifies(
        &[message],
        "AKIADEVPROFILE000001",
        "dev/Secret+Key0123456789abcdefghijkl",
        None,
        "eu-west-1",
    );
    assert!(!gw.stderr().contains("dev/Secret"));
}

#[test]
fn a_lambda_uri_without_credentials_or_region_is_a_startup_error() {
    let fixture = invoke_fixture();
    let config = lambda_config(&fixture.url(""), "region = \"us-east-1\"", ARN, "");
    let mut gw_env = vec![("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")];
    let exit = run_to_exit_with_env(&config, &[], &gw_env);
    assert!(
        !exit.status.success() && exit.stderr.contains("needs AWS credentials"),
        "{exit:?}"
    );
    gw_env.extend(ENV);
    let config = lambda_config(&fixture.url(""), "", ARN, "");
    let exit = run_to_exit_with_env(&config, &[], &gw_env);
    assert!(
        !exit.status.success() && exit.stderr.contains("region"),
        "{exit:?}"
    );
}
