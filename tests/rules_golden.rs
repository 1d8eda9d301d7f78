//! Golden tests of the rule language: every `tests/rules/*.toml` file holds `[[case]]` tables.
//!
//! ```toml
//! [[case]]
//! name = "alias and function"
//! sql = '''SELECT temperature AS t, deviceName() AS dn FROM "/a1demo/+/user/update"'''
//! topic = "/a1demo/dev1/user/update"     # optional, this is the default
//! payload = '{"temperature":40}'         # optional, default {}
//! payload_hex = "0001ff"                 # instead of payload, for binary payloads
//! data_type = "binary"                   # optional, default json
//! file = '''-- name: x ...'''            # instead of sql: a whole rule file
//! device_name = "dev1"                   # optional, defaults from the topic
//! tags = { room = "lab" }                # device tags for attribute()
//! script = '''fn f(x) { x + 1 }'''       # rhai functions the SQL may call
//! expect = '{"t":40,"dn":"dev1"}'        # the result, compact JSON in SELECT order
//! # or: expect_no = "match" | "topic" | "payload"     (no result, and why)
//! # or: expect_error = "1:8: unknown function"        (compile error contains this)
//! # or: expect_fail = "division by zero"             (evaluation failure contains this)
//! ```
//!
//! Messages are received at 2024-01-02T03:04:05.678Z from 192.0.2.1 with client id `c1`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use iotpipe::message::{Kind, Message, Origin};
use iotpipe::rules::script::{Script, Scripts};
use iotpipe::rules::{DataType, EvalContext, Outcome, Rule, RuleSet};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    sql: Option<String>,
    file: Option<String>,
    topic: Option<String>,
    payload: Option<String>,
    payload_hex: Option<String>,
    data_type: Option<String>,
    device_name: Option<String>,
    script: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    expect: Option<String>,
    expect_no: Option<String>,
    expect_error: Option<String>,
    expect_fail: Option<String>,
}

const RECEIVED_AT_MS: u64 = 1_704_164_645_678;

fn run(case: &Case) -> Result<(), String> {
    let data_type = match case.data_type.as_deref() {
        Some("binary") => DataType::Binary,
        _ => DataType::Json,
    };
    let mut scripts = Scripts::default();
    if let Some(src) = &case.script {
        scripts.add(&Script::compile(src).map_err(|e| format!("script: {e}"))?);
    }
    let scripts = case.script.is_some().then_some(&scripts);
    let compiled = match (&case.sql, &case.file) {
        (Some(sql), None) => Rule::from_sql(sql, data_type, scripts),
        (None, Some(text)) => Rule::from_file("case.sql", "case", text, scripts),
        _ => return Err("give exactly one of sql and file".into()),
    };
    let rule = match (compiled, &case.expect_error) {
        (Err(diags), Some(want)) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            let all = text.join("\n");
            return if all.contains(want.as_str()) {
                Ok(())
            } else {
                Err(format!("error {all:?} lacks {want:?}"))
            };
        }
        (Err(diags), None) => return Err(format!("unexpected compile error: {}", diags[0])),
        (Ok(_), Some(want)) => return Err(format!("compiled, but expected the error {want:?}")),
        (Ok(r), None) => r,
    };
    let topic = case.topic.clone().unwrap_or_else(|| "/a1demo/dev1/user/update".into());
    let payload = match (&case.payload, &case.payload_hex) {
        (_, Some(h)) => Bytes::from(hex::decode(h).map_err(|e| e.to_string())?),
        (Some(p), None) => Bytes::from(p.clone().into_bytes()),
        (None, None) => Bytes::from_static(b"{}"),
    };
    let levels: Vec<&str> = topic.trim_start_matches('/').split('/').collect();
    let (pk, dn) = match levels.as_slice() {
        ["sys", pk, dn, ..] | ["as", "mqtt", "status", pk, dn, ..] => (*pk, *dn),
        [pk, dn, ..] => (*pk, *dn),
        _ => ("a1demo", "dev1"),
    };
    let origin = Arc::new(Origin {
        product_key: pk.to_string(),
        device_name: case.device_name.clone().unwrap_or_else(|| dn.to_string()),
        iot_id: "4z819VQHk6VSLmmBJfrf00107e".into(),
        device_type: "CustomCategory".into(),
        client_id: "c1".into(),
        peer: Some("192.0.2.1:40000".parse().map_err(|_| "addr")?),
    });
    // As the ingress makes it: the first platform message of a conversion, else (a thing-model
    // topic that is not converted) the device's bytes under the forwarding topic.
    use iotpipe::message::{thing, Platform};
    let (kind, platform) =
        match thing::convert(&origin, &topic, &payload, RECEIVED_AT_MS).and_then(Result::ok) {
            Some(c) => (c.kind, c.messages.into_iter().next()),
            None => (
                Kind::Upstream,
                thing::forwarding_topic(&origin, &topic)
                    .map(|t| Platform { topic: t.to_string(), payload: payload.clone() }),
            ),
        };
    let msg = Message {
        id: 7,
        kind,
        topic: topic.clone(),
        payload,
        qos: 1,
        origin,
        received_at_ms: RECEIVED_AT_MS,
        platform,
    };
    let ctx = EvalContext { tags: Some(&case.tags) };
    let outcome = RuleSet::default().evaluate_rule(&rule, &msg, &ctx);
    // The message path (topic index, partial payload parsing) must agree with the dry run.
    let rule = Arc::new(rule);
    let set = RuleSet::new(vec![Arc::clone(&rule)], Default::default());
    let via_index: Vec<String> = set.evaluate(&msg, &ctx).map(|o| o.row.to_json()).collect();
    let direct: Vec<String> = match &outcome {
        Outcome::Output(row) => vec![row.to_json()],
        _ => Vec::new(),
    };
    // Random functions differ between two runs by design.
    let random = case.sql.as_deref().unwrap_or_default().contains("rand()")
        || case.sql.as_deref().unwrap_or_default().contains("newuuid()");
    if via_index != direct && !random {
        return Err(format!("evaluate() gave {via_index:?}, evaluate_rule() gave {direct:?}"));
    }
    let got = match &outcome {
        Outcome::Output(row) => format!("result {}", row.to_json()),
        Outcome::NoMatch => "no match".into(),
        Outcome::TopicMismatch => "no topic".into(),
        Outcome::BadPayload(w) => format!("no payload ({w})"),
        Outcome::Disabled => "no disabled".into(),
        Outcome::Failed(e) => format!("fail {e}"),
    };
    let ok = match (&case.expect, &case.expect_no, &case.expect_fail) {
        (Some(want), None, None) => got == format!("result {}", want.trim()),
        (None, Some(why), None) => got.starts_with(&format!("no {why}")),
        (None, None, Some(want)) => got.starts_with("fail") && got.contains(want.as_str()),
        _ => return Err("give exactly one of expect, expect_no, expect_error, expect_fail".into()),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("got {got}"))
    }
}

#[test]
fn golden_cases() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/rules exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let (mut total, mut failures) = (0, Vec::new());
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable");
        let file: File = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &file.case {
            total += 1;
            if let Err(e) = run(case) {
                failures.push(format!(
                    "{}: {}: {e}",
                    path.file_name().unwrap_or_default().to_string_lossy(),
                    case.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {total} cases failed:\n{}", failures.len(), failures.join("\n"));
    assert!(total >= 150, "only {total} golden cases");
    eprintln!("{total} golden cases passed");
}
