//! Test harness: a real iotpipe on 127.0.0.1 port 0 with its store in a temp directory, and
//! helpers for real MQTT clients (rumqttc) and raw sockets.
#![allow(dead_code, clippy::result_large_err)]

pub mod amqp;
pub mod amqp_raw;
pub mod api;
pub mod paho;
pub mod process;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::BytesMut;
use iotpipe::ingress::auth::Credentials;
use iotpipe::message::{Kind, Message};
use iotpipe::sign::SignMethod;
use iotpipe::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

/// How long a test waits for an event before failing.
pub const WAIT: Duration = Duration::from_secs(15);

pub const PK: &str = "a1test";

/// Device name, secret.
pub const DEVICES: &[(&str, &str)] = &[("dev1", "secret1"), ("dev2", "secret2"), ("dev3", "secret3")];
/// Configured with `enabled = false`.
pub const DISABLED: (&str, &str) = ("off1", "secret-off");

pub fn config_text(dir: &Path, mqtt_extra: &str, extra: &str) -> String {
    config_text_amqp(dir, mqtt_extra, "", extra)
}

pub fn config_text_amqp(dir: &Path, mqtt_extra: &str, amqp_extra: &str, extra: &str) -> String {
    let mut s = format!(
        r#"
rules_dir = "{}"

[mqtt]
listen = "127.0.0.1:0"
keep_alive_min_secs = 1
{mqtt_extra}

[amqp]
listen = "127.0.0.1:0"
{amqp_extra}

[http]
listen = "127.0.0.1:0"
admin_token = "test-token"

[storage]
dir = "{}"

[[access_keys]]
id = "LTAItest"
secret = "test-secret"

[[products]]
key = "{PK}"
name = "Test product"
"#,
        dir.join("rules").display(),
        dir.display()
    );
    for (name, secret) in DEVICES {
        s.push_str(&format!("\n[[products.devices]]\nname = \"{name}\"\nsecret = \"{secret}\"\n"));
    }
    s.push_str(&format!(
        "\n[[products.devices]]\nname = \"{}\"\nsecret = \"{}\"\nenabled = false\n",
        DISABLED.0, DISABLED.1
    ));
    s.push_str(
        "\n[[subscriptions]]\nproduct_key = \"a1test\"\nmessage_types = [\"upstream\", \"status\", \"lifecycle\"]\nconsumer_groups = [\"DEFAULT_GROUP\"]\n",
    );
    s.push_str(extra);
    s
}

pub struct Server {
    pub app: App,
    pub dir: tempfile::TempDir,
    pub tap: broadcast::Receiver<Message>,
    /// The configuration, kept for restarts.
    pub text: String,
}

impl Server {
    pub async fn start() -> Self {
        Self::start_with("", "").await
    }

    pub async fn start_with(mqtt_extra: &str, extra: &str) -> Self {
        Self::start_full(mqtt_extra, "", extra).await
    }

    pub async fn start_full(mqtt_extra: &str, amqp_extra: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text_amqp(dir.path(), mqtt_extra, amqp_extra, extra);
        Self::start_text(dir, text).await
    }

    pub async fn start_text(dir: tempfile::TempDir, text: String) -> Self {
        let config = iotpipe::config::load_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        let app = App::start(&config).await.unwrap();
        let tap = app.tap();
        Self { app, dir, tap, text }
    }

    pub fn addr(&self) -> SocketAddr {
        self.app.mqtt_addr()
    }

    /// Stops the server and starts a new one with the same configuration and storage.
    pub async fn restart(self) -> Self {
        let Server { app, dir, text, .. } = self;
        app.shutdown(Duration::from_secs(5)).await;
        Self::start_text(dir, text).await
    }

    /// The next stored message matching `pred`, skipping others.
    pub async fn next_where(&mut self, what: &str, pred: impl Fn(&Message) -> bool) -> Message {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.tap.recv()).await {
                Ok(Ok(m)) if pred(&m) => return m,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("tap failed while waiting for {what}: {e}"),
                Err(_) => panic!("no {what} within {WAIT:?}"),
            }
        }
    }

    /// The next status message of `device`, parsed.
    pub async fn next_status(&mut self, device: &str) -> serde_json::Value {
        let m = self
            .next_where(&format!("status of {device}"), |m| {
                m.kind == Kind::Status && m.origin.device_name == device
            })
            .await;
        serde_json::from_slice(&m.payload).unwrap()
    }

    /// The next upstream message.
    pub async fn next_upstream(&mut self) -> Message {
        self.next_where("upstream message", |m| m.kind == Kind::Upstream).await
    }
}

pub struct Creds {
    pub client_id: String,
    pub username: String,
    pub password: String,
}

pub fn sign(device: &str, secret: &str, method: SignMethod, timestamp: Option<&str>) -> Creds {
    sign_as(&format!("{device}-cid"), PK, device, secret, method, timestamp)
}

/// The MQTT login of any device: client id, product, device, secret.
pub fn sign_as(
    client_id: &str,
    product: &str,
    device: &str,
    secret: &str,
    method: SignMethod,
    timestamp: Option<&str>,
) -> Creds {
    let c = Credentials {
        client_id: client_id.into(),
        product_key: product.into(),
        device_name: device.into(),
        method,
        timestamp: timestamp.map(str::to_string),
    };
    Creds { client_id: c.mqtt_client_id(), username: c.username(), password: c.password(secret) }
}

pub fn creds(device: &str) -> Creds {
    let secret = DEVICES.iter().find(|(d, _)| *d == device).map_or(DISABLED.1, |(_, s)| s);
    sign(device, secret, SignMethod::HmacSha256, None)
}

pub fn v4_options(addr: SocketAddr, c: &Creds) -> rumqttc::MqttOptions {
    let mut o = rumqttc::MqttOptions::new(&c.client_id, addr.ip().to_string(), addr.port());
    o.set_credentials(&c.username, &c.password);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

pub fn v5_options(addr: SocketAddr, c: &Creds) -> rumqttc::v5::MqttOptions {
    let mut o = rumqttc::v5::MqttOptions::new(&c.client_id, addr.ip().to_string(), addr.port());
    o.set_credentials(&c.username, &c.password);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

/// Polls a v4 event loop until CONNACK; returns the refusal if any.
pub async fn connect_v4(
    options: rumqttc::MqttOptions,
) -> Result<(rumqttc::AsyncClient, rumqttc::EventLoop), rumqttc::ConnectionError> {
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
    // rumqttc gives up on the TCP connect and CONNACK after 5 s; a thousand devices connecting at
    // once on two loaded cores can take longer than that without anything being wrong.
    eventloop.network_options.set_connection_timeout(WAIT.as_secs());
    loop {
        let event = tokio::time::timeout(WAIT, eventloop.poll()).await.expect("no CONNACK in time")?;
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = event {
            return Ok((client, eventloop));
        }
    }
}

/// Polls a v5 event loop until CONNACK; returns the refusal if any.
pub async fn connect_v5(
    options: rumqttc::v5::MqttOptions,
) -> Result<(rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop), rumqttc::v5::ConnectionError> {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 100);
    loop {
        let event = tokio::time::timeout(WAIT, eventloop.poll()).await.expect("no CONNACK in time")?;
        if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_)) = event {
            return Ok((client, eventloop));
        }
    }
}

/// Polls a v4 event loop until `pred` matches an incoming packet; panics on errors.
pub async fn until_v4(
    eventloop: &mut rumqttc::EventLoop,
    what: &str,
    pred: impl Fn(&rumqttc::Packet) -> bool,
) -> rumqttc::Packet {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .unwrap_or_else(|e| panic!("connection failed while waiting for {what}: {e}"));
        if let rumqttc::Event::Incoming(p) = event {
            if pred(&p) {
                return p;
            }
        }
    }
}

/// Polls a v4 event loop until it fails (the server closed the connection).
pub async fn until_v4_closed(eventloop: &mut rumqttc::EventLoop) -> rumqttc::ConnectionError {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("connection not closed in time")
        {
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Polls a v5 event loop until `pred` matches an incoming packet, or the connection fails.
pub async fn until_v5(
    eventloop: &mut rumqttc::v5::EventLoop,
    what: &str,
    pred: impl Fn(&rumqttc::v5::mqttbytes::v5::Packet) -> bool,
) -> rumqttc::v5::mqttbytes::v5::Packet {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .unwrap_or_else(|_| panic!("no {what} in time"))
            .unwrap_or_else(|e| panic!("connection failed while waiting for {what}: {e}"));
        if let rumqttc::v5::Event::Incoming(p) = event {
            if pred(&p) {
                return p;
            }
        }
    }
}

/// A raw MQTT 3.1.1 connection: CONNECT written by hand, CONNACK code returned.
/// Device `i` of the many-device product `a1many` (`dev{i:05}`, secret `s{i}`) connects over a
/// raw socket and subscribes to its own `/user/get` at QoS 0; the open stream, after checking
/// the CONNACK and the SUBACK.
pub async fn many_device_subscribed(addr: SocketAddr, i: usize) -> TcpStream {
    let creds = sign_as(
        &format!("c{i}"),
        "a1many",
        &format!("dev{i:05}"),
        &format!("s{i}"),
        SignMethod::HmacSha1,
        None,
    );
    let (mut stream, code) = raw_connect(addr, &creds, 300).await;
    assert_eq!(code, 0, "device {i} connects");
    let topic = format!("/a1many/dev{i:05}/user/get");
    let mut subscribe = vec![0x82, (2 + 2 + topic.len() + 1) as u8, 0x00, 0x01, 0x00, topic.len() as u8];
    subscribe.extend_from_slice(topic.as_bytes());
    subscribe.push(0x00);
    stream.write_all(&subscribe).await.unwrap();
    let mut suback = [0u8; 5];
    tokio::time::timeout(WAIT, stream.read_exact(&mut suback)).await.expect("no SUBACK").unwrap();
    assert_eq!(suback[..4], [0x90, 0x03, 0x00, 0x01], "device {i}: {suback:?}");
    assert_eq!(suback[4], 0x00, "device {i} granted QoS 0, got {:#04x}", suback[4]);
    stream
}

pub async fn raw_connect(addr: SocketAddr, c: &Creds, keep_alive: u16) -> (TcpStream, u8) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(c.client_id.clone());
    connect.keep_alive = keep_alive;
    connect.set_login(c.username.clone(), c.password.clone());
    let mut buf = BytesMut::new();
    rumqttc::mqttbytes::v4::Packet::Connect(connect).write(&mut buf, 1 << 20).unwrap();
    stream.write_all(&buf).await.unwrap();
    let mut connack = [0u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut connack)).await.expect("no CONNACK").unwrap();
    assert_eq!(connack[0], 0x20, "expected CONNACK, got {connack:?}");
    (stream, connack[3])
}

/// Reads until the server closes the socket; returns what was read.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("server did not close the connection")
        .ok();
    out
}

/// Polls a v5 event loop until the server sends DISCONNECT; returns its reason code.
pub async fn until_v5_disconnect(
    eventloop: &mut rumqttc::v5::EventLoop,
) -> rumqttc::v5::mqttbytes::v5::DisconnectReasonCode {
    use rumqttc::v5::{ConnectionError, Event, StateError};
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, eventloop.poll()).await.expect("no DISCONNECT in time") {
            Ok(Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d))) => return d.reason_code,
            Ok(_) => {}
            Err(ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. })) => {
                return reason_code
            }
            Err(e) => panic!("connection failed without DISCONNECT: {e}"),
        }
    }
}

/// Publishes one QoS 1 message as `device` to `/a1test/{device}/user/update` and waits for its
/// PUBACK: the message is stored and the rules have run by then.
pub async fn publish_one(addr: SocketAddr, device: &str, body: &str) {
    let (client, mut ev) = connect_v4(v4_options(addr, &creds(device))).await.unwrap();
    let topic = format!("/{PK}/{device}/user/update");
    client.publish(topic, rumqttc::QoS::AtLeastOnce, false, body.to_string()).await.unwrap();
    until_v4(&mut ev, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
    client.disconnect().await.unwrap();
    let _ = until_v4_closed(&mut ev).await;
}

/// Publishes `n` QoS 1 messages as `device` (bodies `{"n":i}`) and waits for every PUBACK.
pub async fn publish_n(addr: SocketAddr, device: &str, n: usize) {
    let (client, mut ev) = connect_v4(v4_options(addr, &creds(device))).await.unwrap();
    let topic = format!("/{PK}/{device}/user/update");
    let publisher = tokio::spawn(async move {
        for i in 0..n {
            client.publish(&topic, rumqttc::QoS::AtLeastOnce, false, format!("{{\"n\":{i}}}")).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        until_v4(&mut ev, "PUBACK", |p| matches!(p, rumqttc::Packet::PubAck(_))).await;
        acked += 1;
    }
    let client = publisher.await.unwrap();
    client.disconnect().await.unwrap();
    let _ = until_v4_closed(&mut ev).await;
}

/// A self-signed certificate for `names`, written as PEM files into `dir`: (certificate, cert
/// path, key path).
pub fn self_signed(
    dir: &Path,
    names: &[&str],
) -> (rcgen::Certificate, std::path::PathBuf, std::path::PathBuf) {
    let generated =
        rcgen::generate_simple_self_signed(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, generated.cert.pem()).unwrap();
    std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
    (generated.cert, cert_path, key_path)
}

/// The `tls_listen`, `cert` and `key` lines of a listener section for those files.
pub fn tls_section(cert: &Path, key: &Path) -> String {
    format!("tls_listen = \"127.0.0.1:0\"\ncert = \"{}\"\nkey = \"{}\"", cert.display(), key.display())
}

/// The server's `/metrics` text.
pub async fn metrics(server: &Server) -> String {
    let url = format!("http://{}/metrics", server.app.http_addr());
    reqwest::get(url).await.expect("/metrics answers").text().await.expect("text")
}

/// The value of the sample named exactly `name` (no labels) in a `/metrics` text; panics when
/// absent.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}
