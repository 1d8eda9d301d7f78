//! Consumer groups over AMQP 1.0 with a real client (fe2o3-amqp) over real sockets.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::amqp::*;
use common::*;
use iotpipe::groups::DEFAULT_GROUP;
use iotpipe::sign::SignMethod;

/// Waits until the group's status satisfies `pred` (state changes inside the server have no
/// event a test could await).
async fn status_until(
    server: &Server,
    group: &str,
    what: &str,
    pred: impl Fn(&iotpipe::groups::Status) -> bool,
) {
    let group = server.app.groups().get(group).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = group.status();
        if pred(&status) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: status stayed {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn each_sign_method_logs_in_and_receives_in_the_contract_format() {
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    for method in [SignMethod::HmacMd5, SignMethod::HmacSha1, SignMethod::HmacSha256] {
        let (u, p) = login(&format!("c-{method}"), DEFAULT_GROUP, method);
        let mut c = attach(open(amqp, &u, &p).await.unwrap_or_else(|e| panic!("{method}: {e}"))).await;
        publish_n(server.addr(), "dev1", 1).await;
        // Status messages of dev1 are subscribed too: skip to the data.
        let got = loop {
            let d = c.next().await;
            c.accept(&d).await;
            let r = read(&d);
            if r.topic == "/a1test/dev1/user/update" {
                break r;
            }
        };
        assert_eq!(got.body, br#"{"n":0}"#, "{method}");
        assert!(got.message_id.parse::<u64>().is_ok());
        assert_eq!(got.amqp_message_id.as_deref(), Some(got.message_id.as_str()));
        assert!(got.generate_time > 1_600_000_000_000);
        assert_eq!(got.tag, None);
        c.close().await;
    }
}

#[tokio::test]
async fn bad_logins_are_refused() {
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    let (u, _) = login("c1", DEFAULT_GROUP, SignMethod::HmacSha1);
    assert!(open(amqp, &u, "AAAA").await.unwrap_err().contains("Auth"), "bad signature");
    let (u, p) = login("c1", "no_such_group", SignMethod::HmacSha1);
    assert!(open(amqp, &u, &p).await.is_err(), "unknown group");
    let (u, p) = login("c1", DEFAULT_GROUP, SignMethod::HmacSha1);
    let sts = u.replace("authMode=aksign", "authMode=ststoken");
    assert!(open(amqp, &sts, &p).await.is_err(), "ststoken");
    let unknown_key = u.replace("authId=LTAItest", "authId=LTAIother");
    assert!(open(amqp, &unknown_key, &p).await.is_err(), "unknown access key");
    // And a good one still works.
    assert!(open(amqp, &u, &p).await.is_ok());
}

fn condition_of(e: &impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

#[tokio::test]
async fn the_65th_client_of_a_group_is_refused() {
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    let mut consumers = Vec::new();
    for i in 0..64 {
        consumers.push(consumer(amqp, &format!("c{i}"), DEFAULT_GROUP).await);
    }
    status_until(&server, DEFAULT_GROUP, "64 online", |s| s.online_clients.len() == 64).await;
    let (u, p) = login("c64", DEFAULT_GROUP, SignMethod::HmacSha1);
    let text = refusal(open(amqp, &u, &p).await.unwrap()).await;
    assert!(text.contains("ResourceLimitExceeded"), "{text}");
    assert!(
        text.contains("DEFAULT_GROUP") && text.contains("64"),
        "the description names the group and the limit: {text}"
    );
    // Leaving frees a place.
    consumers.pop().unwrap().close().await;
    status_until(&server, DEFAULT_GROUP, "63 online", |s| s.online_clients.len() == 63).await;
    let _again = consumer(amqp, "c64", DEFAULT_GROUP).await;
    status_until(&server, DEFAULT_GROUP, "64 online", |s| s.online_clients.len() == 64).await;
}

#[tokio::test]
async fn a_second_receiver_and_a_sender_link_are_refused() {
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    let mut c = consumer(amqp, "c1", DEFAULT_GROUP).await;
    let mut second =
        fe2o3_amqp::Receiver::builder().name("rx2").source("default").attach(&mut c.session).await.unwrap();
    let err = tokio::time::timeout(
        WAIT,
        second.recv::<fe2o3_amqp::types::messaging::Body<fe2o3_amqp::types::primitives::Value>>(),
    )
    .await
    .expect("refusal in time")
    .expect_err("second receiver refused");
    assert!(condition_of(&err).contains("NotAllowed"), "{err:?}");

    let mut sender = fe2o3_amqp::Sender::attach(&mut c.session, "tx", "default").await.unwrap();
    let err = tokio::time::timeout(WAIT, sender.send("hello"))
        .await
        .expect("refusal in time")
        .expect_err("sender refused");
    assert!(condition_of(&err).contains("NotAllowed") || condition_of(&err).contains("Detached"), "{err:?}");

    // The first receiver still works.
    publish_n(server.addr(), "dev2", 1).await;
    let d = c.next().await;
    c.accept(&d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_share_a_groups_messages() {
    const N: usize = 300;
    let server = Server::start_full("", "", "[[consumer_groups]]\nid = \"g_share\"\nname = \"share_group\"\n[[subscriptions]]\nproduct_key = \"pshare\"\nmessage_types = [\"upstream\"]\nconsumer_groups = [\"g_share\"]\n[[products]]\nkey = \"pshare\"\n[[products.devices]]\nname = \"sharer\"\nsecret = \"s\"\n").await;
    let amqp = server.app.amqp_addr();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let mut c = consumer(amqp, &format!("c{i}"), "g_share").await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            while let Some(d) = c.try_next(Duration::from_secs(3)).await {
                c.accept(&d).await;
                ids.push(read(&d).message_id);
            }
            ids
        }));
    }
    status_until(&server, "g_share", "3 online", |s| s.online_clients.len() == 3).await;
    let c = iotpipe::ingress::auth::Credentials {
        client_id: "sharer".into(),
        product_key: "pshare".into(),
        device_name: "sharer".into(),
        method: SignMethod::HmacSha1,
        timestamp: None,
    };
    let creds = Creds { client_id: c.mqtt_client_id(), username: c.username(), password: c.password("s") };
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds)).await.unwrap();
    for i in 0..N {
        client
            .publish("/pshare/sharer/user/update", rumqttc::QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
        until_v4(&mut ev, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    }
    let mut all = Vec::new();
    let mut per_client = Vec::new();
    for t in tasks {
        let ids = t.await.unwrap();
        per_client.push(ids.len());
        all.extend(ids);
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), N, "every message delivered");
    assert_eq!(all.len(), N, "no duplicates without cause");
    assert!(per_client.iter().all(|n| *n > 0), "each client got a share: {per_client:?}");
    let status = server.app.groups().get("g_share").unwrap().status();
    assert_eq!(status.accumulated, 0);
}

#[tokio::test]
async fn unsettled_messages_are_redelivered_after_a_disconnect() {
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    publish_n(server.addr(), "dev1", 5).await;
    let mut a = consumer(amqp, "a", DEFAULT_GROUP).await;
    let mut seen = HashMap::new();
    // Status messages are in the group too (online/offline of dev1): 7 in all.
    for _ in 0..7 {
        let d = a.next().await;
        let r = read(&d);
        seen.insert(r.message_id.clone(), r);
    }
    a.connection.close().await.ok(); // abrupt for the link: nothing settled
    drop(a);
    let mut b = consumer(amqp, "b", DEFAULT_GROUP).await;
    for _ in 0..7 {
        let d = b.next().await;
        let r = read(&d);
        assert_eq!(seen.get(&r.message_id), Some(&r), "redelivered unchanged, with the same messageId");
        b.accept(&d).await;
    }
    status_until(&server, DEFAULT_GROUP, "all accepted", |s| s.accumulated == 0).await;
    let g = server.app.groups().get(DEFAULT_GROUP).unwrap();
    assert!(g.counters.redelivered.load(std::sync::atomic::Ordering::Relaxed) >= 7);
}

#[tokio::test]
async fn unsettled_messages_are_redelivered_after_the_ack_timeout() {
    let server = Server::start_full("", "ack_timeout_secs = 1", "").await;
    let amqp = server.app.amqp_addr();
    let mut c = consumer(amqp, "slow", DEFAULT_GROUP).await;
    publish_n(server.addr(), "dev1", 1).await;
    let first = loop {
        let d = c.next().await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            break r;
        }
        c.accept(&d).await;
    };
    // Not settled: after 1 s it comes again, same id.
    let again = loop {
        let d = c.next().await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            c.accept(&d).await;
            break r;
        }
        c.accept(&d).await;
    };
    assert_eq!(again, first);
    status_until(&server, DEFAULT_GROUP, "accepted", |s| s.accumulated == 0 && s.in_flight == 0).await;
}

#[tokio::test]
async fn released_comes_back_and_rejected_is_dropped() {
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    let mut c = consumer(amqp, "c", DEFAULT_GROUP).await;
    publish_n(server.addr(), "dev1", 2).await;
    let mut data = Vec::new();
    while data.len() < 2 {
        let d = c.next().await;
        if read(&d).topic.ends_with("/user/update") {
            data.push(d);
        } else {
            c.accept(&d).await;
        }
    }
    c.receiver.release(&data[0]).await.unwrap();
    c.receiver.reject(&data[1], None).await.unwrap();
    let again = loop {
        let d = c.next().await;
        c.accept(&d).await;
        if read(&d).topic.ends_with("/user/update") {
            break read(&d);
        }
    };
    assert_eq!(again, read(&data[0]));
    status_until(&server, DEFAULT_GROUP, "settled", |s| s.accumulated == 0).await;
    let g = server.app.groups().get(DEFAULT_GROUP).unwrap();
    assert_eq!(g.counters.rejected.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_backlog_survives_a_restart_and_is_delivered_later() {
    let server = Server::start().await;
    publish_n(server.addr(), "dev1", 20).await;
    // 20 data messages + online + offline.
    status_until(&server, DEFAULT_GROUP, "backlog", |s| s.accumulated == 22).await;
    let server = server.restart().await;
    let status = server.app.groups().get(DEFAULT_GROUP).unwrap().status();
    assert_eq!(status.accumulated, 22);
    let mut c = consumer(server.app.amqp_addr(), "late", DEFAULT_GROUP).await;
    let mut bodies = HashSet::new();
    for _ in 0..22 {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            bodies.insert(r.body);
        }
    }
    assert_eq!(bodies.len(), 20);
    status_until(&server, DEFAULT_GROUP, "drained", |s| s.accumulated == 0).await;
}

#[tokio::test]
async fn clear_drops_the_backlog() {
    let server = Server::start().await;
    publish_n(server.addr(), "dev1", 10).await;
    status_until(&server, DEFAULT_GROUP, "backlog", |s| s.accumulated == 12).await;
    let group = server.app.groups().get(DEFAULT_GROUP).unwrap();
    assert_eq!(group.clear().await.unwrap(), 12);
    assert_eq!(group.status().accumulated, 0);
    let mut c = consumer(server.app.amqp_addr(), "after", DEFAULT_GROUP).await;
    publish_n(server.addr(), "dev2", 1).await;
    let first = read(&c.next().await);
    assert!(first.topic.contains("dev2"), "only what came after the clear: {first:?}");
}

#[tokio::test]
async fn messages_expire_after_the_retention_period() {
    let server = Server::start_full("", "retention_secs = 1", "").await;
    publish_n(server.addr(), "dev1", 3).await;
    status_until(&server, DEFAULT_GROUP, "expired", |s| s.accumulated == 0).await;
    let group = server.app.groups().get(DEFAULT_GROUP).unwrap();
    assert_eq!(group.counters.expired.load(std::sync::atomic::Ordering::Relaxed), 5);
    let mut c = consumer(server.app.amqp_addr(), "late", DEFAULT_GROUP).await;
    let got = c.try_next(Duration::from_millis(300)).await;
    assert!(got.is_none(), "expired messages are not delivered: {:?}", got.as_ref().map(read));
}

#[tokio::test]
async fn status_lists_online_clients() {
    let server = Server::start().await;
    let c = consumer(server.app.amqp_addr(), "watcher-1", DEFAULT_GROUP).await;
    status_until(&server, DEFAULT_GROUP, "online", |s| s.online_clients.len() == 1).await;
    let status = server.app.groups().get(DEFAULT_GROUP).unwrap().status();
    let client = &status.online_clients[0];
    assert_eq!(client.client_id, "watcher-1");
    assert_eq!(client.peer.ip().to_string(), "127.0.0.1");
    assert!(client.online_since_ms > 0);
    c.close().await;
    status_until(&server, DEFAULT_GROUP, "offline", |s| s.online_clients.is_empty()).await;
}

#[tokio::test]
async fn amqps_from_the_first_byte_with_a_self_signed_certificate() {
    use std::sync::Arc;
    use tokio_rustls::rustls;
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = self_signed(dir.path(), &["localhost"]);
    let amqp = tls_section(&cert_path, &key_path);
    let server = Server::start_full("", &amqp, "").await;
    let tls_addr = server.app.amqp_tls_addr().unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let (u, p) = login("tls-client", DEFAULT_GROUP, SignMethod::HmacSha256);
    let connection = fe2o3_amqp::Connection::builder()
        .container_id("tls-consumer")
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain { username: u, password: p })
        .open_with_stream(tls)
        .await
        .unwrap();
    let mut c = attach(connection).await;
    publish_n(server.addr(), "dev1", 1).await;
    let got = loop {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            break r;
        }
    };
    assert_eq!(got.body, br#"{"n":0}"#);
}

/// `[amqp] max_connections` bounds the connections served at once: one more waits in the accept
/// queue, unanswered, until a served one closes.
#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SASL_HEADER: &[u8; 8] = b"AMQP\x03\x01\x00\x00";
    async fn hello(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.write_all(SASL_HEADER).await.unwrap();
        tcp
    }
    async fn answered(tcp: &mut tokio::net::TcpStream, within: Duration) -> bool {
        let mut header = [0u8; 8];
        matches!(tokio::time::timeout(within, tcp.read_exact(&mut header)).await, Ok(Ok(_)))
    }

    let server = Server::start_full("", "max_connections = 1", "").await;
    let amqp = server.app.amqp_addr();
    let mut first = hello(amqp).await;
    assert!(answered(&mut first, WAIT).await, "the first connection is served");
    let mut second = hello(amqp).await;
    assert!(!answered(&mut second, Duration::from_millis(500)).await, "the second one waits");
    drop(first);
    assert!(answered(&mut second, WAIT).await, "the second one is served once the first closed");
}

/// A client that logs in and opens a connection but never begins a session: at the auth
/// deadline the server closes the TCP socket itself (issue 17, finding 2), whatever the client
/// does with the close frame, and the connections gauge says so.
#[tokio::test]
async fn a_login_without_a_session_has_its_socket_closed_at_the_deadline() {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let server = Server::start_full("", "auth_timeout_secs = 1", "").await;
    let upstream = tokio::net::TcpStream::connect(server.app.amqp_addr()).await.unwrap();
    // The client speaks through a relay that, once the connection is open, passes nothing more
    // on and never closes its side of the server's socket: a peer that ignores the close frame.
    let muted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mute = muted.clone();
    let (client_side, relay_side) = tokio::io::duplex(64 * 1024);
    let (mut from_server, mut to_server) = upstream.into_split();
    let (mut from_client, mut to_client) = tokio::io::split(relay_side);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = from_client.read(&mut buf).await {
            if mute.load(Ordering::SeqCst) {
                continue;
            }
            if to_server.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await;
        drop(to_server);
    });
    let server_closed = tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        loop {
            match from_server.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let _ = to_client.write_all(&buf[..n]).await;
                }
            }
        }
    });

    let (u, p) = login("no-session", DEFAULT_GROUP, SignMethod::HmacSha1);
    let connection = fe2o3_amqp::Connection::builder()
        .container_id("no-session")
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain { username: u, password: p })
        .open_with_stream(client_side)
        .await
        .unwrap();
    muted.store(true, Ordering::SeqCst);
    assert_eq!(server.app.amqp_stats().connections.load(Ordering::Relaxed), 1);
    tokio::time::timeout(WAIT, server_closed).await.expect("the server kept the socket open").unwrap();
    assert_eq!(server.app.amqp_stats().connections.load(Ordering::Relaxed), 0);
    drop(connection);
}

/// Signed, but stale or ambiguous: a login whose timestamp is outside `timestamp_window_secs`,
/// not a number, or whose username names a parameter twice is refused (issue 17, finding 6).
#[tokio::test]
async fn replayed_and_ambiguous_logins_are_refused() {
    use iotpipe::amqp::auth::ConsumerCredentials;
    let server = Server::start_full("", "timestamp_window_secs = 60", "").await;
    let amqp = server.app.amqp_addr();
    let signed = |timestamp: String| {
        let c = ConsumerCredentials {
            client_id: "replay".into(),
            access_key_id: ACCESS_KEY.0.into(),
            group_id: DEFAULT_GROUP.into(),
            method: SignMethod::HmacSha256,
            timestamp,
            instance_id: None,
        };
        (c.username(), c.password(ACCESS_KEY.1))
    };
    let now = iotpipe::message::now_ms();
    for (what, ts) in [("an hour old", now - 3_600_000), ("an hour ahead", now + 3_600_000)] {
        let (u, p) = signed(ts.to_string());
        let e = open(amqp, &u, &p).await.expect_err(what);
        assert!(e.contains("Auth"), "{what}: {e}");
    }
    let (u, p) = signed("abc".into());
    assert!(open(amqp, &u, &p).await.is_err(), "a timestamp that is not a number");
    // Within the window, either side, it is accepted.
    for ts in [now - 30_000, now + 30_000] {
        let (u, p) = signed(ts.to_string());
        assert!(open(amqp, &u, &p).await.is_ok(), "{ts} is within 60 s");
    }
    // Two consumerGroupId parameters: refused, whichever would have counted.
    let (u, p) = signed(now.to_string());
    let twice =
        u.replace("consumerGroupId=DEFAULT_GROUP|", "consumerGroupId=DEFAULT_GROUP,consumerGroupId=other|");
    assert!(open(amqp, &twice, &p).await.is_err(), "a duplicated consumerGroupId");
}

/// `modified` with `undeliverable-here` comes back after the backoff, to the other client.
#[tokio::test]
async fn modified_undeliverable_here_goes_to_another_client() {
    use fe2o3_amqp::types::messaging::Modified;
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    let mut a = consumer(amqp, "a", DEFAULT_GROUP).await;
    publish_n(server.addr(), "dev1", 1).await;
    let data = loop {
        let d = a.next().await;
        if read(&d).topic.ends_with("/user/update") {
            break d;
        }
        a.accept(&d).await;
    };
    let mut b = consumer(amqp, "b", DEFAULT_GROUP).await;
    let modified =
        Modified { delivery_failed: Some(true), undeliverable_here: Some(true), message_annotations: None };
    let sent = std::time::Instant::now();
    a.receiver.modify(&data, modified).await.unwrap();
    // dev1's offline status may still be on its way to either client.
    let again = loop {
        let d = b.next().await;
        if read(&d).topic.ends_with("/user/update") {
            break d;
        }
        b.accept(&d).await;
    };
    assert!(sent.elapsed() >= Duration::from_millis(900), "after the backoff, not at once");
    assert_eq!(read(&again), read(&data));
    b.accept(&again).await;
    while let Some(d) = a.try_next(Duration::from_millis(300)).await {
        assert!(!read(&d).topic.ends_with("/user/update"), "not to the client that refused it");
        a.accept(&d).await;
    }
    status_until(&server, DEFAULT_GROUP, "accepted", |s| s.accumulated == 0).await;
}

/// A receiver that grants no credit gets nothing: its neighbour's messages are not held up
/// (before, about half of them sat leased to the stalled link until the ack timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_credit_receiver_does_not_delay_the_others() {
    use fe2o3_amqp::link::receiver::CreditMode;
    use fe2o3_amqp::{Receiver, Session};
    let server = Server::start().await;
    let amqp = server.app.amqp_addr();
    let (u, p) = login("stalled", DEFAULT_GROUP, SignMethod::HmacSha1);
    let mut connection = open(amqp, &u, &p).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let _stalled = Receiver::builder()
        .name("no-credit")
        .source("default")
        .credit_mode(CreditMode::Manual)
        .auto_accept(false)
        .attach(&mut session)
        .await
        .unwrap();
    let mut normal = consumer(amqp, "normal", DEFAULT_GROUP).await;
    status_until(&server, DEFAULT_GROUP, "two clients", |s| s.online_clients.len() == 2).await;
    let started = std::time::Instant::now();
    publish_n(server.addr(), "dev1", 20).await;
    let mut data = HashSet::new();
    while data.len() < 20 {
        let d = normal.next().await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            data.insert(r.message_id);
        }
        normal.accept(&d).await;
    }
    // Publishing takes a moment; the ack timeout (30 s) is what a held message used to wait.
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    // dev1's offline status is the last message; it too goes to the normal client.
    let group = server.app.groups().get(DEFAULT_GROUP).unwrap();
    while group.status().accumulated > 0 {
        if let Some(d) = normal.try_next(Duration::from_millis(100)).await {
            normal.accept(&d).await;
        }
        assert!(started.elapsed() < WAIT, "left: {:?}", group.status());
    }
}

/// Deleting a group detaches its consumers with an error that says so.
#[tokio::test]
async fn a_deleted_groups_consumer_is_detached_with_an_error() {
    let server = Server::start().await;
    let (status, group) =
        common::api::post(&server, "/consumer-groups", &serde_json::json!({"name": "doomed_group"})).await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_string();
    let mut c = consumer(server.app.amqp_addr(), "c", &id).await;
    status_until(&server, &id, "online", |s| s.online_clients.len() == 1).await;
    let (status, body) = common::api::send(
        reqwest::Client::new().delete(common::api::url(&server, &format!("/consumer-groups/{id}"))),
    )
    .await;
    assert!(status < 300, "{status} {body}");
    let err = tokio::time::timeout(
        WAIT,
        c.receiver.recv::<fe2o3_amqp::types::messaging::Body<fe2o3_amqp::types::primitives::Value>>(),
    )
    .await
    .expect("detached in time")
    .expect_err("detached");
    let text = condition_of(&err);
    assert!(text.contains("NotFound") && text.contains("was deleted"), "{err:?}");
}

/// A rejected message goes to the group's dead letters: counted in the status, listed,
/// re-queued and consumed; a purge drops what was rejected again.
#[tokio::test]
async fn rejected_messages_are_dead_letters_that_can_be_requeued_and_purged() {
    use common::api::{get, post, send, url};
    let server = Server::start().await;
    let mut c = consumer(server.app.amqp_addr(), "c", DEFAULT_GROUP).await;
    publish_one(server.addr(), "dev1", r#"{"bad":1}"#).await;
    let data = loop {
        let d = c.next().await;
        if read(&d).topic.ends_with("/user/update") {
            break d;
        }
        c.accept(&d).await;
    };
    c.receiver.reject(&data, None).await.unwrap();
    status_until(&server, DEFAULT_GROUP, "dead-lettered", |s| s.dead_letters == 1).await;
    let (status, body) = get(&server, "/consumer-groups/DEFAULT_GROUP/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["deadLetterCount"], 1, "{body}");

    // Listed once its move is committed (the removal-like move is not answered).
    let deadline = tokio::time::Instant::now() + WAIT;
    let list = loop {
        let (status, list) = get(&server, "/consumer-groups/DEFAULT_GROUP/dead-letters").await;
        assert_eq!(status, 200, "{list}");
        if list["items"].as_array().is_some_and(|i| !i.is_empty()) {
            break list;
        }
        assert!(tokio::time::Instant::now() < deadline, "not listed: {list}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let item = &list["items"][0];
    assert_eq!(item["messageId"], read(&data).message_id.as_str(), "{list}");
    assert_eq!(item["topic"], "/a1test/dev1/user/update");
    assert_eq!(item["payloadBase64"], "eyJiYWQiOjF9", "base64 of {{\"bad\":1}}");
    assert!(item["deadLetterTime"].as_u64().unwrap() >= item["generateTime"].as_u64().unwrap());
    assert!(list["next"].is_null());

    let (status, body) =
        post(&server, "/consumer-groups/DEFAULT_GROUP/dead-letters/requeue", &serde_json::json!({})).await;
    assert_eq!((status, body["requeued"].as_u64()), (200, Some(1)), "{body}");
    let again = loop {
        let d = c.next().await;
        if read(&d).topic.ends_with("/user/update") {
            break d;
        }
        c.accept(&d).await; // dev1's offline status
    };
    assert_eq!(read(&again).message_id, read(&data).message_id, "the same message, the same messageId");
    assert_eq!(read(&again).body, br#"{"bad":1}"#);
    // Rejected again, then purged.
    c.receiver.reject(&again, None).await.unwrap();
    status_until(&server, DEFAULT_GROUP, "dead again", |s| s.dead_letters == 1 && s.accumulated == 0).await;
    let (status, body) =
        send(reqwest::Client::new().delete(url(&server, "/consumer-groups/DEFAULT_GROUP/dead-letters")))
            .await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)), "{body}");
    let (_, list) = get(&server, "/consumer-groups/DEFAULT_GROUP/dead-letters").await;
    assert_eq!(list["items"], serde_json::json!([]));
    assert_eq!(list["deadLetterCount"], 0);
}

/// `lastConsumptionTime` survives a restart.
#[tokio::test]
async fn last_consumption_time_survives_a_restart() {
    let server = Server::start().await;
    let mut c = consumer(server.app.amqp_addr(), "c", DEFAULT_GROUP).await;
    publish_n(server.addr(), "dev1", 1).await;
    let d = c.next().await;
    c.accept(&d).await;
    status_until(&server, DEFAULT_GROUP, "consumed", |s| s.last_consumption_ms.is_some()).await;
    let before = server.app.groups().get(DEFAULT_GROUP).unwrap().status().last_consumption_ms;
    c.close().await;
    let server = server.restart().await;
    let after = server.app.groups().get(DEFAULT_GROUP).unwrap().status().last_consumption_ms;
    assert_eq!(after, before);
    let (_, status) = common::api::get(&server, "/consumer-groups/DEFAULT_GROUP/status").await;
    assert!(status["lastConsumptionTime"].is_u64(), "{status}");
}

/// With `maxDeliveryAttempts`, a message delivered that often without an accept goes to the
/// dead letters instead of coming back.
#[tokio::test]
async fn a_message_past_the_groups_delivery_attempts_becomes_a_dead_letter() {
    use common::api::{get, post, send, url};
    let server = Server::start().await;
    let (status, group) = post(
        &server,
        "/consumer-groups",
        &serde_json::json!({"name": "limited_group", "maxDeliveryAttempts": 2}),
    )
    .await;
    assert_eq!(status, 201, "{group}");
    assert_eq!(group["maxDeliveryAttempts"], 2);
    let id = group["id"].as_str().unwrap().to_string();
    let (status, body) = send(
        reqwest::Client::new()
            .put(url(&server, "/subscriptions/a1test"))
            .json(&serde_json::json!({"messageTypes": ["upstream"], "consumerGroupIds": [id]})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    publish_n(server.addr(), "dev1", 1).await;
    // Two deliveries, each ended by a lost connection (put back at once, no backoff).
    for attempt in ["first", "second"] {
        let mut c = consumer(server.app.amqp_addr(), attempt, &id).await;
        let d = c.next().await;
        assert!(read(&d).topic.ends_with("/user/update"), "{attempt}");
        c.connection.close().await.ok();
    }
    let mut c = consumer(server.app.amqp_addr(), "third", &id).await;
    status_until(&server, &id, "dead-lettered", |s| s.dead_letters == 1 && s.accumulated == 0).await;
    assert!(c.try_next(Duration::from_millis(300)).await.is_none(), "not delivered a third time");
    let (_, list) = get(&server, &format!("/consumer-groups/{id}/dead-letters")).await;
    assert_eq!(list["deadLetterCount"], 1, "{list}");
    let (status, bad) = post(
        &server,
        "/consumer-groups",
        &serde_json::json!({"name": "zero_group", "maxDeliveryAttempts": 0}),
    )
    .await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("InvalidOption")), "{bad}");
}

// ---- The endpoint frame by frame: what client libraries hide ----------------------------

mod raw {
    use super::*;
    use common::amqp_raw::*;
    use fe2o3_amqp::frames::amqp::FrameBody;
    use fe2o3_amqp::types::definitions::{
        AmqpError, ConnectionError, ErrorCondition, ReceiverSettleMode, Role,
    };
    use fe2o3_amqp::types::messaging::{Accepted, DeliveryState};
    use fe2o3_amqp::types::performatives::Disposition;

    /// Logged in, a session and a receiver link attached: the server's attach has arrived.
    async fn attached(server: &Server, client_id: &str, mode: ReceiverSettleMode) -> RawClient {
        let mut c = RawClient::connect(server.app.amqp_addr()).await;
        let mut bytes = login_and_open(client_id, DEFAULT_GROUP);
        frame(&mut bytes, &begin());
        frame(&mut bytes, &attach_receiver(mode));
        c.send(&bytes).await;
        c.until("the attach", |_, f| matches!(f, FrameBody::Attach(_)).then_some(())).await;
        c
    }

    /// A drain with nothing queued uses up the credit at once, and the server says so.
    #[tokio::test]
    async fn a_drain_with_nothing_queued_is_answered_at_once() {
        let server = Server::start().await;
        let mut c = attached(&server, "drainer", ReceiverSettleMode::First).await;
        let mut bytes = Vec::new();
        frame(&mut bytes, &credit(0, 5, true));
        c.send(&bytes).await;
        let flow = c
            .until("the drain's answer", |_, f| match f {
                FrameBody::Flow(flow) if flow.handle.is_some() => Some(flow.clone()),
                _ => None,
            })
            .await;
        assert_eq!((flow.link_credit, flow.delivery_count, flow.drain), (Some(0), Some(5), true), "{flow:?}");
    }

    /// A receiver that settles second (`rcv-settle-mode second`) sends its outcome unsettled;
    /// the server takes it and settles, and the message is consumed.
    #[tokio::test]
    async fn a_receiver_settling_second_gets_the_servers_settlement() {
        let server = Server::start().await;
        let mut c = attached(&server, "second", ReceiverSettleMode::Second).await;
        let mut bytes = Vec::new();
        frame(&mut bytes, &credit(0, 1, false));
        c.send(&bytes).await;
        publish_one(server.addr(), "dev1", "{\"n\":1}").await;
        let id = c
            .until("a transfer", |_, f| match f {
                FrameBody::Transfer { performative, .. } => performative.delivery_id,
                _ => None,
            })
            .await;
        let mut bytes = Vec::new();
        let accepted = Disposition {
            role: Role::Receiver,
            first: id,
            last: None,
            settled: false,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        };
        frame(&mut bytes, &accepted);
        c.send(&bytes).await;
        let settled = c
            .until("the server's settlement", |_, f| match f {
                FrameBody::Disposition(d) if d.role == Role::Sender => Some(d.clone()),
                _ => None,
            })
            .await;
        assert!(settled.settled && settled.first == id, "{settled:?}");
        assert!(matches!(settled.state, Some(DeliveryState::Accepted(_))), "{settled:?}");
        let group = server.app.groups().get(DEFAULT_GROUP).unwrap();
        status_until(&server, DEFAULT_GROUP, "one accepted", |_| {
            group.counters.acked.load(std::sync::atomic::Ordering::Relaxed) == 1
        })
        .await;
    }

    /// A second session is answered and ended with `amqp:not-allowed`; the first keeps working.
    #[tokio::test]
    async fn a_second_session_is_ended_with_not_allowed() {
        let server = Server::start().await;
        let mut c = attached(&server, "sessions", ReceiverSettleMode::First).await;
        let mut bytes = Vec::new();
        frame_on(&mut bytes, 0, 1, &begin());
        c.send(&bytes).await;
        let (begun, ended) = c
            .until("the second session's end", |channel, f| match f {
                FrameBody::End(end) => Some((channel, end.clone())),
                _ => None,
            })
            .await;
        assert_ne!(begun, 0, "the refused session has its own channel");
        let condition = ended.error.map(|e| e.condition);
        assert_eq!(condition, Some(ErrorCondition::AmqpError(AmqpError::NotAllowed)));
        let mut bytes = Vec::new();
        frame(&mut bytes, &credit(0, 10, false));
        c.send(&bytes).await;
        publish_one(server.addr(), "dev1", "{\"n\":1}").await;
        c.until("a transfer on the first session", |channel, f| {
            (channel == 0 && matches!(f, FrameBody::Transfer { .. })).then_some(())
        })
        .await;
    }

    /// A frame above the announced 64 KiB closes the connection with a framing error, before
    /// the server reads (or holds) its body.
    #[tokio::test]
    async fn a_frame_above_the_limit_closes_the_connection() {
        let server = Server::start().await;
        let mut c = RawClient::connect(server.app.amqp_addr()).await;
        let mut bytes = login_and_open("big", DEFAULT_GROUP);
        bytes.extend_from_slice(&(1u32 << 24).to_be_bytes());
        bytes.extend_from_slice(&[2, 0, 0, 0]);
        c.send(&bytes).await;
        let frames = c.until_closed().await;
        let close = frames.iter().find_map(|f| match f {
            FrameBody::Close(close) => close.error.clone(),
            _ => None,
        });
        let condition = close.map(|e| e.condition);
        assert_eq!(
            condition,
            Some(ErrorCondition::ConnectionError(ConnectionError::FramingError)),
            "{frames:?}"
        );
    }
}

/// A receiver that asks for pre-settled deliveries (at most once) gets them settled, and they
/// count as accepted once sent.
#[tokio::test]
async fn a_presettled_receiver_consumes_on_delivery() {
    use fe2o3_amqp::types::definitions::SenderSettleMode;
    let server = Server::start().await;
    let (u, p) = login("auto", DEFAULT_GROUP, SignMethod::HmacSha1);
    let mut connection = open(server.app.amqp_addr(), &u, &p).await.unwrap();
    let mut session = fe2o3_amqp::Session::begin(&mut connection).await.unwrap();
    let mut receiver = fe2o3_amqp::Receiver::builder()
        .name("rx")
        .source("default")
        .sender_settle_mode(SenderSettleMode::Settled)
        .attach(&mut session)
        .await
        .unwrap();
    publish_one(server.addr(), "dev1", "{\"n\":1}").await;
    let d = tokio::time::timeout(
        WAIT,
        receiver.recv::<fe2o3_amqp::types::messaging::Body<fe2o3_amqp::types::primitives::Value>>(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(read(&d).topic.starts_with("/"), "{:?}", read(&d));
    // online status, data, offline status: all consumed without an outcome from the client.
    status_until(&server, DEFAULT_GROUP, "all consumed", |s| s.accumulated == 0).await;
}

/// A message larger than the client's frame size arrives whole, in several transfer frames.
#[tokio::test]
async fn a_message_above_the_clients_frame_size_arrives_whole() {
    let server = Server::start().await;
    let (u, p) = login("small-frames", DEFAULT_GROUP, SignMethod::HmacSha1);
    let connection = fe2o3_amqp::Connection::builder()
        .container_id("small-frames")
        .max_frame_size(512)
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain { username: u, password: p })
        .open(format!("amqp://{}", server.app.amqp_addr()).as_str())
        .await
        .unwrap();
    let mut c = attach(connection).await;
    let body = format!("{{\"blob\":\"{}\"}}", "x".repeat(5000));
    publish_one(server.addr(), "dev1", &body).await;
    loop {
        let d = c.next().await;
        c.accept(&d).await;
        let r = read(&d);
        if r.topic.ends_with("/user/update") {
            assert_eq!(r.body, body.as_bytes());
            break;
        }
    }
}

/// A client that asks for an idle timeout hears from the server in time: iotpipe sends empty
/// frames at half the period when it has nothing else to say.
#[tokio::test]
async fn the_clients_idle_timeout_is_honoured() {
    let server = Server::start().await;
    let (u, p) = login("idle", DEFAULT_GROUP, SignMethod::HmacSha1);
    let connection = fe2o3_amqp::Connection::builder()
        .container_id("idle")
        .idle_time_out(400u32)
        .sasl_profile(fe2o3_amqp::sasl_profile::SaslProfile::Plain { username: u, password: p })
        .open(format!("amqp://{}", server.app.amqp_addr()).as_str())
        .await
        .unwrap();
    let mut c = attach(connection).await;
    // The quiet period under test: three of the client's timeouts without a message.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish_one(server.addr(), "dev1", "{\"n\":1}").await;
    let d = c.next().await;
    c.accept(&d).await;
}
