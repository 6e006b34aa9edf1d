//! Route-key extraction: wsgate's `Table`/`Selector` (simd-json tape, reused buffers)
//! against two `serde_json` baselines doing the same job — parse the message, take the
//! key, look it up in the same route table:
//!
//! - `serde_value`: `serde_json::from_slice::<Value>` then a lookup in the DOM;
//! - `serde_struct`: a borrowed `#[derive(Deserialize)]` struct holding only the fields
//!   the expression names (the fastest serde can do; it skips everything else).
//!
//! The baselines only handle string values; wsgate also stringifies the other kinds.
//! Inputs are AWS's §1.3 payload with three expressions, and two ~1 KiB messages with
//! the key at the end: one of many small fields, one that is mostly a single text string.
//! `route/numbers/*` selects on number arrays of 1 and 128 KiB (work linear in the size)
//! and on a number beyond `f64`. `route/lookup/*` compares ways to find the key among
//! N routes.
//!
//! Run: `cargo bench --bench route -- --warm-up-time 1 --measurement-time 2`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::Deserialize;
use serde_json::Value;
use wsgate::route::{Expression, Selector, Table};

/// The payload of AWS's documented evaluation table.
const AWS: &[u8] = br#"{"service":"chat","action":"join","data":{"room":"room1234"}}"#;

/// Route keys of the benchmark API; every benchmarked input selects one of them.
const ROUTES: [&str; 6] = ["join", "leave", "send", "room1234", "chat/join", "ping"];

/// Route id of `$default`.
const DEFAULT: usize = 99;

/// A ~1 KiB chat message with nested data, escapes and numbers, `action` last.
fn large_message() -> Vec<u8> {
    let mut items = Vec::new();
    for i in 0..12 {
        items.push(format!(
            r#"{{"id":{i},"user":"user-{i}","text":"hello \"world\" number {i}\n","score":{}.25,"tags":["a","b"],"read":false}}"#,
            i * 7
        ));
    }
    let message = format!(
        r#"{{"service":"chat","data":{{"room":"room1234","history":[{}]}},"action":"join"}}"#,
        items.join(",")
    );
    assert!((900..1400).contains(&message.len()), "{}", message.len());
    message.into_bytes()
}

/// A ~1 KiB chat message that is mostly one text string, `action` last.
fn large_text_message() -> Vec<u8> {
    let text = r#"The quick brown fox jumps over the lazy dog, says \"Alice\". "#.repeat(15);
    let message = format!(
        r#"{{"service":"chat","data":{{"room":"room1234","text":"{text}"}},"action":"join"}}"#
    );
    assert!((900..1400).contains(&message.len()), "{}", message.len());
    message.into_bytes()
}

fn table(expr: &str) -> Table {
    let routes = ROUTES
        .iter()
        .enumerate()
        .map(|(id, k)| (k.to_string(), id))
        .collect();
    Table::new(Expression::parse(expr).unwrap(), routes, Some(DEFAULT))
}

/// `$request.body.action` as a borrowed struct (`Cow`: borrowed unless escaped).
#[derive(Deserialize)]
struct Action<'a> {
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
}

/// `$request.body.data.room` as borrowed structs.
#[derive(Deserialize)]
struct Room<'a> {
    #[serde(borrow)]
    data: Option<RoomData<'a>>,
}

#[derive(Deserialize)]
struct RoomData<'a> {
    #[serde(borrow)]
    room: Option<Cow<'a, str>>,
}

/// `${request.body.service}/${request.body.action}` as a borrowed struct.
#[derive(Deserialize)]
struct ServiceAction<'a> {
    #[serde(borrow)]
    service: Option<Cow<'a, str>>,
    #[serde(borrow)]
    action: Option<Cow<'a, str>>,
}

/// What every baseline does once it has the key: the same table lookup as wsgate.
fn lookup(table: &Table, key: Option<&str>) -> Option<usize> {
    table
        .route(key.unwrap_or("").as_bytes())
        .or(table.default_route())
}

/// A string member of a `serde_json` object, like `$request.body.<name>` on strings.
fn str_at<'v>(value: &'v Value, pointer: &str) -> Option<&'v str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// One input: the three contenders on `message`, which must select `want`.
fn compare(
    c: &mut Criterion,
    name: &str,
    expr: &str,
    message: &[u8],
    want: usize,
    value_way: impl Fn(&Table, &Value, &mut String) -> Option<usize>,
    struct_way: impl Fn(&Table, &[u8], &mut String) -> Option<usize>,
) {
    let table = table(expr);
    let mut selector = Selector::new();
    let mut key = String::new();
    assert_eq!(selector.select(&table, message), Some(want));
    let value: Value = serde_json::from_slice(message).unwrap();
    assert_eq!(value_way(&table, &value, &mut key), Some(want));
    assert_eq!(struct_way(&table, message, &mut key), Some(want));

    let mut group = c.benchmark_group(format!("route/{name}"));
    group.throughput(Throughput::Bytes(message.len() as u64));
    group.bench_function("wsgate", |b| {
        b.iter(|| selector.select(&table, black_box(message)))
    });
    group.bench_function("serde_value", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(message)).ok()?;
            value_way(&table, &value, &mut key)
        })
    });
    group.bench_function("serde_struct", |b| {
        b.iter(|| struct_way(&table, black_box(message), &mut key))
    });
    group.finish();
}

fn action(c: &mut Criterion, name: &str, message: &[u8]) {
    compare(
        c,
        name,
        "$request.body.action",
        message,
        0,
        |t, v, _| lookup(t, str_at(v, "/action")),
        |t, m, _| {
            let msg: Action = serde_json::from_slice(m).ok()?;
            lookup(t, msg.action.as_deref())
        },
    );
}

fn room(c: &mut Criterion) {
    compare(
        c,
        "room",
        "$request.body.data.room",
        AWS,
        3,
        |t, v, _| lookup(t, str_at(v, "/data/room")),
        |t, m, _| {
            let msg: Room = serde_json::from_slice(m).ok()?;
            lookup(t, msg.data.and_then(|d| d.room).as_deref())
        },
    );
}

/// Writes `service/action` into the reused `key`, as a template evaluation would.
fn join_key<'k>(key: &'k mut String, service: Option<&str>, action: Option<&str>) -> &'k str {
    key.clear();
    key.push_str(service.unwrap_or(""));
    key.push('/');
    key.push_str(action.unwrap_or(""));
    key
}

fn template(c: &mut Criterion) {
    compare(
        c,
        "template",
        "${request.body.service}/${request.body.action}",
        AWS,
        4,
        |t, v, key| {
            let key = join_key(key, str_at(v, "/service"), str_at(v, "/action"));
            lookup(t, Some(key))
        },
        |t, m, key| {
            let msg: ServiceAction = serde_json::from_slice(m).ok()?;
            let key = join_key(key, msg.service.as_deref(), msg.action.as_deref());
            lookup(t, Some(key))
        },
    );
}

fn messages(c: &mut Criterion) {
    action(c, "action", AWS);
    room(c);
    template(c);
    action(c, "large_1k", &large_message());
    action(c, "large_text_1k", &large_text_message());
}

/// A plausible route key, distinct for every `i`: names of mixed lengths and prefixes.
fn route_key(i: usize) -> String {
    const WORDS: [&str; 8] = [
        "join",
        "leave",
        "sendMessage",
        "ping",
        "subscribe",
        "unsubscribe",
        "typing",
        "ack",
    ];
    match i / WORDS.len() {
        0 => WORDS[i].to_string(),
        round => format!("{}{round}", WORDS[i % WORDS.len()]),
    }
}

/// Finding one key among `n` routes: the real `Table`, and the alternatives it chose
/// between (linear scan, binary search of a sorted slice, a `HashMap` of byte keys).
/// (An FxHash-style hasher was tried too and was no faster than std's SipHash here.)
/// `route/lookup` uses keys of mixed lengths, `route/lookup_same_length` the worst case
/// for a scan: keys of one length sharing an 8-byte prefix.
fn lookups(c: &mut Criterion) {
    lookups_of(c, "route/lookup", route_key);
    lookups_of(c, "route/lookup_same_length", |i| format!("action-{i:02}"));
}

fn lookups_of(c: &mut Criterion, name: &str, route_key: fn(usize) -> String) {
    let mut group = c.benchmark_group(name);
    for n in [4usize, 8, 16, 64] {
        let keys: Vec<String> = (0..n).map(route_key).collect();
        let probe = keys[n * 3 / 4].as_bytes().to_vec();
        let routes: Vec<(String, usize)> = keys.iter().cloned().zip(0..).collect();
        let table = Table::new(Expression::parse("x").unwrap(), routes, None);
        let listed: Vec<(Box<[u8]>, usize)> =
            keys.iter().map(|k| k.as_bytes().into()).zip(0..).collect();
        let mut sorted = listed.clone();
        sorted.sort();
        let map: HashMap<Box<[u8]>, usize> = sorted.iter().cloned().collect();

        group.bench_with_input(BenchmarkId::new("table", n), &probe, |b, probe| {
            b.iter(|| table.route(black_box(probe)))
        });
        group.bench_with_input(BenchmarkId::new("linear", n), &probe, |b, probe| {
            b.iter(|| {
                let probe: &[u8] = black_box(probe);
                listed
                    .iter()
                    .find(|(k, _)| **k == *probe)
                    .map(|&(_, id)| id)
            })
        });
        group.bench_with_input(BenchmarkId::new("binary", n), &probe, |b, probe| {
            b.iter(|| {
                let probe: &[u8] = black_box(probe);
                let found = sorted.binary_search_by(|(k, _)| (**k).cmp(probe));
                found.ok().map(|i| sorted[i].1)
            })
        });
        group.bench_with_input(BenchmarkId::new("hashmap", n), &probe, |b, probe| {
            b.iter(|| map.get(black_box(&probe[..])).copied())
        });
    }
    group.finish();
}

/// `{"action":[0,0,…]}` of about `bytes` bytes.
fn number_array(bytes: usize) -> Vec<u8> {
    let mut m = b"{\"action\":[0".to_vec();
    while m.len() + 4 <= bytes {
        m.extend_from_slice(b",0");
    }
    m.extend_from_slice(b"]}");
    m
}

/// Messages whose key is a number array (stringified with each number's text: linear
/// since issue 8; it was quadratic) and a message holding a number beyond `f64`
/// (parsed a second time with its numbers neutralized).
fn numbers(c: &mut Criterion) {
    let table = table("$request.body.action");
    let mut selector = Selector::new();
    let mut group = c.benchmark_group("route/numbers");
    for (name, message) in [
        ("array_1k", number_array(1024)),
        ("array_128k", number_array(128 * 1024)),
        ("big_float", br#"{"action":"join","n":1e400}"#.to_vec()),
    ] {
        let want = if name == "big_float" { 0 } else { DEFAULT };
        assert_eq!(selector.select(&table, &message), Some(want), "{name}");
        group.throughput(Throughput::Bytes(message.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| selector.select(&table, black_box(&message)))
        });
    }
    group.finish();
}

criterion_group!(benches, messages, numbers, lookups);
criterion_main!(benches);
