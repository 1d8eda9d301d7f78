//! The `amqp` action: a copy of the result in a consumer group's queue, under a new message id.

use std::sync::Arc;

use super::{Destinations, Failed};
use crate::message::Message;
use crate::store::{Append, StoredMessage};

/// The stored copy of `message` for a consumer group: what a consumer receives, with the
/// message's forwarding topic and receive time. The subscriptions' copies and the rules'
/// copies are built here alike.
pub fn copy(group: Arc<str>, id: u64, message: &Message, tag: Option<&str>, payload: &[u8]) -> Append {
    let topic = message.forwarded().0;
    let record = StoredMessage::encode_parts(id, message.received_at_ms, topic, tag, payload);
    Append { group, record: record.into() }
}

fn missing(group: &str) -> Failed {
    Failed::retriable(format!("consumer group {group} does not exist"))
}

/// Adds the copy to the batch being committed.
pub(super) fn stage(
    to: &Destinations,
    group: Arc<str>,
    tag: Option<&str>,
    message: &Message,
    payload: &[u8],
    appends: &mut Vec<Append>,
) -> Result<(), Failed> {
    if !to.groups.exists(&group) {
        return Err(missing(&group));
    }
    // Ids are reserved ahead; when none is at hand the retry waits for one.
    let id = to.ids.try_next().ok_or_else(|| Failed::retriable("no message id at hand".into()))?;
    appends.push(copy(group, id, message, tag, payload));
    Ok(())
}

/// Stores the copy on its own (a retry or an error action).
pub(super) async fn send(
    to: &Destinations,
    group: &Arc<str>,
    tag: Option<&str>,
    message: &Message,
    payload: &[u8],
) -> Result<(), Failed> {
    if !to.groups.exists(group) {
        return Err(missing(group));
    }
    let id = to.ids.next().await.map_err(|e| Failed::retriable(format!("no message id: {e}")))?;
    to.groups
        .append(vec![copy(group.clone(), id, message, tag, payload)])
        .await
        .map_err(|e| Failed::retriable(format!("storing for {group} failed: {e}")))
}
