//! Dry runs: one rule on one made-up message, with the reason when it produces nothing.
//! `iotpipe rules test` runs [`run`] on its own; `POST /api/v1/rules/test` (and so
//! `iotpipe rules try`) runs [`run_live`], against the rules in force.

use std::fmt;
use std::path::Path;

use bytes::Bytes;

use super::compile::DataType;
use super::context::EvalContext;
use super::error::{Diagnostic, EvalError, FieldDiagnostic};
use super::row::Row;
use super::rule::Rule;
use super::ruleset::{Outcome, RuleSet};
use super::watch::LiveRules;
use crate::message::{Kind, Message, Origin};

/// The message of a dry run: a topic and a payload, with an identity that defaults to what the
/// topic shows.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// The topic the message arrives on.
    pub topic: String,
    /// The payload bytes.
    pub payload: Bytes,
    /// productKey; defaults to the product level of the topic.
    pub product_key: Option<String>,
    /// deviceName; defaults to the device level of the topic.
    pub device_name: Option<String>,
    /// The device's client id, for `clientId()`.
    pub client_id: Option<String>,
}

/// productKey and deviceName as the topic shows them (`/pk/dn/...`, `/sys/pk/dn/...`,
/// `/as/mqtt/status/pk/dn`).
pub fn identity_from_topic(topic: &str) -> (String, String) {
    let levels: Vec<&str> = topic.trim_start_matches('/').split('/').collect();
    let (pk, dn) = match levels.as_slice() {
        ["sys", pk, dn, ..] => (*pk, *dn),
        ["as", "mqtt", "status", pk, dn, ..] => (*pk, *dn),
        [pk, dn, ..] => (*pk, *dn),
        _ => ("", ""),
    };
    (pk.to_string(), dn.to_string())
}

impl Sample {
    /// productKey and deviceName of the sample's device: as given, else as the topic shows them.
    pub fn identity(&self) -> (String, String) {
        let (pk, dn) = identity_from_topic(&self.topic);
        (self.product_key.clone().unwrap_or(pk), self.device_name.clone().unwrap_or(dn))
    }

    /// The message the server would make of this sample: thing-model posts are converted to the
    /// platform's format, status topics are status messages.
    pub fn message(&self) -> Message {
        let (product_key, device_name) = self.identity();
        let origin = std::sync::Arc::new(Origin {
            product_key,
            device_name,
            iot_id: String::new(),
            device_type: String::new(),
            client_id: self.client_id.clone().unwrap_or_default(),
            peer: None,
        });
        let received_at_ms = crate::message::now_ms();
        // A sample that becomes several platform messages (a batch or history post) is tried as
        // the first of them.
        let converted = crate::message::thing::convert(&origin, &self.topic, &self.payload, received_at_ms)
            .and_then(Result::ok);
        let (kind, platform) = match converted {
            Some(c) => (Some(c.kind), c.messages.into_iter().next()),
            None => (
                None,
                crate::message::thing::forwarding_topic(&origin, &self.topic).map(|topic| {
                    crate::message::Platform { topic: topic.to_string(), payload: self.payload.clone() }
                }),
            ),
        };
        let kind = kind.unwrap_or(if self.topic.starts_with("/as/mqtt/status/") {
            Kind::Status
        } else {
            Kind::Upstream
        });
        Message {
            id: 1,
            kind,
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: 0,
            origin,
            received_at_ms,
            platform,
        }
    }
}

/// Why a rule produced nothing for a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Miss {
    /// The (forwarding) topic does not match the FROM filter.
    Topic {
        /// The topic rules see.
        topic: String,
        /// The rule's filter.
        filter: String,
    },
    /// The rule is disabled.
    Disabled,
    /// WHERE was false or null.
    Where,
    /// A json rule skips payloads that are not JSON objects.
    BadPayload(String),
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Topic { topic, filter } => {
                write!(f, "topic {topic:?} does not match the FROM filter {filter:?}")
            }
            Self::Disabled => f.write_str("the rule is disabled"),
            Self::Where => f.write_str("the WHERE condition is not true for this message"),
            Self::BadPayload(why) => write!(f, "a json rule skips this message: {why}"),
        }
    }
}

/// The outcome of a dry run.
#[derive(Debug, Clone, PartialEq)]
pub enum DryRun {
    /// A result: the row, or for a binary rule selecting `*` alone, the payload unchanged.
    Matched(Matched),
    /// Nothing, and why.
    Missed(Miss),
    /// The rule failed for this message (division by zero, a type error, ...).
    Failed(EvalError),
}

/// What a matching rule forwards.
#[derive(Debug, Clone, PartialEq)]
pub enum Matched {
    /// The SELECT result.
    Row(Row),
    /// The payload, unchanged (binary rules selecting `*`).
    Raw(Bytes),
}

/// Runs `rule` on `msg` with the decoders of `set`. The rule's counters move, so pass a rule
/// compiled for the dry run, not one in force.
pub fn run(set: &RuleSet, rule: &Rule, msg: &Message, ctx: &EvalContext<'_>) -> DryRun {
    match set.evaluate_rule(rule, msg, ctx) {
        Outcome::Output(_) if rule.forwards_raw() => DryRun::Matched(Matched::Raw(msg.payload.clone())),
        Outcome::Output(row) => DryRun::Matched(Matched::Row(row)),
        Outcome::Failed(e) => DryRun::Failed(e),
        Outcome::TopicMismatch => DryRun::Missed(Miss::Topic {
            topic: msg.forwarded().0.to_string(),
            filter: rule.topic_filter().to_string(),
        }),
        Outcome::Disabled => DryRun::Missed(Miss::Disabled),
        Outcome::NoMatch => DryRun::Missed(Miss::Where),
        Outcome::BadPayload(why) => DryRun::Missed(Miss::BadPayload(why)),
    }
}

/// The rule of a dry run against the rules in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A statement without header lines, compiled with the rules directory's scripts.
    Sql {
        /// The statement.
        sql: String,
        /// JSON or binary payloads.
        data_type: DataType,
    },
    /// A rule in force, by name.
    Named(String),
}

/// Why a dry run against the rules in force did not run.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The statement does not compile: its problems, on the `sql` field at their line and column.
    #[error("the rule does not compile: {}", FieldDiagnostic::join(.0))]
    Invalid(Vec<FieldDiagnostic>),
    /// No rule of that name is in force.
    #[error("rule {0} does not exist")]
    NotFound(String),
    /// The rule in force no longer compiles (a script it calls has changed since it was loaded).
    #[error("rule {name} no longer compiles: {}", .diagnostics.first().map(ToString::to_string).unwrap_or_default())]
    Stale {
        /// The rule.
        name: String,
        /// Its file's problems now.
        diagnostics: Vec<Diagnostic>,
    },
}

/// Runs `subject` on `sample` against the rules in force: with the scripts and decoders of the
/// rules directory, as the server would run it. A named rule runs as a copy compiled for the
/// test, so the counters of the rule in force do not move.
///
/// Blocking: compiles under the lock of `live` (call it from the blocking pool).
///
/// # Errors
/// [`TestError`]: the statement does not compile, or the named rule is not in force or no longer
/// compiles.
pub fn run_live(
    live: &LiveRules,
    subject: Subject,
    sample: &Sample,
    ctx: &EvalContext<'_>,
) -> Result<DryRun, TestError> {
    let set = live.shared().get();
    let rule = match subject {
        Subject::Sql { sql, data_type } => live.lock().compile_sql(&sql, data_type).map_err(|d| {
            TestError::Invalid(d.into_iter().map(|d| FieldDiagnostic::at("sql", d)).collect())
        })?,
        Subject::Named(name) => {
            let Some(running) = set.get(&name) else { return Err(TestError::NotFound(name)) };
            live.lock()
                .compile(Path::new(&running.origin), &running.source)
                .map_err(|diagnostics| TestError::Stale { name, diagnostics })?
        }
    };
    Ok(run(&set, &rule, &sample.message(), ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::DataType;

    #[test]
    fn identity_defaults() {
        let cases = [
            ("/a1demo/dev1/user/update", ("a1demo", "dev1")),
            ("/sys/a1demo/dev1/thing/event/property/post", ("a1demo", "dev1")),
            ("/as/mqtt/status/a1demo/dev1", ("a1demo", "dev1")),
            ("x", ("", "")),
        ];
        for (t, (pk, dn)) in cases {
            assert_eq!(identity_from_topic(t), (pk.to_string(), dn.to_string()), "{t}");
        }
    }

    fn sample(topic: &str, payload: &str) -> Message {
        Sample { topic: topic.into(), payload: Bytes::from(payload.to_string()), ..Sample::default() }
            .message()
    }

    #[test]
    fn outcomes_and_reasons() {
        let set = RuleSet::default();
        let ctx = EvalContext::default();
        let sql = "SELECT t, deviceName() AS dn FROM \"/a1demo/+/user/update\" WHERE t > 38";
        let rule = Rule::from_sql(sql, DataType::Json, None).unwrap();
        let DryRun::Matched(Matched::Row(row)) =
            run(&set, &rule, &sample("/a1demo/dev1/user/update", r#"{"t":40}"#), &ctx)
        else {
            panic!("no match")
        };
        assert_eq!(row.to_json(), r#"{"t":40,"dn":"dev1"}"#);
        let miss = run(&set, &rule, &sample("/a1demo/dev1/user/update", r#"{"t":30}"#), &ctx);
        assert_eq!(miss, DryRun::Missed(Miss::Where));
        let DryRun::Missed(m) = run(&set, &rule, &sample("/other/dev1/user/update", "{}"), &ctx) else {
            panic!()
        };
        assert!(m.to_string().contains("does not match the FROM filter"), "{m}");

        let raw = Rule::from_sql("SELECT * FROM \"/a/+/user/raw\"", DataType::Binary, None).unwrap();
        let out = run(&set, &raw, &sample("/a/d/user/raw", "bytes"), &ctx);
        assert_eq!(out, DryRun::Matched(Matched::Raw(Bytes::from_static(b"bytes"))));
        let boom = Rule::from_sql("SELECT 1 / t AS x FROM \"/a/+/user/u\"", DataType::Json, None).unwrap();
        assert!(matches!(run(&set, &boom, &sample("/a/d/user/u", r#"{"t":0}"#), &ctx), DryRun::Failed(_)));
    }

    #[test]
    fn runs_against_the_rules_in_force() {
        use crate::rules::watch::{Reloader, SharedRules};
        let dir = tempfile::tempdir().unwrap();
        let hot = "-- name: hot\nSELECT t FROM \"/a/+/user/u\" WHERE t > 38\n";
        std::fs::write(dir.path().join("hot.sql"), hot).unwrap();
        let (reloader, set, _) = Reloader::load(dir.path());
        let live = LiveRules::new(reloader, std::sync::Arc::new(SharedRules::new(set)));
        let sample = Sample {
            topic: "/a/d/user/u".into(),
            payload: Bytes::from_static(br#"{"t":40}"#),
            ..Sample::default()
        };
        let ctx = EvalContext::default();

        let out = run_live(&live, Subject::Named("hot".into()), &sample, &ctx).unwrap();
        assert!(matches!(out, DryRun::Matched(Matched::Row(_))), "{out:?}");
        let in_force = live.shared().get();
        let counters = serde_json::to_value(in_force.get("hot").unwrap().metrics.snapshot()).unwrap();
        assert_eq!(counters["matched"], 0, "the rule in force did not run: {counters}");

        let sql = Subject::Sql {
            sql: "SELECT t FROM \"/a/+/user/u\" WHERE t < 0".into(),
            data_type: DataType::Json,
        };
        assert_eq!(run_live(&live, sql, &sample, &ctx).unwrap(), DryRun::Missed(Miss::Where));
        let e = run_live(&live, Subject::Named("nope".into()), &sample, &ctx).unwrap_err();
        assert_eq!(e.to_string(), "rule nope does not exist");
        let bad = Subject::Sql { sql: "SELECT FROM".into(), data_type: DataType::Json };
        let TestError::Invalid(d) = run_live(&live, bad, &sample, &ctx).unwrap_err() else { panic!() };
        assert_eq!((d[0].field.as_str(), d[0].line), ("sql", Some(1)), "{d:?}");
    }
}
