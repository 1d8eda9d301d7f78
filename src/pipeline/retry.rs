//! Failed rule actions: retried with backoff, then handed to the rule's error action.
//!
//! A failure that can pass (a consumer group that does not exist yet, a full MQTT router) is
//! tried again after 100 ms, 400 ms and 1.6 s. A failure that cannot (a republish topic that
//! renders to a wildcard) skips the retries. Either way, when the action has not succeeded, the
//! rule's error action receives a JSON record (rule, action, error, topic, messageId, payload in
//! base64, time, attempts) and the rule's counters say what happened: never a silent drop.
//!
//! Retries live in memory: a crash during the 2.1 s of retries loses them (the message itself
//! is stored for the subscriptions and the other actions before its PUBACK). At shutdown each
//! pending retry makes its last attempt at once and then goes to the error action.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::groups::Groups;
use crate::ingress::Broker;
use crate::message::{now_ms, Message};
use crate::rules::action::Action;
use crate::rules::row::Row;
use crate::rules::rule::Rule;
use crate::store::{Append, Ids, StoredMessage};

/// Waits before each retry: three retries over 2.1 s cover a group created a moment late or a
/// router busy for a burst, without holding failures for long.
const BACKOFF: [Duration; 3] =
    [Duration::from_millis(100), Duration::from_millis(400), Duration::from_millis(1600)];
/// Failures retried at once; beyond it a failure is counted as dropped and logged. A storm of
/// failures then costs bounded memory (each holds one message and one result).
const MAX_PENDING: usize = 10_000;

/// Where a failed action was going.
#[derive(Debug)]
pub(super) enum Target {
    /// A consumer group, with the rendered tag.
    Amqp {
        /// Group id.
        group: String,
        /// Rendered tag.
        tag: Option<String>,
    },
    /// An MQTT topic.
    Republish {
        /// Rendered topic.
        topic: String,
    },
}

/// One failed action.
#[derive(Debug)]
pub(super) struct Failure {
    pub rule: Arc<Rule>,
    /// The action's text, as its header line holds it.
    pub action: String,
    pub target: Target,
    /// The rule's result, as the action would have sent it.
    pub payload: Bytes,
    pub message: Message,
    /// The rule's result as fields, for the error action's templates.
    pub row: Row,
    pub error: String,
    /// False when trying again cannot help.
    pub retriable: bool,
}

/// What a retry needs.
pub(super) struct Destinations {
    pub groups: Arc<Groups>,
    pub broker: Arc<Broker>,
    pub ids: Arc<Ids>,
}

impl Destinations {
    /// Sends `payload` to `target` once.
    async fn send(&self, target: &Target, message: &Message, payload: Bytes) -> Result<(), String> {
        match target {
            Target::Amqp { group, tag } => {
                if !self.groups.exists(group) {
                    return Err(format!("consumer group {group} does not exist"));
                }
                let id = self.ids.next().map_err(|e| format!("no message id: {e}"))?;
                let record = StoredMessage {
                    id,
                    generate_time_ms: message.received_at_ms,
                    topic: message.forwarded().0.to_string(),
                    tag: tag.clone(),
                    payload,
                };
                let append = Append { group: Arc::from(group.as_str()), record: record.encode() };
                self.groups.append(vec![append]).await.map_err(|e| format!("storing for {group} failed: {e}"))
            }
            Target::Republish { topic } => self.broker.publish(topic, payload).map_err(|e| e.to_string()),
        }
    }
}

/// Checks a rendered republish topic; a wildcard or an empty level can never be published.
pub(super) fn check_topic(topic: &str) -> Result<(), String> {
    if topic.contains(['+', '#']) {
        return Err(format!("the republish topic {topic:?} contains a wildcard"));
    }
    if topic.split('/').skip(1).any(str::is_empty) {
        return Err(format!("the republish topic {topic:?} has an empty level"));
    }
    Ok(())
}

/// The retry queue.
pub(super) struct Retries {
    to: Arc<Destinations>,
    tracker: TaskTracker,
    stop: CancellationToken,
    permits: Arc<Semaphore>,
}

impl Retries {
    pub fn new(to: Destinations) -> Self {
        Self {
            to: Arc::new(to),
            tracker: TaskTracker::new(),
            stop: CancellationToken::new(),
            permits: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    /// Takes a failure: retries it in the background, then the error action if needed.
    pub fn failed(&self, failure: Failure) {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            failure.rule.metrics.dropped();
            tracing::error!(
                rule = %failure.rule.name,
                action = %failure.action,
                error = %failure.error,
                pending = MAX_PENDING,
                "Action failed and too many retries are pending; dropped"
            );
            return;
        };
        let (to, stop) = (self.to.clone(), self.stop.clone());
        self.tracker.spawn(async move {
            retry(&to, &stop, failure).await;
            drop(permit);
        });
    }

    /// Makes every pending retry try once more now, and waits for them to finish.
    pub async fn finish(self) {
        self.tracker.close();
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn retry(to: &Destinations, stop: &CancellationToken, mut f: Failure) {
    let mut attempts = 1u32;
    if f.retriable {
        for delay in BACKOFF {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => {}
            }
            attempts += 1;
            f.rule.metrics.retried();
            match to.send(&f.target, &f.message, f.payload.clone()).await {
                Ok(()) => {
                    f.rule.metrics.action(true);
                    tracing::info!(rule = %f.rule.name, action = %f.action, attempts, "Action succeeded on a retry");
                    return;
                }
                Err(e) => f.error = e,
            }
            if stop.is_cancelled() {
                break;
            }
        }
    }
    f.rule.metrics.action(false);
    tracing::warn!(rule = %f.rule.name, action = %f.action, error = %f.error, attempts, "Action failed");
    error_action(to, &f, attempts).await;
}

/// The record the error action receives.
fn record(f: &Failure, attempts: u32) -> Bytes {
    let record = serde_json::json!({
        "rule": f.rule.name,
        "action": f.action,
        "error": f.error,
        "topic": f.message.forwarded().0,
        "messageId": f.message.id.to_string(),
        "payload": base64::engine::general_purpose::STANDARD.encode(&f.payload),
        "time": now_ms(),
        "attempts": attempts,
    });
    Bytes::from(record.to_string())
}

async fn error_action(to: &Destinations, f: &Failure, attempts: u32) {
    let Some(action) = &f.rule.error_action else {
        f.rule.metrics.error_action(false);
        tracing::error!(rule = %f.rule.name, action = %f.action, "Action failed and the rule has no error action");
        return;
    };
    let target = match action {
        Action::Amqp { group, tag } => Ok(Target::Amqp {
            group: group.clone(),
            tag: tag.as_ref().and_then(|t| t.render(&f.row, &f.message)),
        }),
        Action::Republish { topic } => match topic.render(&f.row, &f.message) {
            Some(topic) => check_topic(&topic).map(|()| Target::Republish { topic }),
            None => Err("the error action's topic template has a missing field".to_string()),
        },
    };
    let sent = match target {
        Ok(target) => to.send(&target, &f.message, record(f, attempts)).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(()) => f.rule.metrics.error_action(true),
        Err(e) => {
            f.rule.metrics.error_action(false);
            tracing::error!(rule = %f.rule.name, action = %f.action, error = %e, "The error action failed too");
        }
    }
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
