//! A set of compiled rules with its topic index: what the message path evaluates.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::compile::DataType;
use super::context::{Env, EvalContext};
use super::error::{Diagnostic, EvalError};
use super::eval::{self, Eval};
use super::files;
use super::index::TopicIndex;
use super::payload::{parse_object, Keep};
use super::row::Row;
use super::rule::Rule;
use super::script::Script;
use crate::message::thing::Body;
use crate::message::{Kind, Message};

/// The result of one rule for one message.
#[derive(Debug, Clone)]
pub struct RuleOutput {
    /// The rule (its actions and metrics included).
    pub rule: Arc<Rule>,
    /// The SELECT result.
    pub row: Row,
    /// For a binary rule selecting `*` alone: the payload to forward unchanged.
    pub raw: Option<Bytes>,
}

/// What one rule made of one message, with the reason when it produced nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A result.
    Output(Row),
    /// The topic does not match FROM.
    TopicMismatch,
    /// The rule is disabled.
    Disabled,
    /// WHERE was false or null.
    NoMatch,
    /// A JSON rule skipped a payload that is neither a JSON object nor an array.
    BadPayload(String),
    /// Evaluation failed.
    Failed(EvalError),
}

/// Compiled rules, product decoders and the topic index.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
    index: TopicIndex,
    decoders: HashMap<String, Arc<Script>>,
}

/// The payload a JSON rule reads, parsed once per message (or made from the thing-model
/// conversion's parsed value).
enum Parsed {
    Json(Value),
    Bad(String),
}

impl RuleSet {
    /// A set of rules (the enabled ones are indexed) and product decoders.
    pub fn new(mut rules: Vec<Arc<Rule>>, decoders: HashMap<String, Arc<Script>>) -> Self {
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        let mut index = TopicIndex::default();
        for (i, r) in rules.iter().enumerate() {
            if r.enabled {
                index.insert(&r.query.filter, i);
            }
        }
        Self { rules, index, decoders }
    }

    /// Loads every `*.sql` (and `*.rhai`) file of a directory. Broken files are left out and
    /// reported; the others load.
    pub fn load_dir(dir: &Path) -> (RuleSet, Vec<Diagnostic>) {
        let loaded = files::load_dir(dir);
        let rules = loaded.rules.into_values().collect();
        (RuleSet::new(rules, loaded.decoders), loaded.diagnostics)
    }

    /// Counters of every rule, by name, for the API and `/metrics`.
    pub(crate) fn metrics(&self) -> Vec<(&str, super::metrics::MetricsSnapshot)> {
        self.rules.iter().map(|r| (r.name.as_str(), r.metrics.snapshot())).collect()
    }

    /// Every rule, by name.
    pub(crate) fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// A rule by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Rule>> {
        self.rules.binary_search_by(|r| r.name.as_str().cmp(name)).ok().map(|i| &self.rules[i])
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True when there is no rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs every matching rule on `msg`; yields the results. Failures and skips are counted in
    /// the rules' metrics and logged at debug level.
    pub fn evaluate<'s>(
        &'s self,
        msg: &'s Message,
        ctx: &'s EvalContext<'s>,
    ) -> impl Iterator<Item = RuleOutput> + 's {
        self.evaluate_parsed(msg, None, ctx)
    }

    /// As [`RuleSet::evaluate`], for a message whose platform payload the thing-model
    /// conversion has parsed already (`body`): JSON rules read that value, built once the first
    /// of them runs, instead of parsing the payload again.
    pub fn evaluate_parsed<'s>(
        &'s self,
        msg: &'s Message,
        body: Option<&'s Body>,
        ctx: &'s EvalContext<'s>,
    ) -> impl Iterator<Item = RuleOutput> + 's {
        let (topic, _) = msg.forwarded();
        let mut ids = Vec::new();
        self.index.matches(topic, &mut ids);
        let mut parsed: Option<Parsed> = None;
        let keys = self.keys(&ids);
        ids.into_iter().filter_map(move |i| {
            let rule = &self.rules[i];
            match self.run(rule, msg, body, ctx, &mut parsed, &keys) {
                Outcome::Output(row) => {
                    let raw = rule.query.raw.then(|| msg.forwarded().1.clone());
                    Some(RuleOutput { rule: Arc::clone(rule), row, raw })
                }
                Outcome::Failed(e) => {
                    tracing::debug!(rule = %rule.name, message_id = msg.id, error = %e, "Rule failed for a message");
                    None
                }
                _ => None,
            }
        })
    }

    /// Runs one rule on `msg` and says why it produced nothing, if it did not (dry runs).
    pub fn evaluate_rule(&self, rule: &Rule, msg: &Message, ctx: &EvalContext<'_>) -> Outcome {
        let (topic, _) = msg.forwarded();
        if !rule.query.filter.matches(topic) {
            return Outcome::TopicMismatch;
        }
        if !rule.enabled {
            return Outcome::Disabled;
        }
        self.run(rule, msg, None, ctx, &mut None, &None)
    }

    /// The payload members the rules `ids` read together; `None` for the whole payload.
    fn keys<'s>(&'s self, ids: &[usize]) -> Option<Vec<&'s str>> {
        let mut keys: Vec<&str> = Vec::new();
        for &i in ids {
            let r = &self.rules[i];
            if r.data_type == DataType::Json {
                keys.extend(r.query.keys.as_ref()?.iter().map(String::as_str));
            }
        }
        keys.sort_unstable();
        keys.dedup();
        Some(keys)
    }

    fn run(
        &self,
        rule: &Rule,
        msg: &Message,
        body: Option<&Body>,
        ctx: &EvalContext<'_>,
        parsed: &mut Option<Parsed>,
        keys: &Option<Vec<&str>>,
    ) -> Outcome {
        rule.metrics.matched();
        let start = std::time::Instant::now();
        let budget = super::script::RULE_BUDGET;
        let outcome =
            super::script::within(start + budget, || self.run_timed(rule, msg, body, ctx, parsed, keys));
        rule.metrics.evaluated(start.elapsed(), budget);
        outcome
    }

    fn run_timed(
        &self,
        rule: &Rule,
        msg: &Message,
        body: Option<&Body>,
        ctx: &EvalContext<'_>,
        parsed: &mut Option<Parsed>,
        keys: &Option<Vec<&str>>,
    ) -> Outcome {
        let (topic, payload) = msg.forwarded();
        let null = Value::Null;
        let json = match rule.data_type {
            DataType::Binary => &null,
            DataType::Json => match parsed.get_or_insert_with(|| self.parse(msg, body, payload, keys)) {
                Parsed::Json(v) => v,
                Parsed::Bad(why) => {
                    rule.metrics.bad_payload();
                    return Outcome::BadPayload(why.clone());
                }
            },
        };
        let env = Env { msg, topic, payload, json, ctx };
        match eval::run(&rule.query, &env) {
            Ok(Eval::Row(row)) => {
                rule.metrics.passed();
                Outcome::Output(row)
            }
            Ok(Eval::NoMatch) => {
                rule.metrics.no_result();
                Outcome::NoMatch
            }
            Err(e) => {
                rule.metrics.exception();
                Outcome::Failed(e)
            }
        }
    }

    fn parse(&self, msg: &Message, body: Option<&Body>, payload: &[u8], keys: &Option<Vec<&str>>) -> Parsed {
        // A converted post's body is made from the value the conversion parsed, member by
        // member, instead of parsing the bytes written from it.
        if let Some(v) =
            body.filter(|_| msg.platform.is_some()).and_then(|b| b.value(&msg.origin, keys.as_deref()))
        {
            return Parsed::Json(v);
        }
        // Decoders turn a binary product's own payloads into JSON: custom topics only, never
        // the platform's status or lifecycle messages, which are JSON already.
        let custom = msg.kind == Kind::Upstream
            && msg.platform.is_none()
            && msg.topic.split('/').nth(3) == Some("user");
        if custom {
            if let Some(decoder) = self.decoders.get(&msg.origin.product_key) {
                return match decoder.decode(payload) {
                    Ok(v) => Parsed::Json(v),
                    Err(e) => Parsed::Bad(e.to_string()),
                };
            }
        }
        let keep = keys.as_deref().map_or(Keep::All, Keep::Keys);
        match parse_object(payload, keep) {
            Ok(v) => Parsed::Json(v),
            Err(why) => Parsed::Bad(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rules::functions::testing::message;

    fn rule(name: &str, sql: &str) -> Arc<Rule> {
        let text = format!("-- name: {name}\n-- action: amqp G tag=${{dn}}\n{sql}");
        Arc::new(Rule::from_file("t.sql", name, &text, None).unwrap())
    }

    #[test]
    fn a_slow_script_is_cut_at_the_rule_budget_and_its_time_counted() {
        use crate::rules::script::{Script, Scripts, RULE_BUDGET};
        let script = Script::compile("fn spin(x) { loop { x += 1; } }").unwrap();
        let mut scripts = Scripts::default();
        scripts.add(&script);
        let text = "-- name: slow\n-- action: amqp G\nSELECT spin(t) AS t FROM \"/a1demo/+/user/update\"";
        let slow = Arc::new(Rule::from_file("slow.sql", "slow", text, Some(&scripts)).unwrap());
        let set =
            RuleSet::new(vec![slow, rule("fast", "SELECT t FROM \"/a1demo/+/user/update\"")], HashMap::new());
        let msg = message("/a1demo/dev1/user/update", br#"{"t":40}"#);
        let out: Vec<_> = set.evaluate(&msg, &EvalContext::default()).collect();
        assert_eq!(out.len(), 1, "the fast rule still yields");
        let slow = set.get("slow").unwrap().metrics.snapshot();
        assert_eq!(slow.failed_exception, 1);
        assert!(slow.eval_time_us > 0);
        let fast = set.get("fast").unwrap().metrics.snapshot();
        assert_eq!((fast.passed, fast.eval_overruns), (1, 0));
        // The overrun count itself.
        let m = crate::rules::metrics::RuleMetrics::default();
        m.evaluated(RULE_BUDGET / 2, RULE_BUDGET);
        m.evaluated(RULE_BUDGET * 2, RULE_BUDGET);
        let s = m.snapshot();
        assert_eq!((s.eval_overruns, s.eval_time_us), (1, 12_500));
        assert_eq!(serde_json::to_value(s).unwrap()["eval.overruns"], 1);
    }

    #[test]
    fn evaluate_yields_matching_rules_and_counts() {
        let set = RuleSet::new(
            vec![
                rule("hot", "SELECT t, deviceName() AS dn FROM \"/a1demo/+/user/update\" WHERE t > 38"),
                rule("all", "SELECT * FROM \"/a1demo/#\""),
                rule("other", "SELECT * FROM \"/other/+/user/update\""),
                rule("boom", "SELECT t / 0 AS x FROM \"/a1demo/+/user/update\""),
            ],
            HashMap::new(),
        );
        let ctx = EvalContext::default();
        let msg = message("/a1demo/dev1/user/update", br#"{"t":40}"#);
        let out: Vec<_> = set.evaluate(&msg, &ctx).collect();
        let names: Vec<&str> = out.iter().map(|o| o.rule.name.as_str()).collect();
        assert_eq!(names, ["all", "hot"]);
        assert_eq!(out[1].row.to_json(), r#"{"t":40,"dn":"dev1"}"#);
        assert_eq!(out[1].rule.actions.len(), 1);
        let cold = message("/a1demo/dev1/user/update", br#"{"t":20}"#);
        assert_eq!(set.evaluate(&cold, &ctx).count(), 1);
        let bad = message("/a1demo/dev1/user/update", b"\xff not json");
        assert_eq!(set.evaluate(&bad, &ctx).count(), 0);

        let hot = set.get("hot").unwrap().metrics.snapshot();
        assert_eq!((hot.matched, hot.passed, hot.failed_no_result, hot.skipped_bad_payload), (3, 1, 1, 1));
        let boom = set.get("boom").unwrap().metrics.snapshot();
        assert_eq!((boom.matched, boom.failed, boom.failed_exception), (3, 2, 2));
        assert_eq!(set.get("other").unwrap().metrics.snapshot().matched, 0);
    }

    #[test]
    fn thousand_rules_on_distinct_filters() {
        let rules: Vec<_> = (0..1000)
            .map(|i| rule(&format!("r{i}"), &format!("SELECT t FROM \"/pk{i}/+/user/update\" WHERE t > 1")))
            .collect();
        let set = RuleSet::new(rules, HashMap::new());
        let msg = message("/pk500/dev1/user/update", br#"{"t":2}"#);
        let ctx = EvalContext::default();
        let out: Vec<_> = set.evaluate(&msg, &ctx).collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].rule.name, "r500");
        // Only the matching rule was looked at.
        let matched: u64 = set.rules().iter().map(|r| r.metrics.snapshot().matched).sum();
        assert_eq!(matched, 1);
    }

    #[test]
    fn load_dir_keeps_good_rules_and_reports_broken_ones() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        w("good.sql", "SELECT c_to_f(t) AS f FROM \"/a1demo/+/user/update\"");
        w("broken.sql", "SELECT FROM WHERE");
        w("zdup.sql", "-- name: good\nSELECT 1 FROM \"/a/+\"");
        w("fns.rhai", "fn c_to_f(c) { c * 9 / 5 + 32 }");
        w("a1demo.rhai", "fn rawDataToProtocol(b) { #{ t: b[0] } }");
        w("notes.txt", "ignored");
        let (set, diags) = RuleSet::load_dir(dir.path());
        assert_eq!(set.len(), 1, "{diags:?}");
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags.iter().any(|d| d.file.ends_with("broken.sql") && d.line == 1));
        assert!(diags.iter().any(|d| d.message.contains("already used")));
        // The product decoder turns bytes into the JSON rules see; the user function runs.
        let msg = message("/a1demo/dev1/user/update", &[100]);
        let tags = BTreeMap::new();
        let ctx = EvalContext { tags: Some(&tags) };
        let out: Vec<_> = set.evaluate(&msg, &ctx).collect();
        assert_eq!(out[0].row.to_json(), r#"{"f":212}"#);
    }

    #[test]
    fn shareable_between_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RuleSet>();
        assert_send_sync::<RuleOutput>();
    }

    #[test]
    fn decoders_leave_platform_messages_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a1demo.rhai"), "fn rawDataToProtocol(b) { #{ t: b[0] } }").unwrap();
        std::fs::write(dir.path().join("s.sql"), "SELECT status FROM \"/as/mqtt/status/a1demo/+\"").unwrap();
        let (set, diags) = RuleSet::load_dir(dir.path());
        assert!(diags.is_empty(), "{diags:?}");
        let mut msg = message("/as/mqtt/status/a1demo/dev1", br#"{"status":"online"}"#);
        msg.kind = crate::message::Kind::Status;
        let out: Vec<_> = set.evaluate(&msg, &EvalContext::default()).collect();
        assert_eq!(out[0].row.to_json(), r#"{"status":"online"}"#);
    }

    #[test]
    fn a_converted_post_is_read_from_its_kept_body() {
        let set = RuleSet::new(
            vec![
                rule(
                    "t",
                    "SELECT items.t.value AS t, requestId AS id FROM \"/a1demo/+/thing/event/property/post\"",
                ),
                rule("all", "SELECT * FROM \"/a1demo/+/thing/event/property/post\""),
            ],
            HashMap::new(),
        );
        let origin = crate::message::thing::tests::origin();
        let topic = "/sys/a1demo/dev1/thing/event/property/post";
        let payload = br#"{"id":"5","params":{"t":{"value":40.5,"time":1},"h":3}}"#;
        let c = crate::message::thing::convert(&origin, topic, payload, 99).unwrap().unwrap();
        let mut msg = message(topic, payload);
        msg.origin = Arc::new(origin);
        msg.platform = c.messages.into_iter().next();
        let ctx = EvalContext::default();
        let rows = |out: Vec<RuleOutput>| out.iter().map(|o| o.row.to_json()).collect::<Vec<_>>();
        let from_bytes = rows(set.evaluate(&msg, &ctx).collect());
        assert_eq!(from_bytes[1], r#"{"t":40.5,"id":"5"}"#);
        let body = c.body.expect("a live post keeps its body");
        assert_eq!(rows(set.evaluate_parsed(&msg, Some(&body), &ctx).collect()), from_bytes);
        // The kept value is what the rules read: bytes that are not JSON do not matter then.
        if let Some(p) = msg.platform.as_mut() {
            p.payload = Bytes::from_static(b"not json");
        }
        assert_eq!(set.evaluate(&msg, &ctx).count(), 0);
        assert_eq!(rows(set.evaluate_parsed(&msg, Some(&body), &ctx).collect()), from_bytes);
    }

    #[test]
    fn binary_star_forwards_raw_bytes() {
        let text = "-- data_type: binary\nSELECT * FROM \"/a1demo/+/user/raw\"";
        let r = Arc::new(Rule::from_file("b.sql", "b", text, None).unwrap());
        let set = RuleSet::new(vec![r], HashMap::new());
        let msg = message("/a1demo/dev1/user/raw", &[0, 255]);
        let out: Vec<_> = set.evaluate(&msg, &EvalContext::default()).collect();
        assert_eq!(out[0].raw.as_deref(), Some(&[0u8, 255][..]));
    }
}
