//! The `republish` action: the result published to an MQTT topic through the downlink router.

use bytes::Bytes;

use super::Failed;
use crate::downlink::Downlink;
use crate::message::Message;
use crate::rules::{Row, Template};

/// The topic `template` renders to for `row`.
///
/// # Errors
/// A field the template names is missing, or the topic can never be published.
pub fn render(template: &Template, row: &Row, message: &Message) -> Result<String, String> {
    let topic = template
        .render(row, message)
        .ok_or_else(|| "the republish topic template has a missing field".to_string())?;
    check_topic(&topic)?;
    Ok(topic)
}

/// Checks a rendered republish topic; a wildcard or an empty level can never be published.
///
/// # Errors
/// Says which.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.contains(['+', '#']) {
        return Err(format!("the republish topic {topic:?} contains a wildcard"));
    }
    if topic.split('/').skip(1).any(str::is_empty) {
        return Err(format!("the republish topic {topic:?} has an empty level"));
    }
    Ok(())
}

/// Publishes once (QoS 0 to the devices subscribed to `topic`).
pub(super) fn send(downlink: &Downlink, topic: &str, payload: Bytes) -> Result<(), Failed> {
    downlink.republish(topic, payload).map_err(|e| Failed::retriable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn republish_topics() {
        assert!(check_topic("/a1demo/dev1/user/get").is_ok());
        assert!(check_topic("/a1demo/+/user/get").is_err());
        assert!(check_topic("/a1demo/dev1/user/#").is_err());
        assert!(check_topic("/a1demo//user/get").is_err());
    }
}
