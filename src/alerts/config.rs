//! `[[alert_rules]]`: the alert rules the configuration file declares, with the defaults of the
//! API's rule body (`model.rs`), and their check, by the API's rules.

use serde::Deserialize;

use super::model::{
    default_consecutive_periods, default_days, default_mute_seconds, default_window_end,
    default_window_start, AlertRuleBody, EffectiveBody,
};
pub use super::model::{DEFAULT_CONSECUTIVE_PERIODS, DEFAULT_MUTE_SECONDS};
use crate::check::{index, Problem, Seen};

/// `[[alert_rules]]`: the API's alert rule body in snake_case (docs/alerts.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRuleConfig {
    /// 1 to 64 characters, unique; also the rule's id.
    pub name: String,
    /// Groups watched (`DEFAULT_GROUP` or ids of `[[consumer_groups]]`); empty or absent: every group.
    #[serde(default)]
    pub consumer_group_ids: Vec<String>,
    /// `accumulatedCount` or `consumptionRate` (messages/min).
    pub metric: String,
    /// `>`, `>=`, `<` or `<=`.
    pub comparison: String,
    /// What the value is compared with; 0 or more.
    pub threshold: f64,
    /// The scan period in seconds: 60, 300, 900, 1800, 3600, or any from 1 to 86,400.
    pub period_seconds: u64,
    /// Fire after this many periods in a row meet the condition, 1 to 100.
    #[serde(default = "default_consecutive_periods")]
    pub consecutive_periods: u32,
    /// No repeated firing notification for this long while a group keeps firing.
    #[serde(default = "default_mute_seconds")]
    pub mute_seconds: u64,
    /// When notifications may be sent; always when absent.
    #[serde(default)]
    pub effective: Option<EffectiveConfig>,
    /// Where notifications are POSTed (http or https).
    pub callback_url: String,
}

/// `[alert_rules.effective]`: days of the week and a local time-of-day window.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveConfig {
    /// `mon` … `sun`; every day when absent.
    #[serde(default = "default_days")]
    pub days: Vec<String>,
    /// `HH:MM`, server local time.
    #[serde(default = "default_window_start")]
    pub start: String,
    /// `HH:MM`, included; before `start` the window runs across midnight.
    #[serde(default = "default_window_end")]
    pub end: String,
}

impl From<&AlertRuleConfig> for AlertRuleBody {
    fn from(c: &AlertRuleConfig) -> Self {
        let effective = c.effective.as_ref().map_or_else(EffectiveBody::default, |e| EffectiveBody {
            days: e.days.clone(),
            start: e.start.clone(),
            end: e.end.clone(),
        });
        Self {
            name: c.name.clone(),
            consumer_group_ids: Some(c.consumer_group_ids.clone()),
            metric: c.metric.clone(),
            comparison: c.comparison.clone(),
            threshold: c.threshold,
            period_seconds: c.period_seconds,
            consecutive_periods: c.consecutive_periods,
            mute_seconds: c.mute_seconds,
            effective,
            callback_url: c.callback_url.clone(),
        }
    }
}

/// Every problem of `[[alert_rules]]` on their own, at paths relative to the array
/// (`[0].effective.start`): the API's checks, and unique names. Whether the listed groups exist
/// is the caller's check.
pub fn check_rules(rules: &[AlertRuleConfig]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = Seen::default();
    for (r, rule) in rules.iter().enumerate() {
        match AlertRuleBody::from(rule).validate() {
            Err(found) => {
                for p in found {
                    let mut path = p.field.config().iter().fold(index(r), |path, name| path.key(*name));
                    if let Some(i) = p.index {
                        path = path.index(i);
                    }
                    problems.push(Problem::new(path, p.message));
                }
            }
            Ok(_) => {
                let name = rule.name.as_str();
                if let Some(first) = seen.first(name, r) {
                    let message =
                        format!("\"{name}\" is already used by alert_rules[{first}]; names must be unique");
                    problems.push(Problem::new(index(r).key("name"), message));
                }
            }
        }
    }
    problems
}
