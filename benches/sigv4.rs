//! The SigV4 signature of one Lambda Invoke API call (SPEC §12): the extra work a
//! Lambda integration does per call over an `aws_proxy` HTTP one (issue 10's goal:
//! ≤ 2 µs). The body is a ~1 KB MESSAGE event; the signing key is cached for the
//! day, as in a worker.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;

use wsgate::aws::{sigv4::Signer, Credentials, Invoke};

fn bench(c: &mut Criterion) {
    let invoke = Invoke {
        function: "arn:aws:lambda:us-east-1:123456789012:function:chat".into(),
        region: "us-east-1".into(),
        credentials: Arc::new(Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }),
    };
    let path = wsgate::aws::invoke_path(&invoke.function);
    let body = vec![b'x'; 1000];
    let mut signer = Signer::default();
    let now_ms = 1_795_508_102_123;
    let mut g = c.benchmark_group("sigv4/lambda_invoke_1KB");
    g.throughput(Throughput::Elements(1));
    g.bench_function("sign", |b| {
        b.iter(|| {
            let h = signer.sign(
                &invoke,
                "lambda.us-east-1.amazonaws.com",
                &path,
                "application/json",
                black_box(&body),
                now_ms,
            );
            black_box(h.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
