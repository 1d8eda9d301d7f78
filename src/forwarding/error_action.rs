//! The rule's error action: where a result goes when its action failed for good.
//!
//! It receives `{"rule","action","error","topic","messageId","payload" (base64),"time","attempts"}`
//! through the same actions a rule has (`amqp` or `republish`), resolved by the same function.

use base64::Engine as _;
use bytes::Bytes;

use super::{resolve, Destinations, Failure};
use crate::message::now_ms;

/// The record the error action receives.
fn record(f: &Failure, attempts: u32) -> Bytes {
    let record = serde_json::json!({
        "rule": f.rule.name,
        "action": f.action,
        "error": f.failed.error,
        "topic": f.message.forwarded().0,
        "messageId": f.message.id.to_string(),
        "payload": base64::engine::general_purpose::STANDARD.encode(&f.payload),
        "time": now_ms(),
        "attempts": attempts,
    });
    Bytes::from(record.to_string())
}

/// Sends the failure's record to the rule's error action, once; counts and logs the outcome.
pub(super) async fn run(to: &Destinations, f: &Failure, attempts: u32) {
    let Some(action) = &f.rule.error_action else {
        f.rule.metrics.error_action(false);
        tracing::error!(rule = %f.rule.name, action = %f.action, "Action failed and the rule has no error action");
        return;
    };
    let sent = match resolve(action, &f.row, &f.message) {
        Ok(target) => to.send(&target, &f.message, record(f, attempts)).await,
        Err(failed) => Err(failed),
    };
    match sent {
        Ok(()) => f.rule.metrics.error_action(true),
        Err(failed) => {
            f.rule.metrics.error_action(false);
            tracing::error!(rule = %f.rule.name, action = %f.action, error = %failed.error, "The error action failed too");
        }
    }
}
