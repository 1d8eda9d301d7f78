//! [`DeviceCommands`] for the devices connected to this process.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::states::{Remembered, States};
use super::{
    alink, CommandError, DeliveryState, DeviceCommands, MessageStatus, PublishRequest, RrpcAnswer, RrpcCode,
    RrpcRequest, ThingAnswer, ThingCall,
};
use crate::ingress::acl::Acl;
use crate::ingress::mailbox::{CallKind, CallsFull, Delivery, Tracker, Undeliverable, Waiting};
use crate::ingress::SessionsHandle;
use crate::logsafe::Untrusted;
use crate::pipeline::Pipeline;
use crate::registry::Registry;

/// The calls, served by this node's sessions.
pub struct LocalCommands {
    registry: Arc<Registry>,
    sessions: SessionsHandle,
    pipeline: Pipeline,
    states: States,
}

impl LocalCommands {
    /// The calls over these components; `pipeline` hands out the message ids.
    pub fn new(registry: Arc<Registry>, sessions: SessionsHandle, pipeline: Pipeline) -> Self {
        Self { registry, sessions, pipeline, states: States::default() }
    }

    fn check_device(&self, pk: &str, dn: &str) -> Result<(), CommandError> {
        if self.registry.device(pk, dn).is_some() {
            Ok(())
        } else if self.registry.product(pk).is_none() {
            Err(CommandError::NoProduct(pk.to_string()))
        } else {
            Err(CommandError::NoDevice(pk.to_string(), dn.to_string()))
        }
    }

    async fn next_id(&self) -> Result<u64, CommandError> {
        self.pipeline.next_id().await.map_err(|e| CommandError::Internal(format!("no message id: {e}")))
    }

    /// Hands one message to the device's session and remembers it.
    fn send(
        &self,
        pk: &str,
        dn: &str,
        id: u64,
        topic: String,
        payload: Bytes,
        qos: u8,
    ) -> Result<Arc<Tracker>, CommandError> {
        let tracker = Tracker::new(qos, self.sessions.downlink_counters(pk));
        let remembered = Remembered {
            product_key: pk.to_string(),
            device_name: dn.to_string(),
            topic: topic.clone(),
            qos,
            tracker: tracker.clone(),
        };
        let delivery = Delivery { topic, payload, qos, tracker: tracker.clone() };
        match self.sessions.deliver(pk, dn, delivery) {
            Ok(()) => {
                self.states.insert(id, remembered);
                Ok(tracker)
            }
            Err(Undeliverable::Offline) => Err(CommandError::DeviceOffline(pk.to_string(), dn.to_string())),
            Err(Undeliverable::Full) => {
                tracing::warn!(device = %Untrusted(dn), product = %Untrusted(pk), "Refused a downlink message: the device's mailbox is full");
                Err(CommandError::TooManyInFlight(pk.to_string(), dn.to_string()))
            }
        }
    }

    /// Refuses before spending an id when the device is not connected.
    fn online(&self, pk: &str, dn: &str) -> Result<(), CommandError> {
        if self.sessions.is_online(pk, dn) {
            Ok(())
        } else {
            self.sessions.downlink_counters(pk).failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(CommandError::DeviceOffline(pk.to_string(), dn.to_string()))
        }
    }

    fn expect(&self, kind: CallKind, pk: &str, dn: &str, id: &str) -> Result<Waiting, CommandError> {
        self.sessions.calls().expect(kind, pk, dn, id).map_err(|CallsFull::Full| {
            tracing::warn!(device = %Untrusted(dn), product = %Untrusted(pk), "Refused a call: too many calls wait for device answers");
            CommandError::TooManyCalls
        })
    }

    async fn thing(&self, call: ThingCall, service: &str) -> Result<ThingAnswer, CommandError> {
        let (pk, dn) = (call.product_key.as_str(), call.device_name.as_str());
        self.check_device(pk, dn)?;
        self.online(pk, dn)?;
        let message_id = self.next_id().await?;
        let request_id = alink::request_id(message_id);
        let waiting = match call.wait {
            Some(_) => Some(self.expect(CallKind::Service, pk, dn, &request_id)?),
            None => None,
        };
        let payload = Bytes::from(alink::request(&request_id, service, call.params));
        let tracker = self.send(pk, dn, message_id, alink::topic(pk, dn, service), payload, 0)?;
        let (Some(wait), Some(waiting)) = (call.wait, waiting) else {
            return Ok(ThingAnswer { message_id, request_id, state: tracker.state(), reply: None });
        };
        let (code, body) = match answer(waiting, &tracker, wait).await {
            (RrpcCode::Success, Some(bytes)) => {
                let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                });
                (RrpcCode::Success, Some(body))
            }
            (code, _) => (code, None),
        };
        Ok(ThingAnswer { message_id, request_id, state: tracker.state(), reply: Some((code, body)) })
    }
}

/// Waits for a call's answer: `Success` with it, `Offline` when the request could not reach
/// the device because it went offline, `Timeout` otherwise (no answer in time, or the device
/// has no subscription for the request, so that none can come).
async fn answer(mut waiting: Waiting, tracker: &Tracker, wait: Duration) -> (RrpcCode, Option<Bytes>) {
    let outcome = tokio::select! {
        got = &mut waiting.answer => match got {
            Ok(bytes) => (RrpcCode::Success, Some(bytes)),
            Err(_) => (RrpcCode::Timeout, None),
        },
        state = undelivered(tracker) => match state {
            DeliveryState::DeviceOffline => (RrpcCode::Offline, None),
            _ => (RrpcCode::Timeout, None),
        },
        () = tokio::time::sleep(wait) => (RrpcCode::Timeout, None),
    };
    drop(waiting);
    outcome
}

/// Resolves when the message cannot reach the device (no subscription, offline); pending
/// forever once it was written.
async fn undelivered(tracker: &Tracker) -> DeliveryState {
    let mut seen = tracker.state();
    loop {
        match seen {
            DeliveryState::NotSubscribed | DeliveryState::DeviceOffline => return seen,
            DeliveryState::Sent | DeliveryState::Acknowledged => std::future::pending::<()>().await,
            DeliveryState::Queued => {}
        }
        seen = tracker.changed_from(seen).await;
    }
}

/// `/broadcast/${pk}/` followed by non-empty levels without wildcards.
fn check_broadcast_topic(pk: &str, topic: &str) -> Result<(), CommandError> {
    let prefix = format!("/broadcast/{pk}/");
    let ok = topic.strip_prefix(prefix.as_str()).is_some_and(|rest| {
        !rest.is_empty() && !rest.contains(['+', '#', '\0']) && rest.split('/').all(|l| !l.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(CommandError::InvalidTopic(format!(
            "topic \"{}\" is not a broadcast topic of product {pk}; expected {prefix}<levels> without wildcards",
            Untrusted(topic)
        )))
    }
}

impl DeviceCommands for LocalCommands {
    fn publish(&self, r: PublishRequest) -> BoxFuture<'_, Result<u64, CommandError>> {
        async move {
            let (pk, dn) = (r.product_key.as_str(), r.device_name.as_str());
            self.check_device(pk, dn)?;
            if r.qos > 1 {
                return Err(CommandError::InvalidArgument {
                    field: "qos",
                    message: format!("{} is not supported; expected 0 or 1", r.qos),
                });
            }
            if Acl::new(pk, dn).check_custom_topic(&r.topic).is_err() {
                return Err(CommandError::InvalidTopic(format!(
                    "topic \"{}\" is not one of the device's custom topics; expected /{pk}/{dn}/user/<levels> without wildcards",
                    Untrusted(&r.topic)
                )));
            }
            self.online(pk, dn)?;
            let id = self.next_id().await?;
            self.send(pk, dn, id, r.topic, r.payload, r.qos)?;
            Ok(id)
        }
        .boxed()
    }

    fn message(
        &self,
        pk: String,
        dn: String,
        message_id: u64,
    ) -> BoxFuture<'_, Result<MessageStatus, CommandError>> {
        async move {
            self.check_device(&pk, &dn)?;
            let m = self
                .states
                .get(message_id)
                .filter(|m| m.product_key == pk && m.device_name == dn)
                .ok_or(CommandError::MessageNotFound(message_id))?;
            Ok(MessageStatus { message_id, topic: m.topic, qos: m.qos, state: m.tracker.state() })
        }
        .boxed()
    }

    fn broadcast(
        &self,
        pk: String,
        topic: String,
        payload: Bytes,
    ) -> BoxFuture<'_, Result<u64, CommandError>> {
        async move {
            if self.registry.product(&pk).is_none() {
                return Err(CommandError::NoProduct(pk));
            }
            check_broadcast_topic(&pk, &topic)?;
            let id = self.next_id().await?;
            let counters = self.sessions.downlink_counters(&pk);
            match self.sessions.broadcast(&topic, payload) {
                Ok(()) => {
                    counters.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Ok(id)
                }
                Err(_) => {
                    counters.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Err(CommandError::RouterBusy)
                }
            }
        }
        .boxed()
    }

    fn rrpc(&self, r: RrpcRequest) -> BoxFuture<'_, Result<RrpcAnswer, CommandError>> {
        async move {
            let (pk, dn) = (r.product_key.as_str(), r.device_name.as_str());
            self.check_device(pk, dn)?;
            super::check_wait("timeoutMs", u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX))?;
            let message_id = self.next_id().await?;
            let offline = RrpcAnswer {
                message_id,
                code: RrpcCode::Offline,
                payload: None,
                state: DeliveryState::DeviceOffline,
            };
            if self.online(pk, dn).is_err() {
                return Ok(offline);
            }
            let id = message_id.to_string();
            let waiting = self.expect(CallKind::Rrpc, pk, dn, &id)?;
            let topic = format!("/sys/{pk}/{dn}/rrpc/request/{id}");
            let tracker = match self.send(pk, dn, message_id, topic, r.payload, 0) {
                Ok(t) => t,
                Err(CommandError::DeviceOffline(..)) => return Ok(offline),
                Err(e) => return Err(e),
            };
            let (code, payload) = answer(waiting, &tracker, r.timeout).await;
            Ok(RrpcAnswer { message_id, code, payload, state: tracker.state() })
        }
        .boxed()
    }

    fn set_properties(&self, call: ThingCall) -> BoxFuture<'_, Result<ThingAnswer, CommandError>> {
        async move { self.thing(call, alink::PROPERTY_SET).await }.boxed()
    }

    fn invoke(
        &self,
        call: ThingCall,
        identifier: String,
    ) -> BoxFuture<'_, Result<ThingAnswer, CommandError>> {
        async move {
            alink::check_identifier(&identifier)?;
            self.thing(call, &identifier).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_topics() {
        assert!(check_broadcast_topic("a1", "/broadcast/a1/news").is_ok());
        assert!(check_broadcast_topic("a1", "/broadcast/a1/a/b").is_ok());
        for bad in
            ["/broadcast/a2/news", "/broadcast/a1/", "/broadcast/a1/+", "/broadcast/a1//x", "/a1/d/user/x"]
        {
            assert!(check_broadcast_topic("a1", bad).is_err(), "{bad}");
        }
    }
}
