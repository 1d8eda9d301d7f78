//! Devices on any node (cluster mode): two `iotpipe serve` nodes on one real `nats-server -js`,
//! real MQTT devices and a real AMQP consumer of the status subscription. A device connecting
//! on the second node ends its session on the first within 2 s, and the consumer sees the
//! statuses in order: online (old), offline `taken_over` (old), online (new). A node killed
//! with a device online does not announce that device offline at its restart once the device
//! has connected to another node (that offline would follow the new online).

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::Operation;
use common::{amqp, config_text, connect_v4, creds, v4_options, Server, PK, WAIT};
use iotpipe::groups::DEFAULT_GROUP;

fn cluster_section(url: &str, node: &str) -> String {
    format!("\n[cluster]\nnats = [\"{url}\"]\nname = \"itest\"\nreplicas = 1\nnode = \"{node}\"\n")
}

/// A node of deployment `itest` named `node`. `skip_blocks`: starts that many times before, so
/// that its message ids come from another block than the other node's (sharing id blocks
/// through the cluster is not this test's subject; two nodes handing out the same id would
/// have JetStream drop one copy as a duplicate).
async fn node(url: &str, node: &str, skip_blocks: usize) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let extra =
        format!("\n[cluster]\nnats = [\"{url}\"]\nname = \"itest\"\nreplicas = 1\nnode = \"{node}\"\n");
    let text = config_text(dir.path(), "", &extra);
    let mut server = Server::start_text(dir, text).await;
    for _ in 0..skip_blocks {
        server = server.restart().await;
    }
    server
}

/// The next status message of `device` the consumer receives (every delivery accepted).
async fn next_status(consumer: &mut amqp::Consumer, device: &str) -> serde_json::Value {
    let topic = format!("/as/mqtt/status/{PK}/{device}");
    loop {
        let d = consumer.next().await;
        let received = amqp::read(&d);
        consumer.accept(&d).await;
        if received.topic == topic {
            return serde_json::from_slice(&received.body).expect("status JSON");
        }
    }
}

/// Polls a device's event loop on a task until the server closes the connection; the instant
/// it did.
fn closed_at(mut eventloop: rumqttc::EventLoop) -> tokio::task::JoinHandle<Instant> {
    tokio::spawn(async move {
        common::until_v4_closed(&mut eventloop).await;
        Instant::now()
    })
}

/// The sessions bucket's entry of the device, as any node reads it.
async fn owner(kv: &async_nats::jetstream::kv::Store, device: &str) -> Option<serde_json::Value> {
    let entry = kv.entry(format!("{PK}.{device}")).await.expect("bucket readable")?;
    (entry.operation == Operation::Put).then(|| serde_json::from_slice(&entry.value).expect("owner JSON"))
}

fn assert_status(status: &serde_json::Value, expected: &str, code: Option<u64>) {
    assert_eq!(status["status"], expected, "{status}");
    assert_eq!(status["deviceName"], "dev1", "{status}");
    assert_eq!(status["offlineReasonCode"].as_u64(), code, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_moving_between_nodes_takes_its_session_along_with_statuses_in_order() {
    let nats = nats::NatsServer::start();
    let n2 = node(&nats.url, "n2", 0).await;
    let n3 = node(&nats.url, "n3", 1).await;
    let kv = async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("NATS"))
        .get_key_value("itest_sessions")
        .await
        .expect("the sessions bucket exists");
    let mut consumer = amqp::consumer(n2.app.amqp_addr(), "c1", DEFAULT_GROUP).await;

    // dev1 on n2.
    let (_c2, el2) = connect_v4(v4_options(n2.addr(), &creds("dev1"))).await.expect("CONNACK from n2");
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    assert_eq!(owner(&kv, "dev1").await.expect("claimed")["node"], "n2");
    let n2_closed = closed_at(el2);

    // The same device (same client id) on n3: n2's session ends within 2 s.
    let started = Instant::now();
    let (_c3, el3) = connect_v4(v4_options(n3.addr(), &creds("dev1"))).await.expect("CONNACK from n3");
    let closed =
        tokio::time::timeout(WAIT, n2_closed).await.expect("n2 closed the old session").expect("task");
    let took = closed.duration_since(started);
    assert!(took < Duration::from_secs(2), "n2's session ended {took:?} after the device connected to n3");
    // Offline from n2 strictly before online from n3.
    assert_status(&next_status(&mut consumer, "dev1").await, "offline", Some(4));
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    assert!(n3.app.ingress().is_online(PK, "dev1"));
    assert!(!n2.app.ingress().is_online(PK, "dev1"));
    assert_eq!(owner(&kv, "dev1").await.expect("claimed")["node"], "n3");

    // And back to n2: n3's session ends, in the same order.
    let n3_closed = closed_at(el3);
    let started = Instant::now();
    let (c2, mut el2) = connect_v4(v4_options(n2.addr(), &creds("dev1"))).await.expect("CONNACK from n2");
    let closed =
        tokio::time::timeout(WAIT, n3_closed).await.expect("n3 closed the old session").expect("task");
    let took = closed.duration_since(started);
    assert!(took < Duration::from_secs(2), "n3's session ended {took:?} after the device connected to n2");
    assert_status(&next_status(&mut consumer, "dev1").await, "offline", Some(4));
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    assert_eq!(owner(&kv, "dev1").await.expect("claimed")["node"], "n2");

    // A device leaving for good: its offline status, and its key is gone from the bucket.
    c2.disconnect().await.expect("DISCONNECT queued");
    let _ = tokio::time::timeout(Duration::from_secs(2), async { while el2.poll().await.is_ok() {} }).await;
    assert_status(&next_status(&mut consumer, "dev1").await, "offline", Some(1));
    let deadline = Instant::now() + WAIT;
    while owner(&kv, "dev1").await.is_some() {
        assert!(Instant::now() < deadline, "dev1's key stayed after it left");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Nothing else about dev1 comes (no late or duplicated status).
    while let Some(d) = consumer.try_next(Duration::from_millis(500)).await {
        let received = amqp::read(&d);
        consumer.accept(&d).await;
        assert_ne!(received.topic, format!("/as/mqtt/status/{PK}/dev1"), "an extra status: {received:?}");
    }
    consumer.close().await;
    n3.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_does_not_announce_offline_a_device_that_moved_on() {
    let nats = nats::NatsServer::start();
    // n2 is a process (killed with SIGKILL below); its two starts use id blocks 1 and 2, so n3
    // starts three times before.
    let n2_dir = tempfile::tempdir().expect("temporary directory");
    let n2_config = n2_dir.path().join("iotpipe.toml");
    std::fs::write(&n2_config, config_text(n2_dir.path(), "", &cluster_section(&nats.url, "n2")))
        .expect("config");
    let mut n2 = common::process::start(&n2_config, None);
    let n3 = node(&nats.url, "n3", 3).await;
    let kv = async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("NATS"))
        .get_key_value("itest_sessions")
        .await
        .expect("the sessions bucket exists");
    let mut consumer = amqp::consumer(n3.app.amqp_addr(), "c1", DEFAULT_GROUP).await;

    let (_c2, el2) = connect_v4(v4_options(n2.mqtt, &creds("dev1"))).await.expect("CONNACK from n2");
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    assert_eq!(owner(&kv, "dev1").await.expect("claimed")["node"], "n2");
    n2.kill_9();
    drop(el2);

    // The device comes back on n3 at once: n2 is gone, nobody to wait for.
    let started = Instant::now();
    let (_c3, _el3) = connect_v4(v4_options(n3.addr(), &creds("dev1"))).await.expect("CONNACK from n3");
    assert!(started.elapsed() < Duration::from_secs(2), "n3 took {:?} to accept dev1", started.elapsed());
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    assert_eq!(owner(&kv, "dev1").await.expect("claimed")["node"], "n3");

    // n2 restarts with dev1 still recorded online: no offline status follows n3's online.
    let _n2 = common::process::start(&n2_config, None);
    while let Some(d) = consumer.try_next(Duration::from_secs(1)).await {
        let received = amqp::read(&d);
        consumer.accept(&d).await;
        assert_ne!(
            received.topic,
            format!("/as/mqtt/status/{PK}/dev1"),
            "a late status after the device moved on: {}",
            String::from_utf8_lossy(&received.body)
        );
    }
    assert!(n3.app.ingress().is_online(PK, "dev1"));
    assert_eq!(owner(&kv, "dev1").await.expect("still claimed")["node"], "n3");
    consumer.close().await;
    n3.app.shutdown(Duration::from_secs(5)).await;
}
