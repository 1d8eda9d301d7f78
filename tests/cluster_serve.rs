//! `iotpipe serve` with `[cluster]` on one node: the consumer groups' queues are a real
//! `nats-server -js`'s. A real MQTT device publishes with QoS 1 (its PUBACKs wait for the
//! JetStream PubAcks), a real AMQP consumer receives and accepts, and the backlog in JetStream
//! drains; `/healthz` follows the NATS connection.

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{amqp, config_text, publish_n, Server, WAIT};
use iotpipe::cluster::config::ClusterConfig;
use iotpipe::cluster::{connect, JetStreamQueues};
use iotpipe::groups::DEFAULT_GROUP;
use iotpipe::queues::{GroupOptions, GroupQueues, QueueStatus};

/// Another view of the deployment's JetStream queues, as a second node would have.
async fn view(url: &str, server: &Server) -> std::sync::Arc<JetStreamQueues> {
    let mut config = ClusterConfig::new(vec![url.to_string()]);
    config.name = "itest".into();
    config.replicas = 1;
    let client = connect(&config, "view").await.expect("connects");
    let settings = server.app.groups().settings();
    let queues = JetStreamQueues::open(client, &config, settings).await.expect("streams");
    queues.ensure_group(DEFAULT_GROUP, GroupOptions::default()).await.expect("group");
    queues
}

async fn eventually(q: &JetStreamQueues, what: &str, ok: impl Fn(&QueueStatus) -> bool) -> QueueStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = q.status(DEFAULT_GROUP).await.expect("status");
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: status stayed {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn healthz(server: &Server) -> (u16, serde_json::Value) {
    let url = format!("http://{}/healthz", server.app.http_addr());
    let resp = reqwest::get(url).await.expect("healthz answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("healthz JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_cluster_stores_and_delivers_through_jetstream() {
    let nats = nats::NatsServer::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let extra =
        format!("\n[cluster]\nnats = [\"{}\"]\nname = \"itest\"\nreplicas = 1\nnode = \"n1\"\n", nats.url);
    let text = config_text(dir.path(), "", &extra);
    let server = Server::start_text(dir, text).await;
    let (status, body) = healthz(&server).await;
    assert_eq!((status, &body["status"]), (200, &serde_json::json!("ok")), "{body}");

    // Every PUBACK came after the copies' PubAcks: the messages are in JetStream now, and
    // none in this node's embedded store.
    publish_n(server.addr(), "dev1", 20).await;
    let queues = view(&nats.url, &server).await;
    // 20 upstream messages, plus dev1's online and offline status messages.
    let stored = queues.status(DEFAULT_GROUP).await.expect("status");
    assert!(stored.accumulated >= 20, "{stored:?}");
    let embedded = server.app.groups().get(DEFAULT_GROUP).expect("DEFAULT_GROUP").status();
    assert_eq!(embedded.accumulated, 0, "nothing went to the embedded store: {embedded:?}");
    // The API's status reads the cluster's queue.
    let (code, api_status) = common::api::get(&server, "/consumer-groups/DEFAULT_GROUP/status").await;
    assert_eq!(code, 200, "{api_status}");
    assert_eq!(api_status["accumulatedCount"].as_u64(), Some(stored.accumulated), "{api_status}");

    let mut consumer = amqp::consumer(server.app.amqp_addr(), "c1", DEFAULT_GROUP).await;
    // The group's status lists the consumer (this node's clients, so far).
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, status) = common::api::get(&server, "/consumer-groups/DEFAULT_GROUP/status").await;
        if status["onlineClients"][0]["clientId"] == "c1" {
            break;
        }
        assert!(Instant::now() < deadline, "c1 not listed online: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bodies = BTreeSet::new();
    let mut ids = BTreeSet::new();
    while bodies.len() < 20 {
        let d = consumer.next().await;
        let received = amqp::read(&d);
        assert!(ids.insert(received.message_id.clone()), "message {} came twice", received.message_id);
        if received.topic == format!("/{}/dev1/user/update", common::PK) {
            bodies.insert(String::from_utf8(received.body).expect("UTF-8 body"));
        }
        consumer.accept(&d).await;
    }
    let expected: BTreeSet<String> = (0..20).map(|i| format!("{{\"n\":{i}}}")).collect();
    assert_eq!(bodies, expected);
    // Accepts reach JetStream: the shared backlog drains (the offline status may come last).
    while let Some(d) = consumer.try_next(Duration::from_millis(500)).await {
        consumer.accept(&d).await;
    }
    let drained = eventually(&queues, "drained", |s| s.accumulated == 0 && s.in_flight == 0).await;
    assert!(drained.last_consumption_ms.is_some(), "{drained:?}");
    consumer.close().await;

    // A clear through the API empties the cluster's queue.
    publish_n(server.addr(), "dev2", 3).await;
    eventually(&queues, "three more", |s| s.accumulated >= 3).await;
    let (code, cleared) =
        common::api::post(&server, "/consumer-groups/DEFAULT_GROUP/clear", &serde_json::json!({})).await;
    assert_eq!(code, 200, "{cleared}");
    assert!(cleared["cleared"].as_u64().is_some_and(|n| n >= 3), "{cleared}");
    eventually(&queues, "cleared", |s| s.accumulated == 0).await;

    // Without NATS the node is not healthy, and says why.
    drop(nats);
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (status, body) = healthz(&server).await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {status} {body} without NATS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "unavailable");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("NATS") || reason.contains("JetStream"), "{body}");
    server.app.shutdown(Duration::from_secs(5)).await;
}
