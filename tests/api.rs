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
