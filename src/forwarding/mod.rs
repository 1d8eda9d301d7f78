//! Forwarding: where a rule's result goes, and what happens when it cannot get there.
//!
//! One function, [`resolve`], turns (action, result, message) into a [`Target`]; one per action
//! kind does the sending: [`amqp`] (a copy in a consumer group, stored in the pipeline's commit,
//! so the device's PUBACK covers it) and [`republish`] (an MQTT publish through the downlink
//! router once that commit is done). A failure goes to the [`retry`] queue and, when retries do
//! not help, to the rule's [`error_action`]. The pipeline batches and routes; it does not know
//! action kinds.

pub mod amqp;
mod error_action;
pub mod republish;
mod retry;

use std::sync::Arc;

use bytes::Bytes;

use crate::downlink::Downlink;
use crate::groups::Groups;
use crate::message::Message;
use crate::rules::{Action, Row, Rule, RuleOutput};
use crate::store::{Append, Ids};
use retry::Retries;

/// Where one action sends one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A consumer group, with the rendered tag.
    Group {
        /// Group id.
        group: Arc<str>,
        /// Rendered tag.
        tag: Option<String>,
    },
    /// An MQTT topic.
    Topic(String),
}

/// Why an action could not be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// What went wrong.
    pub error: String,
    /// False when trying again cannot help.
    pub retriable: bool,
}

impl Failed {
    fn retriable(error: String) -> Self {
        Self { error, retriable: true }
    }

    fn permanent(error: String) -> Self {
        Self { error, retriable: false }
    }
}

/// Where `action` sends `row`, the result of a rule on `message`.
///
/// # Errors
/// A republish topic that renders to no topic or to one that can never be published.
pub fn resolve(action: &Action, row: &Row, message: &Message) -> Result<Target, Failed> {
    match action {
        Action::Amqp { group, tag } => Ok(Target::Group {
            group: Arc::from(group.as_str()),
            tag: tag.as_ref().and_then(|t| t.render(row, message)),
        }),
        Action::Republish { topic } => {
            republish::render(topic, row, message).map(Target::Topic).map_err(Failed::permanent)
        }
    }
}

/// One failed action, with what its retries and its rule's error action need.
#[derive(Debug)]
struct Failure {
    rule: Arc<Rule>,
    /// The action's text, as the rule's header holds it.
    action: String,
    /// Where it was going; `None` when it could not even be resolved.
    target: Option<Target>,
    /// The rule's result, as the action would have sent it.
    payload: Bytes,
    message: Message,
    /// The rule's result as fields, for the error action's templates.
    row: Row,
    failed: Failed,
}

/// A republish waiting for its batch's commit.
struct Pending {
    rule: Arc<Rule>,
    action: usize,
    topic: String,
    payload: Bytes,
    message: Message,
    row: Row,
}

/// What the rules of one batch leave to do after its commit.
#[derive(Default)]
pub struct AfterCommit {
    republish: Vec<Pending>,
    failures: Vec<Failure>,
}

impl AfterCommit {
    /// Forgets everything: the batch was not stored, so the devices send it again.
    pub fn clear(&mut self) {
        self.republish.clear();
        self.failures.clear();
    }
}

/// What the forwarding needs: the groups, the downlink router and message ids.
struct Destinations {
    groups: Arc<Groups>,
    downlink: Arc<Downlink>,
    ids: Arc<Ids>,
}

impl Destinations {
    /// Sends `payload` to `target` once, outside a batch (retries, error actions).
    async fn send(&self, target: &Target, message: &Message, payload: Bytes) -> Result<(), Failed> {
        match target {
            Target::Group { group, tag } => amqp::send(self, group, tag.as_deref(), message, &payload).await,
            Target::Topic(topic) => republish::send(&self.downlink, topic, payload),
        }
    }
}

/// The forwarding of rule results; owned by the pipeline task.
pub struct Forwarder {
    to: Arc<Destinations>,
    retries: Retries,
}

impl Forwarder {
    /// A forwarder to `groups` and through `downlink`, with ids from `ids`.
    pub fn new(groups: Arc<Groups>, downlink: Arc<Downlink>, ids: Arc<Ids>) -> Self {
        let to = Arc::new(Destinations { groups, downlink, ids });
        Self { retries: Retries::new(to.clone()), to }
    }

    /// Forwards the results of one message's rules: copies for consumer groups become
    /// `appends` of the batch's commit, everything else waits for it in `after`.
    pub fn stage(
        &self,
        outputs: impl Iterator<Item = RuleOutput>,
        message: &Message,
        appends: &mut Vec<Append>,
        after: &mut AfterCommit,
    ) {
        for output in outputs {
            let payload = output.raw.clone().unwrap_or_else(|| Bytes::from(output.row.to_json()));
            for (i, action) in output.rule.actions.iter().enumerate() {
                let staged = match resolve(action, &output.row, message) {
                    Ok(Target::Group { group, tag }) => {
                        amqp::stage(&self.to, group.clone(), tag.as_deref(), message, &payload, appends)
                            .map_err(|f| (Some(Target::Group { group, tag }), f))
                    }
                    Ok(Target::Topic(topic)) => {
                        after.republish.push(Pending {
                            rule: output.rule.clone(),
                            action: i,
                            topic,
                            payload: payload.clone(),
                            message: message.clone(),
                            row: output.row.clone(),
                        });
                        continue;
                    }
                    Err(f) => Err((None, f)),
                };
                match staged {
                    Ok(()) => output.rule.metrics.action(true),
                    Err((target, failed)) => after.failures.push(Failure {
                        rule: output.rule.clone(),
                        action: action.to_string(),
                        target,
                        payload: payload.clone(),
                        message: message.clone(),
                        row: output.row.clone(),
                        failed,
                    }),
                }
            }
        }
    }

    /// Once the batch is stored: republishes, and failures go to the retry queue.
    pub fn after_commit(&self, after: &mut AfterCommit) {
        for p in after.republish.drain(..) {
            match republish::send(&self.to.downlink, &p.topic, p.payload.clone()) {
                Ok(()) => p.rule.metrics.action(true),
                Err(failed) => self.retries.failed(Failure {
                    action: p.rule.actions[p.action].to_string(),
                    rule: p.rule,
                    target: Some(Target::Topic(p.topic)),
                    payload: p.payload,
                    message: p.message,
                    row: p.row,
                    failed,
                }),
            }
        }
        for f in after.failures.drain(..) {
            self.retries.failed(f);
        }
    }

    /// Makes every pending retry try once more now, and waits for them to finish.
    pub async fn finish(self) {
        self.retries.finish().await;
    }
}
