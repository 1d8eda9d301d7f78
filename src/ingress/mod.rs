//! MQTT ingress: devices connect here.
//!
//! iotpipe's own session layer (`connection.rs`) speaks MQTT 3.1.1 and 5 through rumqttc's
//! codecs (`codec.rs`), authenticates with the Link SDK scheme (`auth.rs`), enforces the topic
//! ACL (`acl.rs`), announces online/offline (`status.rs`, `sessions.rs`) and hands every publish
//! to the durable pipeline. The downlink router ([`crate::downlink`]) carries device
//! subscriptions and downlink messages. Why this shape: docs/ingress.md.

pub mod acl;
pub mod auth;
pub mod codec;
pub mod config;
mod connection;
mod handshake;
mod io;
mod listener;
pub mod mailbox;
mod restart;
mod session;
pub mod sessions;
pub mod status;
mod tags;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::downlink::{Downlink, DownlinkError};
use crate::listener::{ListenerError, Serving};
use crate::logsafe::RateLimit;
use crate::pipeline::Pipeline;
use crate::registry::Registry;
use mailbox::{Calls, Delivery, Undeliverable};

pub use config::MqttConfig;
pub use sessions::{Directory, Sessions};
pub use status::OfflineReason;

/// Ingress start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    /// A listener could not bind, or its TLS files are unusable.
    #[error("MQTT {0}")]
    Listener(ListenerError),
    /// The embedded router did not start.
    #[error(transparent)]
    Downlink(#[from] DownlinkError),
}

/// Not `#[from]`: the message holds the listener error already, and a `source` would make
/// error chains print it twice.
impl From<ListenerError> for IngressError {
    fn from(e: ListenerError) -> Self {
        IngressError::Listener(e)
    }
}

/// Limits from `[mqtt]`, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub max_payload: usize,
    /// Largest packet read: the payload limit plus room for the largest topic and headers.
    pub max_packet: usize,
    pub keep_alive_min: u16,
    pub keep_alive_max: u16,
    pub max_inflight: usize,
    pub connect_timeout_secs: u64,
    /// How long an MQTT 3.1.1 session waits for the PUBACK of a QoS 1 downlink before sending
    /// it again.
    pub downlink_retry: Duration,
}

impl Limits {
    fn new(c: &MqttConfig) -> Self {
        Self {
            max_payload: c.max_payload_bytes,
            max_packet: c.max_payload_bytes.saturating_add(65_536 + 16).min(config::MAX_PACKET),
            keep_alive_min: c.keep_alive_min_secs,
            keep_alive_max: c.keep_alive_max_secs,
            max_inflight: c.max_inflight,
            connect_timeout_secs: c.connect_timeout_secs,
            downlink_retry: Duration::from_secs(c.downlink_retry_secs),
        }
    }

    pub fn max_packet_u32(&self) -> u32 {
        u32::try_from(self.max_packet).unwrap_or(u32::MAX)
    }
}

/// Counters of the ingress, for metrics.
#[derive(Debug, Default)]
pub struct IngressStats {
    /// Devices online now.
    pub connections: AtomicU64,
    /// Connections refused at or before CONNECT (the sum of `refusals`).
    pub refused: AtomicU64,
    /// Connections accepted (CONNACK 0).
    pub connects: AtomicU64,
    /// Refused connections by reason.
    pub refusals: Refusals,
    /// Publishes handed to the pipeline.
    pub publishes: AtomicU64,
    /// Payload bytes handed to the pipeline.
    pub bytes: AtomicU64,
    /// Publishes and subscriptions refused by the topic ACL.
    pub acl_denied: AtomicU64,
    /// Publishes refused for their size.
    pub oversized: AtomicU64,
    /// Connections closed for malformed packets or protocol violations.
    pub protocol_errors: AtomicU64,
    /// Thing-model posts forwarded unconverted because their JSON was not Alink JSON.
    pub bad_thing_payloads: AtomicU64,
    /// Cloud-to-device messages per product.
    pub downlink: mailbox::DownlinkStats,
}

/// Why a connection was refused at or before CONNECT, one counter per reason.
#[derive(Debug, Default)]
pub struct Refusals {
    /// The first packet was not a well-formed CONNECT, or the peer closed before sending one.
    pub malformed: AtomicU64,
    /// No complete CONNECT within `connect_timeout_secs`.
    pub connect_timeout: AtomicU64,
    /// Keep-alive outside the allowed range.
    pub keep_alive: AtomicU64,
    /// Client id or username not in the Link SDK form, or no password.
    pub bad_credentials: AtomicU64,
    /// No such device.
    pub unknown_device: AtomicU64,
    /// Wrong signature.
    pub bad_signature: AtomicU64,
    /// The device is disabled.
    pub disabled: AtomicU64,
    /// The online status could not be stored.
    pub unavailable: AtomicU64,
}

/// A reason of [`Refusals`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// See [`Refusals::malformed`].
    Malformed,
    /// See [`Refusals::connect_timeout`].
    ConnectTimeout,
    /// See [`Refusals::keep_alive`].
    KeepAlive,
    /// See [`Refusals::bad_credentials`].
    BadCredentials,
    /// See [`Refusals::unknown_device`].
    UnknownDevice,
    /// See [`Refusals::bad_signature`].
    BadSignature,
    /// See [`Refusals::disabled`].
    Disabled,
    /// See [`Refusals::unavailable`].
    Unavailable,
}

impl Refusals {
    /// Every reason with its metric label.
    pub const REASONS: [(RefusalReason, &'static str); 8] = [
        (RefusalReason::Malformed, "malformed"),
        (RefusalReason::ConnectTimeout, "connect_timeout"),
        (RefusalReason::KeepAlive, "keep_alive"),
        (RefusalReason::BadCredentials, "bad_credentials"),
        (RefusalReason::UnknownDevice, "unknown_device"),
        (RefusalReason::BadSignature, "bad_signature"),
        (RefusalReason::Disabled, "disabled"),
        (RefusalReason::Unavailable, "unavailable"),
    ];

    /// The counter of `reason`.
    pub fn counter(&self, reason: RefusalReason) -> &AtomicU64 {
        match reason {
            RefusalReason::Malformed => &self.malformed,
            RefusalReason::ConnectTimeout => &self.connect_timeout,
            RefusalReason::KeepAlive => &self.keep_alive,
            RefusalReason::BadCredentials => &self.bad_credentials,
            RefusalReason::UnknownDevice => &self.unknown_device,
            RefusalReason::BadSignature => &self.bad_signature,
            RefusalReason::Disabled => &self.disabled,
            RefusalReason::Unavailable => &self.unavailable,
        }
    }
}

impl IngressStats {
    /// Counts a refused connection.
    pub(crate) fn refuse(&self, reason: RefusalReason) {
        use std::sync::atomic::Ordering::Relaxed;
        self.refused.fetch_add(1, Relaxed);
        self.refusals.counter(reason).fetch_add(1, Relaxed);
    }
}

/// What every device connection of the ingress shares.
pub(crate) struct IngressContext {
    pub registry: Arc<Registry>,
    pub sessions: Sessions,
    pub pipeline: Pipeline,
    pub downlink: Arc<Downlink>,
    pub limits: Limits,
    pub shutdown: CancellationToken,
    pub stats: Arc<IngressStats>,
    pub tasks: TaskTracker,
    /// Log lines of refusals anyone can cause without logging in, one limit per kind.
    pub logs: RefusalLogs,
    /// Calls waiting for a device's answer (RRPC, thing-model services).
    pub calls: Arc<Calls>,
}

/// Rate limits of the refusal log lines (see [`crate::logsafe`]).
#[derive(Debug, Default)]
pub(crate) struct RefusalLogs {
    /// Refused CONNECTs (bad credentials, unknown device, ...).
    pub refused: RateLimit,
    /// No CONNECT in time.
    pub timeout: RateLimit,
    /// Not MQTT, or a malformed CONNECT.
    pub malformed: RateLimit,
    /// RRPC answers no call waits for (late or unknown): a device can send any number.
    pub unanswered: RateLimit,
    /// Messages and statuses that could not be stored (a full disk fails every device's
    /// publishes and connects at once; the store's own line says why).
    pub not_stored: RateLimit,
}

/// A cloneable handle that disconnects devices.
#[derive(Clone)]
pub struct SessionsHandle(Arc<IngressContext>);

impl SessionsHandle {
    /// Disconnects the device, if online (in cluster mode: on any node), and waits until its
    /// offline status is stored.
    pub async fn disconnect(&self, product_key: &str, device_name: &str, reason: OfflineReason) {
        if let Some(done) = self.0.sessions.kick(product_key, device_name, reason) {
            done.cancelled().await;
        } else if let Some(directory) = self.0.sessions.directory() {
            directory.disconnect_elsewhere(product_key, device_name, reason).await;
        }
    }

    /// Whether the device is online.
    pub fn is_online(&self, product_key: &str, device_name: &str) -> bool {
        self.0.sessions.is_online(product_key, device_name)
    }

    /// Ends session `id` of the device, if it is still the device's session on this node;
    /// the token is cancelled once its offline status is stored (cluster takeover).
    pub fn kick_session(
        &self,
        product_key: &str,
        device_name: &str,
        id: u64,
        reason: OfflineReason,
    ) -> Option<CancellationToken> {
        self.0.sessions.kick_session(product_key, device_name, id, reason)
    }

    /// Hands a cloud-to-device message to the device's session.
    ///
    /// # Errors
    /// The device is offline or its mailbox is full.
    pub fn deliver(
        &self,
        product_key: &str,
        device_name: &str,
        delivery: Delivery,
    ) -> Result<(), Undeliverable> {
        self.0.sessions.deliver(product_key, device_name, delivery)
    }

    /// Publishes a QoS 0 message through the router to every device subscribed to `topic`.
    ///
    /// # Errors
    /// When the router is busy.
    pub fn broadcast(&self, topic: &str, payload: bytes::Bytes) -> Result<(), DownlinkError> {
        self.0.downlink.publish(topic, payload)
    }

    /// The calls waiting for device answers.
    pub fn calls(&self) -> &Arc<Calls> {
        &self.0.calls
    }

    /// The downlink counters of product `product_key`.
    pub fn downlink_counters(&self, product_key: &str) -> Arc<mailbox::DownlinkCounters> {
        self.0.stats.downlink.product(product_key)
    }
}

/// The running ingress.
pub struct Ingress {
    shared: Arc<IngressContext>,
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
}

impl Ingress {
    /// Binds the listeners and starts accepting. `directory`: cluster mode's sessions of every
    /// node (`None` on one node).
    ///
    /// # Errors
    /// A listener cannot bind, the TLS files are unusable, or the router fails to start.
    pub async fn start(
        config: &MqttConfig,
        registry: Arc<Registry>,
        pipeline: Pipeline,
        downlink: Arc<Downlink>,
        shutdown: CancellationToken,
        directory: Option<Arc<dyn Directory>>,
    ) -> Result<Self, IngressError> {
        // Before anyone can connect: the offline status of devices online at a crash.
        restart::announce_offline(&registry, &pipeline, directory.as_deref()).await;
        let bound = config.listener().bind().await?;
        let (addr, tls_addr) = (bound.addr(), bound.tls_addr());
        let shared = Arc::new(IngressContext {
            registry,
            sessions: Sessions::default(),
            pipeline,
            downlink,
            limits: Limits::new(config),
            shutdown,
            stats: Arc::new(IngressStats::default()),
            tasks: TaskTracker::new(),
            logs: RefusalLogs::default(),
            calls: Arc::new(Calls::default()),
        });
        if let Some(directory) = directory {
            shared.sessions.set_directory(directory);
        }
        let serving = Serving {
            name: "mqtt",
            max_connections: config.max_connections,
            // A TLS client gets as long for its handshake as for its CONNECT.
            handshake_timeout: Duration::from_secs(config.connect_timeout_secs),
            shutdown: shared.shutdown.clone(),
            tasks: shared.tasks.clone(),
        };
        bound.serve(shared.clone(), &serving);
        Ok(Self { shared, addr, tls_addr })
    }

    /// The bound plain MQTT address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound MQTT over TLS address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// Counters.
    /// Router links open for devices: only devices that subscribed have one.
    pub fn router_links(&self) -> usize {
        self.shared.downlink.device_links()
    }

    pub fn stats(&self) -> &Arc<IngressStats> {
        &self.shared.stats
    }

    /// Whether the device is online.
    pub fn is_online(&self, product_key: &str, device_name: &str) -> bool {
        self.shared.sessions.is_online(product_key, device_name)
    }

    /// Disconnects the device, if online, and waits until its offline status is stored.
    pub async fn disconnect(&self, product_key: &str, device_name: &str, reason: OfflineReason) {
        self.sessions().disconnect(product_key, device_name, reason).await;
    }

    /// A handle on the online devices, for components that disconnect them.
    pub fn sessions(&self) -> SessionsHandle {
        SessionsHandle(self.shared.clone())
    }

    /// Publishes a QoS 0 downlink message to the devices subscribed to `topic`.
    ///
    /// # Errors
    /// When the router is busy.
    pub fn publish(&self, topic: &str, payload: bytes::Bytes) -> Result<(), DownlinkError> {
        self.shared.downlink.publish(topic, payload)
    }

    /// Waits until the listeners have stopped and every connection has finished (after the
    /// shutdown token was cancelled).
    pub async fn stopped(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}
