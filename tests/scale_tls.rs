//! Many devices at once, and MQTT over TLS.

mod common;

use std::sync::Arc;

use common::*;
use iotpipe::message::Kind;
use rumqttc::{Packet, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_devices_connect_at_once() {
    const N: usize = 1000;
    let mut extra = String::new();
    for i in 0..N {
        extra.push_str(&format!("\n[[products]]\nkey = \"p{i}\"\n[[products.devices]]\nname = \"many{i:04}\"\nsecret = \"s{i}\"\n"));
    }
    let mut server = Server::start_with("", &extra).await;
    let addr = server.addr();
    let mut tasks = Vec::new();
    for i in 0..N {
        tasks.push(tokio::spawn(async move {
            let creds = sign_as(
                &format!("c{i}"),
                &format!("p{i}"),
                &format!("many{i:04}"),
                &format!("s{i}"),
                iotpipe::sign::SignMethod::HmacSha1,
                None,
            );
            connect_v4(v4_options(addr, &creds)).await.unwrap_or_else(|e| panic!("device {i}: {e}"))
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let mut online = 0;
    while online < N {
        let m = server.next_where("online status", |m| m.kind == Kind::Status).await;
        assert!(m.payload.starts_with(b"{\"status\":\"online\""));
        online += 1;
    }
    assert_eq!(server.app.ingress().stats().connections.load(std::sync::atomic::Ordering::Relaxed), N as u64);
    // Every one of them can still publish.
    let (client, eventloop) = clients.swap_remove(N / 2);
    let mut eventloop = eventloop;
    client
        .publish(format!("/p{}/many{:04}/user/update", N / 2, N / 2), QoS::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    until_v4(&mut eventloop, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
}

#[tokio::test]
async fn mqtt_over_tls_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, cert_path, key_path) = self_signed(dir.path(), &["localhost"]);
    let mqtt = tls_section(&cert_path, &key_path);
    let mut server = Server::start_with(&mqtt, "").await;
    let tls_addr = server.app.mqtt_tls_addr().expect("TLS listener");

    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client_config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let c = creds("dev1");
    let mut options = rumqttc::MqttOptions::new(&c.client_id, "localhost", tls_addr.port());
    options.set_credentials(&c.username, &c.password);
    options
        .set_transport(rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(Arc::new(client_config))));
    let (client, mut ev) = connect_v4(options).await.unwrap();
    client.publish("/a1test/dev1/user/update", QoS::AtLeastOnce, false, "over tls").await.unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, Packet::PubAck(_))).await;
    assert_eq!(&server.next_upstream().await.payload[..], b"over tls");

    // Plain MQTT bytes on the TLS port are a failed handshake, nothing more.
    let mut plain = tokio::net::TcpStream::connect(tls_addr).await.unwrap();
    let (_s, code) = raw_connect(server.addr(), &creds("dev2"), 60).await;
    assert_eq!(code, 0, "the plain listener still works");
    tokio::io::AsyncWriteExt::write_all(&mut plain, b"\x10\x00").await.unwrap();
    read_until_closed(&mut plain).await;
}

/// Devices that subscribe each hold a router link: the embedded router is sized from
/// `[mqtt] max_connections` (issue 17, finding 3; it allowed 1,023). The figure is
/// 10,000 (tests/scale_process.rs, run by scripts/faults.sh); 2,000 (twice the old ceiling, at
/// the configured limit) keeps CI quick, and the sizing arithmetic is unit-tested in `downlink`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_subscribed_devices_each_get_their_subscription() {
    const N: usize = 2000;
    let mut extra = String::from("\n[[products]]\nkey = \"a1many\"\n");
    for i in 0..N {
        extra.push_str(&format!("[[products.devices]]\nname = \"dev{i:05}\"\nsecret = \"s{i}\"\n"));
    }
    let server = Server::start_with(&format!("max_connections = {N}"), &extra).await;
    let addr = server.addr();
    let limit = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..N {
        let limit = limit.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = limit.acquire().await.unwrap();
            many_device_subscribed(addr, i).await
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    assert_eq!(streams.len(), N);
}
