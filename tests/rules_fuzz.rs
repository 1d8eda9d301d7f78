//! Property test: parse + compile + evaluate never panics and never hangs, whatever the SQL and
//! the payload. A small deterministic generator (xorshift) builds statements from the grammar's
//! pieces, mutates known-good statements byte by byte, and pairs them with random payloads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use iotpipe::message::{Kind, Message, Origin};
use iotpipe::rules::{DataType, EvalContext, Rule, RuleSet};
use rng::Rng;

#[path = "common/rng.rs"]
mod rng;

const FIELDS: &[&str] =
    &["a", "b", "t", "s", "arr[0]", "a.b", "\"a[1].v\"", "\".a[0]\"", "\"$.x\"", "items.p.value", "nope"];
const LITERALS: &[&str] =
    &["0", "1", "-1", "2.5", "1e308", "9223372036854775807", "'x'", "'%a_'", "''", "true", "NULL", "'12'"];
const BINOPS: &[&str] = &["+", "-", "*", "/", "%", "=", "<>", "!=", "<", "<=", ">", ">=", "AND", "OR", "||"];
const FUNCS: &[&str] = &[
    "abs",
    "asin",
    "cos",
    "cosh",
    "exp",
    "floor",
    "sin",
    "sinh",
    "tan",
    "tanh",
    "log",
    "mod",
    "power",
    "rand",
    "concat",
    "lower",
    "upper",
    "replace",
    "endswith",
    "substring",
    "crypto",
    "nanvl",
    "newuuid",
    "deviceName",
    "attribute",
    "topic",
    "messageId",
    "timestamp",
    "timestamp_utc",
    "payload",
    "to_base64",
    "to_hex",
    "productKey",
    "clientId",
    "clientIp",
    "md5",
    "sha1",
    "sha256",
    "hmac",
    "thingPropertyFlatMap",
    "nosuch",
];
const TOPICS: &[&str] =
    &["/a1demo/+/user/update", "/a1demo/#", "#", "/+/+/user/+", "/a1demo/dev1/user/update"];

fn expr(r: &mut Rng, depth: usize) -> String {
    if depth == 0 {
        return if r.below(2) == 0 { r.pick(FIELDS).to_string() } else { r.pick(LITERALS).to_string() };
    }
    match r.below(9) {
        0 => format!("{} {} {}", expr(r, depth - 1), r.pick(BINOPS), expr(r, depth - 1)),
        1 => format!("({})", expr(r, depth - 1)),
        2 => format!("NOT {}", expr(r, depth - 1)),
        3 => {
            let n = r.below(4);
            let args: Vec<String> = (0..n).map(|_| expr(r, depth - 1)).collect();
            let args = if r.below(10) == 0 { "*".to_string() } else { args.join(", ") };
            format!("{}({args})", r.pick(FUNCS))
        }
        4 => format!(
            "{} {}IN ({}, {})",
            expr(r, depth - 1),
            if r.below(2) == 0 { "NOT " } else { "" },
            expr(r, 0),
            expr(r, 0)
        ),
        5 => {
            format!("{} {}LIKE {}", expr(r, depth - 1), if r.below(2) == 0 { "NOT " } else { "" }, expr(r, 0))
        }
        6 => format!("{} BETWEEN {} AND {}", expr(r, depth - 1), expr(r, 0), expr(r, 0)),
        7 => format!("{} IS {}NULL", expr(r, depth - 1), if r.below(2) == 0 { "NOT " } else { "" }),
        _ => format!("CASE WHEN {} THEN {} ELSE {} END", expr(r, depth - 1), expr(r, depth - 1), expr(r, 0)),
    }
}

fn statement(r: &mut Rng) -> String {
    let n = 1 + r.below(4);
    let items: Vec<String> = (0..n)
        .map(|i| match r.below(5) {
            0 => "*".to_string(),
            1 => expr(r, 2),
            _ => format!("{} AS f{i}", expr(r, 3)),
        })
        .collect();
    let mut sql = format!("SELECT {} FROM \"{}\"", items.join(", "), r.pick(TOPICS));
    if r.below(3) > 0 {
        sql.push_str(&format!(" WHERE {}", expr(r, 4)));
    }
    sql
}

fn mutate(r: &mut Rng, s: &str) -> String {
    let mut b = s.as_bytes().to_vec();
    for _ in 0..1 + r.below(4) {
        let pos = if b.is_empty() { 0 } else { r.below(b.len()) };
        match r.below(4) {
            0 if !b.is_empty() => {
                b.remove(pos);
            }
            1 => b.insert(pos, b"()'\"[].,*%$#+-/\\;\n\x00\xff"[r.below(20)]),
            2 if !b.is_empty() => b[pos] = (r.next() & 0xff) as u8,
            _ => b.extend_from_slice(
                r.pick(&[" OR ", "(", ")", "'", "\"", " GROUP BY a", "; SELECT 1"]).as_bytes(),
            ),
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

fn json(r: &mut Rng, depth: usize) -> String {
    match if depth == 0 { r.below(5) } else { r.below(7) } {
        0 => r.pick(&["0", "-7", "2.5", "1e300", "18446744073709551615", "-9223372036854775808"]).to_string(),
        1 => r.pick(&["\"x\"", "\"12\"", "\"\"", "\"%\"", "\"\\u00e9\""]).to_string(),
        2 => r.pick(&["true", "false"]).to_string(),
        3 | 4 => "null".to_string(),
        5 => format!("[{}, {}]", json(r, depth - 1), json(r, depth - 1)),
        _ => {
            let keys = ["a", "b", "t", "s", "arr", "x", "items", "v", "p", "value"];
            let n = r.below(4);
            let members: Vec<String> = (0..n)
                .map(|i| format!("\"{}\": {}", keys[(i + r.below(10)) % 10], json(r, depth - 1)))
                .collect();
            format!("{{{}}}", members.join(", "))
        }
    }
}

fn payload(r: &mut Rng) -> Bytes {
    match r.below(5) {
        0 => Bytes::from((0..r.below(16)).map(|_| (r.next() & 0xff) as u8).collect::<Vec<u8>>()),
        _ => Bytes::from(format!(
            "{{\"a\": {}, \"t\": {}, \"arr\": {}, \"items\": {}}}",
            json(r, 2),
            json(r, 1),
            json(r, 2),
            json(r, 3)
        )),
    }
}

fn message(payload: Bytes) -> Message {
    Message {
        id: 1,
        kind: Kind::Upstream,
        topic: "/a1demo/dev1/user/update".into(),
        payload,
        qos: 0,
        origin: Arc::new(Origin {
            product_key: "a1demo".into(),
            device_name: "dev1".into(),
            iot_id: String::new(),
            device_type: String::new(),
            client_id: String::new(),
            peer: None,
        }),
        received_at_ms: 1_704_164_645_678,
        platform: None,
    }
}

fn exercise(sql: &str, payloads: &[Bytes]) {
    for dt in [DataType::Json, DataType::Binary] {
        if let Ok(rule) = Rule::from_sql(sql, dt, None) {
            let set = RuleSet::new(vec![Arc::new(rule)], Default::default());
            for p in payloads {
                let msg = message(p.clone());
                let _ = set.evaluate(&msg, &EvalContext::default()).count();
            }
        }
    }
}

#[test]
fn parse_compile_evaluate_never_panics_or_hangs() {
    let seeds: &[&str] = &[
        "SELECT temperature AS t, deviceName() AS dn FROM \"/a1demo/+/user/update\" WHERE temperature > 38",
        "SELECT CASE col WHEN 1 THEN 'Y' ELSE '' END AS r, \"a[0]\", timestamp('yyyy-MM-dd\\'T\\'HH') FROM \"#\"",
        "SELECT substring(s, 1, 3), a || b, a / b FROM \"/a1demo/#\" WHERE a IN (1, 2) AND s LIKE '%x_' OR t BETWEEN 1 AND 2",
    ];
    let mut r = Rng(0x9E37_79B9_7F4A_7C15);
    let mut worst = Duration::ZERO;
    let mut compiled = 0;
    // At least 4,000 cases, and more while `IOTPIPE_FUZZ_SECONDS` (the budget of tests/fuzz.rs
    // and scripts/fuzz.sh) lasts.
    let budget = std::env::var("IOTPIPE_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::ZERO, |s| Duration::from_secs_f64(s.max(0.0)));
    let started = Instant::now();
    let mut i = 0u64;
    while i < 4000 || started.elapsed() < budget {
        i += 1;
        let sql = if i.is_multiple_of(2) {
            statement(&mut r)
        } else {
            let seed = seeds[r.below(seeds.len())];
            mutate(&mut r, seed)
        };
        let payloads: Vec<Bytes> = (0..3).map(|_| payload(&mut r)).collect();
        if Rule::from_sql(&sql, DataType::Json, None).is_ok() {
            compiled += 1;
        }
        let start = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| exercise(&sql, &payloads)));
        assert!(result.is_ok(), "panic on case {i}: {sql:?} with payloads {payloads:?}");
        worst = worst.max(start.elapsed());
        assert!(start.elapsed() < Duration::from_secs(2), "case {i} took {:?}: {sql:?}", start.elapsed());
    }
    // The generator must reach the evaluator, not only the parser's error paths.
    assert!(compiled > i / 5, "only {compiled} of {i} statements compiled");
    eprintln!("{i} cases, {compiled} compiled, slowest {worst:?}");
    println!("fuzz target rules_sql: {i} executions, 0 crashes");
}

#[test]
fn hostile_inputs() {
    let long = format!("SELECT {} FROM \"/a/+\"", vec!["a"; 7_000].join(" + "));
    let deep_case =
        format!("SELECT {}1{} FROM \"/a/+\"", "CASE WHEN true THEN ".repeat(200), " END".repeat(200));
    let like = format!("SELECT 1 FROM \"/a1demo/#\" WHERE s LIKE '{}b'", "%a".repeat(2000));
    let e = Rule::from_sql(&long, DataType::Json, None).unwrap_err();
    assert!(e[0].message.contains("nested too deeply"), "{e:?}");
    let huge = format!("SELECT {} FROM \"/a/+\"", vec!["a"; 20_000].join(" + "));
    assert!(Rule::from_sql(&huge, DataType::Json, None).unwrap_err()[0].message.contains("longer than"));
    for sql in [
        long.as_str(),
        deep_case.as_str(),
        like.as_str(),
        "",
        "\0",
        "SELECT",
        "'",
        "\"",
        "SELECT * FROM \"\"",
    ] {
        let start = Instant::now();
        let payload = Bytes::from(format!("{{\"s\":\"{}\"}}", "a".repeat(5000)));
        exercise(sql, &[payload]);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?} took {:?}",
            &sql[..sql.len().min(40)],
            start.elapsed()
        );
    }
}
