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
    /// Actions that failed.
    #[serde(rename = "actions.failed")]
    pub actions_failed: u64,
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
    pub fn action(&self, ok: bool) {
        inc(if ok { &self.actions_success } else { &self.actions_failed });
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
        }
    }
}

/// A Prometheus family: name, help text, and the counter it shows.
type Family = (&'static str, &'static str, fn(&MetricsSnapshot) -> u64);

/// Writes rule counters in the Prometheus text format, one family per counter:
/// `iotpipe_rule_<name>_total{rule="..."}` with EMQX's dots as underscores
/// (`iotpipe_rule_failed_exception_total`).
pub fn write_prometheus<'a>(rules: impl IntoIterator<Item = (&'a str, MetricsSnapshot)>, out: &mut String) {
    use std::fmt::Write as _;
    let rules: Vec<(&str, MetricsSnapshot)> = rules.into_iter().collect();
    let families: [Family; 8] = [
        ("matched", "Messages whose topic matched the rule's FROM.", |m| m.matched),
        ("passed", "Messages that passed WHERE and produced a result.", |m| m.passed),
        ("failed", "Messages the rule failed on (exception or no result).", |m| m.failed),
        ("failed_exception", "Evaluation errors.", |m| m.failed_exception),
        ("failed_no_result", "Messages for which WHERE was false or null.", |m| m.failed_no_result),
        ("skipped_bad_payload", "Messages skipped because the payload is not a JSON object.", |m| {
            m.skipped_bad_payload
        }),
        ("actions_success", "Actions that succeeded.", |m| m.actions_success),
        ("actions_failed", "Actions that failed.", |m| m.actions_failed),
    ];
    for (name, help, get) in families {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP iotpipe_rule_{name}_total {help}");
        let _ = writeln!(out, "# TYPE iotpipe_rule_{name}_total counter");
        for (rule, m) in &rules {
            let label = rule.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(out, "iotpipe_rule_{name}_total{{rule=\"{label}\"}} {}", get(m));
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
        let mut text = String::new();
        write_prometheus([("hot", m.snapshot())], &mut text);
        assert!(text.contains("iotpipe_rule_failed_no_result_total{rule=\"hot\"} 1\n"), "{text}");
        assert!(text.contains("# TYPE iotpipe_rule_matched_total counter\n"));
    }
}
