//! MQTT ingress over real sockets: authentication, ACL, status events, limits, hand-off.

mod common;

use std::time::Duration;

use common::*;
use iotpipe::message::Kind;
use iotpipe::sign::SignMethod;
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Packet as P5, PubAckReason, SubscribeReasonCode as Sub5,
};
use rumqttc::{ConnectReturnCode, Packet, QoS, SubscribeReasonCode};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn each_sign_method_is_accepted_and_messages_carry_the_identity() {
    let mut server = Server::start().await;
    let cases = [
        (SignMethod::HmacMd5, None),
        (SignMethod::HmacSha1, Some("1539421321846")),
        (SignMethod::HmacSha256, None),
        (SignMethod::HmacSha256, Some("1700000000000")),
    ];
    for (method, ts) in cases {
        let c = sign("dev1", "secret1", method, ts);
        let (client, mut eventloop) =
            connect_v4(v4_options(server.addr(), &c)).await.unwrap_or_else(|e| panic!("{method}: {e}"));
        let body = format!("{{\"method\":\"{method}\"}}");
        client.publish("/a1test/dev1/user/update", QoS::AtLeastOnce, false, body.clone()).await.unwrap();
        until_v4(&mut eventloop, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
        let m = server.next_upstream().await;
        assert_eq!(m.topic, "/a1test/dev1/user/update");
        assert_eq!(&m.payload[..], body.as_bytes());
        assert_eq!(m.qos, 1);
        assert_eq!(m.origin.product_key, "a1test");
        assert_eq!(m.origin.device_name, "dev1");
        assert_eq!(m.origin.client_id, "dev1-cid");
        assert_eq!(m.origin.peer.unwrap().ip().to_string(), "127.0.0.1");
        assert!(m.id > 0 && m.received_at_ms > 0);
        client.disconnect().await.unwrap();
        let _ = until_v4_closed(&mut eventloop).await;
    }
}

#[tokio::test]
async fn uppercase_hex_passwords_are_accepted() {
    let server = Server::start().await;
    let mut c = creds("dev1");
    c.password = c.password.to_ascii_uppercase();
    connect_v4(v4_options(server.addr(), &c)).await.unwrap();
}

#[tokio::test]
async fn refused_connects_get_a_connack_code() {
    let server = Server::start().await;
    let refused_v4 = |c: Creds| {
        let addr = server.addr();
        async move {
            match connect_v4(v4_options(addr, &c)).await {
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
                Err(e) => panic!("expected a CONNACK refusal, got {e}"),
                Ok(_) => panic!("expected a refusal, got accepted"),
            }
        }
    };
    let mut bad = creds("dev1");
    bad.password = "00".repeat(32);
    assert_eq!(refused_v4(bad).await, ConnectReturnCode::BadUserNamePassword);
    assert_eq!(
        refused_v4(sign("nosuch", "x", SignMethod::HmacSha1, None)).await,
        ConnectReturnCode::BadUserNamePassword
    );
    assert_eq!(refused_v4(creds(DISABLED.0)).await, ConnectReturnCode::NotAuthorized);
    let mut no_params = creds("dev1");
    no_params.client_id = "dev1".into();
    assert_eq!(refused_v4(no_params).await, ConnectReturnCode::BadUserNamePassword);

    // MQTT 5 gets the v5 codes.
    let mut bad = creds("dev1");
    bad.password = "wrong".into();
    match connect_v5(v5_options(server.addr(), &bad)).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("expected a v5 refusal, got {:?}", other.err()),
    }
    match connect_v5(v5_options(server.addr(), &creds(DISABLED.0))).await {
        Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::v5::mqttbytes::v5::ConnectReturnCode::NotAuthorized)
        }
        other => panic!("expected a v5 refusal, got {:?}", other.err()),
    }

    // A keep-alive above the configured range (1,200 s) is refused with a code too.
    let mut o = v4_options(server.addr(), &creds("dev1"));
    o.set_keep_alive(Duration::from_secs(1300));
    assert!(matches!(
        connect_v4(o).await,
        Err(rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId))
    ));
}

#[tokio::test]
async fn publish_to_another_devices_topic_is_never_forwarded() {
    let mut server = Server::start().await;

    // MQTT 5: PUBACK 0x87, the connection stays.
    let (client, mut ev) = connect_v5(v5_options(server.addr(), &creds("dev1"))).await.unwrap();
    client
        .publish("/a1test/dev2/user/update", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "stolen")
        .await
        .unwrap();
    let ack = until_v5(&mut ev, "PUBACK", |p| matches!(p, P5::PubAck(_))).await;
    let P5::PubAck(ack) = ack else { unreachable!() };
    assert_eq!(ack.reason, PubAckReason::NotAuthorized);
    client
        .publish("/a1test/dev1/user/update", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "own")
        .await
        .unwrap();
    let ack = until_v5(&mut ev, "PUBACK", |p| matches!(p, P5::PubAck(_))).await;
    let P5::PubAck(ack) = ack else { unreachable!() };
    assert_eq!(ack.reason, PubAckReason::Success);
    assert_eq!(
        &server.next_upstream().await.payload[..],
        b"own",
        "the refused publish must not be forwarded"
    );

    // MQTT 3.1.1: disconnected, nothing forwarded, offline status says why.
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev2"))).await.unwrap();
    assert_eq!(server.next_status("dev2").await["status"], "online");
    client
        .publish("/sys/a1test/dev1/thing/event/property/post", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    until_v4_closed(&mut ev).await;
    let offline = server.next_status("dev2").await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["offlineReasonCode"], 6);
    assert_eq!(server.app.pipeline_stats().upstream.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn subscribing_to_another_devices_topic_is_refused() {
    let server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    client.subscribe("/a1test/dev2/user/get", QoS::AtLeastOnce).await.unwrap();
    let Packet::SubAck(ack) = until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure]);
    client.subscribe("/a1test/+/user/get", QoS::AtMostOnce).await.unwrap();
    let Packet::SubAck(ack) = until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Failure]);
    client.subscribe("/a1test/dev1/user/get", QoS::AtLeastOnce).await.unwrap();
    let Packet::SubAck(ack) = until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await else {
        unreachable!()
    };
    // QoS 1 is granted: cloud-to-device messages go out with it (docs/downlink.md).
    assert_eq!(ack.return_codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);

    let (client5, mut ev5) = connect_v5(v5_options(server.addr(), &creds("dev2"))).await.unwrap();
    client5.subscribe("#", rumqttc::v5::mqttbytes::QoS::AtMostOnce).await.unwrap();
    let P5::SubAck(ack) = until_v5(&mut ev5, "SUBACK", |p| matches!(p, P5::SubAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.return_codes, vec![Sub5::NotAuthorized]);
}

#[tokio::test]
async fn devices_receive_what_is_published_to_their_topics() {
    let server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    client.subscribe("/a1test/dev1/user/#", QoS::AtMostOnce).await.unwrap();
    until_v4(&mut ev, "SUBACK", |p| matches!(p, Packet::SubAck(_))).await;
    server.app.ingress().publish("/a1test/dev2/user/get", "not for dev1".into()).unwrap();
    server.app.ingress().publish("/a1test/dev1/user/get", "hello dev1".into()).unwrap();
    let Packet::Publish(p) = until_v4(&mut ev, "downlink PUBLISH", |p| matches!(p, Packet::Publish(_))).await
    else {
        unreachable!()
    };
    assert_eq!(p.topic, "/a1test/dev1/user/get");
    assert_eq!(&p.payload[..], b"hello dev1");
}

#[tokio::test]
async fn online_and_offline_on_a_clean_disconnect() {
    let mut server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    let online = server.next_status("dev1").await;
    assert_eq!(online["status"], "online");
    assert_eq!(online["productKey"], "a1test");
    assert_eq!(online["deviceName"], "dev1");
    assert_eq!(online["clientIp"], "127.0.0.1");
    for field in ["time", "utcTime", "lastTime", "utcLastTime"] {
        assert!(online[field].is_string(), "{field} missing: {online}");
    }
    assert!(online.get("offlineReasonCode").is_none());
    client.disconnect().await.unwrap();
    let _ = until_v4_closed(&mut ev).await;
    let offline = server.next_status("dev1").await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["offlineReasonCode"], 1);
    assert_eq!(offline["offlineReason"], "client_disconnect");
    assert!(!server.app.ingress().is_online(PK, "dev1"));
}

#[tokio::test]
async fn offline_on_an_abrupt_tcp_close() {
    let mut server = Server::start().await;
    let (stream, code) = raw_connect(server.addr(), &creds("dev1"), 60).await;
    assert_eq!(code, 0);
    assert_eq!(server.next_status("dev1").await["status"], "online");
    drop(stream);
    let offline = server.next_status("dev1").await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["offlineReason"], "network_error");
    assert_eq!(offline["offlineReasonCode"], 3);
}

#[tokio::test]
async fn offline_on_keep_alive_expiry() {
    let mut server = Server::start().await;
    let (mut stream, code) = raw_connect(server.addr(), &creds("dev1"), 1).await;
    assert_eq!(code, 0);
    let online = server.next_status("dev1").await;
    assert_eq!(online["status"], "online");
    // Silent from here on: the server must give up after 1.5 × keep-alive.
    let offline = server.next_status("dev1").await;
    assert_eq!(offline["status"], "offline");
    assert_eq!(offline["offlineReason"], "keep_alive_timeout");
    assert_eq!(offline["offlineReasonCode"], 2);
    read_until_closed(&mut stream).await;
}

#[tokio::test]
async fn a_second_connection_takes_over() {
    let mut server = Server::start().await;
    let (_c1, mut ev1) = connect_v5(v5_options(server.addr(), &creds("dev1"))).await.unwrap();
    assert_eq!(server.next_status("dev1").await["status"], "online");
    let (_c2, mut ev2) = connect_v5(v5_options(server.addr(), &creds("dev1"))).await.unwrap();
    let code = until_v5_disconnect(&mut ev1).await;
    assert_eq!(code, DisconnectReasonCode::SessionTakenOver);
    let offline = server.next_status("dev1").await;
    assert_eq!(
        (offline["status"].as_str(), offline["offlineReason"].as_str()),
        (Some("offline"), Some("taken_over"))
    );
    assert_eq!(offline["offlineReasonCode"], 4);
    let online = server.next_status("dev1").await;
    assert_eq!(online["status"], "online", "the new session is announced after the old one's offline");
    // The new connection works.
    _c2.publish("/a1test/dev1/user/update", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "new")
        .await
        .unwrap();
    let P5::PubAck(ack) = until_v5(&mut ev2, "PUBACK", |p| matches!(p, P5::PubAck(_))).await else {
        unreachable!()
    };
    assert_eq!(ack.reason, PubAckReason::Success);
    assert!(server.app.ingress().is_online(PK, "dev1"));
}

#[tokio::test]
async fn disabling_a_connected_device_disconnects_it() {
    let mut server = Server::start().await;
    let (_c, mut ev) = connect_v5(v5_options(server.addr(), &creds("dev3"))).await.unwrap();
    assert_eq!(server.next_status("dev3").await["status"], "online");
    server.app.set_device_enabled(PK, "dev3", false).await.unwrap();
    let code = until_v5_disconnect(&mut ev).await;
    assert_eq!(code, DisconnectReasonCode::AdministrativeAction);
    let offline = server.next_status("dev3").await;
    assert_eq!(offline["offlineReason"], "device_disabled");
    assert_eq!(offline["offlineReasonCode"], 5);
    assert!(matches!(
        connect_v4(v4_options(server.addr(), &creds("dev3"))).await,
        Err(rumqttc::ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized))
    ));
}

#[tokio::test]
async fn message_ids_are_unique_across_a_restart() {
    let mut server = Server::start().await;
    let mut ids = Vec::new();
    for round in 0..2 {
        let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
        for i in 0..20 {
            client
                .publish("/a1test/dev1/user/update", QoS::AtLeastOnce, false, format!("{round}-{i}"))
                .await
                .unwrap();
            until_v4(&mut ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
            ids.push(server.next_upstream().await.id);
        }
        client.disconnect().await.unwrap();
        let _ = until_v4_closed(&mut ev).await;
        if round == 0 {
            server = server.restart().await;
        }
    }
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids repeat: {ids:?}");
    assert!(ids[20..].iter().all(|id| *id > ids[19]), "ids after the restart continue upwards");
}

#[tokio::test]
async fn oversized_payloads_are_refused() {
    let mut server = Server::start_with("max_payload_bytes = 1024", "").await;
    let (client, mut ev) = connect_v5(v5_options(server.addr(), &creds("dev1"))).await.unwrap();
    client
        .publish(
            "/a1test/dev1/user/update",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            vec![b'x'; 1024],
        )
        .await
        .unwrap();
    until_v5(&mut ev, "PUBACK", |p| matches!(p, P5::PubAck(_))).await;
    client
        .publish(
            "/a1test/dev1/user/update",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            vec![b'y'; 1025],
        )
        .await
        .unwrap();
    let code = until_v5_disconnect(&mut ev).await;
    assert_eq!(code, DisconnectReasonCode::PacketTooLarge);
    assert_eq!(server.next_upstream().await.payload.len(), 1024);
    let offline = server.next_status("dev1").await;
    let offline = if offline["status"] == "online" { server.next_status("dev1").await } else { offline };
    assert_eq!(offline["offlineReason"], "protocol_violation");

    // Far beyond the limit: refused from the header, before the body is read.
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev2"))).await.unwrap();
    client.publish("/a1test/dev2/user/update", QoS::AtLeastOnce, false, vec![b'z'; 300_000]).await.unwrap();
    until_v4_closed(&mut ev).await;
    assert_eq!(server.app.pipeline_stats().upstream.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[tokio::test]
async fn qos2_is_refused_clearly() {
    let server = Server::start().await;
    let (client, mut ev) = connect_v5(v5_options(server.addr(), &creds("dev1"))).await.unwrap();
    client
        .publish("/a1test/dev1/user/update", rumqttc::v5::mqttbytes::QoS::ExactlyOnce, false, "q2")
        .await
        .unwrap();
    let code = until_v5_disconnect(&mut ev).await;
    assert_eq!(code, DisconnectReasonCode::QoSNotSupported);
}

#[tokio::test]
async fn garbage_bytes_leave_other_connections_untouched() {
    let mut server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    for garbage in
        [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0x10, 0xff, 0xff, 0xff, 0xff, 0xff][..], &[0u8; 64][..]]
    {
        let mut bad = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        bad.write_all(garbage).await.unwrap();
        read_until_closed(&mut bad).await;
    }
    // Garbage after a valid CONNECT: the session is closed as a protocol violation.
    let (mut raw, code) = raw_connect(server.addr(), &creds("dev2"), 60).await;
    assert_eq!(code, 0);
    raw.write_all(&[0x30, 0x05, 0x00, 0xff, b'a', b'b', b'c']).await.unwrap();
    read_until_closed(&mut raw).await;

    client.publish("/a1test/dev1/user/update", QoS::AtLeastOnce, false, "still here").await.unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    assert_eq!(&server.next_upstream().await.payload[..], b"still here");
}

#[tokio::test]
async fn property_posts_are_converted_for_later_stages() {
    let mut server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    let alink = r#"{"id":"42","version":"1.0","params":{"temperature":{"value":38.5,"time":1700000000000},"humidity":40},"method":"thing.event.property.post"}"#;
    client
        .publish("/sys/a1test/dev1/thing/event/property/post", QoS::AtLeastOnce, false, alink)
        .await
        .unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    let m = server.next_upstream().await;
    assert_eq!(&m.payload[..], alink.as_bytes(), "the raw payload is kept");
    let platform = m.platform.expect("converted form");
    assert_eq!(platform.topic, "/a1test/dev1/thing/event/property/post");
    let v: serde_json::Value = serde_json::from_slice(&platform.payload).unwrap();
    assert_eq!(v["items"]["temperature"]["value"], 38.5);
    assert_eq!(v["items"]["temperature"]["time"], 1_700_000_000_000u64);
    assert_eq!(v["items"]["humidity"]["value"], 40);
    assert_eq!(v["deviceName"], "dev1");
}

#[tokio::test]
async fn status_and_data_are_counted_by_kind() {
    let mut server = Server::start().await;
    let (client, mut ev) = connect_v4(v4_options(server.addr(), &creds("dev1"))).await.unwrap();
    let polling = tokio::spawn(async move { until_v4_closed(&mut ev).await });
    client.publish("/a1test/dev1/user/update", QoS::AtMostOnce, false, "q0").await.unwrap();
    let m = server.next_upstream().await;
    assert_eq!((m.qos, m.kind), (0, Kind::Upstream));
    client.disconnect().await.unwrap();
    polling.await.unwrap();
    server
        .next_where("offline", |m| {
            m.kind == Kind::Status && m.payload.starts_with(b"{\"status\":\"offline\"")
        })
        .await;
    let stats = server.app.pipeline_stats();
    assert_eq!(stats.status.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert_eq!(stats.upstream.load(std::sync::atomic::Ordering::Relaxed), 1);
}

/// MQTT 5: a PUBLISH whose topic is not UTF-8 is a malformed packet, so the DISCONNECT says 0x81
/// (issue 17, finding 8), not 0x82 (protocol error).
#[tokio::test]
async fn v5_publish_with_a_non_utf8_topic_is_disconnected_as_malformed() {
    use rumqttc::v5::mqttbytes::v5 as p5;
    let server = Server::start().await;
    let c = creds("dev1");
    let mut stream = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let connect = p5::Packet::Connect(
        p5::Connect { keep_alive: 60, client_id: c.client_id.clone(), clean_start: true, properties: None },
        None,
        Some(p5::Login { username: c.username.clone(), password: c.password.clone() }),
    );
    let mut buf = bytes::BytesMut::new();
    connect.write(&mut buf, None).unwrap();
    stream.write_all(&buf).await.unwrap();
    // PUBLISH QoS 0: topic length 2, bytes 0xff 0xfe (not UTF-8), no properties, payload "x".
    stream.write_all(&[0x30, 0x06, 0x00, 0x02, 0xff, 0xfe, 0x00, b'x']).await.unwrap();
    let got = read_until_closed(&mut stream).await;
    assert_eq!(got.first(), Some(&0x20), "CONNACK first: {got:?}");
    let connack_len = 2 + usize::from(got[1]);
    assert_eq!(got[3], 0, "accepted: {got:?}");
    let disconnect = &got[connack_len..];
    assert_eq!(disconnect.first(), Some(&0xe0), "then DISCONNECT: {disconnect:?}");
    assert_eq!(disconnect[2], 0x81, "malformed packet, got {:#04x}", disconnect[2]);
}
