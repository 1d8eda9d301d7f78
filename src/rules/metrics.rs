//! Per-rule counters with EMQX's names, as atomics: evaluation never takes a lock to count.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one rule.
#[derive(Debug, Default)]
pub struct RuleMetrics {
    matched: AtomicU64,
    passed: AtomicU64,
    failed: AtomicU64,
    failed_exception: AtomicU64,
    failed_no_result: AtomicU64,
    skipped_bad_payload: AtomicU64,
    actions_success: AtomicU64,
    actions_failed: AtomicU64,
    actions_retried: AtomicU64,
    actions_dropped: AtomicU64,
    error_action_success: AtomicU64,
    error_action_failed: AtomicU64,
    eval_time_us: AtomicU64,
    eval_overruns: AtomicU64,
}

/// A copy of the counters, serialized with EMQX's names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Messages whose topic matched FROM.
    pub matched: u64,
    /// Messages that passed WHERE and produced a result.
    pub passed: u64,
    /// `failed.exception` + `failed.no_result`.
    pub failed: u64,
    /// Evaluation errors (division by zero, type errors, script errors).
    #[serde(rename = "failed.exception")]
    pub failed_exception: u64,
    /// WHERE was false or null.
    #[serde(rename = "failed.no_result")]
    pub failed_no_result: u64,
    /// Messages a JSON rule skipped because the payload is not a JSON object (iotpipe's own).
    #[serde(rename = "skipped.bad_payload")]
    pub skipped_bad_payload: u64,
    /// Actions that succeeded.
    #[serde(rename = "actions.success")]
    pub actions_success: u64,
    /// Actions that failed after their retries.
    #[serde(rename = "actions.failed")]
    pub actions_failed: u64,
    /// Retries of failed actions (iotpipe's own).
    #[serde(rename = "actions.retried")]
    pub actions_retried: u64,
    /// Failed actions not retried because too many retries were pending (iotpipe's own).
    #[serde(rename = "actions.dropped")]
    pub actions_dropped: u64,
    /// Failure records the error action took (iotpipe's own).
    #[serde(rename = "error_action.success")]
    pub error_action_success: u64,
    /// Failure records the error action could not take, or that had no error action.
    #[serde(rename = "error_action.failed")]
    pub error_action_failed: u64,
    /// Microseconds spent evaluating the rule, in all (iotpipe's own): which rule costs the
    /// message path its time.
    #[serde(rename = "eval.time_us")]
    pub eval_time_us: u64,
    /// Evaluations stopped at the rule time budget (5 ms), each failing the rule for that
    /// message (iotpipe's own).
    #[serde(rename = "eval.overruns")]
    pub eval_overruns: u64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl RuleMetrics {
    pub(crate) fn matched(&self) {
        inc(&self.matched);
    }
    pub(crate) fn passed(&self) {
        inc(&self.passed);
    }
    pub(crate) fn exception(&self) {
        inc(&self.failed);
        inc(&self.failed_exception);
    }
    pub(crate) fn no_result(&self) {
        inc(&self.failed);
        inc(&self.failed_no_result);
    }
    pub(crate) fn bad_payload(&self) {
        inc(&self.skipped_bad_payload);
    }

    /// Counts the outcome of one action (called by the forwarding stage).
    pub(crate) fn action(&self, ok: bool) {
        inc(if ok { &self.actions_success } else { &self.actions_failed });
    }

    /// Counts one retry of a failed action.
    pub(crate) fn retried(&self) {
        inc(&self.actions_retried);
    }

    /// Counts a failed action that was not retried because the retry queue was full.
    pub(crate) fn dropped(&self) {
        inc(&self.actions_failed);
        inc(&self.actions_dropped);
    }

    /// Counts the outcome of handing one failure record to the error action.
    pub(crate) fn error_action(&self, ok: bool) {
        inc(if ok { &self.error_action_success } else { &self.error_action_failed });
    }

    /// Counts the wall time of one evaluation, and an overrun when it went past `budget`.
    pub(crate) fn evaluated(&self, took: std::time::Duration, budget: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.eval_time_us.fetch_add(us, Ordering::Relaxed);
        if took > budget {
            inc(&self.eval_overruns);
        }
    }

    /// The current values.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            matched: g(&self.matched),
            passed: g(&self.passed),
            failed: g(&self.failed),
            failed_exception: g(&self.failed_exception),
            failed_no_result: g(&self.failed_no_result),
            skipped_bad_payload: g(&self.skipped_bad_payload),
            actions_success: g(&self.actions_success),
            actions_failed: g(&self.actions_failed),
            actions_retried: g(&self.actions_retried),
            actions_dropped: g(&self.actions_dropped),
            error_action_success: g(&self.error_action_success),
            error_action_failed: g(&self.error_action_failed),
            eval_time_us: g(&self.eval_time_us),
            eval_overruns: g(&self.eval_overruns),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emqx_names() {
        let m = RuleMetrics::default();
        m.matched();
        m.no_result();
        m.action(true);
        let v = serde_json::to_value(m.snapshot()).unwrap();
        assert_eq!(v["matched"], 1);
        assert_eq!(v["failed"], 1);
        assert_eq!(v["failed.no_result"], 1);
        assert_eq!(v["actions.success"], 1);
    }
}
