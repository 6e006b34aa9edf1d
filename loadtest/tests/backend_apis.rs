//! The benchmark backend's `event-body` stand-ins for what wsgate calls besides an
//! `aws_proxy` URL: the Lambda Invoke API (a Lambda proxy result echoing the event's
//! body; an unsigned Invoke counts as a fault) and a REQUEST authorizer (an Allow policy
//! for the event's methodArn). Real TCP to a real backend on 127.0.0.1:0.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use wsgate_load::backend::{Backend, BackendOpts, BackendResult, Mode};
use wsgate_load::http::{self, Parsed};

const INVOKE: &str = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aecho/invocations";
const SIGNED: &str = "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00\r\n";

/// Sends `reqs` (path, extra header lines, body) pipelined on one connection and returns
/// each reply's status and body, and the backend's counters.
fn exchange(reqs: &[(&str, &str, &str)]) -> (Vec<(u16, serde_json::Value)>, BackendResult) {
    let b = Backend::start(&BackendOpts {
        listen: "127.0.0.1:0".parse().unwrap(),
        threads: 1,
        mode: Mode::EventBody,
        status: 200,
        delay: Duration::ZERO,
        chunked: false,
        duration: Duration::from_secs(10),
    })
    .unwrap();
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut wire = String::new();
    for (path, extra, body) in reqs {
        wire.push_str(&format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    s.write_all(wire.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut replies = Vec::new();
    for _ in 0..100 {
        replies.clear();
        let mut pos = 0;
        while let Parsed::Done(h) = http::parse_response(&got[pos..]) {
            let whole = &got[pos..pos + h.total_len];
            let body_at = http::find(whole, b"\r\n\r\n").unwrap() + 4;
            let v = if whole.len() > body_at {
                serde_json::from_slice(&whole[body_at..]).expect("a JSON reply")
            } else {
                serde_json::Value::Null
            };
            replies.push((h.status, v));
            pos += h.total_len;
        }
        if replies.len() == reqs.len() {
            break;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "backend closed the connection");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(replies.len(), reqs.len());
    (replies, b.stop())
}

#[test]
fn invoke_answers_a_lambda_proxy_result_echoing_the_event_body() {
    let message = r#"{"requestContext":{"routeKey":"$default","eventType":"MESSAGE"},"body":"{\"action\":\"echo\",\"t\":\"a\\\"b\\\\c\\n\"}","isBase64Encoded":false}"#;
    let connect = r#"{"requestContext":{"routeKey":"$connect","eventType":"CONNECT"},"isBase64Encoded":false}"#;
    let (replies, r) = exchange(&[
        (INVOKE, SIGNED, message),
        (INVOKE, SIGNED, connect),
        // Unsigned: still answered, but a fault.
        (INVOKE, "", message),
        // Not the Invoke API: the plain aws_proxy reply (the body itself).
        ("/ws", "", message),
    ]);
    let echoed = r#"{"action":"echo","t":"a\"b\\c\n"}"#;
    assert_eq!(replies[0].0, 200);
    assert_eq!(
        replies[0].1,
        serde_json::json!({"statusCode": 200, "body": echoed})
    );
    assert_eq!(replies[1].1, serde_json::json!({"statusCode": 200}));
    assert_eq!(replies[2].1, replies[0].1);
    assert_eq!(
        replies[3].1,
        serde_json::from_str::<serde_json::Value>(echoed).unwrap()
    );
    assert_eq!(r.requests, 4);
    assert_eq!(r.invokes, 3);
    assert_eq!(r.faults, 1, "only the unsigned Invoke is a fault");
    assert_eq!(r.authorizations, 0);
    let report = r.report().to_json().to_string();
    assert!(report.contains("\"faults\":1"), "{report}");
}

#[test]
fn authorizer_event_gets_an_allow_policy_for_its_method_arn() {
    let arn = "arn:aws:execute-api:local:000000000000:bench/$connect";
    let event = format!(
        r#"{{"type":"REQUEST","methodArn":"{arn}","headers":{{"Host":"x"}},"queryStringParameters":{{"token":"x"}},"requestContext":{{"routeKey":"$connect","eventType":"CONNECT"}}}}"#
    );
    let policy = serde_json::json!({
        "principalId": "u",
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": arn}]
        }
    });
    // Over plain HTTP (an http:// authorizer uri) and as a Lambda function's result.
    let (replies, r) = exchange(&[("/authorize", "", &event), (INVOKE, SIGNED, &event)]);
    assert_eq!(replies[0], (200, policy.clone()));
    assert_eq!(replies[1], (200, policy));
    assert_eq!(r.authorizations, 2);
    assert_eq!(r.faults, 0);
    // A MESSAGE event carrying the same words inside its (escaped) body is no authorizer call.
    let (replies, r) = exchange(&[(
        "/authorize",
        "",
        r#"{"requestContext":{},"body":"{\"type\":\"REQUEST\",\"methodArn\":\"x\"}"}"#,
    )]);
    assert_eq!(
        replies[0].1,
        serde_json::json!({"type": "REQUEST", "methodArn": "x"})
    );
    assert_eq!(r.authorizations, 0);
}
