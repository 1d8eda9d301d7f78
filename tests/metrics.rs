//! `/metrics` over a real socket, parsed with a Prometheus text parser: the counters move after
//! a device publishes and a consumer accepts.

mod common;

use std::time::Duration;

use common::amqp::consumer;
use common::*;
use iotpipe::sign::SignMethod;
use prometheus_parse::{Scrape, Value};

async fn scrape(server: &Server) -> Scrape {
    let resp = reqwest::get(format!("http://{}/metrics", server.app.http_addr())).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = resp.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of `metric` with `labels` (all of them must match); `None` when absent.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => f64::NAN,
        })
}

fn get(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    value(s, metric, labels).unwrap_or_else(|| panic!("no {metric}{labels:?} in the scrape"))
}

const GROUP: &[(&str, &str)] = &[("group", "DEFAULT_GROUP")];

#[tokio::test]
async fn counters_move_after_a_device_publishes_and_a_consumer_accepts() {
    let server = Server::start().await;
    let before = scrape(&server).await;
    assert_eq!(get(&before, "iotpipe_ingress_connects_total", &[]), 0.0);
    assert_eq!(get(&before, "iotpipe_ingress_messages_total", &[]), 0.0);
    assert_eq!(get(&before, "iotpipe_group_appended_total", GROUP), 0.0);
    assert_eq!(get(&before, "iotpipe_groups", &[]), 1.0);
    assert_eq!(get(&before, "iotpipe_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert!(before.docs.contains_key("iotpipe_store_append_duration_seconds"));

    // A refused login, by reason.
    let wrong = sign("dev1", "not-the-secret", SignMethod::HmacSha256, None);
    let (_stream, code) = raw_connect(server.addr(), &wrong, 60).await;
    assert_eq!(code, 4, "bad user name or password");

    // A device publishes 3 messages; a consumer accepts everything of DEFAULT_GROUP (online
    // status, 3 messages, offline status).
    publish_n(server.addr(), "dev1", 3).await;
    let mut c = consumer(server.app.amqp_addr(), "metrics-consumer", "DEFAULT_GROUP").await;
    for _ in 0..5 {
        let d = c.next().await;
        c.accept(&d).await;
    }

    // Settlements are applied as the outcomes arrive: poll until all five are counted.
    let deadline = tokio::time::Instant::now() + WAIT;
    let after = loop {
        let s = scrape(&server).await;
        if value(&s, "iotpipe_group_acked_total", GROUP) == Some(5.0) {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "acks not counted in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Ingress.
    assert_eq!(get(&after, "iotpipe_ingress_connects_total", &[]), 1.0);
    assert_eq!(get(&after, "iotpipe_ingress_refusals_total", &[("reason", "bad_signature")]), 1.0);
    assert_eq!(get(&after, "iotpipe_ingress_refusals_total", &[("reason", "unknown_device")]), 0.0);
    assert_eq!(get(&after, "iotpipe_ingress_messages_total", &[]), 3.0);
    assert_eq!(get(&after, "iotpipe_ingress_bytes_total", &[]), 21.0, "three {{\"n\":i}} payloads");
    assert_eq!(get(&after, "iotpipe_ingress_connections", &[]), 0.0);

    // Pipeline.
    assert_eq!(get(&after, "iotpipe_pipeline_messages_total", &[("kind", "upstream")]), 3.0);
    assert_eq!(get(&after, "iotpipe_pipeline_messages_total", &[("kind", "status")]), 2.0);
    assert_eq!(get(&after, "iotpipe_pipeline_group_copies_total", &[]), 5.0);

    // Consumer group.
    assert_eq!(get(&after, "iotpipe_group_appended_total", GROUP), 5.0);
    assert!(get(&after, "iotpipe_group_delivered_total", GROUP) >= 5.0);
    assert_eq!(get(&after, "iotpipe_group_accumulated", GROUP), 0.0);
    assert_eq!(get(&after, "iotpipe_group_in_flight", GROUP), 0.0);
    assert_eq!(get(&after, "iotpipe_group_consumption_rate", GROUP), 5.0);
    assert_eq!(get(&after, "iotpipe_group_online_clients", GROUP), 1.0);
    assert!(get(&after, "iotpipe_group_last_consumption_timestamp_seconds", GROUP) > 1.6e9);

    // AMQP.
    assert_eq!(get(&after, "iotpipe_amqp_links", &[]), 1.0);
    assert_eq!(get(&after, "iotpipe_amqp_connections", &[]), 1.0);
    assert_eq!(get(&after, "iotpipe_amqp_connections_accepted_total", &[]), 1.0);

    // Store: every append waited for an fsynced commit.
    assert!(get(&after, "iotpipe_store_append_duration_seconds_count", &[]) >= 1.0);
    assert!(get(&after, "iotpipe_store_commit_duration_seconds_count", &[("durability", "fsync")]) >= 1.0);
    assert!(
        get(&after, "iotpipe_store_append_duration_seconds", &[]) >= 1.0,
        "+Inf bucket holds every append"
    );
    assert!(get(&after, "iotpipe_store_size_bytes", &[]) > 0.0);

    // Alerts (none configured) and rules (none loaded) are there, empty.
    assert_eq!(get(&after, "iotpipe_alert_rules", &[]), 0.0);
    assert_eq!(get(&after, "iotpipe_rules", &[]), 0.0);

    c.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while value(&scrape(&server).await, "iotpipe_amqp_links", &[]) != Some(0.0) {
        assert!(tokio::time::Instant::now() < deadline, "link gauge did not drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rule_counters_carry_the_rule_label() {
    let server = Server::start().await;
    std::fs::write(
        server.dir.path().join("rules").join("hot.sql"),
        "SELECT temperature FROM \"/a1test/+/user/update\" WHERE temperature > 30",
    )
    .unwrap();
    // The watcher reloads the directory; wait until the rule is in force.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.app.rules().get("hot").is_none() {
        assert!(tokio::time::Instant::now() < deadline, "rule not loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_n(server.addr(), "dev1", 2).await;
    let s = scrape(&server).await;
    assert_eq!(get(&s, "iotpipe_rules", &[]), 1.0);
    assert_eq!(get(&s, "iotpipe_rule_matched_total", &[("rule", "hot")]), 2.0);
    // `{"n":i}` has no temperature: WHERE is null.
    assert_eq!(get(&s, "iotpipe_rule_failed_no_result_total", &[("rule", "hot")]), 2.0);
}
