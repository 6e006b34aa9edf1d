//! Building the aws_proxy MESSAGE event for a 200-byte message: wsgate's writer into a
//! reused buffer versus building the same JSON with `serde_json::json!` (a DOM and a
//! fresh `String` per event, what a typical gateway in Rust would do).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;

use wsgate::config::Api;
use wsgate::event::{self, Common, Identity};

fn bench(c: &mut Criterion) {
    let api = Api {
        name: "chat".into(),
        route_selection_expression: "$request.body.action".into(),
        stage: "prod".into(),
        stage_variables: vec![("backend".into(), "127.0.0.1:3000".into())],
    };
    let identity = Identity::new(
        "127.0.0.1".parse().unwrap(),
        Some("bench/1.0"),
        "127.0.0.1:8080",
        1_795_508_102_123,
    );
    let body = format!(
        "{{\"action\":\"sendmessage\",\"data\":\"{}\"}}",
        "x".repeat(166)
    );
    assert_eq!(body.len(), 200);
    let mut g = c.benchmark_group("event/message_200B");
    g.throughput(Throughput::Elements(1));
    let mut out = Vec::with_capacity(2048);
    g.bench_function("wsgate", |b| {
        b.iter(|| {
            out.clear();
            let cx = Common {
                api: &api,
                route_key: "sendmessage",
                connection_id: b"AQAAAQAAAXk3mQ8=",
                request_id: b"Yb7cD9eF0gH1iJ2=",
                identity: &identity,
                now_ms: 1_795_508_107_456,
                authorizer: None,
            };
            event::write_message(
                &mut out,
                &cx,
                b"Xz81kLm0pQ2rS4t=",
                black_box(body.as_bytes()),
                false,
            );
            black_box(out.len())
        })
    });
    g.bench_function("serde_json", |b| {
        b.iter(|| {
            let v = serde_json::json!({
                "requestContext": {
                    "routeKey": "sendmessage", "eventType": "MESSAGE", "messageId": "Xz81kLm0pQ2rS4t=",
                    "extendedRequestId": "Yb7cD9eF0gH1iJ2=", "requestTime": "24/Nov/2026:08:15:07 +0000",
                    "messageDirection": "IN", "stage": "prod", "connectedAt": 1_795_508_102_123u64,
                    "requestTimeEpoch": 1_795_508_107_456u64,
                    "identity": {"sourceIp": "127.0.0.1", "userAgent": "bench/1.0"},
                    "requestId": "Yb7cD9eF0gH1iJ2=", "domainName": "127.0.0.1:8080",
                    "connectionId": "AQAAAQAAAXk3mQ8=", "apiId": "chat"
                },
                "body": black_box(body.as_str()), "isBase64Encoded": false,
                "stageVariables": {"backend": "127.0.0.1:3000"}
            });
            black_box(serde_json::to_vec(&v).unwrap().len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
