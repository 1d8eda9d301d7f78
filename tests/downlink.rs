//! Cloud to device (docs/downlink.md) with paho-mqtt devices over real sockets: publish at QoS 0
//! and 1 (retried until acknowledged), offline devices, broadcast, RRPC, thing-model calls,
//! the ACL around them, and clear API errors.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use common::paho::Paho;
use common::*;
use iotpipe::message::Kind;
use serde_json::{json, Value};

/// A second product with one device.
const OTHER: &str = "\n[[products]]\nkey = \"a1other\"\nname = \"Other\"\n\n[[products.devices]]\nname = \"odev\"\nsecret = \"osecret\"\n";

fn path(dn: &str, rest: &str) -> String {
    format!("/products/{PK}/devices/{dn}{rest}")
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn post_ok(server: &Server, path: &str, body: Value) -> Value {
    let (status, v) = api::post(server, path, &body).await;
    assert_eq!(status, 200, "POST {path} {body}: {v}");
    v
}

/// Polls the message's state until it is `want` (the API has no push for it).
async fn state_becomes(server: &Server, dn: &str, id: &Value, want: &str) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    let id = id.as_str().unwrap();
    loop {
        let (status, v) = api::get(server, &path(dn, &format!("/messages/{id}"))).await;
        assert_eq!(status, 200, "{v}");
        if v["state"] == want {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "state stayed {v}, expected {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_offline(server: &mut Server, dn: &str) {
    while server.next_status(dn).await["status"] != "offline" {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_and_1_reach_a_paho_device_and_qos_1_is_acknowledged() {
    let server = Server::start().await;
    let mut dev = Paho::start(&server, PK, "dev1", &creds("dev1"), "/a1test/dev1/user/get:1", &[]).await;
    assert_eq!(dev.granted, [1], "QoS 1 is granted");

    let v = post_ok(
        &server,
        &path("dev1", "/messages"),
        json!({"topic": "/a1test/dev1/user/get", "payload": "zero"}),
    )
    .await;
    let m = dev.next_message().await;
    assert_eq!(
        (&m["topic"], &m["payload"], &m["qos"]),
        (&json!("/a1test/dev1/user/get"), &json!("zero"), &json!(0))
    );
    let state = state_becomes(&server, "dev1", &v["messageId"], "sent").await;
    assert_eq!(state["qos"], 0);

    let body = json!({"topic": "/a1test/dev1/user/get", "payloadBase64": b64(b"one"), "qos": 1});
    let v = post_ok(&server, &path("dev1", "/messages"), body).await;
    let m = dev.next_message().await;
    assert_eq!((&m["payload"], &m["qos"], &m["dup"]), (&json!("one"), &json!(1), &json!(false)));
    state_becomes(&server, "dev1", &v["messageId"], "acknowledged").await;

    // A topic the device did not subscribe to: dropped as a broker drops it, and reported.
    let v = post_ok(
        &server,
        &path("dev1", "/messages"),
        json!({"topic": "/a1test/dev1/user/other", "payload": "x", "qos": 1}),
    )
    .await;
    state_becomes(&server, "dev1", &v["messageId"], "notSubscribed").await;

    let (_, metrics) = get_text(&server, "/metrics").await;
    assert!(
        metrics.contains("iotpipe_downlink_messages_total{product=\"a1test\",result=\"acked\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iotpipe_downlink_messages_total{product=\"a1test\",result=\"sent\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iotpipe_downlink_messages_total{product=\"a1test\",result=\"failed\"} 1"),
        "{metrics}"
    );
    dev.stop().await;
}

async fn get_text(server: &Server, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{}{path}", server.app.http_addr())).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_1_is_sent_again_until_the_device_acknowledges_it() {
    let server = Server::start_with("downlink_retry_secs = 1", "").await;
    let mut dev =
        Paho::start(&server, PK, "dev1", &creds("dev1"), "/a1test/dev1/user/#:1", &[("MANUAL_ACK", "1")])
            .await;
    let v = post_ok(
        &server,
        &path("dev1", "/messages"),
        json!({"topic": "/a1test/dev1/user/cmd", "payload": "relay on", "qos": 1}),
    )
    .await;
    let first = dev.next_message().await;
    assert_eq!((&first["payload"], &first["dup"]), (&json!("relay on"), &json!(false)));
    let (_, state) =
        api::get(&server, &path("dev1", &format!("/messages/{}", v["messageId"].as_str().unwrap()))).await;
    assert_eq!(state["state"], "sent", "no PUBACK yet");
    // The device acknowledges only the retransmission.
    let again = dev.next_message().await;
    assert_eq!(
        (&again["payload"], &again["qos"], &again["dup"]),
        (&json!("relay on"), &json!(1), &json!(true))
    );
    state_becomes(&server, "dev1", &v["messageId"], "acknowledged").await;
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_device_is_refused_and_a_device_leaving_before_its_puback_is_reported() {
    let mut server = Server::start().await;
    let (status, v) = api::post(
        &server,
        &path("dev3", "/messages"),
        &json!({"topic": "/a1test/dev3/user/get", "payload": "x"}),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (409, Some("DeviceOffline")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("offline"), "{v}");
    let v = post_ok(&server, &path("dev3", "/rrpc"), json!({"payload": "ping", "timeoutMs": 1000})).await;
    assert_eq!(v["rrpcCode"], "OFFLINE");
    assert!(v["messageId"].as_str().unwrap().parse::<u64>().is_ok());
    let (status, v) = api::post(&server, &path("dev3", "/properties"), &json!({"items": {"t": 1}})).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("DeviceOffline")), "{v}");
    let (status, v) = api::post(&server, &path("dev3", "/services/reboot"), &json!({})).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("DeviceOffline")), "{v}");

    // Never acknowledged, then the device leaves: nothing is kept for it.
    let mut dev =
        Paho::start(&server, PK, "dev1", &creds("dev1"), "/a1test/dev1/user/get:1", &[("MANUAL_ACK", "1")])
            .await;
    let v = post_ok(
        &server,
        &path("dev1", "/messages"),
        json!({"topic": "/a1test/dev1/user/get", "payload": "late", "qos": 1}),
    )
    .await;
    assert_eq!(dev.next_message().await["payload"], "late");
    dev.stop().await;
    wait_offline(&mut server, "dev1").await;
    state_becomes(&server, "dev1", &v["messageId"], "deviceOffline").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_clear_api_errors() {
    let server = Server::start_with("", OTHER).await;
    let dev = Paho::start(&server, PK, "dev1", &creds("dev1"), "/a1test/dev1/user/get:1", &[]).await;
    let cases: Vec<(String, Value, u16, &str)> = vec![
        (
            path("dev1", "/messages"),
            json!({"topic": "/a1test/dev2/user/get", "payload": "x"}),
            400,
            "InvalidTopic",
        ),
        (
            path("dev1", "/messages"),
            json!({"topic": "/sys/a1test/dev1/thing/service/property/set", "payload": "x"}),
            400,
            "InvalidTopic",
        ),
        (
            path("dev1", "/messages"),
            json!({"topic": "/a1test/dev1/user/#", "payload": "x"}),
            400,
            "InvalidTopic",
        ),
        (
            path("dev1", "/messages"),
            json!({"topic": "/a1test/dev1/user/get", "payload": "x", "qos": 2}),
            400,
            "InvalidArgument",
        ),
        (
            path("dev1", "/messages"),
            json!({"topic": "/a1test/dev1/user/get", "payload": "x", "payloadBase64": "eA=="}),
            400,
            "InvalidBody",
        ),
        (path("dev1", "/messages"), json!({"topic": "/a1test/dev1/user/get"}), 400, "InvalidBody"),
        (
            path("dev1", "/messages"),
            json!({"topic": "/a1test/dev1/user/get", "payloadBase64": "not base64!"}),
            400,
            "InvalidBody",
        ),
        (
            path("dev1", "/messages"),
            json!({"topic": "/a1test/dev1/user/get", "payload": "x", "extra": 1}),
            400,
            "InvalidBody",
        ),
        (
            path("nodev", "/messages"),
            json!({"topic": "/a1test/nodev/user/get", "payload": "x"}),
            404,
            "NotFound",
        ),
        (
            "/products/nope/devices/dev1/messages".into(),
            json!({"topic": "/nope/dev1/user/get", "payload": "x"}),
            404,
            "NotFound",
        ),
        (path("dev1", "/rrpc"), json!({"payload": "x", "timeoutMs": 999}), 400, "InvalidArgument"),
        (path("dev1", "/rrpc"), json!({"payload": "x", "timeoutMs": 8001}), 400, "InvalidArgument"),
        (path("dev1", "/rrpc"), json!({"payload": "x"}), 400, "InvalidBody"),
        (path("dev1", "/properties"), json!({"items": {"t": 1}, "waitMs": 100}), 400, "InvalidArgument"),
        (path("dev1", "/properties"), json!({"items": {}}), 400, "InvalidBody"),
        (path("dev1", "/services/a-b"), json!({}), 400, "InvalidArgument"),
        (
            format!("/products/{PK}/broadcast"),
            json!({"topic": "/broadcast/a1other/x", "payload": "x"}),
            400,
            "InvalidTopic",
        ),
        (
            format!("/products/{PK}/broadcast"),
            json!({"topic": "/broadcast/a1test/+", "payload": "x"}),
            400,
            "InvalidTopic",
        ),
        (
            "/products/nope/broadcast".into(),
            json!({"topic": "/broadcast/nope/x", "payload": "x"}),
            404,
            "NotFound",
        ),
    ];
    for (p, body, status, code) in cases {
        let (got, v) = api::post(&server, &p, &body).await;
        assert_eq!((got, v["code"].as_str().unwrap_or("")), (status, code), "POST {p} {body}: {v}");
        assert!(!v["message"].as_str().unwrap_or("").is_empty(), "{v}");
    }
    let (status, v) = api::get(&server, &path("dev1", "/messages/12345")).await;
    assert_eq!((status, v["code"].as_str()), (404, Some("NotFound")), "{v}");
    let (status, _) = api::send(
        reqwest::Client::new()
            .post(api::url(&server, &path("dev1", "/messages")))
            .json(&json!({"topic": "/a1test/dev1/user/get", "payload": "x"}))
            .bearer_auth("wrong"),
    )
    .await;
    assert_eq!(status, 401);
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_subscribed_device_of_the_product_and_no_other() {
    let server = Server::start_with("", OTHER).await;
    // Several filters in one SUBSCRIBE: the router wakes the link once for several SUBACKs,
    // which once made the session drop its router link (and every later broadcast).
    let filters = "/broadcast/a1test/#:0;/a1test/dev1/user/#:0;/sys/a1test/dev1/thing/service/#:0";
    let mut d1 = Paho::start(&server, PK, "dev1", &creds("dev1"), filters, &[]).await;
    let mut d2 = Paho::start(&server, PK, "dev2", &creds("dev2"), "/broadcast/a1test/news:1", &[]).await;
    let mut d3 = Paho::start(&server, PK, "dev3", &creds("dev3"), "/a1test/dev3/user/get:0", &[]).await;
    let ocreds =
        sign_as("odev-cid", "a1other", "odev", "osecret", iotpipe::sign::SignMethod::HmacSha256, None);
    let mut other =
        Paho::start(&server, "a1other", "odev", &ocreds, "/broadcast/a1test/#:0;/broadcast/a1other/#:0", &[])
            .await;
    assert_eq!(other.granted, [128, 0], "another product's broadcasts are refused");

    let v = post_ok(
        &server,
        &format!("/products/{PK}/broadcast"),
        json!({"topic": "/broadcast/a1test/news", "payload": "hello"}),
    )
    .await;
    assert!(v["messageId"].as_str().unwrap().parse::<u64>().is_ok());
    for d in [&mut d1, &mut d2] {
        let m = d.next_message().await;
        assert_eq!((&m["topic"], &m["payload"]), (&json!("/broadcast/a1test/news"), &json!("hello")));
    }
    post_ok(
        &server,
        "/products/a1other/broadcast",
        json!({"topic": "/broadcast/a1other/x", "payloadBase64": b64(b"theirs")}),
    )
    .await;
    // The other product's device gets its own broadcast first: it never got a1test's.
    let m = other.next_message().await;
    assert_eq!((&m["topic"], &m["payload"]), (&json!("/broadcast/a1other/x"), &json!("theirs")));
    // And a1test's devices do not get a1other's: the next one they see is a1test's second.
    post_ok(
        &server,
        &format!("/products/{PK}/broadcast"),
        json!({"topic": "/broadcast/a1test/news", "payload": "second"}),
    )
    .await;
    assert_eq!(d1.next_message().await["payload"], "second");
    assert_eq!(d2.next_message().await["payload"], "second");
    // dev3 did not subscribe: a direct message is the first it sees.
    post_ok(
        &server,
        &path("dev3", "/messages"),
        json!({"topic": "/a1test/dev3/user/get", "payload": "direct"}),
    )
    .await;
    assert_eq!(d3.next_message().await["payload"], "direct");
    for d in [d1, d2, d3, other] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrpc_returns_the_answer_or_timeout() {
    let server = Server::start().await;
    let rrpc = "/sys/a1test/{}/rrpc/request/+:0";
    let answering = [("ANSWER", "1")];
    let dev1 =
        Paho::start(&server, PK, "dev1", &creds("dev1"), &rrpc.replace("{}", "dev1"), &answering).await;
    let mut dev2 = Paho::start(&server, PK, "dev2", &creds("dev2"), &rrpc.replace("{}", "dev2"), &[]).await;
    let dev3 = Paho::start(&server, PK, "dev3", &creds("dev3"), "/a1test/dev3/user/get:0", &[]).await;

    let v = post_ok(&server, &path("dev1", "/rrpc"), json!({"payload": "ping", "timeoutMs": 5000})).await;
    assert_eq!(v["rrpcCode"], "SUCCESS", "{v}");
    assert_eq!(v["payloadBase64"], b64(b"pong:ping"));
    let v = post_ok(
        &server,
        &path("dev1", "/rrpc"),
        json!({"payloadBase64": b64(&[0, 1, 255]), "timeoutMs": 5000}),
    )
    .await;
    assert_eq!(v["rrpcCode"], "SUCCESS", "{v}");
    // The answer is the call's, not an upstream message.
    assert_eq!(server.app.pipeline_stats().upstream.load(Ordering::Relaxed), 0);

    // dev2 gets the request on /sys/${pk}/${dn}/rrpc/request/${messageId} and stays silent.
    let started = tokio::time::Instant::now();
    let v = post_ok(&server, &path("dev2", "/rrpc"), json!({"payload": "ping", "timeoutMs": 1000})).await;
    assert_eq!((v["rrpcCode"].as_str(), v["state"].as_str()), (Some("TIMEOUT"), Some("sent")), "{v}");
    assert!(started.elapsed() >= Duration::from_millis(1000));
    let m = dev2.next_message().await;
    assert_eq!(m["topic"], format!("/sys/a1test/dev2/rrpc/request/{}", v["messageId"].as_str().unwrap()));
    // dev3 did not subscribe to its requests: none can be answered.
    let v = post_ok(&server, &path("dev3", "/rrpc"), json!({"payload": "ping", "timeoutMs": 8000})).await;
    assert_eq!(
        (v["rrpcCode"].as_str(), v["state"].as_str()),
        (Some("TIMEOUT"), Some("notSubscribed")),
        "{v}"
    );
    for d in [dev1, dev2, dev3] {
        d.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_answer_another_devices_rrpc_nor_subscribe_to_its_downlink_topics() {
    let server = Server::start_with("", OTHER).await;
    let mut dev2 =
        Paho::start(&server, PK, "dev2", &creds("dev2"), "/sys/a1test/dev2/rrpc/request/+:0", &[]).await;
    let filters =
        "/sys/a1test/dev2/rrpc/request/+:0;/a1test/dev2/user/get:1;/sys/a1test/dev2/thing/service/#:0;\
                   /broadcast/a1other/#:0;/sys/a1test/dev1/rrpc/response/+:0";
    let dev1 = Paho::start(&server, PK, "dev1", &creds("dev1"), filters, &[]).await;
    assert_eq!(dev1.granted, [128, 128, 128, 128, 128]);

    let call = {
        let url = api::url(&server, &path("dev2", "/rrpc"));
        tokio::spawn(api::send(
            reqwest::Client::new().post(url).json(&json!({"payload": "q", "timeoutMs": 3000})),
        ))
    };
    let request = dev2.next_message().await;
    let id = request["topic"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
    // dev3 answers dev2's request: refused, and an MQTT 3.1.1 client is disconnected for it.
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev3"))).await.unwrap();
    client
        .publish(format!("/sys/a1test/dev2/rrpc/response/{id}"), rumqttc::QoS::AtMostOnce, false, "forged")
        .await
        .unwrap();
    until_v4_closed(&mut ev).await;
    let (status, v) = call.await.unwrap();
    assert_eq!((status, v["rrpcCode"].as_str()), (200, Some("TIMEOUT")), "{v}");
    dev1.stop().await;
    dev2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_set_and_service_invoke_reach_the_device_and_its_reply_comes_back() {
    let mut server = Server::start().await;
    let mut dev = Paho::start(
        &server,
        PK,
        "dev1",
        &creds("dev1"),
        "/sys/a1test/dev1/thing/service/#:0",
        &[("ANSWER", "1")],
    )
    .await;

    // Asynchronous, as on the platform: the answer carries the request id.
    let v =
        post_ok(&server, &path("dev1", "/properties"), json!({"items": {"LightSwitch": 1, "Temp": 23.5}}))
            .await;
    let request_id = v["requestId"].as_str().unwrap().to_string();
    let m = dev.next_message().await;
    assert_eq!(m["topic"], "/sys/a1test/dev1/thing/service/property/set");
    let body: Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"id": request_id, "version": "1.0", "params": {"LightSwitch": 1, "Temp": 23.5}, "method": "thing.service.property.set"})
    );
    // The device's reply travels upstream (to subscriptions and rules).
    let reply = server
        .next_where("set_reply", |m| {
            m.kind == Kind::Upstream && m.topic.ends_with("/thing/service/property/set_reply")
        })
        .await;
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!((reply["id"].as_str(), &reply["code"]), (Some(request_id.as_str()), &json!(200)));

    // Synchronous, for scripts: the device's reply in the answer.
    let v =
        post_ok(&server, &path("dev1", "/services/reboot"), json!({"args": {"delay": 5}, "waitMs": 5000}))
            .await;
    assert_eq!(v["replyCode"], "SUCCESS", "{v}");
    assert_eq!(v["reply"]["id"], v["requestId"]);
    assert_eq!((&v["reply"]["code"], &v["reply"]["data"]["echo"]), (&json!(200), &json!({"delay": 5})));
    let m = dev.next_message().await;
    assert_eq!(m["topic"], "/sys/a1test/dev1/thing/service/reboot");
    let body: Value = serde_json::from_str(m["payload"].as_str().unwrap()).unwrap();
    assert_eq!((&body["method"], &body["params"]), (&json!("thing.service.reboot"), &json!({"delay": 5})));
    let v =
        post_ok(&server, &path("dev1", "/properties"), json!({"items": {"LightSwitch": 0}, "waitMs": 5000}))
            .await;
    assert_eq!((v["replyCode"].as_str(), &v["reply"]["code"]), (Some("SUCCESS"), &json!(200)), "{v}");
    dev.stop().await;

    // A device without a subscription for its service calls cannot reply: TIMEOUT at once.
    let other = Paho::start(&server, PK, "dev2", &creds("dev2"), "/a1test/dev2/user/get:0", &[]).await;
    let v = post_ok(&server, &path("dev2", "/services/reboot"), json!({"waitMs": 8000})).await;
    assert_eq!(
        (v["replyCode"].as_str(), v["state"].as_str()),
        (Some("TIMEOUT"), Some("notSubscribed")),
        "{v}"
    );
    other.stop().await;
}

/// A business server's loop: set a property and invoke a service through the API; the paho
/// device replies; a python-qpid-proton consumer of the subscribed group gets both replies in
/// the platform's downlink-reply form, matched by the request ids the API answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thing_call_replies_reach_a_proton_consumer_as_downlink_replies() {
    let mut server = Server::start().await;
    let dev = Paho::start(
        &server,
        PK,
        "dev1",
        &creds("dev1"),
        "/sys/a1test/dev1/thing/service/#:0",
        &[("ANSWER", "1")],
    )
    .await;
    let set = post_ok(&server, &path("dev1", "/properties"), json!({"items": {"LightSwitch": 1}})).await;
    let invoke = post_ok(&server, &path("dev1", "/services/reboot"), json!({"args": {"delay": 5}})).await;
    for suffix in ["/thing/service/property/set_reply", "/thing/service/reboot_reply"] {
        server.next_where(suffix, |m| m.kind == Kind::Upstream && m.topic.ends_with(suffix)).await;
    }
    dev.stop().await;

    let env = [
        ("HOST", "127.0.0.1".to_string()),
        ("PORT", server.app.amqp_addr().port().to_string()),
        ("ACCESS_KEY_ID", common::amqp::ACCESS_KEY.0.to_string()),
        ("ACCESS_KEY_SECRET", common::amqp::ACCESS_KEY.1.to_string()),
        ("GROUP", "DEFAULT_GROUP".to_string()),
        ("COUNT", "2".to_string()),
        ("TOPIC_SUFFIX", "/thing/downlink/reply/message".to_string()),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg("proton_consumer.py")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop"))
            .output()
            .expect("python3 could not run: scripts/test-deps.sh installs python-qpid-proton")
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let replies: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let m: Value = serde_json::from_str(l).unwrap();
            assert_eq!(m["topic"], "/a1test/dev1/thing/downlink/reply/message");
            serde_json::from_str(m["body"].as_str().unwrap()).unwrap()
        })
        .collect();
    let find = |request_id: &Value| {
        replies
            .iter()
            .find(|r| &r["requestId"] == request_id)
            .unwrap_or_else(|| panic!("no reply {request_id}: {replies:?}"))
    };
    let r = find(&set["requestId"]);
    assert_eq!(
        (&r["topic"], &r["code"], &r["productKey"], &r["deviceName"]),
        (&json!("/sys/a1test/dev1/thing/service/property/set"), &json!(200), &json!(PK), &json!("dev1"))
    );
    assert!(r["iotId"].is_string() && r["gmtCreate"].is_u64(), "{r}");
    let r = find(&invoke["requestId"]);
    assert_eq!(
        (&r["topic"], &r["code"], &r["data"]),
        (&json!("/sys/a1test/dev1/thing/service/reboot"), &json!(200), &json!({"echo": {"delay": 5}}))
    );
}

/// `iotpipe devices ...` with `--server`/`--token`: (exit code, stdout, stderr).
async fn cli(server: &Server, args: &[&str]) -> (Option<i32>, String, String) {
    let http = format!("http://{}", server.app.http_addr());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_iotpipe"))
        .arg("devices")
        .args(args)
        .args(["--server", &http, "--token", "test-token"])
        .env_remove("IOTPIPE_SERVER")
        .env_remove("IOTPIPE_TOKEN")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(WAIT, out).await.expect("the CLI hung").unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of `key` in a fields view (`key  value` lines).
fn field(view: &str, key: &str) -> String {
    view.lines()
        .find_map(|l| {
            l.strip_prefix(key).filter(|rest| rest.starts_with(' ')).map(|rest| rest.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in {view}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_broadcasts_calls_and_reports() {
    let server = Server::start().await;
    let filters =
        "/a1test/dev1/user/#:1;/sys/a1test/dev1/rrpc/request/+:0;/sys/a1test/dev1/thing/service/#:0;\
                   /broadcast/a1test/#:0";
    let mut dev = Paho::start(&server, PK, "dev1", &creds("dev1"), filters, &[("ANSWER", "1")]).await;

    let (code, out, err) = cli(
        &server,
        &["publish", PK, "dev1", "/a1test/dev1/user/get", "--payload", "on", "--qos", "1", "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["messageId"].as_str().unwrap().to_string();
    let m = dev.next_message().await;
    assert_eq!((&m["payload"], &m["qos"]), (&json!("on"), &json!(1)));
    state_becomes(&server, "dev1", &json!(id), "acknowledged").await;
    let (code, out, _) = cli(&server, &["message", PK, "dev1", &id]).await;
    assert_eq!((code, field(&out, "state")), (Some(0), "acknowledged".to_string()), "{out}");

    let (code, out, err) =
        cli(&server, &["broadcast", PK, "/broadcast/a1test/all", "--payload-base64", &b64(b"hi all")]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(field(&out, "messageId").parse::<u64>().is_ok(), "{out}");
    assert_eq!(dev.next_message().await["payload"], "hi all");

    let (code, out, err) =
        cli(&server, &["rrpc", PK, "dev1", "--payload", "ping", "--timeout-ms", "5000"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (field(&out, "rrpcCode"), field(&out, "payload")),
        ("SUCCESS".into(), "pong:ping".into()),
        "{out}"
    );

    let (code, out, err) = cli(
        &server,
        &["set-property", PK, "dev1", "LightSwitch=1", "Label=lamp", "--wait-ms", "5000", "--json"],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&v["replyCode"], &v["reply"]["data"]["echo"]),
        (&json!("SUCCESS"), &json!({"LightSwitch": 1, "Label": "lamp"}))
    );

    let (code, out, err) = cli(&server, &["invoke", PK, "dev1", "reboot", "--args", r#"{"delay":5}"#]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(!field(&out, "requestId").is_empty(), "{out}");
    // (after the RRPC request and the property set it answered)
    while dev.next_message().await["topic"] != "/sys/a1test/dev1/thing/service/reboot" {}

    // Refusals are one line that names the server's code.
    let (code, _, err) =
        cli(&server, &["publish", PK, "dev3", "/a1test/dev3/user/get", "--payload", "x"]).await;
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
    assert!(err.starts_with("error: ") && err.contains("DeviceOffline"), "{err}");
    let (code, _, err) = cli(&server, &["invoke", PK, "dev1", "reboot", "--args", "[1]"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--args"), "{err}");
    let (code, _, _) = cli(&server, &["publish", PK, "dev1", "/a1test/dev1/user/get"]).await;
    assert_eq!(code, Some(2), "a payload is required");
    dev.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_5_device_gets_qos_1_and_acknowledges_it() {
    let server = Server::start().await;
    let mut dev =
        Paho::start(&server, PK, "dev2", &creds("dev2"), "/a1test/dev2/user/get:1", &[("PROTOCOL", "5")])
            .await;
    assert_eq!(dev.granted, [1]);
    let v = post_ok(
        &server,
        &path("dev2", "/messages"),
        json!({"topic": "/a1test/dev2/user/get", "payload": "v5", "qos": 1}),
    )
    .await;
    let m = dev.next_message().await;
    assert_eq!((&m["payload"], &m["qos"]), (&json!("v5"), &json!(1)));
    state_becomes(&server, "dev2", &v["messageId"], "acknowledged").await;
    dev.stop().await;
}

/// A device that stops acknowledging holds at most 16 unacknowledged messages in its session
/// and 32 in its mailbox; the next publish is refused with a clear error, not queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_does_not_acknowledge_has_a_bounded_backlog() {
    let server = Server::start().await;
    // Acknowledges only retransmissions, which come after the default 10 s: none in this test.
    let dev =
        Paho::start(&server, PK, "dev1", &creds("dev1"), "/a1test/dev1/user/get:1", &[("MANUAL_ACK", "1")])
            .await;
    let body = json!({"topic": "/a1test/dev1/user/get", "payload": "x", "qos": 1});
    let mut accepted = 0;
    let refusal = loop {
        let (status, v) = api::post(&server, &path("dev1", "/messages"), &body).await;
        match status {
            200 => accepted += 1,
            _ => break (status, v),
        }
        assert!(accepted <= 16 + 32, "more than the bound was accepted");
    };
    assert!(accepted >= 32, "only {accepted} accepted");
    assert_eq!((refusal.0, refusal.1["code"].as_str()), (429, Some("TooManyInFlight")), "{}", refusal.1);
    assert!(refusal.1["message"].as_str().unwrap().contains("32 downlink messages waiting"), "{}", refusal.1);
    dev.stop().await;
}

/// An MQTT 5 client announcing Receive Maximum 1 gets the next QoS 1 message only after it
/// acknowledged the previous one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt_5_receive_maximum_is_honoured() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let server = Server::start().await;
    let mut options = v5_options(server.addr(), &creds("dev1"));
    options.set_receive_maximum(Some(1)).set_manual_acks(true);
    let (client, mut ev) = connect_v5(options).await.unwrap();
    client.subscribe("/a1test/dev1/user/get", Q5::AtLeastOnce).await.unwrap();
    until_v5(&mut ev, "SUBACK", |p| matches!(p, P5::SubAck(_))).await;
    let body = json!({"topic": "/a1test/dev1/user/get", "payload": "one", "qos": 1});
    let first = post_ok(&server, &path("dev1", "/messages"), body).await;
    let body = json!({"topic": "/a1test/dev1/user/get", "payload": "two", "qos": 1});
    let second = post_ok(&server, &path("dev1", "/messages"), body).await;
    let P5::Publish(p) = until_v5(&mut ev, "PUBLISH", |p| matches!(p, P5::Publish(_))).await else {
        unreachable!()
    };
    assert_eq!(&p.payload[..], b"one");
    let (_, state) =
        api::get(&server, &path("dev1", &format!("/messages/{}", second["messageId"].as_str().unwrap())))
            .await;
    assert_eq!(state["state"], "queued", "the second waits for the first's PUBACK");
    client.ack(&p).await.unwrap();
    let P5::Publish(p) = until_v5(&mut ev, "PUBLISH", |p| matches!(p, P5::Publish(_))).await else {
        unreachable!()
    };
    assert_eq!(&p.payload[..], b"two");
    state_becomes(&server, "dev1", &first["messageId"], "acknowledged").await;
}

/// A device costs the router nothing until it subscribes: its link opens with its first
/// SUBSCRIBE, carries router messages from then on, and closes with the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_link_opens_on_subscribe_and_closes_with_the_connection() {
    let mut server = Server::start().await;
    let (_quiet, _quiet_loop) = connect_v4(v4_options(server.addr(), &creds("dev2"))).await.unwrap();
    let (client, mut eventloop) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    assert_eq!(server.app.ingress().router_links(), 0, "devices that did not subscribe have no link");

    client.subscribe("/broadcast/a1test/#", rumqttc::QoS::AtMostOnce).await.unwrap();
    until_v4(&mut eventloop, "SUBACK", |p| matches!(p, rumqttc::Packet::SubAck(_))).await;
    assert_eq!(server.app.ingress().router_links(), 1, "the subscribing device has one");
    client.subscribe("/a1test/dev1/user/get", rumqttc::QoS::AtMostOnce).await.unwrap();
    until_v4(&mut eventloop, "SUBACK", |p| matches!(p, rumqttc::Packet::SubAck(_))).await;
    assert_eq!(server.app.ingress().router_links(), 1, "a second subscription uses the same link");

    post_ok(
        &server,
        &format!("/products/{PK}/broadcast"),
        json!({"topic": "/broadcast/a1test/news", "payload": "hello"}),
    )
    .await;
    match until_v4(&mut eventloop, "broadcast", |p| matches!(p, rumqttc::Packet::Publish(_))).await {
        rumqttc::Packet::Publish(p) => {
            assert_eq!((p.topic.as_str(), &p.payload[..]), ("/broadcast/a1test/news", &b"hello"[..]))
        }
        other => panic!("{other:?}"),
    }

    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await;
    wait_offline(&mut server, "dev1").await;
    assert_eq!(server.app.ingress().router_links(), 0, "the link closed with the connection");
}
