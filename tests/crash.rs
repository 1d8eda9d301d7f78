//! Nothing acknowledged is lost: `kill -9` the server while a device publishes, start it again
//! on the same data directory, and consume every message whose PUBACK the device received.
//! `.ci/run` also runs this against the release binary (`cargo test --release --test crash`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use common::amqp::{consumer, read};
use common::process::start;
use rumqttc::{Event, Outgoing, Packet, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    kill_9_run(false).await;
}

/// The same with `[storage] early_delivery`: a consumer takes (and accepts) messages before
/// their commit while the device publishes; what it accepted before the kill counts as
/// received, and every PUBACKed message is received before or after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_early_delivery_loses_nothing_acknowledged() {
    kill_9_run(true).await;
}

async fn kill_9_run(early_delivery: bool) {
    const KILL_AFTER: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iotpipe.toml");
    let mut text = common::config_text(&dir.path().join("data"), "", "");
    if early_delivery {
        text = text.replace("[storage]\n", "[storage]\nearly_delivery = true\n");
        assert!(text.contains("early_delivery = true"));
    }
    std::fs::write(&config, text).unwrap();

    let mut server = start(&config, None);
    let mqtt = server.mqtt;
    // With early delivery, a consumer during the run: what it accepted is gone from the queue.
    let before_kill = Arc::new(Mutex::new(HashSet::<usize>::new()));
    let early_consumer = if early_delivery {
        let mut c = consumer(server.amqp, "early", "DEFAULT_GROUP").await;
        let seen = before_kill.clone();
        Some(tokio::spawn(async move {
            while let Some(d) = c.try_next(std::time::Duration::from_secs(5)).await {
                if c.receiver.accept(&d).await.is_err() {
                    break;
                }
                let r = read(&d);
                if r.topic.ends_with("/user/update") {
                    seen.lock().unwrap().insert(String::from_utf8(r.body).unwrap().parse().unwrap());
                }
            }
        }))
    } else {
        None
    };
    let (client, mut ev) =
        common::connect_v4(common::v4_options(mqtt, &common::creds("dev1"))).await.unwrap();
    let publisher = tokio::spawn(async move {
        for i in 0.. {
            if client
                .publish("/a1test/dev1/user/update", QoS::AtLeastOnce, false, format!("{i}"))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    // rumqttc sends publishes in call order: the n-th outgoing PUBLISH carries body n.
    let mut body_of_pkid: HashMap<u16, usize> = HashMap::new();
    let mut sent = 0usize;
    let mut acked: HashSet<usize> = HashSet::new();
    let mut killed = false;
    loop {
        match ev.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                body_of_pkid.insert(pkid, sent);
                sent += 1;
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                acked.insert(body_of_pkid[&ack.pkid]);
                if acked.len() >= KILL_AFTER && !killed {
                    server.child.kill().unwrap(); // SIGKILL, with publishes still in flight
                    killed = true;
                }
            }
            Ok(_) => {}
            Err(_) if killed => break,
            Err(e) => panic!("device failed before the kill: {e}"),
        }
    }
    server.child.wait().unwrap();
    publisher.abort();
    assert!(sent > acked.len(), "the kill must hit publishes in flight ({sent} sent, {} acked)", acked.len());
    if let Some(task) = early_consumer {
        task.await.unwrap();
        assert!(!before_kill.lock().unwrap().is_empty(), "the consumer took nothing before the kill");
    }

    let server = start(&config, None);
    let amqp = server.amqp;
    let mut c = consumer(amqp, "recovery", "DEFAULT_GROUP").await;
    let mut seen: HashSet<usize> = before_kill.lock().unwrap().clone();
    while !acked.is_subset(&seen) {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            seen.insert(String::from_utf8(r.body).unwrap().parse().unwrap());
        }
    }
    let missing: Vec<_> = acked.difference(&seen).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
}

/// An accept is durable within a bounded time (the store's idle fsync, 100 ms) even when
/// nothing else is written: drain the group, wait 1 s, `kill -9`, and nothing accepted comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepts_survive_a_kill_9_one_second_after_the_drain() {
    const N: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iotpipe.toml");
    std::fs::write(&config, common::config_text(&dir.path().join("data"), "", "")).unwrap();

    let mut server = start(&config, None);
    let (mqtt, amqp) = (server.mqtt, server.amqp);
    common::publish_n(mqtt, "dev1", N).await;
    let mut c = consumer(amqp, "drain", "DEFAULT_GROUP").await;
    let mut data = 0;
    // dev1's online and offline status messages come too.
    let mut offline = false;
    while data < N || !offline {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            data += 1;
        }
        offline |=
            r.topic.starts_with("/as/mqtt/status/") && String::from_utf8_lossy(&r.body).contains("offline");
    }
    // The dispositions are on their way; the last removal's commit happens at once, and its
    // fsync within 100 ms of the writer going idle. 1 s is the scenario the issue names.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(c);

    let server = start(&config, None);
    let amqp = server.amqp;
    let mut c = consumer(amqp, "after", "DEFAULT_GROUP").await;
    let back = c.try_next(std::time::Duration::from_secs(1)).await;
    assert!(back.is_none(), "an accepted message came back: {:?}", back.map(|d| read(&d)));
}

/// A device online when the server is killed gets its offline status (`server_restart`) at the
/// next start, before its new online status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_online_at_a_crash_get_their_offline_status_first() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iotpipe.toml");
    std::fs::write(&config, common::config_text(&dir.path().join("data"), "", "")).unwrap();

    let mut server = start(&config, None);
    let (mqtt, amqp) = (server.mqtt, server.amqp);
    let (_client, mut ev) =
        common::connect_v4(common::v4_options(mqtt, &common::creds("dev1"))).await.unwrap();
    let device = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let mut c = consumer(amqp, "before", "DEFAULT_GROUP").await;
    let online = c.next().await;
    c.accept(&online).await;
    let body: serde_json::Value = serde_json::from_slice(&read(&online).body).unwrap();
    assert_eq!(body["status"], "online");
    // The crash comes after the accept is durable (within 100 ms of the writer going idle), so
    // the old online status does not come back.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    drop(c);
    device.abort();

    let server = start(&config, None);
    let (mqtt, amqp) = (server.mqtt, server.amqp);
    let (_client, mut ev) =
        common::connect_v4(common::v4_options(mqtt, &common::creds("dev1"))).await.unwrap();
    let device = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
    let mut c = consumer(amqp, "after", "DEFAULT_GROUP").await;
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let d = c.next().await;
        c.accept(&d).await;
        let v: serde_json::Value = serde_json::from_slice(&read(&d).body).unwrap();
        statuses.push(v);
    }
    assert_eq!(statuses[0]["status"], "offline", "{statuses:?}");
    assert_eq!(statuses[0]["offlineReason"], "server_restart");
    assert_eq!(statuses[0]["deviceName"], "dev1");
    assert_eq!(statuses[1]["status"], "online", "{statuses:?}");
    // The device keeps its iotId across the crash, in the announced offline status too.
    let iot_id = body["iotId"].as_str().expect("iotId");
    assert!(!iot_id.is_empty());
    assert_eq!((&statuses[0]["iotId"], &statuses[1]["iotId"]), (&body["iotId"], &body["iotId"]));
    device.abort();
}
