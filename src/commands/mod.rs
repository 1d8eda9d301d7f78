//! Cloud to device: what a business server (through the API or the CLI) asks of devices.
//!
//! [`DeviceCommands`] is the one interface: publish to a device (the platform's Pub), broadcast to
//! a product (PubBroadcast), RRPC (RRpc), set properties (SetDeviceProperty) and invoke a service
//! (InvokeThingService), and the state of a message sent. [`LocalCommands`] serves the devices
//! connected to this process; a cluster routes each call to the node holding the device by
//! implementing the same trait. Guarantees and the mapping to the platform: docs/downlink.md.
//!
//! - `local.rs`: the implementation over this node's sessions.
//! - `states.rs`: the bounded table of recent messages and their delivery states.
//! - `alink.rs`: thing-model requests (topics, Alink JSON, identifiers).

mod alink;
mod local;
mod states;

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

pub use crate::ingress::mailbox::DeliveryState;
pub use local::LocalCommands;

/// Shortest RRPC or synchronous-call wait, as the platform's RRpc (`Timeout` 1,000-8,000 ms).
pub const MIN_WAIT: Duration = Duration::from_millis(1_000);
/// Longest RRPC or synchronous-call wait; also below the CLI's 10 s request timeout.
pub const MAX_WAIT: Duration = Duration::from_millis(8_000);

/// Why a call was refused; each maps to one API error code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such product.
    #[error("product {0} does not exist")]
    NoProduct(String),
    /// No such device.
    #[error("device {1} of product {0} does not exist")]
    NoDevice(String, String),
    /// The topic is not one the call may publish to.
    #[error("{0}")]
    InvalidTopic(String),
    /// An argument is out of range or malformed; names the field.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// The body field, e.g. `timeoutMs`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The device is not connected; iotpipe keeps nothing for offline devices.
    #[error("device {1} of product {0} is offline; iotpipe does not keep messages for offline devices")]
    DeviceOffline(String, String),
    /// The device's mailbox is full (it does not acknowledge fast enough).
    #[error("device {1} of product {0} has {max} downlink messages waiting already; retry later", max = crate::ingress::mailbox::MAILBOX)]
    TooManyInFlight(String, String),
    /// Too many calls wait for device answers.
    #[error("{max} calls are waiting for device answers already; retry later", max = crate::ingress::mailbox::MAX_WAITING_CALLS)]
    TooManyCalls,
    /// The router's queue is full.
    #[error("the downlink router is busy; retry later")]
    RouterBusy,
    /// The message is unknown, or too old to be remembered.
    #[error("no message {0} to this device among the last {max} downlink messages", max = states::MAX_STATES)]
    MessageNotFound(u64),
    /// Message ids could not be reserved (storage).
    #[error("{0}")]
    Internal(String),
}

/// `POST .../devices/{dn}/messages`.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// productKey.
    pub product_key: String,
    /// deviceName.
    pub device_name: String,
    /// One of the device's own custom topics, `/${pk}/${dn}/user/...`.
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// 0 or 1.
    pub qos: u8,
}

/// The state of a message sent to a device.
#[derive(Debug, Clone)]
pub struct MessageStatus {
    /// The message's id.
    pub message_id: u64,
    /// Its topic.
    pub topic: String,
    /// The QoS asked for.
    pub qos: u8,
    /// What became of it.
    pub state: DeliveryState,
}

/// The platform's RRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RrpcCode {
    /// The device answered.
    Success,
    /// No answer in time (or the device has not subscribed to its request topic).
    Timeout,
    /// The device is not connected.
    Offline,
}

impl RrpcCode {
    /// The platform's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RrpcCode::Success => "SUCCESS",
            RrpcCode::Timeout => "TIMEOUT",
            RrpcCode::Offline => "OFFLINE",
        }
    }
}

/// `POST .../devices/{dn}/rrpc`.
#[derive(Debug, Clone)]
pub struct RrpcRequest {
    /// productKey.
    pub product_key: String,
    /// deviceName.
    pub device_name: String,
    /// The request payload.
    pub payload: Bytes,
    /// How long to wait for the answer, [`MIN_WAIT`] to [`MAX_WAIT`].
    pub timeout: Duration,
}

/// An RRPC outcome.
#[derive(Debug, Clone)]
pub struct RrpcAnswer {
    /// The request's message id (the last level of its topics).
    pub message_id: u64,
    /// The platform's code.
    pub code: RrpcCode,
    /// The device's answer, with `Success`.
    pub payload: Option<Bytes>,
    /// What became of the request message.
    pub state: DeliveryState,
}

/// A thing-model call: set properties or invoke a service.
#[derive(Debug, Clone)]
pub struct ThingCall {
    /// productKey.
    pub product_key: String,
    /// deviceName.
    pub device_name: String,
    /// `params` of the Alink request: the properties to set, or the service's arguments.
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Wait this long for the device's reply ([`MIN_WAIT`] to [`MAX_WAIT`]); `None`: answer
    /// once sent, as the platform does.
    pub wait: Option<Duration>,
}

/// A thing-model call's outcome.
#[derive(Debug, Clone)]
pub struct ThingAnswer {
    /// The request message's id.
    pub message_id: u64,
    /// The Alink `id` of the request, which the device's reply (and the downlink-reply message
    /// forwarded to subscriptions) carries as `requestId`.
    pub request_id: String,
    /// What became of the request message.
    pub state: DeliveryState,
    /// With a wait: the outcome (`Success` with the device's reply).
    pub reply: Option<(RrpcCode, Option<serde_json::Value>)>,
}

/// Cloud-to-device calls. Every method addresses one device (or one product's broadcast); a
/// cluster implementation forwards each call to the node that holds the device's session.
pub trait DeviceCommands: Send + Sync {
    /// Publishes to one of the device's custom topics (the platform's Pub); answers once the
    /// message is in the device's session, with its id for [`DeviceCommands::message`].
    fn publish(&self, request: PublishRequest) -> BoxFuture<'_, Result<u64, CommandError>>;

    /// The state of message `message_id` sent to the device.
    fn message(
        &self,
        product_key: String,
        device_name: String,
        message_id: u64,
    ) -> BoxFuture<'_, Result<MessageStatus, CommandError>>;

    /// Publishes to `/broadcast/${pk}/...` for every online device of the product subscribed to
    /// it (the platform's PubBroadcast); QoS 0.
    fn broadcast(
        &self,
        product_key: String,
        topic: String,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<u64, CommandError>>;

    /// Sends an RRPC request and waits for the device's answer (the platform's RRpc).
    fn rrpc(&self, request: RrpcRequest) -> BoxFuture<'_, Result<RrpcAnswer, CommandError>>;

    /// Sets properties (`thing.service.property.set`, the platform's SetDeviceProperty).
    fn set_properties(&self, call: ThingCall) -> BoxFuture<'_, Result<ThingAnswer, CommandError>>;

    /// Invokes service `identifier` (the platform's InvokeThingService).
    fn invoke(&self, call: ThingCall, identifier: String)
        -> BoxFuture<'_, Result<ThingAnswer, CommandError>>;
}

/// Checks a wait against [`MIN_WAIT`]..=[`MAX_WAIT`].
///
/// # Errors
/// Names `field` and the range.
pub fn check_wait(field: &'static str, ms: u64) -> Result<Duration, CommandError> {
    let wait = Duration::from_millis(ms);
    if (MIN_WAIT..=MAX_WAIT).contains(&wait) {
        Ok(wait)
    } else {
        Err(CommandError::InvalidArgument {
            field,
            message: format!(
                "{ms} is out of range; expected {} to {} milliseconds",
                MIN_WAIT.as_millis(),
                MAX_WAIT.as_millis()
            ),
        })
    }
}
