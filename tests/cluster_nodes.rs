//! Consumers on any node: two `iotpipe serve` nodes (in this process) on one real
//! `nats-server -js`, with real AMQP consumers on both. The 64-client limit of a group and its
//! online list are the cluster's, and a dead node's clients stop counting once their keys are
//! no longer refreshed.

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::amqp::{consumer, login, open, refusal, Consumer};
use common::{config_text, metric_value, metrics, Server, WAIT};
use iotpipe::cluster::clients::ClusterClients;
use iotpipe::cluster::config::ClusterConfig;
use iotpipe::groups::DEFAULT_GROUP;
use iotpipe::sign::SignMethod;

const NAME: &str = "ntest";

async fn node(nats: &nats::NatsServer, name: &str) -> Server {
    node_with(nats, name, "").await
}

/// A node with more configuration (`before` comes ahead of `[cluster]`).
async fn node_with(nats: &nats::NatsServer, name: &str, before: &str) -> Server {
    let dir = tempfile::tempdir().expect("temporary directory");
    let extra = format!(
        "\n{before}\n[cluster]\nnats = [\"{}\"]\nname = \"{NAME}\"\nreplicas = 1\nnode = \"{name}\"\n",
        nats.url
    );
    let text = config_text(dir.path(), "", &extra);
    Server::start_text(dir, text).await
}

/// The group's online clients as `server`'s API lists them, counted per node.
async fn online(server: &Server) -> (usize, BTreeMap<String, usize>) {
    let (code, status) = common::api::get(server, "/consumer-groups/DEFAULT_GROUP/status").await;
    assert_eq!(code, 200, "{status}");
    let clients = status["onlineClients"].as_array().cloned().unwrap_or_default();
    let mut per_node = BTreeMap::new();
    for c in &clients {
        *per_node.entry(c["node"].as_str().unwrap_or("none").to_string()).or_insert(0) += 1;
    }
    (clients.len(), per_node)
}

async fn online_until(server: &Server, what: &str, ok: impl Fn(usize, &BTreeMap<String, usize>) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (n, per_node) = online(server).await;
        if ok(n, &per_node) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {n} online {per_node:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that must be refused: the AMQP error it gets.
async fn refused(server: &Server, client_id: &str) -> String {
    let (u, p) = login(client_id, DEFAULT_GROUP, SignMethod::HmacSha1);
    refusal(open(server.app.amqp_addr(), &u, &p).await.expect("login")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_limit_and_online_list_are_the_clusters() {
    let nats = nats::NatsServer::start();
    let n1 = node(&nats, "n1").await;
    let n2 = node(&nats, "n2").await;

    // 32 consumers on each node: the group is full.
    let mut on1: Vec<Consumer> = Vec::new();
    let mut on2: Vec<Consumer> = Vec::new();
    for i in 0..32 {
        on1.push(consumer(n1.app.amqp_addr(), &format!("a{i}"), DEFAULT_GROUP).await);
        on2.push(consumer(n2.app.amqp_addr(), &format!("b{i}"), DEFAULT_GROUP).await);
    }
    // Either node's status lists every node's clients.
    let both = |n: usize, per: &BTreeMap<String, usize>| {
        n == 64 && per.get("n1") == Some(&32) && per.get("n2") == Some(&32)
    };
    online_until(&n1, "64 online seen from n1", both).await;
    online_until(&n2, "64 online seen from n2", both).await;

    // The 65th, on either node, is refused as on a single node.
    for server in [&n1, &n2] {
        let text = refused(server, "c65").await;
        assert!(text.contains("ResourceLimitExceeded"), "{text}");
        assert!(
            text.contains("DEFAULT_GROUP") && text.contains("64"),
            "names the group and the limit: {text}"
        );
    }

    // A client leaving node 1 frees a place for a client of node 2.
    on1.pop().expect("a consumer").close().await;
    online_until(&n2, "63 online", |n, _| n == 63).await;
    on2.push(consumer(n2.app.amqp_addr(), "b32", DEFAULT_GROUP).await);
    online_until(&n1, "31 + 33", |n, per| n == 64 && per.get("n2") == Some(&33)).await;

    // A node that dies holding two slots: they stop counting once not refreshed.
    on1.pop().expect("a consumer").close().await;
    on2.pop().expect("a consumer").close().await;
    online_until(&n1, "62 online", |n, _| n == 62).await;
    let mut config = ClusterConfig::new(vec![nats.url.clone()]);
    config.name = NAME.into();
    config.replicas = 1;
    let client = iotpipe::cluster::connect(&config, "n3").await.expect("connects");
    let ttl = Duration::from_secs(2);
    let n3 = ClusterClients::open_with_ttl(client, &config, "n3", 64, ttl).await.expect("clients bucket");
    let peer = "127.0.0.1:1".parse().expect("address");
    let held = [
        n3.acquire(DEFAULT_GROUP, "d0", peer).await.expect("a free slot"),
        n3.acquire(DEFAULT_GROUP, "d1", peer).await.expect("a free slot"),
    ];
    online_until(&n1, "n3's two", |n, per| n == 64 && per.get("n3") == Some(&2)).await;
    let text = refused(&n1, "c66").await;
    assert!(text.contains("ResourceLimitExceeded"), "{text}");
    // Dies: no refresh, no delete.
    drop(n3);
    drop(held);
    let died = Instant::now();
    online_until(&n2, "n3's clients gone", |n, per| n == 62 && !per.contains_key("n3")).await;
    assert!(died.elapsed() >= ttl / 2, "gone before their time-to-live: {:?}", died.elapsed());
    // Their slots are free again.
    let _a = consumer(n1.app.amqp_addr(), "a_again", DEFAULT_GROUP).await;
    let _b = consumer(n2.app.amqp_addr(), "b_again", DEFAULT_GROUP).await;
    online_until(&n1, "64 again", |n, per| n == 64 && !per.contains_key("n3")).await;

    drop(on1);
    drop(on2);
    n1.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}

/// `iotpipe ARGS --server URL --token test-token` against `server`: (exit code, stdout, stderr).
async fn cli(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let url = format!("http://{}", server.app.http_addr());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iotpipe"))
        .args(args)
        .args(["--server", &url, "--token", "test-token"])
        .env_remove("IOTPIPE_SERVER")
        .env_remove("IOTPIPE_TOKEN")
        .output();
    let out = tokio::time::timeout(WAIT, out).await.expect("the CLI hung").expect("the CLI runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_lists_the_live_nodes_with_their_connections() {
    let nats = nats::NatsServer::start();
    let n1 = node(&nats, "n1").await;
    let n2 = node(&nats, "n2").await;
    let _c1 = consumer(n1.app.amqp_addr(), "c1", DEFAULT_GROUP).await;
    let _c2 = consumer(n2.app.amqp_addr(), "c2", DEFAULT_GROUP).await;
    let _c3 = consumer(n2.app.amqp_addr(), "c3", DEFAULT_GROUP).await;

    // The heartbeats come every 5 s: within two of them both nodes show their consumers.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        let (code, status) = common::api::get(&n1, "/cluster/status").await;
        assert_eq!(code, 200, "{status}");
        let consumers: Vec<(String, u64)> = status["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (n["node"].as_str().unwrap_or("").to_string(), n["consumerConnections"].as_u64().unwrap_or(0))
            })
            .collect();
        if consumers == [("n1".to_string(), 1), ("n2".to_string(), 2)] {
            break status;
        }
        assert!(Instant::now() < deadline, "the nodes' heartbeats: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["cluster"], NAME, "{status}");
    assert_eq!(status["node"], "n1", "{status}");
    let listed = &status["nodes"][1];
    assert_eq!(listed["amqp"], n2.app.amqp_addr().to_string(), "{status}");
    assert_eq!(listed["mqtt"], n2.addr().to_string(), "{status}");
    assert_eq!(listed["http"], n2.app.http_addr().to_string(), "{status}");
    assert_eq!(listed["deviceConnections"], 0, "{status}");
    assert_eq!(listed["version"], env!("CARGO_PKG_VERSION"), "{status}");
    // Authenticated like every API call.
    let url = format!("http://{}/api/v1/cluster/status", n1.app.http_addr());
    let unauthenticated = reqwest::get(url).await.expect("answers");
    assert_eq!(unauthenticated.status().as_u16(), 401);

    // The CLI shows the same from node 2.
    let (code, stdout, stderr) = cli(&n2, &["cluster", "status"]).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.starts_with(&format!("cluster {NAME}: 2 live nodes (answered by n2)")), "{stdout}");
    let rows: Vec<Vec<&str>> = stdout.lines().skip(3).map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!((rows[0][0], rows[1][0]), ("n1", "n2"), "{stdout}");
    let amqp2 = n2.app.amqp_addr().to_string();
    assert!(rows[1].contains(&amqp2.as_str()), "{stdout}");

    // A node that stops is gone from the list at once (it deletes its heartbeat).
    n2.app.shutdown(Duration::from_secs(5)).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, status) = common::api::get(&n1, "/cluster/status").await;
        let names: Vec<&str> =
            status["nodes"].as_array().into_iter().flatten().filter_map(|n| n["node"].as_str()).collect();
        if names == ["n1"] {
            break;
        }
        assert!(Instant::now() < deadline, "n2 still listed: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n1.app.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn cluster_status_on_a_single_node_says_it_runs_alone() {
    let server = Server::start().await;
    let (code, body) = common::api::get(&server, "/cluster/status").await;
    assert_eq!((code, body["code"].as_str()), (404, Some("NotClustered")), "{body}");
    let (code, stdout, stderr) = cli(&server, &["cluster", "status"]).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no [cluster]"), "{stderr}");
    // No NATS families on a single node.
    let m = metrics(&server).await;
    assert!(m.contains("iotpipe_build") && !m.contains("iotpipe_nats_"), "{m}");
}

/// After 20 s of failed PubAcks the device's connection is dropped without a PUBACK, even
/// for MQTT 5 (whose failure PUBACK would end the message for the device): the device sends
/// it again on its next connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_jetstream_cannot_store_drops_the_connection_without_a_puback() {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::Event;

    let nats = nats::NatsServer::start();
    let n1 = node(&nats, "n1").await;
    // One message stored: its PubAck is measured.
    common::publish_one(n1.addr(), "dev2", "{\"n\":0}").await;
    let m = metrics(&n1).await;
    assert!(metric_value(&m, "iotpipe_nats_puback_duration_seconds_count") >= 1.0, "{m}");
    assert!(metric_value(&m, "iotpipe_nats_publishes_total") >= 1.0, "{m}");
    assert_eq!(metric_value(&m, "iotpipe_nats_connected"), 1.0, "{m}");
    assert_eq!(metric_value(&m, "iotpipe_nats_failed_appends_total"), 0.0, "{m}");

    let (client, mut eventloop) =
        common::connect_v5(common::v5_options(n1.addr(), &common::creds("dev1"))).await.expect("connects");
    drop(nats);
    let topic = format!("/{}/dev1/user/update", common::PK);
    client.publish(topic, QoS::AtLeastOnce, false, "{\"n\":1}").await.expect("queued");
    let sent = Instant::now();
    // The append retries for 20 s; the connection goes some seconds after that at most.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let ended = loop {
        match tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("the connection was not dropped")
        {
            Ok(Event::Incoming(Packet::PubAck(ack))) => panic!("a PUBACK for an unstored message: {ack:?}"),
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    let after = sent.elapsed();
    assert!(after >= Duration::from_secs(19), "dropped after {after:?}, before the retries ran out: {ended}");
    let m = metrics(&n1).await;
    assert!(metric_value(&m, "iotpipe_nats_failed_appends_total") >= 1.0, "{m}");
    assert!(metric_value(&m, "iotpipe_nats_publish_retries_total") >= 1.0, "{m}");
    assert!(metric_value(&m, "iotpipe_nats_disconnects_total") >= 1.0, "{m}");
    assert_eq!(metric_value(&m, "iotpipe_nats_connected"), 0.0, "{m}");
    n1.app.shutdown(Duration::from_secs(5)).await;
}

/// A `nats-server -js` with its monitoring port, `sync_interval: always` or the default; its
/// monitoring URL and the process (killed by the caller).
fn monitored_nats(dir: &std::path::Path, always: bool) -> (String, std::process::Child) {
    use std::io::{BufRead, BufReader};
    let conf = dir.join("nats.conf");
    let jetstream = if always { "jetstream { sync_interval: always }" } else { "jetstream {}" };
    std::fs::write(&conf, jetstream).expect("configuration written");
    let mut child = std::process::Command::new("nats-server")
        .arg("-c")
        .arg(&conf)
        .args(["-a", "127.0.0.1", "-p", "-1", "-m", "-1", "-sd"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nats-server starts (tests need it on PATH)");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let monitor = loop {
        let line = lines.next().expect("nats-server logs its monitoring port").expect("a log line");
        if let Some(addr) = line.split("Starting http monitor on ").nth(1) {
            break format!("http://{}", addr.trim());
        }
    };
    // Keep draining the log so that the server never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    (monitor, child)
}

#[tokio::test]
async fn the_servers_sync_interval_is_read_from_their_monitoring_port() {
    use iotpipe::cluster::sync_check::{setting, SyncSetting};
    let dir = tempfile::tempdir().expect("temporary directory");
    let (always_dir, default_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&always_dir).expect("dir");
    std::fs::create_dir_all(&default_dir).expect("dir");
    let (always, mut a) = monitored_nats(&always_dir, true);
    let (default, mut b) = monitored_nats(&default_dir, false);
    assert_eq!(setting(&always).await, SyncSetting::Always);
    assert_eq!(setting(&default).await, SyncSetting::Every(Duration::from_secs(120)));
    let _ = (a.kill(), b.kill(), a.wait(), b.wait());
    assert!(matches!(setting(&always).await, SyncSetting::Unknown(why) if why.contains("/varz")));
}

/// One node at a time evaluates the alert rules (a lease in KV); when it stops, another takes
/// over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_at_a_time_evaluates_the_alert_rules() {
    let nats = nats::NatsServer::start();
    // Evaluated every second; the callback is never called (the backlog stays below 1e9).
    let rule = "[[alert_rules]]\nname = \"backlog\"\nmetric = \"accumulatedCount\"\ncomparison = \">\"\n\
                threshold = 1000000000\nperiod_seconds = 1\ncallback_url = \"http://127.0.0.1:9/alert\"\n";
    let n1 = node_with(&nats, "n1", rule).await;
    let n2 = node_with(&nats, "n2", rule).await;
    let evaluations = |m: &str| metric_value(m, "iotpipe_alert_evaluations_total");
    let deadline = Instant::now() + WAIT;
    let (holder, other) = loop {
        let (m1, m2) = (metrics(&n1).await, metrics(&n2).await);
        let (e1, e2) = (evaluations(&m1), evaluations(&m2));
        if e1 >= 3.0 || e2 >= 3.0 {
            assert!(e1 == 0.0 || e2 == 0.0, "both nodes evaluate: n1 {e1}, n2 {e2}");
            break if e1 > 0.0 { (n1, n2) } else { (n2, n1) };
        }
        assert!(Instant::now() < deadline, "no node evaluates: n1 {e1}, n2 {e2}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The other node still does not, some periods later.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(evaluations(&metrics(&other).await), 0.0);

    // The holder stops (giving the lease up): the other takes over at its next attempt.
    holder.app.shutdown(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while evaluations(&metrics(&other).await) == 0.0 {
        assert!(Instant::now() < deadline, "no takeover after the holder stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    other.app.shutdown(Duration::from_secs(5)).await;
}

/// A group's consumption rate, seen from any node, adds every node's accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumption_rate_covers_every_node() {
    let nats = nats::NatsServer::start();
    let n1 = node(&nats, "n1").await;
    let n2 = node(&nats, "n2").await;
    let mut consumers = [
        consumer(n1.app.amqp_addr(), "c1", DEFAULT_GROUP).await,
        consumer(n2.app.amqp_addr(), "c2", DEFAULT_GROUP).await,
    ];
    online_until(&n1, "both online", |n, _| n == 2).await;
    // 10 messages, plus dev1's online and offline status messages.
    common::publish_n(n1.addr(), "dev1", 10).await;
    let mut accepted = [0u64; 2];
    let deadline = Instant::now() + WAIT;
    while accepted.iter().sum::<u64>() < 12 {
        for (i, c) in consumers.iter_mut().enumerate() {
            if let Some(d) = c.try_next(Duration::from_millis(100)).await {
                c.accept(&d).await;
                accepted[i] += 1;
            }
        }
        assert!(Instant::now() < deadline, "accepted only {accepted:?}");
    }
    let total = accepted.iter().sum::<u64>();
    // The other node's part comes with its next refresh (every 5 s).
    for server in [&n1, &n2] {
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, status) = common::api::get(server, "/consumer-groups/DEFAULT_GROUP/status").await;
            if status["consumptionRate"].as_u64() == Some(total) {
                break;
            }
            assert!(Instant::now() < deadline, "rate not {total} ({accepted:?}): {status}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    n1.app.shutdown(Duration::from_secs(5)).await;
    n2.app.shutdown(Duration::from_secs(5)).await;
}

/// A node restarted before its clients' keys ran out does not count them (nor list them):
/// they were its previous run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_forgets_its_previous_runs_clients() {
    let nats = nats::NatsServer::start();
    let mut config = ClusterConfig::new(vec![nats.url.clone()]);
    config.name = NAME.into();
    config.replicas = 1;
    let peer = "127.0.0.1:1".parse().expect("address");
    let open = |node: &'static str| {
        let config = config.clone();
        async move {
            let client = iotpipe::cluster::connect(&config, node).await.expect("connects");
            ClusterClients::open_with_ttl(client, &config, node, 2, Duration::from_secs(60))
                .await
                .expect("bucket")
        }
    };
    let other = open("other").await;
    let _theirs = other.acquire(DEFAULT_GROUP, "theirs", peer).await.expect("a slot");
    let first = open("n9").await;
    let held = first.acquire(DEFAULT_GROUP, "mine", peer).await.expect("a slot");
    // The group is full (2 slots).
    assert!(first.acquire(DEFAULT_GROUP, "more", peer).await.is_err());
    // Crash: neither refresh nor delete.
    drop(first);
    drop(held);
    let second = open("n9").await;
    let listed: Vec<String> = second.online(DEFAULT_GROUP).into_iter().map(|c| c.client_id).collect();
    assert_eq!(listed, ["theirs"]);
    let _again = second.acquire(DEFAULT_GROUP, "mine-again", peer).await.expect("the old slot is free");
}
