//! Alert rules: the API body (also what the configuration becomes), validation that names every
//! bad field, and the validated rule the evaluator runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::window::parse_hhmm;
pub use super::window::{format_hhmm, Effective, LocalTime, DAYS};

/// Default of `consecutivePeriods`: fire at the first period that meets the condition.
pub const DEFAULT_CONSECUTIVE_PERIODS: u32 = 1;
/// Default of `muteSeconds`: one notification a day while a group keeps firing, as the modelled
/// platform's alert service does by default.
pub const DEFAULT_MUTE_SECONDS: u64 = 86_400;

pub(super) fn default_consecutive_periods() -> u32 {
    DEFAULT_CONSECUTIVE_PERIODS
}
pub(super) fn default_mute_seconds() -> u64 {
    DEFAULT_MUTE_SECONDS
}
/// Every day of the week.
pub(super) fn default_days() -> Vec<String> {
    DAYS.iter().map(|d| d.to_string()).collect()
}
/// The whole day: from midnight …
pub(super) fn default_window_start() -> String {
    "00:00".into()
}
/// … to the last minute, included.
pub(super) fn default_window_end() -> String {
    "23:59".into()
}

/// A name has 1 to 64 characters.
pub const NAME_CHARS: std::ops::RangeInclusive<usize> = 1..=64;
/// N of "N consecutive periods": 100 periods is already more than a day at 15 minutes.
pub const CONSECUTIVE_PERIODS: std::ops::RangeInclusive<u32> = 1..=100;
/// The scan period: a second (tests, impatient operators) to a day.
pub const PERIOD_SECONDS: std::ops::RangeInclusive<u64> = 1..=86_400;
/// Groups one rule may list (bounds what a rule stores); a rule for more can watch every group.
pub const MAX_LISTED_GROUPS: usize = 1000;
/// Callback URLs are short; this bounds what one rule stores.
pub const MAX_URL_CHARS: usize = 2048;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Messages stored and not yet consumed (`accumulatedCount` of the group status).
    AccumulatedCount,
    /// Messages accepted in the last minute (`consumptionRate`, messages/min).
    ConsumptionRate,
}

impl Metric {
    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::AccumulatedCount => "accumulatedCount",
            Metric::ConsumptionRate => "consumptionRate",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "accumulatedCount" => Some(Metric::AccumulatedCount),
            "consumptionRate" => Some(Metric::ConsumptionRate),
            _ => None,
        }
    }
}

/// How the value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Comparison {
    /// The written form.
    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
            Comparison::Lt => "<",
            Comparison::Le => "<=",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            ">" => Some(Comparison::Gt),
            ">=" => Some(Comparison::Ge),
            "<" => Some(Comparison::Lt),
            "<=" => Some(Comparison::Le),
            _ => None,
        }
    }

    /// Whether `value` meets the condition.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
        }
    }
}

/// The effective period as the API writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EffectiveBody {
    /// Days of the week, `mon` … `sun`; every day when absent.
    #[serde(default = "default_days")]
    pub days: Vec<String>,
    /// `HH:MM`, local time; `00:00` when absent.
    #[serde(default = "default_window_start")]
    pub start: String,
    /// `HH:MM`, local time, included; `23:59` when absent.
    #[serde(default = "default_window_end")]
    pub end: String,
}

impl Default for EffectiveBody {
    fn default() -> Self {
        Self { days: default_days(), start: default_window_start(), end: default_window_end() }
    }
}

/// An alert rule as the API reads and writes it (CONTRACT.md, "Alert rule body").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRuleBody {
    /// 1 to 64 characters, unique.
    pub name: String,
    /// The groups watched; empty, `null` or absent: every group.
    #[serde(default)]
    pub consumer_group_ids: Option<Vec<String>>,
    /// `accumulatedCount` or `consumptionRate`.
    pub metric: String,
    /// `>`, `>=`, `<` or `<=`.
    pub comparison: String,
    /// What the value is compared with; 0 or more. Whole numbers are written as integers.
    #[serde(serialize_with = "super::notifier::number")]
    pub threshold: f64,
    /// The scan period in seconds.
    pub period_seconds: u64,
    /// Fire after this many periods in a row meet the condition.
    #[serde(default = "default_consecutive_periods")]
    pub consecutive_periods: u32,
    /// No repeated firing notification for this long while a group keeps firing.
    #[serde(default = "default_mute_seconds")]
    pub mute_seconds: u64,
    /// When notifications may be sent.
    #[serde(default)]
    pub effective: EffectiveBody,
    /// Where notifications are POSTed.
    pub callback_url: String,
}

/// A validated alert rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Name.
    pub name: String,
    /// Groups watched; empty: every group.
    pub group_ids: Vec<String>,
    /// What is watched.
    pub metric: Metric,
    /// How it is compared.
    pub comparison: Comparison,
    /// With what.
    pub threshold: f64,
    /// Scan period.
    pub period: Duration,
    /// Periods in a row before firing.
    pub consecutive_periods: u32,
    /// Seconds between repeated firing notifications.
    pub mute_seconds: u64,
    /// When notifications may be sent.
    pub effective: Effective,
    /// Where notifications go.
    pub callback_url: String,
}

/// A field of the rule, named as the API (camelCase) and the configuration (snake_case) write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `name`
    Name,
    /// `consumerGroupIds` / `consumer_group_ids`
    ConsumerGroupIds,
    /// `metric`
    Metric,
    /// `comparison`
    Comparison,
    /// `threshold`
    Threshold,
    /// `periodSeconds` / `period_seconds`
    PeriodSeconds,
    /// `consecutivePeriods` / `consecutive_periods`
    ConsecutivePeriods,
    /// `muteSeconds` / `mute_seconds`
    MuteSeconds,
    /// `effective.days`
    Days,
    /// `effective.start`
    Start,
    /// `effective.end`
    End,
    /// `callbackUrl` / `callback_url`
    CallbackUrl,
}

impl Field {
    /// The API's name.
    pub fn api(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::ConsumerGroupIds => "consumerGroupIds",
            Field::Metric => "metric",
            Field::Comparison => "comparison",
            Field::Threshold => "threshold",
            Field::PeriodSeconds => "periodSeconds",
            Field::ConsecutivePeriods => "consecutivePeriods",
            Field::MuteSeconds => "muteSeconds",
            Field::Days => "effective.days",
            Field::Start => "effective.start",
            Field::End => "effective.end",
            Field::CallbackUrl => "callbackUrl",
        }
    }

    /// The configuration's key path inside one `[[alert_rules]]` entry.
    pub fn config(self) -> &'static [&'static str] {
        match self {
            Field::Name => &["name"],
            Field::ConsumerGroupIds => &["consumer_group_ids"],
            Field::Metric => &["metric"],
            Field::Comparison => &["comparison"],
            Field::Threshold => &["threshold"],
            Field::PeriodSeconds => &["period_seconds"],
            Field::ConsecutivePeriods => &["consecutive_periods"],
            Field::MuteSeconds => &["mute_seconds"],
            Field::Days => &["effective", "days"],
            Field::Start => &["effective", "start"],
            Field::End => &["effective", "end"],
            Field::CallbackUrl => &["callback_url"],
        }
    }
}

/// One thing wrong with a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The field.
    pub field: Field,
    /// The element of a list field, when the problem is one element.
    pub index: Option<usize>,
    /// What is wrong and what is expected (starts lowercase; does not repeat the field).
    pub message: String,
}

impl std::fmt::Display for Problem {
    /// `consumerGroupIds[1]: message`, as the API reports it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.field.api())?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.chars().count() > MAX_URL_CHARS {
        return Err(format!("is longer than {MAX_URL_CHARS} characters"));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| format!("{url:?} is not a URL ({e}); expected http(s)://host/path"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("{url:?} is not an http or https URL"));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

impl AlertRuleBody {
    /// Checks every field; the rule, or every problem found.
    ///
    /// # Errors
    /// Every problem, each naming its field. Whether listed groups exist is the caller's check.
    pub fn validate(&self) -> Result<AlertRule, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |field, index, message: String| problems.push(Problem { field, index, message });

        let name_chars = self.name.chars().count();
        if !NAME_CHARS.contains(&name_chars) {
            problem(
                Field::Name,
                None,
                format!(
                    "has {name_chars} characters; expected {} to {}",
                    NAME_CHARS.start(),
                    NAME_CHARS.end()
                ),
            );
        } else if self.name.chars().any(char::is_control) {
            problem(Field::Name, None, "must not contain control characters".into());
        }

        let group_ids = self.consumer_group_ids.clone().unwrap_or_default();
        if group_ids.len() > MAX_LISTED_GROUPS {
            problem(
                Field::ConsumerGroupIds,
                None,
                format!("lists {} groups; expected at most {MAX_LISTED_GROUPS}", group_ids.len()),
            );
        }
        for (i, id) in group_ids.iter().enumerate() {
            if id.is_empty() {
                problem(Field::ConsumerGroupIds, Some(i), "must not be empty".into());
            } else if group_ids[..i].contains(id) {
                problem(Field::ConsumerGroupIds, Some(i), format!("{id:?} is listed twice"));
            }
        }

        let metric = Metric::parse(&self.metric);
        if metric.is_none() {
            problem(
                Field::Metric,
                None,
                format!("{:?} is unknown; expected \"accumulatedCount\" or \"consumptionRate\"", self.metric),
            );
        }
        let comparison = Comparison::parse(&self.comparison);
        if comparison.is_none() {
            problem(
                Field::Comparison,
                None,
                format!("{:?} is unknown; expected \">\", \">=\", \"<\" or \"<=\"", self.comparison),
            );
        }
        if !self.threshold.is_finite() || self.threshold < 0.0 {
            problem(
                Field::Threshold,
                None,
                format!("{} is out of range; expected 0 or more", self.threshold),
            );
        }
        if !PERIOD_SECONDS.contains(&self.period_seconds) {
            problem(
                Field::PeriodSeconds,
                None,
                format!(
                    "{} is out of range; expected {} to {} seconds (e.g. 60, 300, 900, 1800, 3600)",
                    self.period_seconds,
                    PERIOD_SECONDS.start(),
                    PERIOD_SECONDS.end()
                ),
            );
        }
        if !CONSECUTIVE_PERIODS.contains(&self.consecutive_periods) {
            problem(
                Field::ConsecutivePeriods,
                None,
                format!(
                    "{} is out of range; expected {} to {}",
                    self.consecutive_periods,
                    CONSECUTIVE_PERIODS.start(),
                    CONSECUTIVE_PERIODS.end()
                ),
            );
        }

        let mut days = 0u8;
        if self.effective.days.is_empty() {
            problem(Field::Days, None, "must list at least one day, from \"mon\" to \"sun\"".into());
        }
        for (i, day) in self.effective.days.iter().enumerate() {
            match DAYS.iter().position(|d| d == day) {
                Some(bit) => days |= 1 << bit,
                None => problem(
                    Field::Days,
                    Some(i),
                    format!("{day:?} is not a day; expected one of {}", DAYS.join(", ")),
                ),
            }
        }
        let start = parse_hhmm(&self.effective.start);
        if start.is_none() {
            problem(
                Field::Start,
                None,
                format!("{:?} is not a time; expected HH:MM, 00:00 to 23:59", self.effective.start),
            );
        }
        let end = parse_hhmm(&self.effective.end);
        if end.is_none() {
            problem(
                Field::End,
                None,
                format!("{:?} is not a time; expected HH:MM, 00:00 to 23:59", self.effective.end),
            );
        }
        if let Err(message) = check_url(&self.callback_url) {
            problem(Field::CallbackUrl, None, message);
        }

        match (metric, comparison, start, end) {
            (Some(metric), Some(comparison), Some(start), Some(end)) if problems.is_empty() => {
                Ok(AlertRule {
                    name: self.name.clone(),
                    group_ids,
                    metric,
                    comparison,
                    threshold: self.threshold,
                    period: Duration::from_secs(self.period_seconds),
                    consecutive_periods: self.consecutive_periods,
                    mute_seconds: self.mute_seconds,
                    effective: Effective { days, start, end },
                    callback_url: self.callback_url.clone(),
                })
            }
            _ => Err(problems),
        }
    }
}

impl AlertRule {
    /// The body this rule reads back as (normalised: days in week order).
    pub fn to_body(&self) -> AlertRuleBody {
        AlertRuleBody {
            name: self.name.clone(),
            consumer_group_ids: Some(self.group_ids.clone()),
            metric: self.metric.as_str().into(),
            comparison: self.comparison.as_str().into(),
            threshold: self.threshold,
            period_seconds: self.period.as_secs(),
            consecutive_periods: self.consecutive_periods,
            mute_seconds: self.mute_seconds,
            effective: EffectiveBody {
                days: DAYS
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| self.effective.days & (1 << bit) != 0)
                    .map(|(_, d)| d.to_string())
                    .collect(),
                start: format_hhmm(self.effective.start),
                end: format_hhmm(self.effective.end),
            },
            callback_url: self.callback_url.clone(),
        }
    }

    /// Whether the rule watches `group`.
    pub fn watches(&self, group: &str) -> bool {
        self.group_ids.is_empty() || self.group_ids.iter().any(|g| g == group)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> AlertRuleBody {
        serde_json::from_value(serde_json::json!({
            "name": "backlog_high",
            "consumerGroupIds": ["DEFAULT_GROUP"],
            "metric": "accumulatedCount",
            "comparison": ">",
            "threshold": 1000,
            "periodSeconds": 300,
            "consecutivePeriods": 3,
            "muteSeconds": 3600,
            "effective": {"days": ["mon","tue","wed","thu","fri","sat","sun"], "start": "00:00", "end": "23:59"},
            "callbackUrl": "http://ops.example/alert"
        }))
        .unwrap()
    }

    #[test]
    fn the_contract_example_is_valid_and_reads_back_the_same() {
        let b = body();
        let rule = b.validate().unwrap();
        assert_eq!(rule.effective, Effective::ALWAYS);
        assert_eq!(rule.period, Duration::from_secs(300));
        assert_eq!(rule.to_body(), b);
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let b: AlertRuleBody = serde_json::from_value(serde_json::json!({
            "name": "n", "metric": "consumptionRate", "comparison": "<", "threshold": 1.5,
            "periodSeconds": 60, "callbackUrl": "https://h/x"
        }))
        .unwrap();
        let rule = b.validate().unwrap();
        assert!(rule.group_ids.is_empty());
        assert_eq!(rule.consecutive_periods, 1);
        assert_eq!(rule.mute_seconds, DEFAULT_MUTE_SECONDS);
        assert_eq!(rule.effective, Effective::ALWAYS);
    }

    #[test]
    fn every_problem_names_its_field() {
        let mut b = body();
        b.name = String::new();
        b.consumer_group_ids = Some(vec!["g".into(), "g".into()]);
        b.metric = "backlog".into();
        b.comparison = "=".into();
        b.threshold = -1.0;
        b.period_seconds = 0;
        b.consecutive_periods = 101;
        b.effective = EffectiveBody {
            days: vec!["mon".into(), "funday".into()],
            start: "24:00".into(),
            end: "9:00".into(),
        };
        b.callback_url = "ftp://x/y".into();
        let problems = b.validate().unwrap_err();
        let names: Vec<String> =
            problems.iter().map(|p| p.to_string().split(':').next().unwrap().to_string()).collect();
        assert_eq!(
            names,
            [
                "name",
                "consumerGroupIds[1]",
                "metric",
                "comparison",
                "threshold",
                "periodSeconds",
                "consecutivePeriods",
                "effective.days[1]",
                "effective.start",
                "effective.end",
                "callbackUrl"
            ]
        );
        b = body();
        b.callback_url = "not a url".into();
        assert!(b.validate().unwrap_err()[0].message.contains("not a URL"));
        b.callback_url = "http://ops.example/alert".into();
        b.effective.days.clear();
        assert_eq!(b.validate().unwrap_err()[0].field, Field::Days);
    }
}
