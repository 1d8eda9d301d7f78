//! Rules engine cost per message: parse a 256-byte JSON payload, find the rules by topic,
//! evaluate a typical rule (3 fields, WHERE with 2 comparisons) and serialize the result.
//! Goals (issue 3): at most 1.5 µs with one rule, at most 3 µs with 1,000 rules loaded.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iotpipe::message::{thing, Kind, Message, Origin};
use iotpipe::rules::{EvalContext, Rule, RuleSet};

const TYPICAL: &str = "SELECT temperature AS t, humidity AS h, deviceName() AS dn \
                       FROM \"/{pk}/+/user/update\" WHERE temperature > 38 AND humidity < 90";

fn payload() -> Bytes {
    let mut p = String::from(
        r#"{"temperature":40.5,"humidity":55,"status":"ok","battery":87,"location":{"lat":30.27,"lon":120.15},"readings":[1,2,3,4,5,6,7,8],"firmware":"1.4.2","seq":123456,"note":""#,
    );
    while p.len() < 254 {
        p.push('x');
    }
    p.push_str("\"}");
    Bytes::from(p)
}

fn message(pk: &str) -> Message {
    Message {
        id: 1,
        kind: Kind::Upstream,
        topic: format!("/{pk}/dev1/user/update"),
        payload: payload(),
        qos: 1,
        origin: Arc::new(Origin {
            product_key: pk.into(),
            device_name: "dev1".into(),
            iot_id: String::new(),
            device_type: String::new(),
            client_id: "dev1".into(),
            peer: None,
        }),
        received_at_ms: 1_704_164_645_678,
        platform: None,
    }
}

fn rules(n: usize) -> RuleSet {
    let rules = (0..n)
        .map(|i| {
            let sql = TYPICAL.replace("{pk}", &format!("pk{i}"));
            Arc::new(Rule::from_file("bench.sql", &format!("r{i}"), &sql, None).expect("compiles"))
        })
        .collect();
    RuleSet::new(rules, HashMap::new())
}

fn bench(c: &mut Criterion) {
    assert_eq!(payload().len(), 256);
    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(1));
    for n in [1usize, 1000] {
        let set = rules(n);
        let msg = message(&format!("pk{}", n / 2));
        let ctx = EvalContext::default();
        let out: Vec<String> = set.evaluate(&msg, &ctx).map(|o| o.row.to_json()).collect();
        assert_eq!(out, [r#"{"t":40.5,"h":55,"dn":"dev1"}"#]);
        g.bench_function(format!("parse_match_eval_serialize/{n}_rules"), |b| {
            b.iter(|| {
                for o in set.evaluate(black_box(&msg), &ctx) {
                    black_box(o.row.to_json());
                }
            })
        });
    }
    let set = rules(1000);
    let miss = message("nobody");
    let ctx = EvalContext::default();
    g.bench_function("no_matching_rule/1000_rules", |b| {
        b.iter(|| set.evaluate(black_box(&miss), &ctx).count())
    });
    g.bench_function("compile_typical_rule", |b| {
        b.iter(|| Rule::from_file("bench.sql", "r", black_box(TYPICAL), None).map(|r| r.name.len()))
    });
    g.finish();
}

/// A thing-model property post of about 250 bytes, as a device sends it.
const PROPERTY_POST: &str = r#"{"id":"123","version":"1.0","params":{"temperature":{"value":40.5,"time":1524448722000},"humidity":55,"status":"ok","battery":87,"power":"on","firmware":"1.4.2","seq":123456,"location":{"value":{"lat":30.27,"lon":120.15}}},"method":"thing.event.property.post"}"#;
const PROPERTY_TOPIC: &str = "/sys/a1demo/dev1/thing/event/property/post";
const PROPERTY_RULE: &str = "SELECT items.temperature.value AS t, deviceName() AS dn \
                             FROM \"/a1demo/+/thing/event/property/post\" WHERE items.temperature.value > 38";

/// The per-message work from a thing-model post's bytes to the rules' results: conversion
/// into the platform's body, the Alink reply, and the rules (issue 16: the JSON parsed once).
fn thing_model(c: &mut Criterion) {
    let origin = Arc::new(Origin {
        product_key: "a1demo".into(),
        device_name: "dev1".into(),
        iot_id: "iot1".into(),
        device_type: "Ammeter".into(),
        client_id: "dev1".into(),
        peer: None,
    });
    let payload = Bytes::from_static(PROPERTY_POST.as_bytes());
    let reading = RuleSet::new(
        vec![Arc::new(Rule::from_file("t.sql", "t", PROPERTY_RULE, None).expect("compiles"))],
        HashMap::new(),
    );
    let elsewhere = rules(1);
    let ctx = EvalContext::default();
    let run = |set: &RuleSet| {
        let Some((Ok(c), reply)) = thing::convert_and_reply(&origin, PROPERTY_TOPIC, &payload, 99) else {
            panic!("converts")
        };
        let msg = Message {
            id: 1,
            kind: c.kind,
            topic: PROPERTY_TOPIC.into(),
            payload: payload.clone(),
            qos: 1,
            origin: origin.clone(),
            received_at_ms: 99,
            platform: c.messages.into_iter().next(),
        };
        let rows: Vec<String> =
            set.evaluate_parsed(&msg, c.body.as_deref(), &ctx).map(|o| o.row.to_json()).collect();
        (rows, reply)
    };
    let (rows, reply) = run(&reading);
    assert_eq!(rows, [r#"{"t":40.5,"dn":"dev1"}"#]);
    assert!(reply.is_some());
    assert!(run(&elsewhere).0.is_empty());
    let mut g = c.benchmark_group("thing_model");
    g.throughput(Throughput::Elements(1));
    g.bench_function("property_post/one_rule_reads_it", |b| b.iter(|| black_box(run(black_box(&reading)))));
    g.bench_function("property_post/no_rule_reads_it", |b| b.iter(|| black_box(run(black_box(&elsewhere)))));
    g.finish();
}

criterion_group!(benches, bench, thing_model);
criterion_main!(benches);
