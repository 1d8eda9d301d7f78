//! Failing rule actions over real sockets: retried with backoff, then the error action receives
//! a record (rule, action, error, topic, payload in base64, time); counters say what happened.

mod common;

use base64::Engine as _;
use common::amqp::{consumer, read};
use common::*;
use serde_json::Value;

const GROUPS: &str = "[[consumer_groups]]\nid = \"g_errors\"\nname = \"errors_group\"\n";

async fn start_with_rules(rules: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    for (name, text) in rules {
        std::fs::write(dir.path().join(format!("rules/{name}.sql")), text).unwrap();
    }
    let text = config_text(dir.path(), "", GROUPS);
    let config = iotpipe::config::load_str(&text, "test.toml").unwrap();
    let app = iotpipe::App::start(&config).await.unwrap();
    Server { tap: app.tap(), app, dir, text }
}

fn metrics(server: &Server, rule: &str) -> Value {
    serde_json::to_value(server.app.rules().get(rule).unwrap().metrics.snapshot()).unwrap()
}

/// The rule's counters once `done` holds for them. A consumer gets a copy as soon as it is
/// staged, before its commit; an action counts as done only after the commit, a moment later.
async fn metrics_when(server: &Server, rule: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = metrics(server, rule);
        if done(&m) || tokio::time::Instant::now() >= deadline {
            return m;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn failed_actions_reach_the_error_action_after_their_retries() {
    let server = start_with_rules(&[
        (
            "lost",
            "-- action: amqp g_missing tag=${dn}\n-- error_action: amqp g_errors\n\
             SELECT temperature AS t, deviceName() AS dn FROM \"/a1test/+/user/update\" WHERE temperature > 38\n",
        ),
        (
            "wild",
            "-- action: republish /a1test/${dn}/user/get\n-- error_action: amqp g_errors tag=wild\n\
             SELECT target AS dn FROM \"/a1test/+/user/update\" WHERE target IS NOT NULL\n",
        ),
    ])
    .await;
    let mut errors = consumer(server.app.amqp_addr(), "errors-reader", "g_errors").await;

    // A republish topic that renders to a wildcard can never work: no retries.
    publish_one(server.addr(), "dev1", r#"{"target":"+"}"#).await;
    let d = errors.next().await;
    errors.accept(&d).await;
    let r = read(&d);
    assert_eq!(r.tag.as_deref(), Some("wild"));
    assert_eq!(r.topic, "/a1test/dev1/user/update");
    let record: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(record["rule"], "wild");
    assert_eq!(record["action"], "republish /a1test/${dn}/user/get");
    assert!(record["error"].as_str().unwrap().contains("wildcard"), "{record}");
    assert_eq!(record["attempts"], 1);

    // A group that does not exist: three retries, then the record.
    publish_one(server.addr(), "dev2", r#"{"temperature":40}"#).await;
    let d = errors.next().await;
    errors.accept(&d).await;
    let r = read(&d);
    let record: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(record["rule"], "lost");
    assert_eq!(record["action"], "amqp g_missing tag=${dn}");
    assert_eq!(record["error"], "consumer group g_missing does not exist");
    assert_eq!(record["topic"], "/a1test/dev2/user/update");
    assert_eq!(record["attempts"], 4);
    let payload =
        base64::engine::general_purpose::STANDARD.decode(record["payload"].as_str().unwrap()).unwrap();
    assert_eq!(payload, br#"{"t":40,"dn":"dev2"}"#);
    assert!(record["messageId"].as_str().unwrap().parse::<u64>().is_ok());
    assert!(record["time"].as_u64().unwrap() >= r.generate_time as u64);

    let m = metrics_when(&server, "lost", |m| m["error_action.success"] == 1).await;
    assert_eq!((m["actions.failed"].as_u64(), m["actions.retried"].as_u64()), (Some(1), Some(3)), "{m}");
    assert_eq!(m["error_action.success"], 1, "{m}");
    let m = metrics(&server, "wild");
    assert_eq!((m["actions.failed"].as_u64(), m["actions.retried"].as_u64()), (Some(1), Some(0)), "{m}");
    errors.close().await;
}

#[tokio::test]
async fn a_retry_succeeds_when_the_destination_comes_back() {
    let server = start_with_rules(&[(
        "late",
        "-- action: amqp g_late\n-- error_action: amqp g_errors\nSELECT n FROM \"/a1test/+/user/update\"\n",
    )])
    .await;
    publish_one(server.addr(), "dev1", r#"{"n":7}"#).await;
    // The group appears after the first attempt failed; a retry delivers the result.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/consumer-groups", server.app.http_addr()))
        .bearer_auth("test-token")
        .json(&serde_json::json!({"name": "late_group", "id": "g_late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let mut c = consumer(server.app.amqp_addr(), "late-reader", "g_late").await;
    let d = c.next().await;
    c.accept(&d).await;
    assert_eq!(read(&d).body, br#"{"n":7}"#);
    let m = metrics_when(&server, "late", |m| m["actions.success"] == 1).await;
    assert_eq!(m["actions.success"], 1, "{m}");
    assert_eq!(m["actions.failed"], 0, "{m}");
    assert!(m["actions.retried"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(m["error_action.success"], 0, "{m}");
    c.close().await;
}
