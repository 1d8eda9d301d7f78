//! Rules' republish actions on every node: a republished message goes to this node's router
//! and, through core NATS (`{name}.republish`), to every other node's router, so that a device
//! subscribed on any node gets it. A node publishes what it receives to its own router only,
//! and skips what it sent itself (the origin header): no loops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::ClusterError;
use crate::downlink::Downlink;

/// Republished messages waiting for the NATS connection: about a second of a busy rule's
/// output. Beyond, the copies for the other nodes are dropped (QoS 0, as a busy router does)
/// and counted, rather than slowing the pipeline.
const QUEUE: usize = 4_096;

/// The header naming the node a message came from.
const ORIGIN: &str = "Iotpipe-Node";
/// The header holding the MQTT topic.
const TOPIC: &str = "Iotpipe-Topic";

/// Sends this node's republished messages to the other nodes and publishes theirs here, until
/// `shutdown`.
///
/// # Errors
/// The subscription could not be made.
pub async fn start(
    client: Client,
    name: &str,
    node: &str,
    downlink: &Arc<Downlink>,
    shutdown: CancellationToken,
) -> Result<(), ClusterError> {
    let subject = format!("{name}.republish");
    let mut incoming = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| ClusterError::JetStream(format!("subscribing to {subject}: {e}")))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Bytes)>(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = dropped.clone();
    downlink.set_elsewhere(Box::new(move |topic, payload| {
        if tx.try_send((topic.to_string(), payload.clone())).is_err() {
            // One line per 1,000 dropped, not one per message.
            if counted.fetch_add(1, Ordering::Relaxed).is_multiple_of(1_000) {
                tracing::warn!(
                    dropped = counted.load(Ordering::Relaxed),
                    "Republished messages not sent to the other nodes: the NATS connection is behind"
                );
            }
        }
    }));
    let (out, me, stop) = (client.clone(), node.to_string(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            let (topic, payload) = tokio::select! {
                () = stop.cancelled() => break,
                next = rx.recv() => match next { Some(m) => m, None => break },
            };
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, me.as_str());
            headers.insert(TOPIC, topic.as_str());
            if let Err(e) = out.publish_with_headers(subject.clone(), headers, payload).await {
                tracing::warn!(error = %e, "Could not send a republished message to the other nodes");
            }
        }
    });
    let (downlink, me) = (downlink.clone(), node.to_string());
    tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = incoming.next() => match message { Some(m) => m, None => break },
            };
            let Some(headers) = message.headers.as_ref() else { continue };
            if headers.get(ORIGIN).is_some_and(|o| o.as_str() == me) {
                continue;
            }
            let Some(topic) = headers.get(TOPIC) else { continue };
            if let Err(e) = downlink.publish(topic.as_str(), message.payload.clone()) {
                tracing::warn!(error = %e, "Could not publish another node's republished message here");
            }
        }
    });
    Ok(())
}
