//! Alert rules in cluster mode: two `iotpipe serve` nodes (in this process) on one real
//! `nats-server -js`, a backlog rule declared on both, a real MQTT device whose messages wait
//! in JetStream with no consumer, and a real HTTP receiver of the notifications. The rule reads
//! the cluster's backlog (the nodes' embedded groups stay empty) and one node evaluates, so the
//! receiver gets exactly one notification.

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use axum::Json;
use common::{config_text, metric_value, metrics, Server, WAIT};
use serde_json::Value;
use tokio::sync::mpsc;

const NAME: &str = "atest";

async fn node(nats: &nats::NatsServer, name: &str, before: &str) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let extra = format!(
        "\n{before}\n[cluster]\nnats = [\"{}\"]\nname = \"{NAME}\"\nreplicas = 1\nnode = \"{name}\"\n",
        nats.url
    );
    let text = config_text(dir.path(), "", &extra);
    Server::start_text(dir, text).await
}

/// Both nodes' alert evaluations so far.
async fn evaluations(nodes: &[&Server]) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += metric_value(&metrics(n).await, "iotpipe_alert_evaluations_total");
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_rule_reads_the_clusters_backlog_and_notifies_once() {
    // The notification receiver: every POST body, in order.
    let (tx, mut rx) = mpsc::unbounded_channel::<Value>();
    let receiver = axum::Router::new().route(
        "/alert",
        axum::routing::post(move |Json(body): Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let callback = format!("http://{}/alert", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, receiver).await.expect("receiver") });

    let nats = nats::NatsServer::start();
    // Every second; fires at once above 2; no repeat for an hour.
    let rule = format!(
        "[[alert_rules]]\nname = \"backlog\"\nconsumer_group_ids = [\"DEFAULT_GROUP\"]\n\
         metric = \"accumulatedCount\"\ncomparison = \">\"\nthreshold = 2\nperiod_seconds = 1\n\
         consecutive_periods = 1\nmute_seconds = 3600\ncallback_url = \"{callback}\"\n"
    );
    let n1 = node(&nats, "n1", &rule).await;
    let n2 = node(&nats, "n2", &rule).await;

    // dev1 on node 2: its online status and 3 messages wait in JetStream, no consumer.
    common::publish_n(n2.addr(), "dev1", 3).await;
    let fired = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no notification in time: the rule did not see the cluster's backlog")
        .expect("receiver alive");
    assert_eq!(fired["state"], "firing", "{fired}");
    assert_eq!(fired["groupId"], "DEFAULT_GROUP", "{fired}");
    assert_eq!(fired["metric"], "accumulatedCount", "{fired}");
    let backlog = fired["value"].as_f64().expect("a value");
    assert!(backlog > 2.0, "{fired}");
    // Both nodes see the cluster's backlog through the API (what the rule read): the online
    // status and the 3 messages.
    for server in [&n1, &n2] {
        let (_, status) = common::api::get(server, "/consumer-groups/DEFAULT_GROUP/status").await;
        assert!(status["accumulatedCount"].as_u64() >= Some(4), "{status}");
    }

    // Three more periods evaluated (by whichever node holds the lease): still one notification,
    // not one per node.
    let seen = evaluations(&[&n1, &n2]).await;
    let deadline = Instant::now() + WAIT;
    while evaluations(&[&n1, &n2]).await < seen + 3.0 {
        assert!(Instant::now() < deadline, "the rule stopped being evaluated");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut more = Vec::new();
    while let Ok(n) = rx.try_recv() {
        more.push(n);
    }
    assert!(more.is_empty(), "more notifications than one: {more:?}");
    n1.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}
