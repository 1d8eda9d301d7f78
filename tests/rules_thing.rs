//! Rules on thing-model posts inside the running server: they read the platform body, which
//! the rules take from the conversion's parsed value instead of parsing the bytes again.

mod common;

use std::time::Duration;

use common::amqp::{consumer, read};
use common::*;

const GROUP: &str = "[[consumer_groups]]\nid = \"g_rules\"\nname = \"rules_group\"\n";
const PROPERTY: &str = "-- name: hot\n-- action: amqp g_rules\n\
SELECT items.temperature.value AS t, requestId AS id, deviceName() AS dn \
FROM \"/a1test/+/thing/event/property/post\" WHERE items.temperature.value > 38\n";
const EVENT: &str = "-- name: alarm\n-- action: amqp g_rules\n\
SELECT identifier, value.code AS code, type FROM \"/a1test/+/thing/event/+/post\" WHERE identifier = 'alarm'\n";

async fn post(server: &Server, topic: &str, body: &str) {
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string()).await.unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    client.disconnect().await.unwrap();
    let _ = until_v4_closed(&mut ev).await;
}

#[tokio::test]
async fn rules_read_property_and_event_posts_in_the_platform_form() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/hot.sql"), PROPERTY).unwrap();
    std::fs::write(dir.path().join("rules/alarm.sql"), EVENT).unwrap();
    let text = config_text(dir.path(), "", GROUP);
    let config = iotpipe::config::load_str(&text, "test.toml").unwrap();
    let app = iotpipe::App::start(&config).await.unwrap();
    let server = Server { tap: app.tap(), app, dir, text };
    assert_eq!(server.app.rules().len(), 2);

    let mut c = consumer(server.app.amqp_addr(), "thing-rules", "g_rules").await;
    let property = "/sys/a1test/dev1/thing/event/property/post";
    post(&server, property, r#"{"id":"1","params":{"temperature":{"value":30.5,"time":1},"h":2}}"#).await;
    post(&server, property, r#"{"id":"2","params":{"temperature":{"value":40.5,"time":1},"h":2}}"#).await;
    let d = c.next().await;
    c.accept(&d).await;
    let r = read(&d);
    assert_eq!(r.body, br#"{"t":40.5,"id":"2","dn":"dev1"}"#);
    assert_eq!(r.topic, "/a1test/dev1/thing/event/property/post");
    assert!(c.try_next(Duration::from_millis(300)).await.is_none(), "the 30.5-degree post matched no rule");

    post(
        &server,
        "/sys/a1test/dev1/thing/event/alarm/post",
        r#"{"id":"3","params":{"value":{"code":7},"time":5}}"#,
    )
    .await;
    let d = c.next().await;
    c.accept(&d).await;
    assert_eq!(read(&d).body, br#"{"identifier":"alarm","code":7,"type":"info"}"#);

    let rules = server.app.rules();
    let hot = rules.get("hot").unwrap().metrics.snapshot();
    assert_eq!((hot.matched, hot.passed, hot.failed_no_result, hot.skipped_bad_payload), (2, 1, 1, 0));
}
