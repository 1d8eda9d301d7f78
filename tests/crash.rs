//! Nothing acknowledged is lost: `kill -9` the server while a device publishes, start it again
//! on the same data directory, and consume every message whose PUBACK the device received.
//! `.ci/run` also runs this against the release binary (`cargo test --release --test crash`).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::amqp::{consumer, read};
use rumqttc::{Event, Outgoing, Packet, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_iotpipe");

/// The server process; killed when dropped, so a failing test leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path) -> (Running, SocketAddr, SocketAddr) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut mqtt, mut amqp) = (None, None);
    while mqtt.is_none() || amqp.is_none() {
        let line = lines.next().expect("serve exited before listening").unwrap();
        if let Some(a) = line.trim().strip_prefix("MQTT ") {
            mqtt = Some(a.trim().parse().unwrap());
        }
        if let Some(a) = line.trim().strip_prefix("AMQP ") {
            amqp = Some(a.trim().parse().unwrap());
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    (Running(child), mqtt.unwrap(), amqp.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_acknowledged() {
    const KILL_AFTER: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("iotpipe.toml");
    std::fs::write(&config, common::config_text(&dir.path().join("data"), "", "")).unwrap();

    let (mut server, mqtt, _) = start(&config);
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
                    server.0.kill().unwrap(); // SIGKILL, with publishes still in flight
                    killed = true;
                }
            }
            Ok(_) => {}
            Err(_) if killed => break,
            Err(e) => panic!("device failed before the kill: {e}"),
        }
    }
    server.0.wait().unwrap();
    publisher.abort();
    assert!(sent > acked.len(), "the kill must hit publishes in flight ({sent} sent, {} acked)", acked.len());

    let (_server, _, amqp) = start(&config);
    let mut c = consumer(amqp, "recovery", "DEFAULT_GROUP").await;
    let mut seen: HashSet<usize> = HashSet::new();
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

    let (mut server, mqtt, amqp) = start(&config);
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
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(c);

    let (_server, _, amqp) = start(&config);
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

    let (mut server, mqtt, amqp) = start(&config);
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
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    drop(c);
    device.abort();

    let (_server, mqtt, amqp) = start(&config);
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
