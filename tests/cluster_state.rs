//! Cluster state in KV buckets, with several real `iotpipe serve` nodes (in this process) on
//! one real `nats-server -js`: message ids never collide across nodes (so JetStream's
//! deduplication by `<messageId>-<groupId>` never drops a node's message), and consumer groups
//! created or deleted through one node's API apply on every node.

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use common::{amqp, config_text, publish_n, Server, PK, WAIT};
use iotpipe::cluster::config::ClusterConfig;
use iotpipe::cluster::connect;
use iotpipe::cluster::state::ids::BLOCK as ID_BLOCK;
use iotpipe::cluster::state::{ClusterState, IdBlocks};
use serde_json::json;

/// How soon a change made on one node must show on another (issue 14's acceptance).
const PROPAGATION: Duration = Duration::from_secs(1);

fn cluster_config(url: &str) -> ClusterConfig {
    let mut config = ClusterConfig::new(vec![url.to_string()]);
    config.name = "itest".into();
    config.replicas = 1;
    config
}

/// A node: the harness configuration plus `[cluster]` on `url`, named `node`.
async fn node(url: &str, node: &str, extra: &str) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let cluster = format!(
        "{extra}\n[cluster]\nnats = [\"{url}\"]\nname = \"itest\"\nreplicas = 1\nnode = \"{node}\"\n"
    );
    let text = config_text(dir.path(), "", &cluster);
    Server::start_text(dir, text).await
}

async fn delete(server: &Server, path: &str) -> (u16, serde_json::Value) {
    common::api::send(reqwest::Client::new().delete(common::api::url(server, path))).await
}

/// The group ids a node's API lists.
async fn group_ids(server: &Server) -> BTreeSet<String> {
    let (code, list) = common::api::get(server, "/consumer-groups").await;
    assert_eq!(code, 200, "{list}");
    list.as_array().expect("a list").iter().map(|g| g["id"].as_str().expect("id").to_string()).collect()
}

/// Waits until `server`'s API answers `path` with `code`; returns how long that took.
async fn until_status(server: &Server, path: &str, code: u16) -> Duration {
    let started = Instant::now();
    loop {
        let (got, body) = common::api::get(server, path).await;
        if got == code {
            return started.elapsed();
        }
        assert!(started.elapsed() < WAIT, "{path} stayed {got} {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_blocks_reserved_by_two_nodes_at_once_are_disjoint() {
    let nats = nats::NatsServer::start();
    let config = cluster_config(&nats.url);
    let mut reservers = Vec::new();
    for name in ["a", "b", "c"] {
        let state = ClusterState::with_client(connect(&config, name).await.expect("connects"), &config);
        let kv = state.bucket("ids", 1).await.expect("bucket");
        reservers.push(IdBlocks::new(kv, 1));
    }
    // Every reserver takes 20 blocks, all at the same time: conflicts are certain.
    let runs = reservers.iter().map(|r| async move {
        let mut starts = Vec::new();
        for _ in 0..20 {
            starts.push(r.reserve().await.expect("a block"));
        }
        starts
    });
    let mut starts: Vec<u64> = futures::future::join_all(runs).await.into_iter().flatten().collect();
    starts.sort_unstable();
    assert_eq!(starts.len(), 60);
    for pair in starts.windows(2) {
        assert!(pair[1] >= pair[0] + ID_BLOCK, "blocks overlap: {} and {}", pair[0], pair[1]);
    }
    assert_eq!(starts[0], 1, "the first block starts at 1: {starts:?}");

    // A node whose own store already handed out ids up to a floor starts above it.
    let state = ClusterState::with_client(connect(&config, "d").await.expect("connects"), &config);
    let above = IdBlocks::new(state.bucket("ids", 1).await.expect("bucket"), 10_000_000);
    let start = above.reserve().await.expect("a block");
    assert!(start >= 10_000_000, "{start}");
    let next = reservers[0].reserve().await.expect("a block");
    assert!(next >= start + ID_BLOCK, "the floor moved every node on: {next} after {start}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_two_nodes_are_all_stored_and_delivered() {
    let nats = nats::NatsServer::start();
    let n1 = node(&nats.url, "n1", "").await;
    let n2 = node(&nats.url, "n2", "").await;
    // Two fresh nodes: each store alone would start its ids at 1, and JetStream would drop
    // n2's copies as duplicates of n1's (same `<messageId>-DEFAULT_GROUP`).
    let (a, b) = tokio::join!(publish_n(n1.addr(), "dev1", 20), publish_n(n2.addr(), "dev2", 20));
    let ((), ()) = (a, b);

    let mut consumer = amqp::consumer(n1.app.amqp_addr(), "c1", "DEFAULT_GROUP").await;
    let mut bodies = BTreeSet::new();
    let mut ids = HashSet::new();
    let wanted: BTreeSet<String> = ["dev1", "dev2"]
        .iter()
        .flat_map(|d| (0..20).map(move |i| format!("/{PK}/{d}/user/update {{\"n\":{i}}}")))
        .collect();
    let deadline = Instant::now() + WAIT;
    while bodies.len() < wanted.len() {
        assert!(Instant::now() < deadline, "only {} of {} came: {bodies:?}", bodies.len(), wanted.len());
        let Some(d) = consumer.try_next(Duration::from_secs(2)).await else { continue };
        let received = amqp::read(&d);
        assert!(ids.insert(received.message_id.clone()), "message id {} came twice", received.message_id);
        if received.topic.ends_with("/user/update") {
            let body = String::from_utf8(received.body).expect("UTF-8 body");
            bodies.insert(format!("{} {body}", received.topic));
        }
        consumer.accept(&d).await;
    }
    assert_eq!(bodies, wanted);
    consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_created_on_one_node_is_usable_on_another_at_once() {
    let nats = nats::NatsServer::start();
    let configured = "\n[[consumer_groups]]\nid = \"g_conf\"\nname = \"configured_group\"\n";
    let n1 = node(&nats.url, "n1", configured).await;
    let n2 = node(&nats.url, "n2", "").await;
    // n1's configured group reached n2 through the bucket.
    assert!(group_ids(&n2).await.contains("g_conf"), "{:?}", group_ids(&n2).await);

    let (code, created) = common::api::post(&n1, "/consumer-groups", &json!({"name": "shared_group"})).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let took = until_status(&n2, &format!("/consumer-groups/{id}"), 200).await;
    assert!(took < PROPAGATION, "the group reached n2 after {took:?}");
    assert_eq!(group_ids(&n1).await, group_ids(&n2).await);
    let (_, on_n2) = common::api::get(&n2, &format!("/consumer-groups/{id}")).await;
    assert_eq!(on_n2["name"], "shared_group", "{on_n2}");

    // Its options changed through n2: n1 has them at once.
    let (code, body) =
        common::api::patch(&n2, &format!("/consumer-groups/{id}"), &json!({"maxDeliveryAttempts": 5})).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["maxDeliveryAttempts"], 5, "{body}");
    let started = Instant::now();
    loop {
        let (_, on_n1) = common::api::get(&n1, &format!("/consumer-groups/{id}")).await;
        if on_n1["maxDeliveryAttempts"] == 5 {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "the options did not reach n1: {on_n1}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (code, body) =
        common::api::patch(&n1, "/consumer-groups/g_conf", &json!({"maxDeliveryAttempts": 5})).await;
    assert_eq!(code, 409, "a configured group keeps the file's options: {body}");

    // The same id or name again, on the other node: refused.
    let (code, body) =
        common::api::post(&n2, "/consumer-groups", &json!({"name": "other_group", "id": id})).await;
    assert_eq!(code, 409, "{body}");
    let (code, body) = common::api::post(&n2, "/consumer-groups", &json!({"name": "shared_group"})).await;
    assert_eq!(code, 409, "{body}");

    // A subscription changed through n1 routes on n2 at once: a consumer on n2 gets what
    // devices on both nodes send to the group.
    let (code, body) = common::api::put(
        &n1,
        &format!("/subscriptions/{PK}"),
        &json!({"messageTypes": ["upstream"], "consumerGroupIds": ["DEFAULT_GROUP", id]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let started = Instant::now();
    loop {
        let (_, sub) = common::api::get(&n2, &format!("/subscriptions/{PK}")).await;
        if sub["consumerGroupIds"] == json!(["DEFAULT_GROUP", id]) {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "the subscription did not reach n2: {sub}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut consumer = amqp::consumer(n2.app.amqp_addr(), "c2", &id).await;
    publish_n(n1.addr(), "dev1", 3).await;
    publish_n(n2.addr(), "dev2", 3).await;
    let mut got = BTreeSet::new();
    while got.len() < 6 {
        let d = consumer.next().await;
        let received = amqp::read(&d);
        let body = String::from_utf8(received.body).expect("UTF-8 body");
        got.insert(format!("{} {body}", received.topic));
        consumer.accept(&d).await;
    }
    let wanted: BTreeSet<String> = ["dev1", "dev2"]
        .iter()
        .flat_map(|d| (0..3).map(move |i| format!("/{PK}/{d}/user/update {{\"n\":{i}}}")))
        .collect();
    assert_eq!(got, wanted);
    consumer.close().await;
    // n2 knows the subscription names the group: it refuses the deletion.
    let (code, body) = delete(&n2, &format!("/consumer-groups/{id}")).await;
    assert_eq!(code, 409, "{body}");

    // A node started now loads the groups at start-up.
    let n3 = node(&nats.url, "n3", "").await;
    assert_eq!(group_ids(&n3).await, group_ids(&n1).await);

    // Deleted through n3 (after n1's subscription let go of it): gone on every node.
    let (code, body) = common::api::put(
        &n1,
        &format!("/subscriptions/{PK}"),
        &json!({"messageTypes": ["upstream"], "consumerGroupIds": ["DEFAULT_GROUP"]}),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = delete(&n3, &format!("/consumer-groups/{id}")).await;
    assert_eq!(code, 204, "{body}");
    for server in [&n1, &n2] {
        let took = until_status(server, &format!("/consumer-groups/{id}"), 404).await;
        assert!(took < PROPAGATION, "the deletion took {took:?}");
    }
    // A configured group stays: n2 does not declare it, but n1 does and keeps it.
    let (code, body) = delete(&n1, "/consumer-groups/g_conf").await;
    assert_eq!(code, 409, "{body}");

    // A node that was away while a group was deleted drops it when it comes back.
    let (code, created) = common::api::post(&n1, "/consumer-groups", &json!({"name": "short_lived"})).await;
    assert_eq!(code, 201, "{created}");
    let short = created["id"].as_str().expect("id").to_string();
    until_status(&n2, &format!("/consumer-groups/{short}"), 200).await;
    let n2_dir = n2.dir.path().to_path_buf();
    let n2_text = n2.text.clone();
    let Server { app, dir, .. } = n2;
    app.shutdown(Duration::from_secs(5)).await;
    let (code, body) = delete(&n1, &format!("/consumer-groups/{short}")).await;
    assert_eq!(code, 204, "{body}");
    let n2 = Server::start_text(dir, n2_text).await;
    assert!(n2_dir.exists());
    assert!(!group_ids(&n2).await.contains(&short), "{:?}", group_ids(&n2).await);
    assert_eq!(group_ids(&n2).await, group_ids(&n1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_added_on_one_node_connects_on_another_and_is_disabled_everywhere() {
    use iotpipe::sign::SignMethod;
    let nats = nats::NatsServer::start();
    let n1 = node(&nats.url, "n1", "").await;
    let n2 = node(&nats.url, "n2", "").await;
    // A configured device has one iotId on every node (the first node's).
    let (_, on_n1) = common::api::get(&n1, &format!("/products/{PK}/devices/dev1")).await;
    let (_, on_n2) = common::api::get(&n2, &format!("/products/{PK}/devices/dev1")).await;
    assert!(on_n1["iotId"].as_str().is_some_and(|s| !s.is_empty()), "{on_n1}");
    assert_eq!(on_n1["iotId"], on_n2["iotId"]);

    // A name with characters bucket keys do not allow.
    let name = "new.dev@1:x";
    let (code, created) = common::api::post(
        &n1,
        &format!("/products/{PK}/devices"),
        &json!({"deviceName": name, "deviceSecret": "shared-secret-1"}),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let path = format!("/products/{PK}/devices/{}", urlencoding(name));
    let took = until_status(&n2, &path, 200).await;
    assert!(took < PROPAGATION, "the device reached n2 after {took:?}");
    let (_, on_n2) = common::api::get(&n2, &path).await;
    assert_eq!(on_n2["iotId"], created["iotId"], "{on_n2}");
    // Created again through n2: refused, the cluster has it.
    let (code, body) = common::api::post(
        &n2,
        &format!("/products/{PK}/devices"),
        &json!({"deviceName": name, "deviceSecret": "other-secret-1"}),
    )
    .await;
    assert_eq!(code, 409, "{body}");

    // It signs in on n2 with the secret given on n1.
    let creds = common::sign(name, "shared-secret-1", SignMethod::HmacSha256, None);
    let (client, mut events) =
        common::connect_v4(common::v4_options(n2.addr(), &creds)).await.expect("connects on n2");
    // Tags it reports on n2 are the cluster's: n1 shows them.
    let report = json!({"id": "1", "version": "1.0", "method": "thing.deviceinfo.update",
                        "params": [{"attrKey": "room", "attrValue": "lab"}]});
    client
        .publish(
            format!("/sys/{PK}/{name}/thing/deviceinfo/update"),
            rumqttc::QoS::AtLeastOnce,
            false,
            report.to_string(),
        )
        .await
        .expect("publish");
    common::until_v4(&mut events, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    let started = Instant::now();
    loop {
        let (_, on_n1) = common::api::get(&n1, &path).await;
        if on_n1["tags"] == json!({"room": "lab"}) {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "the reported tags did not reach n1: {on_n1}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Disabled through n1: n2 drops its connection and refuses the next one.
    let (code, body) = common::api::patch(&n1, &path, &json!({"enabled": false})).await;
    assert_eq!(code, 200, "{body}");
    let _closed = common::until_v4_closed(&mut events).await;
    drop(client);
    assert!(
        common::connect_v4(common::v4_options(n2.addr(), &creds)).await.is_err(),
        "refused when disabled"
    );

    // Deleted through n2: gone on n1.
    let (code, body) = delete(&n2, &path).await;
    assert_eq!(code, 204, "{body}");
    let took = until_status(&n1, &path, 404).await;
    assert!(took < PROPAGATION, "the deletion reached n1 after {took:?}");
}

/// `s` with the characters a URL path segment may not hold escaped.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_rules_edited_on_any_node_apply_on_every_node() {
    let nats = nats::NatsServer::start();
    let n1 = node(&nats.url, "n1", "").await;
    let n2 = node(&nats.url, "n2", "").await;
    let body = |threshold: u64| {
        json!({"name": "backlog_high", "consumerGroupIds": ["DEFAULT_GROUP"], "metric": "accumulatedCount",
               "comparison": ">", "threshold": threshold, "periodSeconds": 60, "consecutivePeriods": 1,
               "callbackUrl": "http://127.0.0.1:9/alert"})
    };
    let (code, created) = common::api::post(&n1, "/alert-rules", &body(1000)).await;
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_str().expect("id").to_string();
    let path = format!("/alert-rules/{id}");
    let took = until_status(&n2, &path, 200).await;
    assert!(took < PROPAGATION, "the rule reached n2 after {took:?}");
    // The same name through n2: refused, n2 knows it.
    let (code, refused) = common::api::post(&n2, "/alert-rules", &body(5)).await;
    assert_eq!(code, 409, "{refused}");

    // Replaced through n2: n1 evaluates the new threshold.
    let (code, replaced) = common::api::put(&n2, &path, &body(2000)).await;
    assert_eq!(code, 200, "{replaced}");
    let started = Instant::now();
    loop {
        let (_, on_n1) = common::api::get(&n1, &path).await;
        if on_n1["threshold"] == 2000 {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "the change did not reach n1: {on_n1}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Deleted through n1: gone on n2.
    let (code, body) = delete(&n1, &path).await;
    assert_eq!(code, 204, "{body}");
    let took = until_status(&n2, &path, 404).await;
    assert!(took < PROPAGATION, "the deletion reached n2 after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_written_through_one_node_runs_on_every_node() {
    let nats = nats::NatsServer::start();
    let group = "\n[[consumer_groups]]\nid = \"g_rules\"\nname = \"rules_group\"\n";
    let n1 = node(&nats.url, "n1", group).await;
    let n2 = node(&nats.url, "n2", group).await;
    // A name with a letter bucket keys do not allow.
    let name = "hot_é";
    let path = format!("/rules/{}", urlencoding(name));
    let rule = json!({
        "name": name,
        "sql": "SELECT temperature FROM \"/a1test/+/user/update\" WHERE temperature > 38",
        "actions": ["amqp g_rules"],
    });
    let (code, created) = common::api::post(&n1, "/rules", &rule).await;
    assert_eq!(code, 201, "{created}");
    let took = until_status(&n2, &path, 200).await;
    assert!(took < PROPAGATION, "the rule reached n2 after {took:?}");
    let file = |server: &Server| server.dir.path().join(format!("rules/{name}.sql"));
    assert_eq!(
        std::fs::read_to_string(file(&n2)).expect("n2 has the file"),
        std::fs::read_to_string(file(&n1)).expect("n1 has the file")
    );
    // The same name again through n2: refused.
    let (code, body) = common::api::post(&n2, "/rules", &rule).await;
    assert_eq!(code, 409, "{body}");

    // n2 runs it: a device on n2, a consumer on n2.
    let mut consumer = amqp::consumer(n2.app.amqp_addr(), "c-rules", "g_rules").await;
    common::publish_one(n2.addr(), "dev2", r#"{"temperature": 40}"#).await;
    let d = consumer.next().await;
    let body: serde_json::Value = serde_json::from_slice(&amqp::read(&d).body).expect("JSON");
    assert_eq!(body, json!({"temperature": 40}));
    consumer.accept(&d).await;
    consumer.close().await;

    // Disabled through n2: disabled on n1.
    let (code, body) = common::api::patch(&n2, &path, &json!({"enabled": false})).await;
    assert_eq!(code, 200, "{body}");
    let started = Instant::now();
    loop {
        let (_, on_n1) = common::api::get(&n1, &path).await;
        if on_n1["enabled"] == false {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "the change did not reach n1: {on_n1}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Deleted through n1: gone on n2, file too.
    let (code, body) = delete(&n1, &path).await;
    assert_eq!(code, 204, "{body}");
    let took = until_status(&n2, &path, 404).await;
    assert!(took < PROPAGATION, "the deletion reached n2 after {took:?}");
    assert!(!file(&n2).exists());
}

/// Runs `iotpipe ARGS` against `server`'s API: (exit code, stdout, stderr).
fn cli(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iotpipe"))
        .args(args)
        .args(["--server", &server.app.http_addr().to_string(), "--token", "test-token"])
        .output()
        .expect("iotpipe runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_rule_file_moves_into_the_cluster_by_export_and_import() {
    let nats = nats::NatsServer::start();
    let group = "\n[[consumer_groups]]\nid = \"g_rules\"\nname = \"rules_group\"\n";
    let n1 = node(&nats.url, "n1", group).await;
    let n2 = node(&nats.url, "n2", group).await;
    // A file written by hand on n1 is n1's own.
    let text = "-- action: amqp g_rules\nSELECT temperature FROM \"/a1test/+/user/update\"\n";
    std::fs::write(n1.dir.path().join("rules/hand.sql"), text).expect("rule file");
    until_status(&n1, "/rules/hand", 200).await;
    assert_eq!(common::api::get(&n2, "/rules/hand").await.0, 404);

    let out = tempfile::tempdir().expect("temporary directory");
    let dir = out.path().join("exported");
    let dir = dir.to_str().expect("UTF-8 path");
    let (code, stdout, stderr) = tokio::task::block_in_place(|| cli(&n1, &["rules", "export", "--dir", dir]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let exported = std::fs::read_to_string(out.path().join("exported/hand.sql")).expect("exported file");
    assert!(
        exported.contains("-- name: hand\n") && exported.contains("-- action: amqp g_rules\n"),
        "{exported}"
    );

    let (code, stdout, stderr) = tokio::task::block_in_place(|| cli(&n2, &["rules", "import", "--dir", dir]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("hand.sql: created"), "{stdout}");
    until_status(&n2, "/rules/hand", 200).await;
    // Now in the cluster: disabled through n2, disabled on n1 too.
    let (code, body) = common::api::patch(&n2, "/rules/hand", &json!({"enabled": false})).await;
    assert_eq!(code, 200, "{body}");
    let started = Instant::now();
    loop {
        let (_, on_n1) = common::api::get(&n1, "/rules/hand").await;
        if on_n1["enabled"] == false {
            break;
        }
        assert!(started.elapsed() < PROPAGATION, "the change did not reach n1: {on_n1}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Imported again: every rule replaced.
    let (code, stdout, stderr) = tokio::task::block_in_place(|| cli(&n1, &["rules", "import", "--dir", dir]));
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("hand.sql: replaced"), "{stdout}");
}
