//! Devices on any node (cluster mode): two `iotpipe serve` nodes on one real `nats-server -js`,
//! real MQTT devices and a real AMQP consumer of the status subscription. A device connecting
//! on the second node ends its session on the first within 2 s, and the consumer sees the
//! statuses in order: online (old), offline `taken_over` (old), online (new), also when it
//! connects to both at once. A node killed
//! with a device online does not announce that device offline at its restart once the device
//! has connected to another node (that offline would follow the new online). The API of one
//! node reaches a device on the other: publish (and the message's state), RRPC, broadcast, and
//! a rule's republish; disabling the device through one node disconnects it on the other.

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

/// A rumqttc device on `addr` subscribed to its `/user/get`, its RRPC requests (answered with
/// `pong:<request>`) and its product's broadcasts; the messages it receives (topic, payload)
/// come out of the channel.
async fn device(
    addr: std::net::SocketAddr,
    dn: &str,
) -> (rumqttc::AsyncClient, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    use rumqttc::{Event, Packet, QoS};
    let (client, mut eventloop) = connect_v4(v4_options(addr, &creds(dn))).await.expect("CONNACK");
    for filter in [
        format!("/{PK}/{dn}/user/get"),
        format!("/sys/{PK}/{dn}/rrpc/request/+"),
        format!("/broadcast/{PK}/+"),
    ] {
        client.subscribe(filter, QoS::AtLeastOnce).await.expect("SUBSCRIBE queued");
        common::until_v4(&mut eventloop, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let answers = client.clone();
    tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = event {
                if p.topic.contains("/rrpc/request/") {
                    let topic = p.topic.replace("/rrpc/request/", "/rrpc/response/");
                    let body = [b"pong:".as_slice(), &p.payload].concat();
                    let _ = answers.try_publish(topic, QoS::AtMostOnce, false, body);
                }
                let _ = tx.send((p.topic.clone(), p.payload.to_vec()));
            }
        }
    });
    (client, rx)
}

async fn post(server: &Server, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = common::api::post(server, path, &body).await;
    assert_eq!(status, 200, "POST {path} {body}: {v}");
    v
}

async fn received(rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) -> (String, String) {
    let (topic, payload) =
        tokio::time::timeout(WAIT, rx.recv()).await.expect("a message in time").expect("device");
    (topic, String::from_utf8(payload).expect("UTF-8"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_one_node_reach_a_device_on_another() {
    let nats = nats::NatsServer::start();
    let n2 = node(&nats.url, "n2", 0).await;
    let n3 = node(&nats.url, "n3", 1).await;
    let (_dev2, mut rx) = device(n3.addr(), "dev2").await;
    let path = |rest: &str| format!("/products/{PK}/devices/dev2{rest}");

    // Publish through n2's API, QoS 1: dev2 on n3 gets it and acknowledges it, and n2's API
    // shows the state the holding node knows.
    let v = post(
        &n2,
        &path("/messages"),
        serde_json::json!({"topic": "/a1test/dev2/user/get", "payload": "hello", "qos": 1}),
    )
    .await;
    assert_eq!(received(&mut rx).await, ("/a1test/dev2/user/get".to_string(), "hello".to_string()));
    let id = v["messageId"].as_str().expect("messageId").to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, m) = common::api::get(&n2, &path(&format!("/messages/{id}"))).await;
        assert_eq!(status, 200, "{m}");
        if m["state"] == "acknowledged" {
            break;
        }
        assert!(Instant::now() < deadline, "state stayed {m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // RRPC through n2: dev2's answer comes back through n3.
    let v = post(&n2, &path("/rrpc"), serde_json::json!({"payload": "ping", "timeoutMs": 5000})).await;
    assert_eq!(v["rrpcCode"], "SUCCESS", "{v}");
    assert_eq!(v["payloadBase64"], "cG9uZzpwaW5n", "pong:ping, {v}");
    let (topic, _) = received(&mut rx).await;
    assert!(topic.starts_with("/sys/a1test/dev2/rrpc/request/"), "{topic}");

    // A broadcast through n2 reaches the product's devices on every node.
    post(
        &n2,
        &format!("/products/{PK}/broadcast"),
        serde_json::json!({"topic": "/broadcast/a1test/all", "payload": "to all"}),
    )
    .await;
    assert_eq!(received(&mut rx).await, ("/broadcast/a1test/all".to_string(), "to all".to_string()));

    // A rule's republish on n2 reaches dev2 on n3, once (no loop between the nodes).
    let rule = "-- name: relay\n-- action: republish /a1test/dev2/user/get\nSELECT n FROM \"/a1test/dev1/user/update\"\n";
    std::fs::write(n2.dir.path().join("rules/relay.sql"), rule).expect("rule file");
    let deadline = Instant::now() + WAIT;
    while n2.app.rules().is_empty() {
        assert!(Instant::now() < deadline, "the rule was not loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    common::publish_one(n2.addr(), "dev1", r#"{"n":7}"#).await;
    assert_eq!(received(&mut rx).await, ("/a1test/dev2/user/get".to_string(), r#"{"n":7}"#.to_string()));
    let again = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(again.is_err(), "a second copy: {again:?}");

    // Disabling the device through n2 disconnects it on n3 (the answer comes once it is off).
    let (status, v) = common::api::patch(&n2, &path(""), &serde_json::json!({"enabled": false})).await;
    assert_eq!(status, 200, "{v}");
    assert!(!n3.app.ingress().is_online(PK, "dev2"), "dev2 still online on n3 after the disable answered");
    let closed = tokio::time::timeout(WAIT, async { while rx.recv().await.is_some() {} }).await;
    assert!(closed.is_ok(), "dev2's connection stayed open");

    // A device online nowhere is offline from any node.
    let v = post(
        &n2,
        "/products/a1test/devices/dev3/rrpc",
        serde_json::json!({"payload": "ping", "timeoutMs": 1000}),
    )
    .await;
    assert_eq!(v["rrpcCode"], "OFFLINE", "{v}");
    let (status, e) = common::api::post(
        &n2,
        "/products/a1test/devices/dev3/messages",
        &serde_json::json!({"topic": "/a1test/dev3/user/get", "payload": "x"}),
    )
    .await;
    assert_ne!(status, 200, "{e}");
    n3.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_connecting_to_two_nodes_at_once_ends_up_on_one_with_statuses_in_order() {
    let nats = nats::NatsServer::start();
    let n2 = node(&nats.url, "n2", 0).await;
    let n3 = node(&nats.url, "n3", 1).await;
    let kv = async_nats::jetstream::new(async_nats::connect(&nats.url).await.expect("NATS"))
        .get_key_value("itest_sessions")
        .await
        .expect("the sessions bucket exists");
    let mut consumer = amqp::consumer(n2.app.amqp_addr(), "c1", DEFAULT_GROUP).await;

    // Both CONNECTs race; the claims are ordered by the bucket's compare-and-swap.
    let (on2, on3) = tokio::join!(
        connect_v4(v4_options(n2.addr(), &creds("dev1"))),
        connect_v4(v4_options(n3.addr(), &creds("dev1")))
    );
    let (_c2, el2) = on2.expect("CONNACK from n2");
    let (_c3, el3) = on3.expect("CONNACK from n3");
    let (closed2, closed3) = (closed_at(el2), closed_at(el3));

    // online(first), offline(first, taken over), online(second): never two onlines in a row.
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    assert_status(&next_status(&mut consumer, "dev1").await, "offline", Some(4));
    assert_status(&next_status(&mut consumer, "dev1").await, "online", None);
    let holder = owner(&kv, "dev1").await.expect("claimed")["node"].as_str().expect("node").to_string();
    let (winner, loser, closed) = match holder.as_str() {
        "n2" => (&n2, &n3, closed3),
        _ => (&n3, &n2, closed2),
    };
    tokio::time::timeout(WAIT, closed).await.expect("the first session closed").expect("task");
    assert!(winner.app.ingress().is_online(PK, "dev1"), "the bucket names {holder}");
    assert!(!loser.app.ingress().is_online(PK, "dev1"));
    while let Some(d) = consumer.try_next(Duration::from_millis(500)).await {
        let received = amqp::read(&d);
        consumer.accept(&d).await;
        assert_ne!(received.topic, format!("/as/mqtt/status/{PK}/dev1"), "an extra status: {received:?}");
    }
    consumer.close().await;
    n3.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}

/// dev1 as `server`'s API shows it.
async fn view(server: &Server) -> serde_json::Value {
    let (code, v) = common::api::get(server, &format!("/products/{PK}/devices/dev1")).await;
    assert_eq!(code, 200, "{v}");
    v
}

/// `GET /products/{pk}/devices/{dn}` (and the list) on any node: a device connected to another
/// node is online there, as the sessions bucket says; offline everywhere once it leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_view_on_any_node_shows_where_the_device_is_online() {
    let nats = nats::NatsServer::start();
    let n2 = node(&nats.url, "n2", 0).await;
    let n3 = node(&nats.url, "n3", 1).await;
    // Offline on both before it connects (no `node`).
    for server in [&n2, &n3] {
        let v = view(server).await;
        assert_eq!(v["online"], false, "{v}");
        assert!(v.get("node").is_none(), "{v}");
    }

    let (client, mut el) = connect_v4(v4_options(n3.addr(), &creds("dev1"))).await.expect("CONNACK from n3");
    let pump = tokio::spawn(async move { while el.poll().await.is_ok() {} });
    // On n3 (its node): online, its client id and address.
    let deadline = Instant::now() + WAIT;
    let here = loop {
        let v = view(&n3).await;
        if v["online"] == true {
            break v;
        }
        assert!(Instant::now() < deadline, "n3 never shows dev1 online: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(here["node"], "n3", "{here}");
    assert!(here["clientId"].is_string() && here["ipAddress"].is_string(), "{here}");
    // On n2: online on n3 (the bucket's claim is written before the CONNACK), no client id or
    // address of n3's session, its connection time.
    let there = view(&n2).await;
    assert_eq!(there["online"], true, "{there}");
    assert_eq!(there["node"], "n3", "{there}");
    assert!(there["clientId"].is_null() && there["ipAddress"].is_null(), "{there}");
    assert!(there["lastOnlineTime"].as_u64().is_some_and(|t| t > 0), "{there}");
    let (code, list) = common::api::get(&n2, &format!("/products/{PK}/devices")).await;
    assert_eq!(code, 200, "{list}");
    let listed = list.as_array().expect("a list").iter().find(|d| d["deviceName"] == "dev1").cloned();
    let listed = listed.expect("dev1 listed");
    assert_eq!((&listed["online"], &listed["node"]), (&serde_json::json!(true), &serde_json::json!("n3")));
    // Other devices stay offline.
    assert!(list
        .as_array()
        .expect("a list")
        .iter()
        .filter(|d| d["deviceName"] != "dev1")
        .all(|d| d["online"] == false));

    // It leaves: offline on both once n3 deleted its key.
    client.disconnect().await.expect("DISCONNECT");
    let _ = pump.await;
    for server in [&n3, &n2] {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = view(server).await;
            if v["online"] == false {
                assert!(v.get("node").is_none(), "{v}");
                break;
            }
            assert!(Instant::now() < deadline, "dev1 stays online: {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    n3.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}
