//! Alink replies over real sockets: a device subscribed to its reply topic gets `post_reply`
//! for its property and event posts once they are stored, none when it asked for none
//! (`"sys":{"ack":0}`), and code 460 for a malformed body.

mod common;

use common::*;
use rumqttc::{Packet, QoS};
use serde_json::{json, Value};

const POST: &str = "/sys/a1test/dev1/thing/event/property/post";
const REPLIES: &str = "/sys/a1test/dev1/thing/event/+/post_reply";

/// A device subscribed to its reply topics.
async fn device(server: &Server) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    client.subscribe(REPLIES, QoS::AtMostOnce).await.unwrap();
    let Packet::SubAck(ack) = until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.return_codes, vec![rumqttc::SubscribeReasonCode::Success(QoS::AtMostOnce)]);
    (client, ev)
}

/// The next downlink publish: its topic and JSON body.
async fn next_reply(ev: &mut rumqttc::EventLoop) -> (String, Value) {
    let Packet::Publish(p) = until_v4(ev, "post_reply", |p| matches!(p, Packet::Publish(_))).await else {
        unreachable!()
    };
    (p.topic, serde_json::from_slice(&p.payload).expect("a JSON reply"))
}

#[tokio::test]
async fn a_property_post_gets_its_post_reply_after_it_is_stored() {
    let mut server = Server::start().await;
    let (client, mut ev) = device(&server).await;
    let body = r#"{"id":"42","version":"1.0","params":{"temperature":{"value":38.5,"time":1700000000000}},"method":"thing.event.property.post"}"#;
    client.publish(POST, QoS::AtLeastOnce, false, body).await.unwrap();
    let (topic, reply) = next_reply(&mut ev).await;
    // The reply follows the store: the stored message is already there.
    assert_eq!(&server.next_upstream().await.payload[..], body.as_bytes());
    assert_eq!(topic, "/sys/a1test/dev1/thing/event/property/post_reply");
    assert_eq!(
        reply,
        json!({"code":200,"data":{},"id":"42","message":"success","method":"thing.event.property.post","version":"1.0"})
    );

    // QoS 0 posts are answered too, and event posts name their own method.
    client
        .publish(
            "/sys/a1test/dev1/thing/event/alarm/post",
            QoS::AtMostOnce,
            false,
            r#"{"id":"43","params":{"value":{"level":2}}}"#,
        )
        .await
        .unwrap();
    let (topic, reply) = next_reply(&mut ev).await;
    assert_eq!(topic, "/sys/a1test/dev1/thing/event/alarm/post_reply");
    assert_eq!(
        (&reply["id"], &reply["code"], &reply["method"]),
        (&json!("43"), &json!(200), &json!("thing.event.alarm.post"))
    );
}

#[tokio::test]
async fn ack_zero_gets_no_reply() {
    let server = Server::start().await;
    let (client, mut ev) = device(&server).await;
    client
        .publish(POST, QoS::AtLeastOnce, false, r#"{"id":"1","sys":{"ack":0},"params":{"t":1}}"#)
        .await
        .unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    client
        .publish(POST, QoS::AtLeastOnce, false, r#"{"id":"2","sys":{"ack":1},"params":{"t":2}}"#)
        .await
        .unwrap();
    // The first reply to arrive is the second post's: the first got none.
    let (_, reply) = next_reply(&mut ev).await;
    assert_eq!((&reply["id"], &reply["code"]), (&json!("2"), &json!(200)));
}

#[tokio::test]
async fn a_malformed_body_gets_an_error_reply() {
    let mut server = Server::start().await;
    let (client, mut ev) = device(&server).await;
    client.publish(POST, QoS::AtLeastOnce, false, r#"{"id":"7","version":"1.0"}"#).await.unwrap();
    let (_, reply) = next_reply(&mut ev).await;
    assert_eq!(
        reply,
        json!({"code":460,"data":{},"id":"7","message":"request parameter error","method":"thing.event.property.post","version":"1.0"})
    );
    // Still stored and forwarded as sent, unconverted, under the forwarding topic (no `/sys`)
    // as every thing-model message.
    let m = server.next_upstream().await;
    let (topic, payload) = m.forwarded();
    assert_eq!(
        (topic, &payload[..]),
        ("/a1test/dev1/thing/event/property/post", &br#"{"id":"7","version":"1.0"}"#[..])
    );

    client.publish(POST, QoS::AtLeastOnce, false, "not json").await.unwrap();
    let (_, reply) = next_reply(&mut ev).await;
    assert_eq!((&reply["code"], &reply["id"]), (&json!(460), &Value::Null));
}

#[tokio::test]
async fn a_device_not_subscribed_to_its_reply_topic_gets_nothing_and_is_not_hurt() {
    let server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    client.subscribe("/a1test/dev1/user/get", QoS::AtMostOnce).await.unwrap();
    until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    client.publish(POST, QoS::AtLeastOnce, false, r#"{"id":"1","params":{"t":1}}"#).await.unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    server.app.ingress().publish("/a1test/dev1/user/get", "next".into()).unwrap();
    let Packet::Publish(p) = until_v4(&mut ev, "downlink", |p| matches!(p, Packet::Publish(_))).await else {
        unreachable!()
    };
    assert_eq!(p.topic, "/a1test/dev1/user/get", "no post_reply before it");
}
