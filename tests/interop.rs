//! Third-party consumers (rhea over TLS, python-qpid-proton over plain AMQP) and a paho-mqtt
//! device against a real iotpipe, each signing its own login as the modelled platform's samples
//! do. scripts/test-deps.sh installs them (npm package rhea in tests/interop, PyPI packages
//! python-qpid-proton and paho-mqtt).

mod common;

use std::process::Command;

use common::*;

const N: usize = 25;

fn run_consumer(program: &str, args: &[&str], env: &[(&str, String)]) -> Vec<serde_json::Value> {
    let out = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run ({e}): .ci/run installs the interop clients"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn check(received: &[serde_json::Value]) {
    assert_eq!(received.len(), N);
    let mut bodies: Vec<String> = received.iter().map(|m| m["body"].as_str().unwrap().to_string()).collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), N, "every message once");
    for m in received {
        assert_eq!(m["topic"], "/a1test/dev1/user/update");
        assert_eq!(m["messageId"], m["amqpMessageId"]);
        assert!(m["messageId"].as_str().unwrap().parse::<u64>().is_ok());
        assert!(m["generateTime"].as_i64().unwrap() > 1_600_000_000_000);
    }
}

fn base_env(amqp_port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("HOST", "127.0.0.1".into()),
        ("PORT", amqp_port.to_string()),
        ("ACCESS_KEY_ID", amqp::ACCESS_KEY.0.into()),
        ("ACCESS_KEY_SECRET", amqp::ACCESS_KEY.1.into()),
        ("GROUP", "DEFAULT_GROUP".into()),
        ("COUNT", N.to_string()),
        ("TOPIC_SUFFIX", "/user/update".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rhea_consumes_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cert_path, key_path) = self_signed(dir.path(), &["localhost", "127.0.0.1"]);
    let amqp = tls_section(&cert_path, &key_path);
    let server = Server::start_full("", &amqp, "").await;
    publish_n(server.addr(), "dev1", N).await;
    let mut env = base_env(server.app.amqp_tls_addr().unwrap().port());
    env.push(("CA", cert_path.display().to_string()));
    let received =
        tokio::task::spawn_blocking(move || run_consumer("node", &["rhea_consumer.js"], &env)).await.unwrap();
    check(&received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_qpid_proton_consumes() {
    let server = Server::start().await;
    publish_n(server.addr(), "dev1", N).await;
    let env = base_env(server.app.amqp_addr().port());
    let received =
        tokio::task::spawn_blocking(move || run_consumer("python3", &["proton_consumer.py"], &env))
            .await
            .unwrap();
    check(&received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paho_device_gets_post_reply_as_the_link_sdk_expects() {
    let server = Server::start().await;
    let c = creds("dev1");
    let env = vec![
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", server.addr().port().to_string()),
        ("CLIENT_ID", c.client_id),
        ("USERNAME", c.username),
        ("PASSWORD", c.password),
        ("PK", PK.to_string()),
        ("DN", "dev1".to_string()),
    ];
    let replies = tokio::task::spawn_blocking(move || run_consumer("python3", &["paho_device.py"], &env))
        .await
        .unwrap();
    let got: Vec<(&str, u64, &str)> = replies
        .iter()
        .map(|r| {
            assert_eq!(r["topic"], "/sys/a1test/dev1/thing/event/property/post_reply");
            assert_eq!(
                (&r["body"]["version"], &r["body"]["method"]),
                (&"1.0".into(), &"thing.event.property.post".into())
            );
            (
                r["body"]["id"].as_str().unwrap(),
                r["body"]["code"].as_u64().unwrap(),
                r["body"]["message"].as_str().unwrap(),
            )
        })
        .collect();
    // Post 2 carried "sys":{"ack":0}; post 3 had no params.
    assert_eq!(got, [("1", 200, "success"), ("3", 460, "request parameter error"), ("4", 200, "success")]);
}

/// A consumer that releases everything gets each message back after a growing backoff (1 s,
/// 2 s, ...), not in a loop: over 3 s each message comes at most 3 times (at 0, 1 and 3 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_qpid_proton_releasing_everything_gets_each_message_a_few_times() {
    let server = Server::start().await;
    publish_n(server.addr(), "dev1", 5).await;
    let mut env = base_env(server.app.amqp_addr().port());
    env.push(("RELEASE_SECONDS", "3".into()));
    let received =
        tokio::task::spawn_blocking(move || run_consumer("python3", &["proton_consumer.py"], &env))
            .await
            .unwrap();
    let mut per_message: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for m in &received {
        *per_message.entry(m["messageId"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_message.len(), 5, "every message delivered: {per_message:?}");
    for (id, n) in &per_message {
        assert!((2..=3).contains(n), "message {id} delivered {n} times in 3 s");
    }
    let group = server.app.groups().get("DEFAULT_GROUP").unwrap();
    assert_eq!(group.status().accumulated, 5, "nothing lost (dev1's status messages were accepted)");
}

/// A property-set reply from a device reaches a python-qpid-proton consumer (the platform's
/// sample) as the platform's downlink reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_qpid_proton_reads_a_property_set_reply_as_the_platform_downlink_reply() {
    let server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    let body = r#"{"id":"2001","code":200,"data":{},"version":"1.0"}"#;
    client
        .publish("/sys/a1test/dev1/thing/service/property/set_reply", rumqttc::QoS::AtLeastOnce, false, body)
        .await
        .unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    let mut env = base_env(server.app.amqp_addr().port());
    env.retain(|(k, _)| *k != "COUNT" && *k != "TOPIC_SUFFIX");
    env.push(("COUNT", "1".into()));
    env.push(("TOPIC_SUFFIX", "/thing/downlink/reply/message".into()));
    let received =
        tokio::task::spawn_blocking(move || run_consumer("python3", &["proton_consumer.py"], &env))
            .await
            .unwrap();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["topic"], "/a1test/dev1/thing/downlink/reply/message");
    let reply: serde_json::Value = serde_json::from_str(received[0]["body"].as_str().unwrap()).unwrap();
    let iot_id = server.app.registry().device(PK, "dev1").unwrap().iot_id.clone();
    assert_eq!(
        (
            &reply["iotId"],
            &reply["requestId"],
            &reply["code"],
            &reply["message"],
            &reply["topic"],
            &reply["data"]
        ),
        (
            &serde_json::json!(iot_id),
            &serde_json::json!("2001"),
            &serde_json::json!(200),
            &serde_json::json!("success"),
            &serde_json::json!("/sys/a1test/dev1/thing/service/property/set"),
            &serde_json::json!({})
        )
    );
}
