//! `[[subscriptions]]`: the subscriptions the configuration file declares, the message types a
//! subscription names, and the list rules the file and the API share.

use serde::{Deserialize, Serialize};

use super::MAX_GROUPS_PER_SUBSCRIPTION;
use crate::check::{index, key, quoted_list, within, Path, PathSeg, Problem, Seen};
use crate::message::Kind;

/// Message types of a server-side subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Everything a device publishes.
    Upstream,
    /// Online/offline changes.
    Status,
    /// Device create/delete/enable/disable.
    Lifecycle,
    /// Thing-model history posts (the platform's `ThingHistoryFlag`).
    #[serde(rename = "thing_history")]
    ThingHistory,
    /// Device tag changes (the platform's `DeviceTagFlag`).
    #[serde(rename = "tag_change")]
    TagChange,
}

impl MessageType {
    /// Every message type, in the order messages list them.
    pub const ALL: [MessageType; 5] = [
        MessageType::Upstream,
        MessageType::Status,
        MessageType::Lifecycle,
        MessageType::ThingHistory,
        MessageType::TagChange,
    ];
    /// The written names of [`Self::ALL`].
    pub const NAMES: [&'static str; 5] = ["upstream", "status", "lifecycle", "thing_history", "tag_change"];

    /// The written name, as the file and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Upstream => Self::NAMES[0],
            MessageType::Status => Self::NAMES[1],
            MessageType::Lifecycle => Self::NAMES[2],
            MessageType::ThingHistory => Self::NAMES[3],
            MessageType::TagChange => Self::NAMES[4],
        }
    }
}

impl From<Kind> for MessageType {
    /// The type a message of this kind is subscribed by.
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Upstream => MessageType::Upstream,
            Kind::Status => MessageType::Status,
            Kind::Lifecycle => MessageType::Lifecycle,
            Kind::ThingHistory => MessageType::ThingHistory,
            Kind::TagChange => MessageType::TagChange,
        }
    }
}

/// `[[subscriptions]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// The product whose devices' messages are forwarded.
    pub product_key: String,
    /// Which messages.
    pub message_types: Vec<MessageType>,
    /// Consumer groups, each receiving its own copy.
    pub consumer_groups: Vec<String>,
}

/// Every problem of `[[subscriptions]]` on their own, at paths relative to the array
/// (`[1].consumer_groups[0]`): the list rules, and one subscription per product. Whether the
/// products and groups exist is the caller's check.
pub fn check_subscriptions(subscriptions: &[SubscriptionConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    for (s, subscription) in subscriptions.iter().enumerate() {
        let product = subscription.product_key.as_str();
        if let Some(first) = seen.first(product, s) {
            let message = format!(
                "product \"{product}\" already has a subscription (subscriptions[{first}]); expected at \
                 most one per product"
            );
            problems.push(Problem::new(index(s).key("product_key"), message));
        }
        let lists = check_lists(&subscription.message_types, &subscription.consumer_groups);
        problems.extend(within(&index(s), lists));
    }
    problems
}

/// The list rules of a subscription, for the file and the API alike: 1 to 5 distinct message
/// types, 1 to [`MAX_GROUPS_PER_SUBSCRIPTION`] distinct groups. Paths name the file's keys,
/// `message_types` and `consumer_groups` ([`api_field`] renames them).
pub(crate) fn check_lists(types: &[MessageType], groups: &[String]) -> Vec<Problem> {
    let mut problems = Vec::new();
    if types.is_empty() {
        let message = format!("must not be empty; expected some of {}", quoted_list(&MessageType::NAMES));
        problems.push(Problem::new(key("message_types"), message));
    }
    for (t, message_type) in types.iter().enumerate() {
        if types[..t].contains(message_type) {
            let message = format!("\"{}\" is listed twice", message_type.as_str());
            problems.push(Problem::new(key("message_types").index(t), message));
        }
    }
    if !(1..=MAX_GROUPS_PER_SUBSCRIPTION).contains(&groups.len()) {
        let message =
            format!("lists {} consumer groups; expected 1 to {MAX_GROUPS_PER_SUBSCRIPTION}", groups.len());
        problems.push(Problem::new(key("consumer_groups"), message));
    }
    for (g, group) in groups.iter().enumerate() {
        if groups[..g].contains(group) {
            problems
                .push(Problem::new(key("consumer_groups").index(g), format!("\"{group}\" is listed twice")));
        }
    }
    problems
}

/// A list problem as the API words it: `consumerGroupIds[1]: "g" is listed twice`.
pub(crate) fn api_field(problem: &Problem) -> String {
    let mut path = Path::default();
    for seg in problem.path.segs() {
        path.push(match seg {
            PathSeg::Key(name) if name == "message_types" => PathSeg::Key("messageTypes".into()),
            PathSeg::Key(name) if name == "consumer_groups" => PathSeg::Key("consumerGroupIds".into()),
            seg => seg.clone(),
        });
    }
    format!("{path}: {}", problem.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_kinds_map_one_to_one() {
        for (t, name) in MessageType::ALL.iter().zip(MessageType::NAMES) {
            assert_eq!(t.as_str(), name);
            let json = serde_json::to_string(t).expect("serialises");
            assert_eq!(json, format!("\"{name}\""));
        }
        assert_eq!(MessageType::from(Kind::Status), MessageType::Status);
    }

    #[test]
    fn list_problems_in_api_words() {
        let problems = check_lists(&[MessageType::Status, MessageType::Status], &["g".into(), "g".into()]);
        let words: Vec<String> = problems.iter().map(api_field).collect();
        assert_eq!(
            words,
            ["messageTypes[1]: \"status\" is listed twice", "consumerGroupIds[1]: \"g\" is listed twice"]
        );
    }
}
