//! SQL rules inside the running server: results forwarded to a consumer group (with a tag) and
//! republished to a device, side by side with the subscription; rule files reloaded live.

mod common;

use std::time::Duration;

use common::amqp::{consumer, read};
use common::*;
use rumqttc::{Packet, QoS};

const GROUP: &str = "[[consumer_groups]]\nid = \"g_rules\"\nname = \"rules_group\"\n";
const RULE: &str =
    "-- name: hot\n-- action: amqp g_rules tag=${dn}\n-- action: republish /a1test/dev2/user/get\n\
SELECT temperature AS t, deviceName() AS dn FROM \"/a1test/+/user/update\" WHERE temperature > 38\n";

#[tokio::test]
async fn rule_results_reach_their_group_and_are_republished() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/hot.sql"), RULE).unwrap();
    let text = config_text(dir.path(), "", GROUP);
    let config = iotpipe::config::load_str(&text, "test.toml").unwrap();
    let app = iotpipe::App::start(&config).await.unwrap();
    let server = Server { tap: app.tap(), app, dir, text };
    assert_eq!(server.app.rules().len(), 1);

    let (dev2, mut dev2_ev) = connect_v4(v4_options(server.addr(), &creds("dev2"))).await.unwrap();
    dev2.subscribe("/a1test/dev2/user/get", QoS::AtMostOnce).await.unwrap();
    until_v4(&mut dev2_ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    let mut c = consumer(server.app.amqp_addr(), "rules-consumer", "g_rules").await;
    publish_one(server.addr(), "dev1", r#"{"temperature":30}"#).await;
    publish_one(server.addr(), "dev1", r#"{"temperature":40}"#).await;
    let d = c.next().await;
    c.accept(&d).await;
    let r = read(&d);
    assert_eq!(r.body, br#"{"t":40,"dn":"dev1"}"#);
    assert_eq!(r.tag.as_deref(), Some("dev1"));
    assert_eq!(r.topic, "/a1test/dev1/user/update");
    assert!(c.try_next(Duration::from_millis(300)).await.is_none(), "the 30-degree reading matched no rule");

    let Packet::Publish(p) =
        until_v4(&mut dev2_ev, "republished message", |p| matches!(p, Packet::Publish(_))).await
    else {
        unreachable!()
    };
    assert_eq!(&p.payload[..], br#"{"t":40,"dn":"dev1"}"#);

    let rules = server.app.rules();
    let hot = rules.get("hot").unwrap().metrics.snapshot();
    assert_eq!((hot.matched, hot.passed, hot.failed_no_result), (2, 1, 1));
    assert_eq!(hot.actions_success, 2, "one amqp and one republish");
}

#[tokio::test]
async fn a_rule_file_added_while_running_takes_effect() {
    let server = Server::start_with("", GROUP).await;
    assert_eq!(server.app.rules().len(), 0);
    let rules = server.dir.path().join("rules");
    std::fs::create_dir_all(&rules).ok();
    std::fs::write(rules.join("hot.sql"), RULE).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while server.app.rules().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the new rule file was not loaded within 2 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut c = consumer(server.app.amqp_addr(), "late-rule", "g_rules").await;
    publish_one(server.addr(), "dev3", r#"{"temperature":41}"#).await;
    assert_eq!(read(&c.next().await).body, br#"{"t":41,"dn":"dev3"}"#);
}

#[tokio::test]
async fn both_paths_side_by_side_carry_the_right_properties() {
    // DEFAULT_GROUP gets a1test's upstream data by subscription (the test config), g_rules gets
    // the rule's result with a tag.
    let server = Server::start_with("", GROUP).await;
    std::fs::write(server.dir.path().join("rules/hot.sql"), RULE).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while server.app.rules().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "rule not loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut by_rule = consumer(server.app.amqp_addr(), "by-rule", "g_rules").await;
    let mut by_subscription = consumer(server.app.amqp_addr(), "by-subscription", "DEFAULT_GROUP").await;
    publish_one(server.addr(), "dev1", r#"{"temperature":42}"#).await;

    let from_rule = read(&by_rule.next().await);
    let from_subscription = loop {
        let d = by_subscription.next().await;
        by_subscription.accept(&d).await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            break r;
        }
    };
    assert_eq!(from_subscription.body, br#"{"temperature":42}"#, "the subscription forwards the raw payload");
    assert_eq!(from_subscription.tag, None);
    assert_eq!(from_rule.body, br#"{"t":42,"dn":"dev1"}"#, "the rule forwards its result");
    assert_eq!(from_rule.tag.as_deref(), Some("dev1"));
    for r in [&from_rule, &from_subscription] {
        assert_eq!(r.topic, "/a1test/dev1/user/update");
        assert_eq!(r.amqp_message_id.as_deref(), Some(r.message_id.as_str()));
        assert!(r.generate_time > 1_600_000_000_000);
    }
    assert_ne!(from_rule.message_id, from_subscription.message_id, "two messages, two ids");
    assert_eq!(from_rule.generate_time, from_subscription.generate_time, "same receive time");
}

#[tokio::test]
async fn an_array_payload_matches_a_rule_written_for_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(
        dir.path().join("rules/batch.sql"),
        "-- name: batch\n-- action: republish /a1test/dev2/user/get\n\
SELECT * FROM \"/a1test/+/user/update\" WHERE \"[0].temperature\" > 38\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("rules/first.sql"),
        "-- name: first\n-- action: republish /a1test/dev2/user/first\n\
SELECT \"[0].temperature\" AS t, deviceName() AS dn FROM \"/a1test/+/user/update\"\n",
    )
    .unwrap();
    let text = config_text(dir.path(), "", "");
    let config = iotpipe::config::load_str(&text, "test.toml").unwrap();
    let app = iotpipe::App::start(&config).await.unwrap();
    let server = Server { tap: app.tap(), app, dir, text };

    let (dev2, mut dev2_ev) = connect_v4(v4_options(server.addr(), &creds("dev2"))).await.unwrap();
    dev2.subscribe("/a1test/dev2/user/#", QoS::AtMostOnce).await.unwrap();
    until_v4(&mut dev2_ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    publish_one(server.addr(), "dev1", r#"[{"temperature":30},{"temperature":50}]"#).await;
    publish_one(server.addr(), "dev1", r#"[{"temperature":40},{"temperature":10}]"#).await;
    let mut got = Vec::new();
    while got.len() < 3 {
        let Packet::Publish(p) =
            until_v4(&mut dev2_ev, "republished message", |p| matches!(p, Packet::Publish(_))).await
        else {
            unreachable!()
        };
        got.push((p.topic, String::from_utf8(p.payload.to_vec()).unwrap()));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("/a1test/dev2/user/first".to_string(), r#"{"t":30,"dn":"dev1"}"#.to_string()),
            ("/a1test/dev2/user/first".to_string(), r#"{"t":40,"dn":"dev1"}"#.to_string()),
            ("/a1test/dev2/user/get".to_string(), r#"[{"temperature":40},{"temperature":10}]"#.to_string()),
        ]
    );
    let rules = server.app.rules();
    let batch = rules.get("batch").unwrap().metrics.snapshot();
    assert_eq!((batch.matched, batch.passed, batch.skipped_bad_payload), (2, 1, 0));
}
