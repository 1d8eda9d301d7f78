//! The three-node kill test of the cluster mode (docs/cluster.md#the-kill-test): three
//! `nats-server` processes in one JetStream cluster (`sync_interval: always`, replicas 3) and
//! three `iotpipe serve` processes on loopback. A QoS 1 device on every node publishes at a
//! fixed rate; a python-qpid-proton consumer on node 1 reads the subscription's group, a rhea
//! consumer on node 2 the rule's group. During the run the JetStream stream leader is killed
//! with SIGKILL and restarted, then iotpipe node 2 (the rhea consumer's and one device's) the
//! same way. Afterwards every PUBACKed message must have reached both groups (duplicates are
//! counted and reported, not failed), no consumer may have waited more than 15 s for a message
//! while messages were pending, and every node's API must show both backlogs at 0.
//!
//! It runs against the release binary in `.ci/run`:
//! `cargo test --release --test cluster_kill -- --include-ignored` (about 100 s;
//! `IOTPIPE_CLUSTER_SECONDS` sets the publishing time, 60 by default).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::process::{self, Running};
use common::{creds, v4_options};
use rumqttc::{Event, Outgoing, Packet, QoS};

/// The deployment's prefix of streams and subjects.
const NAME: &str = "ikill";
/// The rule's consumer group.
const RULE_GROUP: &str = "G_RULE";
/// The subscription's consumer group.
const SUB_GROUP: &str = "DEFAULT_GROUP";
/// Each device publishes one message per this interval.
const INTERVAL: Duration = Duration::from_millis(20);
/// The longest a consumer may wait for a message while messages are pending.
const MAX_WAIT: Duration = Duration::from_secs(15);
/// The consumers' ack timeout (`[amqp] ack_timeout_secs`): what a dead node's clients held comes
/// again after this.
const ACK_TIMEOUT_SECS: u64 = 8;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// One nats-server of the cluster: its ports and store survive a restart.
struct Nats {
    name: String,
    port: u16,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Nats {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("nats log");
        let mut child = Command::new("nats-server")
            .arg("-c")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server on PATH (scripts/test-deps.sh installs it)");
        // Wait for "Server is ready", then keep copying the log so the pipe never fills.
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut log = log;
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log, "{line}");
                if line.contains("Server is ready") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("nats-server {} not ready; log: {}", self.name, self.log.display()));
        self.child = Some(child);
    }

    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL nats-server");
            child.wait().expect("reap nats-server");
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Three nats-server processes routed into one JetStream cluster.
fn nats_cluster(dir: &Path) -> Vec<Nats> {
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = ports.iter().map(|(_, r)| format!("\"nats-route://127.0.0.1:{r}\"")).collect();
    let mut servers = Vec::new();
    for (i, (port, route)) in ports.iter().enumerate() {
        let name = format!("nats-{}", i + 1);
        let store = dir.join(&name);
        std::fs::create_dir_all(&store).expect("store dir");
        let config = dir.join(format!("{name}.conf"));
        std::fs::write(
            &config,
            format!(
                "server_name: {name}\nlisten: 127.0.0.1:{port}\n\
                 jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
                 cluster {{ name: {NAME}, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                store.display(),
                routes.join(", ")
            ),
        )
        .expect("nats config");
        servers.push(Nats {
            name,
            port: *port,
            config,
            log: dir.join(format!("{}.log", i + 1)),
            child: None,
        });
    }
    for s in &mut servers {
        s.start();
    }
    servers
}

/// One iotpipe node: fixed ports, so that clients find it again after a restart.
struct Node {
    config: PathBuf,
    log: PathBuf,
    mqtt: SocketAddr,
    amqp: SocketAddr,
    http: SocketAddr,
    running: Option<Running>,
}

impl Node {
    fn new(dir: &Path, i: usize, nats: &[String]) -> Self {
        let data = dir.join(format!("node-{i}"));
        std::fs::create_dir_all(data.join("rules")).expect("node dir");
        std::fs::write(
            data.join("rules").join("kill.sql"),
            format!(
                "-- name: kill_rule\n-- enabled: true\n-- data_type: json\n-- action: amqp {RULE_GROUP}\n\
                 SELECT * FROM \"/{}/+/user/update\"\n",
                common::PK
            ),
        )
        .expect("rule file");
        let (mqtt, amqp, http) = (free_port(), free_port(), free_port());
        let nats: Vec<String> = nats.iter().map(|u| format!("\"{u}\"")).collect();
        let extra = format!(
            "\n[[consumer_groups]]\nid = \"{RULE_GROUP}\"\nname = \"killrule\"\n\n[cluster]\nnats = [{}]\n\
             name = \"{NAME}\"\nreplicas = 3\nnode = \"n{i}\"\n",
            nats.join(", ")
        );
        let text =
            common::config_text_amqp(&data, "", &format!("ack_timeout_secs = {ACK_TIMEOUT_SECS}"), &extra)
                .replace(
                    "listen = \"127.0.0.1:0\"\nkeep_alive",
                    &format!("listen = \"127.0.0.1:{mqtt}\"\nkeep_alive"),
                )
                .replacen(
                    "[amqp]\nlisten = \"127.0.0.1:0\"",
                    &format!("[amqp]\nlisten = \"127.0.0.1:{amqp}\""),
                    1,
                )
                .replacen(
                    "[http]\nlisten = \"127.0.0.1:0\"",
                    &format!("[http]\nlisten = \"127.0.0.1:{http}\""),
                    1,
                );
        let config = data.join("iotpipe.toml");
        std::fs::write(&config, text).expect("node config");
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        Self {
            config,
            log: dir.join(format!("iotpipe-{i}.log")),
            mqtt: addr(mqtt),
            amqp: addr(amqp),
            http: addr(http),
            running: None,
        }
    }

    fn start(&mut self) {
        let running = process::start(&self.config, Some(&self.log));
        assert_eq!((running.mqtt, running.amqp, running.http), (self.mqtt, self.amqp, self.http));
        self.running = Some(running);
    }

    fn kill_9(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.kill_9();
        }
    }

    async fn accumulated(&self, group: &str) -> Option<u64> {
        let url = format!("http://{}/api/v1/consumer-groups/{group}/status", self.http);
        let resp = reqwest::Client::new().get(url).bearer_auth("test-token").send().await.ok()?;
        let body: serde_json::Value = resp.json().await.ok()?;
        body["accumulatedCount"].as_u64()
    }
}

/// What the devices had acknowledged: (device, n).
type Acked = Arc<Mutex<BTreeSet<(String, u64)>>>;

/// Publishes `{"kill":1,"d":DEVICE,"n":N}` with QoS 1 every [`INTERVAL`] until `until`,
/// recording each N whose PUBACK came. On a lost connection it connects again (to the same
/// node: a killed node comes back on its ports); a message whose PUBACK did not come is not
/// counted (it may still arrive, as a message the device would send again).
async fn device(name: String, addr: SocketAddr, until: Instant, acked: Acked) -> (u64, u64) {
    let (mut sent, mut reconnects) = (0u64, 0u64);
    let mut next = tokio::time::Instant::now();
    'connect: while Instant::now() < until {
        let mut options = v4_options(addr, &creds(&name));
        options.set_keep_alive(Duration::from_secs(5));
        let Ok(Ok((client, mut eventloop))) =
            tokio::time::timeout(Duration::from_secs(5), common::connect_v4(options)).await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        reconnects += 1;
        while Instant::now() < until {
            tokio::time::sleep_until(next).await;
            next += INTERVAL;
            let n = sent;
            sent += 1;
            let body = format!("{{\"kill\":1,\"d\":\"{name}\",\"n\":{n}}}");
            let topic = format!("/{}/{name}/user/update", common::PK);
            if client.publish(topic, QoS::AtLeastOnce, false, body).await.is_err() {
                continue 'connect;
            }
            // One message in flight at a time: the PUBACK that comes is this message's. A
            // leader change holds PUBACKs for several seconds; 25 s covers the node's 20 s retry.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
            loop {
                match tokio::time::timeout_at(deadline, eventloop.poll()).await {
                    Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => {
                        acked.lock().expect("acked").insert((name.clone(), n));
                        break;
                    }
                    Ok(Ok(Event::Outgoing(Outgoing::Publish(_)) | _)) => {}
                    Ok(Err(_)) | Err(_) => continue 'connect,
                }
            }
            // Behind schedule after a held PUBACK: carry on at the fixed rate from now.
            next = next.max(tokio::time::Instant::now());
        }
        let _ = client.disconnect().await;
    }
    (sent, reconnects.saturating_sub(1))
}

/// A consumer process's deliveries: (receive time ms, messageId, device, n) of test messages.
#[derive(Default)]
struct Received {
    lines: Vec<(u64, String, String, u64)>,
}

fn consumer(mut command: Command, what: &'static str, log: PathBuf) -> (Child, Arc<Mutex<Received>>) {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("consumer log")))
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what} consumer ({e}); scripts/test-deps.sh installs it"));
    let stdout = child.stdout.take().expect("piped");
    let received = Arc::new(Mutex::new(Received::default()));
    let into = received.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let mut parts = line.splitn(3, ' ');
            let (Some(at), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let Ok(json) = serde_json::from_str::<serde_json::Value>(body) else { continue };
            if json.get("kill").is_none() {
                continue; // status messages of the subscription
            }
            let (Some(d), Some(n)) = (json["d"].as_str(), json["n"].as_u64()) else { continue };
            into.lock().expect("received").lines.push((
                at.parse().unwrap_or_default(),
                id.to_string(),
                d.to_string(),
                n,
            ));
        }
    });
    (child, received)
}

fn consumer_env(command: &mut Command, addr: SocketAddr, group: &str) {
    command
        .env("HOST", addr.ip().to_string())
        .env("PORT", addr.port().to_string())
        .env("ACCESS_KEY_ID", "LTAItest")
        .env("ACCESS_KEY_SECRET", "test-secret")
        .env("GROUP", group);
}

/// The stream leader's server name.
async fn stream_leader(url: &str) -> String {
    let client = async_nats::connect(url).await.expect("a NATS connection for the test");
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = js.get_stream(format!("{NAME}_queues")).await {
            if let Ok(info) = stream.info().await {
                if let Some(leader) = info.cluster.as_ref().and_then(|c| c.leader.clone()) {
                    return leader;
                }
            }
        }
        assert!(Instant::now() < deadline, "the queue stream has no leader");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks one group's deliveries against the acknowledged set: (lost, duplicates, longest wait).
fn check(
    what: &str,
    received: &Received,
    acked: &BTreeSet<(String, u64)>,
    start_ms: u64,
) -> (Vec<(String, u64)>, usize, Duration) {
    let mut seen: BTreeMap<(String, u64), usize> = BTreeMap::new();
    for (_, _, d, n) in &received.lines {
        *seen.entry((d.clone(), *n)).or_default() += 1;
    }
    let lost: Vec<(String, u64)> = acked.iter().filter(|k| !seen.contains_key(*k)).cloned().collect();
    let duplicates = seen.values().map(|c| c - 1).sum();
    // Messages were pending from the start until the last one arrived: the longest gap
    // between arrivals (the start included) is the longest wait while messages were pending.
    let mut times: Vec<u64> = received.lines.iter().map(|l| l.0).collect();
    times.sort_unstable();
    let mut longest = 0;
    let mut previous = start_ms;
    for t in times {
        longest = longest.max(t.saturating_sub(previous));
        previous = t;
    }
    eprintln!(
        "{what}: {} deliveries, {} distinct, {} acknowledged by devices, {} lost, {duplicates} duplicates, \
         longest wait {longest} ms",
        received.lines.len(),
        seen.len(),
        acked.len(),
        lost.len()
    );
    (lost, duplicates, Duration::from_millis(longest))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the three-node kill test: runs in .ci/run against the release binary (--include-ignored)"]
async fn three_nodes_lose_nothing_acknowledged_through_kills() {
    let seconds: u64 =
        std::env::var("IOTPIPE_CLUSTER_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    // IOTPIPE_KEEP_DIR=1 keeps the servers' logs and stores, failed or not.
    let keep = std::env::var_os("IOTPIPE_KEEP_DIR").is_some();
    let dir = tempfile::Builder::new()
        .prefix("cluster-kill")
        .disable_cleanup(keep)
        .tempdir()
        .expect("temporary directory");
    if keep {
        eprintln!("logs in {}", dir.path().display());
    }
    let mut nats = nats_cluster(dir.path());
    let urls: Vec<String> = nats.iter().map(Nats::url).collect();
    let mut nodes: Vec<Node> = (1..=3).map(|i| Node::new(dir.path(), i, &urls)).collect();
    for node in &mut nodes {
        node.start();
    }

    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cluster");
    let mut proton = Command::new("python3");
    proton.arg(interop.join("proton_consumer.py"));
    consumer_env(&mut proton, nodes[0].amqp, SUB_GROUP);
    let (mut proton, from_proton) = consumer(proton, "python-qpid-proton", dir.path().join("proton.log"));
    let mut rhea = Command::new("node");
    rhea.arg(interop.join("rhea_consumer.js"))
        .env("NODE_PATH", Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/node_modules"));
    consumer_env(&mut rhea, nodes[1].amqp, RULE_GROUP);
    let (mut rhea, from_rhea) = consumer(rhea, "rhea", dir.path().join("rhea.log"));

    let start_ms = now_ms();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let acked: Acked = Arc::default();
    let devices: Vec<_> = nodes
        .iter()
        .zip(["dev1", "dev2", "dev3"])
        .map(|(node, name)| tokio::spawn(device(name.to_string(), node.mqtt, until, acked.clone())))
        .collect();

    // A quarter in: SIGKILL the queue stream's leader, restart it 5 s later.
    tokio::time::sleep_until((started + Duration::from_secs(seconds / 4)).into()).await;
    let leader = stream_leader(&urls[0]).await;
    let victim = nats.iter_mut().find(|n| n.name == leader).expect("the leader is one of ours");
    eprintln!("{:?}: SIGKILL stream leader {leader}", started.elapsed());
    victim.kill_9();
    tokio::time::sleep(Duration::from_secs(5)).await;
    victim.start();
    eprintln!("{:?}: {leader} restarted", started.elapsed());

    // Halfway: SIGKILL iotpipe node 2 (the rhea consumer's and dev2's), restart it 3 s later.
    tokio::time::sleep_until((started + Duration::from_secs(seconds / 2)).into()).await;
    eprintln!("{:?}: SIGKILL iotpipe node 2", started.elapsed());
    nodes[1].kill_9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    nodes[1].start();
    eprintln!("{:?}: iotpipe node 2 restarted", started.elapsed());

    let mut sent = 0;
    for (i, d) in devices.into_iter().enumerate() {
        let (n, reconnects) = d.await.expect("device task");
        eprintln!("dev{}: {n} published, {reconnects} reconnects", i + 1);
        sent += n;
    }
    let acked = acked.lock().expect("acked").clone();
    eprintln!("{sent} published, {} PUBACKed", acked.len());
    assert!(acked.len() as u64 > sent / 2, "most messages are acknowledged: {} of {sent}", acked.len());

    // Wait until both consumers have every acknowledged message (or the longest allowed wait
    // passes without progress), then judge.
    let complete = |r: &Arc<Mutex<Received>>| {
        let r = r.lock().expect("received");
        let seen: BTreeSet<(String, u64)> = r.lines.iter().map(|l| (l.2.clone(), l.3)).collect();
        acked.is_subset(&seen)
    };
    let drained_by =
        Instant::now() + MAX_WAIT + Duration::from_secs(ACK_TIMEOUT_SECS) + Duration::from_secs(30);
    while !(complete(&from_proton) && complete(&from_rhea)) && Instant::now() < drained_by {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every node's API shows both backlogs drained (status messages of the devices included).
    let mut backlogs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        backlogs.clear();
        for node in &nodes {
            for group in [SUB_GROUP, RULE_GROUP] {
                backlogs.push(node.accumulated(group).await);
            }
        }
        if backlogs.iter().all(|b| *b == Some(0)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(proton.stdin.take());
    drop(rhea.stdin.take());
    let _ = proton.wait();
    let _ = rhea.wait();

    let (lost_sub, dup_sub, wait_sub) =
        check("subscription group (proton, node 1)", &from_proton.lock().expect("r"), &acked, start_ms);
    let (lost_rule, dup_rule, wait_rule) =
        check("rule group (rhea, node 2)", &from_rhea.lock().expect("r"), &acked, start_ms);
    assert!(
        lost_sub.is_empty(),
        "PUBACKed messages lost in {SUB_GROUP}: {:?}",
        &lost_sub[..lost_sub.len().min(20)]
    );
    assert!(
        lost_rule.is_empty(),
        "PUBACKed messages lost in {RULE_GROUP}: {:?}",
        &lost_rule[..lost_rule.len().min(20)]
    );
    assert!(wait_sub <= MAX_WAIT, "the proton consumer waited {wait_sub:?} while messages were pending");
    assert!(wait_rule <= MAX_WAIT, "the rhea consumer waited {wait_rule:?} while messages were pending");
    assert!(
        backlogs.iter().all(|b| *b == Some(0)),
        "every node's status shows both backlogs at 0 (node 1, 2, 3 × {SUB_GROUP}, {RULE_GROUP}): {backlogs:?}"
    );
    eprintln!("duplicates: {dup_sub} in {SUB_GROUP}, {dup_rule} in {RULE_GROUP}");

    shared_groups_across_nodes(&nodes).await;
}

/// `(status, JSON body)` of an API call to `node`.
async fn api(
    node: &Node,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{}/api/v1{path}", node.http))
        .bearer_auth("test-token");
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("the API answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// The rest of the acceptance, on the same three processes: a group created through node 1 is
/// usable by a consumer on node 3 within a second, a clear through node 3 shows on node 1, and
/// the 65th client of a group across the three nodes is refused.
async fn shared_groups_across_nodes(nodes: &[Node]) {
    use common::amqp::{attach, consumer, login, open, refusal};
    let (code, created) = api(
        &nodes[0],
        reqwest::Method::POST,
        "/consumer-groups",
        Some(serde_json::json!({"name": "killshared"})),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    let group = created["id"].as_str().expect("the new group's id").to_string();
    let created_at = Instant::now();
    // A consumer on node 3 attaches and is listed online (by node 1 too).
    let (u, p) = login("late", &group, iotpipe::sign::SignMethod::HmacSha1);
    let late = loop {
        if let Ok(c) = open(nodes[2].amqp, &u, &p).await {
            break attach(c).await;
        }
        assert!(created_at.elapsed() < Duration::from_secs(1), "node 3 did not know the group within 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    loop {
        let (_, status) =
            api(&nodes[0], reqwest::Method::GET, &format!("/consumer-groups/{group}/status"), None).await;
        if status["onlineClients"].as_array().is_some_and(|c| c.iter().any(|c| c["clientId"] == "late")) {
            break;
        }
        assert!(
            created_at.elapsed() < Duration::from_secs(1),
            "the consumer on node 3 not usable within 1 s: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "group created on node 1, consumer on node 3 online (seen by node 1) after {:?}",
        created_at.elapsed()
    );

    // 64 clients over the three nodes; the 65th is refused on any of them.
    let mut clients = vec![late];
    for i in 1..64 {
        clients.push(consumer(nodes[i % 3].amqp, &format!("c{i}"), &group).await);
    }
    for node in nodes {
        let (u, p) = login("c65", &group, iotpipe::sign::SignMethod::HmacSha1);
        let refused = match open(node.amqp, &u, &p).await {
            Err(e) => e,
            Ok(c) => refusal(c).await,
        };
        assert!(refused.contains("ResourceLimitExceeded"), "the 65th client on {}: {refused}", node.amqp);
    }
    for c in clients {
        c.close().await;
    }

    // Messages wait in DEFAULT_GROUP (its consumer is gone); a clear through node 3 empties it
    // as node 1 sees it.
    common::publish_n(nodes[0].mqtt, "dev1", 5).await;
    let waiting = Instant::now();
    while nodes[0].accumulated(SUB_GROUP).await.unwrap_or(0) < 5 {
        assert!(waiting.elapsed() < common::WAIT, "the five messages never showed in node 1's status");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, cleared) = api(
        &nodes[2],
        reqwest::Method::POST,
        &format!("/consumer-groups/{SUB_GROUP}/clear"),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(code, 200, "{cleared}");
    let clearing = Instant::now();
    while nodes[0].accumulated(SUB_GROUP).await != Some(0) {
        assert!(clearing.elapsed() < Duration::from_secs(5), "the clear on node 3 did not show on node 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("cleared on node 3, node 1 shows 0 after {:?}", clearing.elapsed());
}
