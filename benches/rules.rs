//! Rules engine cost per message: parse a 256-byte JSON payload, find the rules by topic,
//! evaluate a typical rule (3 fields, WHERE with 2 comparisons) and serialize the result.
//! Goals (issue 3): at most 1.5 µs with one rule, at most 3 µs with 1,000 rules loaded.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iotpipe::message::{Kind, Message, Origin};
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

criterion_group!(benches, bench);
criterion_main!(benches);
