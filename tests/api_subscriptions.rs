//! Server-side subscriptions through the API over real sockets: edits that take effect without a
//! restart, every refusal, persistence, and the warning when a rule forwards the same data.

mod common;

use common::amqp::{consumer, read};
use common::api::{send, url};
use common::*;
use serde_json::{json, Value};

async fn create_group(server: &Server, name: &str) -> String {
    let (status, body) =
        send(reqwest::Client::new().post(url(server, "/consumer-groups")).json(&json!({"name": name}))).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn appended(server: &Server, group: &str) -> u64 {
    let (_, s) =
        send(reqwest::Client::new().get(url(server, &format!("/consumer-groups/{group}/status")))).await;
    s["counters"]["appended"].as_u64().unwrap()
}

#[tokio::test]
async fn subscription_edits_take_effect_for_the_next_message() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let (status, list) = send(client.get(url(&server, "/subscriptions"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        list,
        json!([{"productKey": PK, "messageTypes": ["upstream", "status", "lifecycle"], "consumerGroupIds": ["DEFAULT_GROUP"]}])
    );
    let g = create_group(&server, "edited_group").await;
    let mut c = consumer(server.app.amqp_addr(), "edit-watcher", &g).await;

    // Upstream only, to both groups: the new group sees the data but not the device's status.
    let (status, body) = send(
        client
            .put(url(&server, &format!("/subscriptions/{PK}")))
            .json(&json!({"messageTypes": ["upstream"], "consumerGroupIds": ["DEFAULT_GROUP", g]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consumerGroupIds"], json!(["DEFAULT_GROUP", g]));
    assert_eq!(body["warnings"], json!([]));
    publish_n(server.addr(), "dev1", 1).await;
    let d = c.next().await;
    c.accept(&d).await;
    let r = read(&d);
    assert_eq!(r.topic, format!("/{PK}/dev1/user/update"), "the first message is the data, not a status");
    assert_eq!(r.body, br#"{"n":0}"#);

    // Status only, to the new group alone: DEFAULT_GROUP gets nothing more.
    let before = appended(&server, "DEFAULT_GROUP").await;
    let (status, body) = send(
        client
            .put(url(&server, &format!("/subscriptions/{PK}")))
            .json(&json!({"productKey": PK, "messageTypes": ["status"], "consumerGroupIds": [g]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    publish_n(server.addr(), "dev2", 1).await;
    for expected in ["online", "offline"] {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        assert_eq!(r.topic, format!("/as/mqtt/status/{PK}/dev2"));
        let status: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(status["status"], expected);
    }
    assert_eq!(appended(&server, "DEFAULT_GROUP").await, before, "DEFAULT_GROUP left the subscription");
    c.close().await;
}

#[tokio::test]
async fn subscription_refusals_name_what_is_wrong() {
    let server = Server::start_with("", "[[products]]\nkey = \"pother\"\n").await;
    let client = reqwest::Client::new();
    let post = |body: Value| client.post(url(&server, "/subscriptions")).json(&body);
    let sub = |pk: &str, groups: Vec<String>| json!({"productKey": pk, "messageTypes": ["upstream"], "consumerGroupIds": groups});

    let (status, body) = send(post(sub(PK, vec!["DEFAULT_GROUP".into()]))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("SubscriptionExists")), "{body}");
    let (status, body) = send(post(sub("nosuch", vec!["DEFAULT_GROUP".into()]))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["message"].as_str().unwrap().contains("nosuch"));
    let (status, body) = send(post(sub("pother", vec!["g_missing".into()]))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("UnknownConsumerGroup")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("g_missing"));
    let eleven: Vec<String> = (0..11).map(|i| format!("g{i}")).collect();
    let (status, body) = send(post(sub("pother", eleven))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("consumerGroupIds"), "{body}");
    let (status, body) = send(post(
        json!({"productKey": "pother", "messageTypes": ["downstream"], "consumerGroupIds": ["DEFAULT_GROUP"]}),
    ))
    .await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("downstream"), "{body}");
    let (status, body) = send(post(json!({"productKey": "pother", "messageTypes": ["status"]}))).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("consumerGroupIds"), "{body}");

    // Two groups, then unsubscribe: the last one cannot go, the subscription must change instead.
    let g = create_group(&server, "second_group").await;
    let (status, body) = send(post(sub("pother", vec!["DEFAULT_GROUP".into(), g.clone()]))).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(client.delete(url(&server, &format!("/consumer-groups/{g}")))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("InUse")));
    assert!(body["message"].as_str().unwrap().contains("pother"), "lists the product: {body}");
    let unsubscribe =
        |group: &str| client.delete(url(&server, &format!("/subscriptions/pother/consumer-groups/{group}")));
    let (status, body) = send(unsubscribe("DEFAULT_GROUP")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["consumerGroupIds"], json!([g]));
    let (status, body) = send(unsubscribe("DEFAULT_GROUP")).await;
    assert_eq!(status, 404, "no longer subscribed: {body}");
    let (status, body) = send(unsubscribe(&g)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("LastConsumerGroup")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("edit the subscription"), "{body}");

    // Deleting the subscription frees the group.
    assert_eq!(send(client.delete(url(&server, "/subscriptions/pother"))).await.0, 204);
    assert_eq!(send(client.delete(url(&server, "/subscriptions/pother"))).await.0, 404);
    assert_eq!(send(client.delete(url(&server, &format!("/consumer-groups/{g}")))).await.0, 204);
}

#[tokio::test]
async fn api_made_subscriptions_win_over_the_file_after_a_restart() {
    let server = Server::start_with("", "[[products]]\nkey = \"pother\"\n").await;
    let client = reqwest::Client::new();
    let (status, _) = send(client.post(url(&server, "/subscriptions")).json(
        &json!({"productKey": "pother", "messageTypes": ["lifecycle"], "consumerGroupIds": ["DEFAULT_GROUP"]}),
    ))
    .await;
    assert_eq!(status, 201);
    // The file's subscription of a1test, deleted through the API, stays deleted.
    assert_eq!(send(client.delete(url(&server, &format!("/subscriptions/{PK}")))).await.0, 204);
    let server = server.restart().await;
    let (_, list) = send(client.get(url(&server, "/subscriptions"))).await;
    assert_eq!(
        list,
        json!([{"productKey": "pother", "messageTypes": ["lifecycle"], "consumerGroupIds": ["DEFAULT_GROUP"]}])
    );
}

#[tokio::test]
async fn a_rule_forwarding_the_same_data_gets_a_warning() {
    let server = Server::start().await;
    let g = create_group(&server, "rule_target").await;
    // Saving a rule that forwards what the subscription already sends gets a warning...
    let (status, body) = send(reqwest::Client::new().post(url(&server, "/rules")).json(&json!({
        "name": "twice",
        "sql": format!("SELECT * FROM \"/{PK}/+/user/update\""),
        "actions": [format!("amqp {g}")],
    })))
    .await;
    assert_eq!(status, 201, "{body}");
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(warnings[0].as_str().unwrap().contains("subscription of product a1test"), "{body}");
    // ...and so does an edit of the subscription that overlaps the rule.
    let put = |types: Value| {
        reqwest::Client::new()
            .put(url(&server, &format!("/subscriptions/{PK}")))
            .json(&json!({"messageTypes": types, "consumerGroupIds": ["DEFAULT_GROUP"]}))
    };
    let (status, body) = send(put(json!(["upstream", "status"]))).await;
    assert_eq!(status, 200, "{body}");
    let warnings = body["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{body}");
    let w = warnings[0].as_str().unwrap();
    assert!(w.contains("twice") && w.contains("upstream") && !w.contains("status"), "{w}");
    let (_, body) = send(put(json!(["status"]))).await;
    assert_eq!(body["warnings"], json!([]), "status messages are not what the rule reads");
}

#[tokio::test]
async fn default_group_and_the_group_limit_are_protected() {
    let server = Server::start_full("", "max_consumer_groups = 3\n", "").await;
    let client = reqwest::Client::new();
    // Once no subscription uses it, DEFAULT_GROUP is refused for what it is.
    assert_eq!(send(client.delete(url(&server, &format!("/subscriptions/{PK}")))).await.0, 204);
    let (status, body) = send(client.delete(url(&server, "/consumer-groups/DEFAULT_GROUP"))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("Protected")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("DEFAULT_GROUP"), "{body}");

    // DEFAULT_GROUP counts: two more groups fit under a limit of three, the next does not.
    create_group(&server, "second_group").await;
    create_group(&server, "third_group").await;
    let (status, body) =
        send(client.post(url(&server, "/consumer-groups")).json(&json!({"name": "fourth_group"}))).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("LimitExceeded")), "{body}");
    assert!(body["message"].as_str().unwrap().contains('3'), "names the limit: {body}");
}
