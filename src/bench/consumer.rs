//! Consumers: AMQP 1.0 receivers (fe2o3-amqp) that accept every message one by one, or, for a
//! broker without queues behind AMQP (Mosquitto), an MQTT subscriber at QoS 1. Both read the
//! send time out of each payload for the latency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::{Connection, Receiver, Session};

use super::payload::{now_us, sent_at_us};

/// How often a waiting consumer looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// How a consumer connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerSpec {
    /// An AMQP 1.0 receiver link on `source`, SASL PLAIN with this username and password.
    Amqp {
        /// The server.
        addr: SocketAddr,
        /// SASL PLAIN username (iotpipe: the signed one).
        username: String,
        /// SASL PLAIN password.
        password: String,
        /// The link's source address.
        source: String,
        /// Link credit, refilled by the client.
        credit: u32,
    },
    /// An MQTT 3.1.1 client subscribing to `filter` at QoS 1.
    Mqtt {
        /// The broker.
        addr: SocketAddr,
        /// The client id.
        client_id: String,
        /// Optional username and password.
        login: Option<(String, String)>,
        /// The topic filters, subscribed in one SUBSCRIBE (a `$share/..` filter spreads messages
        /// over several subscribers; without shared subscriptions each takes some topics).
        filters: Vec<String>,
    },
}

/// Shared state of the consumers.
#[derive(Debug, Default)]
pub struct Consuming {
    /// Messages received and accepted, all consumers.
    pub consumed: AtomicU64,
    /// Consumers attached and ready to receive.
    pub ready: AtomicUsize,
    /// While set, latencies are recorded (the measured window).
    pub record: AtomicBool,
    /// Set to end every consumer.
    pub stop: AtomicBool,
    /// Latencies in microseconds, appended by each consumer when it ends.
    pub latencies: Mutex<Vec<u64>>,
    /// Why a consumer failed, if one did.
    pub failure: Mutex<Option<String>>,
}

impl Consuming {
    fn fail(&self, who: &str, why: String) {
        let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.get_or_insert_with(|| format!("consumer {who}: {why}"));
    }

    /// The first failure of any consumer.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn received(&self, body: Option<&[u8]>, local: &mut Vec<u64>) {
        if self.record.load(Ordering::Relaxed) {
            if let Some(sent) = body.and_then(sent_at_us) {
                local.push(now_us().saturating_sub(sent));
            }
        }
        self.consumed.fetch_add(1, Ordering::Relaxed);
    }

    fn keep(&self, local: Vec<u64>) {
        self.latencies.lock().unwrap_or_else(|e| e.into_inner()).extend(local);
    }
}

/// Runs one consumer until `state.stop`; failures are recorded in `state.failure`.
pub async fn run(name: String, spec: ConsumerSpec, state: Arc<Consuming>) {
    let result = match spec {
        ConsumerSpec::Amqp { addr, username, password, source, credit } => {
            amqp(&name, addr, username, password, &source, credit, &state).await
        }
        ConsumerSpec::Mqtt { addr, client_id, login, filters } => {
            mqtt(addr, client_id, login, filters, &state).await
        }
    };
    if let Err(e) = result {
        state.fail(&name, e);
    }
}

async fn amqp(
    name: &str,
    addr: SocketAddr,
    username: String,
    password: String,
    source: &str,
    credit: u32,
    state: &Consuming,
) -> Result<(), String> {
    // No Nagle delay for the small disposition and flow frames, as the AMQP clients of
    // business servers (qpid-proton, qpid-jms) do: otherwise a flow may wait for the server's
    // delayed ACK (40 ms) and the consumer's credit, not the server, sets the pace.
    let stream =
        tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("AMQP connect to {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("AMQP connect to {addr}: {e}"))?;
    let mut connection = Connection::builder()
        .container_id(name)
        .sasl_profile(SaslProfile::Plain { username, password })
        .open_with_stream(stream)
        .await
        .map_err(|e| format!("AMQP login at {addr}: {e}"))?;
    let mut session = Session::begin(&mut connection).await.map_err(|e| format!("AMQP session: {e}"))?;
    let mut receiver = Receiver::builder()
        .name(format!("{name}-rx"))
        .source(source)
        .credit_mode(CreditMode::Auto(credit))
        .auto_accept(false)
        .attach(&mut session)
        .await
        .map_err(|e| format!("AMQP attach to {source:?}: {e}"))?;
    state.ready.fetch_add(1, Ordering::Relaxed);
    let mut local = Vec::with_capacity(1 << 16);
    let mut result = Ok(());
    while !state.stop.load(Ordering::Relaxed) {
        let d = match tokio::time::timeout(POLL, receiver.recv::<Body<Value>>()).await {
            Err(_) => continue,
            Ok(Err(e)) => {
                result = Err(format!("AMQP receive: {e}"));
                break;
            }
            Ok(Ok(d)) => d,
        };
        state.received(body_bytes(d.body()), &mut local);
        if let Err(e) = receiver.accept(&d).await {
            result = Err(format!("AMQP accept: {e}"));
            break;
        }
    }
    state.keep(local);
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    result
}

/// The payload bytes of a message: one data section (iotpipe, RabbitMQ) or a binary or string
/// amqp-value.
fn body_bytes(body: &Body<Value>) -> Option<&[u8]> {
    match body {
        Body::Data(batch) => batch.iter().next().map(|d| &d.0[..]),
        Body::Value(v) => match &v.0 {
            Value::Binary(b) => Some(&b[..]),
            Value::String(s) => Some(s.as_bytes()),
            _ => None,
        },
        _ => None,
    }
}

async fn mqtt(
    addr: SocketAddr,
    client_id: String,
    login: Option<(String, String)>,
    filters: Vec<String>,
    state: &Consuming,
) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_clean_session(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((u, p)) = login {
        options.set_credentials(u, p);
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let filters = filters.into_iter().map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
    client.subscribe_many(filters).await.map_err(|e| format!("MQTT subscribe: {e}"))?;
    let mut local = Vec::with_capacity(1 << 16);
    let mut result = Ok(());
    while !state.stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(POLL, events.poll()).await {
            Err(_) => {}
            Ok(Err(e)) => {
                result = Err(format!("MQTT connection to {addr}: {e}"));
                break;
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                state.ready.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => state.received(Some(&p.payload), &mut local),
            Ok(Ok(_)) => {}
        }
    }
    state.keep(local);
    let _ = client.try_disconnect();
    result
}
