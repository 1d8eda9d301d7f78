//! Cloud-to-device calls on any node: a call for a device held by another node is forwarded
//! there by core NATS request/reply (`{name}.node.<node>.commands`), executed by that node's
//! [`LocalCommands`](crate::commands::LocalCommands) and answered; a broadcast goes to every
//! node (`{name}.broadcast`).
//!
//! The wire format is JSON, payloads in hex (a 256 KiB MQTT payload stays under NATS's default
//! 1 MiB message limit).

use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, RequestErrorKind};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::ClusterSessions;
use crate::commands::{
    CommandError, DeliveryState, DeviceCommands, MessageStatus, PublishRequest, RrpcAnswer, RrpcCode,
    RrpcRequest, ThingAnswer, ThingCall,
};
use crate::ingress::SessionsHandle;

/// How much longer than the call's own wait a forwarded call may take (the hop and the
/// holding node's work).
const HOP_MARGIN: Duration = Duration::from_secs(2);

/// A call without a wait of its own (publish, message state, a thing call answered once sent).
const NO_WAIT: Duration = Duration::from_secs(3);

/// The header naming the node a broadcast came from, so that it does not publish it twice.
const ORIGIN: &str = "Iotpipe-Node";

/// A call as it travels to the node that holds the device.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Call {
    #[serde(rename_all = "camelCase")]
    Publish { product_key: String, device_name: String, topic: String, payload: String, qos: u8 },
    #[serde(rename_all = "camelCase")]
    Message { product_key: String, device_name: String, message_id: u64 },
    #[serde(rename_all = "camelCase")]
    Rrpc { product_key: String, device_name: String, payload: String, timeout_ms: u64 },
    #[serde(rename_all = "camelCase")]
    SetProperties { call: WireThing },
    #[serde(rename_all = "camelCase")]
    Invoke { call: WireThing, identifier: String },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireThing {
    product_key: String,
    device_name: String,
    params: serde_json::Map<String, serde_json::Value>,
    wait_ms: Option<u64>,
}

/// The holding node's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
enum Answer {
    #[serde(rename_all = "camelCase")]
    Published { message_id: u64 },
    #[serde(rename_all = "camelCase")]
    Message { message_id: u64, topic: String, qos: u8, state: String },
    #[serde(rename_all = "camelCase")]
    Rrpc { message_id: u64, code: String, payload: Option<String>, state: String },
    #[serde(rename_all = "camelCase")]
    Thing {
        message_id: u64,
        request_id: String,
        state: String,
        code: Option<String>,
        body: Option<serde_json::Value>,
    },
    #[serde(rename_all = "camelCase")]
    Error { kind: String, product_key: String, device_name: String, field: String, message: String, id: u64 },
}

impl WireThing {
    fn from_call(call: ThingCall) -> Self {
        Self {
            product_key: call.product_key,
            device_name: call.device_name,
            params: call.params,
            wait_ms: call.wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    fn into_call(self) -> ThingCall {
        ThingCall {
            product_key: self.product_key,
            device_name: self.device_name,
            params: self.params,
            wait: self.wait_ms.map(Duration::from_millis),
        }
    }
}

fn state_from(name: &str) -> DeliveryState {
    [
        DeliveryState::Sent,
        DeliveryState::Acknowledged,
        DeliveryState::NotSubscribed,
        DeliveryState::DeviceOffline,
    ]
    .into_iter()
    .find(|s| s.as_str() == name)
    .unwrap_or(DeliveryState::Queued)
}

fn code_from(name: &str) -> RrpcCode {
    match name {
        "SUCCESS" => RrpcCode::Success,
        "OFFLINE" => RrpcCode::Offline,
        _ => RrpcCode::Timeout,
    }
}

fn unhex(text: &str) -> Result<Bytes, CommandError> {
    hex::decode(text)
        .map(Bytes::from)
        .map_err(|e| CommandError::Internal(format!("a forwarded payload: {e}")))
}

/// The only fields a call's argument errors name (the error's field is static).
fn static_field(field: &str) -> &'static str {
    ["qos", "identifier", "timeoutMs", "topic", "payload", "params"]
        .into_iter()
        .find(|f| *f == field)
        .unwrap_or("request")
}

fn error_answer(e: &CommandError) -> Answer {
    let (mut pk, mut dn, mut field, mut id) = (String::new(), String::new(), String::new(), 0);
    let kind = match e {
        CommandError::NoProduct(p) => {
            pk.clone_from(p);
            "noProduct"
        }
        CommandError::NoDevice(p, d) => {
            (pk, dn) = (p.clone(), d.clone());
            "noDevice"
        }
        CommandError::InvalidTopic(_) => "invalidTopic",
        CommandError::InvalidArgument { field: f, .. } => {
            field = (*f).to_string();
            "invalidArgument"
        }
        CommandError::DeviceOffline(p, d) => {
            (pk, dn) = (p.clone(), d.clone());
            "deviceOffline"
        }
        CommandError::TooManyInFlight(p, d) => {
            (pk, dn) = (p.clone(), d.clone());
            "tooManyInFlight"
        }
        CommandError::TooManyCalls => "tooManyCalls",
        CommandError::RouterBusy => "routerBusy",
        CommandError::MessageNotFound(m) => {
            id = *m;
            "messageNotFound"
        }
        CommandError::Internal(_) => "internal",
    };
    let message = match e {
        CommandError::InvalidTopic(m) | CommandError::Internal(m) => m.clone(),
        CommandError::InvalidArgument { message, .. } => message.clone(),
        _ => String::new(),
    };
    Answer::Error { kind: kind.into(), product_key: pk, device_name: dn, field, message, id }
}

fn error_from(kind: &str, pk: String, dn: String, field: &str, message: String, id: u64) -> CommandError {
    match kind {
        "noProduct" => CommandError::NoProduct(pk),
        "noDevice" => CommandError::NoDevice(pk, dn),
        "invalidTopic" => CommandError::InvalidTopic(message),
        "invalidArgument" => CommandError::InvalidArgument { field: static_field(field), message },
        "deviceOffline" => CommandError::DeviceOffline(pk, dn),
        "tooManyInFlight" => CommandError::TooManyInFlight(pk, dn),
        "tooManyCalls" => CommandError::TooManyCalls,
        "routerBusy" => CommandError::RouterBusy,
        "messageNotFound" => CommandError::MessageNotFound(id),
        _ => CommandError::Internal(message),
    }
}

/// Executes a forwarded call on this node.
async fn execute(local: &dyn DeviceCommands, call: Call) -> Answer {
    let result = match call {
        Call::Publish { product_key, device_name, topic, payload, qos } => match unhex(&payload) {
            Ok(payload) => local
                .publish(PublishRequest { product_key, device_name, topic, payload, qos })
                .await
                .map(|message_id| Answer::Published { message_id }),
            Err(e) => Err(e),
        },
        Call::Message { product_key, device_name, message_id } => {
            local.message(product_key, device_name, message_id).await.map(|m| Answer::Message {
                message_id: m.message_id,
                topic: m.topic,
                qos: m.qos,
                state: m.state.as_str().into(),
            })
        }
        Call::Rrpc { product_key, device_name, payload, timeout_ms } => match unhex(&payload) {
            Ok(payload) => {
                let request = RrpcRequest {
                    product_key,
                    device_name,
                    payload,
                    timeout: Duration::from_millis(timeout_ms),
                };
                local.rrpc(request).await.map(|a| Answer::Rrpc {
                    message_id: a.message_id,
                    code: a.code.as_str().into(),
                    payload: a.payload.map(hex::encode),
                    state: a.state.as_str().into(),
                })
            }
            Err(e) => Err(e),
        },
        Call::SetProperties { call } => local.set_properties(call.into_call()).await.map(thing_answer),
        Call::Invoke { call, identifier } => {
            local.invoke(call.into_call(), identifier).await.map(thing_answer)
        }
    };
    result.unwrap_or_else(|e| error_answer(&e))
}

fn thing_answer(a: ThingAnswer) -> Answer {
    let (code, body) = match a.reply {
        Some((code, body)) => (Some(code.as_str().to_string()), body),
        None => (None, None),
    };
    Answer::Thing {
        message_id: a.message_id,
        request_id: a.request_id,
        state: a.state.as_str().into(),
        code,
        body,
    }
}

/// [`DeviceCommands`] of a cluster node: a device online here is served here, a device held by
/// another node there, and an offline device gets the local answer (offline).
pub struct ClusterCommands {
    local: Arc<dyn DeviceCommands>,
    here: SessionsHandle,
    sessions: Arc<ClusterSessions>,
}

impl ClusterCommands {
    /// The calls over this node's `local` calls and sessions (`here`), forwarding through
    /// `sessions`.
    pub fn new(
        local: Arc<dyn DeviceCommands>,
        here: SessionsHandle,
        sessions: Arc<ClusterSessions>,
    ) -> Arc<Self> {
        Arc::new(Self { local, here, sessions })
    }

    /// Answers the calls other nodes forward here and publishes their broadcasts to this node's
    /// devices, until `shutdown`.
    ///
    /// # Errors
    /// The subscriptions could not be made.
    pub async fn serve(self: &Arc<Self>, shutdown: CancellationToken) -> Result<(), super::ClusterError> {
        let client = self.sessions.client().clone();
        let subject = format!("{}{}.commands", self.sessions.node_subjects(), self.sessions.node());
        let mut calls = client
            .subscribe(subject.clone())
            .await
            .map_err(|e| super::ClusterError::JetStream(format!("subscribing to {subject}: {e}")))?;
        let broadcast_subject = self.broadcast_subject();
        let mut broadcasts = client.subscribe(broadcast_subject.clone()).await.map_err(|e| {
            super::ClusterError::JetStream(format!("subscribing to {broadcast_subject}: {e}"))
        })?;
        let (local, stop) = (self.local.clone(), shutdown.clone());
        let replies = client.clone();
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    () = stop.cancelled() => break,
                    request = calls.next() => match request { Some(r) => r, None => break },
                };
                let (local, replies) = (local.clone(), replies.clone());
                tokio::spawn(async move {
                    let Some(reply) = request.reply.clone() else { return };
                    let answer = match serde_json::from_slice::<Call>(&request.payload) {
                        Ok(call) => execute(local.as_ref(), call).await,
                        Err(e) => {
                            error_answer(&CommandError::Internal(format!("a malformed forwarded call: {e}")))
                        }
                    };
                    let body = serde_json::to_vec(&answer).unwrap_or_default();
                    if let Err(e) = replies.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, "Could not answer a forwarded device call");
                    }
                });
            }
        });
        let (here, node) = (self.here.clone(), self.sessions.node().to_string());
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = broadcasts.next() => match message { Some(m) => m, None => break },
                };
                let from =
                    message.headers.as_ref().and_then(|h| h.get(ORIGIN)).map(|v| v.as_str().to_string());
                if from.as_deref() == Some(node.as_str()) {
                    continue;
                }
                let Some(topic) = message.headers.as_ref().and_then(|h| h.get("Iotpipe-Topic")) else {
                    continue;
                };
                if let Err(e) = here.broadcast(topic.as_str(), message.payload.clone()) {
                    tracing::warn!(error = %e, "Could not publish another node's broadcast here");
                }
            }
        });
        Ok(())
    }

    fn broadcast_subject(&self) -> String {
        let prefix = self.sessions.node_subjects().strip_suffix("node.").unwrap_or_default();
        format!("{prefix}broadcast")
    }

    /// The node holding the device when it is not this one.
    async fn elsewhere(&self, pk: &str, dn: &str) -> Option<String> {
        if self.here.is_online(pk, dn) {
            return None;
        }
        match self.sessions.owner(pk, dn).await {
            Ok(Some(owner)) if owner.node != self.sessions.node() => Some(owner.node),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(device = %dn, product = %pk, error = %e, "Reading the sessions bucket failed; answering from this node");
                None
            }
        }
    }

    /// Sends `call` to `node`; `None` when no such node answers (it is gone: the device is
    /// offline, as the local answer will say).
    async fn forward(&self, node: &str, call: &Call, wait: Duration) -> Option<Result<Answer, CommandError>> {
        let body = match serde_json::to_vec(call) {
            Ok(b) => b,
            Err(e) => return Some(Err(CommandError::Internal(e.to_string()))),
        };
        let subject = format!("{}{node}.commands", self.sessions.node_subjects());
        let request = async_nats::Request::new().payload(body.into()).timeout(Some(wait + HOP_MARGIN));
        match self.sessions.client().send_request(subject, request).await {
            Ok(reply) => Some(match serde_json::from_slice::<Answer>(&reply.payload) {
                Ok(Answer::Error { kind, product_key, device_name, field, message, id }) => {
                    Err(error_from(&kind, product_key, device_name, &field, message, id))
                }
                Ok(answer) => Ok(answer),
                Err(e) => {
                    Err(CommandError::Internal(format!("node {node} answered a device call malformed: {e}")))
                }
            }),
            Err(e) if e.kind() == RequestErrorKind::NoResponders => None,
            Err(e) => Some(Err(CommandError::Internal(format!(
                "node {node}, which holds the device, did not answer the call: {e}"
            )))),
        }
    }
}

fn unexpected(answer: &Answer) -> CommandError {
    CommandError::Internal(format!("a forwarded call got an answer of another kind: {answer:?}"))
}

impl DeviceCommands for ClusterCommands {
    fn publish(&self, r: PublishRequest) -> BoxFuture<'_, Result<u64, CommandError>> {
        async move {
            if let Some(node) = self.elsewhere(&r.product_key, &r.device_name).await {
                let call = Call::Publish {
                    product_key: r.product_key.clone(),
                    device_name: r.device_name.clone(),
                    topic: r.topic.clone(),
                    payload: hex::encode(&r.payload),
                    qos: r.qos,
                };
                match self.forward(&node, &call, NO_WAIT).await {
                    Some(Ok(Answer::Published { message_id })) => return Ok(message_id),
                    Some(Ok(other)) => return Err(unexpected(&other)),
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
            }
            self.local.publish(r).await
        }
        .boxed()
    }

    fn message(
        &self,
        product_key: String,
        device_name: String,
        message_id: u64,
    ) -> BoxFuture<'_, Result<MessageStatus, CommandError>> {
        async move {
            let here = self.local.message(product_key.clone(), device_name.clone(), message_id).await;
            if !matches!(here, Err(CommandError::MessageNotFound(_))) {
                return here;
            }
            // Sent by the node that holds the device (then or now).
            if let Some(node) = self.elsewhere(&product_key, &device_name).await {
                let call = Call::Message { product_key, device_name, message_id };
                match self.forward(&node, &call, NO_WAIT).await {
                    Some(Ok(Answer::Message { message_id, topic, qos, state })) => {
                        return Ok(MessageStatus { message_id, topic, qos, state: state_from(&state) });
                    }
                    Some(Ok(other)) => return Err(unexpected(&other)),
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
            }
            here
        }
        .boxed()
    }

    fn broadcast(
        &self,
        product_key: String,
        topic: String,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<u64, CommandError>> {
        async move {
            let id = self.local.broadcast(product_key, topic.clone(), payload.clone()).await?;
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, self.sessions.node());
            headers.insert("Iotpipe-Topic", topic.as_str());
            if let Err(e) =
                self.sessions.client().publish_with_headers(self.broadcast_subject(), headers, payload).await
            {
                tracing::warn!(error = %e, "Could not send a broadcast to the other nodes");
            }
            Ok(id)
        }
        .boxed()
    }

    fn rrpc(&self, r: RrpcRequest) -> BoxFuture<'_, Result<RrpcAnswer, CommandError>> {
        async move {
            if let Some(node) = self.elsewhere(&r.product_key, &r.device_name).await {
                let call = Call::Rrpc {
                    product_key: r.product_key.clone(),
                    device_name: r.device_name.clone(),
                    payload: hex::encode(&r.payload),
                    timeout_ms: u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX),
                };
                match self.forward(&node, &call, r.timeout).await {
                    Some(Ok(Answer::Rrpc { message_id, code, payload, state })) => {
                        let payload = payload.map(|p| unhex(&p)).transpose()?;
                        return Ok(RrpcAnswer {
                            message_id,
                            code: code_from(&code),
                            payload,
                            state: state_from(&state),
                        });
                    }
                    Some(Ok(other)) => return Err(unexpected(&other)),
                    Some(Err(e)) => return Err(e),
                    None => {}
                }
            }
            self.local.rrpc(r).await
        }
        .boxed()
    }

    fn set_properties(&self, call: ThingCall) -> BoxFuture<'_, Result<ThingAnswer, CommandError>> {
        async move {
            if let Some(node) = self.elsewhere(&call.product_key, &call.device_name).await {
                let wait = call.wait.unwrap_or(NO_WAIT);
                let forwarded = Call::SetProperties { call: WireThing::from_call(call.clone()) };
                if let Some(answer) = self.forward(&node, &forwarded, wait).await {
                    return thing_from(answer);
                }
            }
            self.local.set_properties(call).await
        }
        .boxed()
    }

    fn invoke(
        &self,
        call: ThingCall,
        identifier: String,
    ) -> BoxFuture<'_, Result<ThingAnswer, CommandError>> {
        async move {
            if let Some(node) = self.elsewhere(&call.product_key, &call.device_name).await {
                let wait = call.wait.unwrap_or(NO_WAIT);
                let forwarded =
                    Call::Invoke { call: WireThing::from_call(call.clone()), identifier: identifier.clone() };
                if let Some(answer) = self.forward(&node, &forwarded, wait).await {
                    return thing_from(answer);
                }
            }
            self.local.invoke(call, identifier).await
        }
        .boxed()
    }
}

fn thing_from(answer: Result<Answer, CommandError>) -> Result<ThingAnswer, CommandError> {
    match answer? {
        Answer::Thing { message_id, request_id, state, code, body } => Ok(ThingAnswer {
            message_id,
            request_id,
            state: state_from(&state),
            reply: code.map(|c| (code_from(&c), body)),
        }),
        other => Err(unexpected(&other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_and_states_survive_the_wire() {
        let errors = [
            CommandError::NoProduct("p".into()),
            CommandError::NoDevice("p".into(), "d".into()),
            CommandError::InvalidTopic("bad topic".into()),
            CommandError::InvalidArgument { field: "qos", message: "2 is not supported".into() },
            CommandError::DeviceOffline("p".into(), "d".into()),
            CommandError::TooManyInFlight("p".into(), "d".into()),
            CommandError::TooManyCalls,
            CommandError::RouterBusy,
            CommandError::MessageNotFound(7),
            CommandError::Internal("x".into()),
        ];
        for e in errors {
            let wire = serde_json::to_vec(&error_answer(&e)).unwrap();
            let Answer::Error { kind, product_key, device_name, field, message, id } =
                serde_json::from_slice(&wire).unwrap()
            else {
                panic!("not an error")
            };
            let back = error_from(&kind, product_key, device_name, &field, message, id);
            assert_eq!(back.to_string(), e.to_string());
        }
        for s in [
            DeliveryState::Queued,
            DeliveryState::Sent,
            DeliveryState::Acknowledged,
            DeliveryState::NotSubscribed,
            DeliveryState::DeviceOffline,
        ] {
            assert_eq!(state_from(s.as_str()), s);
        }
        for c in [RrpcCode::Success, RrpcCode::Timeout, RrpcCode::Offline] {
            assert_eq!(code_from(c.as_str()), c);
        }
    }
}
