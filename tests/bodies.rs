//! Message bodies as the platform's, over real sockets: a device (rumqttc) publishes, a consumer
//! of the subscribed group (AMQP 1.0) reads what the platform would hand it.

mod common;

use common::amqp::{consumer, read, Consumer, Received};
use common::*;
use rumqttc::{Packet, QoS};
use serde_json::{json, Value};

/// The next delivery on `topic`, accepting (and skipping) the others.
async fn next_on(c: &mut Consumer, topic: &str) -> (Received, Value) {
    loop {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        if r.topic == topic {
            let body = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            return (r, body);
        }
    }
}

/// dev1 connected, its PUBACKs read by the caller.
async fn device(server: &Server) -> (rumqttc::AsyncClient, rumqttc::EventLoop) {
    connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap()
}

/// Publishes at QoS 1 and waits for the PUBACK (the message is stored).
async fn publish(client: &rumqttc::AsyncClient, ev: &mut rumqttc::EventLoop, topic: &str, body: &str) {
    client.publish(topic, QoS::AtLeastOnce, false, body).await.unwrap();
    until_v4(ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
}

#[tokio::test]
async fn a_property_set_reply_reaches_the_group_as_the_platform_downlink_reply() {
    let server = Server::start().await;
    let mut group = consumer(server.app.amqp_addr(), "c1", "DEFAULT_GROUP").await;
    let iot_id = iot_id(&server, "dev1").await;
    let (client, mut ev) = device(&server).await;
    let set_reply = "/sys/a1test/dev1/thing/service/property/set_reply";
    publish(&client, &mut ev, set_reply, r#"{"id":"1001","code":200,"data":{},"version":"1.0"}"#).await;
    let (_, body) = next_on(&mut group, "/a1test/dev1/thing/downlink/reply/message").await;
    let gmt_create = body["gmtCreate"].as_u64().expect("gmtCreate");
    assert_eq!(
        body,
        json!({
            "gmtCreate": gmt_create, "iotId": iot_id, "productKey": "a1test", "deviceName": "dev1",
            "requestId": "1001", "code": 200, "message": "success",
            "topic": "/sys/a1test/dev1/thing/service/property/set", "data": {}
        })
    );

    // A service reply carries the service's output and the device's code.
    publish(
        &client,
        &mut ev,
        "/sys/a1test/dev1/thing/service/reboot_reply",
        r#"{"id":"1002","code":9201,"message":"busy","data":{"eta":5}}"#,
    )
    .await;
    let (_, body) = next_on(&mut group, "/a1test/dev1/thing/downlink/reply/message").await;
    assert_eq!(
        (&body["topic"], &body["requestId"], &body["code"], &body["message"], &body["data"]),
        (
            &json!("/sys/a1test/dev1/thing/service/reboot"),
            &json!("1002"),
            &json!(9201),
            &json!("busy"),
            &json!({"eta":5})
        )
    );

    // A reply that is not JSON is forwarded as sent, under the forwarding topic.
    publish(&client, &mut ev, set_reply, "not json").await;
    let (r, _) = next_on(&mut group, "/a1test/dev1/thing/service/property/set_reply").await;
    assert_eq!(r.body, b"not json");
    group.close().await;
}

/// The device's iotId as the API gives it.
async fn iot_id(server: &Server, device: &str) -> String {
    let (status, body) = common::api::get(server, &format!("/products/a1test/devices/{device}")).await;
    assert_eq!(status, 200, "{body}");
    let id = body["iotId"].as_str().expect("iotId").to_string();
    assert!(!id.is_empty());
    id
}
