//! The HTTP API over a real socket: auth, errors, consumer-group view, status and clear.

mod common;

use common::amqp::consumer;
use common::*;
use serde_json::Value;

fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.app.http_addr())
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(url(server, path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn healthz_needs_no_token_and_the_api_needs_the_right_one() {
    let server = Server::start().await;
    assert_eq!(get(&server, "/healthz", None).await.0, 200);
    for token in [None, Some("wrong")] {
        let (status, body) = get(&server, "/api/v1/consumer-groups", token).await;
        assert_eq!(status, 401, "{token:?}");
        assert_eq!(body["code"], "Unauthorized");
    }
    let (status, body) = get(&server, "/api/v1/consumer-groups", Some("test-token")).await;
    assert_eq!(status, 200);
    assert_eq!(body, serde_json::json!([{"id": "DEFAULT_GROUP", "name": "DEFAULT_GROUP"}]));
    let (status, doc) = get(&server, "/api/v1/openapi.json", Some("test-token")).await;
    assert_eq!((status, doc["openapi"].as_str()), (200, Some("3.1.0")));
    assert!(doc["paths"]["/api/v1/subscriptions/{productKey}/consumer-groups/{id}"]["delete"].is_object());
    assert_eq!(get(&server, "/api/v1/openapi.json", None).await.0, 401);
    let (status, body) = get(&server, "/api/v1/consumer-groups/nope", Some("test-token")).await;
    assert_eq!((status, body["code"].as_str()), (404, Some("NotFound")));
    assert!(body["message"].as_str().unwrap().contains("nope"));
}

#[tokio::test]
async fn groups_can_be_listed_viewed_watched_and_cleared() {
    let server =
        Server::start_with("", "[[consumer_groups]]\nid = \"g_alerts\"\nname = \"alerts_group\"\n").await;
    let (_, list) = get(&server, "/api/v1/consumer-groups?name=ALERT", Some("test-token")).await;
    assert_eq!(list, serde_json::json!([{"id": "g_alerts", "name": "alerts_group"}]));

    publish_n(server.addr(), "dev1", 3).await;
    let c = consumer(server.app.amqp_addr(), "watcher", "DEFAULT_GROUP").await;
    // Online + 3 data + offline are accumulated (the watcher settles nothing).
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let (code, status) =
            get(&server, "/api/v1/consumer-groups/DEFAULT_GROUP/status", Some("test-token")).await;
        assert_eq!(code, 200);
        if status["onlineClients"].as_array().unwrap().len() == 1 && status["accumulatedCount"] == 5 {
            break status;
        }
        assert!(tokio::time::Instant::now() < deadline, "status stayed {status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(status["onlineClients"][0]["clientId"], "watcher");
    assert!(status["onlineClients"][0]["clientIpPort"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(status["counters"]["appended"], 5);

    let resp = reqwest::Client::new()
        .post(url(&server, "/api/v1/consumer-groups/DEFAULT_GROUP/clear"))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["cleared"], 5);
    let (_, status) = get(&server, "/api/v1/consumer-groups/DEFAULT_GROUP/status", Some("test-token")).await;
    assert_eq!(status["accumulatedCount"], 0);
    c.close().await;
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.bearer_auth("test-token").send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

#[tokio::test]
async fn groups_are_created_with_the_name_rule_and_survive_a_restart() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let post = |body: &'static str| {
        client
            .post(url(&server, "/api/v1/consumer-groups"))
            .header("content-type", "application/json")
            .body(body)
    };
    let (status, created) = send(post(r#"{"name":"告警_alerts"}"#)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with('g') && id.len() == 21, "{id}");
    assert_eq!(created["name"], "告警_alerts");

    let (status, body) = send(post(r#"{"name":"告警_alerts"}"#)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("NameTaken")));
    let (status, body) = send(post(r#"{"name":"abc"}"#)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidName")));
    assert!(body["message"].as_str().unwrap().contains("4 to 30"), "{body}");
    let (status, body) = send(post(r#"{"nmae":"abcd"}"#)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("nmae"), "the message names the field: {body}");
    let (status, body) = send(post("not json")).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));

    // A consumer can use it at once, and it survives a restart.
    let c = consumer(server.app.amqp_addr(), "new-group-client", &id).await;
    c.close().await;
    let server = server.restart().await;
    let (status, body) =
        send(reqwest::Client::new().get(url(&server, &format!("/api/v1/consumer-groups/{id}")))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "告警_alerts");
}

#[tokio::test]
async fn deleting_a_group_is_refused_while_something_uses_it() {
    let extra = "[[consumer_groups]]\nid = \"g_cfg\"\nname = \"configured\"\n\
                 [[subscriptions]]\nproduct_key = \"pother\"\nmessage_types = [\"status\"]\nconsumer_groups = [\"g_cfg\"]\n\
                 [[products]]\nkey = \"pother\"\n";
    let server = Server::start_with("", extra).await;
    let client = reqwest::Client::new();
    let delete = |id: &str| client.delete(url(&server, &format!("/api/v1/consumer-groups/{id}")));

    let (status, body) = send(delete("DEFAULT_GROUP")).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("a1test"), "lists the subscribed product: {body}");
    let (status, body) = send(delete("g_cfg")).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("InUse")));
    assert!(body["message"].as_str().unwrap().contains("pother"), "{body}");

    let (_, created) = send(
        client.post(url(&server, "/api/v1/consumer-groups")).json(&serde_json::json!({"name": "doomed"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let rule = server.dir.path().join("rules/uses_it.sql");
    std::fs::write(&rule, format!("-- action: amqp {id}\nSELECT * FROM \"/a1test/+/user/update\"\n"))
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.app.rules().len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "rule not loaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = send(delete(&id)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("InUse")));
    assert!(body["message"].as_str().unwrap().contains("uses_it"), "lists the rule: {body}");

    std::fs::remove_file(&rule).unwrap();
    while !server.app.rules().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "rule not unloaded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(send(delete(&id)).await.0, 204);
    assert_eq!(send(delete(&id)).await.0, 404);
    assert!(!server.app.groups().exists(&id));
}

/// The next lifecycle message the consumer receives (other messages are accepted and skipped).
async fn next_lifecycle(c: &mut common::amqp::Consumer) -> (String, Value) {
    loop {
        let d = c.next().await;
        c.accept(&d).await;
        let r = common::amqp::read(&d);
        if r.topic.ends_with("/thing/lifecycle") {
            return (r.topic, serde_json::from_slice::<Value>(&r.body).unwrap());
        }
    }
}

#[tokio::test]
async fn device_lifecycle_through_the_api() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let devices = url(&server, "/api/v1/products/a1test/devices");
    let mut lifecycle = consumer(server.app.amqp_addr(), "lifecycle-watcher", "DEFAULT_GROUP").await;

    let (status, created) =
        send(client.post(&devices).json(&serde_json::json!({"deviceName": "newdev"}))).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["deviceSecret"].as_str().unwrap().to_string();
    assert_eq!(secret.len(), 32);
    let (topic, message) = next_lifecycle(&mut lifecycle).await;
    assert_eq!(topic, "/a1test/newdev/thing/lifecycle");
    assert_eq!(message["action"], "create");
    assert_eq!(message["deviceSecret"], secret.as_str(), "the secret travels once, on create");
    assert!(message["messageCreateTime"].as_u64().is_some());

    // The new device connects with its secret.
    let creds = sign("newdev", &secret, iotpipe::sign::SignMethod::HmacSha256, None);
    let (_device, mut ev) = connect_v4(v4_options(server.addr(), &creds)).await.unwrap();

    let one = format!("{devices}/newdev");
    let (status, body) = send(client.patch(&one).json(&serde_json::json!({"enabled": false}))).await;
    assert_eq!((status, body["enabled"].as_bool()), (200, Some(false)), "{body}");
    assert!(body.get("deviceSecret").is_none(), "the secret is shown only once");
    until_v4_closed(&mut ev).await;
    let (_, message) = next_lifecycle(&mut lifecycle).await;
    assert_eq!(message["action"], "disable");
    assert!(message.get("deviceSecret").is_none());

    let (status, body) = send(client.patch(&one).json(&serde_json::json!({"enabled": "no"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidBody")));
    assert!(body["message"].as_str().unwrap().contains("enabled"), "{body}");
    let (status, body) = send(client.post(&devices).json(&serde_json::json!({"deviceName": "ab"}))).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("InvalidDeviceName")));
    let (status, _) = send(client.post(&devices).json(&serde_json::json!({"deviceName": "newdev"}))).await;
    assert_eq!(status, 409);

    assert_eq!(send(client.delete(&one)).await.0, 204);
    assert_eq!(next_lifecycle(&mut lifecycle).await.1["action"], "delete");
    assert_eq!(send(client.get(&one)).await.0, 404);
    lifecycle.close().await;

    // Created devices survive a restart.
    let (status, _) = send(
        client.post(&devices).json(&serde_json::json!({"deviceName": "keeper", "deviceSecret": "k-secret"})),
    )
    .await;
    assert_eq!(status, 201);
    let server = server.restart().await;
    let (status, body) = send(client.get(url(&server, "/api/v1/products/a1test/devices/keeper"))).await;
    assert_eq!((status, body["enabled"].as_bool()), (200, Some(true)), "{body}");
    connect_v4(v4_options(
        server.addr(),
        &sign("keeper", "k-secret", iotpipe::sign::SignMethod::HmacSha1, None),
    ))
    .await
    .unwrap();
}

/// With `admin_token` left out there is no well-known token (issue 17, finding 5): `change-me`
/// is refused, a random token is generated, kept owner-only in the data directory and used
/// again after a restart.
#[tokio::test]
async fn without_admin_token_a_random_one_is_generated_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), "", "").replace("admin_token = \"test-token\"\n", "");
    assert!(!text.contains("admin_token"));
    let server = Server::start_text(dir, text).await;
    let token = server.app.admin_token().to_string();
    assert_eq!(token.len(), 64);
    let file = server.dir.path().join("admin_token");
    assert!(matches!(server.app.admin_token_source(), iotpipe::TokenSource::Generated(p) if *p == file));
    assert_eq!(get(&server, "/api/v1/consumer-groups", Some("change-me")).await.0, 401);
    assert_eq!(get(&server, "/api/v1/consumer-groups", Some(&token)).await.0, 200);
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    let server = server.restart().await;
    assert_eq!(server.app.admin_token(), token, "the stored token survives a restart");
    assert!(matches!(server.app.admin_token_source(), iotpipe::TokenSource::Stored(_)));
    assert_eq!(get(&server, "/api/v1/consumer-groups", Some(&token)).await.0, 200);
}
