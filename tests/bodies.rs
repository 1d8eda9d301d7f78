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

/// Subscribes DEFAULT_GROUP to `types` of a1test.
async fn subscribe(server: &Server, types: &[&str]) {
    let body = json!({"productKey": "a1test", "messageTypes": types, "consumerGroupIds": ["DEFAULT_GROUP"]});
    let (status, answer) = common::api::put(server, "/subscriptions/a1test", &body).await;
    assert_eq!(status, 200, "{answer}");
}

const HISTORY: &str = "/sys/a1test/dev1/thing/event/property/history/post";

#[tokio::test]
async fn history_and_tag_change_types_reach_only_groups_subscribed_to_them() {
    let server = Server::start().await;
    subscribe(&server, &["thing_history", "tag_change"]).await;
    let mut group = consumer(server.app.amqp_addr(), "c1", "DEFAULT_GROUP").await;
    let (client, mut ev) = device(&server).await;
    // Neither upstream nor status is subscribed: the first delivery is the history.
    publish(&client, &mut ev, "/a1test/dev1/user/update", r#"{"t":1}"#).await;
    publish(
        &client,
        &mut ev,
        HISTORY,
        r#"{"id":"3","version":"1.0","method":"thing.event.property.history.post","params":[
            {"identity":{"productKey":"a1test","deviceName":"dev1"},
             "properties":[{"t":{"value":20.5,"time":1700000000000}}],
             "events":[{"alarm":{"value":{"code":7},"time":1700000000001}}]}]}"#,
    )
    .await;
    let d = group.next().await;
    group.accept(&d).await;
    let r = read(&d);
    assert_eq!(r.topic, "/a1test/dev1/thing/event/property/history/post");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["items"], json!({"t": {"value": 20.5, "time": 1700000000000u64}}));
    assert_eq!(body["requestId"], "3");
    let (_, event) = next_on(&mut group, "/a1test/dev1/thing/event/alarm/history/post").await;
    assert_eq!((&event["identifier"], &event["value"]), (&json!("alarm"), &json!({"code": 7})));

    // Tags edited through the API: one UPDATE message, then a DELETE.
    let iot_id = iot_id(&server, "dev1").await;
    let tags = "/products/a1test/devices/dev1/tags";
    let (status, view) =
        common::api::patch(&server, tags, &json!({"tags": {"room": "lab", "floor": "2"}})).await;
    assert_eq!((status, &view["tags"]), (200, &json!({"floor": "2", "room": "lab"})));
    let (_, update) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    let time = update["messageCreateTime"].as_u64().expect("messageCreateTime");
    assert_eq!(
        update,
        json!({
            "action": "UPDATE", "iotId": iot_id, "productKey": "a1test", "deviceName": "dev1",
            "items": [{"attrKey": "floor", "attrValue": "2"}, {"attrKey": "room", "attrValue": "lab"}],
            "messageCreateTime": time
        })
    );
    let (status, view) = common::api::patch(&server, tags, &json!({"tags": {"floor": null}})).await;
    assert_eq!((status, &view["tags"]), (200, &json!({"room": "lab"})));
    let (_, delete) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    assert_eq!((&delete["action"], &delete["items"]), (&json!("DELETE"), &json!([{"attrKey": "floor"}])));
    // PUT replaces: room changes (UPDATE), nothing removed; an unchanged PUT says nothing.
    let (status, _) = common::api::put(&server, tags, &json!({"tags": {"room": "hall"}})).await;
    assert_eq!(status, 200);
    let (status, _) = common::api::put(&server, tags, &json!({"tags": {"room": "hall"}})).await;
    assert_eq!(status, 200);
    let (status, _) = common::api::patch(&server, tags, &json!({"tags": {"x": "1"}})).await;
    assert_eq!(status, 200);
    let (_, update) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    assert_eq!(update["items"], json!([{"attrKey": "room", "attrValue": "hall"}]));
    // The unchanged PUT made no message: the next one is the patch's.
    let d = group.next().await;
    group.accept(&d).await;
    let next: Value = serde_json::from_slice(&read(&d).body).unwrap();
    assert_eq!(next["items"], json!([{"attrKey": "x", "attrValue": "1"}]));

    // Bad tag edits are refused with a reason, and change nothing.
    let (status, err) = common::api::put(&server, tags, &json!({"tags": {"": "x"}})).await;
    assert_eq!((status, err["code"].as_str()), (400, Some("InvalidTags")), "{err}");
    let (status, err) = common::api::patch(&server, tags, &json!({"tags": {"room": 5}})).await;
    assert_eq!(status, 400, "{err}");
    let (status, _) =
        common::api::put(&server, "/products/a1test/devices/nope/tags", &json!({"tags": {}})).await;
    assert_eq!(status, 404);
    group.close().await;
}

#[tokio::test]
async fn iot_ids_are_stable_across_restarts_and_in_every_message_kind() {
    let server = Server::start().await;
    subscribe(&server, &["upstream", "status", "lifecycle", "thing_history", "tag_change"]).await;
    let dev1 = iot_id(&server, "dev1").await;
    let dev2 = iot_id(&server, "dev2").await;
    assert_ne!(dev1, dev2);
    let mut group = consumer(server.app.amqp_addr(), "c1", "DEFAULT_GROUP").await;

    // Lifecycle: a device created through the API has its id in the answer and the message.
    let (status, created) =
        common::api::post(&server, "/products/a1test/devices", &json!({"deviceName": "made1"})).await;
    assert_eq!(status, 201, "{created}");
    let made1 = created["iotId"].as_str().expect("iotId").to_string();
    let (_, lifecycle) = next_on(&mut group, "/a1test/made1/thing/lifecycle").await;
    assert_eq!((&lifecycle["action"], &lifecycle["iotId"]), (&json!("create"), &json!(made1)));

    // Status, then each thing-model kind.
    let (client, mut ev) = device(&server).await;
    let (_, online) = next_on(&mut group, "/as/mqtt/status/a1test/dev1").await;
    assert_eq!((&online["status"], &online["iotId"]), (&json!("online"), &json!(dev1)));
    let posts = [
        (
            "/sys/a1test/dev1/thing/event/property/post",
            r#"{"id":"1","params":{"t":1}}"#,
            "/a1test/dev1/thing/event/property/post",
        ),
        (
            "/sys/a1test/dev1/thing/event/alarm/post",
            r#"{"id":"2","params":{"value":{"c":1}}}"#,
            "/a1test/dev1/thing/event/alarm/post",
        ),
        (
            "/sys/a1test/dev1/thing/event/property/batch/post",
            r#"{"id":"3","params":{"properties":{"t":[{"value":1,"time":1}]},"events":{"alarm":[{"value":{},"time":2}]}}}"#,
            "/a1test/dev1/thing/property/batch/post",
        ),
        (
            HISTORY,
            r#"{"id":"4","params":[{"properties":[{"t":{"value":1,"time":1}}]}]}"#,
            "/a1test/dev1/thing/event/property/history/post",
        ),
        (
            "/sys/a1test/dev1/thing/service/property/set_reply",
            r#"{"id":"5","code":200,"data":{}}"#,
            "/a1test/dev1/thing/downlink/reply/message",
        ),
    ];
    for (topic, body, forwarded) in posts {
        publish(&client, &mut ev, topic, body).await;
        let (_, got) = next_on(&mut group, forwarded).await;
        assert_eq!(got["iotId"], json!(dev1), "{forwarded}");
        if forwarded.ends_with("/property/batch/post") {
            let (_, events) = next_on(&mut group, "/a1test/dev1/thing/event/batch/post").await;
            assert_eq!(events["iotId"], json!(dev1));
        }
        assert_eq!(got["deviceType"].as_str().unwrap_or("CustomCategory"), "CustomCategory", "{forwarded}");
    }
    let (status, _) =
        common::api::put(&server, "/products/a1test/devices/dev1/tags", &json!({"tags": {"a": "b"}})).await;
    assert_eq!(status, 200);
    let (_, tag) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    assert_eq!(tag["iotId"], json!(dev1));
    client.disconnect().await.unwrap();
    until_v4_closed(&mut ev).await;
    let (_, offline) = next_on(&mut group, "/as/mqtt/status/a1test/dev1").await;
    assert_eq!((&offline["status"], &offline["iotId"]), (&json!("offline"), &json!(dev1)));
    group.close().await;

    // After a restart: the same ids, configured and created devices alike, in the API and in
    // the messages.
    let server = server.restart().await;
    assert_eq!(iot_id(&server, "dev1").await, dev1);
    assert_eq!(iot_id(&server, "dev2").await, dev2);
    assert_eq!(iot_id(&server, "made1").await, made1);
    let mut group = consumer(server.app.amqp_addr(), "c2", "DEFAULT_GROUP").await;
    let (client, mut ev) = device(&server).await;
    publish(&client, &mut ev, "/sys/a1test/dev1/thing/event/property/post", r#"{"id":"6","params":{"t":2}}"#)
        .await;
    let (_, got) = next_on(&mut group, "/a1test/dev1/thing/event/property/post").await;
    assert_eq!(got["iotId"], json!(dev1));

    // A device deleted and created again under the same name is a new device: a new id.
    let (status, _) = common::api::send(
        reqwest::Client::new().delete(common::api::url(&server, "/products/a1test/devices/made1")),
    )
    .await;
    assert_eq!(status, 204);
    let (_, again) =
        common::api::post(&server, "/products/a1test/devices", &json!({"deviceName": "made1"})).await;
    assert_ne!(again["iotId"], json!(made1));
    group.close().await;
}

#[tokio::test]
async fn a_device_reports_its_tags_and_each_change_is_a_tag_change_message() {
    let server = Server::start().await;
    subscribe(&server, &["upstream", "tag_change"]).await;
    let mut group = consumer(server.app.amqp_addr(), "c1", "DEFAULT_GROUP").await;
    let (client, mut ev) = device(&server).await;
    client.subscribe("/sys/a1test/dev1/thing/deviceinfo/+", QoS::AtMostOnce).await.unwrap();
    until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;

    let update = "/sys/a1test/dev1/thing/deviceinfo/update";
    client
        .publish(
            update,
            QoS::AtLeastOnce,
            false,
            r#"{"id":"11","version":"1.0","params":[{"attrKey":"vendor","attrValue":"acme"}],"method":"thing.deviceinfo.update"}"#,
        )
        .await
        .unwrap();
    let (topic, body) = next_publish(&mut ev).await;
    assert_eq!(topic, "/sys/a1test/dev1/thing/deviceinfo/update_reply");
    assert_eq!(
        (&body["code"], &body["id"], &body["method"]),
        (&json!(200), &json!("11"), &json!("thing.deviceinfo.update"))
    );
    let (r, change) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    assert_eq!(
        (&change["action"], &change["items"]),
        (&json!("UPDATE"), &json!([{"attrKey": "vendor", "attrValue": "acme"}]))
    );
    assert_eq!(change["iotId"], json!(iot_id(&server, "dev1").await));
    assert!(!r.body.is_empty());
    let (_, view) = common::api::get(&server, "/products/a1test/devices/dev1").await;
    assert_eq!(view["tags"], json!({"vendor": "acme"}));

    client
        .publish(
            "/sys/a1test/dev1/thing/deviceinfo/delete",
            QoS::AtLeastOnce,
            false,
            r#"{"id":"12","params":[{"attrKey":"vendor"}]}"#,
        )
        .await
        .unwrap();
    let (_, body) = next_publish(&mut ev).await;
    assert_eq!((&body["code"], &body["method"]), (&json!(200), &json!("thing.deviceinfo.delete")));
    let (_, change) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    assert_eq!((&change["action"], &change["items"]), (&json!("DELETE"), &json!([{"attrKey": "vendor"}])));

    // A bad report changes nothing, is answered 460 and forwarded as sent.
    client
        .publish(update, QoS::AtLeastOnce, false, r#"{"id":"13","params":[{"attrKey":""}]}"#)
        .await
        .unwrap();
    let (_, body) = next_publish(&mut ev).await;
    assert_eq!((&body["code"], &body["id"]), (&json!(460), &json!("13")));
    let (r, _) = next_on(&mut group, "/a1test/dev1/thing/deviceinfo/update").await;
    assert_eq!(r.body, br#"{"id":"13","params":[{"attrKey":""}]}"#);
    let (_, view) = common::api::get(&server, "/products/a1test/devices/dev1").await;
    assert_eq!(view["tags"], json!({}));
    group.close().await;
}

/// The next publish to the device: topic and JSON body.
async fn next_publish(ev: &mut rumqttc::EventLoop) -> (String, Value) {
    let Packet::Publish(p) = until_v4(ev, "a publish", |p| matches!(p, Packet::Publish(_))).await else {
        unreachable!()
    };
    (p.topic, serde_json::from_slice(&p.payload).unwrap())
}
